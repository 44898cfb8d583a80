"""Answers for messages a dead process took in but never answered.

Every instance sweeps its platform's unanswered messages now and then. The thread's lease decides who
answers: a message still being answered by a live instance comes back `Ignored` once that instance is done,
and one whose process died is answered here, in its thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from core.domain import StoredMessage
from core.service import ConversationService
from core.work_tracker import ShuttingDownError, WorkTracker

log = logging.getLogger(__name__)

# Older than a lease's lifetime (15 s) plus margin: by then a dead holder's lease has expired.
DEFAULT_AGE_SECONDS = 30.0
DEFAULT_INTERVAL_SECONDS = 15.0

Deliver = Callable[[StoredMessage], Awaitable[None]]


class RecoveryLoop:
    def __init__(
        self,
        *,
        service: ConversationService,
        work: WorkTracker,
        platform: str,
        deliver: Deliver,
        age_seconds: float = DEFAULT_AGE_SECONDS,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self._service = service
        self._work = work
        self._platform = platform
        self._deliver = deliver
        self._age = age_seconds
        self._interval = interval_seconds
        self._running: dict[int, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"recovery-{self._platform}")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sweep(self) -> int:
        """Start answering every unanswered message found; returns how many were started."""
        started = 0
        for message in await self._service.unanswered(platform=self._platform, older_than_seconds=self._age):
            if message.conversation_id in self._running:
                continue
            self._running[message.conversation_id] = asyncio.create_task(self._answer(message))
            started += 1
        return started

    async def _answer(self, message: StoredMessage) -> None:
        try:
            async with self._work.track():
                await self._deliver(message)
        except ShuttingDownError:
            return
        except Exception:
            log.exception("recovering an unanswered message failed", extra={"conversation": message.conversation_id})
        finally:
            self._running.pop(message.conversation_id, None)

    async def _loop(self) -> None:
        while True:
            if not self._work.closed:
                try:
                    found = await self.sweep()
                    if found:
                        log.info("answering messages a stopped process left", extra={"count": found})
                except Exception:
                    log.exception("recovery sweep failed; will retry")
            await asyncio.sleep(self._interval)
