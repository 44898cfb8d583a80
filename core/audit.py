"""Audit events: every decision of the rules, with conversation, time, actor and reason (never text)."""

from __future__ import annotations

import logging

from core.domain import AuditEvent, AuditKind
from core.metrics import Metrics
from core.ports import AuditLog, Clock

log = logging.getLogger(__name__)

MODEL_ACTOR = "model"
# Audit kinds whose reason is a short code (safe as a metrics label); others carry free text.
CODED_REASONS = frozenset(
    {
        AuditKind.WARNING_REFUSED,
        AuditKind.WARNING_RECORDED,
        AuditKind.ENDING_REFUSED,
        AuditKind.ENDING_APPROVED,
        AuditKind.CONFIRMATION_REQUESTED,
        AuditKind.RISK_GUARD_FIRED,
        AuditKind.FEEDBACK,
        AuditKind.BUDGET_REACHED,
    }
)


def user_actor(user_id: str) -> str:
    return f"user:{user_id}"


def moderator_actor(user_id: str) -> str:
    return f"moderator:{user_id}"


class Auditor:
    def __init__(self, log_store: AuditLog, *, clock: Clock, metrics: Metrics) -> None:
        self._log = log_store
        self._clock = clock
        self._metrics = metrics

    async def record(
        self, kind: AuditKind, conversation_id: int | None, actor: str, reason: str = "", **detail: object
    ) -> None:
        await self._log.add_event(
            AuditEvent(
                kind=kind.value,
                conversation_id=conversation_id,
                actor=actor,
                reason=reason,
                detail={k: v for k, v in detail.items() if v is not None},
                created_at=self._clock.now(),
            )
        )
        self._metrics.observe_event(kind.value, reason if kind in CODED_REASONS else "")
        log.info("audit", extra={"event": kind.value, "conversation": conversation_id, "reason": reason})
