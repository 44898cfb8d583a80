"""In-flight work, so a shutdown can stop taking new work and let running replies finish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ShuttingDownError(Exception):
    """New work arrived after shutdown began; the platform should redeliver it to another instance."""


class WorkTracker:
    def __init__(self) -> None:
        self._running = 0
        self._tasks: set[asyncio.Task[object]] = set()
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> int:
        return self._running

    @asynccontextmanager
    async def track(self, *, admitted: bool = False) -> AsyncIterator[None]:
        """Count work in flight. `admitted` work was accepted before shutdown began (e.g. a request already
        acknowledged to the platform) and must still run; anything else is refused once closed."""
        if self._closed and not admitted:
            raise ShuttingDownError
        self._running += 1
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    def close(self) -> None:
        self._closed = True

    async def wait_idle(self, seconds: float) -> bool:
        """True if everything finished in time."""
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def cancel_running(self, seconds: float) -> None:
        """Cancel what is still running (their `finally` blocks release leases) and wait for them."""
        for task in list(self._tasks):
            task.cancel()
        await self.wait_idle(seconds)
