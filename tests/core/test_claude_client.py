"""The model client's reading of raw stream events (the JSON the API sends, as the SDK's stream yields it)."""

from __future__ import annotations

import json
from dataclasses import replace

import anthropic
import httpx2

from core.claude_client import TOOLS, ClaudeClient, _canned_stream, _Relay, _Reply, request_body
from core.ports import ModelRequest, Usage


class Heard:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.tool_use = 0

    async def text(self, so_far: str) -> None:
        self.texts.append(so_far)

    async def tool_use_started(self) -> None:
        self.tool_use += 1


async def test_raw_events_build_the_reply_blocks_usage_and_stop_reason() -> None:
    events = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 7}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": "", "citations": None}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": " there"}},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "warn_user", "input": {}},
        },
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}},
        {
            "type": "content_block_start",
            "index": 3,
            "content_block": {"type": "other", "x": None, "y": {"z": None}, "items": [{"a": 1, "b": None}, 2]},
        },
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ]
    heard = Heard()
    reply = _Reply()
    relay = _Relay(heard)
    for event in events:
        await reply.take(event, relay)
    assert reply.complete and reply.stop_reason == "tool_use"
    assert reply.blocks() == (
        {"type": "thinking", "thinking": "hm", "signature": "sig"},
        {"type": "text", "text": "Hello there"},
        {"type": "tool_use", "id": "toolu_1", "name": "warn_user", "input": {"a": 1}},
        {"type": "other", "y": {}, "items": [{"a": 1}, 2]},
    )
    assert reply.usage() == Usage(input_tokens=10, output_tokens=5, cache_read_input_tokens=7)
    assert heard.texts == ["Hello", "Hello there"] and heard.tool_use == 1


def test_request_body_is_what_messages_create_sends() -> None:
    request = ModelRequest(
        system=({"type": "text", "text": "sys"},),
        messages=({"role": "user", "content": [{"type": "text", "text": "héllo"}]},),
        tools=(),
        max_tokens=16,
        model="m",
    )
    streamed = json.loads(request_body(request, stream=True))
    assert streamed == {
        "max_tokens": 16,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "héllo"}]}],
        "model": "m",
        "system": [{"type": "text", "text": "sys"}],
        "tools": [],
        "stream": True,
    }
    forced = json.loads(request_body(replace(request, tool_choice={"type": "any"}), stream=False))
    assert forced["tool_choice"] == {"type": "any"} and "stream" not in forced


async def test_a_streamed_call_sends_exactly_what_messages_create_sends() -> None:
    # Both through one SDK client whose transport records the requests: same URL, headers and JSON body.
    seen: list[httpx2.Request] = []

    def record(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return _canned_stream(request)

    request = ModelRequest(
        model="m",
        max_tokens=16,
        system=({"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}},),
        messages=({"role": "user", "content": [{"type": "text", "text": "héllo"}]},),
        tools=TOOLS,
    )
    transport = httpx2.MockTransport(record)
    http = anthropic.DefaultAsyncHttpxClient(transport=transport)
    async with anthropic.AsyncAnthropic(api_key="k", http_client=http, max_retries=0) as sdk:
        created = await sdk.messages.create(
            model=request.model,
            max_tokens=request.max_tokens,
            system=list(request.system),  # type: ignore[arg-type]
            messages=list(request.messages),  # type: ignore[arg-type]
            tools=list(request.tools),  # type: ignore[arg-type]
            stream=True,
        )
        async for _ in created:
            pass
        client = ClaudeClient(api_key="k", base_url=None, timeout_seconds=5, max_retries=0, max_total_wait_seconds=5)
        try:
            await client._stream_once(request, _Relay(None), sdk, log_reply=False)
        finally:
            await client.close()
    sdk_request, ours = seen
    assert ours.url == sdk_request.url
    assert dict(ours.headers) == dict(sdk_request.headers)
    assert json.loads(ours.content) == json.loads(sdk_request.content)
