"""Writing into Slack threads: a streamed answer (draft, throttled updates, final posts) and one-off posts.

Every call goes through one `AsyncWebClient` whose retry handlers honour 429 `Retry-After`, so a rate
limit delays a message instead of losing it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.draft_pacer import DraftPacer
from bots.slack.render import Rendered, SlackPost, draft_post

log = logging.getLogger(__name__)

# chat.update is Tier 3 (about 50 a minute per workspace) and a thread should not flicker: one draft
# update a second at most; the final text always lands, whatever the throttle skipped.
DEFAULT_UPDATE_INTERVAL = 1.0
# Model text must not unfurl into previews of whatever it links to, nor expand names into mentions.
QUIET: dict[str, Any] = {"unfurl_links": False, "unfurl_media": False, "link_names": False}


async def post(client: AsyncWebClient, *, channel: str, post: SlackPost, thread_ts: str | None = None) -> str:
    """Post one message; returns its ts."""
    response = await client.chat_postMessage(
        channel=channel, thread_ts=thread_ts, text=post.text, blocks=post.api_blocks(), **QUIET
    )
    return str(response["ts"])


async def post_ephemeral(
    client: AsyncWebClient, *, channel: str, user: str, post: SlackPost, thread_ts: str | None = None
) -> None:
    await client.chat_postEphemeral(
        channel=channel, user=user, thread_ts=thread_ts, text=post.text, blocks=post.api_blocks()
    )


class ThreadReply:
    """One answer in one thread, as the model writes it.

    The first text posts a draft; later text updates it at most once per `min_interval`; `finish` puts the
    final posts in place. The final text replaces the draft rather than extending it: after a refused tool
    call the model starts over, and the user must see only what it said in the end.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        channel: str,
        thread_ts: str,
        user: str,
        min_interval: float = DEFAULT_UPDATE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        draft_ts: str | None = None,
    ) -> None:
        """`draft_ts`: a message of ours already in the thread to use as the draft (a stream Slack stopped)."""
        self._client = client
        self._channel = channel
        self._thread_ts = thread_ts
        self._user = user
        self._draft_ts = draft_ts
        self._pacer = DraftPacer(
            self._push, has_draft=lambda: self._draft_ts is not None, min_interval=min_interval, clock=clock
        )

    @property
    def draft_ts(self) -> str | None:
        return self._draft_ts

    async def on_text(self, text: str) -> None:
        """The core's TextSink: called with the whole text so far, often several times a second."""
        self._pacer.offer(text)

    async def _push(self, text: str) -> None:
        try:
            if self._draft_ts is None:
                # The first post is a neutral placeholder: it is what notifications show, and the model's
                # first words may still be withdrawn (a refused tool call), so they only ever come as edits.
                response = await self._client.chat_postMessage(
                    channel=self._channel, thread_ts=self._thread_ts, text=draft_post("").text, **QUIET
                )
                self._draft_ts = str(response["ts"])
            else:
                draft = draft_post(text)
                await self._client.chat_update(
                    channel=self._channel, ts=self._draft_ts, text=draft.text, blocks=draft.api_blocks() or []
                )
        except SlackApiError as exc:
            # A lost draft update costs nothing: the final text replaces it anyway.
            log.warning("slack draft update failed", extra={"error": exc.response.get("error")})

    async def finish(self, rendered: Rendered) -> None:
        await self._pacer.settle()
        await self._finish_posts(rendered.posts)
        if rendered.ephemeral is not None:
            await post_ephemeral(
                self._client,
                channel=self._channel,
                user=self._user,
                post=rendered.ephemeral,
                thread_ts=self._thread_ts,
            )

    async def abandon(self, note: SlackPost) -> None:
        """The answer was cut short (shutdown): the draft says so instead of showing half a reply."""
        await self._pacer.settle()
        if self._draft_ts is not None:
            await self._client.chat_update(
                channel=self._channel, ts=self._draft_ts, text=note.text, blocks=note.api_blocks() or []
            )

    async def _finish_posts(self, posts: Sequence[SlackPost]) -> None:
        remaining = list(posts)
        if self._draft_ts is not None:
            if remaining:
                first = remaining.pop(0)
                await self._client.chat_update(
                    channel=self._channel, ts=self._draft_ts, text=first.text, blocks=first.api_blocks() or []
                )
            else:
                # Nothing to say after all (e.g. the message was answered elsewhere): no stray draft.
                await self._client.chat_delete(channel=self._channel, ts=self._draft_ts)
        for item in remaining:
            await post(self._client, channel=self._channel, post=item, thread_ts=self._thread_ts)
