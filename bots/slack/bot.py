"""The Slack adapter: a Bolt app that brings Slack events to the core and the core's outcomes to Slack.

HTTP mode (the `web` process): Slack POSTs events, slash commands and button clicks to /slack/events;
`bots/slack/http.py` checks them at the edge (signature on the raw bytes, workspace and app, event type)
before Bolt sees them. A person's message is stored before it is acknowledged (`_take_in`, a middleware
that runs before Bolt's ack): Slack gets 200 only for a message that is stored, and 503 (so it redelivers)
when the database cannot take it within the ack budget. The answer runs after the ack
(`process_before_response=False`). Socket Mode (local development, a `worker` process) is used instead
when SLACK_APP_TOKEN is set.

The listeners here only translate and delegate: conversations (messages, edits), buttons, the slash
command and the App Home each live in their own module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bots.environment import Environment
from bots.recovery import RecoveryLoop
from bots.runtime import Runtime
from bots.slack.assistant import EditsPassAssistant, SlackAssistant
from bots.slack.buttons import Click, SlackButtons, click_from
from bots.slack.commands import RESTARTING, SlashCommands
from bots.slack.conversations import SlackConversations
from bots.slack.home import SlackHome
from bots.slack.http import Installation, events_handler
from bots.slack.inbound import PLATFORM, SlackMessage, user_edit, user_message
from bots.slack.moderators import SlackModerators
from bots.slack.render import (
    ACTION_ANSWER_FEEDBACK,
    ACTION_CONFIRM_END,
    ACTION_CONFIRM_KEEP,
    ACTION_FEEDBACK_HELPFUL,
    ACTION_FEEDBACK_UNHELPFUL,
    ACTION_NEW_CONVERSATION,
    ACTION_OVERRIDE_END,
    SlackPost,
)
from bots.slack.replies import DEFAULT_UPDATE_INTERVAL
from bots.slack.users import UserNames
from bots.slack.votes import answer_vote
from core.delivery import Deliveries
from core.outcomes import Outcome
from core.service import Received
from core.work_tracker import ShuttingDownError

log = logging.getLogger(__name__)

# 429s wait for Retry-After and try again; a few tries cover Slack's per-channel limit of about one
# message a second. 500/503 are retried only once: a 5xx rarely, but possibly, follows an applied call.
RATE_LIMIT_RETRIES = 4
SERVER_ERROR_RETRIES = 1
# Slack rejects the token outright with these; anything else (a network blip) may pass.
TOKEN_REJECTED = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"})
# slack_sdk's own default per call.
WEB_API_TIMEOUT_SECONDS = 30
FAILED = "Something went wrong, so this may not have worked. Please try again."
# Slack wants an answer within 3 s; the message must be stored by then, with margin for the network.
INTAKE_SECONDS = 2.0
# Slack retries a failed delivery three times (after about 0 s, 1 min and 5 min), then drops it.
SLACK_LAST_RETRY = 3
TAKEN = "lastresort_taken"
RETRY = "lastresort_retry"


class SocketConnection(Protocol):
    """What the adapter uses of Bolt's (untyped) AsyncSocketModeHandler."""

    async def connect_async(self) -> None: ...
    async def close_async(self) -> None: ...


StepFunction = Callable[[AsyncBoltRequest, Callable[[], Awaitable[object]]], Awaitable[BoltResponse | None]]


class Step(AsyncMiddleware):
    """One of the adapter's global middleware steps, as a middleware class: Bolt calls a middleware function
    with keyword arguments it builds for every call (a dozen payload views and helpers, on each request);
    a class gets the request as it is."""

    def __init__(self, step: StepFunction) -> None:
        self._step = step

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse | None:
        return await self._step(req, next)

    @property
    def name(self) -> str:
        return f"Step({getattr(self._step, '__name__', 'step')})"


class Done(Enum):
    OK = "ok"
    SHUTTING_DOWN = "shutting_down"
    FAILED = "failed"


def build_web_client(env: Environment, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """Without a session slack_sdk opens (and closes) a new one, with a new connection, for every call."""
    if not env.slack_bot_token:
        raise ValueError("SLACK_BOT_TOKEN is not set")
    base_url = env.slack_api_url or AsyncWebClient.BASE_URL
    return AsyncWebClient(
        token=env.slack_bot_token,
        session=session,
        # The SDK joins method names onto the base URL, which therefore must end with a slash.
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            AsyncServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES),
        ],
    )


class SlackAdapter:
    name = "slack"

    def __init__(self, runtime: Runtime, *, update_interval: float = DEFAULT_UPDATE_INTERVAL) -> None:
        self._runtime = runtime
        self._env = runtime.env
        if not runtime.env.slack_bot_token:
            raise ValueError("SLACK_BOT_TOKEN is not set")
        # One session (a kept-alive connection pool) for every Web API call; closed in `stop`.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEB_API_TIMEOUT_SECONDS))
        self._client = build_web_client(runtime.env, self._session)
        self._app = AsyncApp(
            client=self._client,
            # Socket Mode needs no signing secret (Slack's socket is authenticated); HTTP mode does.
            signing_secret=runtime.env.slack_signing_secret or "",
            process_before_response=False,
            name="lastresort",
        )
        service = runtime.service
        deliveries = Deliveries(
            store=runtime.store, clock=runtime.clock, locks=runtime.locks, settings=runtime.settings
        )
        moderators = SlackModerators(self._client, runtime.settings.moderators)
        self._conversations = SlackConversations(
            self._client,
            service=service,
            store=runtime.store,
            names=UserNames(self._client),
            update_interval=update_interval,
            deliveries=deliveries,
        )
        self._buttons = SlackButtons(self._client, service=service, conversations=self._conversations)
        self._commands = SlashCommands(self._client, service=service, moderators=moderators)
        self._home = SlackHome(self._client, service=service, moderators=moderators)
        self._assistant = SlackAssistant(self._client, service=service)
        self._recovery = RecoveryLoop(
            service=service,
            work=runtime.work,
            platform=PLATFORM,
            deliver=self._conversations.answer_unanswered,
            age_seconds=runtime.settings.recovery.age_seconds,
            interval_seconds=runtime.settings.recovery.interval_seconds,
            deliveries=deliveries,
            redeliver=self._conversations.redeliver,
            give_up=self._conversations.tell_undelivered,
        )
        self._socket: SocketConnection | None = None
        self._installation = Installation(app_id=runtime.env.slack_app_id)
        self._late: set[asyncio.Future[Received | Outcome]] = set()
        self._register()

    @property
    def app(self) -> AsyncApp:
        return self._app

    @property
    def socket_mode(self) -> bool:
        return bool(self._env.slack_app_token)

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def installation(self) -> Installation:
        return self._installation

    def routes(self) -> list[web.RouteDef]:
        if self.socket_mode:
            return []
        return [
            events_handler(
                self._app,
                signing_secret=self._env.slack_signing_secret or "",
                installation=self._installation,
                on_revoked=self._on_revoked,
            )
        ]

    async def start(self) -> None:
        await self._check_token()
        self._recovery.start()
        if self.socket_mode:
            # Imported here: HTTP-mode processes never load the websocket client.
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            socket: SocketConnection = AsyncSocketModeHandler(self._app, self._env.slack_app_token)
            await socket.connect_async()
            self._socket = socket
            log.info("slack socket mode connected")

    async def stop(self) -> None:
        try:
            await self._recovery.stop()
            if self._socket is not None:
                await self._socket.close_async()
                self._socket = None
        finally:
            await self._session.close()

    async def _check_token(self) -> None:
        """Fail at start-up on a token Slack rejects, rather than on the first message; learn which
        workspace and app this is, so that the edge can refuse requests for any other."""
        try:
            auth = await self._client.auth_test()
            self._conversations.team_id = str(auth.get("team_id") or "") or None
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            if error in TOKEN_REJECTED:
                raise RuntimeError(f"Slack rejected SLACK_BOT_TOKEN: {error}") from exc
            log.warning("slack auth.test failed; continuing", extra={"error": error})
            return
        installation = self._installation
        installation.team_id = _text(auth.get("team_id"))
        installation.bot_user_id = _text(auth.get("user_id"))
        bot_id = _text(auth.get("bot_id"))
        if installation.app_id is None and bot_id is not None:
            try:
                info = await self._client.bots_info(bot=bot_id)
                bot = info.get("bot")
                installation.app_id = _text(bot.get("app_id")) if isinstance(bot, dict) else None
            except SlackApiError as exc:
                log.warning("slack bots.info failed; set SLACK_APP_ID", extra={"error": exc.response.get("error")})
        log.info("slack installation", extra={"team": installation.team_id, "app": installation.app_id})

    async def _on_revoked(self, body: dict[str, Any]) -> None:
        """app_uninstalled, or tokens_revoked naming our bot: stop calling Slack for this workspace."""
        event = body.get("event") or {}
        kind = str(event.get("type"))
        if kind == "tokens_revoked":
            tokens = event.get("tokens") or {}
            bots = tokens.get("bot") if isinstance(tokens, dict) else None
            mine = self._installation.bot_user_id
            if not isinstance(bots, list) or not bots or (mine is not None and mine not in bots):
                log.info("slack tokens revoked for other users; ours still holds")
                return
        if self._installation.revoked:
            return
        self._installation.revoked = True
        self._runtime.readiness.report("slack", ready=False, reason=kind)
        log.error(
            "slack app removed from the workspace: no more calls to Slack for it",
            extra={"event_type": kind, "team": body.get("team_id")},
        )
        await self._recovery.stop()

    # -- wiring -----------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self._app
        app.middleware(Step(self._refuse_while_draining))
        # Before the assistant's middleware: its threads' messages are stored before the ack too.
        app.middleware(Step(self._take_in))
        # The assistant container (Agents & AI Apps): after the draining check, before the listeners.
        assistant = EditsPassAssistant()
        assistant.thread_started(self._on_assistant_thread_started)
        # Thread context (the channel the user is looking at) is not used; Bolt's default would store it
        # by editing our messages' metadata.
        assistant.thread_context_changed(self._on_assistant_context_changed)
        assistant.user_message(self._on_assistant_message)
        app.assistant(assistant)
        # Registered before the plain message listener: Bolt runs the first listener that matches.
        app.event({"type": "message", "subtype": "message_changed"})(self._on_edit)
        # Every other message event, subtypes included, so none goes unacknowledged (Bolt answers an
        # unhandled request with 404, and Slack would redeliver it). Before app_mention: Bolt tries each
        # listener's matcher in turn, and most events are plain messages.
        app.event("message")(self._on_message)
        app.event("app_mention")(self._on_app_mention)
        app.event("app_home_opened")(self._on_home_opened)
        app.command("/lastresort")(self._on_command)
        app.action(ACTION_CONFIRM_END)(self._on_confirm)
        app.action(ACTION_CONFIRM_KEEP)(self._on_confirm)
        app.action(ACTION_FEEDBACK_HELPFUL)(self._on_feedback)
        app.action(ACTION_FEEDBACK_UNHELPFUL)(self._on_feedback)
        app.action(ACTION_NEW_CONVERSATION)(self._on_new_conversation)
        app.action(ACTION_ANSWER_FEEDBACK)(self._on_answer_vote)
        app.action(ACTION_OVERRIDE_END)(self._on_override)

    async def _refuse_while_draining(
        self, request: AsyncBoltRequest, next: Callable[[], Awaitable[object]]
    ) -> BoltResponse | None:
        """During shutdown, take no new work: an unacknowledged event is redelivered by Slack (to the
        instance that replaces this one); a command or click is told to try again."""
        body = request.body
        if not self._runtime.work.closed:
            await next()
            return None
        if body.get("type") == "event_callback":
            return BoltResponse(status=503, body="")
        return BoltResponse(status=200, body=RESTARTING)

    async def _take_in(self, request: AsyncBoltRequest, next: Callable[[], Awaitable[object]]) -> BoltResponse | None:
        """Store a person's message before Bolt acknowledges it; 503 (Slack redelivers) if the store
        cannot take it within the ack budget. Never 200 for a message that is not stored."""
        context = request.context
        message = _message_in(request.body, context.bot_user_id)
        if message is None or self._installation.revoked:
            await next()
            return None
        retry = _retry_num(request)
        context[RETRY] = retry
        if retry:
            self._runtime.metrics.observe_redelivered(PLATFORM)
        # Not cancelled at the deadline: a cancelled write can leave a connection mid-transaction. A write
        # that lands late is found stored by Slack's redelivery (or by recovery) and answered then.
        storing = asyncio.ensure_future(self._conversations.take_in(message))
        try:
            context[TAKEN] = await asyncio.wait_for(asyncio.shield(storing), INTAKE_SECONDS)
        except Exception as exc:
            if not storing.done():
                self._late.add(storing)
                storing.add_done_callback(self._late_done)
            reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            self._runtime.store_failed(reason)
            if retry >= SLACK_LAST_RETRY:
                self._runtime.metrics.observe_given_up(PLATFORM, reason)
                log.error(
                    "message lost: not stored on Slack's last delivery",
                    extra={"reason": reason, "retry": retry, "channel": message.channel},
                )
            else:
                self._runtime.metrics.observe_deferred(PLATFORM, reason)
                log.warning(
                    "message not stored; Slack will redeliver",
                    extra={"reason": reason, "retry": retry, "channel": message.channel},
                )
            return BoltResponse(status=503, body="")
        await next()
        return None

    def _late_done(self, task: asyncio.Future[Received | Outcome]) -> None:
        self._late.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("a late write failed too", extra={"error": type(task.exception()).__name__})

    async def _run(self, what: str, work: Callable[[], Awaitable[None]]) -> Done:
        """Run one piece of work counted as in flight, so that shutdown waits for it to finish."""
        try:
            # Admitted: it passed `_refuse_while_draining`, and Slack already has its acknowledgement.
            async with self._runtime.work.track(admitted=True):
                await work()
        except ShuttingDownError:
            # Acknowledged just as shutdown began (Bolt acks events before the listener runs).
            log.warning("slack request arrived as shutdown began; not handled", extra={"what": what})
            return Done.SHUTTING_DOWN
        except SlackApiError as exc:
            self._runtime.metrics.observe_error("slack_api")
            log.warning("slack api call failed", extra={"what": what, "error": exc.response.get("error")})
            return Done.FAILED
        except Exception:
            log.exception("slack handler failed", extra={"what": what})
            return Done.FAILED
        return Done.OK

    # -- events -----------------------------------------------------------------------------------

    async def _on_app_mention(self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        await self._message_event(body, event, context, addressed=True)

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        await self._message_event(body, event, context, addressed=False)

    async def _message_event(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext, *, addressed: bool
    ) -> None:
        message = user_message(event, context.bot_user_id, addressed=addressed)
        taken: Received | Outcome | None = context.get(TAKEN)
        if message is None or taken is None:
            return
        redelivered = bool(context.get(RETRY))
        await self._run("message", lambda: self._conversations.answer(message, taken, redelivered=redelivered))

    async def _on_edit(self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        edit = user_edit(event, context.bot_user_id)
        if edit is None:
            return
        event_id = str(body.get("event_id") or "")
        await self._run("edit", lambda: self._conversations.on_edit(edit, event_id=event_id))

    async def _on_assistant_thread_started(self, event: dict[str, Any]) -> None:
        await self._run("assistant thread", lambda: self._assistant.thread_started(event))

    async def _on_assistant_context_changed(self) -> None:
        return None

    async def _on_assistant_message(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        message = user_message(event, context.bot_user_id, addressed=False)
        taken: Received | Outcome | None = context.get(TAKEN)
        if message is None or taken is None:
            return
        redelivered = bool(context.get(RETRY))

        async def answer() -> None:
            await self._conversations.answer(message, taken, redelivered=redelivered)

        await self._run("assistant message", lambda: self._assistant.answering(message, answer))

    async def _on_home_opened(self, event: dict[str, Any]) -> None:
        user = event.get("user")
        if event.get("tab", "home") != "home" or not isinstance(user, str):
            return
        await self._run("home", lambda: self._home.publish(user))

    # -- slash command and buttons: acknowledge first, answer through response_url ----------------------

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        answer: str | SlackPost = FAILED

        async def work() -> None:
            nonlocal answer
            answer = await self._commands.run(user_id=str(command.get("user_id")), text=str(command.get("text") or ""))

        done = await self._run("command", work)
        if done is Done.SHUTTING_DOWN:
            answer = RESTARTING
        if isinstance(answer, SlackPost):
            await respond(text=answer.text, blocks=list(answer.blocks), response_type="ephemeral")
        else:
            await respond(text=answer, response_type="ephemeral")

    async def _on_button(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: AsyncRespond,
        handle: Callable[[Click], Awaitable[str | None]],
    ) -> None:
        await ack()
        click = click_from(body, action)
        if click is None:
            return
        answer: str | None = None

        async def work() -> None:
            nonlocal answer
            answer = await handle(click)

        done = await self._run(str(action.get("action_id")), work)
        if done is not Done.OK:
            answer = RESTARTING if done is Done.SHUTTING_DOWN else FAILED
        if answer:
            await respond(text=answer, response_type="ephemeral", replace_original=False)

    async def _on_confirm(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        confirmed = action.get("action_id") == ACTION_CONFIRM_END
        await self._on_button(ack, body, action, respond, lambda c: self._buttons.confirm(c, confirmed=confirmed))

    async def _on_feedback(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        helpful = action.get("action_id") == ACTION_FEEDBACK_HELPFUL
        await self._on_button(ack, body, action, respond, lambda c: self._buttons.feedback(c, helpful=helpful))

    async def _on_new_conversation(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await self._on_button(ack, body, action, respond, self._buttons.new_conversation)

    async def _on_override(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        commands = self._commands
        await self._on_button(
            ack, body, action, respond, lambda click: commands.override_end(user_id=click.user, value=click.value)
        )

    async def _on_answer_vote(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        service = self._runtime.service
        await self._on_button(ack, body, action, respond, lambda click: answer_vote(service, click))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _message_in(body: dict[str, Any], bot_user_id: str | None) -> SlackMessage | None:
    """The person's message an event_callback carries, if it is one to store (edits are not)."""
    if body.get("type") != "event_callback" or not isinstance(body.get("event"), dict):
        return None
    event = body["event"]
    if event.get("type") == "app_mention":
        return user_message(event, bot_user_id, addressed=True)
    if event.get("type") == "message":
        return user_message(event, bot_user_id)
    return None


def _retry_num(request: AsyncBoltRequest) -> int:
    values = request.headers.get("x-slack-retry-num") or []
    value = values[0] if values else ""
    return int(value) if value.isdigit() else 0
