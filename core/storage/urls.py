"""Database URLs as they may be shown: in errors, logs and `lastresort check`."""

from __future__ import annotations


def redact_url(database_url: str) -> str:
    """The URL without its password, for error messages and logs."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or "@" not in rest:
        return database_url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
