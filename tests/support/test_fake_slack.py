"""The Slack harness is only useful if it behaves like Slack: drive it with the real slack_sdk and a
real Bolt app, and check what they see."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond, AsyncSay
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.support.fake_slack import BOT_ID, BOT_USER_ID, FakeSlack, SlackDriver, serve_web_app

SECRET = "test-signing-secret"
CHANNEL = "C0GENERAL"
ALICE = "U0ALICE"
MOD = "U0MOD"

BUTTONS: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "Ending this conversation."}},
    {
        "type": "actions",
        "block_id": "appeal",
        "elements": [
            {
                "type": "button",
                "action_id": "appeal_ending",
                "text": {"type": "plain_text", "text": "Appeal"},
                "value": "thread-1",
            }
        ],
    },
]


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        slack.add_channel(CHANNEL, "general")
        slack.add_user(ALICE, "alice", display_name="Alice A.")
        slack.add_user(MOD, "mod", is_admin=True)
        yield slack
        assert slack.errors == []


@pytest.fixture
async def client(fake: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    yield AsyncWebClient(token=fake.token, base_url=fake.api_url)


@dataclass
class Bot:
    """A tiny real Bolt app in HTTP mode, served on loopback, talking to the fake."""

    app: AsyncApp
    driver: SlackDriver
    seen: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def bot(fake: FakeSlack) -> AsyncIterator[Bot]:
    app = AsyncApp(
        signing_secret=SECRET, client=AsyncWebClient(token=fake.token, base_url=fake.api_url), name="harness"
    )
    async with serve_web_app(app.web_app(path="/slack/events")) as base_url:
        bot = Bot(app, SlackDriver(SECRET, f"{base_url}/slack/events", fake=fake))

        @app.middleware
        async def capture(req: AsyncBoltRequest, resp: BoltResponse, next: Any) -> Any:
            bot.headers.append({k: v[0] for k, v in req.headers.items()})
            return await next()

        yield bot


# ---------------------------------------------------------------------- Web API through slack_sdk


async def test_sdk_post_update_ephemeral_permalink_users_info(fake: FakeSlack, client: AsyncWebClient) -> None:
    auth = await client.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == (BOT_USER_ID, BOT_ID, "T0001")

    root = fake.add_message(CHANNEL, ALICE, "hello bot")
    posted = await client.chat_postMessage(
        channel=CHANNEL, text="thinking…", thread_ts=root["ts"], blocks=BUTTONS, unfurl_links=False
    )
    assert posted["channel"] == CHANNEL
    assert posted["message"]["thread_ts"] == root["ts"]
    assert posted["message"]["bot_id"] == BOT_ID
    # Slack gives every block a block_id.
    assert all("block_id" in b for b in posted["message"]["blocks"])
    assert fake.calls_to("chat.postMessage")[0]["unfurl_links"] is False

    updated = await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="done")
    assert updated["text"] == "done"
    assert updated["message"]["edited"]["user"] == BOT_ID
    # Blocks survive an update that does not send them.
    assert fake.message(CHANNEL, posted["ts"])["blocks"][1]["block_id"] == "appeal"  # type: ignore[index]

    thread = fake.messages(CHANNEL, thread_ts=root["ts"])
    assert [m["text"] for m in thread] == ["hello bot", "done"]
    assert thread[0]["reply_count"] == 1
    assert thread[1]["parent_user_id"] == ALICE

    eph = await client.chat_postEphemeral(channel=CHANNEL, user=ALICE, text="locked", thread_ts=root["ts"])
    assert fake.ephemerals[0]["message_ts"] == eph["message_ts"]
    assert fake.ephemerals[0]["thread_ts"] == root["ts"]
    assert fake.messages(CHANNEL, thread_ts=root["ts"])[-1]["text"] == "done"  # ephemerals are not messages

    link = await client.chat_getPermalink(channel=CHANNEL, message_ts=posted["ts"])
    ts_digits = posted["ts"].replace(".", "")
    assert link["permalink"] == (
        f"https://fake.slack.com/archives/{CHANNEL}/p{ts_digits}?thread_ts={root['ts']}&cid={CHANNEL}"
    )

    user = await client.users_info(user=MOD)
    assert user["user"]["is_admin"] is True
    assert user["user"]["profile"]["display_name"] == "mod"
    alice = await client.users_info(user=ALICE)
    assert alice["user"]["profile"]["display_name"] == "Alice A."

    replies = await client.conversations_replies(channel=CHANNEL, ts=posted["ts"])
    assert [m["ts"] for m in replies["messages"]] == [root["ts"], posted["ts"]]


async def test_sdk_other_methods(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_usergroup("S0MODS", "moderators", [MOD])
    assert (await client.usergroups_users_list(usergroup="S0MODS"))["users"] == [MOD]

    dm = await client.conversations_open(users=ALICE)
    assert dm["channel"]["id"].startswith("D")
    assert dm["channel"]["id"] == fake.dm_channel(ALICE)
    info = await client.conversations_info(channel=dm["channel"]["id"])
    assert info["channel"]["is_im"] is True
    # A bot posting to a user id lands in the DM.
    posted = await client.chat_postMessage(channel=ALICE, text="hi")
    assert posted["channel"] == dm["channel"]["id"]

    view = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Home"}}]}
    await client.views_publish(user_id=ALICE, view=view)
    assert fake.views[ALICE]["blocks"][0]["text"]["text"] == "Home"

    await client.chat_delete(channel=ALICE, ts=posted["ts"])
    assert fake.messages(dm["channel"]["id"]) == []


async def test_sdk_errors_are_slack_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    user_message = fake.add_message(CHANNEL, ALICE, "mine")
    cases = [
        (client.chat_postMessage(channel="C0NOPE", text="x"), "channel_not_found"),
        (client.chat_postMessage(channel=CHANNEL), "no_text"),
        (client.chat_update(channel=CHANNEL, ts=user_message["ts"], text="x"), "cant_update_message"),
        (client.chat_delete(channel=CHANNEL, ts=user_message["ts"]), "cant_delete_message"),
        (client.chat_update(channel=CHANNEL, ts="1.000001", text="x"), "message_not_found"),
        (client.users_info(user="U0NOBODY"), "user_not_found"),
        (client.usergroups_users_list(usergroup="S0NONE"), "no_such_subteam"),
        (client.api_call("chat.notAMethod"), "unknown_method"),
        (
            client.chat_postMessage(channel=CHANNEL, text="x", blocks=[{"type": "divider"}] * 51),
            "invalid_blocks",
        ),
    ]
    for call, error in cases:
        with pytest.raises(SlackApiError) as caught, warnings.catch_warnings():
            # slack_sdk warns about the missing `text` of the no_text case before sending it.
            warnings.simplefilter("ignore", UserWarning)
            await call
        assert caught.value.response.status_code == 200
        assert caught.value.response["error"] == error

    stranger = AsyncWebClient(token="xoxb-wrong", base_url=fake.api_url)
    with pytest.raises(SlackApiError) as caught:
        await stranger.auth_test()
    assert caught.value.response["error"] == "invalid_auth"


async def test_replies_paginate_and_injected_api_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    root = fake.add_message(CHANNEL, ALICE, "root")
    for n in range(4):
        fake.add_message(CHANNEL, ALICE, f"reply {n}", thread_ts=root["ts"])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await client.conversations_replies(channel=CHANNEL, ts=root["ts"], limit=2, cursor=cursor)
        seen.extend(m["text"] for m in page["messages"])
        metadata: dict[str, Any] = page.get("response_metadata") or {}
        cursor = metadata.get("next_cursor")
        if not page["has_more"]:
            break
    assert seen == ["root", "reply 0", "reply 1", "reply 2", "reply 3"]

    fake.fail_next("chat.postMessage", status=200, error="not_in_channel")
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel=CHANNEL, text="x")
    assert caught.value.response["error"] == "not_in_channel"
    assert len(fake.messages(CHANNEL)) == 5


async def test_form_encoded_and_token_param(fake: FakeSlack, client: AsyncWebClient) -> None:
    # Form body with the token as a parameter, the way curl examples and older clients call Slack.
    bare = AsyncWebClient(base_url=fake.api_url)
    resp = await bare.api_call(
        "chat.postMessage",
        data={"token": fake.token, "channel": CHANNEL, "text": "form", "blocks": json.dumps(BUTTONS)},
    )
    assert resp["message"]["blocks"][1]["elements"][0]["action_id"] == "appeal_ending"
    # The call log normalises blocks to structures whatever the encoding.
    assert fake.calls_to("chat.postMessage")[0]["blocks"][1]["block_id"] == "appeal"


async def test_ratelimit_retried_once_posts_once(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=0)
    client = AsyncWebClient(
        token=fake.token,
        base_url=fake.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    resp = await client.chat_postMessage(channel=CHANNEL, text="once")
    assert resp["ok"] is True
    assert len(fake.calls_to("chat.postMessage")) == 2
    assert fake.faults_served == [("chat.postMessage", 429, "ratelimited")]
    assert [m["text"] for m in fake.messages(CHANNEL)] == ["once"]


async def test_ratelimit_without_handler_surfaces_retry_after(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail_next("chat.update", status=429, retry_after=7)
    fake.fail_next("chat.postMessage", status=503)
    with pytest.raises(SlackApiError) as caught:
        await client.chat_update(channel=CHANNEL, ts="1.000001", text="x")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "7"
    # The default handlers retry connection errors only, so a 503 reaches the caller.
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel=CHANNEL, text="x")
    assert caught.value.response.status_code == 503
    assert fake.messages(CHANNEL) == []


async def test_slow_reply_is_applied_before_answering(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.slow_next("chat.postMessage", 0.3)
    started = time.monotonic()
    task = asyncio.create_task(client.chat_postMessage(channel=CHANNEL, text="late"))
    await fake.wait_for_async(lambda: fake.messages(CHANNEL), timeout=2)
    assert not task.done()
    await task
    assert time.monotonic() - started >= 0.3


def test_sync_use_from_another_thread() -> None:
    # No event loop here: a plain thread posts through urllib while the test blocks in wait_for.
    with FakeSlack() as fake:
        fake.add_channel(CHANNEL)

        def post() -> None:
            time.sleep(0.05)
            body = urllib.parse.urlencode({"channel": CHANNEL, "text": "from a thread"}).encode()
            request = urllib.request.Request(
                fake.api_url + "chat.postMessage", data=body, headers={"Authorization": f"Bearer {fake.token}"}
            )
            with urllib.request.urlopen(request, timeout=5) as resp:
                assert json.loads(resp.read())["ok"] is True

        thread = threading.Thread(target=post)
        thread.start()
        params = fake.wait_for_call("chat.postMessage", timeout=5)
        thread.join()
        assert params["text"] == "from a thread"
        assert fake.messages(CHANNEL)[0]["text"] == "from a thread"


async def test_wait_for_refuses_to_block_a_running_loop(fake: FakeSlack) -> None:
    with pytest.raises(RuntimeError, match="wait_for_async"):
        fake.wait_for(lambda: True)


# ---------------------------------------------------------------------- a real Bolt app in HTTP mode


async def test_signed_mention_gets_a_threaded_reply(fake: FakeSlack, bot: Bot) -> None:
    @bot.app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: AsyncSay) -> None:
        await say(text=f"hi <@{event['user']}>", thread_ts=event.get("thread_ts") or event["ts"])

    reply = await bot.driver.app_mention(CHANNEL, ALICE, "are you there?")
    assert reply.status == 200
    ts = reply.payload["event"]["ts"]
    await fake.wait_for_async(lambda: fake.bot_messages(CHANNEL, thread_ts=ts))
    thread = fake.messages(CHANNEL, thread_ts=ts)
    assert [m["text"] for m in thread] == [f"<@{BOT_USER_ID}> are you there?", f"hi <@{ALICE}>"]
    assert fake.calls_to("auth.test")  # Bolt authorised lazily against the fake
    # Bolt's per-request client adds team_id to every call.
    assert fake.calls_to("chat.postMessage")[0]["team_id"] == "T0001"


async def test_forged_and_stale_requests_are_rejected(fake: FakeSlack, bot: Bot) -> None:
    seen: list[str] = []

    @bot.app.event("app_mention")
    async def on_mention(event: dict[str, Any]) -> None:
        seen.append(event["ts"])

    assert (await bot.driver.app_mention(CHANNEL, ALICE, "x", forge=True)).status == 401
    assert (await bot.driver.app_mention(CHANNEL, ALICE, "x", stale=True)).status == 401
    assert (await bot.driver.app_mention(CHANNEL, ALICE, "x", secret="other")).status == 401
    assert (await bot.driver.app_mention(CHANNEL, ALICE, "x")).status == 200
    await fake.wait_for_async(lambda: seen)
    assert len(seen) == 1


async def test_redelivery_and_mention_pair(fake: FakeSlack, bot: Bot) -> None:
    events: list[tuple[str, str, str]] = []

    @bot.app.event("app_mention")
    async def on_mention(body: dict[str, Any], event: dict[str, Any]) -> None:
        events.append(("app_mention", body["event_id"], event["ts"]))

    @bot.app.event("message")
    async def on_message(body: dict[str, Any], event: dict[str, Any]) -> None:
        events.append(("message", body["event_id"], event["ts"]))

    _first, second = await bot.driver.post_mention(CHANNEL, ALICE, "hello", order=("message", "app_mention"))
    await fake.wait_for_async(lambda: len(events) == 2)
    assert [e[0] for e in events] == ["message", "app_mention"]
    assert events[0][2] == events[1][2]  # same message
    assert events[0][1] != events[1][1]  # different event ids
    assert len(fake.messages(CHANNEL)) == 1

    again = await bot.driver.resend(second)
    assert again.status == 200
    await fake.wait_for_async(lambda: len(events) == 3)
    assert events[2][1] == events[1][1]  # Bolt does not deduplicate: the bot must
    assert bot.headers[-1]["x-slack-retry-num"] == "1"
    assert bot.headers[-1]["x-slack-retry-reason"] == "http_timeout"
    assert len(fake.messages(CHANNEL)) == 1


async def test_edits_and_bot_messages(fake: FakeSlack, bot: Bot) -> None:
    edits: list[dict[str, Any]] = []
    plain: list[dict[str, Any]] = []

    @bot.app.event({"type": "message", "subtype": "message_changed"})
    async def on_edit(event: dict[str, Any]) -> None:
        edits.append(event)

    @bot.app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        plain.append(event)

    root = fake.add_message(CHANNEL, ALICE, "root")
    sent = await bot.driver.message(CHANNEL, ALICE, "first", thread_ts=root["ts"])
    ts = sent.payload["event"]["ts"]
    await bot.driver.message_changed(CHANNEL, ALICE, "second", ts=ts)
    await fake.wait_for_async(lambda: edits)
    edit = edits[0]
    assert edit["message"]["text"] == "second"
    assert edit["message"]["thread_ts"] == root["ts"]
    assert edit["previous_message"]["text"] == "first"
    assert edit["message"]["edited"]["user"] == ALICE
    assert fake.message(CHANNEL, ts)["text"] == "second"  # type: ignore[index]

    # Our own echo is dropped by Bolt's ignore-self middleware; another app's message is not.
    await bot.driver.bot_message(CHANNEL, "echo", bot_id=BOT_ID, user=BOT_USER_ID)
    await bot.driver.bot_message(CHANNEL, "beep", bot_id="B0OTHER")
    await fake.wait_for_async(lambda: any(e.get("subtype") == "bot_message" for e in plain))
    texts = [e["text"] for e in plain]
    assert "echo" not in texts
    assert texts == ["first", "beep"]


async def test_slash_command_ack_and_respond(fake: FakeSlack, bot: Bot) -> None:
    @bot.app.command("/lastresort")
    async def on_command(ack: AsyncAck, respond: AsyncRespond, command: dict[str, Any]) -> None:
        await ack()
        await respond(f"status for {command['channel_id']}: {command['text']}")

    reply = await bot.driver.command("status", user=MOD, channel=CHANNEL)
    assert (reply.status, reply.body) == (200, "")
    await fake.wait_for_async(lambda: fake.responses)
    assert fake.responses[0].body["text"] == f"status for {CHANNEL}: status"
    # respond() without response_type is ephemeral to the invoker.
    assert fake.ephemerals[-1]["user"] == MOD


async def test_slash_command_text_containing_payload_is_lost_by_bolt(fake: FakeSlack, bot: Bot) -> None:
    # Bolt's parse_body treats any form body containing the substring "payload" as an interactivity
    # payload, finds no `payload` field and dispatches an empty body: the command 404s.
    @bot.app.command("/lastresort")
    async def on_command(ack: AsyncAck) -> None:
        await ack()

    assert (await bot.driver.command("show payload", user=MOD, channel=CHANNEL)).status == 404
    assert (await bot.driver.command("show", user=MOD, channel=CHANNEL)).status == 200


async def test_button_click_reaches_action_listener(fake: FakeSlack, bot: Bot, client: AsyncWebClient) -> None:
    clicks: list[dict[str, Any]] = []

    @bot.app.action("appeal_ending")
    async def on_click(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        clicks.append({"action": action, "body": body})
        await respond(text="Appeal received", replace_original=True)

    root = fake.add_message(CHANNEL, ALICE, "root")
    posted = await client.chat_postMessage(channel=CHANNEL, text="ended", blocks=BUTTONS, thread_ts=root["ts"])
    message = fake.message(CHANNEL, posted["ts"])
    assert message is not None

    reply = await bot.driver.click(message, "appeal_ending", user=ALICE)
    assert reply.status == 200
    await fake.wait_for_async(lambda: fake.responses)
    action, body = clicks[0]["action"], clicks[0]["body"]
    assert (action["value"], action["block_id"]) == ("thread-1", "appeal")
    assert body["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": CHANNEL,
        "is_ephemeral": False,
        "thread_ts": root["ts"],
    }
    assert body["message"]["blocks"][1]["elements"][0]["action_id"] == "appeal_ending"
    # replace_original through the response_url rewrote the clicked message.
    replaced = fake.message(CHANNEL, posted["ts"])
    assert replaced is not None
    assert replaced["text"] == "Appeal received"
    assert "blocks" not in replaced


async def test_app_home_opened_publishes_a_view(fake: FakeSlack, bot: Bot) -> None:
    @bot.app.event("app_home_opened")
    async def on_home(event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext) -> None:
        await client.views_publish(
            user_id=event["user"],
            view={"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Hi"}}]},
        )

    assert (await bot.driver.app_home_opened(ALICE)).status == 200
    await fake.wait_for_async(lambda: ALICE in fake.views)
    assert fake.views[ALICE]["type"] == "home"


async def test_url_verification_and_sync_sender(fake: FakeSlack, bot: Bot) -> None:
    reply = await bot.driver.url_verification("abc")
    assert reply.json() == {"challenge": "abc"}
    # The sync sender would block this loop (and the Bolt app on it), so run it in a worker thread.
    envelope = bot.driver.build_app_mention(CHANNEL, ALICE, "sync", ts=fake.next_ts())
    sync_reply = await asyncio.to_thread(bot.driver.send_event_sync, envelope, forge=True)
    assert sync_reply.status == 401
