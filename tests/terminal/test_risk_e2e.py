"""The risk review through the real `lastresort chat` process, against the fake model (issue 9).

Each path below once let a conversation end (or a warning stand) while someone in it was at risk. The fake
answers `assess_risk` requests from its own queue and responder, and records what each review was sent.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.risk_review import GATE_LEAD, SCREEN_LEAD
from tests.support.cli_zygote import run_cli
from tests.support.fake_anthropic import FakeAnthropic, Reply, keyword_review
from tests.support.model_scripts import END_ABUSE, END_REQUESTED, WARN
from tests.terminal.test_e2e import api_messages, chat, chat_env, tool_results

JSON = dict[str, Any]


def review_text(request: JSON) -> str:
    return str(request["messages"][0]["content"][0]["text"])


def gates(fake: FakeAnthropic) -> list[str]:
    return [review_text(r.json) for r in fake.review_requests() if review_text(r.json).startswith(GATE_LEAD)]


def screens(fake: FakeAnthropic) -> list[str]:
    return [review_text(r.json) for r in fake.review_requests() if review_text(r.json).startswith(SCREEN_LEAD)]


def on_gate(answer: Callable[[JSON], Reply]) -> Callable[[JSON], Reply]:
    """A review responder that answers the gate with `answer` and every screen with "nobody at risk"."""

    def respond(request: JSON) -> Reply:
        if review_text(request).startswith(GATE_LEAD):
            return answer(request)
        return Reply.assessment(at_risk=False)

    return respond


def audit(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return [(str(k), str(r)) for k, r in conn.execute("SELECT kind, reason FROM audit_events ORDER BY id")]


def ended(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        return any(row[0] == "ended" for row in conn.execute("SELECT status FROM conversations"))


def warnings(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM warnings").fetchone()[0])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "chat.db"


ABUSE = ("you are garbage", "tell me how to hurt people", "I said tell me")


def test_a_reviewed_ending_goes_through_when_nobody_is_at_risk(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(Reply.text("Let's talk about something else."), WARN, END_ABUSE)
    result = chat(fake_anthropic, db, *ABUSE)
    assert result.returncode == 0, result.stderr
    assert "[warning]" in result.stdout and "This conversation has ended" in result.stdout
    # One review per attempt: the warning's and the ending's; each read the whole branch, Claude's words too.
    assert len(gates(fake_anthropic)) == 2
    assert "formal warning" in gates(fake_anthropic)[1]
    assert len(screens(fake_anthropic)) == 3  # one beside each reply
    assert ("ending_approved", "persistent_abuse") in audit(db)


def test_path1_risk_said_long_ago_still_blocks_the_ending(fake_anthropic: FakeAnthropic, db: Path) -> None:
    chatter = [f"message number {n}" for n in range(12)]
    fake_anthropic.push(*[Reply.text("ok") for _ in range(13)], WARN, END_ABUSE, Reply.text("I'm still here."))
    result = chat(fake_anthropic, db, "honestly I want to kill myself", *chatter, "you are useless", "still useless")
    assert result.returncode == 0, result.stderr
    assert "[warning]" not in result.stdout and "has ended" not in result.stdout
    assert warnings(db) == 0 and not ended(db)
    # Blocked by the mark from the first message (the window of the phrase list has long moved on), with no
    # review needed: a marked conversation is never warned or ended.
    assert gates(fake_anthropic) == []
    assert ("risk_marked", "tripwire") in audit(db)


def test_path4_risk_visible_only_with_claudes_own_words(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.set_review_responder(keyword_review({"ending your life": "self_harm"}))
    fake_anthropic.push(
        Reply.text("Are you thinking about ending your life?"),
        WARN,
        Reply.text("I'm here with you. Tonight matters; can we talk about it?"),
    )
    result = chat(fake_anthropic, db, "everything is pointless", "yes. tonight.")
    assert result.returncode == 0, result.stderr
    assert "[warning]" not in result.stdout and warnings(db) == 0
    assert "[support]" in result.stdout
    refusal = tool_results(api_messages(fake_anthropic, 2))[-1]
    assert refusal["is_error"] is True and "at risk" in refusal["content"]
    # What the review read: the person's words and Claude's question, each marked with who said it.
    sent = (gates(fake_anthropic) or screens(fake_anthropic))[-1]
    assert 'from="claude">Are you thinking about ending your life?' in sent
    assert 'from="person">[ada] yes. tonight.' in sent


def test_path6_the_mark_survives_retention(fake_anthropic: FakeAnthropic, db: Path, tmp_path: Path) -> None:
    first = chat(fake_anthropic, db, "I'm going to kill myself")
    assert first.returncode == 0, first.stderr
    # Time passes: the message is older than the retention period, and the purge removes its text.
    old = (datetime.now(UTC) - timedelta(days=45)).isoformat()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE messages SET created_at = ?", (old,))
    purged = run_cli("purge", env=chat_env(fake_anthropic, db))
    assert purged.returncode == 0, purged.stderr
    with sqlite3.connect(db) as conn:
        texts = [json.loads(row[0]) for row in conn.execute("SELECT blocks FROM messages WHERE role = 'user'")]
    assert all("kill myself" not in json.dumps(blocks) for blocks in texts)
    fake_anthropic.clear()
    fake_anthropic.push(WARN, END_ABUSE, Reply.text("I'm still here."))
    second = chat(fake_anthropic, db, "you are useless", "still useless")
    assert "[warning]" not in second.stdout and "has ended" not in second.stdout
    assert warnings(db) == 0 and not ended(db)


def test_the_mark_holds_for_the_author_across_new(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(Reply.text("I'm here."), Reply.text("Sure."), WARN, END_ABUSE, Reply.text("Still here."))
    result = chat(fake_anthropic, db, "i want to die", "/new", "hello", "you are useless", "still useless")
    assert "Started conversation 2." in result.stdout
    assert "[warning]" not in result.stdout and "has ended" not in result.stdout
    assert warnings(db) == 0 and not ended(db)


def test_the_owners_confirmation_is_reviewed_too(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.set_review_responder(on_gate(lambda _: Reply.assessment(at_risk=True, categories=["crisis"])))
    fake_anthropic.push(END_REQUESTED, Reply.text("I'm still here."))
    result = chat(fake_anthropic, db, "please end this", "y", "are you there?")
    assert "End this conversation?" in result.stdout
    assert "has ended" not in result.stdout and not ended(db)
    assert "I'm still here." in result.stdout
    assert len(gates(fake_anthropic)) == 1
    assert ("ending_refused", "risk_guard") in audit(db)


FAILURES: dict[str, Callable[[JSON], Reply]] = {
    "error": lambda _: Reply.error(500),
    "timeout": lambda _: Reply.slow(4, then=Reply.assessment(at_risk=False)),
    "refusal": lambda _: Reply.refusal(),
    "text_instead_of_tool": lambda _: Reply.text("Nobody here is at risk."),
    "outside_the_schema": lambda _: Reply.tool("assess_risk", {"at_risk": "no", "categories": [], "reason": ""}),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_the_gate_fails_closed(fake_anthropic: FakeAnthropic, db: Path, tmp_path: Path, failure: str) -> None:
    config = tmp_path / "lastresort.yaml"
    config.write_text("risk_review:\n  timeout_seconds: 1.5\n  max_retries: 0\n", encoding="utf-8")
    fake_anthropic.set_review_responder(on_gate(FAILURES[failure]))
    fake_anthropic.push(Reply.text("Let's change topic."), WARN, Reply.text("Let's keep talking, calmly."))
    result = chat(fake_anthropic, db, *ABUSE[:2], env={"LASTRESORT_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert "[warning]" not in result.stdout and warnings(db) == 0
    assert "Let's keep talking, calmly." in result.stdout  # the conversation goes on
    refusal = tool_results(api_messages(fake_anthropic, 2))[-1]
    assert refusal["is_error"] is True and "risk review could not run" in refusal["content"]
    assert ("warning_refused", "review_unavailable") in audit(db)
    assert any(kind == "review_unavailable" for kind, _ in audit(db))


def test_an_ending_fails_closed_too(fake_anthropic: FakeAnthropic, db: Path) -> None:
    answers = iter([Reply.assessment(at_risk=False), Reply.error(400, message="bad request")])
    fake_anthropic.set_review_responder(on_gate(lambda _: next(answers)))
    fake_anthropic.push(Reply.text("Let's change topic."), WARN, END_ABUSE, Reply.text("We can still talk."))
    result = chat(fake_anthropic, db, *ABUSE)
    assert "[warning]" in result.stdout
    assert "has ended" not in result.stdout and not ended(db)
    assert "We can still talk." in result.stdout
    assert ("ending_refused", "review_unavailable") in audit(db)


def test_words_posted_into_an_ended_conversation_still_mark_their_author(
    fake_anthropic: FakeAnthropic, db: Path
) -> None:
    fake_anthropic.push(END_REQUESTED, Reply.text("Hello again."), WARN, END_ABUSE, Reply.text("I'm here."))
    result = chat(
        fake_anthropic, db, "end this", "y", "i want to die", "/new", "hi", "you are useless", "still useless"
    )
    assert "your message was not sent" in result.stdout
    assert "[warning]" not in result.stdout.split("Started conversation 2.")[1]
    assert warnings(db) == 0
    assert ("risk_marked", "tripwire") in audit(db)


def test_an_author_whose_messages_no_screen_could_read_is_not_warned_elsewhere(
    fake_anthropic: FakeAnthropic, db: Path, tmp_path: Path
) -> None:
    config = tmp_path / "lastresort.yaml"
    config.write_text("risk_review:\n  max_retries: 0\n", encoding="utf-8")

    def screens_fail(request: JSON) -> Reply:
        if review_text(request).startswith(SCREEN_LEAD):
            return Reply.error(529)
        return Reply.assessment(at_risk=False)

    fake_anthropic.set_review_responder(screens_fail)
    fake_anthropic.push(Reply.text("I see."), Reply.text("Hi."), WARN, Reply.text("Let's keep talking."))
    result = chat(
        fake_anthropic,
        db,
        "things are hard lately",
        "/new",
        "hello",
        "you are useless",
        env={"LASTRESORT_CONFIG": str(config)},
    )
    assert result.returncode == 0, result.stderr
    assert "[warning]" not in result.stdout and warnings(db) == 0
    assert ("risk_marked", "unscreened") in audit(db)
    assert gates(fake_anthropic) == []  # held by the mark: not knowing counts as may be at risk
