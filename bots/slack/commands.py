"""`/lastresort`: moderators' status, end, reopen and stats; `forget` and `help` for every member.

Parsing is pure (`parse_command`); `SlashCommands.run` does the work and returns the text to show the
person who typed the command. Moderator rights are checked on every call.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.home import figures_text
from bots.slack.inbound import PLATFORM, ThreadRef, parse_thread_link
from bots.slack.moderators import SlackModerators
from bots.slack.render import (
    ACTION_OVERRIDE_END,
    REOPENED_NOTE,
    SlackPost,
    actions,
    button,
    escape,
    inbound_text,
    notice_post,
    section,
    short_notice,
    trusted_text,
)
from bots.slack.replies import post
from core.domain import RiskMarks
from core.service import ConversationService, ModeratorAction, forgotten_text

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
OVERRIDE_BLOCK_ID = "lastresort_override"
MAX_BUTTON_VALUE = 2000
HELD = {
    "at_risk": (
        "Not ended: someone in conversation #{id} may be at risk ({categories}), so the bot stays with them and "
        "keeps offering support. If it must end anyway, use the button; your override is recorded with your name."
    ),
    "review_unavailable": (
        "Not ended: the risk review could not run, so I cannot tell whether anyone in conversation #{id} is at "
        "risk. Try again in a moment, or end it anyway with the button; your override is recorded with your name."
    ),
    "stale": "Not ended: someone wrote in conversation #{id} while I was checking it. Read it and try again.",
}


def risk_line(marks: RiskMarks) -> str:
    """How `status` shows the mark: a flag and categories, never what anyone said."""
    if not marks.marked:
        return ""
    what = escape(", ".join(sorted(marks.categories))) or "a participant's recent signal"
    shown = "; support resources shown" if marks.support_shown else ""
    return f"\n:warning: *Marked at risk* ({what}){shown}: it will not be warned or ended by the model or on request."


def held_post(action: ModeratorAction, thread: ThreadRef, reason: str) -> SlackPost:
    """Why an `end` was held back, with an explicit override where one is allowed."""
    held = action.held or "stale"
    categories = ", ".join(sorted(action.categories)) or "a recent signal"
    text = HELD[held].format(id=action.conversation.id, categories=escape(categories))
    if held == "stale":
        return SlackPost(text=text, blocks=(section(trusted_text(text)),))
    # What the moderator saw travels with the button: an override acts only if nobody wrote since. Slack caps a
    # button's value at 2,000 characters, so the reason is cut to fit.
    payload = {"c": thread.channel, "t": thread.thread_ts, "s": action.seen_up_to, "r": reason[:500]}
    value = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    while len(value) > MAX_BUTTON_VALUE:
        payload["r"] = str(payload["r"])[:-50]
        value = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    override = button(ACTION_OVERRIDE_END, "End anyway (override)", value, style="danger")
    override["confirm"] = {
        "title": {"type": "plain_text", "text": "End it anyway?"},
        "text": {"type": "mrkdwn", "text": "Someone in this conversation may be at risk. Your override is audited."},
        "confirm": {"type": "plain_text", "text": "End anyway"},
        "deny": {"type": "plain_text", "text": "Keep it open"},
        "style": "danger",
    }
    return SlackPost(text=text, blocks=(section(trusted_text(text)), actions(OVERRIDE_BLOCK_ID, override)))


def override_target(value: str) -> tuple[ThreadRef, str, int] | None:
    """The thread, reason and last message seen that an override button carries, or None for a payload this bot
    did not make."""
    try:
        found = json.loads(value)
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    channel, thread_ts, reason, seen = found.get("c"), found.get("t"), found.get("r", ""), found.get("s")
    if not (isinstance(channel, str) and isinstance(thread_ts, str) and isinstance(reason, str)):
        return None
    if isinstance(seen, bool) or not isinstance(seen, int):
        return None
    return ThreadRef(channel=channel, thread_ts=thread_ts), reason, seen


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

    async def run(self, *, user_id: str, text: str) -> str | SlackPost:
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
            f"{risk_line(status.risk)}"
        )

    async def override_end(self, *, user_id: str, value: str) -> str:
        """The override button: moderator rights are checked again, now, and the override is audited."""
        target = override_target(value)
        if target is None:
            return "This button no longer works."
        if not await self._moderators.is_moderator(user_id):
            log.info("moderator override refused")
            return NOT_A_MODERATOR.format(name="end")
        thread, reason, seen = target
        answer = await self._end(thread, user_id, reason, override=True, seen_up_to=seen)
        return answer if isinstance(answer, str) else answer.text

    async def _end(
        self, thread: ThreadRef, moderator: str, reason: str, *, override: bool = False, seen_up_to: int | None = None
    ) -> str | SlackPost:
        action = await self._service.moderator_end(
            key=thread.key, moderator_id=moderator, reason=reason, override=override, seen_up_to=seen_up_to
        )
        if action is None:
            return NO_CONVERSATION
        ended = action.conversation
        if action.held:
            return held_post(action, thread, reason)
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
