"""The `ModelClient` port on the anthropic SDK: streaming, retries with a capped total wait, usage logs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import anthropic
import httpx2

from core.domain import JSON
from core.ports import ModelReply, ModelRequest, ModelUnavailableError, StreamListener, Usage
from core.tool_schemas import TOOLS

log = logging.getLogger(__name__)

# The SDK retries failed requests itself; an `error` event after the stream started is ours to retry.
MID_STREAM_RETRIES = 2


class _Relay:
    """Passes stream events on, and remembers whether any arrived (a failure after that is mid-stream)."""

    def __init__(self, listener: StreamListener | None) -> None:
        self._listener = listener
        self.streamed = False

    async def text(self, so_far: str) -> None:
        self.streamed = True
        if self._listener is not None:
            await self._listener.text(so_far)

    async def tool_use_started(self) -> None:
        self.streamed = True
        if self._listener is not None:
            await self._listener.tool_use_started()


def error_type(exc: anthropic.APIStatusError) -> str:
    """The API's own name for an error (`overloaded_error`): a mid-stream error event arrives as HTTP 200."""
    body = exc.body
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) and kind else f"HTTP {exc.status_code}"


class ClaudeClient:
    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        timeout_seconds: float,
        max_retries: int,
        max_total_wait_seconds: float,
    ) -> None:
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout_seconds,
            max_retries=max_retries,
            # The SDK's aiohttp transport: its C parser and connection pool cost a fraction of the default
            # transport's CPU per streamed call (`make bench`).
            http_client=anthropic.DefaultAioHttpClient(),
        )
        self._max_total_wait = max_total_wait_seconds
        self._review_clients: dict[tuple[float, int], anthropic.AsyncAnthropic] = {}

    async def close(self) -> None:
        await self._client.close()

    async def warm_up(self) -> None:
        """Make one whole call, tools and all, against a canned in-memory stream: the SDK builds its request
        and event schemas on first use (a few hundred ms of CPU), which belongs at start-up, not inside the
        first person's turn."""
        transport = httpx2.MockTransport(_canned_stream)
        async with anthropic.AsyncAnthropic(
            api_key="warm-up", http_client=anthropic.DefaultAsyncHttpxClient(transport=transport), max_retries=0
        ) as client:
            request = ModelRequest(
                model="warm-up",
                max_tokens=16,
                system=({"type": "text", "text": "warm-up"},),
                messages=({"role": "user", "content": [{"type": "text", "text": "warm-up"}]},),
                tools=TOOLS,
            )
            await self._stream_once(request, _Relay(None), client, log_reply=False)

    async def reply(self, request: ModelRequest, listener: StreamListener | None = None) -> ModelReply:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._max_total_wait):
                return await self._reply_with_retries(request, listener)
        except TimeoutError as exc:
            waited = time.monotonic() - started
            log.warning("model reply timed out", extra={"waited_s": round(waited, 1)})
            raise ModelUnavailableError(f"no complete reply within {self._max_total_wait:.0f} s") from exc

    async def _reply_with_retries(self, request: ModelRequest, listener: StreamListener | None) -> ModelReply:
        attempt = 0
        while True:
            relay = _Relay(listener)
            try:
                return await self._stream_once(request, relay)
            except anthropic.APIStatusError as exc:
                # An `error` event inside a 200 stream arrives as status 200; the SDK does not retry it.
                mid_stream = relay.streamed or exc.status_code == 200
                reason = error_type(exc)
                if mid_stream and attempt < MID_STREAM_RETRIES:
                    attempt += 1
                    log.warning(
                        "model stream failed mid-way (%s); retrying",
                        reason,
                        extra={"error": reason, "attempt": attempt, "request_id": exc.request_id},
                    )
                    await asyncio.sleep(0.5 * 2**attempt)
                    continue
                where = "mid-stream" if mid_stream else f"HTTP {exc.status_code}"
                log.warning(
                    "model request failed: %s (%s)",
                    reason,
                    where,
                    extra={"error": reason, "status": exc.status_code, "request_id": exc.request_id},
                )
                raise ModelUnavailableError(f"the model API answered {reason}") from exc
            except anthropic.APIError as exc:
                log.warning("model request failed: %s", type(exc).__name__, extra={"error": type(exc).__name__})
                raise ModelUnavailableError(type(exc).__name__) from exc
            except Exception as exc:
                # The SDK does not wrap a connection that breaks mid-stream (the transport's own error):
                # retry it like a mid-stream error event; it must never escape as a crash.
                if attempt < MID_STREAM_RETRIES:
                    attempt += 1
                    log.warning("model stream broke; retrying", extra={"error": type(exc).__name__, "attempt": attempt})
                    await asyncio.sleep(0.5 * 2**attempt)
                    continue
                log.warning("model stream broke", extra={"error": type(exc).__name__})
                raise ModelUnavailableError(type(exc).__name__) from exc

    async def _stream_once(
        self,
        request: ModelRequest,
        relay: _Relay,
        client: anthropic.AsyncAnthropic | None = None,
        *,
        log_reply: bool = True,
    ) -> ModelReply:
        # The raw events, not `messages.stream()`: that helper rebuilds a pydantic snapshot of the whole
        # message on every event, which cost more CPU than the rest of a turn. We keep only what we use.
        reply = _Reply()
        # Events as the JSON they arrive in (`object`): the SDK would build a pydantic model of each, and we read
        # a few fields of them. Its stream still raises on an `error` event.
        stream = await (client or self._client).post(
            MESSAGES_PATH,
            cast_to=object,
            content=request_body(request, stream=True),
            stream=True,
            stream_cls=anthropic.AsyncStream[object],
        )
        async with stream:
            request_id = stream.response.headers.get("request-id")
            async for event in stream:
                await reply.take(event, relay)
        if not reply.complete:
            # The body ended before message_stop: a broken connection, retried like one.
            raise IncompleteStreamError("the model's stream ended before message_stop")
        usage = reply.usage()
        if log_reply:
            log.info(
                "model reply",
                extra={
                    "request_id": request_id,
                    "stop_reason": reply.stop_reason,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_read_tokens": usage.cache_read_input_tokens,
                    "cache_write_tokens": usage.cache_creation_input_tokens,
                },
            )
        return ModelReply(
            blocks=reply.blocks(),
            stop_reason=str(reply.stop_reason or "end_turn"),
            usage=usage,
            request_id=request_id,
        )

    async def review(self, request: ModelRequest, *, timeout_seconds: float, max_retries: int) -> ModelReply:
        """One complete reply, not streamed (the risk review: a forced tool call, read whole), with its own
        timeout and retries. Raises ModelUnavailableError when there is none."""
        # A copy of the client with the review's own timeout and retries, made once (a copy costs as much CPU
        # as a call).
        options = (timeout_seconds, max_retries)
        client = self._review_clients.get(options)
        if client is None:
            client = self._client.with_options(timeout=timeout_seconds, max_retries=max_retries)
            self._review_clients[options] = client
        # The raw response, read as JSON: the SDK's pydantic Message would cost more CPU than the call itself
        # (it runs beside every reply).
        try:
            response = await client.post(
                MESSAGES_PATH,
                cast_to=httpx2.Response,
                # A review without a forced tool lets the model choose, as before.
                content=request_body(
                    replace(request, tool_choice=request.tool_choice or {"type": "auto"}), stream=False
                ),
            )
            body = json.loads(response.content)
        except anthropic.APIStatusError as exc:
            log.warning("risk review failed: %s", error_type(exc), extra={"status": exc.status_code})
            raise ModelUnavailableError(f"the model API answered {error_type(exc)}") from exc
        except anthropic.APIError as exc:
            log.warning("risk review failed: %s", type(exc).__name__)
            raise ModelUnavailableError(type(exc).__name__) from exc
        except ValueError as exc:
            raise ModelUnavailableError("the review's answer was not JSON") from exc
        return _complete_reply(body, request_id=response.headers.get("request-id"))

    async def look_up_models(self, names: Sequence[str]) -> dict[str, str | None]:
        """Each model's display name, or None where the API knows no such model (`lastresort check`).
        Raises ModelUnavailableError, with the API's reason, when it cannot be asked at all."""
        found: dict[str, str | None] = {}
        for name in names:
            try:
                info = await self._client.models.retrieve(name)
            except anthropic.NotFoundError:
                found[name] = None
            except anthropic.AuthenticationError as exc:
                raise ModelUnavailableError(f"the API key was rejected ({error_type(exc)}: {_message(exc)})") from exc
            except anthropic.APIStatusError as exc:
                raise ModelUnavailableError(f"HTTP {exc.status_code} {error_type(exc)}: {_message(exc)}") from exc
            except anthropic.APIConnectionError as exc:
                raise ModelUnavailableError(f"cannot reach the API: {type(exc).__name__}: {exc}") from exc
            else:
                found[name] = info.display_name
        return found


def _message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else exc.message


def _count(usage: object, name: str) -> int:
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) else 0


def _complete_reply(body: object, *, request_id: str | None) -> ModelReply:
    """A non-streamed Messages API answer as a ModelReply; anything unexpected in it is left for the caller's
    schema check (a review without a well-formed tool call is no answer)."""
    if not isinstance(body, dict):
        raise ModelUnavailableError("the review's answer was not an object")
    content = body.get("content")
    blocks = tuple(b for b in content if isinstance(b, dict)) if isinstance(content, list) else ()
    usage = body.get("usage")
    return ModelReply(
        blocks=blocks,
        stop_reason=str(body.get("stop_reason") or "end_turn"),
        usage=Usage(
            input_tokens=_count(usage, "input_tokens"),
            output_tokens=_count(usage, "output_tokens"),
            cache_read_input_tokens=_count(usage, "cache_read_input_tokens"),
            cache_creation_input_tokens=_count(usage, "cache_creation_input_tokens"),
        ),
        request_id=request_id,
    )


# What the SDK's `messages.create` posts to. We post the body ourselves (`client.post`, the SDK's documented way
# to make a request its typed methods do not shape): `create` walks and copies the whole request (every message of
# the history, on every turn) before serialising it, which cost more CPU than anything else in a model call.
MESSAGES_PATH = "/v1/messages"
# The SDK's own JSON settings for request bodies.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def request_body(request: ModelRequest, *, stream: bool) -> bytes:
    """The Messages API body for `request`, as JSON bytes: what `messages.create` would send."""
    body: dict[str, Any] = {
        "max_tokens": request.max_tokens,
        "messages": request.messages,
        "model": request.model,
        "system": request.system,
        "tools": request.tools,
    }
    if request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    if stream:
        body["stream"] = True
    return _ENCODER.encode(body).encode()


class IncompleteStreamError(Exception):
    """The stream ended without message_stop."""


def _without_none(value: Any) -> Any:
    """`value` without None fields at any depth, as the SDK's `model_dump(exclude_none=True)` gave it."""
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value


class _Reply:
    """The message as its raw stream events build it: content blocks by index, usage, stop reason."""

    def __init__(self) -> None:
        self._blocks: dict[int, JSON] = {}
        self._tool_input: dict[int, list[str]] = {}
        self._text = ""
        self._usage: dict[str, int] = {}
        self.stop_reason: str | None = None
        self.complete = False

    def _count(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            value = usage.get(name)
            if value is not None:
                self._usage[name] = int(value)

    async def take(self, event: object, relay: _Relay) -> None:
        """One event as the API sent it (parsed JSON, as the SDK's stream yields it for `object`)."""
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event["delta"]
            index = event["index"]
            block = self._blocks.get(index)
            delta_type = delta.get("type")
            if delta_type == "text_delta" and block is not None:
                block["text"] += delta["text"]
                self._text += delta["text"]
                await relay.text(self._text)
            elif delta_type == "input_json_delta":
                self._tool_input.setdefault(index, []).append(delta["partial_json"])
            elif delta_type == "thinking_delta" and block is not None:
                block["thinking"] = block.get("thinking", "") + delta["thinking"]
            elif delta_type == "signature_delta" and block is not None:
                block["signature"] = delta["signature"]
        elif kind == "content_block_start":
            block = event["content_block"]
            index = event["index"]
            if block.get("type") == "text":
                text = block.get("text") or ""
                self._blocks[index] = {"type": "text", "text": text}
                if text:
                    self._text += text
                    await relay.text(self._text)
            elif block.get("type") == "tool_use":
                self._blocks[index] = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                await relay.tool_use_started()
            else:
                # Kept as sent (thinking, server tools), without nulls: what the SDK's model dump gave.
                self._blocks[index] = _without_none(block)
        elif kind == "message_start":
            self._count(event["message"].get("usage"))
        elif kind == "message_delta":
            self.stop_reason = event["delta"].get("stop_reason")
            self._count(event.get("usage"))
        elif kind == "message_stop":
            self.complete = True

    def blocks(self) -> tuple[JSON, ...]:
        """Only what the API needs back when the turn is replayed, so the history stays byte-stable."""
        for index, parts in self._tool_input.items():
            raw = "".join(parts)
            if index in self._blocks:
                self._blocks[index]["input"] = json.loads(raw) if raw else {}
        return tuple(self._blocks[i] for i in sorted(self._blocks))

    def usage(self) -> Usage:
        return Usage(
            input_tokens=self._usage.get("input_tokens", 0),
            output_tokens=self._usage.get("output_tokens", 0),
            cache_read_input_tokens=self._usage.get("cache_read_input_tokens", 0),
            cache_creation_input_tokens=self._usage.get("cache_creation_input_tokens", 0),
        )


_CANNED_EVENTS: tuple[JSON, ...] = (
    {
        "type": "message_start",
        "message": {
            "id": "msg_warm_up",
            "type": "message",
            "role": "assistant",
            "model": "warm-up",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_warm_up", "name": "warm_up", "input": {}},
    },
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 2},
    },
    {"type": "message_stop"},
)


def _canned_stream(request: httpx2.Request) -> httpx2.Response:
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in _CANNED_EVENTS)
    return httpx2.Response(
        200, headers={"content-type": "text/event-stream", "request-id": "req_warm_up"}, content=body.encode()
    )
