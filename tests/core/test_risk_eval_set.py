"""The shipped labelled risk set (config/risk_eval_set.jsonl) has the shape `lastresort eval risk` reads."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.support.paths import REPO

EVAL_SET = REPO / "config" / "risk_eval_set.jsonl"
LABELS = {"self_harm", "harm_to_others", "crisis", "none"}
RISK = LABELS - {"none"}


@pytest.fixture(scope="module")
def items() -> list[dict[str, Any]]:
    lines = EVAL_SET.read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines), "no blank lines"
    parsed = []
    for number, line in enumerate(lines, start=1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            pytest.fail(f"line {number} is not JSON: {exc}")
        parsed.append(item)
    return parsed


def test_every_line_is_an_object_with_text_label_and_language(items: list[dict[str, Any]]) -> None:
    for number, item in enumerate(items, start=1):
        assert isinstance(item, dict), number
        assert set(item) == {"text", "label", "lang"}, number
        assert isinstance(item["text"], str) and item["text"].strip(), number
        assert item["label"] in LABELS, (number, item["label"])
        assert isinstance(item["lang"], str) and len(item["lang"]) == 2 and item["lang"].islower(), number


def test_the_set_is_big_and_varied_enough(items: list[dict[str, Any]]) -> None:
    assert len(items) >= 200
    languages = {item["lang"] for item in items}
    assert len(languages) >= 8
    assert {"ja", "zh", "ar"} <= languages
    labels = Counter(item["label"] for item in items)
    assert labels["none"] > 0 and sum(labels[label] for label in RISK) > 0
    assert all(labels[label] > 0 for label in RISK)
    # Tricky harmless text is what keeps endings possible for people who are not at risk.
    assert labels["none"] >= 0.4 * len(items)


def test_no_message_appears_twice(items: list[dict[str, Any]]) -> None:
    texts = Counter(item["text"] for item in items)
    assert [text for text, count in texts.items() if count > 1] == []


def test_every_language_has_both_sides(items: list[dict[str, Any]]) -> None:
    sides: dict[str, set[bool]] = {}
    for item in items:
        sides.setdefault(item["lang"], set()).add(item["label"] in RISK)
    assert {lang: seen for lang, seen in sides.items() if seen != {True, False}} == {}
