"""The `lastresort` command. Exit status 2 means "fix your configuration or environment"."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from bots import operator_commands
from bots.environment import BadEnvironmentError, Environment
from bots.logging_setup import configure_logging
from core.settings import ConfigError, Settings, load_settings
from core.storage.errors import StoreUnavailableError

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
# `stats --days`: about ten years, well inside what dates can count back.
MAX_DAYS = 3660


class UsageProblem(Exception):
    """Something the operator must set or fix; printed as is, exit status 2."""


def _load(*, need_model: bool = True) -> tuple[Environment, Settings]:
    try:
        env = Environment.from_mapping(os.environ)
    except BadEnvironmentError as exc:
        raise UsageProblem(str(exc)) from exc
    try:
        settings = load_settings(env.config_path)
    except ConfigError as exc:
        raise UsageProblem(str(exc)) from exc
    if need_model and not env.anthropic_api_key:
        raise UsageProblem(
            "ANTHROPIC_API_KEY is not set. Export your Anthropic API key, e.g. "
            "`export ANTHROPIC_API_KEY=sk-ant-...` (ANTHROPIC_BASE_URL optionally points elsewhere)."
        )
    return env, settings


async def _chat(env: Environment, settings: Settings) -> int:
    # Imported here: the model SDK alone takes seconds to import, which `stats` or `--help` never need.
    from bots.runtime import open_runtime
    from bots.terminal.chat import TerminalChat

    log_note = _terminal_logging(env)
    async with open_runtime(env, settings) as runtime:
        try:
            return await TerminalChat(runtime.service, log_note=log_note).run()
        finally:
            await runtime.service.drain()


def _limit_adapters(env: Environment, chosen: frozenset[str] | None) -> Environment:
    """`--adapters slack` runs only Slack even when Discord's token is set too (and vice versa)."""
    if chosen is not None and "slack" not in chosen:
        env = replace(env, slack_bot_token=None, slack_signing_secret=None, slack_app_token=None)
    if chosen is not None and "discord" not in chosen:
        env = replace(env, discord_token=None)
    return env


async def _run(env: Environment, settings: Settings) -> int:
    from bots.supervisor import run_adapters

    if not (env.slack_enabled or env.discord_enabled):
        print("No Slack or Discord credentials set: starting the terminal chat.", file=sys.stderr)
        return await _chat(env, settings)
    configure_logging(level=env.log_level, fmt=env.log_format, secrets=env.secrets())
    return await run_adapters(env, settings)


async def _migrate(env: Environment, settings: Settings) -> int:
    from core.clock import SystemClock
    from core.storage.factory import open_store
    from core.storage.urls import redact_url

    configure_logging(level=env.log_level, fmt=env.log_format, secrets=env.secrets())
    shown = redact_url(env.database_url)
    store = await open_store(env.database_url, clock=SystemClock(), migrate=False)
    try:
        before, latest = await store.schema_versions()
        await store.migrate()
    finally:
        await store.close()
    if before == 0:
        print(f"Created the database schema (version {latest}) in {shown}.")
    elif before < latest:
        print(f"Upgraded the database schema in {shown} from version {before} to {latest}.")
    else:
        print(f"The database schema in {shown} is up to date (version {latest}).")
    return 0


def chat_log_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "lastresort" / "chat.log"


def _terminal_logging(env: Environment) -> str:
    """In a terminal, stdout is the conversation. On a TTY log lines go to a file (named in the banner) so
    that none lands in the middle of a reply; piped, they go to stderr. Warnings and up either way."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        path = chat_log_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            stream = path.open("a", encoding="utf-8")
        except OSError as exc:
            configure_logging(level="WARNING", fmt="text", secrets=env.secrets(), stream=sys.stderr)
            return f"(Cannot write the log file {path}: {exc.strerror or exc}; log lines go to stderr.)"
        configure_logging(level="WARNING", fmt="text", secrets=env.secrets(), stream=stream)
        return f"Warnings and errors are logged to {path}."
    configure_logging(level="WARNING", fmt="text", secrets=env.secrets(), stream=sys.stderr)
    return ""


Command = Callable[[Environment, Settings], Coroutine[Any, Any, int]]


class _Parser(argparse.ArgumentParser):
    """A bad flag is one line naming the flag and the reason (argparse adds the whole usage otherwise)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _command(sub: Any, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=description)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lastresort",
        description="Claude in Slack and Discord threads, able to end a conversation as a last resort.",
        epilog="Secrets and endpoints come from the environment; settings from LASTRESORT_CONFIG "
        "(default ./config/lastresort.yaml, else the built-in defaults). See README.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    run = _command(
        sub,
        "run",
        "start every adapter whose credentials are set (the terminal chat if none)",
        "Start the Slack and Discord adapters whose credentials are set, with /healthz on PORT; with none set, "
        "the terminal chat. Applies pending database migrations first. Stops cleanly on SIGTERM.",
    )
    run.add_argument(
        "--adapters",
        type=_adapter_list,
        default=None,
        help="comma-separated subset to start (slack,discord): the Procfile's web and worker split them",
    )
    _command(
        sub,
        "chat",
        "talk to the bot in this terminal",
        "Talk to the bot in this terminal: one message per line, /help for the commands. Needs only "
        "ANTHROPIC_API_KEY; conversations are kept in DATABASE_URL like Slack's and Discord's.",
    )
    _command(
        sub,
        "migrate",
        "create or upgrade the database schema (safe to run twice)",
        "Create or upgrade the database schema in DATABASE_URL and say what changed. Safe to run twice and "
        "from several instances at once.",
    )
    _command(
        sub,
        "check",
        "ask every configured service whether the configuration and credentials work",
        "Validate the configuration, then ask each configured service (Anthropic, Slack, Discord, the "
        "database) with a short timeout and print what it answered. Creates nothing. Exit status 2 if "
        "anything needs fixing.",
    )
    stats = _command(
        sub,
        "stats",
        "endings, refusals and feedback per day",
        "A table and a chart of endings, refused endings or warnings, risk-guard firings and feedback per day "
        "(UTC), from the audit events in DATABASE_URL.",
    )
    stats.add_argument(
        "--days",
        type=_days,
        default=14,
        metavar="N",
        help=f"how many days to show, ending today (1 to {MAX_DAYS}; default 14)",
    )
    export = _command(
        sub,
        "export",
        "audit events as JSON lines on stdout",
        "Write the audit events since a date as JSON lines on stdout (no message text).",
    )
    export.add_argument("--since", type=_date, required=True, help="YYYY-MM-DD (UTC)")
    _command(
        sub,
        "purge",
        "remove message text older than the retention period now",
        "Remove the text of messages older than retention.message_text_days now (the running bot also does "
        "this by itself); audit events are kept.",
    )
    evaluate = _command(
        sub,
        "eval",
        "measure the risk review on a labelled set",
        "Run the configured risk review (its model, instructions and timeout) on every message of a labelled "
        'JSON-lines file ({"text", "label", "lang"}; label self_harm, harm_to_others, crisis or none) and print '
        "recall per category and language, the false-positive rate, the cost and the worst misses. Calls the "
        "Anthropic API once per message. config/risk_eval_set.jsonl is a set to start from.",
    )
    evaluate.add_argument("kind", choices=["risk"], help="what to evaluate (risk: the risk review)")
    evaluate.add_argument("file", type=Path, help="the labelled set, one JSON object per line")
    evaluate.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="reviews in flight at once (default 4)"
    )
    return parser


def _adapter_list(raw: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = chosen - {"slack", "discord"}
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from slack, discord (got {raw!r})")
    return chosen


def _days(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a whole number of days, not {raw!r}") from exc
    if not 1 <= value <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_DAYS} days, not {value}")
    return value


def _date(raw: str) -> datetime:
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=UTC)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {raw!r}") from exc


def _operator_command(args: argparse.Namespace) -> int:
    try:
        env = Environment.from_mapping(os.environ)
    except BadEnvironmentError as exc:
        print(f"lastresort: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(level="WARNING", fmt="text", secrets=env.secrets(), stream=sys.stderr)
    if args.command == "check":
        return asyncio.run(operator_commands.check(env, sys.stdout))
    try:
        if args.command == "stats":
            return asyncio.run(operator_commands.stats(env, sys.stdout, days=args.days))
        if args.command == "export":
            return asyncio.run(operator_commands.export(env, sys.stdout, since=args.since))
        settings = load_settings(env.config_path)
        return asyncio.run(operator_commands.purge(env, settings, sys.stdout))
    except (StoreUnavailableError, ConfigError) as exc:
        print(f"lastresort: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _eval(args: argparse.Namespace) -> int:
    try:
        env, settings = _load(need_model=True)
    except UsageProblem as exc:
        print(f"lastresort: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(level="WARNING", fmt="text", secrets=env.secrets(), stream=sys.stderr)
    try:
        return asyncio.run(
            operator_commands.eval_risk(env, settings, sys.stdout, path=args.file, concurrency=args.concurrency)
        )
    except ConfigError as exc:
        print(f"lastresort: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("check", "stats", "export", "purge"):
        return _operator_command(args)
    if args.command == "eval":
        return _eval(args)
    commands: dict[str, tuple[Command, bool]] = {
        "run": (_run, True),
        "chat": (_chat, True),
        "migrate": (_migrate, False),
    }
    command, need_model = commands[args.command]
    try:
        env, settings = _load(need_model=need_model)
    except UsageProblem as exc:
        print(f"lastresort: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "run":
        problem = env.credential_problem(args.adapters)
        if problem:
            print(f"lastresort: {problem}", file=sys.stderr)
            return EXIT_CONFIG
        env = _limit_adapters(env, args.adapters)
    if args.command == "chat":
        # Interactive: Ctrl-C always ends it, even when started from a shell that left SIGINT ignored
        # (background jobs inherit that, and Python then installs no handler of its own).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return asyncio.run(command(env, settings))
    except StoreUnavailableError as exc:
        print(f"lastresort: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
