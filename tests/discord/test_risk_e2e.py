"""The risk review on Discord, end to end: a moderator's `end` is held while someone may be at risk, and
`override: True` ends it anyway, audited with the moderator's id (issue 9)."""

from __future__ import annotations

from tests.discord.test_e2e import Bot, bot, fake  # noqa: F401 (fixtures)
from tests.support.fake_anthropic import Reply, keyword_review
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
    assert answer.startswith(f"Ended conversation #{conversation.id} and locked <#{thread}>.")
    assert "You overrode the hold (self_harm)" in answer
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


async def test_forwarded_and_attached_text_reaches_the_risk_review(bot: Bot, fake: FakeDiscord) -> None:  # noqa: F811
    bot.claude.set_review_responder(keyword_review({"going under for good": "self_harm"}))
    thread = await bot.mention("a friend sent me this")
    await bot.answered(thread)
    original = fake.user_post(fake.text_channel_id, bot.bob, "I'm going under for good this time.")
    fake.user_post(thread, bot.alice, "", forwarded=original)
    await bot.answered(thread, 2)
    note = ("note.txt", "text/plain", b"Tell them I'm going under for good.")
    fake.user_post(thread, bot.alice, "and this file", attachments=[note])
    await bot.answered(thread, 3)
    sent = [str(r.json["messages"][0]["content"][0]["text"]) for r in bot.claude.review_requests()]
    assert any("[Forwarded message]" in t and "going under for good this time" in t for t in sent)
    assert any('[Attached text file "note.txt"]' in t for t in sent)
    conversation = await bot.conversation(fake.text_channel_id, thread)
    assert conversation is not None
    marks = await bot.runtime.store.risk_marks(
        conversation_id=conversation.id, platform="discord", author_ids=[], since=bot.runtime.clock.now()
    )
    assert marks.conversation_marked and marks.categories == {"self_harm"}
