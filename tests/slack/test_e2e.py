"""The Slack adapter end to end: signed requests into the real Bolt app the adapter builds, a real SQLite
store and Claude client, the fake Anthropic API behind the client and the fake Slack Web API in front.

Each test reads like a rule of the product: what people do in Slack, what reaches the model, what Slack
shows afterwards. The last test runs `lastresort run` as a real process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bots.environment import Environment
from bots.runtime import Runtime
from bots.slack.bot import SlackAdapter
from bots.slack.commands import RESTARTING
from bots.slack.render import (
    ACTION_CONFIRM_END,
    ACTION_CONFIRM_KEEP,
    ACTION_FEEDBACK_HELPFUL,
    ACTION_FEEDBACK_UNHELPFUL,
    ACTION_NEW_CONVERSATION,
)
from core.domain import Conversation, ThreadKey
from core.service import FEEDBACK_ALREADY, FEEDBACK_THANKS
from core.settings import ModeratorSettings, Settings
from tests.support.bot_process import BotProcess
from tests.support.fake_anthropic import FakeAnthropic, Reply
from tests.support.fake_slack import FakeSlack, SlackDriver, find_buttons, serve_web_app
from tests.support.model_scripts import END_ABUSE, END_REQUESTED, WARN
from tests.support.paths import REPO
from tests.support.runtime import runtime_for, until_idle

SECRET = "e2e-signing-secret-0123456789"
CHANNEL = "C0GENERAL"
ALICE, BOB = "U0ALICE", "U0BOB"
MOD, GROUP_MOD, ADMIN = "U0MOD", "U0GROUPMOD", "U0ADMIN"
MODS_GROUP = "S0MODS"


# -- the bot under test ---------------------------------------------------------------------------------


@dataclass
class Bot:
    slack: FakeSlack
    claude: FakeAnthropic
    driver: SlackDriver
    runtime: Runtime

    async def idle(self, quiet: float = 0.2) -> None:
        await until_idle(self.runtime.work, quiet=quiet)

    def replies(self, ts: str) -> list[dict[str, Any]]:
        return [m for m in self.slack.bot_messages(CHANNEL, ts) if m["ts"] != ts]

    async def answered(self, ts: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait for `count` bot messages in the thread, then for the bot to finish (final text in place)."""
        await self.slack.wait_for_async(lambda: len(self.replies(ts)) >= count, timeout=10, what="a reply")
        await self.idle()
        return self.replies(ts)

    async def starter(self, containing: str) -> dict[str, Any]:
        """Wait for a top-level bot message (a new thread the bot opened) whose text contains `containing`."""

        def find() -> dict[str, Any] | None:
            found = [m for m in self.slack.bot_messages(CHANNEL) if containing in m["text"]]
            return found[0] if found else None

        message = await self.slack.wait_for_async(find, timeout=10, what=f"a thread starter with {containing!r}")
        assert message is not None
        assert message.get("thread_ts", message["ts"]) == message["ts"]  # top level
        return message

    async def mention(self, text: str, user: str = ALICE) -> str:
        """A mention as Slack delivers it (app_mention and message); returns the post's ts."""
        sent = await self.driver.post_mention(CHANNEL, user, text)
        assert all(reply.status == 200 for reply in sent)
        return str(sent[0].payload["event"]["ts"])

    async def say(self, text: str, thread_ts: str, user: str = ALICE) -> str:
        sent = await self.driver.message(CHANNEL, user, text, thread_ts=thread_ts)
        assert sent.status == 200
        return str(sent.payload["event"]["ts"])

    async def command(self, text: str, user: str) -> str:
        """Run /lastresort and return what it answered the invoker (through response_url)."""
        before = len(self.slack.responses)
        sent = await self.driver.command(text, user=user, channel=CHANNEL)
        assert (sent.status, sent.body) == (200, "")
        await self.slack.wait_for_async(lambda: len(self.slack.responses) > before, timeout=10, what="a response")
        return str(self.slack.responses[-1].body["text"])

    async def click(self, message: dict[str, Any], action_id: str, user: str) -> None:
        sent = await self.driver.click(message, action_id, user, channel=CHANNEL)
        assert sent.status == 200

    async def conversation(self, ts: str) -> Conversation | None:
        return await self.runtime.service.find_conversation(ThreadKey("slack", CHANNEL, ts))

    def model_calls(self) -> int:
        return len(self.claude.message_requests())

    def last_user_texts(self) -> list[str]:
        messages = self.claude.message_requests()[-1].json["messages"]
        return [
            block["text"]
            for message in messages
            if message["role"] == "user"
            for block in message["content"]
            if block.get("type") == "text"
        ]


def permalink(ts: str) -> str:
    return f"https://fake.slack.com/archives/{CHANNEL}/p{ts.replace('.', '')}"


def action_ids(message: dict[str, Any] | None) -> list[str]:
    return [element["action_id"] for _, element in find_buttons((message or {}).get("blocks", []))]


def block_text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks", []), ensure_ascii=False)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel(CHANNEL, "general")
        fake.add_user(ALICE, "alice", display_name="Alice")
        fake.add_user(BOB, "bob", display_name="Bob")
        fake.add_user(MOD, "mod")
        fake.add_user(GROUP_MOD, "groupmod")
        fake.add_user(ADMIN, "admin", is_admin=True)
        fake.add_usergroup(MODS_GROUP, "mods", [GROUP_MOD])
        yield fake
        assert fake.errors == []


@asynccontextmanager
async def running_bot(slack: FakeSlack, claude: FakeAnthropic, settings: Settings, db: Path) -> AsyncIterator[Bot]:
    env = Environment(
        anthropic_api_key="sk-ant-test",
        anthropic_base_url=claude.base_url,
        slack_bot_token=slack.token,
        slack_signing_secret=SECRET,
        slack_api_url=slack.api_url,
    )
    async with runtime_for(env, settings, claude, db) as runtime:
        adapter = SlackAdapter(runtime)
        app = web.Application()
        app.add_routes(adapter.routes())
        async with serve_web_app(app) as base_url:
            await adapter.start()
            bot = Bot(slack, claude, SlackDriver(SECRET, f"{base_url}/slack/events", fake=slack), runtime)
            try:
                yield bot
            finally:
                await bot.idle()
                await adapter.stop()


@pytest.fixture
async def bot(
    slack: FakeSlack, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> AsyncIterator[Bot]:
    moderators = ModeratorSettings(
        slack_user_ids=(MOD,), slack_usergroup_ids=(MODS_GROUP,), slack_workspace_admins=True
    )
    configured = settings.model_copy(update={"moderators": moderators})
    async with running_bot(slack, fake_anthropic, configured, tmp_path / "slack.db") as running:
        yield running


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
    pings = "<!channel> <!here> <!everyone> <@U0BOB> <!subteam^S0MODS|@mods>"
    bot.claude.push(Reply.text(f"Hey {pings} & friends"))
    root = await bot.mention("say something loud")
    (reply,) = await bot.answered(root)
    assert "&lt;!channel&gt;" in reply["text"]
    sent = [p for m in ("chat.postMessage", "chat.update") for p in slack.calls_to(m)]
    assert sent
    for params in sent:
        shown = json.dumps([params.get("text"), params.get("blocks")])
        for ping in ("<!channel>", "<!here>", "<!everyone>", "<@U0BOB>", "<!subteam"):
            assert ping not in shown
    sections = [b for b in reply["blocks"] if b["type"] == "section"]
    assert all(b["text"].get("verbatim") is True for b in sections)


async def test_a_slack_rate_limit_is_retried_and_nothing_is_lost(bot: Bot, slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", 429, retry_after=0)
    root = await bot.mention("hello despite limits")
    (reply,) = await bot.answered(root)
    assert "hello despite limits" in reply["text"]
    assert slack.faults_served == [("chat.postMessage", 429, "ratelimited")]


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


async def test_words_that_came_with_a_refused_call_never_reach_slack(bot: Bot, slack: FakeSlack) -> None:
    # The model writes words and a warning the core refuses (too few redirects), then starts over. The
    # words stream slowly, so a draft would show them if anything did.
    bot.claude.chunk_delay = 0.1
    refused = Reply.tool(
        "warn_user", {"behavior": "x", "redirect_attempts": 0}, text="DRAFT: this is a formal warning."
    )
    bot.claude.push(refused, Reply.text("Let's talk about something else."))
    root = await bot.mention("hm")
    (reply,) = await bot.answered(root)
    shown = [call["text"] for call in slack.calls_to("chat.postMessage") + slack.calls_to("chat.update")]
    assert shown and not any("DRAFT" in text for text in shown)
    assert reply["text"] == "Let's talk about something else."
    assert "DRAFT" not in block_text(reply)


async def test_draft_updates_are_throttled_and_long_replies_split(bot: Bot, slack: FakeSlack) -> None:
    bot.claude.chunk_delay = 0.15  # about 2 s of streaming
    # About 3,900 characters: more than one section, less than the reply's max_tokens lets the model write.
    long_text = " ".join(f"word{i}" for i in range(500))
    bot.claude.push(Reply.text(long_text))
    started = time.monotonic()
    root = await bot.mention("write a lot")
    (reply,) = await bot.answered(root)
    seconds = time.monotonic() - started
    updates = slack.calls_to("chat.update")
    assert 1 <= len(updates) <= seconds + 1  # at most one draft update a second, plus the final one
    sections = [b["text"]["text"] for b in reply["blocks"] if b["type"] == "section"]
    assert len(sections) >= 2 and all(len(s) <= 3000 for s in sections)
    assert " ".join(sections).split() == long_text.split()


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

    def buttons(value: str) -> dict[str, Any]:
        ids = (ACTION_FEEDBACK_HELPFUL, ACTION_NEW_CONVERSATION, ACTION_CONFIRM_END)
        elements = [
            {"type": "button", "action_id": i, "value": value, "text": {"type": "plain_text", "text": i}} for i in ids
        ]
        return {"ts": "1.000001", "thread_ts": first, "text": "b", "blocks": [{"type": "actions", "elements": elements}]}

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
