"""Logs: one line per event, secrets scrubbed, no message text at INFO (the core never logs message text).

JSON (the default) is one object per line on stdout, which PaaS log drains parse; `LOG_FORMAT=text` is for
people and keeps the same fields as `key=value` after the message. Third-party libraries keep to what an
operator can act on: their per-request chatter and warnings about features Last Resort never uses are
dropped at the logger that emits them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

REDACTED = "[secret]"

# The SDKs log request bodies (message text) at DEBUG and one line per HTTP request at INFO.
QUIET_LOGGERS: tuple[str, ...] = (
    *("httpx", "httpx2", "httpcore", "httpcore2", "anthropic"),
    *("slack_bolt", "slack_sdk", "discord", "aiohttp.access"),
)

# Warnings about things that are as intended: (logger, text the message starts with).
EXPECTED_WARNINGS = (
    # Bolt reads SLACK_BOT_TOKEN from the environment itself, then prefers the client we give it.
    ("slack_bolt.AsyncApp", "As you gave `client` as well, `token` will be unused."),
    # Last Resort never joins a voice channel.
    ("discord.client", "PyNaCl is not installed, voice will NOT be supported"),
    ("discord.client", "davey is not installed, voice will NOT be supported"),
)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field of the event.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class SecretScrubber(logging.Filter):
    """Last line of defence: replaces any configured secret that reaches a log record."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Short values would redact ordinary words; real tokens are long.
        self._secrets = tuple(s for s in secrets if len(s) >= 8)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str):
                setattr(record, key, self.scrub(value))
        return True

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


class _DropExpected(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self._prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._prefixes)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`: the same fields as the JSON lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if not fields:
            return line
        rendered = " ".join(f"{key}={_value(value)}" for key, value in fields.items())
        head, newline, rest = line.partition("\n")  # a traceback stays below the line it belongs to
        return f"{head} {rendered}{newline}{rest}"


def _value(value: object) -> str:
    text = str(value)
    return repr(text) if not text or any(c.isspace() or c in "\"'=" for c in text) else text


def _quiet_third_parties(level: int) -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, prefix in EXPECTED_WARNINGS:
        by_logger[name] = (*by_logger.get(name, ()), prefix)
    for name, prefixes in by_logger.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DropExpected)]:
            logger.removeFilter(old)
        logger.addFilter(_DropExpected(prefixes))


def configure_logging(*, level: str, fmt: str, secrets: Iterable[str], stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(SecretScrubber(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    _quiet_third_parties(root.level)
