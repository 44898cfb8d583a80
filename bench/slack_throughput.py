"""The Slack HTTP path against a floor relay, side by side in one run.

Each target runs as its own process: the real `lastresort run` (on SQLite and on PostgreSQL) and the floor
relay (bench/floor_relay.py: verify, ack, one model call, one post). This process plays Slack (signed
events to the target, and the Web API it calls) and the model (a fixed latency), with the test fakes.

People converse in threads: a mention starts each thread, then plain replies in it, each sent once the
previous answer landed and the person "thought" for a while. A message's latency runs from its first POST
until its answer lands in Slack; what the benchmark reports is that minus the model's fixed latency. The
machine is shared, so the absolute numbers are noisy: the ratios to the floor in the same run are the result.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.support import percentile
from tests.support.bot_process import BotProcess
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_slack import FakeSlack, SlackDriver
from tests.support.paths import REPO
from tests.support.stores import fresh_postgres_schema

SECRET = "bench-signing-secret"
CHANNEL = "C0BENCH"
MODEL_LATENCY = 0.2
WARM_UP = 3
ANSWER_TIMEOUT = 60.0


@dataclass(frozen=True)
class Load:
    name: str
    threads: int
    think: float  # mean pause between an answer and the person's next message
    seconds: float  # how long people keep sending; answers in flight are then waited for


# 50 threads, each one message every ~1.65 s: about 30 messages/s.
SPREAD = Load("50 threads", 50, think=1.45, seconds=12.0)
# Nobody thinks: every thread sends its next message as soon as it has the answer.
SATURATION = Load("saturation", 100, think=0.0, seconds=8.0)
LOADS = (SPREAD, SATURATION)
TARGETS = ("floor", "sqlite", "postgres")


@dataclass
class Result:
    target: str
    load: Load
    latencies: list[float] = field(default_factory=list)  # seconds beyond the model, one per answer
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    lost: int = 0
    counts: dict[str, float] | None = None  # statements, transactions, ... (the product only)

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / self.answered if self.answered else 0.0

    def p(self, pct: float) -> float:
        return 1000 * percentile(self.latencies, pct)

    def per_message(self, name: str) -> float | None:
        if self.counts is None or not self.answered:
            return None
        return self.counts.get(name, 0.0) / self.answered


class BenchSlack(FakeSlack):
    """The test fake, telling the benchmark's loop the moment an answer lands in a thread."""

    def __init__(self) -> None:
        super().__init__()
        self.bench_loop: asyncio.AbstractEventLoop | None = None
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.streams: dict[str, str] = {}  # stream message ts -> its thread

    def _dispatch_locked(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        answer = super()._dispatch_locked(method, params, token)
        if not answer.get("ok") or self.bench_loop is None:
            return answer
        thread = None
        if method == "chat.postMessage":
            # The floor's answer, and the product's fallback when Slack refuses a stream.
            thread = params.get("thread_ts")
        elif method == "chat.startStream":
            self.streams[str(answer.get("ts"))] = str(params.get("thread_ts"))
        elif method == "chat.stopStream":
            # The product streams its answers: one has landed when its stream stops.
            thread = self.streams.pop(str(params.get("ts")), None)
        if thread:
            self.bench_loop.call_soon_threadsafe(self._landed, str(thread), time.monotonic())
        return answer

    def _landed(self, thread: str, at: float) -> None:
        waiter = self.waiting.pop(thread, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc (no psutil needed)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


METRIC = re.compile(r"^lastresort_store_(\w+)_total (\S+)$", re.MULTILINE)


async def store_counts(session: aiohttp.ClientSession, url: str) -> dict[str, float] | None:
    async with session.get(f"{url}/metrics") as response:
        if response.status != 200:
            return None
        found = {name: float(value) for name, value in METRIC.findall(await response.text())}
    return found or None


@asynccontextmanager
async def database_url(backend: str, tmp: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
    else:
        async with fresh_postgres_schema() as schema:
            yield f"{schema.url}?search_path={schema.name}"


@asynccontextmanager
async def target_process(target: str, slack: FakeSlack, anthropic: FakeAnthropic, tmp: Path) -> AsyncIterator[Any]:
    env = {
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.api_url,
        "ANTHROPIC_API_KEY": "bench",
        "ANTHROPIC_BASE_URL": anthropic.base_url,
        "LOG_LEVEL": "WARNING",
        "LASTRESORT_COUNT_STATEMENTS": "1",
    }
    if os.environ.get("LASTRESORT_CONFIG"):
        # Another configuration for the product (say, the risk screen switched off), to compare runs.
        env["LASTRESORT_CONFIG"] = os.environ["LASTRESORT_CONFIG"]
    if target == "floor":
        async with FloorProcess(env, log_path=tmp / "floor.log") as floor:
            yield floor
        return
    async with (
        database_url(target, tmp) as url,
        # A fresh interpreter, as a PaaS starts it (tests fork theirs from a warm one).
        BotProcess({**env, "DATABASE_URL": url}, log_path=tmp / "bot.log", fresh=True) as bot,
    ):
        yield bot


class FloorProcess(BotProcess):
    """The floor relay, started and stopped like `lastresort run`."""

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.floor_relay", cwd=REPO, env=self.env, stdout=log, stderr=log
            )
        await self.wait_healthy()


class People:
    """Plays the people in the threads: signed events out, answers awaited as the fake sees them land."""

    def __init__(self, slack: BenchSlack, session: aiohttp.ClientSession, url: str) -> None:
        self.slack = slack
        self.session = session
        self.driver = SlackDriver(SECRET, url, fake=slack)

    async def send(self, envelopes: list[dict[str, Any]]) -> None:
        for envelope in envelopes:
            body = json.dumps(envelope)
            headers = self.driver.signed_headers(body)
            async with self.session.post(self.driver.url, data=body.encode(), headers=headers) as response:
                assert response.status == 200, await response.text()

    async def ask(self, thread: str, envelopes: list[dict[str, Any]]) -> float:
        """Send one message; returns seconds until its answer landed (raises TimeoutError)."""
        landed: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.slack.waiting[thread] = landed
        sent = time.monotonic()
        await self.send(envelopes)
        at = await asyncio.wait_for(landed, ANSWER_TIMEOUT)
        return at - sent

    def mention(self, user: str, text: str) -> tuple[str, list[dict[str, Any]]]:
        """A new thread: the mention as Slack delivers it (app_mention and message)."""
        pair = self.driver.build_mention_pair(CHANNEL, user, text)
        self.slack.record_message(CHANNEL, dict(pair["message"]["event"]))
        return str(pair["message"]["event"]["ts"]), [pair["app_mention"], pair["message"]]

    def reply(self, user: str, text: str, thread: str) -> list[dict[str, Any]]:
        return [self.driver.build_message(CHANNEL, user, text, thread_ts=thread)]

    async def converse(self, i: int, load: Load, deadline: float, rng: random.Random, result: Result) -> None:
        user = f"U{i:05d}"
        # Spread the first messages over one think time, as people arriving do.
        await asyncio.sleep(rng.uniform(0, load.think))
        thread, events = self.mention(user, f"question {i}.0")
        turn = 0
        while True:
            try:
                result.latencies.append(max(0.0, await self.ask(thread, events) - MODEL_LATENCY))
            except TimeoutError:
                result.lost += 1
                return
            turn += 1
            if load.think:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * load.think)
            if time.monotonic() >= deadline:
                return
            events = self.reply(user, f"question {i}.{turn}", thread)


async def one_run(target: str, load: Load) -> Result:
    result = Result(target, load)
    rng = random.Random(11)
    with BenchSlack() as slack, FakeAnthropic() as anthropic, tempfile.TemporaryDirectory() as tmp:
        slack.bench_loop = asyncio.get_running_loop()
        slack.add_channel(CHANNEL, "bench")
        anthropic.latency = MODEL_LATENCY
        async with (
            target_process(target, slack, anthropic, Path(tmp)) as bot,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session,
        ):
            people = People(slack, session, f"{bot.url}/slack/events")
            # Untimed: start-up costs (first auth.test, connection pools, first use of imports) are not
            # what a message costs.
            for i in range(WARM_UP):
                await people.ask(*people.mention(f"W{i:05d}", f"warm-up {i}"))
            assert bot.process is not None
            before = await store_counts(session, bot.url)
            cpu_before = cpu_seconds(bot.process.pid)
            began = time.monotonic()
            deadline = began + load.seconds
            await asyncio.gather(*(people.converse(i, load, deadline, rng, result) for i in range(load.threads)))
            result.seconds = time.monotonic() - began
            result.cpu_seconds = cpu_seconds(bot.process.pid) - cpu_before
            after = await store_counts(session, bot.url)
            if before is not None and after is not None:
                result.counts = {name: after[name] - before.get(name, 0.0) for name in after}
            await bot.terminate()
    return result


def ratio(value: float, floor: float) -> str:
    return f"x{value / floor:.2f}" if floor else "-"


def table(results: list[Result]) -> list[str]:
    """One block per load: the floor's numbers, then each backend's with its ratio to the floor."""
    lines = []
    for load in LOADS:
        floor = next(r for r in results if r.target == "floor" and r.load == load)
        lines.append(f"slack path, {load.name} (model {MODEL_LATENCY * 1000:.0f} ms), same run:")
        lines.append(
            f"  {'target':<9} {'answered':>8} {'lost':>4} {'msg/s':>7} {'p50 ms':>14} {'p99 ms':>14} "
            f"{'CPU ms/msg':>14} {'stmts/msg':>9} {'tx/msg':>6} {'trips/msg':>9}"
        )
        for r in (x for x in results if x.load == load):
            stats = [r.per_message(n) for n in ("statements", "transactions", "round_trips")]
            shown = [f"{s:.1f}" if s is not None else "-" for s in stats]
            lines.append(
                f"  {r.target:<9} {r.answered:>8} {r.lost:>4} {r.rate:>7.1f} "
                f"{r.p(50):>6.2f} {ratio(r.p(50), floor.p(50)):>7} {r.p(99):>6.2f} {ratio(r.p(99), floor.p(99)):>7} "
                f"{r.cpu_ms:>6.2f} {ratio(r.cpu_ms, floor.cpu_ms):>7} {shown[0]:>9} {shown[1]:>6} {shown[2]:>9}"
            )
        for r in (x for x in results if x.load == load and x.target != "floor"):
            lines.append(f"  {r.target}: {ratio(r.rate, floor.rate)} the floor's messages/s")
    return lines


async def run(targets: tuple[str, ...] = TARGETS) -> list[str]:
    results = []
    for load in LOADS:
        for target in targets:
            results.append(await one_run(target, load))
    return table(results)
