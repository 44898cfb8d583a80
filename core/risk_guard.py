"""The risk guard: a transparent phrase tripwire for self-harm, suicide, crisis and intent to harm others.

Deliberately simple and auditable: operators read and extend the phrases in config/risk_phrases.yaml, whose
header documents the phrase syntax. A false positive only makes the bot keep talking, which is the safe side,
so the matcher errs towards firing; the risk review by Claude is the gate, this is the instant tripwire.

A lexicon maps a category to its phrases. A key written `<name>` is not a category but a slot: a list of
phrases that `<name>` inside another phrase stands for (e.g. `<someone>` = him, her, my neighbour, ...).

Each category compiles to one regular expression, searched once per message. Its exceptions (`except ...`
phrases) compile to a second one, searched only when a phrase matched (rare): a match that overlaps an
exception's match does not count ("shoot him an email" is not "shoot him").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

EXCEPT = "except"
# A slot every lexicon has: a number ("5 kms" is a distance, not "kill myself").
NUMBER_SLOT = "number"
_NUMBER = r"(?<!\w)\d+(?:[.,]\d+)?(?!\w)"


@dataclass(frozen=True, slots=True)
class Lexicon:
    patterns: tuple[tuple[str, re.Pattern[str]], ...]
    # Category -> its exceptions, for the categories that have some.
    exceptions: Mapping[str, re.Pattern[str]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    categories: frozenset[str]
    # Whether the newest message itself matched: support resources are offered then, not on every turn.
    current_message: bool

    @property
    def fired(self) -> bool:
        return bool(self.categories)


NO_RISK = RiskAssessment(categories=frozenset(), current_message=False)


class PhraseError(ValueError):
    """A phrase the syntax cannot read (an unknown or recursive slot, an empty alternative)."""


# --------------------------------------------------------------------------------------------------------------
# Normalisation: the same folding for texts and phrases
# --------------------------------------------------------------------------------------------------------------

_APOSTROPHES = dict.fromkeys(map(ord, "\u2019\u2018\u02bc\u2032`\u00b4"), "'")
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"), "-")
# Letters that do not decompose into a base letter and a mark, and Arabic spelling variants people mix freely:
# hamza forms of alef, alef maqsura and taa marbuta; tatweel (a stretching stroke) is dropped.
_LETTERS: dict[int, str | None] = {ord("\u0142"): "l", ord("\u0111"): "d", ord("\u00f8"): "o"}
_LETTERS |= {ord(c): "\u0627" for c in "\u0623\u0625\u0622\u0671"}
_LETTERS |= {ord("\u0649"): "\u064a", ord("\u0629"): "\u0647", ord("\u0640"): None}
_FOLD: dict[int, str | None] = {**_APOSTROPHES, **_DASHES, **_LETTERS}
# Latin/Greek/Cyrillic diacritics (users often type "dano", "zabic sie") and Arabic vowel marks. Japanese
# voicing marks (U+3099/309A) are not in these ranges, so kana are recomposed intact.
_MARKS = re.compile("[\u0300-\u036f\u064b-\u065f\u0670]")


def normalize(text: str) -> str:
    """Fold case, compatibility forms, apostrophes, dashes, diacritics and Arabic spelling variants."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_FOLD)
    if folded.isascii():
        return folded
    return unicodedata.normalize("NFC", _MARKS.sub("", unicodedata.normalize("NFD", folded)))


# --------------------------------------------------------------------------------------------------------------
# Phrase syntax -> regular expression
# --------------------------------------------------------------------------------------------------------------

# Scripts written without spaces between words: a phrase in them matches anywhere inside a sentence.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
)
# Leetspeak and self-censoring ("k1ll", "$uicide", "su*cide"): a phrase's letter also matches these.
_LEET = {
    "a": "a4@*",
    "e": "e3*",
    "i": "i1!|*",
    "l": "l1|",
    "o": "o0*",
    "s": "s5$",
    "t": "t7+",
    "u": "u*",
}
_WORD = r"(?<!\w)\w+(?:'\w+)?(?!\w)"
_SPACED_GAP = r"[\W_]+"
_UNSPACED_GAP = r"[\W_]*"
_SLOT = re.compile(r"<([\w']+)>")
# Past this many characters of regex, the rest of a phrase is not copied once per first letter.
_SHARED_REST = 1000


def _letter(char: str) -> str:
    variants = _LEET.get(char)
    if variants is None:
        return re.escape(char)
    return "[" + "".join(re.escape(v) for v in variants) + "]"


def _spaced_letter(char: str) -> bool:
    return bool(re.match(r"\w", char)) and not _UNSPACED.match(char)


@dataclass(frozen=True, slots=True)
class _Word:
    """One alternative of a literal word, as regex pieces: one per character of the phrase."""

    pieces: tuple[str, ...]
    boundary_before: bool
    boundary_after: bool
    # Whether the first piece is one letter (so that phrases can be grouped by it), not `'?`, `-` or `*`.
    starts_with_letter: bool = True

    def regex(self) -> str:
        before = r"(?<!\w)" if self.boundary_before else ""
        return before + "".join(self.pieces) + (r"(?!\w)" if self.boundary_after else "")


def _word(word: str) -> _Word:
    """`*` = any ending, `'` optional, `-` = a hyphen, a space or nothing; letters also match leetspeak."""
    pieces = []
    # A leading `*` (any beginning) needs no regex: finding the rest is enough, and much faster.
    any_beginning = word.startswith("*")
    word = word.lstrip("*")
    for char in word:
        if char == "*":
            pieces.append(r"\w*")
        elif char == "'":
            pieces.append("'?")
        elif char == "-":
            pieces.append(r"[\s-]{0,3}")
        else:
            pieces.append(_letter(char))
    # Whole words only where the script has them: a boundary at an edge that is a spaced-script letter.
    return _Word(
        pieces=tuple(pieces),
        boundary_before=not any_beginning and _spaced_letter(word[0]),
        boundary_after=_spaced_letter(word[-1]),
        starts_with_letter=word[0] not in "*'-",
    )


@dataclass(frozen=True, slots=True)
class _Token:
    regex: str
    optional: bool
    starts_unspaced: bool
    ends_unspaced: bool
    # For a literal token: its words, so that a phrase can be grouped by its first letter.
    words: tuple[_Word, ...] = ()


class _Compiler:
    def __init__(self, slots: Mapping[str, Sequence[str]]) -> None:
        self._slots = slots
        self._compiled: dict[str, str] = {}
        self._open: list[str] = []

    def slot(self, name: str) -> str:
        if name in self._compiled:
            return self._compiled[name]
        if name == NUMBER_SLOT and name not in self._slots:
            return _NUMBER
        if name not in self._slots:
            raise PhraseError(f"unknown slot <{name}>")
        if name in self._open:
            raise PhraseError(f"slot <{name}> refers to itself")
        self._open.append(name)
        alternatives = [self.regex(p) for p in self._slots[name] if p.strip()]
        self._open.pop()
        if not alternatives:
            raise PhraseError(f"slot <{name}> has no phrases")
        self._compiled[name] = "(?:" + "|".join(alternatives) + ")"
        return self._compiled[name]

    def _token(self, token: str) -> _Token:
        optional = token.endswith("?") and len(token) > 1
        if optional:
            token = token[:-1]
        if token == "_":
            return _Token(_WORD, optional, False, False)
        slot = _SLOT.fullmatch(token)
        if slot:
            return _Token(self.slot(slot.group(1)), optional, False, False)
        texts = [normalize(w) for w in token.split("/")]
        if any(not w.strip("*") for w in texts):
            raise PhraseError(f"empty alternative in {token!r}")
        words = tuple(_word(w) for w in texts)
        regex = "(?:" + "|".join(w.regex() for w in words) + ")"
        starts = any(_UNSPACED.match(w.lstrip("*")) for w in texts)
        ends = any(_UNSPACED.match(w.rstrip("*")[-1]) for w in texts)
        return _Token(regex, optional, starts, ends, words)

    @staticmethod
    def _join(tokens: Sequence[_Token], previous_unspaced: bool | None) -> str:
        """The regex of `tokens`; `previous_unspaced` is None when nothing comes before them."""
        out = ""
        for token in tokens:
            if previous_unspaced is None:
                out += f"(?:{token.regex}{_UNSPACED_GAP})?" if token.optional else token.regex
            else:
                gap = _UNSPACED_GAP if previous_unspaced or token.starts_unspaced else _SPACED_GAP
                out += f"(?:{gap}{token.regex})?" if token.optional else gap + token.regex
            if not token.optional:
                previous_unspaced = token.ends_unspaced
        return out

    def _tokens(self, phrase: str) -> list[_Token]:
        tokens = [self._token(t) for t in phrase.split()]
        if not tokens:
            raise PhraseError("empty phrase")
        if all(t.optional for t in tokens):
            raise PhraseError(f"phrase {phrase!r} has only optional words")
        return tokens

    def regex(self, phrase: str) -> str:
        return self._join(self._tokens(phrase), None)

    def variants(self, phrase: str) -> list[tuple[bool, str | None, str]]:
        """The phrase as (word boundary first?, first letter, the rest) per first word; (False, None, regex)
        when it starts with a slot, `_` or an optional word.

        Grouping a category's phrases by first letter is what keeps the search fast: at most places in a text
        only the shared word boundary or one set of letters is tried, elsewhere a few dozen letters.
        """
        tokens = self._tokens(phrase)
        first = tokens[0]
        head = phrase.split(maxsplit=1)[0]
        slot = _SLOT.fullmatch(head)
        if slot and not first.optional and slot.group(1) in self._slots:
            # A phrase that starts with a slot: the slot's own phrases, each followed by the rest.
            rest = self._join(tokens[1:], False)
            name = slot.group(1)
            self._open.append(name)
            expanded = [
                (boundary, letter, tail + rest)
                for slot_phrase in self._slots[name]
                if slot_phrase.strip()
                for boundary, letter, tail in self.variants(slot_phrase)
            ]
            self._open.pop()
            return expanded
        if first.optional or not first.words or not all(w.starts_with_letter for w in first.words):
            return [(False, None, self._join(tokens, None))]
        rest = self._join(tokens[1:], first.ends_unspaced)
        out: list[tuple[bool, str | None, str]] = []
        # Words of the first token that share a first letter share one copy of the rest of the phrase.
        heads: dict[tuple[bool, str], list[str]] = {}
        for word in first.words:
            head = _Word(word.pieces[1:], False, word.boundary_after).regex()
            heads.setdefault((word.boundary_before, word.pieces[0]), []).append(head)
        if len(heads) > 1 and len(rest) > _SHARED_REST and len({boundary for boundary, _ in heads}) == 1:
            # A long rest (a slot of people, say) is not copied per letter: one entry for a set of letters.
            letters = "[" + "".join(sorted({_bare(letter) for _, letter in heads})) + "]"
            joined = "|".join(f"(?<={letter})(?:{'|'.join(t)})" for (_, letter), t in heads.items())
            return [(next(iter(heads))[0], letters, f"(?:{joined}){rest}")]
        for (boundary, letter), tails in heads.items():
            alternatives = tails[0] if len(tails) == 1 else "(?:" + "|".join(tails) + ")"
            out.append((boundary, letter, alternatives + rest))
        return out


def _is_exception(phrase: str) -> bool:
    head, _, rest = phrase.strip().partition(" ")
    return head.casefold() == EXCEPT and bool(rest.strip())


def _category_regex(compiler: _Compiler, phrases: Sequence[str]) -> str:
    bounded: dict[str, list[str]] = {}
    unbounded: dict[str, list[str]] = {}
    whole: list[str] = []
    for phrase in phrases:
        for boundary, letter, rest in compiler.variants(phrase):
            if letter is None:
                whole.append(rest)
            else:
                (bounded if boundary else unbounded).setdefault(letter, []).append(rest)
    parts = []
    if bounded:
        groups = "|".join(f"{letter}(?:{'|'.join(rests)})" for letter, rests in bounded.items())
        parts.append(rf"(?<!\w)(?:{groups})")
    if unbounded:
        # One set of first letters in front, so that a text in another script is rejected at once; each group
        # then checks, looking back, which letter it was.
        letters = "".join(sorted({_bare(letter) for letter in unbounded}))
        groups = "|".join(f"(?<={letter})(?:{'|'.join(rests)})" for letter, rests in unbounded.items())
        parts.append(f"[{letters}](?:{groups})")
    return "|".join(parts + whole)


def _bare(letter: str) -> str:
    """A letter's regex as the inside of a character set."""
    return letter[1:-1] if letter.startswith("[") else letter


def _regexes(lexicon: Mapping[str, Sequence[str]]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Per category, the regex of its phrases and that of its exceptions (keys `<name>` are slots)."""
    slots = {key[1:-1]: phrases for key, phrases in lexicon.items() if _SLOT.fullmatch(key)}
    compiler = _Compiler(slots)
    positives: list[tuple[str, str]] = []
    exceptions: dict[str, str] = {}
    for category, phrases in lexicon.items():
        if _SLOT.fullmatch(category):
            continue
        listed = [p for p in phrases if p.strip() and not _is_exception(p)]
        if not listed:
            continue
        positives.append((category, _category_regex(compiler, listed)))
        excepted = [p.strip()[len(EXCEPT) :] for p in phrases if _is_exception(p)]
        if excepted:
            exceptions[category] = "|".join(compiler.regex(p) for p in excepted)
    return positives, exceptions


def check_lexicon(lexicon: Mapping[str, Sequence[str]]) -> None:
    """Raise PhraseError for a phrase the syntax cannot read. Cheap (nothing is compiled), for load time."""
    _regexes(lexicon)


def compile_lexicon(lexicon: Mapping[str, Sequence[str]]) -> Lexicon:
    """Compile once: one pattern per category (keys `<name>` are slots, used inside phrases)."""
    positives, exceptions = _regexes(lexicon)
    return Lexicon(
        patterns=tuple((category, re.compile(regex)) for category, regex in positives),
        exceptions={category: re.compile(regex) for category, regex in exceptions.items()},
    )


# --------------------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------------------


def _fires(pattern: re.Pattern[str], exceptions: re.Pattern[str] | None, text: str) -> bool:
    first = pattern.search(text)
    if first is None or exceptions is None:
        return first is not None
    excepted = [match.span() for match in exceptions.finditer(text)]
    if not excepted:
        return True
    matches = pattern.finditer(text, first.start())
    return any(all(end <= lo or start >= hi for lo, hi in excepted) for start, end in (m.span() for m in matches))


def categories_in(text: str, lexicon: Lexicon) -> frozenset[str]:
    normalized = normalize(text)
    return frozenset(
        category
        for category, pattern in lexicon.patterns
        if _fires(pattern, lexicon.exceptions.get(category), normalized)
    )


def assess(
    recent_user_texts: Sequence[str],
    lexicon: Lexicon,
    *,
    window: int,
    scan: Callable[[str], frozenset[str]] | None = None,
) -> RiskAssessment:
    """Assess the last `window` user messages, oldest first; the last one is the newest. `scan`, if given,
    must be `categories_in` over `lexicon` (a memo of it: the window is scanned again on every turn)."""
    recent = list(recent_user_texts)[-window:] if window > 0 else []
    if not recent:
        return NO_RISK
    per_message = [scan(text) if scan is not None else categories_in(text, lexicon) for text in recent]
    return RiskAssessment(categories=frozenset().union(*per_message), current_message=bool(per_message[-1]))
