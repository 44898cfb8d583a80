"""Faults an operator meets, against the real `lastresort run` process: the database goes away (through a
TCP proxy the test cuts; the server itself is never stopped), Slack redelivers, strangers post junk.

The sender here redelivers the way Slack does: a delivery that is not acknowledged with 2xx within 3 s is
sent again, with the same event id and `X-Slack-Retry-Num` 1, 2 and 3. Slack waits about 0 s, 1 min and
5 min between them; the test compresses that schedule so that it still outlasts the outage.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.bot_process import BotProcess, config_with
from tests.support.fake_anthropic import FakeAnthropic, Reply, last_user_text
from tests.support.fake_slack import FakeSlack, SlackDriver
from tests.support.stores import PostgresSchema, fresh_postgres_schema
from tests.support.tcp_proxy import TcpProxy

SECRET = "faults-signing-secret"
CHANNEL = "C0FAULTS"
PEOPLE = [f"U0P{n:02d}" for n in range(10)]
FAST_RECOVERY = {"age_seconds": 2, "interval_seconds": 0.5, "lease_seconds": 2}
# Slack: retries after about 0 s, 1 min, 5 min. Compressed, but together longer than the outage.
RETRY_DELAYS = (1.0, 5.0, 15.0)
ACK_DEADLINE = 3.0


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel(CHANNEL, "faults")
        for n, person in enumerate(PEOPLE):
            fake.add_user(person, f"person{n}")
        yield fake


@pytest.fixture
async def schema() -> AsyncIterator[PostgresSchema]:
    async with fresh_postgres_schema() as fresh:
        yield fresh


@pytest.fixture
async def proxy(schema: PostgresSchema) -> AsyncIterator[TcpProxy]:
    target = urllib.parse.urlsplit(schema.url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as running:
        yield running


def through(proxy: TcpProxy, schema: PostgresSchema) -> str:
    """The schema's URL, pointed at the proxy instead of the server."""
    parts = urllib.parse.urlsplit(schema.url)
    netloc = f"{parts.username}@" if parts.username else ""
    netloc += f"127.0.0.1:{proxy.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, f"search_path={schema.name}", ""))


def bot_env(slack: FakeSlack, anthropic: FakeAnthropic, database_url: str, config: Path) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.api_url,
        "ANTHROPIC_API_KEY": "sk-ant-faults",
        "ANTHROPIC_BASE_URL": anthropic.base_url,
        "DATABASE_URL": database_url,
        "LASTRESORT_CONFIG": str(config),
        "LOG_FORMAT": "json",
    }


class SlackSender:
    """Delivers events as Slack does, redelivering until acknowledged or out of retries."""

    def __init__(self, slack: FakeSlack, bot: BotProcess) -> None:
        self.driver = SlackDriver(SECRET, f"{bot.url}/slack/events", fake=slack, timeout=ACK_DEADLINE)
        self.statuses: list[list[int]] = []

    async def _once(self, envelope: dict[str, Any], retry: int) -> int:
        try:
            if retry:
                reply = await self.driver.send_event(envelope, retry_num=retry, retry_reason="http_error")
            else:
                reply = await self.driver.send_event(envelope)
        except (TimeoutError, aiohttp.ClientError):
            return 0  # Slack counts a missed deadline like an error
        return reply.status

    async def deliver(self, envelope: dict[str, Any]) -> list[int]:
        statuses = [await self._once(envelope, 0)]
        for retry, delay in enumerate(RETRY_DELAYS, start=1):
            if 200 <= statuses[-1] < 300:
                break
            await asyncio.sleep(delay)
            statuses.append(await self._once(envelope, retry))
        self.statuses.append(statuses)
        return statuses


async def readyz(bot: BotProcess) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{bot.url}/readyz") as response:
        return response.status


async def metrics_of(bot: BotProcess) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"{bot.url}/metrics") as response:
        body = await response.text()
    series = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


def model_saw(anthropic: FakeAnthropic) -> list[str]:
    """Every user text in every model request (whole history, so a message answered in a batch counts)."""
    seen = []
    for request in anthropic.message_requests():
        for message in request.json.get("messages", []):
            if message.get("role") == "user" and isinstance(message.get("content"), list):
                seen.extend(str(b.get("text", "")) for b in message["content"] if isinstance(b, dict))
    return seen


def last_texts(anthropic: FakeAnthropic) -> list[str]:
    return [last_user_text(r.json) for r in anthropic.message_requests()]


def tracebacks(bot: BotProcess) -> list[str]:
    return [line for line in bot.output().splitlines() if "Traceback" in line or '"exc_info"' in line]


@pytest.mark.slow
async def test_a_database_outage_loses_no_message_and_answers_none_twice(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, schema: PostgresSchema, proxy: TcpProxy, tmp_path: Path
) -> None:
    env = bot_env(slack, fake_anthropic, through(proxy, schema), config_with(tmp_path, recovery=FAST_RECOVERY))
    async with BotProcess(env, log_path=tmp_path / "outage.log") as bot:
        sender = SlackSender(slack, bot)
        threads: dict[str, str] = {}
        for n, person in enumerate(PEOPLE):
            starter = sender.driver.build_app_mention(CHANNEL, person, f"p{n} starts")
            assert await sender.deliver(starter) == [200]
            threads[person] = str(starter["event"]["ts"])
        await slack.wait_for_async(
            lambda: all(len(slack.bot_messages(CHANNEL, ts)) == 1 for ts in threads.values()), timeout=30
        )
        assert await readyz(bot) == 200

        sent: list[str] = []
        deliveries: list[asyncio.Task[list[int]]] = []
        ready_during: list[int] = []

        async def person_writes(n: int, person: str) -> None:
            for m in range(10):  # every 2 s for 20 s
                text = f"p{n} m{m}"
                envelope = sender.driver.build_message(CHANNEL, person, text, thread_ts=threads[person])
                sent.append(text)
                deliveries.append(asyncio.create_task(sender.deliver(envelope)))
                await asyncio.sleep(2.0)

        async def outage() -> None:
            await asyncio.sleep(4.0)
            proxy.cut()
            cut_at = time.monotonic()
            await asyncio.sleep(2.5)  # the background check notices within a couple of seconds
            while time.monotonic() - cut_at < 12.0:
                ready_during.append(await readyz(bot))
                await asyncio.sleep(0.5)
            proxy.restore()

        await asyncio.gather(outage(), *(person_writes(n, p) for n, p in enumerate(PEOPLE)))
        results = await asyncio.gather(*deliveries)

        # Every delivery was acknowledged in the end; some only after Slack-style redelivery.
        assert all(200 <= statuses[-1] < 300 for statuses in results), results
        assert any(len(statuses) > 1 for statuses in results), "the outage deferred no message"
        assert all(s in (0, 200, 503) for statuses in results for s in statuses)
        assert ready_during and set(ready_during) == {503}, ready_during

        # Every message reaches the model (in its own turn or with the next one of its thread)...
        def all_seen() -> bool:
            seen = "\n".join(model_saw(fake_anthropic))
            return all(f"] {text}" in seen for text in sent)

        await slack.wait_for_async(all_seen, timeout=40, what="every message in a model request")

        def replies(person: str) -> list[str]:
            return [str(r.get("text", "")) for r in slack.bot_messages(CHANNEL, threads[person])]

        # ... every message is stored once and answered (a batched one shares its answer with the next)...
        async def unanswered() -> tuple[int, int]:
            connection = await schema.admin()
            try:
                row = await connection.fetchrow(
                    "SELECT count(*) AS users, count(*) FILTER (WHERE NOT answered) AS open"
                    " FROM messages WHERE role = 'user'"
                )
            finally:
                await connection.close()
            assert row is not None
            return int(row["users"]), int(row["open"])

        expected = (len(sent) + len(PEOPLE), 0)
        for _ in range(80):
            if (counts := await unanswered()) == expected:
                break
            await asyncio.sleep(0.5)
        assert counts == expected
        # ... and once recovery has had its chance to double anything, no message shows two answers and
        # no thread keeps a half-written draft.
        await asyncio.sleep(3.0)
        for n, person in enumerate(PEOPLE):
            for m in range(10):
                assert sum(f' p{n} m{m}"' in r for r in replies(person)) <= 1, (person, m, replies(person))
            assert not any("interrupted" in r or "…" in r[-3:] for r in replies(person)), replies(person)
        # The model was asked to answer each message once: a redelivery found it stored, not new.
        answered = [t for t in last_texts(fake_anthropic) if " m" in t]
        for text in sent:
            assert sum(t.endswith(f"] {text}") for t in answered) <= 1, text

        assert await readyz(bot) == 200
        metrics = await metrics_of(bot)
        assert metrics["lastresort_store_up"] == 1
        assert sum(v for k, v in metrics.items() if k.startswith("lastresort_messages_deferred_total")) > 0
        assert metrics.get('lastresort_messages_redelivered_total{platform="slack"}', 0) > 0
        assert not any(k.startswith("lastresort_messages_given_up_total{") for k in metrics)
        log = bot.output()
        assert "message not stored; Slack will redeliver" in log
        assert "database unreachable: not ready" in log


# ---------------------------------------------------------------------------------------- the Slack edge


def sqlite_env(slack: FakeSlack, anthropic: FakeAnthropic, tmp_path: Path) -> dict[str, str]:
    config = config_with(tmp_path, recovery=FAST_RECOVERY)
    return bot_env(slack, anthropic, f"sqlite:///{tmp_path / 'edge.db'}", config)


async def post_raw(
    bot: BotProcess, body: bytes, *, content_type: str, timestamp: str | None, secret: str | None = SECRET
) -> int:
    """POST bytes as they are: signed over the raw bytes with `secret` (None: unsigned)."""
    headers = {"Content-Type": content_type}
    if timestamp is not None:
        headers["X-Slack-Request-Timestamp"] = timestamp
    if secret is not None and timestamp is not None:
        base = b"v0:" + timestamp.encode() + b":" + body
        headers["X-Slack-Signature"] = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{bot.url}/slack/events", data=body, headers=headers) as response,
    ):
        return response.status


JUNK: list[tuple[str, bytes, str]] = [
    ("malformed JSON", b'{"type": "event_callback", "event": ', "application/json"),
    ("a JSON array", b'[{"type": "event_callback"}]', "application/json"),
    ("a JSON string", b'"event_callback"', "application/json"),
    ("not UTF-8", b'{"type": "\xff\xfe event_callback"}', "application/json"),
    ("garbage payload= form", b"payload=%7Bnot-json%7D%7D", "application/x-www-form-urlencoded"),
    ("payload= holding an array", b"payload=%5B1%2C2%5D", "application/x-www-form-urlencoded"),
    ("an empty body", b"", "application/json"),
]


async def test_junk_and_forged_bodies_get_4xx_and_leave_no_traceback(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    async with BotProcess(sqlite_env(slack, fake_anthropic, tmp_path), log_path=tmp_path / "junk.log") as bot:
        now = str(int(time.time()))
        for what, body, content_type in JUNK:
            assert await post_raw(bot, body, content_type=content_type, timestamp=now) == 400, what
            assert await post_raw(bot, body, content_type=content_type, timestamp=now, secret=None) == 401, what
            forged = await post_raw(bot, body, content_type=content_type, timestamp=now, secret="not-the-secret")
            assert forged == 401, what
        valid = json.dumps(SlackDriver(SECRET, "", fake=slack).build_message(CHANNEL, PEOPLE[0], "hi")).encode()
        for timestamp in ("not-a-number", "1e9", "-5", "١٢٣", ""):
            assert await post_raw(bot, valid, content_type="application/json", timestamp=timestamp) == 401, timestamp
        assert await post_raw(bot, valid, content_type="application/json", timestamp="1000000000") == 401
        await asyncio.sleep(0.3)
        assert tracebacks(bot) == []
        refusals = [e for e in _json_lines(bot.output()) if e.get("message") == "slack request refused"]
        assert len(refusals) == len(JUNK) * 3 + 6
        assert {e.get("level") for e in refusals} == {"WARNING"}
        assert fake_anthropic.message_requests() == []
        # The process is unharmed: a real message is still answered.
        sent = await SlackDriver(SECRET, f"{bot.url}/slack/events", fake=slack).app_mention(CHANNEL, PEOPLE[0], "ok?")
        assert sent.status == 200
        await slack.wait_for_async(lambda: len(slack.bot_messages(CHANNEL, str(sent.payload["event"]["ts"]))) == 1)


async def test_foreign_events_slackbot_and_unhandled_types_reach_no_model_and_get_2xx(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    async with BotProcess(sqlite_env(slack, fake_anthropic, tmp_path), log_path=tmp_path / "edge.log") as bot:
        driver = SlackDriver(SECRET, f"{bot.url}/slack/events", fake=slack)
        # Validly signed, but for another workspace or another app: acknowledged and dropped.
        for field, value in (("team_id", "T9999"), ("api_app_id", "A9999")):
            envelope = driver.build_app_mention(CHANNEL, PEOPLE[1], f"from {value}")
            envelope[field] = value
            assert (await driver.send_event(envelope)).status == 200
        # Slackbot in our DM, and system messages (joins, topic changes) in a conversation's thread.
        dm = slack.dm_channel(PEOPLE[1])
        slackbot = driver.build_message(dm, "USLACKBOT", "You have been removed from #testing by someone")
        assert (await driver.send_event(slackbot)).status == 200
        started = await driver.app_mention(CHANNEL, PEOPLE[1], "a real question")
        thread = str(started.payload["event"]["ts"])
        await slack.wait_for_async(lambda: len(slack.bot_messages(CHANNEL, thread)) == 1, timeout=10)
        for subtype in ("channel_join", "channel_topic", "thread_broadcast_deleted"):
            event = driver.build_message(CHANNEL, PEOPLE[1], f"system {subtype}", thread_ts=thread)
            event["event"]["subtype"] = subtype
            assert (await driver.send_event(event)).status == 200
        # Event types the bot does not handle: 2xx, so Slack never counts them as failures.
        unhandled = [
            {"type": "reaction_added", "user": PEOPLE[1], "reaction": "wave", "item": {"type": "message"}},
            {"type": "member_joined_channel", "user": PEOPLE[2], "channel": CHANNEL, "channel_type": "C"},
            {"type": "channel_rename", "channel": {"id": CHANNEL, "name": "renamed"}},
            {"type": "tokens_revoked", "tokens": {"oauth": [PEOPLE[3]], "bot": []}},
        ]
        for event in unhandled:
            reply = await driver.send_event(driver.envelope({**event, "event_ts": driver.next_ts()}))
            assert 200 <= reply.status < 300, event["type"]
        await asyncio.sleep(1.0)
        requests = fake_anthropic.message_requests()
        assert len(requests) == 1 and "a real question" in last_user_text(requests[0].json)
        assert slack.messages(dm) == [] or all(m.get("user") != slack.bot_user_id for m in slack.messages(dm))
        assert await readyz(bot) == 200  # another user's token revoked: ours still works

        # The app is uninstalled: acknowledged, logged, and Slack is called no more for this workspace.
        slack.clear_calls()
        reply = await driver.send_event(driver.envelope({"type": "app_uninstalled", "event_ts": driver.next_ts()}))
        assert reply.status == 200
        after = await driver.message(CHANNEL, PEOPLE[1], "still there?", thread_ts=thread)
        assert after.status == 200
        await asyncio.sleep(1.5)
        assert slack.calls == []
        assert len(fake_anthropic.message_requests()) == 1
        assert await readyz(bot) == 503
        log = bot.output()
        assert "slack app removed from the workspace" in log
        assert "Unhandled request" not in log and "@app.event" not in log
        assert tracebacks(bot) == []


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


@pytest.mark.slow
async def test_a_locked_sqlite_database_defers_messages_with_503_and_loses_none(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    async with BotProcess(sqlite_env(slack, fake_anthropic, tmp_path), log_path=tmp_path / "locked.log") as bot:
        sender = SlackSender(slack, bot)
        starters = [
            sender.driver.build_app_mention(CHANNEL, person, f"p{n} before") for n, person in enumerate(PEOPLE[:3])
        ]
        for starter in starters:
            assert await sender.deliver(starter) == [200]
        threads = [str(s["event"]["ts"]) for s in starters]
        await slack.wait_for_async(lambda: all(len(slack.bot_messages(CHANNEL, t)) == 1 for t in threads), timeout=20)

        # Another process holds the write lock (a backup, a stuck migration) for 5 s.
        blocker = sqlite3.connect(tmp_path / "edge.db", timeout=0.1, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            during = [
                sender.driver.build_message(CHANNEL, person, f"p{n} during", thread_ts=threads[n])
                for n, person in enumerate(PEOPLE[:3])
            ]
            deliveries = [asyncio.create_task(sender.deliver(envelope)) for envelope in during]
            await asyncio.sleep(5.0)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        results = await asyncio.gather(*deliveries)
        assert all(statuses[0] == 503 for statuses in results), results
        assert all(statuses[-1] == 200 for statuses in results), results

        for n, thread in enumerate(threads):
            await slack.wait_for_async(
                lambda t=thread, n=n: any(
                    f' p{n} during"' in str(r.get("text")) for r in slack.bot_messages(CHANNEL, t)
                ),
                timeout=20,
                what=f"p{n} answered",
            )
        await asyncio.sleep(3.0)
        for n, thread in enumerate(threads):
            texts = [str(r.get("text")) for r in slack.bot_messages(CHANNEL, thread)]
            assert sum(f' p{n} during"' in t for t in texts) == 1, texts
        assert "message not stored; Slack will redeliver" in bot.output()
        assert tracebacks(bot) == []


# ---------------------------------------------------------------------------------------- no debris

LONG = " ".join(f"Part {n} of a long answer." for n in range(1, 30))


async def test_drafts_left_by_a_killed_process_are_gone_once_recovery_answers(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    env = sqlite_env(slack, fake_anthropic, tmp_path)
    fake_anthropic.chunk_delay = 0.3
    fake_anthropic.push(*[Reply.text(LONG) for _ in range(5)])
    threads: list[str] = []

    def bot_texts(thread: str) -> list[str]:
        return [str(m.get("text", "")) for m in slack.bot_messages(CHANNEL, thread)]

    async with BotProcess(env, log_path=tmp_path / "killed.log") as doomed:
        driver = SlackDriver(SECRET, f"{doomed.url}/slack/events", fake=slack)
        for n, person in enumerate(PEOPLE[:5]):
            sent = await driver.app_mention(CHANNEL, person, f"p{n} asks for a long one")
            assert sent.status == 200
            threads.append(str(sent.payload["event"]["ts"]))
        # Every thread shows half an answer, streaming.
        await slack.wait_for_async(lambda: all(any("Part 2" in t for t in bot_texts(th)) for th in threads), timeout=20)
        await asyncio.sleep(0.5)  # a draft is remembered moments after Slack takes it; the kill comes after
        doomed.kill()
        await doomed.process.wait() if doomed.process else None
    assert all(not any("Part 29" in t for t in bot_texts(th)) for th in threads)  # cut off mid-answer
    fake_anthropic.chunk_delay = 0.0

    async with BotProcess(env, log_path=tmp_path / "restarted.log") as restarted:
        await slack.wait_for_async(
            lambda: all(any(f'p{n} asks for a long one"' in t for t in bot_texts(th)) for n, th in enumerate(threads)),
            timeout=30,
            what="recovery answers every thread",
        )
        await asyncio.sleep(2.0)
        for n, thread in enumerate(threads):
            texts = bot_texts(thread)
            # Exactly one answer per message: the half-written draft was removed, not left above it.
            assert len(texts) == 1, texts
            assert f'p{n} asks for a long one"' in texts[0]
            assert not any("Part" in t for t in texts)
        assert tracebacks(restarted) == []
        assert "removed drafts a stopped process left" in restarted.output()


@pytest.mark.slow
async def test_an_interrupted_note_left_by_a_drain_is_replaced_by_the_answer(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    config = config_with(tmp_path, recovery=FAST_RECOVERY, shutdown={"drain_seconds": 3})
    env = bot_env(slack, fake_anthropic, f"sqlite:///{tmp_path / 'edge.db'}", config)
    fake_anthropic.chunk_delay = 1.5  # eight chunks: longer than the 3 s drain allows
    fake_anthropic.push(Reply.text(LONG))

    def bot_texts(thread: str) -> list[str]:
        return [str(m.get("text", "")) for m in slack.bot_messages(CHANNEL, thread)]

    async with BotProcess(env, log_path=tmp_path / "drained.log") as drained:
        sent = await SlackDriver(SECRET, f"{drained.url}/slack/events", fake=slack).app_mention(
            CHANNEL, PEOPLE[0], "a very slow answer please"
        )
        thread = str(sent.payload["event"]["ts"])
        await slack.wait_for_async(lambda: bot_texts(thread) != [], timeout=30, what="a draft")
        assert await drained.terminate(timeout=30) == 0
    assert [t for t in bot_texts(thread) if "interrupted" in t], bot_texts(thread)
    fake_anthropic.chunk_delay = 0.0

    async with BotProcess(env, log_path=tmp_path / "next.log") as following:
        await slack.wait_for_async(
            lambda: any('a very slow answer please"' in t for t in bot_texts(thread)), timeout=30, what="the answer"
        )
        await asyncio.sleep(1.0)
        texts = bot_texts(thread)
        assert len(texts) == 1 and 'a very slow answer please"' in texts[0], texts
        assert tracebacks(following) == []
