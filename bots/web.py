"""The HTTP side every web or worker process shares: /healthz and /metrics (plus Slack's routes)."""

from __future__ import annotations

from aiohttp import web

from bots.prometheus_metrics import CONTENT_TYPE, PrometheusMetrics


def health_routes(metrics: PrometheusMetrics) -> list[web.RouteDef]:
    async def healthz(_: web.Request) -> web.Response:
        # Answers from memory only: a health check must never wait on Slack, Discord or Anthropic.
        return web.json_response({"status": "ok"})

    async def metrics_page(_: web.Request) -> web.Response:
        body = metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return [web.get("/healthz", healthz), web.get("/metrics", metrics_page)]
