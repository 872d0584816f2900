"""A refused request is freed as soon as its call ends, not at the next full garbage collection.

An error kept alive by a frame that its own traceback holds (a reference cycle) keeps every frame of
that traceback, and the request they hold, until a full collection: a stream of large malformed
requests then piles up (the fuzz soak once saw +64 MiB of RSS from it). Here the garbage collector
is off while a real server in this process refuses large requests through a real channel; what the
collector then finds unreachable must hold none of them, whether the service refuses them or, before
it, the bearer-token check.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from server._proto import grpc_service_pb2 as pb
from server.app import TensorgateServer
from server.settings import ServerSettings
from tests.support.fault_models import write_gather_model
from tests.support.model_factory import write_add_sub_model

LARGE = 1 << 20
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def refused_requests() -> dict[str, bytes]:
    """Serialised large requests, each refused on a different path, by the status expected."""
    tensor = pb.ModelInferRequest.InferInputTensor
    wrong_length = pb.ModelInferRequest(
        model_name="m",
        inputs=[
            tensor(name="INPUT0", datatype="FP32", shape=[1, 16]),
            tensor(name="INPUT1", datatype="FP32", shape=[1, 16]),
        ],
        raw_input_contents=[b"\x01" * LARGE, np.zeros(16, np.float32).tobytes()],
    )
    unknown_model = pb.ModelInferRequest(
        model_name="no_such_model", raw_input_contents=[b"x" * LARGE]
    )
    rows = LARGE // 8  # INT64 indices, the last out of the table's range: onnxruntime fails
    indices = np.zeros((rows, 1), np.int64)
    indices[-1] = 99
    out_of_range = pb.ModelInferRequest(
        model_name="gather",
        inputs=[tensor(name="INDEX", datatype="INT64", shape=[rows, 1])],
        raw_input_contents=[indices.tobytes()],
    )
    return {
        "INVALID_ARGUMENT wrong length": wrong_length.SerializeToString(),
        "INVALID_ARGUMENT failed in the model": out_of_range.SerializeToString(),
        "NOT_FOUND unknown model": unknown_model.SerializeToString(),
        "INVALID_ARGUMENT undecodable": b"\x0a\x02\xff\xfe" + b"\xff" * LARGE,
    }


def send_refused(repo: Path, rounds: int, auth_tokens: str) -> list[str]:
    """Each refused request `rounds` times, without a token; the status codes the client saw."""
    settings = ServerSettings(
        model_repository=repo,
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_enabled=False,
        auth_tokens=auth_tokens,
    )
    server = TensorgateServer(settings)
    server.start()
    codes: list[str] = []
    try:
        options = [("grpc.max_send_message_length", 4 * LARGE)]
        with grpc.insecure_channel(f"127.0.0.1:{server.port}", options) as channel:
            call = channel.unary_unary(METHOD)  # bytes in, bytes out
            for _ in range(rounds):
                for payload in refused_requests().values():
                    try:
                        call(payload, timeout=30)
                        codes.append("OK")
                    except grpc.RpcError as error:
                        codes.append(error.code().name)
    finally:
        server.stop(grace_s=1)
    return codes


def large_objects(objects: list[object]) -> Iterator[str]:
    """What among unreachable objects is, or is held by a frame as, a request or a large buffer."""
    for obj in objects:
        candidates = [obj]
        if hasattr(obj, "f_locals") and hasattr(obj, "f_code"):
            candidates += list(obj.f_locals.values())
        for candidate in candidates:
            if isinstance(candidate, pb.ModelInferRequest) or (
                isinstance(candidate, bytes | bytearray | memoryview | np.ndarray)
                and len(candidate) >= LARGE // 2
            ):
                yield f"{type(candidate).__name__} reached from {type(obj).__name__}"


@pytest.mark.parametrize(
    ("auth_tokens", "refused_by"),
    [("", "the request's own fault"), ("alice infer secret-token", "UNAUTHENTICATED")],
    ids=["invalid", "unauthenticated"],
)
def test_refused_requests_leave_no_cyclic_garbage_holding_them(
    tmp_path: Path, auth_tokens: str, refused_by: str
) -> None:
    write_add_sub_model(tmp_path, "m", max_batch_size=8)
    write_gather_model(tmp_path, "gather", max_batch_size=0)
    rounds = 5
    gc.collect()
    gc.disable()
    try:
        codes = send_refused(tmp_path, rounds, auth_tokens)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        held = list(large_objects(gc.garbage))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    if refused_by == "UNAUTHENTICATED":
        expected = ["UNAUTHENTICATED"] * (len(refused_requests()) * rounds)
    else:
        expected = [key.split()[0] for key in refused_requests()] * rounds
    assert codes == expected
    assert held == []
