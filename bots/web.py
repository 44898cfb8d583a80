"""The HTTP side every web or worker process shares: /healthz, /readyz and /metrics (plus Slack's routes)."""

from __future__ import annotations

from aiohttp import web

from bots.prometheus_metrics import CONTENT_TYPE, PrometheusMetrics
from core.readiness import Readiness


def health_routes(metrics: PrometheusMetrics, readiness: Readiness | None = None) -> list[web.RouteDef]:
    ready_state = readiness or Readiness()

    async def healthz(_: web.Request) -> web.Response:
        # Liveness, from memory only: a health check must never wait on Slack, Discord, Anthropic or the
        # database. A process whose database is down is alive; restarting it would not help.
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        # Readiness, from what components last reported (the store is pinged in the background, not here).
        not_ready = ready_state.not_ready()
        if not_ready:
            return web.json_response({"status": "not_ready", "not_ready": not_ready}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics_page(_: web.Request) -> web.Response:
        body = metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics_page)]
