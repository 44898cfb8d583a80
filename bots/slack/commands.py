"""`/lastresort`: moderators' status, end, reopen and stats; `forget` and `help` for every member.

Parsing is pure (`parse_command`); `SlashCommands.run` does the work and returns the text to show the
person who typed the command. Moderator rights are checked on every call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.home import figures_text
from bots.slack.inbound import PLATFORM, ThreadRef, parse_thread_link
from bots.slack.moderators import SlackModerators
from bots.slack.render import REOPENED_NOTE, SlackPost, inbound_text, notice_post, short_notice
from bots.slack.replies import post
from core.service import ConversationService, forgotten_text

log = logging.getLogger(__name__)

STATS_DAYS = 7
MODERATOR_COMMANDS = frozenset({"status", "end", "reopen", "stats"})
THREAD_COMMANDS = frozenset({"status", "end", "reopen"})
MEMBER_COMMANDS = frozenset({"help", "forget"})
# mrkdwn: a literal "<" would start a link, so the placeholders are written as entities.
HELP = (
    "*Last Resort commands*\n"
    "• `/lastresort forget` — delete everything you wrote to me, and the conversations you started.\n"
    "• `/lastresort help` — this list.\n"
    "*For moderators*\n"
    "• `/lastresort status &lt;thread link&gt;` — state, owner, messages and warnings of a conversation.\n"
    "• `/lastresort end &lt;thread link&gt; [reason]` — end a conversation; the reason is shown in the thread.\n"
    "• `/lastresort reopen &lt;thread link&gt;` — let an ended conversation continue.\n"
    f"• `/lastresort stats` — what happened in the last {STATS_DAYS} days.\n"
    "A thread link is what *Copy link* gives for the thread's first message or any reply in it."
)
NOT_A_MODERATOR = (
    "Sorry, `/lastresort {name}` is for Last Resort moderators only, and nothing was changed. "
    "If you think you should be one, ask a workspace admin."
)
NEEDS_LINK = "Please add a thread link: `/lastresort {name} &lt;thread link&gt;` (use *Copy link* on the thread)."
NO_CONVERSATION = "I have no conversation in that thread."
RESTARTING = "Last Resort is restarting. Please try again in a moment."


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # a known subcommand, or "" for none or an unknown one
    thread: ThreadRef | None = None
    rest: str = ""  # what follows the link: the reason of `end`
    unknown: str = ""  # the word typed when it is not a subcommand


def parse_command(text: str) -> Command:
    words = text.strip().split(maxsplit=2)
    if not words:
        return Command("")
    name = words[0].lower()
    if name not in MODERATOR_COMMANDS | MEMBER_COMMANDS:
        return Command("", unknown=words[0])
    if name not in THREAD_COMMANDS or len(words) < 2:
        return Command(name)
    # Slack sends command text with &, < and > as entities; the reason is shown as written.
    reason = inbound_text(words[2], None) if len(words) > 2 else ""
    return Command(name, parse_thread_link(words[1]), reason)


def help_text(command: Command) -> str:
    if command.unknown:
        return f"I don't know `{command.unknown[:40]}`.\n{HELP}"
    return HELP


class SlashCommands:
    def __init__(self, client: AsyncWebClient, *, service: ConversationService, moderators: SlackModerators) -> None:
        self._client = client
        self._service = service
        self._moderators = moderators

    async def run(self, *, user_id: str, text: str) -> str:
        command = parse_command(text)
        if command.name == "forget":
            return await self._forget(user_id)
        if command.name not in MODERATOR_COMMANDS:
            return help_text(command)
        if not await self._moderators.is_moderator(user_id):
            log.info("moderator command refused", extra={"command": command.name})
            return NOT_A_MODERATOR.format(name=command.name)
        if command.name == "stats":
            return await self._stats()
        if command.thread is None:
            return NEEDS_LINK.format(name=command.name)
        if command.name == "status":
            return await self._status(command.thread)
        if command.name == "end":
            return await self._end(command.thread, user_id, command.rest)
        return await self._reopen(command.thread, user_id, command.rest)

    async def _forget(self, user_id: str) -> str:
        removed = await self._service.forget_user(platform=PLATFORM, user_id=user_id)
        return forgotten_text(removed)

    async def _stats(self) -> str:
        overview = await self._service.overview(days=STATS_DAYS)
        return f"*Last {STATS_DAYS} days*\n{figures_text(overview)}"

    async def _status(self, thread: ThreadRef) -> str:
        status = await self._service.status(thread.key)
        if status is None:
            return NO_CONVERSATION
        conversation = status.conversation
        state = "*active*"
        if conversation.is_ended:
            reason = conversation.ended_reason.value if conversation.ended_reason else "unknown"
            state = f"*ended* ({reason}, by {conversation.ended_by or '?'})"
        return (
            f"Conversation #{conversation.id} is {state}. Started by <@{conversation.owner_id}>; "
            f"{status.user_messages} messages from people, {status.warnings} recorded warnings."
        )

    async def _end(self, thread: ThreadRef, moderator: str, reason: str) -> str:
        action = await self._service.moderator_end(key=thread.key, moderator_id=moderator, reason=reason)
        if action is None:
            return NO_CONVERSATION
        ended = action.conversation
        if not action.changed:
            return f"Conversation #{ended.id} has already ended."
        notice = notice_post(ended.id, self._service.notice_for(ended))
        if not await self._post_in_thread(thread, notice):
            return f"Ended conversation #{ended.id}, but I could not post the notice in the thread."
        return f"Ended conversation #{ended.id}; the notice is in the thread."

    async def _reopen(self, thread: ThreadRef, moderator: str, reason: str) -> str:
        action = await self._service.moderator_reopen(key=thread.key, moderator_id=moderator, reason=reason)
        if action is None:
            return NO_CONVERSATION
        if not action.changed:
            return f"Conversation #{action.conversation.id} is not ended."
        await self._post_in_thread(thread, short_notice(REOPENED_NOTE))
        return f"Reopened conversation #{action.conversation.id}."

    async def _post_in_thread(self, thread: ThreadRef, message: SlackPost) -> bool:
        try:
            await post(self._client, channel=thread.channel, post=message, thread_ts=thread.thread_ts)
        except SlackApiError as exc:
            log.warning("cannot post in thread", extra={"error": exc.response.get("error")})
            return False
        return True
