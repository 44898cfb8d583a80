"""Delivery: an answer counts once the platform accepted it, not when the core stored it.

The core stores a turn and marks its user messages answered before any adapter posts it. If the post then
fails (a platform outage that outlasts the SDK's retries, a crash between the two), the message stays
*undelivered*: `undelivered` lists it for the recovery loop, and `redeliver` shows the stored answer again,
rebuilt from stored state, so the model is not asked a second time. An adapter calls `delivered` once the
platform took the answer, and only then.

Redelivery holds the thread's lease (as answering does) and re-reads the message under it, so two sweeps,
or two instances, never post the same answer twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import timedelta

from core.audit import MODEL_ACTOR
from core.domain import Conversation, RecordedWarning, Role, StoredMessage
from core.outcomes import Ended, Outcome, Reply, WarningGiven
from core.ports import Clock, Store
from core.settings import NoticeSettings, Settings
from core.storage.rows import EVERY_SEQ
from core.thread_locks import ThreadLocks
from core.turns import ending_notice

log = logging.getLogger(__name__)

# Answers older than this are not posted any more: nobody is waiting for them.
DEFAULT_WITHIN_SECONDS = 24 * 3600.0

EVERYTHING = EVERY_SEQ  # a seq after every message
# Shows an answer again; False: not now (a live answer is on its way), so it is not counted delivered.
Show = Callable[[Outcome | None], Awaitable[bool | None]]


def answer_run(history: Sequence[StoredMessage], trigger_seq: int) -> list[StoredMessage]:
    """The stored answer to the user messages up to `trigger_seq`: the messages after it, from the model's
    first turn up to the next message a person wrote. Empty when nothing was stored for them (the model was
    unavailable, refused, or the conversation had ended)."""
    run: list[StoredMessage] = []
    for message in history:
        if message.seq <= trigger_seq:
            continue
        if message.is_user_text:
            break
        run.append(message)
    return run if any(m.role is Role.ASSISTANT for m in run) else []


def stored_answer(
    conversation: Conversation,
    history: Sequence[StoredMessage],
    warnings: Sequence[RecordedWarning],
    trigger_seq: int,
    notices: NoticeSettings,
) -> Outcome | None:
    """What the core answered to the message at `trigger_seq`, as the outcome it returned then."""
    run = answer_run(history, trigger_seq)
    if not run:
        return None
    assistants = [m for m in run if m.role is Role.ASSISTANT]
    text = assistants[-1].text.strip()
    later_user_text = any(m.is_user_text for m in history if m.seq > run[-1].seq)
    ended_here = any(
        b.get("type") == "tool_use" and b.get("name") == "end_conversation" for m in assistants for b in m.blocks
    )
    if conversation.is_ended and not later_user_text:
        if ended_here and conversation.ended_by == MODEL_ACTOR:
            return Ended(conversation, text, ending_notice(conversation, notices))
        # Ended since by someone else (a moderator, the owner's confirmation), who showed the notice: an
        # answer from before would only confuse now.
        return None
    seqs = {m.seq for m in assistants}
    warning = next((w for w in warnings if w.after_seq in seqs), None)
    if warning is not None:
        return WarningGiven(conversation, text, warning.behavior)
    return Reply(conversation, text or notices.conversation_continues)


class Deliveries:
    def __init__(self, *, store: Store, clock: Clock, locks: ThreadLocks, settings: Settings) -> None:
        self._store = store
        self._clock = clock
        self._locks = locks
        self._notices = settings.notices
        self._guard = settings.risk_guard

    async def delivered(self, *, conversation_id: int, trigger_seq: int | None = None) -> None:
        """The platform accepted the answer to the message at `trigger_seq` (None: to every answered
        message in the conversation, for a conversation only this answer is in, such as a new branch).
        One statement: adapters call this after every answer."""
        seq = EVERYTHING if trigger_seq is None else trigger_seq
        await self._store.mark_delivered(conversation_id=conversation_id, trigger_seq=seq)

    async def undelivered(
        self, *, platform: str, older_than_seconds: float, within_seconds: float = DEFAULT_WITHIN_SECONDS
    ) -> list[StoredMessage]:
        """The newest answered-but-undelivered user message of each conversation on `platform` whose answer
        was stored more than `older_than_seconds` ago (its first attempt has had its time), of messages from
        the last `within_seconds`."""
        now = self._clock.now()
        found = await self._store.undelivered(
            platform=platform,
            older_than=now - timedelta(seconds=older_than_seconds),
            newer_than=now - timedelta(seconds=within_seconds),
        )
        # The oldest first: an earlier answer that never arrived (a warning, say) is shown before later ones.
        newest: dict[int, StoredMessage] = {}
        for message in found:
            newest.setdefault(message.conversation_id, message)
        cutoff = now - timedelta(seconds=older_than_seconds)
        due = []
        for message in newest.values():
            # Counted from when the answer was stored, not from when the message came: a slow answer may
            # be on its way to the platform right now, and must not be posted a second time beside it.
            # The last row of the answer: a turn that called a tool stores its continuation later.
            history = await self._store.messages(message.conversation_id)
            run = answer_run(history, message.seq)
            stamps = [m.created_at for m in run if m.created_at is not None]
            stored_at = max(stamps) if stamps else message.created_at
            if stored_at is None or stored_at < cutoff:
                due.append(message)
        return due

    async def redeliver(self, message: StoredMessage, show: Show) -> bool:
        """Show the stored answer to `message` again (None when nothing was stored for it: `show` may post a
        note or nothing) and count it delivered once `show` returns. A failing `show` raises and leaves the
        message pending. False if there was nothing left to deliver (someone else did it meanwhile)."""
        conversation = await self._store.get_conversation(message.conversation_id)
        if conversation is None:
            return False
        async with self._locks.hold(conversation.key):
            conversation, history, warnings = await self._store.turn_state(message.conversation_id)
            current = next((m for m in history if m.id == message.id), None)
            if conversation is None or current is None or current.delivered:
                return False
            answer = stored_answer(conversation, history, warnings, current.seq, self._notices)
            if isinstance(answer, Reply) and self._guard.support_resources_enabled:
                # The support resources may have been in the answer that never arrived: with a conversation
                # marked at risk, they come again (shown twice is the safe side of shown never).
                marks = await self._store.risk_marks(
                    conversation_id=conversation.id,
                    platform=conversation.key.platform,
                    author_ids=[],
                    since=self._clock.now(),
                )
                if marks.conversation_marked:
                    answer = replace(answer, support=self._guard.support_message)
            if await show(answer) is False:
                return False
            await self._store.mark_delivered(conversation_id=conversation.id, trigger_seq=current.seq)
        return True
