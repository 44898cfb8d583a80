"""The ending rules of ending-rules.md ("What the core checks") as tables of cases.

Every test is named after the rule it checks; the pure functions of core/rules.py are the only code under test.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from core.domain import EndReason
from core.rules import (
    END_TOOL,
    MAX_BEHAVIOR_CHARS,
    MAX_EXPLANATION_CHARS,
    RISK_REFUSAL,
    WARN_TOOL,
    Decision,
    EndProposal,
    InvalidCall,
    RuleState,
    Verdict,
    WarnProposal,
    decide_confirmation,
    decide_ending,
    decide_warning,
    parse_tool_call,
)
from core.settings import RuleSettings

DEFAULT_RULES = RuleSettings()


def state(*, ended: bool = False, risk: bool = False, warned: bool = False, turns_since_warning: int = 0) -> RuleState:
    return RuleState(ended=ended, risk_fired=risk, has_warning=warned, user_turns_since_warning=turns_since_warning)


ABUSE = EndProposal(EndReason.PERSISTENT_ABUSE, "You kept insulting people after a warning.")
USER_ASKED = EndProposal(EndReason.USER_REQUESTED, "You asked to end this conversation.")


# --------------------------------------------------------------------------------------------------------------
# The contract's two tools: parse_tool_call
# --------------------------------------------------------------------------------------------------------------

VALID_CALLS = [
    pytest.param(
        WARN_TOOL,
        {"behavior": "repeated slurs", "redirect_attempts": 2},
        WarnProposal("repeated slurs", 2),
        id="warn-valid",
    ),
    pytest.param(
        WARN_TOOL,
        {"behavior": "  repeated slurs \n", "redirect_attempts": 3},
        WarnProposal("repeated slurs", 3),
        id="warn-behavior-stripped",
    ),
    pytest.param(
        WARN_TOOL,
        {"behavior": "threats", "redirect_attempts": 0},
        WarnProposal("threats", 0),
        id="warn-zero-attempts-parses-rules-decide-later",
    ),
    pytest.param(
        END_TOOL,
        {"reason": "persistent_abuse", "explanation": "Ending after the warning."},
        EndProposal(EndReason.PERSISTENT_ABUSE, "Ending after the warning."),
        id="end-persistent-abuse-valid",
    ),
    pytest.param(
        END_TOOL,
        {"reason": "user_requested", "explanation": "  As you asked.  "},
        EndProposal(EndReason.USER_REQUESTED, "As you asked."),
        id="end-user-requested-valid-explanation-stripped",
    ),
]


@pytest.mark.parametrize(("name", "arguments", "expected"), VALID_CALLS)
def test_contract_tool_calls_parse_into_proposals(name: str, arguments: Any, expected: object) -> None:
    assert parse_tool_call(name, arguments) == expected


INVALID_CALLS = [
    # Only the two contract tools exist.
    pytest.param("delete_user", {"user": "U1"}, "unknown tool", id="unknown-tool-name"),
    pytest.param("Warn_User", {"behavior": "x", "redirect_attempts": 2}, "unknown tool", id="tool-name-case-sensitive"),
    pytest.param("", {}, "unknown tool", id="empty-tool-name"),
    # The input must be a JSON object.
    pytest.param(WARN_TOOL, None, "input must be an object", id="warn-input-none"),
    pytest.param(WARN_TOOL, ["insults", 2], "input must be an object", id="warn-input-list"),
    pytest.param(END_TOOL, "persistent_abuse", "input must be an object", id="end-input-string"),
    pytest.param("delete_user", 42, "input must be an object", id="unknown-tool-non-dict-input"),
    # warn_user: behavior
    pytest.param(WARN_TOOL, {"redirect_attempts": 2}, "behavior", id="warn-behavior-missing"),
    pytest.param(WARN_TOOL, {"behavior": "", "redirect_attempts": 2}, "behavior", id="warn-behavior-empty"),
    pytest.param(WARN_TOOL, {"behavior": " \t\n ", "redirect_attempts": 2}, "behavior", id="warn-behavior-blank"),
    pytest.param(WARN_TOOL, {"behavior": 7, "redirect_attempts": 2}, "behavior", id="warn-behavior-not-string"),
    # warn_user: redirect_attempts is a non-negative integer, nothing else
    pytest.param(WARN_TOOL, {"behavior": "insults"}, "redirect_attempts", id="attempts-missing"),
    pytest.param(
        WARN_TOOL, {"behavior": "insults", "redirect_attempts": -1}, "redirect_attempts", id="attempts-negative"
    ),
    pytest.param(
        WARN_TOOL, {"behavior": "insults", "redirect_attempts": True}, "redirect_attempts", id="attempts-bool-true"
    ),
    pytest.param(
        WARN_TOOL, {"behavior": "insults", "redirect_attempts": False}, "redirect_attempts", id="attempts-bool-false"
    ),
    pytest.param(
        WARN_TOOL, {"behavior": "insults", "redirect_attempts": "3"}, "redirect_attempts", id="attempts-string"
    ),
    pytest.param(
        WARN_TOOL, {"behavior": "insults", "redirect_attempts": 2.0}, "redirect_attempts", id="attempts-float"
    ),
    pytest.param(
        WARN_TOOL, {"behavior": "insults", "redirect_attempts": None}, "redirect_attempts", id="attempts-null"
    ),
    # end_conversation: reason is one of the two contract values
    pytest.param(END_TOOL, {"explanation": "bye"}, "reason", id="end-reason-missing"),
    pytest.param(END_TOOL, {"reason": "abuse", "explanation": "bye"}, "reason", id="end-reason-not-in-enum"),
    pytest.param(
        END_TOOL, {"reason": "moderator", "explanation": "bye"}, "reason", id="end-reason-moderator-not-for-the-model"
    ),
    pytest.param(
        END_TOOL, {"reason": "PERSISTENT_ABUSE", "explanation": "bye"}, "reason", id="end-reason-case-sensitive"
    ),
    # end_conversation: explanation is shown to the user, so it must say something
    pytest.param(END_TOOL, {"reason": "persistent_abuse"}, "explanation", id="end-explanation-missing"),
    pytest.param(
        END_TOOL, {"reason": "persistent_abuse", "explanation": ""}, "explanation", id="end-explanation-empty"
    ),
    pytest.param(
        END_TOOL, {"reason": "user_requested", "explanation": "   \n"}, "explanation", id="end-explanation-blank"
    ),
    pytest.param(
        END_TOOL, {"reason": "user_requested", "explanation": ["bye"]}, "explanation", id="end-explanation-not-string"
    ),
]


@pytest.mark.parametrize(("name", "arguments", "problem_mentions"), INVALID_CALLS)
def test_malformed_tool_calls_are_invalid_and_say_what_is_wrong(
    name: str, arguments: Any, problem_mentions: str
) -> None:
    call = parse_tool_call(name, arguments)
    assert isinstance(call, InvalidCall)
    assert call.tool == name
    assert problem_mentions in call.problem


def test_unknown_tool_problem_names_both_contract_tools() -> None:
    call = parse_tool_call("ban_user", {})
    assert isinstance(call, InvalidCall)
    assert WARN_TOOL in call.problem
    assert END_TOOL in call.problem


@pytest.mark.parametrize(
    ("extra", "expected_len"),
    [
        pytest.param(0, MAX_EXPLANATION_CHARS, id="exactly-at-limit-kept"),
        pytest.param(1, MAX_EXPLANATION_CHARS, id="one-over-limit-truncated"),
        pytest.param(5000, MAX_EXPLANATION_CHARS, id="far-over-limit-truncated"),
    ],
)
def test_long_explanation_is_truncated_to_the_limit(extra: int, expected_len: int) -> None:
    text = "".join(str(i % 10) for i in range(MAX_EXPLANATION_CHARS + extra))
    call = parse_tool_call(END_TOOL, {"reason": "persistent_abuse", "explanation": text})
    assert isinstance(call, EndProposal)
    assert len(call.explanation) == expected_len
    # Truncation keeps the beginning: the model's opening words are what the user reads first.
    assert call.explanation == text[:MAX_EXPLANATION_CHARS]


def test_short_explanation_is_not_truncated() -> None:
    call = parse_tool_call(END_TOOL, {"reason": "user_requested", "explanation": "Goodbye, take care."})
    assert isinstance(call, EndProposal)
    assert call.explanation == "Goodbye, take care."


def test_long_behavior_is_truncated_to_the_limit() -> None:
    text = "b" * (MAX_BEHAVIOR_CHARS + 100)
    call = parse_tool_call(WARN_TOOL, {"behavior": text, "redirect_attempts": 2})
    assert isinstance(call, WarnProposal)
    assert call.behavior == "b" * MAX_BEHAVIOR_CHARS


# --------------------------------------------------------------------------------------------------------------
# Rule: warn_user is recorded only if redirect_attempts >= min_redirects_before_warning and the risk guard is clear
# --------------------------------------------------------------------------------------------------------------

WARNING_THRESHOLDS = [
    pytest.param(RuleSettings(), 0, Verdict.REFUSE, id="default-min2-attempts0-refused"),
    pytest.param(RuleSettings(), 1, Verdict.REFUSE, id="default-min2-attempts1-refused"),
    pytest.param(RuleSettings(), 2, Verdict.APPROVE, id="default-min2-attempts2-recorded"),
    pytest.param(RuleSettings(), 3, Verdict.APPROVE, id="default-min2-attempts3-recorded"),
    pytest.param(RuleSettings(min_redirects_before_warning=1), 0, Verdict.REFUSE, id="custom-min1-attempts0-refused"),
    pytest.param(RuleSettings(min_redirects_before_warning=1), 1, Verdict.APPROVE, id="custom-min1-attempts1-recorded"),
    pytest.param(RuleSettings(min_redirects_before_warning=3), 2, Verdict.REFUSE, id="custom-min3-attempts2-refused"),
    pytest.param(RuleSettings(min_redirects_before_warning=3), 3, Verdict.APPROVE, id="custom-min3-attempts3-recorded"),
    pytest.param(RuleSettings(min_redirects_before_warning=5), 4, Verdict.REFUSE, id="custom-min5-attempts4-refused"),
    pytest.param(
        RuleSettings(min_redirects_before_warning=5), 50, Verdict.APPROVE, id="custom-min5-attempts50-recorded"
    ),
]


def test_rule_a_warning_always_follows_at_least_one_redirect() -> None:
    with pytest.raises(ValueError, match="min_redirects_before_warning"):
        RuleSettings(min_redirects_before_warning=0)


@pytest.mark.parametrize(("rules", "attempts", "verdict"), WARNING_THRESHOLDS)
def test_rule_warning_needs_min_redirects_before_warning(rules: RuleSettings, attempts: int, verdict: Verdict) -> None:
    decision = decide_warning(WarnProposal("insults", attempts), state(), rules)
    assert decision.verdict is verdict
    assert decision.code == ("recorded" if verdict is Verdict.APPROVE else "too_few_redirects")


def test_rule_refused_warning_tells_the_model_the_threshold_and_the_reported_count() -> None:
    decision = decide_warning(WarnProposal("insults", 1), state(), RuleSettings(min_redirects_before_warning=4))
    assert decision.verdict is Verdict.REFUSE
    assert "4" in decision.reason
    assert "reports 1" in decision.reason


@pytest.mark.parametrize(
    "attempts",
    [pytest.param(0, id="attempts0"), pytest.param(2, id="attempts2"), pytest.param(100, id="attempts100")],
)
def test_rule_no_warning_recorded_while_risk_guard_fires(attempts: int) -> None:
    decision = decide_warning(WarnProposal("insults", attempts), state(risk=True), DEFAULT_RULES)
    assert decision.verdict is Verdict.REFUSE
    assert decision.code == "risk_guard"
    assert decision.reason == RISK_REFUSAL


@pytest.mark.parametrize("risk", [pytest.param(False, id="risk-clear"), pytest.param(True, id="risk-fired")])
def test_rule_no_warning_in_an_ended_conversation(risk: bool) -> None:
    decision = decide_warning(WarnProposal("insults", 5), state(ended=True, risk=risk), DEFAULT_RULES)
    assert decision.verdict is Verdict.REFUSE
    if not risk:
        assert decision.code == "ended"


WARNING_GRID = [
    pytest.param(
        ended,
        risk,
        attempts,
        id=f"ended={ended}-risk={risk}-attempts={attempts}",
    )
    for ended, risk, attempts in itertools.product((False, True), (False, True), (0, 1, 2, 3))
]


@pytest.mark.parametrize(("ended", "risk", "attempts"), WARNING_GRID)
def test_rule_warning_recorded_exactly_when_all_conditions_hold(ended: bool, risk: bool, attempts: int) -> None:
    decision = decide_warning(WarnProposal("insults", attempts), state(ended=ended, risk=risk), DEFAULT_RULES)
    expected = not ended and not risk and attempts >= DEFAULT_RULES.min_redirects_before_warning
    assert decision.approved is expected
    # A warning is either recorded or refused; there is nothing to confirm.
    assert decision.verdict in (Verdict.APPROVE, Verdict.REFUSE)


# --------------------------------------------------------------------------------------------------------------
# Rule: persistent_abuse ends only after a recorded warning, min_user_turns_after_warning later user messages,
# and a clear risk guard
# --------------------------------------------------------------------------------------------------------------

ABUSE_ENDINGS = [
    pytest.param(RuleSettings(), state(warned=False), Verdict.REFUSE, "no_warning", id="no-warning-refused"),
    pytest.param(
        RuleSettings(),
        state(warned=False, turns_since_warning=5),
        Verdict.REFUSE,
        "no_warning",
        id="no-recorded-warning-refused-whatever-the-turn-count",
    ),
    pytest.param(
        RuleSettings(),
        state(warned=True, turns_since_warning=0),
        Verdict.REFUSE,
        "too_soon_after_warning",
        id="warning-but-0-user-turns-after-refused",
    ),
    pytest.param(
        RuleSettings(),
        state(warned=True, turns_since_warning=1),
        Verdict.APPROVE,
        "ended",
        id="default-1-turn-approved",
    ),
    pytest.param(
        RuleSettings(),
        state(warned=True, turns_since_warning=4),
        Verdict.APPROVE,
        "ended",
        id="default-4-turns-approved",
    ),
    pytest.param(
        RuleSettings(min_user_turns_after_warning=2),
        state(warned=True, turns_since_warning=1),
        Verdict.REFUSE,
        "too_soon_after_warning",
        id="custom-min2-1-turn-refused",
    ),
    pytest.param(
        RuleSettings(min_user_turns_after_warning=2),
        state(warned=True, turns_since_warning=2),
        Verdict.APPROVE,
        "ended",
        id="custom-min2-2-turns-approved",
    ),
]


@pytest.mark.parametrize(("rules", "rule_state", "verdict", "code"), ABUSE_ENDINGS)
def test_rule_abuse_ending_needs_recorded_warning_and_user_turns_after_it(
    rules: RuleSettings, rule_state: RuleState, verdict: Verdict, code: str
) -> None:
    decision = decide_ending(ABUSE, rule_state, rules)
    assert decision.verdict is verdict
    assert decision.code == code


@pytest.mark.parametrize(
    "rule_state",
    [
        pytest.param(state(warned=False), id="no-warning"),
        pytest.param(state(warned=True, turns_since_warning=0), id="too-soon"),
    ],
)
def test_rule_refused_ending_tells_the_model_not_to_claim_it_ended(rule_state: RuleState) -> None:
    # "Nothing the user saw may claim the conversation ended when it did not."
    decision = decide_ending(ABUSE, rule_state, DEFAULT_RULES)
    assert decision.verdict is Verdict.REFUSE
    assert "has not ended" in decision.reason


@pytest.mark.parametrize(
    ("proposal", "rule_state"),
    [
        pytest.param(ABUSE, state(risk=True, warned=True, turns_since_warning=3), id="persistent-abuse-all-else-ok"),
        pytest.param(ABUSE, state(risk=True), id="persistent-abuse-no-warning"),
        pytest.param(USER_ASKED, state(risk=True), id="user-requested"),
        pytest.param(
            USER_ASKED, state(risk=True, warned=True, turns_since_warning=3), id="user-requested-after-warning"
        ),
    ],
)
def test_rule_risk_guard_blocks_every_ending(proposal: EndProposal, rule_state: RuleState) -> None:
    # Rule 3: at risk, the assistant stays and does not even ask to confirm an ending.
    decision = decide_ending(proposal, rule_state, DEFAULT_RULES)
    assert decision.verdict is Verdict.REFUSE
    assert decision.code == "risk_guard"
    assert decision.reason == RISK_REFUSAL


@pytest.mark.parametrize(
    "rule_state",
    [
        pytest.param(state(), id="fresh"),
        pytest.param(state(warned=True), id="warned-0-turns"),
        pytest.param(state(warned=True, turns_since_warning=7), id="warned-7-turns"),
    ],
)
def test_rule_user_requested_ending_asks_the_owner_to_confirm_never_ends_at_once(rule_state: RuleState) -> None:
    decision = decide_ending(USER_ASKED, rule_state, DEFAULT_RULES)
    assert decision.verdict is Verdict.CONFIRM
    assert decision.code == "confirmation_requested"
    assert not decision.approved
    assert "do not say it has ended" in decision.reason


@pytest.mark.parametrize(
    ("proposal", "risk"),
    [
        pytest.param(ABUSE, False, id="persistent-abuse"),
        pytest.param(USER_ASKED, False, id="user-requested"),
        pytest.param(ABUSE, True, id="persistent-abuse-risk"),
        pytest.param(USER_ASKED, True, id="user-requested-risk"),
    ],
)
def test_rule_no_ending_of_an_already_ended_conversation(proposal: EndProposal, risk: bool) -> None:
    decision = decide_ending(proposal, state(ended=True, risk=risk, warned=True, turns_since_warning=3), DEFAULT_RULES)
    assert decision.verdict is Verdict.REFUSE
    assert not decision.approved


def test_rule_ended_code_when_only_ended_blocks() -> None:
    decision = decide_ending(ABUSE, state(ended=True, warned=True, turns_since_warning=3), DEFAULT_RULES)
    assert decision.code == "ended"


ENDING_GRID = [
    pytest.param(
        reason, ended, risk, warned, turns, id=f"{reason.value}-ended={ended}-risk={risk}-warned={warned}-turns={turns}"
    )
    for reason, ended, risk, warned, turns in itertools.product(
        (EndReason.PERSISTENT_ABUSE, EndReason.USER_REQUESTED), (False, True), (False, True), (False, True), (0, 1, 2)
    )
]


@pytest.mark.parametrize(("reason", "ended", "risk", "warned", "turns"), ENDING_GRID)
def test_rule_ending_verdict_over_every_state(
    reason: EndReason, ended: bool, risk: bool, warned: bool, turns: int
) -> None:
    decision = decide_ending(
        EndProposal(reason, "bye"),
        state(ended=ended, risk=risk, warned=warned, turns_since_warning=turns),
        DEFAULT_RULES,
    )
    blocked = ended or risk
    if reason is EndReason.USER_REQUESTED:
        expected = Verdict.REFUSE if blocked else Verdict.CONFIRM
    else:
        ok = warned and turns >= DEFAULT_RULES.min_user_turns_after_warning
        expected = Verdict.APPROVE if (ok and not blocked) else Verdict.REFUSE
    assert decision.verdict is expected
    # A user_requested call is never approved straight away, in any state.
    if reason is EndReason.USER_REQUESTED:
        assert decision.verdict is not Verdict.APPROVE


# --------------------------------------------------------------------------------------------------------------
# Rule: only the owner's explicit confirmation ends a user_requested conversation (once, never at risk)
# --------------------------------------------------------------------------------------------------------------

CONFIRMATIONS = [
    pytest.param(
        {"actor_id": "U2", "owner_id": "U1", "ended": False, "already_resolved": False, "risk_fired": False},
        Verdict.REFUSE,
        "not_owner",
        id="non-owner-refused",
    ),
    pytest.param(
        {"actor_id": "u1", "owner_id": "U1", "ended": False, "already_resolved": False, "risk_fired": False},
        Verdict.REFUSE,
        "not_owner",
        id="owner-id-compared-exactly",
    ),
    pytest.param(
        {"actor_id": "U2", "owner_id": "U1", "ended": True, "already_resolved": True, "risk_fired": True},
        Verdict.REFUSE,
        "not_owner",
        id="non-owner-refused-whatever-the-state",
    ),
    pytest.param(
        {"actor_id": "U1", "owner_id": "U1", "ended": False, "already_resolved": True, "risk_fired": False},
        Verdict.REFUSE,
        "resolved",
        id="already-resolved-refused",
    ),
    pytest.param(
        {"actor_id": "U1", "owner_id": "U1", "ended": False, "already_resolved": False, "risk_fired": True},
        Verdict.REFUSE,
        "risk_guard",
        id="risk-guard-refused",
    ),
    pytest.param(
        {"actor_id": "U1", "owner_id": "U1", "ended": True, "already_resolved": False, "risk_fired": False},
        Verdict.REFUSE,
        "ended",
        id="already-ended-refused",
    ),
    pytest.param(
        {"actor_id": "U1", "owner_id": "U1", "ended": False, "already_resolved": False, "risk_fired": False},
        Verdict.APPROVE,
        "confirmed",
        id="owner-confirmation-approved",
    ),
]


@pytest.mark.parametrize(("kwargs", "verdict", "code"), CONFIRMATIONS)
def test_rule_only_the_owner_confirms_an_ending(kwargs: dict[str, Any], verdict: Verdict, code: str) -> None:
    decision = decide_confirmation(**kwargs)
    assert decision.verdict is verdict
    assert decision.code == code


# --------------------------------------------------------------------------------------------------------------
# Rule: a refused tool call is answered with a tool_result that says why
# --------------------------------------------------------------------------------------------------------------

REFUSALS = [
    pytest.param(decide_warning(WarnProposal("x", 0), state(), DEFAULT_RULES), id="warning-too-few-redirects"),
    pytest.param(decide_warning(WarnProposal("x", 5), state(risk=True), DEFAULT_RULES), id="warning-risk"),
    pytest.param(decide_warning(WarnProposal("x", 5), state(ended=True), DEFAULT_RULES), id="warning-ended"),
    pytest.param(decide_ending(ABUSE, state(), DEFAULT_RULES), id="ending-no-warning"),
    pytest.param(decide_ending(ABUSE, state(warned=True), DEFAULT_RULES), id="ending-too-soon"),
    pytest.param(decide_ending(USER_ASKED, state(risk=True), DEFAULT_RULES), id="ending-risk"),
    pytest.param(
        decide_confirmation(actor_id="U2", owner_id="U1", ended=False, already_resolved=False, risk_fired=False),
        id="confirmation-not-owner",
    ),
]


@pytest.mark.parametrize("decision", REFUSALS)
def test_rule_every_refusal_says_why(decision: Decision) -> None:
    assert decision.verdict is Verdict.REFUSE
    assert not decision.approved
    assert decision.code
    assert len(decision.reason.strip()) >= 20


@pytest.mark.parametrize(
    ("verdict", "approved"),
    [
        pytest.param(Verdict.APPROVE, True, id="approve"),
        pytest.param(Verdict.CONFIRM, False, id="confirm-is-not-approval"),
        pytest.param(Verdict.REFUSE, False, id="refuse"),
    ],
)
def test_decision_approved_only_for_approve(verdict: Verdict, approved: bool) -> None:
    assert Decision(verdict, "code", "reason").approved is approved
