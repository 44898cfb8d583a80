"""Issue 15 end to end: every ending shown, every message answered, through outages, sessions Discord would not
resume, restarts and missing permissions; and what is not plain text reaches the model as text.

The real discord.py client the adapter builds (or the real `lastresort run` process), against FakeDiscord on
loopback, with a real service and store and the real Claude client talking to the fake Anthropic API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bots.discord.bot import DiscordAdapter
from bots.discord.components import NO_SUCH_CONVERSATION, UNKNOWN_BUTTON
from bots.discord.content import ONLY_TEXT
from bots.discord.render import UNDELIVERED
from bots.discord.views import feedback_id
from core.settings import Settings
from tests.discord import test_e2e
from tests.discord.test_e2e import Bot, discord_env, notices, running_adapter, started_bot
from tests.support.bot_process import BotProcess, config_with
from tests.support.fake_anthropic import FakeAnthropic, Reply
from tests.support.fake_discord import FakeDiscord
from tests.support.model_scripts import END_ABUSE, WARN
from tests.support.runtime import runtime_for

# The fixtures of the Discord end-to-end tests, by name: a FakeDiscord, and a bot connected to it.
fake = test_e2e.fake
bot = test_e2e.bot

MISSING_ACCESS = {"code": 50001, "message": "Missing Access"}


def quick(settings: Settings) -> Settings:
    """Recovery that looks every 0.2 s for messages older than 1 s: an outage is over in seconds here."""
    recovery = settings.recovery.model_copy(update={"age_seconds": 1.0, "interval_seconds": 0.2})
    return settings.model_copy(update={"recovery": recovery})


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages]


def channel_notes(bot: Bot, needle: str) -> list[dict[str, Any]]:
    return [m for m in bot.bot_messages(bot.fake.text_channel_id) if needle in m["content"]]


# -- endings -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [(403, MISSING_ACCESS, "Discord answered 403 (error 50001)"), (503, None, "Discord answered 503")],
    ids=["missing-access", "server-error"],
)
async def test_an_ending_is_shown_even_when_the_lock_fails(
    status: int, body: dict[str, Any] | None, why: str, bot: Bot, fake: FakeDiscord
) -> None:
    bot.claude.push(WARN, END_ABUSE)
    thread = await bot.mention("tell me how to hurt people")
    await bot.answered(thread)
    fake.fail_next("PATCH", rf"^/channels/{thread}$", status=status, body=body)
    bot.say(thread, "tell me anyway")
    await fake.wait_for(lambda: notices(bot, thread), 10, what="the ending notice")
    await bot.idle()

    [notice] = notices(bot, thread)
    assert "You kept demanding violent instructions after a warning." in json.dumps(notice["embeds"])
    conversation = await bot.conversation(fake.text_channel_id, thread)
    assert conversation is not None and conversation.is_ended
    assert fake.thread(thread)["thread_metadata"]["locked"] is False
    # Moderators hear it once, where they read; the bot still keeps the thread closed itself.
    [note] = channel_notes(bot, "could not lock the thread")
    assert why in note["content"]
    calls = bot.model_calls()
    bot.say(thread, "hello?")
    replies = await bot.answered(thread, 3)
    assert replies[-1]["content"].startswith("🔒 This conversation has ended")
    assert bot.model_calls() == calls


async def test_a_moderator_end_reports_what_happened_when_the_lock_fails(bot: Bot, fake: FakeDiscord) -> None:
    thread = await bot.mention("first")
    await bot.answered(thread)
    fake.fail_next("PATCH", rf"^/channels/{thread}$", status=403, body=MISSING_ACCESS)
    answer = await bot.command(bot.mod, thread, "lastresort-mod", "end", {"reason": "enough"})
    assert answer.startswith("Ended conversation") and "could not lock" in answer and "50001" in answer
    assert "Something went wrong" not in answer
    assert len(notices(bot, thread)) == 1


# -- delivery ------------------------------------------------------------------------------------------------


async def test_an_answer_lost_in_a_rest_outage_arrives_once_discord_is_back(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    async with started_bot(fake, fake_anthropic, quick(settings), tmp_path / "outage.db") as bot:
        thread = await bot.mention("first question")
        await bot.answered(thread)
        bot.claude.push(Reply.text("The answer that must not be lost."))
        # Discord's REST API fails every post in the thread for 2.5 s (beyond discord.py's own retries).
        fake.fail_for("POST", rf"^/channels/{thread}/messages$", 2.5, status=503)
        bot.say(thread, "second question")
        await fake.wait_for(lambda: bot.model_calls() == 2, 10, what="the model call")
        replies = await fake.wait_for(
            lambda: [m for m in bot.bot_messages(thread) if "must not be lost" in m["content"]], 15, what="the answer"
        )
        await asyncio.sleep(1.0)  # more sweeps: nothing is posted twice
        await bot.idle()
        assert len(replies) == 1
        assert texts(bot.bot_messages(thread)).count("The answer that must not be lost.") == 1
        assert bot.model_calls() == 2  # posted again from the store, not asked again
        conversation = await bot.conversation(fake.text_channel_id, thread)
        assert conversation is not None
        assert all(m.delivered for m in await bot.runtime.store.messages(conversation.id))


@pytest.mark.slow
async def test_after_giving_up_the_person_is_told_plainly_once(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    async with started_bot(fake, fake_anthropic, quick(settings), tmp_path / "give-up.db", delivery_attempts=1) as bot:
        thread = await bot.mention("first question")
        await bot.answered(thread)
        bot.claude.push(Reply.text("An answer the thread never takes."))
        fake.fail_for("POST", rf"^/channels/{thread}/messages$", 4.0, status=503)
        bot.say(thread, "second question")
        dm = fake.dm_channel_id(bot.alice)
        await fake.wait_for(lambda: bot.bot_messages(dm), 15, what="the note")
        await asyncio.sleep(5.0)  # the outage ends; no further attempt posts the answer or the note
        await bot.idle()
        assert texts(bot.bot_messages(dm)) == [UNDELIVERED]
        assert not any("never takes" in m["content"] for m in bot.bot_messages(thread))
        assert bot.model_calls() == 2


async def test_answers_discord_took_are_never_posted_again(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    """Every answer path counts its answer delivered: recovery sweeping quickly re-posts none of them."""
    async with started_bot(fake, fake_anthropic, quick(settings), tmp_path / "once.db") as bot:
        bot.claude.push(Reply.text("Hello."), WARN)
        thread = await bot.mention("What is 2+2?")
        await bot.answered(thread)
        second = bot.say(thread, "And 3+3?")  # answered with a formal warning
        await bot.answered(thread, 2)
        fake.user_edit(thread, second, "And 4+4?")  # a branch
        await fake.wait_for(lambda: bot.model_calls() == 3, 10, what="the branch's answer")
        dm = fake.dm_channel_id(bot.alice)
        bot.say(dm, "private question")
        await bot.answered(dm)
        bot.claude.push(WARN, END_ABUSE)
        ending = await bot.mention("tell me how to hurt people")
        await bot.answered(ending)
        bot.say(ending, "tell me anyway")
        await fake.wait_for(lambda: notices(bot, ending), 10, what="the notice")
        await bot.idle()
        before = {c: len(bot.bot_messages(c)) for c in (thread, dm, ending, *(int(t["id"]) for t in fake.threads))}
        await asyncio.sleep(2.0)  # ten sweeps
        await bot.idle()
        assert {c: len(bot.bot_messages(c)) for c in before} == before
        assert bot.model_calls() == 6


# -- catching up ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close-4009", "op9-not-resumable"])
async def test_a_message_sent_while_the_session_could_not_be_resumed_is_answered_once(
    how: str, bot: Bot, fake: FakeDiscord
) -> None:
    thread = await bot.mention("first question")
    await bot.answered(thread)
    if how == "close-4009":
        assert fake.disconnect_gateway(code=4009, resumable=False) == 1
    else:
        assert fake.invalidate_session(resumable=False) == 1
    bot.say(thread, "sent in the gap")  # no session is listening: Discord never delivers it
    await fake.wait_for(lambda: fake.gateway_stats["identifies"] == 2, 15, what="a fresh IDENTIFY")
    replies = await bot.answered(thread, 2)
    assert "sent in the gap" in replies[-1]["content"]
    await asyncio.sleep(0.5)
    await bot.idle()
    assert len(bot.bot_messages(thread)) == 2
    assert bot.model_calls() == 2


@pytest.mark.slow
async def test_with_shards_a_message_sent_while_a_shard_re_identified_is_answered_once(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    alice = int(fake.add_member(None, "alice")["user"]["id"])
    env = discord_env(fake, fake_anthropic, discord_shard_count=2)  # two shards in this process
    async with running_adapter(fake, fake_anthropic, settings, tmp_path / "shards.db", env=env) as runtime:
        bot = Bot(fake, fake_anthropic, runtime, alice, alice, alice)
        # discord.py connects shards about 5 s apart: the guild's may be the second one.
        await fake.wait_for(lambda: sum(s.connected for s in fake.sessions) == 2 or None, 30, what="both shards")
        thread = await bot.mention("first question")
        await bot.answered(thread)
        # Only the guild's shard gets a fresh session: discord.py then says shard_ready, not ready.
        home = (fake.guild_id >> 22) % 2
        [session] = [s.session_id for s in fake.sessions if s.shard[0] == home]
        assert fake.invalidate_session(resumable=False, session_id=session) == 1
        bot.say(thread, "sent in the gap")
        await fake.wait_for(lambda: fake.gateway_stats["identifies"] == 3, 20, what="a fresh IDENTIFY")
        replies = await bot.answered(thread, 2)
        assert "sent in the gap" in replies[-1]["content"]
        await asyncio.sleep(0.5)
        await bot.idle()
        assert len(bot.bot_messages(thread)) == 2 and bot.model_calls() == 2


async def test_a_message_sent_while_the_worker_restarts_is_answered_once(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    alice = int(fake.add_member(None, "alice")["user"]["id"])
    env = {
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "ANTHROPIC_API_KEY": "sk-ant-process-test-key",
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy.db'}",
        "LASTRESORT_CONFIG": str(config_with(tmp_path)),
    }

    def replies(thread: int) -> list[dict[str, Any]]:
        return [m for m in fake.channel_messages(thread) if int(m["author"]["id"]) == fake.bot_user_id]

    async with BotProcess(env, log_path=tmp_path / "first.log", args=("--adapters", "discord")) as first:
        await fake.wait_for(lambda: any(s.connected for s in fake.sessions), 20, what="a session")
        thread = int(fake.user_post(fake.text_channel_id, alice, "first question", mentions_bot=True)["id"])
        await fake.wait_for(lambda: thread in {int(t["id"]) for t in fake.threads} and replies(thread), 15)
        await asyncio.sleep(0.5)
        assert await first.terminate(timeout=25) == 0  # SIGTERM: a deploy with one worker
    fake.user_post(thread, alice, "sent during the deploy")
    async with BotProcess(env, log_path=tmp_path / "second.log", args=("--adapters", "discord")) as second:
        await fake.wait_for(lambda: len(replies(thread)) >= 2, 20, what="the catch-up answer")
        await asyncio.sleep(1.0)
        assert await second.terminate(timeout=25) == 0
    answers = replies(thread)
    assert len(answers) == 2
    assert "sent during the deploy" in answers[-1]["content"]
    assert len(fake_anthropic.message_requests()) == 2


# -- permissions ---------------------------------------------------------------------------------------------


async def test_without_send_messages_in_threads_moderators_are_told_once_and_the_model_is_not_called(
    bot: Bot, fake: FakeDiscord
) -> None:
    first = await bot.mention("first question")
    await bot.answered(first)
    second = await bot.mention("another conversation")
    await bot.answered(second)
    fake.set_bot_permissions(send_messages_in_threads=False)
    calls = bot.model_calls()
    for thread, text in ((first, "hello?"), (second, "anyone?"), (first, "still there?")):
        bot.say(thread, text)
    await asyncio.sleep(0.5)
    await bot.idle()
    assert bot.model_calls() == calls
    [note] = channel_notes(bot, "Send Messages in Threads")
    assert "once per server" in note["content"]
    assert not [c for c in fake.calls_to("POST", rf"^/channels/({first}|{second})/messages$") if c.status >= 400]


# -- what people send ----------------------------------------------------------------------------------------


async def test_a_text_attachment_and_a_forwarded_message_reach_the_model(bot: Bot, fake: FakeDiscord) -> None:
    thread = await bot.mention("I will send you files")
    await bot.answered(thread)
    notes = ("notes.txt", "text/plain; charset=utf-8", b"The secret word is pelican.")
    fake.user_post(thread, bot.alice, "what does it say?", attachments=[notes])
    await bot.answered(thread, 2)
    [*_, last] = bot.user_texts()
    assert "what does it say?" in last
    assert '[Attached text file "notes.txt"]\nThe secret word is pelican.' in last

    original = fake.user_post(fake.text_channel_id, bot.bob, "Meet at the harbour at noon.")
    fake.user_post(thread, bot.alice, "", forwarded=original)
    await bot.answered(thread, 3)
    assert "[Forwarded message]\nMeet at the harbour at noon." in bot.user_texts()[-1]

    # Nothing readable at all: an honest note, and no model call.
    calls = bot.model_calls()
    fake.user_post(thread, bot.alice, "", stickers=["wave"])
    fake.user_post(thread, bot.alice, "", attachments=[("cat.png", "image/png", b"\x89PNG")])
    replies = await bot.answered(thread, 5)
    assert texts(replies[-2:]) == [ONLY_TEXT, ONLY_TEXT]
    assert bot.model_calls() == calls


async def test_a_webhook_post_is_not_answered(bot: Bot, fake: FakeDiscord) -> None:
    thread = await bot.mention("first question")
    await bot.answered(thread)
    fake.webhook_post(thread, "New blog post: ten ways to hurt people")
    fake.webhook_post(fake.text_channel_id, f"<@{fake.bot_user_id}> feed item")
    bot.say(thread, "sentinel")
    replies = await bot.answered(thread, 2)
    await bot.idle()
    assert "sentinel" in replies[-1]["content"]
    assert len(replies) == 2 and bot.model_calls() == 2
    assert not any("blog post" in text for text in bot.user_texts())
    assert len(fake.threads) == 1


# -- buttons -------------------------------------------------------------------------------------------------


async def test_feedback_for_an_unknown_conversation_is_refused(bot: Bot, fake: FakeDiscord) -> None:
    button = {"type": 2, "style": 2, "label": "👍", "custom_id": feedback_id(999_999, True)}
    posted = fake.bot_post(fake.text_channel_id, "Was this helpful?", components=[{"type": 1, "components": [button]}])
    interaction = await bot.click(bot.alice, posted, button["custom_id"])
    assert bot.answer_to(interaction) == NO_SUCH_CONVERSATION
    events = await bot.runtime.store.events(since=bot.runtime.clock.now().replace(year=2000))
    assert not [e for e in events if e.kind == "feedback"]


async def test_a_button_this_bot_did_not_make_gets_an_answer(bot: Bot, fake: FakeDiscord) -> None:
    button = {"type": 2, "style": 2, "label": "Old", "custom_id": "something:from:an:old:version"}
    posted = fake.bot_post(fake.text_channel_id, "An old message", components=[{"type": 1, "components": [button]}])
    interaction = await bot.click(bot.alice, posted, button["custom_id"])
    assert bot.answer_to(interaction) == UNKNOWN_BUTTON


# -- the gateway and readiness -------------------------------------------------------------------------------


async def test_readiness_follows_the_gateway(bot: Bot, fake: FakeDiscord) -> None:
    readiness = bot.runtime.readiness
    assert readiness.is_ready("discord")
    assert fake.disconnect_gateway(code=4000) == 1
    await fake.wait_for(lambda: fake.gateway_stats["resumes"] == 1, 15, what="RESUME")
    await fake.wait_for(lambda: readiness.is_ready("discord") or None, 5, what="ready again")


@pytest.mark.parametrize("how", ["silent", "refused"])
async def test_a_gateway_that_never_connects_is_not_ready_and_stops_the_process(
    how: str, fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    env = discord_env(fake, fake_anthropic)
    if how == "silent":
        fake.silent_gateway = True  # connections are taken, never greeted
    else:
        env = dataclasses.replace(env, discord_gateway_url="ws://127.0.0.1:9/")  # nothing listens there
    patient = settings.model_copy(
        update={"discord": settings.discord.model_copy(update={"connect_timeout_seconds": 2.0})}
    )
    async with runtime_for(env, patient, fake_anthropic, tmp_path / "dead.db") as runtime:
        adapter = DiscordAdapter(runtime, guild_ready_timeout=0.1, ready_timeout=0.5)
        try:
            await adapter.start()
            assert runtime.readiness.not_ready() == {"discord": "connecting"}
            await asyncio.wait_for(runtime.shutdown.event.wait(), 10)
            assert runtime.shutdown.exit_code == 1  # not a configuration error: a restart may help
            assert "connect" in runtime.shutdown.reason and "DISCORD_GATEWAY_URL" in runtime.shutdown.reason
        finally:
            await adapter.stop()


async def test_readyz_of_the_worker_says_when_discord_is_not_connected(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    env = {
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "ANTHROPIC_API_KEY": "sk-ant-process-test-key",
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ready.db'}",
        "LASTRESORT_CONFIG": str(config_with(tmp_path, discord={"connect_timeout_seconds": 60})),
    }
    fake.silent_gateway = True
    async with BotProcess(env, log_path=tmp_path / "ready.log", args=("--adapters", "discord")) as process:
        async with aiohttp.ClientSession() as session, session.get(f"{process.url}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["not_ready"]["discord"] == "connecting"
        assert await process.terminate(timeout=25) == 0
