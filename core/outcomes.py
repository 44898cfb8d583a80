"""What the core returns to adapters. Adapters render these; they hold no rules of their own."""

from __future__ import annotations

from dataclasses import dataclass

from core.domain import Conversation, EndReason


@dataclass(frozen=True, slots=True)
class EndingNotice:
    reason: EndReason
    explanation: str
    ended_by: str
    title: str
    next_steps: str

    def as_text(self) -> str:
        return f"{self.title}. {self.explanation}\n{self.next_steps}"


@dataclass(frozen=True, slots=True)
class Reply:
    conversation: Conversation
    text: str
    # Operator-configured support resources, offered when the risk guard fired on this message.
    support: str | None = None


@dataclass(frozen=True, slots=True)
class WarningGiven:
    conversation: Conversation
    text: str
    behavior: str


@dataclass(frozen=True, slots=True)
class Ended:
    conversation: Conversation
    text: str  # anything the model said before ending; usually empty
    notice: EndingNotice


@dataclass(frozen=True, slots=True)
class ConfirmationRequested:
    conversation: Conversation
    text: str
    confirmation_id: int
    question: str
    explanation: str


@dataclass(frozen=True, slots=True)
class AlreadyEnded:
    """A message posted in an ended conversation: no model call, just how to go on."""

    conversation: Conversation
    text: str


@dataclass(frozen=True, slots=True)
class ModelUnavailable:
    conversation: Conversation
    text: str


@dataclass(frozen=True, slots=True)
class ModelRefused:
    conversation: Conversation
    text: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """The message cannot be taken as it is (empty, too long, over budget); `text` says why."""

    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Nothing to show: a duplicate delivery, or a message that is not part of any conversation."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConfirmationAnswered:
    conversation: Conversation
    confirmed: bool
    text: str
    notice: EndingNotice | None = None


@dataclass(frozen=True, slots=True)
class NotAllowed:
    text: str


Outcome = (
    Reply
    | WarningGiven
    | Ended
    | ConfirmationRequested
    | AlreadyEnded
    | ModelUnavailable
    | ModelRefused
    | Rejected
    | Ignored
)
