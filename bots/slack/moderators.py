"""Who may moderate, asked of Slack at the moment it matters.

Slash commands are open to every member of a workspace, so every moderator action checks here first.
Nothing is cached: removing someone from the moderators' user group or taking away their admin role
takes effect on their very next command.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.settings import ModeratorSettings

log = logging.getLogger(__name__)


class SlackModerators:
    def __init__(self, client: AsyncWebClient, settings: ModeratorSettings) -> None:
        self._client = client
        self._settings = settings

    async def is_moderator(self, user_id: str) -> bool:
        """Listed by id, in a listed user group, or (if enabled) a workspace admin or owner.

        Fails closed: if Slack cannot answer, the user is not treated as a moderator.
        """
        if user_id in self._settings.slack_user_ids:
            return True
        for group in self._settings.slack_usergroup_ids:
            if await self._in_group(user_id, group):
                return True
        return self._settings.slack_workspace_admins and await self._is_admin(user_id)

    async def _in_group(self, user_id: str, group: str) -> bool:
        try:
            response = await self._client.usergroups_users_list(usergroup=group)
        except SlackApiError as exc:
            log.warning("cannot list user group members", extra={"group": group, "error": exc.response.get("error")})
            return False
        return user_id in (response.get("users") or [])

    async def _is_admin(self, user_id: str) -> bool:
        try:
            response = await self._client.users_info(user=user_id)
        except SlackApiError as exc:
            log.warning("cannot look up user", extra={"error": exc.response.get("error")})
            return False
        user = response.get("user") or {}
        return any(bool(user.get(flag)) for flag in ("is_admin", "is_owner", "is_primary_owner"))
