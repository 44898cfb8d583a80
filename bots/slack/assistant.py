"""Slack's assistant container (Agents & AI Apps): Claude opened from Slack's top bar.

Each assistant thread is one conversation, with the same rules as a thread in a channel: endings, the
notice, the locked thread and branching by editing a message all work there unchanged. What the container
adds is set here: suggested prompts when a thread opens, a title from the first message, and a status
("is thinking…") while Claude works (Slack clears it when the answer is posted; we clear it ourselves
when there is nothing to post).

Bolt's `AsyncAssistant` routes the container's events. Out of the box it also swallows edits in
assistant threads; ours lets them through to the edit listener, so editing a message branches there too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAssistant
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.payload_utils import is_assistant_event, is_other_message_sub_event_in_assistant_thread
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.inbound import PLATFORM, SlackMessage
from core.domain import ThreadKey
from core.service import ConversationService

log = logging.getLogger(__name__)

THINKING = "is thinking…"
# Shown in turn under the status while the answer is on its way.
LOADING_MESSAGES = ["Reading the thread…", "Thinking it through…", "Writing an answer…"]
PROMPTS_TITLE = "What would you like to talk about?"
TITLE_LIMIT = 60  # Slack shows short titles in the history list; longer ones are cut with "…"


@dataclass(frozen=True, slots=True)
class Prompt:
    title: str
    message: str


PROMPTS = (
    Prompt("Explain something", "Explain how vaccines teach the immune system, in plain words."),
    Prompt("Help me write", "Help me write a friendly reminder to my team about Friday's deadline."),
    Prompt("Think it through", "Help me weigh the pros and cons of a decision I'm facing."),
)


def thread_title(text: str) -> str:
    """A thread's title from its first message: the first line, cut at a word."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if len(line) <= TITLE_LIMIT:
        return line or "New conversation"
    return line[: TITLE_LIMIT - 1].rsplit(" ", 1)[0].rstrip(" ,.;:") + "…"


class EditsPassAssistant(AsyncAssistant):
    """Bolt's assistant router, except that edits (message_changed) in assistant threads reach the app's
    own edit listener instead of being acknowledged and dropped."""

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        event = req.body.get("event") or {}
        if event.get("type") == "message" and event.get("subtype") == "message_changed":
            return await next()
        if not (is_assistant_event(req.body) or is_other_message_sub_event_in_assistant_thread(req.body)):
            # Not the container's: Bolt's router would try each of its listeners' matchers (each building every
            # argument a listener could take) and then pass it on, which is all this does.
            return await next()
        return await super().async_process(req=req, resp=resp, next=next)


class SlackAssistant:
    """What the container does around the conversation: prompts, title, status."""

    def __init__(self, client: AsyncWebClient, *, service: ConversationService) -> None:
        self._client = client
        self._service = service

    async def thread_started(self, event: dict[str, Any]) -> None:
        """A user opened a new assistant thread: it is their conversation; offer a few ways to begin."""
        thread = event.get("assistant_thread") or {}
        channel, thread_ts, user = thread.get("channel_id"), thread.get("thread_ts"), thread.get("user_id")
        if not (isinstance(channel, str) and isinstance(thread_ts, str) and isinstance(user, str)):
            return
        await self._service.start_conversation(key=ThreadKey(PLATFORM, channel, thread_ts), owner_id=user)
        await self._client.assistant_threads_setSuggestedPrompts(
            channel_id=channel,
            thread_ts=thread_ts,
            title=PROMPTS_TITLE,
            prompts=[{"title": p.title, "message": p.message} for p in PROMPTS],
        )

    async def answering(self, message: SlackMessage, answer: Callable[[], Awaitable[None]]) -> None:
        """Around one answer in an assistant thread: title (first message), status, the answer, status off."""
        if await self._is_first(message):
            await self._quietly(
                self._client.assistant_threads_setTitle(
                    channel_id=message.channel, thread_ts=message.thread_ts, title=thread_title(message.text)
                )
            )
        await self._quietly(
            self._client.assistant_threads_setStatus(
                channel_id=message.channel,
                thread_ts=message.thread_ts,
                status=THINKING,
                loading_messages=LOADING_MESSAGES,
            )
        )
        try:
            await answer()
        finally:
            # Posting the answer clears the status; an answer that posts nothing must not leave it spinning.
            await self._quietly(
                self._client.assistant_threads_setStatus(
                    channel_id=message.channel, thread_ts=message.thread_ts, status=""
                )
            )

    async def _is_first(self, message: SlackMessage) -> bool:
        conversation = await self._service.find_conversation(message.key)
        if conversation is None:
            return True
        # The message itself is stored before the ack (durable intake), so the first one finds itself only.
        mine = await self._service.user_messages(conversation_id=conversation.id, author_id=message.user)
        return len(mine) <= 1

    @staticmethod
    async def _quietly(call: Awaitable[Any]) -> None:
        """Status and title are decoration: a thread Slack does not know as an assistant thread (a DM
        thread from before the container) refuses them, and the answer goes on without."""
        try:
            await call
        except SlackApiError as exc:
            log.info("slack assistant call refused", extra={"error": exc.response.get("error")})
