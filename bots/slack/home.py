"""The App Home tab: for moderators a monitoring page (recent endings with links, refused endings, risk-guard
firings, feedback); for everyone else a short explanation of how the bot works."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.moderators import SlackModerators
from bots.slack.render import context, escape, header, section, trusted_text
from core.domain import JSON, AuditKind, Conversation
from core.overview import Overview
from core.service import ConversationService

log = logging.getLogger(__name__)

HOME_DAYS = 7
RECENT_LIMIT = 10
EXPLANATION_PREVIEW = 200
EVENT_LABELS = {
    AuditKind.ENDING_REFUSED.value: "ending refused",
    AuditKind.RISK_GUARD_FIRED.value: "risk guard fired",
    AuditKind.FEEDBACK.value: "feedback",
    AuditKind.MODERATOR_END.value: "moderator ended",
    AuditKind.MODERATOR_REOPEN.value: "moderator reopened",
}
MEMBER_HOME = (
    "*Hi, I'm Last Resort: Claude in your threads.*\n"
    "Mention me in a channel or send me a direct message to start a conversation; keep talking in that "
    "thread, no mention needed. Everyone in the thread can join in."
)
MEMBER_ENDINGS = (
    "In rare cases of persistent abuse, Claude may end a conversation, always after a warning, or when "
    "you ask it to and confirm. You lose nothing: start a new conversation at any time, or edit one of "
    "your messages to branch the conversation from that point."
)
MEMBER_COMMANDS = "`/lastresort forget` deletes what you wrote to me. `/lastresort help` lists the commands."


def slack_date(when: datetime | None) -> str:
    """Slack renders this in each reader's own time zone; the text after `|` is the fallback."""
    if when is None:
        return "unknown time"
    fallback = when.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def figures_text(overview: Overview) -> str:
    return "\n".join(f"{label}: *{value}*" for label, value in overview.figures())


def _ending_line(conversation: Conversation, link: str | None) -> str:
    where = f"<{escape(link)}|conversation #{conversation.id}>" if link else f"conversation #{conversation.id}"
    reason = conversation.ended_reason.value if conversation.ended_reason else "unknown"
    explanation = (conversation.ended_explanation or "").strip()
    if len(explanation) > EXPLANATION_PREVIEW:
        explanation = explanation[: EXPLANATION_PREVIEW - 1] + "…"
    line = f"• {where} on {conversation.key.platform} — *{reason}* by {escape(conversation.ended_by or '?')}"
    line += f", {slack_date(conversation.ended_at)}"
    return f"{line}\n> {escape(explanation)}" if explanation else line


def _event_lines(overview: Overview) -> str:
    lines = []
    for event in overview.recent_events:
        label = EVENT_LABELS.get(event.kind, event.kind)
        target = f"conversation #{event.conversation_id}" if event.conversation_id else "—"
        reason = f": {escape(event.reason)}" if event.reason else ""
        lines.append(f"• {slack_date(event.created_at)} — {label}, {target}{reason}")
    return "\n".join(lines)[:3000] or "Nothing notable."


def moderator_home(overview: Overview, links: Mapping[int, str]) -> JSON:
    blocks: list[JSON] = [
        header("Last Resort — moderation"),
        context(trusted_text(f"Last {overview.days} days. Details: `/lastresort status &lt;thread link&gt;`.")),
        section(trusted_text(figures_text(overview))),
        {"type": "divider"},
        header("Recent endings"),
    ]
    endings = [_ending_line(c, links.get(c.id)) for c in overview.recent_endings]
    blocks += [section(trusted_text(line[:3000])) for line in endings] or [section(trusted_text("No endings yet."))]
    blocks += [
        {"type": "divider"},
        header("Refused endings, risk guard, feedback"),
        section(trusted_text(_event_lines(overview))),
    ]
    return {"type": "home", "blocks": blocks}


def member_home() -> JSON:
    blocks = [
        section(trusted_text(MEMBER_HOME)),
        section(trusted_text(MEMBER_ENDINGS)),
        context(trusted_text(MEMBER_COMMANDS)),
    ]
    return {"type": "home", "blocks": blocks}


class SlackHome:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        service: ConversationService,
        moderators: SlackModerators,
    ) -> None:
        self._client = client
        self._service = service
        self._moderators = moderators

    async def publish(self, user_id: str) -> None:
        if await self._moderators.is_moderator(user_id):
            overview = await self._service.overview(days=HOME_DAYS, limit=RECENT_LIMIT)
            view = moderator_home(overview, await self._links(overview.recent_endings))
        else:
            view = member_home()
        await self._client.views_publish(user_id=user_id, view=view)

    async def _links(self, endings: list[Conversation]) -> dict[int, str]:
        links: dict[int, str] = {}
        for conversation in endings:
            if conversation.key.platform != "slack":
                continue
            try:
                response = await self._client.chat_getPermalink(
                    channel=conversation.key.place, message_ts=conversation.key.thread
                )
            except SlackApiError:
                continue  # the thread was deleted or the bot left the channel: list it without a link
            links[conversation.id] = str(response["permalink"])
        return links
