"""The core's own overhead per message on SQLite, model time excluded, and the cacheable prompt share."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.support import service_on, settings, summary_ms
from core.clock import SystemClock
from core.domain import ThreadKey
from core.service import InboundMessage
from core.storage.sqlite_store import SqliteStore
from tests.support.fake_anthropic import FakeAnthropic

CONVERSATIONS = 40
MESSAGES = 400
TURNS = 30


async def core_overhead() -> list[float]:
    overheads: list[float] = []
    with FakeAnthropic() as fake, tempfile.TemporaryDirectory() as tmp:
        async with (
            SqliteStore(Path(tmp) / "bench.db", clock=SystemClock()) as store,
            service_on(store, fake.base_url, settings()) as (service, model),
        ):
            for i in range(MESSAGES):
                key = ThreadKey("bench", "C1", f"thread-{i % CONVERSATIONS}")
                message = InboundMessage(
                    key=key, author_id=f"U{i % 7}", author_name=f"user{i % 7}", text=f"message {i}", may_start=True
                )
                model_before = model.seconds
                started = time.perf_counter()
                await service.handle_message(message)
                total = time.perf_counter() - started
                overheads.append(total - (model.seconds - model_before))
    return overheads


async def cacheable_share() -> tuple[float, int, int]:
    """Over one 30-turn conversation: the share of prompt tokens the fake API served from its cache."""
    with FakeAnthropic() as fake, tempfile.TemporaryDirectory() as tmp:
        async with (
            SqliteStore(Path(tmp) / "cache.db", clock=SystemClock()) as store,
            service_on(store, fake.base_url, settings()) as (service, model),
        ):
            key = ThreadKey("bench", "C1", "cache")
            for turn in range(TURNS):
                text = f"Turn {turn}: a question of ordinary length about the topic at hand?"
                await service.handle_message(
                    InboundMessage(key=key, author_id="U1", author_name="ada", text=text, may_start=True)
                )
        cached = sum(r.usage.cache_read_input_tokens for r in model.replies)
        prompt = sum(r.usage.prompt_tokens for r in model.replies)
    return (cached / prompt if prompt else 0.0), cached, prompt


async def run() -> list[str]:
    overheads = await core_overhead()
    share, cached, prompt = await cacheable_share()
    return [
        f"core overhead per message (SQLite, model time excluded, {MESSAGES} messages across "
        f"{CONVERSATIONS} conversations): {summary_ms(overheads)}",
        f"cacheable prompt share over a {TURNS}-turn conversation: {share:.1%} "
        f"({cached} of {prompt} prompt tokens read from the cache)",
    ]
