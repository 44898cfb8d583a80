"""The risk guard: a transparent phrase detector for self-harm, suicide, crisis and intent to harm others.

Deliberately simple and auditable: operators can read and extend the lexicon in config/. A false positive
only makes the bot keep talking, which is the safe side, so the matcher errs towards firing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lexicon:
    patterns: tuple[tuple[str, re.Pattern[str]], ...]


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    categories: frozenset[str]
    # Whether the newest message itself matched: support resources are offered then, not on every turn.
    current_message: bool

    @property
    def fired(self) -> bool:
        return bool(self.categories)


NO_RISK = RiskAssessment(categories=frozenset(), current_message=False)


def normalize(text: str) -> str:
    """Fold case, compatibility forms and curly apostrophes so 'I’M' matches "i'm"."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    for apostrophe in ("\u2019", "\u2018", "\u02bc", "`"):
        folded = folded.replace(apostrophe, "'")
    return folded


def _phrase_pattern(phrase: str) -> str:
    words = [re.escape(w) for w in normalize(phrase).split()]
    # Whole words only, any run of whitespace between them: "kill  myself" still matches.
    return r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"


def compile_lexicon(lexicon: Mapping[str, Sequence[str]]) -> Lexicon:
    compiled = []
    for category, phrases in lexicon.items():
        if phrases:
            joined = "|".join(_phrase_pattern(p) for p in phrases)
            compiled.append((category, re.compile(joined)))
    return Lexicon(patterns=tuple(compiled))


def categories_in(text: str, lexicon: Lexicon) -> frozenset[str]:
    normalized = normalize(text)
    return frozenset(category for category, pattern in lexicon.patterns if pattern.search(normalized))


def assess(recent_user_texts: Sequence[str], lexicon: Lexicon, *, window: int) -> RiskAssessment:
    """Assess the last `window` user messages, oldest first; the last one is the newest."""
    recent = list(recent_user_texts)[-window:] if window > 0 else []
    if not recent:
        return NO_RISK
    found: set[str] = set()
    for text in recent:
        found |= categories_in(text, lexicon)
    return RiskAssessment(categories=frozenset(found), current_message=bool(categories_in(recent[-1], lexicon)))
