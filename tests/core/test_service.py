"""The conversation service on real stores and the real Claude client against the fake API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bots.runtime import build_service
from core.claude_client import ClaudeClient
from core.clock import SystemClock
from core.domain import Status, ThreadKey
from core.metrics import NullMetrics
from core.outcomes import (
    AlreadyEnded,
    ConfirmationAnswered,
    ConfirmationRequested,
    Ignored,
    NotAllowed,
    Rejected,
    Reply,
)
from core.ports import Store
from core.service import BranchSource, ConversationService, InboundMessage
from core.settings import Settings
from core.storage.sqlite_store import SqliteStore
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_anthropic import Reply as ModelSays
from tests.support.stores import ManualClock, fresh_postgres_schema

KEY = ThreadKey("test", "C1", "T1")


def said(
    text: str, *, key: ThreadKey = KEY, author: str = "U1", start: bool = True, pid: str | None = None
) -> InboundMessage:
    return InboundMessage(
        key=key, author_id=author, author_name=author.lower(), text=text, may_start=start, platform_message_id=pid
    )


def service_for(store: Store, claude: ClaudeClient, settings: Settings, clock: object = None) -> ConversationService:
    built, _ = build_service(
        store=store,
        model=claude,
        settings=settings,
        clock=clock or SystemClock(),
        metrics=NullMetrics(),  # type: ignore[arg-type]
    )
    return built


async def test_messages_of_one_thread_never_run_at_once_but_threads_do(
    service: ConversationService, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.latency = 0.3
    other = ThreadKey("test", "C1", "T2")
    first = asyncio.create_task(service.handle_message(said("one", pid="1")))
    await fake_anthropic.wait_for_requests_async(1)
    # "two" arrives while "one" is with the model: it must wait; the other thread must not.
    results = await asyncio.gather(
        first,
        service.handle_message(said("two", pid="2")),
        service.handle_message(said("elsewhere", key=other, pid="3")),
    )
    requests = fake_anthropic.message_requests()
    same_thread = [r for r in requests if "elsewhere" not in str(r.json["messages"])]
    (elsewhere,) = [r for r in requests if "elsewhere" in str(r.json["messages"])]
    assert len(same_thread) == 2
    assert same_thread[1].received_at >= same_thread[0].received_at + 0.25
    assert "[u1 (U1)] two" in str(same_thread[1].json["messages"][-1])
    # The other thread ran beside them: its request reached the model while "one" was still with it (an
    # ordering of events, not a wall-clock bound, so a loaded machine cannot make it flaky).
    assert elsewhere.received_at < same_thread[0].received_at + 0.3
    assert all(isinstance(r, Reply) for r in results)


async def test_messages_that_arrive_together_are_answered_together(
    service: ConversationService, fake_anthropic: FakeAnthropic
) -> None:
    outcomes = await asyncio.gather(
        service.handle_message(said("one", pid="1")), service.handle_message(said("two", pid="2"))
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["Ignored", "Reply"]
    [request] = fake_anthropic.message_requests()
    texts = [b["text"] for b in request.json["messages"][-1]["content"]]
    assert texts == ["[u1 (U1)] one", "[u1 (U1)] two"]


async def test_a_message_posted_twice_is_one_message(
    service: ConversationService, fake_anthropic: FakeAnthropic
) -> None:
    first, second = await asyncio.gather(
        service.handle_message(said("hello", pid="C1:1700.1")),
        service.handle_message(said("hello", pid="C1:1700.1")),
    )
    kinds = sorted(type(o).__name__ for o in (first, second))
    assert kinds == ["Ignored", "Reply"]
    assert len(fake_anthropic.message_requests()) == 1


async def test_a_thread_message_without_a_mention_does_not_start_a_conversation(
    service: ConversationService, fake_anthropic: FakeAnthropic
) -> None:
    outcome = await service.handle_message(said("just chatting", start=False))
    assert outcome == Ignored("not_a_conversation")
    assert fake_anthropic.message_requests() == []


async def test_only_the_owner_can_confirm_and_only_once(
    service: ConversationService, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push(
        ModelSays.tool("end_conversation", {"reason": "user_requested", "explanation": "As you asked."}),
    )
    asked = await service.handle_message(said("please end this"))
    assert isinstance(asked, ConfirmationRequested)
    stranger = await service.answer_confirmation(confirmation_id=asked.confirmation_id, actor_id="U2", confirmed=True)
    assert isinstance(stranger, NotAllowed)
    assert (await service.status(KEY)).conversation.status is Status.ACTIVE  # type: ignore[union-attr]
    owner = await service.answer_confirmation(confirmation_id=asked.confirmation_id, actor_id="U1", confirmed=True)
    assert isinstance(owner, ConfirmationAnswered) and owner.confirmed
    assert owner.notice is not None and owner.notice.explanation == "As you asked."
    again = await service.answer_confirmation(confirmation_id=asked.confirmation_id, actor_id="U1", confirmed=False)
    assert isinstance(again, NotAllowed)
    assert isinstance(await service.handle_message(said("hello?")), AlreadyEnded)


async def test_moderators_end_and_reopen_with_an_audit_trail(
    service: ConversationService, sqlite: SqliteStore, fake_anthropic: FakeAnthropic
) -> None:
    await service.handle_message(said("hi"))
    action = await service.moderator_end(key=KEY, moderator_id="M1", reason="spam")
    assert action is not None and action.changed
    ended = action.conversation
    assert ended.is_ended and ended.ended_by == "moderator:M1"
    again = await service.moderator_end(key=KEY, moderator_id="M2", reason="twice")
    assert again is not None and not again.changed and again.conversation.ended_by == "moderator:M1"
    before = len(fake_anthropic.message_requests())
    assert isinstance(await service.handle_message(said("more")), AlreadyEnded)
    assert len(fake_anthropic.message_requests()) == before
    reopened = await service.moderator_reopen(key=KEY, moderator_id="M1", reason="mistake")
    assert reopened is not None and reopened.changed and not reopened.conversation.is_ended
    assert isinstance(await service.handle_message(said("back")), Reply)
    counts = await service.stats(days=1)
    assert counts["moderator_end"] == 1 and counts["moderator_reopen"] == 1
    assert await service.moderator_end(key=ThreadKey("test", "C1", "nope"), moderator_id="M1", reason="") is None


async def test_branch_needs_the_author_and_an_answered_message(
    service: ConversationService, fake_anthropic: FakeAnthropic
) -> None:
    await service.handle_message(said("first", pid="m1"))
    source = await service.find_branch_source(platform="test", platform_message_id="m1", editor_id="U2")
    assert isinstance(source, NotAllowed)
    source = await service.find_branch_source(platform="test", platform_message_id="m1", editor_id="U1")
    assert isinstance(source, BranchSource)
    unknown = await service.find_branch_source(platform="test", platform_message_id="zzz", editor_id="U1")
    assert unknown == Ignored("unknown_message")
    branch_key = ThreadKey("test", "C1", "B1")
    outcome = await service.branch(source, key=branch_key, new_text="first, edited")
    assert isinstance(outcome, Reply)
    branched = await service.find_conversation(branch_key)
    assert branched is not None and branched.branched_from == source.conversation.id


async def test_daily_budget_stops_politely_and_never_ends(
    sqlite: SqliteStore, claude: ClaudeClient, settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    limited = settings.model_copy(update={"budgets": settings.budgets.model_copy(update={"per_user_daily_tokens": 1})})
    service = service_for(sqlite, claude, limited)
    assert isinstance(await service.handle_message(said("first")), Reply)
    over = await service.handle_message(said("second"))
    assert isinstance(over, Rejected) and over.reason == "budget"
    conversation = await service.find_conversation(KEY)
    assert conversation is not None and not conversation.is_ended
    assert len(fake_anthropic.message_requests()) == 1


async def test_forget_removes_the_users_words_but_an_ended_thread_stays_ended(
    service: ConversationService, sqlite: SqliteStore, fake_anthropic: FakeAnthropic
) -> None:
    await service.handle_message(said("my secret", pid="p1"))
    other = ThreadKey("test", "C1", "T9")
    await service.handle_message(said("someone else's thread", key=other, author="U2"))
    await service.handle_message(said("my words in it", key=other, pid="p2", start=False))
    await service.moderator_end(key=KEY, moderator_id="M1", reason="abuse")
    removed = await service.forget_user(platform="test", user_id="U1")
    assert removed == 2
    mine = await service.find_conversation(KEY)
    assert mine is not None and mine.is_ended
    assert all(m.text == "[removed]" for m in await sqlite.messages(mine.id))
    # Forgetting is no way around an ending: a new post in the ended thread still gets no model call.
    before = len(fake_anthropic.message_requests())
    assert isinstance(await service.handle_message(said("hello again")), AlreadyEnded)
    assert len(fake_anthropic.message_requests()) == before
    remaining = await sqlite.messages((await service.find_conversation(other)).id)  # type: ignore[union-attr]
    users_own = [m for m in remaining if m.is_user_text and "my words" in m.text]
    assert users_own == []
    assert [m.author_id for m in remaining if m.text == "[removed]"] == [None]


async def test_an_unanswered_message_is_recovered(
    sqlite: SqliteStore, claude: ClaudeClient, settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    clock = ManualClock(SystemClock().now())
    service = service_for(sqlite, claude, settings, clock)
    conversation = await sqlite.get_or_create_conversation(key=KEY, owner_id="U1")
    from core.domain import NewMessage, Role
    from core.prompt import user_text_block

    # What a process leaves behind when it dies after taking a message in and before answering it.
    await sqlite.add_message(
        NewMessage(
            conversation.id,
            Role.USER,
            (user_text_block("lost?", author_name="u1", author_id="U1"),),
            author_id="U1",
            answered=False,
        )
    )
    assert await service.unanswered(platform="test", older_than_seconds=30) == []
    clock.set(clock.now() + timedelta(seconds=60))
    [pending] = await service.unanswered(platform="test", older_than_seconds=30)
    assert await service.unanswered(platform="other", older_than_seconds=30) == []
    outcome = await service.answer_pending(pending)
    assert isinstance(outcome, Reply)
    assert await service.unanswered(platform="test", older_than_seconds=30) == []


@pytest.fixture
async def two_instances_on_postgres(
    fake_anthropic: FakeAnthropic, settings: Settings
) -> AsyncIterator[tuple[ConversationService, ConversationService]]:
    async with fresh_postgres_schema() as schema:
        clock = SystemClock()
        stores = [schema.store(clock), schema.store(clock)]  # type: ignore[arg-type]
        clients = [
            ClaudeClient(
                api_key="k",
                base_url=fake_anthropic.base_url,
                timeout_seconds=5,
                max_retries=0,
                max_total_wait_seconds=10,
            )
            for _ in stores
        ]
        for store in stores:
            await store.open()
            await store.migrate()
        try:
            yield service_for(stores[0], clients[0], settings), service_for(stores[1], clients[1], settings)
        finally:
            for store, client in zip(stores, clients, strict=True):
                await store.close()
                await client.close()


async def test_two_instances_never_call_the_model_for_one_thread_at_once(
    two_instances_on_postgres: tuple[ConversationService, ConversationService], fake_anthropic: FakeAnthropic
) -> None:
    first, second = two_instances_on_postgres
    fake_anthropic.latency = 0.3
    outcomes = await asyncio.gather(
        first.handle_message(said("from instance one", pid="a")),
        second.handle_message(said("from instance two", pid="b")),
    )
    requests = fake_anthropic.message_requests()
    assert len(requests) + sum(isinstance(o, Ignored) for o in outcomes) == 2
    if len(requests) == 2:
        assert requests[1].received_at >= requests[0].received_at + 0.25
    # Whatever the interleaving, both messages reached the model and the history is in order.
    last = requests[-1].json["messages"]
    text = str(last)
    assert "from instance one" in text and "from instance two" in text


async def test_lease_of_a_dead_holder_expires(tmp_path: Path) -> None:
    from core.thread_locks import ThreadLocks

    async with SqliteStore(tmp_path / "leases.db", clock=SystemClock()) as store:
        dead = ThreadLocks(store, ttl_seconds=0.3, wait_seconds=5)
        alive = ThreadLocks(store, ttl_seconds=0.3, wait_seconds=5)
        # A holder that vanished: it took the lease and never released or renewed it.
        assert await store.acquire_lease(name="test:C1:T1", holder=dead.holder, ttl_seconds=0.3)
        started = asyncio.get_running_loop().time()
        async with alive.hold(KEY):
            waited = asyncio.get_running_loop().time() - started
        assert 0.2 <= waited < 2


async def test_a_held_lease_is_renewed_past_its_ttl(tmp_path: Path) -> None:
    from core.thread_locks import LeaseTimeoutError, ThreadLocks

    async with SqliteStore(tmp_path / "leases.db", clock=SystemClock()) as store:
        holder = ThreadLocks(store, ttl_seconds=0.3, wait_seconds=5)
        other = ThreadLocks(store, ttl_seconds=0.3, wait_seconds=0.6)
        async with holder.hold(KEY):
            # Held three TTLs long: renewal keeps the other instance out the whole time.
            with pytest.raises(LeaseTimeoutError):
                async with other.hold(KEY):
                    pass


# -- what the review of the rules found ------------------------------------------------------------------------


WARN = ModelSays.tool(
    "warn_user", {"behavior": "abuse", "redirect_attempts": 2}, text="Formal warning: this may end if it continues."
)
END_ABUSE = ModelSays.tool("end_conversation", {"reason": "persistent_abuse", "explanation": "Ended after a warning."})


async def test_a_message_sent_while_the_warning_was_written_is_not_persisting(
    service: ConversationService, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push(ModelSays.slow(0.5, then=WARN), END_ABUSE, ModelSays.text("Let's move on."), END_ABUSE)
    warning = asyncio.create_task(service.handle_message(said("abusive 1", pid="a1")))
    await fake_anthropic.wait_for_requests_async(1)
    # Sent before the warning appeared: the user has not yet persisted after seeing it.
    early = await service.handle_message(said("abusive 2", pid="a2"))
    assert type(await warning).__name__ == "WarningGiven"
    assert isinstance(early, Reply) and early.text == "Let's move on."
    assert not (await service.find_conversation(KEY)).is_ended  # type: ignore[union-attr]
    # Persisting after having seen it is what allows the ending.
    ended = await service.handle_message(said("abusive 3", pid="a3"))
    assert type(ended).__name__ == "Ended"


async def test_words_that_came_with_a_refused_ending_are_never_shown(
    service: ConversationService, fake_anthropic: FakeAnthropic, settings: Settings
) -> None:
    goodbye = ModelSays.tool(
        "end_conversation",
        {"reason": "persistent_abuse", "explanation": "Bye."},
        text="I am ending this conversation now.",
    )
    again = ModelSays.tool(
        "end_conversation", {"reason": "persistent_abuse", "explanation": "Bye."}, text="This conversation is over."
    )
    fake_anthropic.push(goodbye, again)
    outcome = await service.handle_message(said("rude"))
    assert isinstance(outcome, Reply)
    assert outcome.text == settings.notices.conversation_continues
    assert not (await service.find_conversation(KEY)).is_ended  # type: ignore[union-attr]


async def test_a_refusal_on_the_retry_drops_the_refused_exchange(
    service: ConversationService, fake_anthropic: FakeAnthropic
) -> None:
    early_warning = ModelSays.tool("warn_user", {"behavior": "x", "redirect_attempts": 0}, text="Warning!")
    fake_anthropic.push(ModelSays.text("Hi."), early_warning, ModelSays.refusal(), ModelSays.text("Sure."))
    await service.handle_message(said("hello"))
    refused = await service.handle_message(said("something the API refuses"))
    assert type(refused).__name__ == "ModelRefused"
    await service.handle_message(said("a normal question"))
    last = fake_anthropic.message_requests()[-1].json["messages"]
    assert "something the API refuses" not in str(last)
    assert "Warning!" not in str(last)
    assert [m["role"] for m in last] == ["user", "assistant", "user"]


async def test_an_empty_model_reply_never_wedges_the_thread(
    service: ConversationService, fake_anthropic: FakeAnthropic, settings: Settings
) -> None:
    fake_anthropic.push(ModelSays.text(""), ModelSays.text("Back to normal."))
    empty = await service.handle_message(said("first"))
    assert isinstance(empty, Reply) and empty.text == settings.notices.conversation_continues
    after = await service.handle_message(said("second"))
    assert isinstance(after, Reply) and after.text == "Back to normal."


async def test_a_connection_dropped_mid_stream_is_retried_not_a_crash(
    service: ConversationService, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push(ModelSays.disconnect("Half"), ModelSays.text("Whole answer."))
    outcome = await service.handle_message(said("hi"))
    assert isinstance(outcome, Reply) and outcome.text == "Whole answer."
    fake_anthropic.push(*[ModelSays.disconnect("x") for _ in range(3)])
    down = await service.handle_message(said("again"))
    assert type(down).__name__ == "ModelUnavailable"


async def test_support_resources_come_with_a_refusal_while_the_guard_fires(
    service: ConversationService, fake_anthropic: FakeAnthropic, settings: Settings
) -> None:
    fake_anthropic.push(ModelSays.refusal())
    outcome = await service.handle_message(said("I want to kill myself"))
    assert type(outcome).__name__ == "ModelRefused"
    assert settings.risk_guard.support_message in outcome.text  # type: ignore[union-attr]


async def test_budgets_charge_the_author_of_the_answered_message(
    sqlite: SqliteStore, claude: ClaudeClient, settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    limited = settings.model_copy(update={"budgets": settings.budgets.model_copy(update={"per_user_daily_tokens": 1})})
    service = service_for(sqlite, claude, limited)
    await service.handle_message(said("owner starts", author="U1"))
    # U2 writes in U1's thread: U2 pays, so U2 is over budget and U1 is not charged again.
    await service.handle_message(said("guest joins", author="U2", start=False))
    over = await service.handle_message(said("guest again", author="U2", start=False))
    assert isinstance(over, Rejected) and over.reason == "budget"
    day = SystemClock().now().date().isoformat()
    assert await sqlite.usage(scope="user:test:U2", day=day) > 0
    first_charge = await sqlite.usage(scope="user:test:U1", day=day)
    assert first_charge > 0
