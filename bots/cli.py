"""The `lastresort` command. Exit status 2 means "fix your configuration or environment"."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bots import operator_commands
from bots.environment import BadEnvironmentError, Environment
from bots.logging_setup import configure_logging
from bots.runtime import open_runtime
from bots.terminal.chat import TerminalChat
from core.settings import ConfigError, Settings, load_settings
from core.storage.errors import StoreUnavailableError

log = logging.getLogger(__name__)

EXIT_CONFIG = 2


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
    async with open_runtime(env, settings) as runtime:
        return await TerminalChat(runtime.service).run()


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
    return await run_adapters(env, settings)


async def _migrate(env: Environment, settings: Settings) -> int:
    from core.clock import SystemClock
    from core.storage.factory import open_store

    store = await open_store(env.database_url, clock=SystemClock())
    await store.close()
    print("Database schema is up to date.")
    return 0


def _terminal_logging(env: Environment) -> None:
    # In a terminal, stdout is the conversation: logs go to stderr, warnings and up.
    configure_logging(level="WARNING", fmt="text", secrets=env.secrets(), stream=sys.stderr)


Command = Callable[[Environment, Settings], Coroutine[Any, Any, int]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lastresort", description="Claude in Slack and Discord threads.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start every adapter whose credentials are set (the terminal chat if none)")
    run.add_argument(
        "--adapters",
        type=_adapter_list,
        default=None,
        help="comma-separated subset to start (slack,discord): the Procfile's web and worker split them",
    )
    sub.add_parser("chat", help="talk to the bot in this terminal")
    sub.add_parser("migrate", help="create or upgrade the database schema (safe to run twice)")
    sub.add_parser("check", help="validate configuration and credentials; say exactly what is missing")
    stats = sub.add_parser("stats", help="endings, refusals and feedback per day")
    stats.add_argument("--days", type=_positive, default=14)
    export = sub.add_parser("export", help="audit events as JSON lines on stdout")
    export.add_argument("--since", type=_date, required=True, help="YYYY-MM-DD (UTC)")
    sub.add_parser("purge", help="remove message text older than the retention period now")
    return parser


def _adapter_list(raw: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = chosen - {"slack", "discord"}
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from slack, discord (got {raw!r})")
    return chosen


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("check", "stats", "export", "purge"):
        return _operator_command(args)
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
        env = _limit_adapters(env, args.adapters)
        if args.adapters is not None and not (env.slack_enabled or env.discord_enabled):
            print(f"lastresort: no credentials set for {', '.join(sorted(args.adapters))}", file=sys.stderr)
            return EXIT_CONFIG
    if args.command == "chat" or (args.command == "run" and not (env.slack_enabled or env.discord_enabled)):
        _terminal_logging(env)
    else:
        configure_logging(level=env.log_level, fmt=env.log_format, secrets=env.secrets())
    try:
        return asyncio.run(command(env, settings))
    except StoreUnavailableError as exc:
        print(f"lastresort: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
