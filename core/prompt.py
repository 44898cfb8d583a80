"""Turn stored history into a Messages API request: pure, so the benchmark can measure it directly.

Prompt caching wants the prefix (tools, system prompt, earlier turns) byte-identical from turn to turn,
so history is replayed from the stored blocks verbatim and old turns are dropped in whole pages whose
boundaries never move as the conversation grows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from core.domain import JSON, Role, StoredMessage
from core.ports import ModelRequest
from core.tool_schemas import TOOLS

OMITTED_MARKER = "[Earlier messages of this conversation were omitted to fit the context window.]"
CACHE = {"type": "ephemeral"}
# Pages are a quarter of the budget: the cut point moves (and the cache misses) at most every ~25% growth.
PAGES_PER_BUDGET = 4


def user_text_block(text: str, *, author_name: str | None, author_id: str | None) -> JSON:
    """Each user message names its author, so several people in one thread stay distinguishable."""
    if author_name or author_id:
        who = author_name or author_id
        if author_id and author_name and author_id != author_name:
            who = f"{author_name} ({author_id})"
        text = f"[{who}] {text}"
    return {"type": "text", "text": text}


# `json.dumps(b, ensure_ascii=False)`, without building an encoder per call (it runs for every block of the
# history on every turn).
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def estimate_tokens(blocks: Sequence[JSON]) -> int:
    """A cheap, deterministic estimate (about 4 characters a token); count_tokens is rate-limited."""
    return sum(len(_ENCODE(b)) for b in blocks) // 4 + 4


def _turns(history: Sequence[StoredMessage]) -> list[tuple[Role, list[JSON]]]:
    """Merge consecutive same-role messages (tool results + the next user text) into one API turn."""
    turns: list[tuple[Role, list[JSON]]] = []
    for message in history:
        if message.excluded:
            continue
        if turns and turns[-1][0] is message.role:
            turns[-1][1].extend(message.blocks)
        else:
            turns.append((message.role, list(message.blocks)))
    return turns


def _safe_starts(turns: Sequence[tuple[Role, list[JSON]]]) -> list[int]:
    """Where history may be cut: at a user turn that does not open with a tool_result."""
    return [
        i
        for i, (role, blocks) in enumerate(turns)
        if role is Role.USER and blocks and blocks[0].get("type") != "tool_result"
    ]


def _first_kept(turns: Sequence[tuple[Role, list[JSON]]], budget: int) -> int:
    sizes = [estimate_tokens(blocks) for _, blocks in turns]
    total = sum(sizes)
    if total <= budget:
        return 0
    page = max(budget // PAGES_PER_BUDGET, 1)
    before = 0
    prefix: list[int] = []
    for size in sizes:
        prefix.append(before)
        before += size
    candidates = [0]
    last_page = 0
    for i in _safe_starts(turns):
        if prefix[i] // page > last_page:
            candidates.append(i)
            last_page = prefix[i] // page
    for i in candidates:
        if total - prefix[i] <= budget:
            return i
    # Even the newest page is too large: keep from the last safe start so the newest message survives.
    starts = _safe_starts(turns)
    return starts[-1] if starts else 0


def _with_cache_mark(blocks: list[JSON]) -> list[JSON]:
    marked = [dict(b) for b in blocks]
    marked[-1]["cache_control"] = CACHE
    return marked


def build_request(
    history: Sequence[StoredMessage],
    *,
    system_prompt: str,
    model: str,
    max_tokens: int,
    context_budget_tokens: int,
) -> ModelRequest:
    """The request for the next assistant turn. `history` must end with a user turn."""
    system = ({"type": "text", "text": system_prompt, "cache_control": CACHE},)
    fixed = estimate_tokens(system) + estimate_tokens(TOOLS)
    turns = _turns(history)
    start = _first_kept(turns, max(context_budget_tokens - fixed - max_tokens, 1))
    kept = turns[start:]
    messages: list[JSON] = []
    user_turns = [i for i, (role, _) in enumerate(kept) if role is Role.USER]
    # Two moving breakpoints: the previous user turn (read from the cache) and this one (written).
    marked = set(user_turns[-2:])
    for i, (role, blocks) in enumerate(kept):
        content = list(blocks)
        if i == 0 and start > 0:
            content = [{"type": "text", "text": OMITTED_MARKER}, *content]
        if i in marked and content:
            content = _with_cache_mark(content)
        messages.append({"role": role.value, "content": content})
    return ModelRequest(
        system=system,
        messages=tuple(messages),
        tools=TOOLS,
        max_tokens=max_tokens,
        model=model,
    )
