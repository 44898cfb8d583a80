"""Paces a streamed reply's draft for any platform: throttled, latest text wins, never blocking the stream.

The SDKs sleep out a rate limit inside the call (Slack's retry handler, discord.py's 429 handling); a
draft update that waits there must not hold up the model's stream, so updates run beside it, one at a
time, and whatever text is newest when one starts is the text it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable


class DraftPacer:
    def __init__(
        self,
        push: Callable[[str], Awaitable[None]],
        *,
        has_draft: Callable[[], bool],
        min_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`push(text)` creates the draft (a placeholder) or updates it with `text`; `has_draft` tells which."""
        self._push = push
        self._has_draft = has_draft
        self._min_interval = min_interval
        self._clock = clock
        self._latest = ""
        self._last = 0.0
        self._running: asyncio.Task[None] | None = None

    def offer(self, text: str) -> None:
        self._latest = text
        if self._running is not None and not self._running.done():
            return
        if self._has_draft() and self._clock() - self._last < self._min_interval:
            return
        self._last = self._clock()
        self._running = asyncio.create_task(self._run())

    async def _run(self) -> None:
        await self._push(self._latest)

    async def settle(self) -> None:
        """Before the final posts: let a draft being created land (its id is needed), drop an update."""
        running, self._running = self._running, None
        if running is None or running.done():
            return
        if not self._has_draft():
            await running
            return
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
