"""The composition root: builds settings, store, model client and service once and passes them in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from bots.environment import Environment
from core.claude_client import ClaudeClient
from core.clock import SystemClock
from core.metrics import Metrics, NullMetrics
from core.ports import ClaudeApi, Clock, Store
from core.readiness import Readiness, StoreWatch
from core.service import ConversationService
from core.settings import Settings
from core.storage.factory import open_store
from core.thread_locks import ThreadLocks
from core.work_tracker import WorkTracker

# Margin on top of the longest model call another holder may be making before we give up waiting.
LEASE_WAIT_MARGIN_SECONDS = 30.0


# Like a configuration error: the operator must fix something (a token, an intent) before a restart helps.
EXIT_START_FAILED = 2


@dataclass
class Shutdown:
    """Asked for by a signal, or by an adapter that can no longer work (a platform rejected it for good):
    the supervisor then stops every adapter and exits with `exit_code`."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int = 0
    reason: str = ""

    def request(self, reason: str, *, exit_code: int = 0) -> None:
        if not self.event.is_set():
            self.reason, self.exit_code = reason, exit_code
            self.event.set()


@dataclass(frozen=True)
class Runtime:
    env: Environment
    settings: Settings
    store: Store
    service: ConversationService
    clock: Clock
    metrics: Metrics
    locks: ThreadLocks
    work: WorkTracker
    shutdown: Shutdown = field(default_factory=Shutdown)
    readiness: Readiness = field(default_factory=Readiness)
    # Pings the store in the background (the supervisor starts it); intake reports failed writes into it.
    store_watch: StoreWatch | None = None

    def store_failed(self, reason: str) -> None:
        if self.store_watch is not None:
            self.store_watch.report_down(reason)


def build_model_client(env: Environment, settings: Settings) -> ClaudeClient:
    if not env.anthropic_api_key:
        raise ValueError("ANTHROPIC_API_KEY is not set")
    return ClaudeClient(
        api_key=env.anthropic_api_key,
        base_url=env.anthropic_base_url,
        timeout_seconds=settings.model.request_timeout_seconds,
        max_retries=settings.model.max_retries,
        max_total_wait_seconds=settings.model.max_total_wait_seconds,
    )


def build_service(
    *, store: Store, model: ClaudeApi, settings: Settings, clock: Clock, metrics: Metrics
) -> tuple[ConversationService, ThreadLocks]:
    longest_reply = settings.model.max_total_wait_seconds
    locks = ThreadLocks(
        store if store.multi_instance else None,
        ttl_seconds=settings.recovery.lease_seconds,
        # Wait for one whole reply of another holder, plus the margin, before telling the user to retry.
        wait_seconds=longest_reply + LEASE_WAIT_MARGIN_SECONDS,
    )
    service = ConversationService(
        store=store, model=model, settings=settings, clock=clock, locks=locks, metrics=metrics
    )
    return service, locks


@asynccontextmanager
async def open_runtime(
    env: Environment, settings: Settings, *, metrics: Metrics | None = None
) -> AsyncIterator[Runtime]:
    clock = SystemClock()
    model = build_model_client(env, settings)
    try:
        await model.warm_up()
        store = await open_store(env.database_url, clock=clock, count_statements=env.count_statements)
        try:
            used_metrics = metrics or NullMetrics()
            service, locks = build_service(
                store=store, model=model, settings=settings, clock=clock, metrics=used_metrics
            )
            readiness = Readiness()
            watch = StoreWatch(store.ping, readiness, metrics=used_metrics)
            yield Runtime(
                env,
                settings,
                store,
                service,
                clock,
                used_metrics,
                locks,
                WorkTracker(),
                readiness=readiness,
                store_watch=watch,
            )
        finally:
            await store.close()
    finally:
        await model.close()
