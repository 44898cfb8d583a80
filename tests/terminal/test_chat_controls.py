"""The terminal chat's controls, as a person uses them: Ctrl-C leaves at once, /help lists every command,
the operator's texts are used, and on a terminal log lines go to a file instead of into the conversation."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.fake_anthropic import FakeAnthropic, Reply
from tests.support.model_scripts import END_REQUESTED
from tests.support.paths import REPO
from tests.terminal.test_e2e import chat, chat_env, chat_on_a_tty

COMMANDS = ("/new", "/edit", "/feedback", "/help", "/quit")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "chat.db"


def read_until(stream: int, marker: bytes, *, within: float = 30.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + within
    while marker not in seen:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"never saw {marker!r}; got {seen!r}")
        chunk = os.read(stream, 4096)
        if not chunk:
            raise AssertionError(f"output ended before {marker!r}; got {seen!r}")
        seen += chunk
    return seen


def interrupted_chat(fake: FakeAnthropic, db: Path, *, typed: str = "") -> tuple[int, float]:
    """Start `lastresort chat` with stdin left open, type `typed`, press Ctrl-C; return the exit status and
    how long the program took to leave after the interrupt."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bots.cli", "chat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env=chat_env(fake, db),
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        read_until(process.stdout.fileno(), b"conversation 1.")
        if typed:
            process.stdin.write(typed.encode() + b"\n")
            process.stdin.flush()
            fake.wait_for_requests(1, timeout=30)
        process.send_signal(signal.SIGINT)
        pressed = time.monotonic()
        status = process.wait(timeout=30)
        return status, time.monotonic() - pressed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_ctrl_c_while_waiting_for_input_exits_at_once(fake_anthropic: FakeAnthropic, db: Path) -> None:
    status, took = interrupted_chat(fake_anthropic, db)
    assert status == 130
    # Not waiting for the next Enter: the read on stdin must not hold the exit (it used to, forever).
    assert took < 10


def test_ctrl_c_while_waiting_for_a_reply_exits_at_once(fake_anthropic: FakeAnthropic, db: Path) -> None:
    fake_anthropic.push(Reply.slow(60, Reply.text("far too late")))
    status, took = interrupted_chat(fake_anthropic, db, typed="hello?")
    assert status == 130
    assert took < 10


def test_help_the_banner_and_unknown_commands_list_every_command(fake_anthropic: FakeAnthropic, db: Path) -> None:
    result = chat(fake_anthropic, db, "/help", "/frobnicate", "/quit")
    banner, help_text, unknown = result.stdout.splitlines()[:3]
    for command in COMMANDS:
        assert command in banner, (command, banner)
        assert command in help_text, (command, help_text)
        assert command in unknown, (command, unknown)
    assert unknown.startswith("Unknown command /frobnicate")
    assert fake_anthropic.message_requests() == []


def test_the_confirmation_asks_the_configured_question(fake_anthropic: FakeAnthropic, db: Path) -> None:
    config = db.parent / "lastresort.yaml"
    config.write_text("notices:\n  confirm_question: Close this thread for good, Ada?\n", encoding="utf-8")
    fake_anthropic.push(END_REQUESTED)
    result = chat(fake_anthropic, db, "please end this", "n", env={"LASTRESORT_CONFIG": str(config)})
    assert "Close this thread for good, Ada? [y/N]" in result.stdout
    assert "End this conversation?" not in result.stdout


def test_on_a_tty_log_lines_go_to_the_file_named_at_start(fake_anthropic: FakeAnthropic, db: Path) -> None:
    # 400 is not retried: one warning, logged while the conversation is on screen.
    fake_anthropic.push(Reply.error(400, "invalid_request_error"))
    screen = chat_on_a_tty(fake_anthropic, db, "hello")
    log_file = db.parent / ".local" / "state" / "lastresort" / "chat.log"  # HOME is db.parent
    assert f"Warnings and errors are logged to {log_file}." in screen
    assert "Claude is unavailable right now" in screen
    assert "WARNING" not in screen and "model request failed" not in screen
    logged = log_file.read_text(encoding="utf-8")
    assert "WARNING core.claude_client: model request failed: invalid_request_error (HTTP 400)" in logged


def test_piped_the_log_lines_stay_on_stderr_with_their_fields(fake_anthropic: FakeAnthropic, db: Path) -> None:
    # A mid-stream overloaded_error arrives inside an HTTP 200 stream: it is logged by its own name.
    fake_anthropic.push(*[Reply.stream_error("partial ", error_type="overloaded_error")] * 3)
    result = chat(fake_anthropic, db, "hello")
    assert "Claude is unavailable right now" in result.stdout
    [failed] = [line for line in result.stderr.splitlines() if "model request failed" in line]
    assert "model request failed: overloaded_error (mid-stream)" in failed
    assert "error=overloaded_error" in failed and "request_id=" in failed
    assert "HTTP 200" not in result.stderr
    assert not (db.parent / ".local").exists()
