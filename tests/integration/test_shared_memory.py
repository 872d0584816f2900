"""System shared memory through the real server, with tritonclient's shm utilities.

Inputs are read from and outputs written to regions that the client registered; every offset
and size is checked against the region (INVALID_ARGUMENT, never a read or write outside it).
"""

from __future__ import annotations

import queue
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import (
    InferenceServerException,
    serialize_byte_tensor,
    serialized_byte_size,
)

from tests.support import model_factory as mf
from tests.support.server_process import ServerProcess

COLUMNS = mf.ADD_SUB_ELEMENT_COUNT
ROWS = 3
TENSOR_BYTES = ROWS * COLUMNS * 4
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("shm_repo")
    mf.write_add_sub_model(repo, "add_sub", max_batch_size=8, offset=0.5)
    mf.write_identity_model(repo, "identity_bytes", "BYTES", max_batch_size=8, with_config=True)
    with ServerProcess(repo) as server:
        with grpc.insecure_channel(server.url) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield server


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.url) as client:
        yield client
        client.unregister_system_shared_memory()


@pytest.fixture
def region() -> Iterator[Callable[[int], tuple[object, str]]]:
    """Create shared memory objects (name, key) that are destroyed after the test."""
    handles = []

    def create(byte_size: int) -> tuple[object, str]:
        key = f"/tg_it_{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(key.lstrip("/"), key, byte_size)
        handles.append(handle)
        return handle, key

    yield create
    for handle in handles:
        shm.destroy_shared_memory_region(handle)


def _inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((ROWS, COLUMNS), dtype=np.float32),
        rng.standard_normal((ROWS, COLUMNS), dtype=np.float32),
    )


def _shm_input(name: str, region: str, byte_size: int, offset: int = 0) -> triton.InferInput:
    tensor = triton.InferInput(name, [ROWS, COLUMNS], "FP32")
    tensor.set_shared_memory(region, byte_size, offset)
    return tensor


def _shm_output(name: str, region: str, byte_size: int, offset: int = 0):
    output = triton.InferRequestedOutput(name)
    output.set_shared_memory(region, byte_size, offset)
    return output


def _assert_error(error: InferenceServerException, code: grpc.StatusCode, *fragments: str):
    assert error.status() == str(code), f"{error.status()}: {error.message()}"
    for fragment in fragments:
        assert fragment in error.message(), f"{fragment!r} not in {error.message()!r}"


# round trips ------------------------------------------------------------------------------------


def test_inputs_and_outputs_in_shared_memory(client, region):
    a, b = _inputs()
    in_handle, in_key = region(2 * TENSOR_BYTES)
    out_handle, out_key = region(2 * TENSOR_BYTES)
    shm.set_shared_memory_region(in_handle, [a, b])  # a at offset 0, b right after it
    client.register_system_shared_memory("inputs", in_key, 2 * TENSOR_BYTES)
    client.register_system_shared_memory("outputs", out_key, 2 * TENSOR_BYTES)

    status = client.get_system_shared_memory_status()
    assert {name: (r.key, r.offset, r.byte_size) for name, r in status.regions.items()} == {
        "inputs": (in_key, 0, 2 * TENSOR_BYTES),
        "outputs": (out_key, 0, 2 * TENSOR_BYTES),
    }

    result = client.infer(
        "add_sub",
        [
            _shm_input("INPUT0", "inputs", TENSOR_BYTES),
            _shm_input("INPUT1", "inputs", TENSOR_BYTES, offset=TENSOR_BYTES),
        ],
        outputs=[
            _shm_output("OUTPUT0", "outputs", TENSOR_BYTES),
            _shm_output("OUTPUT1", "outputs", TENSOR_BYTES, offset=TENSOR_BYTES),
        ],
    )
    # As Triton does, the response carries no bytes for outputs in shared memory.
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert list(response.raw_output_contents) == [b"", b""]
    assert [list(o.shape) for o in response.outputs] == [[ROWS, COLUMNS]] * 2
    output0 = shm.get_contents_as_numpy(out_handle, np.float32, [ROWS, COLUMNS])
    output1 = shm.get_contents_as_numpy(out_handle, np.float32, [ROWS, COLUMNS], TENSOR_BYTES)
    np.testing.assert_allclose(output0, a + b + 0.5, rtol=1e-6)
    np.testing.assert_allclose(output1, a - b, rtol=1e-6)

    client.unregister_system_shared_memory("inputs")
    assert list(client.get_system_shared_memory_status().regions) == ["outputs"]
    client.unregister_system_shared_memory()
    assert not client.get_system_shared_memory_status().regions


def test_shared_memory_mixed_with_raw_tensors_and_a_region_offset(client, region):
    a, b = _inputs(1)
    window = 16 + 2 * TENSOR_BYTES + 8  # INPUT0 at 16, OUTPUT1 (with 8 bytes spare) after it
    handle, key = region(64 + window)
    shm.set_shared_memory_region(handle, [a], offset=64 + 16)
    # The region starts 64 bytes into the object; tensor offsets count from the region's start.
    client.register_system_shared_memory("window", key, window, offset=64)
    raw_input = triton.InferInput("INPUT1", [ROWS, COLUMNS], "FP32")
    raw_input.set_data_from_numpy(b)
    result = client.infer(
        "add_sub",
        [_shm_input("INPUT0", "window", TENSOR_BYTES, offset=16), raw_input],
        outputs=[
            triton.InferRequestedOutput("OUTPUT0"),
            _shm_output("OUTPUT1", "window", TENSOR_BYTES + 8, offset=TENSOR_BYTES + 16),
        ],
    )
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b + 0.5, rtol=1e-6)
    written = shm.get_contents_as_numpy(handle, np.float32, [ROWS, COLUMNS], 64 + TENSOR_BYTES + 16)
    np.testing.assert_allclose(written, a - b, rtol=1e-6)
    # The input was not disturbed by the output written after it.
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, a.shape, 80), a)


def test_bytes_tensors_in_shared_memory(client, region):
    value = mf.make_array("BYTES", (2, mf.IDENTITY_ELEMENT_COUNT), seed=3)
    byte_size = serialized_byte_size(serialize_byte_tensor(value))
    in_handle, in_key = region(byte_size)
    out_handle, out_key = region(byte_size)
    shm.set_shared_memory_region(in_handle, [serialize_byte_tensor(value)])
    client.register_system_shared_memory("bytes_in", in_key, byte_size)
    client.register_system_shared_memory("bytes_out", out_key, byte_size)
    tensor = triton.InferInput("INPUT0", list(value.shape), "BYTES")
    tensor.set_shared_memory("bytes_in", byte_size)
    client.infer(
        "identity_bytes", [tensor], outputs=[_shm_output("OUTPUT0", "bytes_out", byte_size)]
    )
    echoed = shm.get_contents_as_numpy(out_handle, np.object_, list(value.shape))
    assert echoed.tolist() == value.tolist()


def test_shared_memory_on_a_stream(client, region):
    a, b = _inputs(2)
    handle, key = region(2 * TENSOR_BYTES)
    shm.set_shared_memory_region(handle, [a, b])
    client.register_system_shared_memory("stream_inputs", key, 2 * TENSOR_BYTES)
    answers: list[tuple[object, object]] = []
    received: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    try:
        client.async_stream_infer(
            "add_sub",
            [
                _shm_input("INPUT0", "stream_inputs", TENSOR_BYTES),
                _shm_input("INPUT1", "stream_inputs", TENSOR_BYTES, offset=TENSOR_BYTES),
            ],
            request_id="shm-stream",
        )
        answers.append(received.get(timeout=30))
    finally:
        client.stop_stream()
    ((result, error),) = answers
    assert error is None, error
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b + 0.5, rtol=1e-6)


# every out-of-range offset and size -------------------------------------------------------------

REGION_BYTES = 2 * TENSOR_BYTES

BAD_INPUTS = [
    # (offset, byte_size, fragments)
    (0, TENSOR_BYTES - 4, ("shared_memory_byte_size is 188", "needs 192 bytes")),
    (0, TENSOR_BYTES + 4, ("shared_memory_byte_size is 196", "needs 192 bytes")),
    (REGION_BYTES - TENSOR_BYTES + 4, TENSOR_BYTES, ("offset 196", "do not fit", "384 bytes")),
    (REGION_BYTES, TENSOR_BYTES, ("offset 384", "do not fit")),
    (2**62, TENSOR_BYTES, ("do not fit",)),
]


@pytest.mark.parametrize(("offset", "byte_size", "fragments"), BAD_INPUTS)
def test_out_of_range_input_is_invalid_argument(client, region, offset, byte_size, fragments):
    _, key = region(REGION_BYTES)
    client.register_system_shared_memory("r", key, REGION_BYTES)
    raw = triton.InferInput("INPUT1", [ROWS, COLUMNS], "FP32")
    raw.set_data_from_numpy(_inputs()[1])
    with pytest.raises(InferenceServerException) as info:
        client.infer("add_sub", [_shm_input("INPUT0", "r", byte_size, offset), raw])
    _assert_error(info.value, INVALID, "input 'INPUT0'", *fragments)


BAD_OUTPUTS = [
    (0, TENSOR_BYTES - 4, ("byte_size 188 is too small", "needs 192 bytes")),
    (REGION_BYTES - 8, TENSOR_BYTES, ("offset 376", "do not fit", "384 bytes")),
    (REGION_BYTES + 1, 0, ("offset 385", "do not fit")),
    (8, REGION_BYTES, ("byte_size 384", "do not fit")),
]


@pytest.mark.parametrize(("offset", "byte_size", "fragments"), BAD_OUTPUTS)
def test_out_of_range_output_is_invalid_argument(client, region, offset, byte_size, fragments):
    handle, key = region(REGION_BYTES)
    handle_bytes = bytes(shm.get_contents_as_numpy(handle, np.uint8, [REGION_BYTES]))
    client.register_system_shared_memory("r", key, REGION_BYTES)
    a, b = _inputs()
    inputs = []
    for name, value in (("INPUT0", a), ("INPUT1", b)):
        tensor = triton.InferInput(name, [ROWS, COLUMNS], "FP32")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    with pytest.raises(InferenceServerException) as info:
        client.infer("add_sub", inputs, outputs=[_shm_output("OUTPUT0", "r", byte_size, offset)])
    _assert_error(info.value, INVALID, "output 'OUTPUT0'", *fragments)
    # Nothing was written anywhere in the region.
    assert bytes(shm.get_contents_as_numpy(handle, np.uint8, [REGION_BYTES])) == handle_bytes


@pytest.mark.parametrize(
    ("offset", "byte_size"), [(0, REGION_BYTES + 1), (8, REGION_BYTES), (REGION_BYTES, 1)]
)
def test_registering_past_the_end_of_the_object_is_invalid_argument(
    client, region, offset, byte_size
):
    _, key = region(REGION_BYTES)
    with pytest.raises(InferenceServerException) as info:
        client.register_system_shared_memory("r", key, byte_size, offset=offset)
    _assert_error(info.value, INVALID, "past the end", f"{REGION_BYTES} bytes")
    assert not client.get_system_shared_memory_status().regions


def test_registration_errors(client, region):
    _, key = region(REGION_BYTES)
    client.register_system_shared_memory("r", key, REGION_BYTES)
    with pytest.raises(InferenceServerException) as info:
        client.register_system_shared_memory("r", key, REGION_BYTES)
    _assert_error(info.value, grpc.StatusCode.ALREADY_EXISTS, "'r'", "already registered")
    with pytest.raises(InferenceServerException) as info:
        client.register_system_shared_memory("other", "/tg_it_no_such_key", 64)
    _assert_error(info.value, INVALID, "cannot open key '/tg_it_no_such_key'")
    with pytest.raises(InferenceServerException) as info:
        client.register_system_shared_memory("other", "/../../etc/passwd", 64)
    _assert_error(info.value, INVALID, "not a valid POSIX shared memory name")
    with pytest.raises(InferenceServerException) as info:
        client.get_system_shared_memory_status("no_such_region")
    _assert_error(info.value, grpc.StatusCode.NOT_FOUND, "'no_such_region'")


def test_unregistered_region_is_not_found(client):
    with pytest.raises(InferenceServerException) as info:
        client.infer(
            "add_sub",
            [
                _shm_input("INPUT0", "gone", TENSOR_BYTES),
                _shm_input("INPUT1", "gone", TENSOR_BYTES),
            ],
        )
    _assert_error(info.value, grpc.StatusCode.NOT_FOUND, "input 'INPUT0'", "'gone'")


def test_cuda_shared_memory_cleanup_succeeds_as_in_tritons_examples(client):
    # simple_grpc_shm_client and friends end with unregister_cuda_shared_memory() (every region)
    # and read the status: both answer OK with nothing registered, as Triton does.
    client.unregister_cuda_shared_memory()
    client.unregister_cuda_shared_memory("never_registered")
    assert list(client.get_cuda_shared_memory_status().regions) == []
    with pytest.raises(InferenceServerException) as info:
        client.get_cuda_shared_memory_status("never_registered")
    _assert_error(info.value, grpc.StatusCode.NOT_FOUND, "CUDA shared memory", "never_registered")


def test_cuda_shared_memory_register_is_refused_with_a_reason(client):
    with pytest.raises(InferenceServerException) as info:
        client.register_cuda_shared_memory("gpu_region", b"\x00" * 64, 0, 64)
    _assert_error(
        info.value,
        grpc.StatusCode.UNIMPLEMENTED,
        "'gpu_region'",
        "CUDA shared memory is not supported",
        "use system shared memory",
    )


def test_server_lists_the_extension(client):
    assert "system_shared_memory" in client.get_server_metadata().extensions


def test_regions_are_unmapped_at_shutdown(tmp_path: Path, region):
    mf.write_add_sub_model(tmp_path, "add_sub")
    _, key = region(REGION_BYTES)
    with ServerProcess(tmp_path) as server:
        with grpc.insecure_channel(server.url) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        with triton.InferenceServerClient(server.url) as client:
            client.register_system_shared_memory("r", key, REGION_BYTES)
        mark = server.log_mark()
        assert server.stop() == 0
    assert server.log_matches(r"unregistered system shared memory region 'r'", mark)
