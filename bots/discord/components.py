"""Button clicks and the "Edit & branch" form: each acknowledged within Discord's 3 s, then answered.

Clicks arrive for any member who sees the button; the core decides who may do what (only the owner
answers a confirmation, only an author branches their own message), and a refusal is shown only to the
person who clicked (ephemeral).
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from bots.discord.conversations import DiscordConversations, DiscordStore, home_channel
from bots.discord.inbound import jump_url
from bots.discord.render import DM_NEW_CONVERSATION
from bots.discord.replies import quiet
from bots.discord.views import (
    NUMBER_FIELD,
    TEXT_FIELD,
    Action,
    BranchForm,
    Confirm,
    EditAndBranch,
    Feedback,
    NewConversation,
    branch_modal,
    modal_values,
    parse_message_number,
)
from core.domain import StoredMessage
from core.outcomes import NotAllowed
from core.prompt import user_text_block
from core.service import BranchSource, ConversationService, feedback_text

log = logging.getLogger(__name__)

CONFIRMED = "Confirmed: this conversation has ended."
NOTHING_TO_EDIT = "You have no messages in this conversation to edit."
GONE = "This conversation no longer exists."
NOT_ANSWERED_YET = "That message has not been answered yet, so there is nothing to branch from."
NO_CHANNEL = "I can start conversations only in text channels and their threads."

Interaction = discord.Interaction[discord.Client]


def original_text(message: StoredMessage) -> str:
    """A stored user message as its author wrote it (the core stores it prefixed with who wrote it)."""
    prefix = user_text_block("", author_name=message.author_name, author_id=message.author_id)["text"]
    return str(message.text).removeprefix(str(prefix))


async def tell(interaction: Interaction, text: str) -> None:
    """A note only the clicking person sees, whether or not the interaction was acknowledged yet."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=quiet())
    else:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=quiet())


NO_SUCH_CONVERSATION = "That conversation no longer exists, so there is nothing to give feedback on."
UNKNOWN_BUTTON = "This button no longer does anything. Mention me to start a new conversation."


class Components:
    def __init__(self, *, service: ConversationService, store: DiscordStore, conversations: DiscordConversations):
        self._service = service
        self._store = store
        self._conversations = conversations

    async def handle(self, interaction: Interaction, action: Action) -> None:
        match action:
            case Confirm(confirmation_id=cid, confirmed=confirmed):
                await self._confirm(interaction, cid, confirmed)
            case Feedback(conversation_id=cid, helpful=helpful):
                await self._feedback(interaction, cid, helpful)
            case NewConversation():
                await self._new_conversation(interaction)
            case EditAndBranch(conversation_id=cid):
                await self.open_form(interaction, cid)
            case BranchForm(conversation_id=cid):
                await self._submit_form(interaction, cid)

    async def _confirm(self, interaction: Interaction, confirmation_id: int, confirmed: bool) -> None:
        # Acknowledge first: answering waits for the thread, which may be busy with a reply.
        await interaction.response.defer()
        answer = await self._service.answer_confirmation(
            confirmation_id=confirmation_id, actor_id=str(interaction.user.id), confirmed=confirmed
        )
        if isinstance(answer, NotAllowed):
            await tell(interaction, answer.text)
            return
        await self._settle_question(interaction, CONFIRMED if answer.confirmed else answer.text)
        if answer.confirmed and answer.notice is not None and interaction.channel is not None:
            channel = interaction.channel
            if isinstance(channel, discord.abc.Messageable):
                await self._conversations.announce_ending(channel, answer.conversation, answer.notice)

    @staticmethod
    async def _settle_question(interaction: Interaction, note: str) -> None:
        """The question loses its buttons and says what was decided."""
        message = interaction.message
        embeds = [embed.copy().set_footer(text=note) for embed in (message.embeds if message else [])]
        options: dict[str, Any] = {"view": None, "allowed_mentions": quiet()}
        if embeds:
            options["embeds"] = embeds
        else:
            options["content"] = note
        await interaction.edit_original_response(**options)

    async def _feedback(self, interaction: Interaction, conversation_id: int, helpful: bool) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        if await self._service.get_conversation(conversation_id) is None:
            # A button naming no conversation (deleted, forgotten, or made up): nothing to thank for.
            await tell(interaction, NO_SUCH_CONVERSATION)
            return
        recorded = await self._service.record_feedback(
            conversation_id=conversation_id, actor_id=str(interaction.user.id), helpful=helpful
        )
        await tell(interaction, feedback_text(recorded))

    async def _new_conversation(self, interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = interaction.user
        if interaction.guild is None:
            place = await self._conversations.open_dm(user.id)
            await self._conversations.start(place, user, None, message_id=f"interaction:{interaction.id}")
            await tell(interaction, DM_NEW_CONVERSATION)
            return
        channel = home_channel(interaction.channel)
        if channel is None:
            await tell(interaction, NO_CHANNEL)
            return
        place = await self._conversations.open_thread(channel, user)
        await self._conversations.start(place, user, None, message_id=f"interaction:{interaction.id}")
        await tell(interaction, f"Your new conversation: {place.mention}")

    async def open_form(self, interaction: Interaction, conversation_id: int) -> None:
        """The "Edit & branch" form, for a click or for `/lastresort branch`.

        A modal must be the first answer to an interaction, so no defer here; two quick reads stay within 3 s."""
        mine = await self._service.user_messages(conversation_id=conversation_id, author_id=str(interaction.user.id))
        if not mine:
            await tell(interaction, NOTHING_TO_EDIT)
            return
        modal = branch_modal(conversation_id, last_text=original_text(mine[-1]), message_count=len(mine))
        await interaction.response.send_modal(modal)

    async def _submit_form(self, interaction: Interaction, conversation_id: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        values = modal_values(interaction.data or {})
        editor = interaction.user
        conversation = await self._store.get_conversation(conversation_id)
        if conversation is None:
            await tell(interaction, GONE)
            return
        mine = await self._service.user_messages(conversation_id=conversation_id, author_id=str(editor.id))
        number = parse_message_number(values.get(NUMBER_FIELD, ""), len(mine))
        if number is None:
            await tell(interaction, f"Give the number of one of your messages here, from 1 to {len(mine)}.")
            return
        source = await self._service.find_nth_user_message(key=conversation.key, n=number, editor_id=str(editor.id))
        if not isinstance(source, BranchSource):
            await tell(interaction, source.text if isinstance(source, NotAllowed) else NOT_ANSWERED_YET)
            return
        new_text = values.get(TEXT_FIELD, "")
        # Checked before the new thread is made: a refused text would leave it empty and unanswered.
        refused = self._service.check_text(new_text)
        if refused is not None:
            await tell(interaction, refused.text)
            return
        link = None if interaction.guild_id is None else jump_url(interaction.guild_id, conversation.key.thread)
        place = await self._conversations.branch_place(source, editor=editor, link=link, new_text=new_text)
        await tell(interaction, f"Branched into {place.mention}.")
        await self._conversations.answer_branch(place, source, editor=editor, new_text=new_text)
