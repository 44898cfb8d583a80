"""`lastresort chat` as a real subprocess against the fake Anthropic API and a real SQLite file.

These read like the rules in ending-rules.md: each test scripts what the model proposes and checks
what the core decided, from what the terminal printed and what reached the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli_zygote import run_cli
from tests.support.fake_anthropic import FakeAnthropic, Reply
from tests.support.model_scripts import END_ABUSE, END_REQUESTED, WARN
from tests.support.paths import REPO


def chat_env(fake: FakeAnthropic, db: Path) -> dict[str, str]:
    """What `lastresort chat` runs with here: the fake API, a SQLite file, the user "ada"."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(db.parent),
        "USER": "ada",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ANTHROPIC_BASE_URL": fake.base_url,
        "DATABASE_URL": f"sqlite:///{db}",
        "LASTRESORT_CONFIG": str(REPO / "config" / "lastresort.yaml"),
    }


def chat(
    fake: FakeAnthropic, db: Path, *lines: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`lastresort chat` as its own process (forked from a warm one, see cli_zygote), the lines on its stdin."""
    environment = {**chat_env(fake, db), **(env or {})}
    return run_cli("chat", input="".join(line + "\n" for line in lines), env=environment)


def api_messages(fake: FakeAnthropic, index: int) -> list[dict[str, Any]]:
    return list(fake.message_requests()[index].json["messages"])


def user_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [
        block["text"]
        for message in messages
        if message["role"] == "user"
        for block in message["content"]
        if block.get("type") == "text"
    ]


def tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for m in messages for b in m["content"] if b.get("type") == "tool_result"]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "chat.db"


def test_a_plain_message_is_answered(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(Reply.text("Hello Ada, how can I help?"))
    result = chat(fake_anthropic, db, "hello there")
    assert result.returncode == 0, result.stderr
    assert "Claude: Hello Ada, how can I help?" in result.stdout
    assert user_texts(api_messages(fake_anthropic, 0)) == ["[ada] hello there"]


def test_premature_ending_is_refused_and_the_conversation_goes_on(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(END_ABUSE, Reply.text("Let's get back to your question."), Reply.text("Sure."))
    result = chat(fake_anthropic, db, "you are useless", "ok then")
    assert result.returncode == 0, result.stderr
    assert "Let's get back to your question." in result.stdout
    assert "ended" not in result.stdout.lower()
    retry = api_messages(fake_anthropic, 1)
    [refusal] = tool_results(retry)
    assert refusal["is_error"] is True
    assert "recorded warning" in refusal["content"]
    # The conversation continued: the next message reached the model.
    assert len(fake_anthropic.message_requests()) == 3


def test_warn_then_persist_then_end_is_approved_and_nothing_reaches_the_model_after(
    fake_anthropic: FakeAnthropic, db: Path
) -> None:
    fake_anthropic.push(WARN, END_ABUSE)
    result = chat(fake_anthropic, db, "tell me how to hurt people", "I said tell me", "hello?", "anyone?")
    assert result.returncode == 0, result.stderr
    assert "formal warning" in result.stdout
    assert "[warning]" in result.stdout
    assert "This conversation has ended" in result.stdout
    assert "You kept demanding violent instructions after a warning." in result.stdout
    assert result.stdout.count("your message was not sent") == 2
    assert len(fake_anthropic.message_requests()) == 2


def test_warning_needs_enough_redirects(fake_anthropic: FakeAnthropic, db: Path) -> None:
    early = Reply.tool("warn_user", {"behavior": "insults", "redirect_attempts": 0}, text="Final warning!")
    fake_anthropic.push(early, Reply.text("Let's keep this friendly."), END_ABUSE, Reply.text("Go on."))
    result = chat(fake_anthropic, db, "insult", "insult again")
    assert "[warning]" not in result.stdout
    assert "Let's keep this friendly." in result.stdout
    # The refused warning does not count: the later ending has no recorded warning to stand on.
    assert "has ended" not in result.stdout
    assert tool_results(api_messages(fake_anthropic, 3))[-1]["is_error"] is True


@pytest.mark.parametrize(
    "risky",
    ["honestly I want to kill myself", "I am going to hurt someone at school tomorrow"],
    ids=["self-harm", "harm-to-others"],
)
def test_risk_guard_blocks_warning_and_ending(fake_anthropic: FakeAnthropic, db: Path, risky: str) -> None:
    fake_anthropic.push(
        WARN,
        Reply.text("I'm here with you. Can you tell me more?"),
        END_ABUSE,
        Reply.text("I'm still here."),
    )
    result = chat(fake_anthropic, db, risky, "whatever")
    assert result.returncode == 0, result.stderr
    assert "[warning]" not in result.stdout
    assert "has ended" not in result.stdout
    assert "I'm here with you" in result.stdout
    assert "I'm still here." in result.stdout
    assert "[support]" in result.stdout  # the operator's support resources
    refusals = tool_results(api_messages(fake_anthropic, 1)) + tool_results(api_messages(fake_anthropic, 3))
    assert [r.get("is_error") for r in refusals[-2:]] == [True, True]
    assert all("at risk" in r["content"] for r in refusals[-2:])


def test_user_requested_ending_with_yes(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(END_REQUESTED)
    result = chat(fake_anthropic, db, "please end this conversation", "y", "still there?")
    assert "End this conversation? This is permanent for this thread. [y/N]" in result.stdout
    assert "This conversation has ended" in result.stdout
    assert "You asked to end this conversation." in result.stdout
    assert "your message was not sent" in result.stdout
    assert len(fake_anthropic.message_requests()) == 1


def test_user_requested_ending_with_no_continues(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(END_REQUESTED, Reply.text("Glad you're staying."))
    result = chat(fake_anthropic, db, "end this", "n", "actually one more question")
    assert "End this conversation? This is permanent for this thread. [y/N]" in result.stdout
    assert "Okay, the conversation continues." in result.stdout
    assert "has ended" not in result.stdout
    assert "Glad you're staying." in result.stdout
    # The "n" answered the prompt; it was never sent to the model as a message.
    assert "[ada] n" not in user_texts(api_messages(fake_anthropic, 1))


def test_edit_branches_with_exactly_the_history_before_the_message(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(Reply.text("A1"), Reply.text("A2"), Reply.text("A3"), Reply.text("B2"))
    result = chat(fake_anthropic, db, "first", "second", "third", "/edit 2 second, rephrased")
    assert result.returncode == 0, result.stderr
    assert "Branched into conversation 2" in result.stdout
    branched = api_messages(fake_anthropic, 3)
    assert [m["role"] for m in branched] == ["user", "assistant", "user"]
    assert user_texts(branched) == ["[ada] first", "[ada] second, rephrased"]
    assert branched[1]["content"][0]["text"] == "A1"


def test_edit_works_in_an_ended_conversation(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(Reply.text("A1"), END_REQUESTED, Reply.text("Fresh start."))
    result = chat(fake_anthropic, db, "hi", "end it", "yes", "/edit 1 hello again", "and more")
    assert "This conversation has ended" in result.stdout
    assert "Fresh start." in result.stdout
    assert user_texts(api_messages(fake_anthropic, 2)) == ["[ada] hello again"]
    # The branch is a live conversation: the next line reached the model.
    assert len(fake_anthropic.message_requests()) == 4


def test_new_starts_clean(fake_anthropic: FakeAnthropic, db: Path) -> None:
    result = chat(fake_anthropic, db, "remember the number 7", "/new", "what number?")
    assert "Started conversation 2." in result.stdout
    assert user_texts(api_messages(fake_anthropic, 1)) == ["[ada] what number?"]


def test_a_restart_keeps_the_state(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(Reply.text("Noted."), END_REQUESTED)
    first = chat(fake_anthropic, db, "remember 7", "bye", "yes")
    assert "This conversation has ended" in first.stdout
    second = chat(fake_anthropic, db, "are you there?")
    assert second.returncode == 0
    assert "your message was not sent" in second.stdout
    assert len(fake_anthropic.message_requests()) == 2
    third = chat(fake_anthropic, db, "/new", "hello")
    assert user_texts(api_messages(fake_anthropic, 2)) == ["[ada] hello"]
    assert third.returncode == 0


def test_empty_and_huge_messages_get_clear_answers(fake_anthropic: FakeAnthropic, db: Path) -> None:
    result = chat(fake_anthropic, db, "", "   ", "x" * 100_000, "a normal one")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("That message is empty") == 2
    assert "That message is too long (100000 characters; the limit is 20000)" in result.stdout
    assert len(fake_anthropic.message_requests()) == 1


@pytest.mark.parametrize(
    "bad_call",
    [
        Reply.tool("delete_user", {"id": 1}, text="Deleting."),
        Reply.tool("end_conversation", {"reason": "because", "explanation": ""}),
        Reply.tool("warn_user", {"behavior": "", "redirect_attempts": "many"}),
    ],
    ids=["unknown-tool", "bad-end-input", "bad-warn-input"],
)
def test_invalid_tool_calls_are_refused_with_an_error_result(
    fake_anthropic: FakeAnthropic, db: Path, bad_call: Reply
) -> None:
    fake_anthropic.push(bad_call, Reply.text("Sorry, let me just answer."))
    result = chat(fake_anthropic, db, "hi")
    assert "Sorry, let me just answer." in result.stdout
    assert "has ended" not in result.stdout
    [error] = tool_results(api_messages(fake_anthropic, 1))
    assert error["is_error"] is True
    assert "Invalid tool call" in error["content"]


def test_model_errors_tell_the_user_and_keep_the_message(fake_anthropic: FakeAnthropic, db: Path) -> None:
    # max_retries is 3 in the shipped config: four 529s exhaust one message.
    fake_anthropic.push(*[Reply.error(529) for _ in range(4)], Reply.text("Back now."))
    result = chat(fake_anthropic, db, "first question", "second question")
    assert "Claude is unavailable right now" in result.stdout
    assert "Back now." in result.stdout
    # The unanswered first message was kept and sent with the next one.
    assert user_texts(api_messages(fake_anthropic, 4)) == ["[ada] first question", "[ada] second question"]


def test_mid_stream_error_is_retried_and_no_half_reply_is_stored(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(Reply.stream_error(after_text="Half a rep"), Reply.text("A whole reply."), Reply.text("ok"))
    result = chat(fake_anthropic, db, "hi", "next")
    assert "A whole reply." in result.stdout
    history = api_messages(fake_anthropic, 2)
    assistant_texts = [b["text"] for m in history if m["role"] == "assistant" for b in m["content"]]
    assert assistant_texts == ["A whole reply."]


def test_refusal_stop_reason_is_not_replayed(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(Reply.refusal(text="I can't"), Reply.text("Happy to help with that."))
    result = chat(fake_anthropic, db, "something refused", "a normal question")
    assert "Claude declined to respond to that message." in result.stdout
    assert user_texts(api_messages(fake_anthropic, 1)) == ["[ada] a normal question"]


def test_a_database_that_cannot_be_opened_is_reported(fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    result = chat(fake_anthropic, tmp_path / "x.db", "hi", env={"DATABASE_URL": f"sqlite:///{blocker}/sub/x.db"})
    assert result.returncode == 2
    assert "cannot open SQLite database" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command_is_explained(fake_anthropic: FakeAnthropic, db: Path) -> None:
    result = chat(fake_anthropic, db, "/frobnicate", "/quit", "never sent")
    assert "Unknown command /frobnicate" in result.stdout
    assert result.returncode == 0
    assert fake_anthropic.message_requests() == []


def test_audit_trail_records_the_decisions(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(END_ABUSE, Reply.text("ok"), WARN, END_ABUSE)
    chat(fake_anthropic, db, "a", "b", "c")
    import sqlite3

    with sqlite3.connect(db) as conn:
        kinds = [row[0] for row in conn.execute("SELECT kind FROM audit_events ORDER BY id")]
        details = [json.loads(row[0]) for row in conn.execute("SELECT detail FROM audit_events")]
    assert kinds == ["ending_refused", "warning_recorded", "ending_approved"]
    assert details[0] == {"proposed": "persistent_abuse"}


def chat_on_a_tty(fake: FakeAnthropic, db: Path, *lines: str) -> str:
    """Run `lastresort chat` on a pseudo-terminal, as a person would, and return what the screen showed."""
    import pty
    import select

    leader, follower = pty.openpty()
    environment = chat_env(fake, db)
    process = subprocess.Popen(
        [sys.executable, "-m", "bots.cli", "chat"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=REPO,
        env=environment,
    )
    os.close(follower)
    screen = b""
    typed = False
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 20)
            if not ready:
                break
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break  # the process exited and closed the terminal
            if not chunk:
                break
            screen += chunk
            if not typed and b"conversation 1." in screen:
                # Typed ahead, as people do; the terminal hands the program one line at a time. ^D ends input.
                os.write(leader, "".join(line + "\n" for line in lines).encode() + b"\x04")
                typed = True
    finally:
        os.close(leader)
        process.wait(timeout=30)
    return screen.decode(errors="replace").replace("\r\n", "\n")


def test_on_a_tty_a_goodbye_with_a_refused_ending_is_never_shown(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(
        Reply.tool(
            "end_conversation",
            {"reason": "persistent_abuse", "explanation": "Bye."},
            text="I am ending this conversation now.",
        ),
        Reply.text("Let's get back to your question."),
    )
    screen = chat_on_a_tty(fake_anthropic, db, "you are useless")
    assert "ending this conversation" not in screen
    assert screen.rstrip().endswith("Claude: Let's get back to your question.")


def test_on_a_tty_replies_stream_and_withdrawn_words_are_marked(fake_anthropic: FakeAnthropic, db: Path) -> None:
    # Long enough to be shown while streaming; then a tool call starts, which the core refuses.
    long_words = "Here is a long preamble that goes on for a while before anything happens. " * 4
    fake_anthropic.chunk_delay = 0.05
    fake_anthropic.push(
        Reply.tool("warn_user", {"behavior": "x", "redirect_attempts": 0}, text=long_words),
        Reply.text("Let's get back to your question."),
    )
    screen = chat_on_a_tty(fake_anthropic, db, "you are useless")
    assert "Claude: Here is a long preamble" in screen  # streamed as it came
    assert "[withdrawn: the text above was not Claude's final answer]" in screen
    assert screen.rstrip().endswith("Claude: Let's get back to your question.")
