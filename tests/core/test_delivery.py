"""Delivery: an answer counts once a platform accepted it. The stored answer is rebuilt from stored state (no
second model call) and redelivered under the thread's lease at most once."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from core.delivery import Deliveries, stored_answer
from core.domain import Conversation, EndReason, NewMessage, Role, StoredMessage, ThreadKey
from core.outcomes import Ended, Outcome, Reply, WarningGiven
from core.settings import Settings
from core.thread_locks import ThreadLocks
from tests.support.stores import (  # noqa: F401 - fixtures, by name
    ManualClock,
    OpenableStore,
    clock_fixture,
    sqlite_store_fixture,
)

KEY = ThreadKey("discord", "C1", "T1")


def user(conversation_id: int, text: str, platform_id: str) -> NewMessage:
    return NewMessage(
        conversation_id=conversation_id,
        role=Role.USER,
        blocks=({"type": "text", "text": text},),
        author_id="U1",
        platform_message_id=platform_id,
        answered=False,
    )


def assistant(conversation_id: int, text: str, **extra: Any) -> NewMessage:
    blocks: tuple[dict[str, Any], ...] = ({"type": "text", "text": text},) if text else ()
    if extra.get("tool"):
        blocks += ({"type": "tool_use", "id": "t1", "name": extra["tool"], "input": {}},)
    return NewMessage(conversation_id=conversation_id, role=Role.ASSISTANT, blocks=blocks)


async def answered_turn(
    store: OpenableStore, conversation: Conversation, text: str, reply: str
) -> tuple[StoredMessage, list[StoredMessage]]:
    message = await store.add_message(user(conversation.id, text, f"p-{text}"))
    assert message is not None
    stored = await store.complete_turn(
        conversation_id=conversation.id,
        replies=[assistant(conversation.id, reply)],
        after_seq=message.seq,
        answered_up_to_seq=message.seq,
    )
    return message, stored


def deliveries(store: OpenableStore, clock: ManualClock, settings: Settings) -> Deliveries:
    return Deliveries(
        store=store, clock=clock, locks=ThreadLocks(None, ttl_seconds=15, wait_seconds=5), settings=settings
    )


async def test_the_stored_answer_is_rebuilt_as_the_outcome_it_was(
    sqlite_store: OpenableStore, clock: ManualClock, settings: Settings
) -> None:
    store = sqlite_store
    conversation = await store.get_or_create_conversation(key=KEY, owner_id="U1")
    first, _ = await answered_turn(store, conversation, "hello", "Hi there.")
    second, stored = await answered_turn(store, conversation, "go on", "Stop doing that, please.")
    await store.add_warning(conversation_id=conversation.id, after_seq=stored[0].seq, behavior="insults")
    conversation, history, warnings = await store.turn_state(conversation.id)
    assert conversation is not None
    notices = settings.notices

    assert stored_answer(conversation, history, warnings, first.seq, notices) == Reply(conversation, "Hi there.")
    assert stored_answer(conversation, history, warnings, second.seq, notices) == WarningGiven(
        conversation, "Stop doing that, please.", "insults"
    )
    ended = await store.end_conversation(
        conversation_id=conversation.id, reason=EndReason.PERSISTENT_ABUSE, explanation="Enough.", actor="model"
    )
    # Ended since by something other than this answer: whoever ended it showed the notice; nothing to repeat.
    assert stored_answer(ended, history, [], second.seq, notices) is None
    # An answer that ended it is shown again as the ending it was.
    [*before, reply] = [m for m in history if m.seq <= stored[0].seq]
    ending = replace(
        reply,
        blocks=(*reply.blocks, {"type": "tool_use", "id": "t1", "name": "end_conversation", "input": {}}),
    )
    outcome = stored_answer(ended, [*before, ending], [], second.seq, notices)
    assert isinstance(outcome, Ended) and outcome.notice.explanation == "Enough."
    # Nothing stored after a message (the model was unavailable): nothing to show again.
    third = await store.add_message(user(conversation.id, "and?", "p-and"))
    assert third is not None
    assert stored_answer(conversation, await store.messages(conversation.id), [], third.seq, notices) is None


async def test_redelivery_shows_once_and_counts_only_when_shown(
    sqlite_store: OpenableStore, clock: ManualClock, settings: Settings
) -> None:
    store = sqlite_store
    conversation = await store.get_or_create_conversation(key=KEY, owner_id="U1")
    message, _ = await answered_turn(store, conversation, "hello", "Hi there.")
    ledger = deliveries(store, clock, settings)
    clock.advance(60)
    [pending] = await ledger.undelivered(platform="discord", older_than_seconds=30)
    assert pending.id == message.id
    assert await ledger.undelivered(platform="slack", older_than_seconds=30) == []
    assert await ledger.undelivered(platform="discord", older_than_seconds=120) == []

    shown: list[Outcome | None] = []

    async def failing(outcome: Outcome | None) -> None:
        raise ConnectionError("the platform is down")

    async def show(outcome: Outcome | None) -> None:
        shown.append(outcome)

    with pytest.raises(ConnectionError):
        await ledger.redeliver(pending, failing)
    assert len(await ledger.undelivered(platform="discord", older_than_seconds=30)) == 1
    assert await ledger.redeliver(pending, show)
    assert not await ledger.redeliver(pending, show)  # a second sweep finds nothing left to deliver
    assert shown == [Reply(conversation, "Hi there.")]
    assert await ledger.undelivered(platform="discord", older_than_seconds=30) == []


async def test_an_answer_is_due_only_once_its_first_attempt_had_its_time(
    sqlite_store: OpenableStore, clock: ManualClock, settings: Settings
) -> None:
    store = sqlite_store
    conversation = await store.get_or_create_conversation(key=KEY, owner_id="U1")
    message = await store.add_message(user(conversation.id, "slow one", "p-slow"))
    assert message is not None
    clock.advance(120)  # the model took two minutes; the answer is stored just now, and being posted
    await store.complete_turn(
        conversation_id=conversation.id,
        replies=[assistant(conversation.id, "Finally.")],
        after_seq=message.seq,
        answered_up_to_seq=message.seq,
    )
    ledger = deliveries(store, clock, settings)
    assert await ledger.undelivered(platform="discord", older_than_seconds=30) == []
    clock.advance(31)
    assert len(await ledger.undelivered(platform="discord", older_than_seconds=30)) == 1
