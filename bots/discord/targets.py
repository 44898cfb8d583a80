"""Which thread or conversation a command acts on: the one it runs in, or one named in an option.

Commands must also work from outside a thread, because Discord takes no clicks and no app commands in an
archived thread (archived on ending when `discord.archive_on_end` is set, or by Discord itself after a week
of quiet). So moderators can name a thread (`thread:` a link, a #mention or an id), and
`/lastresort branch` finds the person's ended conversations in the channel or DM it runs in.
"""

from __future__ import annotations

import re
from typing import Protocol

import discord

from bots.discord.conversations import home_channel
from bots.discord.inbound import PLATFORM, dm_place, thread_key
from core.domain import Conversation
from core.service import ConversationService

Interaction = discord.Interaction[discord.Client]

# Discord ids (snowflakes) have 17 digits or more; a shorter number is one of our conversation numbers.
SNOWFLAKE_MIN_DIGITS = 17
# The store has no "endings in this place" query, so the newest endings are scanned and filtered. An older
# ending is still reachable by giving its thread's link.
ENDINGS_SCANNED = 500
_LINK = re.compile(r"discord(?:app)?\.com/channels/(?:\d+|@me)/(\d+)")
_MENTION = re.compile(r"<#(\d+)>")


def thread_id_in(text: str) -> int | None:
    """The thread someone named: a link to it (or to a message in it), a #mention, or its id."""
    for pattern in (_LINK, _MENTION):
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    text = text.strip()
    return int(text) if text.isdigit() and len(text) >= SNOWFLAKE_MIN_DIGITS else None


def conversation_number_in(text: str) -> int | None:
    """A conversation number as people see it ("#12" or "12")."""
    text = text.strip().removeprefix("#")
    return int(text) if text.isdigit() and len(text) < SNOWFLAKE_MIN_DIGITS else None


async def resolved_channel(interaction: Interaction) -> object:
    """The channel a command ran in; fetched when discord.py has not cached it (a thread, usually)."""
    channel = interaction.channel
    if isinstance(channel, discord.PartialMessageable) and interaction.channel_id is not None:
        return await interaction.client.fetch_channel(interaction.channel_id)
    return channel


async def named_thread(interaction: Interaction, text: str) -> discord.Thread | None:
    """The thread `text` names, if it is a thread of the server the command ran in."""
    thread_id = thread_id_in(text)
    if thread_id is None or interaction.guild_id is None:
        return None
    client = interaction.client
    try:
        # Fetched unless cached: discord.py drops archived threads from its cache.
        channel = client.get_channel(thread_id) or await client.fetch_channel(thread_id)
    except (discord.NotFound, discord.Forbidden):
        return None
    # A moderator of this server is no moderator of another one the bot is in.
    if isinstance(channel, discord.Thread) and channel.guild.id == interaction.guild_id:
        return channel
    return None


async def target_thread(interaction: Interaction, option: str | None) -> discord.Thread | None:
    """The thread named in `option`, else the thread the command ran in."""
    if option:
        return await named_thread(interaction, option)
    channel = await resolved_channel(interaction)
    return channel if isinstance(channel, discord.Thread) else None


def may_moderate(user: discord.abc.User, thread: discord.Thread) -> bool:
    """Manage Threads where `thread` is: the run-time check only covered the channel the command ran in."""
    if not isinstance(user, discord.Member):
        return False
    try:
        return thread.permissions_for(user).manage_threads
    except discord.ClientException:  # the parent channel is not known to discord.py
        return False


class EndingsStore(Protocol):
    async def recent_endings(self, *, limit: int) -> list[Conversation]: ...


class BranchSources:
    """The conversations `/lastresort branch` opens the "Edit & branch" form for."""

    def __init__(self, *, service: ConversationService, store: EndingsStore) -> None:
        self._service = service
        self._store = store

    async def ended_here(self, interaction: Interaction) -> list[Conversation]:
        """The person's own ended conversations in this channel (or this DM), newest first."""
        place = await self._place(interaction)
        if place is None:
            return []
        user = str(interaction.user.id)
        endings = await self._store.recent_endings(limit=ENDINGS_SCANNED)
        return [c for c in endings if c.key.platform == PLATFORM and c.key.place == place and c.owner_id == user]

    async def pick(self, interaction: Interaction, option: str | None) -> Conversation | None:
        """The one named in `option`; else the thread's own conversation; else the newest ended one here."""
        if option:
            return await self._named(interaction, option)
        here = await self._this_thread(interaction)
        if here is not None:
            return here
        found = await self.ended_here(interaction)
        return found[0] if found else None

    async def _this_thread(self, interaction: Interaction) -> Conversation | None:
        channel = await resolved_channel(interaction)
        if not isinstance(channel, discord.Thread):
            return None
        return await self._service.find_conversation(thread_key(channel))

    async def _named(self, interaction: Interaction, text: str) -> Conversation | None:
        number = conversation_number_in(text)
        if number is None:
            thread = await named_thread(interaction, text)
            return None if thread is None else await self._service.find_conversation(thread_key(thread))
        conversation = await self._service.get_conversation(number)
        place = await self._place(interaction)
        # Only a Discord conversation of this channel or DM: numbers are easy to guess.
        if conversation is None or (conversation.key.platform, conversation.key.place) != (PLATFORM, place):
            return None
        return conversation

    @staticmethod
    async def _place(interaction: Interaction) -> str | None:
        if interaction.guild_id is None:
            return dm_place(interaction.user.id)
        channel = home_channel(await resolved_channel(interaction))
        return None if channel is None else str(channel.id)
