"""The Discord adapter end to end: the real discord.py client the adapter builds, against FakeDiscord (REST and
gateway on loopback), with a real service on a real SQLite store and a real Claude client talking to the fake
Anthropic API.

Each test reads like a rule of the product: what people do in Discord, what reaches the model, what Discord
shows afterwards. The last test runs `lastresort run` as a real process.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bots.discord import conversations as discord_conversations
from bots.discord.bot import DiscordAdapter, build_client
from bots.discord.commands import RESTARTING
from bots.discord.invite import required_permissions
from bots.discord.render import INTERRUPTED
from bots.discord.views import NUMBER_FIELD, TEXT_FIELD
from bots.environment import Environment
from bots.runtime import Runtime
from core.domain import Conversation, NewMessage, Role, ThreadKey
from core.prompt import user_text_block
from core.settings import DiscordSettings, Settings
from tests.support.bot_process import BotProcess
from tests.support.fake_anthropic import FakeAnthropic, Reply
from tests.support.fake_discord import DiscordError, FakeDiscord, Perm
from tests.support.model_scripts import END_ABUSE, END_REQUESTED, WARN
from tests.support.paths import REPO
from tests.support.runtime import runtime_for, until_idle

LOCKED = 160005
ARCHIVED = 50083
LOADING = 1 << 7


# -- the bot under test -----------------------------------------------------------------------------------


@dataclass
class Bot:
    fake: FakeDiscord
    claude: FakeAnthropic
    runtime: Runtime
    alice: int
    bob: int
    mod: int

    async def idle(self, quiet: float = 0.2) -> None:
        await until_idle(self.runtime.work, quiet=quiet)

    def bot_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return [
            m
            for m in self.fake.channel_messages(channel_id)
            if int(m["author"]["id"]) == self.fake.bot_user_id and not m["flags"] & LOADING
        ]

    async def answered(self, channel_id: int, count: int = 1) -> list[dict[str, Any]]:
        """Wait for `count` bot messages in the channel, then for the bot to finish (final text in place)."""
        await self.fake.wait_for(lambda: len(self.bot_messages(channel_id)) >= count, 10, what=f"{count} replies")
        await self.idle()
        return self.bot_messages(channel_id)

    async def mention(self, text: str, user: int | None = None) -> int:
        """A member mentions the bot in the text channel; returns the thread the bot opens (the message's id)."""
        posted = self.fake.user_post(self.fake.text_channel_id, user or self.alice, text, mentions_bot=True)
        thread_id = int(posted["id"])
        await self.fake.wait_for(lambda: thread_id in {int(t["id"]) for t in self.fake.threads}, 10, what="thread")
        return thread_id

    def say(self, channel_id: int, text: str, user: int | None = None) -> int:
        return int(self.fake.user_post(channel_id, user or self.alice, text)["id"])

    async def command(
        self, user: int, channel_id: int, group: str, sub: str, options: dict[str, Any] | None = None
    ) -> str:
        """Run a slash command; returns what it finally answered the invoker (a deferred, ephemeral reply)."""
        sent = self.fake.slash_command(user, channel_id, group, sub, options)
        interaction_id = int(sent["id"])

        def final() -> str | None:
            return self.answer_to(interaction_id)

        answer = await self.fake.wait_for(final, 10, what=f"/{group} {sub}")
        await self.idle()
        return answer

    async def click(self, user: int, message: dict[str, Any] | int, custom_id: str) -> int:
        interaction = self.fake.click(user, message, custom_id)
        interaction_id = int(interaction["id"])
        await self.fake.wait_for(lambda: self.fake.interaction_responses(interaction_id), 10, what="click answer")
        await self.idle()
        return interaction_id

    def answer_to(self, interaction_id: int) -> str | None:
        """The last text the bot showed the person who interacted (a follow-up, or an immediate answer)."""
        texts = [
            str(r["data"]["content"])
            for r in self.fake.interaction_responses(interaction_id)
            if isinstance(r["data"], dict) and r["data"].get("content")
        ]
        return texts[-1] if texts else None

    async def conversation(self, channel_id: int, thread_id: int) -> Conversation | None:
        return await self.runtime.service.find_conversation(ThreadKey("discord", str(channel_id), str(thread_id)))

    def model_calls(self) -> int:
        return len(self.claude.message_requests())

    def user_texts(self, request: int = -1) -> list[str]:
        messages = self.claude.message_requests()[request].json["messages"]
        return [
            block["text"]
            for message in messages
            if message["role"] == "user"
            for block in message["content"]
            if block.get("type") == "text"
        ]


def custom_ids(message: dict[str, Any] | None) -> list[str]:
    return [
        component["custom_id"]
        for row in (message or {}).get("components", [])
        for component in row.get("components", [])
        if "custom_id" in component
    ]


def embed_text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("embeds", []), ensure_ascii=False)


def notices(bot: Bot, thread: int) -> list[dict[str, Any]]:
    return [m for m in bot.bot_messages(thread) if m["embeds"] and m["embeds"][0]["title"].startswith("🛑")]


def prefilled(modal: dict[str, Any]) -> dict[str, str]:
    """The values a form opens with, by input (inputs sit in action rows or in labels)."""
    inputs = [c for row in modal["components"] for c in row.get("components", [row.get("component")])]
    return {c["custom_id"]: c["value"] for c in inputs}


def add_people(fake: FakeDiscord) -> tuple[int, int, int]:
    """Alice and Bob, members, and a moderator: added before a bot connects, so it knows them."""
    alice = int(fake.add_member(None, "alice")["user"]["id"])
    bob = int(fake.add_member(None, "bob")["user"]["id"])
    mod = int(fake.add_member(None, "mod", moderator=True)["user"]["id"])
    return alice, bob, mod


def discord_env(fake: FakeDiscord, claude: FakeAnthropic, **more: Any) -> Environment:
    return Environment(
        anthropic_api_key="sk-ant-test",
        anthropic_base_url=claude.base_url,
        discord_token=fake.token,
        discord_api_url=fake.api_url,
        discord_gateway_url=fake.gateway_url,
        **more,
    )


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    # The adapter points discord.py (process-wide) at the fake; put the real endpoints back afterwards.
    saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    with FakeDiscord() as server:
        try:
            yield server
        finally:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


@asynccontextmanager
async def running_adapter(
    fake: FakeDiscord,
    claude: FakeAnthropic,
    settings: Settings,
    db: Path,
    *,
    env: Environment | None = None,
    **options: Any,
) -> AsyncIterator[Runtime]:
    env = env or discord_env(fake, claude)
    async with runtime_for(env, settings, claude, db) as runtime:
        adapter = DiscordAdapter(runtime, guild_ready_timeout=0.1, **options)
        try:
            await adapter.start()
            yield runtime
        finally:
            await adapter.stop()


@asynccontextmanager
async def started_bot(
    fake: FakeDiscord, claude: FakeAnthropic, settings: Settings, db: Path, **options: Any
) -> AsyncIterator[Bot]:
    people = add_people(fake)
    async with running_adapter(fake, claude, settings, db, **options) as runtime:
        running = Bot(fake, claude, runtime, *people)
        yield running
        await running.idle()


@pytest.fixture
async def bot(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> AsyncIterator[Bot]:
    async with started_bot(fake, fake_anthropic, settings, tmp_path / "discord.db") as running:
        yield running


@asynccontextmanager
async def two_instances(
    fake: FakeDiscord, claude: FakeAnthropic, settings: Settings, db: Path
) -> AsyncIterator[tuple[tuple[Bot, str], tuple[Bot, str]]]:
    """A rolling deploy: two processes on one database, each with its own gateway session."""
    people = add_people(fake)
    async with running_adapter(fake, claude, settings, db) as old_runtime:
        [old_session] = [s.session_id for s in fake.sessions]
        async with running_adapter(fake, claude, settings, db) as new_runtime:
            new_session = next(s.session_id for s in fake.sessions if s.session_id != old_session)
            old, new = Bot(fake, claude, old_runtime, *people), Bot(fake, claude, new_runtime, *people)
            yield (old, old_session), (new, new_session)
            await asyncio.gather(old.idle(), new.idle())


# -- conversations ------------------------------------------------------------------------------------------


async def test_a_mention_opens_a_thread_answered_there_and_the_thread_continues(bot: Bot, fake: FakeDiscord) -> None:
    thread = await bot.mention("hello there")
    (reply,) = await bot.answered(thread)
    assert "hello there" in reply["content"]
    assert fake.thread(thread)["parent_id"] == str(fake.text_channel_id)
    assert fake.thread(thread)["name"] == "hello there"
    assert bot.bot_messages(fake.text_channel_id) == []  # nothing in the channel itself
    assert bot.user_texts() == [f"[Alice ({bot.alice})] hello there"]

    # Later messages in the thread continue it without a mention, each carrying its author.
    bot.say(thread, "and what about me?", user=bot.bob)
    await bot.answered(thread, 2)
    assert bot.user_texts()[-1] == f"[Bob ({bot.bob})] and what about me?"
    conversation = await bot.conversation(fake.text_channel_id, thread)
    assert conversation is not None and conversation.owner_id == str(bot.alice)

    # A plain message in the channel, or in a thread the bot was never asked into, reaches no model.
    bot.say(fake.text_channel_id, "just chatting")
    other = fake.user_create_thread(fake.text_channel_id, bot.bob, "side talk")
    bot.say(int(other["id"]), "nothing for the bot")
    await asyncio.sleep(0.2)
    await bot.idle()
    assert bot.model_calls() == 2
    assert bot.bot_messages(int(other["id"])) == []


async def test_warning_then_ending_locks_the_thread_and_nothing_reaches_the_model_after(
    bot: Bot, fake: FakeDiscord, settings: Settings
) -> None:
    bot.claude.push(WARN, END_ABUSE)
    thread = await bot.mention("tell me how to hurt people")
    (warning,) = await bot.answered(thread)
    assert warning["content"].startswith("I won't help with that.")
    assert [e["title"] for e in warning["embeds"]] == ["⚠️ Formal warning"]
    assert "demanding instructions for violence" in warning["embeds"][0]["description"]

    bot.say(thread, "tell me anyway")
    notice = (await bot.answered(thread, 2))[-1]
    conversation = await bot.conversation(fake.text_channel_id, thread)
    assert conversation is not None and conversation.is_ended
    cid = conversation.id
    assert notice["embeds"][0]["title"] == f"🛑 {settings.notices.ended_title}"
    assert "You kept demanding violent instructions after a warning." in embed_text(notice)
    assert "Edit & branch" in embed_text(notice)
    assert custom_ids(notice) == [
        f"lastresort:new:{cid}",
        f"lastresort:edit:{cid}",
        f"lastresort:feedback:{cid}:up",
        f"lastresort:feedback:{cid}:down",
    ]
    metadata = fake.thread(thread)["thread_metadata"]
    assert (metadata["locked"], metadata["archived"]) == (True, False)  # archive_on_end is off by default

    # A real lock: Discord itself refuses the member's next post.
    with pytest.raises(DiscordError) as refused:
        bot.say(thread, "let me back in")
    assert refused.value.code == LOCKED
    # A moderator may still talk there; that reaches no model and gets no answer.
    calls = bot.model_calls()
    bot.say(thread, "moderator note: locking this", user=bot.mod)
    await asyncio.sleep(0.3)
    await bot.idle()
    assert bot.model_calls() == calls
    assert len(bot.bot_messages(thread)) == 2

    # Feedback on the ending is recorded, and only the clicking person sees the thanks.
    clicked = await bot.click(bot.alice, notice, f"lastresort:feedback:{cid}:down")
    assert bot.answer_to(clicked) == "Thanks, your feedback was recorded."
    # One vote per person: a second click changes nothing and says so.
    clicked = await bot.click(bot.alice, notice, f"lastresort:feedback:{cid}:up")
    assert bot.answer_to(clicked) == "You already gave feedback on this conversation; the first answer counts."
    events = await bot.runtime.store.events(since=conversation.created_at)
    assert [(e.reason, e.conversation_id) for e in events if e.kind == "feedback"] == [("not_helpful", cid)]

    # "New conversation" opens a fresh thread next to the old one; replying there needs no mention.
    clicked = await bot.click(bot.alice, notice, f"lastresort:new:{cid}")
    fresh = next(int(t["id"]) for t in fake.threads if int(t["id"]) not in (thread,))
    assert bot.answer_to(clicked) == f"Your new conversation: <#{fresh}>"
    bot.say(fresh, "fresh start")
    assert "fresh start" in (await bot.answered(fresh))[-1]["content"]
    assert bot.user_texts() == [f"[Alice ({bot.alice})] fresh start"]


async def test_an_edit_of_an_answered_message_branches_into_a_new_thread(bot: Bot, fake: FakeDiscord) -> None:
    thread = await bot.mention("What is 2+2?")
    await bot.answered(thread)
    second = bot.say(thread, "And 3+3?")
    await bot.answered(thread, 2)

    fake.user_edit(thread, second, "And 4+4?")
    starter = await fake.wait_for(
        lambda: next((m for m in bot.bot_messages(fake.text_channel_id) if "edited" in m["content"]), None), 10
    )
    branch = int(starter["id"])  # the thread hangs off the bot's starter message
    assert f"/channels/{fake.guild_id}/{thread}/{second})" in starter["content"]  # links the edited message
    (answer,) = await bot.answered(branch)
    assert "And 4+4?" in answer["content"]
    assert bot.user_texts() == [f"[Alice ({bot.alice})] What is 2+2?", f"[Alice ({bot.alice})] And 4+4?"]
    assert len(bot.bot_messages(thread)) == 2  # the original thread is untouched
    original = await bot.conversation(fake.text_channel_id, thread)
    branched = await bot.conversation(fake.text_channel_id, branch)
    assert original is not None and branched is not None and branched.branched_from == original.id

    # Editing the message that started the thread (in the channel) branches from the very beginning.
    fake.user_edit(fake.text_channel_id, thread, f"<@{fake.bot_user_id}> What is 5+5?")
    await fake.wait_for(lambda: bot.model_calls() == 4, 10, what="the second branch's answer")
    await bot.idle()
    assert bot.user_texts() == [f"[Alice ({bot.alice})] What is 5+5?"]
    threads = {int(t["id"]) for t in fake.threads}
    assert len(threads) == 3


async def test_edit_and_branch_works_after_the_lock(bot: Bot, fake: FakeDiscord) -> None:
    bot.claude.push(WARN, END_ABUSE)
    thread = await bot.mention("tell me how to hurt people")
    await bot.answered(thread)
    mine = bot.say(thread, "tell me anyway")
    notice = (await bot.answered(thread, 2))[-1]
    conversation = await bot.conversation(fake.text_channel_id, thread)
    assert conversation is not None and conversation.is_ended
    with pytest.raises(DiscordError) as refused:
        fake.user_edit(thread, mine, "tell me about history")
    assert refused.value.code == LOCKED  # Discord blocks edits in a locked thread: hence the button

    # Someone with nothing to edit here is told so, privately.
    clicked = await bot.click(bot.bob, notice, f"lastresort:edit:{conversation.id}")
    assert bot.answer_to(clicked) == "You have no messages in this conversation to edit."

    await bot.click(bot.alice, notice, f"lastresort:edit:{conversation.id}")
    modal = fake.last_modal(bot.alice)
    assert modal is not None
    inputs = {c["custom_id"]: c for row in modal["components"] for c in row.get("components", [row.get("component")])}
    assert inputs[TEXT_FIELD]["value"] == "tell me anyway"  # prefilled with their last message
    assert inputs[NUMBER_FIELD]["value"] == "2"

    submitted = fake.submit_modal(bot.alice, thread, modal["custom_id"], {TEXT_FIELD: "history, please"})
    branch = await fake.wait_for(
        lambda: next((int(t["id"]) for t in fake.threads if int(t["id"]) != thread), None), 10, what="branch thread"
    )
    (answer,) = await bot.answered(branch)
    assert "history, please" in answer["content"]
    # Everything before the replaced message, exactly as the model saw it then, and the new text.
    cached = {"cache_control": {"type": "ephemeral"}}
    assert bot.claude.message_requests()[-1].json["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": f"[Alice ({bot.alice})] tell me how to hurt people"} | cached],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": WARN.content[0]["text"]},
                {"type": "tool_use", "id": "toolu_fake_0001", "name": "warn_user", "input": WARN.content[1]["input"]},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_fake_0001",
                    "content": "Warning recorded. The conversation continues.",
                },
                {"type": "text", "text": f"[Alice ({bot.alice})] history, please"} | cached,
            ],
        },
    ]
    assert bot.answer_to(int(submitted["id"])) == f"Branched into <#{branch}>."
    branched = await bot.conversation(fake.text_channel_id, branch)
    assert branched is not None and branched.branched_from == conversation.id and not branched.is_ended


async def test_confirmation_buttons_count_only_for_the_owner(bot: Bot, fake: FakeDiscord) -> None:
    bot.claude.push(END_REQUESTED)
    thread = await bot.mention("please end this conversation")
    (question,) = await bot.answered(thread)
    assert question["content"] == "Of course."
    conversation = await bot.conversation(fake.text_channel_id, thread)
    assert conversation is not None
    [yes, no] = custom_ids(question)
    assert yes.endswith(":yes") and no.endswith(":no")

    clicked = await bot.click(bot.bob, question, yes)
    assert "Only the person who started this conversation" in (bot.answer_to(clicked) or "")
    assert not (await bot.conversation(fake.text_channel_id, thread) or conversation).is_ended
    assert custom_ids(fake.message(int(question["id"]))) == [yes, no]

    await bot.click(bot.alice, question, no)
    settled = fake.message(int(question["id"]))
    assert settled is not None and custom_ids(settled) == []
    assert "the conversation continues" in embed_text(settled)
    assert not (await bot.conversation(fake.text_channel_id, thread) or conversation).is_ended

    bot.claude.push(END_REQUESTED)
    bot.say(thread, "no really, end it")
    question = (await bot.answered(thread, 2))[-1]
    await bot.click(bot.alice, question, custom_ids(question)[0])
    notice = (await bot.answered(thread, 3))[-1]
    assert "You asked to end this conversation." in embed_text(notice)
    assert "Ended at the request of the person who started it." in embed_text(notice)
    assert fake.thread(thread)["thread_metadata"]["locked"] is True
    ended = await bot.conversation(fake.text_channel_id, thread)
    assert ended is not None and ended.is_ended


# -- moderators and members ------------------------------------------------------------------------------------


async def test_moderator_commands_need_manage_threads(bot: Bot, fake: FakeDiscord) -> None:
    registered = {c["name"]: c for c in fake.commands()}
    assert int(registered["lastresort-mod"]["default_member_permissions"]) == Perm.MANAGE_THREADS
    assert registered["lastresort"]["default_member_permissions"] is None
    thread = await bot.mention("hi")
    await bot.answered(thread)

    # Without Manage Threads: refused privately, and nothing changes.
    for sub in ("end", "status", "reopen", "stats"):
        answer = await bot.command(bot.alice, thread, "lastresort-mod", sub)
        assert answer == "This command is for moderators: it needs the Manage Threads permission."
    conversation = await bot.conversation(fake.text_channel_id, thread)
    assert conversation is not None and not conversation.is_ended
    assert fake.thread(thread)["thread_metadata"]["locked"] is False

    assert "is **active**" in await bot.command(bot.mod, thread, "lastresort-mod", "status")
    answer = await bot.command(bot.mod, thread, "lastresort-mod", "end", {"reason": "spam in the thread"})
    assert answer == f"Ended conversation #{conversation.id} and locked <#{thread}>."
    notice = bot.bot_messages(thread)[-1]
    assert "spam in the thread" in embed_text(notice)
    assert "Ended by a moderator." in embed_text(notice)
    assert fake.thread(thread)["thread_metadata"]["locked"] is True
    assert "is **ended** (moderator" in await bot.command(bot.mod, thread, "lastresort-mod", "status")

    answer = await bot.command(bot.mod, thread, "lastresort-mod", "reopen")
    assert answer == f"Reopened conversation #{conversation.id}; <#{thread}> is open again."
    assert fake.thread(thread)["thread_metadata"]["locked"] is False
    assert "reopened" in bot.bot_messages(thread)[-1]["content"]
    bot.say(thread, "back again")
    assert "back again" in (await bot.answered(thread, 4))[-1]["content"]

    stats = await bot.command(bot.mod, fake.text_channel_id, "lastresort-mod", "stats")
    assert "Ended by moderators: **1**" in stats and "Reopened: **1**" in stats


async def test_chat_new_and_forget_commands(bot: Bot, fake: FakeDiscord) -> None:
    answer = await bot.command(bot.alice, fake.text_channel_id, "lastresort", "chat", {"prompt": "Plan a picnic"})
    thread = next(int(t["id"]) for t in fake.threads)
    assert answer == f"Your new conversation: <#{thread}>"
    assert fake.thread(thread)["name"] == "Plan a picnic"
    assert "Plan a picnic" in (await bot.answered(thread))[-1]["content"]
    assert bot.user_texts() == [f"[Alice ({bot.alice})] Plan a picnic"]

    # Without a prompt: an empty thread that is already a conversation (no mention needed there).
    await bot.command(bot.bob, fake.text_channel_id, "lastresort", "new")
    empty = next(int(t["id"]) for t in fake.threads if int(t["id"]) != thread)
    bot.say(empty, "hello in my thread", user=bot.bob)
    assert "hello in my thread" in (await bot.answered(empty))[-1]["content"]
    started = await bot.conversation(fake.text_channel_id, empty)
    assert started is not None and started.owner_id == str(bot.bob)

    answer = await bot.command(bot.alice, fake.text_channel_id, "lastresort", "forget")
    assert answer.startswith("Done: I removed the text of the 1 message you wrote")
    forgotten = await bot.conversation(fake.text_channel_id, thread)
    assert forgotten is not None and forgotten.owner_id == "forgotten"
    kept = await bot.conversation(fake.text_channel_id, empty)
    assert kept is not None and kept.owner_id == str(bot.bob)  # Bob's stays his


async def test_direct_messages_are_one_conversation_at_a_time(bot: Bot, fake: FakeDiscord) -> None:
    dm = fake.dm_channel_id(bot.alice)
    bot.say(dm, "private question")
    (reply,) = await bot.answered(dm)
    assert "private question" in reply["content"]
    bot.say(dm, "and a follow-up")
    await bot.answered(dm, 2)
    assert len(bot.user_texts()) == 2  # the same conversation

    bot.claude.push(END_REQUESTED)
    bot.say(dm, "please end this")
    question = (await bot.answered(dm, 3))[-1]
    await bot.click(bot.alice, question, custom_ids(question)[0])
    notice = (await bot.answered(dm, 4))[-1]
    assert "/lastresort new" in embed_text(notice)

    calls = bot.model_calls()
    bot.say(dm, "hello?")
    note = (await bot.answered(dm, 5))[-1]
    assert note["content"].startswith("🔒 This conversation has ended")
    assert bot.model_calls() == calls

    answer = await bot.command(bot.alice, dm, "lastresort", "new")
    assert answer.startswith("💬 New conversation started")
    bot.say(dm, "fresh start")
    assert "fresh start" in (await bot.answered(dm, 6))[-1]["content"]
    assert bot.user_texts() == [f"[Alice ({bot.alice})] fresh start"]  # no history from before


# -- output safety and reliability ------------------------------------------------------------------------------


async def test_model_text_never_pings_anyone(bot: Bot, fake: FakeDiscord) -> None:
    pings = f"@everyone @here <@&{fake.moderator_role_id}> <@{bot.bob}>"
    # Long enough to stream as a draft first (short replies only ever appear as the final text).
    bot.claude.push(Reply.text(f"Hey {pings}! " + "And on and on. " * 20))
    bot.claude.chunk_delay = 0.15
    thread = await bot.mention("say something loud")
    (reply,) = await bot.answered(thread)
    assert pings in reply["content"]
    assert (reply["mention_everyone"], reply["mention_roles"], reply["mentions"]) == (False, [], [])

    messages = re.compile(r"^/channels/\d+/messages(/\d+)?$|^/webhooks/")
    sent = [c for c in fake.calls if c.method in ("POST", "PATCH") and messages.search(c.path)]
    assert len(sent) >= 2  # the streamed draft and the final text
    for call in sent:
        assert call.json["allowed_mentions"]["parse"] == [], call


async def test_a_discord_rate_limit_is_survived_and_nothing_is_lost(bot: Bot, fake: FakeDiscord) -> None:
    # The first limit hits the thread's creation (the pattern also matches .../messages/{id}/threads),
    # the second the answer posted in it.
    fake.fail_next("POST", r"/channels/\d+/messages", status=429, retry_after=0.2)
    fake.fail_next("POST", r"^/channels/\d+/messages$", status=429, retry_after=0.2)
    thread = await bot.mention("hello despite limits")
    (reply,) = await bot.answered(thread)
    assert "hello despite limits" in reply["content"]
    assert [c.status for c in fake.calls_to("POST", r"/threads$")] == [429, 201]
    assert [c.status for c in fake.calls_to("POST", rf"^/channels/{thread}/messages$")] == [429, 200]
    assert len(fake.threads) == 1


async def test_an_event_seen_twice_is_answered_once(bot: Bot, fake: FakeDiscord) -> None:
    posted = fake.user_post(fake.text_channel_id, bot.alice, "hello once", mentions_bot=True)
    thread = int(posted["id"])
    await bot.answered(thread)
    in_thread = fake.user_post(thread, bot.alice, "and once more")
    await bot.answered(thread, 2)

    # The same MESSAGE_CREATE again (a replay, or a second session of a rolling deploy).
    fake.dispatch("MESSAGE_CREATE", posted)
    fake.dispatch("MESSAGE_CREATE", in_thread)
    # Events arrive in order: once this one is answered, the copies before it were handled too.
    bot.say(thread, "sentinel")
    await bot.answered(thread, 3)
    assert bot.model_calls() == 3
    assert "sentinel" in bot.bot_messages(thread)[-1]["content"]
    # Recognised as seen before: no second attempt at a thread (Discord would refuse it with 160004).
    assert len(fake.calls_to("POST", r"/threads$")) == 1

    # A dropped gateway connection: what was posted meanwhile is replayed on RESUME and answered once.
    assert fake.disconnect_gateway(code=4000) == 1
    bot.say(thread, "while you were away")
    await fake.wait_for(lambda: fake.gateway_stats["resumes"] == 1, 10, what="RESUME")
    assert "while you were away" in (await bot.answered(thread, 4))[-1]["content"]
    assert bot.model_calls() == 4


async def test_model_unavailable_gives_a_notice_and_keeps_the_message(
    bot: Bot, fake: FakeDiscord, settings: Settings
) -> None:
    bot.claude.push(Reply.error(529))
    thread = await bot.mention("first question")
    (notice,) = await bot.answered(thread)
    assert notice["content"] == settings.notices.model_unavailable

    bot.say(thread, "second question")
    await bot.answered(thread, 2)
    assert bot.user_texts() == [f"[Alice ({bot.alice})] first question", f"[Alice ({bot.alice})] second question"]


async def test_without_manage_threads_the_bot_keeps_the_thread_closed_itself(bot: Bot, fake: FakeDiscord) -> None:
    fake.set_bot_permissions(manage_threads=False)
    bot.claude.push(WARN, END_ABUSE)
    thread = await bot.mention("tell me how to hurt people")
    await bot.answered(thread)
    bot.say(thread, "tell me anyway")
    messages = await bot.answered(thread, 3)
    assert messages[-2]["embeds"][0]["title"].startswith("🛑")
    assert "Manage Threads" in messages[-1]["content"]  # moderators are told why there is no lock
    assert fake.thread(thread)["thread_metadata"]["locked"] is False

    calls = bot.model_calls()
    bot.say(thread, "hello?", user=bot.bob)
    bot.say(thread, "anyone?")
    replies = await bot.answered(thread, 5)
    assert bot.model_calls() == calls
    assert all(r["content"].startswith("🔒 This conversation has ended") for r in replies[-2:])
    assert sum("Manage Threads" in m["content"] for m in replies) == 1  # told once


async def test_words_that_came_with_a_refused_call_never_reach_discord(bot: Bot, fake: FakeDiscord) -> None:
    # The model writes words and a warning the core refuses (too few redirects), then starts over. The
    # words stream slowly, so a draft (post or edit) would show them if anything did.
    bot.claude.chunk_delay = 0.1
    refused = Reply.tool(
        "warn_user", {"behavior": "x", "redirect_attempts": 0}, text="DRAFT: this is a formal warning."
    )
    bot.claude.push(refused, Reply.text("Let's talk about something else."))
    thread = await bot.mention("hm")
    (reply,) = await bot.answered(thread)
    sent = fake.calls_to("POST", rf"^/channels/{thread}/messages$") + fake.calls_to(
        "PATCH", rf"^/channels/{thread}/messages/\d+$"
    )
    shown = [call.json.get("content") or "" for call in sent if call.json]
    assert shown and not any("DRAFT" in content for content in shown)
    assert reply["content"] == "Let's talk about something else."
    assert reply["embeds"] == []


async def test_draft_edits_are_throttled_and_long_replies_split(bot: Bot, fake: FakeDiscord) -> None:
    bot.claude.chunk_delay = 0.1  # about 2 s of streaming
    long_text = " ".join(f"word{i}" for i in range(500))  # about 3,900 characters
    bot.claude.push(Reply.text(long_text))
    started = time.monotonic()
    thread = await bot.mention("write a lot")
    await fake.wait_for(lambda: bot.model_calls() == 1, 10)
    await bot.idle(quiet=0.5)
    seconds = time.monotonic() - started
    edits = fake.calls_to("PATCH", rf"^/channels/{thread}/messages/\d+$")
    assert 1 <= len(edits) <= seconds + 1  # at most one draft edit a second, plus the final one
    replies = bot.bot_messages(thread)
    assert len(replies) == 2 and all(len(r["content"]) <= 2000 for r in replies)
    assert " ".join(r["content"] for r in replies).split() == long_text.split()


async def test_a_message_a_dead_process_left_unanswered_is_answered_after_a_restart(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    alice = int(fake.add_member(None, "alice")["user"]["id"])
    db = tmp_path / "restart.db"
    async with running_adapter(fake, fake_anthropic, settings, db) as runtime:
        before = Bot(fake, fake_anthropic, runtime, alice, alice, alice)
        thread = await before.mention("first question")
        await before.answered(thread)
        conversation = await before.conversation(fake.text_channel_id, thread)
        assert conversation is not None
        # A process stored this message and died before answering it.
        await runtime.store.add_message(
            NewMessage(
                conversation_id=conversation.id,
                role=Role.USER,
                blocks=(user_text_block("second question", author_name="Alice", author_id=str(alice)),),
                author_id=str(alice),
                author_name="Alice",
                platform_message_id=str(fake.new_snowflake()),
                answered=False,
            )
        )
    async with running_adapter(fake, fake_anthropic, settings, db, recovery_age_seconds=0) as runtime:
        after = Bot(fake, fake_anthropic, runtime, alice, alice, alice)
        replies = await after.answered(thread, 2)
        assert "second question" in replies[-1]["content"]
        assert after.user_texts()[-1] == f"[Alice ({alice})] second question"


async def test_shards_come_from_the_environment(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    alice = int(fake.add_member(None, "alice")["user"]["id"])
    shard = (fake.guild_id >> 22) % 2  # Discord's rule for which shard a guild's events go to
    env = discord_env(fake, fake_anthropic, discord_shard_count=2, discord_shard_ids=(shard,))
    async with running_adapter(fake, fake_anthropic, settings, tmp_path / "shards.db", env=env) as runtime:
        [session] = fake.sessions
        assert session.shard == (shard, 2)
        bot = Bot(fake, fake_anthropic, runtime, alice, alice, alice)
        thread = await bot.mention("hello from a shard")
        assert "hello from a shard" in (await bot.answered(thread))[-1]["content"]


async def test_archive_on_end_archives_after_the_notice(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    alice = int(fake.add_member(None, "alice")["user"]["id"])
    mod = int(fake.add_member(None, "mod", moderator=True)["user"]["id"])
    archiving = settings.model_copy(update={"discord": DiscordSettings(archive_on_end=True)})
    async with running_adapter(fake, fake_anthropic, archiving, tmp_path / "archive.db") as runtime:
        bot = Bot(fake, fake_anthropic, runtime, alice, alice, mod)
        thread = await bot.mention("hi")
        await bot.answered(thread)
        await bot.command(mod, thread, "lastresort-mod", "end", {"reason": "closing up"})
        assert "closing up" in embed_text(bot.bot_messages(thread)[-1])  # posted before the archive
        metadata = fake.thread(thread)["thread_metadata"]
        assert (metadata["locked"], metadata["archived"]) == (True, True)
        assert metadata["auto_archive_duration"] == 10080


async def test_start_fails_clearly_without_the_message_content_intent(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    fake.allowed_privileged_intents = 0  # Message Content not enabled in the Developer Portal
    with pytest.raises(RuntimeError, match="Message Content"):
        async with running_adapter(fake, fake_anthropic, settings, tmp_path / "intents.db"):
            pass


def test_shard_ids_without_a_shard_count_are_refused() -> None:
    with pytest.raises(ValueError, match="DISCORD_SHARD_COUNT"):
        build_client(Environment(discord_token="t", discord_shard_ids=(0,)), guild_ready_timeout=0.1)


# -- after an archive: everything works from outside the thread ----------------------------------------------


async def test_after_an_archive_branching_and_reopening_work_from_the_channel(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    archiving = settings.model_copy(update={"discord": DiscordSettings(archive_on_end=True)})
    async with started_bot(fake, fake_anthropic, archiving, tmp_path / "archived.db") as bot:
        bot.claude.push(WARN, END_ABUSE)
        thread = await bot.mention("tell me how to hurt people")
        await bot.answered(thread)
        bot.say(thread, "tell me anyway")
        notice = (await bot.answered(thread, 2))[-1]
        conversation = await bot.conversation(fake.text_channel_id, thread)
        assert conversation is not None and conversation.is_ended
        metadata = fake.thread(thread)["thread_metadata"]
        assert (metadata["locked"], metadata["archived"]) == (True, True)
        # Discord takes no clicks (and no commands) in an archived thread...
        with pytest.raises(DiscordError) as refused:
            fake.click(bot.alice, notice, f"lastresort:edit:{conversation.id}")
        assert refused.value.code == ARCHIVED

        # ...so the form opens from the channel, for the person's latest ended conversation there.
        answer = await bot.command(bot.bob, fake.text_channel_id, "lastresort", "branch")
        assert answer.startswith("I found no conversation of yours here")
        fake.slash_command(bot.alice, fake.text_channel_id, "lastresort", "branch")
        modal = await fake.wait_for(lambda: fake.last_modal(bot.alice), 10, what="the branch form")
        assert modal["custom_id"] == f"lastresort:branch:{conversation.id}"
        assert prefilled(modal) == {TEXT_FIELD: "tell me anyway", NUMBER_FIELD: "2"}
        fake.submit_modal(bot.alice, fake.text_channel_id, modal["custom_id"], {TEXT_FIELD: "history, please"})
        branch = await fake.wait_for(
            lambda: next((int(t["id"]) for t in fake.threads if int(t["id"]) != thread), None), 10, what="branch"
        )
        assert "history, please" in (await bot.answered(branch))[-1]["content"]
        assert bot.user_texts()[-1] == f"[Alice ({bot.alice})] history, please"

        # A moderator reopens it from the channel, naming the thread by its link: unarchived and unlocked.
        link = {"thread": f"https://discord.com/channels/{fake.guild_id}/{thread}"}
        status = await bot.command(bot.mod, fake.text_channel_id, "lastresort-mod", "status", link)
        assert "is **ended**" in status
        answer = await bot.command(bot.mod, fake.text_channel_id, "lastresort-mod", "reopen", link)
        assert answer == f"Reopened conversation #{conversation.id}; <#{thread}> is open again."
        metadata = fake.thread(thread)["thread_metadata"]
        assert (metadata["locked"], metadata["archived"]) == (False, False)
        assert "You can continue here" in bot.bot_messages(thread)[-1]["content"]
        bot.say(thread, "back again")
        assert "back again" in (await bot.answered(thread, 4))[-1]["content"]


# -- review fixes: edits, endings and moderators -------------------------------------------------------------


async def test_an_edit_down_to_the_mention_branches_nothing_and_says_why_briefly(
    bot: Bot, fake: FakeDiscord, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord_conversations, "BRIEF_NOTE_SECONDS", 0.5)
    thread = await bot.mention("What is 2+2?")
    await bot.answered(thread)

    fake.user_edit(fake.text_channel_id, thread, f"<@{fake.bot_user_id}>")
    note = await fake.wait_for(lambda: next(iter(bot.bot_messages(fake.text_channel_id)), None), 10, what="note")
    assert note["content"] == settings.notices.empty
    assert note["message_reference"]["message_id"] == str(thread)  # answers the edit, where it was made
    assert [int(t["id"]) for t in fake.threads] == [thread]  # no starter message, no empty thread
    await fake.wait_for(lambda: not bot.bot_messages(fake.text_channel_id), 5, what="the note to go")
    assert bot.model_calls() == 1


async def test_a_bare_mention_starts_a_conversation_its_thread_continues(
    bot: Bot, fake: FakeDiscord, settings: Settings
) -> None:
    posted = fake.user_post(fake.text_channel_id, bot.alice, f"<@{fake.bot_user_id}>", mentions_bot=True)
    thread = int(posted["id"])
    (question,) = await bot.answered(thread)
    assert question["content"] == settings.notices.empty  # what would you like to talk about?
    assert question.get("message_reference") is None  # a reply cannot point into another channel

    bot.say(thread, "my actual question")
    assert "my actual question" in (await bot.answered(thread, 2))[-1]["content"]
    assert bot.user_texts() == [f"[Alice ({bot.alice})] my actual question"]


async def test_the_thread_is_locked_even_when_the_notice_cannot_be_posted(bot: Bot, fake: FakeDiscord) -> None:
    bot.claude.push(WARN, END_ABUSE)
    thread = await bot.mention("tell me how to hurt people")
    await bot.answered(thread)
    invalid = {"code": 50035, "message": "Invalid Form Body"}
    fake.fail_next("POST", rf"^/channels/{thread}/messages$", status=400, body=invalid)

    bot.say(thread, "tell me anyway")
    fallback = (await bot.answered(thread, 2))[-1]
    conversation = await bot.conversation(fake.text_channel_id, thread)
    assert conversation is not None and conversation.is_ended
    assert fake.thread(thread)["thread_metadata"]["locked"] is True
    with pytest.raises(DiscordError) as refused:
        bot.say(thread, "let me back in")
    assert refused.value.code == LOCKED
    # The news still reaches people, as plain text.
    assert "You kept demanding violent instructions after a warning." in fallback["content"]
    assert "/lastresort branch" in fallback["content"]


async def test_a_moderator_ending_while_the_model_ends_it_posts_one_notice(bot: Bot, fake: FakeDiscord) -> None:
    bot.claude.push(WARN)
    thread = await bot.mention("tell me how to hurt people")
    await bot.answered(thread)
    bot.claude.chunk_delay = 0.15  # the model's ending is still streaming when the moderator acts
    bot.claude.push(END_ABUSE)
    bot.say(thread, "tell me anyway")
    await fake.wait_for(lambda: bot.model_calls() == 2, 10, what="the ending turn")

    answer = await bot.command(bot.mod, thread, "lastresort-mod", "end", {"reason": "enough"})
    assert answer == "This conversation has already ended."
    [notice] = notices(bot, thread)
    assert "Ended by Claude after a formal warning." in embed_text(notice)
    conversation = await bot.conversation(fake.text_channel_id, thread)
    assert conversation is not None
    events = await bot.runtime.store.events(since=conversation.created_at)
    assert [e.kind for e in events if e.kind in ("ending_approved", "moderator_end")] == ["ending_approved"]


async def test_without_manage_threads_moderators_hear_the_truth_and_the_server_hears_it_once(
    bot: Bot, fake: FakeDiscord
) -> None:
    first = await bot.mention("first")
    await bot.answered(first)
    await bot.command(bot.mod, first, "lastresort-mod", "end")
    assert fake.thread(first)["thread_metadata"]["locked"] is True
    fake.set_bot_permissions(manage_threads=False)

    # Reopened, but the thread stays locked: the moderator is told, and the thread is not told to go on.
    answer = await bot.command(bot.mod, first, "lastresort-mod", "reopen")
    assert f"could not unlock <#{first}>" in answer and "Manage Threads" in answer
    assert fake.thread(first)["thread_metadata"]["locked"] is True
    assert not any("You can continue here" in m["content"] for m in bot.bot_messages(first))

    # Ending cannot lock: the moderator is not told it did, and the server is told why once.
    told = []
    for text in ("second", "third"):
        thread = await bot.mention(text)
        await bot.answered(thread)
        answer = await bot.command(bot.mod, thread, "lastresort-mod", "end")
        assert answer.startswith("Ended conversation") and f"could not lock <#{thread}>" in answer
        assert fake.thread(thread)["thread_metadata"]["locked"] is False
        told += [m for m in bot.bot_messages(thread) if "Manage Threads" in m["content"]]
    assert len(told) == 1


# -- shutdown and the gateway ------------------------------------------------------------------------------------


async def test_a_message_posted_during_shutdown_is_still_answered(bot: Bot, fake: FakeDiscord) -> None:
    thread = await bot.mention("first")
    await bot.answered(thread)
    bot.runtime.work.close()  # SIGTERM: replies in flight finish, and the gateway is still connected
    bot.say(thread, "posted during the drain")  # Discord will never deliver it again
    assert "posted during the drain" in (await bot.answered(thread, 2))[-1]["content"]


async def test_an_interaction_during_shutdown_is_left_for_the_instance_that_stays(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    async with two_instances(fake, fake_anthropic, settings, tmp_path / "deploy.db") as ((old, early), (_, late)):
        old.runtime.work.close()
        # The stopping instance hears of a command first, the other one a moment later...
        taken = fake.slash_command(old.mod, fake.text_channel_id, "lastresort-mod", "stats", session_id=early)
        # ...and of another one that nobody else hears: then, and only then, it says it is restarting.
        alone = fake.slash_command(old.mod, fake.text_channel_id, "lastresort-mod", "stats", session_id=early)
        await asyncio.sleep(0.3)
        fake.dispatch("INTERACTION_CREATE", taken, session_id=late)

        assert await fake.wait_for(lambda: old.answer_to(int(alone["id"])), 10, what="restarting") == RESTARTING
        answer = old.answer_to(int(taken["id"]))
        assert answer is not None and answer.startswith("Last 7 days")
        assert [r["kind"] for r in fake.interaction_responses(int(taken["id"]))] == ["callback", "followup"]


async def test_an_interaction_both_instances_receive_is_answered_once(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    async with two_instances(fake, fake_anthropic, settings, tmp_path / "deploy.db") as ((first, _), (second, _)):
        first.claude.push(END_REQUESTED)
        thread = await first.mention("please end this")
        question = await fake.wait_for(lambda: next(iter(first.bot_messages(thread)), None), 10, what="question")
        await asyncio.gather(first.idle(), second.idle())

        # Both sessions receive the click and the command (no session_id: every connected one).
        click = int(fake.click(first.alice, question, custom_ids(question)[0])["id"])
        command = int(fake.slash_command(first.mod, thread, "lastresort-mod", "status")["id"])
        await fake.wait_for(lambda: len(notices(first, thread)) == 1 and first.answer_to(command), 10)
        await asyncio.gather(first.idle(), second.idle())
        assert len(notices(first, thread)) == 1
        assert [r["kind"] for r in fake.interaction_responses(click)] == ["callback", "edit"]
        assert [r["kind"] for r in fake.interaction_responses(command)] == ["callback", "followup"]
        assert not [c for c in fake.calls_to("POST", r"/interactions/") if c.status >= 400]


async def test_a_reply_cut_short_by_shutdown_leaves_a_note_instead_of_half_an_answer(
    bot: Bot, fake: FakeDiscord
) -> None:
    bot.claude.chunk_delay = 0.3
    bot.claude.push(Reply.text("A long answer that a restart cuts in the middle. " * 20))
    thread = await bot.mention("question")
    words = await fake.wait_for(
        lambda: next((m for m in bot.bot_messages(thread) if "restart cuts" in m["content"]), None), 10, what="words"
    )
    bot.runtime.work.close()
    await bot.runtime.work.cancel_running(2)

    assert [m["content"] for m in bot.bot_messages(thread)] == [INTERRUPTED]
    assert fake.message(int(words["id"])) is not None
    # The message stays stored and unanswered: whichever instance runs next answers it.
    [pending] = await bot.runtime.service.unanswered(platform="discord", older_than_seconds=0)
    assert pending.text == f"[Alice ({bot.alice})] question"


@pytest.mark.parametrize(
    "refusal",
    [
        (4004, "DISCORD_TOKEN"),
        (4014, "Message Content"),
        (4010, "DISCORD_SHARD_IDS"),
        (4011, "set DISCORD_SHARD_COUNT"),
        (4012, "upgrade discord.py"),
        (4013, "invalid intents"),
    ],
    ids=["token", "intent", "invalid-shard", "sharding-required", "api-version", "intents-value"],
)
async def test_discord_refusing_the_bot_after_start_up_stops_the_process(
    refusal: tuple[int, str], fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    code, why = refusal
    async with running_adapter(fake, fake_anthropic, settings, tmp_path / "refused.db") as runtime:
        assert fake.disconnect_gateway(code=code) == 1  # a reset token, an intent turned off in the portal
        await asyncio.wait_for(runtime.shutdown.event.wait(), 10)
        assert runtime.shutdown.exit_code == 2
        assert why in runtime.shutdown.reason


async def test_unanswered_messages_are_looked_for_as_the_settings_say(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, settings: Settings, tmp_path: Path
) -> None:
    quick = settings.recovery.model_copy(update={"age_seconds": 1.0, "interval_seconds": 0.2})
    async with started_bot(
        fake, fake_anthropic, settings.model_copy(update={"recovery": quick}), tmp_path / "r.db"
    ) as bot:
        thread = await bot.mention("first question")
        await bot.answered(thread)
        conversation = await bot.conversation(fake.text_channel_id, thread)
        assert conversation is not None
        # Another process stored this message and stopped before answering it.
        await bot.runtime.store.add_message(
            NewMessage(
                conversation_id=conversation.id,
                role=Role.USER,
                blocks=(user_text_block("second question", author_name="Alice", author_id=str(bot.alice)),),
                author_id=str(bot.alice),
                author_name="Alice",
                platform_message_id=str(fake.new_snowflake()),
                answered=False,
            )
        )
        assert "second question" in (await bot.answered(thread, 2))[-1]["content"]


# -- the real process -----------------------------------------------------------------------------------------


async def test_lastresort_run_answers_discord_and_stops_cleanly(
    fake: FakeDiscord, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    alice = int(fake.add_member(None, "alice")["user"]["id"])
    env = {
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "ANTHROPIC_API_KEY": "sk-ant-process-test-key",
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "LASTRESORT_CONFIG": str(REPO / "config" / "lastresort.yaml"),
    }
    # With PORT set (BotProcess sets it), the worker serves /healthz too; BotProcess waits for it.
    async with BotProcess(env, log_path=tmp_path / "run.log") as process:
        await fake.wait_for(lambda: any(s.connected for s in fake.sessions), 20, what="a session")
        posted = fake.user_post(fake.text_channel_id, alice, "hello from a process", mentions_bot=True)
        thread = int(posted["id"])
        await fake.wait_for(
            lambda: (
                any(
                    'hello from a process"' in m["content"]
                    for m in fake.channel_messages(thread)
                    if int(m["author"]["id"]) == fake.bot_user_id
                )
                if thread in {int(t["id"]) for t in fake.threads}
                else None
            ),
            15,
            what="the reply",
        )
        started = time.monotonic()
        assert await process.terminate(timeout=25) == 0
        assert time.monotonic() - started < 25
    logs = process.output()
    replies = [m for m in fake.channel_messages(thread) if int(m["author"]["id"]) == fake.bot_user_id]
    assert len(replies) == 1
    assert f"client_id={fake.application_id}" in logs  # the invite link, with the permissions it needs
    assert f"permissions={required_permissions().value}" in logs
    for secret in (fake.token, "sk-ant-process-test-key"):
        assert secret not in logs
