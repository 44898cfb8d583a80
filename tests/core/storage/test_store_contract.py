"""The storage contract: every Store method, run against SQLite and PostgreSQL alike.

Each test runs once per backend (`[sqlite]`, `[postgres]`) on a fresh database; `clock` stamps every row.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from core.domain import (
    AuditEvent,
    AuditKind,
    Conversation,
    Draft,
    EndReason,
    NewMessage,
    Role,
    Status,
    ThreadKey,
    VoteCounts,
)
from core.storage import rows
from core.storage.errors import StoreUnavailableError
from core.storage.factory import open_store
from core.storage.postgres_store import MIGRATIONS, PostgresStore
from core.storage.sqlite_store import SqliteStore
from tests.support.stores import (
    BACKENDS,
    POSTGRES_URL,
    START,
    ManualClock,
    OpenableStore,
    StoreOpener,
    clock_fixture,  # noqa: F401
    fresh_postgres_schema,
    opener_for,
    postgres_store_fixture,  # noqa: F401
    store_fixture,  # noqa: F401
    store_opener_fixture,  # noqa: F401
)

SLACK = "slack"


def key(thread: str = "t1", *, place: str = "C1", platform: str = SLACK) -> ThreadKey:
    return ThreadKey(platform, place, thread)


def text(conversation_id: int, body: str, **fields: Any) -> NewMessage:
    """A user message as the service stores it when it arrives: unanswered until its reply is stored."""
    message = NewMessage(
        conversation_id=conversation_id,
        role=Role.USER,
        blocks=({"type": "text", "text": body},),
        author_id="U1",
        author_name="Ada",
        answered=False,
    )
    return replace(message, **fields)


def reply(conversation_id: int, body: str, **fields: Any) -> NewMessage:
    message = NewMessage(conversation_id=conversation_id, role=Role.ASSISTANT, blocks=({"type": "text", "text": body},))
    return replace(message, **fields)


async def new_conversation(store: OpenableStore, thread: str = "t1", owner: str = "U1", **where: str) -> Conversation:
    return await store.get_or_create_conversation(key=key(thread, **where), owner_id=owner)


# -- conversations ---------------------------------------------------------------------------------------


async def test_get_or_create_is_idempotent_and_unique_per_key(store: OpenableStore, clock: ManualClock) -> None:
    first = await store.get_or_create_conversation(key=key("t1"), owner_id="U1")
    assert first.key == key("t1")
    assert first.owner_id == "U1"
    assert first.status is Status.ACTIVE
    assert first.created_at == clock.now()
    assert first.branched_from is None and first.ended_at is None

    clock.advance(60)
    again = await store.get_or_create_conversation(key=key("t1"), owner_id="U2")
    assert again == first  # the first owner and creation time stay

    others = [
        await store.get_or_create_conversation(key=key("t2"), owner_id="U1"),
        await store.get_or_create_conversation(key=key("t1", place="C2"), owner_id="U1"),
        await store.get_or_create_conversation(key=key("t1", platform="discord"), owner_id="U1"),
    ]
    assert len({first.id, *(c.id for c in others)}) == 4

    assert await store.find_conversation(key("t1")) == first
    assert await store.get_conversation(first.id) == first
    assert await store.find_conversation(key("missing")) is None
    assert await store.get_conversation(first.id + 1000) is None


async def test_get_or_create_concurrently_yields_one_conversation(store: OpenableStore) -> None:
    created = await asyncio.gather(*(new_conversation(store, "race", owner=f"U{i}") for i in range(10)))
    assert len({c.id for c in created}) == 1


async def test_latest_conversation_is_the_newest_in_a_place(store: OpenableStore) -> None:
    assert await store.latest_conversation(platform=SLACK, place="C1") is None
    await new_conversation(store, "a")
    newest = await new_conversation(store, "b")
    await new_conversation(store, "c", place="C2")
    await new_conversation(store, "d", platform="discord")
    assert await store.latest_conversation(platform=SLACK, place="C1") == newest
    assert await store.latest_conversation(platform=SLACK, place="C3") is None


async def test_end_and_reopen(store: OpenableStore, clock: ManualClock) -> None:
    conversation = await new_conversation(store)
    clock.advance(30)
    ended = await store.end_conversation(
        conversation_id=conversation.id,
        reason=EndReason.PERSISTENT_ABUSE,
        explanation="kept insulting after two warnings",
        actor="model",
    )
    assert ended.is_ended
    assert ended.ended_reason is EndReason.PERSISTENT_ABUSE
    assert ended.ended_explanation == "kept insulting after two warnings"
    assert ended.ended_at == clock.now()
    assert ended.ended_by == "model"
    assert ended.created_at == conversation.created_at
    assert await store.get_conversation(conversation.id) == ended

    reopened = await store.reopen_conversation(conversation_id=conversation.id)
    assert reopened == conversation  # every ending field cleared again
    assert await store.find_conversation(conversation.key) == conversation

    with pytest.raises(KeyError):
        await store.end_conversation(
            conversation_id=conversation.id + 1000, reason=EndReason.MODERATOR, explanation="", actor="x"
        )
    with pytest.raises(KeyError):
        await store.reopen_conversation(conversation_id=conversation.id + 1000)


async def test_recent_endings_newest_first(store: OpenableStore, clock: ManualClock) -> None:
    conversations = [await new_conversation(store, f"t{i}") for i in range(4)]
    for conversation in conversations[:3]:
        clock.advance(10)
        await store.end_conversation(
            conversation_id=conversation.id, reason=EndReason.USER_REQUESTED, explanation="bye", actor="user:U1"
        )
    await store.reopen_conversation(conversation_id=conversations[0].id)

    assert [c.id for c in await store.recent_endings(limit=10)] == [conversations[2].id, conversations[1].id]
    assert [c.id for c in await store.recent_endings(limit=1)] == [conversations[2].id]
    assert all(c.is_ended for c in await store.recent_endings(limit=10))


# -- messages --------------------------------------------------------------------------------------------


async def test_add_message_assigns_seq_per_conversation(store: OpenableStore, clock: ManualClock) -> None:
    conversation = await new_conversation(store)
    other = await new_conversation(store, "t2")

    first = await store.add_message(text(conversation.id, "hello", platform_message_id="m1"))
    clock.advance(1)
    second = await store.add_message(reply(conversation.id, "hi there"))
    elsewhere = await store.add_message(text(other.id, "another thread"))
    assert first is not None and second is not None and elsewhere is not None

    assert (first.seq, second.seq, elsewhere.seq) == (1, 2, 1)
    assert first.conversation_id == conversation.id
    assert first.role is Role.USER and second.role is Role.ASSISTANT
    assert (first.author_id, first.author_name, first.platform_message_id) == ("U1", "Ada", "m1")
    assert (second.author_id, second.author_name, second.platform_message_id) == (None, None, None)
    assert first.answered is False and second.answered is True
    assert first.excluded is False
    assert first.created_at == clock.now() - timedelta(seconds=1) and second.created_at == clock.now()
    assert first.text == "hello"

    assert await store.messages(conversation.id) == [first, second]
    assert await store.messages(conversation.id + 1000) == []
    assert await store.find_by_platform_id(platform=SLACK, platform_message_id="m1") == first
    assert await store.find_by_platform_id(platform="discord", platform_message_id="m1") is None
    assert await store.find_by_platform_id(platform=SLACK, platform_message_id="m2") is None


async def test_duplicate_platform_message_id_is_none(store: OpenableStore) -> None:
    conversation = await new_conversation(store)
    other = await new_conversation(store, "t2")
    on_discord = await new_conversation(store, "t3", platform="discord")

    stored = await store.add_message(text(conversation.id, "hello", platform_message_id="m1"))
    assert stored is not None
    assert await store.add_message(text(conversation.id, "hello again", platform_message_id="m1")) is None
    assert await store.add_message(text(other.id, "same post, other thread", platform_message_id="m1")) is None
    # Platform message ids are unique per platform only.
    assert await store.add_message(text(on_discord.id, "hello", platform_message_id="m1")) is not None
    # Messages without a platform id never collide.
    assert await store.add_message(reply(conversation.id, "a")) is not None
    assert await store.add_message(reply(conversation.id, "b")) is not None

    assert [m.seq for m in await store.messages(conversation.id)] == [1, 2, 3]
    assert await store.messages(other.id) == []


async def test_blocks_come_back_byte_identical(store: OpenableStore) -> None:
    conversation = await new_conversation(store)
    blocks = (
        {"type": "text", "text": 'héllo 🌍 "quoted" \\ back\nslash\t<tag> & \u2028', "citations": None},
        {
            "type": "tool_use",
            "id": "toolu_01",
            "name": "end_conversation",
            # Keys deliberately out of order: a JSONB column would sort them.
            "input": {"zeta": 1, "alpha": [1.5, 2, -0.0, 1e-7, {"y": True, "b": None}], "mid": "x" * 3},
        },
        {"z_last_key_first": {}, "type": "thinking", "thinking": "", "signature": "sig=="},
    )
    stored = await store.add_message(NewMessage(conversation_id=conversation.id, role=Role.ASSISTANT, blocks=blocks))
    assert stored is not None
    (loaded,) = await store.messages(conversation.id)
    for returned in (stored.blocks, loaded.blocks):
        assert rows.dump_blocks(returned) == rows.dump_blocks(blocks)
        assert [list(b) for b in returned] == [list(b) for b in blocks]
        assert returned == blocks


async def test_concurrent_add_message_never_collides(store: OpenableStore) -> None:
    conversation = await new_conversation(store)
    stored = await asyncio.gather(*(store.add_message(text(conversation.id, f"m{i}")) for i in range(50)))
    assert sorted(m.seq for m in stored if m is not None) == list(range(1, 51))
    history = await store.messages(conversation.id)
    assert [m.seq for m in history] == list(range(1, 51))
    assert {m.text for m in history} == {f"m{i}" for i in range(50)}


async def test_concurrent_add_message_from_two_instances(store: OpenableStore, store_opener: StoreOpener) -> None:
    second = await store_opener.open()
    conversation = await new_conversation(store)
    stored = await asyncio.gather(
        *(s.add_message(text(conversation.id, f"m{i}")) for i in range(20) for s in (store, second))
    )
    assert sorted(m.seq for m in stored if m is not None) == list(range(1, 41))
    # The same post delivered to both instances at once is stored exactly once.
    dupes = await asyncio.gather(
        *(s.add_message(text(conversation.id, "x", platform_message_id="p")) for s in (store, second))
    )
    assert sum(d is not None for d in dupes) == 1


async def test_complete_turn_stores_replies_and_marks_answered(store: OpenableStore) -> None:
    conversation = await new_conversation(store)
    await store.add_message(text(conversation.id, "one"))
    await store.add_message(text(conversation.id, "two"))
    # Arrives while the model is still answering one and two: the turn must not mark it answered.
    await store.add_message(text(conversation.id, "three"))

    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "record_warning", "input": {"behavior": "insults"}}
    tool_result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "recorded"}
    turn = [
        NewMessage(conversation_id=conversation.id, role=Role.ASSISTANT, blocks=(tool_use,)),
        NewMessage(conversation_id=conversation.id, role=Role.USER, blocks=(tool_result,)),
        reply(conversation.id, "Please stop.", platform_message_id="bot-1"),
    ]
    stored = await store.complete_turn(conversation_id=conversation.id, replies=turn, after_seq=2, answered_up_to_seq=2)

    # The reply goes right after what the model saw; "three" moves after it, still unanswered.
    assert [m.seq for m in stored] == [3, 4, 5]
    assert [m.blocks for m in stored] == [t.blocks for t in turn]
    assert stored[2].platform_message_id == "bot-1"
    history = await store.messages(conversation.id)
    assert history[2:5] == stored
    assert [(m.seq, m.text, m.answered) for m in (*history[:2], history[5])] == [
        (1, "one", True),
        (2, "two", True),
        (6, "three", False),
    ]


async def test_complete_turn_is_atomic(store: OpenableStore) -> None:
    conversation = await new_conversation(store)
    await store.add_message(text(conversation.id, "one", platform_message_id="m1"))
    before = await store.messages(conversation.id)
    # The second reply reuses a stored platform id, so the turn cannot be stored: nothing of it may remain.
    turn = [reply(conversation.id, "partial"), reply(conversation.id, "dupe", platform_message_id="m1")]
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own driver error
        await store.complete_turn(conversation_id=conversation.id, replies=turn, after_seq=1, answered_up_to_seq=1)
    assert await store.messages(conversation.id) == before
    assert before[0].answered is False


async def test_drafts_of_unanswered_messages_are_orphans_until_forgotten(
    store: OpenableStore, store_opener: StoreOpener
) -> None:
    conversation = await new_conversation(store)
    other = await new_conversation(store, "t2")
    first = await store.add_message(text(conversation.id, "one"))
    second = await store.add_message(text(conversation.id, "two"))
    elsewhere = await store.add_message(text(other.id, "three"))
    assert first and second and elsewhere
    assert await store.orphan_drafts(conversation.id) == []
    await store.remember_draft(Draft(conversation.id, first.id, "C1", "100.1"))
    await store.remember_draft(Draft(conversation.id, second.id, "C1", "100.2"))
    await store.remember_draft(Draft(other.id, elsewhere.id, "C1", "100.3"))
    # Remembered again for a later message (a draft carried over): one row, now for that message.
    await store.remember_draft(Draft(conversation.id, second.id, "C1", "100.1"))
    # Another instance (a restarted process) sees them.
    again = await store_opener.open()
    found = await again.orphan_drafts(conversation.id)
    assert sorted(found, key=lambda d: d.ts) == [
        Draft(conversation.id, second.id, "C1", "100.1"),
        Draft(conversation.id, second.id, "C1", "100.2"),
    ]
    # Once their message is answered they are nobody's leftovers (a finished reply forgets its own).
    await store.mark_answered(conversation_id=conversation.id, up_to_seq=second.seq)
    assert await store.orphan_drafts(conversation.id) == []
    assert await store.orphan_drafts(other.id) == [Draft(other.id, elsewhere.id, "C1", "100.3")]
    await store.forget_draft(conversation_id=other.id, ts="100.3")
    await store.forget_draft(conversation_id=other.id, ts="100.3")  # twice is fine
    assert await store.orphan_drafts(other.id) == []


async def test_mark_answered_and_exclude_message(store: OpenableStore) -> None:
    conversation = await new_conversation(store)
    other = await new_conversation(store, "t2")
    for body in ("a", "b", "c"):
        await store.add_message(text(conversation.id, body))
    await store.add_message(text(other.id, "elsewhere"))

    await store.mark_answered(conversation_id=conversation.id, up_to_seq=2)
    assert [m.answered for m in await store.messages(conversation.id)] == [True, True, False]
    assert [m.answered for m in await store.messages(other.id)] == [False]

    target = (await store.messages(conversation.id))[1]
    await store.exclude_message(target.id)
    assert [m.excluded for m in await store.messages(conversation.id)] == [False, True, False]
    assert [m.excluded for m in await store.messages(other.id)] == [False]


async def test_unanswered_lists_old_user_messages_of_active_conversations(
    store: OpenableStore, clock: ManualClock
) -> None:
    active = await new_conversation(store, "active")
    ended = await new_conversation(store, "ended")
    old = await store.add_message(text(active.id, "waiting"))
    await store.add_message(text(active.id, "answered already", answered=True))
    await store.add_message(reply(active.id, "assistant", answered=False))
    await store.add_message(text(ended.id, "too late"))
    await store.end_conversation(conversation_id=ended.id, reason=EndReason.MODERATOR, explanation="", actor="m")
    cutoff = clock.advance(120)
    fresh = await store.add_message(text(active.id, "just arrived"))
    assert old is not None and fresh is not None

    assert await store.unanswered(older_than=cutoff) == [old]  # strictly older: `fresh` was stored at cutoff
    assert await store.unanswered(older_than=cutoff + timedelta(seconds=1)) == [old, fresh]
    assert await store.unanswered(older_than=cutoff - timedelta(seconds=121)) == []


async def test_an_answer_is_pending_until_delivered(store: OpenableStore, clock: ManualClock) -> None:
    """A user message's answer counts once the platform accepted it: until `mark_delivered`, it is listed."""
    start = clock.now()
    chat = await new_conversation(store, "chat", platform="discord")
    other = await new_conversation(store, "elsewhere")  # another platform: never listed for discord
    first = await store.add_message(text(chat.id, "one", platform_message_id="d1"))
    second = await store.add_message(text(chat.id, "two", platform_message_id="d2"))
    await store.add_message(text(other.id, "slack", platform_message_id="s1"))
    assert first is not None and second is not None and not first.delivered
    await store.add_message(reply(chat.id, "an assistant turn has nothing to deliver"))
    cutoff = clock.advance(60)

    # Not answered yet: recovery's other sweep (`unanswered`) owns it.
    assert await store.undelivered(platform="discord", older_than=cutoff, newer_than=start) == []
    await store.complete_turn(
        conversation_id=chat.id, replies=[reply(chat.id, "answer")], after_seq=2, answered_up_to_seq=2
    )
    await store.mark_answered(conversation_id=other.id, up_to_seq=1)
    pending = await store.undelivered(platform="discord", older_than=cutoff, newer_than=start)
    assert [(m.id, m.answered, m.delivered) for m in pending] == [(first.id, True, False), (second.id, True, False)]
    assert await store.undelivered(platform="discord", older_than=start, newer_than=start) == []
    assert await store.undelivered(platform="discord", older_than=cutoff, newer_than=cutoff) == []

    # Shown for the first message, the answer covers every message answered before its reply (together).
    await store.mark_delivered(conversation_id=chat.id, trigger_seq=1)
    assert await store.undelivered(platform="discord", older_than=cutoff, newer_than=start) == []
    assert all(m.delivered for m in await store.messages(chat.id))

    # A later answer with nothing stored (the model was unavailable): only up to its message. Ended
    # conversations still list theirs: the ending's notice is an answer too.
    third = await store.add_message(text(chat.id, "three", platform_message_id="d3"))
    fourth = await store.add_message(text(chat.id, "four", platform_message_id="d4"))
    assert third is not None and fourth is not None
    await store.mark_answered(conversation_id=chat.id, up_to_seq=fourth.seq)
    await store.end_conversation(conversation_id=chat.id, reason=EndReason.MODERATOR, explanation="", actor="m")
    later = clock.advance(60)
    await store.mark_delivered(conversation_id=chat.id, trigger_seq=third.seq)
    assert [m.id for m in await store.undelivered(platform="discord", older_than=later, newer_than=start)] == [
        fourth.id
    ]


async def test_a_branch_copies_history_as_delivered(store: OpenableStore, clock: ManualClock) -> None:
    source = await new_conversation(store, "source", platform="discord")
    await store.add_message(text(source.id, "one", platform_message_id="d1"))
    await store.complete_turn(
        conversation_id=source.id, replies=[reply(source.id, "answer")], after_seq=1, answered_up_to_seq=1
    )
    await store.add_message(text(source.id, "two", platform_message_id="d2"))
    branch = await store.create_branch(
        key=key("branch", platform="discord"), owner_id="U1", source=source, branch_point_seq=3
    )
    later = clock.advance(60)
    assert await store.undelivered(platform="discord", older_than=later, newer_than=later - timedelta(days=1)) == [
        m for m in await store.messages(source.id) if m.seq == 1
    ]
    assert all(m.delivered for m in await store.messages(branch.id))


async def test_active_threads_name_the_last_stored_platform_message(store: OpenableStore, clock: ManualClock) -> None:
    start = clock.now()
    quiet = await new_conversation(store, "quiet", platform="discord")
    await store.add_message(text(quiet.id, "old", platform_message_id="100"))
    clock.advance(3600)
    since = clock.now()
    busy = await new_conversation(store, "busy", platform="discord")
    await store.add_message(text(busy.id, "a", platform_message_id="200"))
    await store.add_message(text(busy.id, "b", platform_message_id="300"))
    await store.add_message(reply(busy.id, "reply"))
    fresh = await new_conversation(store, "fresh", platform="discord")  # no message yet
    ended = await new_conversation(store, "ended", platform="discord")
    await store.end_conversation(conversation_id=ended.id, reason=EndReason.MODERATOR, explanation="", actor="m")
    await new_conversation(store, "slack")

    found = await store.active_threads(platform="discord", since=since, limit=10)
    assert [(t.conversation.id, t.last_platform_message_id) for t in found] == [(fresh.id, None), (busy.id, "300")]
    assert len(await store.active_threads(platform="discord", since=since, limit=1)) == 1
    assert {t.conversation.id for t in await store.active_threads(platform="discord", since=start, limit=10)} == {
        quiet.id,
        busy.id,
        fresh.id,
    }


# -- branches --------------------------------------------------------------------------------------------


async def test_create_branch_copies_history_before_the_point(store: OpenableStore, clock: ManualClock) -> None:
    source = await new_conversation(store, "source", owner="U1")
    for i in range(1, 6):
        clock.advance(1)
        role_message = text if i % 2 else reply
        await store.add_message(role_message(source.id, f"msg {i}", platform_message_id=f"p{i}"))
        if i in (2, 4):
            await store.add_warning(conversation_id=source.id, after_seq=i, behavior=f"warned after {i}")
    original = await store.messages(source.id)
    await store.exclude_message(original[2].id)
    original = await store.messages(source.id)
    original_warnings = await store.warnings(source.id)

    clock.advance(60)
    branch = await store.create_branch(key=key("edited"), owner_id="U9", source=source, branch_point_seq=4)
    assert branch.key == key("edited")
    assert branch.owner_id == "U9"
    assert branch.status is Status.ACTIVE
    assert branch.created_at == clock.now()
    assert (branch.branched_from, branch.branch_point_seq) == (source.id, 4)
    assert await store.find_conversation(key("edited")) == branch

    copies = await store.messages(branch.id)
    assert [m.seq for m in copies] == [1, 2, 3]
    for copy, kept in zip(copies, original[:3], strict=True):
        assert copy.id != kept.id
        assert copy.conversation_id == branch.id
        assert (copy.role, copy.blocks, copy.author_id, copy.author_name) == (
            kept.role,
            kept.blocks,
            kept.author_id,
            kept.author_name,
        )
        assert copy.created_at == kept.created_at
        assert copy.excluded == kept.excluded
        assert copy.platform_message_id is None
        assert copy.answered is True
    assert [w.behavior for w in await store.warnings(branch.id)] == ["warned after 2"]

    # The original is untouched, and its platform ids still find its own messages.
    assert await store.messages(source.id) == original
    assert await store.warnings(source.id) == original_warnings
    assert await store.get_conversation(source.id) == source
    found = await store.find_by_platform_id(platform=SLACK, platform_message_id="p1")
    assert found is not None and found.conversation_id == source.id

    # The branch continues after its copied history.
    continued = await store.add_message(text(branch.id, "edited text", platform_message_id="p4-edited"))
    assert continued is not None and continued.seq == 4


async def test_create_branch_at_the_start_copies_nothing(store: OpenableStore) -> None:
    source = await new_conversation(store, "source")
    await store.add_message(text(source.id, "first"))
    await store.add_warning(conversation_id=source.id, after_seq=0, behavior="before anything")
    branch = await store.create_branch(key=key("b"), owner_id="U1", source=source, branch_point_seq=1)
    assert await store.messages(branch.id) == []
    assert [w.behavior for w in await store.warnings(branch.id)] == ["before anything"]


# -- warnings and confirmations ----------------------------------------------------------------------------


async def test_warnings(store: OpenableStore, clock: ManualClock) -> None:
    conversation = await new_conversation(store)
    other = await new_conversation(store, "t2")
    first = await store.add_warning(conversation_id=conversation.id, after_seq=3, behavior="slurs")
    clock.advance(5)
    second = await store.add_warning(conversation_id=conversation.id, after_seq=7, behavior="threats")
    assert (first.conversation_id, first.after_seq, first.behavior) == (conversation.id, 3, "slurs")
    assert first.created_at == clock.now() - timedelta(seconds=5)
    assert second.created_at == clock.now()
    assert await store.warnings(conversation.id) == [first, second]
    assert await store.warnings(other.id) == []


async def test_turn_state_reads_conversation_messages_and_warnings_together(store: OpenableStore) -> None:
    conversation = await new_conversation(store)
    other = await new_conversation(store, "t2")
    await store.add_message(text(conversation.id, "one"))
    await store.add_message(text(other.id, "elsewhere"))
    await store.add_message(text(conversation.id, "two"))
    warning = await store.add_warning(conversation_id=conversation.id, after_seq=1, behavior="spam")
    found, history, warnings = await store.turn_state(conversation.id)
    assert found == await store.get_conversation(conversation.id)
    assert history == await store.messages(conversation.id) and [m.text for m in history] == ["one", "two"]
    assert warnings == [warning]
    assert await store.turn_state(other.id + 1000) == (None, [], [])


async def test_history_read_again_shows_every_change_to_its_rows(store: OpenableStore) -> None:
    # Histories are read on every turn and their parsed rows are reused: a row that changed must not be.
    conversation = await new_conversation(store)
    first = await store.add_message(text(conversation.id, "one"))
    await store.add_message(text(conversation.id, "two"))
    assert first is not None
    _, before, _ = await store.turn_state(conversation.id)
    assert [(m.text, m.answered, m.excluded) for m in before] == [("one", False, False), ("two", False, False)]
    await store.mark_answered(conversation_id=conversation.id, up_to_seq=1)
    await store.exclude_message(first.id)
    _, after, _ = await store.turn_state(conversation.id)
    assert [(m.answered, m.excluded) for m in after] == [(True, True), (False, False)]
    assert after[1] == before[1]
    await store.forget_user(platform=SLACK, user_id="U1")
    assert [m.text for m in await store.messages(conversation.id)] == [rows.REDACTED_TEXT] * 2
    _, forgotten, _ = await store.turn_state(conversation.id)
    assert [m.text for m in forgotten] == [rows.REDACTED_TEXT] * 2


def test_parsed_messages_start_again_when_full_and_keep_nothing_read_before_a_clear() -> None:
    blocks = '[{"type":"text","text":"hi"}]'
    parsed = rows.ParsedMessages(limit=2 * len(blocks))  # room for two rows' text
    row = {"id": 1, "conversation_id": 1, "seq": 1, "role": "user", "blocks": blocks}
    row |= {"author_id": None, "author_name": None, "platform_message_id": None, "created_at": None}
    row |= {"answered": 1, "excluded": 0, "delivered": 1}

    class Values(dict[str, Any]):
        def __iter__(self) -> Any:
            return iter(self.values())

    now = parsed.generation
    first = parsed.message(Values(row), read_in=now)
    assert parsed.message(Values(row), read_in=now) is first  # the same row version: parsed once
    assert parsed.message(Values(row, answered=0), read_in=now).answered is False
    parsed.message(Values(row, seq=2), read_in=now)  # a third row's text is past the budget: it starts again
    again = parsed.message(Values(row), read_in=now)
    assert again is not first and again == first
    # A read that began before a clear (forget, purge: it may hold rows from before them) keeps none.
    parsed.clear()
    stale = parsed.message(Values(row), read_in=now)
    assert parsed.message(Values(row), read_in=parsed.generation) is not stale


async def test_postgres_turn_state_survives_a_migration_that_adds_a_column(postgres_store: PostgresStore) -> None:
    """turn_state reads rows as records of the tables' types, which asyncpg caches per connection: a new column
    (the next release's migration, while this instance still runs) must not fail a turn."""
    conversation = await new_conversation(postgres_store)
    await postgres_store.add_message(text(conversation.id, "before"))
    _, before, _ = await postgres_store.turn_state(conversation.id)
    await postgres_store.pool.execute("ALTER TABLE messages ADD COLUMN a_later_column TEXT")
    _, after, _ = await postgres_store.turn_state(conversation.id)
    assert [m.text for m in after] == [m.text for m in before] == ["before"]


async def test_confirmations(store: OpenableStore, clock: ManualClock) -> None:
    conversation = await new_conversation(store)
    pending = await store.add_confirmation(conversation_id=conversation.id, owner_id="U1", explanation="End it?")
    assert (pending.conversation_id, pending.owner_id, pending.explanation) == (conversation.id, "U1", "End it?")
    assert pending.resolved is False
    assert pending.created_at == clock.now()
    assert await store.get_confirmation(pending.id) == pending
    assert await store.get_confirmation(pending.id + 1000) is None

    assert await store.resolve_confirmation(pending.id) is True
    assert await store.resolve_confirmation(pending.id) is False  # a second click loses
    resolved = await store.get_confirmation(pending.id)
    assert resolved is not None and resolved.resolved is True
    assert await store.resolve_confirmation(pending.id + 1000) is False

    # Two clicks at once: exactly one wins.
    racing = await store.add_confirmation(conversation_id=conversation.id, owner_id="U1", explanation="again")
    results = await asyncio.gather(*(store.resolve_confirmation(racing.id) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]


# -- audit -----------------------------------------------------------------------------------------------


async def test_audit_events_and_counts(store: OpenableStore, clock: ManualClock) -> None:
    start = clock.now()
    conversation = await new_conversation(store)
    detail = {"tool": "end_conversation", "nested": {"b": [1, 2], "a": None}, "ok": True}
    await store.add_event(AuditEvent(AuditKind.WARNING_RECORDED, conversation.id, "model", "insults", detail))
    clock.advance(10)
    await store.add_event(AuditEvent(AuditKind.ENDING_REFUSED, conversation.id, "model", "no warning yet"))
    clock.advance(10)
    await store.add_event(AuditEvent(AuditKind.WARNING_RECORDED, None, "moderator:M1"))
    # An explicit time wins over the clock.
    await store.add_event(
        AuditEvent(AuditKind.FEEDBACK, None, "user:U1", created_at=start - timedelta(hours=1), detail={"x": 1})
    )

    everything = await store.events(since=start - timedelta(days=1))
    assert [e.kind for e in everything] == [
        AuditKind.FEEDBACK,
        AuditKind.WARNING_RECORDED,
        AuditKind.ENDING_REFUSED,
        AuditKind.WARNING_RECORDED,
    ]
    assert all(e.id is not None for e in everything)
    feedback, warned, refused, by_moderator = everything
    assert feedback.created_at == start - timedelta(hours=1)
    assert (warned.conversation_id, warned.actor, warned.reason, warned.detail) == (
        conversation.id,
        "model",
        "insults",
        detail,
    )
    assert warned.created_at == start
    assert refused.detail == {} and refused.reason == "no warning yet"
    assert by_moderator.conversation_id is None and by_moderator.created_at == clock.now()

    # `since` is inclusive.
    assert [e.kind for e in await store.events(since=start + timedelta(seconds=10))] == [
        AuditKind.ENDING_REFUSED,
        AuditKind.WARNING_RECORDED,
    ]
    assert len(await store.events(since=start - timedelta(days=1), limit=2)) == 2
    assert await store.events(since=clock.now() + timedelta(seconds=1)) == []

    assert await store.count_events(since=start) == {"warning_recorded": 2, "ending_refused": 1}
    assert await store.count_events(since=start - timedelta(days=1)) == {
        "warning_recorded": 2,
        "ending_refused": 1,
        "feedback": 1,
    }
    assert await store.count_events(since=clock.now() + timedelta(seconds=1)) == {}


# -- deduplication, leases, usage ---------------------------------------------------------------------------


async def test_claim_event_once_across_instances(store: OpenableStore, store_opener: StoreOpener) -> None:
    assert await store.claim_event(source="slack", event_id="Ev1") is True
    assert await store.claim_event(source="slack", event_id="Ev1") is False
    assert await store.claim_event(source="discord", event_id="Ev1") is True

    second = await store_opener.open()  # another process on the same database
    assert await second.claim_event(source="slack", event_id="Ev1") is False
    assert await second.claim_event(source="slack", event_id="Ev2") is True
    assert await store.claim_event(source="slack", event_id="Ev2") is False

    # A redelivery reaching both instances at the same moment is handled once.
    results = await asyncio.gather(*(s.claim_event(source="slack", event_id="Ev3") for s in (store, second) * 3))
    assert sorted(results) == [False] * 5 + [True]


async def test_claim_event_forgets_after_a_day(store: OpenableStore, store_opener: StoreOpener) -> None:
    for event_id in ("old", "recent"):
        assert await store.claim_event(source="slack", event_id=event_id) is True
    # Age the entries behind the store's back: seen-event times are real time, not the injected clock.
    if store_opener.backend == "sqlite":
        await store_opener.execute("UPDATE seen_events SET seen_at = seen_at - 25 * 3600 WHERE event_id = 'old'")
        await store_opener.execute("UPDATE seen_events SET seen_at = seen_at - 23 * 3600 WHERE event_id = 'recent'")
    else:
        await store_opener.execute(
            "UPDATE seen_events SET seen_at = seen_at - interval '25 hours' WHERE event_id = 'old'"
        )
        await store_opener.execute(
            "UPDATE seen_events SET seen_at = seen_at - interval '23 hours' WHERE event_id = 'recent'"
        )
    assert await store.claim_event(source="slack", event_id="recent") is False
    assert await store.claim_event(source="slack", event_id="old") is True
    assert await store.claim_event(source="slack", event_id="old") is False


async def test_leases(store: OpenableStore, store_opener: StoreOpener) -> None:
    second = await store_opener.open()
    assert await store.acquire_lease(name="retention", holder="a", ttl_seconds=60) is True
    assert await second.acquire_lease(name="retention", holder="b", ttl_seconds=60) is False
    assert await store.acquire_lease(name="retention", holder="a", ttl_seconds=60) is True  # renew
    assert await second.acquire_lease(name="other", holder="b", ttl_seconds=60) is True

    await second.release_lease(name="retention", holder="b")  # not its lease: no effect
    assert await second.acquire_lease(name="retention", holder="b", ttl_seconds=60) is False
    await store.release_lease(name="retention", holder="a")
    assert await second.acquire_lease(name="retention", holder="b", ttl_seconds=60) is True
    assert await store.acquire_lease(name="retention", holder="a", ttl_seconds=60) is False

    assert await store.acquire_lease(name="short", holder="a", ttl_seconds=0.2) is True
    assert await second.acquire_lease(name="short", holder="b", ttl_seconds=60) is False
    await asyncio.sleep(0.3)
    assert await second.acquire_lease(name="short", holder="b", ttl_seconds=60) is True
    assert await store.acquire_lease(name="short", holder="a", ttl_seconds=60) is False


async def test_leases_ignore_the_injected_clock(store: OpenableStore, clock: ManualClock) -> None:
    """Leases use real time, so instances whose clocks disagree still agree on the holder."""
    assert await store.acquire_lease(name="job", holder="a", ttl_seconds=60) is True
    clock.advance(days=365)
    assert await store.acquire_lease(name="job", holder="b", ttl_seconds=60) is False


async def test_postgres_leases_use_the_database_clock(
    postgres_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance whose clock runs an hour behind must not hand out leases that are already expired."""
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600)
    assert await postgres_store.acquire_lease(name="job", holder="slow-clock", ttl_seconds=60) is True
    monkeypatch.setattr(time, "time", real_time)
    assert await postgres_store.acquire_lease(name="job", holder="other", ttl_seconds=60) is False


async def test_postgres_locking_writes_on_a_missing_conversation_raise_key_error(postgres_store: PostgresStore) -> None:
    """The routines that lock the conversation first (core/storage/pg_routines.py) say which one is missing."""
    conversation = await new_conversation(postgres_store)
    missing = conversation.id + 1000
    with pytest.raises(KeyError) as appended:
        await postgres_store.add_message(text(missing, "hello?"))
    with pytest.raises(KeyError) as completed:
        await postgres_store.complete_turn(
            conversation_id=conversation.id, replies=[reply(missing, "hi")], after_seq=0, answered_up_to_seq=0
        )
    with pytest.raises(KeyError) as ended:
        await postgres_store.end_if_current(
            conversation_id=missing, reason=EndReason.MODERATOR, explanation="", actor="x", after_message_id=0
        )
    assert appended.value.args == completed.value.args == ended.value.args == (missing,)
    assert await postgres_store.messages(conversation.id) == []  # the failed turn stored nothing


async def test_concurrent_appends_and_a_turn_keep_every_message_in_order(store: OpenableStore) -> None:
    """Appends racing each other and a turn's replies on one conversation: no seq lost, none twice."""
    conversation = await new_conversation(store)
    first = await store.add_message(text(conversation.id, "m0"))
    assert first is not None

    async def turn() -> None:
        await store.complete_turn(
            conversation_id=conversation.id,
            replies=[reply(conversation.id, "a1"), reply(conversation.id, "a2")],
            after_seq=first.seq,
            answered_up_to_seq=first.seq,
        )

    await asyncio.gather(*(store.add_message(text(conversation.id, f"m{i}")) for i in range(1, 9)), turn())
    history = await store.messages(conversation.id)
    assert [m.seq for m in history] == list(range(1, 12))
    bodies = [m.blocks[0]["text"] for m in history]
    assert bodies[0] == "m0" and bodies[1:3] == ["a1", "a2"]
    assert sorted(bodies[3:]) == [f"m{i}" for i in range(1, 9)]
    assert [m.answered for m in history[:3]] == [True, True, True]


async def test_concurrent_lease_has_one_winner(store: OpenableStore, store_opener: StoreOpener) -> None:
    second = await store_opener.open()
    results = await asyncio.gather(
        *(s.acquire_lease(name="leader", holder=f"h{i}", ttl_seconds=30) for i, s in enumerate((store, second) * 3))
    )
    assert sum(results) == 1


async def test_usage(store: OpenableStore) -> None:
    assert await store.usage(scope="global", day="2025-01-01") == 0
    assert await store.add_usage(scope="global", day="2025-01-01", tokens=100) == 100
    assert await store.add_usage(scope="global", day="2025-01-01", tokens=50) == 150
    assert await store.add_usage(scope="global", day="2025-01-02", tokens=7) == 7
    assert await store.add_usage(scope="user:U1", day="2025-01-01", tokens=1) == 1
    assert await store.usage(scope="global", day="2025-01-01") == 150
    assert await store.usage(scope="global", day="2025-01-02") == 7
    assert await store.usage(scope="user:U2", day="2025-01-01") == 0

    totals = await asyncio.gather(*(store.add_usage(scope="race", day="d", tokens=10) for _ in range(20)))
    assert sorted(totals) == list(range(10, 201, 10))
    assert await store.usage(scope="race", day="d") == 200


# -- privacy ---------------------------------------------------------------------------------------------


async def test_forget_user(store: OpenableStore) -> None:
    own = await new_conversation(store, "own", owner="U1")
    theirs = await new_conversation(store, "theirs", owner="U2")
    on_discord = await new_conversation(store, "dm", owner="U1", platform="discord")

    await store.add_message(text(own.id, "my secret", author_id="U1", platform_message_id="o1"))
    await store.add_message(reply(own.id, "answer"))
    await store.add_warning(conversation_id=own.id, after_seq=1, behavior="x")
    await store.add_confirmation(conversation_id=own.id, owner_id="U1", explanation="end?")
    await store.add_message(text(theirs.id, "U2 speaking", author_id="U2", author_name="Bob"))
    await store.add_message(text(theirs.id, "U1 butting in", author_id="U1", author_name="Ada"))
    tool_use = {"type": "tool_use", "id": "toolu_9", "name": "note", "input": {"text": "secret", "n": 3}}
    await store.add_message(
        NewMessage(conversation_id=theirs.id, role=Role.USER, blocks=(tool_use,), author_id="U1", author_name="Ada")
    )
    confirmation = await store.add_confirmation(conversation_id=theirs.id, owner_id="U1", explanation="end?")
    await store.add_message(text(on_discord.id, "discord me", author_id="U1"))
    for actor in ("user:U1", "moderator:U1", "user:U2", "model"):
        await store.add_event(AuditEvent(AuditKind.FEEDBACK, theirs.id, actor))

    await store.end_conversation(
        conversation_id=own.id, reason=EndReason.PERSISTENT_ABUSE, explanation="why", actor="model"
    )
    await store.add_usage(scope="user:slack:U1", day="2025-01-01", tokens=10)
    await store.add_usage(scope="user:slack:U2", day="2025-01-01", tokens=10)

    assert await store.forget_user(platform=SLACK, user_id="U1") == 3

    # Their own conversation stays as a tombstone: still ended, no text, nobody's.
    tombstone = await store.find_conversation(own.key)
    assert tombstone is not None and tombstone.is_ended and tombstone.ended_reason is EndReason.PERSISTENT_ABUSE
    assert (tombstone.owner_id, tombstone.ended_explanation) == (rows.FORGOTTEN, rows.REDACTED_TEXT)
    assert [(m.text, m.author_id) for m in await store.messages(own.id)] == [
        (rows.REDACTED_TEXT, None),
        (rows.REDACTED_TEXT, None),
    ]
    assert [w.behavior for w in await store.warnings(own.id)] == [rows.REDACTED_TEXT]
    assert await store.usage(scope="user:slack:U1", day="2025-01-01") == 0
    assert await store.usage(scope="user:slack:U2", day="2025-01-01") == 10

    kept, redacted, redacted_tool = await store.messages(theirs.id)
    assert (kept.text, kept.author_id, kept.author_name) == ("U2 speaking", "U2", "Bob")
    assert (redacted.text, redacted.author_id, redacted.author_name) == (rows.REDACTED_TEXT, None, None)
    assert redacted_tool.blocks == (
        {
            "type": "tool_use",
            "id": "toolu_9",
            "name": "note",
            "input": {"text": rows.REDACTED_TEXT, "n": rows.REDACTED_TEXT},
        },
    )
    cleared = await store.get_confirmation(confirmation.id)
    assert cleared is not None and cleared.owner_id == ""

    actors = [e.actor for e in await store.events(since=START - timedelta(days=1))]
    assert actors == ["user:forgotten", "user:forgotten", "user:U2", "model"]

    # The same id on another platform is another person.
    (untouched,) = await store.messages(on_discord.id)
    assert (untouched.text, untouched.author_id) == ("discord me", "U1")
    assert await store.get_conversation(on_discord.id) == on_discord

    assert await store.forget_user(platform=SLACK, user_id="U1") == 0


# -- votes on answers -------------------------------------------------------------------------------------


async def test_one_vote_per_person_and_answer_and_a_new_vote_replaces_it(
    store: OpenableStore, clock: ManualClock
) -> None:
    conversation = await new_conversation(store)
    other = await new_conversation(store, "t2")
    start = clock.now()

    async def vote(voter: str, helpful: bool, answer: str = "1.1", cid: int = conversation.id) -> bool:
        return await store.record_answer_vote(conversation_id=cid, answer_id=answer, voter_id=voter, helpful=helpful)

    assert await vote("U1", True)
    assert not await vote("U1", True)  # clicking again changes nothing
    assert await vote("U2", True)
    assert await vote("U1", True, answer="1.2")  # another answer, another vote
    assert await vote("U1", True, cid=other.id, answer="1.1")
    assert (await store.answer_votes(since=start)).helpful == 4
    assert await vote("U2", False)  # changed their mind: the vote is replaced, not added
    counts = await store.answer_votes(since=start)
    assert (counts.helpful, counts.not_helpful) == (3, 1)

    clock.advance(days=2)
    assert await store.answer_votes(since=clock.now()) == VoteCounts()
    assert await vote("U3", False)
    assert await store.answer_votes(since=clock.now()) == VoteCounts(helpful=0, not_helpful=1)


async def test_forgetting_a_user_removes_their_votes_on_that_platform(store: OpenableStore) -> None:
    slack = await new_conversation(store)
    discord = await new_conversation(store, platform="discord")
    for cid in (slack.id, discord.id):
        await store.record_answer_vote(conversation_id=cid, answer_id="a", voter_id="U9", helpful=True)
    await store.record_answer_vote(conversation_id=slack.id, answer_id="a", voter_id="U8", helpful=True)
    await store.forget_user(platform=SLACK, user_id="U9")
    since = slack.created_at - timedelta(days=1)
    assert await store.answer_votes(since=since) == VoteCounts(helpful=2, not_helpful=0)  # U8, and U9 on Discord


async def test_purge_text_redacts_old_text_but_keeps_audit(store: OpenableStore, clock: ManualClock) -> None:
    old = await new_conversation(store, "old")
    await store.add_message(text(old.id, "old words"))
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "end_conversation", "input": {"reason": "abuse"}}
    await store.add_message(NewMessage(conversation_id=old.id, role=Role.ASSISTANT, blocks=(tool_use,)))
    await store.end_conversation(conversation_id=old.id, reason=EndReason.MODERATOR, explanation="spam", actor="m")
    await store.add_event(AuditEvent(AuditKind.MODERATOR_END, old.id, "moderator:M1", "spam"))
    warning = await store.add_warning(conversation_id=old.id, after_seq=1, behavior="old insults")
    pending = await store.add_confirmation(conversation_id=old.id, owner_id="U1", explanation="old goodbye")
    cutoff = clock.advance(days=31)
    recent = await new_conversation(store, "recent")
    await store.add_message(text(recent.id, "new words"))
    await store.end_conversation(conversation_id=recent.id, reason=EndReason.MODERATOR, explanation="fresh", actor="m")

    assert await store.purge_text(older_than=cutoff) == 2
    assert [w.behavior for w in await store.warnings(old.id)] == [rows.REDACTED_TEXT]
    redacted_confirmation = await store.get_confirmation(pending.id)
    assert redacted_confirmation is not None and redacted_confirmation.explanation == rows.REDACTED_TEXT
    assert warning.behavior == "old insults"

    words, tool = await store.messages(old.id)
    assert words.text == rows.REDACTED_TEXT
    assert words.author_id == "U1"  # retention removes text, not authorship
    assert tool.blocks == ({**tool_use, "input": {"reason": rows.REDACTED_TEXT}},)
    purged = await store.get_conversation(old.id)
    assert purged is not None and purged.ended_explanation == rows.REDACTED_TEXT
    assert purged.ended_reason is EndReason.MODERATOR
    (fresh,) = await store.messages(recent.id)
    assert fresh.text == "new words"
    kept = await store.get_conversation(recent.id)
    assert kept is not None and kept.ended_explanation == "fresh"
    (event,) = await store.events(since=cutoff - timedelta(days=365))
    assert (event.kind, event.reason) == (AuditKind.MODERATOR_END, "spam")

    assert await store.purge_text(older_than=cutoff) == 0  # already redacted
    assert await store.purge_text(older_than=clock.advance(1)) == 1


# -- lifecycle -------------------------------------------------------------------------------------------


async def test_migrate_twice_keeps_data(store: OpenableStore) -> None:
    conversation = await new_conversation(store)
    await store.migrate()
    await store.migrate()
    assert await store.get_conversation(conversation.id) == conversation


@pytest.mark.parametrize("backend", BACKENDS)
async def test_schema_versions_read_an_empty_database_without_creating_the_schema(
    backend: str, tmp_path: Path, clock: ManualClock
) -> None:
    latest = max(version for version, _ in MIGRATIONS)
    async with opener_for(backend, tmp_path, clock) as opener:
        store = await opener.open(migrate=False)
        assert await store.schema_versions() == (0, latest)
        assert await store.schema_versions() == (0, latest)  # looking created nothing
        await store.migrate()
        assert await store.schema_versions() == (latest, latest)


async def test_state_survives_restart(store: OpenableStore, store_opener: StoreOpener) -> None:
    conversation = await new_conversation(store)
    await store.add_message(text(conversation.id, "remember me", platform_message_id="m1"))
    await store.claim_event(source="slack", event_id="Ev1")
    await store.close()
    await store.close()  # closing twice is harmless

    restarted = await store_opener.open()
    assert await restarted.get_conversation(conversation.id) == conversation
    assert [m.text for m in await restarted.messages(conversation.id)] == ["remember me"]
    assert await restarted.claim_event(source="slack", event_id="Ev1") is False
    stored = await restarted.add_message(text(conversation.id, "and me"))
    assert stored is not None and stored.seq == 2

    # The closed instance can be opened again too.
    await store.open()
    assert len(await store.messages(conversation.id)) == 2


async def test_ping_and_closed_store(store: OpenableStore) -> None:
    await store.ping()
    await store.close()
    with pytest.raises(StoreUnavailableError):
        await store.ping()
    with pytest.raises(StoreUnavailableError):
        await store.get_conversation(1)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_concurrent_migrations_on_a_fresh_database(backend: str, tmp_path: Path, clock: ManualClock) -> None:
    async with opener_for(backend, tmp_path, clock) as opener:
        stores = [await opener.open(migrate=False) for _ in range(4)]
        await asyncio.gather(*(s.migrate() for s in stores))
        conversation = await new_conversation(stores[0])
        for other in stores[1:]:
            assert await other.get_conversation(conversation.id) == conversation


async def test_postgres_concurrent_migrations_record_each_version_once(clock: ManualClock) -> None:
    async with fresh_postgres_schema() as schema:
        stores = [schema.store(clock) for _ in range(3)]
        try:
            for s in stores:
                await s.open()
            await asyncio.gather(*(s.migrate() for s in stores))
            await asyncio.gather(*(s.migrate() for s in stores))
        finally:
            for s in stores:
                await s.close()
        conn = await schema.admin()
        try:
            versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
        finally:
            await conn.close()
        assert versions == [version for version, _ in MIGRATIONS]


async def test_postgres_url_forms_and_search_path_in_the_url(clock: ManualClock) -> None:
    async with fresh_postgres_schema() as schema:
        bare = POSTGRES_URL.split("://", 1)[1]
        for scheme in ("postgres", "postgresql"):
            async with PostgresStore(f"{scheme}://{bare}?search_path={schema.name}", clock=clock) as pg:
                await pg.get_or_create_conversation(key=key(scheme), owner_id="U1")
        conn = await schema.admin()
        try:
            threads = await conn.fetch("SELECT thread FROM conversations ORDER BY id")
        finally:
            await conn.close()
        assert [r["thread"] for r in threads] == ["postgres", "postgresql"]


# -- failures to open --------------------------------------------------------------------------------------


def _chain(exc: BaseException) -> str:
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(f"{seen!s} {seen!r}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:hunter2-secret@127.0.0.1:1/test",
        "postgres://postgres:hunter2%2Dsecret@127.0.0.1:1/test",
        "postgresql://postgres@127.0.0.1:1/test?password=hunter2-secret",
        "postgresql://postgres:hunter2-secret@127.0.0.1:5432/no_such_database_here",
    ],
    ids=["refused", "percent-encoded", "password-in-query", "no-such-database"],
)
async def test_unreachable_postgres_is_unavailable_without_the_password(url: str, clock: ManualClock) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        await PostgresStore(url, clock=clock).open()
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "PostgreSQL" in message
    assert "127.0.0.1" in message
    assert "hunter2" not in _chain(caught.value)

    with pytest.raises(StoreUnavailableError) as through_factory:
        await open_store(url, clock=clock)
    assert "hunter2" not in _chain(through_factory.value)


async def test_unopenable_sqlite_is_unavailable(tmp_path: Path, clock: ManualClock) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    threads_before = set(threading.enumerate())
    for path in (directory, Path("/proc/no-such-dir/lastresort.db")):
        with pytest.raises(StoreUnavailableError) as caught:
            await SqliteStore(path, clock=clock).open()
        assert str(path) in str(caught.value)
    with pytest.raises(StoreUnavailableError):
        await open_store(f"sqlite:///{directory}", clock=clock)
    # After a failed connect aiosqlite stops its worker thread without waiting for it; let it finish while
    # this test's event loop still runs, or it reports "Event loop is closed" during a later test.
    for thread in set(threading.enumerate()) - threads_before:
        await asyncio.to_thread(thread.join, 5)


async def test_store_fixture_runs_both_backends(store: OpenableStore, store_opener: StoreOpener) -> None:
    expected = {"sqlite": SqliteStore, "postgres": PostgresStore}[store_opener.backend]
    assert isinstance(store, expected)


# -- risk marks and endings on a current snapshot -------------------------------------------------------------


async def test_risk_marks_are_sticky_for_the_conversation_and_timed_for_the_author(
    store: OpenableStore, clock: ManualClock
) -> None:
    first = await new_conversation(store, "t1")
    second = await new_conversation(store, "t2")
    assert not (await store.risk_marks(conversation_id=first.id, platform=SLACK, author_ids=["U1"], since=START)).marked

    newly = await store.mark_at_risk(
        conversation_id=first.id, platform=SLACK, author_ids=["U1"], categories=["self_harm"], source="tripwire"
    )
    again = await store.mark_at_risk(
        conversation_id=first.id, platform=SLACK, author_ids=["U1"], categories=["crisis"], source="screen"
    )
    assert (newly, again) == (True, False)
    marks = await store.risk_marks(conversation_id=first.id, platform=SLACK, author_ids=["U1", "U2"], since=START)
    assert marks.conversation_marked and marks.categories == {"self_harm", "crisis"}  # categories add up
    assert marks.authors == {"U1"} and not marks.support_shown

    # The author's mark reaches their other conversations on this platform, for as long as `since` allows.
    clock.advance(hours=23)
    other = await store.risk_marks(
        conversation_id=second.id, platform=SLACK, author_ids=["U1"], since=clock.now() - timedelta(hours=24)
    )
    assert other.authors == {"U1"} and not other.conversation_marked
    clock.advance(hours=2)
    later = await store.risk_marks(
        conversation_id=second.id, platform=SLACK, author_ids=["U1"], since=clock.now() - timedelta(hours=24)
    )
    assert not later.marked
    elsewhere = await store.risk_marks(conversation_id=second.id, platform="discord", author_ids=["U1"], since=START)
    assert not elsewhere.marked
    # Past their window, authors' marks are deleted; the conversation's stays.
    assert await store.prune_author_marks(older_than=clock.now() - timedelta(hours=24)) == 1
    assert not (
        await store.risk_marks(conversation_id=first.id, platform=SLACK, author_ids=["U1"], since=START)
    ).authors

    await store.note_support_shown(conversation_id=first.id)
    shown = await store.risk_marks(conversation_id=first.id, platform=SLACK, author_ids=[], since=clock.now())
    assert shown.conversation_marked and shown.support_shown and shown.authors == frozenset()


async def test_risk_marks_survive_forget_and_retention_and_follow_branches(
    store: OpenableStore, clock: ManualClock
) -> None:
    conversation = await new_conversation(store)
    said = await store.add_message(text(conversation.id, "I want to die"))
    await store.add_message(reply(conversation.id, "I'm here."))
    await store.mark_at_risk(
        conversation_id=conversation.id, platform=SLACK, author_ids=["U1"], categories=["self_harm"], source="tripwire"
    )
    await store.forget_user(platform=SLACK, user_id="U1")
    clock.advance(days=400)
    await store.purge_text(older_than=clock.now())
    marks = await store.risk_marks(conversation_id=conversation.id, platform=SLACK, author_ids=["U1"], since=START)
    assert marks.conversation_marked and marks.categories == {"self_harm"} and marks.authors == {"U1"}

    assert said is not None
    branch = await store.create_branch(
        key=key("branch"), owner_id="U1", source=conversation, branch_point_seq=said.seq + 1
    )
    copied = await store.risk_marks(conversation_id=branch.id, platform=SLACK, author_ids=[], since=clock.now())
    assert copied.conversation_marked and copied.categories == {"self_harm"} and not copied.support_shown


async def test_end_if_current_refuses_a_stale_snapshot(store: OpenableStore) -> None:
    conversation = await new_conversation(store)
    seen = await store.add_message(text(conversation.id, "one", platform_message_id="m1"))
    assert seen is not None
    await store.add_message(reply(conversation.id, "answer"))
    # A tool result is stored in the user role without an author: it is not someone writing.
    await store.add_message(
        NewMessage(
            conversation_id=conversation.id,
            role=Role.USER,
            blocks=({"type": "tool_result", "tool_use_id": "t", "content": "ok"},),
        )
    )
    later = await store.add_message(text(conversation.id, "two", platform_message_id="m2"))
    assert later is not None
    args: dict[str, Any] = {"reason": EndReason.PERSISTENT_ABUSE, "explanation": "x", "actor": "model"}
    assert await store.end_if_current(conversation_id=conversation.id, after_message_id=seen.id, **args) is None
    assert (await store.get_conversation(conversation.id)).status is Status.ACTIVE  # type: ignore[union-attr]
    ended = await store.end_if_current(conversation_id=conversation.id, after_message_id=later.id, **args)
    assert ended is not None and ended.status is Status.ENDED and ended.ended_by == "model"
    # Already ended: nothing to do a second time.
    assert await store.end_if_current(conversation_id=conversation.id, after_message_id=later.id, **args) is None


async def test_a_later_answer_delivered_leaves_an_earlier_undelivered_one_pending(
    store: OpenableStore, clock: ManualClock
) -> None:
    start = clock.now()
    chat = await new_conversation(store, "chat", platform="discord")
    first = await store.add_message(text(chat.id, "one", platform_message_id="d1"))
    assert first is not None
    await store.complete_turn(
        conversation_id=chat.id,
        replies=[reply(chat.id, "a warning")],
        after_seq=first.seq,
        answered_up_to_seq=first.seq,
    )
    second = await store.add_message(text(chat.id, "two", platform_message_id="d2"))
    assert second is not None
    await store.complete_turn(
        conversation_id=chat.id, replies=[reply(chat.id, "later")], after_seq=second.seq, answered_up_to_seq=second.seq
    )
    # The second answer reached the platform; the first (a formal warning, say) never did.
    await store.mark_delivered(conversation_id=chat.id, trigger_seq=second.seq)
    cutoff = clock.advance(60)
    pending = await store.undelivered(platform="discord", older_than=cutoff, newer_than=start)
    assert [m.id for m in pending] == [first.id]


async def test_authors_alone_can_be_marked(store: OpenableStore, clock: ManualClock) -> None:
    conversation = await new_conversation(store)
    await store.mark_authors_at_risk(platform=SLACK, author_ids=["U1", "U1"], categories=["unscreened"])
    await store.mark_authors_at_risk(platform=SLACK, author_ids=["U1"], categories=["crisis"])
    marks = await store.risk_marks(conversation_id=conversation.id, platform=SLACK, author_ids=["U1"], since=START)
    assert marks.authors == {"U1"} and not marks.conversation_marked
    assert await store.prune_author_marks(older_than=clock.advance(hours=25)) == 1
