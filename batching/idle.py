"""The runtime instances of a scheduler that are not running a batch."""

from __future__ import annotations

import asyncio
from collections import deque

from runtimes.base import Runtime


class IdleInstances:
    """Instances free to run a batch, in the order they became free.

    Lighter than an asyncio.Queue on the direct path, which runs a request synchronously on an
    idle instance (`first`) without taking it out: nothing else can run on the event loop
    meanwhile, so nothing can take it.
    """

    def __init__(self) -> None:
        self._idle: deque[Runtime] = deque()
        self._returned = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self._idle)

    def put(self, instance: Runtime) -> None:
        self._idle.append(instance)
        self._returned.set()

    def first(self) -> Runtime:
        """The instance that has been idle longest, left idle; there must be one."""
        return self._idle[0]

    async def take(self) -> Runtime:
        """Wait for an idle instance and take it."""
        while not self._idle:
            self._returned.clear()
            await self._returned.wait()
        return self._idle.popleft()
