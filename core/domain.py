"""Platform-neutral values the core works with. All frozen: state changes go through the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

JSON = dict[str, Any]


class Status(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class EndReason(StrEnum):
    PERSISTENT_ABUSE = "persistent_abuse"
    USER_REQUESTED = "user_requested"
    MODERATOR = "moderator"


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """Where a conversation lives: one thread on one platform is one conversation."""

    platform: str
    place: str  # Slack channel, Discord channel or DM, terminal session
    thread: str  # Slack thread_ts, Discord thread id, terminal conversation number


@dataclass(frozen=True, slots=True)
class Conversation:
    id: int
    key: ThreadKey
    owner_id: str
    status: Status
    created_at: datetime
    branched_from: int | None = None
    branch_point_seq: int | None = None
    ended_reason: EndReason | None = None
    ended_explanation: str | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None

    @property
    def is_ended(self) -> bool:
        return self.status is Status.ENDED


@dataclass(frozen=True, slots=True)
class ActiveThread:
    """An active conversation and the platform id of the last message stored in it: where a platform's
    history can be read from to catch up on what arrived while no process was listening."""

    conversation: Conversation
    last_platform_message_id: str | None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One turn as the model sees it. `blocks` are Messages API content blocks, kept verbatim so the
    replayed history is byte-identical from turn to turn (prompt caching depends on it)."""

    id: int
    conversation_id: int
    seq: int
    role: Role
    blocks: tuple[JSON, ...]
    author_id: str | None = None
    author_name: str | None = None
    platform_message_id: str | None = None
    created_at: datetime | None = None
    # A user message stays unanswered until its reply is stored; a crash in between leaves it for recovery.
    answered: bool = True
    # Turns the API refused (stop_reason "refusal") must not be replayed as-is.
    excluded: bool = False
    # A user message's answer counts only once the platform accepted it; until then recovery re-posts it.
    delivered: bool = True

    @property
    def text(self) -> str:
        return "".join(str(b.get("text", "")) for b in self.blocks if b.get("type") == "text")

    @property
    def is_user_text(self) -> bool:
        """A message a person wrote (as opposed to tool results the core sends in the user role)."""
        return self.role is Role.USER and any(b.get("type") == "text" for b in self.blocks)


@dataclass(frozen=True, slots=True)
class NewMessage:
    conversation_id: int
    role: Role
    blocks: tuple[JSON, ...]
    author_id: str | None = None
    author_name: str | None = None
    platform_message_id: str | None = None
    answered: bool = True


@dataclass(frozen=True, slots=True)
class RecordedWarning:
    """A formal warning the core recorded (rule 4). `after_seq` is the last message seq when it was given."""

    id: int
    conversation_id: int
    after_seq: int
    behavior: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PendingConfirmation:
    id: int
    conversation_id: int
    owner_id: str
    explanation: str
    created_at: datetime
    resolved: bool = False


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Never holds message text: only kinds, ids, actors and short operator-facing reasons."""

    kind: str
    conversation_id: int | None
    actor: str
    reason: str = ""
    detail: JSON = field(default_factory=dict)
    created_at: datetime | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Draft:
    """A reply being written, already visible on the platform: where it is, and the message it answers.
    Remembered so that one left by a process that died is taken back when that message is answered."""

    conversation_id: int
    message_id: int
    place: str
    ts: str


@dataclass(frozen=True, slots=True)
class RiskMarks:
    """What is marked at risk around one conversation: flags and categories, never text. A conversation's
    mark is for good; an author's holds for a while after their last signal (settings)."""

    conversation_marked: bool = False
    categories: frozenset[str] = frozenset()
    # Authors in this conversation whose own mark is still live (from this or another conversation).
    authors: frozenset[str] = frozenset()
    # The support resources were shown in this conversation (they are shown once).
    support_shown: bool = False

    @property
    def marked(self) -> bool:
        return self.conversation_marked or bool(self.authors)


class AuditKind(StrEnum):
    WARNING_RECORDED = "warning_recorded"
    WARNING_REFUSED = "warning_refused"
    ENDING_APPROVED = "ending_approved"
    ENDING_REFUSED = "ending_refused"
    CONFIRMATION_REQUESTED = "confirmation_requested"
    CONFIRMATION_ACCEPTED = "confirmation_accepted"
    CONFIRMATION_DECLINED = "confirmation_declined"
    RISK_GUARD_FIRED = "risk_guard_fired"
    RISK_MARKED = "risk_marked"
    REVIEW_UNAVAILABLE = "review_unavailable"
    MODERATOR_OVERRIDE = "moderator_override"
    MODEL_REFUSAL = "model_refusal"
    MODEL_ERROR = "model_error"
    INVALID_TOOL_CALL = "invalid_tool_call"
    MODERATOR_END = "moderator_end"
    MODERATOR_REOPEN = "moderator_reopen"
    BRANCHED = "branched"
    FEEDBACK = "feedback"
    FORGOTTEN = "forgotten"
    BUDGET_REACHED = "budget_reached"


@dataclass(frozen=True, slots=True)
class VoteCounts:
    """Votes people gave answers (👍/👎 under each answer), one per person and answer."""

    helpful: int = 0
    not_helpful: int = 0
