"""Slash commands: `/lastresort` for everyone, `/lastresort-mod` for moderators.

Moderator commands are their own top-level command because Discord applies `default_member_permissions`
only to top-level commands (discord.py ignores it on subcommands). It hides them from members who lack
Manage Threads, but server admins can change that, so every moderator command also checks
Manage Threads when it runs and refuses without it, changing nothing.

Each command is acknowledged at once (deferred, "thinking…") and answered with a follow-up, because
Discord allows 3 s for the first answer and the work may wait for a busy thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands

from bots.discord_components import NO_CHANNEL, tell
from bots.discord_conversations import DiscordConversations, home_channel
from bots.discord_inbound import PLATFORM, thread_key
from bots.discord_render import DM_NEW_CONVERSATION, stats_text, status_text
from core.service import ConversationService, forgotten_text
from core.work_tracker import ShuttingDownError, WorkTracker

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]

MEMBER_GROUP = "lastresort"
MODERATOR_GROUP = "lastresort-mod"
MODERATORS_ONLY = "This command is for moderators: it needs the Manage Threads permission."
RESTARTING = "I am restarting right now. Please try again in a moment."
FAILED = "Something went wrong, so this may not have worked. Please try again."
NOT_A_THREAD = "Run this inside a conversation thread."
NOT_A_CONVERSATION = "This thread is not a Last Resort conversation."
DEFAULT_STATS_DAYS = 7


class LastResortTree(app_commands.CommandTree[discord.Client]):
    """A command tree that runs each interaction once, and answers refusals privately."""

    def __init__(self, client: discord.Client, *, claim: Callable[[int], Awaitable[bool]]) -> None:
        super().__init__(client)
        self._claim = claim

    async def interaction_check(self, interaction: Interaction, /) -> bool:
        # Two sessions (a rolling deploy) may both receive an interaction; only one may answer it.
        return await self._claim(interaction.id)

    async def on_error(self, interaction: Interaction, error: app_commands.AppCommandError, /) -> None:
        if isinstance(error, app_commands.MissingPermissions):
            await tell(interaction, MODERATORS_ONLY)
            return
        log.error("discord command failed", exc_info=error)
        await tell(interaction, FAILED)


class SlashCommands:
    def __init__(self, *, service: ConversationService, conversations: DiscordConversations, work: WorkTracker) -> None:
        self._service = service
        self._conversations = conversations
        self._work = work

    def groups(self) -> list[app_commands.Group]:
        return [self._member_group(), self._moderator_group()]

    # -- wiring ----------------------------------------------------------------------------------------

    def _member_group(self) -> app_commands.Group:
        group = app_commands.Group(name=MEMBER_GROUP, description="Talk with Claude in a thread of its own")

        @group.command(name="chat", description="Start a new conversation with Claude")
        @app_commands.describe(prompt="What you want to say (optional)")
        async def chat(interaction: Interaction, prompt: str | None = None) -> None:
            await self._run(interaction, lambda: self.start(interaction, prompt))

        @group.command(name="new", description="Start a new conversation (in DMs: the next one)")
        async def new(interaction: Interaction) -> None:
            await self._run(interaction, lambda: self.start(interaction, None))

        @group.command(name="forget", description="Delete what you wrote to Claude and the conversations you started")
        async def forget(interaction: Interaction) -> None:
            await self._run(interaction, lambda: self.forget(interaction))

        return group

    def _moderator_group(self) -> app_commands.Group:
        group = app_commands.Group(
            name=MODERATOR_GROUP,
            description="Moderate Last Resort conversations",
            guild_only=True,
            default_permissions=discord.Permissions(manage_threads=True),
        )
        moderators_only = app_commands.checks.has_permissions(manage_threads=True)

        @group.command(name="status", description="Show this conversation's state")
        @moderators_only
        async def status(interaction: Interaction) -> None:
            await self._run(interaction, lambda: self.status(interaction))

        @group.command(name="end", description="End this conversation and lock its thread")
        @app_commands.describe(reason="Shown to the people in the thread")
        @moderators_only
        async def end(interaction: Interaction, reason: str = "") -> None:
            await self._run(interaction, lambda: self.end(interaction, reason))

        @group.command(name="reopen", description="Reopen this ended conversation and unlock its thread")
        @moderators_only
        async def reopen(interaction: Interaction) -> None:
            await self._run(interaction, lambda: self.reopen(interaction))

        @group.command(name="stats", description="Warnings, endings and feedback of the last days")
        @app_commands.describe(days="How many days back (default 7)")
        @moderators_only
        async def stats(interaction: Interaction, days: app_commands.Range[int, 1, 365] = DEFAULT_STATS_DAYS) -> None:
            await self._run(interaction, lambda: self.stats(interaction, days))

        return group

    async def _run(self, interaction: Interaction, work: Callable[[], Awaitable[None]]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            async with self._work.track():
                await work()
        except ShuttingDownError:
            await tell(interaction, RESTARTING)
        except Exception:
            log.exception("discord command failed", extra={"command": interaction.command and interaction.command.name})
            await tell(interaction, FAILED)

    # -- members -----------------------------------------------------------------------------------------

    async def start(self, interaction: Interaction, prompt: str | None) -> None:
        user = interaction.user
        message_id = f"interaction:{interaction.id}"
        if interaction.guild is None:
            place = await self._conversations.open_dm(user.id)
            await tell(interaction, DM_NEW_CONVERSATION)
        else:
            channel = home_channel(await _resolved_channel(interaction))
            if channel is None:
                await tell(interaction, NO_CHANNEL)
                return
            place = await self._conversations.open_thread(channel, user, about=prompt or "")
            await tell(interaction, f"Your new conversation: {place.mention}")
        await self._conversations.start(place, user, prompt, message_id=message_id)

    async def forget(self, interaction: Interaction) -> None:
        removed = await self._service.forget_user(platform=PLATFORM, user_id=str(interaction.user.id))
        await tell(interaction, forgotten_text(removed))

    # -- moderators ---------------------------------------------------------------------------------------

    async def status(self, interaction: Interaction) -> None:
        thread = await _thread(interaction)
        if thread is None:
            await tell(interaction, NOT_A_THREAD)
            return
        await tell(interaction, status_text(await self._service.status(thread_key(thread))))

    async def end(self, interaction: Interaction, reason: str) -> None:
        thread = await _thread(interaction)
        if thread is None:
            await tell(interaction, NOT_A_THREAD)
            return
        key = thread_key(thread)
        action = await self._service.moderator_end(key=key, moderator_id=str(interaction.user.id), reason=reason)
        if action is None:
            await tell(interaction, NOT_A_CONVERSATION)
            return
        if not action.changed:
            await tell(interaction, "This conversation has already ended.")
            return
        ended = action.conversation
        await self._conversations.announce_ending(thread, ended, self._service.notice_for(ended))
        await tell(interaction, f"Ended conversation #{ended.id} and locked this thread.")

    async def reopen(self, interaction: Interaction) -> None:
        thread = await _thread(interaction)
        if thread is None:
            await tell(interaction, NOT_A_THREAD)
            return
        current = await self._service.find_conversation(thread_key(thread))
        if current is None or not current.is_ended:
            await tell(interaction, NOT_A_CONVERSATION if current is None else "This conversation has not ended.")
            return
        await self._conversations.reopen(thread, moderator_id=interaction.user.id)
        await tell(interaction, f"Reopened conversation #{current.id}.")

    async def stats(self, interaction: Interaction, days: int) -> None:
        await tell(interaction, stats_text((await self._service.overview(days=days)).figures(), days))


async def _resolved_channel(interaction: Interaction) -> object:
    """The channel a command ran in; fetched when discord.py has not cached it (a thread, usually)."""
    channel = interaction.channel
    if isinstance(channel, discord.PartialMessageable) and interaction.channel_id is not None:
        return await interaction.client.fetch_channel(interaction.channel_id)
    return channel


async def _thread(interaction: Interaction) -> discord.Thread | None:
    channel = await _resolved_channel(interaction)
    return channel if isinstance(channel, discord.Thread) else None
