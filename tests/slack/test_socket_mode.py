"""Socket Mode end to end: the same scenarios as HTTP mode, over the fake Socket Mode server
(apps.connections.open, hello, envelopes, acks, refresh_requested and reconnect), through the real Bolt
app and through the real `lastresort run` process with SLACK_APP_TOKEN set."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.slack.render import ACTION_CONFIRM_END
from core.settings import Settings
from tests.slack.harness import ALICE, CHANNEL, MOD, Bot, block_text, permalink, running_bot
from tests.support.bot_process import BotProcess
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_slack import FakeSlack
from tests.support.fake_slack_socket import FakeSocketMode, SocketDriver
from tests.support.model_scripts import END_REQUESTED
from tests.support.paths import REPO


def notice_in(slack: FakeSlack, ts: str) -> dict[str, object] | None:
    return next(
        (m for m in slack.bot_messages(CHANNEL, ts) if (m.get("blocks") or [{}])[0].get("type") == "header"), None
    )


# -- the same scenarios in both modes ---------------------------------------------------------------------


async def test_answers_and_thread_replies(either_bot: Bot) -> None:
    bot = either_bot
    root = await bot.mention("hello over any transport")
    (reply,) = await bot.answered(root)
    assert "hello over any transport" in block_text(reply)
    await bot.say("and again", root)
    await bot.answered(root, 2)
    assert bot.model_calls() == 2


async def test_a_user_asked_ending_is_confirmed_and_the_thread_locks(either_bot: Bot) -> None:
    bot, slack = either_bot, either_bot.slack
    bot.claude.push(END_REQUESTED)
    root = await bot.mention("please end this conversation")
    (question,) = await bot.answered(root)
    await bot.click(question, ACTION_CONFIRM_END, ALICE)
    notice = await slack.wait_for_async(lambda: notice_in(slack, root), timeout=10, what="the notice")
    assert "Start a new conversation" in block_text(notice)
    await bot.idle()
    calls = bot.model_calls()
    await bot.say("still there?", root)
    await slack.wait_for_async(lambda: slack.ephemerals, timeout=10, what="the locked-thread note")
    assert bot.model_calls() == calls


async def test_an_edit_branches_and_a_moderator_ends_by_command(either_bot: Bot) -> None:
    bot, slack = either_bot, either_bot.slack
    root = await bot.mention("first version")
    await bot.answered(root)
    sent = await bot.driver.message_changed(CHANNEL, ALICE, f"<@{slack.bot_user_id}> second version", root)
    assert sent.status == 200
    starter = await bot.starter("new conversation branched")
    await bot.answered(starter["ts"])
    assert bot.last_user_texts()[-1] == "[Alice (U0ALICE)] second version"

    answer = await bot.command(f"end {permalink(starter['ts'])} testing", user=MOD)
    assert "Ended" in answer or "ended" in answer
    await slack.wait_for_async(lambda: notice_in(slack, starter["ts"]), timeout=10, what="the notice")


# -- Socket Mode itself -------------------------------------------------------------------------------------


async def test_a_refresh_request_reconnects_and_nothing_is_lost(
    socket_mode: FakeSocketMode, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    async with running_bot(socket_mode.fake, fake_anthropic, settings, tmp_path / "s.db", socket=socket_mode) as bot:
        await refresh_scenario(bot, socket_mode)


async def refresh_scenario(bot: Bot, socket: FakeSocketMode) -> None:
    assert socket.hellos == 1
    root = await bot.mention("before the refresh")
    await bot.answered(root)

    await socket.disconnect("refresh_requested")
    await socket.wait_connected(hellos=2)  # a new apps.connections.open, a new socket; the old one closed
    assert len(bot.slack.calls_to("apps.connections.open")) == 2
    assert socket.closed == 1
    await bot.say("after the refresh", root)
    await bot.answered(root, 2)
    assert bot.last_user_texts()[-1] == "[Alice (U0ALICE)] after the refresh"
    # Every envelope was acknowledged, each exactly once.
    ids = [ack["envelope_id"] for ack in socket.acks]
    assert len(ids) == len(set(ids)) == 3  # the mention's two events and the reply


async def test_the_app_token_opens_sockets_and_nothing_else(socket_mode: FakeSocketMode) -> None:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    fake = socket_mode.fake
    app_client = AsyncWebClient(token=socket_mode.app_token, base_url=fake.api_url)
    with pytest.raises(SlackApiError) as refused:
        await app_client.chat_postMessage(channel=CHANNEL, text="hi")
    assert refused.value.response["error"] == "not_allowed_token_type"
    bot_client = AsyncWebClient(token=fake.token, base_url=fake.api_url)
    with pytest.raises(SlackApiError) as wrong_kind:
        await bot_client.apps_connections_open(app_token=fake.token)
    assert wrong_kind.value.response["error"] == "not_allowed_token_type"
    opened = await bot_client.apps_connections_open(app_token=socket_mode.app_token)
    assert str(opened["url"]).startswith(f"ws://127.0.0.1:{fake.port}/link/?ticket=")


# -- the real process -----------------------------------------------------------------------------------------


async def test_lastresort_run_in_socket_mode_answers_ends_and_branches(
    socket_mode: FakeSocketMode, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    slack = socket_mode.fake
    env = {
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_APP_TOKEN": socket_mode.app_token,
        "SLACK_API_URL": slack.api_url,
        "ANTHROPIC_API_KEY": "sk-ant-process-test-key",
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "LASTRESORT_CONFIG": str(REPO / "config" / "lastresort.yaml"),
    }
    driver = SocketDriver(socket_mode)

    def replies(ts: str) -> list[dict[str, object]]:
        return [m for m in slack.bot_messages(CHANNEL, ts) if m["ts"] != ts]

    async with BotProcess(env, log_path=tmp_path / "run.log") as process:
        await socket_mode.wait_connected()
        # Answers: a mention, over events_api envelopes.
        sent = await driver.post_mention(CHANNEL, ALICE, "hello from a socket")
        ts = str(sent[0].payload["event"]["ts"])
        await slack.wait_for_async(lambda: replies(ts), timeout=15, what="the answer")

        # Slack recycles the connection: the process reconnects and goes on.
        await socket_mode.disconnect("refresh_requested")
        await socket_mode.wait_connected(hellos=2)

        # Branches: an edit of the first message.
        await driver.message_changed(CHANNEL, ALICE, f"<@{slack.bot_user_id}> hello, edited", ts)

        def starter() -> dict[str, object] | None:
            return next((m for m in slack.bot_messages(CHANNEL) if "branched" in str(m["text"])), None)

        branch = await slack.wait_for_async(starter, timeout=15, what="the branch")
        assert branch is not None
        await slack.wait_for_async(lambda: replies(str(branch["ts"])), timeout=15, what="the branch's answer")

        # Ends: the user asks, confirms with the button (an interactive envelope), the notice follows.
        fake_anthropic.push(END_REQUESTED)
        await driver.message(CHANNEL, ALICE, "please end this conversation", thread_ts=ts)
        question = await slack.wait_for_async(
            lambda: next((m for m in replies(ts) if ACTION_CONFIRM_END in str(m.get("blocks"))), None), timeout=15
        )
        await driver.click(question, ACTION_CONFIRM_END, ALICE, channel=CHANNEL)
        await slack.wait_for_async(lambda: notice_in(slack, ts), timeout=15, what="the notice")

        # A slash command over slash_commands envelopes, answered through response_url.
        before = len(slack.responses)
        await driver.command("help", user=ALICE, channel=CHANNEL)
        await slack.wait_for_async(lambda: len(slack.responses) > before, timeout=15, what="the help")
        assert await process.terminate(timeout=30) == 0
    logs = process.output()
    for secret in (socket_mode.app_token, slack.token, "sk-ant-process-test-key"):
        assert secret not in logs
    assert len(replies(ts)) == 3  # the answer, the question, the notice: nothing twice
