"""The link a server admin opens to add the bot, asking for exactly the permissions the adapter uses."""

from __future__ import annotations

import discord

SCOPES = ("bot", "applications.commands")


def required_permissions() -> discord.Permissions:
    """What each permission is for:

    - View Channels, Read Message History: see the mention and the thread it starts.
    - Send Messages, Send Messages in Threads, Embed Links: answer, and show warnings and notices as embeds.
    - Create Public Threads: every conversation gets its own thread.
    - Manage Threads: lock an ended thread (a real lock; without it the bot falls back to ignoring posts)
      and unlock it when a moderator reopens the conversation.
    """
    return discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        create_public_threads=True,
        manage_threads=True,
        read_message_history=True,
        embed_links=True,
    )


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=required_permissions(), scopes=SCOPES)
