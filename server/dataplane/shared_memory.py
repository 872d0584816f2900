"""System shared memory regions: the registry behind the SystemSharedMemory* RPCs.

A client creates a POSIX shared memory object (shm_open; tritonclient.utils.shared_memory does it
through Python's multiprocessing.shared_memory), registers a window of it under a name, and then
names that region in an input or output instead of sending the bytes. The object lives in
/dev/shm under its key. Each region is mapped once with mmap at registration and unmapped when it
is unregistered or the server stops.

Every access is checked against the registered window and against the object's current size
(a client could shrink the object after registering it; touching a page past its end would kill
the process with SIGBUS), so no request can read or write outside what was registered. Reads copy
the bytes out, so unregistering a region never races a queued request that read from it.

The registry is used from the event loop only (RPC handlers, decode and encode all run there);
a lock still guards each change, so a call from another thread cannot see a half-made change.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from runtimes.errors import InvalidInputError
from server.dataplane.errors import AlreadyExistsError, RegionNotFoundError, UnsupportedError

log = logging.getLogger(__name__)

SHM_DIRECTORY = Path("/dev/shm")


@dataclass(frozen=True)
class RegionStatus:
    name: str
    key: str
    offset: int
    byte_size: int


@dataclass(eq=False)
class _Region:
    status: RegionStatus
    fd: int
    mapping: mmap.mmap
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    def check_object_size(self) -> None:
        """The object must still cover the registered window (it may have been truncated)."""
        needed = self.status.offset + self.status.byte_size
        size = os.fstat(self.fd).st_size
        if size < needed:
            raise InvalidInputError(
                f"shared memory region '{self.status.name}': its object '{self.status.key}' "
                f"now has {size} bytes, less than the {needed} registered; register it again"
            )

    def usable(self, what: str) -> None:
        """Call with the lock held, before touching the mapping."""
        if self.closed:
            raise RegionNotFoundError(
                f"{what}: system shared memory region '{self.status.name}' was unregistered"
            )
        self.check_object_size()

    def close(self) -> None:
        self.closed = True
        try:
            self.mapping.close()
        finally:
            os.close(self.fd)


def shm_path(key: str) -> Path:
    """The file of a POSIX shared memory key ("/name" or "name"); a key that names anything
    else (a slash inside, "." or "..") is refused, so registration cannot open other files."""
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise InvalidInputError(
            f"shared memory key '{key}' is not a valid POSIX shared memory name "
            "(expected '/name' without further slashes)"
        )
    return SHM_DIRECTORY / name


class SharedMemoryRegistry:
    def __init__(self) -> None:
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    # the RPCs ------------------------------------------------------------------------------

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not name:
            raise InvalidInputError("a shared memory region needs a name")
        if offset < 0 or byte_size <= 0:
            raise InvalidInputError(
                f"shared memory region '{name}': offset must be >= 0 and byte_size > 0, got "
                f"offset {offset} and byte_size {byte_size}"
            )
        path = shm_path(key)
        with self._lock:
            if name in self._regions:
                raise AlreadyExistsError(
                    f"shared memory region '{name}' is already registered; unregister it first"
                )
            try:
                fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
            except OSError as exc:
                raise InvalidInputError(
                    f"shared memory region '{name}': cannot open key '{key}': {exc.strerror}"
                ) from exc
            try:
                size = os.fstat(fd).st_size
                if offset + byte_size > size:
                    raise InvalidInputError(
                        f"shared memory region '{name}': offset {offset} + byte_size {byte_size} "
                        f"is past the end of '{key}', which has {size} bytes"
                    )
                mapping = mmap.mmap(fd, offset + byte_size)
            except BaseException:
                os.close(fd)
                raise
            self._regions[name] = _Region(RegionStatus(name, key, offset, byte_size), fd, mapping)
        log.info(
            "registered system shared memory region '%s' (key %s, offset %d, %d bytes)",
            name,
            key,
            offset,
            byte_size,
        )

    def status(self, name: str = "") -> list[RegionStatus]:
        """Every region, or the one named (NOT_FOUND when it is not registered)."""
        with self._lock:
            if not name:
                return [region.status for region in self._regions.values()]
            region = self._regions.get(name)
        if region is None:
            raise RegionNotFoundError(f"no system shared memory region named '{name}'")
        return [region.status]

    def unregister(self, name: str = "") -> None:
        """Unregister the region named, or every region when name is empty. A name that is not
        registered is not an error (as in Triton)."""
        with self._lock:
            names = [name] if name else list(self._regions)
            regions = [self._regions.pop(n) for n in names if n in self._regions]
        for region in regions:
            with region.lock:
                region.close()
            log.info("unregistered system shared memory region '%s'", region.status.name)

    def close(self) -> None:
        """Unmap everything (server shutdown)."""
        self.unregister()

    # tensors --------------------------------------------------------------------------------

    def check(self, name: str, offset: int, byte_size: int, what: str) -> None:
        """Raise unless [offset, offset + byte_size) lies inside region `name`."""
        self._bounds(self._region(name, what), offset, byte_size, what)

    def read(self, name: str, offset: int, byte_size: int, what: str) -> bytes:
        """A copy of byte_size bytes at offset inside region `name`."""
        region = self._region(name, what)
        start = self._bounds(region, offset, byte_size, what)
        with region.lock:
            region.usable(what)
            return region.mapping[start : start + byte_size]

    def write(
        self, name: str, offset: int, byte_size: int, data: bytes | memoryview, what: str
    ) -> None:
        """Copy data into region `name` at offset; byte_size is the room the request gave."""
        region = self._region(name, what)
        start = self._bounds(region, offset, byte_size, what)
        if len(data) > byte_size:
            raise InvalidInputError(
                f"{what}: shared memory byte_size {byte_size} is too small for the result, "
                f"which needs {len(data)} bytes"
            )
        with region.lock:
            region.usable(what)
            region.mapping[start : start + len(data)] = data

    def _region(self, name: str, what: str) -> _Region:
        region = self._regions.get(name)
        if region is None:
            raise RegionNotFoundError(
                f"{what} names system shared memory region '{name}', which is not registered"
            )
        return region

    @staticmethod
    def _bounds(region: _Region, offset: int, byte_size: int, what: str) -> int:
        """The position in the mapping of offset within the region, after checking bounds."""
        size = region.status.byte_size
        if offset < 0 or byte_size < 0 or offset > size or byte_size > size - offset:
            raise InvalidInputError(
                f"{what}: offset {offset} and byte_size {byte_size} do not fit in shared memory "
                f"region '{region.status.name}' of {size} bytes"
            )
        return region.status.offset + offset


class CudaSharedMemory:
    """The CUDA shared memory extension on a server that cannot map a client's GPU memory.

    No region is ever registered, so status lists none and unregistering (one name, or every
    region with an empty name) succeeds, as Triton answers on every build: Triton's client
    examples clean up with `unregister_cuda_shared_memory()` whatever they used. Only Register
    is refused, saying why.
    """

    REFUSAL = (
        "CUDA shared memory is not supported: this server cannot map a client's GPU memory (that "
        "needs CUDA IPC through a CUDA runtime, which it does not use); use system shared memory"
    )

    def status(self, name: str = "") -> list[RegionStatus]:
        if name:
            raise RegionNotFoundError(f"no CUDA shared memory region named '{name}'")
        return []

    def register(self, name: str) -> None:
        refusal = self.REFUSAL
        raise UnsupportedError(f"cannot register CUDA shared memory region '{name}': {refusal}")

    def unregister(self, name: str = "") -> None:
        """Nothing is registered: nothing to do, and not an error."""
