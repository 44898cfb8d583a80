"""Drafts remembered in the store, so that none outlives the process that wrote it.

A reply streams into a draft message before it is stored. If the process dies (SIGKILL) or a drain cuts the
reply short (the "interrupted" note), the draft stays in the thread while the message waits, unanswered,
for recovery. Each draft is remembered with the message it answers; the next answer in that thread, written
under the thread's lease, takes back every draft whose message is still unanswered (no live answerer can
own one then), so the thread ends up with exactly one answer per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.streaming import StreamedReply
from core.domain import Draft

log = logging.getLogger(__name__)

GONE = frozenset({"message_not_found", "cant_delete_message", "channel_not_found"})


class DraftStore(Protocol):
    async def remember_draft(self, draft: Draft) -> None: ...
    async def orphan_drafts(self, conversation_id: int) -> list[Draft]: ...
    async def forget_draft(self, *, conversation_id: int, ts: str) -> None: ...


class DraftKeeper:
    """Wraps one answer's writer: sweeps leftovers first, remembers its own draft, forgets it when done."""

    def __init__(
        self,
        client: AsyncWebClient,
        store: DraftStore,
        writer: StreamedReply,
        *,
        conversation_id: int,
        message_id: int,
        channel: str,
    ) -> None:
        self._client = client
        self._store = store
        self._writer = writer
        self._conversation_id = conversation_id
        self._message_id = message_id
        self._channel = channel
        self._remembered: str | None = None

    async def on_text(self, text: str) -> None:
        """The core's TextSink: the writer's, noting the draft's ts once it exists."""
        await self._writer.on_text(text)
        await self._note()

    async def sweep(self) -> None:
        """Remove leftover drafts. Only the thread's holder may call this, before it posts a draft of its own."""
        try:
            orphans = await self._store.orphan_drafts(self._conversation_id)
        except Exception as exc:
            log.warning("cannot look for leftover drafts", extra={"error": type(exc).__name__})
            return
        for draft in orphans:
            try:
                await self._client.chat_delete(channel=draft.place, ts=draft.ts)
            except SlackApiError as exc:
                if exc.response.get("error") not in GONE:
                    log.warning("cannot remove a leftover draft", extra={"error": exc.response.get("error")})
                    continue
            with contextlib.suppress(Exception):
                await self._store.forget_draft(conversation_id=draft.conversation_id, ts=draft.ts)
        if orphans:
            log.info("removed drafts a stopped process left", extra={"count": len(orphans)})

    async def _note(self) -> None:
        ts = self._writer.draft_ts
        if ts is None or ts == self._remembered:
            return
        self._remembered = ts
        try:
            await self._store.remember_draft(Draft(self._conversation_id, self._message_id, self._channel, ts))
        except Exception as exc:
            self._remembered = None
            log.warning("cannot remember a draft", extra={"error": type(exc).__name__})

    async def keep(self) -> None:
        """Cut short (shutdown): the draft, now an "interrupted" note, stays remembered for whoever answers."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self._note())

    async def done(self) -> None:
        """The final posts are in place (or the draft was removed): nothing left to take back."""
        ts = self._remembered
        if ts is None:
            return
        self._remembered = None
        try:
            await self._store.forget_draft(conversation_id=self._conversation_id, ts=ts)
        except Exception as exc:
            log.warning("cannot forget a finished draft", extra={"error": type(exc).__name__})
