"""Slack's HTTP requests (HTTP mode): checked at the edge, then handed to the Bolt app.

Order matters. The signature and timestamp are checked on the raw bytes before anything parses the body,
so an unauthenticated request costs one HMAC and one WARNING line, never a parser's traceback. Only then is
the body parsed (a signed but malformed body is a 400), requests for another workspace or app are
acknowledged and dropped, and event types we do not handle are acknowledged without Bolt (which would
answer them 404, and Slack turns off event subscriptions that keep failing).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
FORM = "application/x-www-form-urlencoded"
# Slack's own rule: a request more than five minutes off is a replay.
MAX_CLOCK_SKEW_SECONDS = 300
# The events the adapter acts on; every other event type is acknowledged and dropped here.
HANDLED_EVENTS = frozenset(
    {"message", "app_mention", "app_home_opened", "assistant_thread_started", "assistant_thread_context_changed"}
)
# The workspace took the app (or its bot token) away: no more calls to Slack for it.
REVOKING_EVENTS = frozenset({"app_uninstalled", "tokens_revoked"})


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Installation:
    """The one workspace and app this process serves (team from auth.test, app from bots.info or
    SLACK_APP_ID). Unknown parts (auth.test failed at start) are not checked."""

    team_id: str | None = None
    app_id: str | None = None
    bot_user_id: str | None = None
    revoked: bool = False


def check_signature(raw: bytes, headers: Mapping[str, str], secret: str, *, now: float | None = None) -> None:
    """Raise Refused(401) unless Slack signed exactly these bytes within the last five minutes."""
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    if not timestamp or not signature:
        raise Refused(401, "unsigned")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise Refused(401, "bad_timestamp")
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        raise Refused(401, "stale_timestamp")
    base = b"v0:" + timestamp.encode() + b":" + raw
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise Refused(401, "bad_signature")


def parse_body(raw: bytes, content_type: str) -> tuple[str, dict[str, Any]]:
    """The body as Bolt reads it (text) and as a dict; Refused(400) for anything Slack never sends."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "not_utf8") from None
    if content_type == FORM:
        fields = dict(parse_qsl(text, keep_blank_values=True))
        if "payload" in fields:
            payload = _json_object(fields["payload"], "bad_payload")
            return text, payload
        if not fields:
            raise Refused(400, "empty_form")
        return text, fields
    return text, _json_object(text, "bad_json")


def _json_object(text: str, reason: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise Refused(400, reason) from None
    if not isinstance(value, dict):
        raise Refused(400, reason)
    return value


def team_and_app(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """Which workspace and app a request is for: events and commands say `team_id`, clicks `team.id`."""
    team = body.get("team_id")
    if team is None and isinstance(body.get("team"), dict):
        team = body["team"].get("id")
    app = body.get("api_app_id")
    return (team if isinstance(team, str) else None), (app if isinstance(app, str) else None)


def foreign(body: dict[str, Any], installation: Installation) -> str | None:
    """Why a (signed) request is not for us, or None. url_verification and ssl_check name no team."""
    team, app = team_and_app(body)
    if installation.team_id and team and team != installation.team_id:
        return "other_team"
    if installation.app_id and app and app != installation.app_id:
        return "other_app"
    return None


def event_type(body: dict[str, Any]) -> str | None:
    if body.get("type") != "event_callback":
        return None
    event = body.get("event")
    kind = event.get("type") if isinstance(event, dict) else None
    return kind if isinstance(kind, str) else ""


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


OnRevoked = Callable[[dict[str, Any]], Awaitable[None]]


def events_handler(
    app: AsyncApp, *, signing_secret: str, installation: Installation, on_revoked: OnRevoked
) -> web.RouteDef:
    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            check_signature(raw, request.headers, signing_secret)
            text, body = parse_body(raw, request.content_type)
        except Refused as refused:
            log.warning(
                "slack request refused",
                extra={"status": refused.status, "reason": refused.reason, "bytes": len(raw)},
            )
            return web.Response(status=refused.status)
        reason = foreign(body, installation)
        if reason is not None:
            team, app_id = team_and_app(body)
            log.warning(
                "slack request for another workspace or app ignored",
                extra={"reason": reason, "team": team, "app": app_id},
            )
            return web.Response(status=200)
        kind = event_type(body)
        if kind in REVOKING_EVENTS:
            await on_revoked(body)
            return web.Response(status=200)
        if installation.revoked:
            # Nothing may call Slack for a workspace that removed the app; acknowledge so Slack stops.
            return web.Response(status=200)
        if kind is not None and kind not in HANDLED_EVENTS:
            log.debug("slack event type not handled; acknowledged", extra={"event_type": kind})
            return web.Response(status=200)
        bolt_request = AsyncBoltRequest(body=text, query=request.query_string, headers=dict(request.headers))
        repair_form_body(bolt_request)
        return await to_aiohttp_response(await app.async_dispatch(bolt_request))

    return web.post(EVENTS_PATH, handle)
