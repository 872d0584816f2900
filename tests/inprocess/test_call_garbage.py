"""An answered call leaves no reference cycle behind: its objects are freed when it ends.

A cycle per call (once: a waiter and its hooks that referred to each other) keeps the call's
grpc state alive until the cyclic garbage collector runs, and under load makes it run dozens of
times a second, with a full collection of tens of milliseconds every second or two that stalls
every thread. Here the collector is off while a real server in this process answers calls
through a real channel, both on the path that runs at once and on the one that waits for its
batch (and lends its run slot, and watches for the client going away); what the collector then
finds unreachable must hold nothing of tensorgate's.
"""

from __future__ import annotations

import gc
from pathlib import Path

import grpc
import numpy as np
import pytest

from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc
from server.app import TensorgateServer
from server.settings import ServerSettings
from tests.support.model_factory import write_add_sub_model

OWN_PACKAGES = ("server.", "batching.", "runtimes.")


def _request(model: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 16])
        request.raw_input_contents.append(np.ones(16, np.float32).tobytes())
    return request


def _pairs(stub: pb_grpc.GRPCInferenceServiceStub, count: int) -> list[pb.ModelInferResponse]:
    """`count` pairs of calls, the two of each pair at once."""
    answers = []
    for _ in range(count):
        calls = [stub.ModelInfer.future(_request("m"), timeout=60) for _ in range(2)]
        answers += [call.result() for call in calls]
    return answers


def _own_garbage(objects: list[object]) -> list[str]:
    return sorted(
        {type(obj).__qualname__ for obj in objects if type(obj).__module__.startswith(OWN_PACKAGES)}
    )


# Batches of two: with a long queue delay, the first request of a pair waits, blocked, for the
# second, and one of the two runs the pair's batch for both.
PAIRS = "dynamic_batching { max_queue_delay_microseconds: 30000000 }"


@pytest.mark.parametrize(
    ("config_extra", "path"),
    [("", "runs at once"), (PAIRS, "waits")],
    ids=["at-once", "waits-for-its-batch"],
)
def test_answered_calls_leave_no_cyclic_garbage(
    tmp_path: Path, config_extra: str, path: str
) -> None:
    write_add_sub_model(tmp_path, "m", max_batch_size=2, config_extra=config_extra)
    settings = ServerSettings(
        model_repository=tmp_path, grpc_host="127.0.0.1", grpc_port=0, metrics_enabled=False
    )
    server = TensorgateServer(settings)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            _pairs(stub, 1)  # warm: first-call caches are not garbage
            gc.collect()
            gc.disable()
            try:
                answers = _pairs(stub, 10)
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                garbage = _own_garbage(gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
        stats = server.plane.statistics("m", "")[0].stats
    finally:
        server.stop(grace_s=1)
    assert [np.frombuffer(a.raw_output_contents[0], np.float32)[0] for a in answers] == [2.0] * 20
    assert garbage == [], f"calls that {path} left cyclic garbage: {garbage}"
    if path == "waits":  # every batch held a pair
        assert (stats.inference_count, stats.execution_count) == (22, 11)
