"""What moderators see at a glance, the same in every app: labelled figures, recent endings and events."""

from __future__ import annotations

from dataclasses import dataclass

from core.domain import AuditEvent, AuditKind, Conversation


@dataclass(frozen=True, slots=True)
class Overview:
    """What moderators see at a glance: counts by audit kind, recent endings and notable events."""

    days: int
    counts: dict[str, int]
    recent_endings: list[Conversation]
    recent_events: list[AuditEvent]
    helpful: int = 0
    not_helpful: int = 0
    # Votes on answers (👍/👎 under each answer), beside the feedback on endings.
    answers_helpful: int = 0
    answers_not_helpful: int = 0

    def figures(self) -> list[tuple[str, int]]:
        """The figures moderators see, labelled, in one order: every app shows exactly these."""
        counted = [(label, self.counts.get(kind.value, 0)) for kind, label in FIGURES]
        return [
            *counted,
            ("Feedback: ending was right", self.helpful),
            ("Feedback: ending was wrong", self.not_helpful),
            ("Feedback: answer helpful", self.answers_helpful),
            ("Feedback: answer not helpful", self.answers_not_helpful),
        ]


FIGURES = (
    (AuditKind.ENDING_APPROVED, "Endings approved"),
    (AuditKind.MODERATOR_END, "Ended by moderators"),
    (AuditKind.ENDING_REFUSED, "Endings refused"),
    (AuditKind.WARNING_RECORDED, "Warnings recorded"),
    (AuditKind.WARNING_REFUSED, "Warnings refused"),
    (AuditKind.RISK_GUARD_FIRED, "Risk-guard firings"),
    (AuditKind.CONFIRMATION_REQUESTED, "Endings asked for by users"),
    (AuditKind.BRANCHED, "Branches"),
    (AuditKind.MODERATOR_REOPEN, "Reopened"),
    (AuditKind.MODEL_REFUSAL, "Replies the API refused"),
)
# Feedback is counted from its events; past this many in the period the counts are a floor.
FEEDBACK_LIMIT = 100_000

NOTABLE_EVENTS = frozenset(
    {
        AuditKind.ENDING_REFUSED.value,
        AuditKind.RISK_GUARD_FIRED.value,
        AuditKind.FEEDBACK.value,
        AuditKind.MODERATOR_END.value,
        AuditKind.MODERATOR_REOPEN.value,
    }
)
