"""The recovery loop's sweep of undelivered answers: backoff per message, then one plain note."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from bots.recovery import RecoveryLoop, Undeliverable
from core.delivery import Deliveries
from core.domain import NewMessage, Role, StoredMessage, ThreadKey
from core.service import ConversationService
from core.settings import Settings
from core.thread_locks import ThreadLocks
from core.work_tracker import WorkTracker
from tests.support.stores import (  # noqa: F401 - fixtures, by name
    ManualClock,
    OpenableStore,
    clock_fixture,
    sqlite_store_fixture,
)


async def answered_but_undelivered(store: OpenableStore) -> StoredMessage:
    """A Discord message whose answer is stored, and not yet delivered."""
    conversation = await store.get_or_create_conversation(key=ThreadKey("discord", "C1", "T1"), owner_id="U1")
    message = await store.add_message(
        NewMessage(
            conversation_id=conversation.id, role=Role.USER, blocks=({"type": "text", "text": "hi"},), answered=False
        )
    )
    assert message is not None
    reply = NewMessage(conversation_id=conversation.id, role=Role.ASSISTANT, blocks=({"type": "text", "text": "Hi"},))
    await store.complete_turn(
        conversation_id=conversation.id, replies=[reply], after_seq=message.seq, answered_up_to_seq=message.seq
    )
    return message


async def nothing(message: StoredMessage) -> None:
    raise AssertionError("no unanswered message here")


def delivery_loop(ledger: Deliveries, **hooks: Any) -> RecoveryLoop:
    """The loop with only its delivery sweep at work (nothing is unanswered)."""
    return RecoveryLoop(
        service=cast("ConversationService", NoUnanswered()),
        work=WorkTracker(),
        platform="discord",
        deliver=nothing,
        interval_seconds=1.0,
        age_seconds=30,
        deliveries=ledger,
        **hooks,
    )


class NoUnanswered:
    """The service as the loop's other sweep sees it, with nothing unanswered: only delivery runs."""

    async def unanswered(self, *, platform: str, older_than_seconds: float) -> list[StoredMessage]:
        return []


async def test_the_recovery_loop_backs_off_then_gives_up_plainly(
    sqlite_store: OpenableStore, clock: ManualClock, settings: Settings
) -> None:
    store = sqlite_store
    await answered_but_undelivered(store)
    clock.advance(60)
    locks = ThreadLocks(None, ttl_seconds=15, wait_seconds=5)
    ledger = Deliveries(store=store, clock=clock, locks=locks, settings=settings)
    now = [0.0]
    attempts: list[str] = []

    async def redeliver(message: StoredMessage) -> None:
        attempts.append(f"answer@{now[0]:g}")
        raise ConnectionError("still down")

    async def give_up(message: StoredMessage) -> None:
        attempts.append(f"note@{now[0]:g}")
        await ledger.redeliver(message, lambda _: asyncio.sleep(0))

    loop = delivery_loop(ledger, redeliver=redeliver, give_up=give_up, delivery_attempts=3, clock=lambda: now[0])
    for tick in range(12):
        now[0] = float(tick)
        await loop.sweep()
        await asyncio.sleep(0.05)  # the attempt runs as its own task
    # Backoff doubles from the interval (1 s, 2 s, 4 s); after three failures, one plain note, then nothing.
    assert attempts == ["answer@0", "answer@1", "answer@3", "note@7"]
    assert await ledger.undelivered(platform="discord", older_than_seconds=30) == []


class Unanswered:
    """The service with one message nobody answered (a thread the bot may not post in, say)."""

    def __init__(self, message: StoredMessage) -> None:
        self.message = message

    async def unanswered(self, *, platform: str, older_than_seconds: float) -> list[StoredMessage]:
        return [self.message]


async def test_an_unanswered_message_that_cannot_be_answered_backs_off(
    sqlite_store: OpenableStore, clock: ManualClock, settings: Settings
) -> None:
    conversation = await sqlite_store.get_or_create_conversation(key=ThreadKey("discord", "C1", "T1"), owner_id="U1")
    message = await sqlite_store.add_message(
        NewMessage(conversation_id=conversation.id, role=Role.USER, blocks=({"type": "text", "text": "hi"},))
    )
    assert message is not None
    now = [0.0]
    attempts: list[float] = []

    async def deliver(message: StoredMessage) -> None:
        attempts.append(now[0])
        raise PermissionError("cannot post in this thread")

    loop = RecoveryLoop(
        service=cast("ConversationService", Unanswered(message)),
        work=WorkTracker(),
        platform="discord",
        deliver=deliver,
        interval_seconds=1.0,
        age_seconds=30,
        clock=lambda: now[0],
    )
    for tick in range(10):
        now[0] = float(tick)
        await loop.sweep()
        await asyncio.sleep(0.05)
    assert attempts == [0.0, 1.0, 3.0, 7.0]  # not every sweep


async def test_an_answer_the_platform_will_never_take_is_settled(
    sqlite_store: OpenableStore, clock: ManualClock, settings: Settings
) -> None:
    store = sqlite_store
    message = await answered_but_undelivered(store)
    clock.advance(60)
    ledger = Deliveries(
        store=store, clock=clock, locks=ThreadLocks(None, ttl_seconds=15, wait_seconds=5), settings=settings
    )
    tries: list[int] = []

    async def redeliver(message: StoredMessage) -> None:
        tries.append(message.id)
        raise Undeliverable("channel gone, DMs closed")

    loop = delivery_loop(ledger, redeliver=redeliver, give_up=redeliver, clock=lambda: 0.0)
    for _ in range(3):
        await loop.sweep()
        await asyncio.sleep(0.05)
    assert tries == [message.id]
    assert await ledger.undelivered(platform="discord", older_than_seconds=30) == []
