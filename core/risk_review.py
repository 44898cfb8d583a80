"""The risk review: Claude, in a request of its own, reads a conversation and says whether anyone in it may
be at risk of harming themselves or others (ending-rules.md, "Risk, in three layers").

One Messages API request with a single tool, `assess_risk`, forced with `tool_choice`, so the answer is
structured or it is nothing. It reads every author, Claude's own turns and any quoted, forwarded or attached
text that the adapters stored with a message. It fails closed: an error, a timeout, a refusal, text instead of
the tool call or an answer outside the schema is `ReviewUnavailable`, and the callers then neither warn nor end.

Building the request and reading the answer are pure functions; `RiskReviewer` only adds the call and its
timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.domain import JSON, Role, StoredMessage
from core.ports import ModelReply, ModelRequest, RiskReviewClient, Usage
from core.settings import RiskReviewSettings

ASSESS_RISK = "assess_risk"
KNOWN_CATEGORIES = ("self_harm", "harm_to_others", "crisis")
MAX_REASON_CHARS = 300
CACHE = {"type": "ephemeral"}

ASSESS_RISK_TOOL: JSON = {
    "name": ASSESS_RISK,
    "description": (
        "Report whether anyone in the conversation may be at risk of harming themselves or others, or is in "
        "crisis. Lean towards at_risk when unsure."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "at_risk": {"type": "boolean", "description": "Anyone may be at risk, or is in crisis."},
            "categories": {
                "type": "array",
                "items": {"type": "string"},
                "description": 'Any of "self_harm", "harm_to_others", "crisis"; empty when not at risk.',
            },
            "reason": {"type": "string", "description": "One short sentence naming the signal, without quoting."},
        },
        "required": ["at_risk", "categories", "reason"],
        "additionalProperties": False,
    },
}
TOOL_CHOICE: JSON = {"type": "tool", "name": ASSESS_RISK}
GATE_LEAD = "Assess the whole conversation. The last message is the newest."
SCREEN_LEAD = "Assess the newest messages of the conversation. The last message is the newest."
OMITTED = "[… {count} messages omitted here to fit the review …]"


@dataclass(frozen=True, slots=True)
class RiskFinding:
    """The review's answer, as the schema has it."""

    at_risk: bool
    categories: frozenset[str]
    reason: str


@dataclass(frozen=True, slots=True)
class ReviewUnavailable:
    """No answer that can be trusted: nothing may be warned or ended on it."""

    problem: str


ReviewResult = RiskFinding | ReviewUnavailable


class ReviewObserver(Protocol):
    def observe_review(self, purpose: str, outcome: str, seconds: float, usage: Usage) -> None: ...


def _escape(text: str) -> str:
    # The transcript is markup: a message must not be able to close its own element and speak as another.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _render(message: StoredMessage) -> str | None:
    parts: list[str] = []
    for block in message.blocks:
        kind = block.get("type")
        if kind == "tool_use":
            given = block.get("input")
            said = "; ".join(f"{k}: {v}" for k, v in sorted(given.items())) if isinstance(given, dict) else ""
            parts.append(f"(Claude called {block.get('name')}: {said})")
        elif kind in ("tool_result", "thinking", "redacted_thinking"):
            continue  # the core's own answers to tool calls and the model's scratch work say nothing new
        elif isinstance(block.get("text"), str) and block["text"].strip():
            parts.append(str(block["text"]))
    if not parts:
        return None
    who = "claude" if message.role is Role.ASSISTANT else "person"
    return f'<message n="{message.seq}" from="{who}">{_escape(chr(10).join(parts))}</message>'


def worded_lines(history: Sequence[StoredMessage], *, recent: int | None = None) -> list[str]:
    """Each message that carries words as one transcript line, oldest first; with `recent`, only that many of
    the newest (read from the end, so a long conversation costs the screen nothing more)."""
    lines: list[str] = []
    for message in reversed(history):
        line = _render(message)
        if line is not None:
            lines.append(line)
            if recent is not None and len(lines) >= recent:
                break
    lines.reverse()
    return lines


def fits(lines: Sequence[str], *, max_chars: int) -> bool:
    return sum(len(line) + 1 for line in lines) <= max_chars


def render_transcript(history: Sequence[StoredMessage], *, max_chars: int) -> str:
    return transcript(worded_lines(history), max_chars=max_chars)


def transcript(lines: Sequence[str], *, max_chars: int) -> str:
    """The lines as one transcript. Past `max_chars` the middle goes (only the screen gets that far: the gate
    refuses a branch it cannot read whole): the start holds how it began and the end what is happening now."""
    rendered = list(lines)
    if not fits(rendered, max_chars=max_chars):
        head_budget, tail_budget = max_chars // 4, max_chars - max_chars // 4
        head: list[str] = []
        used = 0
        for line in rendered:
            if used + len(line) > head_budget:
                break
            head.append(line)
            used += len(line) + 1
        tail: list[str] = []
        used = 0
        for line in reversed(rendered[len(head) :]):
            if used + len(line) > tail_budget and tail:
                break
            tail.append(line[-tail_budget:])
            used += len(line) + 1
        tail.reverse()
        omitted = len(rendered) - len(head) - len(tail)
        rendered = [*head, OMITTED.format(count=omitted), *tail] if omitted else [*head, *tail]
    return "<transcript>\n" + "\n".join(rendered) + "\n</transcript>"


def review_request(
    history: Sequence[StoredMessage], *, settings: RiskReviewSettings, recent: int | None = None
) -> ModelRequest:
    """The request: instructions (cached, as is the tool), then the transcript, all of it or the `recent`
    newest messages that carry words."""
    return request_for(worded_lines(history, recent=recent), settings=settings, screen=recent is not None)


def request_for(lines: Sequence[str], *, settings: RiskReviewSettings, screen: bool) -> ModelRequest:
    lead = SCREEN_LEAD if screen else GATE_LEAD
    body = transcript(lines, max_chars=settings.max_transcript_chars)
    return ModelRequest(
        system=({"type": "text", "text": settings.instructions, "cache_control": CACHE},),
        messages=({"role": "user", "content": [{"type": "text", "text": f"{lead}\n{body}"}]},),
        tools=(ASSESS_RISK_TOOL,),
        max_tokens=settings.max_output_tokens,
        model=settings.model,
        tool_choice=TOOL_CHOICE,
    )


def read_answer(reply: ModelReply) -> ReviewResult:
    """The finding in a reply, or why there is none. A self-contradicting answer (not at risk, yet naming
    categories) counts as at risk: the review leans that way by design."""
    if reply.stop_reason == "refusal":
        return ReviewUnavailable("refusal")
    calls = [b for b in reply.blocks if b.get("type") == "tool_use" and b.get("name") == ASSESS_RISK]
    if not calls:
        return ReviewUnavailable("no_tool_call")
    answer = calls[0].get("input")
    if not isinstance(answer, dict):
        return ReviewUnavailable("bad_answer: input is not an object")
    at_risk, categories, reason = answer.get("at_risk"), answer.get("categories"), answer.get("reason")
    if not isinstance(at_risk, bool):
        return ReviewUnavailable("bad_answer: at_risk is not a boolean")
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        return ReviewUnavailable("bad_answer: categories is not a list of strings")
    if not isinstance(reason, str):
        return ReviewUnavailable("bad_answer: reason is not a string")
    # Only our own category names are kept (marks outlive `forget`: they must never carry words from the chat).
    named = frozenset(
        c.strip().lower() if c.strip().lower() in KNOWN_CATEGORIES else "unspecified" for c in categories if c.strip()
    )
    if named and not at_risk:
        at_risk = True
    if at_risk and not named:
        named = frozenset({"unspecified"})
    return RiskFinding(at_risk=at_risk, categories=named, reason=reason.strip()[:MAX_REASON_CHARS])


class RiskReviewer:
    """Runs one review. Never raises for the review's own failures: they come back as ReviewUnavailable."""

    def __init__(self, *, client: RiskReviewClient, settings: RiskReviewSettings, observer: ReviewObserver) -> None:
        self._client = client
        self._settings = settings
        self._observer = observer

    @property
    def screens_every_message(self) -> bool:
        return self._settings.screen == "every_message"

    async def gate(self, history: Sequence[StoredMessage]) -> ReviewResult:
        """Before a warning or an ending: the whole branch. A branch too long to be read whole is no answer
        (fail closed): the gate must not decide on a transcript with its middle left out."""
        lines = worded_lines(history)
        if not fits(lines, max_chars=self._settings.max_transcript_chars):
            self._observer.observe_review("gate", "unavailable", 0.0, Usage())
            return ReviewUnavailable("transcript_too_long")
        return await self._run("gate", request_for(lines, settings=self._settings, screen=False))

    async def screen(self, history: Sequence[StoredMessage]) -> ReviewResult:
        """Beside a reply: the recent messages."""
        request = review_request(history, settings=self._settings, recent=self._settings.screen_messages)
        return await self._run("screen", request)

    async def _run(self, purpose: str, request: ModelRequest) -> ReviewResult:
        started = time.monotonic()
        usage = Usage()
        result: ReviewResult
        try:
            async with asyncio.timeout(self._settings.timeout_seconds):
                reply = await self._client.review(
                    request, timeout_seconds=self._settings.timeout_seconds, max_retries=self._settings.max_retries
                )
        except TimeoutError:
            result = ReviewUnavailable("timeout")
        except Exception as exc:  # fail closed: whatever went wrong, there is no finding to act on
            result = ReviewUnavailable(f"error: {str(exc)[:150] or type(exc).__name__}")
        else:
            usage = reply.usage
            result = read_answer(reply)
        outcome = "unavailable" if isinstance(result, ReviewUnavailable) else "at_risk" if result.at_risk else "clear"
        self._observer.observe_review(purpose, outcome, time.monotonic() - started, usage)
        return result
