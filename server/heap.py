"""Give freed heap memory back to the operating system after a big message.

grpc hands a received message to Python as many small chunks joined into one bytes object; the
chunks are freed at once, but glibc keeps the pages they used, so a 64 MiB request left the
process 64 MiB bigger for good (benchmarks/tensor_memory.py). `malloc_trim` returns those
pages. It walks the heap (well under a millisecond here), so it runs once per message of
BIG_MESSAGE_BYTES or more, never for small ones. Without glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

BIG_MESSAGE_BYTES = 1 << 20  # messages this big or bigger take the copy-saving paths

_malloc_trim: Callable[[int], int] | None = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _malloc_trim = _libc.malloc_trim
except (OSError, AttributeError):  # not glibc
    pass


def release_free_memory() -> None:
    if _malloc_trim is not None:
        _malloc_trim(0)
