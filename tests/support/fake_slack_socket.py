"""A fake of Slack's Socket Mode, served by the fake Slack's own aiohttp app (one port, one world).

The protocol, as slack-sdk's `SocketModeClient` (aiohttp) and Bolt's `AsyncSocketModeHandler` speak it:
- `apps.connections.open`, called with the app-level (xapp-) token, returns a one-use `wss://` URL; here
  `ws://127.0.0.1:<port>/link/?ticket=…`. Any other token is refused (`not_allowed_token_type` for a bot
  token), and so is the app token on every other method.
- On connect the server sends `{"type": "hello", "num_connections", "debug_info", "connection_info"}`.
- It then pushes envelopes `{"envelope_id", "type": "events_api" | "slash_commands" | "interactive",
  "payload", "accepts_response_payload", "retry_attempt", "retry_reason"}`; the client acknowledges each
  with `{"envelope_id"}` (plus `payload` when a command answers inline). An envelope nobody acknowledges
  is what Slack would deliver again.
- `{"type": "disconnect", "reason": "refresh_requested"}` asks the client to open a new connection (a new
  `apps.connections.open`) and drop the old one; Slack sends it every few hours.
- The client pings (`sdk-ping-pong:<time>`); aiohttp's server answers pongs itself.

`SocketDriver` is `SlackDriver` with the socket as transport: the same builders (mentions, edits,
commands, clicks) and the same scenarios run over Socket Mode as over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Unpack

from aiohttp import WSMsgType, web

from tests.support.fake_slack import APP_ID, DriverReply, FakeSlack, SendOptions, SlackDriver

JSON = dict[str, Any]
DEFAULT_APP_TOKEN = "xapp-1-A0001-fake-app-token"
ENVELOPE_TYPES = {"event": "events_api", "command": "slash_commands", "interaction": "interactive"}


class FakeSocketMode:
    """Socket Mode beside a `FakeSlack` (create it before the fake starts)."""

    def __init__(self, fake: FakeSlack, app_token: str = DEFAULT_APP_TOKEN) -> None:
        self.fake = fake
        self.app_token = app_token
        fake.add_app_token(app_token)
        fake.add_route("GET", "/link/", self._connect)
        fake.socket_url = self._issue_url
        self._tickets: set[str] = set()
        # Only touched on the fake's loop.
        self._sockets: list[web.WebSocketResponse] = []
        self._pending: dict[str, asyncio.Future[JSON]] = {}
        self.hellos = 0  # connections greeted
        self.closed = 0  # connections gone
        self.acks: list[JSON] = []
        self.unknown_tickets = 0

    # -- the server side (runs on the fake's loop) -------------------------------------------------------

    def _issue_url(self) -> str:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return f"ws://127.0.0.1:{self.fake.port}/link/?ticket={ticket}&app_id={APP_ID}"

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            # A URL is good for one connection; Slack answers a reused or made-up one with 401.
            self.unknown_tickets += 1
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        self.hellos += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
        )
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    body = json.loads(message.data)
                except json.JSONDecodeError:
                    continue
                envelope_id = body.get("envelope_id") if isinstance(body, dict) else None
                if not isinstance(envelope_id, str):
                    continue
                self.acks.append(body)
                waiting = self._pending.pop(envelope_id, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(body)
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            self.closed += 1
        return ws

    async def _push(self, kind: str, payload: JSON, *, retry_attempt: int, timeout: float) -> JSON:  # noqa: ASYNC109
        if not self._sockets:
            raise ConnectionError("no Socket Mode connection is open")
        envelope_id = str(uuid.uuid4())
        acked: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self._pending[envelope_id] = acked
        envelope: JSON = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            # Commands and clicks may answer inline in the ack; events never do.
            "accepts_response_payload": kind != "events_api",
        }
        if kind == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = "timeout" if retry_attempt else ""
        # The newest connection gets it, as after a refresh Slack sends on the new socket.
        await self._sockets[-1].send_json(envelope)
        try:
            return await asyncio.wait_for(acked, timeout)
        finally:
            self._pending.pop(envelope_id, None)

    async def _disconnect(self, reason: str) -> None:
        for ws in list(self._sockets):
            await ws.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}})

    async def _drop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()

    # -- the test side (any loop) ------------------------------------------------------------------------

    async def _on_fake_loop(self, work: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work(), self.fake.loop))

    async def send(self, kind: str, payload: JSON, *, retry_attempt: int = 0, timeout: float = 10.0) -> JSON:  # noqa: ASYNC109
        """Push one envelope and return the client's acknowledgement (TimeoutError if none came)."""
        return dict(
            await self._on_fake_loop(lambda: self._push(kind, payload, retry_attempt=retry_attempt, timeout=timeout))
        )

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask every client to reconnect, as Slack does before it recycles a connection."""
        await self._on_fake_loop(lambda: self._disconnect(reason))

    async def drop(self) -> None:
        """Close every connection from the server side, without warning (a network blip)."""
        await self._on_fake_loop(self._drop)

    @property
    def open_connections(self) -> int:
        return len(self._sockets)

    async def wait_connected(self, hellos: int = 1, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until `hellos` connections were greeted and exactly one is open."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.hellos >= hellos and self.open_connections == 1:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"socket mode: {self.hellos} hellos, {self.open_connections} open; wanted {hellos}, 1")


class SocketDriver(SlackDriver):
    """A `SlackDriver` whose events, commands and clicks go over Socket Mode instead of signed HTTP."""

    def __init__(self, socket: FakeSocketMode, *, timeout: float = 10.0) -> None:
        super().__init__("unused-in-socket-mode", "socket-mode://", fake=socket.fake, timeout=timeout)
        self.socket = socket

    async def _send(self, kind: str, payload: JSON, opts: SendOptions) -> DriverReply:
        ack = await self.socket.send(
            ENVELOPE_TYPES[kind], payload, retry_attempt=int(opts.get("retry_num", 0)), timeout=self.timeout
        )
        inline = ack.get("payload")
        body = json.dumps(inline) if inline else ""
        return DriverReply(200, body, {}, payload, kind, {})

    def _send_sync(self, kind: str, payload: JSON, opts: SendOptions) -> DriverReply:
        raise NotImplementedError("Socket Mode is driven from async tests")

    async def resend(self, reply: DriverReply, **opts: Unpack[SendOptions]) -> DriverReply:
        opts.setdefault("retry_num", 1)
        return await self._send(reply.kind, reply.payload, opts)
