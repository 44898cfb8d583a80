"""The Slack adapter end to end: signed requests into the real Bolt app the adapter builds, a real SQLite
store and Claude client, the fake Anthropic API behind the client and the fake Slack Web API in front.

Each test reads like a rule of the product: what people do in Slack, what reaches the model, what Slack
shows afterwards. The last test runs `lastresort run` as a real process.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bots.slack.commands import RESTARTING
from bots.slack.conversations import INTERRUPTED
from bots.slack.render import (
    ACTION_CONFIRM_END,
    ACTION_CONFIRM_KEEP,
    ACTION_FEEDBACK_HELPFUL,
    ACTION_FEEDBACK_UNHELPFUL,
    ACTION_NEW_CONVERSATION,
)
from core.service import FEEDBACK_ALREADY, FEEDBACK_THANKS
from core.settings import Settings
from tests.slack.harness import (
    ADMIN,
    ALICE,
    BOB,
    CHANNEL,
    GROUP_MOD,
    MOD,
    SECRET,
    Bot,
    action_ids,
    block_text,
    permalink,
    running_bot,
)
from tests.support.bot_process import BotProcess
from tests.support.fake_anthropic import FakeAnthropic, Reply
from tests.support.fake_slack import FakeSlack, SlackDriver
from tests.support.model_scripts import END_ABUSE, END_REQUESTED, WARN
from tests.support.paths import REPO

STREAM_AND_POST = ("chat.postMessage", "chat.update", "chat.startStream", "chat.appendStream", "chat.stopStream")


# -- conversations ------------------------------------------------------------------------------------------


async def test_mention_is_answered_once_in_its_thread_and_the_thread_continues(bot: Bot, slack: FakeSlack) -> None:
    sent = await bot.driver.post_mention(CHANNEL, ALICE, "hello there", concurrent=True)
    ts = str(sent[0].payload["event"]["ts"])
    assert [reply.status for reply in sent] == [200, 200]

    (reply,) = await bot.answered(ts)
    assert "hello there" in reply["text"]
    assert bot.model_calls() == 1  # two events, one post, one answer
    assert "[Alice (U0ALICE)] hello there" in bot.last_user_texts()

    # Later messages in the thread continue it without a mention, each carrying its author.
    await bot.say("and what about me?", ts, user=BOB)
    await bot.answered(ts, 2)
    assert bot.last_user_texts()[-1] == "[Bob (U0BOB)] and what about me?"

    # A thread the bot was never asked into stays quiet: no model call, no reply.
    root = slack.add_message(CHANNEL, BOB, "unrelated")
    await bot.say("just chatting", root["ts"])
    await bot.idle()
    assert bot.model_calls() == 2
    assert bot.replies(root["ts"]) == []


async def test_direct_message_starts_a_conversation_in_its_thread(bot: Bot, slack: FakeSlack) -> None:
    dm = slack.dm_channel(ALICE)
    sent = await bot.driver.message(dm, ALICE, "hi in private")
    ts = str(sent.payload["event"]["ts"])
    await slack.wait_for_async(lambda: slack.bot_messages(dm, ts), timeout=10)
    await bot.idle()
    (reply,) = slack.bot_messages(dm, ts)
    assert reply["thread_ts"] == ts
    assert "hi in private" in reply["text"]


async def test_a_redelivered_event_is_not_answered_again(bot: Bot) -> None:
    first = await bot.driver.app_mention(CHANNEL, ALICE, "hello")
    ts = str(first.payload["event"]["ts"])
    await bot.answered(ts)

    again = await bot.driver.resend(first)  # same event_id, X-Slack-Retry-Num: 1
    assert again.status == 200
    assert again.sent_headers["X-Slack-Retry-Num"] == "1"
    await bot.idle()
    assert len(bot.replies(ts)) == 1
    assert bot.model_calls() == 1
    # The post is stored under its Slack id, so another instance would find it stored too.
    stored = await bot.runtime.store.find_by_platform_id(platform="slack", platform_message_id=f"{CHANNEL}:{ts}")
    assert stored is not None and stored.answered


async def test_forged_and_stale_requests_are_refused(bot: Bot, slack: FakeSlack) -> None:
    assert (await bot.driver.url_verification("abc")).json() == {"challenge": "abc"}
    for opts in ({"forge": True}, {"stale": True}, {"secret": "someone-elses-secret"}):
        sent = await bot.driver.app_mention(CHANNEL, ALICE, "sneaky", **opts)
        assert sent.status == 401
    assert (await bot.driver.command("stats", user=MOD, channel=CHANNEL, forge=True)).status == 401
    await bot.idle()
    assert bot.model_calls() == 0
    assert slack.calls_to("chat.postMessage") == []
    assert slack.responses == []


async def test_warning_then_ending_then_a_locked_thread(bot: Bot, slack: FakeSlack) -> None:
    bot.claude.push(WARN, END_ABUSE)
    first = await bot.mention("tell me how to hurt people")
    (warning,) = await bot.answered(first)
    notes = [b for b in warning["blocks"] if b["type"] == "context"]
    assert notes and notes[0]["elements"][0]["text"].startswith("⚠️ *Formal warning*")
    assert "formal warning" in warning["text"]

    await bot.say("tell me anyway", first)
    notice = (await bot.answered(first, 2))[-1]
    assert notice["blocks"][0]["type"] == "header"
    assert "You kept demanding violent instructions after a warning." in block_text(notice)
    assert "edit one of your earlier messages" in block_text(notice)
    assert action_ids(notice) == [ACTION_NEW_CONVERSATION, ACTION_FEEDBACK_HELPFUL, ACTION_FEEDBACK_UNHELPFUL]
    conversation = await bot.conversation(first)
    assert conversation is not None and conversation.is_ended

    # In the ended thread: a private note to whoever posts, once per post, and no model call.
    calls = bot.model_calls()
    await bot.say("hello?", first, user=BOB)
    await bot.driver.post_mention(CHANNEL, ALICE, "are you there", thread_ts=first)
    await bot.idle()
    assert bot.model_calls() == calls
    assert len(bot.replies(first)) == 2
    notes_sent = slack.ephemerals
    assert sorted(e["user"] for e in notes_sent) == [ALICE, BOB]
    assert all(e["thread_ts"] == first and "has ended" in e["text"] for e in notes_sent)

    # Feedback on the ending is recorded.
    await bot.click(notice, ACTION_FEEDBACK_UNHELPFUL, ALICE)
    await slack.wait_for_async(lambda: slack.responses, timeout=10)
    assert slack.responses[-1].body["text"] == FEEDBACK_THANKS
    since = datetime.now(UTC) - timedelta(minutes=5)
    feedback = [e for e in await bot.runtime.store.events(since=since) if e.kind == "feedback"]
    assert [(e.reason, e.conversation_id) for e in feedback] == [("not_helpful", conversation.id)]
    # One vote per person: clicking again does not count twice.
    await bot.click(notice, ACTION_FEEDBACK_HELPFUL, ALICE)
    await slack.wait_for_async(lambda: len(slack.responses) >= 2, timeout=10)
    assert slack.responses[-1].body["text"] == FEEDBACK_ALREADY
    assert len([e for e in await bot.runtime.store.events(since=since) if e.kind == "feedback"]) == 1

    # "Start a new conversation" opens a fresh top-level thread; replying there needs no mention.
    await bot.click(notice, ACTION_NEW_CONVERSATION, ALICE)
    starter = await bot.starter("started a new conversation")
    await bot.say("fresh start", starter["ts"])
    (fresh,) = await bot.answered(starter["ts"])
    assert "fresh start" in fresh["text"]

    # Editing a message of the ended conversation still branches it.
    await bot.driver.message_changed(CHANNEL, ALICE, "tell me about history instead", ts=first)
    branch = await bot.starter("edited")
    (answer,) = await bot.answered(branch["ts"])
    assert "tell me about history instead" in answer["text"]


async def test_an_edit_branches_into_a_new_thread_with_the_history_before_it(bot: Bot, slack: FakeSlack) -> None:
    root = await bot.mention("What is 2+2?")
    await bot.answered(root)
    second = await bot.say("And 3+3?", root)
    await bot.answered(root, 2)

    await bot.driver.message_changed(CHANNEL, ALICE, "And 4+4?", ts=second)
    starter = await bot.starter("edited")
    assert f"{permalink(second)}?thread_ts={root}&amp;cid={CHANNEL}" in starter["text"]
    (answer,) = await bot.answered(starter["ts"])
    assert "And 4+4?" in answer["text"]
    assert bot.last_user_texts() == ["[Alice (U0ALICE)] What is 2+2?", "[Alice (U0ALICE)] And 4+4?"]
    assert len(bot.replies(root)) == 2  # the original thread is untouched
    branch = await bot.conversation(starter["ts"])
    original = await bot.conversation(root)
    assert branch is not None and original is not None and branch.branched_from == original.id

    # Only the author can branch: anyone else's edit changes nothing, and they are told privately.
    calls = bot.model_calls()
    await bot.driver.message_changed(CHANNEL, BOB, "hijacked", ts=second)
    await slack.wait_for_async(lambda: slack.ephemerals, timeout=10)
    await bot.idle()
    assert slack.ephemerals[-1]["user"] == BOB and "Only the author" in slack.ephemerals[-1]["text"]
    assert bot.model_calls() == calls


async def test_confirmation_buttons_count_only_for_the_owner(bot: Bot, slack: FakeSlack) -> None:
    bot.claude.push(END_REQUESTED)
    root = await bot.mention("please end this conversation")
    (question,) = await bot.answered(root)
    assert action_ids(question) == [ACTION_CONFIRM_END, ACTION_CONFIRM_KEEP]
    assert "Of course." in question["text"]

    await bot.click(question, ACTION_CONFIRM_END, BOB)
    await slack.wait_for_async(lambda: slack.responses, timeout=10)
    assert "Only the person who started this conversation" in slack.responses[-1].body["text"]
    conversation = await bot.conversation(root)
    assert conversation is not None and not conversation.is_ended
    assert action_ids(slack.message(CHANNEL, question["ts"])) == [ACTION_CONFIRM_END, ACTION_CONFIRM_KEEP]

    await bot.click(question, ACTION_CONFIRM_KEEP, ALICE)
    await slack.wait_for_async(lambda: not action_ids(slack.message(CHANNEL, question["ts"])), timeout=10)
    assert "the conversation continues" in block_text(slack.message(CHANNEL, question["ts"]) or {})
    conversation = await bot.conversation(root)
    assert conversation is not None and not conversation.is_ended

    bot.claude.push(END_REQUESTED)
    await bot.say("no really, end it", root)
    question = (await bot.answered(root, 2))[-1]
    await bot.click(question, ACTION_CONFIRM_END, ALICE)
    notice = (await bot.answered(root, 3))[-1]
    assert notice["blocks"][0]["type"] == "header"
    assert "You asked to end this conversation." in block_text(notice)
    conversation = await bot.conversation(root)
    assert conversation is not None and conversation.is_ended


# -- moderators and members ------------------------------------------------------------------------------------


async def test_moderators_end_and_reopen_and_others_are_refused(bot: Bot, slack: FakeSlack) -> None:
    root = await bot.mention("hi")
    await bot.answered(root)
    link = permalink(root)

    answer = await bot.command(f"end {link} spam", user=BOB)
    assert "for Last Resort moderators only" in answer
    conversation = await bot.conversation(root)
    assert conversation is not None and not conversation.is_ended

    for moderator in (MOD, GROUP_MOD, ADMIN):  # by id, by user group, as a workspace admin
        assert "is *active*" in await bot.command(f"status {link}", user=moderator)

    # The reason contains "payload", which Bolt would otherwise misread as a button click.
    answer = await bot.command(f"end <{link}> the payload was abuse", user=GROUP_MOD)
    assert answer.startswith("Ended conversation")
    notice = (await bot.answered(root, 2))[-1]
    assert "the payload was abuse" in block_text(notice)
    assert "Ended by a moderator." in block_text(notice)
    assert "*ended* (moderator" in await bot.command(f"status {link}", user=MOD)

    assert "moderators only" in await bot.command(f"reopen {link}", user=ALICE)
    assert (await bot.command(f"reopen {link}", user=ADMIN)).startswith("Reopened")
    assert "reopened" in (await bot.answered(root, 3))[-1]["text"]
    await bot.say("back again", root)
    assert "back again" in (await bot.answered(root, 4))[-1]["text"]

    stats = await bot.command("stats", user=MOD)
    assert "Ended by moderators: *1*" in stats and "Reopened: *1*" in stats
    assert "I don't know `bogus`" in await bot.command("bogus", user=BOB)


async def test_forget_deletes_what_a_member_wrote(bot: Bot) -> None:
    root = await bot.mention("remember my secret plan")
    await bot.answered(root)
    assert await bot.conversation(root) is not None

    answer = await bot.command("forget", user=ALICE)
    assert answer.startswith("Done: I removed the text of the 1 message you wrote")
    forgotten = await bot.conversation(root)
    assert forgotten is not None and forgotten.owner_id == "forgotten"
    history = await bot.runtime.store.messages(forgotten.id)
    assert history and all(m.text == "[removed]" and m.author_id is None for m in history)
    assert "secret plan" not in str([m.blocks for m in history])


async def test_home_tab_for_moderators_and_members(bot: Bot, slack: FakeSlack) -> None:
    root = await bot.mention("hi")
    await bot.answered(root)
    await bot.command(f"end {permalink(root)} testing", user=MOD)
    await bot.answered(root, 2)

    await bot.driver.app_home_opened(MOD)
    await slack.wait_for_async(lambda: MOD in slack.views, timeout=10)
    home = block_text(slack.views[MOD])
    assert "Recent endings" in home
    assert f"<{permalink(root)}|conversation #" in home
    assert "Ended by moderators: *1*" in home

    await bot.driver.app_home_opened(ALICE)
    await slack.wait_for_async(lambda: ALICE in slack.views, timeout=10)
    assert "Recent endings" not in block_text(slack.views[ALICE])
    assert "Mention me in a channel" in block_text(slack.views[ALICE])


# -- output safety and reliability ------------------------------------------------------------------------------


async def test_model_text_never_pings_anyone(bot: Bot, slack: FakeSlack) -> None:
    # Long enough to stream while it is written, so the streamed chunks are checked as well as the end.
    pings = "<!channel> <!here> <!everyone> <@U0BOB> <!subteam^S0MODS|@mods> <https://evil.example|your bank>"
    bare = "@here @channel [your bank](https://evil.example)"
    bot.claude.chunk_delay = 0.25
    bot.claude.push(Reply.text(f"Hey {pings} {bare} & friends. " + "Some more words to stream. " * 12))
    root = await bot.mention("say something loud")
    (reply,) = await bot.answered(root)
    sent = [p for m in STREAM_AND_POST for p in slack.calls_to(m)]
    assert slack.calls_to("chat.appendStream")  # streamed, not only posted at the end
    for params in sent:
        shown = json.dumps([params.get(k) for k in ("text", "blocks", "markdown_text", "chunks")], ensure_ascii=False)
        for ping in ("<!channel>", "<!here>", "<!everyone>", "<@U0BOB>", "<!subteam", "<https:", "@here", "@channel"):
            assert ping not in shown
        assert "](https" not in shown  # no Markdown link hides where it goes
    (markdown,) = [b["text"] for b in reply["blocks"] if b["type"] == "markdown"]
    assert "&lt;!channel&gt;" in markdown and "&amp; friends" in markdown
    assert "https://evil.example" in markdown  # the address stays readable


async def test_a_slack_rate_limit_is_retried_and_nothing_is_lost(bot: Bot, slack: FakeSlack) -> None:
    # A short answer is posted whole (nothing was streamed before it was complete).
    slack.fail_next("chat.postMessage", 429, retry_after=0)
    root = await bot.mention("hello despite limits")
    (reply,) = await bot.answered(root)
    assert "hello despite limits" in reply["text"]
    assert slack.faults_served == [("chat.postMessage", 429, "ratelimited")]
    assert len(bot.replies(root)) == 1  # retried once, posted once


async def test_model_overload_gives_a_notice_and_keeps_the_message(
    bot: Bot, slack: FakeSlack, settings: Settings
) -> None:
    bot.claude.push(Reply.error(529))
    root = await bot.mention("first question")
    (notice,) = await bot.answered(root)
    assert notice["text"] == settings.notices.model_unavailable

    await bot.say("second question", root)
    await bot.answered(root, 2)
    assert bot.last_user_texts() == ["[Alice (U0ALICE)] first question", "[Alice (U0ALICE)] second question"]


@pytest.mark.slow
async def test_words_that_came_with_a_refused_call_never_reach_slack(bot: Bot, slack: FakeSlack) -> None:
    # The model writes a long goodbye (long enough to be shown while it streams) and a warning the core
    # refuses (too few redirects), then starts over. The goodbye must leave the screen and never return.
    bot.claude.chunk_delay = 0.25
    goodbye = "DRAFT: this is a formal warning. " * 10
    refused = Reply.tool("warn_user", {"behavior": "x", "redirect_attempts": 0}, text=goodbye)
    bot.claude.push(refused, Reply.text("Let's talk about something else."))
    root = await bot.mention("hm")
    (reply,) = await bot.answered(root)
    started = slack.calls_to("chat.startStream")
    assert started and "DRAFT" in json.dumps(started[0])  # it was on screen while it looked like an answer
    (withdrawn,) = [m for _, m in slack.deleted]
    assert "DRAFT" in withdrawn["text"]  # ... and was taken back
    assert [m["ts"] for m in bot.replies(root)] == [reply["ts"]]
    assert "DRAFT" not in block_text(reply) and "DRAFT" not in reply["text"]
    assert "Let's talk about something else." in block_text(reply)


@pytest.mark.slow
async def test_words_before_a_refused_call_are_withdrawn_when_streaming_is_refused_too(
    bot: Bot, slack: FakeSlack
) -> None:
    slack.streaming_error = "feature_not_enabled"
    bot.claude.chunk_delay = 0.25
    refused = Reply.tool("warn_user", {"behavior": "x", "redirect_attempts": 0}, text="DRAFT: goodbye. " * 20)
    bot.claude.push(refused, Reply.text("Let's talk about something else."))
    root = await bot.mention("hm")
    (reply,) = await bot.answered(root)
    assert "DRAFT" not in block_text(reply) and "DRAFT" not in reply["text"]
    assert "Let's talk about something else." in block_text(reply)


async def test_a_long_answer_streams_and_its_markdown_arrives_intact(bot: Bot, slack: FakeSlack) -> None:
    bot.claude.chunk_delay = 0.3  # about 2.4 s of streaming
    long_text = "## Plan\n\n**bold** and *italic* and `code`.\n\n" + " ".join(f"word{i}" for i in range(500))
    bot.claude.push(Reply.text(long_text))
    started = time.monotonic()
    root = await bot.mention("write a lot")
    (reply,) = await bot.answered(root)
    seconds = time.monotonic() - started
    (start,) = slack.calls_to("chat.startStream")
    assert start["thread_ts"] == root
    assert (start["recipient_team_id"], start["recipient_user_id"]) == (slack.team_id, ALICE)
    appends = slack.calls_to("chat.appendStream")
    assert 1 <= len(appends) <= seconds + 1  # paced: at most one append a second
    (stop,) = slack.calls_to("chat.stopStream")
    assert [b["type"] for b in stop["blocks"]] == ["context_actions"]  # feedback under the answer
    assert slack.calls_to("chat.postMessage") == [] and slack.calls_to("chat.update") == []
    (markdown,) = [b["text"] for b in reply["blocks"] if b["type"] == "markdown"]
    assert markdown.startswith("## Plan\n\n**bold** and *italic* and `code`.")
    assert markdown.split() == long_text.split()
    assert not slack.is_streaming(CHANNEL, reply["ts"])


async def test_when_slack_refuses_streaming_the_answer_still_arrives(bot: Bot, slack: FakeSlack) -> None:
    slack.streaming_error = "feature_not_enabled"
    bot.claude.chunk_delay = 0.25
    text = "**Still here.** " + "More words to say. " * 20
    bot.claude.push(Reply.text(text))
    root = await bot.mention("hello")
    (reply,) = await bot.answered(root)
    assert slack.calls_to("chat.startStream") and not slack.calls_to("chat.stopStream")
    assert slack.calls_to("chat.postMessage")  # posted and updated instead
    (markdown,) = [b["text"] for b in reply["blocks"] if b["type"] == "markdown"]
    assert markdown.split() == text.split()
    assert "context_actions" in [b["type"] for b in reply["blocks"]]


async def test_a_stream_slack_stopped_is_finished_in_place(bot: Bot, slack: FakeSlack) -> None:
    bot.claude.chunk_delay = 0.3
    text = "First part of a long answer. " * 30
    bot.claude.push(Reply.text(text))
    root = await bot.mention("hello")
    await slack.wait_for_call_async("chat.startStream", timeout=10)
    (streaming,) = await slack.wait_for_async(lambda: bot.replies(root), timeout=10)
    slack.end_stream(CHANNEL, streaming["ts"])  # Slack expired it: appends and stopping now fail
    await bot.idle(quiet=0.5)
    (reply,) = bot.replies(root)
    assert reply["ts"] == streaming["ts"]  # the same message, finished with chat.update
    assert slack.calls_to("chat.update")
    (markdown,) = [b["text"] for b in reply["blocks"] if b["type"] == "markdown"]
    assert markdown.split() == text.split()


async def test_during_shutdown_slack_is_asked_to_redeliver(bot: Bot, slack: FakeSlack) -> None:
    bot.runtime.work.close()
    assert (await bot.driver.app_mention(CHANNEL, ALICE, "late")).status == 503
    command = await bot.driver.command("stats", user=MOD, channel=CHANNEL)
    assert (command.status, command.body) == (200, RESTARTING)
    await asyncio.sleep(0.2)
    assert bot.model_calls() == 0
    assert slack.calls_to("chat.postMessage") == []


# -- the real process -----------------------------------------------------------------------------------------


async def test_lastresort_run_answers_slack_and_stops_cleanly(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    env = {
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.api_url,
        "ANTHROPIC_API_KEY": "sk-ant-process-test-key",
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "LASTRESORT_CONFIG": str(REPO / "config" / "lastresort.yaml"),
    }
    async with BotProcess(env, log_path=tmp_path / "run.log") as process:
        driver = SlackDriver(SECRET, f"{process.url}/slack/events", fake=slack)
        sent = await driver.post_mention(CHANNEL, ALICE, "hello from a process")
        assert [reply.status for reply in sent] == [200, 200]
        ts = str(sent[0].payload["event"]["ts"])
        await slack.wait_for_async(
            lambda: any('hello from a process"' in m["text"] for m in slack.bot_messages(CHANNEL, ts)), timeout=15
        )
        assert await process.terminate(timeout=30) == 0
    logs = process.output()
    assert len(slack.bot_messages(CHANNEL, ts)) == 1  # exactly one reply to the mention pair
    # A short answer, complete before any of it was shown: one post, the feedback buttons under it, no stream.
    (answer,) = slack.calls_to("chat.postMessage")
    assert [b["type"] for b in answer["blocks"]] == ["markdown", "context_actions"]
    assert slack.calls_to("chat.startStream") == []
    for secret in (SECRET, slack.token, "sk-ant-process-test-key"):
        assert secret not in logs
    assert "hello from a process" not in logs  # no message text in the logs


async def test_a_bare_mention_starts_a_conversation_that_the_thread_continues(bot: Bot, slack: FakeSlack) -> None:
    root = await bot.mention("")
    await slack.wait_for_async(lambda: slack.ephemerals, timeout=10, what="the note")
    assert "What would you like to talk about?" in slack.ephemerals[-1]["text"]
    assert bot.model_calls() == 0
    await bot.say("what is a good name for a boat?", root)
    (reply,) = await bot.answered(root)
    assert "what is a good name for a boat?" in reply["text"]


async def test_buttons_act_only_on_conversations_that_exist_where_they_are_clicked(bot: Bot, slack: FakeSlack) -> None:
    from bots.slack.buttons import NOT_YOURS, STALE

    first = await bot.mention("hello")
    await bot.answered(first)
    conversation = await bot.conversation(first)
    assert conversation is not None
    slack.add_channel("C0ELSEWHERE", "elsewhere")

    def buttons(value: str) -> dict[str, object]:
        ids = (ACTION_FEEDBACK_HELPFUL, ACTION_NEW_CONVERSATION, ACTION_CONFIRM_END)
        elements = [
            {"type": "button", "action_id": i, "value": value, "text": {"type": "plain_text", "text": i}} for i in ids
        ]
        return {
            "ts": "1.000001",
            "thread_ts": first,
            "text": "b",
            "blocks": [{"type": "actions", "elements": elements}],
        }

    async def click(value: str, action_id: str, user: str = ALICE, channel: str = CHANNEL) -> str:
        before = len(slack.responses)
        sent = await bot.driver.click(buttons(value), action_id, user, channel=channel)
        assert sent.status == 200
        await slack.wait_for_async(lambda: len(slack.responses) > before, timeout=10, what="a response")
        return str(slack.responses[-1].body["text"])

    real = str(conversation.id)
    assert await click("987654", ACTION_FEEDBACK_HELPFUL) == STALE  # no such conversation
    assert await click("not-a-number", ACTION_FEEDBACK_HELPFUL) == STALE
    assert await click(real, ACTION_FEEDBACK_HELPFUL, channel="C0ELSEWHERE") == STALE  # not this channel's
    assert await click(real, ACTION_FEEDBACK_HELPFUL, user=BOB) == NOT_YOURS  # never took part
    since = datetime.now(UTC) - timedelta(minutes=5)
    assert [e for e in await bot.runtime.store.events(since=since) if e.kind == "feedback"] == []
    assert await click("987654", ACTION_NEW_CONVERSATION) == STALE
    assert not [m for m in slack.bot_messages(CHANNEL) if "started a new conversation" in m["text"]]
    assert await click("987654", ACTION_CONFIRM_END) == "This request is no longer available."
    # The person who took part is heard.
    assert await click(real, ACTION_FEEDBACK_HELPFUL) == FEEDBACK_THANKS
    assert len([e for e in await bot.runtime.store.events(since=since) if e.kind == "feedback"]) == 1


async def test_a_stream_cut_short_by_shutdown_leaves_a_note_instead_of_half_an_answer(
    bot: Bot, slack: FakeSlack
) -> None:
    bot.claude.chunk_delay = 0.3
    bot.claude.push(Reply.text("A long answer that a restart cuts in the middle. " * 20))
    root = await bot.mention("question")
    (streaming,) = await slack.wait_for_async(lambda: bot.replies(root), timeout=10, what="the stream")
    assert slack.is_streaming(CHANNEL, streaming["ts"])
    bot.runtime.work.close()
    await bot.runtime.work.cancel_running(2)

    (note,) = bot.replies(root)
    assert note["ts"] == streaming["ts"] and note["text"] == INTERRUPTED
    assert "restart cuts" not in block_text(note)
    assert not slack.is_streaming(CHANNEL, note["ts"])  # stopped, not left spinning


async def test_an_answer_slack_would_not_take_is_posted_again_once(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    # Every way the answer can be posted fails, beyond the client's retries; recovery looks every 0.2 s.
    quick = settings.recovery.model_copy(update={"age_seconds": 1.0, "interval_seconds": 0.2})
    for method in ("chat.startStream", "chat.postMessage"):
        slack.fail_next(method, 500, retry_after=None, times=4)
    async with running_bot(
        slack, fake_anthropic, settings.model_copy(update={"recovery": quick}), tmp_path / "slack.db"
    ) as bot:
        bot.claude.push(Reply.text("The answer Slack refused at first."))
        root = await bot.mention("a question")
        await slack.wait_for_async(
            lambda: [r for r in bot.replies(root) if "refused at first" in r.get("text", "")] or None,
            15,
            "the answer, posted again",
        )
        await asyncio.sleep(1.0)  # more sweeps: nothing is posted twice
        await bot.idle()
        assert [r.get("text", "") for r in bot.replies(root)].count("The answer Slack refused at first.") <= 1
        assert sum("refused at first" in json.dumps(r) for r in bot.replies(root)) == 1
        assert bot.model_calls() == 1  # posted from the store, not asked again


async def test_answers_slack_took_are_never_posted_again(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    """Every answer path counts its answer delivered: recovery sweeping quickly re-posts none of them."""
    quick = settings.recovery.model_copy(update={"age_seconds": 1.0, "interval_seconds": 0.2})
    async with running_bot(
        slack, fake_anthropic, settings.model_copy(update={"recovery": quick}), tmp_path / "slack.db"
    ) as bot:
        root = await bot.mention("What is 2+2?")
        await bot.answered(root)
        second = await bot.say("And 3+3?", root)
        await bot.answered(root, 2)
        await bot.driver.message_changed(CHANNEL, ALICE, "And 4+4?", ts=second)
        starter = await bot.starter("edited")
        await bot.answered(starter["ts"])
        await asyncio.sleep(2.0)  # ten sweeps
        await bot.idle()
        assert len(bot.replies(root)) == 2
        assert len(bot.replies(starter["ts"])) == 1
        assert bot.model_calls() == 3
