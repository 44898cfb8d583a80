"""Everything the process reads from its environment: secrets and endpoints, never from config files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.storage.factory import DEFAULT_DATABASE_URL

# Read when present in the working directory (a clone, a PaaS slug); elsewhere the defaults built into the
# package apply, unless LASTRESORT_CONFIG names a file.
DEFAULT_CONFIG = Path("config/lastresort.yaml")
ADAPTERS = ("slack", "discord")


class BadEnvironmentError(Exception):
    """A variable is set to something unusable; the message names it."""


def _int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise BadEnvironmentError(f"{name} must be a whole number, not {raw!r}") from exc


def _ints(env: Mapping[str, str], name: str) -> tuple[int, ...] | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return tuple(int(part) for part in raw.replace(" ", "").split(",") if part)
    except ValueError as exc:
        raise BadEnvironmentError(f"{name} must be a comma-separated list of numbers, not {raw!r}") from exc


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() not in allowed:
        raise BadEnvironmentError(f"{name} must be one of {', '.join(allowed)}, not {raw!r}")
    return raw.lower()


def _port(env: Mapping[str, str]) -> int | None:
    port = _int(env, "PORT")
    if port is not None and not 1 <= port <= 65535:
        raise BadEnvironmentError(f"PORT must be between 1 and 65535, not {port}")
    return port


def _config_path(named: str | None) -> Path | None:
    if named:
        return Path(named)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


@dataclass(frozen=True)
class Environment:
    # Secrets are kept out of repr so that no log line or traceback can print them.
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    # None: no file, the built-in defaults.
    config_path: Path | None = None
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_app_token: str | None = field(default=None, repr=False)
    slack_api_url: str | None = None
    slack_app_id: str | None = None
    discord_token: str | None = field(default=None, repr=False)
    discord_api_url: str | None = None
    discord_gateway_url: str | None = None
    discord_shard_ids: tuple[int, ...] | None = None
    discord_shard_count: int | None = None
    port: int | None = None
    log_level: str = "INFO"
    log_format: str = "json"
    # `make bench` reads statements and transactions per message from /metrics; off in production.
    count_statements: bool = False

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Environment:
        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        return cls(
            anthropic_api_key=text("ANTHROPIC_API_KEY"),
            anthropic_base_url=text("ANTHROPIC_BASE_URL"),
            database_url=text("DATABASE_URL") or DEFAULT_DATABASE_URL,
            config_path=_config_path(text("LASTRESORT_CONFIG")),
            slack_bot_token=text("SLACK_BOT_TOKEN"),
            slack_signing_secret=text("SLACK_SIGNING_SECRET"),
            slack_app_token=text("SLACK_APP_TOKEN"),
            slack_api_url=text("SLACK_API_URL"),
            slack_app_id=text("SLACK_APP_ID"),
            discord_token=text("DISCORD_TOKEN"),
            discord_api_url=text("DISCORD_API_URL"),
            discord_gateway_url=text("DISCORD_GATEWAY_URL"),
            discord_shard_ids=_ints(env, "DISCORD_SHARD_IDS"),
            discord_shard_count=_int(env, "DISCORD_SHARD_COUNT"),
            port=_port(env),
            log_level=_choice(env, "LOG_LEVEL", LOG_LEVELS, "INFO").upper(),
            log_format=_choice(env, "LOG_FORMAT", ("json", "text"), "json"),
            count_statements=text("LASTRESORT_COUNT_STATEMENTS") == "1",
        )

    def missing_credentials(self, adapter: str) -> tuple[str, ...]:
        """The variables an adapter still needs, once any of its credentials is set; () if none is."""
        if adapter == "slack":
            if not (self.slack_bot_token or self.slack_signing_secret or self.slack_app_token):
                return ()
            missing: tuple[str, ...] = () if self.slack_bot_token else ("SLACK_BOT_TOKEN",)
            if not (self.slack_signing_secret or self.slack_app_token):
                missing += ("SLACK_SIGNING_SECRET",)
            return missing
        if self.discord_token and self.discord_shard_ids and self.discord_shard_count is None:
            return ("DISCORD_SHARD_COUNT",)
        return ()

    def credential_problem(self, adapters: frozenset[str] | None = None) -> str | None:
        """Why `run` cannot start the adapters asked for (all whose credentials are set, by default)."""
        for adapter in sorted(adapters or ADAPTERS):
            missing = self.missing_credentials(adapter)
            if missing:
                hint = " (or SLACK_APP_TOKEN for Socket Mode)" if "SLACK_SIGNING_SECRET" in missing else ""
                return f"{adapter} credentials are incomplete: {' and '.join(missing)} not set{hint}"
            if adapters is not None and not self._enabled(adapter):
                wanted = "DISCORD_TOKEN" if adapter == "discord" else "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"
                return f"--adapters {adapter}: {wanted} not set"
        return None

    def _enabled(self, adapter: str) -> bool:
        return self.slack_enabled if adapter == "slack" else self.discord_enabled

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token and (self.slack_signing_secret or self.slack_app_token))

    @property
    def discord_enabled(self) -> bool:
        return bool(self.discord_token)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value set, so log output can be scrubbed of them."""
        values = (
            self.anthropic_api_key,
            self.slack_bot_token,
            self.slack_signing_secret,
            self.slack_app_token,
            self.discord_token,
        )
        return tuple(v for v in values if v)
