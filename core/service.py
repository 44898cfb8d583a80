"""The conversation service: takes what people do, applies the ending rules from stored state, and
returns outcomes for the adapters to render. The model proposes; this module decides."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from core.domain import (
    JSON,
    AuditEvent,
    AuditKind,
    Conversation,
    EndReason,
    NewMessage,
    Role,
    StoredMessage,
    ThreadKey,
)
from core.metrics import Metrics, NullMetrics
from core.outcomes import (
    AlreadyEnded,
    ConfirmationAnswered,
    ConfirmationRequested,
    Ended,
    EndingNotice,
    Ignored,
    ModelRefused,
    ModelUnavailable,
    NotAllowed,
    Outcome,
    Rejected,
    Reply,
    WarningGiven,
)
from core.ports import Clock, ModelClient, ModelReply, ModelUnavailableError, Store, TextSink
from core.prompt import build_request, user_text_block
from core.risk_guard import RiskAssessment, assess, compile_lexicon
from core.rules import (
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
from core.settings import Settings
from core.thread_locks import LeaseTimeoutError, ThreadLocks

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


@dataclass(frozen=True, slots=True)
class InboundMessage:
    key: ThreadKey
    author_id: str
    text: str
    author_name: str | None = None
    platform_message_id: str | None = None
    # A mention, a DM or the terminal may start a conversation; a plain message in a thread may not.
    may_start: bool = False
    budget_scope: str | None = None  # e.g. the channel, for per-channel budgets


@dataclass(frozen=True, slots=True)
class BranchSource:
    conversation: Conversation
    message: StoredMessage


@dataclass(frozen=True, slots=True)
class ConversationStatus:
    conversation: Conversation
    user_messages: int
    warnings: int


@dataclass(frozen=True, slots=True)
class Overview:
    """What moderators see at a glance: counts by audit kind, recent endings and notable events."""

    days: int
    counts: dict[str, int]
    recent_endings: list[Conversation]
    recent_events: list[AuditEvent]


NOTABLE_EVENTS = frozenset(
    {
        AuditKind.ENDING_REFUSED.value,
        AuditKind.RISK_GUARD_FIRED.value,
        AuditKind.FEEDBACK.value,
        AuditKind.MODERATOR_END.value,
        AuditKind.MODERATOR_REOPEN.value,
    }
)


@dataclass
class _Turn:
    """Mutable scratch state of one answer; never leaves `_answer`."""

    conversation: Conversation
    rule_state: RuleState
    risk: RiskAssessment
    outcome: Outcome | None = None
    refused: bool = False


def user_actor(user_id: str) -> str:
    return f"user:{user_id}"


def moderator_actor(user_id: str) -> str:
    return f"moderator:{user_id}"


class ConversationService:
    def __init__(
        self,
        *,
        store: Store,
        model: ModelClient,
        settings: Settings,
        clock: Clock,
        locks: ThreadLocks,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._model = model
        self._settings = settings
        self._clock = clock
        self._locks = locks
        self._metrics = metrics or NullMetrics()
        self._lexicon = compile_lexicon(settings.risk_guard.lexicon)

    @property
    def settings(self) -> Settings:
        return self._settings

    # -- inbound messages -------------------------------------------------------------------------

    def _check_text(self, text: str) -> Rejected | None:
        notices = self._settings.notices
        if not text.strip():
            return Rejected("empty", notices.empty)
        limit = self._settings.limits.max_message_chars
        if len(text) > limit:
            return Rejected("too_long", notices.too_long.format(length=len(text), limit=limit))
        return None

    async def handle_message(self, message: InboundMessage, on_text: TextSink | None = None) -> Outcome:
        """Answer one user message. Posts in ended conversations never reach the model."""
        conversation = await self._store.find_conversation(message.key)
        if conversation is None:
            if not message.may_start:
                return Ignored("not_a_conversation")
            rejected = self._check_text(message.text)
            if rejected:
                return rejected
            conversation = await self._store.get_or_create_conversation(key=message.key, owner_id=message.author_id)
        if conversation.is_ended:
            return AlreadyEnded(conversation, self._settings.notices.ended_reply)
        rejected = self._check_text(message.text) or await self._over_budget(message)
        if rejected:
            return rejected
        self._metrics.observe_message(message.key.platform)
        stored = await self._store.add_message(
            NewMessage(
                conversation_id=conversation.id,
                role=Role.USER,
                blocks=(
                    user_text_block(message.text.strip(), author_name=message.author_name, author_id=message.author_id),
                ),
                author_id=message.author_id,
                author_name=message.author_name,
                platform_message_id=message.platform_message_id,
                answered=False,
            )
        )
        if stored is None:
            return Ignored("duplicate")
        return await self._answer_locked(conversation, stored, on_text, message.budget_scope)

    async def answer_pending(self, message: StoredMessage, on_text: TextSink | None = None) -> Outcome:
        """Answer a stored message nobody answered (its process died): recovery after a crash."""
        conversation = await self._store.get_conversation(message.conversation_id)
        if conversation is None:
            return Ignored("gone")
        return await self._answer_locked(conversation, message, on_text, None)

    async def unanswered(self, *, platform: str, older_than_seconds: float) -> list[StoredMessage]:
        """The newest unanswered message of each conversation on `platform` whose process never answered
        (it died, or gave up waiting for the thread). Answering it answers the ones before it too."""
        cutoff = self._clock.now() - timedelta(seconds=older_than_seconds)
        newest: dict[int, StoredMessage] = {}
        for message in await self._store.unanswered(older_than=cutoff):
            newest[message.conversation_id] = message
        found = []
        for message in newest.values():
            conversation = await self._store.get_conversation(message.conversation_id)
            if conversation is not None and conversation.key.platform == platform:
                found.append(message)
        return found

    async def _answer_locked(
        self,
        conversation: Conversation,
        trigger: StoredMessage,
        on_text: TextSink | None,
        budget_scope: str | None,
    ) -> Outcome:
        try:
            async with self._locks.hold(conversation.key):
                return await self._answer(conversation.id, trigger, on_text, budget_scope)
        except LeaseTimeoutError:
            # The message is stored and unanswered: the next answer in this thread includes it.
            log.warning("thread busy; message kept for the next turn", extra={"conversation": conversation.id})
            return ModelUnavailable(conversation, self._settings.notices.model_unavailable)

    async def _over_budget(self, message: InboundMessage) -> Rejected | None:
        budgets = self._settings.budgets
        day = self._clock.now().date().isoformat()
        checks = [(f"user:{message.key.platform}:{message.author_id}", budgets.per_user_daily_tokens)]
        if message.budget_scope:
            checks.append((f"place:{message.key.platform}:{message.budget_scope}", budgets.per_channel_daily_tokens))
        for scope, limit in checks:
            if limit and await self._store.usage(scope=scope, day=day) >= limit:
                await self._audit(AuditKind.BUDGET_REACHED, None, user_actor(message.author_id), scope.split(":")[0])
                return Rejected("budget", self._settings.notices.budget_reached)
        return None

    async def _record_usage(self, conversation: Conversation, reply: ModelReply, budget_scope: str | None) -> None:
        budgets = self._settings.budgets
        tokens = reply.usage.prompt_tokens + reply.usage.output_tokens
        day = self._clock.now().date().isoformat()
        if budgets.per_user_daily_tokens:
            scope = f"user:{conversation.key.platform}:{conversation.owner_id}"
            await self._store.add_usage(scope=scope, day=day, tokens=tokens)
        if budgets.per_channel_daily_tokens and budget_scope:
            scope = f"place:{conversation.key.platform}:{budget_scope}"
            await self._store.add_usage(scope=scope, day=day, tokens=tokens)

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
            turns_since = sum(1 for m in history if m.is_user_text and m.seq > last_warning)
        return RuleState(
            ended=conversation.is_ended,
            risk_fired=risk.fired,
            has_warning=last_warning is not None,
            user_turns_since_warning=turns_since,
        )

    def _assess(self, history: Sequence[StoredMessage]) -> RiskAssessment:
        texts = [m.text for m in history if m.is_user_text]
        return assess(texts, self._lexicon, window=self._settings.risk_guard.window_messages)

    async def _answer(
        self, conversation_id: int, trigger: StoredMessage, on_text: TextSink | None, budget_scope: str | None
    ) -> Outcome:
        conversation = await self._store.get_conversation(conversation_id)
        if conversation is None:
            return Ignored("gone")
        history = await self._store.messages(conversation_id)
        current = next((m for m in history if m.id == trigger.id), None)
        if current is None or current.answered:
            # Answered together with an earlier message while this one waited for the thread.
            return Ignored("answered_with_earlier")
        if conversation.is_ended:
            await self._store.mark_answered(conversation_id=conversation_id, up_to_seq=history[-1].seq)
            return AlreadyEnded(conversation, self._settings.notices.ended_reply)
        risk = self._assess(history)
        if risk.current_message:
            await self._audit(
                AuditKind.RISK_GUARD_FIRED, conversation_id, MODEL_ACTOR, ",".join(sorted(risk.categories))
            )
        warnings = await self._store.warnings(conversation_id)
        turn = _Turn(
            conversation=conversation,
            rule_state=self._rule_state(conversation, history, [w.after_seq for w in warnings], risk),
            risk=risk,
        )
        answered_up_to = history[-1].seq
        retry_left = True
        while True:
            request = build_request(
                history,
                system_prompt=self._settings.system_prompt,
                model=self._settings.model.name,
                max_tokens=self._settings.model.max_output_tokens,
                context_budget_tokens=self._settings.model.context_budget_tokens,
            )
            started = time.monotonic()
            try:
                reply = await self._model.reply(request, on_text)
            except ModelUnavailableError as exc:
                self._metrics.observe_error("model_unavailable")
                await self._audit(AuditKind.MODEL_ERROR, conversation_id, MODEL_ACTOR, str(exc)[:200])
                # The user is told; the message stays in the history and goes with their next one.
                await self._store.mark_answered(conversation_id=conversation_id, up_to_seq=answered_up_to)
                return ModelUnavailable(conversation, self._settings.notices.model_unavailable)
            self._metrics.observe_model_call(time.monotonic() - started, reply.usage)
            await self._record_usage(conversation, reply, budget_scope)

            if reply.stop_reason == "refusal":
                return await self._handle_refusal(conversation, history, reply)

            text = "".join(str(b.get("text", "")) for b in reply.blocks if b.get("type") == "text").strip()
            tool_uses = [b for b in reply.blocks if b.get("type") == "tool_use"]
            assistant = NewMessage(conversation_id=conversation_id, role=Role.ASSISTANT, blocks=reply.blocks)
            seen_up_to = history[-1].seq
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
            for _, effect in results:
                await self._apply(turn, effect, stored[0].seq, text)
            if isinstance(turn.outcome, Ended):
                return turn.outcome
            # A confirmation request carries its own question; anything else needs words for the user.
            speechless = not text and not isinstance(turn.outcome, ConfirmationRequested)
            if (turn.refused or speechless) and retry_left:
                # One continuation per user message: the model reads why and answers the user itself.
                retry_left = False
                turn.refused = False
                # Only what this turn has seen: messages that arrived meanwhile get their own turn.
                last = stored[-1].seq
                history = [m for m in await self._store.messages(conversation_id) if m.seq <= last]
                continue
            return self._final(turn, text)

    def _final(self, turn: _Turn, text: str) -> Outcome:
        if turn.outcome is not None:
            if isinstance(turn.outcome, WarningGiven | ConfirmationRequested) and text:
                return replace(turn.outcome, text=text)
            return turn.outcome
        support = None
        if turn.risk.current_message and self._settings.risk_guard.support_resources_enabled:
            support = self._settings.risk_guard.support_message
        return Reply(turn.conversation, text or "…", support)

    async def _handle_refusal(
        self, conversation: Conversation, history: Sequence[StoredMessage], reply: ModelReply
    ) -> Outcome:
        # Anthropic's guidance: a refused turn must not be replayed as-is, so drop the messages that led
        # to it from future requests (they stay stored for moderators) and store no partial reply.
        unanswered = [m for m in history if m.role is Role.USER and not m.answered and m.is_user_text]
        for message in unanswered:
            await self._store.exclude_message(message.id)
        await self._store.mark_answered(conversation_id=conversation.id, up_to_seq=history[-1].seq)
        await self._audit(
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
            await self._audit(AuditKind.INVALID_TOOL_CALL, conversation.id, MODEL_ACTOR, call.problem, tool=call.tool)
        elif isinstance(call, WarnProposal):
            if decision.approved:
                await self._store.add_warning(
                    conversation_id=conversation.id, after_seq=assistant_seq, behavior=call.behavior
                )
                await self._audit(
                    AuditKind.WARNING_RECORDED,
                    conversation.id,
                    MODEL_ACTOR,
                    decision.code,
                    redirect_attempts=call.redirect_attempts,
                )
                turn.outcome = WarningGiven(conversation, text, call.behavior)
            else:
                await self._audit(AuditKind.WARNING_REFUSED, conversation.id, MODEL_ACTOR, decision.code)
        elif isinstance(call, EndProposal):
            if decision.verdict is Verdict.CONFIRM:
                pending = await self._store.add_confirmation(
                    conversation_id=conversation.id,
                    owner_id=conversation.owner_id,
                    explanation=call.explanation,
                )
                await self._audit(AuditKind.CONFIRMATION_REQUESTED, conversation.id, MODEL_ACTOR, call.reason.value)
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
                await self._audit(AuditKind.ENDING_APPROVED, conversation.id, MODEL_ACTOR, call.reason.value)
                turn.conversation = ended
                turn.outcome = Ended(ended, text, self.notice_for(ended))
            else:
                await self._audit(
                    AuditKind.ENDING_REFUSED,
                    conversation.id,
                    MODEL_ACTOR,
                    decision.code,
                    proposed=call.reason.value,
                )

    def notice_for(self, conversation: Conversation) -> EndingNotice:
        notices = self._settings.notices
        return EndingNotice(
            reason=conversation.ended_reason or EndReason.MODERATOR,
            explanation=conversation.ended_explanation or "",
            ended_by=conversation.ended_by or "",
            title=notices.ended_title,
            next_steps=notices.ended_next_steps,
        )

    # -- confirmation of user_requested endings ----------------------------------------------------

    async def answer_confirmation(
        self, *, confirmation_id: int, actor_id: str, confirmed: bool
    ) -> ConfirmationAnswered | NotAllowed:
        pending = await self._store.get_confirmation(confirmation_id)
        conversation = await self._store.get_conversation(pending.conversation_id) if pending else None
        if pending is None or conversation is None:
            return NotAllowed("This request is no longer available.")
        if actor_id != pending.owner_id:
            return NotAllowed("Only the person who started this conversation can answer this.")
        async with self._locks.hold(conversation.key):
            conversation = await self._store.get_conversation(conversation.id) or conversation
            fresh = await self._store.get_confirmation(confirmation_id)
            resolved = fresh.resolved if fresh else True
            if not confirmed:
                if resolved or not await self._store.resolve_confirmation(confirmation_id):
                    return NotAllowed("This request was already answered.")
                await self._audit(AuditKind.CONFIRMATION_DECLINED, conversation.id, user_actor(actor_id))
                return ConfirmationAnswered(conversation, False, self._settings.notices.confirm_declined)
            risk = self._assess(await self._store.messages(conversation.id))
            decision = decide_confirmation(
                actor_id=actor_id,
                owner_id=pending.owner_id,
                ended=conversation.is_ended,
                already_resolved=resolved,
                risk_fired=risk.fired,
            )
            if not decision.approved or not await self._store.resolve_confirmation(confirmation_id):
                if decision.code == "risk_guard":
                    await self._audit(AuditKind.ENDING_REFUSED, conversation.id, MODEL_ACTOR, "risk_guard")
                return NotAllowed(decision.reason if not decision.approved else "This request was already answered.")
            ended = await self._store.end_conversation(
                conversation_id=conversation.id,
                reason=EndReason.USER_REQUESTED,
                explanation=pending.explanation,
                actor=user_actor(actor_id),
            )
            await self._audit(AuditKind.CONFIRMATION_ACCEPTED, conversation.id, user_actor(actor_id))
            await self._audit(
                AuditKind.ENDING_APPROVED,
                conversation.id,
                user_actor(actor_id),
                EndReason.USER_REQUESTED.value,
            )
            return ConfirmationAnswered(ended, True, "", self.notice_for(ended))

    # -- branching by edit ---------------------------------------------------------------------------

    async def find_branch_source(
        self, *, platform: str, platform_message_id: str, editor_id: str
    ) -> BranchSource | NotAllowed | Ignored:
        message = await self._store.find_by_platform_id(platform=platform, platform_message_id=platform_message_id)
        if message is None:
            return Ignored("unknown_message")
        return await self._branch_source(message, editor_id)

    async def find_nth_user_message(
        self, *, key: ThreadKey, n: int, editor_id: str
    ) -> BranchSource | NotAllowed | Ignored:
        """The terminal's `/edit N`: the N-th message (from 1) this user wrote in the conversation."""
        conversation = await self._store.find_conversation(key)
        if conversation is None:
            return Ignored("not_a_conversation")
        mine = [m for m in await self._store.messages(conversation.id) if m.is_user_text and m.author_id == editor_id]
        if not 1 <= n <= len(mine):
            return NotAllowed(f"There is no message {n}; you have written {len(mine)} in this conversation.")
        return await self._branch_source(mine[n - 1], editor_id)

    async def user_messages(self, *, conversation_id: int, author_id: str) -> list[StoredMessage]:
        return [m for m in await self._store.messages(conversation_id) if m.is_user_text and m.author_id == author_id]

    async def _branch_source(self, message: StoredMessage, editor_id: str) -> BranchSource | NotAllowed | Ignored:
        if message.role is not Role.USER or not message.is_user_text:
            return Ignored("not_a_user_message")
        if message.author_id != editor_id:
            return NotAllowed("Only the author of a message can edit it to branch the conversation.")
        conversation = await self._store.get_conversation(message.conversation_id)
        if conversation is None:
            return Ignored("gone")
        history = await self._store.messages(conversation.id)
        if not any(m.role is Role.ASSISTANT and m.seq > message.seq for m in history):
            return Ignored("not_answered_yet")
        return BranchSource(conversation, message)

    async def branch(
        self,
        source: BranchSource,
        *,
        key: ThreadKey,
        new_text: str,
        author_name: str | None = None,
        platform_message_id: str | None = None,
        on_text: TextSink | None = None,
    ) -> Outcome:
        """Start a new conversation: the history before the edited message, then the edited text."""
        rejected = self._check_text(new_text)
        if rejected:
            return rejected
        owner = source.message.author_id or source.conversation.owner_id
        branch = await self._store.create_branch(
            key=key, owner_id=owner, source=source.conversation, branch_point_seq=source.message.seq
        )
        await self._audit(
            AuditKind.BRANCHED,
            branch.id,
            user_actor(owner),
            "edit",
            source_conversation=source.conversation.id,
        )
        return await self.handle_message(
            InboundMessage(
                key=key,
                author_id=owner,
                author_name=author_name or source.message.author_name,
                text=new_text,
                platform_message_id=platform_message_id,
                may_start=False,
            ),
            on_text,
        )

    async def find_conversation(self, key: ThreadKey) -> Conversation | None:
        return await self._store.find_conversation(key)

    async def latest_conversation(self, *, platform: str, place: str) -> Conversation | None:
        return await self._store.latest_conversation(platform=platform, place=place)

    # -- moderators, feedback, privacy ----------------------------------------------------------------

    async def status(self, key: ThreadKey) -> ConversationStatus | None:
        conversation = await self._store.find_conversation(key)
        if conversation is None:
            return None
        history = await self._store.messages(conversation.id)
        warnings = await self._store.warnings(conversation.id)
        return ConversationStatus(conversation, sum(1 for m in history if m.is_user_text), len(warnings))

    async def moderator_end(self, *, key: ThreadKey, moderator_id: str, reason: str) -> Conversation | None:
        conversation = await self._store.find_conversation(key)
        if conversation is None:
            return None
        if conversation.is_ended:
            return conversation
        async with self._locks.hold(key):
            explanation = reason.strip() or "A moderator ended this conversation."
            ended = await self._store.end_conversation(
                conversation_id=conversation.id,
                reason=EndReason.MODERATOR,
                explanation=explanation,
                actor=moderator_actor(moderator_id),
            )
        await self._audit(AuditKind.MODERATOR_END, conversation.id, moderator_actor(moderator_id), reason.strip()[:200])
        return ended

    async def moderator_reopen(self, *, key: ThreadKey, moderator_id: str, reason: str = "") -> Conversation | None:
        conversation = await self._store.find_conversation(key)
        if conversation is None:
            return None
        if not conversation.is_ended:
            return conversation
        reopened = await self._store.reopen_conversation(conversation_id=conversation.id)
        await self._audit(
            AuditKind.MODERATOR_REOPEN, conversation.id, moderator_actor(moderator_id), reason.strip()[:200]
        )
        return reopened

    async def record_feedback(self, *, conversation_id: int, actor_id: str, helpful: bool) -> None:
        await self._audit(
            AuditKind.FEEDBACK, conversation_id, user_actor(actor_id), "helpful" if helpful else "not_helpful"
        )

    async def forget_user(self, *, platform: str, user_id: str) -> int:
        removed = await self._store.forget_user(platform=platform, user_id=user_id)
        await self._audit(AuditKind.FORGOTTEN, None, "user:forgotten", f"{removed} messages")
        return removed

    async def stats(self, *, days: int) -> dict[str, int]:
        since = self._clock.now() - timedelta(days=days)
        return await self._store.count_events(since=since)

    async def overview(self, *, days: int = 7, limit: int = 10) -> Overview:
        since = self._clock.now() - timedelta(days=days)
        events = [e for e in await self._store.events(since=since) if e.kind in NOTABLE_EVENTS]
        return Overview(
            days=days,
            counts=await self._store.count_events(since=since),
            recent_endings=await self._store.recent_endings(limit=limit),
            recent_events=events[-limit:][::-1],
        )

    async def _audit(
        self, kind: AuditKind, conversation_id: int | None, actor: str, reason: str = "", **detail: object
    ) -> None:
        await self._store.add_event(
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
