"""Several `lastresort run` processes on one PostgreSQL database behind the fake Slack: what a PaaS does
when traffic grows, when it deploys (SIGTERM) and when an instance dies (SIGKILL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.bot_process import BotProcess, config_with
from tests.support.fake_anthropic import FakeAnthropic, Reply
from tests.support.fake_slack import FakeSlack, SlackDriver
from tests.support.stores import PostgresSchema, fresh_postgres_schema

SECRET = "multi-instance-signing-secret"
CHANNEL = "C0TOGETHER"
ALICE = "U0ALICE"

# Fast recovery and short leases, so a dead instance's thread frees up within seconds in a test.
FAST_RECOVERY = {"age_seconds": 2, "interval_seconds": 0.5, "lease_seconds": 2}
# A short drain (the default is 20 s), so a reply that outlives it is cut off within seconds.
SHORT_DRAIN = 3.0


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel(CHANNEL, "together")
        fake.add_user(ALICE, "alice")
        yield fake


@pytest.fixture
async def schema() -> AsyncIterator[PostgresSchema]:
    async with fresh_postgres_schema() as fresh:
        yield fresh


def bot_env(slack: FakeSlack, anthropic: FakeAnthropic, schema: PostgresSchema, config: Path) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.api_url,
        "ANTHROPIC_API_KEY": "sk-ant-multi-instance",
        "ANTHROPIC_BASE_URL": anthropic.base_url,
        "DATABASE_URL": f"{schema.url}?search_path={schema.name}",
        "LASTRESORT_CONFIG": str(config),
    }


@pytest.fixture
async def two_bots(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, schema: PostgresSchema, tmp_path: Path
) -> AsyncIterator[tuple[BotProcess, BotProcess]]:
    env = bot_env(slack, fake_anthropic, schema, config_with(tmp_path, recovery=FAST_RECOVERY))
    async with (
        BotProcess(env, log_path=tmp_path / "first.log") as first,
        BotProcess(env, log_path=tmp_path / "second.log") as second,
    ):
        yield first, second


def driver(slack: FakeSlack, bot: BotProcess) -> SlackDriver:
    return SlackDriver(SECRET, f"{bot.url}/slack/events", fake=slack)


def replies_in(slack: FakeSlack, thread_ts: str) -> list[str]:
    return [str(m.get("text", "")) for m in slack.bot_messages(CHANNEL, thread_ts)]


async def to_both(slack: FakeSlack, bots: tuple[BotProcess, BotProcess], text: str, thread_ts: str | None) -> str:
    """One Slack post delivered to both instances (every event, same event ids); returns its ts."""
    first, second = (driver(slack, bot) for bot in bots)
    if thread_ts is None:
        sent = await first.post_mention(CHANNEL, ALICE, text)
    else:
        sent = [await first.message(CHANNEL, ALICE, text, thread_ts=thread_ts)]
    await asyncio.gather(*(second.send_event(reply.payload) for reply in sent))
    return str(sent[0].payload["event"]["ts"])


async def stored_assistant_texts(schema: PostgresSchema) -> list[str]:
    connection: asyncpg.Connection[Any] = await schema.admin()
    try:
        rows = await connection.fetch(
            "SELECT blocks FROM messages WHERE role = 'assistant' ORDER BY conversation_id, seq"
        )
    finally:
        await connection.close()
    return [str(row["blocks"]) for row in rows]


async def test_events_delivered_to_both_instances_are_answered_once_each_in_order(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, two_bots: tuple[BotProcess, BotProcess]
) -> None:
    fake_anthropic.latency = 0.2
    thread = await to_both(slack, two_bots, "first question", None)
    await slack.wait_for_async(lambda: len(replies_in(slack, thread)) == 1, timeout=20)
    for n, text in enumerate(["second question", "third question"], start=2):
        await to_both(slack, two_bots, text, thread)
        await slack.wait_for_async(lambda n=n: len(replies_in(slack, thread)) == n, timeout=20)  # type: ignore[misc]
    await asyncio.sleep(1.0)  # anything still to come from the other instance would land by now
    replies = replies_in(slack, thread)
    assert len(replies) == 3
    for reply, text in zip(replies, ["first question", "second question", "third question"], strict=True):
        assert text in reply
    assert len(fake_anthropic.message_requests()) == 3
    # The two instances' metrics add up to exactly what happened: three messages, three model calls.
    scraped = [await metrics_of(bot) for bot in two_bots]
    assert sum(m.get('lastresort_messages_total{platform="slack"}', 0) for m in scraped) == 3
    assert sum(m.get("lastresort_model_latency_seconds_count", 0) for m in scraped) == 3
    assert sum(m.get('lastresort_tokens_total{kind="output"}', 0) for m in scraped) > 0


async def metrics_of(bot: BotProcess) -> dict[str, float]:
    """GET /metrics and read the Prometheus text format into {series: value}."""
    async with aiohttp.ClientSession() as session, session.get(f"{bot.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = await response.text()
    series = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


async def test_health_answers_without_any_outside_service(two_bots: tuple[BotProcess, BotProcess]) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{two_bots[0].url}/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_sigkill_mid_reply_loses_no_message_and_leaves_no_thread_stuck(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, two_bots: tuple[BotProcess, BotProcess]
) -> None:
    doomed, survivor = two_bots
    fake_anthropic.push(Reply.slow(30, then=Reply.text("never delivered")))
    sent = await driver(slack, doomed).post_mention(CHANNEL, ALICE, "answer me even if you crash")
    thread = str(sent[0].payload["event"]["ts"])
    await fake_anthropic.wait_for_requests_async(1, timeout=10)
    doomed.kill()  # in the middle of the reply: the model call is in flight
    # The survivor finds the message its dead peer took in, once the dead lease expires, and answers it.
    await slack.wait_for_async(
        lambda: any("answer me even if you crash" in r for r in replies_in(slack, thread)), timeout=30
    )
    # The thread is not stuck: the next message is answered as usual.
    await driver(slack, survivor).message(CHANNEL, ALICE, "and this one?", thread_ts=thread)
    await slack.wait_for_async(lambda: any("and this one?" in r for r in replies_in(slack, thread)), timeout=20)
    assert not any("never delivered" in r for r in replies_in(slack, thread))


async def test_sigterm_during_a_streaming_reply_finishes_it_and_exits_zero(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, schema: PostgresSchema, tmp_path: Path
) -> None:
    env = bot_env(slack, fake_anthropic, schema, config_with(tmp_path, recovery=FAST_RECOVERY))
    full = "A reply long enough to stream in several slow parts. " * 4
    fake_anthropic.chunk_delay = 0.4
    fake_anthropic.push(Reply.text(full))
    async with BotProcess(env, log_path=tmp_path / "deploy.log") as bot:
        sent = await driver(slack, bot).post_mention(CHANNEL, ALICE, "tell me something long")
        thread = str(sent[0].payload["event"]["ts"])
        await fake_anthropic.wait_for_requests_async(1, timeout=10)
        await asyncio.sleep(0.5)  # mid-stream
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await bot.terminate(timeout=30) == 0
        assert loop.time() - started < 25
    # The reply in flight was finished, in Slack and in the database: nothing half-stored.
    assert replies_in(slack, thread)[-1].strip() == full.strip()
    assert await stored_assistant_texts(schema) == [f'[{{"type":"text","text":"{full}"}}]']


async def test_sigterm_with_a_reply_longer_than_the_drain_stores_no_half_reply(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, schema: PostgresSchema, tmp_path: Path
) -> None:
    config = config_with(tmp_path, recovery=FAST_RECOVERY, shutdown={"drain_seconds": SHORT_DRAIN})
    env = bot_env(slack, fake_anthropic, schema, config)
    fake_anthropic.chunk_delay = 1.5  # about 18 s of streaming: more than the drain allows
    fake_anthropic.push(Reply.text("Part one. Part two. Part three. Part four. Part five. Part six."))
    async with BotProcess(env, log_path=tmp_path / "slow.log") as bot:
        await driver(slack, bot).post_mention(CHANNEL, ALICE, "a very slow answer please")
        await fake_anthropic.wait_for_requests_async(1, timeout=10)
        await asyncio.sleep(1.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await bot.terminate(timeout=30) == 0
        # The configured drain, not the default 20 s, then the cancellation and closing.
        assert SHORT_DRAIN <= loop.time() - started < 15
    assert await stored_assistant_texts(schema) == []
    connection = await schema.admin()
    try:
        unanswered = await connection.fetchval("SELECT count(*) FROM messages WHERE role = 'user' AND NOT answered")
        leases = await connection.fetchval("SELECT count(*) FROM leases")
    finally:
        await connection.close()
    # The message waits, unanswered, for the next instance's recovery; its thread's lease was released.
    assert unanswered == 1
    assert leases == 0
