"""An answer streamed the way Slack's AI apps stream: chat.startStream, chat.appendStream, chat.stopStream.

The guarantees of the post-and-update path hold here too:
- Nothing is shown before the core says the words are clearly an answer (it calls `on_text` only then).
- Words the core withdraws (`on_text("")`, a tool call began) leave the screen at once: the stream is
  stopped and its message deleted; if the model then starts over, a new stream starts.
- The final message is exactly the answer: `finish` streams what is missing, attaches our blocks
  (feedback buttons, support resources, a warning note) when the stream stops, and posts any further
  messages a long answer needs. If what was streamed is not the start of the final answer, the stream
  message is deleted and the answer posted whole; an answer complete before any of it was shown is posted
  whole too (one call, not a stream's two).
- Where Slack refuses streaming (a workspace or channel without it, any method error), the answer goes
  the old way (`ThreadReply`: post, update) from where the stream stood; nothing is lost. A stream that
  Slack stopped mid-way (it expires when appends pause) becomes that path's draft and is updated in place.

Appends are paced (at most one per `min_interval`, everything new in one call) and run beside the model's
stream, never blocking it; slack-sdk's `AsyncChatStream` makes the calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.render import Rendered, SlackPost, stream_text
from bots.slack.replies import DEFAULT_UPDATE_INTERVAL, ThreadReply, post, post_ephemeral

log = logging.getLogger(__name__)


class StreamedReply:
    """One answer in one thread, streamed. Same interface as `ThreadReply`."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        channel: str,
        thread_ts: str,
        user: str,
        team_id: str | None,
        min_interval: float = DEFAULT_UPDATE_INTERVAL,
    ) -> None:
        self._client = client
        self._channel = channel
        self._thread_ts = thread_ts
        self._user = user
        self._team_id = team_id
        self._min_interval = min_interval
        self._stream: AsyncChatStream | None = None
        self._shown = ""  # neutralised text the stream holds
        self._latest = ""  # raw text the core offered last
        self._sync_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._fallback: ThreadReply | None = None

    @property
    def draft_ts(self) -> str | None:
        if self._fallback is not None:
            return self._fallback.draft_ts
        return self._stream.ts if self._stream is not None else None

    # -- while the model writes ----------------------------------------------------------------------

    async def on_text(self, text: str) -> None:
        """The core's TextSink: the whole text so far, or "" to withdraw it."""
        if self._fallback is not None:
            await self._fallback.on_text(text)
            return
        self._latest = text
        self._wake.set()
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.create_task(self._sync())

    async def _sync(self) -> None:
        """Bring the stream up to the latest text, pacing appends; a withdrawal does not wait."""
        while self._fallback is None and not self._closing:
            target = stream_text(self._latest)
            if target == self._shown:
                return
            try:
                await self._show(target)
            except SlackClientError as exc:
                await self._fall_back(exc)
                await self._fallback_offer(self._latest)
                return
            self._wake.clear()
            if stream_text(self._latest):
                # Pace the next append; a withdrawal (latest becomes "") wakes us at once.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_for_withdrawal(), self._min_interval)

    async def _wait_for_withdrawal(self) -> None:
        while stream_text(self._latest) and not self._closing:
            await self._wake.wait()
            self._wake.clear()

    async def _show(self, target: str) -> None:
        if not target or (self._shown and not target.startswith(self._shown)):
            await self._withdraw()
        if not target:
            return
        stream = self._stream
        if stream is None:
            stream = self._stream = await self._new_stream()
        delta = target[len(self._shown) :]
        await stream.append(markdown_text=delta)
        self._shown = target

    async def _withdraw(self) -> None:
        """Take streamed words off the screen: stop the stream, delete its message."""
        stream, self._stream, self._shown = self._stream, None, ""
        if stream is None or stream.ts is None:
            return
        with contextlib.suppress(SlackApiError):
            # A stream that is not stopped first cannot be deleted on every client; if it already
            # stopped (expired), deleting is all that is left.
            await stream.stop()
        await self._client.chat_delete(channel=self._channel, ts=stream.ts)

    async def _fall_back(self, exc: Exception) -> None:
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
        log.warning("slack streaming refused; posting and updating instead", extra={"error": error})
        # A stream message that exists becomes the draft (Slack lets chat.update edit it).
        draft = self._stream.ts if self._stream is not None else None
        self._stream = None
        self._fallback = ThreadReply(
            self._client,
            channel=self._channel,
            thread_ts=self._thread_ts,
            user=self._user,
            min_interval=self._min_interval,
            draft_ts=draft,
        )

    async def _fallback_offer(self, text: str) -> None:
        if self._fallback is not None and text:
            await self._fallback.on_text(text)

    async def _settle(self) -> None:
        """Let a call in flight land (its message ts matters); no paced append runs after it."""
        self._closing = True
        self._wake.set()
        task, self._sync_task = self._sync_task, None
        if task is not None and not task.done():
            try:
                await task
            except Exception:
                # A lost append costs nothing: `finish` compares what the stream holds with the answer.
                log.exception("slack stream update failed")

    # -- the answer is complete ----------------------------------------------------------------------

    async def finish(self, rendered: Rendered) -> None:
        await self._settle()
        posts = list(rendered.posts)
        if self._fallback is None:
            try:
                posts = await self._finish_stream(posts)
            except SlackClientError as exc:
                # Whatever stood on screen becomes the draft the final posts replace.
                await self._fall_back(exc)
        if self._fallback is not None:
            await self._fallback.finish(rendered)
            return
        for item in posts:
            await post(self._client, channel=self._channel, post=item, thread_ts=self._thread_ts)
        if rendered.ephemeral is not None:
            await post_ephemeral(
                self._client,
                channel=self._channel,
                user=self._user,
                post=rendered.ephemeral,
                thread_ts=self._thread_ts,
            )

    async def _finish_stream(self, posts: list[SlackPost]) -> list[SlackPost]:
        """Complete the first message as a stream; returns the posts still to make."""
        first = posts[0] if posts else None
        if first is None or first.markdown is None:
            # No model text leads the answer (a short notice, nothing at all): no stream for it.
            await self._withdraw()
            return posts
        if self._stream is None:
            # Nothing was shown yet (a short answer, complete before the core offered any of it): one post
            # says it all, with the same blocks, where a stream would take two calls (start, then stop).
            return posts
        if not first.markdown.startswith(self._shown):
            await self._withdraw()
            self._stream = await self._new_stream()
        rest = first.markdown[len(self._shown) :]
        tail = list(first.tail)
        # stopStream takes the rest of the text and attaches our blocks under it, in one call.
        await self._stream.stop(markdown_text=rest or None, blocks=tail or None)
        self._shown = first.markdown
        return posts[1:]

    async def _new_stream(self) -> AsyncChatStream:
        return await self._client.chat_stream(
            channel=self._channel,
            thread_ts=self._thread_ts,
            # Needed outside DMs; harmless in them.
            recipient_team_id=self._team_id,
            recipient_user_id=self._user,
            # Our own pacing decides when to call: every append goes out at once.
            buffer_size=1,
        )

    async def abandon(self, note: SlackPost) -> None:
        """Cut short (shutdown): no half answer stays; the stream message says why instead."""
        await self._settle()
        if self._fallback is not None:
            await self._fallback.abandon(note)
            return
        stream = self._stream
        if stream is None or stream.ts is None:
            return
        with contextlib.suppress(SlackApiError):
            await stream.stop()
        await self._client.chat_update(
            channel=self._channel, ts=stream.ts, text=note.text, blocks=note.api_blocks() or []
        )
