"""server.shared_memory and the codec's shared memory path: every offset and size is checked
against the registered region, so no request reads or writes outside it.

Regions are real POSIX shared memory objects (multiprocessing.shared_memory, which is what
tritonclient's utilities use), unlinked by a fixture.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import shared_memory

import numpy as np
import pytest

from runtimes.errors import InvalidInputError, TensorgateError
from server._proto import grpc_service_pb2 as pb
from server.dataplane.errors import AlreadyExistsError, RegionNotFoundError, UnsupportedError
from server.dataplane.inference import SharedMemoryLocation
from server.dataplane.shared_memory import SharedMemoryRegistry, shm_path
from server.grpc_api import codec
from tests.support.responses import encode

SIZE = 256


@contextmanager
def _raises(cls: type[TensorgateError], *fragments: str) -> Iterator[None]:
    """Exactly `cls` with every fragment in its message."""
    with pytest.raises(TensorgateError) as info:
        yield
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


@pytest.fixture
def shm() -> Iterator[shared_memory.SharedMemory]:
    block = shared_memory.SharedMemory(f"tg_test_{uuid.uuid4().hex[:12]}", create=True, size=SIZE)
    try:
        yield block
    finally:
        block.close()
        block.unlink()


@pytest.fixture
def registry() -> Iterator[SharedMemoryRegistry]:
    registry = SharedMemoryRegistry()
    yield registry
    registry.close()


def _key(block: shared_memory.SharedMemory) -> str:
    return "/" + block.name.lstrip("/")


# registration ------------------------------------------------------------------------------


def test_register_status_unregister(registry, shm):
    registry.register("r", _key(shm), 16, 64)
    (status,) = registry.status("r")
    assert (status.name, status.key, status.offset, status.byte_size) == ("r", _key(shm), 16, 64)
    assert [s.name for s in registry.status()] == ["r"]
    registry.unregister("r")
    assert registry.status() == []
    with _raises(RegionNotFoundError, "'r'"):
        registry.status("r")


def test_unregister_unknown_name_is_not_an_error(registry):
    registry.unregister("never-registered")


def test_unregister_all(registry, shm):
    registry.register("a", _key(shm), 0, 8)
    registry.register("b", _key(shm), 8, 8)
    registry.unregister()
    assert registry.status() == []


def test_register_twice_is_already_exists(registry, shm):
    registry.register("r", _key(shm), 0, 8)
    with _raises(AlreadyExistsError, "'r'", "already registered"):
        registry.register("r", _key(shm), 0, 8)


@pytest.mark.parametrize(
    ("offset", "byte_size"), [(0, SIZE + 1), (1, SIZE), (SIZE, 1), (2**63, 8), (0, 2**64 - 1)]
)
def test_register_past_the_end_of_the_object(registry, shm, offset, byte_size):
    with _raises(InvalidInputError, "past the end", f"{SIZE} bytes"):
        registry.register("r", _key(shm), offset, byte_size)
    assert registry.status() == []


def test_register_zero_bytes(registry, shm):
    with _raises(InvalidInputError, "byte_size > 0"):
        registry.register("r", _key(shm), 0, 0)


def test_register_unknown_key(registry):
    with _raises(InvalidInputError, "cannot open key '/tg_no_such_key'"):
        registry.register("r", "/tg_no_such_key", 0, 8)


@pytest.mark.parametrize("key", ["/../etc/passwd", "/a/b", "..", "/", ""])
def test_keys_that_name_other_files_are_refused(registry, key):
    with _raises(InvalidInputError, "not a valid POSIX shared memory name"):
        registry.register("r", key, 0, 8)


def test_key_with_or_without_leading_slash(shm):
    assert shm_path(_key(shm)) == shm_path(_key(shm).lstrip("/"))


# reads and writes ----------------------------------------------------------------------------


def test_read_and_write_inside_the_region(registry, shm):
    shm.buf[:SIZE] = bytes(range(256))
    registry.register("r", _key(shm), 16, 64)
    assert registry.read("r", 0, 4, "input 'x'") == bytes([16, 17, 18, 19])
    assert registry.read("r", 60, 4, "input 'x'") == bytes([76, 77, 78, 79])
    registry.write("r", 4, 4, b"\xff" * 4, "output 'y'")
    assert bytes(shm.buf[20:24]) == b"\xff" * 4
    assert bytes(shm.buf[16:20]) == bytes([16, 17, 18, 19])


@pytest.mark.parametrize(
    ("offset", "byte_size"),
    [(0, 65), (64, 1), (60, 8), (65, 0), (2**63, 1), (1, 2**64 - 1), (-1, 4), (0, -1)],
)
def test_every_access_outside_the_region_is_refused(registry, shm, offset, byte_size):
    registry.register("r", _key(shm), 16, 64)
    fragments = (f"offset {offset}", f"byte_size {byte_size}", "region 'r' of 64 bytes")
    with _raises(InvalidInputError, "input 'x'", *fragments):
        registry.read("r", offset, byte_size, "input 'x'")
    with _raises(InvalidInputError, "output 'y'", *fragments):
        registry.write("r", offset, byte_size, b"", "output 'y'")
    with _raises(InvalidInputError, *fragments):
        registry.check("r", offset, byte_size, "output 'y'")


def test_write_larger_than_the_room_given(registry, shm):
    registry.register("r", _key(shm), 0, 64)
    with _raises(InvalidInputError, "byte_size 8 is too small", "needs 12 bytes"):
        registry.write("r", 0, 8, b"x" * 12, "output 'y'")


def test_object_truncated_after_registration_is_not_touched(registry, shm):
    registry.register("r", _key(shm), 0, SIZE)
    os.truncate(shm_path(_key(shm)), 16)
    with _raises(InvalidInputError, "now has 16 bytes", "register it again"):
        registry.read("r", 0, 8, "input 'x'")


def test_unknown_region(registry):
    with _raises(RegionNotFoundError, "input 'x'", "'nope'", "not registered"):
        registry.read("nope", 0, 4, "input 'x'")


# the codec ------------------------------------------------------------------------------------


def _shm_input(name: str, region: str, offset: int | None, byte_size: int | None, shape):
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype="FP32", shape=shape)
    tensor.parameters["shared_memory_region"].string_param = region
    if offset is not None:
        tensor.parameters["shared_memory_offset"].int64_param = offset
    if byte_size is not None:
        tensor.parameters["shared_memory_byte_size"].int64_param = byte_size
    return tensor


def test_decode_mixes_shared_memory_and_raw_inputs(registry, shm):
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = -np.arange(8, dtype=np.float32).reshape(2, 4)
    shm.buf[32 : 32 + a.nbytes] = a.tobytes()
    registry.register("r", _key(shm), 0, SIZE)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.append(_shm_input("a", "r", 32, a.nbytes, [2, 4]))
    request.inputs.append(pb.ModelInferRequest.InferInputTensor(name="b", datatype="FP32"))
    request.inputs[1].shape.extend([2, 4])
    request.raw_input_contents.append(b.tobytes())  # one raw entry: the input not in shm
    decoded = codec.decode_infer_request(request, registry)
    np.testing.assert_array_equal(decoded.inputs["a"], a)
    np.testing.assert_array_equal(decoded.inputs["b"], b)
    # A copy: changing the region afterwards does not change the decoded input.
    shm.buf[32:36] = b"\x00\x00\x80\x7f"
    np.testing.assert_array_equal(decoded.inputs["a"], a)


@pytest.mark.parametrize(
    ("offset", "byte_size", "error", "fragments"),
    [
        (0, 31, InvalidInputError, ("shared_memory_byte_size is 31", "needs 32 bytes")),
        (SIZE - 16, 32, InvalidInputError, ("do not fit", f"of {SIZE} bytes")),
        (SIZE, 32, InvalidInputError, ("do not fit",)),
        (2**62, 32, InvalidInputError, ("do not fit",)),
        (None, None, InvalidInputError, ("needs the parameter 'shared_memory_byte_size'",)),
        (-8, 32, InvalidInputError, ("'shared_memory_offset' must not be negative",)),
    ],
)
def test_decode_rejects_bad_offsets_and_sizes(registry, shm, offset, byte_size, error, fragments):
    registry.register("r", _key(shm), 0, SIZE)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.append(_shm_input("a", "r", offset, byte_size, [2, 4]))
    with _raises(error, "input 'a'", *fragments):
        codec.decode_infer_request(request, registry)


def test_decode_unknown_region(registry):
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.append(_shm_input("a", "nope", 0, 32, [2, 4]))
    with _raises(RegionNotFoundError, "input 'a'", "'nope'"):
        codec.decode_infer_request(request, registry)


def test_decode_without_a_registry_is_unsupported():
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.append(_shm_input("a", "r", 0, 32, [2, 4]))
    with _raises(UnsupportedError, "input 'a'", "shared memory"):
        codec.decode_infer_request(request)


def test_raw_entries_count_only_inputs_outside_shared_memory(registry, shm):
    registry.register("r", _key(shm), 0, SIZE)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.append(_shm_input("a", "r", 0, 32, [2, 4]))
    request.raw_input_contents.append(b"\x00" * 32)  # but no other input
    with _raises(InvalidInputError, "0 inputs outside shared memory", "1 raw_input_contents"):
        codec.decode_infer_request(request, registry)


def _shm_output(request: pb.ModelInferRequest, name: str, region: str, offset: int, size: int):
    output = request.outputs.add(name=name)
    output.parameters["shared_memory_region"].string_param = region
    output.parameters["shared_memory_offset"].int64_param = offset
    output.parameters["shared_memory_byte_size"].int64_param = size


def test_outputs_are_written_to_their_region_and_left_out_of_the_response(registry, shm):
    registry.register("r", _key(shm), 8, 128)
    request = pb.ModelInferRequest(model_name="m")
    _shm_output(request, "y", "r", 16, 64)
    request.outputs.add(name="z")
    decoded = codec.decode_infer_request(request, registry)
    assert decoded.shared_memory_outputs == {"y": SharedMemoryLocation("r", 16, 64)}
    y = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    z = np.array([1, 2], dtype=np.int64)
    response = encode("m", "1", "id", {"y": y, "z": z}, decoded.shared_memory_outputs, registry)
    written = np.frombuffer(bytes(shm.buf[24 : 24 + y.nbytes]), np.float32).reshape(2, 3)
    np.testing.assert_array_equal(written, y)
    # One raw entry per output, in order; the one in shared memory is empty.
    assert list(response.raw_output_contents) == [b"", z.tobytes()]
    params = response.outputs[0].parameters
    assert params["shared_memory_region"].string_param == "r"
    assert params["shared_memory_byte_size"].int64_param == y.nbytes


@pytest.mark.parametrize(("offset", "size"), [(120, 16), (128, 1), (2**40, 8)])
def test_output_location_outside_the_region_is_refused_before_running(registry, shm, offset, size):
    registry.register("r", _key(shm), 0, 128)
    request = pb.ModelInferRequest(model_name="m")
    _shm_output(request, "y", "r", offset, size)
    with _raises(InvalidInputError, "output 'y'", "do not fit", "of 128 bytes"):
        codec.decode_infer_request(request, registry)


def test_output_larger_than_its_room(registry, shm):
    registry.register("r", _key(shm), 0, 128)
    request = pb.ModelInferRequest(model_name="m")
    _shm_output(request, "y", "r", 0, 8)
    decoded = codec.decode_infer_request(request, registry)
    y = np.zeros((2, 3), np.float32)
    with _raises(InvalidInputError, "output 'y'", "byte_size 8 is too small", "needs 24"):
        encode("m", "1", "", {"y": y}, decoded.shared_memory_outputs, registry)


def test_output_region_unregistered_while_the_request_ran(registry, shm):
    registry.register("r", _key(shm), 0, 128)
    request = pb.ModelInferRequest(model_name="m")
    _shm_output(request, "y", "r", 0, 64)
    decoded = codec.decode_infer_request(request, registry)
    registry.unregister("r")
    with _raises(RegionNotFoundError, "output 'y'", "'r'"):
        encode(
            "m", "1", "", {"y": np.zeros(2, np.float32)}, decoded.shared_memory_outputs, registry
        )
