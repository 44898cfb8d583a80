"""Fixtures for the Slack tests: a fake Slack workspace and the bot running against it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.settings import ModeratorSettings, Settings
from tests.slack.harness import ADMIN, ALICE, BOB, CHANNEL, GROUP_MOD, MOD, MODS_GROUP, Bot, running_bot
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_slack import FakeSlack


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel(CHANNEL, "general")
        fake.add_user(ALICE, "alice", display_name="Alice")
        fake.add_user(BOB, "bob", display_name="Bob")
        fake.add_user(MOD, "mod")
        fake.add_user(GROUP_MOD, "groupmod")
        fake.add_user(ADMIN, "admin", is_admin=True)
        fake.add_usergroup(MODS_GROUP, "mods", [GROUP_MOD])
        yield fake
        assert fake.errors == []


@pytest.fixture
async def bot(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> AsyncIterator[Bot]:
    moderators = ModeratorSettings(
        slack_user_ids=(MOD,), slack_usergroup_ids=(MODS_GROUP,), slack_workspace_admins=True
    )
    configured = settings.model_copy(update={"moderators": moderators})
    async with running_bot(slack, fake_anthropic, configured, tmp_path / "slack.db") as running:
        yield running
