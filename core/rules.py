"""The ending rules of ending-rules.md as pure functions: the model proposes, these decide.

Every function takes frozen values and returns a `Decision`; nothing here touches storage or the network,
so the rules are tested with tables of cases (tests/test_rules.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from core.domain import EndReason
from core.settings import RuleSettings

WARN_TOOL = "warn_user"
END_TOOL = "end_conversation"
MAX_BEHAVIOR_CHARS = 500
MAX_EXPLANATION_CHARS = 1500


class Verdict(StrEnum):
    APPROVE = "approve"
    CONFIRM = "confirm"  # ask the owner first (user_requested)
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    code: str
    # Said to the model in the tool_result when refused; kept in the audit event either way.
    reason: str

    @property
    def approved(self) -> bool:
        return self.verdict is Verdict.APPROVE


@dataclass(frozen=True, slots=True)
class WarnProposal:
    behavior: str
    redirect_attempts: int


@dataclass(frozen=True, slots=True)
class EndProposal:
    reason: EndReason
    explanation: str


@dataclass(frozen=True, slots=True)
class InvalidCall:
    tool: str
    problem: str


ToolCall = WarnProposal | EndProposal | InvalidCall


@dataclass(frozen=True, slots=True)
class RuleState:
    """What the rules need to know about one conversation (this branch), read from stored state."""

    ended: bool
    risk_fired: bool
    has_warning: bool
    user_turns_since_warning: int


def _approve(code: str, reason: str) -> Decision:
    return Decision(Verdict.APPROVE, code, reason)


def _refuse(code: str, reason: str) -> Decision:
    return Decision(Verdict.REFUSE, code, reason)


RISK_REFUSAL = (
    "The user may be at risk of harming themselves or others. Do not warn or end the conversation; "
    "stay with them and respond supportively, without mentioning ending."
)


def parse_tool_call(name: str, arguments: Any) -> ToolCall:
    """Turn a tool_use block's name and input into a proposal, or say precisely what is wrong with it."""
    if not isinstance(arguments, dict):
        return InvalidCall(name, "input must be an object")
    if name == WARN_TOOL:
        behavior = arguments.get("behavior")
        attempts = arguments.get("redirect_attempts")
        if not isinstance(behavior, str) or not behavior.strip():
            return InvalidCall(name, "behavior must be a non-empty string")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
            return InvalidCall(name, "redirect_attempts must be a non-negative integer")
        return WarnProposal(behavior.strip()[:MAX_BEHAVIOR_CHARS], attempts)
    if name == END_TOOL:
        reason = arguments.get("reason")
        explanation = arguments.get("explanation")
        if reason not in (EndReason.PERSISTENT_ABUSE.value, EndReason.USER_REQUESTED.value):
            return InvalidCall(name, 'reason must be "persistent_abuse" or "user_requested"')
        if not isinstance(explanation, str) or not explanation.strip():
            return InvalidCall(name, "explanation must be a non-empty string")
        return EndProposal(EndReason(reason), explanation.strip()[:MAX_EXPLANATION_CHARS])
    return InvalidCall(name, f"unknown tool {name!r}; the tools are {WARN_TOOL} and {END_TOOL}")


def decide_warning(proposal: WarnProposal, state: RuleState, rules: RuleSettings) -> Decision:
    if state.ended:
        return _refuse("ended", "The conversation has already ended.")
    if state.risk_fired:
        return _refuse("risk_guard", RISK_REFUSAL)
    if proposal.redirect_attempts < rules.min_redirects_before_warning:
        return _refuse(
            "too_few_redirects",
            f"A warning needs at least {rules.min_redirects_before_warning} earlier replies that tried to "
            f"redirect the conversation; this call reports {proposal.redirect_attempts}. Keep redirecting; "
            "do not present this reply as a formal warning.",
        )
    return _approve("recorded", "Warning recorded. The conversation continues.")


def decide_ending(proposal: EndProposal, state: RuleState, rules: RuleSettings) -> Decision:
    if state.ended:
        return _refuse("ended", "The conversation has already ended.")
    if state.risk_fired:
        return _refuse("risk_guard", RISK_REFUSAL)
    if proposal.reason is EndReason.USER_REQUESTED:
        return Decision(
            Verdict.CONFIRM,
            "confirmation_requested",
            "The user is being asked to confirm that ending is permanent. The conversation continues "
            "unless they confirm; do not say it has ended.",
        )
    if proposal.reason is not EndReason.PERSISTENT_ABUSE:
        return _refuse("invalid_reason", 'The model may only end for "persistent_abuse" or "user_requested".')
    if not state.has_warning:
        return _refuse(
            "no_warning",
            "Ending for persistent abuse needs a recorded warning first (warn_user). The conversation "
            "has not ended; continue, and do not say that it has.",
        )
    if state.user_turns_since_warning < rules.min_user_turns_after_warning:
        return _refuse(
            "too_soon_after_warning",
            f"At least {rules.min_user_turns_after_warning} user message(s) must follow the warning before "
            "ending. The conversation has not ended; continue, and do not say that it has.",
        )
    return _approve("ended", "The conversation has ended.")


def decide_confirmation(
    *, actor_id: str, owner_id: str, ended: bool, already_resolved: bool, risk_fired: bool
) -> Decision:
    """The owner's click on "end the conversation": only they can confirm, once, and never at risk."""
    if actor_id != owner_id:
        return _refuse("not_owner", "Only the person who started this conversation can confirm ending it.")
    if ended:
        return _refuse("ended", "This conversation has already ended.")
    if already_resolved:
        return _refuse("resolved", "This request was already answered.")
    if risk_fired:
        return _refuse("risk_guard", "The conversation stays open.")
    return _approve("confirmed", "Ending confirmed by the conversation's owner.")
