"""The Discord adapter: a discord.py gateway client that brings Discord events to the core and the core's
outcomes to Discord.

Composition: `DiscordAdapter(runtime)` builds the client (`AutoShardedClient` when DISCORD_SHARD_COUNT is
set), the command tree and the handlers, all in `start()`, so that nothing happens at import time and a
test can point discord.py at a fake Discord through the environment. The handlers only translate and
delegate: messages and edits (`discord_conversations`), buttons and the branch form
(`discord_components`), slash commands (`discord_commands`).

Each event runs as its own task in discord.py; every handler here is counted as work in flight (so a
shutdown lets it finish) and guarded, so one bad event is logged and the client carries on.

Shutdown: the gateway stays connected while replies in flight finish, and Discord never delivers an event
again, so messages and edits arriving then are still handled (admitted work: the core stores a message
before answering it, so one cut short is answered later by whichever instance runs). Interactions are
different: Discord delivers them to every connected session, so during a rolling deploy a stopping
instance leaves them to the other one for a moment, and answers "restarting" only if nobody took them.

A gateway connection that ends for good after start-up (Discord rejected the token or the intents) asks
the supervisor to stop the process with exit code 2, so the platform running it notices.

Readiness (`/readyz`) follows the gateway: not ready until the first READY, nor while disconnected. A
gateway that never connects within `discord.connect_timeout_seconds` stops the process (exit code 1, a
line saying why), so the platform restarts it instead of keeping a worker that answers nobody.

Every READY (a fresh session: at start-up, or after Discord refused to resume one) starts a catch-up of
the active threads, so messages sent while nobody listened are answered once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import discord
import yarl
from aiohttp import web
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bots.discord.commands import FAILED, RESTARTING, LastResortTree, SlashCommands
from bots.discord.components import UNKNOWN_BUTTON, Components, tell
from bots.discord.conversations import DiscordConversations
from bots.discord.inbound import EVENT_SOURCE, PLATFORM, interaction_event_id
from bots.discord.invite import invite_url
from bots.discord.replies import DEFAULT_UPDATE_INTERVAL
from bots.discord.targets import BranchSources
from bots.discord.views import parse_custom_id
from bots.environment import Environment
from bots.recovery import RecoveryLoop
from bots.runtime import EXIT_START_FAILED, Runtime
from core.delivery import Deliveries

log = logging.getLogger(__name__)

# discord.py waits this long after the last GUILD_CREATE before it calls the client ready.
DEFAULT_GUILD_READY_TIMEOUT = 2.0
# start() returns once connected, or after this: the client keeps connecting in the background.
DEFAULT_READY_TIMEOUT = 30.0
STOP_TIMEOUT_SECONDS = 2.5
READINESS = "discord"
# The gateway never connected: a crash the platform restarts, not a configuration error (exit code 2).
EXIT_NEVER_CONNECTED = 1
# While shutting down, how long an interaction is left for another connected instance before this one
# answers it; Discord allows 3 s for the first answer.
HANDOFF_SECONDS = 1.0
# Close codes after which discord.py does not reconnect, in words an operator can act on (Discord's docs).
FATAL_CLOSE_CODES = {
    4010: "invalid shard: check DISCORD_SHARD_IDS (each must be below DISCORD_SHARD_COUNT)",
    4011: "sharding required: set DISCORD_SHARD_COUNT (one shard serves up to 2,500 servers)",
    4012: "invalid gateway API version: upgrade discord.py",
    4013: "invalid intents: the intents value is malformed (a bug in this bot)",
}
ROUTED_INTERACTIONS = frozenset({discord.InteractionType.component, discord.InteractionType.modal_submit})


def intents() -> discord.Intents:
    """Guild and DM messages with their content (Message Content is privileged: enable it in the portal)."""
    chosen = discord.Intents.none()
    chosen.guilds = True
    chosen.guild_messages = True
    chosen.message_content = True
    chosen.dm_messages = True
    return chosen


def point_discord_py_at(env: Environment) -> None:
    """Use DISCORD_API_URL / DISCORD_GATEWAY_URL instead of Discord's own (a fake, a proxy). Process-wide:
    discord.py reads these class attributes whenever it builds a request or opens the gateway."""
    if env.discord_api_url:
        Route.BASE = env.discord_api_url.rstrip("/")
    if env.discord_gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(env.discord_gateway_url)


GATEWAY_ENDED = "the Discord gateway connection ended"


def gateway_failure(error: BaseException | None) -> str:
    """Why the gateway connection ended for good, in words an operator can act on."""
    if isinstance(error, discord.PrivilegedIntentsRequired):
        return "Discord refused the Message Content intent: enable it for the bot in the Developer Portal"
    if isinstance(error, discord.ConnectionClosed) and error.code == 4004:
        return "Discord rejected DISCORD_TOKEN: copy the bot token from the Developer Portal"
    if isinstance(error, discord.ConnectionClosed) and error.code in FATAL_CLOSE_CODES:
        return f"Discord closed the gateway with {error.code}: {FATAL_CLOSE_CODES[error.code]}"
    return GATEWAY_ENDED


def build_client(env: Environment, *, guild_ready_timeout: float) -> discord.Client:
    if env.discord_shard_ids and env.discord_shard_count is None:
        raise ValueError("DISCORD_SHARD_IDS is set but DISCORD_SHARD_COUNT is not: set both")
    if env.discord_shard_count is not None:
        # This process runs the shards in DISCORD_SHARD_IDS (all of them when unset) of DISCORD_SHARD_COUNT.
        shards: dict[str, Any] = {"shard_count": env.discord_shard_count}
        if env.discord_shard_ids:
            shards["shard_ids"] = list(env.discord_shard_ids)
        return discord.AutoShardedClient(
            intents=intents(),
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=guild_ready_timeout,
            **shards,
        )
    return discord.Client(
        intents=intents(), allowed_mentions=discord.AllowedMentions.none(), guild_ready_timeout=guild_ready_timeout
    )


class DiscordAdapter:
    name = "discord"

    def __init__(
        self,
        runtime: Runtime,
        *,
        update_interval: float = DEFAULT_UPDATE_INTERVAL,
        guild_ready_timeout: float = DEFAULT_GUILD_READY_TIMEOUT,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        recovery_age_seconds: float | None = None,
        delivery_attempts: int | None = None,
    ) -> None:
        self._runtime = runtime
        self._update_interval = update_interval
        self._guild_ready_timeout = guild_ready_timeout
        self._ready_timeout = ready_timeout
        # Settings decide; tests may look for unanswered messages sooner than settings allow (at least 1 s).
        recovery = runtime.settings.recovery
        self._recovery_age_seconds = recovery.age_seconds if recovery_age_seconds is None else recovery_age_seconds
        self._delivery_attempts = delivery_attempts
        self._client: discord.Client | None = None
        self._connection: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[bool]] = set()
        self._recovery: RecoveryLoop | None = None
        self._ready = asyncio.Event()
        # Shards whose connection is down: ready again only when none is (one shard's news is not all of them).
        self._shards_down: set[int] = set()
        self._catching_up: asyncio.Task[bool] | None = None
        self._catch_up_again = False
        self._starting = False
        self._stopping = False
        self._components: Components | None = None
        self._conversations: DiscordConversations | None = None

    @property
    def client(self) -> discord.Client:
        if self._client is None:
            raise RuntimeError("the Discord adapter has not started")
        return self._client

    # -- lifecycle --------------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return []  # a gateway bot: Discord pushes events over the websocket, not HTTP

    async def start(self) -> None:
        env = self._runtime.env
        if not env.discord_token:
            raise ValueError("DISCORD_TOKEN is not set")
        point_discord_py_at(env)
        self._runtime.readiness.report(READINESS, ready=False, reason="connecting")
        client = self._client = build_client(env, guild_ready_timeout=self._guild_ready_timeout)
        tree = self._wire(client)
        try:
            await client.login(env.discord_token)
        except discord.LoginFailure as exc:
            raise RuntimeError("Discord rejected DISCORD_TOKEN: copy the bot token from the Developer Portal") from exc
        await self._sync_commands(tree)
        assert client.application_id is not None
        log.info("invite the Discord bot with %s", invite_url(client.application_id))
        self._connection = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
        self._connection.add_done_callback(self._connection_ended)
        self._starting = True
        try:
            await self._wait_until_ready(self._connection)
        finally:
            self._starting = False
        if not self._ready.is_set():
            self._watchdog = asyncio.create_task(self._give_up_connecting(), name="discord-connect-watchdog")

    async def stop(self) -> None:
        self._stopping = True  # the connection ending from here on is expected
        for task in (self._watchdog, *self._background):
            if task is not None:
                task.cancel()
        if self._recovery is not None:
            await self._recovery.stop()
        if self._client is not None:
            await self._client.close()
        if self._connection is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._connection, STOP_TIMEOUT_SECONDS)

    def _wire(self, client: discord.Client) -> LastResortTree:
        runtime = self._runtime
        conversations = DiscordConversations(
            client,
            service=runtime.service,
            store=runtime.store,
            settings=runtime.settings,
            deliveries=Deliveries(
                store=runtime.store, clock=runtime.clock, locks=runtime.locks, settings=runtime.settings
            ),
            clock=runtime.clock,
            update_interval=self._update_interval,
        )
        self._conversations = conversations
        components = Components(service=runtime.service, store=runtime.store, conversations=conversations)
        self._components = components
        tree = LastResortTree(client, admit=self._admit)
        commands = SlashCommands(
            service=runtime.service,
            conversations=conversations,
            components=components,
            branch_sources=BranchSources(service=runtime.service, store=runtime.store),
            work=runtime.work,
        )
        for group in commands.groups():
            tree.add_command(group)
        handlers = (
            self.on_ready,
            self.on_shard_ready,
            self.on_shard_resumed,
            self.on_shard_disconnect,
            self.on_resumed,
            self.on_disconnect,
            self.on_message,
            self.on_raw_message_edit,
            self.on_interaction,
        )
        for handler in handlers:
            client.event(handler)
        return tree

    async def _sync_commands(self, tree: LastResortTree) -> None:
        try:
            await tree.sync()
        except discord.HTTPException as exc:
            # The commands registered last time still work; messages and buttons do not need this.
            log.warning("discord command sync failed", extra={"status": exc.status, "code": exc.code})

    async def _wait_until_ready(self, connection: asyncio.Task[None]) -> None:
        ready = asyncio.create_task(self._ready.wait())
        # A SIGTERM while still connecting ends the wait too: the process must stop in time.
        stopping = asyncio.create_task(self._runtime.shutdown.event.wait())
        done, _ = await asyncio.wait(
            {connection, ready, stopping}, timeout=self._ready_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        stopping.cancel()
        if ready not in done:
            ready.cancel()
        if connection in done:
            error = connection.exception()
            reason = gateway_failure(error)
            if reason != GATEWAY_ENDED:
                raise RuntimeError(reason) from error
            # Not refused, only not reached (the network, the URL): the same as never connecting later on,
            # a stop a restart may well mend, not a configuration error.
            why = f"could not connect to the Discord gateway ({type(error).__name__}): check DISCORD_GATEWAY_URL"
            log.error("discord never connected: %s; stopping the process", why)
            self._runtime.shutdown.request(f"discord: {why}", exit_code=EXIT_NEVER_CONNECTED)
            return
        if ready not in done:
            log.warning("discord is not ready yet; still connecting in the background")

    async def _give_up_connecting(self) -> None:
        deadline = self._runtime.settings.discord.connect_timeout_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), max(0.0, deadline - self._ready_timeout))
            return
        reason = f"the Discord gateway did not connect within {deadline:g} s: check DISCORD_GATEWAY_URL and the network"
        log.error("discord never connected: %s; stopping the process", reason)
        self._runtime.shutdown.request(f"discord: {reason}", exit_code=EXIT_NEVER_CONNECTED)

    def _connection_ended(self, task: asyncio.Task[None]) -> None:
        # discord.py reconnects by itself; its connection ends only when stopped, or when Discord refuses
        # the bot for good (it may close the client itself then, so `is_closed()` proves nothing).
        if task.cancelled() or self._stopping:
            return
        if self._starting:
            return  # start() is waiting for this task and raises its error itself
        error = task.exception()
        reason = gateway_failure(error)
        exit_code = EXIT_START_FAILED
        if not self._ready.is_set() and reason == GATEWAY_ENDED:
            # Never connected, and not refused: the network or the URL. A restart may well help.
            reason = f"could not connect to the Discord gateway ({type(error).__name__}): check DISCORD_GATEWAY_URL"
            exit_code = EXIT_NEVER_CONNECTED
        log.error("discord stopped for good: %s; stopping the process", reason, exc_info=error)
        # A process without its Discord connection would look healthy while answering nobody.
        self._runtime.shutdown.request(f"discord: {reason}", exit_code=exit_code)

    # -- events -----------------------------------------------------------------------------------------

    async def _guarded(self, what: str, work: Callable[[], Awaitable[None]]) -> bool:
        """Run one event's work counted as in flight; log a failure instead of raising it.

        Admitted even during a shutdown: Discord never delivers a message or edit again, and an
        interaction reaches this point only once this instance has claimed it."""
        try:
            async with self._runtime.work.track(admitted=True):
                await work()
        except discord.HTTPException as exc:
            log.warning("discord api call failed", extra={"what": what, "status": exc.status, "code": exc.code})
            return False
        except Exception:
            log.exception("discord handler failed", extra={"what": what})
            return False
        return True

    async def _claim_interaction(self, interaction_id: int) -> bool:
        return await self._runtime.store.claim_event(source=EVENT_SOURCE, event_id=interaction_event_id(interaction_id))

    async def _admit(self, interaction: discord.Interaction[discord.Client]) -> bool:
        """Whether this instance answers an interaction: only the one that claims it in the database does.

        While shutting down, it does not claim at once: another connected instance may take it."""
        if self._runtime.work.closed:
            await self._hand_off(interaction)
            return False
        return await self._claim_interaction(interaction.id)

    async def _hand_off(self, interaction: discord.Interaction[discord.Client]) -> None:
        if interaction.type is discord.InteractionType.autocomplete:
            return  # suggestions are optional: another instance may give them
        await asyncio.sleep(HANDOFF_SECONDS)
        if await self._claim_interaction(interaction.id):
            # Nobody else took it: better a plain answer than Discord's "This interaction failed".
            with contextlib.suppress(discord.HTTPException):
                await tell(interaction, RESTARTING)

    async def on_ready(self) -> None:
        first = not self._ready.is_set()
        self._ready.set()
        self._runtime.readiness.report(READINESS, ready=True)
        log.info("discord connected", extra={"guilds": len(self.client.guilds)})
        if self._conversations is None:
            return
        conversations = self._conversations
        self._catch_up()
        if first:
            # Sweeps start once connected: answers need the channels discord.py learns about at READY.
            extra: dict[str, Any] = {}
            if self._delivery_attempts is not None:
                extra["delivery_attempts"] = self._delivery_attempts
            self._recovery = RecoveryLoop(
                service=self._runtime.service,
                work=self._runtime.work,
                platform=PLATFORM,
                deliver=conversations.deliver_pending,
                age_seconds=self._recovery_age_seconds,
                interval_seconds=self._runtime.settings.recovery.interval_seconds,
                deliveries=conversations.deliveries,
                redeliver=conversations.redeliver,
                give_up=conversations.tell_undelivered,
                **extra,
            )
            self._recovery.start()

    def _catch_up(self) -> None:
        """A fresh session (start-up, or one Discord would not resume): what was sent meanwhile was never
        delivered to us, so read it from the threads' history, in the background."""
        conversations = self._conversations
        if conversations is None:
            return

        if self._catching_up is not None and not self._catching_up.done():
            # One at a time: rapid reconnects would otherwise read the same histories side by side. One more
            # runs after it, for what arrived during the gap that started this call.
            self._catch_up_again = True
            return

        async def catch_up() -> None:
            await conversations.catch_up()
            while self._catch_up_again:
                self._catch_up_again = False
                await conversations.catch_up()

        task = asyncio.create_task(self._guarded("catch-up", catch_up), name="discord-catch-up")
        self._catching_up = task
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def on_shard_ready(self, shard_id: int) -> None:
        # With shards, one shard's fresh session is only a shard_ready (ready comes once, for all of them).
        self._shard_up(shard_id)
        if self._ready.is_set():
            self._catch_up()

    async def on_shard_resumed(self, shard_id: int) -> None:
        self._shard_up(shard_id)

    async def on_shard_disconnect(self, shard_id: int) -> None:
        if not self._stopping:
            self._shards_down.add(shard_id)

    def _shard_up(self, shard_id: int) -> None:
        self._shards_down.discard(shard_id)
        if self._ready.is_set() and not self._shards_down:
            self._runtime.readiness.report(READINESS, ready=True)

    async def on_resumed(self) -> None:
        if not self._shards_down:
            self._runtime.readiness.report(READINESS, ready=True)

    async def on_disconnect(self) -> None:
        if not self._stopping:
            # discord.py says so on every failed attempt too: until the first READY it is still connecting.
            reason = "gateway disconnected" if self._ready.is_set() else "connecting"
            self._runtime.readiness.report(READINESS, ready=False, reason=reason)

    async def on_message(self, message: discord.Message) -> None:
        if self._conversations is not None:
            conversations = self._conversations
            await self._guarded("message", lambda: conversations.on_message(message))

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        if self._conversations is not None:
            conversations = self._conversations
            await self._guarded("edit", lambda: conversations.on_raw_edit(payload))

    async def on_interaction(self, interaction: discord.Interaction[discord.Client]) -> None:
        """Buttons and forms, routed by custom id (slash commands go through the command tree)."""
        if interaction.type not in ROUTED_INTERACTIONS or self._components is None:
            return
        data = cast("Mapping[str, object]", interaction.data or {})
        action = parse_custom_id(str(data.get("custom_id", "")))
        if not await self._admit(interaction):
            return
        if action is None:
            # Discord sends a bot only clicks on its own messages: a button of an older version, say. Any
            # answer beats Discord's "This interaction failed".
            with contextlib.suppress(discord.HTTPException):
                await tell(interaction, UNKNOWN_BUTTON)
            return
        components = self._components
        if not await self._guarded("interaction", lambda: components.handle(interaction, action)):
            with contextlib.suppress(discord.HTTPException):
                await tell(interaction, FAILED)
