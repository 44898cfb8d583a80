"""Slack's HTTP requests into the Bolt app (HTTP mode), as an aiohttp handler the supervisor serves."""

from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest

EVENTS_PATH = "/slack/events"
FORM = "application/x-www-form-urlencoded"


def repair_form_body(request: AsyncBoltRequest) -> None:
    """Undo a Bolt 1.30 misparse: any form body containing the substring "payload" is read as an
    interactivity payload, so `/lastresort end <link> the payload was abuse` arrives empty and 404s.
    A form without a `payload` field is a slash command: parse it as the plain form it is.
    The signature check reads `raw_body`, which stays untouched."""
    if request.content_type != FORM or request.raw_body.startswith("{"):
        return
    fields = dict(parse_qsl(request.raw_body, keep_blank_values=True))
    if "payload" in fields or request.body == fields:
        return
    request.body = fields
    request.context = build_async_context(AsyncBoltContext({}), fields)


def events_handler(app: AsyncApp) -> web.RouteDef:
    async def handle(request: web.Request) -> web.Response:
        bolt_request = await to_bolt_request(request)
        repair_form_body(bolt_request)
        return await to_aiohttp_response(await app.async_dispatch(bolt_request))

    return web.post(EVENTS_PATH, handle)
