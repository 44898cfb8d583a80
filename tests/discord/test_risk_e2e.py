"""The risk review on Discord, end to end: a moderator's `end` is held while someone may be at risk, and
`override: True` ends it anyway, audited with the moderator's id (issue 9)."""

from __future__ import annotations

from tests.discord.test_e2e import Bot, bot, fake  # noqa: F401 (fixtures)
from tests.support.fake_anthropic import Reply
from tests.support.fake_discord import FakeDiscord


async def test_a_moderator_end_is_held_while_someone_may_be_at_risk(bot: Bot, fake: FakeDiscord) -> None:  # noqa: F811
    thread = await bot.mention("I want to die")
    await bot.answered(thread)
    status = await bot.command(bot.mod, thread, "lastresort-mod", "status")
    assert "Marked at risk" in status and "self_harm" in status
    answer = await bot.command(bot.mod, thread, "lastresort-mod", "end", {"reason": "spam"})
    assert answer.startswith("Not ended: someone in conversation") and "override: True" in answer
    conversation = await bot.conversation(fake.text_channel_id, thread)
    assert conversation is not None and not conversation.is_ended
    assert fake.thread(thread)["thread_metadata"]["locked"] is False

    answer = await bot.command(bot.mod, thread, "lastresort-mod", "end", {"reason": "spam", "override": True})
    assert answer == f"Ended conversation #{conversation.id} and locked <#{thread}>."
    events = await bot.runtime.store.events(since=bot.runtime.clock.now().replace(year=2000))
    assert ("moderator_override", "at_risk", f"moderator:{bot.mod}") in [(e.kind, e.reason, e.actor) for e in events]


async def test_a_moderator_end_fails_closed_without_a_review(bot: Bot, fake: FakeDiscord) -> None:  # noqa: F811
    thread = await bot.mention("hello")
    await bot.answered(thread)
    bot.claude.push_review(Reply.error(400, message="bad request"))
    answer = await bot.command(bot.mod, thread, "lastresort-mod", "end")
    assert answer.startswith("Not ended: the risk review could not run")
    conversation = await bot.conversation(fake.text_channel_id, thread)
    assert conversation is not None and not conversation.is_ended
