"""👍/👎 under an answer: one vote per person and answer, recorded where the answer is."""

from __future__ import annotations

from bots.slack.buttons import STALE, Click
from bots.slack.render import parse_vote
from core.service import ConversationService


async def answer_vote(service: ConversationService, click: Click) -> str | None:
    """The feedback_buttons click on answer `click.message_ts`; returns the private note for the voter."""
    vote = parse_vote(click.value)
    if vote is None or not click.message_ts:
        return STALE
    conversation_id, helpful = vote
    noted = await service.record_answer_vote(
        conversation_id=conversation_id,
        answer_id=click.message_ts,
        voter_id=click.user,
        helpful=helpful,
        # A vote counts only from the channel its conversation lives in: a value copied elsewhere is stale.
        place=click.channel,
    )
    return noted or STALE
