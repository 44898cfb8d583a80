"""A fake Slack for tests: the Web API the bot calls, and a driver that plays Slack towards the bot.

`FakeSlack` is an aiohttp app serving `/api/{method}` with an in-memory workspace, a call log and a
fault queue. It runs in its own thread with its own event loop so that sync tests, async tests (each
with their own loop) and bot subprocesses pointed at `SLACK_API_URL` can all use the same instance.

`SlackDriver` builds Events API envelopes, slash commands and block_actions payloads the way Slack
does, signs them with the signing secret and POSTs them to the bot's request URL.

Wire facts these rely on were checked against slack-sdk 3.48 / slack-bolt 1.30 sources; the
non-obvious ones are noted where they matter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import hmac
import itertools
import json
import re
import secrets
import string
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, TypedDict, TypeVar, Unpack

import aiohttp
from aiohttp import web

JSON = dict[str, Any]
T = TypeVar("T")

TEAM_ID = "T0001"
TEAM_DOMAIN = "fake"
TEAM_NAME = "Fake Workspace"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
BOT_NAME = "lastresort"
APP_ID = "A0001"
DEFAULT_TOKEN = "xoxb-fake-bot-token"
# What an app installed from config/slack-manifest.yaml is granted (set `scopes` to take some away).
GRANTED_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "groups:history",
    "im:history",
    "mpim:history",
    "chat:write",
    "commands",
    "users:read",
    "usergroups:read",
    "im:write",
    "assistant:write",
)

# Slack rejects more than 50 blocks per message and more than 3000 characters in a section's text;
# a bot streaming long model output into blocks must hit these in tests, not in production.
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
# Slack truncates (does not reject) message text beyond 40,000 characters.
MAX_TEXT = 40_000
# A markdown block holds at most 12,000 characters, and so do all markdown blocks of one message together
# and the markdown_text of one streaming call.
MAX_MARKDOWN = 12_000
# context_actions holds 1 to 5 elements; a feedback button's text is at most 75 characters, its value 2000.
MAX_CONTEXT_ACTIONS = 5
MAX_FEEDBACK_TEXT = 75
MAX_FEEDBACK_VALUE = 2000
# assistant.threads.setSuggestedPrompts takes up to four prompts.
MAX_SUGGESTED_PROMPTS = 4
CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})
# A response_url may be used 5 times within 30 minutes.
RESPONSE_URL_MAX_USES = 5

_MENTION_RE = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


class Call(NamedTuple):
    """One request the fake received: the API method, its merged, token-less parameters, and when it
    arrived (time.monotonic(), so a benchmark in the same process can time replies)."""

    method: str
    params: JSON
    at: float = 0.0


class ResponsePost(NamedTuple):
    """One POST to a `response_url` (what Bolt's `respond()` sends), keyed by the url's name."""

    name: str
    body: JSON


@dataclass
class Fault:
    """A scripted misbehaviour for the next call(s) to a method ("*" matches any method)."""

    status: int = 429
    retry_after: int | None = 1
    error: str | None = None
    # Seconds to wait before answering; with status 200 and no error the call is applied at once and
    # only the answer is late, which is how a real timeout looks (the message exists, the client gave up).
    delay: float = 0.0
    times: int = 1

    @property
    def applies_call(self) -> bool:
        return self.status == 200 and self.error is None


class _ApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class _ResponseTarget:
    name: str
    channel: str | None
    user: str | None
    message_ts: str | None
    thread_ts: str | None
    uses: int = 0


class _TsClock:
    """Monotonic Slack timestamps ("1700000000.000100"): seconds, a dot, six digits of microseconds.

    Wall clock by default (bots may compare a ts with now); `start` makes them deterministic.
    """

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._fixed = start is not None
        self._last = int(start * 1_000_000) - 100 if start is not None else 0

    def next(self) -> str:
        with self._lock:
            if self._fixed:
                self._last += 100
            else:
                self._last = max(int(time.time() * 1_000_000), self._last + 1)
            return f"{self._last // 1_000_000}.{self._last % 1_000_000:06d}"


def _random_id(length: int = 5) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def rich_text_blocks(text: str) -> list[JSON]:
    """The `rich_text` block Slack's clients attach to a typed message; mentions become user elements."""
    elements: list[JSON] = []
    pos = 0
    for match in _MENTION_RE.finditer(text):
        if match.start() > pos:
            elements.append({"type": "text", "text": text[pos : match.start()]})
        elements.append({"type": "user", "user_id": match.group(1)})
        pos = match.end()
    if pos < len(text):
        elements.append({"type": "text", "text": text[pos:]})
    return [
        {
            "type": "rich_text",
            "block_id": _random_id(),
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


def _ts_key(message: JSON) -> tuple[int, int]:
    # Compare ts as integers: a float of "1700000000.000100" is only just precise enough.
    seconds, _, micros = str(message["ts"]).partition(".")
    return int(seconds), int(micros or 0)


def _as_bool(value: Any) -> bool:
    # Form bodies and query strings carry "1"/"true"; JSON bodies carry real booleans.
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return bool(value)


def _maybe_json(value: Any, error: str) -> Any:
    # slack_sdk sends blocks/attachments/view as JSON strings in form bodies and as structures in JSON.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise _ApiError(error) from exc
    return value


def find_buttons(blocks: Sequence[JSON]) -> list[tuple[str | None, JSON]]:
    """(block_id, element) for every interactive element in `actions` and `context_actions` blocks and
    section accessories."""
    found: list[tuple[str | None, JSON]] = []
    for block in blocks:
        if block.get("type") in ("actions", "context_actions"):
            found.extend((block.get("block_id"), el) for el in block.get("elements", []))
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and "action_id" in accessory:
            found.append((block.get("block_id"), accessory))
    return found


class FakeSlack:
    """A fake Slack Web API with an in-memory workspace. Thread-safe; see the module docstring."""

    def __init__(self, token: str = DEFAULT_TOKEN, *, start_ts: float | None = None) -> None:
        self.token = token
        self.team_id = TEAM_ID
        self.team_domain = TEAM_DOMAIN
        self.bot_user_id = BOT_USER_ID
        self.bot_id = BOT_ID
        self.app_id = APP_ID
        # Reported in the x-oauth-scopes header, as Slack does for a token's granted scopes.
        self.scopes: tuple[str, ...] = GRANTED_SCOPES
        # One re-entrant lock guards the whole world; the condition wakes `wait_for` on every change.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._clock = _TsClock(start_ts)
        self._tokens: dict[str, str] = {token: BOT_USER_ID}
        self._users: dict[str, JSON] = {}
        self._channels: dict[str, JSON] = {}
        self._messages: dict[str, dict[str, JSON]] = {}
        self._dms: dict[str, str] = {}
        self._usergroups: dict[str, JSON] = {}
        self._views: dict[str, JSON] = {}
        self._ephemerals: list[JSON] = []
        self._deleted: list[tuple[str, JSON]] = []
        self._calls: list[Call] = []
        self._faults_served: list[tuple[str, int, str]] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._responses: list[ResponsePost] = []
        self._errors: list[str] = []
        self._response_targets: dict[str, _ResponseTarget] = {}
        self._ids = itertools.count(1)
        # Streaming: (channel, ts) of messages still streaming; an error to refuse chat.startStream with
        # (a workspace or channel without streaming), or None.
        self._streaming: set[tuple[str, str]] = set()
        self.streaming_error: str | None = None
        # The assistant container: threads Slack opened, and what the app set on them.
        self._assistant_threads: dict[tuple[str, str], JSON] = {}
        # App-level (xapp-) tokens, for apps.connections.open only; routes other fakes add (the socket).
        self._app_tokens: set[str] = set()
        self._routes: list[tuple[str, str, Callable[[web.Request], Any]]] = []
        self.socket_url: Callable[[], str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._methods: dict[str, Callable[[JSON, str], JSON]] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "bots.info": self._bots_info,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.delete": self._chat_delete,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.replies": self._conversations_replies,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
            "users.info": self._users_info,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroups_users_list,
            "views.publish": self._views_publish,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "assistant.threads.setStatus": self._assistant_set_status,
            "assistant.threads.setSuggestedPrompts": self._assistant_set_prompts,
            "assistant.threads.setTitle": self._assistant_set_title,
            "apps.connections.open": self._apps_connections_open,
        }
        self._add_user_locked(BOT_USER_ID, BOT_NAME, is_bot=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeSlack:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(ready, failure), name="FakeSlack", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread.join(1)
            self._thread = None
            raise RuntimeError("FakeSlack failed to start") from failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None
        self._loop = None
        self._port = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/respond/{name}", self._handle_respond)
        for method, path, handler in self._routes:
            app.router.add_route(method, path, handler)
        # A short shutdown timeout so stop() never hangs on a request parked in a slow fault.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self._port = int(runner.addresses[0][1])
            self._loop = loop
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSlack is not running; call start() or use it as a context manager")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What `AsyncWebClient(base_url=...)` takes (the trailing slash matters for urljoin)."""
        return f"{self.base_url}/api/"

    # ------------------------------------------------------------------ world set-up

    def next_ts(self) -> str:
        return self._clock.next()

    def add_token(self, token: str, user_id: str = BOT_USER_ID) -> None:
        with self._cond:
            self._tokens[token] = user_id

    def add_app_token(self, token: str) -> None:
        """An app-level token (xapp-…): good for apps.connections.open, refused by every other method."""
        with self._cond:
            self._app_tokens.add(token)

    def add_route(self, method: str, path: str, handler: Callable[[web.Request], Any]) -> None:
        """Serve another fake beside the Web API (the Socket Mode websocket); call before start()."""
        if self._thread is not None:
            raise RuntimeError("add routes before the fake starts")
        self._routes.append((method, path, handler))

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("FakeSlack is not running")
        return self._loop

    def add_user(
        self,
        user_id: str,
        name: str,
        is_admin: bool = False,
        is_owner: bool = False,
        *,
        real_name: str | None = None,
        display_name: str | None = None,
        is_bot: bool = False,
        deleted: bool = False,
    ) -> JSON:
        with self._cond:
            user = self._add_user_locked(
                user_id,
                name,
                is_admin=is_admin,
                is_owner=is_owner,
                real_name=real_name,
                display_name=display_name,
                is_bot=is_bot,
                deleted=deleted,
            )
            self._cond.notify_all()
            return copy.deepcopy(user)

    def _add_user_locked(
        self,
        user_id: str,
        name: str,
        *,
        is_admin: bool = False,
        is_owner: bool = False,
        real_name: str | None = None,
        display_name: str | None = None,
        is_bot: bool = False,
        deleted: bool = False,
    ) -> JSON:
        real = real_name if real_name is not None else name.title()
        display = display_name if display_name is not None else name
        user: JSON = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": deleted,
            "color": "9f69e7",
            "real_name": real,
            "tz": "Europe/London",
            "tz_label": "Greenwich Mean Time",
            "tz_offset": 0,
            "profile": {
                "real_name": real,
                "real_name_normalized": real,
                "display_name": display,
                "display_name_normalized": display,
                "team": self.team_id,
            },
            "is_admin": is_admin,
            "is_owner": is_owner,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(time.time()),
        }
        if is_bot and user_id == BOT_USER_ID:
            user["profile"]["bot_id"] = self.bot_id
            user["profile"]["api_app_id"] = self.app_id
        self._users[user_id] = user
        return user

    def ensure_user(self, user_id: str) -> None:
        """Create a plain member for an id seen in an event, so users.info answers for everyone who posts."""
        with self._cond:
            if user_id not in self._users:
                self._add_user_locked(user_id, user_id.lower())

    def add_channel(
        self, channel_id: str, name: str | None = None, *, is_private: bool = False, is_im: bool = False
    ) -> JSON:
        with self._cond:
            channel = self._add_channel_locked(channel_id, name, is_private=is_private, is_im=is_im)
            self._cond.notify_all()
            return copy.deepcopy(channel)

    def _add_channel_locked(
        self,
        channel_id: str,
        name: str | None,
        *,
        is_private: bool = False,
        is_im: bool = False,
        user: str | None = None,
    ) -> JSON:
        if channel_id in self._channels:
            return self._channels[channel_id]
        is_im = is_im or channel_id.startswith("D")
        channel: JSON = {
            "id": channel_id,
            "created": int(time.time()),
            "is_archived": False,
            "is_general": False,
            "is_channel": not is_im and not is_private,
            "is_group": is_private and not is_im,
            "is_im": is_im,
            "is_mpim": False,
            "is_private": is_private or is_im,
            "is_member": True,
            "is_ext_shared": False,
            "is_shared": False,
            "is_org_shared": False,
            "context_team_id": self.team_id,
        }
        if is_im:
            channel["user"] = user
            channel["is_open"] = True
        else:
            channel_name = name if name is not None else channel_id.lower()
            channel["name"] = channel_name
            channel["name_normalized"] = channel_name
        self._channels[channel_id] = channel
        self._messages.setdefault(channel_id, {})
        return channel

    def ensure_channel(self, channel_id: str) -> None:
        with self._cond:
            self._add_channel_locked(channel_id, None)

    def channel_type(self, channel_id: str) -> str:
        """The Events API `channel_type` for a conversation: channel, group, im or mpim."""
        with self._cond:
            info = self._channels.get(channel_id)
            if info is None:
                return "im" if channel_id.startswith("D") else "channel"
            if info["is_im"]:
                return "im"
            return "group" if info["is_private"] else "channel"

    def dm_channel(self, user_id: str) -> str:
        """The bot's DM channel with a user, created on first use (like conversations.open)."""
        with self._cond:
            return self._dm_locked(user_id)[0]

    def _dm_locked(self, user_id: str) -> tuple[str, bool]:
        existing = self._dms.get(user_id)
        if existing is not None:
            return existing, True
        channel_id = f"D{next(self._ids):08d}"
        self._add_channel_locked(channel_id, None, is_im=True, user=user_id)
        self._dms[user_id] = channel_id
        return channel_id, False

    def add_usergroup(self, group_id: str, handle: str, members: Sequence[str], name: str | None = None) -> None:
        with self._cond:
            self._usergroups[group_id] = {
                "id": group_id,
                "team_id": self.team_id,
                "is_usergroup": True,
                "name": name if name is not None else handle,
                "handle": handle,
                "date_delete": 0,
                "users": list(members),
                "user_count": len(members),
            }
            self._cond.notify_all()

    def add_message(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        ts: str | None = None,
        thread_ts: str | None = None,
        blocks: list[JSON] | None = None,
        **extra: Any,
    ) -> JSON:
        """Seed a message someone posted (history for conversations.replies, targets for clicks)."""
        message: JSON = {
            "type": "message",
            "user": user,
            "text": text,
            "ts": ts or self.next_ts(),
            "team": self.team_id,
            "blocks": blocks if blocks is not None else rich_text_blocks(text),
            **extra,
        }
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        return self.record_message(channel, message)

    def record_message(self, channel: str, message: JSON) -> JSON:
        """Store a message as Slack would (idempotent per ts: a redelivered event is one message)."""
        with self._cond:
            info = self._add_channel_locked(channel, None)
            poster = message.get("user")
            if poster:
                self._ensure_user_locked(str(poster))
                if info["is_im"] and info.get("user") is None and poster != self.bot_user_id:
                    # A DM first seen in an event belongs to its human poster.
                    info["user"] = poster
                    self._dms.setdefault(str(poster), channel)
            store = self._messages[channel]
            ts = str(message["ts"])
            if ts not in store:
                stored = {
                    k: copy.deepcopy(v)
                    for k, v in message.items()
                    if k not in {"channel", "event_ts", "channel_type", "parent_user_id"}
                }
                if stored.get("thread_ts") == ts:
                    del stored["thread_ts"]
                store[ts] = stored
                self._cond.notify_all()
            return self._render_locked(channel, store[ts])

    def _ensure_user_locked(self, user_id: str) -> None:
        if user_id not in self._users:
            self._add_user_locked(user_id, user_id.lower())

    def edit_message(
        self, channel: str, ts: str, text: str, *, editor: str | None = None, edited_ts: str | None = None
    ) -> JSON:
        """Apply a user's edit to a stored message (what a message_changed event reports)."""
        with self._cond:
            message = self._message_locked(channel, ts)
            message["text"] = text
            message["blocks"] = rich_text_blocks(text)
            message["edited"] = {"user": editor or message.get("user"), "ts": edited_ts or self.next_ts()}
            self._cond.notify_all()
            return self._render_locked(channel, message)

    # ------------------------------------------------------------------ inspection

    @property
    def calls(self) -> list[Call]:
        """Every request received, faulted ones included, in arrival order."""
        with self._cond:
            return list(self._calls)

    def calls_to(self, method: str) -> list[JSON]:
        with self._cond:
            return [copy.deepcopy(c.params) for c in self._calls if c.method == method]

    def clear_calls(self) -> None:
        with self._cond:
            self._calls.clear()
            self._faults_served.clear()

    @property
    def faults_served(self) -> list[tuple[str, int, str]]:
        """(method, HTTP status, error) for each call answered from the fault queue."""
        with self._cond:
            return list(self._faults_served)

    def messages(self, channel: str, thread_ts: str | None = None) -> list[JSON]:
        """Current messages in ts order: all of a channel (replies included), or one thread (root first)."""
        with self._cond:
            store = self._messages.get(channel, {})
            if thread_ts is None:
                picked = list(store.values())
            else:
                root = self._thread_root_locked(channel, thread_ts)
                picked = [m for m in store.values() if m["ts"] == root or m.get("thread_ts") == root]
            picked.sort(key=_ts_key)
            return [self._render_locked(channel, m) for m in picked]

    def is_streaming(self, channel: str, ts: str) -> bool:
        with self._cond:
            return (channel, ts) in self._streaming

    def end_stream(self, channel: str, ts: str) -> None:
        """What Slack does to a stream whose appends paused too long: it is no longer streaming."""
        with self._cond:
            self._streaming.discard((channel, ts))

    def assistant_thread(self, channel: str, thread_ts: str) -> JSON | None:
        """What the app set on an assistant thread: status, prompts, title (None if Slack never opened it)."""
        with self._cond:
            found = self._assistant_threads.get((channel, thread_ts))
            return copy.deepcopy(found) if found is not None else None

    def open_assistant_thread(self, user: str) -> tuple[str, str]:
        """The user opens the app from Slack's top bar: a new assistant thread in their DM with the app,
        rooted in a message of the app's (subtype assistant_app_thread). Returns (channel, thread_ts)."""
        with self._cond:
            self._ensure_user_locked(user)
            channel, _ = self._dm_locked(user)
            root = self._store_bot_message_locked(channel, "New chat", None, None, {"subtype": "assistant_app_thread"})
            self._assistant_threads[(channel, root["ts"])] = {
                "user": user,
                "status": "",
                "statuses": [],
                "prompts": None,
                "title": None,
            }
            self._cond.notify_all()
            return channel, str(root["ts"])

    def bot_messages(self, channel: str, thread_ts: str | None = None) -> list[JSON]:
        return [m for m in self.messages(channel, thread_ts) if m.get("user") == self.bot_user_id]

    def message(self, channel: str, ts: str) -> JSON | None:
        with self._cond:
            found = self._messages.get(channel, {}).get(ts)
            return None if found is None else self._render_locked(channel, found)

    def find_message(self, ts: str) -> tuple[str, JSON] | None:
        """(channel, message) for a ts in any channel."""
        with self._cond:
            for channel, store in self._messages.items():
                if ts in store:
                    return channel, self._render_locked(channel, store[ts])
            return None

    @property
    def ephemerals(self) -> list[JSON]:
        with self._cond:
            return copy.deepcopy(self._ephemerals)

    @property
    def deleted(self) -> list[tuple[str, JSON]]:
        with self._cond:
            return copy.deepcopy(self._deleted)

    @property
    def errors(self) -> list[str]:
        """Exceptions raised inside the fake itself (should stay empty; assert on it in teardown)."""
        with self._cond:
            return list(self._errors)

    def channel_info(self, channel: str) -> JSON | None:
        with self._cond:
            info = self._channels.get(channel)
            return None if info is None else copy.deepcopy(info)

    @property
    def views(self) -> dict[str, JSON]:
        """The App Home view last published per user id."""
        with self._cond:
            return copy.deepcopy(self._views)

    @property
    def responses(self) -> list[ResponsePost]:
        with self._cond:
            return [ResponsePost(r.name, copy.deepcopy(r.body)) for r in self._responses]

    # ------------------------------------------------------------------ waiting

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0, what: str = "condition") -> T:
        """Block until predicate() is truthy and return it. Not for a thread running the bot's loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop in this thread: blocking is fine
        else:
            raise RuntimeError(
                "FakeSlack.wait_for would block this event loop (and any bot running on it); "
                "use `await fake.wait_for_async(...)`"
            )
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
                # Also poll: a predicate may depend on state outside the fake.
                self._cond.wait(min(remaining, 0.05))

    # Same signature as wait_for on purpose; the deadline is ours, so asyncio.timeout adds nothing.
    async def wait_for_async(
        self,
        predicate: Callable[[], T],
        timeout: float = 5.0,  # noqa: ASYNC109
        what: str = "condition",
    ) -> T:
        """Like wait_for, but yields to the running loop between checks so a bot on it keeps working."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.01)

    def _call_matcher(self, method: str, where: Callable[[JSON], bool] | None) -> Callable[[], JSON | None]:
        def first_match() -> JSON | None:
            for params in self.calls_to(method):
                if where is None or where(params):
                    return params
            return None

        return first_match

    def wait_for_call(self, method: str, where: Callable[[JSON], bool] | None = None, timeout: float = 5.0) -> JSON:
        found = self.wait_for(self._call_matcher(method, where), timeout, f"a call to {method}")
        assert found is not None
        return found

    async def wait_for_call_async(
        self,
        method: str,
        where: Callable[[JSON], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> JSON:
        found = await self.wait_for_async(self._call_matcher(method, where), timeout, f"a call to {method}")
        assert found is not None
        return found

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        method: str,
        status: int = 429,
        retry_after: int | None = 1,
        *,
        times: int = 1,
        error: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next `times` calls to `method` ("*": any) with an HTTP error; they change nothing.

        429 carries `Retry-After` and {"ok": false, "error": "ratelimited"}; 5xx carry internal_error /
        service_unavailable; status 200 with `error=` is an ordinary API error (ok: false).
        """
        with self._cond:
            self._faults.setdefault(method, deque()).append(
                Fault(status=status, retry_after=retry_after, error=error, delay=delay, times=times)
            )

    def slow_next(self, method: str, delay: float, *, times: int = 1) -> None:
        """Apply the next call(s) at once but answer `delay` seconds later (a client timeout look-alike)."""
        with self._cond:
            self._faults.setdefault(method, deque()).append(
                Fault(status=200, retry_after=None, error=None, delay=delay, times=times)
            )

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def _take_fault_locked(self, method: str) -> Fault | None:
        for key in (method, "*"):
            queue = self._faults.get(key)
            if queue:
                fault = queue[0]
                fault.times -= 1
                if fault.times <= 0:
                    queue.popleft()
                return fault
        return None

    # ------------------------------------------------------------------ response_url

    def response_url(
        self,
        name: str | None = None,
        *,
        channel: str | None = None,
        user: str | None = None,
        message_ts: str | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """A response_url served by the fake; channel/user/message_ts say what respond() acts on."""
        with self._cond:
            key = name if name is not None else f"r{next(self._ids)}"
            self._response_targets[key] = _ResponseTarget(key, channel, user, message_ts, thread_ts)
            return f"{self.base_url}/respond/{urllib.parse.quote(key, safe='')}"

    def responses_to(self, name: str) -> list[JSON]:
        return [r.body for r in self.responses if r.name == name]

    async def _handle_respond(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
        with self._cond:
            target = self._response_targets.get(name)
            if target is None:
                # Status and error for an unknown url are this fake's choice.
                return web.json_response({"ok": False, "error": "invalid_url"}, status=404)
            self._responses.append(ResponsePost(name, copy.deepcopy(body)))
            target.uses += 1
            if target.uses > RESPONSE_URL_MAX_USES:
                self._cond.notify_all()
                return web.json_response({"ok": False, "error": "used_url"}, status=404)
            try:
                self._apply_response_locked(target, body)
            except _ApiError as exc:
                return web.json_response({"ok": False, "error": exc.error}, status=400)
            finally:
                self._cond.notify_all()
        return web.json_response({"ok": True})

    def _apply_response_locked(self, target: _ResponseTarget, body: JSON) -> None:
        original = None
        if target.channel and target.message_ts:
            original = self._messages.get(target.channel, {}).get(target.message_ts)
        if _as_bool(body.get("delete_original")) and original is not None and target.channel:
            del self._messages[target.channel][original["ts"]]
            self._deleted.append((target.channel, original))
            return
        if _as_bool(body.get("replace_original")) and original is not None:
            original["text"] = body.get("text", "")
            self._set_blocks(original, body.get("blocks"), replace=True)
            return
        if target.channel is None:
            return
        thread_ts = body.get("thread_ts") or target.thread_ts
        if body.get("response_type") == "in_channel":
            self._store_bot_message_locked(target.channel, body.get("text", ""), body.get("blocks"), thread_ts)
        else:
            self._ephemerals.append(
                {
                    "channel": target.channel,
                    "user": target.user,
                    "text": body.get("text", ""),
                    "blocks": copy.deepcopy(body.get("blocks")),
                    "thread_ts": thread_ts,
                    "message_ts": self.next_ts(),
                    "via": "response_url",
                }
            )

    # ------------------------------------------------------------------ HTTP plumbing

    async def _read_params(self, request: web.Request) -> tuple[JSON, str | None]:
        """Merge query string and body the way Slack does and pull out the token.

        slack_sdk sends some methods as JSON (chat.*, views.publish) and others as query-string
        parameters even on POST (auth.test, conversations.open...): both must work.
        """
        params: JSON = dict(request.query)
        token: str | None = params.pop("token", None)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except json.JSONDecodeError as exc:
                    raise _ApiError("invalid_json") from exc
                if not isinstance(body, dict):
                    raise _ApiError("invalid_json")
                # Slack ignores a token inside a JSON body: JSON callers must use the header.
                body.pop("token", None)
                params.update(body)
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, str):
                        params[key] = value
                form_token = params.pop("token", None)
                token = token or form_token
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ").strip()
        for key, error in (
            ("blocks", "invalid_blocks_format"),
            ("attachments", "invalid_attachments"),
            ("view", "invalid_arguments"),
            ("metadata", "invalid_metadata_format"),
        ):
            if key in params:
                params[key] = _maybe_json(params[key], error)
        return params, token

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        try:
            params, token = await self._read_params(request)
        except _ApiError as exc:
            return web.json_response({"ok": False, "error": exc.error})
        with self._cond:
            self._calls.append(Call(method, copy.deepcopy(params), time.monotonic()))
            fault = self._take_fault_locked(method)
            answer: JSON
            if fault is not None and not fault.applies_call:
                status, headers, answer = self._fault_answer(fault)
                self._faults_served.append((method, status, str(answer["error"])))
            else:
                # Applied before any delay: a slow reply still changes the world immediately.
                try:
                    status, headers, answer = 200, {}, self._dispatch_locked(method, params, token)
                    if answer.get("ok"):
                        headers["x-oauth-scopes"] = ",".join(self.scopes)
                except Exception as exc:
                    # A bug in the fake must not pass for a Slack outage: record it for `errors`.
                    self._errors.append(f"{method}: {exc!r}")
                    status, headers, answer = 500, {}, {"ok": False, "error": "fake_slack_bug", "detail": repr(exc)}
            self._cond.notify_all()
        if fault is not None and fault.delay > 0:
            await asyncio.sleep(fault.delay)
        return web.json_response(answer, status=status, headers=headers)

    @staticmethod
    def _fault_answer(fault: Fault) -> tuple[int, dict[str, str], JSON]:
        headers: dict[str, str] = {}
        if fault.status == 429:
            error = fault.error or "ratelimited"
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
        elif fault.status >= 500:
            error = fault.error or ("service_unavailable" if fault.status == 503 else "internal_error")
        else:
            error = fault.error or "fatal_error"
        return fault.status, headers, {"ok": False, "error": error}

    def _dispatch_locked(self, method: str, params: JSON, token: str | None) -> JSON:
        handler = self._methods.get(method)
        if handler is None:
            # Slack answers unknown methods with HTTP 200 and ok: false.
            return {"ok": False, "error": "unknown_method", "req_method": method}
        if method == "apps.connections.open":
            if not token:
                return {"ok": False, "error": "not_authed"}
            if token not in self._app_tokens:
                # A bot token is the wrong kind here; anything else is simply invalid.
                return {"ok": False, "error": "not_allowed_token_type" if token in self._tokens else "invalid_auth"}
        elif method != "api.test":
            if not token:
                return {"ok": False, "error": "not_authed"}
            if token in self._app_tokens:
                return {"ok": False, "error": "not_allowed_token_type"}
            if token not in self._tokens:
                return {"ok": False, "error": "invalid_auth"}
        try:
            return {"ok": True, **handler(params, token or "")}
        except _ApiError as exc:
            return {"ok": False, "error": exc.error, **exc.extra}

    # ------------------------------------------------------------------ world helpers (lock held)

    def _channel_locked(self, params: JSON, key: str = "channel") -> str:
        channel = str(params.get(key) or "")
        if channel[:1] in {"U", "W"} and channel in self._users:
            # Posting to a user id with a bot token lands in the bot's DM with that user.
            return self._dm_locked(channel)[0]
        if channel not in self._channels:
            raise _ApiError("channel_not_found")
        return channel

    def _message_locked(self, channel: str, ts: str | None) -> JSON:
        message = self._messages.get(channel, {}).get(ts or "")
        if message is None:
            raise _ApiError("message_not_found")
        return message

    def _thread_root_locked(self, channel: str, ts: str) -> str:
        # A reply's ts stands for its thread, as in conversations.replies and chat.postMessage.
        message = self._messages.get(channel, {}).get(ts)
        if message is not None and message.get("thread_ts"):
            return str(message["thread_ts"])
        return ts

    def _render_locked(self, channel: str, message: JSON) -> JSON:
        """A stored message as the API shows it, with the thread fields Slack derives."""
        out = copy.deepcopy(message)
        store = self._messages.get(channel, {})
        ts = out["ts"]
        if out.get("thread_ts") and out["thread_ts"] != ts:
            parent = store.get(out["thread_ts"])
            if parent is not None and parent.get("user"):
                out["parent_user_id"] = parent["user"]
        else:
            replies = sorted(
                (m for m in store.values() if m.get("thread_ts") == ts and m["ts"] != ts),
                key=_ts_key,
            )
            if replies:
                users = list(dict.fromkeys(str(m.get("user") or m.get("bot_id")) for m in replies))
                out.update(
                    thread_ts=ts,
                    reply_count=len(replies),
                    reply_users=users,
                    reply_users_count=len(users),
                    latest_reply=replies[-1]["ts"],
                )
        return out

    def _set_blocks(self, message: JSON, blocks: Any, *, replace: bool) -> None:
        if blocks is None:
            if replace:
                message.pop("blocks", None)
            return
        message["blocks"] = self._validated_blocks(blocks)

    @staticmethod
    def _validated_blocks(blocks: Any) -> list[JSON]:
        if not isinstance(blocks, list) or not all(isinstance(b, dict) and "type" in b for b in blocks):
            raise _ApiError("invalid_blocks")
        if len(blocks) > MAX_BLOCKS:
            raise _ApiError("invalid_blocks", errors=[f"must be less than {MAX_BLOCKS + 1} items"])
        out = copy.deepcopy(blocks)
        markdown_total = 0
        for block in out:
            text = block.get("text")
            too_long = isinstance(text, dict) and len(str(text.get("text", ""))) > MAX_SECTION_TEXT
            if block["type"] == "section" and too_long:
                raise _ApiError("invalid_blocks", errors=[f"must be less than {MAX_SECTION_TEXT + 1} chars"])
            if block["type"] == "markdown":
                if not isinstance(text, str) or not text:
                    raise _ApiError("invalid_blocks", errors=["markdown block needs text"])
                markdown_total += len(text)
                if markdown_total > MAX_MARKDOWN:
                    raise _ApiError("invalid_blocks", errors=[f"markdown must be less than {MAX_MARKDOWN + 1} chars"])
            if block["type"] == "context_actions":
                FakeSlack._check_context_actions(block)
            # Slack gives every stored block a block_id; action payloads carry it back.
            block.setdefault("block_id", _random_id())
        return out

    @staticmethod
    def _check_context_actions(block: JSON) -> None:
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ACTIONS:
            raise _ApiError("invalid_blocks", errors=["context_actions needs 1 to 5 elements"])
        for element in elements:
            if not isinstance(element, dict) or element.get("type") not in ("feedback_buttons", "icon_button"):
                raise _ApiError("invalid_blocks", errors=["context_actions takes feedback_buttons or icon_button"])
            if element["type"] != "feedback_buttons":
                continue
            if not element.get("action_id"):
                raise _ApiError("invalid_blocks", errors=["feedback_buttons needs an action_id"])
            for side in ("positive_button", "negative_button"):
                button = element.get(side)
                text = button.get("text") if isinstance(button, dict) else None
                if not isinstance(button, dict) or not isinstance(text, dict) or text.get("type") != "plain_text":
                    raise _ApiError("invalid_blocks", errors=[f"{side} needs plain_text text"])
                if not text.get("text") or len(str(text["text"])) > MAX_FEEDBACK_TEXT:
                    raise _ApiError("invalid_blocks", errors=[f"{side} text must be 1 to {MAX_FEEDBACK_TEXT} chars"])
                value = button.get("value")
                if not isinstance(value, str) or not value or len(value) > MAX_FEEDBACK_VALUE:
                    raise _ApiError("invalid_blocks", errors=[f"{side} value must be 1 to {MAX_FEEDBACK_VALUE} chars"])

    def _store_bot_message_locked(
        self,
        channel: str,
        text: Any,
        blocks: Any,
        thread_ts: Any,
        extra: JSON | None = None,
    ) -> JSON:
        ts = self.next_ts()
        message: JSON = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": str(text or "")[:MAX_TEXT],
            "ts": ts,
            "team": self.team_id,
            "bot_profile": {
                "id": self.bot_id,
                "app_id": self.app_id,
                "name": BOT_NAME,
                "deleted": False,
                "team_id": self.team_id,
            },
            **(extra or {}),
        }
        if blocks is not None:
            message["blocks"] = self._validated_blocks(blocks)
        if thread_ts:
            message["thread_ts"] = self._thread_root_locked(channel, str(thread_ts))
        self._messages.setdefault(channel, {})[ts] = message
        return message

    @staticmethod
    def _require_content(params: JSON) -> None:
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise _ApiError("no_text")

    # ------------------------------------------------------------------ API methods (lock held)

    def _api_test(self, params: JSON, token: str) -> JSON:
        return {"args": params}

    def _auth_test(self, params: JSON, token: str) -> JSON:
        user_id = self._tokens[token]
        out: JSON = {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": TEAM_NAME,
            "user": self._users.get(user_id, {}).get("name", user_id),
            "team_id": self.team_id,
            "user_id": user_id,
            "is_enterprise_install": False,
        }
        if user_id == self.bot_user_id:
            out["bot_id"] = self.bot_id
        return out

    def _bots_info(self, params: JSON, token: str) -> JSON:
        # Slack answers bot_not_found for an id it does not know; ours is the only bot in the workspace.
        if params.get("bot") != self.bot_id:
            raise _ApiError("bot_not_found")
        return {
            "bot": {
                "id": self.bot_id,
                "deleted": False,
                "name": BOT_NAME,
                "app_id": self.app_id,
                "user_id": self.bot_user_id,
                "icons": {},
            }
        }

    def _chat_post_message(self, params: JSON, token: str) -> JSON:
        channel = self._channel_locked(params)
        self._require_content(params)
        extra: JSON = {}
        if params.get("attachments"):
            extra["attachments"] = params["attachments"]
        if params.get("metadata"):
            extra["metadata"] = params["metadata"]
        if params.get("thread_ts") and _as_bool(params.get("reply_broadcast")):
            extra["subtype"] = "thread_broadcast"
        message = self._store_bot_message_locked(
            channel, params.get("text"), params.get("blocks"), params.get("thread_ts"), extra
        )
        return {"channel": channel, "ts": message["ts"], "message": self._render_locked(channel, message)}

    def _chat_update(self, params: JSON, token: str) -> JSON:
        channel = self._channel_locked(params)
        message = self._message_locked(channel, params.get("ts"))
        if message.get("user") != self._tokens[token]:
            raise _ApiError("cant_update_message")
        self._require_content(params)
        if "text" in params:
            message["text"] = str(params["text"] or "")[:MAX_TEXT]
        # chat.update keeps the previous blocks/attachments unless the call sends the field.
        if "blocks" in params:
            message["blocks"] = self._validated_blocks(params["blocks"] or [])
            if not message["blocks"]:
                del message["blocks"]
        if "attachments" in params:
            message["attachments"] = params["attachments"]
        # Slack records a bot's edit under its bot id, not its user id.
        message["edited"] = {"user": self.bot_id, "ts": self.next_ts()}
        rendered = self._render_locked(channel, message)
        return {"channel": channel, "ts": message["ts"], "text": message["text"], "message": rendered}

    def _chat_post_ephemeral(self, params: JSON, token: str) -> JSON:
        channel = self._channel_locked(params)
        user = str(params.get("user") or "")
        if user not in self._users:
            raise _ApiError("user_not_found")
        self._require_content(params)
        message_ts = self.next_ts()
        blocks = params.get("blocks")
        self._ephemerals.append(
            {
                "channel": channel,
                "user": user,
                "text": params.get("text", ""),
                "blocks": self._validated_blocks(blocks) if blocks is not None else None,
                "thread_ts": params.get("thread_ts"),
                "message_ts": message_ts,
                "via": "chat.postEphemeral",
            }
        )
        return {"message_ts": message_ts}

    def _chat_delete(self, params: JSON, token: str) -> JSON:
        channel = self._channel_locked(params)
        message = self._message_locked(channel, params.get("ts"))
        # With a bot token only the bot's own messages can be deleted.
        if message.get("user") != self._tokens[token]:
            raise _ApiError("cant_delete_message")
        del self._messages[channel][message["ts"]]
        self._deleted.append((channel, message))
        return {"channel": channel, "ts": message["ts"]}

    def _chat_get_permalink(self, params: JSON, token: str) -> JSON:
        channel = self._channel_locked(params)
        message = self._message_locked(channel, params.get("message_ts"))
        link = f"https://{self.team_domain}.slack.com/archives/{channel}/p{message['ts'].replace('.', '')}"
        thread_ts = message.get("thread_ts")
        if thread_ts and thread_ts != message["ts"]:
            link += f"?thread_ts={thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": link}

    def _conversations_replies(self, params: JSON, token: str) -> JSON:
        channel = self._channel_locked(params)
        ts = str(params.get("ts") or "")
        if ts not in self._messages[channel]:
            raise _ApiError("thread_not_found")
        root = self._thread_root_locked(channel, ts)
        thread = [m for m in self._messages[channel].values() if m["ts"] == root or m.get("thread_ts") == root]
        thread.sort(key=_ts_key)
        # Cursor pagination like Slack's (an opaque base64 "next_ts:<ts>"); the root leads every page.
        limit = int(params.get("limit") or 1000)
        start = 0
        cursor = params.get("cursor")
        if cursor:
            try:
                next_ts = base64.b64decode(str(cursor)).decode().removeprefix("next_ts:")
            except ValueError as exc:
                raise _ApiError("invalid_cursor") from exc
            start = next((i for i, m in enumerate(thread) if m["ts"] == next_ts), len(thread))
        page = thread[start : start + limit]
        out: JSON = {"messages": [self._render_locked(channel, m) for m in page], "has_more": False}
        if start + limit < len(thread):
            token_ts = thread[start + limit]["ts"]
            out["has_more"] = True
            out["response_metadata"] = {"next_cursor": base64.b64encode(f"next_ts:{token_ts}".encode()).decode()}
        return out

    def _conversations_info(self, params: JSON, token: str) -> JSON:
        return {"channel": copy.deepcopy(self._channels[self._channel_locked(params)])}

    def _conversations_open(self, params: JSON, token: str) -> JSON:
        if params.get("channel"):
            channel = self._channel_locked(params)
            return {"no_op": True, "already_open": True, "channel": copy.deepcopy(self._channels[channel])}
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if not users:
            raise _ApiError("users_list_not_supplied")
        if len(users) > 1:
            # Group DMs (mpim) are not modelled.
            raise _ApiError("not_supported_by_fake")
        if users[0] not in self._users:
            raise _ApiError("user_not_found")
        channel, existed = self._dm_locked(users[0])
        info = self._channels[channel] if _as_bool(params.get("return_im")) else {"id": channel}
        return {"no_op": existed, "already_open": existed, "channel": copy.deepcopy(info)}

    def _users_info(self, params: JSON, token: str) -> JSON:
        user = self._users.get(str(params.get("user") or ""))
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": copy.deepcopy(user)}

    def _usergroups_list(self, params: JSON, token: str) -> JSON:
        groups = []
        for group in self._usergroups.values():
            shown = copy.deepcopy(group)
            if not _as_bool(params.get("include_users")):
                shown.pop("users")
            groups.append(shown)
        return {"usergroups": groups}

    def _usergroups_users_list(self, params: JSON, token: str) -> JSON:
        group = self._usergroups.get(str(params.get("usergroup") or ""))
        if group is None:
            raise _ApiError("no_such_subteam")
        return {"users": list(group["users"])}

    # -- streaming (chat.startStream / appendStream / stopStream)

    @staticmethod
    def _stream_text(params: JSON) -> str | None:
        """The markdown a streaming call adds: `markdown_text` or the text of `markdown_text` chunks."""
        parts: list[str] = []
        text = params.get("markdown_text")
        if text is not None:
            if not isinstance(text, str):
                raise _ApiError("invalid_arguments")
            if len(text) > MAX_MARKDOWN:
                raise _ApiError("msg_too_long")
            parts.append(text)
        chunks = _maybe_json(params.get("chunks"), "invalid_chunks")
        if chunks is not None:
            if not isinstance(chunks, list):
                raise _ApiError("invalid_chunks")
            for chunk in chunks:
                if not isinstance(chunk, dict) or chunk.get("type") not in CHUNK_TYPES:
                    raise _ApiError("invalid_chunks")
                if chunk["type"] == "markdown_text":
                    piece = chunk.get("text")
                    if not isinstance(piece, str) or len(piece) > MAX_MARKDOWN:
                        raise _ApiError("invalid_chunks")
                    parts.append(piece)
        if text is None and chunks is None:
            return None
        return "".join(parts)

    def _streaming_message_locked(self, params: JSON, token: str) -> tuple[str, JSON]:
        channel = self._channel_locked(params)
        message = self._message_locked(channel, params.get("ts"))
        if message.get("user") != self._tokens[token]:
            raise _ApiError("cant_update_message")
        if (channel, message["ts"]) not in self._streaming:
            raise _ApiError("message_not_in_streaming_state")
        return channel, message

    def _append_markdown(self, message: JSON, text: str) -> None:
        body = str(message.get("text") or "") + text
        message["text"] = body[:MAX_TEXT]
        tail = [b for b in message.get("blocks", []) if b.get("type") != "markdown"]
        message["blocks"] = ([{"type": "markdown", "text": body, "block_id": _random_id()}] if body else []) + tail

    def _chat_start_stream(self, params: JSON, token: str) -> JSON:
        channel = self._channel_locked(params)
        thread_ts = str(params.get("thread_ts") or "")
        if not thread_ts:
            raise _ApiError("invalid_arguments")
        if self.streaming_error is not None:
            raise _ApiError(self.streaming_error)
        if thread_ts not in self._messages.get(channel, {}):
            raise _ApiError("thread_not_found")
        if not self._channels[channel]["is_im"]:
            # Outside DMs Slack must know who the stream is for.
            if not params.get("recipient_team_id"):
                raise _ApiError("missing_recipient_team_id")
            if not params.get("recipient_user_id"):
                raise _ApiError("missing_recipient_user_id")
        if params.get("recipient_team_id") not in (None, self.team_id):
            raise _ApiError("invalid_recipient_team_id")
        user = params.get("recipient_user_id")
        if user is not None and user not in self._users:
            raise _ApiError("user_not_found")
        text = self._stream_text(params) or ""
        message = self._store_bot_message_locked(channel, "", None, thread_ts)
        self._append_markdown(message, text)
        self._streaming.add((channel, message["ts"]))
        return {"channel": channel, "ts": message["ts"]}

    def _chat_append_stream(self, params: JSON, token: str) -> JSON:
        channel, message = self._streaming_message_locked(params, token)
        text = self._stream_text(params)
        if text is None:
            raise _ApiError("invalid_arguments")
        self._append_markdown(message, text)
        return {"channel": channel, "ts": message["ts"]}

    def _chat_stop_stream(self, params: JSON, token: str) -> JSON:
        channel, message = self._streaming_message_locked(params, token)
        text = self._stream_text(params)
        blocks = params.get("blocks")
        checked = self._validated_blocks(blocks) if blocks is not None else []
        if text:
            self._append_markdown(message, text)
        if checked:
            markdown = [b for b in message.get("blocks", []) if b.get("type") == "markdown"]
            # Together with the streamed text the message must stay within the markdown limit.
            self._validated_blocks([*markdown, *checked])
            message["blocks"] = [*message.get("blocks", []), *checked]
        self._streaming.discard((channel, message["ts"]))
        return {"channel": channel, "ts": message["ts"], "message": self._render_locked(channel, message)}

    # -- the assistant container

    def _assistant_thread_locked(self, params: JSON) -> JSON:
        channel = self._channel_locked(params, "channel_id")
        thread = self._assistant_threads.get((channel, str(params.get("thread_ts") or "")))
        if thread is None:
            raise _ApiError("invalid_thread_ts")
        return thread

    def _assistant_set_status(self, params: JSON, token: str) -> JSON:
        thread = self._assistant_thread_locked(params)
        status = params.get("status")
        if not isinstance(status, str):
            raise _ApiError("invalid_arguments")
        thread["status"] = status
        thread["statuses"].append(status)
        return {}

    def _assistant_set_prompts(self, params: JSON, token: str) -> JSON:
        thread = self._assistant_thread_locked(params)
        prompts = params.get("prompts")
        valid = isinstance(prompts, list) and 1 <= len(prompts) <= MAX_SUGGESTED_PROMPTS
        if not valid or not all(isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts or []):
            raise _ApiError("invalid_arguments")
        thread["prompts"] = {"title": params.get("title"), "prompts": copy.deepcopy(prompts)}
        return {}

    def _assistant_set_title(self, params: JSON, token: str) -> JSON:
        thread = self._assistant_thread_locked(params)
        title = params.get("title")
        if not isinstance(title, str) or not title:
            raise _ApiError("invalid_arguments")
        thread["title"] = title
        return {}

    def _apps_connections_open(self, params: JSON, token: str) -> JSON:
        if self.socket_url is None:
            raise _ApiError("not_allowed")
        return {"url": self.socket_url()}

    def _views_publish(self, params: JSON, token: str) -> JSON:
        user_id = str(params.get("user_id") or "")
        view = params.get("view")
        if not user_id or not isinstance(view, dict):
            raise _ApiError("invalid_arguments")
        if user_id not in self._users:
            raise _ApiError("user_not_found")
        if view.get("type") != "home":
            raise _ApiError("invalid_arguments")
        stored: JSON = {
            "id": f"V{next(self._ids):08d}",
            "team_id": self.team_id,
            "type": "home",
            "blocks": self._validated_blocks(view.get("blocks", [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": _random_id(12),
            "title": view.get("title"),
            "close": None,
            "submit": None,
            "previous_view_id": None,
            "root_view_id": None,
            "app_id": self.app_id,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self._views[user_id] = stored
        return {"view": copy.deepcopy(stored)}


# ====================================================================== driver


class SendOptions(TypedDict, total=False):
    """How to deliver: signing faults and Slack's retry headers."""

    forge: bool  # sign with a wrong secret
    secret: str  # sign with this secret instead
    stale: bool  # timestamp ten minutes old (Bolt rejects anything > 5 min off)
    timestamp: int  # explicit X-Slack-Request-Timestamp
    retry_num: int  # X-Slack-Retry-Num, as on Slack's redeliveries
    retry_reason: str  # X-Slack-Retry-Reason (default http_timeout when retry_num is set)
    headers: Mapping[str, str]


@dataclass(frozen=True)
class DriverReply:
    """The bot's HTTP answer, plus what was sent so it can be delivered again."""

    status: int
    body: str
    headers: Mapping[str, str]
    payload: JSON
    kind: str  # "event", "command" or "interaction"
    sent_headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class SlackDriver:
    """Plays Slack towards a bot's request URL: signed events, slash commands and button clicks.

    With `fake=`, messages users "post" are also stored in the fake (so conversations.replies sees
    them), ts values come from the fake's clock, and response_urls point at the fake.
    """

    USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"

    def __init__(
        self,
        signing_secret: str,
        url: str,
        *,
        fake: FakeSlack | None = None,
        verification_token: str = "fake-verification-token",
        api_app_id: str = APP_ID,
        timeout: float = 10.0,
    ) -> None:
        self.signing_secret = signing_secret
        self.url = url
        self.fake = fake
        self.verification_token = verification_token
        self.api_app_id = fake.app_id if fake is not None else api_app_id
        self.team_id = fake.team_id if fake is not None else TEAM_ID
        self.team_domain = fake.team_domain if fake is not None else TEAM_DOMAIN
        self.bot_user_id = fake.bot_user_id if fake is not None else BOT_USER_ID
        self.timeout = timeout
        self._clock = _TsClock()

    # ------------------------------------------------------------------ signing and transport

    def next_ts(self) -> str:
        return self.fake.next_ts() if self.fake is not None else self._clock.next()

    def sign(self, body: str, timestamp: int, secret: str | None = None) -> str:
        base = f"v0:{timestamp}:{body}".encode()
        digest = hmac.new((secret or self.signing_secret).encode(), base, hashlib.sha256).hexdigest()
        return f"v0={digest}"

    def signed_headers(self, body: str, content_type: str = "application/json") -> dict[str, str]:
        """Headers for a body signed now, for callers that send it themselves (the benchmark)."""
        return self._headers(body, content_type, {})

    def _headers(self, body: str, content_type: str, opts: SendOptions) -> dict[str, str]:
        timestamp = opts.get("timestamp", int(time.time()) - (600 if opts.get("stale") else 0))
        secret = opts.get("secret")
        if secret is None and opts.get("forge"):
            secret = self.signing_secret + "-forged"
        headers = {
            "Content-Type": content_type,
            "User-Agent": self.USER_AGENT,
            "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": self.sign(body, timestamp, secret),
        }
        if "retry_num" in opts:
            headers["X-Slack-Retry-Num"] = str(opts["retry_num"])
            headers["X-Slack-Retry-Reason"] = opts.get("retry_reason", "http_timeout")
        headers.update(opts.get("headers", {}))
        return headers

    @staticmethod
    def _encode(kind: str, payload: JSON) -> tuple[str, str]:
        if kind == "event":
            return json.dumps(payload), "application/json"
        if kind == "command":
            return urllib.parse.urlencode(payload), "application/x-www-form-urlencoded"
        # Interactivity: one form field `payload` holding the JSON.
        return urllib.parse.urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"

    async def _send(self, kind: str, payload: JSON, opts: SendOptions) -> DriverReply:
        body, content_type = self._encode(kind, payload)
        headers = self._headers(body, content_type, opts)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(self.url, data=body.encode(), headers=headers) as resp,
        ):
            text = await resp.text()
            return DriverReply(resp.status, text, dict(resp.headers), payload, kind, headers)

    def _send_sync(self, kind: str, payload: JSON, opts: SendOptions) -> DriverReply:
        body, content_type = self._encode(kind, payload)
        headers = self._headers(body, content_type, opts)
        request = urllib.request.Request(self.url, data=body.encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                text = resp.read().decode()
                return DriverReply(resp.status, text, dict(resp.headers.items()), payload, kind, headers)
        except urllib.error.HTTPError as err:
            text = err.read().decode()
            return DriverReply(err.code, text, dict(err.headers.items()), payload, kind, headers)

    async def send_event(self, envelope: JSON, **opts: Unpack[SendOptions]) -> DriverReply:
        return await self._send("event", envelope, opts)

    async def send_command(self, form: JSON, **opts: Unpack[SendOptions]) -> DriverReply:
        return await self._send("command", form, opts)

    async def send_interaction(self, payload: JSON, **opts: Unpack[SendOptions]) -> DriverReply:
        return await self._send("interaction", payload, opts)

    async def resend(self, reply: DriverReply, **opts: Unpack[SendOptions]) -> DriverReply:
        """Deliver the same payload again (same event_id), freshly signed, with Slack's retry headers
        (X-Slack-Retry-Num: 1, X-Slack-Retry-Reason: http_timeout unless opts say otherwise)."""
        opts.setdefault("retry_num", 1)
        return await self._send(reply.kind, reply.payload, opts)

    def send_event_sync(self, envelope: JSON, **opts: Unpack[SendOptions]) -> DriverReply:
        return self._send_sync("event", envelope, opts)

    def send_command_sync(self, form: JSON, **opts: Unpack[SendOptions]) -> DriverReply:
        return self._send_sync("command", form, opts)

    def send_interaction_sync(self, payload: JSON, **opts: Unpack[SendOptions]) -> DriverReply:
        return self._send_sync("interaction", payload, opts)

    def resend_sync(self, reply: DriverReply, **opts: Unpack[SendOptions]) -> DriverReply:
        opts.setdefault("retry_num", 1)
        return self._send_sync(reply.kind, reply.payload, opts)

    # ------------------------------------------------------------------ Events API builders

    def envelope(self, event: JSON, event_id: str | None = None) -> JSON:
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{_random_id(24)}",
        }

    def _channel_type(self, channel: str) -> str:
        if self.fake is not None:
            return self.fake.channel_type(channel)
        return "im" if channel.startswith("D") else "channel"

    def _parent_user(self, channel: str, thread_ts: str | None) -> str | None:
        if thread_ts is None or self.fake is None:
            return None
        parent = self.fake.message(channel, thread_ts)
        return None if parent is None else parent.get("user")

    def _user_message(self, channel: str, user: str, text: str, ts: str | None, thread_ts: str | None) -> JSON:
        """The message as stored; events are views of it."""
        message: JSON = {
            "user": user,
            "type": "message",
            "ts": ts or self.next_ts(),
            "client_msg_id": str(uuid.uuid4()),
            "text": text,
            "team": self.team_id,
            "blocks": rich_text_blocks(text),
        }
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
            parent_user = self._parent_user(channel, thread_ts)
            if parent_user is not None:
                message["parent_user_id"] = parent_user
        return message

    def _mention_text(self, text: str) -> str:
        mention = f"<@{self.bot_user_id}>"
        return text if mention in text else f"{mention} {text}"

    def build_message(
        self,
        channel: str,
        user: str,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        *,
        channel_type: str | None = None,
    ) -> JSON:
        message = self._user_message(channel, user, text, ts, thread_ts)
        event = {
            **message,
            "channel": channel,
            "event_ts": message["ts"],
            "channel_type": channel_type or self._channel_type(channel),
        }
        return self.envelope(event)

    def build_app_mention(
        self, channel: str, user: str, text: str, ts: str | None = None, thread_ts: str | None = None
    ) -> JSON:
        message = self._user_message(channel, user, self._mention_text(text), ts, thread_ts)
        return self.envelope(self._mention_event(channel, message))

    @staticmethod
    def _mention_event(channel: str, message: JSON) -> JSON:
        # app_mention carries the message's fields but type app_mention and no channel_type.
        return {**message, "type": "app_mention", "channel": channel, "event_ts": message["ts"]}

    def build_message_changed(
        self,
        channel: str,
        user: str,
        new_text: str,
        ts: str,
        thread_ts: str | None = None,
        *,
        previous_text: str | None = None,
    ) -> JSON:
        stored = self.fake.message(channel, ts) if self.fake is not None else None
        previous: JSON
        if stored is not None:
            previous = stored
            thread_ts = thread_ts or stored.get("thread_ts")
        else:
            previous = self._user_message(channel, user, previous_text or "", ts, thread_ts)
        if previous_text is not None:
            previous["text"] = previous_text
            previous["blocks"] = rich_text_blocks(previous_text)
        edit_ts = self.next_ts()
        changed = {
            **previous,
            "text": new_text,
            "blocks": rich_text_blocks(new_text),
            "edited": {"user": user, "ts": edit_ts},
        }
        if thread_ts is not None and thread_ts != ts:
            changed["thread_ts"] = previous["thread_ts"] = thread_ts
        # The edit's own ts is new; the edited message keeps its ts. No top-level thread_ts.
        event = {
            "type": "message",
            "subtype": "message_changed",
            "message": changed,
            "previous_message": previous,
            "channel": channel,
            "hidden": True,
            "ts": edit_ts,
            "event_ts": edit_ts,
            "channel_type": self._channel_type(channel),
        }
        return self.envelope(event)

    def build_bot_message(
        self,
        channel: str,
        text: str,
        *,
        bot_id: str = "B0OTHER",
        user: str | None = None,
        ts: str | None = None,
        thread_ts: str | None = None,
        legacy: bool | None = None,
    ) -> JSON:
        """Another app's message. Legacy integrations send subtype bot_message and no user; apps posting
        with a bot token send user + bot_id and no subtype (legacy defaults to `user is None`)."""
        ts = ts or self.next_ts()
        event: JSON = {"type": "message", "text": text, "ts": ts, "bot_id": bot_id}
        if legacy if legacy is not None else user is None:
            event.update(subtype="bot_message", username=f"bot-{bot_id.lower()}", icons={})
        else:
            event.update(
                user=user,
                app_id=f"A{bot_id[1:]}",
                team=self.team_id,
                bot_profile={"id": bot_id, "app_id": f"A{bot_id[1:]}", "name": bot_id.lower(), "deleted": False},
            )
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        event.update(channel=channel, event_ts=ts, channel_type=self._channel_type(channel))
        return self.envelope(event)

    def build_app_home_opened(self, user: str, view: JSON | None = None) -> JSON:
        channel = self.fake.dm_channel(user) if self.fake is not None else f"D{user[1:]}"
        if view is None and self.fake is not None:
            view = self.fake.views.get(user)
        event: JSON = {"type": "app_home_opened", "user": user, "channel": channel, "tab": "home"}
        event["event_ts"] = self.next_ts()
        if view is not None:
            event["view"] = view
        return self.envelope(event)

    def build_assistant_thread_started(self, user: str, channel: str, thread_ts: str) -> JSON:
        """What Slack sends when `user` opens the app from the top bar (the thread exists in the fake)."""
        event: JSON = {
            "type": "assistant_thread_started",
            "assistant_thread": {
                "user_id": user,
                "context": {"channel_id": None, "team_id": self.team_id, "enterprise_id": None},
                "channel_id": channel,
                "thread_ts": thread_ts,
            },
            "event_ts": self.next_ts(),
        }
        return self.envelope(event)

    def build_url_verification(self, challenge: str = "fake-challenge") -> JSON:
        return {"token": self.verification_token, "challenge": challenge, "type": "url_verification"}

    # ------------------------------------------------------------------ event helpers (async)

    def _record(self, channel: str, envelope: JSON) -> None:
        if self.fake is not None:
            event = envelope["event"]
            if event.get("bot_id") == self.fake.bot_id:
                # The bot's own message is stored by the chat.postMessage that made it; an echo of it
                # (or a synthetic one) must not add a message the bot never posted.
                return
            self.fake.record_message(channel, {k: v for k, v in event.items() if k != "type"} | {"type": "message"})

    async def message(
        self,
        channel: str,
        user: str,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        *,
        channel_type: str | None = None,
        **opts: Unpack[SendOptions],
    ) -> DriverReply:
        envelope = self.build_message(channel, user, text, ts, thread_ts, channel_type=channel_type)
        self._record(channel, envelope)
        return await self.send_event(envelope, **opts)

    async def app_mention(
        self,
        channel: str,
        user: str,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        **opts: Unpack[SendOptions],
    ) -> DriverReply:
        envelope = self.build_app_mention(channel, user, text, ts, thread_ts)
        self._record(channel, envelope)
        return await self.send_event(envelope, **opts)

    def build_mention_pair(
        self,
        channel: str,
        user: str,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        *,
        channel_type: str | None = None,
    ) -> dict[str, JSON]:
        """One mention as Slack delivers it: an app_mention and a message event for the same message
        (same ts and client_msg_id, different event_ids). In a DM there is no app_mention."""
        message = self._user_message(channel, user, self._mention_text(text), ts, thread_ts)
        kind = channel_type or self._channel_type(channel)
        pair = {
            "message": self.envelope({**message, "channel": channel, "event_ts": message["ts"], "channel_type": kind})
        }
        if kind != "im":
            pair["app_mention"] = self.envelope(self._mention_event(channel, message))
        return pair

    async def post_mention(
        self,
        channel: str,
        user: str,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        *,
        order: Sequence[str] = ("app_mention", "message"),
        concurrent: bool = False,
        **opts: Unpack[SendOptions],
    ) -> list[DriverReply]:
        """Send both events of a mention, in `order` (or at the same time with concurrent=True)."""
        pair = self.build_mention_pair(channel, user, text, ts, thread_ts)
        self._record(channel, pair["message"])
        envelopes = [pair[name] for name in order if name in pair]
        if concurrent:
            return list(await asyncio.gather(*(self.send_event(e, **opts) for e in envelopes)))
        return [await self.send_event(e, **opts) for e in envelopes]

    async def message_changed(
        self,
        channel: str,
        user: str,
        new_text: str,
        ts: str,
        thread_ts: str | None = None,
        *,
        previous_text: str | None = None,
        **opts: Unpack[SendOptions],
    ) -> DriverReply:
        envelope = self.build_message_changed(channel, user, new_text, ts, thread_ts, previous_text=previous_text)
        if self.fake is not None and self.fake.message(channel, ts) is not None:
            edited = envelope["event"]["message"]["edited"]
            self.fake.edit_message(channel, ts, new_text, editor=user, edited_ts=edited["ts"])
        return await self.send_event(envelope, **opts)

    async def bot_message(
        self,
        channel: str,
        text: str,
        *,
        bot_id: str = "B0OTHER",
        user: str | None = None,
        ts: str | None = None,
        thread_ts: str | None = None,
        legacy: bool | None = None,
        **opts: Unpack[SendOptions],
    ) -> DriverReply:
        envelope = self.build_bot_message(
            channel, text, bot_id=bot_id, user=user, ts=ts, thread_ts=thread_ts, legacy=legacy
        )
        self._record(channel, envelope)
        return await self.send_event(envelope, **opts)

    async def assistant_thread_started(self, user: str, **opts: Unpack[SendOptions]) -> tuple[str, str, DriverReply]:
        """The user opens a new assistant thread; returns (DM channel, thread_ts, the bot's HTTP answer)."""
        if self.fake is None:
            raise RuntimeError("assistant threads need the fake workspace")
        channel, thread_ts = self.fake.open_assistant_thread(user)
        sent = await self.send_event(self.build_assistant_thread_started(user, channel, thread_ts), **opts)
        return channel, thread_ts, sent

    async def app_home_opened(self, user: str, **opts: Unpack[SendOptions]) -> DriverReply:
        return await self.send_event(self.build_app_home_opened(user), **opts)

    async def url_verification(self, challenge: str = "fake-challenge", **opts: Unpack[SendOptions]) -> DriverReply:
        return await self.send_event(self.build_url_verification(challenge), **opts)

    # ------------------------------------------------------------------ slash commands

    def build_command(
        self,
        text: str = "",
        *,
        user: str,
        channel: str,
        command: str = "/lastresort",
        response_url: str | None = None,
        thread_ts: str | None = None,
    ) -> JSON:
        channel_name = "directmessage" if channel.startswith("D") else channel.lower()
        if self.fake is not None:
            self.fake.ensure_user(user)
            self.fake.ensure_channel(channel)
            info = self.fake.channel_info(channel) or {}
            channel_name = "directmessage" if info.get("is_im") else str(info.get("name", channel_name))
            url = response_url or self.fake.response_url(channel=channel, user=user, thread_ts=thread_ts)
        else:
            url = response_url or f"https://hooks.slack.com/commands/{self.team_id}/1/{_random_id(24)}"
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel,
            "channel_name": channel_name,
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": url,
            "trigger_id": f"{int(time.time())}.{_random_id(10)}",
        }

    async def command(
        self,
        text: str = "",
        *,
        user: str,
        channel: str,
        command: str = "/lastresort",
        **opts: Unpack[SendOptions],
    ) -> DriverReply:
        return await self.send_command(self.build_command(text, user=user, channel=channel, command=command), **opts)

    # ------------------------------------------------------------------ block actions

    def build_block_actions(
        self,
        message: JSON | str,
        action_id: str,
        user: str,
        value: str | None = None,
        *,
        channel: str | None = None,
    ) -> JSON:
        """A block_actions payload for clicking `action_id` in `message` (a dict, or a ts to look up in
        the fake; the fake's current copy is used when it has one, since Slack sends the message as shown)."""
        ts = message if isinstance(message, str) else str(message["ts"])
        current: JSON | None = None if isinstance(message, str) else message
        if self.fake is not None:
            found = self.fake.message(channel, ts) if channel else None
            if found is None and channel is None:
                located = self.fake.find_message(ts)
                if located is not None:
                    channel, found = located
            current = found or current
        if current is None or channel is None:
            raise LookupError(f"message {ts} not found; pass the message dict and channel=")
        buttons = find_buttons(current.get("blocks", []))
        matching = [(block_id, el) for block_id, el in buttons if el.get("action_id") == action_id]
        if not matching:
            ids = [el.get("action_id") for _, el in buttons]
            raise LookupError(f"no element with action_id {action_id!r} in message {ts}; found {ids}")
        block_id, element = matching[0]
        action: JSON = {
            "action_id": action_id,
            "block_id": block_id,
            "type": element.get("type", "button"),
            "action_ts": self.next_ts(),
        }
        if "text" in element:
            action["text"] = element["text"]
        chosen = value if value is not None else element.get("value")
        if element.get("type") == "feedback_buttons":
            # One element, two buttons: `value` says which was clicked ("positive" unless "negative"), and
            # the payload carries that button's value, as Slack sends it.
            side = "negative_button" if value == "negative" else "positive_button"
            chosen = element[side]["value"]
        if chosen is not None:
            action["value"] = chosen
        if "style" in element:
            action["style"] = element["style"]
        thread_ts = current.get("thread_ts")
        container: JSON = {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False}
        if thread_ts:
            container["thread_ts"] = thread_ts
        if self.fake is not None:
            self.fake.ensure_user(user)
            response_url = self.fake.response_url(channel=channel, user=user, message_ts=ts, thread_ts=thread_ts)
        else:
            response_url = f"https://hooks.slack.com/actions/{self.team_id}/1/{_random_id(24)}"
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": self.team_id},
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": f"{int(time.time())}.{_random_id(10)}",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": channel.lower()},
            "message": current,
            "state": {"values": {}},
            "response_url": response_url,
            "actions": [action],
        }

    async def click(
        self,
        message: JSON | str,
        action_id: str,
        user: str,
        value: str | None = None,
        *,
        channel: str | None = None,
        **opts: Unpack[SendOptions],
    ) -> DriverReply:
        payload = self.build_block_actions(message, action_id, user, value, channel=channel)
        return await self.send_interaction(payload, **opts)


# ====================================================================== serving a bot in tests


@contextlib.asynccontextmanager
async def serve_web_app(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve an aiohttp app (e.g. Bolt's `app.web_app()`) on host:0 in the running loop; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        yield f"http://{host}:{int(runner.addresses[0][1])}"
    finally:
        await runner.cleanup()
