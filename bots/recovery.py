"""Answers for messages a dead process took in but never answered, and answers no platform accepted.

Every instance sweeps its platform's unanswered messages now and then. The thread's lease decides who
answers: a message still being answered by a live instance comes back `Ignored` once that instance is done,
and one whose process died is answered here, in its thread.

With `deliveries`, the sweep also finds answers that were stored but never delivered (the platform failed
the post beyond its SDK's retries): `redeliver` posts the stored answer again, with backoff per message
(doubling from the sweep interval). After `delivery_attempts` failures it stops trying the whole answer and
`give_up` tells the person plainly instead, retried the same way until the platform takes that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from core.delivery import Deliveries
from core.domain import StoredMessage
from core.service import ConversationService
from core.work_tracker import ShuttingDownError, WorkTracker

log = logging.getLogger(__name__)

# Older than a lease's lifetime (15 s) plus margin: by then a dead holder's lease has expired.
DEFAULT_AGE_SECONDS = 30.0
DEFAULT_INTERVAL_SECONDS = 15.0
DEFAULT_DELIVERY_ATTEMPTS = 6
MAX_DELIVERY_BACKOFF_SECONDS = 300.0

Deliver = Callable[[StoredMessage], Awaitable[None]]


class Undeliverable(Exception):
    """Raised by a redelivery the platform will never accept: the message stops being tried."""


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
        deliveries: Deliveries | None = None,
        redeliver: Deliver | None = None,
        give_up: Deliver | None = None,
        delivery_attempts: int = DEFAULT_DELIVERY_ATTEMPTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service = service
        self._work = work
        self._platform = platform
        self._deliver = deliver
        self._age = age_seconds
        self._interval = interval_seconds
        self._running: dict[int, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._deliveries = deliveries
        self._redeliver = redeliver
        self._give_up = give_up
        self._delivery_attempts = delivery_attempts
        self._clock = clock
        # Per undelivered message: failed attempts so far, and when the next one may start.
        self._failures: dict[int, tuple[int, float]] = {}

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
        now = self._clock()
        for message in await self._service.unanswered(platform=self._platform, older_than_seconds=self._age):
            if message.conversation_id in self._running:
                continue
            if self._failures.get(message.id, (0, 0.0))[1] > now:
                continue  # backing off (say, a thread the bot may not post in)
            self._running[message.conversation_id] = asyncio.create_task(self._answer(message))
            started += 1
        return started + await self._sweep_undelivered()

    async def _sweep_undelivered(self) -> int:
        if self._deliveries is None or self._redeliver is None:
            return 0
        started = 0
        now = self._clock()
        for message in await self._deliveries.undelivered(platform=self._platform, older_than_seconds=self._age):
            if message.conversation_id in self._running:
                continue
            if self._failures.get(message.id, (0, 0.0))[1] > now:
                continue  # backing off
            self._running[message.conversation_id] = asyncio.create_task(self._deliver_again(message))
            started += 1
        return started

    async def _deliver_again(self, message: StoredMessage) -> None:
        failures, _ = self._failures.get(message.id, (0, 0.0))
        giving_up = failures >= self._delivery_attempts and self._give_up is not None
        deliver = self._give_up if giving_up else self._redeliver
        assert deliver is not None
        try:
            async with self._work.track():
                await deliver(message)
        except ShuttingDownError:
            return
        except Undeliverable as exc:
            # The platform will never take it (the channel is gone, the person's DMs are closed): settled, so
            # that it stops being tried. The audit trail and the log keep that it never arrived.
            log.warning(
                "a stored answer can never be delivered; given up",
                extra={"conversation": message.conversation_id, "error": str(exc)[:100]},
            )
            self._failures.pop(message.id, None)
            if self._deliveries is not None:
                await self._deliveries.delivered(conversation_id=message.conversation_id, trigger_seq=message.seq)
        except Exception as exc:
            failures += 1
            self._failures[message.id] = (failures, self._clock() + self._backoff(failures))
            log.warning(
                "delivering a stored answer failed; will retry",
                extra={"conversation": message.conversation_id, "attempts": failures, "error": type(exc).__name__},
            )
        else:
            self._failures.pop(message.id, None)
        finally:
            self._running.pop(message.conversation_id, None)

    def _backoff(self, failures: int) -> float:
        return float(min(self._interval * 2 ** (failures - 1), MAX_DELIVERY_BACKOFF_SECONDS))

    async def _answer(self, message: StoredMessage) -> None:
        try:
            async with self._work.track():
                await self._deliver(message)
        except ShuttingDownError:
            return
        except Exception as exc:
            failures = self._failures.get(message.id, (0, 0.0))[0] + 1
            self._failures[message.id] = (failures, self._clock() + self._backoff(failures))
            log.warning(
                "recovering an unanswered message failed; will retry",
                extra={"conversation": message.conversation_id, "attempts": failures, "error": type(exc).__name__},
            )
        else:
            self._failures.pop(message.id, None)
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
