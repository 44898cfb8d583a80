"""The fake Slack's AI-app surface behaves like Slack's: the streaming methods, markdown and feedback
blocks, the assistant methods and Socket Mode, driven with the real slack_sdk (and its socket client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.support.fake_slack import FakeSlack
from tests.support.fake_slack_socket import FakeSocketMode

CHANNEL = "C0GENERAL"
ALICE = "U0ALICE"
FEEDBACK = {
    "type": "context_actions",
    "elements": [
        {
            "type": "feedback_buttons",
            "action_id": "vote",
            "positive_button": {"text": {"type": "plain_text", "text": "👍"}, "value": "good"},
            "negative_button": {"text": {"type": "plain_text", "text": "👎"}, "value": "bad"},
        }
    ],
}


@pytest.fixture
def socket() -> Iterator[FakeSocketMode]:
    fake = FakeSlack()
    socket = FakeSocketMode(fake)
    with fake:
        fake.add_channel(CHANNEL, "general")
        fake.add_user(ALICE, "alice")
        yield socket
        assert fake.errors == []


@pytest.fixture
def fake(socket: FakeSocketMode) -> FakeSlack:
    return socket.fake


@pytest.fixture
async def client(fake: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    yield AsyncWebClient(token=fake.token, base_url=fake.api_url)


async def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as raised:
        await call
    return str(raised.value.response["error"])


# -- streaming ---------------------------------------------------------------------------------------------


async def test_a_stream_starts_appends_and_stops_with_blocks(fake: FakeSlack, client: AsyncWebClient) -> None:
    root = fake.add_message(CHANNEL, ALICE, "question")["ts"]
    stream = await client.chat_stream(
        channel=CHANNEL, thread_ts=root, recipient_team_id=fake.team_id, recipient_user_id=ALICE, buffer_size=1
    )
    await stream.append(markdown_text="**bold** ")
    ts = str(stream.ts)
    assert fake.is_streaming(CHANNEL, ts)
    await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="and more")
    await stream.stop(markdown_text=".", blocks=[FEEDBACK])
    message = fake.message(CHANNEL, ts)
    assert message is not None and message["thread_ts"] == root
    assert message["blocks"][0] == {
        "type": "markdown",
        "text": "**bold** and more.",
        "block_id": message["blocks"][0]["block_id"],
    }
    assert message["blocks"][1]["type"] == "context_actions"
    assert not fake.is_streaming(CHANNEL, ts)
    # A stopped stream takes no more text, as in Slack.
    assert await error_of(client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="late")) == (
        "message_not_in_streaming_state"
    )
    assert await error_of(client.chat_stopStream(channel=CHANNEL, ts=ts)) == "message_not_in_streaming_state"


async def test_streams_outside_dms_must_name_their_recipient(fake: FakeSlack, client: AsyncWebClient) -> None:
    root = fake.add_message(CHANNEL, ALICE, "question")["ts"]
    assert await error_of(client.chat_startStream(channel=CHANNEL, thread_ts=root)) == "missing_recipient_team_id"
    missing_user = client.chat_startStream(channel=CHANNEL, thread_ts=root, recipient_team_id=fake.team_id)
    assert await error_of(missing_user) == "missing_recipient_user_id"
    dm = fake.dm_channel(ALICE)
    in_dm = fake.add_message(dm, ALICE, "private question")["ts"]
    assert (await client.chat_startStream(channel=dm, thread_ts=in_dm))["ok"]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"markdown_text": "x" * 12_001}, "msg_too_long"),
        ({"chunks": [{"type": "markdown_text", "text": "x" * 12_001}]}, "invalid_chunks"),
        ({"chunks": [{"type": "bogus"}]}, "invalid_chunks"),
        ({}, "invalid_arguments"),
    ],
)
async def test_append_limits(fake: FakeSlack, client: AsyncWebClient, arguments: dict[str, Any], error: str) -> None:
    root = fake.add_message(CHANNEL, ALICE, "question")["ts"]
    started = await client.chat_startStream(
        channel=CHANNEL, thread_ts=root, recipient_team_id=fake.team_id, recipient_user_id=ALICE
    )
    assert await error_of(client.chat_appendStream(channel=CHANNEL, ts=started["ts"], **arguments)) == error


async def test_streaming_can_be_refused(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.streaming_error = "feature_not_enabled"
    root = fake.add_message(CHANNEL, ALICE, "question")["ts"]
    call = client.chat_startStream(
        channel=CHANNEL, thread_ts=root, recipient_team_id=fake.team_id, recipient_user_id=ALICE
    )
    assert await error_of(call) == "feature_not_enabled"


# -- blocks ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blocks",
    [
        [{"type": "markdown", "text": "x" * 12_001}],
        [{"type": "markdown", "text": "x" * 6_001}, {"type": "markdown", "text": "y" * 6_000}],  # together
        [{"type": "markdown", "text": ""}],
        [{"type": "context_actions", "elements": []}],
        [{"type": "context_actions", "elements": [{"type": "button", "action_id": "b"}]}],
        [{**FEEDBACK, "elements": [{**FEEDBACK["elements"][0], "positive_button": {"value": "good"}}]}],
        [
            {
                **FEEDBACK,
                "elements": [
                    {
                        **FEEDBACK["elements"][0],
                        "negative_button": {"text": {"type": "plain_text", "text": "x" * 76}, "value": "bad"},
                    }
                ],
            }
        ],
    ],
)
async def test_blocks_slack_rejects_are_rejected(client: AsyncWebClient, blocks: list[dict[str, Any]]) -> None:
    assert await error_of(client.chat_postMessage(channel=CHANNEL, text="t", blocks=blocks)) == "invalid_blocks"


async def test_markdown_and_feedback_blocks_within_limits_are_accepted(client: AsyncWebClient) -> None:
    blocks = [{"type": "markdown", "text": "x" * 12_000}, FEEDBACK]
    assert (await client.chat_postMessage(channel=CHANNEL, text="t", blocks=blocks))["ok"]


# -- the assistant container -----------------------------------------------------------------------------------


async def test_assistant_methods_work_in_assistant_threads_only(fake: FakeSlack, client: AsyncWebClient) -> None:
    dm, thread = fake.open_assistant_thread(ALICE)
    prompts = [{"title": f"t{i}", "message": f"m{i}"} for i in range(5)]
    await client.assistant_threads_setSuggestedPrompts(channel_id=dm, thread_ts=thread, prompts=prompts[:4])
    too_many = client.assistant_threads_setSuggestedPrompts(channel_id=dm, thread_ts=thread, prompts=prompts)
    assert await error_of(too_many) == "invalid_arguments"
    await client.assistant_threads_setStatus(channel_id=dm, thread_ts=thread, status="is thinking…")
    await client.assistant_threads_setTitle(channel_id=dm, thread_ts=thread, title="Tides")
    state = fake.assistant_thread(dm, thread)
    assert state is not None
    assert (state["status"], state["title"], len(state["prompts"]["prompts"])) == ("is thinking…", "Tides", 4)
    elsewhere = fake.add_message(CHANNEL, ALICE, "not an assistant thread")["ts"]
    not_one = client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=elsewhere, status="x")
    assert await error_of(not_one) == "invalid_thread_ts"


# -- Socket Mode ------------------------------------------------------------------------------------------------


async def test_socket_mode_hello_envelopes_acks_and_refresh(socket: FakeSocketMode, client: AsyncWebClient) -> None:
    seen: list[SocketModeRequest] = []
    app_client = SocketModeClient(app_token=socket.app_token, web_client=client, ping_interval=0.5)

    async def listener(c: SocketModeClient, request: SocketModeRequest) -> None:  # type: ignore[override]
        seen.append(request)
        payload = {"text": "inline"} if request.type == "slash_commands" else None
        await c.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id, payload=payload))

    app_client.socket_mode_request_listeners.append(listener)  # type: ignore[arg-type]
    await app_client.connect()
    try:
        await socket.wait_connected()
        ack = await socket.send("events_api", {"type": "event_callback", "event": {"type": "app_mention"}})
        assert set(ack) == {"envelope_id"}
        ack = await socket.send("slash_commands", {"command": "/lastresort", "text": "help"})
        assert ack["payload"] == {"text": "inline"}
        await socket.disconnect("refresh_requested")
        await socket.wait_connected(hellos=2)
        await socket.send("interactive", {"type": "block_actions", "actions": []})
        assert [r.type for r in seen] == ["events_api", "slash_commands", "interactive"]
        assert [r.accepts_response_payload for r in seen] == [False, True, True]
    finally:
        await app_client.close()
    # A URL is good for one connection.
    opened = await client.apps_connections_open(app_token=socket.app_token)
    assert str(opened["url"]).startswith("ws://")


async def test_an_unacknowledged_envelope_times_out(socket: FakeSocketMode, client: AsyncWebClient) -> None:
    app_client = SocketModeClient(app_token=socket.app_token, web_client=client)
    await app_client.connect()  # no listener: nothing acknowledges
    try:
        await socket.wait_connected()
        with pytest.raises(asyncio.TimeoutError):
            await socket.send("events_api", {"type": "event_callback", "event": {}}, timeout=0.3)
    finally:
        await app_client.close()
