"""People's messages and edits in, the core's outcomes out, in the right Slack thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.drafts import DraftKeeper, DraftStore
from bots.slack.inbound import PLATFORM, SlackEdit, SlackMessage
from bots.slack.render import branch_starter, fresh_starter, render_outcome, short_notice
from bots.slack.replies import DEFAULT_UPDATE_INTERVAL, post, post_ephemeral
from bots.slack.streaming import StreamedReply
from bots.slack.users import UserNames
from core.delivery import Deliveries
from core.domain import Conversation, StoredMessage, ThreadKey
from core.outcomes import AlreadyEnded, Ignored, NotAllowed, Outcome, Rejected
from core.service import ConversationService, InboundMessage, Received

log = logging.getLogger(__name__)

EVENT_SOURCE = "slack"
# A second namespace in the same dedupe table: one Slack post gets at most one private note, although
# Slack reports a mention twice (app_mention and message) and the core stores nothing for such posts.
NOTE_SOURCE = "slack-note"
# The name goes into the stored message, and storing happens before Slack's 3 s acknowledgement deadline.
NAME_BUDGET_SECONDS = 0.5
UNDELIVERED = (
    "I answered your last message here, but Slack would not take the answer, so it is lost. Please send it again."
)
INTERRUPTED = "_This answer was interrupted by a restart. It will be answered again in a moment._"


class SlackStore(DraftStore, Protocol):
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
        deliveries: Deliveries | None = None,
    ) -> None:
        self._client = client
        # An answer counts once Slack took it; without this (tests of other parts), nothing is re-posted.
        self._deliveries = deliveries
        # Conversations whose answer is being made or posted here (a count: two messages of one thread may be
        # on their way): recovery must not post a stored answer beside a live one.
        self._answering: Counter[int] = Counter()
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

    async def take_in(self, message: SlackMessage) -> Received | Outcome:
        """Store the message (or learn that it need not be): runs before Slack gets its acknowledgement,
        so it must be quick; whatever raises here means "not stored", and Slack is asked to redeliver."""
        # Most channel messages are not in any conversation: skip them before any write or API call.
        if not message.may_start and await self._service.find_conversation(message.key) is None:
            return Ignored("not_a_conversation")
        inbound = InboundMessage(
            key=message.key,
            author_id=message.user,
            author_name=await self._name_quickly(message.user),
            text=message.text,
            platform_message_id=message.platform_message_id,
            may_start=message.may_start,
            budget_scope=message.channel,
        )
        # The platform message id is the dedupe key: a redelivery (or the app_mention/message pair Slack
        # sends for one mention) finds it stored and comes back Ignored("duplicate").
        return await self._service.receive(inbound)

    async def _name_quickly(self, user: str) -> str | None:
        try:
            async with asyncio.timeout(NAME_BUDGET_SECONDS):
                return await self._names.name_of(user)
        except TimeoutError:
            return None

    async def answer(self, message: SlackMessage, taken: Received | Outcome, *, redelivered: bool = False) -> None:
        """After the acknowledgement: answer what `take_in` stored, or say why not."""
        if isinstance(taken, Received):
            await self._answer_stored(taken.message, taken.conversation, user=message.user)
            return
        if isinstance(taken, Ignored) and taken.reason == "duplicate" and redelivered:
            # Slack redelivers when it missed our answer, which may have been a 503 sent just after the store
            # committed: answer it now if nobody has (the thread's lease keeps this to one answer).
            stored = await self._service.find_message(
                platform=PLATFORM, platform_message_id=message.platform_message_id
            )
            if stored is not None and not stored.answered:
                await self.answer_unanswered(stored)
            return
        if isinstance(taken, Ignored):
            return
        if await self._first_note(taken, message.platform_message_id):
            writer = self._writer(channel=message.channel, thread_ts=message.thread_ts, user=message.user)
            await writer.finish(render_outcome(taken))

    async def answer_unanswered(self, message: StoredMessage) -> None:
        """Answer, in its thread, a message that a stopped process took in but never answered."""
        await self._answer_stored(message, None, user=message.author_id)

    async def _answer_stored(
        self, message: StoredMessage, conversation: Conversation | None, *, user: str | None
    ) -> None:
        """One answer in the message's thread, its draft remembered until the final posts are in place."""
        if conversation is None:
            conversation = await self._service.get_conversation(message.conversation_id)
        if conversation is None or conversation.key.platform != PLATFORM:
            return
        key = conversation.key
        writer = self._writer(channel=key.place, thread_ts=key.thread, user=user or conversation.owner_id)
        keeper = DraftKeeper(
            self._client,
            self._store,
            writer,
            conversation_id=conversation.id,
            message_id=message.id,
            channel=key.place,
        )
        self._answering[conversation.id] += 1
        try:
            await self._answer_and_post(message, conversation, writer, keeper)
        finally:
            self._answering[conversation.id] -= 1
            if self._answering[conversation.id] <= 0:
                del self._answering[conversation.id]

    async def _answer_and_post(
        self, message: StoredMessage, conversation: Conversation, writer: StreamedReply, keeper: DraftKeeper
    ) -> None:
        key = conversation.key
        try:
            outcome = await self._service.answer_pending(
                message, keeper.on_text, under_lease=keeper.sweep, conversation=conversation
            )
        except asyncio.CancelledError:
            # Cut short by a shutdown: the message stays stored and unanswered, and another instance
            # answers it; meanwhile the draft must not show half a reply as if it were the answer. It stays
            # remembered, so that the answer replaces it.
            with contextlib.suppress(Exception):
                await asyncio.shield(writer.abandon(short_notice(INTERRUPTED)))
            await keeper.keep()
            raise
        except Exception:
            # Failed (the database went away mid-answer): the message stays unanswered and recovery answers
            # it later, so half a reply left here would become a second version of that answer.
            await self._remove_draft(writer, key.place)
            await keeper.done()
            raise
        await writer.finish(render_outcome(outcome))
        await keeper.done()
        if self._deliveries is not None and not isinstance(outcome, Ignored):
            await self._deliveries.delivered(conversation_id=conversation.id, trigger_seq=message.seq)

    async def redeliver(self, message: StoredMessage) -> None:
        """Post the stored answer to a message whose answer Slack never took (raises if it fails again)."""
        conversation = await self._service.get_conversation(message.conversation_id)
        if self._deliveries is None or conversation is None or conversation.key.platform != PLATFORM:
            return
        key = conversation.key

        async def show(outcome: Outcome | None) -> bool:
            if conversation.id in self._answering:
                return False  # checked under the thread's lock: a live answer is on its way (a slow post)
            if outcome is not None:
                writer = self._writer(channel=key.place, thread_ts=key.thread, user=message.author_id or "")
                await writer.finish(render_outcome(outcome))
            return True

        if conversation.id not in self._answering:
            await self._deliveries.redeliver(message, show)

    async def tell_undelivered(self, message: StoredMessage) -> None:
        """After giving up on posting an answer: say so plainly, once, in its thread."""
        conversation = await self._service.get_conversation(message.conversation_id)
        if self._deliveries is None or conversation is None:
            return
        key = conversation.key

        async def show(_: Outcome | None) -> None:
            await post(self._client, channel=key.place, post=short_notice(UNDELIVERED), thread_ts=key.thread)

        await self._deliveries.redeliver(message, show)

    async def _remove_draft(self, writer: StreamedReply, channel: str) -> None:
        try:
            await writer.abandon(short_notice(INTERRUPTED))  # lets a draft still being posted land first
            if writer.draft_ts is not None:
                await self._client.chat_delete(channel=channel, ts=writer.draft_ts)
        except Exception as exc:
            log.warning("cannot remove an abandoned draft", extra={"error": type(exc).__name__})

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
        if self._deliveries is not None and not isinstance(outcome, Ignored):
            # A new conversation: this answer is the only one in it.
            await self._deliveries.delivered(conversation_id=outcome.conversation.id)

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
