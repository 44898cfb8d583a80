"""Discord messages as the core's inputs: where a message belongs, who wrote it, what text the model
reads. Small functions; the only I/O is none (they read discord.py objects already in memory)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import discord

from core.domain import Conversation, ThreadKey
from core.service import InboundMessage

PLATFORM = "discord"
EVENT_SOURCE = "discord"
# Message types a person writes; joins, pins, thread notices and the like are not messages to answer.
PERSON_MESSAGE_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})
_USER_MENTION = re.compile(r"<@!?(\d+)>")


@dataclass(frozen=True, slots=True)
class Route:
    """Where a message goes: a conversation thread (or DM), and whether it may start a conversation there."""

    key: ThreadKey
    may_start: bool
    budget_scope: str | None


def thread_key(thread: discord.Thread) -> ThreadKey:
    """A thread's conversation: the parent channel is the place, the thread id the thread."""
    return ThreadKey(PLATFORM, str(thread.parent_id), str(thread.id))


def key_in_channel(channel_id: int, thread_id: int) -> ThreadKey:
    return ThreadKey(PLATFORM, str(channel_id), str(thread_id))


def dm_place(user_id: int | str) -> str:
    return f"dm:{user_id}"


def dm_key(user_id: int | str, number: int) -> ThreadKey:
    return ThreadKey(PLATFORM, dm_place(user_id), str(number))


def dm_number(latest: Conversation | None) -> int:
    """The number of the DM conversation in use: the latest one, or 1 before there was any."""
    if latest is None or not latest.key.thread.isdigit():
        return 1
    return int(latest.key.thread)


def is_dm_place(place: str) -> bool:
    return place.startswith("dm:")


def dm_user(place: str) -> int:
    return int(place.removeprefix("dm:"))


def message_event_id(message_id: int) -> str:
    return f"message:{message_id}"


def edit_event_id(message_id: int, edited_at: str) -> str:
    # One id per edit: the same edit delivered twice branches once, a second edit branches again.
    return f"edit:{message_id}:{edited_at}"


def interaction_event_id(interaction_id: int) -> str:
    return f"interaction:{interaction_id}"


def is_from_person(message: discord.Message) -> bool:
    return not message.author.bot and message.type in PERSON_MESSAGE_TYPES


def mentions_bot(message: discord.Message, bot_user_id: int) -> bool:
    """Mentioned by name, or through the bot's own role (Discord's autocomplete often picks the role)."""
    if any(user.id == bot_user_id for user in message.mentions):
        return True
    return any(role.tags is not None and role.tags.bot_id == bot_user_id for role in message.role_mentions)


def clean_text(content: str, *, bot_user_id: int, names: Mapping[int, str]) -> str:
    """What the model reads: without the mention of the bot, with other people's mentions as @names."""

    def name_of(match: re.Match[str]) -> str:
        user_id = int(match.group(1))
        return f"@{names[user_id]}" if user_id in names else match.group(0)

    without_bot = re.sub(rf"[ \t]*<@!?{bot_user_id}>[ \t]*", " ", content)
    return _USER_MENTION.sub(name_of, without_bot).strip()


def message_text(message: discord.Message, bot_user_id: int) -> str:
    names = {user.id: user.display_name for user in message.mentions}
    return clean_text(message.content, bot_user_id=bot_user_id, names=names)


def inbound(message: discord.Message, route: Route, bot_user_id: int) -> InboundMessage:
    return InboundMessage(
        key=route.key,
        author_id=str(message.author.id),
        author_name=message.author.display_name,
        text=message_text(message, bot_user_id),
        platform_message_id=str(message.id),
        may_start=route.may_start,
        budget_scope=route.budget_scope,
    )


def jump_url(guild_id: int | None, channel_id: int | str, message_id: int | None = None) -> str:
    """A link to a message, or to a channel or thread when `message_id` is None."""
    link = f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}"
    return link if message_id is None else f"{link}/{message_id}"
