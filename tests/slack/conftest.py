"""Fixtures for the Slack tests: a fake Slack workspace and the bot running against it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.settings import ModeratorSettings, Settings
from tests.slack.harness import MOD, MODS_GROUP, Bot, populate, running_bot
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_slack import FakeSlack
from tests.support.fake_slack_socket import FakeSocketMode


@pytest.fixture
def socket_mode() -> Iterator[FakeSocketMode]:
    """The fake Slack with Socket Mode beside its Web API (the fake starts after the socket is added)."""
    fake = FakeSlack()
    socket = FakeSocketMode(fake)
    with fake:
        populate(fake)
        yield socket
        assert fake.errors == []


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        populate(fake)
        yield fake
        assert fake.errors == []


def with_moderators(settings: Settings) -> Settings:
    moderators = ModeratorSettings(
        slack_user_ids=(MOD,), slack_usergroup_ids=(MODS_GROUP,), slack_workspace_admins=True
    )
    return settings.model_copy(update={"moderators": moderators})


@pytest.fixture
async def bot(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> AsyncIterator[Bot]:
    async with running_bot(slack, fake_anthropic, with_moderators(settings), tmp_path / "slack.db") as running:
        yield running


@pytest.fixture(params=["http", "socket_mode"])
async def either_bot(
    request: pytest.FixtureRequest, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> AsyncIterator[Bot]:
    """The same bot in HTTP mode and in Socket Mode: scenarios that must hold in both."""
    socket: FakeSocketMode | None = None
    if request.param == "socket_mode":
        socket = request.getfixturevalue("socket_mode")
        fake = socket.fake
    else:
        fake = request.getfixturevalue("slack")
    db = tmp_path / "slack.db"
    async with running_bot(fake, fake_anthropic, with_moderators(settings), db, socket=socket) as running:
        yield running
