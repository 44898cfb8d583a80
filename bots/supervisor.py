"""`lastresort run` with platform credentials: starts the adapters, serves HTTP, shuts down on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from datetime import timedelta
from typing import Protocol

from aiohttp import web

from bots.environment import Environment
from bots.prometheus_metrics import PrometheusMetrics
from bots.runtime import EXIT_START_FAILED, Runtime, open_runtime
from bots.web import health_routes
from core.settings import Settings
from core.storage.statement_counter import StatementCounter

log = logging.getLogger(__name__)

DEFAULT_SLACK_PORT = 3000
ADMISSION_GRACE_SECONDS = 0.5
CANCEL_SECONDS = 2.0
RETENTION_SWEEP_SECONDS = 3600.0
SWITCH_INTERVAL_SECONDS = 0.0005


async def retention_sweeps(runtime: Runtime) -> None:
    """Remove message text past the retention period, hourly, for as long as the process runs."""
    days = runtime.settings.retention.message_text_days
    while True:
        try:
            now = runtime.clock.now()
            removed = await runtime.store.purge_text(older_than=now - timedelta(days=days))
            # Authors' risk marks stop counting after their window; past it they are deleted.
            hours = runtime.settings.risk_review.author_mark_hours
            await runtime.store.prune_author_marks(older_than=now - timedelta(hours=hours))
            if removed:
                log.info("retention purge", extra={"messages": removed, "days": days})
        except Exception:
            log.exception("retention purge failed; will retry")
            runtime.metrics.observe_error("retention")
        await asyncio.sleep(RETENTION_SWEEP_SECONDS)


class PlatformAdapter(Protocol):
    name: str

    def routes(self) -> list[web.RouteDef]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def build_adapters(runtime: Runtime) -> list[PlatformAdapter]:
    adapters: list[PlatformAdapter] = []
    if runtime.env.slack_enabled:
        from bots.slack.bot import SlackAdapter

        adapters.append(SlackAdapter(runtime))
    if runtime.env.discord_enabled:
        from bots.discord.bot import DiscordAdapter

        adapters.append(DiscordAdapter(runtime))
    return adapters


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    log.info("listening", extra={"port": port})
    return runner


async def run_adapters(env: Environment, settings: Settings) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until an adapter asks to stop for good (its exit code)."""
    metrics = PrometheusMetrics()
    async with open_runtime(env, settings, metrics=metrics) as runtime:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runtime.shutdown.request, f"signal {sig.name}")
        counter = getattr(runtime.store, "statement_counter", None)
        if isinstance(counter, StatementCounter):
            metrics.watch_statements(counter)
        adapters = build_adapters(runtime)
        app = web.Application()
        app.add_routes(health_routes(metrics, runtime.readiness))
        http_routes = [route for adapter in adapters for route in adapter.routes()]
        app.add_routes(http_routes)
        port = env.port if env.port is not None else (DEFAULT_SLACK_PORT if http_routes else None)
        runner = await _serve(app, port) if port is not None else None
        sweeper = asyncio.create_task(retention_sweeps(runtime))
        if runtime.store_watch is not None:
            runtime.store_watch.start()
        try:
            for adapter in adapters:
                try:
                    await adapter.start()
                except Exception as exc:
                    # A rejected token or a missing intent: say so plainly and exit, instead of a traceback.
                    log.error("adapter could not start", extra={"adapter": adapter.name, "error": str(exc)})
                    print(f"lastresort: {adapter.name} could not start: {exc}", file=sys.stderr)
                    runtime.shutdown.request(f"{adapter.name} could not start", exit_code=EXIT_START_FAILED)
                    break
                log.info("adapter started", extra={"adapter": adapter.name})
            # What start-up built (modules, SDK schemas, settings) lives as long as the process: out of the
            # collector's sight, a full collection no longer walks it and stalls the loop for 100+ ms.
            gc.freeze()
            # The database thread (aiosqlite) needs the GIL back after every query; while the loop is busy it
            # would wait out the whole default 5 ms switch interval each time, capping the store at a few
            # hundred queries a second under load.
            sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
            await runtime.shutdown.event.wait()
            log.info("shutting down: no new work, finishing replies in flight", extra={"why": runtime.shutdown.reason})
            await _drain(runtime)
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if runtime.store_watch is not None:
                await runtime.store_watch.stop()
            for adapter in reversed(adapters):
                try:
                    async with asyncio.timeout(3):
                        await adapter.stop()
                except Exception:
                    log.exception("adapter did not stop cleanly", extra={"adapter": adapter.name})
            if runner is not None:
                await runner.cleanup()
    log.info("stopped", extra={"exit_code": runtime.shutdown.exit_code})
    return runtime.shutdown.exit_code


async def _drain(runtime: Runtime) -> None:
    runtime.work.close()
    # Requests acknowledged just before the close start their work a moment later: let them in.
    await asyncio.sleep(ADMISSION_GRACE_SECONDS)
    if not await runtime.work.wait_idle(runtime.settings.shutdown.drain_seconds):
        log.warning(
            "replies still running at shutdown: cancelled; their messages stay for another instance",
            extra={"running": runtime.work.running},
        )
        # Cancelled replies store nothing (turns are stored only when complete) and release leases.
        await runtime.work.cancel_running(CANCEL_SECONDS)
    # Risk screens that outlived their reply write their marks before the store closes (each is bounded by
    # the review's own timeout).
    await runtime.service.drain()
