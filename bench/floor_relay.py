"""The floor `make bench` compares Last Resort with: the least a Slack-to-Claude relay can do.

It verifies Slack's signature, acknowledges, calls the model once (streamed, as the product does) and posts
the answer once in the thread, with one aiohttp session for each remote. No storage, no rules, no retries:
whatever Last Resort costs beyond this is the price of its guarantees. Run as its own process, like the
product: `python -m bench.floor_relay` with PORT, SLACK_SIGNING_SECRET, SLACK_BOT_TOKEN, SLACK_API_URL,
ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL set.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import time
from typing import Any

import aiohttp
from aiohttp import web

MODEL = "claude-opus-4-1"
MAX_TOKENS = 1024
STALE_SECONDS = 300


class FloorRelay:
    def __init__(self, env: dict[str, str]) -> None:
        self._secret = env["SLACK_SIGNING_SECRET"].encode()
        self._token = env["SLACK_BOT_TOKEN"]
        self._slack = env["SLACK_API_URL"].rstrip("/") + "/"
        self._anthropic = env["ANTHROPIC_BASE_URL"].rstrip("/") + "/v1/messages"
        self._api_key = env["ANTHROPIC_API_KEY"]
        self._threads: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def _signed(self, request: web.Request, body: bytes) -> bool:
        stamp = request.headers.get("X-Slack-Request-Timestamp", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > STALE_SECONDS:
            return False
        expected = "v0=" + hmac.new(self._secret, b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, request.headers.get("X-Slack-Signature", ""))

    async def events(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self._signed(request, body):
            return web.Response(status=401)
        envelope = json.loads(body)
        event = envelope.get("event") or {}
        thread = str(event.get("thread_ts") or event.get("ts") or "")
        # A mention arrives twice (app_mention and message): answer the app_mention, and plain messages
        # only in threads the relay was mentioned in.
        kind = event.get("type")
        answer = kind == "app_mention" or (
            kind == "message"
            and "subtype" not in event
            and event.get("thread_ts") in self._threads
            and "<@" not in str(event.get("text", ""))
        )
        if answer:
            self._threads.add(thread)
            task = asyncio.create_task(self._answer(str(event["channel"]), thread, str(event.get("text", ""))))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.Response(text="")

    async def _answer(self, channel: str, thread: str, text: str) -> None:
        assert self._session is not None
        request = {
            "model": MODEL,
            "max_tokens": MAX_TOKENS,
            "stream": True,
            "messages": [{"role": "user", "content": text}],
        }
        headers = {"x-api-key": self._api_key, "anthropic-version": "2023-06-01"}
        answer = ""
        async with self._session.post(self._anthropic, json=request, headers=headers) as response:
            async for line in response.content:
                if line.startswith(b"data:"):
                    data: dict[str, Any] = json.loads(line[5:])
                    if data.get("type") == "content_block_delta" and data["delta"].get("type") == "text_delta":
                        answer += data["delta"]["text"]
        async with self._session.post(
            self._slack + "chat.postMessage",
            json={"channel": channel, "thread_ts": thread, "text": answer or "…"},
            headers={"Authorization": f"Bearer {self._token}"},
        ) as posted:
            await posted.read()

    async def run(self, port: int) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.add_routes([web.post("/slack/events", self.events), web.get("/healthz", self.health)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()
        await self._session.close()

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


def main() -> None:
    env = dict(os.environ)
    asyncio.run(FloorRelay(env).run(int(env["PORT"])))


if __name__ == "__main__":
    main()
