"""The fake Anthropic API, driven by the real SDK so the fake stays honest about the wire format."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types import CacheControlEphemeralParam, MessageParam, TextBlockParam, ToolParam

from tests.support.fake_anthropic import FakeAnthropic, Reply, echo_responder, trigger_responder
from tests.support.paths import REPO as REPO_ROOT

MODEL = "claude-test"

WARN_TOOL: ToolParam = {
    "name": "warn_user",
    "description": "Warn the user formally.",
    "input_schema": {
        "type": "object",
        "properties": {"behavior": {"type": "string"}, "redirect_attempts": {"type": "integer"}},
        "required": ["behavior", "redirect_attempts"],
    },
}
END_TOOL: ToolParam = {
    "name": "end_conversation",
    "description": "End the conversation.",
    "input_schema": {
        "type": "object",
        "properties": {"reason": {"type": "string"}, "explanation": {"type": "string"}},
        "required": ["reason", "explanation"],
    },
}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(api_key="test", base_url=fake.base_url, max_retries=0) as sdk:
        yield sdk


def user(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


def raw_post(url: str, body: object, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Plain HTTP, for what the SDK will not send or hides (no auth, raw SSE bytes)."""
    all_headers = {"content-type": "application/json", "anthropic-version": "2023-06-01", **(headers or {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=all_headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk.strip():
            continue
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        assert set(lines) == {"event", "data"}, chunk
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# ------------------------------------------------------------------------------------------ replies


async def test_json_reply_parses(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.push(Reply.text("hello"))

    message = await client.messages.create(model=MODEL, max_tokens=100, messages=user("hi"))

    assert message.content[0].type == "text"
    assert message.content[0].text == "hello"
    assert message.stop_reason == "end_turn"
    assert message.model == MODEL
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    assert message._request_id == "req_fake_0001"
    [seen] = fake.message_requests()
    assert seen.json["messages"] == user("hi")
    assert seen.status == 200
    assert seen.reply == Reply.text("hello")
    # SDK 2.x sends the API key as a bearer token, not x-api-key.
    assert seen.headers["authorization"] == "Bearer test"
    assert "x-api-key" not in seen.headers
    assert seen.headers["anthropic-version"]


def test_sync_client_and_default_echo(fake: FakeAnthropic) -> None:
    with anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=0) as sdk:
        message = sdk.messages.create(model=MODEL, max_tokens=100, messages=user("what is 2+2?"))

    assert message.content[0].type == "text"
    assert "what is 2+2?" in message.content[0].text


def test_x_api_key_is_accepted_and_request_id_is_always_set(fake: FakeAnthropic) -> None:
    body = {"model": MODEL, "max_tokens": 50, "messages": user("hi")}

    ok_status, ok_headers, _ = raw_post(f"{fake.base_url}/v1/messages", body, {"x-api-key": "test"})
    bad_status, bad_headers, _ = raw_post(f"{fake.base_url}/v1/messages", {"model": MODEL}, {"x-api-key": "test"})

    assert ok_status == 200
    assert ok_headers["request-id"].startswith("req_fake_")
    assert ok_headers["content-type"] == "application/json"
    assert bad_status == 400
    assert bad_headers["request-id"].startswith("req_fake_")


async def test_stream_text_yields_text_and_final_usage(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    text = "Streaming works one small piece at a time."
    fake.push(Reply.text(text))

    async with client.messages.stream(model=MODEL, max_tokens=100, messages=user("stream please")) as stream:
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()

    assert len(pieces) > 1
    assert "".join(pieces) == text
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0
    [seen] = fake.message_requests()
    assert seen.is_stream
    assert seen.response is not None
    assert final.usage.output_tokens == seen.response["usage"]["output_tokens"]


async def test_streamed_tool_use_arrives_with_parsed_input(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    tool_input = {"behavior": "insults", "redirect_attempts": 2}
    fake.push(Reply.tool("warn_user", tool_input, text="Let's keep this civil."))

    async with client.messages.stream(
        model=MODEL, max_tokens=200, messages=user("you are useless"), tools=[WARN_TOOL]
    ) as stream:
        final = await stream.get_final_message()

    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["text", "tool_use"]
    call = final.content[1]
    assert call.type == "tool_use"
    assert call.name == "warn_user"
    assert call.input == tool_input
    assert call.id.startswith("toolu_fake_")


def test_raw_sse_follows_the_real_event_order(fake: FakeAnthropic) -> None:
    fake.push(Reply.tool("warn_user", {"behavior": "spam", "redirect_attempts": 1}, text="Careful."))
    body = {"model": MODEL, "max_tokens": 100, "messages": user("x"), "tools": [WARN_TOOL], "stream": True}

    status, headers, raw = raw_post(f"{fake.base_url}/v1/messages", body, {"x-api-key": "test"})

    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = parse_sse(raw)
    names = [name for name, _ in events]
    for name, data in events:
        assert data["type"] == name
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names
    start = events[0][1]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert {"id", "type", "role", "model", "usage"} <= start.keys()
    blocks = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert blocks[0] == {"type": "text", "text": ""}
    assert blocks[1]["type"] == "tool_use"
    assert blocks[1]["input"] == {}
    without_ping = [n for n in names if n != "ping"]
    text_end = without_ping.index("content_block_stop")
    assert without_ping[1:text_end] == ["content_block_start"] + ["content_block_delta"] * (text_end - 2)
    json_deltas = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == 1]
    assert all(d["type"] == "input_json_delta" for d in json_deltas)
    assert json.loads("".join(d["partial_json"] for d in json_deltas)) == {
        "behavior": "spam",
        "redirect_attempts": 1,
    }
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] > 0


async def test_refusal_and_max_tokens(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.push(Reply.refusal(text="I can't"), Reply.text("word " * 100))

    refused = await client.messages.create(model=MODEL, max_tokens=100, messages=user("bad"))
    cut = await client.messages.create(model=MODEL, max_tokens=10, messages=user("long"))

    assert refused.stop_reason == "refusal"
    assert refused.stop_details is not None
    assert refused.stop_details.type == "refusal"
    assert cut.stop_reason == "max_tokens"
    assert cut.content[0].type == "text"
    assert len(cut.content[0].text) == 40
    assert cut.usage.output_tokens == 10


# ------------------------------------------------------------------------------------ errors, retries


async def test_sdk_retries_a_529_then_succeeds(fake: FakeAnthropic) -> None:
    fake.push(Reply.error(529), Reply.text("second time lucky"))

    async with anthropic.AsyncAnthropic(api_key="test", base_url=fake.base_url, max_retries=2) as sdk:
        message = await sdk.messages.create(model=MODEL, max_tokens=100, messages=user("hi"))

    assert message.content[0].type == "text"
    assert message.content[0].text == "second time lucky"
    first, second = fake.message_requests()
    assert first.status == 529
    assert first.response == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": first.request_id,
    }
    assert first.json == second.json
    assert [first.headers["x-stainless-retry-count"], second.headers["x-stainless-retry-count"]] == ["0", "1"]


async def test_529_without_retries_is_an_overloaded_error(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.push(Reply.error(529))

    with pytest.raises(anthropic.OverloadedError) as caught:
        await client.messages.create(model=MODEL, max_tokens=100, messages=user("hi"))

    assert caught.value.status_code == 529
    assert caught.value.type == "overloaded_error"
    assert caught.value.request_id == "req_fake_0001"


async def test_429_retry_after_is_honoured(fake: FakeAnthropic) -> None:
    # Without the header the SDK's first backoff is at most 0.5 s, so >= 1 s proves the header was used.
    fake.push(Reply.error(429, retry_after=1), Reply.text("ok"))

    async with anthropic.AsyncAnthropic(api_key="test", base_url=fake.base_url, max_retries=1) as sdk:
        started = time.monotonic()
        message = await sdk.messages.create(model=MODEL, max_tokens=100, messages=user("hi"))
        elapsed = time.monotonic() - started

    assert message.content[0].type == "text"
    assert elapsed >= 1.0
    assert len(fake.message_requests()) == 2


async def test_429_carries_retry_after_header(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.push(Reply.error(429, retry_after=30))

    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.create(model=MODEL, max_tokens=100, messages=user("hi"))

    assert caught.value.response.headers["retry-after"] == "30"
    assert caught.value.type == "rate_limit_error"


async def test_mid_stream_error_raises_and_is_not_retried(fake: FakeAnthropic) -> None:
    fake.push(Reply.stream_error(after_text="partial "))
    received: list[str] = []

    async with anthropic.AsyncAnthropic(api_key="test", base_url=fake.base_url, max_retries=2) as sdk:
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with sdk.messages.stream(model=MODEL, max_tokens=100, messages=user("hi")) as stream:
                async for piece in stream.text_stream:
                    received.append(piece)

    assert "".join(received) == "partial "
    assert caught.value.type == "overloaded_error"
    # The HTTP status was already 200 when the error event arrived, and the SDK reports that status.
    assert caught.value.status_code == 200
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert len(fake.message_requests()) == 1


async def test_stream_error_on_a_plain_request_is_a_529(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.push(Reply.stream_error())

    with pytest.raises(anthropic.OverloadedError):
        await client.messages.create(model=MODEL, max_tokens=100, messages=user("hi"))


async def test_missing_auth_is_401(fake: FakeAnthropic) -> None:
    # The SDK refuses to send without credentials unless the header is explicitly omitted.
    async with anthropic.AsyncAnthropic(
        api_key="unused",
        base_url=fake.base_url,
        max_retries=0,
        # Omit is accepted at run time although default_headers is typed Mapping[str, str].
        default_headers={"Authorization": anthropic.omit},  # type: ignore[dict-item]
    ) as sdk:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await sdk.messages.create(model=MODEL, max_tokens=100, messages=user("hi"))

    assert caught.value.status_code == 401
    assert caught.value.type == "authentication_error"
    [seen] = fake.requests
    assert "authorization" not in seen.headers
    assert seen.status == 401


async def test_slow_reply_lets_the_client_time_out(fake: FakeAnthropic) -> None:
    fake.push(Reply.slow(30))

    async with anthropic.AsyncAnthropic(api_key="test", base_url=fake.base_url, max_retries=0, timeout=0.3) as sdk:
        with pytest.raises(anthropic.APITimeoutError):
            await sdk.messages.create(model=MODEL, max_tokens=100, messages=user("hi"))

    assert len(await fake.wait_for_requests_async(1)) == 1


def test_stop_does_not_wait_for_a_slow_reply() -> None:
    fake = FakeAnthropic()
    fake.start()
    fake.push(Reply.slow(60, then=Reply.text("late")))
    sdk = anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=0, timeout=30)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(sdk.messages.create(model=MODEL, max_tokens=100, messages=user("hi")))
        except anthropic.APIError as err:
            outcome.append(err)

    worker = threading.Thread(target=call)
    worker.start()
    fake.wait_for_requests(1)
    started = time.monotonic()
    fake.stop()
    worker.join(timeout=10)

    assert time.monotonic() - started < 5
    assert not worker.is_alive()
    assert len(outcome) == 1


# -------------------------------------------------------------------------------------- validation


async def test_unanswered_tool_use_is_400_and_keeps_the_queue(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.push(Reply.text("never sent"))
    messages: list[MessageParam] = [
        {"role": "user", "content": "stop it"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "warn_user", "input": {}}],
        },
        {"role": "user", "content": "whatever"},
    ]

    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=100, messages=messages, tools=[WARN_TOOL])

    assert caught.value.type == "invalid_request_error"
    assert "toolu_1" in str(caught.value.api_message)
    [seen] = fake.message_requests()
    assert seen.status == 400
    assert seen.json["messages"] == messages
    assert fake.pending() == 1


async def test_answered_tool_use_is_accepted(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    messages: list[MessageParam] = [
        {"role": "user", "content": "stop it"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Warning."},
                {"type": "tool_use", "id": "toolu_1", "name": "warn_user", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "warned"},
                {"type": "text", "text": "sorry"},
            ],
        },
    ]

    message = await client.messages.create(model=MODEL, max_tokens=100, messages=messages, tools=[WARN_TOOL])

    assert message.content[0].type == "text"
    assert "sorry" in message.content[0].text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"max_tokens": 10, "messages": user("x")}, "model"),
        ({"model": MODEL, "messages": user("x")}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 10}, "messages"),
        ({"model": MODEL, "max_tokens": 10, "messages": [{"role": "assistant", "content": "x"}]}, "first"),
        (
            {"model": MODEL, "max_tokens": 10, "messages": [*user("a"), *user("b")]},
            "alternate",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 10,
                "tools": [WARN_TOOL],
                "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9"}]}],
            },
            "toolu_9",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 10,
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}],
                    },
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
                ],
            },
            "must define tools",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": str(i), "cache_control": {"type": "ephemeral"}} for i in range(5)
                        ],
                    }
                ],
            },
            "maximum of 4",
        ),
    ],
)
def test_invalid_requests_get_the_real_error_shape(fake: FakeAnthropic, body: dict[str, Any], fragment: str) -> None:
    status, _, raw = raw_post(f"{fake.base_url}/v1/messages", body, {"authorization": "Bearer test"})

    assert status == 400
    error = json.loads(raw)
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert fragment in error["error"]["message"]
    assert fake.requests[0].json == body


# ------------------------------------------------------------------------------------------ caching


async def test_shared_cached_prefix_is_read_on_the_second_request(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    system: list[TextBlockParam] = [
        {"type": "text", "text": "You are a careful assistant. " * 20, "cache_control": {"type": "ephemeral"}}
    ]

    first = await client.messages.create(model=MODEL, max_tokens=100, system=system, messages=user("one"))
    second = await client.messages.create(model=MODEL, max_tokens=100, system=system, messages=user("two"))

    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation_input_tokens is not None
    assert first.usage.cache_creation_input_tokens > 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == first.usage.input_tokens


async def test_moving_breakpoint_reads_the_previous_turn(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    marker: CacheControlEphemeralParam = {"type": "ephemeral"}
    turn1: list[MessageParam] = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "first question " * 10, "cache_control": marker}],
        }
    ]
    turn2: list[MessageParam] = [
        {"role": "user", "content": [{"type": "text", "text": "first question " * 10}]},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "second question", "cache_control": marker}]},
    ]

    first = await client.messages.create(model=MODEL, max_tokens=100, messages=turn1)
    second = await client.messages.create(model=MODEL, max_tokens=100, messages=turn2)
    total = (await client.messages.count_tokens(model=MODEL, messages=turn2)).input_tokens

    read, created = second.usage.cache_read_input_tokens, second.usage.cache_creation_input_tokens
    assert read is not None
    assert created is not None
    assert read == first.usage.cache_creation_input_tokens
    assert created > 0
    assert second.usage.input_tokens == 0
    assert read + created == total


async def test_count_tokens(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.push(Reply.text("still queued"))

    counted = await client.messages.count_tokens(model=MODEL, messages=user("x" * 400), tools=[WARN_TOOL])

    assert counted.input_tokens > 100
    assert fake.requests[0].path == "/v1/messages/count_tokens"
    assert fake.message_requests() == []
    assert fake.pending() == 1


# ------------------------------------------------------------------------------ responders, latency


async def test_responder_latency_and_concurrency(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.set_responder(lambda request: Reply.text(f"n={len(request['messages'])}"))
    fake.latency = 0.2

    started = time.monotonic()
    replies = await asyncio.gather(
        *(client.messages.create(model=MODEL, max_tokens=10, messages=user(str(i))) for i in range(5))
    )
    elapsed = time.monotonic() - started

    assert [r.content[0].text for r in replies if r.content[0].type == "text"] == ["n=1"] * 5
    assert 0.2 <= elapsed < 1.0
    fake.push(Reply.text("queue wins"))
    queued = await client.messages.create(model=MODEL, max_tokens=10, messages=user("q"))
    assert queued.content[0].type == "text"
    assert queued.content[0].text == "queue wins"


async def test_responder_may_delay_and_tools_may_be_several(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    # A responder's Reply.slow(then=None) falls through to the default instead of asking it again.
    fake.set_responder(lambda request: Reply.slow(0.1))
    fake.push(Reply.tools([("warn_user", {"behavior": "a", "redirect_attempts": 1}), ("end_conversation", {})]))
    fake.chunk_delay = 0.01

    both = await client.messages.create(model=MODEL, max_tokens=100, messages=user("x"), tools=[WARN_TOOL, END_TOOL])
    started = time.monotonic()
    delayed = await client.messages.create(model=MODEL, max_tokens=100, messages=user("later"))

    assert time.monotonic() - started >= 0.1
    assert [b.type for b in both.content] == ["tool_use", "tool_use"]
    ids = [b.id for b in both.content if b.type == "tool_use"]
    assert len(set(ids)) == 2
    assert delayed.content[0].type == "text"
    assert "later" in delayed.content[0].text


def test_trigger_responder() -> None:
    offered = {"model": MODEL, "max_tokens": 10, "tools": [WARN_TOOL, END_TOOL]}

    warn = trigger_responder({**offered, "messages": user("you idiot !warn")})
    end = trigger_responder({**offered, "messages": user("!end")})
    bye = trigger_responder({**offered, "messages": user("ok !bye")})
    unoffered = trigger_responder({"messages": user("!warn")})

    assert warn.stop_reason == "tool_use"
    assert warn.content[0]["text"].startswith("Please stop.")
    assert warn.content[1]["input"] == {"behavior": "repeated abuse", "redirect_attempts": 2}
    assert end.content[0]["input"]["reason"] == "persistent_abuse"
    assert bye.content[0]["input"] == {
        "reason": "user_requested",
        "explanation": "You asked to end this conversation.",
    }
    assert unoffered.stop_reason == "end_turn"
    assert echo_responder({"messages": user("hello")}).content[0]["text"].endswith('"hello"')


def test_runnable_module_serves_and_triggers_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_anthropic", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 15)
            assert ready, "the fake did not print its URL"
            line = process.stdout.readline().strip()
            assert line.startswith("fake anthropic listening on http://127.0.0.1:")
            # The way a bot process finds it: the SDK reads ANTHROPIC_BASE_URL.
            monkeypatch.setenv("ANTHROPIC_BASE_URL", line.rsplit(" ", 1)[1])

            with anthropic.Anthropic(api_key="test", max_retries=0) as sdk:
                plain = sdk.messages.create(model=MODEL, max_tokens=100, messages=user("hello there"))
                warned = sdk.messages.create(
                    model=MODEL, max_tokens=200, messages=user("stop it !warn"), tools=[WARN_TOOL, END_TOOL]
                )

            assert plain.content[0].type == "text"
            assert "hello there" in plain.content[0].text
            assert warned.stop_reason == "tool_use"
            preamble, call = warned.content
            assert preamble.type == "text"
            assert preamble.text.startswith("Please stop. This is a formal warning")
            assert call.type == "tool_use"
            assert call.name == "warn_user"
            assert call.input == {"behavior": "repeated abuse", "redirect_attempts": 2}

            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
