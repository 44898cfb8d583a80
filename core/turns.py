"""One answer to a user message: the model call, the rules applied to each tool call, the stored turn.

The model proposes; `decide_*` in core/rules.py decide from stored state; this module carries out what
was decided (record a warning, end, ask to confirm) and says why to the model when it refuses.
"""

from __future__ import annotations

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
from core.risk_guard import RiskAssessment, assess, compile_lexicon
from core.rules import (
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
    outcome: Outcome | None = None
    refused: bool = False
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
    ) -> None:
        self._store = store
        self._model = model
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._auditor = auditor
        self._lexicon = compile_lexicon(settings.risk_guard.lexicon)

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

    def assess(self, history: Sequence[StoredMessage]) -> RiskAssessment:
        texts = [m.text for m in history if m.is_user_text]
        return assess(texts, self._lexicon, window=self._settings.risk_guard.window_messages)

    def _support(self, risk: RiskAssessment) -> str | None:
        if risk.current_message and self._settings.risk_guard.support_resources_enabled:
            return self._settings.risk_guard.support_message
        return None

    def _with_support(self, text: str, risk: RiskAssessment) -> str:
        support = self._support(risk)
        return f"{text}\n\n{support}" if support else text

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
        risk = self.assess(history)
        if risk.current_message:
            await self._auditor.record(
                AuditKind.RISK_GUARD_FIRED, conversation_id, MODEL_ACTOR, ",".join(sorted(risk.categories))
            )
        turn = _Turn(
            conversation=conversation,
            rule_state=self._rule_state(conversation, history, [w.after_seq for w in warnings], risk),
            risk=risk,
        )
        # The messages this answer is for: what a refusal must drop and what the budget is charged to.
        pending = [m for m in history if m.is_user_text and not m.answered]
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
                await self._apply(turn, effect, stored[0].seq, text)
            if isinstance(turn.outcome, Ended):
                return turn.outcome
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
            return ModelUnavailable(
                turn.conversation, self._with_support(self._settings.notices.model_unavailable, turn.risk)
            )
        self._metrics.observe_model_call(time.monotonic() - started, reply.usage)
        return reply

    def _final(self, turn: _Turn, text: str) -> Outcome:
        if turn.outcome is not None:
            if isinstance(turn.outcome, WarningGiven | ConfirmationRequested) and text:
                return replace(turn.outcome, text=text)
            return turn.outcome
        # No words fit to show (empty, or said alongside a refused call twice): say plainly what is true.
        return Reply(turn.conversation, text or self._settings.notices.conversation_continues, self._support(turn.risk))

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
        return ModelRefused(conversation, self._with_support(self._settings.notices.model_refused, turn.risk))

    async def _decide(self, turn: _Turn, block: JSON) -> tuple[JSON, tuple[object, Decision]]:
        """Judge one tool call; returns its tool_result block and what to do once the turn is stored."""
        call = parse_tool_call(str(block.get("name", "")), block.get("input"))
        decision: Decision
        if isinstance(call, InvalidCall):
            decision = Decision(Verdict.REFUSE, "invalid_call", f"Invalid tool call: {call.problem}.")
        elif isinstance(call, WarnProposal):
            decision = decide_warning(call, turn.rule_state, self._settings.rules)
            if decision.approved:
                turn.rule_state = replace(turn.rule_state, has_warning=True, user_turns_since_warning=0)
        else:
            decision = decide_ending(call, turn.rule_state, self._settings.rules)
            if decision.approved:
                turn.rule_state = replace(turn.rule_state, ended=True)
        if decision.verdict is Verdict.REFUSE:
            turn.refused = True
        result: JSON = {"type": "tool_result", "tool_use_id": block.get("id"), "content": decision.reason}
        if decision.verdict is Verdict.REFUSE:
            result["is_error"] = True
        return result, (call, decision)

    async def _apply(self, turn: _Turn, effect: tuple[object, Decision], assistant_seq: int, text: str) -> None:
        call, decision = effect
        conversation = turn.conversation
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
                ended = await self._store.end_conversation(
                    conversation_id=conversation.id,
                    reason=call.reason,
                    explanation=call.explanation,
                    actor=MODEL_ACTOR,
                )
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
