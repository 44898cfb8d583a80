"""People's messages and edits in, the core's outcomes out, in the right Slack thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.inbound import PLATFORM, SlackEdit, SlackMessage
from bots.slack.render import branch_starter, fresh_starter, render_outcome, short_notice
from bots.slack.replies import DEFAULT_UPDATE_INTERVAL, post, post_ephemeral
from bots.slack.streaming import StreamedReply
from bots.slack.users import UserNames
from core.domain import StoredMessage, ThreadKey
from core.outcomes import AlreadyEnded, Ignored, NotAllowed, Outcome, Rejected
from core.service import ConversationService, InboundMessage

log = logging.getLogger(__name__)

EVENT_SOURCE = "slack"
# A second namespace in the same dedupe table: one Slack post gets at most one private note, although
# Slack reports a mention twice (app_mention and message) and the core stores nothing for such posts.
NOTE_SOURCE = "slack-note"
INTERRUPTED = "_This answer was interrupted by a restart. It will be answered again in a moment._"


class SlackStore(Protocol):
    """What the adapter needs from the store directly (everything else goes through the service)."""

    async def claim_event(self, *, source: str, event_id: str) -> bool: ...


class SlackConversations:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        service: ConversationService,
        store: SlackStore,
        names: UserNames,
        update_interval: float = DEFAULT_UPDATE_INTERVAL,
    ) -> None:
        self._client = client
        self._service = service
        self._store = store
        self._names = names
        self._update_interval = update_interval
        # The workspace the bot is installed in (from auth.test): streams outside DMs name their recipient.
        self.team_id: str | None = None

    def _writer(self, *, channel: str, thread_ts: str, user: str) -> StreamedReply:
        return StreamedReply(
            self._client,
            channel=channel,
            thread_ts=thread_ts,
            user=user,
            team_id=self.team_id,
            min_interval=self._update_interval,
        )

    async def on_message(self, message: SlackMessage, *, event_id: str) -> None:
        # Most channel messages are not in any conversation: skip them before any write or API call.
        if not message.may_start and await self._service.find_conversation(message.key) is None:
            return
        # Looked up while the event is claimed: users.info is not waited for after that unless it is slow.
        self._names.prefetch(message.user)
        # Slack redelivers an event it thinks we missed; a post already handled must not be answered again.
        if not await self._store.claim_event(source=EVENT_SOURCE, event_id=event_id):
            return
        writer = self._writer(channel=message.channel, thread_ts=message.thread_ts, user=message.user)
        inbound = InboundMessage(
            key=message.key,
            author_id=message.user,
            author_name=await self._names.name_of(message.user),
            text=message.text,
            platform_message_id=message.platform_message_id,
            may_start=message.may_start,
            budget_scope=message.channel,
        )
        outcome = await self._answering(writer, self._service.handle_message(inbound, writer.on_text))
        if await self._first_note(outcome, message.platform_message_id):
            await writer.finish(render_outcome(outcome))

    async def _answering(self, writer: StreamedReply, answer: Awaitable[Outcome]) -> Outcome:
        try:
            return await answer
        except asyncio.CancelledError:
            # Cut short by a shutdown: the message stays stored and unanswered, and another instance
            # answers it; meanwhile the draft must not show half a reply as if it were the answer.
            with contextlib.suppress(Exception):
                await asyncio.shield(writer.abandon(short_notice(INTERRUPTED)))
            raise

    async def answer_unanswered(self, message: StoredMessage) -> None:
        """Answer, in its thread, a message that a stopped process took in but never answered."""
        conversation = await self._service.get_conversation(message.conversation_id)
        if conversation is None or conversation.key.platform != PLATFORM:
            return
        key = conversation.key
        writer = self._writer(channel=key.place, thread_ts=key.thread, user=message.author_id or conversation.owner_id)
        outcome = await self._answering(writer, self._service.answer_pending(message, writer.on_text))
        await writer.finish(render_outcome(outcome))

    async def _first_note(self, outcome: Outcome, post_id: str) -> bool:
        """False for the second private note about the same post (the core stored nothing to dedupe on)."""
        if not isinstance(outcome, AlreadyEnded | Rejected):
            return True
        return await self._store.claim_event(source=NOTE_SOURCE, event_id=post_id)

    async def on_edit(self, edit: SlackEdit, *, event_id: str) -> None:
        """An edit of a message the bot answered starts a new conversation from it, in a new thread."""
        if not await self._store.claim_event(source=EVENT_SOURCE, event_id=event_id):
            return
        source = await self._service.find_branch_source(
            platform=PLATFORM, platform_message_id=edit.platform_message_id, editor_id=edit.user
        )
        if isinstance(source, Ignored):
            return
        if isinstance(source, NotAllowed):
            await post_ephemeral(self._client, channel=edit.channel, user=edit.user, post=short_notice(source.text))
            return
        starter_ts = await post(
            self._client, channel=edit.channel, post=branch_starter(edit.user, await self._permalink(edit))
        )
        writer = self._writer(channel=edit.channel, thread_ts=starter_ts, user=edit.user)
        outcome = await self._service.branch(
            source,
            key=ThreadKey(PLATFORM, edit.channel, starter_ts),
            new_text=edit.text,
            author_name=await self._names.name_of(edit.user),
            platform_message_id=edit.branch_message_id,
            on_text=writer.on_text,
        )
        if isinstance(outcome, Rejected):
            # Nothing was branched: take the starter back and tell the editor why, privately.
            await self._client.chat_delete(channel=edit.channel, ts=starter_ts)
            await post_ephemeral(self._client, channel=edit.channel, user=edit.user, post=short_notice(outcome.text))
            return
        await writer.finish(render_outcome(outcome))

    async def _permalink(self, edit: SlackEdit) -> str | None:
        try:
            response = await self._client.chat_getPermalink(channel=edit.channel, message_ts=edit.ts)
        except SlackApiError as exc:
            log.warning("cannot link the edited message", extra={"error": exc.response.get("error")})
            return None
        return str(response["permalink"])

    async def start_fresh(self, *, channel: str, user: str) -> str:
        """A new top-level thread the user can reply in without mentioning the bot; returns its link."""
        starter_ts = await post(self._client, channel=channel, post=fresh_starter(user))
        # The user asked for this thread with the button: it is theirs before they write in it.
        await self._service.start_conversation(key=ThreadKey(PLATFORM, channel, starter_ts), owner_id=user)
        response = await self._client.chat_getPermalink(channel=channel, message_ts=starter_ts)
        return str(response["permalink"])
