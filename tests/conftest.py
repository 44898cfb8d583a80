"""Fixtures shared by every test: the fake Anthropic API, settings, and a service on a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.claude_client import ClaudeClient
from core.clock import SystemClock
from core.metrics import NullMetrics
from core.service import ConversationService
from core.settings import Settings, load_settings
from core.storage.sqlite_store import SqliteStore
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.paths import CONFIG


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: they mostly sleep, so started early they overlap everything else, while one
    started last would be the whole suite's tail (the order within each group is kept)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def settings() -> Settings:
    return load_settings(CONFIG)


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "lastresort.db", clock=SystemClock()) as store:
        yield store


@pytest.fixture
async def claude(fake_anthropic: FakeAnthropic, settings: Settings) -> AsyncIterator[ClaudeClient]:
    client = ClaudeClient(
        api_key="sk-ant-test-key",
        base_url=fake_anthropic.base_url,
        timeout_seconds=5,
        max_retries=2,
        max_total_wait_seconds=15,
    )
    yield client
    await client.close()


@pytest.fixture
def service(sqlite: SqliteStore, claude: ClaudeClient, settings: Settings) -> ConversationService:
    from bots.runtime import build_service

    built, _ = build_service(store=sqlite, model=claude, settings=settings, clock=SystemClock(), metrics=NullMetrics())
    return built
