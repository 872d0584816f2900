"""The server-wide budget of request bytes in flight (--max-inflight-bytes).

Each front end takes a request's received size before it decodes the request and gives it back
when the answer is ready (`take` ... `give_back`, in try/finally); a request that would take the
total over the budget is refused at once with RESOURCE_EXHAUSTED, so a burst of big tensors
cannot hold more than the budget while they queue and compute. A request larger than the whole
budget is refused even when nothing else is in flight (it could never fit). One budget per
process, shared by its front ends.
"""

from __future__ import annotations

import threading

from server.dataplane.errors import CapacityError


class InflightBytes:
    def __init__(self, limit: int) -> None:
        """limit: the most bytes in flight at once; 0 for no limit."""
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> None:
        """Count `size` bytes in flight, or raise CapacityError (nothing counted)."""
        with self._lock:
            held = self.held
            if not self.limit or held + size <= self.limit:
                self.held = held + size
                return
        raise CapacityError(
            f"the request's {size} bytes would take the bytes in flight over the server's "
            f"limit of {self.limit} (--max-inflight-bytes; {held} held now); retry later"
        )

    def give_back(self, size: int) -> None:
        with self._lock:
            self.held -= size
