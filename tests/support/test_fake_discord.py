"""FakeDiscord driven by the real discord.py client (and, for wire details, by raw HTTP/websocket).

These tests pin down both the fake and the discord.py behaviour the Discord adapter relies on:
login + READY/GUILD_CREATE, mentions, threads, locking, edits, app commands, components, modals,
429 retries, gateway reconnects and clean shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.support.fake_discord import (
    ChannelType,
    DiscordError,
    FakeDiscord,
    Intent,
    Perm,
    point_discord_py_at,
    snowflake_time_ms,
)

APPEAL_MODAL_ID = "lastresort:appeal"
ACK_BUTTON_ID = "lastresort:ack"


# --------------------------------------------------------------------------------------------------
# A minimal bot: what the adapter will do, reduced to recording what arrives.
# --------------------------------------------------------------------------------------------------


class AppealModal(discord.ui.Modal):
    def __init__(self, bot: LastResortTestBot) -> None:
        super().__init__(title="Appeal", custom_id=APPEAL_MODAL_ID)
        self.bot = bot
        self.reason: discord.ui.TextInput[AppealModal] = discord.ui.TextInput(
            label="Why should it continue?",
            custom_id="reason",
            default="I was polite",
            style=discord.TextStyle.paragraph,
            max_length=500,
        )
        self.add_item(self.reason)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.bot.modal_values.append(self.reason.value)
        await interaction.response.send_message("appeal received", ephemeral=True)


class EndedView(discord.ui.View):
    """Persistent (timeout=None, fixed custom_id): survives restarts via Client.add_view."""

    def __init__(self, bot: LastResortTestBot) -> None:
        super().__init__(timeout=None)
        self.bot = bot

    @discord.ui.button(label="Acknowledge", custom_id=ACK_BUTTON_ID, style=discord.ButtonStyle.secondary)
    async def ack(self, interaction: discord.Interaction, button: discord.ui.Button[EndedView]) -> None:
        self.bot.clicks.append(interaction.user.id)
        await interaction.response.edit_message(content="acknowledged", view=None)


def bot_intents() -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    intents.dm_messages = True
    return intents


class LastResortTestBot(discord.Client):
    def __init__(self) -> None:
        super().__init__(
            intents=bot_intents(), guild_ready_timeout=0.1, allowed_mentions=discord.AllowedMentions.none()
        )
        self.tree = app_commands.CommandTree(self)
        self.ready_event = asyncio.Event()
        self.readies = 0
        self.resumes = 0
        self.messages: list[discord.Message] = []
        self.raw_edits: list[discord.RawMessageUpdateEvent] = []
        self.status_calls: list[tuple[discord.Interaction, str | None]] = []
        self.clicks: list[int] = []
        self.modal_values: list[str] = []

        group = app_commands.Group(name="lastresort", description="Last Resort controls")

        @group.command(name="status", description="Show the conversation status")
        async def status(interaction: discord.Interaction, detail: str | None = None) -> None:
            self.status_calls.append((interaction, detail))
            await interaction.response.defer(thinking=True)
            await interaction.followup.send(f"status: ok ({detail})")

        @group.command(name="appeal", description="Appeal an ended conversation")
        async def appeal(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(AppealModal(self))

        self.tree.add_command(group)

    async def setup_hook(self) -> None:
        self.add_view(EndedView(self))
        await self.tree.sync()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # discord.py sleeps 5 s before every re-IDENTIFY (Discord's identify rate limit); tests
        # of a lost session should not wait for that.
        return None

    async def on_ready(self) -> None:
        self.readies += 1
        self.ready_event.set()

    async def on_resumed(self) -> None:
        self.resumes += 1

    async def on_message(self, message: discord.Message) -> None:
        self.messages.append(message)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        self.raw_edits.append(payload)

    def received(self, message_id: int | str) -> discord.Message | None:
        return next((m for m in self.messages if m.id == int(message_id)), None)


async def start_bot(client: LastResortTestBot, token: str) -> asyncio.Task[None]:
    task = asyncio.create_task(client.start(token))
    ready = asyncio.create_task(client.ready_event.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises what start() raised
        raise AssertionError("client.start() returned before READY")
    if ready not in done:
        ready.cancel()
        raise TimeoutError("bot did not become ready")
    return task


async def stop_bot(client: LastResortTestBot, task: asyncio.Task[None]) -> None:
    await client.close()
    await asyncio.wait_for(task, 10)


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    with FakeDiscord() as server:
        restore = point_discord_py_at(server)
        try:
            yield server
        finally:
            restore()


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[LastResortTestBot]:
    client = LastResortTestBot()
    task = await start_bot(client, fake.token)
    try:
        yield client
    finally:
        await stop_bot(client, task)


@pytest.fixture
def alice(fake: FakeDiscord) -> int:
    return int(fake.add_member(None, "alice")["user"]["id"])


@pytest.fixture
def mod(fake: FakeDiscord) -> int:
    return int(fake.add_member(None, "mod", moderator=True)["user"]["id"])


async def bot_thread_from_mention(bot: LastResortTestBot, fake: FakeDiscord, user_id: int) -> discord.Thread:
    """Member mentions the bot; the bot opens a thread from that message (what the adapter does)."""
    posted = fake.user_post(fake.text_channel_id, user_id, "can you help?", mentions_bot=True)
    message = await fake.wait_for(lambda: bot.received(posted["id"]), what="on_message")
    thread = await message.create_thread(name="Conversation")
    await fake.wait_for(lambda: bot.get_channel(thread.id), what="THREAD_CREATE cached")
    return thread


# --------------------------------------------------------------------------------------------------
# Wire format (raw HTTP)
# --------------------------------------------------------------------------------------------------


def test_constants_match_discord_py() -> None:
    perms = discord.Permissions
    assert perms(manage_threads=True).value == Perm.MANAGE_THREADS
    assert perms(create_public_threads=True).value == Perm.CREATE_PUBLIC_THREADS
    assert perms(send_messages_in_threads=True).value == Perm.SEND_MESSAGES_IN_THREADS
    assert perms(use_application_commands=True).value == Perm.USE_APPLICATION_COMMANDS
    assert perms(read_message_history=True).value == Perm.READ_MESSAGE_HISTORY
    assert perms(manage_messages=True).value == Perm.MANAGE_MESSAGES
    assert discord.Intents(message_content=True).value == Intent.MESSAGE_CONTENT
    assert discord.Intents(guild_messages=True).value == Intent.GUILD_MESSAGES
    assert discord.Intents(dm_messages=True).value == Intent.DIRECT_MESSAGES
    assert discord.Intents(presences=True).value == Intent.GUILD_PRESENCES
    assert (
        bot_intents().value == Intent.GUILDS | Intent.GUILD_MESSAGES | Intent.MESSAGE_CONTENT | Intent.DIRECT_MESSAGES
    )


async def test_rest_wire_format(fake: FakeDiscord) -> None:
    auth = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.api_url}/users/@me", headers=auth) as resp:
            assert resp.status == 200
            # discord.py compares this header verbatim: no "; charset=utf-8".
            assert resp.headers["Content-Type"] == "application/json"
            me = await resp.json()
            assert me["username"] == "LastResort"
            assert me["bot"] is True
            assert int(me["id"]) == fake.bot_user_id
        async with http.get(f"{fake.api_url}/users/@me") as resp:
            assert resp.status == 401
            assert await resp.json() == {"message": "401: Unauthorized", "code": 0}
        async with http.get(f"{fake.api_url}/no/such/route", headers=auth) as resp:
            assert resp.status == 404
            assert resp.headers["Content-Type"] == "application/json"
            assert await resp.json() == {"message": "404: Not Found", "code": 0}
        async with http.post(f"{fake.api_url}/channels/{fake.text_channel_id}/typing", headers=auth) as resp:
            assert resp.status == 204
            assert await resp.read() == b""

        fake.fail_next("POST", r"^/channels/\d+/messages$", status=429, retry_after=0.25)
        url = f"{fake.api_url}/channels/{fake.text_channel_id}/messages"
        async with http.post(url, headers=auth, json={"content": "blocked"}) as resp:
            assert resp.status == 429
            assert resp.headers["Via"]  # without it discord.py assumes a Cloudflare ban
            assert resp.headers["Retry-After"] == "1"
            assert resp.headers["X-RateLimit-Remaining"] == "0"
            assert float(resp.headers["X-RateLimit-Reset-After"]) == pytest.approx(0.25)
            body = await resp.json()
            assert body["retry_after"] == 0.25
            assert body["global"] is False
        assert fake.channel_messages(fake.text_channel_id) == []  # a 429'd call is not applied

        async with http.post(url, headers=auth, json={"content": ""}) as resp:
            assert resp.status == 400
            assert (await resp.json())["code"] == 50006
        async with http.post(url, headers=auth, json={"content": "x" * 2001}) as resp:
            assert (await resp.json())["code"] == 50035
        async with http.post(url, headers=auth, json={"content": "fine"}) as resp:
            created = await resp.json()
    assert [c.status for c in fake.calls_to("POST", r"/messages$")] == [429, 400, 400, 200]
    # Snowflakes carry real timestamps and increase monotonically.
    assert abs(snowflake_time_ms(int(created["id"])) - time.time() * 1000) < 5000
    ids = [fake.new_snowflake() for _ in range(100)]
    assert ids == sorted(set(ids))


async def test_interaction_callback_wire(fake: FakeDiscord, alice: int) -> None:
    first = fake.slash_command(alice, fake.text_channel_id, "lastresort", "status")
    second = fake.slash_command(alice, fake.text_channel_id, "lastresort", "status")
    async with aiohttp.ClientSession() as http:
        follow_url = f"{fake.api_url}/webhooks/{fake.application_id}/{first['token']}?wait=1"
        async with http.post(follow_url, json={"content": "too early"}) as resp:
            assert resp.status == 404
            assert (await resp.json())["code"] == 10015  # no initial response yet

        cb = f"{fake.api_url}/interactions/{first['id']}/{first['token']}/callback"
        async with http.post(cb, params={"with_response": "1"}, json={"type": 4, "data": {"content": "hi"}}) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["interaction"]["id"] == first["id"]
        assert body["interaction"]["response_message_ephemeral"] is False
        assert body["resource"]["type"] == 4
        assert body["resource"]["message"]["content"] == "hi"
        assert body["resource"]["message"]["id"] == body["interaction"]["response_message_id"]
        async with http.post(cb, params={"with_response": "1"}, json={"type": 4, "data": {"content": "x"}}) as resp:
            assert resp.status == 400
            assert (await resp.json())["code"] == 40060  # already acknowledged

        fake.interaction_timeout = 0.0  # the 3 s window has passed
        cb2 = f"{fake.api_url}/interactions/{second['id']}/{second['token']}/callback"
        async with http.post(cb2, json={"type": 5}) as resp:
            assert resp.status == 404
            assert (await resp.json())["code"] == 10062
        fake.interaction_timeout = 3.0
        third = fake.slash_command(alice, fake.text_channel_id, "lastresort", "status")
        cb3 = f"{fake.api_url}/interactions/{third['id']}/{third['token']}/callback"
        async with http.post(cb3, json={"type": 5}) as resp:
            assert resp.status == 204  # without with_response Discord answers 204
    assert [m["content"] for m in fake.channel_messages(fake.text_channel_id)] == ["hi", ""]


async def test_raw_gateway_identify_intents_heartbeat_and_resume(fake: FakeDiscord, alice: int) -> None:
    async def recv(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        payload: dict[str, Any] = json.loads(msg.data)
        return payload

    async def recv_event(ws: aiohttp.ClientWebSocketResponse, event: str) -> dict[str, Any]:
        while True:
            payload = await recv(ws)
            if payload.get("t") == event:
                return payload

    url = f"{fake.gateway_url}?v=10&encoding=json"
    intents = Intent.GUILDS | Intent.GUILD_MESSAGES  # no MESSAGE_CONTENT
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            hello = await recv(ws)
            assert hello["op"] == 10
            assert hello["d"]["heartbeat_interval"] > 0
            await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": intents, "properties": {}}})
            await ws.receive()
            assert ws.close_code == 4004

        fake.allowed_privileged_intents = 0  # Message Content not enabled in the portal
        async with http.ws_connect(url) as ws:
            await recv(ws)
            await ws.send_json(
                {"op": 2, "d": {"token": fake.token, "intents": intents | Intent.MESSAGE_CONTENT, "properties": {}}}
            )
            await ws.receive()
            assert ws.close_code == 4014
        fake.allowed_privileged_intents = Intent.PRIVILEGED

        async with http.ws_connect(url) as ws:
            await recv(ws)
            await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": intents, "properties": {}}})
            ready = await recv(ws)
            assert (ready["op"], ready["t"], ready["s"]) == (0, "READY", 1)
            assert ready["d"]["user"]["username"] == "LastResort"
            assert ready["d"]["guilds"] == [{"id": str(fake.guild_id), "unavailable": True}]
            assert ready["d"]["application"]["id"] == str(fake.application_id)
            assert ready["d"]["resume_gateway_url"] == fake.gateway_url
            session_id = ready["d"]["session_id"]
            guild = await recv(ws)
            assert (guild["t"], guild["s"]) == ("GUILD_CREATE", 2)
            assert guild["d"]["member_count"] == 3  # owner, bot, alice
            # Without GUILD_PRESENCES only the bot is listed.
            assert [m["user"]["id"] for m in guild["d"]["members"]] == [str(fake.bot_user_id)]
            assert fake.sessions[0].intents == intents

            await ws.send_json({"op": 1, "d": 2})
            assert (await recv(ws))["op"] == 11

            fake.user_post(fake.text_channel_id, alice, "secret words")
            plain = await recv_event(ws, "MESSAGE_CREATE")
            assert plain["d"]["content"] == ""  # Message Content intent missing
            assert plain["s"] == 3
            fake.user_post(fake.text_channel_id, alice, "hey bot", mentions_bot=True)
            mention = await recv_event(ws, "MESSAGE_CREATE")
            assert mention["d"]["content"].endswith("hey bot")  # mentions are exempt
            assert mention["d"]["member"]["roles"] == []
            await ws.close(code=4000)  # a client-side drop keeps the session resumable

        missed = fake.user_post(fake.text_channel_id, alice, "while away", mentions_bot=True)
        async with http.ws_connect(url) as ws:
            await recv(ws)
            await ws.send_json({"op": 6, "d": {"token": fake.token, "session_id": session_id, "seq": 4}})
            replayed = await recv(ws)
            assert (replayed["t"], replayed["s"], replayed["d"]["id"]) == ("MESSAGE_CREATE", 5, missed["id"])
            assert (await recv(ws))["t"] == "RESUMED"
        async with http.ws_connect(url) as ws:
            await recv(ws)
            await ws.send_json({"op": 6, "d": {"token": fake.token, "session_id": "nope", "seq": 1}})
            assert await recv(ws) == {"op": 9, "d": False}
    assert fake.gateway_stats["resumes"] == 1
    assert fake.gateway_stats["invalid_sessions"] == 1


# --------------------------------------------------------------------------------------------------
# The real client
# --------------------------------------------------------------------------------------------------


async def test_login_ready_with_guild_cached(bot: LastResortTestBot, fake: FakeDiscord) -> None:
    assert bot.user is not None
    assert bot.user.name == "LastResort"
    assert bot.user.bot
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None
    channel = guild.get_channel(fake.text_channel_id)
    assert isinstance(channel, discord.TextChannel)
    assert {r.name for r in guild.roles} >= {"@everyone", "Moderators"}
    assert guild.me is not None
    perms = channel.permissions_for(guild.me)
    assert perms.manage_threads
    assert perms.create_public_threads

    [session] = fake.sessions
    assert session.intents == bot.intents.value
    assert session.identify["token"] == fake.token
    assert session.connected
    # discord.py logs in with /users/@me then /oauth2/applications/@me; tree.sync() is a PUT.
    paths = [(c.method, c.path) for c in fake.calls]
    assert ("GET", "/users/@me") in paths
    assert ("GET", "/oauth2/applications/@me") in paths
    [command] = fake.commands()
    assert command["name"] == "lastresort"
    assert {o["name"] for o in command["options"]} == {"status", "appeal"}


async def test_mention_thread_lock_flow(bot: LastResortTestBot, fake: FakeDiscord, alice: int, mod: int) -> None:
    posted = fake.user_post(fake.text_channel_id, alice, "can you help?", mentions_bot=True)
    message = await fake.wait_for(lambda: bot.received(posted["id"]), what="on_message")
    assert bot.user in message.mentions
    assert isinstance(message.author, discord.Member)
    assert message.content.endswith("can you help?")

    thread = await message.create_thread(name="Conversation")
    assert thread.id == message.id  # a thread started from a message shares its id
    reply = await thread.send(f"Hi <@{alice}>, I'm here.")  # AllowedMentions.none(): no ping
    [stored] = fake.channel_messages(thread.id)
    assert stored["content"] == f"Hi <@{alice}>, I'm here."
    assert stored["mentions"] == []
    assert int(stored["id"]) == reply.id
    assert fake.thread(thread.id)["type"] == ChannelType.PUBLIC_THREAD
    cached = await fake.wait_for(lambda: bot.get_channel(thread.id), what="THREAD_CREATE")
    assert isinstance(cached, discord.Thread)

    before_lock = fake.user_post(thread.id, alice, "thanks")
    await fake.wait_for(lambda: bot.received(before_lock["id"]))

    locked = await thread.edit(locked=True)
    assert locked.locked
    assert fake.thread(thread.id)["thread_metadata"]["locked"] is True
    await fake.wait_for(lambda: isinstance(t := bot.get_channel(thread.id), discord.Thread) and t.locked)

    with pytest.raises(DiscordError) as rejected:
        fake.user_post(thread.id, alice, "let me back in")
    assert rejected.value.code == 160005
    with pytest.raises(DiscordError) as edit_rejected:
        fake.user_edit(thread.id, int(before_lock["id"]), "edited after lock")
    assert edit_rejected.value.code == 160005

    by_mod = fake.user_post(thread.id, mod, "moderator note")
    await fake.wait_for(lambda: bot.received(by_mod["id"]), what="moderator post")
    await thread.send("the bot (MANAGE_THREADS) can still post")

    # Interactions still work in a locked (not archived) thread.
    interaction = fake.slash_command(alice, thread.id, "lastresort", "status")
    responses = await fake.wait_for(lambda: len(r := fake.interaction_responses(int(interaction["id"]))) >= 2 and r)
    assert responses[1]["kind"] == "followup"
    contents = [m["content"] for m in fake.channel_messages(thread.id)]
    assert contents[-1] == "status: ok (None)"
    assert "let me back in" not in contents


async def test_bot_permissions_are_enforced(bot: LastResortTestBot, fake: FakeDiscord, alice: int) -> None:
    fake.set_bot_permissions(create_public_threads=False, manage_threads=False)
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None
    channel = guild.get_channel(fake.text_channel_id)
    assert isinstance(channel, discord.TextChannel)

    def perms_updated() -> bool:
        assert guild.me is not None
        perms = channel.permissions_for(guild.me)
        return not perms.create_public_threads and not perms.manage_threads

    await fake.wait_for(perms_updated, what="GUILD_ROLE_UPDATE/CHANNEL_UPDATE")

    posted = fake.user_post(fake.text_channel_id, alice, "help", mentions_bot=True)
    message = await fake.wait_for(lambda: bot.received(posted["id"]))
    with pytest.raises(discord.Forbidden) as no_thread:
        await message.create_thread(name="nope")
    assert no_thread.value.code == 50013

    fake.set_bot_permissions(create_public_threads=True)
    thread = await message.create_thread(name="ok")
    with pytest.raises(discord.Forbidden) as no_lock:
        await thread.edit(locked=True)
    assert no_lock.value.code == 50013
    assert fake.thread(thread.id)["thread_metadata"]["locked"] is False
    with pytest.raises(discord.HTTPException) as twice:
        await message.create_thread(name="again")
    assert twice.value.code == 160004


async def test_archived_thread_rules(bot: LastResortTestBot, fake: FakeDiscord, alice: int, mod: int) -> None:
    thread = await bot_thread_from_mention(bot, fake, alice)
    first = fake.user_post(thread.id, alice, "first")

    await thread.edit(archived=True)
    with pytest.raises(DiscordError) as no_edit:
        fake.user_edit(thread.id, int(first["id"]), "edit while archived")
    assert no_edit.value.code == 50083
    with pytest.raises(DiscordError) as no_command:
        fake.slash_command(alice, thread.id, "lastresort", "status")
    assert no_command.value.code == 50083

    # Posting in an archived, unlocked thread unarchives it (documented Discord behaviour).
    fake.user_post(thread.id, alice, "anyone here?")
    assert fake.thread(thread.id)["thread_metadata"]["archived"] is False

    await thread.edit(archived=True, locked=True)
    with pytest.raises(DiscordError) as locked_post:
        fake.user_post(thread.id, alice, "hello?")
    assert locked_post.value.code == 160005
    with pytest.raises(DiscordError) as archived_post:
        fake.user_post(thread.id, mod, "a moderator must unarchive first")
    assert archived_post.value.code == 50083
    with pytest.raises(DiscordError) as not_mod:
        fake.user_edit_thread(alice, thread.id, archived=False)
    assert not_mod.value.code == 50013  # only moderators (or the creator) unarchive a locked thread
    fake.user_edit_thread(mod, thread.id, archived=False)
    fake.user_post(thread.id, mod, "reopened by a moderator")
    assert fake.thread(thread.id)["thread_metadata"] == {
        **fake.thread(thread.id)["thread_metadata"],
        "archived": False,
        "locked": True,
    }


async def test_raw_message_edit_fires_for_member_edit(bot: LastResortTestBot, fake: FakeDiscord, alice: int) -> None:
    posted = fake.user_post(fake.text_channel_id, alice, "original words")
    await fake.wait_for(lambda: bot.received(posted["id"]))
    fake.user_edit(fake.text_channel_id, int(posted["id"]), "better words")
    payload = await fake.wait_for(
        lambda: next((p for p in bot.raw_edits if p.message_id == int(posted["id"])), None), what="raw edit"
    )
    assert payload.data["content"] == "better words"
    assert payload.data["edited_timestamp"] is not None
    assert payload.channel_id == fake.text_channel_id
    assert payload.message.content == "better words"


async def test_slash_command_defer_and_followup(bot: LastResortTestBot, fake: FakeDiscord, mod: int) -> None:
    sent = fake.slash_command(mod, fake.text_channel_id, "lastresort", "status", {"detail": "brief"})
    interaction_id = int(sent["id"])
    assert sent["data"]["options"] == [
        {"type": 1, "name": "status", "options": [{"name": "detail", "type": 3, "value": "brief"}]}
    ]
    responses = await fake.wait_for(lambda: len(r := fake.interaction_responses(interaction_id)) >= 2 and r)
    assert responses[0]["kind"] == "callback"
    assert responses[0]["type"] == 5  # deferred, "thinking"
    assert responses[1]["kind"] == "followup"
    assert responses[1]["data"]["content"] == "status: ok (brief)"
    # The first follow-up after a defer replaces the thinking message instead of adding one.
    [message] = fake.channel_messages(fake.text_channel_id)
    assert message["content"] == "status: ok (brief)"
    assert int(message["id"]) == responses[0]["message_id"] == responses[1]["message_id"]
    assert message["flags"] & (1 << 7) == 0  # LOADING cleared
    assert message["interaction_metadata"]["user"]["id"] == str(mod)

    interaction, detail = bot.status_calls[0]
    assert detail == "brief"
    assert interaction.user.id == mod
    assert interaction.permissions.manage_threads  # moderators can be told apart at run time
    assert interaction.app_permissions.send_messages_in_threads
    assert interaction.locale is discord.Locale.american_english


async def test_persistent_button_click_reaches_callback(bot: LastResortTestBot, fake: FakeDiscord, alice: int) -> None:
    # A button row left by an earlier bot process: only the persistent view can answer it.
    row = {"type": 1, "components": [{"type": 2, "style": 2, "label": "Acknowledge", "custom_id": ACK_BUTTON_ID}]}
    old = fake.bot_post(fake.text_channel_id, "Conversation ended.", components=[row])
    await fake.wait_for(lambda: bot.received(old["id"]))

    clicked = fake.click(alice, old, ACK_BUTTON_ID)
    assert clicked["data"] == {"custom_id": ACK_BUTTON_ID, "component_type": 2}
    await fake.wait_for(lambda: bot.clicks == [alice], what="button callback")
    [response] = await fake.wait_for(lambda: fake.interaction_responses(int(clicked["id"])))
    assert response["type"] == 7  # update the message the button is on
    updated = fake.message(int(old["id"]))
    assert updated is not None
    assert updated["content"] == "acknowledged"
    assert updated["components"] == []
    with pytest.raises(LookupError):
        fake.click(alice, old, ACK_BUTTON_ID)  # the button is gone now


async def test_modal_prefill_and_submit(bot: LastResortTestBot, fake: FakeDiscord, alice: int) -> None:
    opened = fake.slash_command(alice, fake.text_channel_id, "lastresort", "appeal")
    [response] = await fake.wait_for(lambda: fake.interaction_responses(int(opened["id"])), what="modal")
    assert response["type"] == 9
    modal = response["data"]
    assert modal["custom_id"] == APPEAL_MODAL_ID
    assert modal["title"] == "Appeal"
    inputs = [c for row in modal["components"] for c in row.get("components", [row.get("component")])]
    assert inputs[0]["custom_id"] == "reason"
    assert inputs[0]["value"] == "I was polite"  # TextInput(default=...) is sent as "value"
    assert fake.last_modal(alice) == modal

    submitted = fake.submit_modal(alice, fake.text_channel_id, APPEAL_MODAL_ID, {"reason": "please continue"})
    await fake.wait_for(lambda: bot.modal_values == ["please continue"], what="on_submit")
    [answer] = await fake.wait_for(lambda: fake.interaction_responses(int(submitted["id"])))
    assert answer["type"] == 4
    assert answer["data"]["flags"] == 64
    [ephemeral] = fake.ephemeral_messages(alice)
    assert ephemeral["content"] == "appeal received"
    assert fake.channel_messages(fake.text_channel_id) == []  # ephemeral: not in the channel
    assert fake.last_modal(alice) is None
    with pytest.raises(LookupError):
        fake.submit_modal(alice, fake.text_channel_id, APPEAL_MODAL_ID, {})  # submitted once

    # Untouched inputs are submitted with their prefilled value.
    again = fake.slash_command(alice, fake.text_channel_id, "lastresort", "appeal")
    await fake.wait_for(lambda: fake.interaction_responses(int(again["id"])))
    fake.submit_modal(alice, fake.text_channel_id, APPEAL_MODAL_ID)
    await fake.wait_for(lambda: bot.modal_values == ["please continue", "I was polite"])


async def test_rate_limited_send_is_retried_once(bot: LastResortTestBot, fake: FakeDiscord) -> None:
    channel = bot.get_channel(fake.text_channel_id)
    assert isinstance(channel, discord.TextChannel)
    fake.fail_next("POST", r"^/channels/\d+/messages$", status=429, retry_after=0.2)
    started = time.monotonic()
    sent = await channel.send("after a 429")
    assert time.monotonic() - started >= 0.2
    assert [m["content"] for m in fake.channel_messages(fake.text_channel_id)] == ["after a 429"]
    assert int(fake.channel_messages(fake.text_channel_id)[0]["id"]) == sent.id
    assert [c.status for c in fake.calls_to("POST", r"^/channels/\d+/messages$")] == [429, 200]


async def test_send_with_file_uses_multipart_payload_json(bot: LastResortTestBot, fake: FakeDiscord) -> None:
    channel = bot.get_channel(fake.text_channel_id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("transcript", file=discord.File(io.BytesIO(b"hello"), filename="t.txt"))
    assert sent.attachments[0].filename == "t.txt"
    assert sent.attachments[0].size == 5
    [call] = fake.calls_to("POST", r"^/channels/\d+/messages$")
    assert call.json["content"] == "transcript"
    assert call.files == ("t.txt",)
    assert fake.attachment_bytes(sent.attachments[0].id) == b"hello"


async def test_gateway_disconnect_is_survived(bot: LastResortTestBot, fake: FakeDiscord, alice: int) -> None:
    assert fake.disconnect_gateway(code=4000) == 1
    # Posted while the bot is away: queued in its session and replayed on RESUME, exactly once.
    missed = fake.user_post(fake.text_channel_id, alice, "while you were away", mentions_bot=True)
    await fake.wait_for(lambda: fake.gateway_stats["resumes"] == 1, what="RESUME")
    await fake.wait_for(lambda: bot.received(missed["id"]), what="replayed message")
    await fake.wait_for(lambda: bot.resumes == 1)
    later = fake.user_post(fake.text_channel_id, alice, "after resume")
    await fake.wait_for(lambda: bot.received(later["id"]))
    assert sum(1 for m in bot.messages if m.id == int(missed["id"])) == 1

    # A session the gateway forgot: RESUME gets op 9 and the client identifies again.
    fake.disconnect_gateway(code=1001, resumable=False)
    await fake.wait_for(lambda: fake.gateway_stats["identifies"] == 2, what="re-IDENTIFY")
    await fake.wait_for(lambda: bot.readies == 2)
    fresh = fake.user_post(fake.text_channel_id, alice, "new session")
    await fake.wait_for(lambda: bot.received(fresh["id"]))
    assert fake.gateway_stats["invalid_sessions"] == 1


async def test_two_sessions_both_receive_events(fake: FakeDiscord, alice: int) -> None:
    old, new = LastResortTestBot(), LastResortTestBot()  # a rolling deploy: both connected
    old_task = await start_bot(old, fake.token)
    new_task = await start_bot(new, fake.token)
    try:
        assert [s.connected for s in fake.sessions] == [True, True]
        posted = fake.user_post(fake.text_channel_id, alice, "hello both", mentions_bot=True)
        await fake.wait_for(lambda: old.received(posted["id"]) and new.received(posted["id"]))

        only_new = fake.user_post(fake.text_channel_id, alice, "just one", session_id=fake.sessions[1].session_id)
        await fake.wait_for(lambda: new.received(only_new["id"]))
        await asyncio.sleep(0.05)
        assert old.received(only_new["id"]) is None
    finally:
        await stop_bot(old, old_task)
        await stop_bot(new, new_task)


async def test_dm_round_trip(bot: LastResortTestBot, fake: FakeDiscord, alice: int) -> None:
    dm_id = fake.dm_channel_id(alice)
    posted = fake.user_post(dm_id, alice, "private question")
    message = await fake.wait_for(lambda: bot.received(posted["id"]))
    assert isinstance(message.channel, discord.DMChannel)
    assert message.content == "private question"
    await message.channel.send("private answer")
    assert [m["content"] for m in fake.channel_messages(dm_id)] == ["private question", "private answer"]

    user = await bot.fetch_user(alice)
    fake.close_dms(alice)
    with pytest.raises(discord.Forbidden) as closed:
        await user.send("hello?")
    assert closed.value.code == 50007


async def test_clean_shutdown_without_unclosed_warnings(fake: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = LastResortTestBot()
        task = await start_bot(client, fake.token)
        await stop_bot(client, task)
        del client, task
        gc.collect()
        await asyncio.sleep(0)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert "Unclosed" not in caplog.text
    await fake.wait_for(lambda: not fake.sessions[0].connected, what="server saw the close")
    [session] = fake.sessions
    [(session_id, code, by_fake)] = fake.gateway_closes
    assert (session_id, by_fake) == (session.session_id, False)
    # Client.close() asks for 1000, but its reader task usually sends 4000 first; only 1000/1001
    # end a session, so what the fake (like Discord) keeps depends on the code on the wire.
    assert code in (1000, 4000)
    assert session.resumable == (code == 4000)


async def test_wait_for_times_out(fake: FakeDiscord) -> None:
    with pytest.raises(TimeoutError):
        await fake.wait_for(lambda: False, timeout=0.05, what="nothing")
    assert fake.wait_for_blocking(lambda: 42, timeout=0.05) == 42


async def test_a_rest_outage_lasts_its_window(bot: LastResortTestBot, fake: FakeDiscord) -> None:
    channel = bot.get_channel(fake.text_channel_id)
    assert isinstance(channel, discord.TextChannel)
    fake.fail_for("POST", r"^/channels/\d+/messages$", 0.5, status=503)
    for _ in range(2):
        with pytest.raises(discord.DiscordServerError):
            await channel.send("during the outage")
    await asyncio.sleep(0.6)
    await channel.send("after it")
    assert [m["content"] for m in fake.channel_messages(fake.text_channel_id)] == ["after it"]
    assert [c.status for c in fake.calls_to("POST", r"^/channels/\d+/messages$")] == [503, 503, 200]


async def test_attachments_forwards_stickers_and_webhooks_arrive_as_discord_sends_them(
    bot: LastResortTestBot, fake: FakeDiscord, alice: int
) -> None:
    posted = fake.user_post(fake.text_channel_id, alice, "see file", attachments=[("a.txt", "text/plain", b"abc")])
    message = await fake.wait_for(lambda: bot.received(posted["id"]), what="the message")
    [attachment] = message.attachments
    assert attachment.url.startswith(fake.base_url) and attachment.content_type == "text/plain"
    assert await attachment.read() == b"abc"  # served on loopback, like Discord's CDN

    forward = fake.user_post(fake.text_channel_id, alice, "", forwarded=posted)
    forwarded = await fake.wait_for(lambda: bot.received(forward["id"]), what="the forward")
    [snapshot] = forwarded.message_snapshots
    assert snapshot.content == "see file" and snapshot.attachments[0].filename == "a.txt"
    assert forwarded.reference is not None and forwarded.reference.message_id == int(posted["id"])

    sticker = fake.user_post(fake.text_channel_id, alice, "", stickers=["wave"])
    assert [s.name for s in (await fake.wait_for(lambda: bot.received(sticker["id"]))).stickers] == ["wave"]

    hook = fake.webhook_post(fake.text_channel_id, "feed item")
    from_hook = await fake.wait_for(lambda: bot.received(hook["id"]), what="the webhook post")
    assert from_hook.webhook_id is not None and not from_hook.author.bot


async def test_send_messages_in_threads_can_be_taken_away(
    bot: LastResortTestBot, fake: FakeDiscord, alice: int
) -> None:
    thread = await bot_thread_from_mention(bot, fake, alice)
    fake.set_bot_permissions(send_messages_in_threads=False)
    await fake.wait_for(
        lambda: not thread.permissions_for(thread.guild.me).send_messages_in_threads or None, what="CHANNEL_UPDATE"
    )
    with pytest.raises(discord.Forbidden) as refused:
        await thread.send("hello")
    assert refused.value.code == 50013
    fake.set_bot_permissions(send_messages_in_threads=True)
    await fake.wait_for(lambda: thread.permissions_for(thread.guild.me).send_messages_in_threads or None)
    await thread.send("hello again")


async def test_a_silent_gateway_never_says_hello(fake: FakeDiscord) -> None:
    fake.silent_gateway = True
    async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url) as ws:
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.5)
