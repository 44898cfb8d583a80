"""People's messages and edits in, the core's outcomes out, in the right thread or DM.

Where conversations live:
- In a server, every conversation is a public thread. A mention in a text channel starts one from the
  mentioning message (the thread's id is that message's id); `/lastresort chat`, the "New conversation"
  button and branches start one from a message the bot posts. Later messages in the thread continue it
  without a mention.
- In DMs there is one conversation at a time, numbered: the newest one in `dm:<user>` is in use, and
  `/lastresort new` (or the button) starts the next.

An ending locks the thread first (a real Discord lock: members cannot post or edit there any more, while
the bot, having Manage Threads, still can), then posts the notice, then archives the thread if configured:
so the lock never depends on the notice going through. Without Manage Threads the lock fails; the core's
own rule still holds (it answers nothing in an ended conversation), and the first such thread in a server
says why it is not locked (once per server and process, not in every thread).

A reply cut short by a shutdown leaves a note instead of half an answer; its message stays stored and
unanswered, so another instance (or this one, restarted) answers it.

An answer counts once Discord accepted it (`Deliveries.delivered`): a post that fails beyond discord.py's
retries leaves the message pending, and the recovery loop posts the stored answer again (`redeliver`), or, in
the end, tells the person plainly that it could not (`tell_undelivered`). An ending is state and notice: the
notice is posted whatever happens to the lock; a lock that fails is reported once per server.

Before the model is called, the bot checks that it can post where the answer goes: without Send Messages in
Threads it calls nothing and tells the moderators once per server. After a fresh gateway session (and at
start-up), `catch_up` reads the history of active threads for messages nobody saw and answers them, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final, Protocol

import aiohttp
import discord

from bots.discord.content import ONLY_TEXT, readable_text
from bots.discord.inbound import (
    EVENT_SOURCE,
    PLATFORM,
    Route,
    dm_key,
    dm_number,
    dm_place,
    dm_user,
    edit_event_id,
    inbound,
    is_dm_place,
    is_from_person,
    jump_url,
    key_in_channel,
    mentions_bot,
    message_event_id,
    message_text,
    thread_key,
)
from bots.discord.render import (
    CANNOT_LOCK,
    DM_BRANCH_NOTE,
    INTERRUPTED,
    MISSING_MANAGE_THREADS,
    NO_THREAD_PERMISSION,
    REOPENED,
    UNDELIVERED,
    already_ended_post,
    branch_starter,
    cannot_post_note,
    fresh_starter,
    lock_failed_note,
    notice_post,
    plain_notice,
    render_outcome,
    short_post,
    thread_title,
)
from bots.discord.replies import DEFAULT_UPDATE_INTERVAL, StreamedReply, send_post, send_text
from bots.recovery import Undeliverable
from core.delivery import Deliveries
from core.domain import ActiveThread, Conversation, StoredMessage, ThreadKey
from core.outcomes import AlreadyEnded, Ended, EndingNotice, Ignored, NotAllowed, Outcome, Rejected
from core.ports import Clock
from core.service import BranchSource, ConversationService, InboundMessage, Received
from core.settings import Settings

log = logging.getLogger(__name__)

MISSING_PERMISSIONS = 50013
# Discord archives a quiet thread after this, and an archived thread takes no clicks: the longest choice
# keeps "Edit & branch" on an ended conversation usable for a week.
ARCHIVE_AFTER_MINUTES: Final = 10080
# A refused edit is answered in the channel it was made in, so the note cleans itself up after this.
BRIEF_NOTE_SECONDS = 30.0


class DiscordStore(Protocol):
    """What the adapter needs from the store directly (everything else goes through the service)."""

    async def claim_event(self, *, source: str, event_id: str) -> bool: ...
    async def get_conversation(self, conversation_id: int) -> Conversation | None: ...
    async def recent_endings(self, *, limit: int) -> list[Conversation]: ...
    async def active_threads(self, *, platform: str, since: datetime, limit: int) -> list[ActiveThread]: ...


class NoticeNotShownError(Exception):
    """Neither the ending notice nor its plain-text fallback reached Discord."""


# Discord's error code for a DM to someone who takes none from this bot.
CANNOT_DM = 50007


class CannotPostError(Exception):
    """The bot may not post where the answer goes (a missing permission)."""


@dataclass(frozen=True, slots=True)
class Closing:
    """What an ending did on Discord: whether the thread is locked (and why not), whether people saw it."""

    locked: bool
    notice_shown: bool
    why_not_locked: str = ""


@dataclass(frozen=True, slots=True)
class Reopening:
    conversation: Conversation
    changed: bool  # False: it had not ended
    unlocked: bool  # False: the thread stays locked or archived (the bot lacks Manage Threads)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a conversation is shown: a thread in a server, or a DM."""

    channel: discord.abc.Messageable
    key: ThreadKey

    @property
    def in_dm(self) -> bool:
        return is_dm_place(self.key.place)

    @property
    def mention(self) -> str:
        return self.channel.mention if isinstance(self.channel, discord.Thread) else "our direct messages"


def home_channel(channel: object) -> discord.TextChannel | None:
    """The text channel new threads go in: the channel itself, or the parent of a thread."""
    if isinstance(channel, discord.TextChannel):
        return channel
    if isinstance(channel, discord.Thread) and isinstance(channel.parent, discord.TextChannel):
        return channel.parent
    return None


class DiscordConversations:
    def __init__(
        self,
        client: discord.Client,
        *,
        service: ConversationService,
        store: DiscordStore,
        settings: Settings,
        deliveries: Deliveries,
        clock: Clock,
        update_interval: float = DEFAULT_UPDATE_INTERVAL,
    ) -> None:
        self._client = client
        self._service = service
        self._store = store
        self._settings = settings
        self._deliveries = deliveries
        self._clock = clock
        self._update_interval = update_interval
        # Servers whose moderators were told that the bot cannot lock threads there.
        self._told_cannot_lock: set[int] = set()
        # Servers whose moderators were told something else, by what: once per server and process.
        self._told_moderators: set[tuple[int, str]] = set()
        # Conversations whose answer this process is posting right now: recovery leaves them alone.
        # Conversations whose answer is being made or shown here (a count: two messages of one thread may be
        # on their way): recovery must not post a stored answer beside a live one.
        self._showing: Counter[int] = Counter()

    @property
    def deliveries(self) -> Deliveries:
        return self._deliveries

    @property
    def _bot_id(self) -> int:
        assert self._client.user is not None, "used before login"
        return self._client.user.id

    async def _claim(self, event_id: str) -> bool:
        """True the first time: a reconnect replay, or both sessions of a rolling deploy, must not act twice."""
        return await self._store.claim_event(source=EVENT_SOURCE, event_id=event_id)

    # -- messages -------------------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        if not self._answerable(message):
            return
        channel = message.channel
        if isinstance(channel, discord.PartialMessageable) and message.guild is not None:
            # A thread discord.py has not cached (rare): its parent is needed for the conversation key.
            fetched = await self._client.fetch_channel(channel.id)
            channel = fetched if isinstance(fetched, discord.Thread) else channel
        if isinstance(channel, discord.DMChannel):
            await self._dm_message(message, channel)
        elif isinstance(channel, discord.Thread):
            await self._thread_message(message, channel)
        elif isinstance(channel, discord.TextChannel) and mentions_bot(message, self._bot_id):
            await self._mention_in_channel(message, channel)

    def _answerable(self, message: discord.Message) -> bool:
        """A person's message; webhook posts (bridges, feeds) only if configured, since nobody is there."""
        if message.webhook_id is not None and not self._settings.discord.answer_webhooks:
            return False
        return is_from_person(message)

    async def _inbound(self, message: discord.Message, route: Route) -> tuple[InboundMessage, bool]:
        """The core's input, with attachments, forwards and embeds as text; and whether something in it
        could not be read."""
        readable = await readable_text(
            message, self._bot_id, max_attachment_bytes=self._settings.discord.max_attachment_bytes
        )
        return replace(inbound(message, route, self._bot_id), text=readable.text), readable.unreadable

    async def _dm_message(self, message: discord.Message, channel: discord.DMChannel) -> None:
        latest = await self._service.latest_conversation(platform=PLATFORM, place=dm_place(message.author.id))
        route = Route(dm_key(message.author.id, dm_number(latest)), may_start=True, budget_scope=None)
        if await self._claim(message_event_id(message.id)):
            taken, unreadable = await self._inbound(message, route)
            await self._answer(Place(channel, route.key), taken, message, unreadable=unreadable)

    async def _thread_message(self, message: discord.Message, thread: discord.Thread) -> None:
        route = Route(thread_key(thread), mentions_bot(message, self._bot_id), str(thread.parent_id))
        # Most thread messages are in no conversation: skip them before any write.
        if not route.may_start and await self._service.find_conversation(route.key) is None:
            return
        if await self._claim(message_event_id(message.id)):
            taken, unreadable = await self._inbound(message, route)
            await self._answer(Place(thread, route.key), taken, message, unreadable=unreadable)

    async def _mention_in_channel(self, message: discord.Message, channel: discord.TextChannel) -> None:
        if not await self._claim(message_event_id(message.id)):
            return
        text = message_text(message, self._bot_id)
        try:
            thread = await message.create_thread(name=thread_title(text), auto_archive_duration=ARCHIVE_AFTER_MINUTES)
        except discord.Forbidden:
            log.warning("cannot create a thread: missing Create Public Threads", extra={"channel": channel.id})
            await send_post(channel, short_post(NO_THREAD_PERMISSION), reference=message)
            return
        route = Route(key_in_channel(channel.id, thread.id), may_start=True, budget_scope=str(channel.id))
        taken, unreadable = await self._inbound(message, route)
        await self._answer(Place(thread, route.key), taken, message, unreadable=unreadable)

    # -- answering ----------------------------------------------------------------------------------------

    def _writer(self, place: Place) -> StreamedReply:
        return StreamedReply(place.channel, min_interval=self._update_interval)

    async def _answer(
        self, place: Place, message: InboundMessage, original: discord.Message | None, *, unreadable: bool = False
    ) -> None:
        if not await self._can_post(place):
            return  # nothing reaches the model that could not be shown
        received = await self._service.receive(message)
        writer = self._writer(place)
        if not isinstance(received, Received):
            if unreadable and isinstance(received, Rejected) and received.reason == "empty":
                received = Rejected("unreadable", ONLY_TEXT)
            await self._show(place, writer, received, original)
            return
        conversation_id = received.conversation.id
        self._showing[conversation_id] += 1
        try:
            outcome = await _answering(writer, self._service.answer_received(received, writer.on_text))
            await self._deliver(place, writer, outcome, received.message.seq, original)
        finally:
            self._shown(conversation_id)

    async def _deliver(
        self,
        place: Place,
        writer: StreamedReply,
        outcome: Outcome,
        trigger_seq: int | None,
        original: discord.Message | None = None,
    ) -> None:
        """Show an outcome and count its answer delivered once Discord took it. If Discord fails it beyond
        discord.py's retries, what was posted of it is taken back (where that still works) and the message
        stays pending: the recovery loop posts the stored answer again."""
        conversation = _conversation_of(outcome)
        if conversation is None or isinstance(outcome, Ignored):
            await self._show(place, writer, outcome, original)
            return  # nothing stored to deliver (or answered together with an earlier message, shown there)
        self._showing[conversation.id] += 1
        try:
            await self._show(place, writer, outcome, original)
        except (discord.HTTPException, NoticeNotShownError) as exc:
            log.warning(
                "discord answer not delivered; recovery will post it again",
                extra={"conversation": conversation.id, "error": type(exc).__name__},
            )
            with contextlib.suppress(Exception):
                await writer.withdraw()
            return
        finally:
            self._shown(conversation.id)
        await self._deliveries.delivered(conversation_id=conversation.id, trigger_seq=trigger_seq)

    # -- permissions --------------------------------------------------------------------------------------

    async def _can_post(self, place: Place) -> bool:
        """Whether the bot may post where the answer goes; if not, the moderators hear it once per server."""
        thread = place.channel if isinstance(place.channel, discord.Thread) else None
        if thread is None:
            return True  # a DM: Discord refuses only if the person blocks the bot, which no permission fixes
        me = thread.guild.me
        perms = thread.permissions_for(me)
        missing = [
            name
            for name, granted in (
                ("View Channels", perms.view_channel),
                ("Send Messages in Threads", perms.send_messages_in_threads),
            )
            if not granted
        ]
        if not missing:
            return True
        log.warning("cannot post in a thread: missing permissions", extra={"thread_id": thread.id, "missing": missing})
        await self._tell_moderators(thread, "cannot_post", cannot_post_note(thread.mention, missing))
        return False

    async def _tell_moderators(self, thread: discord.Thread, what: str, text: str) -> None:
        """Once per server and kind: where moderators read (the community updates channel, else the system
        channel, else the thread's parent), whichever the bot may post in; the log says it either way."""
        told = (thread.guild.id, what)
        if told in self._told_moderators:
            return
        self._told_moderators.add(told)
        guild = thread.guild
        me = guild.me
        for channel in (guild.public_updates_channel, guild.system_channel, thread.parent):
            if isinstance(channel, discord.TextChannel) and channel.permissions_for(me).send_messages:
                try:
                    await send_text(channel, text)
                    return
                except discord.HTTPException as exc:
                    log.warning("cannot tell the moderators", extra={"channel": channel.id, "code": exc.code})
        log.error("moderators could not be told in Discord", extra={"guild": guild.id, "what": what})

    async def _show(
        self, place: Place, writer: StreamedReply, outcome: Outcome, original: discord.Message | None = None
    ) -> None:
        if isinstance(outcome, AlreadyEnded | Rejected):
            await self._note(place, outcome, original)
            return
        posts = render_outcome(outcome, in_dm=place.in_dm)
        if isinstance(outcome, Ended):
            closing = await self._close(place.channel, lambda: writer.finish(posts), outcome.notice)
            if not closing.notice_shown:
                raise NoticeNotShownError
            return
        await writer.finish(posts)

    async def _note(self, place: Place, outcome: AlreadyEnded | Rejected, original: discord.Message | None) -> None:
        """A short answer to one post that reaches no model: why, and how to go on."""
        if isinstance(outcome, AlreadyEnded) and original is not None and self._is_moderator(original):
            return  # moderators may talk in a locked thread; that is not meant for the bot
        if isinstance(outcome, AlreadyEnded):
            post = already_ended_post(outcome.text, outcome.conversation.id)
        else:
            post = short_post(outcome.text)
        # A reply must be in the same channel as what it answers: a mention's note goes to its new thread.
        same_channel = original is not None and original.channel.id == getattr(place.channel, "id", None)
        await send_post(place.channel, post, reference=original if same_channel else None)

    @staticmethod
    def _is_moderator(message: discord.Message) -> bool:
        channel = message.channel
        author = message.author
        if not isinstance(channel, discord.Thread) or not isinstance(author, discord.Member):
            return False
        return channel.permissions_for(author).manage_threads

    # -- endings ----------------------------------------------------------------------------------------

    async def announce_ending(
        self, channel: discord.abc.Messageable, conversation: Conversation, notice: EndingNotice
    ) -> Closing:
        """Lock, notice, archive (see the module docstring): what happened, for a moderator to be told."""
        post = notice_post(conversation.id, notice, in_dm=is_dm_place(conversation.key.place))
        return await self._close(channel, lambda: send_post(channel, post), notice)

    async def _close(
        self, channel: discord.abc.Messageable, show_notice: Callable[[], Awaitable[object]], notice: EndingNotice
    ) -> Closing:
        # A DM cannot be locked: the core answers nothing there until a new conversation.
        thread = channel if isinstance(channel, discord.Thread) else None
        why_not = "" if thread is None else await self._lock(thread)
        # Whatever happened to the lock: the ending is the state and this notice; the bot keeps it closed.
        shown = await self._post_notice(channel, show_notice, notice)
        if thread is not None and why_not == MISSING_MANAGE_THREADS:
            await self._tell_cannot_lock(thread)
        elif thread is not None and why_not:
            await self._tell_moderators(thread, "lock_failed", lock_failed_note(thread.mention, why_not))
        elif thread is not None and self._settings.discord.archive_on_end:
            await self._archive(thread)
        return Closing(locked=not why_not, notice_shown=shown, why_not_locked=why_not)

    async def _lock(self, thread: discord.Thread) -> str:
        """Lock the thread; "" when it is locked, else why not (in words for moderators)."""
        try:
            # Unarchived too: a thread Discord archived after a week of quiet takes no posts, not even ours.
            await thread.edit(locked=True, archived=False)
        except discord.HTTPException as exc:
            if isinstance(exc, discord.Forbidden) and exc.code == MISSING_PERMISSIONS:
                log.warning("cannot lock an ended thread: missing Manage Threads", extra={"thread_id": thread.id})
                return MISSING_MANAGE_THREADS
            log.warning(
                "cannot lock an ended thread", extra={"thread_id": thread.id, "status": exc.status, "code": exc.code}
            )
            return f"Discord answered {exc.status}" + (f" (error {exc.code})" if exc.code else "")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # discord.py passes transport failures on unwrapped: the notice must still go out.
            log.warning("cannot lock an ended thread", extra={"thread_id": thread.id, "error": type(exc).__name__})
            return f"the connection to Discord failed ({type(exc).__name__})"
        return ""

    @staticmethod
    async def _post_notice(
        channel: discord.abc.Messageable, show_notice: Callable[[], Awaitable[object]], notice: EndingNotice
    ) -> bool:
        try:
            await show_notice()
        except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            # People must learn that it ended: the same news without embed and buttons, if that goes through.
            log.warning("discord ending notice failed", extra={"error": type(exc).__name__})
            try:
                await send_text(channel, plain_notice(notice))
            except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError):
                return False
        return True

    async def _tell_cannot_lock(self, thread: discord.Thread) -> None:
        """Once per server: every thread repeating it would only add noise."""
        if thread.guild.id in self._told_cannot_lock:
            return
        self._told_cannot_lock.add(thread.guild.id)
        # After the notice: failing to tell this must not count the ending as not shown.
        try:
            await send_text(thread, CANNOT_LOCK)
        except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("cannot tell the thread it is not locked", extra={"error": type(exc).__name__})

    @staticmethod
    async def _archive(thread: discord.Thread) -> None:
        try:
            await thread.edit(archived=True)
        except discord.HTTPException as exc:
            log.warning("cannot archive an ended thread", extra={"thread_id": thread.id, "code": exc.code})

    async def reopen(self, thread: discord.Thread, *, moderator_id: int, reason: str = "") -> Reopening | None:
        """Unlock (and unarchive) first, so the thread takes posts again, then reopen the conversation.

        It is reopened even if the thread cannot be unlocked (a moderator can unlock it by hand), but then
        the thread is not told it can continue: nobody could post there."""
        key = thread_key(thread)
        conversation = await self._service.find_conversation(key)
        if conversation is None:
            return None
        if not conversation.is_ended:
            return Reopening(conversation, changed=False, unlocked=True)
        unlocked = await self._unlock(thread)
        action = await self._service.moderator_reopen(key=key, moderator_id=str(moderator_id), reason=reason)
        if action is None:
            return None
        if action.changed and unlocked:
            await send_text(thread, REOPENED)
        return Reopening(action.conversation, action.changed, unlocked)

    async def _unlock(self, thread: discord.Thread) -> bool:
        # Asked afresh: a cached thread may not know yet that it was locked or archived a moment ago.
        fresh = await self._client.fetch_channel(thread.id)
        if isinstance(fresh, discord.Thread) and not (fresh.locked or fresh.archived):
            return True  # never locked (the bot had no Manage Threads then): nothing to undo
        try:
            await thread.edit(locked=False, archived=False)
        except discord.Forbidden:
            log.warning("cannot unlock a reopened thread: missing Manage Threads", extra={"thread_id": thread.id})
            return False
        return True

    # -- new conversations ------------------------------------------------------------------------------

    async def open_thread(self, channel: discord.TextChannel, user: discord.abc.User, *, about: str = "") -> Place:
        """A new thread for `user` to talk in, from a message the bot posts in `channel`."""
        starter = await send_text(channel, fresh_starter(user.id))
        title = thread_title(about, fallback=f"Conversation with {user.display_name}")
        thread = await starter.create_thread(name=title, auto_archive_duration=ARCHIVE_AFTER_MINUTES)
        return Place(thread, key_in_channel(channel.id, thread.id))

    async def open_dm(self, user_id: int) -> Place:
        """The next DM conversation: the newest DM conversation is the one in use from now on."""
        latest = await self._service.latest_conversation(platform=PLATFORM, place=dm_place(user_id))
        key = dm_key(user_id, dm_number(latest) + 1 if latest else 1)
        return Place(await self._dm_channel(user_id), key)

    async def start(self, place: Place, user: discord.abc.User, prompt: str | None, *, message_id: str) -> None:
        """Begin the conversation at `place`, owned by `user`; answer `prompt` there if there is one."""
        if not prompt or not prompt.strip():
            # Nothing to answer yet, but the thread is a conversation: the next message continues it.
            await self._service.start_conversation(key=place.key, owner_id=str(user.id))
            return
        budget_scope = None if place.in_dm else place.key.place
        message = InboundMessage(
            key=place.key,
            author_id=str(user.id),
            author_name=user.display_name,
            text=prompt,
            platform_message_id=message_id,
            may_start=True,
            budget_scope=budget_scope,
        )
        await self._answer(place, message, None)

    async def _dm_channel(self, user_id: int) -> discord.DMChannel:
        user = self._client.get_user(user_id) or await self._client.fetch_user(user_id)
        return user.dm_channel or await user.create_dm()

    async def _text_channel(self, channel_id: int) -> discord.TextChannel:
        channel = self._client.get_channel(channel_id) or await self._client.fetch_channel(channel_id)
        if not isinstance(channel, discord.TextChannel):
            raise TypeError(f"channel {channel_id} is not a text channel")
        return channel

    # -- branching ------------------------------------------------------------------------------------

    async def on_raw_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """An edit of a message the bot answered (in a thread, a thread's starter message, or a DM)."""
        edited_at = payload.data.get("edited_timestamp")
        message = payload.message
        # Embed unfurls and the bot's own draft edits arrive as updates too; only a person's edit counts.
        if not edited_at or "content" not in payload.data or message.author.bot:
            return
        source = await self._service.find_branch_source(
            platform=PLATFORM, platform_message_id=str(payload.message_id), editor_id=str(message.author.id)
        )
        if isinstance(source, Ignored | NotAllowed):
            return
        if not await self._claim(edit_event_id(payload.message_id, str(edited_at))):
            return
        new_text = message_text(message, self._bot_id)
        # Checked before anything is created: a refused text would leave a starter and an empty thread.
        refused = self._service.check_text(new_text)
        if refused is not None:
            await self._brief_note(message, refused.text, in_dm=payload.guild_id is None)
            return
        link = jump_url(payload.guild_id, payload.channel_id, payload.message_id)
        place = await self.branch_place(source, editor=message.author, link=link, new_text=new_text)
        await self.answer_branch(place, source, editor=message.author, new_text=new_text)

    @staticmethod
    async def _brief_note(message: discord.Message, text: str, *, in_dm: bool) -> None:
        """Why an edit branched nothing: a reply to it, gone after a while where others can see it."""
        delete_after = None if in_dm else BRIEF_NOTE_SECONDS
        await send_post(message.channel, short_post(text), reference=message, delete_after=delete_after)

    async def branch_place(
        self, source: BranchSource, *, editor: discord.abc.User, link: str | None, new_text: str
    ) -> Place:
        """Where a branch of `source` goes: a new thread next to the original one, or the next DM."""
        place = source.conversation.key.place
        if is_dm_place(place):
            dm = await self.open_dm(dm_user(place))
            await send_text(dm.channel, DM_BRANCH_NOTE)
            return dm
        parent = await self._text_channel(int(place))
        starter = await send_text(parent, branch_starter(editor.id, link))
        title = thread_title(new_text, fallback="Branched conversation")
        thread = await starter.create_thread(name=title, auto_archive_duration=ARCHIVE_AFTER_MINUTES)
        return Place(thread, key_in_channel(parent.id, thread.id))

    async def answer_branch(
        self, place: Place, source: BranchSource, *, editor: discord.abc.User, new_text: str
    ) -> None:
        writer = self._writer(place)
        branching = self._service.branch(
            source, key=place.key, new_text=new_text, author_name=editor.display_name, on_text=writer.on_text
        )
        # A new conversation: this answer is the only one in it, so it covers every message there.
        await self._deliver(place, writer, await _answering(writer, branching), None)

    # -- recovery ---------------------------------------------------------------------------------------

    async def deliver_pending(self, message: StoredMessage) -> None:
        """Answer a message a process stored but never answered (it died mid-reply), in its thread or DM."""
        conversation = await self._store.get_conversation(message.conversation_id)
        if conversation is None:
            return
        place = Place(await self._channel_of(conversation.key), conversation.key)
        if not await self._can_post(place):
            # Moderators were told once; recovery backs off and tries again later (a permission may come).
            raise CannotPostError
        writer = self._writer(place)
        outcome = await _answering(
            writer, self._service.answer_pending(message, writer.on_text, conversation=conversation)
        )
        if isinstance(outcome, AlreadyEnded):  # nobody is waiting for a note about a post this old
            await self._deliveries.delivered(conversation_id=conversation.id, trigger_seq=message.seq)
            return
        await self._deliver(place, writer, outcome, message.seq)

    def _shown(self, conversation_id: int) -> None:
        self._showing[conversation_id] -= 1
        if self._showing[conversation_id] <= 0:
            del self._showing[conversation_id]

    async def redeliver(self, message: StoredMessage) -> None:
        """Post the stored answer to a message whose answer Discord never accepted (raises if it fails again)."""
        if message.conversation_id in self._showing:
            return  # its first attempt is still going (discord.py retrying): not a second copy
        conversation = await self._store.get_conversation(message.conversation_id)
        if conversation is None:
            return
        place = Place(await self._channel_of(conversation.key), conversation.key)

        async def show(outcome: Outcome | None) -> bool:
            if message.conversation_id in self._showing:
                return False  # checked again under the thread's lock: a live answer got there first
            if outcome is None:
                return True  # nothing was stored to show (the model was unavailable or refused)
            if not await self._can_post(place):
                raise CannotPostError
            writer = self._writer(place)
            try:
                await self._show(place, writer, outcome)
            except Exception:
                with contextlib.suppress(Exception):
                    await writer.withdraw()
                raise
            return True

        if await self._deliveries.redeliver(message, show):
            log.info("delivered a stored answer", extra={"conversation": conversation.id})

    async def tell_undelivered(self, message: StoredMessage) -> None:
        """After giving up on posting an answer: tell its author plainly, in the thread or else by DM."""
        conversation = await self._store.get_conversation(message.conversation_id)
        if conversation is None:
            return

        async def show(_: Outcome | None) -> None:
            try:
                await send_text(await self._channel_of(conversation.key), UNDELIVERED)
            except (discord.HTTPException, TypeError) as exc:
                if message.author_id is None or not message.author_id.isdigit():
                    raise
                try:
                    await send_text(await self._dm_channel(int(message.author_id)), UNDELIVERED)
                except discord.Forbidden as closed:
                    if closed.code == CANNOT_DM and isinstance(exc, discord.NotFound):
                        # The thread is gone and the person takes no DMs: nobody can be told, ever.
                        raise Undeliverable("thread gone, DMs closed") from closed
                    raise

        await self._deliveries.redeliver(message, show)

    # -- catching up ------------------------------------------------------------------------------------

    async def catch_up(self) -> int:
        """Answer what people wrote in active threads while no session was listening (a session Discord
        would not resume, a restart): their history after the last stored message, once each."""
        settings = self._settings.discord
        if not settings.catch_up_threads:
            return 0
        since = self._clock.now() - timedelta(hours=settings.catch_up_hours)
        answered = 0
        for active in await self._store.active_threads(platform=PLATFORM, since=since, limit=settings.catch_up_threads):
            if is_dm_place(active.conversation.key.place):
                continue  # DMs are one channel for many conversations; people there write again
            try:
                answered += await self._catch_up_thread(active)
            except discord.HTTPException as exc:
                log.warning("catching up on a thread failed", extra={"status": exc.status, "code": exc.code})
            except Exception as exc:
                # One thread that cannot be read (a dropped connection, a channel gone) must not stop the rest.
                log.warning("catching up on a thread failed", extra={"error": type(exc).__name__})
        if answered:
            log.info("answered messages sent while disconnected", extra={"count": answered})
        return answered

    async def _catch_up_thread(self, active: ActiveThread) -> int:
        key = active.conversation.key
        thread = self._client.get_channel(int(key.thread)) or await self._client.fetch_channel(int(key.thread))
        if not isinstance(thread, discord.Thread) or thread.archived:
            return 0
        last = active.last_platform_message_id
        after = discord.Object(int(last) if last and last.isdigit() else int(key.thread))
        missed = [
            m
            async for m in thread.history(
                after=after, limit=self._settings.discord.catch_up_messages, oldest_first=True
            )
            if self._answerable(m)
        ]
        if not missed or not await self._can_post(Place(thread, key)):
            return 0
        route = Route(key, may_start=False, budget_scope=str(thread.parent_id))
        newest: tuple[Received, discord.Message] | None = None
        for message in missed:
            if not await self._claim(message_event_id(message.id)):
                continue  # seen live, or by another instance
            taken, _ = await self._inbound(message, route)
            received = await self._service.receive(taken)
            if isinstance(received, Received):
                newest = (received, message)
        if newest is None:
            return 0
        # One answer for everything missed: the core answers all of a thread's pending messages together.
        received, original = newest
        place = Place(thread, key)
        writer = self._writer(place)
        outcome = await _answering(writer, self._service.answer_received(received, writer.on_text))
        await self._deliver(place, writer, outcome, received.message.seq, original)
        return 1

    async def _channel_of(self, key: ThreadKey) -> discord.abc.Messageable:
        if is_dm_place(key.place):
            return await self._dm_channel(dm_user(key.place))
        channel = self._client.get_channel(int(key.thread)) or await self._client.fetch_channel(int(key.thread))
        if not isinstance(channel, discord.abc.Messageable):
            raise TypeError(f"channel {key.thread} takes no messages")
        return channel


def _conversation_of(outcome: Outcome) -> Conversation | None:
    if isinstance(outcome, Rejected | Ignored):
        return None
    return outcome.conversation


async def _answering(writer: StreamedReply, answer: Awaitable[Outcome]) -> Outcome:
    try:
        return await answer
    except asyncio.CancelledError:
        # Cut short by a shutdown: the message stays stored and unanswered and is answered again later;
        # meanwhile the draft must not pass for the answer. Shielded: this task is being cancelled.
        with contextlib.suppress(Exception):
            await asyncio.shield(writer.abandon(INTERRUPTED))
        raise
