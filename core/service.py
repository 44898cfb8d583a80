"""The conversation service: takes what people do, applies the ending rules from stored state, and
returns outcomes for the adapters to render. The model proposes; this module decides."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

from core.audit import Auditor, moderator_actor, user_actor
from core.domain import (
    AuditKind,
    Conversation,
    EndReason,
    NewMessage,
    RiskMarks,
    Role,
    StoredMessage,
    ThreadKey,
)
from core.metrics import Metrics, NullMetrics
from core.outcomes import (
    AlreadyEnded,
    ConfirmationAnswered,
    EndingNotice,
    Ignored,
    ModelUnavailable,
    NotAllowed,
    Outcome,
    Rejected,
)
from core.overview import FEEDBACK_LIMIT, NOTABLE_EVENTS, Overview
from core.ports import ClaudeApi, Clock, Store, TextSink
from core.prompt import user_text_block
from core.risk_guard import compile_lexicon
from core.risk_review import RiskReviewer
from core.risk_watch import GateRefused, RiskWatch
from core.rules import decide_confirmation
from core.settings import Settings
from core.thread_locks import LeaseTimeoutError, ThreadLocks
from core.turns import TurnRunner

log = logging.getLogger(__name__)


FEEDBACK_THANKS = "Thanks, your feedback was recorded."
FEEDBACK_ALREADY = "You already gave feedback on this conversation; the first answer counts."
VOTE_THANKS = "Thanks for the feedback on this answer."
VOTE_SAME = "Your vote on this answer was already recorded."


def feedback_text(recorded: bool) -> str:
    return FEEDBACK_THANKS if recorded else FEEDBACK_ALREADY


def forgotten_text(removed: int) -> str:
    """What a member is told after `forget`, on every platform."""
    return (
        f"Done: I removed the text of the {removed} message{'s' if removed != 1 else ''} you wrote, your name, "
        "and all text of the conversations you started. A conversation that had ended stays ended. "
        "Audit records keep no message text."
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
class Received:
    """A message stored and waiting for its answer."""

    conversation: Conversation
    message: StoredMessage
    budget_scope: str | None = None


@dataclass(frozen=True, slots=True)
class BranchSource:
    conversation: Conversation
    message: StoredMessage


@dataclass(frozen=True, slots=True)
class ModeratorAction:
    conversation: Conversation
    changed: bool  # False: it already was in the state asked for
    # Why an `end` was held back (nothing changed): "at_risk" (marked, or the review found risk),
    # "review_unavailable" (the review gave no answer) or "stale" (someone wrote meanwhile). An explicit
    # override ends it anyway, except when stale.
    held: str | None = None
    categories: frozenset[str] = frozenset()
    # When held: the newest message a person had written, which an override then acts on.
    seen_up_to: int = 0
    # Ended by an explicit override of what held it back (the categories, or the reason it was held).
    overrode: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ConversationStatus:
    conversation: Conversation
    user_messages: int
    warnings: int
    risk: RiskMarks = field(default_factory=RiskMarks)


# Said to the owner when the gate holds their confirmed ending back; never says why (the person may be at risk).
CONFIRMATION_HELD = "The conversation stays open for now. I'm still here if you want to keep talking."

# Moderators' reasons are shown in the ending notice (and stay in the audit trail): kept short.
MAX_MODERATOR_REASON = 500


class ConversationService:
    def __init__(
        self,
        *,
        store: Store,
        model: ClaudeApi,
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
        self._auditor = Auditor(store, clock=clock, metrics=self._metrics)
        self._risk = RiskWatch(
            store=store,
            reviewer=RiskReviewer(client=model, settings=settings.risk_review, observer=self._metrics),
            lexicon=compile_lexicon(settings.risk_guard.lexicon),
            settings=settings,
            clock=clock,
            auditor=self._auditor,
        )
        self._turns = TurnRunner(
            store=store,
            model=model,
            settings=settings,
            clock=clock,
            metrics=self._metrics,
            auditor=self._auditor,
            risk=self._risk,
        )

    @property
    def settings(self) -> Settings:
        return self._settings

    # -- inbound messages -------------------------------------------------------------------------

    def check_text(self, text: str) -> Rejected | None:
        notices = self._settings.notices
        if not text.strip():
            return Rejected("empty", notices.empty)
        limit = self._settings.limits.max_message_chars
        if len(text) > limit:
            return Rejected("too_long", notices.too_long.format(length=len(text), limit=limit))
        return None

    async def handle_message(self, message: InboundMessage, on_text: TextSink | None = None) -> Outcome:
        """Answer one user message. Posts in ended conversations never reach the model."""
        received = await self.receive(message)
        if not isinstance(received, Received):
            return received
        return await self.answer_received(received, on_text)

    async def receive(self, message: InboundMessage) -> Received | Outcome:
        """Take a message in: stored (unanswered, under its platform id) or an outcome saying why not.
        Adapters whose platform redelivers acknowledge only after this returns, so that a message is
        either stored or redelivered, never lost in between."""
        conversation = await self._store.find_conversation(message.key)
        if conversation is None:
            if not message.may_start:
                return Ignored("not_a_conversation")
            # Started even if this first message cannot be taken (a bare mention, too long): the thread is
            # theirs now, and what they post next in it must reach the model.
            conversation = await self._store.get_or_create_conversation(key=message.key, owner_id=message.author_id)
        if conversation.is_ended:
            ended = AlreadyEnded(conversation, self._settings.notices.ended_reply)
            return replace(ended, text=await self._tripwire_unstored(conversation, message, ended.text))
        rejected = self.check_text(message.text) or await self._over_budget(message)
        if rejected:
            return replace(rejected, text=await self._tripwire_unstored(conversation, message, rejected.text))
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
        self._metrics.observe_message(message.key.platform)
        return Received(conversation, stored, message.budget_scope)

    async def _tripwire_unstored(self, conversation: Conversation, message: InboundMessage, text: str) -> str:
        """A message that reaches no model (its conversation ended, or it was refused) still goes past the
        tripwire: the author is marked, so their next conversation is not ended on them, and they see the
        support resources with the answer."""
        # Read only as far as a message may be long: a huge one must not cost a huge scan.
        found = self._risk.tripwire(message.text[: self._settings.limits.max_message_chars])
        if not found:
            return text
        await self._risk.mark(conversation, authors=[message.author_id], categories=found, source="tripwire")
        guard = self._settings.risk_guard
        return f"{text}\n\n{guard.support_message}" if guard.support_resources_enabled else text

    async def answer_received(self, received: Received, on_text: TextSink | None = None) -> Outcome:
        return await self._answer_locked(received.conversation, received.message, on_text, received.budget_scope)

    async def answer_pending(
        self,
        message: StoredMessage,
        on_text: TextSink | None = None,
        *,
        under_lease: Callable[[], Awaitable[None]] | None = None,
        conversation: Conversation | None = None,
    ) -> Outcome:
        """Answer a stored message nobody answered yet (just taken in, or its process died). `under_lease`
        runs once the thread is held, before the model is called: what only the thread's holder may do
        (an adapter removing drafts a stopped process left). `conversation`, the message's as the caller
        already has it, saves reading it first: only its key and id are used (the thread to hold); the turn
        reads its current state under the thread's lock either way."""
        if conversation is None or conversation.id != message.conversation_id:
            conversation = await self._store.get_conversation(message.conversation_id)
        if conversation is None:
            return Ignored("gone")
        return await self._answer_locked(conversation, message, on_text, None, under_lease)

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
        under_lease: Callable[[], Awaitable[None]] | None = None,
    ) -> Outcome:
        try:
            async with self._locks.hold(conversation.key):
                if under_lease is not None:
                    await under_lease()
                return await self._turns.answer(conversation.id, trigger, on_text, budget_scope)
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
                await self._auditor.record(
                    AuditKind.BUDGET_REACHED, None, user_actor(message.author_id), scope.split(":")[0]
                )
                return Rejected("budget", self._settings.notices.budget_reached)
        return None

    def notice_for(self, conversation: Conversation) -> EndingNotice:
        return self._turns.notice_for(conversation)

    async def drain(self) -> None:
        """Let risk screens still running finish and write what they found (at shutdown)."""
        await self._risk.drain()

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
                await self._auditor.record(AuditKind.CONFIRMATION_DECLINED, conversation.id, user_actor(actor_id))
                return ConfirmationAnswered(conversation, False, self._settings.notices.confirm_declined)
            decision = decide_confirmation(
                actor_id=actor_id,
                owner_id=pending.owner_id,
                ended=conversation.is_ended,
                already_resolved=resolved,
                risk_fired=False,
            )
            if not decision.approved:
                return NotAllowed(decision.reason)
            # The owner's click is an ending attempt like any other: the risk gate decides, on the branch as
            # it stands now, and the ending commits only if nobody wrote meanwhile.
            gate = await self._risk.gate(conversation, decided_on=None)
            if isinstance(gate, GateRefused):
                await self._auditor.record(AuditKind.ENDING_REFUSED, conversation.id, user_actor(actor_id), gate.code)
                await self._store.resolve_confirmation(confirmation_id)
                return NotAllowed(CONFIRMATION_HELD)
            if not await self._store.resolve_confirmation(confirmation_id):
                return NotAllowed("This request was already answered.")
            ended = await self._store.end_if_current(
                conversation_id=conversation.id,
                reason=EndReason.USER_REQUESTED,
                explanation=pending.explanation,
                actor=user_actor(actor_id),
                after_message_id=gate.snapshot_id,
            )
            if ended is None:
                await self._auditor.record(AuditKind.ENDING_REFUSED, conversation.id, user_actor(actor_id), "stale")
                return NotAllowed(CONFIRMATION_HELD)
            await self._auditor.record(AuditKind.CONFIRMATION_ACCEPTED, conversation.id, user_actor(actor_id))
            await self._auditor.record(
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
        rejected = self.check_text(new_text)
        if rejected:
            return rejected
        owner = source.message.author_id or source.conversation.owner_id
        branch = await self._store.create_branch(
            key=key, owner_id=owner, source=source.conversation, branch_point_seq=source.message.seq
        )
        await self._auditor.record(
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

    async def start_conversation(self, *, key: ThreadKey, owner_id: str) -> Conversation:
        """A conversation the user asked for explicitly (a "new conversation" button), before any message."""
        return await self._store.get_or_create_conversation(key=key, owner_id=owner_id)

    async def get_conversation(self, conversation_id: int) -> Conversation | None:
        return await self._store.get_conversation(conversation_id)

    async def find_conversation(self, key: ThreadKey) -> Conversation | None:
        return await self._store.find_conversation(key)

    async def find_message(self, *, platform: str, platform_message_id: str) -> StoredMessage | None:
        return await self._store.find_by_platform_id(platform=platform, platform_message_id=platform_message_id)

    async def latest_conversation(self, *, platform: str, place: str) -> Conversation | None:
        return await self._store.latest_conversation(platform=platform, place=place)

    # -- moderators, feedback, privacy ----------------------------------------------------------------

    async def status(self, key: ThreadKey) -> ConversationStatus | None:
        conversation = await self._store.find_conversation(key)
        if conversation is None:
            return None
        history = await self._store.messages(conversation.id)
        warnings = await self._store.warnings(conversation.id)
        marks = await self._risk.marks(conversation, history)
        return ConversationStatus(conversation, sum(1 for m in history if m.is_user_text), len(warnings), marks)

    async def moderator_end(
        self, *, key: ThreadKey, moderator_id: str, reason: str, override: bool = False, seen_up_to: int | None = None
    ) -> ModeratorAction | None:
        """End a conversation now, unless someone in it may be at risk (the marks, then the risk review of
        the whole branch, which fails closed): then it is held back and the moderator is told why, unless they
        explicitly `override`, which is audited with their id. An override given after seeing a held notice
        (`seen_up_to`) acts only if nobody wrote since. `changed` is False if it had already ended (by anyone) or
        was held back: then no notice is due."""
        if await self._store.find_conversation(key) is None:
            return None
        async with self._locks.hold(key):
            # Checked under the thread's lock: a model ending may have just happened.
            conversation = await self._store.find_conversation(key)
            if conversation is None:
                return None
            if conversation.is_ended:
                return ModeratorAction(conversation, changed=False)
            actor = moderator_actor(moderator_id)
            gate = await self._risk.gate(conversation, decided_on=seen_up_to if override else None)
            overrode: frozenset[str] = frozenset()
            after = gate.snapshot_id
            if isinstance(gate, GateRefused):
                held = "at_risk" if gate.code == "risk_guard" else gate.code
                if not override or held == "stale":
                    await self._auditor.record(AuditKind.ENDING_REFUSED, conversation.id, actor, gate.code)
                    return ModeratorAction(
                        conversation, changed=False, held=held, categories=gate.categories, seen_up_to=gate.snapshot_id
                    )
                overrode = gate.categories or frozenset({held})
                after = seen_up_to if seen_up_to is not None else gate.snapshot_id
            explanation = reason.strip()[:MAX_MODERATOR_REASON] or "A moderator ended this conversation."
            ended = await self._store.end_if_current(
                conversation_id=conversation.id,
                reason=EndReason.MODERATOR,
                explanation=explanation,
                actor=actor,
                after_message_id=after,
            )
            if ended is None:
                await self._auditor.record(AuditKind.ENDING_REFUSED, conversation.id, actor, "stale")
                return ModeratorAction(conversation, changed=False, held="stale")
            if overrode:
                categories = ",".join(sorted(overrode))
                held_by = "at_risk" if isinstance(gate, GateRefused) and gate.code == "risk_guard" else "unreviewed"
                await self._auditor.record(
                    AuditKind.MODERATOR_OVERRIDE, conversation.id, actor, held_by, categories=categories
                )
            await self._auditor.record(AuditKind.MODERATOR_END, conversation.id, actor, reason.strip()[:200])
        return ModeratorAction(ended, changed=True, overrode=overrode)

    async def moderator_reopen(self, *, key: ThreadKey, moderator_id: str, reason: str = "") -> ModeratorAction | None:
        if await self._store.find_conversation(key) is None:
            return None
        async with self._locks.hold(key):
            conversation = await self._store.find_conversation(key)
            if conversation is None:
                return None
            if not conversation.is_ended:
                return ModeratorAction(conversation, changed=False)
            reopened = await self._store.reopen_conversation(conversation_id=conversation.id)
            await self._auditor.record(
                AuditKind.MODERATOR_REOPEN, conversation.id, moderator_actor(moderator_id), reason.strip()[:200]
            )
        return ModeratorAction(reopened, changed=True)

    async def record_feedback(self, *, conversation_id: int, actor_id: str, helpful: bool) -> bool:
        """One vote per person and conversation, so the figures cannot be skewed by clicking again.
        False if this person had already given feedback on it."""
        if not await self._store.claim_event(source="feedback", event_id=f"{conversation_id}:{actor_id}"):
            return False
        await self._auditor.record(
            AuditKind.FEEDBACK, conversation_id, user_actor(actor_id), "helpful" if helpful else "not_helpful"
        )
        return True

    async def record_answer_vote(
        self, *, conversation_id: int, answer_id: str, voter_id: str, helpful: bool, place: str
    ) -> str | None:
        """A 👍/👎 on one answer; one per person, a second click the other way replaces the first. The
        vote must come from where the conversation lives (`place`): None if it does not (or is gone)."""
        conversation = await self._store.get_conversation(conversation_id)
        if conversation is None or conversation.key.place != place:
            return None
        changed = await self._store.record_answer_vote(
            conversation_id=conversation_id, answer_id=answer_id, voter_id=voter_id, helpful=helpful
        )
        return VOTE_THANKS if changed else VOTE_SAME

    async def forget_user(self, *, platform: str, user_id: str) -> int:
        removed = await self._store.forget_user(platform=platform, user_id=user_id)
        await self._auditor.record(AuditKind.FORGOTTEN, None, "user:forgotten", f"{removed} messages")
        return removed

    async def stats(self, *, days: int) -> dict[str, int]:
        since = self._clock.now() - timedelta(days=days)
        return await self._store.count_events(since=since)

    async def overview(self, *, days: int = 7, limit: int = 10) -> Overview:
        since = self._clock.now() - timedelta(days=days)
        recent = await self._store.events(since=since, kinds=sorted(NOTABLE_EVENTS), newest_first=True, limit=limit)
        feedback = [
            e.reason
            for e in await self._store.events(since=since, kinds=[AuditKind.FEEDBACK.value], limit=FEEDBACK_LIMIT)
        ]
        votes = await self._store.answer_votes(since=since)
        return Overview(
            days=days,
            answers_helpful=votes.helpful,
            answers_not_helpful=votes.not_helpful,
            counts=await self._store.count_events(since=since),
            recent_endings=await self._store.recent_endings(limit=limit),
            recent_events=recent,
            helpful=feedback.count("helpful"),
            not_helpful=feedback.count("not_helpful"),
        )
