"""Whether this process can take work now, as components report it; `/readyz` answers from it.

Liveness (`/healthz`) and readiness differ: a process whose database is down is alive (restarting it would
not help) but not ready (a platform should not route new work to it, and an operator should be told).
Components report into one `Readiness`; nothing here is checked per probe, so a probe never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from core.metrics import Metrics, NullMetrics

log = logging.getLogger(__name__)

STORE = "store"
STORE_CHECK_SECONDS = 1.0
STORE_CHECK_TIMEOUT_SECONDS = 1.5


class Readiness:
    def __init__(self) -> None:
        self._not_ready: dict[str, str] = {}

    def report(self, component: str, *, ready: bool, reason: str = "") -> None:
        if ready:
            self._not_ready.pop(component, None)
        else:
            self._not_ready[component] = reason or "not ready"

    @property
    def ready(self) -> bool:
        return not self._not_ready

    def is_ready(self, component: str) -> bool:
        return component not in self._not_ready

    def not_ready(self) -> dict[str, str]:
        """Each component that is not ready, with why (short codes, never message text)."""
        return dict(self._not_ready)


class StoreWatch:
    """Pings the store in the background and reports it into `Readiness` and the `store_up` metric."""

    def __init__(
        self,
        ping: Callable[[], Awaitable[None]],
        readiness: Readiness,
        *,
        metrics: Metrics | None = None,
        interval_seconds: float = STORE_CHECK_SECONDS,
        timeout_seconds: float = STORE_CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self._ping = ping
        self._readiness = readiness
        self._metrics = metrics or NullMetrics()
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await self._ping()
        except Exception as exc:
            self.report_down(type(exc).__name__)
            return False
        self.report_up()
        return True

    def report_down(self, reason: str) -> None:
        """Also called by whoever just failed to write: readiness drops at once, not at the next ping."""
        if self._readiness.is_ready(STORE):
            log.warning("database unreachable: not ready", extra={"reason": reason})
        self._readiness.report(STORE, ready=False, reason=reason)
        self._metrics.set_store_up(False)

    def report_up(self) -> None:
        if not self._readiness.is_ready(STORE):
            log.info("database reachable again: ready")
        self._readiness.report(STORE, ready=True)
        self._metrics.set_store_up(True)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="store-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval)
