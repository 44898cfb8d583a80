"""The runtime the composition root builds, for adapter tests: a real SQLite store, the real Claude client
pointed at the fake API, and the real service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bots.environment import Environment
from bots.runtime import Runtime, build_service
from core.claude_client import ClaudeClient
from core.clock import SystemClock
from core.metrics import NullMetrics
from core.settings import Settings
from core.storage.sqlite_store import SqliteStore
from core.work_tracker import WorkTracker
from tests.support.fake_anthropic import FakeAnthropic


@asynccontextmanager
async def runtime_for(env: Environment, settings: Settings, claude: FakeAnthropic, db: Path) -> AsyncIterator[Runtime]:
    clock = SystemClock()
    # No SDK retries: a scripted 529 is answered at once instead of after seconds of backoff.
    model = ClaudeClient(
        api_key="sk-ant-test", base_url=claude.base_url, timeout_seconds=5, max_retries=0, max_total_wait_seconds=10
    )
    try:
        async with SqliteStore(db, clock=clock) as store:
            service, locks = build_service(
                store=store, model=model, settings=settings, clock=clock, metrics=NullMetrics()
            )
            yield Runtime(env, settings, store, service, clock, NullMetrics(), locks, WorkTracker())
    finally:
        await model.close()


async def until_idle(work: WorkTracker, *, quiet: float = 0.2, within: float = 10.0) -> None:
    """Wait until no handler has run for `quiet` seconds: adapters run each event as its own task, after
    acknowledging it, so "the request returned" does not mean "the bot is done"."""
    deadline = time.monotonic() + within
    calm_since = time.monotonic()
    while time.monotonic() < deadline:
        if work.running:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= quiet:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("the bot did not go idle")
