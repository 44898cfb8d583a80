"""What the bot's buttons do: confirm or decline an ending, give feedback, start a new conversation.

Each method returns the text to show privately to the person who clicked, or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.conversations import SlackConversations
from bots.slack.inbound import PLATFORM
from bots.slack.render import escape, notice_post, resolved_confirmation_blocks
from bots.slack.replies import post
from core.domain import Conversation
from core.outcomes import NotAllowed
from core.service import ConversationService, feedback_text

STALE = "This button no longer works."
NOT_YOURS = "Only people who took part in this conversation can rate how it ended."


@dataclass(frozen=True, slots=True)
class Click:
    """A button press, reduced to what the handlers need."""

    user: str
    channel: str
    message_ts: str
    message_text: str
    message_blocks: list[dict[str, Any]]
    value: str

    @property
    def number(self) -> int | None:
        return int(self.value) if self.value.isdigit() else None


def click_from(body: dict[str, Any], action: dict[str, Any]) -> Click | None:
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    user = (body.get("user") or {}).get("id")
    if not isinstance(channel, str) or not isinstance(user, str):
        return None
    return Click(
        user=user,
        channel=channel,
        message_ts=str(container.get("message_ts") or message.get("ts") or ""),
        message_text=str(message.get("text") or ""),
        message_blocks=list(message.get("blocks") or []),
        value=str(action.get("value") or ""),
    )


class SlackButtons:
    def __init__(
        self, client: AsyncWebClient, *, service: ConversationService, conversations: SlackConversations
    ) -> None:
        self._client = client
        self._service = service
        self._conversations = conversations

    async def confirm(self, click: Click, *, confirmed: bool) -> str | None:
        """Only the conversation's owner can answer; anyone else is told so and nothing changes."""
        if click.number is None:
            return STALE
        answer = await self._service.answer_confirmation(
            confirmation_id=click.number, actor_id=click.user, confirmed=confirmed
        )
        if isinstance(answer, NotAllowed):
            return answer.text
        note = f"✅ <@{click.user}> confirmed: this conversation has ended." if answer.confirmed else f"↩️ {answer.text}"
        if click.message_ts:
            await self._client.chat_update(
                channel=click.channel,
                ts=click.message_ts,
                text=click.message_text or note,
                blocks=resolved_confirmation_blocks(click.message_blocks, note),
            )
        if answer.confirmed and answer.notice is not None:
            key = answer.conversation.key
            await post(
                self._client,
                channel=key.place,
                post=notice_post(answer.conversation.id, answer.notice),
                thread_ts=key.thread,
            )
        return None

    async def _conversation_here(self, click: Click) -> Conversation | None:
        """The conversation a button names, if it exists and lives where the button was clicked: a payload
        naming another channel's conversation (or none at all) acts on nothing."""
        if click.number is None:
            return None
        conversation = await self._service.get_conversation(click.number)
        if conversation is None or conversation.key.platform != PLATFORM or conversation.key.place != click.channel:
            return None
        return conversation

    async def feedback(self, click: Click, *, helpful: bool) -> str:
        conversation = await self._conversation_here(click)
        if conversation is None:
            return STALE
        if conversation.owner_id != click.user and not await self._service.user_messages(
            conversation_id=conversation.id, author_id=click.user
        ):
            return NOT_YOURS
        recorded = await self._service.record_feedback(
            conversation_id=conversation.id, actor_id=click.user, helpful=helpful
        )
        return feedback_text(recorded)

    async def new_conversation(self, click: Click) -> str:
        if await self._conversation_here(click) is None:
            return STALE
        link = await self._conversations.start_fresh(channel=click.channel, user=click.user)
        return f"Your new conversation is ready: <{escape(link)}|open the thread> and write there, no mention needed."
