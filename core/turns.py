"""One answer to a user message: the model call, the rules applied to each tool call, the stored turn.

The model proposes; `decide_*` in core/rules.py decide from stored state; this module carries out what
was decided (record a warning, end, ask to confirm) and says why to the model when it refuses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from core.audit import MODEL_ACTOR, Auditor
from core.domain import JSON, AuditKind, Conversation, EndReason, NewMessage, Role, StoredMessage
from core.metrics import Metrics
from core.outcomes import (
    AlreadyEnded,
    ConfirmationRequested,
    Ended,
    EndingNotice,
    Ignored,
    ModelRefused,
    ModelUnavailable,
    Outcome,
    Reply,
    WarningGiven,
)
from core.ports import (
    Clock,
    ModelClient,
    ModelReply,
    ModelRequest,
    ModelUnavailableError,
    Store,
    StreamListener,
    TextSink,
)
from core.prompt import build_request
from core.risk_guard import RiskAssessment, assess
from core.risk_review import ReviewResult, RiskFinding
from core.risk_watch import GateRefused, RiskWatch, newest_person_message
from core.rules import (
    RISK_REFUSAL,
    Decision,
    EndProposal,
    InvalidCall,
    RuleState,
    Verdict,
    WarnProposal,
    decide_ending,
    decide_warning,
    parse_tool_call,
)
from core.settings import NoticeSettings, Settings


@dataclass
class _Turn:
    """Mutable scratch state of one answer; never leaves `TurnRunner.answer`."""

    conversation: Conversation
    rule_state: RuleState
    risk: RiskAssessment
    # The newest message a person wrote that this answer (and so the model's decision) saw.
    decided_on: int = 0
    # Who wrote the messages this answer is for: whom a finding marks.
    authors: tuple[str, ...] = ()
    screen: asyncio.Task[ReviewResult] | None = None
    # The support resources are due with this answer (risk seen, and not shown in this conversation yet).
    support_due: bool = False
    support_shown: bool = False  # already shown in this conversation (they are shown once)
    # What the gate cleared an ending on: it commits only if nobody wrote after this message.
    snapshot_id: int = 0
    outcome: Outcome | None = None
    refused: bool = False
    # An ending cleared by the gate lost the race with a new message at the moment it was to commit.
    stale_after_commit: bool = False
    last_seq: int = 0  # the last message this answer stored


# Model words are shown while they stream only once there are this many: the few words a model may write
# before a tool call (a goodbye before an ending the rules then refuse) are never on screen.
REVEAL_AFTER_CHARS = 200


class RevealGate:
    """Stands between the stream and the adapter's draft (the `StreamListener` of one answer).

    Words appear once they are clearly an answer (REVEAL_AFTER_CHARS), and are withdrawn the moment a
    tool call begins: until the core has judged the call, nothing it said may stand as the answer."""

    def __init__(self, sink: TextSink | None) -> None:
        self._sink = sink
        self._shown = False
        self._held = False

    def next_round(self) -> None:
        self._held = False

    async def text(self, so_far: str) -> None:
        if self._sink is None or self._held:
            return
        if self._shown or len(so_far) >= REVEAL_AFTER_CHARS:
            self._shown = True
            await self._sink(so_far)

    async def tool_use_started(self) -> None:
        self._held = True
        if self._sink is not None and self._shown:
            self._shown = False
            await self._sink("")


STALE_REFUSAL = (
    "A new message arrived before the ending took effect, so the conversation has not ended. Continue, and do "
    "not say the conversation ended; the new message gets its own answer."
)
STALE_WARNING_REFUSAL = (
    "A new message arrived while this warning was being checked, so no warning was recorded. Continue, and do "
    "not present this reply as a formal warning; the new message gets its own answer."
)
REVIEW_UNAVAILABLE_REFUSAL = (
    "The independent risk review could not run, so nothing can be warned or ended right now. The conversation "
    "continues: answer normally, and do not present this reply as a warning or say the conversation ended."
)


def gate_refusal(gate: GateRefused, *, ending: bool) -> Decision:
    """What the model is told when the gate holds back an approved warning or ending."""
    if gate.code == "stale":
        return Decision(Verdict.REFUSE, "stale", STALE_REFUSAL if ending else STALE_WARNING_REFUSAL)
    if gate.code == "review_unavailable":
        return Decision(Verdict.REFUSE, "review_unavailable", REVIEW_UNAVAILABLE_REFUSAL)
    return Decision(Verdict.REFUSE, "risk_guard", RISK_REFUSAL)


def _non_empty(blocks: Sequence[JSON]) -> tuple[JSON, ...]:
    """The API rejects empty text blocks when a turn is replayed, so they are never stored."""
    return tuple(b for b in blocks if not (b.get("type") == "text" and not str(b.get("text", "")).strip()))


def ending_notice(conversation: Conversation, notices: NoticeSettings) -> EndingNotice:
    return EndingNotice(
        reason=conversation.ended_reason or EndReason.MODERATOR,
        explanation=conversation.ended_explanation or "",
        ended_by=conversation.ended_by or "",
        title=notices.ended_title,
        next_steps=notices.ended_next_steps,
    )


class TurnRunner:
    def __init__(
        self,
        *,
        store: Store,
        model: ModelClient,
        settings: Settings,
        clock: Clock,
        metrics: Metrics,
        auditor: Auditor,
        risk: RiskWatch,
    ) -> None:
        self._store = store
        self._model = model
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._auditor = auditor
        self._risk = risk

    async def _record_usage(self, platform: str, payer: str, place: str, reply: ModelReply) -> None:
        """Charge the person whose message was answered, and the place it was in."""
        budgets = self._settings.budgets
        tokens = reply.usage.prompt_tokens + reply.usage.output_tokens
        day = self._clock.now().date().isoformat()
        if budgets.per_user_daily_tokens:
            await self._store.add_usage(scope=f"user:{platform}:{payer}", day=day, tokens=tokens)
        if budgets.per_channel_daily_tokens:
            await self._store.add_usage(scope=f"place:{platform}:{place}", day=day, tokens=tokens)

    # -- one answer -------------------------------------------------------------------------------

    def _rule_state(
        self,
        conversation: Conversation,
        history: Sequence[StoredMessage],
        warning_seqs: Sequence[int],
        risk: RiskAssessment,
    ) -> RuleState:
        last_warning = max(warning_seqs, default=None)
        turns_since = 0
        if last_warning is not None:
            # Persisting means writing after the warning was given. A message sent while the warning was
            # being written is sequenced after it but arrived before it: ids keep arrival order.
            given = next((m.id for m in history if m.seq == last_warning), None)
            turns_since = sum(
                1 for m in history if m.is_user_text and m.seq > last_warning and (given is None or m.id > given)
            )
        return RuleState(
            ended=conversation.is_ended,
            risk_fired=risk.fired,
            has_warning=last_warning is not None,
            user_turns_since_warning=turns_since,
        )

    def _window(self, history: Sequence[StoredMessage]) -> RiskAssessment:
        texts = [m.text for m in history if m.is_user_text]
        return assess(
            texts, self._risk.lexicon, window=self._settings.risk_guard.window_messages, scan=self._risk.tripwire
        )

    async def _watch(self, turn: _Turn, history: Sequence[StoredMessage], pending: Sequence[StoredMessage]) -> None:
        """Risk at the start of an answer: the tripwire on each new message, the sticky marks, the screen."""
        conversation = turn.conversation
        tripped = [(m, self._risk.tripwire(m.text)) for m in pending]
        tripped = [(m, found) for m, found in tripped if found]
        marks = await self._risk.marks(conversation, history)
        fired = turn.risk.fired or marks.marked
        if tripped:
            categories = sorted({c for _, found in tripped for c in found})
            await self._auditor.record(AuditKind.RISK_GUARD_FIRED, conversation.id, MODEL_ACTOR, ",".join(categories))
            authors = sorted({m.author_id for m, _ in tripped if m.author_id})
            await self._risk.mark(conversation, authors=authors, categories=categories, source="tripwire")
            fired = True
        turn.rule_state = replace(turn.rule_state, risk_fired=fired)
        turn.support_shown = marks.support_shown
        turn.support_due = fired and not marks.support_shown
        turn.screen = self._risk.start_screen(history)

    async def _screen_found_risk(self, turn: _Turn, *, wait: float | None) -> bool:
        """The screen's finding, waiting for it at most `wait` seconds (None: as long as it takes). A screen
        still running after that is left to finish on its own and mark what it finds."""
        task, turn.screen = turn.screen, None
        if task is None:
            return False
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=wait)
            except TimeoutError:
                self._risk.finish_late(task, turn.conversation, turn.authors)
                return False
            except BaseException:
                # Cancelled (a shutdown): the screen still finishes and its finding is still written.
                self._risk.finish_late(task, turn.conversation, turn.authors)
                raise
        found = task.result()
        await self._risk.note_screen(turn.conversation, found, authors=turn.authors)
        return isinstance(found, RiskFinding) and found.at_risk

    async def _with_screen(self, turn: _Turn, outcome: Outcome) -> Outcome:
        """The screen's word on this answer, then the support resources, once per conversation."""
        if await self._screen_found_risk(turn, wait=self._settings.risk_review.screen_grace_seconds):
            turn.support_due = not turn.support_shown
        guard = self._settings.risk_guard
        if not turn.support_due or not guard.support_resources_enabled:
            return outcome
        if isinstance(outcome, Reply):
            shown: Outcome = replace(outcome, support=guard.support_message)
        elif isinstance(outcome, ModelUnavailable | ModelRefused):
            shown = replace(outcome, text=f"{outcome.text}\n\n{guard.support_message}")
        else:
            return outcome
        await self._store.note_support_shown(conversation_id=turn.conversation.id)
        return shown

    async def answer(
        self, conversation_id: int, trigger: StoredMessage, on_text: TextSink | None, budget_scope: str | None
    ) -> Outcome:
        conversation, history, warnings = await self._store.turn_state(conversation_id)
        if conversation is None:
            return Ignored("gone")
        current = next((m for m in history if m.id == trigger.id), None)
        if current is None or current.answered:
            # Answered together with an earlier message while this one waited for the thread.
            return Ignored("answered_with_earlier")
        if conversation.is_ended:
            await self._store.mark_answered(conversation_id=conversation_id, up_to_seq=history[-1].seq)
            return AlreadyEnded(conversation, self._settings.notices.ended_reply)
        risk = self._window(history)
        # The messages this answer is for: what a refusal must drop and what the budget is charged to.
        pending = [m for m in history if m.is_user_text and not m.answered]
        turn = _Turn(
            conversation=conversation,
            rule_state=self._rule_state(conversation, history, [w.after_seq for w in warnings], risk),
            risk=risk,
            decided_on=newest_person_message(history),
            authors=tuple(sorted({m.author_id for m in pending if m.author_id})),
        )
        await self._watch(turn, history, pending)
        try:
            outcome = await self._answer(turn, history, current, pending, on_text=on_text, budget_scope=budget_scope)
        except BaseException:
            if turn.screen is not None:
                self._risk.finish_late(turn.screen, turn.conversation, turn.authors)
            raise
        return await self._with_screen(turn, outcome)

    async def _answer(
        self,
        turn: _Turn,
        history: list[StoredMessage],
        current: StoredMessage,
        pending: Sequence[StoredMessage],
        *,
        on_text: TextSink | None,
        budget_scope: str | None,
    ) -> Outcome:
        conversation = turn.conversation
        conversation_id = conversation.id
        payer = current.author_id or conversation.owner_id
        scope = budget_scope or conversation.key.place
        answered_up_to = history[-1].seq
        retry_left = True
        gate = RevealGate(on_text)
        while True:
            request = build_request(
                history,
                system_prompt=self._settings.system_prompt,
                model=self._settings.model.name,
                max_tokens=self._settings.model.max_output_tokens,
                context_budget_tokens=self._settings.model.context_budget_tokens,
            )
            gate.next_round()
            reply = await self._call_model(turn, request, gate, answered_up_to)
            if not isinstance(reply, ModelReply):
                return reply
            await self._record_usage(conversation.key.platform, payer, scope, reply)

            if reply.stop_reason == "refusal":
                return await self._handle_refusal(turn, pending, history[-1].seq, reply)

            blocks = _non_empty(reply.blocks)
            text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text").strip()
            tool_uses = [b for b in blocks if b.get("type") == "tool_use"]
            seen_up_to = history[-1].seq
            if not blocks:
                # Nothing to store: an empty assistant turn would make every later request invalid.
                await self._store.mark_answered(conversation_id=conversation_id, up_to_seq=answered_up_to)
                return self._final(turn, "")
            assistant = NewMessage(conversation_id=conversation_id, role=Role.ASSISTANT, blocks=blocks)
            if not tool_uses:
                await self._store.complete_turn(
                    conversation_id=conversation_id,
                    replies=[assistant],
                    after_seq=seen_up_to,
                    answered_up_to_seq=answered_up_to,
                )
                return self._final(turn, text)

            results = [await self._decide(turn, block) for block in tool_uses]
            stored = await self._store.complete_turn(
                conversation_id=conversation_id,
                replies=[
                    assistant,
                    NewMessage(
                        conversation_id=conversation_id,
                        role=Role.USER,
                        blocks=tuple(result for result, _ in results),
                    ),
                ],
                after_seq=seen_up_to,
                answered_up_to_seq=answered_up_to,
            )
            turn.last_seq = stored[-1].seq
            for _, effect in results:
                await self._apply(turn, effect, stored, text)
            if isinstance(turn.outcome, Ended):
                return turn.outcome
            if turn.stale_after_commit:
                # The new message gets its own answer; nothing of this attempt stays in the history.
                return self._final(turn, "")
            if turn.refused:
                # Whatever this reply said went with a refused call (say, a goodbye before a refused
                # ending): the user must not see it.
                text = ""
            # A confirmation request carries its own question; anything else needs words for the user.
            speechless = not text and not isinstance(turn.outcome, ConfirmationRequested)
            if speechless and retry_left:
                # One continuation per user message: the model reads why and answers the user itself.
                retry_left = False
                turn.refused = False
                # Only what this turn has seen: messages that arrived meanwhile get their own turn.
                history = [m for m in await self._store.messages(conversation_id) if m.seq <= turn.last_seq]
                continue
            return self._final(turn, text)

    async def _call_model(
        self, turn: _Turn, request: ModelRequest, listener: StreamListener, answered_up_to: int
    ) -> ModelReply | ModelUnavailable:
        conversation_id = turn.conversation.id
        started = time.monotonic()
        try:
            reply = await self._model.reply(request, listener)
        except ModelUnavailableError as exc:
            self._metrics.observe_error("model_unavailable")
            await self._auditor.record(AuditKind.MODEL_ERROR, conversation_id, MODEL_ACTOR, str(exc)[:200])
            # The user is told; the message stays in the history and goes with their next one.
            await self._store.mark_answered(conversation_id=conversation_id, up_to_seq=answered_up_to)
            return ModelUnavailable(turn.conversation, self._settings.notices.model_unavailable)
        self._metrics.observe_model_call(time.monotonic() - started, reply.usage)
        return reply

    def _final(self, turn: _Turn, text: str) -> Outcome:
        if turn.outcome is not None:
            if isinstance(turn.outcome, WarningGiven | ConfirmationRequested) and text:
                return replace(turn.outcome, text=text)
            return turn.outcome
        # No words fit to show (empty, or said alongside a refused call twice): say plainly what is true.
        return Reply(turn.conversation, text or self._settings.notices.conversation_continues)

    async def _handle_refusal(
        self, turn: _Turn, pending: Sequence[StoredMessage], seen_up_to: int, reply: ModelReply
    ) -> Outcome:
        # Anthropic's guidance: a refused turn must not be replayed as-is. Drop the messages that led to
        # it, and anything this answer stored after them, from future requests (they stay stored for
        # moderators); the refused partial reply is never stored.
        conversation = turn.conversation
        if pending:
            first = min(m.seq for m in pending)
            last = max(seen_up_to, turn.last_seq)
            for message in await self._store.messages(conversation.id):
                if first <= message.seq <= last and not message.excluded:
                    await self._store.exclude_message(message.id)
        await self._store.mark_answered(conversation_id=conversation.id, up_to_seq=seen_up_to)
        await self._auditor.record(
            AuditKind.MODEL_REFUSAL,
            conversation.id,
            MODEL_ACTOR,
            "stop_reason=refusal",
            request_id=reply.request_id,
        )
        return ModelRefused(conversation, self._settings.notices.model_refused)

    async def _decide(self, turn: _Turn, block: JSON) -> tuple[JSON, tuple[object, Decision]]:
        """Judge one tool call; returns its tool_result block and what to do once the turn is stored."""
        call = parse_tool_call(str(block.get("name", "")), block.get("input"))
        decision: Decision
        # Whatever the screen of this message found counts before anything is decided.
        unsure = not isinstance(call, InvalidCall) and not turn.rule_state.risk_fired
        if unsure and await self._screen_found_risk(turn, wait=None):
            turn.rule_state = replace(turn.rule_state, risk_fired=True)
            turn.support_due = not turn.support_shown
        if isinstance(call, InvalidCall):
            decision = Decision(Verdict.REFUSE, "invalid_call", f"Invalid tool call: {call.problem}.")
        elif isinstance(call, WarnProposal):
            decision = await self._gated(
                turn, decide_warning(call, turn.rule_state, self._settings.rules), ending=False
            )
            if decision.approved:
                turn.rule_state = replace(turn.rule_state, has_warning=True, user_turns_since_warning=0)
        else:
            decision = await self._gated(turn, decide_ending(call, turn.rule_state, self._settings.rules), ending=True)
            if decision.approved:
                turn.rule_state = replace(turn.rule_state, ended=True)
        if decision.verdict is Verdict.REFUSE:
            turn.refused = True
        result: JSON = {"type": "tool_result", "tool_use_id": block.get("id"), "content": decision.reason}
        if decision.verdict is Verdict.REFUSE:
            result["is_error"] = True
        return result, (call, decision)

    async def _gated(self, turn: _Turn, decision: Decision, *, ending: bool) -> Decision:
        """A warning or ending the rules approve takes effect only once the risk review of the whole branch
        (new messages included) finds nothing; an ending also only if nobody wrote since the decision."""
        if not decision.approved:
            return decision
        decided_on = turn.decided_on if ending else None
        gate = await self._risk.gate(turn.conversation, decided_on=decided_on, authors=turn.authors)
        if isinstance(gate, GateRefused):
            if gate.code == "risk_guard":
                turn.rule_state = replace(turn.rule_state, risk_fired=True)
                turn.support_due = not turn.support_shown
            return gate_refusal(gate, ending=ending)
        turn.snapshot_id = gate.snapshot_id
        return decision

    async def _apply(
        self, turn: _Turn, effect: tuple[object, Decision], stored: Sequence[StoredMessage], text: str
    ) -> None:
        call, decision = effect
        conversation = turn.conversation
        assistant_seq = stored[0].seq
        if isinstance(call, InvalidCall):
            await self._auditor.record(
                AuditKind.INVALID_TOOL_CALL, conversation.id, MODEL_ACTOR, call.problem, tool=call.tool
            )
        elif isinstance(call, WarnProposal):
            if decision.approved:
                await self._store.add_warning(
                    conversation_id=conversation.id, after_seq=assistant_seq, behavior=call.behavior
                )
                await self._auditor.record(
                    AuditKind.WARNING_RECORDED,
                    conversation.id,
                    MODEL_ACTOR,
                    decision.code,
                    redirect_attempts=call.redirect_attempts,
                )
                turn.outcome = WarningGiven(conversation, text, call.behavior)
            else:
                await self._auditor.record(AuditKind.WARNING_REFUSED, conversation.id, MODEL_ACTOR, decision.code)
        elif isinstance(call, EndProposal):
            if decision.verdict is Verdict.CONFIRM:
                pending = await self._store.add_confirmation(
                    conversation_id=conversation.id,
                    owner_id=conversation.owner_id,
                    explanation=call.explanation,
                )
                await self._auditor.record(
                    AuditKind.CONFIRMATION_REQUESTED, conversation.id, MODEL_ACTOR, call.reason.value
                )
                turn.outcome = ConfirmationRequested(
                    conversation, text, pending.id, self._settings.notices.confirm_question, call.explanation
                )
            elif decision.approved:
                ended = await self._store.end_if_current(
                    conversation_id=conversation.id,
                    reason=call.reason,
                    explanation=call.explanation,
                    actor=MODEL_ACTOR,
                    after_message_id=turn.snapshot_id,
                )
                if ended is None:
                    # Someone wrote in the moment between the gate and the commit. The stored attempt says the
                    # conversation ended, which is untrue, so it leaves the history the model reads.
                    for message in stored:
                        await self._store.exclude_message(message.id)
                    await self._auditor.record(
                        AuditKind.ENDING_REFUSED, conversation.id, MODEL_ACTOR, "stale", proposed=call.reason.value
                    )
                    turn.stale_after_commit = True
                    return
                await self._auditor.record(AuditKind.ENDING_APPROVED, conversation.id, MODEL_ACTOR, call.reason.value)
                turn.conversation = ended
                turn.outcome = Ended(ended, text, self.notice_for(ended))
            else:
                await self._auditor.record(
                    AuditKind.ENDING_REFUSED,
                    conversation.id,
                    MODEL_ACTOR,
                    decision.code,
                    proposed=call.reason.value,
                )

    def notice_for(self, conversation: Conversation) -> EndingNotice:
        return ending_notice(conversation, self._settings.notices)
