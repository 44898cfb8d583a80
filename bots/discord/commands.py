"""Slash commands: `/lastresort` for everyone, `/lastresort-mod` for moderators.

Moderator commands are their own top-level command because Discord applies `default_member_permissions`
only to top-level commands (discord.py ignores it on subcommands). It hides them from members who lack
Manage Threads, but server admins can change that, so every moderator command also checks
Manage Threads when it runs and refuses without it, changing nothing. `status`, `end` and `reopen` act on
the thread they run in, or on the one named in `thread:` (Discord takes no commands in an archived thread);
Manage Threads is then checked where that thread is too.

Each command is acknowledged at once (deferred, "thinking…") and answered with a follow-up, because
Discord allows 3 s for the first answer and the work may wait for a busy thread. `/lastresort branch` is
the exception: it answers with a form, which must be the first answer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands

from bots.discord.components import NO_CHANNEL, Components, tell
from bots.discord.conversations import DiscordConversations, home_channel
from bots.discord.inbound import PLATFORM, thread_key
from bots.discord.render import (
    DM_NEW_CONVERSATION,
    branch_choices,
    ended_answer,
    held_text,
    reopened_answer,
    stats_text,
    status_text,
)
from bots.discord.targets import BranchSources, may_moderate, resolved_channel, target_thread
from core.service import ConversationService, forgotten_text
from core.work_tracker import WorkTracker

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]

MEMBER_GROUP = "lastresort"
MODERATOR_GROUP = "lastresort-mod"
MODERATORS_ONLY = "This command is for moderators: it needs the Manage Threads permission."
RESTARTING = "I am restarting right now. Please try again in a moment."
FAILED = "Something went wrong, so this may not have worked. Please try again."
NOT_A_THREAD = "Run this inside a conversation thread, or name the thread in the `thread` option."
NO_SUCH_THREAD = "I cannot find that thread in this server. Give its link, its #mention or its id."
NOT_A_CONVERSATION = "This thread is not a Last Resort conversation."
NOTHING_TO_BRANCH = (
    "I found no conversation of yours here to branch. Run this in the channel (or DM) where it was, or give "
    "the conversation's number or its thread's link in the `conversation` option."
)
THREAD_OPTION = "The conversation's thread (a link, #mention or id); default: the thread you run this in"
DEFAULT_STATS_DAYS = 7

Admit = Callable[[Interaction], Awaitable[bool]]


class LastResortTree(app_commands.CommandTree[discord.Client]):
    """A command tree that runs each interaction once, and answers refusals privately."""

    def __init__(self, client: discord.Client, *, admit: Admit) -> None:
        super().__init__(client)
        self._admit = admit

    async def interaction_check(self, interaction: Interaction, /) -> bool:
        # Two sessions (a rolling deploy) may both receive an interaction; only one may answer it.
        return await self._admit(interaction)

    async def on_error(self, interaction: Interaction, error: app_commands.AppCommandError, /) -> None:
        if isinstance(error, app_commands.MissingPermissions):
            await tell(interaction, MODERATORS_ONLY)
            return
        log.error("discord command failed", exc_info=error)
        await tell(interaction, FAILED)


class SlashCommands:
    def __init__(
        self,
        *,
        service: ConversationService,
        conversations: DiscordConversations,
        components: Components,
        branch_sources: BranchSources,
        work: WorkTracker,
    ) -> None:
        self._service = service
        self._conversations = conversations
        self._components = components
        self._branch_sources = branch_sources
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

        @group.command(name="branch", description="Edit one of your messages in an ended conversation and go on")
        @app_commands.describe(conversation="Which one (default: your latest ended conversation here)")
        async def branch(interaction: Interaction, conversation: str | None = None) -> None:
            await self._run(interaction, lambda: self.branch(interaction, conversation), defer=False)

        @branch.autocomplete("conversation")
        async def conversations_to_branch(interaction: Interaction, typed: str) -> list[app_commands.Choice[str]]:
            ended = await self._branch_sources.ended_here(interaction)
            return [app_commands.Choice(name=name, value=value) for name, value in branch_choices(ended, typed)]

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

        @group.command(name="status", description="Show a conversation's state")
        @app_commands.describe(thread=THREAD_OPTION)
        @moderators_only
        async def status(interaction: Interaction, thread: str | None = None) -> None:
            await self._run(interaction, lambda: self.status(interaction, thread))

        @group.command(name="end", description="End a conversation and lock its thread")
        @app_commands.describe(
            reason="Shown to the people in the thread",
            thread=THREAD_OPTION,
            override="End it even if someone in it may be at risk (recorded with your name)",
        )
        @moderators_only
        async def end(
            interaction: Interaction, reason: str = "", thread: str | None = None, override: bool = False
        ) -> None:
            await self._run(interaction, lambda: self.end(interaction, reason, thread, override=override))

        @group.command(name="reopen", description="Reopen an ended conversation and unlock its thread")
        @app_commands.describe(thread=THREAD_OPTION)
        @moderators_only
        async def reopen(interaction: Interaction, thread: str | None = None) -> None:
            await self._run(interaction, lambda: self.reopen(interaction, thread))

        @group.command(name="stats", description="Warnings, endings and feedback of the last days")
        @app_commands.describe(days="How many days back (default 7)")
        @moderators_only
        async def stats(interaction: Interaction, days: app_commands.Range[int, 1, 365] = DEFAULT_STATS_DAYS) -> None:
            await self._run(interaction, lambda: self.stats(interaction, days))

        return group

    async def _run(self, interaction: Interaction, work: Callable[[], Awaitable[None]], *, defer: bool = True) -> None:
        if defer:
            await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            # Admitted even during a shutdown: this instance claimed the interaction, nobody else answers it.
            async with self._work.track(admitted=True):
                await work()
        except Exception:
            log.exception("discord command failed", extra={"command": interaction.command and interaction.command.name})
            with contextlib.suppress(discord.HTTPException):
                await tell(interaction, FAILED)

    # -- members -----------------------------------------------------------------------------------------

    async def start(self, interaction: Interaction, prompt: str | None) -> None:
        user = interaction.user
        message_id = f"interaction:{interaction.id}"
        if interaction.guild is None:
            place = await self._conversations.open_dm(user.id)
            await tell(interaction, DM_NEW_CONVERSATION)
        else:
            channel = home_channel(await resolved_channel(interaction))
            if channel is None:
                await tell(interaction, NO_CHANNEL)
                return
            place = await self._conversations.open_thread(channel, user, about=prompt or "")
            await tell(interaction, f"Your new conversation: {place.mention}")
        await self._conversations.start(place, user, prompt, message_id=message_id)

    async def branch(self, interaction: Interaction, option: str | None) -> None:
        """The "Edit & branch" form, from outside the conversation's thread (it may be archived)."""
        conversation = await self._branch_sources.pick(interaction, option)
        if conversation is None:
            await tell(interaction, NOTHING_TO_BRANCH)
            return
        await self._components.open_form(interaction, conversation.id)

    async def forget(self, interaction: Interaction) -> None:
        removed = await self._service.forget_user(platform=PLATFORM, user_id=str(interaction.user.id))
        await tell(interaction, forgotten_text(removed))

    # -- moderators ---------------------------------------------------------------------------------------

    async def _thread(self, interaction: Interaction, option: str | None) -> discord.Thread | None:
        """The thread to act on; None after telling the moderator why there is none."""
        thread = await target_thread(interaction, option)
        if thread is None:
            await tell(interaction, NO_SUCH_THREAD if option else NOT_A_THREAD)
            return None
        if option and not may_moderate(interaction.user, thread):
            await tell(interaction, MODERATORS_ONLY)
            return None
        return thread

    async def status(self, interaction: Interaction, option: str | None) -> None:
        thread = await self._thread(interaction, option)
        if thread is not None:
            await tell(interaction, status_text(await self._service.status(thread_key(thread))))

    async def end(self, interaction: Interaction, reason: str, option: str | None, *, override: bool = False) -> None:
        thread = await self._thread(interaction, option)
        if thread is None:
            return
        action = await self._service.moderator_end(
            key=thread_key(thread), moderator_id=str(interaction.user.id), reason=reason, override=override
        )
        if action is None:
            await tell(interaction, NOT_A_CONVERSATION)
            return
        if action.held:
            await tell(interaction, held_text(action))
            return
        overrode = (
            f" You overrode the hold ({', '.join(sorted(action.overrode))}); that is recorded with your name."
            if action.overrode
            else ""
        )
        if not action.changed:
            # Ended by someone else first (the model, another moderator): they posted the notice.
            await tell(interaction, "This conversation has already ended.")
            return
        ended = action.conversation
        closing = await self._conversations.announce_ending(thread, ended, self._service.notice_for(ended))
        answer = ended_answer(
            ended.id,
            thread.mention,
            locked=closing.locked,
            why=closing.why_not_locked,
            notice_shown=closing.notice_shown,
        )
        await tell(interaction, answer + overrode)

    async def reopen(self, interaction: Interaction, option: str | None) -> None:
        thread = await self._thread(interaction, option)
        if thread is None:
            return
        reopening = await self._conversations.reopen(thread, moderator_id=interaction.user.id)
        if reopening is None:
            await tell(interaction, NOT_A_CONVERSATION)
        elif not reopening.changed:
            await tell(interaction, "This conversation has not ended.")
        else:
            answer = reopened_answer(reopening.conversation.id, thread.mention, unlocked=reopening.unlocked)
            await tell(interaction, answer)

    async def stats(self, interaction: Interaction, days: int) -> None:
        await tell(interaction, stats_text((await self._service.overview(days=days)).figures(), days))
