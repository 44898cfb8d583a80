"""Slack events and links as plain values: which posts are people's messages, which edits branch, which
thread a link points at. Pure functions; the adapter does the I/O."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from bots.slack.render import inbound_text, mentions
from core.domain import ThreadKey

PLATFORM = "slack"
# Message subtypes that are still a person writing; every other subtype (joins, deletions, bot posts,
# edits, which have their own listener) is not a message to answer.
PERSON_SUBTYPES = frozenset({"thread_broadcast", "file_share"})
# Slackbot's own posts ("You have been removed from #…", reminders) are system messages, not a person.
SLACKBOT = "USLACKBOT"
# Channel types where any message may start a conversation (a DM is addressed to the bot by definition).
DIRECT_CHANNEL_TYPES = frozenset({"im"})

# Forwarded, attached and shared text reaches the model and the risk review, each piece capped so that one
# long share cannot crowd out what the person wrote (or push the message over the length limit).
MAX_ATTACHED_CHARS = 12_000

_PERMALINK_RE = re.compile(r"/archives/(?P<channel>[CDG][A-Z0-9]+)/p(?P<digits>\d{7,})")


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """A person's post, reduced to what the core needs."""

    channel: str
    ts: str
    thread_ts: str  # the thread it belongs to: its own ts for a top-level post
    user: str
    text: str  # as the model should read it (mention of the bot removed, entities undone)
    may_start: bool  # mentions the bot, or is a direct message

    @property
    def key(self) -> ThreadKey:
        return ThreadKey(PLATFORM, self.channel, self.thread_ts)

    @property
    def platform_message_id(self) -> str:
        return platform_message_id(self.channel, self.ts)


@dataclass(frozen=True, slots=True)
class SlackEdit:
    """A person changed the text of one of their messages."""

    channel: str
    ts: str
    user: str
    text: str
    edited_ts: str

    @property
    def platform_message_id(self) -> str:
        return platform_message_id(self.channel, self.ts)

    @property
    def branch_message_id(self) -> str:
        # Unique per edit, so a redelivered edit is one message, and a second edit is a second branch.
        return f"{self.platform_message_id}:edit:{self.edited_ts}"


@dataclass(frozen=True, slots=True)
class ThreadRef:
    channel: str
    thread_ts: str

    @property
    def key(self) -> ThreadKey:
        return ThreadKey(PLATFORM, self.channel, self.thread_ts)


def platform_message_id(channel: str, ts: str) -> str:
    """One Slack post, whichever event (app_mention or message) reported it."""
    return f"{channel}:{ts}"


def _is_from_a_bot(event: dict[str, Any], bot_user_id: str | None) -> bool:
    return (
        bool(event.get("bot_id"))
        or event.get("subtype") == "bot_message"
        or event.get("user") in (bot_user_id, SLACKBOT)
    )


def user_message(event: dict[str, Any], bot_user_id: str | None, *, addressed: bool = False) -> SlackMessage | None:
    """The person's message in a `message` or `app_mention` event, or None if it is not one.

    `addressed` is true for app_mention events: Slack only sends those for posts that mention the bot.
    """
    subtype = event.get("subtype")
    if subtype is not None and subtype not in PERSON_SUBTYPES:
        return None
    user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
    if not (isinstance(user, str) and isinstance(channel, str) and isinstance(ts, str)):
        return None
    if _is_from_a_bot(event, bot_user_id):
        return None
    raw = str(event.get("text") or "")
    direct = event.get("channel_type") in DIRECT_CHANNEL_TYPES
    said = inbound_text(raw, bot_user_id)
    attached = attached_text(event, bot_user_id)
    return SlackMessage(
        channel=channel,
        ts=ts,
        thread_ts=str(event.get("thread_ts") or ts),
        user=user,
        text="\n\n".join(part for part in (said, attached) if part),
        may_start=addressed or direct or mentions(raw, bot_user_id),
    )


def _capped(text: str) -> str:
    return text if len(text) <= MAX_ATTACHED_CHARS else text[:MAX_ATTACHED_CHARS] + " […]"


def attached_text(event: dict[str, Any], bot_user_id: str | None) -> str:
    """Text that came with a post but not in its `text`: forwarded (shared) messages, legacy attachments, and
    the previews of text files. Each piece says what it is, so the model knows who wrote it."""
    pieces: list[str] = []
    for attachment in event.get("attachments") or []:
        if not isinstance(attachment, dict):
            continue
        words = [
            str(attachment.get(field) or "").strip()
            for field in ("pretext", "title", "text")
            if isinstance(attachment.get(field), str)
        ]
        words += [
            str(f.get("value") or "").strip()
            for f in attachment.get("fields") or []
            if isinstance(f, dict) and isinstance(f.get("value"), str)
        ]
        body = "\n".join(w for w in words if w) or str(attachment.get("fallback") or "").strip()
        if not body:
            continue
        author = attachment.get("author_name") or attachment.get("author_subname")
        shared = attachment.get("is_share") or attachment.get("is_msg_unfurl")
        label = "Forwarded message" if shared else "Attachment"
        if isinstance(author, str) and author.strip():
            label += f" from {author.strip()}"
        pieces.append(f"[{label}]\n{_capped(inbound_text(body, bot_user_id))}")
    for file in event.get("files") or []:
        if not isinstance(file, dict):
            continue
        preview = file.get("preview") or file.get("plain_text")
        if isinstance(preview, str) and preview.strip():
            name = str(file.get("title") or file.get("name") or "a file")
            pieces.append(f"[Attached file {name}]\n{_capped(inbound_text(preview, bot_user_id))}")
    return "\n\n".join(pieces)


def user_edit(event: dict[str, Any], bot_user_id: str | None) -> SlackEdit | None:
    """A person's edit in a `message_changed` event, or None.

    Slack also sends message_changed when it attaches link previews or thread metadata; those have no
    `edited` stamp or the same text, and are not edits.
    """
    changed, previous = event.get("message"), event.get("previous_message") or {}
    channel = event.get("channel")
    if not isinstance(changed, dict) or not isinstance(channel, str):
        return None
    edited = changed.get("edited")
    ts = changed.get("ts")
    if not isinstance(edited, dict) or not isinstance(ts, str):
        return None
    # Whoever made the edit (`edited.user`), which the core compares with the message's author.
    user = edited.get("user") or changed.get("user")
    if not isinstance(user, str):
        return None
    if _is_from_a_bot(changed, bot_user_id) or changed.get("text") == previous.get("text"):
        return None
    said = inbound_text(str(changed.get("text") or ""), bot_user_id)
    attached = attached_text(changed, bot_user_id)
    return SlackEdit(
        channel=channel,
        ts=ts,
        user=user,
        # What was forwarded or attached stays with the edited text: the branch reads all of it.
        text="\n\n".join(part for part in (said, attached) if part),
        edited_ts=str(edited.get("ts") or event.get("ts") or ""),
    )


def _ts_from_digits(digits: str) -> str:
    # Permalinks drop the dot of a ts: p1700000000000100 is 1700000000.000100.
    return f"{digits[:-6]}.{digits[-6:]}"


def parse_thread_link(text: str) -> ThreadRef | None:
    """The thread a Slack permalink points at: a thread's first message or any reply in it.

    Accepts the link as pasted (`https://…`), wrapped the way Slack escapes links in slash commands
    (`<https://…>` or `<https://…|label>`), and with `&amp;` entities.
    """
    candidate = text.strip().removeprefix("<").removesuffix(">").split("|", 1)[0].replace("&amp;", "&")
    parsed = urllib.parse.urlparse(candidate)
    if parsed.scheme not in ("http", "https") or not parsed.netloc.endswith("slack.com"):
        return None
    match = _PERMALINK_RE.search(parsed.path)
    if match is None:
        return None
    thread_ts = urllib.parse.parse_qs(parsed.query).get("thread_ts", [""])[0]
    if not re.fullmatch(r"\d+\.\d{6}", thread_ts):
        thread_ts = _ts_from_digits(match["digits"])
    return ThreadRef(channel=match["channel"], thread_ts=thread_ts)
