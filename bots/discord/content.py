"""What of a Discord message the model reads: its text, and the text that came with it.

People write more than `content`: a text file attached, a forwarded message (`message_snapshots`), an
embed. Each reaches the model marked as what it is (so it never passes for the person's own words), and
through the same stored text the risk review reads. What is not text (stickers, images, other files) is
named, not read: with nothing else in the message, the person is told plainly that only text is read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import discord

from bots.discord.inbound import message_text

log = logging.getLogger(__name__)

ONLY_TEXT = (
    "I can only read text: stickers, images and files other than text files do not reach me. "
    "Please describe it in words, or paste the text."
)


@dataclass(frozen=True, slots=True)
class Readable:
    text: str
    unreadable: bool  # something came with it that could not be read (a sticker, an image)


def _embed_text(embed: discord.Embed) -> str:
    parts = [embed.title or "", embed.description or ""]
    parts += [f"{field.name}: {field.value}" for field in embed.fields]
    return "\n".join(p for p in parts if p and p.strip())


async def _attachment_text(attachment: discord.Attachment, max_bytes: int) -> tuple[str, bool]:
    kind = (attachment.content_type or "").split(";")[0].strip().lower()
    if not kind.startswith("text/"):
        return f'[Attached file "{attachment.filename}", which I cannot read: not a text file]', True
    if attachment.size > max_bytes:
        return f'[Attached text file "{attachment.filename}": too large to read ({attachment.size} bytes)]', False
    try:
        data = await attachment.read()
    except (discord.HTTPException, discord.NotFound) as exc:
        log.warning("discord attachment could not be read", extra={"status": getattr(exc, "status", None)})
        return f'[Attached text file "{attachment.filename}": could not be read]', False
    body = data[:max_bytes].decode("utf-8", errors="replace").strip()
    return f'[Attached text file "{attachment.filename}"]\n{body}\n[End of attached file]', False


async def _extras(
    embeds: Sequence[discord.Embed],
    attachments: Sequence[discord.Attachment],
    stickers: Sequence[discord.StickerItem],
    max_bytes: int,
) -> tuple[list[str], bool]:
    parts: list[str] = []
    unreadable = bool(stickers)
    parts += [f"[Sticker: {sticker.name}]" for sticker in stickers]
    for attachment in attachments:
        text, cannot = await _attachment_text(attachment, max_bytes)
        parts.append(text)
        unreadable = unreadable or cannot
    for embed in embeds:
        text = _embed_text(embed)
        if text:
            parts.append(f"[Embed]\n{text}")
    return parts, unreadable


async def readable_text(message: discord.Message, bot_user_id: int, *, max_attachment_bytes: int) -> Readable:
    own = message_text(message, bot_user_id)
    parts, unreadable = await _extras(message.embeds, message.attachments, message.stickers, max_attachment_bytes)
    for snapshot in message.message_snapshots:
        inner, cannot = await _extras(snapshot.embeds, snapshot.attachments, snapshot.stickers, max_attachment_bytes)
        unreadable = unreadable or cannot
        forwarded = "\n".join(p for p in (snapshot.content.strip(), *inner) if p)
        parts.append(f"[Forwarded message]\n{forwarded}\n[End of forwarded message]")
    text = "\n\n".join(p for p in (own, *parts) if p)
    if unreadable and not own and all(p.startswith(("[Sticker", '[Attached file "')) for p in parts):
        return Readable("", unreadable=True)  # nothing but what cannot be read
    return Readable(text, unreadable)
