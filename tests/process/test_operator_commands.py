"""Operator commands as an operator runs them: the real console script against a real database."""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from bots.logging_setup import configure_logging
from bots.operator_commands import SLACK_SCOPES, daily_rows, render_stats
from core.domain import AuditEvent, NewMessage, Role, ThreadKey
from core.settings import Settings
from core.storage.sqlite_store import SqliteStore
from tests.support.bot_process import free_port
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_slack import GRANTED_SCOPES, FakeSlack
from tests.support.paths import REPO
from tests.support.stores import ManualClock, latest_schema_version

LATEST_SCHEMA = latest_schema_version()

# The console script pip installs: what an operator types.
LASTRESORT = Path(sys.executable).parent / "lastresort"


def lastresort(
    *args: str, env: dict[str, str], cwd: Path = REPO, config: bool = True
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    if config:
        base["LASTRESORT_CONFIG"] = str(REPO / "config" / "lastresort.yaml")
    return subprocess.run(
        [str(LASTRESORT), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **env},
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def lines_about(result: subprocess.CompletedProcess[str], what: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line[5:].startswith(f"{what}:")]


@pytest.fixture
def services() -> Iterator[tuple[FakeAnthropic, FakeSlack, FakeDiscord]]:
    with FakeAnthropic() as claude, FakeSlack() as slack, FakeDiscord() as discord:
        yield claude, slack, discord


def service_env(claude: FakeAnthropic, slack: FakeSlack, discord: FakeDiscord, db: Path) -> dict[str, str]:
    return {
        "ANTHROPIC_API_KEY": "sk-ant-check",
        "ANTHROPIC_BASE_URL": claude.base_url,
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_SIGNING_SECRET": "signing-secret-for-check",
        "SLACK_API_URL": slack.api_url,
        "DISCORD_TOKEN": discord.token,
        "DISCORD_API_URL": discord.api_url,
        "DATABASE_URL": f"sqlite:///{db}",
    }


Services = tuple[FakeAnthropic, FakeSlack, FakeDiscord]


def test_check_asks_every_service_and_says_what_each_answered(tmp_path: Path, services: Services) -> None:
    claude, slack, discord = services
    db = tmp_path / "a.db"
    assert lastresort("migrate", env={"DATABASE_URL": f"sqlite:///{db}"}).returncode == 0
    result = lastresort("check", env=service_env(claude, slack, discord, db))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BAD" not in result.stdout
    [slack_line] = lines_about(result, "Slack")
    assert "Fake Workspace" in slack_line and slack.team_id in slack_line and slack.bot_user_id in slack_line
    assert f"all {len(SLACK_SCOPES)}" in lines_about(result, "Slack scopes")[0]
    [discord_line] = lines_about(result, "Discord")
    assert str(discord.bot_user_id) in discord_line
    assert "Message Content is enabled" in lines_about(result, "Discord intents")[0]
    assert "accepted ANTHROPIC_API_KEY" in lines_about(result, "Anthropic")[0]
    assert "Claude Opus 4.1" in lines_about(result, "Model claude-opus-4-1")[0]
    assert "Claude Haiku 4.5" in lines_about(result, "Model claude-haiku-4-5")[0]  # the risk review's
    assert f"schema version {LATEST_SCHEMA}, up to date" in lines_about(result, "DATABASE_URL")[0]
    # It really asked: one request each, with the credentials it was given.
    assert [r.path for r in claude.requests] == ["/v1/models/claude-opus-4-1", "/v1/models/claude-haiku-4-5"]
    assert "sk-ant-check" in claude.requests[0].headers["authorization"]
    assert [c.method for c in slack.calls] == ["auth.test"]
    assert [(c.method, c.path) for c in discord.calls] == [("GET", "/users/@me"), ("GET", "/applications/@me")]
    assert "signing-secret-for-check" not in result.stdout + result.stderr


def test_check_reports_a_rejected_slack_token(tmp_path: Path, services: Services) -> None:
    claude, slack, discord = services
    env = {**service_env(claude, slack, discord, tmp_path / "a.db"), "SLACK_BOT_TOKEN": "xoxb-123"}
    result = lastresort("check", env=env)
    assert result.returncode == 2
    [line] = lines_about(result, "Slack")
    assert line.startswith("BAD") and "invalid_auth" in line and "SLACK_BOT_TOKEN was rejected" in line
    assert "xoxb-123" not in result.stdout


def test_check_names_the_scopes_the_slack_token_lacks(tmp_path: Path, services: Services) -> None:
    claude, slack, discord = services
    slack.scopes = tuple(s for s in slack.scopes if s not in ("im:write", "usergroups:read"))
    result = lastresort("check", env=service_env(claude, slack, discord, tmp_path / "a.db"))
    assert result.returncode == 2
    [line] = lines_about(result, "Slack scopes")
    assert line.startswith("BAD") and "usergroups:read, im:write" in line
    assert lines_about(result, "Slack")[0].startswith("ok")


def test_check_reports_a_rejected_discord_token(tmp_path: Path, services: Services) -> None:
    claude, slack, discord = services
    env = {**service_env(claude, slack, discord, tmp_path / "a.db"), "DISCORD_TOKEN": "made.up.token"}
    result = lastresort("check", env=env)
    assert result.returncode == 2
    [line] = lines_about(result, "Discord")
    assert line.startswith("BAD") and "401" in line and "DISCORD_TOKEN was rejected" in line


def test_check_reports_the_message_content_intent_switched_off(tmp_path: Path) -> None:
    with FakeAnthropic() as claude, FakeSlack() as slack, FakeDiscord(allowed_privileged_intents=0) as discord:
        result = lastresort("check", env=service_env(claude, slack, discord, tmp_path / "a.db"))
    assert result.returncode == 2
    [line] = lines_about(result, "Discord intents")
    assert line.startswith("BAD") and "Message Content is off" in line and "Developer Portal" in line


def test_check_reports_a_rejected_api_key(tmp_path: Path, services: Services) -> None:
    claude, slack, discord = services
    claude.reject_key("sk-ant-check")
    result = lastresort("check", env=service_env(claude, slack, discord, tmp_path / "a.db"))
    assert result.returncode == 2
    [line] = lines_about(result, "Anthropic")
    assert line.startswith("BAD") and "API key was rejected" in line and "authentication_error" in line


def test_check_reports_a_configured_model_the_api_does_not_know(tmp_path: Path, services: Services) -> None:
    claude, slack, discord = services
    config = tmp_path / "lastresort.yaml"
    config.write_text("model:\n  name: claude-imaginary-9\n", encoding="utf-8")
    env = {**service_env(claude, slack, discord, tmp_path / "a.db"), "LASTRESORT_CONFIG": str(config)}
    result = lastresort("check", env=env)
    assert result.returncode == 2
    [line] = lines_about(result, "Model claude-imaginary-9")
    assert line.startswith("BAD") and "no such model" in line


def test_check_reports_unreachable_services_quickly(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "ANTHROPIC_BASE_URL": closed,
        "SLACK_BOT_TOKEN": "xoxb-123",
        "SLACK_SIGNING_SECRET": "s",
        "SLACK_API_URL": f"{closed}/api/",
        "DISCORD_TOKEN": "t",
        "DISCORD_API_URL": f"{closed}/api/v10",
        "DATABASE_URL": f"sqlite:///{tmp_path}/a.db",
    }
    result = lastresort("check", env=env)
    assert result.returncode == 2
    for what in ("Anthropic", "Slack", "Discord"):
        [line] = lines_about(result, what)
        assert line.startswith("BAD") and ("cannot reach" in line), line


def test_check_works_from_outside_the_repository_and_creates_nothing(tmp_path: Path, services: Services) -> None:
    claude, slack, discord = services
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = service_env(claude, slack, discord, Path("unused.db"))
    del env["DATABASE_URL"]  # the default: ./lastresort.db, which check must not create
    result = lastresort("check", env=env, cwd=elsewhere, config=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the built-in defaults" in lines_about(result, "Configuration")[0]
    assert "does not exist yet" in lines_about(result, "DATABASE_URL")[0]
    assert list(elsewhere.iterdir()) == []


def test_check_on_a_database_that_was_never_migrated_names_the_pending_migrations(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    result = lastresort("check", env={"DATABASE_URL": f"sqlite:///{db}"})
    [line] = lines_about(result, "DATABASE_URL")
    assert line.startswith("ok") and f"schema version 0, pending migrations 1..{LATEST_SCHEMA}" in line


def test_check_passes_with_everything_set(tmp_path: Path, fake_anthropic: FakeAnthropic) -> None:
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/a.db",
    }
    result = lastresort("check", env=env)
    assert result.returncode == 0, result.stdout
    assert "BAD" not in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_slack_scopes_check_asks_for_what_the_manifest_asks_for() -> None:
    manifest = yaml.safe_load((REPO / "config" / "slack-manifest.yaml").read_text(encoding="utf-8"))
    assert list(SLACK_SCOPES) == manifest["oauth_config"]["scopes"]["bot"]
    assert list(SLACK_SCOPES) == list(GRANTED_SCOPES)


def test_check_names_a_missing_token_and_a_bad_database_url(tmp_path: Path) -> None:
    result = lastresort(
        "check",
        env={"DATABASE_URL": "postgresql://bot:hunter2secret@127.0.0.1:1/db", "SLACK_BOT_TOKEN": "xoxb-1-2"},
    )
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert any(line.startswith("BAD  ANTHROPIC_API_KEY: missing") for line in lines)
    assert any(line.startswith("BAD  SLACK_SIGNING_SECRET: missing") for line in lines)
    assert any(line.startswith("BAD  DATABASE_URL: cannot connect") for line in lines)
    assert "hunter2secret" not in result.stdout + result.stderr


def test_check_rejects_an_unknown_database_scheme() -> None:
    result = lastresort("check", env={"ANTHROPIC_API_KEY": "k", "DATABASE_URL": "mysql://x@y/z"})
    assert result.returncode == 2
    assert "BAD  DATABASE_URL" in result.stdout and "not supported" in result.stdout


async def _seed(db: Path, clock: ManualClock) -> None:
    async with SqliteStore(db, clock=clock) as store:
        conversation = await store.get_or_create_conversation(key=ThreadKey("slack", "C1", "1.0"), owner_id="U1")
        await store.add_message(
            NewMessage(conversation.id, Role.USER, ({"type": "text", "text": "an old secret"},), author_id="U1")
        )
        for kind, reason in [
            ("ending_approved", "persistent_abuse"),
            ("ending_refused", "no_warning"),
            ("ending_refused", "risk_guard"),
            ("feedback", "helpful"),
            ("feedback", "not_helpful"),
        ]:
            await store.add_event(
                AuditEvent(
                    kind=kind, conversation_id=conversation.id, actor="model", reason=reason, created_at=clock.now()
                )
            )
        clock.advance(days=40)
        await store.add_message(
            NewMessage(conversation.id, Role.USER, ({"type": "text", "text": "a fresh message"},), author_id="U1")
        )


async def test_purge_removes_old_text_and_keeps_the_audit_trail(tmp_path: Path) -> None:
    db = tmp_path / "ops.db"
    await _seed(db, ManualClock(datetime.now(UTC) - timedelta(days=40)))
    result = lastresort("purge", env={"DATABASE_URL": f"sqlite:///{db}"})
    assert result.returncode == 0, result.stderr
    assert "Removed the text of 1 messages older than 30 days" in result.stdout
    async with SqliteStore(db, clock=ManualClock()) as store:
        conversation = await store.find_conversation(ThreadKey("slack", "C1", "1.0"))
        assert conversation is not None
        texts = [m.text for m in await store.messages(conversation.id)]
        events = await store.events(since=datetime(2000, 1, 1, tzinfo=UTC))
    assert texts == ["[removed]", "a fresh message"]
    assert len(events) == 5


async def test_export_writes_json_lines_since_a_date(tmp_path: Path) -> None:
    db = tmp_path / "ops.db"
    await _seed(db, ManualClock(datetime(2025, 3, 1, tzinfo=UTC)))
    everything = lastresort("export", "--since", "2025-01-01", env={"DATABASE_URL": f"sqlite:///{db}"})
    later = lastresort("export", "--since", "2025-03-02", env={"DATABASE_URL": f"sqlite:///{db}"})
    lines = [json.loads(line) for line in everything.stdout.splitlines()]
    assert [e["kind"] for e in lines] == [
        "ending_approved",
        "ending_refused",
        "ending_refused",
        "feedback",
        "feedback",
    ]
    assert all(set(e) == {"id", "time", "kind", "conversation_id", "actor", "reason", "detail"} for e in lines)
    assert later.stdout == ""
    bad = lastresort("export", "--since", "last tuesday", env={"DATABASE_URL": f"sqlite:///{db}"})
    assert bad.returncode == 2 and "not a date" in bad.stderr


async def test_stats_prints_a_table_and_a_chart(tmp_path: Path) -> None:
    db = tmp_path / "ops.db"
    await _seed(db, ManualClock(datetime.now(UTC) - timedelta(days=40)))
    async with SqliteStore(db, clock=ManualClock(datetime.now(UTC))) as store:
        await store.add_event(AuditEvent(kind="ending_approved", conversation_id=None, actor="model", reason="x"))
    result = lastresort("stats", "--days", "3", env={"DATABASE_URL": f"sqlite:///{db}"})
    assert result.returncode == 0, result.stderr
    today = datetime.now(UTC).date().isoformat()
    [row] = [line for line in result.stdout.splitlines() if line.startswith(today)]
    assert row.split()[1] == "1" and row.endswith("█" * 30)
    assert result.stdout.splitlines()[-1].split()[:2] == ["total", "1"]


def test_daily_rows_count_each_kind_on_its_day() -> None:
    day = datetime(2025, 5, 2, 9, tzinfo=UTC)
    events = [
        AuditEvent("ending_approved", 1, "model", "persistent_abuse", created_at=day),
        AuditEvent("moderator_end", 2, "moderator:M", "spam", created_at=day),
        AuditEvent("warning_refused", 1, "model", "too_few_redirects", created_at=day - timedelta(days=1)),
        AuditEvent("risk_guard_fired", 1, "model", "self_harm", created_at=day),
        AuditEvent("feedback", 1, "user:U", "not_helpful", created_at=day),
        AuditEvent("feedback", 1, "user:U", "helpful", created_at=day - timedelta(days=9)),  # outside the window
    ]
    rows = daily_rows(events, today=day.date(), days=2)
    assert [(r.day.day, r.endings, r.refusals, r.risk, r.helpful, r.not_helpful) for r in rows] == [
        (1, 0, 1, 0, 0, 0),
        (2, 2, 0, 1, 0, 1),
    ]
    chart = render_stats(rows, width=10)
    assert "██████████" in chart and "░░░░░" in chart


def test_logs_are_json_lines_with_secrets_scrubbed() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="json", secrets=["xoxb-very-secret-token"], stream=stream)
    try:
        root = logging.getLogger()
        assert root.level == logging.INFO
        # Straight to the installed handler: whether a logger passes a record on depends on process-wide state
        # (levels, logging.disable) that other tests in the same worker may have touched; the format and the
        # scrubbing are the handler's.
        [handler] = root.handlers
        handler.handle(
            logging.getLogger("lastresort.test").makeRecord(
                "lastresort.test",
                logging.INFO,
                __file__,
                1,
                "calling with %s",
                ("xoxb-very-secret-token",),
                None,
                extra={"conversation": 7, "header": "Bearer xoxb-very-secret-token"},
            )
        )
    finally:
        configure_logging(level="WARNING", fmt="text", secrets=[], stream=sys.stderr)
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "calling with [secret]"
    assert record["conversation"] == 7
    assert record["header"] == "Bearer [secret]"
    assert record["level"] == "INFO"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "redis://x"])
def test_migrate_explains_an_unusable_database_url(url: str) -> None:
    result = lastresort("migrate", env={"DATABASE_URL": url})
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr and "Traceback" not in result.stderr


async def test_the_running_bot_purges_old_text_by_itself(tmp_path: Path, settings: Settings) -> None:
    import asyncio

    from bots.environment import Environment
    from bots.supervisor import retention_sweeps
    from tests.support.fake_anthropic import FakeAnthropic
    from tests.support.runtime import runtime_for

    db = tmp_path / "sweep.db"
    await _seed(db, ManualClock(datetime.now(UTC) - timedelta(days=40)))
    with FakeAnthropic() as claude:
        async with runtime_for(Environment(), settings, claude, db) as runtime:
            sweeper = asyncio.create_task(retention_sweeps(runtime))
            try:
                conversation = await runtime.store.find_conversation(ThreadKey("slack", "C1", "1.0"))
                assert conversation is not None
                for _ in range(100):
                    texts = [m.text for m in await runtime.store.messages(conversation.id)]
                    if texts[0] == "[removed]":
                        break
                    await asyncio.sleep(0.05)
            finally:
                sweeper.cancel()
    assert texts == ["[removed]", "a fresh message"]
