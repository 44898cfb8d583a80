"""The Slack end-to-end harness: the real Bolt app the adapter builds, a real SQLite store and Claude
client, the fake Anthropic API behind the client and the fake Slack Web API in front (and, for Socket Mode,
the fake Socket Mode server)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bots.environment import Environment
from bots.runtime import Runtime
from bots.slack.bot import SlackAdapter
from core.domain import Conversation, ThreadKey
from core.settings import Settings
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_slack import FakeSlack, SlackDriver, find_buttons, serve_web_app
from tests.support.fake_slack_socket import FakeSocketMode, SocketDriver
from tests.support.runtime import runtime_for, until_idle

SECRET = "e2e-signing-secret-0123456789"
CHANNEL = "C0GENERAL"
ALICE, BOB = "U0ALICE", "U0BOB"
MOD, GROUP_MOD, ADMIN = "U0MOD", "U0GROUPMOD", "U0ADMIN"
MODS_GROUP = "S0MODS"


# -- the bot under test ---------------------------------------------------------------------------------


@dataclass
class Bot:
    slack: FakeSlack
    claude: FakeAnthropic
    driver: SlackDriver
    runtime: Runtime

    async def idle(self, quiet: float = 0.2) -> None:
        await until_idle(self.runtime.work, quiet=quiet)

    def replies(self, ts: str) -> list[dict[str, Any]]:
        return [m for m in self.slack.bot_messages(CHANNEL, ts) if m["ts"] != ts]

    async def answered(self, ts: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait for `count` bot messages in the thread, then for the bot to finish (final text in place)."""
        await self.slack.wait_for_async(lambda: len(self.replies(ts)) >= count, timeout=10, what="a reply")
        await self.idle()
        return self.replies(ts)

    async def starter(self, containing: str) -> dict[str, Any]:
        """Wait for a top-level bot message (a new thread the bot opened) whose text contains `containing`."""

        def find() -> dict[str, Any] | None:
            found = [m for m in self.slack.bot_messages(CHANNEL) if containing in m["text"]]
            return found[0] if found else None

        message = await self.slack.wait_for_async(find, timeout=10, what=f"a thread starter with {containing!r}")
        assert message is not None
        assert message.get("thread_ts", message["ts"]) == message["ts"]  # top level
        return message

    async def mention(self, text: str, user: str = ALICE) -> str:
        """A mention as Slack delivers it (app_mention and message); returns the post's ts."""
        sent = await self.driver.post_mention(CHANNEL, user, text)
        assert all(reply.status == 200 for reply in sent)
        return str(sent[0].payload["event"]["ts"])

    async def say(self, text: str, thread_ts: str, user: str = ALICE) -> str:
        sent = await self.driver.message(CHANNEL, user, text, thread_ts=thread_ts)
        assert sent.status == 200
        return str(sent.payload["event"]["ts"])

    async def command(self, text: str, user: str) -> str:
        """Run /lastresort and return what it answered the invoker (through response_url)."""
        before = len(self.slack.responses)
        sent = await self.driver.command(text, user=user, channel=CHANNEL)
        assert (sent.status, sent.body) == (200, "")
        await self.slack.wait_for_async(lambda: len(self.slack.responses) > before, timeout=10, what="a response")
        return str(self.slack.responses[-1].body["text"])

    async def click(self, message: dict[str, Any], action_id: str, user: str) -> None:
        sent = await self.driver.click(message, action_id, user, channel=CHANNEL)
        assert sent.status == 200

    async def conversation(self, ts: str) -> Conversation | None:
        return await self.runtime.service.find_conversation(ThreadKey("slack", CHANNEL, ts))

    def model_calls(self) -> int:
        return len(self.claude.message_requests())

    def last_user_texts(self) -> list[str]:
        messages = self.claude.message_requests()[-1].json["messages"]
        return [
            block["text"]
            for message in messages
            if message["role"] == "user"
            for block in message["content"]
            if block.get("type") == "text"
        ]


def permalink(ts: str) -> str:
    return f"https://fake.slack.com/archives/{CHANNEL}/p{ts.replace('.', '')}"


def action_ids(message: dict[str, Any] | None) -> list[str]:
    return [element["action_id"] for _, element in find_buttons((message or {}).get("blocks", []))]


def block_text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks", []), ensure_ascii=False)


@asynccontextmanager
async def running_bot(
    slack: FakeSlack, claude: FakeAnthropic, settings: Settings, db: Path, *, socket: FakeSocketMode | None = None
) -> AsyncIterator[Bot]:
    """The bot in HTTP mode (signed requests to its events URL), or in Socket Mode over `socket`."""
    env = Environment(
        anthropic_api_key="sk-ant-test",
        anthropic_base_url=claude.base_url,
        slack_bot_token=slack.token,
        slack_signing_secret=None if socket else SECRET,
        slack_app_token=socket.app_token if socket else None,
        slack_api_url=slack.api_url,
    )
    async with runtime_for(env, settings, claude, db) as runtime:
        adapter = SlackAdapter(runtime)
        app = web.Application()
        app.add_routes(adapter.routes())
        async with serve_web_app(app) as base_url:
            await adapter.start()
            driver: SlackDriver
            if socket is not None:
                await socket.wait_connected()
                driver = SocketDriver(socket)
            else:
                driver = SlackDriver(SECRET, f"{base_url}/slack/events", fake=slack)
            bot = Bot(slack, claude, driver, runtime)
            try:
                yield bot
            finally:
                await bot.idle()
                await adapter.stop()


def populate(fake: FakeSlack) -> None:
    """The workspace every Slack test starts from."""
    fake.add_channel(CHANNEL, "general")
    fake.add_user(ALICE, "alice", display_name="Alice")
    fake.add_user(BOB, "bob", display_name="Bob")
    fake.add_user(MOD, "mod")
    fake.add_user(GROUP_MOD, "groupmod")
    fake.add_user(ADMIN, "admin", is_admin=True)
    fake.add_usergroup(MODS_GROUP, "mods", [GROUP_MOD])
