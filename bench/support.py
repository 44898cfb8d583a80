"""Shared pieces of the benchmarks: a timing model wrapper, percentiles, a service on a real store."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bots.runtime import build_service
from core.claude_client import ClaudeClient
from core.clock import SystemClock
from core.metrics import NullMetrics
from core.ports import ModelReply, ModelRequest, Store, StreamListener
from core.service import ConversationService
from core.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


class TimedModel:
    """Wraps the real Claude client and adds up the time spent waiting for the model, so the
    benchmark can subtract it and report only the core's own overhead."""

    def __init__(self, inner: ClaudeClient) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.replies: list[ModelReply] = []

    async def reply(self, request: ModelRequest, listener: StreamListener | None = None) -> ModelReply:
        started = time.perf_counter()
        try:
            result = await self.inner.reply(request, listener)
        finally:
            self.seconds += time.perf_counter() - started
        self.replies.append(result)
        return result

    async def review(self, request: ModelRequest, *, timeout_seconds: float, max_retries: int) -> ModelReply:
        # The risk review runs beside the reply, not inside it: it is not model time to subtract.
        return await self.inner.review(request, timeout_seconds=timeout_seconds, max_retries=max_retries)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
        f"mean {statistics.fmean(ms):.2f} ms over {len(ms)}"
    )


def settings() -> Settings:
    return load_settings(REPO / "config" / "lastresort.yaml")


@asynccontextmanager
async def service_on(
    store: Store, base_url: str, config: Settings
) -> AsyncIterator[tuple[ConversationService, TimedModel]]:
    client = ClaudeClient(
        api_key="bench", base_url=base_url, timeout_seconds=30, max_retries=0, max_total_wait_seconds=60
    )
    model = TimedModel(client)
    service, _ = build_service(store=store, model=model, settings=config, clock=SystemClock(), metrics=NullMetrics())
    try:
        yield service, model
    finally:
        await client.close()
