"""The `ModelClient` port on the anthropic SDK: streaming, retries with a capped total wait, usage logs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import anthropic

from core.domain import JSON
from core.ports import ModelReply, ModelRequest, ModelUnavailableError, StreamListener, Usage

log = logging.getLogger(__name__)

# The SDK retries failed requests itself; an `error` event after the stream started is ours to retry.
MID_STREAM_RETRIES = 2


def _block_to_json(block: Any) -> JSON:
    """Keep only what the API needs back when the turn is replayed, so the history stays byte-stable."""
    if block.type == "text":
        return {"type": "text", "text": block.text}
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    dumped: JSON = block.model_dump(mode="json", exclude_none=True)
    return dumped


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
            api_key=api_key, base_url=base_url, timeout=timeout_seconds, max_retries=max_retries
        )
        self._max_total_wait = max_total_wait_seconds

    async def close(self) -> None:
        await self._client.close()

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

    async def _stream_once(self, request: ModelRequest, relay: _Relay) -> ModelReply:
        text = ""
        async with self._client.messages.stream(
            model=request.model,
            max_tokens=request.max_tokens,
            system=list(request.system),  # type: ignore[arg-type]
            messages=list(request.messages),  # type: ignore[arg-type]
            tools=list(request.tools),  # type: ignore[arg-type]
        ) as stream:
            async for event in stream:
                if event.type == "text":
                    text += event.text
                    await relay.text(text)
                elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                    await relay.tool_use_started()
            final = await stream.get_final_message()
            request_id = stream.request_id
        usage = Usage(
            input_tokens=final.usage.input_tokens,
            output_tokens=final.usage.output_tokens,
            cache_read_input_tokens=final.usage.cache_read_input_tokens or 0,
            cache_creation_input_tokens=final.usage.cache_creation_input_tokens or 0,
        )
        log.info(
            "model reply",
            extra={
                "request_id": request_id,
                "stop_reason": final.stop_reason,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_input_tokens,
                "cache_write_tokens": usage.cache_creation_input_tokens,
            },
        )
        return ModelReply(
            blocks=tuple(_block_to_json(b) for b in final.content),
            stop_reason=str(final.stop_reason or "end_turn"),
            usage=usage,
            request_id=request_id,
        )

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
