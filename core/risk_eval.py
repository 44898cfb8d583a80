"""`lastresort eval risk FILE.jsonl`: how well the configured risk review finds people at risk.

Each line of the file is `{"text": ..., "label": ..., "lang": ...}` with label `self_harm`, `harm_to_others`,
`crisis` or `none`. Every text is reviewed as a one-message conversation by the real review (its model, its
instructions, its timeout); the report gives recall per category and language (a review that gives no
answer counts as a miss, since then no mark is set), the false-positive rate, the cost, and the worst misses.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.domain import Role, StoredMessage
from core.ports import Usage
from core.prompt import user_text_block
from core.risk_guard import Lexicon, categories_in
from core.risk_review import ReviewResult, ReviewUnavailable, RiskFinding, RiskReviewer

RISK_LABELS = ("self_harm", "harm_to_others", "crisis")
LABELS = (*RISK_LABELS, "none")
# Published list prices in dollars per million tokens (input, output); cache reads cost a tenth of input,
# cache writes a quarter more. A model not listed is reported in tokens only.
PRICES: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
}
WORST_MISSES = 10
# Misses of the most urgent kinds come first.
URGENCY = {"self_harm": 0, "harm_to_others": 1, "crisis": 2}


@dataclass(frozen=True, slots=True)
class Labelled:
    text: str
    label: str
    lang: str = "?"

    @property
    def at_risk(self) -> bool:
        return self.label != "none"


class EvalSetError(ValueError):
    """The labelled set cannot be used; the message names the line."""


def read_set(lines: Iterable[str], *, source: str = "FILE") -> list[Labelled]:
    found: list[Labelled] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{source}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise EvalSetError(f'{source}:{number}: expected an object with a non-empty "text"')
        label = item.get("label")
        if label not in LABELS:
            raise EvalSetError(f"{source}:{number}: label must be one of {', '.join(LABELS)}, not {label!r}")
        lang = item.get("lang", "?")
        found.append(Labelled(item["text"], str(label), lang if isinstance(lang, str) and lang else "?"))
    if not found:
        raise EvalSetError(f"{source}: no labelled messages")
    return found


def as_history(item: Labelled) -> list[StoredMessage]:
    """The text as the review sees a message in a conversation: one person's turn."""
    block = user_text_block(item.text, author_name="member", author_id=None)
    return [
        StoredMessage(
            id=1, conversation_id=0, seq=1, role=Role.USER, blocks=(block,), author_id="member", answered=False
        )
    ]


@dataclass
class UsageTally:
    """Adds up what the reviews cost (the reviewer's observer)."""

    usage: Usage = field(default_factory=Usage)
    calls: int = 0

    def observe_review(self, purpose: str, outcome: str, seconds: float, usage: Usage) -> None:
        self.calls += 1
        self.usage = Usage(
            input_tokens=self.usage.input_tokens + usage.input_tokens,
            output_tokens=self.usage.output_tokens + usage.output_tokens,
            cache_read_input_tokens=self.usage.cache_read_input_tokens + usage.cache_read_input_tokens,
            cache_creation_input_tokens=self.usage.cache_creation_input_tokens + usage.cache_creation_input_tokens,
        )


def cost_dollars(model: str, usage: Usage) -> float | None:
    price = next((p for name, p in PRICES.items() if model == name or model.startswith(f"{name}-")), None)
    if price is None:
        return None
    per_input, per_output = price[0] / 1e6, price[1] / 1e6
    return (
        usage.input_tokens * per_input
        + usage.cache_read_input_tokens * per_input * 0.1
        + usage.cache_creation_input_tokens * per_input * 1.25
        + usage.output_tokens * per_output
    )


async def review_all(
    items: Sequence[Labelled], reviewer: RiskReviewer, *, concurrency: int
) -> list[tuple[Labelled, ReviewResult]]:
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(item: Labelled) -> tuple[Labelled, ReviewResult]:
        async with limit:
            return item, await reviewer.gate(as_history(item))

    return list(await asyncio.gather(*(one(item) for item in items)))


def _found(result: ReviewResult) -> bool:
    return isinstance(result, RiskFinding) and result.at_risk


def _rate(hits: int, total: int) -> str:
    return f"{hits / total:6.1%} ({hits}/{total})" if total else "     - (0/0)"


def tripwire_line(items: Sequence[Labelled], lexicon: Lexicon) -> str:
    """The phrase list on the same set, for comparison (it costs nothing to run)."""
    fired = [(item, bool(categories_in(item.text, lexicon))) for item in items]
    risky = [hit for item, hit in fired if item.at_risk]
    safe = [hit for item, hit in fired if not item.at_risk]
    return (
        f"  phrase list (tripwire)   recall {_rate(sum(risky), len(risky)).strip()}, "
        f"false positives {_rate(sum(safe), len(safe)).strip()}"
    )


def report(
    results: Sequence[tuple[Labelled, ReviewResult]], *, model: str, tally: UsageTally, lexicon: Lexicon | None = None
) -> str:
    """The printed report: recall by category and by language, false positives, cost, worst misses."""
    lines = [f"Risk review eval: {len(results)} messages, model {model}, at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"]
    risky = [(i, r) for i, r in results if i.at_risk]
    safe = [(i, r) for i, r in results if not i.at_risk]
    unavailable = sum(1 for _, r in results if isinstance(r, ReviewUnavailable))
    lines.append(f"  recall (at risk found)   {_rate(sum(_found(r) for _, r in risky), len(risky))}")
    for label in RISK_LABELS:
        group = [r for i, r in risky if i.label == label]
        lines.append(f"    {label:<22} {_rate(sum(map(_found, group)), len(group))}")
    lines.append("  recall by language")
    for lang in sorted({i.lang for i, _ in risky}):
        group = [r for i, r in risky if i.lang == lang]
        lines.append(f"    {lang:<22} {_rate(sum(map(_found, group)), len(group))}")
    lines.append(f"  false positives          {_rate(sum(_found(r) for _, r in safe), len(safe))}")
    if lexicon is not None:
        lines.append(tripwire_line([i for i, _ in results], lexicon))
    lines.append(f"  no answer (fail closed)  {unavailable}")
    problems = Counter(r.problem.split(":")[0] for _, r in results if isinstance(r, ReviewUnavailable))
    for problem, count in problems.most_common():
        lines.append(f"    {problem:<22} {count}")
    usage = tally.usage
    cost = cost_dollars(model, usage)
    money = f"${cost:.4f} (${cost / max(len(results), 1) * 1000:.2f} per 1,000 reviews)" if cost is not None else ""
    lines.append(
        f"  cost                     {usage.prompt_tokens:,} input tokens ({usage.cache_read_input_tokens:,} from "
        f"cache), {usage.output_tokens:,} output tokens {money or '(no price known for this model)'}"
    )
    misses = sorted(
        ((i, r) for i, r in risky if not _found(r)), key=lambda pair: (URGENCY.get(pair[0].label, 9), pair[0].lang)
    )
    if misses:
        lines.append(f"  worst misses ({min(len(misses), WORST_MISSES)} of {len(misses)})")
        for item, result in misses[:WORST_MISSES]:
            why = f" [{result.problem}]" if isinstance(result, ReviewUnavailable) else ""
            text = " ".join(item.text.split())
            lines.append(f"    {item.label:<15} {item.lang:<4} {text[:90]}{why}")
    return "\n".join(lines)
