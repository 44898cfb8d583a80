"""A fake Discord (REST API v10 + gateway websocket) for tests.

Why: the Discord adapter has to be exercised with the real discord.py client, on loopback, with
Discord's documented rules enforced (locked/archived threads, interaction acknowledgement, rate
limits), without touching the network.

The fake runs an aiohttp app on ``127.0.0.1:0`` in its *own* thread and event loop, so it serves
in-process clients running in the test's loop as well as bots started as subprocesses. Every public
method is thread-safe.

Usage::

    with FakeDiscord() as fake:
        restore = point_discord_py_at(fake)   # or set DISCORD_API_URL / DISCORD_GATEWAY_URL
        try:
            ...  # start the bot with fake.token, drive it with fake.user_post(...) etc.
        finally:
            restore()

The world: one application whose bot user is "LastResort", one guild with roles ``@everyone``,
``Moderators`` (MANAGE_THREADS) and the bot's managed role, a guild owner, a text channel
(``fake.text_channel_id``), members added with :meth:`FakeDiscord.add_member`, public threads, DMs.

Wire facts this fake reproduces (checked against discord.py 2.7.1 and Discord's API docs):

* JSON answers carry exactly ``Content-Type: application/json``; discord.py compares the header
  verbatim and treats ``application/json; charset=utf-8`` as text.
* 429 answers carry ``retry_after`` in the JSON body, ``Retry-After``/``X-RateLimit-*`` headers and
  a ``Via`` header: discord.py treats a 429 without ``Via`` as a Cloudflare ban and raises.
* discord.py asks for ``GET /oauth2/applications/@me`` (not ``/applications/@me``) at login and
  ``PUT /applications/{id}/commands`` on ``tree.sync()``.
* Interaction callbacks are always posted with ``?with_response=1`` and must be answered with
  ``{"interaction": {...}, "resource": {...}}``.
* After a type 5 (deferred) response the first follow-up replaces the "thinking" message.
* Sending a message in an archived thread unarchives it unless the thread is locked; editing a
  message, or using an application command, in an archived thread fails with 50083.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

import yarl
from aiohttp import WSMsgType, web

__all__ = [
    "Call",
    "ChannelType",
    "DiscordError",
    "FakeDiscord",
    "Intent",
    "Perm",
    "SessionInfo",
    "point_discord_py_at",
    "snowflake_time_ms",
]

JSON = dict[str, Any]
T = TypeVar("T")

API_VERSION: Final = 10
DISCORD_EPOCH_MS: Final = 1_420_070_400_000
DEFAULT_TOKEN: Final = "fake-bot-token"


class Perm:
    """Permission bits (Discord docs, topics/permissions); tests check them against discord.py."""

    CREATE_INSTANT_INVITE: Final = 1 << 0
    ADMINISTRATOR: Final = 1 << 3
    MANAGE_CHANNELS: Final = 1 << 4
    ADD_REACTIONS: Final = 1 << 6
    VIEW_CHANNEL: Final = 1 << 10
    SEND_MESSAGES: Final = 1 << 11
    MANAGE_MESSAGES: Final = 1 << 13
    EMBED_LINKS: Final = 1 << 14
    ATTACH_FILES: Final = 1 << 15
    READ_MESSAGE_HISTORY: Final = 1 << 16
    MENTION_EVERYONE: Final = 1 << 17
    USE_EXTERNAL_EMOJIS: Final = 1 << 18
    CHANGE_NICKNAME: Final = 1 << 26
    USE_APPLICATION_COMMANDS: Final = 1 << 31
    MANAGE_THREADS: Final = 1 << 34
    CREATE_PUBLIC_THREADS: Final = 1 << 35
    CREATE_PRIVATE_THREADS: Final = 1 << 36
    SEND_MESSAGES_IN_THREADS: Final = 1 << 38
    ALL: Final = (1 << 53) - 1


class Intent:
    """Gateway intent bits (Discord docs, events/gateway#gateway-intents)."""

    GUILDS: Final = 1 << 0
    GUILD_MEMBERS: Final = 1 << 1
    GUILD_PRESENCES: Final = 1 << 8
    GUILD_MESSAGES: Final = 1 << 9
    GUILD_MESSAGE_REACTIONS: Final = 1 << 10
    DIRECT_MESSAGES: Final = 1 << 12
    DIRECT_MESSAGE_REACTIONS: Final = 1 << 13
    MESSAGE_CONTENT: Final = 1 << 15
    PRIVILEGED: Final = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


class ChannelType:
    GUILD_TEXT: Final = 0
    DM: Final = 1
    PUBLIC_THREAD: Final = 11
    PRIVATE_THREAD: Final = 12
    THREADS: Final = (11, 12)


class _Flag:
    """Message flags."""

    SUPPRESS_EMBEDS: Final = 1 << 2
    EPHEMERAL: Final = 1 << 6
    LOADING: Final = 1 << 7
    SUPPRESS_NOTIFICATIONS: Final = 1 << 12
    IS_COMPONENTS_V2: Final = 1 << 15
    SENDABLE: Final = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2


# Interaction types and interaction callback types.
_I_COMMAND, _I_COMPONENT, _I_AUTOCOMPLETE, _I_MODAL = 2, 3, 4, 5
_CB_MESSAGE, _CB_DEFER, _CB_DEFER_UPDATE, _CB_UPDATE, _CB_AUTOCOMPLETE, _CB_MODAL = 4, 5, 6, 7, 8, 9
_SELECT_TYPES: Final = (3, 5, 6, 7, 8)
_ARCHIVE_DURATIONS: Final = (60, 1440, 4320, 10080)
_MENTION_USER = re.compile(r"<@!?(\d+)>")
_MENTION_ROLE = re.compile(r"<@&(\d+)>")

_EVERYONE_PERMS: Final = (
    Perm.CREATE_INSTANT_INVITE
    | Perm.ADD_REACTIONS
    | Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.CHANGE_NICKNAME
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.CREATE_PUBLIC_THREADS
    | Perm.SEND_MESSAGES_IN_THREADS
)
_DM_PERMS: Final = (
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.ADD_REACTIONS
)


# --------------------------------------------------------------------------------------------------
# Errors and small records
# --------------------------------------------------------------------------------------------------


class DiscordError(Exception):
    """A Discord API error: HTTP status plus JSON error ``code``.

    Served as JSON by the REST API; raised by member actions (``user_post`` in a locked thread raises
    one with ``code == 160005``) so tests can assert on the same codes the adapter sees.
    """

    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None) -> None:
        super().__init__(f"{status}: {message} (error code: {code})")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> JSON:
        out: JSON = {"message": self.message, "code": self.code}
        if self.errors is not None:
            out["errors"] = self.errors
        return out


def _unknown_channel() -> DiscordError:
    return DiscordError(404, 10003, "Unknown Channel")


def _unknown_message() -> DiscordError:
    return DiscordError(404, 10008, "Unknown Message")


def _missing_access() -> DiscordError:
    return DiscordError(403, 50001, "Missing Access")


def _missing_permissions() -> DiscordError:
    return DiscordError(403, 50013, "Missing Permissions")


def _thread_locked() -> DiscordError:
    # The HTTP status for 160005 is not documented; 403 is a guess, the JSON code is what matters.
    return DiscordError(403, 160005, "Thread is locked")


def _thread_archived() -> DiscordError:
    return DiscordError(400, 50083, "Thread is archived")


def _invalid_form(path: str, code: str, message: str) -> DiscordError:
    # Discord nests field errors as {"field": {"_errors": [{code, message}]}}.
    errors: JSON = {}
    node = errors
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = {"_errors": [{"code": code, "message": message}]}
    return DiscordError(400, 50035, "Invalid Form Body", errors)


@dataclass(frozen=True)
class Call:
    """One REST request as the fake saw it (path is relative to ``api_url``)."""

    method: str
    path: str
    json: Any
    query: dict[str, str]
    status: int
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionInfo:
    """A gateway session as seen from the test (a snapshot)."""

    session_id: str
    intents: int
    shard: tuple[int, int]
    seq: int
    connected: bool
    resumable: bool
    identify: JSON


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int | None
    retry_after: float
    times: int
    delay: float
    body: JSON | None
    is_global: bool
    until: float | None = None  # a rule for a time window (time.monotonic()): every match fails until then


@dataclass
class _File:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class _Request:
    method: str
    path: str
    params: dict[str, str]
    body: Any
    query: dict[str, str]
    files: list[_File]


@dataclass(eq=False)
class _Conn:
    """One websocket connection (lives in the server loop)."""

    ws: web.WebSocketResponse
    wake: asyncio.Event
    send_lock: asyncio.Lock
    server_closing: bool = False
    pump: asyncio.Task[None] | None = None
    closer: asyncio.Task[Any] | None = None

    async def send(self, frame: str) -> None:
        async with self.send_lock:
            await self.ws.send_str(frame)


@dataclass(eq=False)
class _Session:
    session_id: str
    intents: int
    shard: tuple[int, int]
    identify: JSON
    log: list[tuple[int, str]] = field(default_factory=list)  # (seq, frame); seq == index + 1
    sent_upto: int = 0
    conn: _Conn | None = None
    alive: bool = True  # resumable; False once the client closed it or it was invalidated


@dataclass
class _Interaction:
    id: int
    token: str
    type: int
    user_id: int
    channel_id: int
    guild_id: int | None
    payload: JSON
    created: float
    responses: list[JSON] = field(default_factory=list)
    ack_type: int | None = None
    original_message_id: int | None = None
    source_message_id: int | None = None  # the message a component sat on
    loading: bool = False
    followup_ids: list[int] = field(default_factory=list)


@dataclass
class _OpenModal:
    user_id: int
    custom_id: str
    interaction_id: int
    data: JSON
    source_message_id: int | None


def snowflake_time_ms(snowflake: int) -> int:
    """Unix milliseconds encoded in a snowflake."""
    return (snowflake >> 22) + DISCORD_EPOCH_MS


def _iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).isoformat()


def _json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    if status == 204:
        return web.Response(status=204, headers=dict(headers or {}))
    # Exactly "application/json": aiohttp's json_response/text= would append "; charset=utf-8".
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=hdrs)


# --------------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------------

_Handler = Callable[[_Request], tuple[int, Any]]


class FakeDiscord:
    """Discord REST API + gateway in one aiohttp app, served from a background thread.

    Configuration (constructor keywords, all optional):

    * ``token``: the bot token the fake accepts (REST ``Authorization: Bot ...`` and IDENTIFY).
    * ``bot_can_create_threads`` / ``bot_can_manage_threads``: the bot's CREATE_PUBLIC_THREADS in the
      text channel and MANAGE_THREADS in the guild (change later with :meth:`set_bot_permissions`).
    * ``allowed_privileged_intents``: privileged intents enabled "in the developer portal"; an
      IDENTIFY asking for others is closed with 4014 like Discord does.
    * ``heartbeat_interval_ms``: sent in HELLO.
    * ``interaction_timeout``: seconds the bot has for the initial interaction response (3 s on
      Discord); ``None`` disables the check. ``followup_ttl``: token lifetime (15 min).
    * ``auto_unarchive_on_message``: Discord unarchives an unlocked archived thread when someone
      posts in it; set False to get 50083 instead.
    * ``strict_commands``: ``slash_command`` refuses commands the bot never registered.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        bot_can_create_threads: bool = True,
        bot_can_manage_threads: bool = True,
        allowed_privileged_intents: int = Intent.PRIVILEGED,
        heartbeat_interval_ms: int = 41_250,
        interaction_timeout: float | None = 3.0,
        followup_ttl: float = 15 * 60.0,
        auto_unarchive_on_message: bool = True,
        strict_commands: bool = False,
        guild_name: str = "Last Resort Test Guild",
    ) -> None:
        self.token = token
        self.allowed_privileged_intents = allowed_privileged_intents
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.interaction_timeout = interaction_timeout
        self.followup_ttl = followup_ttl
        self.auto_unarchive_on_message = auto_unarchive_on_message
        self.strict_commands = strict_commands
        # True: websocket connections are accepted but never greeted (a gateway that never lets the bot in).
        self.silent_gateway = False

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._last_snowflake = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0

        self._calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._sessions: dict[str, _Session] = {}
        self._conns: set[_Conn] = set()
        self._background: set[asyncio.Future[Any]] = set()
        self._gateway_stats = {"connections": 0, "identifies": 0, "resumes": 0, "invalid_sessions": 0}
        self._gateway_received: list[JSON] = []
        self._gateway_closes: list[tuple[str | None, int | None, bool]] = []

        # World.
        self.application_id = self._snowflake()
        self.bot_user_id = self.application_id  # a bot user shares its application's id
        self.guild_id = self._snowflake()
        self.owner_id = self._snowflake()
        self.moderator_role_id = self._snowflake()
        self.bot_role_id = self._snowflake()
        self.text_channel_id = self._snowflake()
        self._guild_name = guild_name
        self._guild_joined_at = _iso()
        self._users: dict[int, JSON] = {}
        self._members: dict[int, JSON] = {}  # user_id -> member without "user"
        self._roles: dict[int, JSON] = {}
        self._channels: dict[int, JSON] = {}
        self._messages: dict[int, dict[int, JSON]] = {}  # channel -> {message_id: message}
        self._ephemeral: dict[int, JSON] = {}
        self._ephemeral_owner: dict[int, int] = {}
        self._thread_members: dict[int, dict[int, str]] = {}  # thread -> {user_id: join timestamp}
        self._dm_by_user: dict[int, int] = {}
        self._dms_closed: set[int] = set()
        self._commands: dict[int | None, list[JSON]] = {None: []}
        self._interactions: dict[int, _Interaction] = {}
        self._token_to_interaction: dict[str, int] = {}
        self._open_modals: list[_OpenModal] = []
        self._attachments: dict[int, bytes] = {}
        self._bot_denied_in_threads = False
        self._nonces: dict[tuple[int, str], int] = {}

        self._users[self.bot_user_id] = self._user_json(self.bot_user_id, "LastResort", bot=True)
        self._users[self.owner_id] = self._user_json(self.owner_id, "owner")
        self._roles[self.guild_id] = self._role_json(self.guild_id, "@everyone", _EVERYONE_PERMS, 0)
        self._roles[self.moderator_role_id] = self._role_json(
            self.moderator_role_id, "Moderators", Perm.MANAGE_THREADS | Perm.MANAGE_MESSAGES, 1
        )
        self._roles[self.bot_role_id] = self._role_json(self.bot_role_id, "LastResort", 0, 2)
        self._roles[self.bot_role_id]["managed"] = True
        self._roles[self.bot_role_id]["tags"] = {"bot_id": str(self.bot_user_id)}
        self._members[self.bot_user_id] = self._member_record([self.bot_role_id])
        self._members[self.owner_id] = self._member_record([])
        self._channels[self.text_channel_id] = self._text_channel_json(self.text_channel_id, "general", 0)
        self._messages[self.text_channel_id] = {}
        self._apply_bot_permissions(bot_can_create_threads, bot_can_manage_threads)
        self._route_table = self._routes()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeDiscord:
        """Start serving in a background thread; returns self once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("FakeDiscord already started")
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # surfaced to start()'s caller
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="FakeDiscord", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            self._thread = None
            raise RuntimeError("FakeDiscord failed to start") from failure[0]
        return self

    def stop(self) -> None:
        """Close every websocket (1001), stop the server and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:
            raise RuntimeError("stop() must not be called from the fake's own thread")
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            fut.result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            self._thread = None
            self._loop = None

    def __enter__(self) -> FakeDiscord:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        """What ``discord.http.Route.BASE`` should be (no trailing slash)."""
        return f"{self.base_url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        """What ``DiscordWebSocket.DEFAULT_GATEWAY`` should be (discord.py appends the query)."""
        return f"ws://127.0.0.1:{self._port}/gateway"

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._ws_handler)
        app.router.add_route("*", "/api/v{version:\\d+}/{tail:.*}", self._rest_handler)
        app.router.add_get("/attachments/{channel}/{attachment}/{filename}", self._cdn_handler)
        app.router.add_route("*", "/{tail:.*}", self._not_found_handler)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def _shutdown(self) -> None:
        for conn in list(self._conns):
            conn.server_closing = True
            if not conn.ws.closed:
                with contextlib.suppress(TimeoutError, ConnectionError):
                    # Short: a client in the loop that called stop() cannot answer the close.
                    await asyncio.wait_for(conn.ws.close(code=1001, message=b"shutting down"), 0.5)
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ ids, change notification

    def _snowflake(self) -> int:
        # Real layout (ms since the Discord epoch << 22 | worker | process | increment), kept strictly
        # increasing so ordering by id is ordering by creation, as on Discord.
        with self._lock:
            now = int(time.time() * 1000) - DISCORD_EPOCH_MS
            candidate = (now << 22) | (1 << 17) | (1 << 12)
            if candidate <= self._last_snowflake:
                candidate = self._last_snowflake + 1
            self._last_snowflake = candidate
            return candidate

    def new_snowflake(self) -> int:
        """A fresh id (for tests that need one, e.g. a user id before add_member)."""
        return self._snowflake()

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()
            for loop, event in self._async_waiters:
                with contextlib.suppress(RuntimeError):  # that loop is closed; its waiter is gone
                    loop.call_soon_threadsafe(event.set)

    async def wait_for(
        self,
        predicate: Callable[[], T | Literal[False] | None],
        timeout: float = 5.0,  # noqa: ASYNC109 - the caller's loop must keep running the bot meanwhile
        *,
        what: str = "",
    ) -> T:
        """Wait in the caller's event loop until ``predicate()`` is truthy and return its value.

        Re-evaluated on every change in the fake and at least every 20 ms (so predicates about the
        bot's own state work too). Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._lock:
            self._async_waiters.append(waiter)
        try:
            deadline = loop.time() + timeout
            while True:
                event.clear()
                result = predicate()
                if result:
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate!r}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, 0.02))
        finally:
            with self._lock:
                self._async_waiters.remove(waiter)

    def wait_for_blocking(
        self, predicate: Callable[[], T | Literal[False] | None], timeout: float = 5.0, *, what: str = ""
    ) -> T:
        """Blocking variant of :meth:`wait_for`, for threads without a loop (never call it from the
        loop the bot runs in: it would stop the bot)."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate!r}")
            with self._cond:
                self._cond.wait(min(remaining, 0.02))

    # ------------------------------------------------------------------ world: builders

    def _user_json(self, user_id: int, name: str, *, bot: bool = False) -> JSON:
        user: JSON = {
            "id": str(user_id),
            "username": name,
            "discriminator": "0",
            "global_name": None if bot else name.title(),
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "primary_guild": None,
        }
        if bot:
            user["bot"] = True
        return user

    def _member_record(self, roles: Sequence[int]) -> JSON:
        return {
            "roles": [str(r) for r in roles],
            "nick": None,
            "avatar": None,
            "banner": None,
            "joined_at": _iso(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }

    def _role_json(self, role_id: int, name: str, permissions: int, position: int) -> JSON:
        return {
            "id": str(role_id),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": position,
            "permissions": str(permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def _text_channel_json(self, channel_id: int, name: str, position: int) -> JSON:
        return {
            "id": str(channel_id),
            "type": ChannelType.GUILD_TEXT,
            "guild_id": str(self.guild_id),
            "name": name,
            "position": position,
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "permission_overwrites": [],
            "default_auto_archive_duration": 1440,
            "default_thread_rate_limit_per_user": 0,
            "flags": 0,
        }

    def add_member(self, user_id: int | None, name: str, *, moderator: bool = False, bot: bool = False) -> JSON:
        """Add a guild member (dispatches GUILD_MEMBER_ADD to sessions with GUILD_MEMBERS).

        ``moderator=True`` gives the Moderators role (MANAGE_THREADS). Returns the member with
        ``user``; ``int(member["user"]["id"])`` is the user id.
        """
        with self._lock:
            uid = user_id if user_id is not None else self._snowflake()
            self._users[uid] = self._user_json(uid, name, bot=bot)
            self._members[uid] = self._member_record([self.moderator_role_id] if moderator else [])
            member = self._member_json(uid)
            self._emit("GUILD_MEMBER_ADD", {**member, "guild_id": str(self.guild_id)}, Intent.GUILD_MEMBERS)
            return copy.deepcopy(member)

    def set_moderator(self, user_id: int, moderator: bool = True) -> None:
        """Grant or revoke the Moderators role (dispatches GUILD_MEMBER_UPDATE)."""
        with self._lock:
            record = self._members[user_id]
            roles = [r for r in record["roles"] if r != str(self.moderator_role_id)]
            if moderator:
                roles.append(str(self.moderator_role_id))
            record["roles"] = roles
            member = self._member_json(user_id)
            self._emit("GUILD_MEMBER_UPDATE", {**member, "guild_id": str(self.guild_id)}, Intent.GUILD_MEMBERS)

    def add_text_channel(self, name: str) -> int:
        """Add another text channel (dispatches CHANNEL_CREATE); returns its id."""
        with self._lock:
            cid = self._snowflake()
            position = sum(1 for c in self._channels.values() if c["type"] == ChannelType.GUILD_TEXT)
            self._channels[cid] = self._text_channel_json(cid, name, position)
            self._messages[cid] = {}
            self._apply_bot_permissions(*self._bot_permission_flags())
            self._emit("CHANNEL_CREATE", copy.deepcopy(self._channels[cid]), Intent.GUILDS)
            return cid

    def dm_channel_id(self, user_id: int) -> int:
        """The DM channel between the bot and ``user_id`` (created if needed)."""
        with self._lock:
            return int(self._open_dm(user_id)["id"])

    def close_dms(self, user_id: int, closed: bool = True) -> None:
        """Make DMs to ``user_id`` fail with 50007 (the user blocks DMs from server members)."""
        with self._lock:
            if closed:
                self._dms_closed.add(user_id)
            else:
                self._dms_closed.discard(user_id)

    def set_bot_permissions(
        self,
        *,
        create_public_threads: bool | None = None,
        manage_threads: bool | None = None,
        send_messages_in_threads: bool | None = None,
    ) -> None:
        """Change the bot's permissions at runtime (dispatches GUILD_ROLE_UPDATE / CHANNEL_UPDATE)."""
        with self._lock:
            if send_messages_in_threads is not None:
                self._bot_denied_in_threads = not send_messages_in_threads
            current_create, current_manage = self._bot_permission_flags()
            self._apply_bot_permissions(
                current_create if create_public_threads is None else create_public_threads,
                current_manage if manage_threads is None else manage_threads,
            )
            role = copy.deepcopy(self._roles[self.bot_role_id])
            self._emit("GUILD_ROLE_UPDATE", {"guild_id": str(self.guild_id), "role": role}, Intent.GUILDS)
            for channel in self._channels.values():
                if channel["type"] == ChannelType.GUILD_TEXT:
                    self._emit("CHANNEL_UPDATE", copy.deepcopy(channel), Intent.GUILDS)

    def _bot_permission_flags(self) -> tuple[bool, bool]:
        channel = self._channels[self.text_channel_id]
        denied = any(
            int(o["id"]) == self.bot_user_id and int(o["deny"]) & Perm.CREATE_PUBLIC_THREADS
            for o in channel["permission_overwrites"]
        )
        manage = bool(int(self._roles[self.bot_role_id]["permissions"]) & Perm.MANAGE_THREADS)
        return (not denied, manage)

    def _apply_bot_permissions(self, create_threads: bool, manage_threads: bool) -> None:
        # MANAGE_THREADS comes from the bot's managed role; CREATE_PUBLIC_THREADS is granted to
        # @everyone (Discord's default), so taking it away is a member overwrite on text channels,
        # which is how a server admin would do it and what discord.py's permissions_for() reads.
        perms = Perm.MANAGE_THREADS if manage_threads else 0
        self._roles[self.bot_role_id]["permissions"] = str(perms)
        for channel in self._channels.values():
            if channel["type"] != ChannelType.GUILD_TEXT:
                continue
            others = [o for o in channel["permission_overwrites"] if int(o["id"]) != self.bot_user_id]
            deny = (0 if create_threads else Perm.CREATE_PUBLIC_THREADS) | (
                Perm.SEND_MESSAGES_IN_THREADS if self._bot_denied_in_threads else 0
            )
            if deny:
                others.append({"id": str(self.bot_user_id), "type": 1, "allow": "0", "deny": str(deny)})
            channel["permission_overwrites"] = others

    # ------------------------------------------------------------------ world: JSON views

    def _member_json(self, user_id: int, *, with_user: bool = True, permissions: int | None = None) -> JSON:
        member = copy.deepcopy(self._members[user_id])
        if with_user:
            member["user"] = copy.deepcopy(self._users[user_id])
        if permissions is not None:
            member["permissions"] = str(permissions)
        return member

    def _thread_member_json(self, thread_id: int, user_id: int) -> JSON | None:
        joined = self._thread_members.get(thread_id, {}).get(user_id)
        if joined is None:
            return None
        return {"id": str(thread_id), "user_id": str(user_id), "join_timestamp": joined, "flags": 1}

    def _channel_out(self, channel: JSON) -> JSON:
        out = copy.deepcopy(channel)
        if channel["type"] in ChannelType.THREADS:
            me = self._thread_member_json(int(channel["id"]), self.bot_user_id)
            if me is not None:
                out["member"] = me
        return out

    def _guild_json(self, *, with_counts: bool = False) -> JSON:
        guild: JSON = {
            "id": str(self.guild_id),
            "name": self._guild_name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": [copy.deepcopy(r) for r in self._roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(self.text_channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "max_members": 500000,
            "max_video_channel_users": 25,
        }
        if with_counts:
            guild["approximate_member_count"] = len(self._members)
            guild["approximate_presence_count"] = 0
        return guild

    def _guild_create_json(self, session: _Session) -> JSON:
        guild = self._guild_json()
        # Without GUILD_PRESENCES Discord only lists the bot (and voice members) here; the full
        # member list then needs GUILD_MEMBERS + REQUEST_GUILD_MEMBERS (op 8), as discord.py does.
        if session.intents & Intent.GUILD_PRESENCES:
            members = [self._member_json(uid) for uid in self._members]
        else:
            members = [self._member_json(self.bot_user_id)]
        guild.update(
            {
                "joined_at": self._guild_joined_at,
                "large": False,
                "unavailable": False,
                "member_count": len(self._members),
                "voice_states": [],
                "members": members,
                "channels": [
                    self._channel_out(c) for c in self._channels.values() if c["type"] == ChannelType.GUILD_TEXT
                ],
                "threads": [
                    self._channel_out(c)
                    for c in self._channels.values()
                    if c["type"] in ChannelType.THREADS and not c["thread_metadata"]["archived"]
                ],
                "presences": [],
                "stage_instances": [],
                "guild_scheduled_events": [],
                "soundboard_sounds": [],
                "lazy": True,
            }
        )
        return guild

    def _application_flags(self) -> int:
        """The portal's intent switches as an unverified app (under 100 servers) has them: the _LIMITED bits."""
        flags = 0
        for intent, bit in (
            (Intent.GUILD_PRESENCES, 1 << 13),
            (Intent.GUILD_MEMBERS, 1 << 15),
            (Intent.MESSAGE_CONTENT, 1 << 19),
        ):
            if self.allowed_privileged_intents & intent:
                flags |= bit
        return flags

    def _app_json(self) -> JSON:
        return {
            "id": str(self.application_id),
            "name": "LastResort",
            "icon": None,
            "description": "Claude in chat threads (fake)",
            "summary": "",
            "type": None,
            "bot_public": False,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": self._application_flags(),
            "owner": copy.deepcopy(self._users[self.owner_id]),
            "team": None,
            "bot": copy.deepcopy(self._users[self.bot_user_id]),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "tags": [],
            "approximate_guild_count": 1,
            "integration_types_config": {"0": {}},
        }

    # ------------------------------------------------------------------ permissions and rules

    def _base_permissions(self, user_id: int) -> int:
        if user_id == self.owner_id:
            return Perm.ALL
        record = self._members.get(user_id)
        if record is None:
            return 0
        perms = int(self._roles[self.guild_id]["permissions"])
        for rid in record["roles"]:
            role = self._roles.get(int(rid))
            if role is not None:
                perms |= int(role["permissions"])
        return Perm.ALL if perms & Perm.ADMINISTRATOR else perms

    def permissions(self, user_id: int, channel_id: int) -> int:
        """Effective permissions of ``user_id`` in a channel (threads use their parent's overwrites)."""
        with self._lock:
            channel = self._channels.get(channel_id)
            if channel is None:
                return 0
            if channel["type"] == ChannelType.DM:
                return _DM_PERMS if user_id in (self.bot_user_id, *self._dm_recipients(channel)) else 0
            if channel["type"] in ChannelType.THREADS:
                channel = self._channels[int(channel["parent_id"])]
            perms = self._base_permissions(user_id)
            if perms == Perm.ALL:
                return perms
            overwrites = {int(o["id"]): o for o in channel.get("permission_overwrites", [])}
            everyone = overwrites.get(self.guild_id)
            if everyone is not None:
                perms = (perms & ~int(everyone["deny"])) | int(everyone["allow"])
            allow = deny = 0
            for rid in self._members.get(user_id, {}).get("roles", []):
                o = overwrites.get(int(rid))
                if o is not None and o["type"] == 0:
                    allow |= int(o["allow"])
                    deny |= int(o["deny"])
            perms = (perms & ~deny) | allow
            mine = overwrites.get(user_id)
            if mine is not None and mine["type"] == 1:
                perms = (perms & ~int(mine["deny"])) | int(mine["allow"])
            return perms

    def _dm_recipients(self, channel: JSON) -> list[int]:
        return [int(u["id"]) for u in channel.get("recipients", [])]

    def _channel(self, channel_id: int) -> JSON:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise _unknown_channel()
        return channel

    def _require_access(self, user_id: int, channel: JSON) -> int:
        if channel["type"] == ChannelType.DM:
            if user_id not in (self.bot_user_id, *self._dm_recipients(channel)):
                raise _missing_access()
            return _DM_PERMS
        if user_id not in self._members and user_id != self.owner_id:
            raise _missing_access()
        perms = self.permissions(user_id, int(channel["id"]))
        if not perms & Perm.VIEW_CHANNEL:
            raise _missing_access()
        return perms

    def _check_write(self, user_id: int, channel: JSON, action: str) -> bool:
        """Apply Discord's thread rules; return True if a post must unarchive the thread first.

        Documented (topics/threads): without MANAGE_THREADS nobody can create or edit messages in a
        locked thread; nobody can edit messages, react or use app commands in an archived thread;
        sending a message unarchives an archived thread unless it is locked. Deleting works in
        archived threads, but in a locked one only while it is active.
        """
        perms = self._require_access(user_id, channel)
        if channel["type"] not in ChannelType.THREADS:
            if action == "post" and channel["type"] == ChannelType.GUILD_TEXT and not perms & Perm.SEND_MESSAGES:
                raise _missing_permissions()
            return False
        meta = channel["thread_metadata"]
        moderator = bool(perms & Perm.MANAGE_THREADS)
        if action == "post":
            if not perms & Perm.SEND_MESSAGES_IN_THREADS:
                raise _missing_permissions()
            if meta["locked"] and not moderator:
                raise _thread_locked()
            if meta["archived"]:
                if meta["locked"] or not self.auto_unarchive_on_message:
                    raise _thread_archived()
                return True
        elif action in ("edit", "interact", "react"):
            if meta["archived"]:
                raise _thread_archived()
            if action == "edit" and meta["locked"] and not moderator:
                raise _thread_locked()
        elif action == "delete" and meta["archived"] and meta["locked"] and not moderator:
            raise _thread_archived()
        return False

    # ------------------------------------------------------------------ gateway emission

    def _emit(
        self,
        event: str,
        data: JSON,
        intent: int | None,
        *,
        session_id: str | None = None,
        guild_id: int | None = None,
        transform: Callable[[_Session, JSON], JSON] | None = None,
    ) -> int:
        """Append a DISPATCH to every live session's log (or one session's); wakes their pumps.

        Logging to disconnected-but-resumable sessions is what makes RESUME replay work. Returns the
        number of sessions the event was queued for.
        """
        count = 0
        with self._lock:
            gid = guild_id if guild_id is not None else self.guild_id
            for session in self._sessions.values():
                if not session.alive or (session_id is not None and session.session_id != session_id):
                    continue
                if intent is not None and not session.intents & intent:
                    continue
                shard_id, shard_count = session.shard
                if (gid >> 22) % shard_count != shard_id:
                    continue
                payload = transform(session, data) if transform else data
                self._log_frame(session, event, payload)
                count += 1
        self._changed()
        return count

    def _log_frame(self, session: _Session, event: str, payload: JSON) -> None:
        seq = len(session.log) + 1
        frame = json.dumps({"op": 0, "t": event, "s": seq, "d": payload}, separators=(",", ":"))
        session.log.append((seq, frame))
        conn = session.conn
        if conn is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the fake is shutting down
                self._loop.call_soon_threadsafe(conn.wake.set)

    def dispatch(self, event: str, data: JSON, *, session_id: str | None = None) -> int:
        """Send an arbitrary DISPATCH (no intent filtering) to all sessions or one."""
        return self._emit(event, copy.deepcopy(data), None, session_id=session_id)

    def _message_intent(self, channel: JSON) -> int:
        return Intent.DIRECT_MESSAGES if channel["type"] == ChannelType.DM else Intent.GUILD_MESSAGES

    def _redact_for(self, session: _Session, message: JSON) -> JSON:
        # Message Content is privileged: without it Discord blanks content, embeds, attachments,
        # components and polls, except in DMs, the app's own messages and messages mentioning it.
        if session.intents & Intent.MESSAGE_CONTENT or "guild_id" not in message:
            return message
        if int(message["author"]["id"]) == self.bot_user_id:
            return message
        if any(int(u["id"]) == self.bot_user_id for u in message.get("mentions", [])):
            return message
        out = dict(message)
        out.update(content="", embeds=[], attachments=[], components=[])
        out.pop("poll", None)
        return out

    def _gateway_message(self, message: JSON) -> JSON:
        out = copy.deepcopy(message)
        channel = self._channels.get(int(message["channel_id"]))
        if channel is not None and channel["type"] != ChannelType.DM:
            out["guild_id"] = str(self.guild_id)
            author_id = int(message["author"]["id"])
            if author_id in self._members and "webhook_id" not in message:
                out["member"] = self._member_json(author_id, with_user=False)
            out["mentions"] = [
                {**u, "member": self._member_json(int(u["id"]), with_user=False)}
                if int(u["id"]) in self._members
                else u
                for u in out.get("mentions", [])
            ]
        return out

    def _emit_message(self, event: str, message: JSON, *, session_id: str | None = None) -> None:
        channel = self._channels[int(message["channel_id"])]
        self._emit(
            event,
            self._gateway_message(message),
            self._message_intent(channel),
            session_id=session_id,
            transform=self._redact_for,
        )

    def _thread_event(self, event: str, thread: JSON, **extra: Any) -> None:
        self._emit(event, {**self._channel_out(thread), **extra}, Intent.GUILDS)

    # ------------------------------------------------------------------ gateway control (public)

    @property
    def sessions(self) -> list[SessionInfo]:
        with self._lock:
            return [
                SessionInfo(
                    session_id=s.session_id,
                    intents=s.intents,
                    shard=s.shard,
                    seq=len(s.log),
                    connected=s.conn is not None,
                    resumable=s.alive,
                    identify=copy.deepcopy(s.identify),
                )
                for s in self._sessions.values()
            ]

    @property
    def gateway_stats(self) -> dict[str, int]:
        """Counters: ``connections``, ``identifies``, ``resumes``, ``invalid_sessions``."""
        with self._lock:
            return dict(self._gateway_stats)

    @property
    def gateway_received(self) -> list[JSON]:
        """Every payload clients sent on the gateway (IDENTIFY, heartbeats, RESUME, ...)."""
        with self._lock:
            return copy.deepcopy(self._gateway_received)

    @property
    def gateway_closes(self) -> list[tuple[str | None, int | None, bool]]:
        """One entry per ended websocket: (session_id, close code, closed by the fake?)."""
        with self._lock:
            return list(self._gateway_closes)

    def _connected(self, session_id: str | None) -> list[_Session]:
        return [
            s
            for s in self._sessions.values()
            if s.conn is not None and (session_id is None or s.session_id == session_id)
        ]

    def _in_server_loop(self, fn: Callable[[], Any]) -> None:
        if self._loop is None:
            raise RuntimeError("FakeDiscord is not running")
        self._loop.call_soon_threadsafe(fn)

    def disconnect_gateway(self, code: int = 4000, *, session_id: str | None = None, resumable: bool = True) -> int:
        """Close the websocket of every connected session (or one) with ``code``.

        Returns immediately (the close handshake needs the client's loop, which may be the caller's).
        With ``resumable=False`` the session is forgotten, so the client's RESUME gets op 9 and it
        re-identifies. Returns how many connections were closed.
        """
        with self._lock:
            targets = self._connected(session_id)
            conns = []
            for session in targets:
                if not resumable:
                    session.alive = False
                assert session.conn is not None
                session.conn.server_closing = True
                conns.append(session.conn)

        def close_all() -> None:
            for conn in conns:
                conn.closer = asyncio.ensure_future(conn.ws.close(code=code, message=b"fake disconnect"))

        self._in_server_loop(close_all)
        return len(conns)

    def request_reconnect(self, *, session_id: str | None = None) -> int:
        """Send op 7 RECONNECT: the client closes and resumes."""
        return self._send_op({"op": 7, "d": None}, session_id)

    def invalidate_session(self, *, resumable: bool = False, session_id: str | None = None) -> int:
        """Send op 9 INVALID_SESSION (``d`` = resumable); non-resumable sessions are forgotten."""
        with self._lock:
            if not resumable:
                for session in self._connected(session_id):
                    session.alive = False
        return self._send_op({"op": 9, "d": resumable}, session_id)

    def _send_op(self, payload: JSON, session_id: str | None) -> int:
        frame = json.dumps(payload)
        with self._lock:
            conns = [s.conn for s in self._connected(session_id) if s.conn is not None]

        def send_all() -> None:
            for conn in conns:
                task = asyncio.ensure_future(conn.send(frame))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

        self._in_server_loop(send_all)
        return len(conns)

    # ------------------------------------------------------------------ gateway server

    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=2.0, max_msg_size=0)
        await ws.prepare(request)
        conn = _Conn(ws=ws, wake=asyncio.Event(), send_lock=asyncio.Lock())
        self._conns.add(conn)
        with self._lock:
            self._gateway_stats["connections"] += 1
        session: _Session | None = None
        try:
            if self.silent_gateway:
                # A gateway that takes the connection and never says HELLO: the client waits, and waits.
                async for _ in ws:
                    pass
                return ws
            await conn.send(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}))
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue  # discord.py only sends text frames
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                with self._lock:
                    self._gateway_received.append(copy.deepcopy(payload))
                self._changed()
                session = await self._on_gateway_payload(conn, session, payload)
        finally:
            self._conns.discard(conn)
            if conn.pump is not None:
                conn.pump.cancel()
            with self._lock:
                self._gateway_closes.append(
                    (session.session_id if session else None, ws.close_code, conn.server_closing)
                )
                if session is not None and session.conn is conn:
                    session.conn = None
                    # A client closing with 1000/1001 ends its session (Discord invalidates it).
                    if not conn.server_closing and ws.close_code in (1000, 1001):
                        session.alive = False
            self._changed()
            if conn.closer is not None:
                with contextlib.suppress(Exception):  # the peer is gone either way
                    await conn.closer
        return ws

    async def _on_gateway_payload(self, conn: _Conn, session: _Session | None, payload: JSON) -> _Session | None:
        op = payload.get("op")
        d = payload.get("d")
        if op == 1:
            await conn.send('{"op":11,"d":null}')
        elif op == 2:
            if session is not None:
                await conn.ws.close(code=4005, message=b"Already authenticated.")
                return session
            return await self._identify(conn, d if isinstance(d, dict) else {})
        elif op == 6:
            return await self._resume(conn, d if isinstance(d, dict) else {})
        elif op == 8 and session is not None and isinstance(d, dict):
            self._members_chunk(session, d)
        elif op in (3, 4, 31):
            pass  # presence/voice/soundboard: recorded in gateway_received, nothing to answer
        elif session is None:
            await conn.ws.close(code=4003, message=b"Not authenticated.")
        return session

    async def _identify(self, conn: _Conn, d: JSON) -> _Session | None:
        if d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = int(d.get("intents", 0))
        if intents & Intent.PRIVILEGED & ~self.allowed_privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        shard_raw = d.get("shard") or [0, 1]
        shard = (int(shard_raw[0]), int(shard_raw[1]))
        with self._lock:
            session = _Session(session_id=secrets.token_hex(16), intents=intents, shard=shard, identify=d)
            session.conn = conn
            self._gateway_stats["identifies"] += 1
            ready: JSON = {
                "v": API_VERSION,
                "user": copy.deepcopy(self._users[self.bot_user_id]) | {"verified": True, "mfa_enabled": False},
                # Like Discord, READY lists only the guilds of this session's shard.
                "guilds": [{"id": str(self.guild_id), "unavailable": True}]
                if (self.guild_id >> 22) % shard[1] == shard[0]
                else [],
                "session_id": session.session_id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "presences": [],
                "relationships": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "user_settings": {},
                "auth": {},
                "_trace": ['["fake-discord",{"micros":0}]'],
            }
            if d.get("shard"):
                ready["shard"] = list(shard)
            # READY and GUILD_CREATE are logged before the session is visible to _emit, so they are
            # always seq 1 and 2.
            self._log_frame(session, "READY", ready)
            if (self.guild_id >> 22) % shard[1] == shard[0]:
                self._log_frame(session, "GUILD_CREATE", self._guild_create_json(session))
            self._sessions[session.session_id] = session
        conn.pump = asyncio.ensure_future(self._pump(session, conn))
        conn.wake.set()
        self._changed()
        return session

    async def _resume(self, conn: _Conn, d: JSON) -> _Session | None:
        with self._lock:
            session = self._sessions.get(str(d.get("session_id")))
            seq = d.get("seq")
            ok = (
                session is not None
                and session.alive
                and d.get("token") == self.token
                and isinstance(seq, int)
                and 0 <= seq <= len(session.log)
            )
            if not ok or session is None:
                self._gateway_stats["invalid_sessions"] += 1
            else:
                old = session.conn
                if old is not None and old is not conn:
                    old.server_closing = True
                    old.closer = asyncio.ensure_future(old.ws.close(code=4000))
                session.conn = conn
                assert isinstance(seq, int)
                session.sent_upto = seq  # replay everything after what the client saw
                self._gateway_stats["resumes"] += 1
                self._log_frame(session, "RESUMED", {"_trace": ['["fake-discord",{"micros":0}]']})
        if not ok or session is None:
            await conn.send('{"op":9,"d":false}')
            self._changed()
            return None
        conn.pump = asyncio.ensure_future(self._pump(session, conn))
        conn.wake.set()
        self._changed()
        return session

    def _members_chunk(self, session: _Session, d: JSON) -> None:
        with self._lock:
            user_ids = d.get("user_ids")
            if user_ids is not None:
                wanted = [int(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])]
                found = [u for u in wanted if u in self._members]
                not_found = [str(u) for u in wanted if u not in self._members]
            else:
                query = str(d.get("query", "")).lower()
                found = [u for u in self._members if self._users[u]["username"].lower().startswith(query)]
                not_found = []
                limit = int(d.get("limit", 0))
                if limit:
                    found = found[:limit]
            chunk: JSON = {
                "guild_id": str(self.guild_id),
                "members": [self._member_json(u) for u in found],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": not_found,
            }
            if d.get("nonce") is not None:
                chunk["nonce"] = d["nonce"]
            self._log_frame(session, "GUILD_MEMBERS_CHUNK", chunk)
        self._changed()

    async def _pump(self, session: _Session, conn: _Conn) -> None:
        # Sends the session's log from sent_upto on; one pump per connection, woken by _log_frame.
        try:
            while not conn.ws.closed:
                await conn.wake.wait()
                conn.wake.clear()
                while True:
                    with self._lock:
                        if session.conn is not conn:
                            return
                        frames = session.log[session.sent_upto :]
                    if not frames:
                        break
                    for seq, frame in frames:
                        await conn.send(frame)
                        session.sent_upto = seq
                    self._changed()
        except (ConnectionError, RuntimeError):
            return  # the socket went away; a RESUME will replay from the client's seq

    # ------------------------------------------------------------------ inspection

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        """Recorded calls whose method matches (``*`` = any) and whose path ``re.search``-matches."""
        pattern = re.compile(path_regex)
        return [c for c in self.calls if method in ("*", c.method) and pattern.search(c.path)]

    def channel_messages(self, channel_id: int) -> list[JSON]:
        """Current (non-ephemeral) messages of a channel, oldest first, REST shape."""
        with self._lock:
            return [self._message_out(m) for m in self._messages.get(channel_id, {}).values()]

    def message(self, message_id: int) -> JSON | None:
        """A message by id (channel or ephemeral), or None."""
        with self._lock:
            found = self._locate_message(message_id)
            return None if found is None else self._message_out(found[0])

    def ephemeral_messages(self, user_id: int | None = None) -> list[JSON]:
        """Ephemeral interaction messages (optionally only those shown to ``user_id``)."""
        with self._lock:
            return [
                copy.deepcopy(m)
                for mid, m in self._ephemeral.items()
                if user_id is None or self._ephemeral_owner.get(mid) == user_id
            ]

    def attachment_bytes(self, attachment_id: int) -> bytes:
        with self._lock:
            return self._attachments[attachment_id]

    @property
    def threads(self) -> list[JSON]:
        with self._lock:
            return [self._channel_out(c) for c in self._channels.values() if c["type"] in ChannelType.THREADS]

    def thread(self, thread_id: int) -> JSON:
        with self._lock:
            channel = self._channels.get(thread_id)
            if channel is None or channel["type"] not in ChannelType.THREADS:
                raise KeyError(f"no thread {thread_id}")
            return self._channel_out(channel)

    def channel(self, channel_id: int) -> JSON:
        with self._lock:
            return self._channel_out(self._channel(channel_id))

    def commands(self, guild_id: int | None = None) -> list[JSON]:
        """Registered application commands (global, or for a guild)."""
        with self._lock:
            return copy.deepcopy(self._commands.get(guild_id, []))

    def interaction(self, interaction_id: int) -> JSON:
        """The INTERACTION_CREATE payload the fake sent."""
        with self._lock:
            return copy.deepcopy(self._interactions[interaction_id].payload)

    def interaction_responses(self, interaction_id: int) -> list[JSON]:
        """What the bot answered, in order. Entries have ``kind`` (``callback``, ``followup``,
        ``edit``, ``delete``), ``type`` (callback type, for callbacks), ``data`` (the body the bot
        sent, e.g. a modal's ``custom_id``/``title``/``components``) and ``message_id`` if any."""
        with self._lock:
            return copy.deepcopy(self._interactions[interaction_id].responses)

    def last_modal(self, user_id: int | None = None) -> JSON | None:
        """The most recent modal the bot opened (for ``user_id``), still waiting to be submitted."""
        with self._lock:
            for modal in reversed(self._open_modals):
                if user_id is None or modal.user_id == user_id:
                    return copy.deepcopy(modal.data)
            return None

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int | None = 429,
        retry_after: float = 0.2,
        *,
        times: int = 1,
        delay: float = 0.0,
        body: JSON | None = None,
        global_rate_limit: bool = False,
    ) -> None:
        """Make the next ``times`` matching REST calls fail without being applied.

        ``method`` is an HTTP method or ``*``; ``path_regex`` is ``re.search``-ed against the path
        relative to ``api_url`` (e.g. ``r"^/channels/\\d+/messages$"``). ``status=429`` answers like
        Discord's rate limiter; 5xx answers with a generic server error; ``status=None`` with a
        ``delay`` only slows the call down (it is then applied normally).
        """
        with self._lock:
            self._faults.append(
                _Fault(
                    method=method.upper(),
                    pattern=re.compile(path_regex),
                    status=status,
                    retry_after=retry_after,
                    times=times,
                    delay=delay,
                    body=body,
                    is_global=global_rate_limit,
                )
            )

    def fail_for(
        self, method: str, path_regex: str, seconds: float, status: int = 503, *, body: JSON | None = None
    ) -> None:
        """Fail every matching REST call with ``status`` for the next ``seconds`` (an outage of one route,
        or of all with ``"*"`` and ``"."``); calls are recorded, never applied. See :meth:`fail_next`."""
        with self._lock:
            self._faults.append(
                _Fault(
                    method=method.upper(),
                    pattern=re.compile(path_regex),
                    status=status,
                    retry_after=0.0,
                    times=1,
                    delay=0.0,
                    body=body,
                    is_global=False,
                    until=time.monotonic() + seconds,
                )
            )

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            now = time.monotonic()
            self._faults = [f for f in self._faults if f.until is None or f.until > now]
            for fault in self._faults:
                if fault.method in ("*", method) and fault.pattern.search(path):
                    if fault.until is None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _fault_response(self, fault: _Fault) -> tuple[int, Any, dict[str, str]]:
        assert fault.status is not None
        if fault.status == 429:
            reset = time.time() + fault.retry_after
            headers = {
                "Retry-After": str(max(1, math.ceil(fault.retry_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{reset:.3f}",
                "X-RateLimit-Reset-After": f"{fault.retry_after:.3f}",
                "X-RateLimit-Bucket": "fakebucket0000000000000000000000",
                "X-RateLimit-Scope": "global" if fault.is_global else "user",
                "Via": "1.1 google",  # discord.py raises on a 429 without Via (Cloudflare ban)
            }
            if fault.is_global:
                headers["X-RateLimit-Global"] = "true"
            body = fault.body or {
                "message": "You are being rate limited.",
                "retry_after": fault.retry_after,
                "global": fault.is_global,
            }
            return 429, body, headers
        reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        body = fault.body or {"message": f"{fault.status}: {reason.get(fault.status, 'Error')}", "code": 0}
        return fault.status, body, {}

    # ------------------------------------------------------------------ REST plumbing

    async def _cdn_handler(self, request: web.Request) -> web.Response:
        """An attachment's bytes, like cdn.discordapp.com (no bot token needed; the URL is the key)."""
        aid = int(request.match_info["attachment"])
        with self._lock:
            data = self._attachments.get(aid)
            self._calls.append(Call("GET", request.path, None, dict(request.query), 200 if data else 404, ()))
        self._changed()
        if data is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _not_found_handler(self, request: web.Request) -> web.Response:
        return _json_response(404, {"message": "404: Not Found", "code": 0})

    async def _read_body(self, request: web.Request) -> tuple[Any, list[_File]]:
        files: list[_File] = []
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            body: Any = None
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    files.append(_File(name, value.filename, value.content_type, value.file.read()))
                elif name == "payload_json":
                    raw = value.decode() if isinstance(value, bytes) else str(value)
                    body = json.loads(raw)
            return body, files
        raw_bytes = await request.read()
        if not raw_bytes:
            return None, files
        try:
            return json.loads(raw_bytes), files
        except ValueError as exc:
            raise DiscordError(400, 50109, "The request body contains invalid JSON.") from exc

    async def _rest_handler(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        method = request.method
        query = dict(request.query)
        try:
            body, files = await self._read_body(request)
        except DiscordError as exc:
            self._record(method, path, None, query, status=exc.status, files=[])
            return _json_response(exc.status, exc.body())

        fault = self._take_fault(method, path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                status, payload, headers = self._fault_response(fault)
                self._record(method, path, body, query, status=status, files=files)
                return _json_response(status, payload, headers)

        needs_auth = not path.startswith(("/webhooks/", "/interactions/"))
        if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
            self._record(method, path, body, query, status=401, files=files)
            return _json_response(401, {"message": "401: Unauthorized", "code": 0})

        handler, params, path_known = self._route(method, path)
        if handler is None:
            status = 405 if path_known else 404
            message = "405: Method Not Allowed" if path_known else "404: Not Found"
            self._record(method, path, body, query, status=status, files=files)
            return _json_response(status, {"message": message, "code": 0})
        req = _Request(method=method, path=path, params=params, body=body, query=query, files=files)
        try:
            with self._lock:
                status, payload = handler(req)
        except DiscordError as exc:
            status, payload = exc.status, exc.body()
        self._record(method, path, body, query, status=status, files=files)
        return _json_response(status, payload)

    def _record(
        self, method: str, path: str, body: Any, query: dict[str, str], *, status: int, files: list[_File]
    ) -> None:
        with self._lock:
            self._calls.append(Call(method, path, body, query, status, tuple(f.filename for f in files)))
        self._changed()

    def _routes(self) -> list[tuple[str, re.Pattern[str], _Handler]]:
        table: list[tuple[str, str, _Handler]] = [
            ("GET", r"/users/@me", self._h_get_me),
            ("POST", r"/users/@me/channels", self._h_open_dm),
            ("GET", r"/users/(?P<user_id>\d+)", self._h_get_user),
            ("GET", r"/gateway", self._h_gateway),
            ("GET", r"/gateway/bot", self._h_gateway_bot),
            ("GET", r"/oauth2/applications/@me", self._h_app),
            ("GET", r"/applications/@me", self._h_app),
            ("GET", r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands", self._h_list_commands),
            ("PUT", r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands", self._h_put_commands),
            ("POST", r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands", self._h_post_command),
            (
                "GET",
                r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands/(?P<cmd>\d+)",
                self._h_get_command,
            ),
            (
                "PATCH",
                r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands/(?P<cmd>\d+)",
                self._h_patch_command,
            ),
            (
                "DELETE",
                r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands/(?P<cmd>\d+)",
                self._h_delete_command,
            ),
            ("GET", r"/guilds/(?P<guild>\d+)", self._h_get_guild),
            ("GET", r"/guilds/(?P<guild>\d+)/roles", self._h_get_roles),
            ("GET", r"/guilds/(?P<guild>\d+)/channels", self._h_get_guild_channels),
            ("GET", r"/guilds/(?P<guild>\d+)/members/(?P<user_id>\d+)", self._h_get_member),
            ("GET", r"/guilds/(?P<guild>\d+)/threads/active", self._h_active_threads),
            ("GET", r"/channels/(?P<channel>\d+)", self._h_get_channel),
            ("PATCH", r"/channels/(?P<channel>\d+)", self._h_patch_channel),
            ("DELETE", r"/channels/(?P<channel>\d+)", self._h_delete_channel),
            ("GET", r"/channels/(?P<channel>\d+)/messages", self._h_history),
            ("POST", r"/channels/(?P<channel>\d+)/messages", self._h_send),
            ("GET", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)", self._h_get_message),
            ("PATCH", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)", self._h_edit_message),
            ("DELETE", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)", self._h_delete_message),
            ("POST", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)/threads", self._h_thread_from_message),
            ("POST", r"/channels/(?P<channel>\d+)/threads", self._h_thread_without_message),
            ("POST", r"/channels/(?P<channel>\d+)/typing", self._h_typing),
            ("PUT", r"/channels/(?P<channel>\d+)/thread-members/@me", self._h_join_thread),
            ("DELETE", r"/channels/(?P<channel>\d+)/thread-members/@me", self._h_leave_thread),
            (
                "PUT",
                r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)/reactions/(?P<emoji>[^/]+)/@me",
                self._h_add_reaction,
            ),
            (
                "DELETE",
                r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)/reactions/(?P<emoji>[^/]+)/@me",
                self._h_remove_reaction,
            ),
            ("POST", r"/interactions/(?P<interaction>\d+)/(?P<token>[^/]+)/callback", self._h_callback),
            ("POST", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)", self._h_followup),
            ("GET", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<message>@original|\d+)", self._h_wh_get),
            ("PATCH", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<message>@original|\d+)", self._h_wh_edit),
            (
                "DELETE",
                r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<message>@original|\d+)",
                self._h_wh_delete,
            ),
        ]
        return [(m, re.compile(p), h) for m, p, h in table]

    def _route(self, method: str, path: str) -> tuple[_Handler | None, dict[str, str], bool]:
        # Matches the percent-decoded path; aiohttp has already unquoted it (emoji in reactions).
        path_known = False
        for route_method, pattern, handler in self._route_table:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            path_known = True
            if route_method == method:
                return handler, {k: v for k, v in match.groupdict().items() if v is not None}, True
        return None, {}, path_known

    # ------------------------------------------------------------------ REST: users, app, gateway

    def _h_get_me(self, req: _Request) -> tuple[int, Any]:
        return 200, copy.deepcopy(self._users[self.bot_user_id]) | {"verified": True, "mfa_enabled": False}

    def _h_get_user(self, req: _Request) -> tuple[int, Any]:
        user = self._users.get(int(req.params["user_id"]))
        if user is None:
            raise DiscordError(404, 10013, "Unknown User")
        return 200, copy.deepcopy(user)

    def _open_dm(self, user_id: int) -> JSON:
        if user_id not in self._users or user_id == self.bot_user_id:
            raise _invalid_form("recipient_id", "INVALID_RECIPIENT", "Invalid Recipient(s)")
        existing = self._dm_by_user.get(user_id)
        if existing is not None:
            return self._channels[existing]
        cid = self._snowflake()
        channel: JSON = {
            "id": str(cid),
            "type": ChannelType.DM,
            "last_message_id": None,
            "flags": 0,
            "recipients": [copy.deepcopy(self._users[user_id])],
        }
        self._channels[cid] = channel
        self._messages[cid] = {}
        self._dm_by_user[user_id] = cid
        return channel

    def _h_open_dm(self, req: _Request) -> tuple[int, Any]:
        body = req.body if isinstance(req.body, dict) else {}
        try:
            user_id = int(body.get("recipient_id", 0))
        except (TypeError, ValueError) as exc:
            raise _invalid_form("recipient_id", "NUMBER_TYPE_COERCE", "Value is not snowflake.") from exc
        return 200, copy.deepcopy(self._open_dm(user_id))

    def _h_gateway(self, req: _Request) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url}

    def _h_gateway_bot(self, req: _Request) -> tuple[int, Any]:
        return 200, {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1},
        }

    def _h_app(self, req: _Request) -> tuple[int, Any]:
        return 200, self._app_json()

    # ------------------------------------------------------------------ REST: application commands

    def _command_scope(self, req: _Request) -> int | None:
        if int(req.params["app"]) != self.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        guild = req.params.get("guild")
        if guild is None:
            return None
        if int(guild) != self.guild_id:
            raise DiscordError(404, 10004, "Unknown Guild")
        return int(guild)

    def _normalize_command(self, raw: Any, scope: int | None, existing: list[JSON], index: int) -> JSON:
        if not isinstance(raw, dict):
            raise _invalid_form(f"{index}", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        ctype = int(raw.get("type", 1))
        name = raw.get("name")
        if (
            not isinstance(name, str)
            or not re.fullmatch(r"[-_\w]{1,32}", name)
            or (ctype == 1 and name != name.lower())
        ):
            raise _invalid_form(f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        description = raw.get("description", "")
        if ctype == 1 and not (isinstance(description, str) and 1 <= len(description) <= 100):
            raise _invalid_form(f"{index}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        previous = next((c for c in existing if c["name"] == name and c["type"] == ctype), None)
        cmd = copy.deepcopy(raw)
        cmd.update(
            {
                "id": previous["id"] if previous else str(self._snowflake()),
                "application_id": str(self.application_id),
                "version": str(self._snowflake()),
                "type": ctype,
                "description": description,
                "default_member_permissions": raw.get("default_member_permissions"),
                "nsfw": bool(raw.get("nsfw", False)),
            }
        )
        cmd.setdefault("options", [])
        cmd.setdefault("contexts", None)
        cmd.setdefault("integration_types", [0])
        if scope is not None:
            cmd["guild_id"] = str(scope)
        else:
            cmd.setdefault("dm_permission", True)
        return cmd

    def _h_list_commands(self, req: _Request) -> tuple[int, Any]:
        return 200, copy.deepcopy(self._commands.get(self._command_scope(req), []))

    def _h_put_commands(self, req: _Request) -> tuple[int, Any]:
        scope = self._command_scope(req)
        if not isinstance(req.body, list):
            raise _invalid_form("_", "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        existing = self._commands.get(scope, [])
        new = [self._normalize_command(raw, scope, existing, i) for i, raw in enumerate(req.body)]
        keys = [(c["name"], c["type"]) for c in new]
        if len(set(keys)) != len(keys):
            raise DiscordError(400, 40041, "An application command with that name already exists")
        self._commands[scope] = new
        self._changed()
        return 200, copy.deepcopy(new)

    def _h_post_command(self, req: _Request) -> tuple[int, Any]:
        scope = self._command_scope(req)
        existing = self._commands.setdefault(scope, [])
        cmd = self._normalize_command(req.body, scope, existing, 0)
        replaced = any(c["id"] == cmd["id"] for c in existing)
        self._commands[scope] = [c for c in existing if c["id"] != cmd["id"]] + [cmd]
        self._changed()
        return (200 if replaced else 201), copy.deepcopy(cmd)

    def _find_command(self, req: _Request) -> tuple[int | None, JSON]:
        scope = self._command_scope(req)
        cmd = next((c for c in self._commands.get(scope, []) if c["id"] == req.params["cmd"]), None)
        if cmd is None:
            raise DiscordError(404, 10063, "Unknown application command")
        return scope, cmd

    def _h_get_command(self, req: _Request) -> tuple[int, Any]:
        return 200, copy.deepcopy(self._find_command(req)[1])

    def _h_patch_command(self, req: _Request) -> tuple[int, Any]:
        scope, cmd = self._find_command(req)
        merged = {**cmd, **(req.body if isinstance(req.body, dict) else {})}
        others = [c for c in self._commands[scope] if c["id"] != cmd["id"]]
        new = self._normalize_command(merged, scope, [cmd], 0)
        self._commands[scope] = [*others, new]
        return 200, copy.deepcopy(new)

    def _h_delete_command(self, req: _Request) -> tuple[int, Any]:
        scope, cmd = self._find_command(req)
        self._commands[scope] = [c for c in self._commands[scope] if c["id"] != cmd["id"]]
        return 204, None

    # ------------------------------------------------------------------ REST: guild

    def _check_guild(self, req: _Request) -> None:
        if int(req.params["guild"]) != self.guild_id:
            raise DiscordError(404, 10004, "Unknown Guild")

    def _h_get_guild(self, req: _Request) -> tuple[int, Any]:
        self._check_guild(req)
        return 200, self._guild_json(with_counts=req.query.get("with_counts") in ("true", "1", "True"))

    def _h_get_roles(self, req: _Request) -> tuple[int, Any]:
        self._check_guild(req)
        return 200, [copy.deepcopy(r) for r in self._roles.values()]

    def _h_get_guild_channels(self, req: _Request) -> tuple[int, Any]:
        self._check_guild(req)
        return 200, [self._channel_out(c) for c in self._channels.values() if c["type"] == ChannelType.GUILD_TEXT]

    def _h_get_member(self, req: _Request) -> tuple[int, Any]:
        self._check_guild(req)
        user_id = int(req.params["user_id"])
        if user_id not in self._members:
            raise DiscordError(404, 10007, "Unknown Member")
        return 200, self._member_json(user_id)

    def _h_active_threads(self, req: _Request) -> tuple[int, Any]:
        self._check_guild(req)
        threads = [
            c
            for c in self._channels.values()
            if c["type"] in ChannelType.THREADS and not c["thread_metadata"]["archived"]
        ]
        members = [
            m for m in (self._thread_member_json(int(t["id"]), self.bot_user_id) for t in threads) if m is not None
        ]
        return 200, {"threads": [copy.deepcopy(t) for t in threads], "members": members}

    # ------------------------------------------------------------------ REST: channels and threads

    def _h_get_channel(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(int(req.params["channel"]))
        self._require_access(self.bot_user_id, channel)
        return 200, self._channel_out(channel)

    def _h_patch_channel(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(int(req.params["channel"]))
        body = req.body if isinstance(req.body, dict) else {}
        if channel["type"] in ChannelType.THREADS:
            return 200, self._edit_thread(self.bot_user_id, channel, body)
        if channel["type"] == ChannelType.DM:
            raise DiscordError(400, 50003, "Cannot execute action on a DM channel")
        perms = self._require_access(self.bot_user_id, channel)
        if not perms & Perm.MANAGE_CHANNELS:
            raise _missing_permissions()
        for key in ("name", "topic", "nsfw", "rate_limit_per_user", "default_auto_archive_duration"):
            if key in body:
                channel[key] = body[key]
        self._emit("CHANNEL_UPDATE", copy.deepcopy(channel), Intent.GUILDS)
        return 200, self._channel_out(channel)

    def _h_delete_channel(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(int(req.params["channel"]))
        perms = self._require_access(self.bot_user_id, channel)
        if channel["type"] in ChannelType.THREADS:
            if not perms & Perm.MANAGE_THREADS:
                raise _missing_permissions()
            out = self._channel_out(channel)
            tid = int(channel["id"])
            del self._channels[tid]
            self._messages.pop(tid, None)
            self._emit(
                "THREAD_DELETE",
                {
                    "id": str(tid),
                    "guild_id": str(self.guild_id),
                    "parent_id": channel["parent_id"],
                    "type": channel["type"],
                },
                Intent.GUILDS,
            )
            return 200, out
        if channel["type"] == ChannelType.DM:
            return 200, self._channel_out(channel)  # "closing" a DM does nothing we model
        if not perms & Perm.MANAGE_CHANNELS:
            raise _missing_permissions()
        raise DiscordError(400, 0, "Deleting text channels is not modelled by the fake")

    def _new_thread(
        self, parent: JSON, owner_id: int, name: Any, duration: Any, *, thread_id: int, ttype: int, body: JSON
    ) -> JSON:
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise _invalid_form("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if duration is None:
            duration = parent.get("default_auto_archive_duration", 1440)
        if duration not in _ARCHIVE_DURATIONS:
            raise _invalid_form(
                "auto_archive_duration", "BASE_TYPE_CHOICES", "Value must be one of (60, 1440, 4320, 10080)."
            )
        now = _iso()
        metadata: JSON = {
            "archived": False,
            "auto_archive_duration": duration,
            "archive_timestamp": now,
            "locked": False,
            "create_timestamp": now,
        }
        if ttype == ChannelType.PRIVATE_THREAD:
            metadata["invitable"] = bool(body.get("invitable", True))
        thread: JSON = {
            "id": str(thread_id),
            "type": ttype,
            "guild_id": str(self.guild_id),
            "parent_id": parent["id"],
            "owner_id": str(owner_id),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": int(body.get("rate_limit_per_user") or 0),
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "thread_metadata": metadata,
        }
        self._channels[thread_id] = thread
        self._messages[thread_id] = {}
        self._thread_members[thread_id] = {owner_id: now}
        # THREAD_CREATE for a thread just made carries newly_created (discord.py then fires
        # on_thread_create rather than on_thread_join).
        self._thread_event("THREAD_CREATE", thread, newly_created=True)
        return thread

    def _h_thread_from_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(int(req.params["channel"]))
        if channel["type"] != ChannelType.GUILD_TEXT:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        perms = self._require_access(self.bot_user_id, channel)
        if not perms & Perm.CREATE_PUBLIC_THREADS:
            raise _missing_permissions()
        message_id = int(req.params["message"])
        message = self._messages[int(channel["id"])].get(message_id)
        if message is None:
            raise _unknown_message()
        if message_id in self._channels:
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        body = req.body if isinstance(req.body, dict) else {}
        thread = self._new_thread(
            channel,
            self.bot_user_id,
            body.get("name"),
            body.get("auto_archive_duration"),
            thread_id=message_id,  # a thread started from a message shares the message's id
            ttype=ChannelType.PUBLIC_THREAD,
            body=body,
        )
        return 201, self._channel_out(thread)

    def _h_thread_without_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(int(req.params["channel"]))
        if channel["type"] != ChannelType.GUILD_TEXT:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        body = req.body if isinstance(req.body, dict) else {}
        # The API default is a private thread (discord.py passes the type explicitly).
        ttype = int(body.get("type", ChannelType.PRIVATE_THREAD))
        if ttype not in ChannelType.THREADS:
            raise _invalid_form("type", "BASE_TYPE_CHOICES", "Value must be one of (10, 11, 12).")
        perms = self._require_access(self.bot_user_id, channel)
        needed = Perm.CREATE_PUBLIC_THREADS if ttype == ChannelType.PUBLIC_THREAD else Perm.CREATE_PRIVATE_THREADS
        if not perms & needed:
            raise _missing_permissions()
        thread = self._new_thread(
            channel,
            self.bot_user_id,
            body.get("name"),
            body.get("auto_archive_duration"),
            thread_id=self._snowflake(),
            ttype=ttype,
            body=body,
        )
        return 201, self._channel_out(thread)

    def _edit_thread(self, actor_id: int, thread: JSON, body: JSON) -> JSON:
        """PATCH a thread as ``actor_id`` with Discord's rules (docs: topics/threads, "Editing")."""
        perms = self._require_access(actor_id, thread)
        moderator = bool(perms & Perm.MANAGE_THREADS)
        owner = int(thread["owner_id"]) == actor_id
        meta = thread["thread_metadata"]
        if meta["archived"] and "archived" not in body:
            raise _thread_archived()  # an archived thread can only be (un)archived
        if "locked" in body and bool(body["locked"]) != meta["locked"] and not moderator:
            raise _missing_permissions()
        if "rate_limit_per_user" in body and not moderator:
            raise _missing_permissions()
        for key in ("name", "auto_archive_duration", "archived"):
            if key in body and not (moderator or owner):
                raise _missing_permissions()
        if "archived" in body and not body["archived"] and meta["archived"]:
            locked_after = bool(body.get("locked", meta["locked"]))
            if meta["locked"] and locked_after and not (moderator or owner):
                raise _missing_permissions()
        if "name" in body:
            name = body["name"]
            if not isinstance(name, str) or not 1 <= len(name) <= 100:
                raise _invalid_form("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            thread["name"] = name
        if "auto_archive_duration" in body:
            if body["auto_archive_duration"] not in _ARCHIVE_DURATIONS:
                raise _invalid_form("auto_archive_duration", "BASE_TYPE_CHOICES", "Invalid duration.")
            meta["auto_archive_duration"] = body["auto_archive_duration"]
            meta["archive_timestamp"] = _iso()
        if "rate_limit_per_user" in body:
            thread["rate_limit_per_user"] = int(body["rate_limit_per_user"] or 0)
        if "locked" in body:
            meta["locked"] = bool(body["locked"])
        if "invitable" in body and thread["type"] == ChannelType.PRIVATE_THREAD:
            meta["invitable"] = bool(body["invitable"])
        if "archived" in body and bool(body["archived"]) != meta["archived"]:
            meta["archived"] = bool(body["archived"])
            meta["archive_timestamp"] = _iso()
        self._thread_event("THREAD_UPDATE", thread)
        return self._channel_out(thread)

    def _h_typing(self, req: _Request) -> tuple[int, Any]:
        self._require_access(self.bot_user_id, self._channel(int(req.params["channel"])))
        return 204, None

    def _h_join_thread(self, req: _Request) -> tuple[int, Any]:
        thread = self._channel(int(req.params["channel"]))
        if thread["type"] not in ChannelType.THREADS:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        self._require_access(self.bot_user_id, thread)
        if thread["thread_metadata"]["archived"]:
            raise _thread_archived()
        self._thread_members.setdefault(int(thread["id"]), {})[self.bot_user_id] = _iso()
        return 204, None

    def _h_leave_thread(self, req: _Request) -> tuple[int, Any]:
        thread = self._channel(int(req.params["channel"]))
        if thread["type"] not in ChannelType.THREADS:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        if thread["thread_metadata"]["archived"]:
            raise _thread_archived()
        self._thread_members.get(int(thread["id"]), {}).pop(self.bot_user_id, None)
        return 204, None

    # ------------------------------------------------------------------ REST: messages

    def _locate_message(self, message_id: int) -> tuple[JSON, bool] | None:
        """(message, is_ephemeral) for a message id anywhere in the fake."""
        for messages in self._messages.values():
            if message_id in messages:
                return messages[message_id], False
        if message_id in self._ephemeral:
            return self._ephemeral[message_id], True
        return None

    def _message_out(self, message: JSON) -> JSON:
        out = copy.deepcopy(message)
        thread = self._channels.get(int(message["id"]))
        if thread is not None and thread["type"] in ChannelType.THREADS:
            out["thread"] = self._channel_out(thread)  # the thread started from this message
        return out

    def _h_history(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(int(req.params["channel"]))
        perms = self._require_access(self.bot_user_id, channel)
        if not perms & Perm.READ_MESSAGE_HISTORY:
            return 200, []
        limit = max(1, min(100, int(req.query.get("limit", 50))))
        ordered = list(self._messages[int(channel["id"])].values())  # oldest first
        if "around" in req.query:
            pivot = bisect.bisect_left([int(m["id"]) for m in ordered], int(req.query["around"]))
            start = max(0, pivot - limit // 2)
            chosen = ordered[start : start + limit]
        elif "after" in req.query:
            after = int(req.query["after"])
            chosen = [m for m in ordered if int(m["id"]) > after][:limit]
        else:
            before = int(req.query["before"]) if "before" in req.query else None
            chosen = [m for m in ordered if before is None or int(m["id"]) < before][-limit:]
        # Discord answers newest first in every mode (discord.py reverses for after=).
        return 200, [self._message_out(m) for m in reversed(chosen)]

    def _h_get_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(int(req.params["channel"]))
        self._require_access(self.bot_user_id, channel)
        message = self._messages[int(channel["id"])].get(int(req.params["message"]))
        if message is None:
            raise _unknown_message()
        return 200, self._message_out(message)

    def _h_send(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(int(req.params["channel"]))
        if channel["type"] not in (ChannelType.GUILD_TEXT, ChannelType.DM, *ChannelType.THREADS):
            raise DiscordError(400, 50008, "Cannot send messages in a non-text channel")
        if channel["type"] == ChannelType.DM and set(self._dm_recipients(channel)) & self._dms_closed:
            raise DiscordError(403, 50007, "Cannot send messages to this user")
        body = req.body if isinstance(req.body, dict) else {}
        unarchive = self._check_write(self.bot_user_id, channel, "post")
        nonce = body.get("nonce")
        if body.get("enforce_nonce") and nonce is not None:
            # enforce_nonce: a retried send with the same nonce returns the first message.
            previous = self._nonces.get((int(channel["id"]), str(nonce)))
            if previous is not None and previous in self._messages[int(channel["id"])]:
                return 200, self._message_out(self._messages[int(channel["id"])][previous])
        self._validate_message_body(body, files=req.files, flags_allowed=_Flag.SENDABLE)
        if unarchive:
            self._set_archived(channel, False)
        message = self._create_message(channel, self.bot_user_id, body, files=req.files)
        if nonce is not None:
            self._nonces[(int(channel["id"]), str(nonce))] = int(message["id"])
        return 200, self._message_out(message)

    def _h_edit_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(int(req.params["channel"]))
        message = self._messages[int(channel["id"])].get(int(req.params["message"]))
        if message is None:
            raise _unknown_message()
        body = req.body if isinstance(req.body, dict) else {}
        if int(message["author"]["id"]) != self.bot_user_id:
            # Others' messages: only flags (suppress embeds) with MANAGE_MESSAGES.
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        self._check_write(self.bot_user_id, channel, "edit")
        self._validate_message_body(body, files=req.files, flags_allowed=_Flag.SENDABLE, is_edit=True)
        self._apply_edit(message, body, files=req.files)
        return 200, self._message_out(message)

    def _h_delete_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(int(req.params["channel"]))
        message = self._messages[int(channel["id"])].get(int(req.params["message"]))
        if message is None:
            raise _unknown_message()
        perms = self._require_access(self.bot_user_id, channel)
        if int(message["author"]["id"]) != self.bot_user_id and not perms & Perm.MANAGE_MESSAGES:
            raise _missing_permissions()
        self._check_write(self.bot_user_id, channel, "delete")
        self._delete_message(channel, message)
        return 204, None

    def _h_add_reaction(self, req: _Request) -> tuple[int, Any]:
        channel, message = self._reaction_target(req)
        emoji = req.params["emoji"]
        reactions = message.setdefault("reactions", [])
        entry = next((r for r in reactions if r["emoji"]["name"] == emoji), None)
        if entry is None:
            entry = {"emoji": {"id": None, "name": emoji}, "count": 0, "me": False, "burst_count": 0}
            entry["count_details"] = {"normal": 0, "burst": 0}
            entry["me_burst"] = False
            entry["burst_colors"] = []
            reactions.append(entry)
        if not entry["me"]:
            entry["me"] = True
            entry["count"] += 1
            entry["count_details"]["normal"] += 1
            self._emit_reaction("MESSAGE_REACTION_ADD", channel, message, emoji)
        return 204, None

    def _h_remove_reaction(self, req: _Request) -> tuple[int, Any]:
        channel, message = self._reaction_target(req)
        emoji = req.params["emoji"]
        reactions = message.get("reactions", [])
        entry = next((r for r in reactions if r["emoji"]["name"] == emoji), None)
        if entry is not None and entry["me"]:
            entry["me"] = False
            entry["count"] -= 1
            entry["count_details"]["normal"] -= 1
            if entry["count"] <= 0:
                reactions.remove(entry)
            self._emit_reaction("MESSAGE_REACTION_REMOVE", channel, message, emoji)
        return 204, None

    def _reaction_target(self, req: _Request) -> tuple[JSON, JSON]:
        channel = self._channel(int(req.params["channel"]))
        message = self._messages[int(channel["id"])].get(int(req.params["message"]))
        if message is None:
            raise _unknown_message()
        self._check_write(self.bot_user_id, channel, "react")
        perms = self._require_access(self.bot_user_id, channel)
        if not perms & Perm.ADD_REACTIONS:
            raise _missing_permissions()
        return channel, message

    def _emit_reaction(self, event: str, channel: JSON, message: JSON, emoji: str) -> None:
        data: JSON = {
            "user_id": str(self.bot_user_id),
            "channel_id": channel["id"],
            "message_id": message["id"],
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        intent = Intent.GUILD_MESSAGE_REACTIONS
        if channel["type"] == ChannelType.DM:
            intent = Intent.DIRECT_MESSAGE_REACTIONS
        else:
            data["guild_id"] = str(self.guild_id)
            if event == "MESSAGE_REACTION_ADD":
                data["member"] = self._member_json(self.bot_user_id)
                data["message_author_id"] = message["author"]["id"]
        self._emit(event, data, intent)

    # ------------------------------------------------------------------ message model

    def _validate_message_body(
        self,
        body: JSON,
        *,
        files: Sequence[_File],
        flags_allowed: int,
        is_edit: bool = False,
        allow_empty: bool = False,
    ) -> None:
        content = body.get("content")
        if content is not None and not isinstance(content, str):
            content = str(content)
        if content is not None and len(content) > 2000:
            raise _invalid_form("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        embeds = body.get("embeds") or []
        if len(embeds) > 10:
            raise _invalid_form("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        total = 0
        for i, embed in enumerate(embeds):
            title, description = embed.get("title") or "", embed.get("description") or ""
            if len(title) > 256:
                raise _invalid_form(f"embeds.{i}.title", "BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")
            if len(description) > 4096:
                raise _invalid_form(
                    f"embeds.{i}.description", "BASE_TYPE_MAX_LENGTH", "Must be 4096 or fewer in length."
                )
            total += (
                len(title)
                + len(description)
                + sum(len(f.get("name", "")) + len(f.get("value", "")) for f in embed.get("fields", []))
            )
        if total > 6000:
            raise _invalid_form("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        components = body.get("components") or []
        seen: set[str] = set()
        for comp in _walk_components(components):
            cid = comp.get("custom_id")
            if cid is None:
                continue
            if len(cid) > 100:
                raise _invalid_form("components", "BASE_TYPE_MAX_LENGTH", "custom_id must be 100 or fewer in length.")
            if cid in seen:
                raise _invalid_form(
                    "components", "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
                )
            seen.add(cid)
        flags = int(body.get("flags") or 0)
        if flags & ~flags_allowed:
            raise _invalid_form("flags", "MESSAGE_FLAGS_INVALID", "Invalid message flags")
        allowed = body.get("allowed_mentions")
        if isinstance(allowed, dict):
            parse = allowed.get("parse", [])
            for kind in ("users", "roles"):
                if kind in parse and allowed.get(kind):
                    # Discord rejects parse:["users"] together with an explicit users list.
                    raise _invalid_form(
                        f"allowed_mentions.{kind}", "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE", "Mutually exclusive"
                    )
        reference = body.get("message_reference")
        if isinstance(reference, dict) and reference.get("message_id") is not None:
            located = self._locate_message(int(reference["message_id"]))
            if located is None and reference.get("fail_if_not_exists", True):
                raise _invalid_form("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        if is_edit or allow_empty:
            return
        has_body = (
            bool(content)
            or bool(embeds)
            or bool(files)
            or bool(components)
            or bool(body.get("sticker_ids"))
            or "poll" in body
        )
        if not has_body:
            raise DiscordError(400, 50006, "Cannot send an empty message")

    def _resolve_mentions(
        self, content: str, allowed: Any, reply_author: int | None
    ) -> tuple[list[int], list[int], bool]:
        users = [int(u) for u in _MENTION_USER.findall(content) if int(u) in self._users]
        roles = [int(r) for r in _MENTION_ROLE.findall(content) if int(r) in self._roles]
        everyone = "@everyone" in content or "@here" in content
        if isinstance(allowed, dict):
            parse = allowed.get("parse", [])
            allowed_users = {int(u) for u in allowed.get("users", [])}
            allowed_roles = {int(r) for r in allowed.get("roles", [])}
            users = [u for u in users if "users" in parse or u in allowed_users]
            roles = [r for r in roles if "roles" in parse or r in allowed_roles]
            everyone = everyone and "everyone" in parse
            replied = bool(allowed.get("replied_user", False))
        else:
            replied = True  # without allowed_mentions a reply pings its author
        if reply_author is not None and replied and reply_author not in users:
            users.append(reply_author)
        return list(dict.fromkeys(users)), list(dict.fromkeys(roles)), everyone

    def _build_attachments(self, channel_id: int, body: JSON, files: Sequence[_File], keep: list[JSON]) -> list[JSON]:
        out = list(keep)
        described = {str(a.get("id")): a for a in body.get("attachments") or [] if isinstance(a, dict)}
        for position, file in enumerate(files):
            # discord.py names parts files[N] and describes them as attachments[{"id": N, ...}].
            match = re.fullmatch(r"files\[(\d+)\]", file.field)
            meta = described.get(match.group(1) if match else str(position), {})
            aid = self._snowflake()
            data = file.data
            self._attachments[aid] = data
            filename = meta.get("filename") or file.filename
            out.append(
                {
                    "id": str(aid),
                    "filename": filename,
                    "size": len(data),
                    # Served by this fake on loopback, as Discord's CDN serves them (see _cdn_handler).
                    "url": f"{self.base_url}/attachments/{channel_id}/{aid}/{filename}",
                    "proxy_url": f"{self.base_url}/attachments/{channel_id}/{aid}/{filename}",
                    "content_type": file.content_type,
                    "description": meta.get("description"),
                }
            )
        return out

    def _create_message(
        self,
        channel: JSON,
        author_id: int,
        body: JSON,
        *,
        files: Sequence[_File] = (),
        mtype: int = 0,
        extra: JSON | None = None,
        ephemeral_for: int | None = None,
        session_id: str | None = None,
    ) -> JSON:
        cid = int(channel["id"])
        mid = self._snowflake()
        content = str(body.get("content") or "")
        reference = body.get("message_reference") if isinstance(body.get("message_reference"), dict) else None
        referenced: JSON | None = None
        if reference is not None and reference.get("message_id") is not None:
            located = self._locate_message(int(reference["message_id"]))
            referenced = located[0] if located is not None else None
            mtype = 19 if mtype == 0 else mtype
        users, roles, everyone = self._resolve_mentions(
            content,
            body.get("allowed_mentions"),
            int(referenced["author"]["id"]) if referenced is not None else None,
        )
        message: JSON = {
            "id": str(mid),
            "type": mtype,
            "content": content,
            "channel_id": str(cid),
            "author": copy.deepcopy(self._users[author_id]),
            "attachments": self._build_attachments(cid, body, files, []),
            "embeds": [{"type": "rich", **e} for e in body.get("embeds") or []],
            "mentions": [copy.deepcopy(self._users[u]) for u in users],
            "mention_roles": [str(r) for r in roles],
            "pinned": False,
            "mention_everyone": everyone,
            "tts": bool(body.get("tts", False)),
            "timestamp": datetime.fromtimestamp(snowflake_time_ms(mid) / 1000, UTC).isoformat(),
            "edited_timestamp": None,
            "flags": int(body.get("flags") or 0),
            "components": copy.deepcopy(body.get("components") or []),
        }
        if body.get("nonce") is not None:
            message["nonce"] = body["nonce"]
        if reference is not None:
            message["message_reference"] = {
                "type": 0,
                "message_id": str(reference["message_id"]),
                "channel_id": str(reference.get("channel_id") or (referenced or {}).get("channel_id") or cid),
                **({"guild_id": str(self.guild_id)} if channel["type"] != ChannelType.DM else {}),
            }
            message["referenced_message"] = copy.deepcopy(referenced)
        if extra:
            message.update(copy.deepcopy(extra))
        if ephemeral_for is not None:
            self._ephemeral[mid] = message
            self._ephemeral_owner[mid] = ephemeral_for
            self._changed()
            return message
        if channel["type"] in ChannelType.THREADS:
            message["position"] = channel["total_message_sent"]
            channel["message_count"] += 1
            channel["total_message_sent"] += 1
        channel["last_message_id"] = str(mid)
        self._messages[cid][mid] = message
        self._emit_message("MESSAGE_CREATE", message, session_id=session_id)
        return message

    def _apply_edit(self, message: JSON, body: JSON, *, files: Sequence[_File] = (), mark_edited: bool = True) -> None:
        if "content" in body:
            message["content"] = str(body["content"] or "")
            users, roles, everyone = self._resolve_mentions(message["content"], body.get("allowed_mentions"), None)
            message["mentions"] = [copy.deepcopy(self._users[u]) for u in users]
            message["mention_roles"] = [str(r) for r in roles]
            message["mention_everyone"] = everyone
        if "embeds" in body:
            message["embeds"] = [{"type": "rich", **e} for e in body["embeds"] or []]
        if "components" in body:
            message["components"] = copy.deepcopy(body["components"] or [])
        if "flags" in body and body["flags"] is not None:
            message["flags"] = (message["flags"] & (_Flag.EPHEMERAL | _Flag.IS_COMPONENTS_V2)) | int(body["flags"])
        if "attachments" in body or files:
            # "attachments" lists the existing attachments to keep (snowflake ids) plus metadata for
            # new files (ids are the files[N] indexes); without it every existing one is kept.
            listed = [a for a in body.get("attachments") or [] if isinstance(a, dict)]
            existing = {a["id"] for a in message["attachments"]}
            if "attachments" in body:
                keep = [a for a in message["attachments"] if a["id"] in {str(x.get("id")) for x in listed}]
            else:
                keep = list(message["attachments"])
            new_meta: JSON = {"attachments": [x for x in listed if str(x.get("id")) not in existing]}
            message["attachments"] = self._build_attachments(int(message["channel_id"]), new_meta, files, keep)
        if mark_edited:
            message["edited_timestamp"] = _iso()
        if int(message["id"]) not in self._ephemeral:
            self._emit_message("MESSAGE_UPDATE", message)
        else:
            self._changed()

    def _delete_message(self, channel: JSON, message: JSON) -> None:
        cid, mid = int(channel["id"]), int(message["id"])
        del self._messages[cid][mid]
        if channel["type"] in ChannelType.THREADS:
            channel["message_count"] = max(0, channel["message_count"] - 1)
        data: JSON = {"id": str(mid), "channel_id": str(cid)}
        if channel["type"] != ChannelType.DM:
            data["guild_id"] = str(self.guild_id)
        self._emit("MESSAGE_DELETE", data, self._message_intent(channel))

    def _set_archived(self, thread: JSON, archived: bool) -> None:
        thread["thread_metadata"]["archived"] = archived
        thread["thread_metadata"]["archive_timestamp"] = _iso()
        self._thread_event("THREAD_UPDATE", thread)

    # ------------------------------------------------------------------ member actions (test API)

    def user_post(
        self,
        channel_id: int,
        user_id: int,
        content: str,
        mentions_bot: bool = False,
        *,
        reply_to: int | None = None,
        session_id: str | None = None,
        attachments: Sequence[tuple[str, str, bytes]] = (),
        stickers: Sequence[str] = (),
        forwarded: JSON | None = None,
    ) -> JSON:
        """A member posts a message; dispatches MESSAGE_CREATE and returns it (gateway shape).

        ``attachments`` are (filename, content type, bytes), served at the attachment's ``url``;
        ``stickers`` are sticker names (``sticker_items``); ``forwarded`` is a message (as returned by
        this fake) the member forwards: a ``message_snapshots`` entry with a forward reference.

        Raises :class:`DiscordError` like Discord would reject it: 160005 in a locked thread without
        MANAGE_THREADS, 50083 in an archived and locked thread, 50001 for non-members.
        """
        with self._lock:
            channel = self._channel(channel_id)
            unarchive = self._check_write(user_id, channel, "post")
            if mentions_bot and f"<@{self.bot_user_id}>" not in content and f"<@!{self.bot_user_id}>" not in content:
                content = f"<@{self.bot_user_id}> {content}"
            body: JSON = {"content": content}
            if reply_to is not None:
                body["message_reference"] = {"message_id": str(reply_to), "channel_id": str(channel_id)}
            files = [_File(f"files[{i}]", name, kind, data) for i, (name, kind, data) in enumerate(attachments)]
            # A sticker or a forward is a message of its own, without text.
            self._validate_message_body(
                body, files=files, flags_allowed=_Flag.SENDABLE, allow_empty=bool(stickers or forwarded)
            )
            if unarchive:
                self._set_archived(channel, False)
            files = [_File(f"files[{i}]", name, kind, data) for i, (name, kind, data) in enumerate(attachments)]
            extra: JSON = {}
            if stickers:
                extra["sticker_items"] = [
                    {"id": str(self._snowflake()), "name": name, "format_type": 1} for name in stickers
                ]
            if forwarded is not None:
                extra["message_reference"] = {
                    "type": 1,
                    "message_id": str(forwarded["id"]),
                    "channel_id": str(forwarded["channel_id"]),
                    "guild_id": str(self.guild_id),
                }
                snapshot = {
                    k: copy.deepcopy(forwarded.get(k))
                    for k in ("type", "content", "embeds", "attachments", "timestamp", "edited_timestamp", "flags")
                }
                snapshot["embeds"] = snapshot["embeds"] or []
                snapshot["attachments"] = snapshot["attachments"] or []
                extra["message_snapshots"] = [{"message": snapshot}]
            message = self._create_message(
                channel, user_id, body, files=files, extra=extra or None, session_id=session_id
            )
            return self._gateway_message(message)

    def webhook_post(self, channel_id: int, content: str, *, name: str = "RSS Feed") -> JSON:
        """A webhook posts (a bridge, a feed): its author is the webhook, not a member, and not a bot."""
        with self._lock:
            channel = self._channel(channel_id)
            webhook_id = self._snowflake()
            author = {"id": str(webhook_id), "username": name, "discriminator": "0000", "avatar": None}
            extra: JSON = {"author": author, "webhook_id": str(webhook_id)}
            message = self._create_message(channel, self.bot_user_id, {"content": content}, extra=extra)
            return self._gateway_message(message)

    def bot_post(
        self,
        channel_id: int,
        content: str = "",
        *,
        components: Sequence[JSON] | None = None,
        embeds: Sequence[JSON] | None = None,
    ) -> JSON:
        """A message by the bot as an *earlier* bot process left it (e.g. a button row before a
        restart, to test persistent views). Dispatches MESSAGE_CREATE; no permission checks."""
        with self._lock:
            body: JSON = {"content": content, "components": list(components or []), "embeds": list(embeds or [])}
            message = self._create_message(self._channel(channel_id), self.bot_user_id, body)
            return self._gateway_message(message)

    def user_edit(self, channel_id: int, message_id: int, new_content: str, *, session_id: str | None = None) -> JSON:
        """The author edits their message; dispatches MESSAGE_UPDATE (full message, edited_timestamp).

        Raises 50083 in an archived thread and 160005 in a locked one (non-moderators).
        """
        with self._lock:
            channel = self._channel(channel_id)
            message = self._messages[channel_id].get(message_id)
            if message is None:
                raise _unknown_message()
            author = int(message["author"]["id"])
            self._check_write(author, channel, "edit")
            body = {"content": new_content}
            self._validate_message_body(body, files=(), flags_allowed=_Flag.SENDABLE, is_edit=True)
            message["content"] = new_content
            users, roles, everyone = self._resolve_mentions(new_content, None, None)
            message["mentions"] = [copy.deepcopy(self._users[u]) for u in users]
            message["mention_roles"] = [str(r) for r in roles]
            message["mention_everyone"] = everyone
            message["edited_timestamp"] = _iso()
            self._emit_message("MESSAGE_UPDATE", message, session_id=session_id)
            return self._gateway_message(message)

    def user_delete(self, channel_id: int, message_id: int, user_id: int) -> None:
        """A member deletes a message (their own, or anyone's with MANAGE_MESSAGES)."""
        with self._lock:
            channel = self._channel(channel_id)
            message = self._messages[channel_id].get(message_id)
            if message is None:
                raise _unknown_message()
            perms = self._require_access(user_id, channel)
            if int(message["author"]["id"]) != user_id and not perms & Perm.MANAGE_MESSAGES:
                raise _missing_permissions()
            self._check_write(user_id, channel, "delete")
            self._delete_message(channel, message)

    def user_edit_thread(
        self,
        user_id: int,
        thread_id: int,
        *,
        locked: bool | None = None,
        archived: bool | None = None,
        name: str | None = None,
    ) -> JSON:
        """A member (e.g. a moderator in the Discord client) edits a thread; THREAD_UPDATE."""
        body: JSON = {}
        if locked is not None:
            body["locked"] = locked
        if archived is not None:
            body["archived"] = archived
        if name is not None:
            body["name"] = name
        with self._lock:
            thread = self._channel(thread_id)
            if thread["type"] not in ChannelType.THREADS:
                raise DiscordError(400, 50024, "Cannot execute action on this channel type")
            return self._edit_thread(user_id, thread, body)

    def user_create_thread(self, channel_id: int, user_id: int, name: str, *, message_id: int | None = None) -> JSON:
        """A member starts a public thread (from ``message_id`` if given); THREAD_CREATE."""
        with self._lock:
            channel = self._channel(channel_id)
            perms = self._require_access(user_id, channel)
            if channel["type"] != ChannelType.GUILD_TEXT:
                raise DiscordError(400, 50024, "Cannot execute action on this channel type")
            if not perms & Perm.CREATE_PUBLIC_THREADS:
                raise _missing_permissions()
            if message_id is not None:
                if message_id not in self._messages[channel_id]:
                    raise _unknown_message()
                if message_id in self._channels:
                    raise DiscordError(400, 160004, "A thread has already been created for this message")
            thread = self._new_thread(
                channel,
                user_id,
                name,
                None,
                thread_id=message_id if message_id is not None else self._snowflake(),
                ttype=ChannelType.PUBLIC_THREAD,
                body={},
            )
            return self._channel_out(thread)

    # ------------------------------------------------------------------ interactions (test API)

    def _new_interaction(
        self,
        itype: int,
        user_id: int,
        channel_id: int,
        data: JSON,
        *,
        message: JSON | None = None,
        session_id: str | None = None,
        locale: str = "en-US",
        source_message_id: int | None = None,
    ) -> JSON:
        channel = self._channel(channel_id)
        self._check_write(user_id, channel, "interact")  # archived threads: 50083; locked is fine
        iid = self._snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        in_guild = channel["type"] != ChannelType.DM
        payload: JSON = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "token": token,
            "version": 1,
            "locale": locale,
            "channel": self._channel_out(channel),
            "channel_id": str(channel_id),
            "app_permissions": str(self.permissions(self.bot_user_id, channel_id)),
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(self.guild_id) if in_guild else "0"},
            "context": 0 if in_guild else 1,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if in_guild:
            payload["guild_id"] = str(self.guild_id)
            payload["guild"] = {"id": str(self.guild_id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            payload["member"] = self._member_json(user_id, permissions=self.permissions(user_id, channel_id))
        else:
            payload["user"] = copy.deepcopy(self._users[user_id])
        if message is not None:
            payload["message"] = message
        rec = _Interaction(
            id=iid,
            token=token,
            type=itype,
            user_id=user_id,
            channel_id=channel_id,
            guild_id=self.guild_id if in_guild else None,
            payload=copy.deepcopy(payload),
            created=time.monotonic(),
            source_message_id=source_message_id,
        )
        self._interactions[iid] = rec
        self._token_to_interaction[token] = iid
        self._emit("INTERACTION_CREATE", payload, None, session_id=session_id)
        return copy.deepcopy(payload)

    def _registered_command(self, name: str, ctype: int) -> JSON | None:
        for scope in (self.guild_id, None):
            for cmd in self._commands.get(scope, []):
                if cmd["name"] == name and cmd["type"] == ctype:
                    return cmd
        return None

    def slash_command(
        self,
        user_id: int,
        channel_id: int,
        name: str,
        subcommand: str | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        locale: str = "en-US",
    ) -> JSON:
        """A member runs ``/name [group] [subcommand] option:value...``; INTERACTION_CREATE type 2.

        ``subcommand`` may be ``"sub"`` or ``"group sub"``. Option types come from the registered
        command when the bot synced one (else: bool/int/float/str inferred); user/channel/role
        options take ids and get ``resolved`` data. Returns the interaction payload (``id``, ``token``).
        """
        with self._lock:
            cmd = self._registered_command(name, 1)
            if cmd is None and self.strict_commands:
                raise LookupError(f"/{name} was never registered by the bot")
            data: JSON = {"id": cmd["id"] if cmd else str(self._snowflake()), "name": name, "type": 1}
            if cmd is not None and cmd.get("guild_id"):
                data["guild_id"] = cmd["guild_id"]
            schema: list[JSON] | None = cmd.get("options", []) if cmd else None
            container = data
            parts = subcommand.split() if subcommand else []
            for i, part in enumerate(parts):
                entry = next((o for o in schema or [] if o["name"] == part), None)
                if schema is not None and entry is None:
                    raise LookupError(f"/{name} has no subcommand {part!r}")
                otype = entry["type"] if entry else (2 if i < len(parts) - 1 else 1)
                node: JSON = {"type": otype, "name": part, "options": []}
                container.setdefault("options", []).append(node)
                container = node
                schema = entry.get("options", []) if entry else None
            resolved: JSON = {}
            opts = [self._option(k, v, schema, resolved) for k, v in (options or {}).items()]
            container["options"] = opts
            if resolved:
                data["resolved"] = resolved
            return self._new_interaction(_I_COMMAND, user_id, channel_id, data, session_id=session_id, locale=locale)

    def _option(self, name: str, value: Any, schema: list[JSON] | None, resolved: JSON) -> JSON:
        entry = next((o for o in schema or [] if o["name"] == name), None)
        if schema is not None and entry is None:
            raise LookupError(f"unknown option {name!r}")
        if entry is not None:
            otype = int(entry["type"])
        elif isinstance(value, bool):
            otype = 5
        elif isinstance(value, int):
            otype = 4
        elif isinstance(value, float):
            otype = 10
        else:
            otype = 3
        if otype == 6:  # USER: Discord sends the id and resolved user/member
            uid = int(value)
            resolved.setdefault("users", {})[str(uid)] = copy.deepcopy(self._users[uid])
            if uid in self._members:
                member = self._member_json(uid, with_user=False, permissions=self._base_permissions(uid))
                resolved.setdefault("members", {})[str(uid)] = member
            value = str(uid)
        elif otype == 7:  # CHANNEL
            cid = int(value)
            channel = self._channel(cid)
            resolved.setdefault("channels", {})[str(cid)] = {
                "id": str(cid),
                "name": channel.get("name"),
                "type": channel["type"],
                "permissions": str(self.permissions(self.bot_user_id, cid)),
                **(
                    {"thread_metadata": channel["thread_metadata"], "parent_id": channel["parent_id"]}
                    if channel["type"] in ChannelType.THREADS
                    else {}
                ),
            }
            value = str(cid)
        elif otype == 8:  # ROLE
            rid = int(value)
            resolved.setdefault("roles", {})[str(rid)] = copy.deepcopy(self._roles[rid])
            value = str(rid)
        return {"name": name, "type": otype, "value": value}

    def click(
        self,
        user_id: int,
        message: JSON | int,
        custom_id: str,
        *,
        values: Sequence[str] | None = None,
        session_id: str | None = None,
    ) -> JSON:
        """A member clicks a button (or picks ``values`` in a select) on a message; INTERACTION_CREATE
        type 3. The component must exist on the message's *current* state and not be disabled."""
        with self._lock:
            mid = int(message["id"]) if isinstance(message, dict) else int(message)
            located = self._locate_message(mid)
            if located is None:
                raise _unknown_message()
            stored, ephemeral = located
            if ephemeral and self._ephemeral_owner.get(mid) != user_id:
                raise PermissionError("only the user an ephemeral message was shown to can click it")
            component = next(
                (c for c in _walk_components(stored.get("components", [])) if c.get("custom_id") == custom_id), None
            )
            if component is None:
                raise LookupError(f"message {mid} has no component with custom_id {custom_id!r}")
            if component.get("disabled"):
                raise ValueError(f"component {custom_id!r} is disabled")
            ctype = int(component["type"])
            data: JSON = {"custom_id": custom_id, "component_type": ctype}
            if component.get("id") is not None:
                data["id"] = component["id"]
            if ctype in _SELECT_TYPES:
                data["values"] = list(values or [])
            elif values is not None:
                raise ValueError("values only apply to select menus")
            return self._new_interaction(
                _I_COMPONENT,
                user_id,
                int(stored["channel_id"]),
                data,
                message=self._gateway_message(stored),
                session_id=session_id,
                source_message_id=mid,
            )

    def submit_modal(
        self,
        user_id: int,
        channel_id: int,
        custom_id: str,
        values: Mapping[str, str | Sequence[str]] | None = None,
        *,
        session_id: str | None = None,
    ) -> JSON:
        """A member submits a modal the bot opened for them; INTERACTION_CREATE type 5.

        Components mirror the modal (action rows or labels); inputs not in ``values`` keep their
        prefilled value. Discord's client-side checks (required, min/max length) raise ValueError.
        """
        with self._lock:
            modal = next(
                (m for m in reversed(self._open_modals) if m.user_id == user_id and m.custom_id == custom_id), None
            )
            if modal is None:
                raise LookupError(f"no modal {custom_id!r} is open for user {user_id}")
            remaining = dict(values or {})
            components = [self._submitted(c, remaining) for c in modal.data.get("components", [])]
            components = [c for c in components if c is not None]
            if remaining:
                raise KeyError(f"modal {custom_id!r} has no inputs {sorted(remaining)}")
            message = None
            if modal.source_message_id is not None:
                located = self._locate_message(modal.source_message_id)
                if located is not None:
                    message = self._gateway_message(located[0])
            data: JSON = {"custom_id": custom_id, "components": components}
            payload = self._new_interaction(
                _I_MODAL,
                user_id,
                channel_id,
                data,
                message=message,
                session_id=session_id,
                source_message_id=modal.source_message_id,
            )
            self._open_modals.remove(modal)  # a modal is submitted once
            return payload

    def _submitted(self, comp: JSON, values: dict[str, str | Sequence[str]]) -> JSON | None:
        ctype = int(comp["type"])
        if ctype == 1:
            inner = [self._submitted(c, values) for c in comp.get("components", [])]
            return {"type": 1, "components": [c for c in inner if c is not None]}
        if ctype == 18:  # Label wrapping one input
            inner_comp = self._submitted(comp["component"], values)
            return None if inner_comp is None else {"type": 18, "component": inner_comp}
        cid = comp.get("custom_id")
        if cid is None:
            return None  # text displays and the like are not submitted
        if ctype == 4:
            raw = values.pop(cid, comp.get("value") or "")
            value = raw if isinstance(raw, str) else "".join(raw)
            if comp.get("required", True) and not value:
                raise ValueError(f"text input {cid!r} is required")
            if comp.get("min_length") is not None and value and len(value) < comp["min_length"]:
                raise ValueError(f"text input {cid!r} is shorter than {comp['min_length']}")
            if comp.get("max_length") is not None and len(value) > comp["max_length"]:
                raise ValueError(f"text input {cid!r} is longer than {comp['max_length']}")
            return {"type": 4, "custom_id": cid, "value": value}
        picked = values.pop(cid, [])
        return {"type": ctype, "custom_id": cid, "values": [picked] if isinstance(picked, str) else list(picked)}

    # ------------------------------------------------------------------ REST: interaction responses

    def _interaction_by_token(self, app: str, token: str) -> _Interaction:
        iid = self._token_to_interaction.get(token)
        if int(app) != self.application_id or iid is None:
            raise DiscordError(404, 10015, "Unknown Webhook")
        rec = self._interactions[iid]
        if time.monotonic() - rec.created > self.followup_ttl:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        return rec

    def _response_message(
        self, rec: _Interaction, body: JSON, *, files: Sequence[_File] = (), loading: bool = False
    ) -> JSON:
        flags = int(body.get("flags") or 0)
        if loading:
            flags |= _Flag.LOADING
        channel = self._channels[rec.channel_id]
        user = copy.deepcopy(self._users[rec.user_id])
        name = rec.payload.get("data", {}).get("name") if rec.type == _I_COMMAND else None
        metadata: JSON = {
            "id": str(rec.id),
            "type": rec.type,
            "user": user,
            "authorizing_integration_owners": rec.payload["authorizing_integration_owners"],
        }
        if name is not None:
            metadata["name"] = name
            metadata["command_type"] = 1
        extra: JSON = {
            "webhook_id": str(self.application_id),
            "application_id": str(self.application_id),
            "interaction_metadata": metadata,
            "flags": flags,
        }
        if name is not None:
            extra["interaction"] = {"id": str(rec.id), "type": rec.type, "name": name, "user": user}
        message_body = {k: v for k, v in body.items() if k != "flags"}
        return self._create_message(
            channel,
            self.bot_user_id,
            message_body,
            files=files,
            mtype=20 if rec.type == _I_COMMAND else 0,
            extra=extra,
            ephemeral_for=rec.user_id if flags & _Flag.EPHEMERAL else None,
        )

    def _h_callback(self, req: _Request) -> tuple[int, Any]:
        rec = self._interactions.get(int(req.params["interaction"]))
        if rec is None or rec.token != req.params["token"]:
            raise DiscordError(404, 10062, "Unknown interaction")
        if rec.ack_type is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        if self.interaction_timeout is not None and time.monotonic() - rec.created > self.interaction_timeout:
            raise DiscordError(404, 10062, "Unknown interaction")  # what a late (>3 s) answer gets
        body = req.body if isinstance(req.body, dict) else {}
        ctype = int(body.get("type", 0))
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        assert isinstance(data, dict)
        allowed = {
            _I_COMMAND: {_CB_MESSAGE, _CB_DEFER, _CB_MODAL},
            _I_COMPONENT: {_CB_MESSAGE, _CB_DEFER, _CB_DEFER_UPDATE, _CB_UPDATE, _CB_MODAL},
            _I_AUTOCOMPLETE: {_CB_AUTOCOMPLETE},
            _I_MODAL: {_CB_MESSAGE, _CB_DEFER}
            | ({_CB_DEFER_UPDATE, _CB_UPDATE} if rec.source_message_id is not None else set()),
        }.get(rec.type, set())
        if ctype not in allowed:
            raise _invalid_form("type", "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid interaction response type")
        message: JSON | None = None
        if ctype == _CB_MESSAGE:
            self._validate_message_body(data, files=req.files, flags_allowed=_Flag.SENDABLE | _Flag.EPHEMERAL)
            message = self._response_message(rec, data, files=req.files)
            rec.original_message_id = int(message["id"])
        elif ctype == _CB_DEFER:
            flags = int(data.get("flags") or 0) & _Flag.EPHEMERAL
            message = self._response_message(rec, {"content": "", "flags": flags}, loading=True)
            rec.original_message_id = int(message["id"])
            rec.loading = True
        elif ctype in (_CB_DEFER_UPDATE, _CB_UPDATE):
            rec.original_message_id = rec.source_message_id
            if ctype == _CB_UPDATE and rec.source_message_id is not None:
                located = self._locate_message(rec.source_message_id)
                if located is None:
                    raise _unknown_message()
                self._validate_message_body(data, files=req.files, flags_allowed=_Flag.SENDABLE, is_edit=True)
                self._apply_edit(located[0], data, files=req.files)
                message = located[0]
        elif ctype == _CB_MODAL:
            self._validate_modal(data)
            self._open_modals.append(
                _OpenModal(rec.user_id, str(data["custom_id"]), rec.id, copy.deepcopy(data), rec.source_message_id)
            )
        rec.ack_type = ctype
        rec.responses.append(
            {
                "kind": "callback",
                "type": ctype,
                "data": copy.deepcopy(body.get("data")),
                "message_id": rec.original_message_id,
            }
        )
        self._changed()
        if req.query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        callback: JSON = {"id": str(rec.id), "type": rec.type}
        if message is not None:
            callback["response_message_id"] = message["id"]
            callback["response_message_loading"] = bool(message["flags"] & _Flag.LOADING)
            callback["response_message_ephemeral"] = bool(message["flags"] & _Flag.EPHEMERAL)
        out: JSON = {"interaction": callback}
        if message is not None:
            out["resource"] = {"type": ctype, "message": self._message_out(message)}
        return 200, out

    def _validate_modal(self, data: JSON) -> None:
        cid = data.get("custom_id")
        if not isinstance(cid, str) or not 1 <= len(cid) <= 100:
            raise _invalid_form("data.custom_id", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        title = data.get("title")
        if not isinstance(title, str) or not 1 <= len(title) <= 45:
            raise _invalid_form("data.title", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
        components = data.get("components") or []
        if not 1 <= len(components) <= 5:
            raise _invalid_form("data.components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
        for comp in _walk_components(components):
            if comp.get("type") == 4 and comp.get("value") is not None:
                max_length = comp.get("max_length") or 4000
                if len(comp["value"]) > max_length:
                    raise _invalid_form("data.components", "BASE_TYPE_MAX_LENGTH", "Prefilled value too long.")

    def _h_followup(self, req: _Request) -> tuple[int, Any]:
        rec = self._interaction_by_token(req.params["app"], req.params["token"])
        if rec.ack_type is None or rec.ack_type in (_CB_MODAL, _CB_AUTOCOMPLETE):
            raise DiscordError(404, 10015, "Unknown Webhook")  # no initial response yet
        body = req.body if isinstance(req.body, dict) else {}
        self._validate_message_body(body, files=req.files, flags_allowed=_Flag.SENDABLE | _Flag.EPHEMERAL)
        if rec.loading and rec.original_message_id is not None:
            # The first follow-up after a type 5 defer replaces the "thinking" message (keeping
            # the ephemerality chosen at defer time).
            located = self._locate_message(rec.original_message_id)
            assert located is not None
            message = located[0]
            rec.loading = False
            message["flags"] &= ~_Flag.LOADING
            self._apply_edit(
                message, {k: v for k, v in body.items() if k != "flags"}, files=req.files, mark_edited=False
            )
            kind_id = int(message["id"])
        else:
            message = self._response_message(rec, body, files=req.files)
            kind_id = int(message["id"])
            rec.followup_ids.append(kind_id)
        rec.responses.append({"kind": "followup", "type": None, "data": copy.deepcopy(body), "message_id": kind_id})
        self._changed()
        if req.query.get("wait") in ("1", "true", "True"):
            return 200, self._message_out(message)
        return 204, None

    def _webhook_message(self, req: _Request) -> tuple[_Interaction, JSON]:
        rec = self._interaction_by_token(req.params["app"], req.params["token"])
        ref = req.params["message"]
        if ref == "@original":
            mid = rec.original_message_id
        else:
            mid = int(ref)
            if mid != rec.original_message_id and mid not in rec.followup_ids:
                raise _unknown_message()
        if mid is None:
            raise _unknown_message()
        located = self._locate_message(mid)
        if located is None:
            raise _unknown_message()
        return rec, located[0]

    def _h_wh_get(self, req: _Request) -> tuple[int, Any]:
        return 200, self._message_out(self._webhook_message(req)[1])

    def _h_wh_edit(self, req: _Request) -> tuple[int, Any]:
        rec, message = self._webhook_message(req)
        body = req.body if isinstance(req.body, dict) else {}
        self._validate_message_body(body, files=req.files, flags_allowed=_Flag.SENDABLE, is_edit=True)
        replacing_loading = rec.loading and int(message["id"]) == rec.original_message_id
        if replacing_loading:
            rec.loading = False
            message["flags"] &= ~_Flag.LOADING
        self._apply_edit(message, body, files=req.files, mark_edited=not replacing_loading)
        rec.responses.append(
            {"kind": "edit", "type": None, "data": copy.deepcopy(body), "message_id": int(message["id"])}
        )
        self._changed()
        return 200, self._message_out(message)

    def _h_wh_delete(self, req: _Request) -> tuple[int, Any]:
        rec, message = self._webhook_message(req)
        mid = int(message["id"])
        if mid in self._ephemeral:
            del self._ephemeral[mid]
            self._ephemeral_owner.pop(mid, None)
        else:
            self._delete_message(self._channels[int(message["channel_id"])], message)
        rec.responses.append({"kind": "delete", "type": None, "data": None, "message_id": mid})
        self._changed()
        return 204, None


def _walk_components(components: Sequence[JSON]) -> Iterator[JSON]:
    """Every component, depth-first: action rows, labels, containers and sections included."""
    for comp in components:
        if not isinstance(comp, dict):
            continue
        yield comp
        yield from _walk_components(comp.get("components") or [])
        if isinstance(comp.get("component"), dict):
            yield from _walk_components([comp["component"]])
        if isinstance(comp.get("accessory"), dict):
            yield from _walk_components([comp["accessory"]])


def point_discord_py_at(fake: FakeDiscord) -> Callable[[], None]:
    """Point discord.py (process-wide) at the fake; returns a function that restores the defaults.

    ``discord.http.Route.BASE`` is a ``str`` class attribute read whenever a Route is built (webhook
    and interaction routes too); ``DiscordWebSocket.DEFAULT_GATEWAY`` is a ``yarl.URL`` to which
    discord.py adds ``?v=10&encoding=json&compress=zlib-stream``. After READY the client reconnects to
    ``resume_gateway_url``, which the fake also sets to itself.
    """
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    old_base, old_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE = fake.api_url
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)

    def restore() -> None:
        Route.BASE = old_base
        DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    return restore
