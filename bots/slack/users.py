"""Display names for message authors, so that in a thread with several people the model knows who said what."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

# Names change rarely; a few minutes keeps users.info (Tier 4) off the path of most messages while a
# renamed user is still seen under the new name soon.
NAME_TTL_SECONDS = 300.0
MAX_CACHED = 5000
LOOKUP_SECONDS = 2.0


def display_name(user: dict[str, Any]) -> str | None:
    profile = user.get("profile") or {}
    for value in (profile.get("display_name"), profile.get("real_name"), user.get("real_name"), user.get("name")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


class UserNames:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl_seconds: float = NAME_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def name_of(self, user_id: str) -> str | None:
        """The user's display name, or None if Slack cannot tell (the message still goes through)."""
        now = self._clock()
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            # Best effort, and brief: the message is not stored until the name is known, so a slow or
            # failing users.info (429 back-off, network) must never hold it up for long or drop it.
            async with asyncio.timeout(LOOKUP_SECONDS):
                response = await self._client.users_info(user=user_id)
        except SlackApiError as exc:
            log.warning("cannot look up user name", extra={"error": exc.response.get("error")})
            return cached[1] if cached else None
        except Exception as exc:
            log.warning("cannot look up user name", extra={"error": type(exc).__name__})
            return cached[1] if cached else None
        name = display_name(response.get("user") or {})
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[user_id] = (now + self._ttl, name)
        return name
