"""A local fake of the Anthropic Messages API, faithful on the wire to what the SDK relies on.

It runs its own aiohttp server on its own thread and event loop, so sync tests, async tests (whose loop
is a different one) and subprocesses pointed at it with ``ANTHROPIC_BASE_URL`` can all use it.

    with FakeAnthropic() as fake:
        fake.push(Reply.tool("warn_user", {"behavior": "spam", "redirect_attempts": 2}))
        client = anthropic.Anthropic(api_key="test", base_url=fake.base_url)
        ...
        assert fake.message_requests()[0].json["messages"][-1]["role"] == "user"

Run it by hand for the bot: ``python -m tests.support.fake_anthropic --port 8788`` (see ``main``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Literal, Self

from aiohttp import web

__all__ = [
    "FakeAnthropic",
    "RecordedRequest",
    "Reply",
    "Responder",
    "echo_responder",
    "last_user_text",
    "main",
    "trigger_responder",
]

log = logging.getLogger(__name__)

JSON = dict[str, Any]
Responder = Callable[[JSON], "Reply"]

# The real API rejects a fifth breakpoint with a 400; a client that over-marks must find out here first.
MAX_CACHE_BREAKPOINTS = 4
# The real API looks for an earlier cache entry at every block boundary up to about 20 blocks before each
# breakpoint, which is what makes "move the breakpoint to the newest message each turn" hit the cache.
CACHE_LOOKBACK_BLOCKS = 20
# What GET /v1/models/{id} knows by default: ids and aliases, each with its display name.
KNOWN_MODELS: dict[str, str] = {
    "claude-opus-4-1": "Claude Opus 4.1",
    "claude-opus-4-1-20250805": "Claude Opus 4.1",
    "claude-sonnet-4-5": "Claude Sonnet 4.5",
    "claude-haiku-4-5": "Claude Haiku 4.5",
}

_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_STATUS_ERROR: dict[int, str] = {status: kind for kind, status in _ERROR_STATUS.items()}
_ERROR_MESSAGES: dict[str, str] = {
    "overloaded_error": "Overloaded",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
    "api_error": "Internal server error",
    "timeout_error": "Request timeout",
}


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _block_tokens(block: Mapping[str, Any]) -> int:
    if block.get("type") == "text":
        return max(1, _estimate_tokens(str(block.get("text", ""))))
    if block.get("type") == "tool_use":
        return max(1, _estimate_tokens(str(block.get("name", "")) + _canonical(block.get("input", {}))))
    return max(1, _estimate_tokens(_canonical(block)))


# --------------------------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build it with the class-method constructors, not directly."""

    kind: Literal["message", "error", "stream_error", "disconnect", "slow"]
    content: tuple[JSON, ...] = ()
    stop_reason: str = "end_turn"
    stop_details: JSON | None = None
    status: int = 200
    error_type: str = ""
    error_message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    then: Reply | None = None

    @classmethod
    def text(cls, text: str, *, stop_reason: str = "end_turn") -> Reply:
        # An empty reply is legal on the real API (content: []), so an empty string gives no block at all.
        content = ({"type": "text", "text": text},) if text else ()
        return cls("message", content=content, stop_reason=stop_reason)

    @classmethod
    def tool(cls, name: str, input: Mapping[str, Any], *, text: str | None = None, id: str | None = None) -> Reply:
        """A tool call, optionally preceded by text. Without ``id`` the server assigns ``toolu_fake_N``."""
        return cls.tools([(name, input)], text=text, ids=[id] if id else None)

    @classmethod
    def tools(
        cls,
        calls: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        text: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> Reply:
        blocks: list[JSON] = [{"type": "text", "text": text}] if text else []
        for index, (name, tool_input) in enumerate(calls):
            tool_id = ids[index] if ids and index < len(ids) else ""
            blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": dict(tool_input)})
        return cls("message", content=tuple(blocks), stop_reason="tool_use")

    @classmethod
    def refusal(cls, text: str = "", *, category: str | None = None) -> Reply:
        details: JSON = {"type": "refusal", "category": category, "explanation": None}
        content = ({"type": "text", "text": text},) if text else ()
        return cls("message", content=content, stop_reason="refusal", stop_details=details)

    @classmethod
    def truncated(cls, text: str) -> Reply:
        """A reply cut off by ``max_tokens`` (the fake also cuts replies that exceed the request's limit)."""
        return cls.text(text, stop_reason="max_tokens")

    @classmethod
    def error(
        cls,
        status: int,
        error_type: str | None = None,
        *,
        message: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An HTTP error with Anthropic's error body; ``error_type`` follows the status (529: overloaded)."""
        kind = error_type or _STATUS_ERROR.get(status, "api_error")
        extra = dict(headers or {})
        if retry_after is not None:
            extra["retry-after"] = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        if should_retry is not None:
            # Non-standard, but the SDK obeys it before its status-code rules.
            extra["x-should-retry"] = "true" if should_retry else "false"
        return cls(
            "error",
            status=status,
            error_type=kind,
            error_message=message or _ERROR_MESSAGES.get(kind, kind.replace("_", " ")),
            headers=tuple(extra.items()),
        )

    @classmethod
    def stream_error(
        cls, after_text: str = "partial ", *, error_type: str = "overloaded_error", message: str | None = None
    ) -> Reply:
        """Streamed: HTTP 200, some text, then an SSE ``error`` event. Otherwise the matching HTTP error."""
        content = ({"type": "text", "text": after_text},) if after_text else ()
        return cls(
            "stream_error",
            content=content,
            status=_ERROR_STATUS.get(error_type, 500),
            error_type=error_type,
            error_message=message or _ERROR_MESSAGES.get(error_type, error_type.replace("_", " ")),
        )

    @classmethod
    def disconnect(cls, after_text: str = "partial ") -> Reply:
        """Streamed: HTTP 200, some text, then the connection drops (no error event, no end of stream),
        as when a proxy or the network fails. Otherwise a 500."""
        content = ({"type": "text", "text": after_text},) if after_text else ()
        return cls("disconnect", content=content, status=500, error_type="api_error", error_message="Internal error")

    @classmethod
    def slow(cls, seconds: float, then: Reply | None = None) -> Reply:
        """Wait ``seconds`` before answering; ``then=None`` answers with the responder or the default."""
        return cls("slow", delay=seconds, then=then)

    @classmethod
    def assessment(cls, *, at_risk: bool, categories: Sequence[str] = (), reason: str = "") -> Reply:
        """The risk review's forced ``assess_risk`` call."""
        found = {"at_risk": at_risk, "categories": list(categories), "reason": reason or "fake review"}
        return cls.tool(REVIEW_TOOL, found)

    def with_stop_reason(self, stop_reason: str) -> Reply:
        return dataclasses.replace(self, stop_reason=stop_reason)


REVIEW_TOOL = "assess_risk"


def is_review(request: Mapping[str, Any]) -> bool:
    """A risk review: the request forces the ``assess_risk`` tool. Reviews have their own queue and
    responder, so a test scripting the conversation's replies never has one taken by a review."""
    choice = request.get("tool_choice")
    return isinstance(choice, dict) and choice.get("type") == "tool" and choice.get("name") == REVIEW_TOOL


def clear_review(request: JSON) -> Reply:
    """The default review: nobody at risk."""
    return Reply.assessment(at_risk=False, categories=[], reason="fake review: no signal")


def keyword_review(words: Mapping[str, str]) -> Responder:
    """A review that finds risk when the transcript holds one of ``words`` (word -> category)."""

    def review(request: JSON) -> Reply:
        transcript = json.dumps(request.get("messages"), ensure_ascii=False).casefold()
        found = sorted({category for word, category in words.items() if word.casefold() in transcript})
        return Reply.assessment(at_risk=bool(found), categories=found, reason="fake review: keyword")

    return review


def last_user_text(request: Mapping[str, Any]) -> str:
    """Text of the last message if it is a user turn; tool_result content does not count."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return ""
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return ""
    content = last.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def echo_responder(request: JSON) -> Reply:
    """The default: short, deterministic, and shows which message the fake saw."""
    text = " ".join(last_user_text(request).split())
    if not text:
        return Reply.text("Noted.")
    snippet = text if len(text) <= 60 else text[:57] + "..."
    return Reply.text(f'(fake Claude) You said: "{snippet}"')


def _offers_tool(request: Mapping[str, Any], name: str) -> bool:
    tools = request.get("tools")
    return isinstance(tools, list) and any(isinstance(t, dict) and t.get("name") == name for t in tools)


_TRIGGERS: tuple[tuple[str, str, JSON, str | None], ...] = (
    (
        "!warn",
        "warn_user",
        {"behavior": "repeated abuse", "redirect_attempts": 2},
        "Please stop. This is a formal warning: if it continues, this conversation may end.",
    ),
    (
        "!end",
        "end_conversation",
        {
            "reason": "persistent_abuse",
            "explanation": "The conversation was ended after repeated abuse despite a warning.",
        },
        None,
    ),
    (
        "!bye",
        "end_conversation",
        {"reason": "user_requested", "explanation": "You asked to end this conversation."},
        None,
    ),
)


def trigger_responder(request: JSON) -> Reply:
    """Echo, except that ``!warn``, ``!end`` or ``!bye`` in the last user text produce a tool call."""
    text = last_user_text(request)
    for word, tool, tool_input, preamble in _TRIGGERS:
        if word not in text:
            continue
        if not _offers_tool(request, tool):
            # A real model cannot call a tool it was not given, so neither does the fake.
            return Reply.text(f"(fake Claude) I would call {tool}, but the request did not offer that tool.")
        return Reply.tool(tool, tool_input, text=preamble)
    return echo_responder(request)


# ------------------------------------------------------------------------------------------ recording


@dataclass
class RecordedRequest:
    """One HTTP request as the fake saw it, recorded on arrival (so a test can see a request that is still
    being answered); ``reply``, ``status`` and ``response`` are filled in when the answer goes out and stay
    ``None`` if the client hung up first."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    request_id: str
    received_at: float
    reply: Reply | None = None
    status: int | None = None
    response: JSON | None = None

    @property
    def is_stream(self) -> bool:
        return isinstance(self.json, dict) and self.json.get("stream") is True


# ----------------------------------------------------------------------------------------- validation


class _InvalidRequest(Exception):
    pass


def _content_blocks(content: object) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content) if isinstance(content, list) else []


def _validate_messages_field(body: JSON) -> None:
    messages = body.get("messages")
    if "messages" not in body:
        raise _InvalidRequest("messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise _InvalidRequest("messages: at least one message is required")
    uses_tools = False
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _InvalidRequest(f"messages.{i}: Input should be a valid dictionary")
        role = msg.get("role")
        if role not in ("user", "assistant"):
            # SDK 2.x types also allow role "system" inside messages; the fake does not model that, so it
            # refuses loudly rather than guess (the bot uses the top-level `system`).
            raise _InvalidRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        # Stricter than today's API, which merges consecutive same-role turns: for this bot a repeated
        # role always means history was assembled wrongly, so the fake says so.
        if i == 0 and role != "user":
            raise _InvalidRequest('messages: first message must use the "user" role')
        if i > 0 and role == messages[i - 1].get("role"):
            raise _InvalidRequest(
                f'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        content = msg.get("content")
        if not isinstance(content, (str, list)):
            raise _InvalidRequest(f"messages.{i}.content: Input should be a valid string or list")
        is_final = i == len(messages) - 1
        if not content and not (is_final and role == "assistant"):
            raise _InvalidRequest(
                f"messages.{i}: all messages must have non-empty content except for the optional final "
                "assistant message"
            )
        if isinstance(content, str) and is_final and role == "assistant" and content != content.rstrip():
            raise _InvalidRequest("messages: final assistant content cannot end with trailing whitespace")
        for j, block in enumerate(_content_blocks(content)):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise _InvalidRequest(f"messages.{i}.content.{j}.type: Field required")
            kind = block["type"]
            if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
                raise _InvalidRequest(f"messages.{i}.content.{j}.text: text content blocks must be non-empty")
            if kind == "tool_use":
                uses_tools = True
                if role != "assistant":
                    raise _InvalidRequest(
                        f"messages.{i}.content.{j}: tool_use blocks may only appear in assistant turns"
                    )
                if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                    raise _InvalidRequest(f"messages.{i}.content.{j}: tool_use blocks need an id and a name")
            if kind == "tool_result":
                uses_tools = True
                if role != "user":
                    raise _InvalidRequest(f"messages.{i}.content.{j}: tool_result blocks may only appear in user turns")
                if not isinstance(block.get("tool_use_id"), str):
                    raise _InvalidRequest(f"messages.{i}.content.{j}.tool_use_id: Field required")
    if uses_tools and not body.get("tools"):
        raise _InvalidRequest("Requests which include `tool_use` or `tool_result` blocks must define tools.")
    _validate_tool_pairing(messages)


def _validate_tool_pairing(messages: list[JSON]) -> None:
    for i, msg in enumerate(messages):
        blocks = _content_blocks(msg["content"])
        if msg["role"] == "assistant":
            use_ids = [b["id"] for b in blocks if b["type"] == "tool_use"]
            if not use_ids:
                continue
            following = _content_blocks(messages[i + 1]["content"]) if i + 1 < len(messages) else []
            answered: set[str] = set()
            for block in following:
                if block["type"] != "tool_result":
                    break
                answered.add(block["tool_use_id"])
            missing = [tool_id for tool_id in use_ids if tool_id not in answered]
            if missing:
                raise _InvalidRequest(
                    f"messages.{i + 1 if i + 1 < len(messages) else i}: `tool_use` ids were found without "
                    f"`tool_result` blocks immediately after: {', '.join(missing)}. Each `tool_use` block "
                    "must have a corresponding `tool_result` block in the next message."
                )
        else:
            previous = _content_blocks(messages[i - 1]["content"]) if i > 0 else []
            offered = {b["id"] for b in previous if b["type"] == "tool_use"}
            for j, block in enumerate(blocks):
                if block["type"] == "tool_result" and block["tool_use_id"] not in offered:
                    raise _InvalidRequest(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block['tool_use_id']}. Each `tool_result` block must have a corresponding "
                        "`tool_use` block in the previous message."
                    )


def _validate_prompt(body: JSON, *, needs_max_tokens: bool) -> None:
    model = body.get("model")
    if "model" not in body:
        raise _InvalidRequest("model: Field required")
    if not isinstance(model, str) or not model:
        raise _InvalidRequest("model: Input should be a valid string")
    if needs_max_tokens:
        if "max_tokens" not in body:
            raise _InvalidRequest("max_tokens: Field required")
        max_tokens = body["max_tokens"]
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _InvalidRequest("max_tokens: Input should be greater than or equal to 1")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise _InvalidRequest("stream: Input should be a valid boolean")
    system = body.get("system")
    system_ok = system is None or isinstance(system, str)
    if isinstance(system, list):
        system_ok = all(
            isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in system
        )
    if not system_ok:
        raise _InvalidRequest("system: Input should be a valid string or a list of text blocks")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _InvalidRequest("tools: Input should be a valid list")
        names: set[str] = set()
        for k, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise _InvalidRequest(f"tools.{k}.name: Field required")
            if tool.get("type") in (None, "custom") and not isinstance(tool.get("input_schema"), dict):
                raise _InvalidRequest(f"tools.{k}.custom.input_schema: Field required")
            if tool["name"] in names:
                raise _InvalidRequest("tools: Tool names must be unique.")
            names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            raise _InvalidRequest("tool_choice: Input tag does not match any of the expected tags")
        offered = {t.get("name") for t in tools or [] if isinstance(t, dict)}
        if choice["type"] == "tool" and choice.get("name") not in offered:
            raise _InvalidRequest(f"tool_choice: tool {choice.get('name')!r} is not among the tools")
    _validate_messages_field(body)
    breakpoints = sum(1 for block in _prompt_blocks(body) if block.cache_ttl is not None)
    if breakpoints > MAX_CACHE_BREAKPOINTS:
        raise _InvalidRequest(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {breakpoints}."
        )


# --------------------------------------------------------------------------------------- prompt cache


@dataclass(frozen=True)
class _PromptBlock:
    key: str
    tokens: int
    cache_ttl: str | None


def _cache_ttl(block: Mapping[str, Any]) -> str | None:
    marker = block.get("cache_control")
    if not isinstance(marker, dict):
        return None
    if marker.get("type") != "ephemeral":
        raise _InvalidRequest("cache_control.type: Input should be 'ephemeral'")
    ttl = marker.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise _InvalidRequest("cache_control.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _prompt_block(section: str, block: Mapping[str, Any]) -> _PromptBlock:
    # The marker is not part of the cached content: moving a breakpoint must not change earlier keys.
    bare = {k: v for k, v in block.items() if k != "cache_control"}
    text = _canonical(bare)
    return _PromptBlock(key=f"{section}\n{text}", tokens=_estimate_tokens(text), cache_ttl=_cache_ttl(block))


def _prompt_blocks(body: Mapping[str, Any]) -> list[_PromptBlock]:
    """The request in cache order: tools, then system, then messages; one entry per content block."""
    blocks: list[_PromptBlock] = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            blocks.append(_prompt_block("tools", tool))
    system = body.get("system")
    if isinstance(system, str) and system:
        blocks.append(_prompt_block("system", {"type": "text", "text": system}))
    elif isinstance(system, list):
        blocks.extend(_prompt_block("system", b) for b in system if isinstance(b, dict))
    for i, msg in enumerate(body.get("messages") or []):
        if isinstance(msg, dict):
            for block in _content_blocks(msg.get("content")):
                if isinstance(block, dict):
                    blocks.append(_prompt_block(f"messages.{i}.{msg.get('role')}", block))
    top = body.get("cache_control")
    if isinstance(top, dict) and blocks and blocks[-1].cache_ttl is None:
        # Top-level cache_control marks the last block and uses up one of the four breakpoints.
        blocks[-1] = dataclasses.replace(blocks[-1], cache_ttl=_cache_ttl({"cache_control": top}))
    return blocks


@dataclass(frozen=True)
class _Usage:
    input_tokens: int
    cache_read: int
    cache_creation: int
    creation_5m: int
    creation_1h: int

    def as_json(self, output_tokens: int) -> JSON:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.creation_5m,
                "ephemeral_1h_input_tokens": self.creation_1h,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }


def _prefix_digests(model: str, blocks: Sequence[_PromptBlock]) -> list[str]:
    running = hashlib.sha256(model.encode())
    digests: list[str] = []
    for block in blocks:
        data = block.key.encode()
        running.update(len(data).to_bytes(8, "big") + data)
        digests.append(running.hexdigest())
    return digests


# ----------------------------------------------------------------------------------------- the server


class FakeAnthropic:
    """The fake server. Every public method is safe to call from any thread."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._requested_port = port
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: deque[Reply] = deque()
        self._review_queue: deque[Reply] = deque()
        self._review_responder: Responder = clear_review
        self._responder: Responder | None = None
        self._default_responder: Responder = echo_responder
        self._requests: list[RecordedRequest] = []
        # Never expires and ignores the real minimum cacheable length (1,024-4,096 tokens by model), so
        # that small test prompts still show reads and writes.
        self._cache: set[str] = set()
        self._latency = 0.0
        self._chunk_delay = 0.0
        self._counters: dict[str, int] = {"req": 0, "msg": 0, "toolu": 0}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._port: int | None = None
        self._startup_error: BaseException | None = None
        # GET /v1/models/{id} answers these (id or alias -> display name); keys here get 401.
        self._models: dict[str, str] = dict(KNOWN_MODELS)
        self._rejected_keys: set[str] = set()

    # ---- lifecycle

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("FakeAnthropic is already started")
            ready = threading.Event()
            self._startup_error = None
            self._thread = threading.Thread(target=self._run, args=(ready,), name="fake-anthropic", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("FakeAnthropic did not start within 10 s")
        if self._startup_error is not None:
            self._thread.join(timeout=5)
            with self._lock:
                self._thread = None
            raise RuntimeError("FakeAnthropic failed to start") from self._startup_error

    def stop(self) -> None:
        with self._lock:
            thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        with self._lock:
            self._thread = None
            self._loop = None
            self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        with self._lock:
            if self._port is None:
                raise RuntimeError("FakeAnthropic is not running")
            return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # ---- scripting

    def reject_key(self, api_key: str) -> None:
        """Answer every request made with this key 401 authentication_error, as for a revoked key."""
        with self._lock:
            self._rejected_keys.add(api_key)

    def set_models(self, models: Mapping[str, str]) -> None:
        """The models GET /v1/models/{id} knows (id -> display name); others are 404 not_found_error."""
        with self._lock:
            self._models = dict(models)

    def push(self, *replies: Reply) -> None:
        """Queue replies for the next /v1/messages requests, first in first out."""
        with self._lock:
            self._queue.extend(replies)

    def push_review(self, *replies: Reply) -> None:
        """Queue answers for the next risk reviews (requests that force ``assess_risk``)."""
        with self._lock:
            self._review_queue.extend(replies)

    def set_review_responder(self, responder: Responder | None) -> None:
        """Answer reviews from the request when their queue is empty; ``None``: nobody at risk."""
        with self._lock:
            self._review_responder = responder or clear_review

    def review_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if r.path == "/v1/messages" and is_review(r.json)]

    def wait_for_reviews(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = [r for r in self._requests if r.path == "/v1/messages" and is_review(r.json)]
                if len(found) >= n:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {n} risk reviews within {timeout} s, got {len(found)}")
                self._arrived.wait(remaining)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def set_responder(self, responder: Responder | None) -> None:
        """Answer from the request when the queue is empty; ``None`` restores the echo default."""
        with self._lock:
            self._responder = responder

    def set_default_responder(self, responder: Responder) -> None:
        with self._lock:
            self._default_responder = responder

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = max(0.0, seconds)

    @property
    def chunk_delay(self) -> float:
        """Pause between SSE events, to look like a model producing tokens."""
        with self._lock:
            return self._chunk_delay

    @chunk_delay.setter
    def chunk_delay(self, seconds: float) -> None:
        with self._lock:
            self._chunk_delay = max(0.0, seconds)

    # ---- inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def message_requests(self) -> list[RecordedRequest]:
        """The conversation's own requests (risk reviews are in ``review_requests``)."""
        with self._lock:
            return [r for r in self._requests if r.path == "/v1/messages" and not is_review(r.json)]

    def clear(self) -> None:
        """Forget recorded requests (the queue, responder and cache stay)."""
        with self._lock:
            self._requests.clear()

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._review_queue.clear()
            self._review_responder = clear_review
            self._cache.clear()
            self._responder = None
            self._latency = 0.0
            self._chunk_delay = 0.0

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` /v1/messages requests have arrived (not necessarily been answered)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = [r for r in self._requests if r.path == "/v1/messages" and not is_review(r.json)]
                if len(found) >= n:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {n} /v1/messages requests within {timeout} s, got {len(found)}")
                self._arrived.wait(remaining)

    async def wait_for_requests_async(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:  # noqa: ASYNC109
        """The same, without blocking the caller's event loop (where the client under test runs)."""
        return await asyncio.to_thread(self.wait_for_requests, n, timeout)

    # ---- server thread

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        with self._lock:
            self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._startup_error = exc
            ready.set()
            loop.close()
            with self._lock:
                self._loop = None
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that times out and hangs up ends a slow handler at once.
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._requested_port))
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        await web.SockSite(runner, sock).start()
        with self._lock:
            self._runner = runner
            self._port = int(sock.getsockname()[1])

    async def _shutdown(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _sleep(self, seconds: float) -> None:
        # Wakes early on stop() so a long scripted delay never holds up teardown.
        if seconds <= 0 or self._stopping is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._counters[prefix] += 1
            return f"{prefix}_fake_{self._counters[prefix]:04d}"

    # ---- HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request_id = self._next_id("req")
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
            parse_failed = True
        else:
            parse_failed = False
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            json=body,
            request_id=request_id,
            received_at=time.time(),
        )
        with self._arrived:
            self._requests.append(record)
            self._arrived.notify_all()

        try:
            response = await self._dispatch(request, record, body, parse_failed)
        except Exception as exc:
            log.exception("fake anthropic: handler failed")
            response = self._error_response(record, 500, "api_error", f"fake handler failed: {exc!r}")
        log.info("%s %s -> %s (%s)", request.method, request.path, record.status, request_id)
        return response

    async def _dispatch(
        self, request: web.Request, record: RecordedRequest, body: Any, parse_failed: bool
    ) -> web.StreamResponse:
        headers = record.headers
        bearer = headers.get("authorization", "")
        key = headers.get("x-api-key") or (bearer[7:].strip() if bearer.lower().startswith("bearer ") else None)
        with self._lock:
            rejected = key in self._rejected_keys
        if rejected:
            return self._error_response(record, 401, "authentication_error", "invalid x-api-key")
        if request.path.startswith("/v1/models/") and request.method == "GET":
            return self._model_info(record, request.path.removeprefix("/v1/models/"))
        if request.path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return self._error_response(record, 404, "not_found_error", f"Not found: {request.path}")
        if request.method != "POST":
            return self._error_response(record, 405, "invalid_request_error", f"Method {request.method} not allowed")
        headers = record.headers
        bearer = headers.get("authorization", "")
        if not headers.get("x-api-key") and not (bearer.lower().startswith("bearer ") and bearer[7:].strip()):
            return self._error_response(
                record, 401, "authentication_error", "x-api-key or Authorization: Bearer header is required"
            )
        if not headers.get("anthropic-version"):
            return self._error_response(record, 400, "invalid_request_error", "anthropic-version: header is required")
        if parse_failed or not isinstance(body, dict):
            return self._error_response(record, 400, "invalid_request_error", "Request body must be a JSON object")
        is_count = request.path.endswith("/count_tokens")
        try:
            _validate_prompt(body, needs_max_tokens=not is_count)
        except _InvalidRequest as exc:
            return self._error_response(record, 400, "invalid_request_error", str(exc))

        if is_count:
            total = sum(block.tokens for block in _prompt_blocks(body))
            return self._json_response(record, 200, {"input_tokens": total})
        return await self._answer_message(request, record, body)

    def _model_info(self, record: RecordedRequest, model_id: str) -> web.Response:
        if not record.headers.get("x-api-key") and not record.headers.get("authorization"):
            return self._error_response(record, 401, "authentication_error", "x-api-key header is required")
        with self._lock:
            display_name = self._models.get(model_id)
        if display_name is None:
            return self._error_response(record, 404, "not_found_error", f"model: {model_id}")
        payload = {"type": "model", "id": model_id, "display_name": display_name, "created_at": "2025-08-05T00:00:00Z"}
        return self._json_response(record, 200, payload)

    async def _answer_message(self, request: web.Request, record: RecordedRequest, body: JSON) -> web.StreamResponse:
        reply, delay = self._choose_reply(body)
        await self._sleep(delay)
        stream = body.get("stream") is True

        if reply.kind == "error" or (reply.kind in ("stream_error", "disconnect") and not stream):
            return self._error_response(
                record,
                reply.status,
                reply.error_type,
                reply.error_message,
                reply=reply,
                extra_headers=reply.headers,
            )

        reply = self._materialize(reply, body["max_tokens"])
        usage = self._account_cache(body)
        message = self._message_json(body, reply, usage)
        if not stream:
            return self._json_response(record, 200, message, reply=reply)
        return await self._stream_response(request, record, reply, message)

    def _choose_reply(self, body: JSON) -> tuple[Reply, float]:
        with self._lock:
            if is_review(body):
                queued = self._review_queue.popleft() if self._review_queue else None
                responders = [self._review_responder]
            else:
                queued = self._queue.popleft() if self._queue else None
                responders = [r for r in (self._responder, self._default_responder) if r is not None]
            delay = self._latency
        # Called outside the lock: a responder may well inspect the fake. A responder's own
        # Reply.slow(then=None) passes on to the next one down, so it cannot recurse forever.
        responders.append(clear_review if is_review(body) else echo_responder)
        position = 0
        if queued is not None:
            reply = queued
        else:
            reply, position = responders[0](body), 1
        while reply.kind == "slow":
            delay += reply.delay
            if reply.then is not None:
                reply = reply.then
            else:
                reply = responders[min(position, len(responders) - 1)](body)
                position += 1
        return reply, delay

    def _materialize(self, reply: Reply, max_tokens: int) -> Reply:
        """Assign tool ids, and cut the reply at ``max_tokens`` the way the real model is cut off."""
        blocks: list[JSON] = []
        budget = max_tokens
        stop_reason = reply.stop_reason
        for original in reply.content:
            block = dict(original)
            if block.get("type") == "tool_use" and not block.get("id"):
                block["id"] = self._next_id("toolu")
            cost = _block_tokens(block)
            if cost > budget:
                if block.get("type") == "text" and budget > 0:
                    block["text"] = str(block["text"])[: budget * 4]
                    blocks.append(block)
                stop_reason = "max_tokens"
                break
            budget -= cost
            blocks.append(block)
        return dataclasses.replace(reply, content=tuple(blocks), stop_reason=stop_reason)

    def _account_cache(self, body: JSON) -> _Usage:
        blocks = _prompt_blocks(body)
        digests = _prefix_digests(str(body["model"]), blocks)
        cumulative = [0]
        for block in blocks:
            cumulative.append(cumulative[-1] + block.tokens)
        breakpoints = [i + 1 for i, block in enumerate(blocks) if block.cache_ttl is not None]
        if not breakpoints:
            return _Usage(cumulative[-1], 0, 0, 0, 0)
        hit = 0
        with self._lock:
            for end in breakpoints:
                for k in range(end, max(0, end - CACHE_LOOKBACK_BLOCKS), -1):
                    if digests[k - 1] in self._cache:
                        hit = max(hit, k)
                        break
            self._cache.update(digests[end - 1] for end in breakpoints)
        last = breakpoints[-1]
        by_ttl = {"5m": 0, "1h": 0}
        start = hit
        for end in breakpoints:
            if end > start:
                by_ttl[blocks[end - 1].cache_ttl or "5m"] += cumulative[end] - cumulative[start]
                start = end
        return _Usage(
            input_tokens=cumulative[-1] - cumulative[last],
            cache_read=cumulative[hit],
            cache_creation=cumulative[last] - cumulative[hit],
            creation_5m=by_ttl["5m"],
            creation_1h=by_ttl["1h"],
        )

    def _message_json(self, body: JSON, reply: Reply, usage: _Usage) -> JSON:
        output_tokens = max(1, sum(_block_tokens(b) for b in reply.content))
        return {
            "id": self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [dict(b) for b in reply.content],
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "stop_details": reply.stop_details,
            "usage": usage.as_json(output_tokens),
        }

    def _json_response(
        self,
        record: RecordedRequest,
        status: int,
        payload: JSON,
        *,
        reply: Reply | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> web.Response:
        with self._lock:
            record.status = status
            record.response = payload
            if reply is not None:
                record.reply = reply
        headers = {"Content-Type": "application/json", "request-id": record.request_id}
        headers.update(extra_headers)
        return web.Response(status=status, body=json.dumps(payload).encode(), headers=headers)

    def _error_response(
        self,
        record: RecordedRequest,
        status: int,
        error_type: str,
        message: str,
        *,
        reply: Reply | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> web.Response:
        payload: JSON = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": record.request_id,
        }
        return self._json_response(record, status, payload, reply=reply, extra_headers=extra_headers)

    async def _stream_response(
        self, request: web.Request, record: RecordedRequest, reply: Reply, message: JSON
    ) -> web.StreamResponse:
        with self._lock:
            record.status = 200
            record.response = message
            record.reply = reply
            chunk_delay = self._chunk_delay
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "request-id": record.request_id,
            },
        )
        await response.prepare(request)
        try:
            for event, data in _sse_events(reply, message):
                await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
                await self._sleep(chunk_delay)
            if reply.kind == "disconnect":
                # Drop the socket mid-body: the client sees a truncated chunked response.
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write_eof()
        except ConnectionError:
            log.info("fake anthropic: client went away mid-stream (%s)", record.request_id)
        return response


def _text_chunks(text: str) -> list[str]:
    # A few deltas per block, never splitting so finely that long benchmark replies flood the socket.
    size = max(4, math.ceil(len(text) / 8))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _sse_events(reply: Reply, message: JSON) -> Iterator[tuple[str, JSON]]:
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "stop_details": None}
    start["usage"] = {**message["usage"], "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    pinged = False
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opening: JSON = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            partial = json.dumps(block["input"])
            third = max(1, math.ceil(len(partial) / 3))
            # The real API opens with an empty partial_json; consumers must cope with it.
            pieces = ["", *(partial[i : i + third] for i in range(0, len(partial), third))]
            deltas: list[JSON] = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        elif block["type"] == "text":
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": t} for t in _text_chunks(block["text"])]
        else:
            opening, deltas = block, []
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}
        if not pinged:
            pinged = True
            yield "ping", {"type": "ping"}
        for delta in deltas:
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        if reply.kind in ("stream_error", "disconnect"):
            break
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    if not pinged:
        yield "ping", {"type": "ping"}
    if reply.kind == "stream_error":
        error = {"type": reply.error_type, "message": reply.error_message}
        yield "error", {"type": "error", "error": error}
        return
    if reply.kind == "disconnect":
        return
    usage = message["usage"]
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message["stop_reason"],
                "stop_sequence": None,
                "stop_details": message["stop_details"],
            },
            # Cumulative totals, as the real API now sends them; the SDK overwrites rather than adds.
            "usage": {
                "input_tokens": usage["input_tokens"],
                "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                "cache_read_input_tokens": usage["cache_read_input_tokens"],
                "output_tokens": usage["output_tokens"],
            },
        },
    )
    yield "message_stop", {"type": "message_stop"}


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fake_anthropic",
        description="Serve a fake Anthropic Messages API. !warn, !end or !bye in a message give tool calls.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8788, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before every reply")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed events")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    fake = FakeAnthropic(host=args.host, port=args.port)
    fake.set_default_responder(trigger_responder)
    fake.latency = args.latency
    fake.chunk_delay = args.chunk_delay
    fake.start()
    try:
        print(f"fake anthropic listening on {fake.base_url}", flush=True)
        while not done.wait(timeout=1.0):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
