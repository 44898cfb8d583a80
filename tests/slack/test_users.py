"""Display names: looked up once, shared while in flight, and a failed lookup is not retried per message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.users import UserNames
from tests.support.fake_slack import FakeSlack

ALICE = "U0ALICE"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_user(ALICE, "alice", display_name="Alice")
        yield fake


@pytest.fixture
async def client(slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    async with aiohttp.ClientSession() as session:
        yield AsyncWebClient(token=slack.token, base_url=slack.api_url + "/", session=session)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_messages_share_one_lookup(slack: FakeSlack, client: AsyncWebClient) -> None:
    names = UserNames(client)
    names.prefetch(ALICE)
    found = await asyncio.gather(*(names.name_of(ALICE) for _ in range(5)))
    assert found == ["Alice"] * 5
    assert len(slack.calls_to("users.info")) == 1


async def test_a_failed_lookup_is_remembered_for_a_while(slack: FakeSlack, client: AsyncWebClient) -> None:
    clock = Clock()
    names = UserNames(client, failure_ttl_seconds=60, clock=clock)
    slack.fail_next("users.info", status=200, error="fatal_error")
    assert await names.name_of(ALICE) is None
    # Within the failure TTL the next messages go on without asking Slack again.
    assert await names.name_of(ALICE) is None
    assert len(slack.calls_to("users.info")) == 1
    clock.now = 61
    assert await names.name_of(ALICE) == "Alice"
    assert len(slack.calls_to("users.info")) == 2
