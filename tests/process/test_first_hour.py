"""An operator's first hour, through the installed `lastresort` command: every broken input is exit status 2
and one line naming the file, the key, the variable or the flag and the reason; `migrate` says what it did;
every subcommand explains itself in --help."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.bot_process import BotProcess
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_slack import FakeSlack, SlackDriver
from tests.support.paths import REPO
from tests.support.stores import latest_schema_version

LATEST_SCHEMA = latest_schema_version()

LASTRESORT = Path(sys.executable).parent / "lastresort"


def lastresort(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LASTRESORT), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), **env},
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------------------------
# Configuration files
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["chat", "run", "migrate", "purge"])
def test_a_config_file_that_is_not_utf8_is_one_line_naming_the_file(tmp_path: Path, command: str) -> None:
    config = tmp_path / "latin1.yaml"
    config.write_bytes("notices:\n  empty: ¿Qué quieres?\n".encode("latin-1"))
    work = tmp_path / "work"
    work.mkdir()
    line = one_line_error(
        lastresort(command, env={"LASTRESORT_CONFIG": str(config), "ANTHROPIC_API_KEY": "k"}, cwd=work)
    )
    assert str(config) in line and "not UTF-8" in line
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("model:\n  max_output_tokens: lots\n", "model.max_output_tokens", "integer"),
        ("limits:\n  max_message_chars: 3\n", "limits.max_message_chars", "greater than or equal to 100"),
        ("risk_guard: [a, b]\n", "risk_guard", "dictionary"),
        ("notices:\n  confirm_questoin: Sure?\n", "notices.confirm_questoin", "Extra inputs"),
    ],
)
def test_a_bad_key_is_one_line_naming_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    config = tmp_path / "lastresort.yaml"
    config.write_text(text, encoding="utf-8")
    line = one_line_error(
        lastresort("chat", env={"LASTRESORT_CONFIG": str(config), "ANTHROPIC_API_KEY": "k"}, cwd=tmp_path)
    )
    assert str(config) in line and key in line and reason in line


def test_a_missing_config_file_named_by_the_variable_is_reported(tmp_path: Path) -> None:
    line = one_line_error(
        lastresort(
            "chat", env={"LASTRESORT_CONFIG": str(tmp_path / "nope.yaml"), "ANTHROPIC_API_KEY": "k"}, cwd=tmp_path
        )
    )
    assert "nope.yaml" in line and "cannot read" in line


@pytest.mark.parametrize("text", ["", "risk_guard: {}\n", "model:\n  max_output_tokens: 300\n"])
def test_an_empty_or_partial_config_file_runs(tmp_path: Path, text: str) -> None:
    config = tmp_path / "lastresort.yaml"
    config.write_text(text, encoding="utf-8")
    db = tmp_path / "x.db"
    result = lastresort(
        "purge", env={"LASTRESORT_CONFIG": str(config), "DATABASE_URL": f"sqlite:///{db}"}, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "older than 30 days" in result.stdout


# --------------------------------------------------------------------------------------------------------------
# Flags and variables
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "reason"),
    [
        ("abc", "must be a whole number of days, not 'abc'"),
        ("0", "between 1 and 3660"),
        ("-3", "between 1 and 3660"),
        ("3661", "between 1 and 3660"),
        ("100000", "between 1 and 3660"),
        ("9999999", "between 1 and 3660"),
    ],
)
def test_stats_days_out_of_range_is_one_line_naming_the_flag(tmp_path: Path, days: str, reason: str) -> None:
    db = tmp_path / "x.db"
    line = one_line_error(lastresort("stats", "--days", days, env={"DATABASE_URL": f"sqlite:///{db}"}, cwd=tmp_path))
    assert "--days" in line and reason in line
    assert "_positive" not in line and "_days" not in line
    assert not db.exists()


def test_stats_accepts_the_whole_range(tmp_path: Path) -> None:
    result = lastresort("stats", "--days", "3660", env={"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3660 + 2  # header, one row a day, total


@pytest.mark.parametrize(
    ("args", "variables", "named"),
    [
        pytest.param(("run",), {"SLACK_BOT_TOKEN": "xoxb-1-2"}, "SLACK_SIGNING_SECRET", id="bot-token-only"),
        pytest.param(
            ("run", "--adapters", "slack"), {"SLACK_BOT_TOKEN": "xoxb-1-2"}, "SLACK_SIGNING_SECRET", id="adapters-slack"
        ),
        pytest.param(("run",), {"SLACK_SIGNING_SECRET": "s3cr3t-value"}, "SLACK_BOT_TOKEN", id="secret-only"),
        pytest.param(("run",), {"SLACK_APP_TOKEN": "xapp-1-2"}, "SLACK_BOT_TOKEN", id="app-token-only"),
        pytest.param(("run", "--adapters", "slack"), {}, "SLACK_BOT_TOKEN", id="adapters-slack-nothing-set"),
        pytest.param(("run", "--adapters", "discord"), {}, "DISCORD_TOKEN", id="adapters-discord-nothing-set"),
        pytest.param(
            ("run",), {"DISCORD_TOKEN": "t", "DISCORD_SHARD_IDS": "0,1"}, "DISCORD_SHARD_COUNT", id="shards-no-count"
        ),
        pytest.param(("run",), {"LOG_FORMAT": "xml"}, "LOG_FORMAT", id="log-format"),
        pytest.param(("run",), {"LOG_LEVEL": "chatty"}, "LOG_LEVEL", id="log-level"),
        pytest.param(("run",), {"PORT": "99999"}, "PORT", id="port-range"),
        pytest.param(("run", "--adapters", "slack,irc"), {}, "--adapters", id="unknown-adapter"),
    ],
)
def test_half_set_credentials_and_bad_variables_are_named(
    tmp_path: Path, args: tuple[str, ...], variables: dict[str, str], named: str
) -> None:
    env = {"ANTHROPIC_API_KEY": "sk-ant-x", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db", **variables}
    line = one_line_error(lastresort(*args, env=env, cwd=tmp_path))
    assert named in line
    assert "terminal chat" not in line
    assert not (tmp_path / "x.db").exists()


def test_an_unknown_subcommand_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(lastresort("chta", env={}, cwd=tmp_path))
    assert "chta" in line and "--help" in line


# --------------------------------------------------------------------------------------------------------------
# migrate and --help
# --------------------------------------------------------------------------------------------------------------


def test_migrate_says_what_it_created_then_that_nothing_was_left(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    first = lastresort("migrate", env={"DATABASE_URL": url}, cwd=tmp_path)
    second = lastresort("migrate", env={"DATABASE_URL": url}, cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.startswith(f"Created the database schema (version {LATEST_SCHEMA})")
    assert f"up to date (version {LATEST_SCHEMA})" in second.stdout
    with sqlite3.connect(tmp_path / "new.db") as db:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone() == (LATEST_SCHEMA,)


@pytest.mark.parametrize("command", ["run", "chat", "migrate", "check", "stats", "export", "purge"])
def test_every_subcommand_help_has_a_description(tmp_path: Path, command: str) -> None:
    result = lastresort(command, "--help", env={}, cwd=tmp_path)
    assert result.returncode == 0
    usage, _, rest = result.stdout.partition("\n\n")
    description = rest.split("\n\n", 1)[0]
    assert usage.startswith(f"usage: lastresort {command}")
    assert len(description.split()) >= 8, result.stdout


def test_stats_days_has_help_text(tmp_path: Path) -> None:
    result = lastresort("stats", "--help", env={}, cwd=tmp_path)
    [days] = [line for line in result.stdout.splitlines() if line.strip().startswith("--days")]
    assert "1 to 3660" in days and "default 14" in days


def test_the_repository_config_is_not_needed_from_another_directory(tmp_path: Path) -> None:
    # Run from a directory with no config/: the defaults built into the package apply.
    db = tmp_path / "x.db"
    result = lastresort("purge", env={"DATABASE_URL": f"sqlite:///{db}"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "lastresort.db").exists()
    assert REPO not in Path(tmp_path).parents


# --------------------------------------------------------------------------------------------------------------
# Logs of a running bot
# --------------------------------------------------------------------------------------------------------------


async def test_a_running_bot_logs_its_events_with_fields_and_no_library_noise(tmp_path: Path) -> None:
    secret = "first-hour-signing-secret"
    with FakeAnthropic() as claude, FakeSlack() as slack, FakeDiscord() as discord:
        slack.add_channel("C0FIRST", "first")
        slack.add_user("U0ADA", "ada")
        env = {
            "SLACK_BOT_TOKEN": slack.token,
            "SLACK_SIGNING_SECRET": secret,
            "SLACK_API_URL": slack.api_url,
            "DISCORD_TOKEN": discord.token,
            "DISCORD_API_URL": discord.api_url,
            "DISCORD_GATEWAY_URL": discord.gateway_url,
            "ANTHROPIC_API_KEY": "sk-ant-first-hour",
            "ANTHROPIC_BASE_URL": claude.base_url,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "text",
        }
        async with BotProcess(env, log_path=tmp_path / "run.log") as bot:
            await discord.wait_for(lambda: any(s.connected for s in discord.sessions), 20, what="a session")
            driver = SlackDriver(secret, f"{bot.url}/slack/events", fake=slack)
            sent = (await driver.post_mention("C0FIRST", "U0ADA", "hello there"))[0]
            thread = str(sent.payload["event"]["ts"])
            await slack.wait_for_async(lambda: slack.bot_messages("C0FIRST", thread), timeout=20)
            assert await bot.terminate() == 0
        output = bot.output()
    for noise in ("HTTP Request", "will be unused", "PyNaCl", "davey", "Traceback"):
        assert noise not in output, (noise, output)
    [reply] = [line for line in output.splitlines() if "model reply" in line]
    # LOG_FORMAT=text keeps the fields that the JSON lines carry.
    assert " INFO core.claude_client: model reply " in reply
    assert "output_tokens=" in reply and "stop_reason=end_turn" in reply and "request_id=" in reply


def test_from_the_repository_the_config_directory_is_read_without_the_variable(tmp_path: Path) -> None:
    result = lastresort("check", env={"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}, cwd=REPO)
    [line] = [line for line in result.stdout.splitlines() if "Configuration:" in line]
    assert line.startswith("ok") and "config/lastresort.yaml is valid" in line
