"""Messages per second and the bot's own overhead through the Slack HTTP path.

The bot runs as a real `lastresort run` process, as on a PaaS. This process plays Slack (signed events
to the bot, and the Web API the bot calls) and the model (fixed latency). N conversations start at
once: each is a mention, delivered as Slack does with both of its events. A message's latency is from
its first POST until its final reply lands in Slack; the overhead is that latency minus the model's
fixed latency.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bench.support import summary_ms
from tests.support.bot_process import BotProcess
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_slack import FakeSlack, SlackDriver
from tests.support.stores import fresh_postgres_schema

SECRET = "bench-signing-secret"
CHANNEL = "C0BENCH"
MODEL_LATENCY = 0.2
CONCURRENCY = (50, 500)
WARM_UP = 3


@asynccontextmanager
async def database_url(backend: str, tmp: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
    else:
        async with fresh_postgres_schema() as schema:
            yield f"{schema.url}?search_path={schema.name}"


def answers(slack: FakeSlack) -> int:
    """Finished answers: streams stopped (how answers go out), and posts in threads (the fallback)."""
    posted = sum(1 for params in slack.calls_to("chat.postMessage") if params.get("thread_ts"))
    return posted + len(slack.calls_to("chat.stopStream"))


async def until(condition: Callable[[], bool], *, timeout: float) -> None:  # noqa: ASYNC109
    """Poll a condition on the fake (which lives on another thread, so there is no event to await)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)


def reply_times(slack: FakeSlack) -> dict[str, float]:
    """When each thread's last reply call arrived: the stream's stop (or post, or update of that post)."""
    done: dict[str, float] = {}
    for call in slack.calls:
        thread = None
        if call.method in ("chat.postMessage", "chat.startStream"):
            thread = call.params.get("thread_ts")
        elif call.method in ("chat.update", "chat.appendStream", "chat.stopStream"):
            updated = slack.message(CHANNEL, str(call.params.get("ts")))
            thread = updated.get("thread_ts") if updated else None
        if thread:
            done[str(thread)] = max(done.get(str(thread), 0.0), call.at)
    return done


async def one_run(backend: str, conversations: int) -> tuple[float, list[float]]:
    with FakeSlack() as slack, FakeAnthropic() as anthropic, tempfile.TemporaryDirectory() as tmp:
        slack.add_channel(CHANNEL, "bench")
        anthropic.latency = MODEL_LATENCY
        async with database_url(backend, Path(tmp)) as url:
            env = {
                "SLACK_BOT_TOKEN": slack.token,
                "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_API_URL": slack.api_url,
                "ANTHROPIC_API_KEY": "bench",
                "ANTHROPIC_BASE_URL": anthropic.base_url,
                "DATABASE_URL": url,
                "LOG_LEVEL": "WARNING",
            }
            async with BotProcess(env, log_path=Path(tmp) / "bot.log") as bot:
                driver = SlackDriver(SECRET, f"{bot.url}/slack/events", fake=slack)
                # A few conversations first, untimed: start-up costs (Bolt's first auth.test, connection
                # pools, imports on first use) are not what the bot costs per message.
                for i in range(WARM_UP):
                    await driver.post_mention(CHANNEL, f"W{i:05d}", f"warm-up {i}")
                await until(lambda: answers(slack) >= WARM_UP, timeout=60)
                # Built and signed before the clock starts: only delivery and answering are timed.
                mentions = [
                    driver.build_mention_pair(CHANNEL, f"U{i:05d}", f"question {i}") for i in range(conversations)
                ]
                for pair in mentions:
                    slack.record_message(CHANNEL, dict(pair["message"]["event"]))
                signed = [
                    [
                        (body, driver.signed_headers(body))
                        for body in (json.dumps(p["app_mention"]), json.dumps(p["message"]))
                    ]
                    for p in mentions
                ]
                sent_at: dict[str, float] = {}
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

                    async def converse(pair: dict[str, Any], events: list[tuple[str, dict[str, str]]]) -> None:
                        sent_at[str(pair["message"]["event"]["ts"])] = time.monotonic()
                        for body, headers in events:
                            async with session.post(driver.url, data=body.encode(), headers=headers) as response:
                                assert response.status == 200, await response.text()

                    began = time.monotonic()
                    await asyncio.gather(*(converse(p, e) for p, e in zip(mentions, signed, strict=True)))
                    await until(lambda: answers(slack) >= WARM_UP + conversations, timeout=300)
                done = reply_times(slack)
                missing = [ts for ts in sent_at if ts not in done]
                if missing:
                    raise TimeoutError(f"{len(missing)} of {conversations} replies missing:\n{bot.output()[-2000:]}")
                await bot.terminate()
        finished = max(done[ts] for ts in sent_at)
        overheads = [done[ts] - sent_at[ts] - MODEL_LATENCY for ts in sent_at]
        return conversations / (finished - began), overheads


async def run() -> list[str]:
    lines = []
    for backend in ("sqlite", "postgres"):
        for conversations in CONCURRENCY:
            rate, overheads = await one_run(backend, conversations)
            lines.append(
                f"slack HTTP path ({backend}, {conversations} concurrent conversations, model "
                f"{MODEL_LATENCY * 1000:.0f} ms): {rate:.1f} messages/s; overhead {summary_ms(overheads)}"
            )
    return lines
