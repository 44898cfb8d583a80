"""The small interfaces the core depends on. Implementations live outside the core's rules:
SQLite and PostgreSQL stores in `core/storage/`, the Claude client in `core/claude_client.py`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from core.domain import (
    JSON,
    ActiveThread,
    AuditEvent,
    Conversation,
    Draft,
    EndReason,
    NewMessage,
    PendingConfirmation,
    RecordedWarning,
    RiskMarks,
    StoredMessage,
    ThreadKey,
    VoteCounts,
)

# Receives the reply's text so far while it streams; adapters throttle their own updates.
TextSink = Callable[[str], Awaitable[None]]


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens


@dataclass(frozen=True, slots=True)
class ModelRequest:
    system: tuple[JSON, ...]
    messages: tuple[JSON, ...]
    tools: tuple[JSON, ...]
    max_tokens: int
    model: str
    # Forces one tool (the risk review's `assess_risk`); None lets the model choose.
    tool_choice: JSON | None = None


@dataclass(frozen=True, slots=True)
class ModelReply:
    blocks: tuple[JSON, ...]
    stop_reason: str
    usage: Usage = field(default_factory=Usage)
    request_id: str | None = None


class ModelUnavailableError(Exception):
    """The model could not produce a complete reply (errors, retries exhausted, timeouts)."""


class StreamListener(Protocol):
    """Hears a reply as it streams: its text so far, and the moment a tool call begins."""

    async def text(self, so_far: str) -> None: ...
    async def tool_use_started(self) -> None: ...


@runtime_checkable
class ModelClient(Protocol):
    async def reply(self, request: ModelRequest, listener: StreamListener | None = None) -> ModelReply: ...


class RiskReviewClient(Protocol):
    """The one call the risk review makes: a complete (not streamed) reply, or ModelUnavailableError."""

    async def review(self, request: ModelRequest, *, timeout_seconds: float, max_retries: int) -> ModelReply: ...


class ClaudeApi(ModelClient, RiskReviewClient, Protocol):
    """What the service needs of Claude: the conversation's replies and the risk review."""


class ConversationStore(Protocol):
    async def get_or_create_conversation(self, *, key: ThreadKey, owner_id: str) -> Conversation: ...
    async def create_branch(
        self, *, key: ThreadKey, owner_id: str, source: Conversation, branch_point_seq: int
    ) -> Conversation:
        """A new conversation holding copies of `source`'s messages and warnings before the branch point."""
        ...

    async def find_conversation(self, key: ThreadKey) -> Conversation | None: ...
    async def latest_conversation(self, *, platform: str, place: str) -> Conversation | None:
        """The newest conversation in a place (a terminal user, a Discord DM): where to resume."""
        ...

    async def get_conversation(self, conversation_id: int) -> Conversation | None: ...
    async def end_conversation(
        self, *, conversation_id: int, reason: EndReason, explanation: str, actor: str
    ) -> Conversation: ...
    async def reopen_conversation(self, *, conversation_id: int) -> Conversation: ...
    async def recent_endings(self, *, limit: int) -> list[Conversation]: ...


class MessageStore(Protocol):
    async def add_message(self, message: NewMessage) -> StoredMessage | None:
        """Append a message; None when its platform message id was stored before (a duplicate delivery)."""
        ...

    async def messages(self, conversation_id: int) -> list[StoredMessage]: ...
    async def find_by_platform_id(self, *, platform: str, platform_message_id: str) -> StoredMessage | None: ...
    async def complete_turn(
        self, *, conversation_id: int, replies: Sequence[NewMessage], after_seq: int, answered_up_to_seq: int
    ) -> list[StoredMessage]:
        """Store a finished model turn right after `after_seq` (the last message the model saw) and mark
        the user messages it answered, in one transaction. Messages that arrived while the model was
        answering move after the reply, so the conversation reads in the order it happened."""
        ...

    async def exclude_message(self, message_id: int) -> None: ...
    async def unanswered(self, *, older_than: datetime) -> list[StoredMessage]: ...
    async def mark_answered(self, *, conversation_id: int, up_to_seq: int) -> None: ...
    async def mark_delivered(self, *, conversation_id: int, trigger_seq: int) -> None:
        """The platform accepted the answer to the user message at `trigger_seq`: that message and every
        answered one before the reply stored after it (messages answered together come before the reply)
        count as delivered. Without a reply after it (nothing was stored to show), up to `trigger_seq`."""
        ...

    async def undelivered(self, *, platform: str, older_than: datetime, newer_than: datetime) -> list[StoredMessage]:
        """User messages on `platform` answered in the store but whose answer no platform accepted yet,
        created in [newer_than, older_than), oldest first per conversation. Ended conversations included:
        an ending's notice is an answer too."""
        ...

    async def active_threads(self, *, platform: str, since: datetime, limit: int) -> list[ActiveThread]:
        """Active conversations on `platform` created or written in since `since`, newest first."""
        ...


class WarningStore(Protocol):
    async def add_warning(self, *, conversation_id: int, after_seq: int, behavior: str) -> RecordedWarning: ...
    async def warnings(self, conversation_id: int) -> list[RecordedWarning]: ...
    async def turn_state(
        self, conversation_id: int
    ) -> tuple[Conversation | None, list[StoredMessage], list[RecordedWarning]]:
        """The conversation, its messages and its warnings, read together: what one answer starts from,
        in one round trip instead of three."""
        ...


class ConfirmationStore(Protocol):
    async def add_confirmation(
        self, *, conversation_id: int, owner_id: str, explanation: str
    ) -> PendingConfirmation: ...
    async def get_confirmation(self, confirmation_id: int) -> PendingConfirmation | None: ...
    async def resolve_confirmation(self, confirmation_id: int) -> bool:
        """Mark it resolved; False if it already was (a second click loses)."""
        ...


class AuditLog(Protocol):
    async def add_event(self, event: AuditEvent) -> None: ...
    async def events(
        self,
        *,
        since: datetime,
        limit: int = 10_000,
        kinds: Sequence[str] | None = None,
        newest_first: bool = False,
    ) -> list[AuditEvent]: ...
    async def count_events(self, *, since: datetime) -> dict[str, int]: ...


class EventDeduplicator(Protocol):
    async def claim_event(self, *, source: str, event_id: str) -> bool:
        """True the first time an event id is seen, across every instance sharing the database."""
        ...


class AnswerVoteStore(Protocol):
    async def record_answer_vote(self, *, conversation_id: int, answer_id: str, voter_id: str, helpful: bool) -> bool:
        """One vote per person and answer: a new vote replaces theirs. True if it was new or changed."""
        ...

    async def answer_votes(self, *, since: datetime) -> VoteCounts:
        """Votes as they stand, of those cast (or last changed) since `since`."""
        ...


class LeaseStore(Protocol):
    # True where several instances may share the database (PostgreSQL): only then are leases needed.
    @property
    def multi_instance(self) -> bool: ...

    async def acquire_lease(self, *, name: str, holder: str, ttl_seconds: float) -> bool: ...
    async def release_lease(self, *, name: str, holder: str) -> None: ...


class PrivacyStore(Protocol):
    async def forget_user(self, *, platform: str, user_id: str) -> int:
        """Remove what the user wrote and the text of conversations they started (kept as tombstones, so
        an ended thread stays ended); returns how many of their messages there were."""
        ...

    async def purge_text(self, *, older_than: datetime) -> int: ...


class UsageStore(Protocol):
    async def add_usage(self, *, scope: str, day: str, tokens: int) -> int:
        """Add tokens to a scope's daily counter and return the new total."""
        ...

    async def usage(self, *, scope: str, day: str) -> int: ...


class DraftStore(Protocol):
    async def remember_draft(self, draft: Draft) -> None: ...
    async def orphan_drafts(self, conversation_id: int) -> list[Draft]:
        """Drafts in the conversation whose message is still unanswered. Asked by whoever holds the thread's
        lease: no live answerer can own them, so they are left over from a process that stopped."""
        ...

    async def forget_draft(self, *, conversation_id: int, ts: str) -> None: ...


class RiskMarkStore(Protocol):
    """Who and what is marked at risk: flags, categories and times, never text. Marks outlive retention and
    `forget`, since they are what keeps a person who was at risk from being warned or ended later."""

    async def mark_at_risk(
        self, *, conversation_id: int, platform: str, author_ids: Sequence[str], categories: Sequence[str], source: str
    ) -> bool:
        """Mark the conversation (for good) and these authors (from now); categories add up. True if the
        conversation was not marked before."""
        ...

    async def risk_marks(
        self, *, conversation_id: int, platform: str, author_ids: Sequence[str], since: datetime
    ) -> RiskMarks:
        """The conversation's mark, and which of these authors have a signal since `since`."""
        ...

    async def note_support_shown(self, *, conversation_id: int) -> None: ...
    async def mark_authors_at_risk(
        self, *, platform: str, author_ids: Sequence[str], categories: Sequence[str]
    ) -> None:
        """Mark these authors only (from now; categories add up), not the conversation."""
        ...

    async def prune_author_marks(self, *, older_than: datetime) -> int:
        """Delete authors' marks whose last signal is older than `older_than` (they no longer count)."""
        ...

    async def end_if_current(
        self, *, conversation_id: int, reason: EndReason, explanation: str, actor: str, after_message_id: int
    ) -> Conversation | None:
        """End the conversation only if it is active and nobody wrote in it after message `after_message_id`
        (ids keep arrival order): an ending never commits on a stale snapshot. None if it did not end."""
        ...


class Store(
    ConversationStore,
    RiskMarkStore,
    MessageStore,
    WarningStore,
    ConfirmationStore,
    AuditLog,
    EventDeduplicator,
    AnswerVoteStore,
    LeaseStore,
    PrivacyStore,
    UsageStore,
    DraftStore,
    Protocol,
):
    """Everything the service needs from one database. Backends run the same contract tests."""

    async def migrate(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def schema_versions(self) -> tuple[int, int]:
        """(the schema version applied, the newest this code knows), reading only: 0 for an empty database."""
        ...
