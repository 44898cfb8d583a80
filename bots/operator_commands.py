"""Operator commands: check, stats, export, purge. Output is for people (tables) or tools (JSON lines)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TextIO

from bots.environment import Environment
from core.clock import SystemClock
from core.domain import AuditEvent, AuditKind
from core.settings import ConfigError, Settings, load_settings
from core.storage.errors import StoreUnavailableError
from core.storage.factory import open_store
from core.storage.urls import redact_url


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    detail: str


def _credential_findings(env: Environment) -> list[Finding]:
    findings = [
        Finding(
            bool(env.anthropic_api_key),
            "ANTHROPIC_API_KEY",
            "set" if env.anthropic_api_key else "missing: export your Anthropic API key",
        ),
    ]
    if env.slack_bot_token or env.slack_signing_secret or env.slack_app_token:
        if not env.slack_bot_token:
            findings.append(Finding(False, "SLACK_BOT_TOKEN", "missing: Slack needs the bot token (xoxb-...)"))
        elif not env.slack_bot_token.startswith("xoxb-"):
            findings.append(Finding(False, "SLACK_BOT_TOKEN", "does not look like a bot token (xoxb-...)"))
        if not (env.slack_signing_secret or env.slack_app_token):
            findings.append(
                Finding(False, "SLACK_SIGNING_SECRET", "missing: HTTP mode needs it (or set SLACK_APP_TOKEN)")
            )
        if env.slack_enabled:
            mode = "Socket Mode" if env.slack_app_token else "HTTP mode"
            findings.append(Finding(True, "Slack", f"credentials set ({mode})"))
    else:
        findings.append(Finding(True, "Slack", "not configured (SLACK_BOT_TOKEN unset)"))
    if env.discord_token:
        findings.append(Finding(True, "Discord", "token set"))
    else:
        findings.append(Finding(True, "Discord", "not configured (DISCORD_TOKEN unset)"))
    if not env.slack_enabled and not env.discord_enabled:
        findings.append(Finding(True, "Adapters", "none configured: `lastresort run` starts the terminal chat"))
    return findings


async def check(env: Environment, out: TextIO) -> int:
    """Say exactly what is missing or broken; exit status 2 if anything is."""
    findings: list[Finding] = []
    try:
        settings = load_settings(env.config_path)
        findings.append(Finding(True, "Configuration", f"{env.config_path} is valid (model {settings.model.name})"))
    except ConfigError as exc:
        findings.append(Finding(False, "Configuration", str(exc)))
    findings.extend(_credential_findings(env))
    try:
        store = await open_store(env.database_url, clock=SystemClock(), migrate=False)
        try:
            await store.ping()
        finally:
            await store.close()
        findings.append(Finding(True, "DATABASE_URL", f"{redact_url(env.database_url)} is reachable"))
    except StoreUnavailableError as exc:
        findings.append(Finding(False, "DATABASE_URL", str(exc)))
    for finding in findings:
        out.write(f"{'ok ' if finding.ok else 'BAD'}  {finding.what}: {finding.detail}\n")
    return 0 if all(f.ok for f in findings) else 2


@dataclass(frozen=True)
class DayRow:
    day: date
    endings: int
    refusals: int
    risk: int
    helpful: int
    not_helpful: int


def daily_rows(events: Sequence[AuditEvent], *, today: date, days: int) -> list[DayRow]:
    """Per-day counts of endings, refused endings or warnings, risk-guard firings and feedback."""
    per_day: dict[date, Counter[str]] = {today - timedelta(days=i): Counter() for i in range(days)}
    for event in events:
        if event.created_at is None:
            continue
        bucket = per_day.get(event.created_at.date())
        if bucket is None:
            continue
        if event.kind in (AuditKind.ENDING_APPROVED, AuditKind.MODERATOR_END):
            bucket["endings"] += 1
        elif event.kind in (AuditKind.ENDING_REFUSED, AuditKind.WARNING_REFUSED):
            bucket["refusals"] += 1
        elif event.kind == AuditKind.RISK_GUARD_FIRED:
            bucket["risk"] += 1
        elif event.kind == AuditKind.FEEDBACK:
            bucket["helpful" if event.reason == "helpful" else "not_helpful"] += 1
    return [
        DayRow(day, c["endings"], c["refusals"], c["risk"], c["helpful"], c["not_helpful"])
        for day, c in sorted(per_day.items())
    ]


def render_stats(rows: Sequence[DayRow], *, width: int = 30) -> str:
    """A table plus a small bar chart of endings and refusals per day."""
    lines = [
        f"{'day':<10}  {'endings':>7}  {'refused':>7}  {'risk':>5}  {'👍':>3}  {'👎':>3}  chart (█ ending, ░ refused)"
    ]
    peak = max((r.endings + r.refusals for r in rows), default=0) or 1
    for r in rows:
        scale = width / peak
        bar = "█" * round(r.endings * scale) + "░" * round(r.refusals * scale)
        counts = f"{r.endings:>7}  {r.refusals:>7}  {r.risk:>5}  {r.helpful:>3}  {r.not_helpful:>3}"
        lines.append(f"{r.day.isoformat():<10}  {counts}  {bar}")
    total = [sum(getattr(r, f) for r in rows) for f in ("endings", "refusals", "risk", "helpful", "not_helpful")]
    lines.append(f"{'total':<10}  {total[0]:>7}  {total[1]:>7}  {total[2]:>5}  {total[3]:>3}  {total[4]:>3}")
    return "\n".join(lines)


async def stats(env: Environment, out: TextIO, *, days: int) -> int:
    clock = SystemClock()
    store = await open_store(env.database_url, clock=clock)
    try:
        now = clock.now()
        since = datetime.combine(now.date() - timedelta(days=days - 1), datetime.min.time(), tzinfo=now.tzinfo)
        events = await store.events(since=since, limit=1_000_000)
    finally:
        await store.close()
    out.write(render_stats(daily_rows(events, today=now.date(), days=days)) + "\n")
    return 0


def event_json(event: AuditEvent) -> str:
    return json.dumps(
        {
            "id": event.id,
            "time": event.created_at.isoformat() if event.created_at else None,
            "kind": event.kind,
            "conversation_id": event.conversation_id,
            "actor": event.actor,
            "reason": event.reason,
            "detail": event.detail,
        },
        ensure_ascii=False,
    )


async def export(env: Environment, out: TextIO, *, since: datetime) -> int:
    store = await open_store(env.database_url, clock=SystemClock())
    try:
        for event in await store.events(since=since, limit=10_000_000):
            out.write(event_json(event) + "\n")
    finally:
        await store.close()
    return 0


async def purge(env: Environment, settings: Settings, out: TextIO) -> int:
    clock = SystemClock()
    store = await open_store(env.database_url, clock=clock)
    try:
        days = settings.retention.message_text_days
        removed = await store.purge_text(older_than=clock.now() - timedelta(days=days))
    finally:
        await store.close()
    out.write(f"Removed the text of {removed} messages older than {days} days; audit events are kept.\n")
    return 0
