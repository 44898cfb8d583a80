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
# After a failed lookup, messages go on without the name for this long before Slack is asked again.
FAILURE_TTL_SECONDS = 60.0


def display_name(user: dict[str, Any]) -> str | None:
    profile = user.get("profile") or {}
    for value in (profile.get("display_name"), profile.get("real_name"), user.get("real_name"), user.get("name")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


class UserNames:
    """Display names by user id, cached; a lookup in flight is shared, and a failed one is remembered
    briefly too, so a failing users.info costs one call a minute, not one per message."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl_seconds: float = NAME_TTL_SECONDS,
        failure_ttl_seconds: float = FAILURE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._failure_ttl = failure_ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lookups: dict[str, asyncio.Task[str | None]] = {}

    def _fresh(self, user_id: str) -> tuple[float, str | None] | None:
        cached = self._cache.get(user_id)
        return cached if cached is not None and cached[0] > self._clock() else None

    def prefetch(self, user_id: str) -> None:
        """Start looking the name up now, so that it is known by the time the message needs it."""
        if self._fresh(user_id) is None and user_id not in self._lookups:
            task = asyncio.create_task(self._look_up(user_id))
            self._lookups[user_id] = task
            task.add_done_callback(lambda _: self._lookups.pop(user_id, None))

    async def name_of(self, user_id: str) -> str | None:
        """The user's display name, or None if Slack cannot tell (the message still goes through)."""
        cached = self._fresh(user_id)
        if cached is not None:
            return cached[1]
        self.prefetch(user_id)
        # Shielded: one message giving up (cancelled by shutdown) must not cancel another's lookup.
        return await asyncio.shield(self._lookups[user_id])

    async def _look_up(self, user_id: str) -> str | None:
        previous = self._cache.get(user_id)
        known = previous[1] if previous else None
        try:
            # Best effort, and brief: a slow or failing users.info (429 back-off, network) must never hold
            # a message up for long or drop it.
            async with asyncio.timeout(LOOKUP_SECONDS):
                response = await self._client.users_info(user=user_id)
        except SlackApiError as exc:
            log.warning("cannot look up user name", extra={"error": exc.response.get("error")})
            self._remember(user_id, known, self._failure_ttl)
            return known
        except Exception as exc:
            log.warning("cannot look up user name", extra={"error": type(exc).__name__})
            self._remember(user_id, known, self._failure_ttl)
            return known
        name = display_name(response.get("user") or {})
        self._remember(user_id, name, self._ttl)
        return name

    def _remember(self, user_id: str, name: str | None, ttl: float) -> None:
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[user_id] = (self._clock() + ttl, name)
