"""One conversation at a time: an in-process lock per thread, plus a database lease when several instances
share the database (PostgreSQL). A single-instance store (SQLite) needs only the in-process lock, so a
message costs no lease writes there."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.domain import ThreadKey
from core.ports import LeaseStore

log = logging.getLogger(__name__)

LEASE_POLL_SECONDS = 0.05


class LeaseTimeoutError(Exception):
    """Another instance held the thread for longer than we are willing to wait."""


def lease_name(key: ThreadKey) -> str:
    return f"{key.platform}:{key.place}:{key.thread}"


class ThreadLocks:
    """Two messages of one thread never run at once; different threads run concurrently.

    The lease is short and renewed while its holder works, so it outlives any model call yet expires
    soon after a holder dies: a crash never wedges a thread for long.
    """

    def __init__(self, leases: LeaseStore | None, *, ttl_seconds: float, wait_seconds: float) -> None:
        self._leases = leases
        self._ttl = ttl_seconds
        self._wait = wait_seconds
        self._holder = f"proc-{uuid.uuid4().hex[:12]}"
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiters: dict[str, int] = {}

    @property
    def holder(self) -> str:
        return self._holder

    @asynccontextmanager
    async def hold(self, key: ThreadKey) -> AsyncIterator[None]:
        name = lease_name(key)
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._waiters[name] = self._waiters.get(name, 0) + 1
        try:
            async with lock:
                if self._leases is None:
                    yield
                else:
                    async with self._leased(self._leases, name):
                        yield
        finally:
            self._waiters[name] -= 1
            if self._waiters[name] == 0:
                # Forget idle threads so the table does not grow with every thread ever seen.
                del self._waiters[name]
                del self._locks[name]

    @asynccontextmanager
    async def _leased(self, leases: LeaseStore, name: str) -> AsyncIterator[None]:
        await self._acquire_lease(leases, name)
        renewer = asyncio.create_task(self._renew(leases, name))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await asyncio.shield(leases.release_lease(name=name, holder=self._holder))

    async def _acquire_lease(self, leases: LeaseStore, name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while not await leases.acquire_lease(name=name, holder=self._holder, ttl_seconds=self._ttl):
            if loop.time() >= deadline:
                raise LeaseTimeoutError(name)
            await asyncio.sleep(LEASE_POLL_SECONDS)

    async def _renew(self, leases: LeaseStore, name: str) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                renewed = await leases.acquire_lease(name=name, holder=self._holder, ttl_seconds=self._ttl)
            except Exception:
                log.warning("lease renewal failed; retrying", extra={"lease": name}, exc_info=True)
                continue
            if not renewed:
                log.warning("lease was taken over while held", extra={"lease": name})
