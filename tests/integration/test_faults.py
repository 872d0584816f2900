"""Faults inside models stay inside them: broken loads, runtime failures, broken output
contracts and slow computations never take the server, or any other model, down with them.

* Eleven models that cannot load sit next to a good one: the server starts, the good model
  serves, each broken one is UNAVAILABLE with its reason (index, ModelReady, health, infer).
* A model that raises inside onnxruntime for some inputs (Gather with an index taken from the
  request) fails those requests INTERNAL with a message that names the model and leaks no
  onnxruntime internals (the detail goes to the log), while its valid requests and other models
  keep being answered, and it stays READY. One bad request must not fail the valid requests
  that happen to share its batch either.
* A model whose output has fewer rows than its batch (a broken contract the graph's symbolic
  batch dimension hides until run time) fails INTERNAL, names the model in the log, stays up.
* A model whose compute takes seconds does not delay health checks or other models' requests,
  whether it is the model's first request or it follows cheap ones.

Faulty graphs come from tests/support/fault_models.py; nothing here imports the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from tests.support import fault_models as fm
from tests.support import model_factory as mf
from tests.support import probes
from tests.support import python_models as pm
from tests.support.server_process import ServerProcess

StartServer = Callable[..., ServerProcess]
COLUMNS = mf.ADD_SUB_ELEMENT_COUNT
WAIT_S = 30.0
BATCH_DELAY_S = 5.0

# Model name -> a fragment its load failure reason must contain.
BROKEN_MODELS: dict[str, str] = {
    "corrupt_bytes": "could not load",
    "truncated": "could not load",
    "empty_file": "could not load",
    "unknown_op": "could not load",
    "sequence_input": "not supported",
    "garbage_config": "not a valid model config",
    "config_mismatch": "does not have",
    "bad_batching": "preferred_batch_size",
    "bad_drift_profile": "",  # a drift profile that is not JSON: any reason, but one
    "missing_file": "no file model.onnx",
    "failing_warmup": "warm-up",
}


def _write_unchecked(repo: Path, name: str, model: onnx.ModelProto) -> None:
    """Write a model that onnx.checker would refuse (the point is that it is invalid)."""
    path = repo / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def write_broken_models(repo: Path) -> None:
    mf.write_corrupt_model(repo, "corrupt_bytes")
    written = mf.write_add_sub_model(repo, "truncated", with_config=False)
    data = written.model_path.read_bytes()
    written.model_path.write_bytes(data[: len(data) // 2])
    written = mf.write_add_sub_model(repo, "empty_file", with_config=False)
    written.model_path.write_bytes(b"")
    spec = helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 4])
    out = helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["INPUT0"], ["OUTPUT0"])], "g", [spec], [out]
    )
    opset = [helper.make_opsetid("", mf.OPSET)]
    _write_unchecked(repo, "unknown_op", helper.make_model(graph, opset_imports=opset))
    seq_in = helper.make_tensor_sequence_value_info("INPUT0", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["INPUT0"], ["OUTPUT0"])],
        "g",
        [seq_in],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.INT64, [])],
    )
    model = helper.make_model(graph, opset_imports=opset, ir_version=mf.IR_VERSION)
    mf.write_onnx_model(repo, "sequence_input", model)
    mf.write_add_sub_model(repo, "garbage_config", with_config=False)
    mf.write_config(repo, "garbage_config", "max_batch_size: [this is { not pbtxt\n\x00")
    mf.write_add_sub_model(repo, "config_mismatch", with_config=False)
    wrong = mf.TensorSpec("NOT_AN_INPUT", "FP32", (-1, COLUMNS))
    right = mf.TensorSpec("OUTPUT0", "FP32", (-1, COLUMNS))
    mf.write_config(
        repo,
        "config_mismatch",
        mf.render_config("config_mismatch", max_batch_size=8, inputs=[wrong], outputs=[right]),
    )
    mf.write_add_sub_model(
        repo, "bad_batching", config_extra="dynamic_batching { preferred_batch_size: [ 64 ] }"
    )
    mf.write_add_sub_model(
        repo,
        "bad_drift_profile",
        config_extra='parameters { key: "drift_sample_ratio" value: { string_value: "0.5" } }',
    )
    (repo / "bad_drift_profile" / "drift_profile.json").write_text("{ not json")
    written = mf.write_add_sub_model(repo, "missing_file", with_config=False)
    written.model_path.rename(written.model_path.with_name("other.onnx"))
    fm.write_gather_model(
        repo,
        "failing_warmup",
        config_extra=(
            'model_warmup [ { name: "out_of_range" batch_size: 1 inputs { key: "INDEX" '
            'value: { data_type: TYPE_INT64 dims: [ 1 ] input_data_file: "index" } } } ]'
        ),
    )
    warmup = repo / "failing_warmup" / "warmup"
    warmup.mkdir()
    (warmup / "index").write_bytes(np.array([99], dtype=np.int64).tobytes())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("faults_repo")
    write_broken_models(repo)
    mf.write_add_sub_model(repo, "good", max_batch_size=8)
    # Without dynamic_batching every request is its own batch.
    fm.write_gather_model(repo, "gather")
    # Two requests make a batch at once (preferred size); alone, one waits BATCH_DELAY_S.
    fm.write_gather_model(
        repo,
        "gather_batched",
        max_batch_size=2,
        config_extra=(
            "dynamic_batching { preferred_batch_size: [ 2 ] "
            f"max_queue_delay_microseconds: {int(BATCH_DELAY_S * 1e6)} }}"
        ),
    )
    fm.write_row_breaking_model(repo, "rows")
    server = ServerProcess(repo)
    try:
        with grpc.insecure_channel(server.url) as channel:
            grpc.channel_ready_future(channel).result(timeout=WAIT_S)
        yield server
    finally:
        server.stop()


def add_sub(client: triton.InferenceServerClient, model: str = "good", seed: float = 1.0) -> None:
    """One add/sub request whose answer is checked."""
    first = np.full((1, COLUMNS), seed, dtype=np.float32)
    second = np.arange(COLUMNS, dtype=np.float32).reshape(1, COLUMNS)
    tensors = []
    for name, data in (("INPUT0", first), ("INPUT1", second)):
        tensor = triton.InferInput(name, [1, COLUMNS], "FP32")
        tensor.set_data_from_numpy(data)
        tensors.append(tensor)
    result = client.infer(model, tensors, client_timeout=WAIT_S)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), first + second)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), first - second)


def int64_input(name: str, values: list[int]) -> list[triton.InferInput]:
    tensor = triton.InferInput(name, [len(values), 1], "INT64")
    tensor.set_data_from_numpy(np.array(values, dtype=np.int64).reshape(-1, 1))
    return [tensor]


def gather(client: triton.InferenceServerClient, model: str, index: int) -> np.ndarray:
    result = client.infer(model, int64_input("INDEX", [index]), client_timeout=WAIT_S)
    return result.as_numpy("OUTPUT0")


def infer_error(call: Callable[[], object]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def code_of(error: InferenceServerException) -> str:
    return (error.status() or "").removeprefix("StatusCode.")


# --------------------------------------------------------------------------------------------
# Models that fail to load
# --------------------------------------------------------------------------------------------


def test_models_that_fail_to_load_leave_the_server_and_the_good_model_serving(
    server: ServerProcess, client: triton.InferenceServerClient
) -> None:
    assert server.process.poll() is None
    assert client.is_server_live()
    add_sub(client)
    index = {
        entry.name: (entry.state, entry.reason)
        for entry in client.get_model_repository_index(client_timeout=WAIT_S).models
    }
    assert index["good"][0] == "READY"
    with grpc.insecure_channel(server.url) as channel:
        assert probes.health_status(channel, "good") == "SERVING"
        for name, fragment in BROKEN_MODELS.items():
            state, reason = index[name]
            assert state == "UNAVAILABLE" and reason and fragment in reason, (name, reason)
            assert not client.is_model_ready(name), name
            assert probes.health_status(channel, name) == "NOT_SERVING", name
            error = infer_error(lambda name=name: add_sub(client, name))
            assert code_of(error) == "UNAVAILABLE", (name, error)
            assert f"'{name}'" in error.message() and fragment in error.message(), error
    # The server says it is not ready (models failed), yet it is alive and answers.
    assert not client.is_server_ready()
    add_sub(client, seed=2.0)


# --------------------------------------------------------------------------------------------
# Runtime failures
# --------------------------------------------------------------------------------------------

ORT_INTERNALS = ("ONNXRuntimeError", "Gather node", "'lookup'", "idx=", "Status Message")


def test_runtime_failure_fails_only_its_own_requests_with_a_generic_internal(
    server: ServerProcess, client: triton.InferenceServerClient
) -> None:
    """Out-of-range indices make onnxruntime raise. Sent concurrently with valid requests to
    the same model and to another model (no dynamic batching: each request is its own batch):
    each good one is answered correctly; the model stays READY; the log has onnxruntime's
    detail; each bad one is INTERNAL (or INVALID_ARGUMENT) with a message that names the model
    and carries none of onnxruntime's text (node names, index bounds, status strings)."""
    mark = server.log_mark()
    good_indices = [i % 4 for i in range(24)]
    bad_indices = [99, -5, 4, 1 << 40, -(1 << 62), 7] * 2

    def good(index: int) -> np.ndarray:
        with triton.InferenceServerClient(server.url) as own:
            return gather(own, "gather", index)

    def bad(index: int) -> InferenceServerException:
        with triton.InferenceServerClient(server.url) as own:
            return infer_error(lambda: gather(own, "gather", index))

    def other(seed: int) -> None:
        with triton.InferenceServerClient(server.url) as own:
            add_sub(own, seed=float(seed))

    with ThreadPoolExecutor(max_workers=8) as pool:
        goods = pool.map(good, good_indices)
        bads = pool.map(bad, bad_indices)
        others = pool.map(other, range(24))
        good_results, bad_results, _ = list(goods), list(bads), list(others)

    for index, value in zip(good_indices, good_results, strict=True):
        np.testing.assert_array_equal(value, [[fm.GATHER_TABLE[index]]])
    messages = {error.message() for error in bad_results}
    print(f"\nruntime failure answers: {sorted(messages)}")
    # The model stays up and the detail is in the log, whatever the clients were told.
    assert client.is_model_ready("gather")
    np.testing.assert_array_equal(gather(client, "gather", 2), [[12.0]])
    # Logged before the answer went out, but read from the output by a thread: wait for it.
    server.wait_for_log(r"'gather'.*out of data bounds", start=mark, timeout_s=WAIT_S)
    # INTERNAL is what a failing runtime gets; INVALID_ARGUMENT would be fair too, since
    # onnxruntime blames the input (see test_fuzz: a client must not be able to cause INTERNAL).
    for error in bad_results:
        assert code_of(error) in ("INTERNAL", "INVALID_ARGUMENT"), error
    problems = []
    for message in sorted(messages):
        leaked = [text for text in ORT_INTERNALS if text in message]
        if leaked:
            problems.append(f"onnxruntime internals {leaked} reach the client: {message!r}")
        if "'gather'" not in message:
            problems.append(f"the message does not name the model: {message!r}")
    assert not problems, "\n".join(problems)


def test_bad_request_does_not_fail_the_valid_request_sharing_its_batch(
    server: ServerProcess,
) -> None:
    """gather_batched sends a batch as soon as two requests wait (preferred size 2) and makes a
    lone request wait BATCH_DELAY_S for company. One valid and one out-of-range request sent
    together are both answered well before that delay, so they ran as one batch. The bad one
    fails; the valid one must still get its answer: its input is fine, only running it next to
    the bad one fails."""
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    def send(label: str, index: int) -> None:
        with triton.InferenceServerClient(server.url) as own:
            start.wait(WAIT_S)
            try:
                results[label] = gather(own, "gather_batched", index)
            except InferenceServerException as error:
                results[label] = error

    began = time.monotonic()
    threads = [threading.Thread(target=send, args=args) for args in (("good", 1), ("bad", 99))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    took = time.monotonic() - began
    described = {
        label: f"{code_of(r)} {r.message()!r}" if isinstance(r, InferenceServerException) else r
        for label, r in results.items()
    }
    print(f"\nshared batch, answered in {took:.2f}s: {described}")
    assert took < BATCH_DELAY_S * 0.8, "the requests did not share a batch; the test proves nothing"
    assert isinstance(results["bad"], InferenceServerException)
    # onnxruntime blames the request's values (index 99 is out of range): INVALID_ARGUMENT.
    assert code_of(results["bad"]) == "INVALID_ARGUMENT"
    assert "'gather'" in results["bad"].message() or "model" in results["bad"].message()
    assert not isinstance(results["good"], InferenceServerException), (
        f"a valid request failed because a bad one shared its batch: {described['good']}"
    )
    np.testing.assert_array_equal(results["good"], [[11.0]])


def test_output_with_the_wrong_number_of_rows_fails_internal_and_the_model_stays_up(
    server: ServerProcess, client: triton.InferenceServerClient
) -> None:
    """The 'rows' model returns one row whatever the batch: right for one row, a broken
    contract for three. That request is INTERNAL with a message naming the model and no
    traceback; the log names the model; one-row requests and other models keep working."""
    one_row = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)

    def rows(data: np.ndarray) -> np.ndarray:
        tensor = triton.InferInput("INPUT0", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data)
        return client.infer("rows", [tensor], client_timeout=WAIT_S).as_numpy("OUTPUT0")

    np.testing.assert_array_equal(rows(one_row), one_row)
    mark = server.log_mark()
    error = infer_error(lambda: rows(np.ones((3, 4), dtype=np.float32)))
    print(f"\nbroken contract answer: {code_of(error)} {error.message()!r}")
    assert code_of(error) == "INTERNAL", error
    assert "'rows'" in error.message() and "Traceback" not in error.message(), error
    server.wait_for_log(r"model 'rows'", start=mark, timeout_s=WAIT_S)
    assert client.is_model_ready("rows")
    np.testing.assert_array_equal(rows(one_row * 2), one_row * 2)
    add_sub(client, seed=3.0)


# --------------------------------------------------------------------------------------------
# Slow models
# --------------------------------------------------------------------------------------------

PROBES = 20
PROBE_BOUND_S = 1.0  # a health check or a tiny inference normally takes a few milliseconds


def test_slow_computation_does_not_block_health_or_other_models(
    tmp_path: Path, start_server: StartServer
) -> None:
    """While one request is held inside the slow model (it waits on a gate this test holds),
    health Check and another model's requests are answered within PROBE_BOUND_S, PROBES times;
    then the gate opens and the held request gets its own answer."""
    with pm.Gate() as gate:
        pm.write_gated_model(tmp_path, "slow", gate)
        mf.write_add_sub_model(tmp_path, "fast", max_batch_size=8)
        server = start_server(tmp_path)
        client = triton.InferenceServerClient(server.url)
        channel = grpc.insecure_channel(server.url)
        held: dict[str, object] = {}
        done = threading.Event()

        def held_call() -> None:
            value = triton.InferInput("INPUT0", [1, 1], "FP32")
            value.set_data_from_numpy(np.array([[7.0]], dtype=np.float32))
            with triton.InferenceServerClient(server.url) as own:
                try:
                    held["value"] = own.infer("slow", [value], client_timeout=120).as_numpy(
                        "OUTPUT0"
                    )
                except InferenceServerException as error:
                    held["value"] = error
            done.set()

        try:
            threading.Thread(target=held_call, daemon=True).start()
            gate.wait_started()
            health_s: list[float] = []
            fast_s: list[float] = []
            for index in range(PROBES):
                started = time.monotonic()
                assert probes.health_status(channel, "", timeout_s=60) == "SERVING"
                health_s.append(time.monotonic() - started)
                started = time.monotonic()
                add_sub(client, "fast", seed=float(index))
                fast_s.append(time.monotonic() - started)
            assert not done.is_set(), "the held request was answered before the gate opened"
            gate.open()
            assert done.wait(60)
        finally:
            client.close()
            channel.close()
    print(
        f"\n{len(health_s)} health checks (max {max(health_s):.3f}s), {len(fast_s)} fast "
        f"requests (max {max(fast_s):.3f}s) while a request was held in the model"
    )
    assert not isinstance(held["value"], InferenceServerException), held["value"]
    np.testing.assert_array_equal(held["value"], [[7.0]])
    assert max(health_s) <= PROBE_BOUND_S, f"health Check waited {max(health_s):.2f}s"
    assert max(fast_s) <= PROBE_BOUND_S, f"a request to another model waited {max(fast_s):.2f}s"
