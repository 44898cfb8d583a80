"""build_request: the tools contract, turn merging, cache breakpoints, a byte-stable prefix, and budget trimming."""

from __future__ import annotations

import copy
import itertools
import json
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from core.domain import JSON, Role, StoredMessage
from core.ports import ModelRequest
from core.prompt import OMITTED_MARKER, build_request, estimate_tokens, user_text_block
from core.tool_schemas import TOOLS

SYSTEM = "You are Claude, in a chat thread. Ending a conversation is a last resort."
MODEL = "claude-opus-4-1"
MAX_TOKENS = 256
BIG_BUDGET = 1_000_000
CACHE = {"type": "ephemeral"}


class History:
    """Builds stored messages with increasing ids and seqs, as the store would."""

    def __init__(self) -> None:
        self.messages: list[StoredMessage] = []

    def add(self, role: Role, *blocks: JSON, excluded: bool = False) -> History:
        seq = len(self.messages) + 1
        self.messages.append(
            StoredMessage(id=seq, conversation_id=1, seq=seq, role=role, blocks=tuple(blocks), excluded=excluded)
        )
        return self

    def user(self, text: str, *, excluded: bool = False) -> History:
        return self.add(Role.USER, text_block(text), excluded=excluded)

    def assistant(self, text: str, *, excluded: bool = False) -> History:
        return self.add(Role.ASSISTANT, text_block(text), excluded=excluded)


def text_block(text: str) -> JSON:
    return {"type": "text", "text": text}


def tool_use(use_id: str) -> JSON:
    return {"type": "tool_use", "id": use_id, "name": "warn_user", "input": {"behavior": "x", "redirect_attempts": 2}}


def tool_result(use_id: str) -> JSON:
    return {"type": "tool_result", "tool_use_id": use_id, "is_error": True, "content": "Refused: keep redirecting."}


def build(history: Sequence[StoredMessage], *, budget: int = BIG_BUDGET) -> ModelRequest:
    return build_request(
        history, system_prompt=SYSTEM, model=MODEL, max_tokens=MAX_TOKENS, context_budget_tokens=budget
    )


FIXED_TOKENS = estimate_tokens(({"type": "text", "text": SYSTEM, "cache_control": CACHE},)) + estimate_tokens(TOOLS)


def budget_for(message_tokens: int) -> int:
    """A context budget that leaves about `message_tokens` for the history."""
    return FIXED_TOKENS + MAX_TOKENS + message_tokens


def plain_dialogue(user_turns: int, *, size: int = 0) -> list[StoredMessage]:
    """user, assistant, user, ... ending with user turn number `user_turns` - 1; prefixes of longer dialogues."""
    h = History()
    for i in range(user_turns):
        if i:
            h.assistant(f"a{i - 1} " + "r" * size)
        h.user(f"u{i} " + "q" * size)
    return h.messages


def _reply_after(h: History, i: int, size: int) -> None:
    """The assistant's reply to user turn i, in three shapes the service produces."""
    pad = "r" * size
    if i % 3 == 1:
        # A refused tool call, its error tool_result, then the model's continuation.
        h.add(Role.ASSISTANT, text_block(f"a{i} {pad}"), tool_use(f"tu{i}"))
        h.add(Role.USER, tool_result(f"tu{i}"))
        h.assistant(f"c{i} {pad}")
    elif i % 3 == 2:
        # A tool call whose tool_result is stored on its own; the next user text merges into that user turn.
        h.add(Role.ASSISTANT, tool_use(f"tu{i}"))
        h.add(Role.USER, tool_result(f"tu{i}"))
    else:
        h.assistant(f"a{i} {pad}")


def tool_dialogue(user_turns: int, *, size: int = 0) -> list[StoredMessage]:
    h = History()
    for i in range(user_turns):
        if i:
            _reply_after(h, i - 1, size)
        h.user(f"u{i} " + "q" * size)
    return h.messages


def marks(value: Any) -> Iterator[Any]:
    """Every cache_control value anywhere inside a JSON-like value."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "cache_control":
                yield item
            else:
                yield from marks(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from marks(item)


def strip_marks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_marks(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list | tuple):
        return [strip_marks(v) for v in value]
    return value


def texts(message: JSON) -> list[str]:
    return [b["text"] for b in message["content"] if b.get("type") == "text"]


def user_indexes(messages: Sequence[JSON]) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == "user"]


def assert_valid_conversation(messages: Sequence[JSON]) -> None:
    """What the Messages API requires: starts with user, roles alternate, tool_use/tool_result stay paired."""
    assert messages, "no messages"
    assert messages[0]["role"] == "user"
    assert messages[-1]["role"] == "user"
    for before, after in itertools.pairwise(messages):
        assert before["role"] != after["role"], "two consecutive turns with the same role"
    for i, message in enumerate(messages):
        for block in message["content"]:
            if block.get("type") == "tool_result":
                assert i > 0, f"tool_result {block['tool_use_id']} in the first message: its tool_use was cut off"
                previous = messages[i - 1]
                uses = {b["id"] for b in previous["content"] if b.get("type") == "tool_use"}
                assert previous["role"] == "assistant"
                assert block["tool_use_id"] in uses, f"tool_result {block['tool_use_id']} without its tool_use"
            if block.get("type") == "tool_use":
                following = messages[i + 1]
                results = {b["tool_use_id"] for b in following["content"] if b.get("type") == "tool_result"}
                assert block["id"] in results, f"tool_use {block['id']} without its tool_result"


# --------------------------------------------------------------------------------------------------------------
# System prompt and the tools contract
# --------------------------------------------------------------------------------------------------------------


def test_system_prompt_is_one_cached_text_block() -> None:
    request = build(plain_dialogue(1))
    assert request.system == ({"type": "text", "text": SYSTEM, "cache_control": CACHE},)
    assert request.model == MODEL
    assert request.max_tokens == MAX_TOKENS


def test_tools_are_exactly_the_two_contract_tools() -> None:
    request = build(plain_dialogue(1))
    assert [tool["name"] for tool in request.tools] == ["warn_user", "end_conversation"]


def test_tool_warn_user_inputs_match_the_contract() -> None:
    (warn,) = (t for t in build(plain_dialogue(1)).tools if t["name"] == "warn_user")
    schema = warn["input_schema"]
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"behavior", "redirect_attempts"}
    assert schema["properties"]["behavior"]["type"] == "string"
    assert schema["properties"]["redirect_attempts"]["type"] == "integer"
    assert set(schema["required"]) == {"behavior", "redirect_attempts"}
    # "Neither tool takes a target."
    assert schema.get("additionalProperties") is False


def test_tool_end_conversation_inputs_match_the_contract() -> None:
    (end,) = (t for t in build(plain_dialogue(1)).tools if t["name"] == "end_conversation")
    schema = end["input_schema"]
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"reason", "explanation"}
    assert schema["properties"]["reason"]["type"] == "string"
    assert sorted(schema["properties"]["reason"]["enum"]) == ["persistent_abuse", "user_requested"]
    assert schema["properties"]["explanation"]["type"] == "string"
    assert set(schema["required"]) == {"reason", "explanation"}
    assert schema.get("additionalProperties") is False


def test_tools_carry_no_cache_marks_so_the_total_stays_within_four() -> None:
    assert list(marks(TOOLS)) == []


# --------------------------------------------------------------------------------------------------------------
# Turns: merging and exclusion
# --------------------------------------------------------------------------------------------------------------


def test_consecutive_user_messages_merge_into_one_turn() -> None:
    history = History().user("first").user("second").user("third").messages
    request = build(history)
    assert len(request.messages) == 1
    assert request.messages[0]["role"] == "user"
    assert texts(request.messages[0]) == ["first", "second", "third"]


def test_tool_result_and_next_user_text_merge_into_one_turn() -> None:
    h = History().user("hi").add(Role.ASSISTANT, tool_use("tu1")).add(Role.USER, tool_result("tu1")).user("again")
    request = build(h.messages)
    assert [m["role"] for m in request.messages] == ["user", "assistant", "user"]
    last = request.messages[-1]["content"]
    assert [b["type"] for b in last] == ["tool_result", "text"]
    assert last[0]["tool_use_id"] == "tu1"
    assert_valid_conversation(request.messages)


def test_consecutive_assistant_messages_merge_into_one_turn() -> None:
    history = History().user("hi").assistant("part one").assistant("part two").user("ok").messages
    request = build(history)
    assert [m["role"] for m in request.messages] == ["user", "assistant", "user"]
    assert texts(request.messages[1]) == ["part one", "part two"]


def test_excluded_user_message_is_skipped() -> None:
    history = History().user("hello").assistant("hi!").user("REFUSED TEXT", excluded=True).user("sorry").messages
    request = build(history)
    assert [m["role"] for m in request.messages] == ["user", "assistant", "user"]
    assert "REFUSED TEXT" not in json.dumps(request.messages)
    assert texts(request.messages[-1]) == ["sorry"]


def test_excluded_assistant_message_is_skipped_and_roles_still_alternate() -> None:
    history = History().user("hello").assistant("REFUSED REPLY", excluded=True).user("still there?").messages
    request = build(history)
    assert "REFUSED REPLY" not in json.dumps(request.messages)
    assert_valid_conversation(request.messages)
    assert texts(request.messages[-1])[-1] == "still there?"


def test_stored_blocks_are_replayed_verbatim() -> None:
    history = tool_dialogue(7)
    request = build(history)
    replayed = [b for m in strip_marks(list(request.messages)) for b in m["content"]]
    stored = [b for m in history for b in m.blocks]
    assert replayed == stored


def test_build_does_not_mutate_the_stored_blocks() -> None:
    history = tool_dialogue(6)
    before = copy.deepcopy([m.blocks for m in history])
    first = build(history)
    assert [m.blocks for m in history] == before
    assert list(marks([m.blocks for m in history])) == []
    second = build(history)
    assert json.dumps(first.messages) == json.dumps(second.messages)


# --------------------------------------------------------------------------------------------------------------
# Cache breakpoints
# --------------------------------------------------------------------------------------------------------------

HISTORIES = [
    pytest.param(plain_dialogue(1), id="plain-1-turn"),
    pytest.param(plain_dialogue(2), id="plain-2-turns"),
    pytest.param(plain_dialogue(9), id="plain-9-turns"),
    pytest.param(tool_dialogue(2), id="tools-2-turns"),
    pytest.param(tool_dialogue(4), id="tools-4-turns"),
    pytest.param(tool_dialogue(12), id="tools-12-turns"),
]


@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize(
    "budget", [pytest.param(BIG_BUDGET, id="no-trim"), pytest.param(budget_for(60), id="tight-budget")]
)
def test_at_most_four_cache_marks_in_total(history: list[StoredMessage], budget: int) -> None:
    request = build(history, budget=budget)
    total = list(marks(request.system)) + list(marks(request.tools)) + list(marks(request.messages))
    assert 1 <= len(total) <= 4
    assert all(mark == CACHE for mark in total)


@pytest.mark.parametrize("history", HISTORIES)
def test_previous_and_last_user_turns_carry_the_cache_marks(history: list[StoredMessage]) -> None:
    messages = build(history).messages
    users = user_indexes(messages)
    expected = set(users[-2:])
    for i, message in enumerate(messages):
        content = message["content"]
        if i in expected:
            # On the last block, so the cached prefix covers the whole turn.
            assert content[-1].get("cache_control") == CACHE, f"turn {i} should be a breakpoint"
            assert all("cache_control" not in b for b in content[:-1])
        else:
            assert list(marks(content)) == [], f"turn {i} should carry no cache mark"


def test_single_user_turn_has_one_message_mark() -> None:
    messages = build(plain_dialogue(1)).messages
    assert len(list(marks(messages))) == 1


# --------------------------------------------------------------------------------------------------------------
# The cached prefix is byte-identical from turn to turn
# --------------------------------------------------------------------------------------------------------------


def request_points(history: Sequence[StoredMessage]) -> list[int]:
    """Where the service calls the model: after each run of user messages that the assistant answers next (a
    user text, or a tool_result the model continues after), and at the end of the history."""
    return [
        j
        for j in range(1, len(history) + 1)
        if history[j - 1].role is Role.USER and (j == len(history) or history[j].role is Role.ASSISTANT)
    ]


def consecutive_requests(history: list[StoredMessage]) -> list[tuple[int, int]]:
    points = request_points(history)
    return list(itertools.pairwise(points))


@pytest.mark.parametrize(
    "history",
    [
        pytest.param(plain_dialogue(10), id="plain"),
        pytest.param(tool_dialogue(12), id="tools"),
    ],
)
def test_prefix_is_byte_identical_from_turn_to_turn(history: list[StoredMessage]) -> None:
    steps = consecutive_requests(history)
    assert len(steps) >= 9, "test setup: many consecutive requests"
    for p, q in steps:
        before, after = build(history[:p]), build(history[:q])
        where = f"requests after {p} and {q} stored messages"

        assert json.dumps(before.system) == json.dumps(after.system), where
        assert json.dumps(before.tools) == json.dumps(after.tools), where

        # k: the previous user turn of the new request, which was the last (newly cached) user turn before.
        k = user_indexes(after.messages)[-2]
        assert k == len(before.messages) - 1, where
        # The breakpoint the new request reads from is exactly the one the previous request wrote.
        assert json.dumps(after.messages[k]) == json.dumps(before.messages[k]), where
        # Everything up to it is the same content; only the older, moving breakpoint mark may differ (the API
        # leaves cache_control out of the cache key).
        assert json.dumps(strip_marks(list(after.messages[: k + 1]))) == json.dumps(
            strip_marks(list(before.messages[: k + 1]))
        ), where
        # Turns before the older breakpoint are byte-identical, marks included.
        users_before = user_indexes(before.messages)
        unmarked_upto = users_before[-2] if len(users_before) >= 2 else k
        assert json.dumps(after.messages[:unmarked_upto]) == json.dumps(before.messages[:unmarked_upto]), where


def test_request_points_include_the_retry_after_a_tool_result() -> None:
    # The helper above must model the tool-call retry, or the prefix test would skip a real request.
    history = tool_dialogue(3)
    assert [history[j - 1].blocks[-1]["type"] for j in request_points(history)] == [
        "text",
        "text",
        "tool_result",
        "text",
    ]


# --------------------------------------------------------------------------------------------------------------
# Trimming to the context budget
# --------------------------------------------------------------------------------------------------------------

TRIM_BUDGETS = [pytest.param(budget_for(tokens), id=f"history-{tokens}-tokens") for tokens in (40, 150, 400, 900, 2000)]


@pytest.mark.parametrize("budget", TRIM_BUDGETS)
@pytest.mark.parametrize(
    "history",
    [
        pytest.param(plain_dialogue(30, size=120), id="plain"),
        pytest.param(tool_dialogue(30, size=120), id="tools"),
    ],
)
def test_budget_drops_oldest_turns_and_keeps_the_conversation_valid(history: list[StoredMessage], budget: int) -> None:
    full = build(history).messages
    trimmed = build(history, budget=budget).messages
    assert len(trimmed) < len(full), "the budget should force trimming"

    # The first kept message is a user turn that opens with the omission marker.
    assert trimmed[0]["role"] == "user"
    assert trimmed[0]["content"][0] == {"type": "text", "text": OMITTED_MARKER}

    # A tool_use is never separated from its tool_result; roles alternate.
    assert_valid_conversation(trimmed)

    # Only the oldest turns go: what is kept is the tail of the full request, in order, nothing in between.
    kept = strip_marks(list(trimmed))
    kept[0]["content"] = kept[0]["content"][1:]
    assert kept == strip_marks(list(full[-len(trimmed) :]))

    # The newest user message is always there.
    assert texts(trimmed[-1])[-1] == texts(full[-1])[-1] == history[-1].blocks[-1]["text"]


@pytest.mark.parametrize("history_tokens", [pytest.param(t, id=f"history-{t}-tokens") for t in (400, 900, 2000)])
def test_budget_kept_history_fits_the_budget(history_tokens: int) -> None:
    history = tool_dialogue(30, size=120)
    request = build(history, budget=budget_for(history_tokens))
    stored = strip_marks(list(request.messages))
    stored[0]["content"] = stored[0]["content"][1:]  # the marker is the core's, not history
    assert sum(estimate_tokens(m["content"]) for m in stored) <= history_tokens


def test_budget_not_reached_keeps_everything_without_marker() -> None:
    history = tool_dialogue(10, size=20)
    request = build(history, budget=BIG_BUDGET)
    assert OMITTED_MARKER not in json.dumps(request.messages)
    assert texts(request.messages[0])[0] == "u0 " + "q" * 20


def test_budget_newest_message_kept_even_when_alone_it_exceeds_the_budget() -> None:
    h = History()
    for i in range(5):
        h.user(f"u{i}").assistant(f"a{i}")
    h.user("HUGE " + "z" * 20_000)
    request = build(h.messages, budget=budget_for(200))
    assert_valid_conversation(request.messages)
    assert request.messages[0]["content"][0]["text"] == OMITTED_MARKER
    assert texts(request.messages[-1])[-1].startswith("HUGE ")


def test_budget_newest_turn_opening_with_tool_result_keeps_its_tool_use() -> None:
    # The newest user turn is [tool_result, text]: it cannot be the cut point, so its tool_use must stay.
    h = History()
    for i in range(6):
        h.user(f"u{i} " + "q" * 300).assistant(f"a{i} " + "r" * 300)
    h.user("u6").add(Role.ASSISTANT, tool_use("tu-last")).add(Role.USER, tool_result("tu-last"))
    h.user("after the tool call " + "z" * 5000)
    request = build(h.messages, budget=budget_for(100))
    assert_valid_conversation(request.messages)
    assert texts(request.messages[-1])[-1].startswith("after the tool call")


def _first_kept_text(request: ModelRequest) -> str:
    content = request.messages[0]["content"]
    if content[0].get("text") == OMITTED_MARKER:
        content = content[1:]
    first = content[0]
    return str(first.get("text") or first.get("tool_use_id")).split()[0]


@pytest.mark.parametrize(
    "dialogue", [pytest.param(plain_dialogue, id="plain"), pytest.param(tool_dialogue, id="tools")]
)
def test_budget_cut_point_moves_rarely_as_the_history_grows(dialogue: Any) -> None:
    turns = 40
    # About 15 turns fit: trimming starts early, and the cut may move at most every few turns.
    budget = budget_for(15 * estimate_tokens([text_block("u0 " + "q" * 300)]) * 2)
    cuts: list[str] = []
    previous: ModelRequest | None = None
    for n in range(1, turns + 1):
        request = build(dialogue(n, size=300), budget=budget)
        assert_valid_conversation(request.messages)
        cuts.append(_first_kept_text(request))
        if previous is not None and cuts[-1] == cuts[-2]:
            # While the cut stays put, the earlier request is still a prefix of this one: the cache keeps hitting.
            size = len(previous.messages)
            assert strip_marks(list(request.messages[:size])) == strip_marks(list(previous.messages)), n
        previous = request
    changes = sum(1 for a, b in itertools.pairwise(cuts) if a != b)
    distinct = list(dict.fromkeys(cuts))
    assert len(distinct) >= 3, "test setup: the history should have been trimmed several times"
    assert len(distinct) <= turns // 3, f"the cut point moved too often: {distinct}"
    assert changes == len(distinct) - 1, "the cut point moved back to an earlier turn"


def test_budget_cut_point_moves_rarely_with_uneven_message_sizes() -> None:
    rng = random.Random(20250815)
    h = History()
    cuts: list[str] = []
    budget = budget_for(4000)
    for i in range(40):
        if i:
            h.assistant(f"a{i - 1} " + "r" * rng.randint(20, 900))
        h.user(f"u{i} " + "q" * rng.randint(5, 600))
        request = build(h.messages, budget=budget)
        assert_valid_conversation(request.messages)
        cuts.append(_first_kept_text(request))
    distinct = list(dict.fromkeys(cuts))
    assert len(distinct) >= 2, "test setup: the history should have been trimmed"
    assert len(distinct) <= 40 // 3, f"the cut point moved too often: {distinct}"


# --------------------------------------------------------------------------------------------------------------
# user_text_block
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "author_id", "expected"),
    [
        pytest.param("Ada", "U123", "[Ada (U123)] hello", id="name-and-id"),
        pytest.param("Ada", None, "[Ada] hello", id="name-only"),
        pytest.param(None, "U123", "[U123] hello", id="id-only"),
        pytest.param("U123", "U123", "[U123] hello", id="name-equals-id-not-repeated"),
        pytest.param(None, None, "hello", id="anonymous-unchanged"),
        pytest.param("", "", "hello", id="empty-strings-unchanged"),
    ],
)
def test_user_text_block_names_the_author(name: str | None, author_id: str | None, expected: str) -> None:
    assert user_text_block("hello", author_name=name, author_id=author_id) == {"type": "text", "text": expected}


@pytest.mark.parametrize(
    "blocks",
    [
        [],
        [{"type": "text", "text": 'héllo, "world"\n'}],
        [{"type": "text", "text": "a"}, {"type": "tool_use", "id": "t", "name": "n", "input": {"x": [1, 2.5, None]}}],
        [{"type": "tool_result", "tool_use_id": "t", "content": "ok", "is_error": True}] * 3,
    ],
)
def test_token_estimate_is_each_blocks_json_length_summed(blocks: list[dict[str, object]]) -> None:
    # What the estimate has always been; the history's cut points (and so the prompt cache) depend on it.
    assert estimate_tokens(blocks) == sum(len(json.dumps(b, ensure_ascii=False)) for b in blocks) // 4 + 4
