"""Writing into a thread or DM: a streamed answer (draft, throttled edits, final messages) and one-off posts.

Every message goes out with `AllowedMentions.none()` (the client sets it too, but a send that forgot
would otherwise ping): model text can never notify @everyone, @here, a role or a user. discord.py sleeps
through 429s and retries 5xx itself, so a rate limit delays a message instead of losing it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import discord

from bots.discord.render import DiscordPost, draft_text
from bots.discord.views import as_view
from bots.draft_pacer import DraftPacer

log = logging.getLogger(__name__)

# Discord allows about five edits per five seconds per channel, and a thread should not flicker:
# one draft edit a second at most. The final text always lands, whatever the throttle skipped.
DEFAULT_UPDATE_INTERVAL = 1.0


def quiet() -> discord.AllowedMentions:
    return discord.AllowedMentions.none()


async def send_post(
    channel: discord.abc.Messageable,
    post: DiscordPost,
    *,
    reference: discord.Message | None = None,
    delete_after: float | None = None,
) -> discord.Message:
    # discord.py's overloads take view=, reference= and delete_after= only when given, so the call is built up.
    options: dict[str, Any] = {"embeds": list(post.embeds), "allowed_mentions": quiet()}
    view = as_view(post.buttons)
    if view is not None:
        options["view"] = view
    if reference is not None:
        # A reply points at the message it answers without pinging its author.
        options.update(reference=reference, mention_author=False)
    if delete_after is not None:
        options["delete_after"] = delete_after
    return await channel.send(post.content or None, **options)


async def replace_post(message: discord.Message, post: DiscordPost) -> discord.Message:
    """Put `post` in place of `message` (one of ours): text, embeds and buttons all replaced."""
    return await message.edit(
        content=post.content or None, embeds=list(post.embeds), view=as_view(post.buttons), allowed_mentions=quiet()
    )


async def send_text(
    channel: discord.abc.Messageable, text: str, *, reference: discord.Message | None = None
) -> discord.Message:
    return await send_post(channel, DiscordPost(content=text), reference=reference)


class StreamedReply:
    """One answer in one channel, as the model writes it.

    The first text sends a draft; later text edits it at most once per `min_interval`; `finish` puts the
    final messages in place. The final text replaces the draft rather than extending it: after a refused
    tool call the model starts over, and people must see only what it said in the end.
    """

    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        min_interval: float = DEFAULT_UPDATE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = channel
        self._draft: discord.Message | None = None
        self._sent: list[discord.Message] = []  # the final messages posted so far
        self._shown = ""
        self._pacer = DraftPacer(
            self._push, has_draft=lambda: self._draft is not None, min_interval=min_interval, clock=clock
        )

    @property
    def draft(self) -> discord.Message | None:
        return self._draft

    async def on_text(self, text: str) -> None:
        """The core's TextSink: called with the whole text so far, often several times a second."""
        self._pacer.offer(text)

    async def _push(self, text: str) -> None:
        try:
            if self._draft is None:
                # The first message is a neutral placeholder: it is what notifications show, and the
                # model's first words may still be withdrawn (a refused tool call), so they come as edits.
                self._draft = await send_text(self._channel, draft_text(""))
                return
            shown = draft_text(text)
            if shown != self._shown:
                self._draft = await self._draft.edit(content=shown, allowed_mentions=quiet())
                self._shown = shown
        except discord.HTTPException as exc:
            # A lost draft edit costs nothing: the final text replaces it anyway.
            log.warning("discord draft update failed", extra={"status": exc.status, "code": exc.code})

    async def abandon(self, note: str) -> None:
        """The answer was cut short (a shutdown): the draft says so instead of showing half a reply."""
        await self._pacer.settle()
        if self._draft is not None:
            self._draft = await self._draft.edit(content=note, embeds=[], view=None, allowed_mentions=quiet())

    async def finish(self, posts: Sequence[DiscordPost]) -> list[discord.Message]:
        await self._pacer.settle()
        remaining = list(posts)
        sent = self._sent = []
        if self._draft is not None:
            if remaining:
                sent.append(await replace_post(self._draft, remaining.pop(0)))
            else:
                # Nothing to say after all (answered together with an earlier message): no stray draft.
                await self._draft.delete()
            self._draft = None
        for post in remaining:
            sent.append(await send_post(self._channel, post))
        return sent

    async def withdraw(self) -> None:
        """The answer did not get through whole: take back what of it was posted (best effort; in an outage
        this fails too), so that posting it again later does not show part of it twice."""
        await self._pacer.settle()
        for message in [*([self._draft] if self._draft is not None else []), *self._sent]:
            with contextlib.suppress(discord.HTTPException):
                await message.delete()
        self._draft = None
        self._sent = []
