"""Operator commands: check, stats, export, purge. Output is for people (tables) or tools (JSON lines)."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from bots.environment import Environment
from core.clock import SystemClock
from core.domain import AuditEvent, AuditKind
from core.ports import ModelUnavailableError
from core.settings import ConfigError, Settings, load_settings
from core.storage.errors import StoreUnavailableError
from core.storage.factory import open_store
from core.storage.urls import redact_url

# Each service gets this long to answer `check`: an operator waits for it at a prompt.
CHECK_TIMEOUT_SECONDS = 5.0

# The bot scopes config/slack-manifest.yaml asks for (a test keeps the two equal): the ones a token lacks
# are named, since the bot fails at the first call that needs one.
SLACK_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "groups:history",
    "im:history",
    "mpim:history",
    "chat:write",
    "commands",
    "users:read",
    "usergroups:read",
    "im:write",
    "assistant:write",
)

# Application flags (discord.com/developers/docs/resources/application#application-object-application-flags):
# the Message Content intent switched on in the Developer Portal, for verified and for unverified apps.
DISCORD_MESSAGE_CONTENT_FLAGS = (1 << 18) | (1 << 19)
DISCORD_API_URL = "https://discord.com/api/v10"


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    detail: str


def _credential_findings(env: Environment) -> list[Finding]:
    findings: list[Finding] = []
    if not env.anthropic_api_key:
        findings.append(Finding(False, "ANTHROPIC_API_KEY", "missing: export your Anthropic API key"))
    slack_missing = env.missing_credentials("slack")
    for name in slack_missing:
        hint = "Slack needs the bot token (xoxb-...)" if name == "SLACK_BOT_TOKEN" else "HTTP mode needs it"
        extra = "" if name == "SLACK_BOT_TOKEN" else " (or set SLACK_APP_TOKEN for Socket Mode)"
        findings.append(Finding(False, name, f"missing: {hint}{extra}"))
    if env.slack_bot_token and not env.slack_bot_token.startswith("xoxb-"):
        findings.append(Finding(False, "SLACK_BOT_TOKEN", "does not look like a bot token (xoxb-...)"))
    if env.slack_app_token and not env.slack_app_token.startswith("xapp-"):
        findings.append(Finding(False, "SLACK_APP_TOKEN", "does not look like an app-level token (xapp-...)"))
    if not (env.slack_bot_token or env.slack_signing_secret or env.slack_app_token):
        findings.append(Finding(True, "Slack", "not configured (SLACK_BOT_TOKEN unset)"))
    for name in env.missing_credentials("discord"):
        findings.append(Finding(False, name, "missing: DISCORD_SHARD_IDS needs it"))
    if not env.discord_token:
        findings.append(Finding(True, "Discord", "not configured (DISCORD_TOKEN unset)"))
    if not env.slack_enabled and not env.discord_enabled:
        findings.append(Finding(True, "Adapters", "none configured: `lastresort run` starts the terminal chat"))
    return findings


async def _check_slack(env: Environment) -> list[Finding]:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    base_url = env.slack_api_url or AsyncWebClient.BASE_URL
    client = AsyncWebClient(
        token=env.slack_bot_token,
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        timeout=int(CHECK_TIMEOUT_SECONDS),
        retry_handlers=[],
    )
    mode = "Socket Mode" if env.slack_app_token else "HTTP mode"
    try:
        answer = await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown error") if exc.response is not None else "unknown error"
        detail = f"auth.test answered {error}"
        if error in ("invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"):
            detail += ": SLACK_BOT_TOKEN was rejected; copy the Bot User OAuth Token from OAuth & Permissions"
        return [Finding(False, "Slack", detail)]
    except Exception as exc:
        return [Finding(False, "Slack", f"cannot reach {base_url}: {_reason(exc)}")]
    team = f"{answer.get('team')} ({answer.get('team_id')})"
    bot = f"{answer.get('user')} ({answer.get('user_id')})"
    findings = [Finding(True, "Slack", f"auth.test: workspace {team}, bot {bot}, {mode}")]
    headers = {key.lower(): value for key, value in (answer.headers or {}).items()}
    raw_scopes = headers.get("x-oauth-scopes")
    if isinstance(raw_scopes, list):
        raw_scopes = ",".join(raw_scopes)
    if raw_scopes is None:
        findings.append(Finding(True, "Slack scopes", "not reported by the API (no x-oauth-scopes header)"))
    else:
        granted = {scope.strip() for scope in str(raw_scopes).split(",")}
        lacking = [scope for scope in SLACK_SCOPES if scope not in granted]
        if lacking:
            findings.append(
                Finding(
                    False,
                    "Slack scopes",
                    f"the token lacks {', '.join(lacking)}: add them under OAuth & Permissions "
                    "(or from config/slack-manifest.yaml) and reinstall the app",
                )
            )
        else:
            findings.append(Finding(True, "Slack scopes", f"all {len(SLACK_SCOPES)} the manifest asks for"))
    return findings


async def _check_discord(env: Environment) -> list[Finding]:
    import aiohttp

    api = (env.discord_api_url or DISCORD_API_URL).rstrip("/")
    headers = {"Authorization": f"Bot {env.discord_token}", "User-Agent": "DiscordBot (lastresort check, 1)"}
    timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT_SECONDS)
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            async with session.get(f"{api}/users/@me") as response:
                me = await _discord_json(response)
            async with session.get(f"{api}/applications/@me") as response:
                application = await _discord_json(response)
    except _DiscordRefused as exc:
        return [Finding(False, "Discord", str(exc))]
    except Exception as exc:
        return [Finding(False, "Discord", f"cannot reach {api}: {_reason(exc)}")]
    findings = [Finding(True, "Discord", f"/users/@me: bot {me.get('username')} ({me.get('id')})")]
    flags = int(application.get("flags") or 0)
    if flags & DISCORD_MESSAGE_CONTENT_FLAGS:
        findings.append(Finding(True, "Discord intents", "Message Content is enabled"))
    else:
        findings.append(
            Finding(
                False,
                "Discord intents",
                "Message Content is off: enable it under Bot > Privileged Gateway Intents in the Developer Portal",
            )
        )
    return findings


class _DiscordRefused(Exception):
    pass


async def _discord_json(response: Any) -> dict[str, Any]:
    if response.status == 401:
        raise _DiscordRefused(
            f"{response.url.path} answered 401 Unauthorized: DISCORD_TOKEN was rejected; "
            "copy the bot token from the Developer Portal (Bot > Reset Token)"
        )
    if response.status != 200:
        text = (await response.text())[:200]
        raise _DiscordRefused(f"{response.url.path} answered HTTP {response.status}: {text}")
    body = await response.json()
    if not isinstance(body, dict):
        raise _DiscordRefused(f"{response.url.path} answered something that is not a JSON object")
    return body


def configured_models(settings: Settings) -> tuple[str, ...]:
    """Every model the configuration names (a new setting that names one belongs here too)."""
    return tuple(dict.fromkeys((settings.model.name, settings.risk_review.model)))


async def _check_anthropic(env: Environment, settings: Settings | None) -> list[Finding]:
    from core.claude_client import ClaudeClient

    names = configured_models(settings) if settings is not None else ()
    assert env.anthropic_api_key is not None
    client = ClaudeClient(
        api_key=env.anthropic_api_key,
        base_url=env.anthropic_base_url,
        timeout_seconds=CHECK_TIMEOUT_SECONDS,
        max_retries=0,
        max_total_wait_seconds=CHECK_TIMEOUT_SECONDS,
    )
    where = env.anthropic_base_url or "the Anthropic API"
    try:
        found = await client.look_up_models(names or ("claude-opus-4-1",))
    except ModelUnavailableError as exc:
        return [Finding(False, "Anthropic", f"{where}: {exc}")]
    finally:
        await client.close()
    findings = [Finding(True, "Anthropic", f"{where} accepted ANTHROPIC_API_KEY")]
    for name in names:
        display = found.get(name)
        if display is None:
            findings.append(Finding(False, f"Model {name}", "the API knows no such model: fix model.name"))
        else:
            findings.append(Finding(True, f"Model {name}", f"available ({display})"))
    return findings


async def _check_database(env: Environment) -> list[Finding]:
    url = env.database_url
    shown = redact_url(url)
    if url.startswith("sqlite:"):
        from core.storage.sqlite_store import sqlite_path

        try:
            path = sqlite_path(url)
        except ValueError as exc:
            return [Finding(False, "DATABASE_URL", f"{shown}: {exc}")]
        if not path.exists():
            # Opening it would create it; `check` creates nothing.
            where = path.parent if str(path.parent) else Path()
            if not where.exists():
                return [Finding(False, "DATABASE_URL", f"{path}: neither the file nor its directory exists")]
            return [Finding(True, "DATABASE_URL", f"{path} does not exist yet: `lastresort migrate` creates it")]
    try:
        store = await asyncio.wait_for(open_store(url, clock=SystemClock(), migrate=False), CHECK_TIMEOUT_SECONDS)
    except StoreUnavailableError as exc:
        return [Finding(False, "DATABASE_URL", str(exc))]
    except TimeoutError:
        return [Finding(False, "DATABASE_URL", f"{shown} did not answer within {CHECK_TIMEOUT_SECONDS:.0f} s")]
    try:
        await store.ping()
        applied, latest = await store.schema_versions()
    except StoreUnavailableError as exc:
        return [Finding(False, "DATABASE_URL", str(exc))]
    finally:
        await store.close()
    if applied > latest:
        return [
            Finding(
                False,
                "DATABASE_URL",
                f"{shown}: schema version {applied} is newer than this release knows ({latest}): upgrade lastresort",
            )
        ]
    if applied < latest:
        pending = f"pending migrations {applied + 1}..{latest}" if latest - applied > 1 else f"pending {latest}"
        state = f"schema version {applied}, {pending}: `lastresort migrate` (or `run`) applies them"
    else:
        state = f"schema version {applied}, up to date"
    return [Finding(True, "DATABASE_URL", f"{shown} is reachable; {state}")]


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def check(env: Environment, out: TextIO) -> int:
    """Ask every configured service and say exactly what it answered; exit status 2 if anything is wrong."""
    findings: list[Finding] = []
    settings: Settings | None = None
    try:
        settings = load_settings(env.config_path)
        source = f"{env.config_path} is valid" if env.config_path else "no file: the built-in defaults"
        findings.append(Finding(True, "Configuration", f"{source} (model {settings.model.name})"))
    except ConfigError as exc:
        findings.append(Finding(False, "Configuration", str(exc)))
    findings.extend(_credential_findings(env))
    _import_clients(env)
    probes = [_check_database(env)]
    if env.anthropic_api_key:
        probes.append(_check_anthropic(env, settings))
    if env.slack_bot_token:
        probes.append(_check_slack(env))
    if env.discord_token:
        probes.append(_check_discord(env))
    for found in await asyncio.gather(*probes):
        findings.extend(found)
    for finding in findings:
        out.write(f"{'ok ' if finding.ok else 'BAD'}  {finding.what}: {finding.detail}\n")
    return 0 if all(f.ok for f in findings) else 2


def _import_clients(env: Environment) -> None:
    """Import the SDKs the probes use before any probe starts its clock: importing anthropic alone takes
    seconds, and an import inside one probe blocks the event loop while the other probes' timeouts run."""
    if env.anthropic_api_key:
        importlib.import_module("core.claude_client")
    if env.slack_bot_token:
        importlib.import_module("slack_sdk.web.async_client")


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
        hours = settings.risk_review.author_mark_hours
        await store.prune_author_marks(older_than=clock.now() - timedelta(hours=hours))
    finally:
        await store.close()
    out.write(f"Removed the text of {removed} messages older than {days} days; audit events are kept.\n")
    return 0


async def eval_risk(env: Environment, settings: Settings, out: TextIO, *, path: Path, concurrency: int) -> int:
    """`lastresort eval risk FILE.jsonl`: the configured risk review against a labelled set (core/risk_eval.py)."""
    from bots.runtime import build_model_client  # the SDK takes seconds to import; only this command needs it
    from core.risk_eval import UsageTally, read_set, report, review_all
    from core.risk_guard import compile_lexicon
    from core.risk_review import RiskReviewer

    try:
        with path.open(encoding="utf-8") as lines:
            items = read_set(lines, source=str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    client = build_model_client(env, settings)
    tally = UsageTally()
    try:
        reviewer = RiskReviewer(client=client, settings=settings.risk_review, observer=tally)
        results = await review_all(items, reviewer, concurrency=concurrency)
    finally:
        await client.close()
    lexicon = compile_lexicon(settings.risk_guard.lexicon)
    print(report(results, model=settings.risk_review.model, tally=tally, lexicon=lexicon), file=out)
    return 0
