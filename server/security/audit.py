"""The audit log: one JSON line per control action and per refused call.

It records who (peer address and token name) did what to which model and how it ended. It never
records tokens or tensor data.
"""

from __future__ import annotations

import datetime
import json
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import TextIO

from runtimes.errors import TensorgateError


class AuditLog:
    def __init__(self, path: str | None) -> None:
        """path: a file to append to, "-" for stderr, or None for no audit log."""
        self._lock = threading.Lock()
        self._stream: TextIO | None
        self._owned = False
        if path is None:
            self._stream = None
        elif path == "-":
            self._stream = sys.stderr
        else:
            # Kept open for the server's lifetime; close() closes it.
            self._stream = Path(path).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115
            self._owned = True

    def record(
        self,
        peer: str,
        identity: str,
        action: str,
        *,
        outcome: str,
        model: str = "",
        **extra: object,
    ) -> None:
        if self._stream is None:
            return
        entry = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "peer": peer,
            "identity": identity,
            "action": action,
            "model": model,
            "outcome": outcome,
            **extra,
        }
        with self._lock:
            self._stream.write(json.dumps(entry, sort_keys=True) + "\n")
            self._stream.flush()

    def action(
        self, peer: str, identity: str, action: str, *, model: str = "", **extra: object
    ) -> _Action:
        """Records the action when the block ends: outcome "OK" or the error's status name."""
        return _Action(self, peer, identity, action, model, extra)

    def close(self) -> None:
        if self._owned and self._stream is not None:
            self._stream.close()
        self._stream = None


class _Action:
    def __init__(
        self,
        log: AuditLog,
        peer: str,
        identity: str,
        action: str,
        model: str,
        extra: dict[str, object],
    ) -> None:
        self._args = (log, peer, identity, action, model, extra)

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        log, peer, identity, action, model, extra = self._args
        if error is None:
            outcome = "OK"
        elif isinstance(error, TensorgateError):
            outcome = error.kind.name
        else:
            outcome = "INTERNAL"
        log.record(peer, identity, action, outcome=outcome, model=model, **extra)
