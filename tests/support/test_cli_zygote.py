"""The zygote that forks `lastresort` commands for the tests behaves like starting them with subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli_zygote import Zygote, run_cli
from tests.support.fake_anthropic import FakeAnthropic, Reply
from tests.support.paths import CONFIG, REPO


def bare_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}


def chat_env(fake: FakeAnthropic, tmp_path: Path) -> dict[str, str]:
    return {
        **bare_env(tmp_path),
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ANTHROPIC_BASE_URL": fake.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
        "LASTRESORT_CONFIG": str(CONFIG),
    }


@pytest.mark.parametrize("argv", [["chta"], ["chat"], ["--version-of-nothing"]])
def test_exit_status_and_both_streams_are_what_a_fresh_interpreter_gives(tmp_path: Path, argv: list[str]) -> None:
    env = bare_env(tmp_path)
    forked = run_cli(*argv, env=env, cwd=tmp_path)
    fresh = subprocess.run(
        [sys.executable, "-m", "bots.cli", *argv],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.returncode == 2 and forked.stderr


def test_a_child_sees_only_its_own_environment(
    fake_anthropic: FakeAnthropic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In the test worker's environment, but not in the request's: the child must not see it.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-the-worker")
    missing = run_cli("chat", input="hello\n", env=bare_env(tmp_path))
    assert missing.returncode == 2 and "ANTHROPIC_API_KEY is not set" in missing.stderr

    fake_anthropic.push(Reply.text("Hello from the fake."))
    answered = run_cli("chat", input="hello\n", env=chat_env(fake_anthropic, tmp_path))
    assert answered.returncode == 0, answered.stderr
    assert "Hello from the fake." in answered.stdout
    assert len(fake_anthropic.message_requests()) == 1


def test_a_command_past_its_timeout_is_killed(fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    fake_anthropic.latency = 30.0
    fake_anthropic.push(Reply.text("too late"))
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("chat", input="hello\n", env=chat_env(fake_anthropic, tmp_path), timeout=3)


async def test_children_run_at_once_and_each_gets_its_own_signal(tmp_path: Path) -> None:
    zygote = Zygote()
    try:
        # `chat` reading a terminal that never types: each waits until a signal stops it.
        fifo = tmp_path / "never"
        os.mkfifo(fifo)
        writer = os.open(fifo, os.O_RDWR)  # held open, so the readers never see the end of input
        env = {**bare_env(tmp_path), "ANTHROPIC_API_KEY": "x", "DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
        first = zygote.spawn(["chat"], env=env, stdin=fifo, stdout=tmp_path / "first.log")
        second = zygote.spawn(["chat"], env=env, stdin=fifo, stdout=tmp_path / "second.log")
        assert first.pid != second.pid and os.getpid() not in (first.pid, second.pid)
        await asyncio.sleep(1.0)
        assert first.returncode is None and second.returncode is None
        first.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(first.wait(), 10) == -signal.SIGKILL
        assert second.returncode is None
        second.kill()
        assert await asyncio.wait_for(second.wait(), 10) == -signal.SIGKILL
        os.close(writer)
    finally:
        zygote.close()
