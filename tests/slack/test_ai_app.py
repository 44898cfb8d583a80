"""Slack as an AI app, end to end through the real Bolt app: feedback under every answer, the assistant
container (suggested prompts, status, title, one conversation per assistant thread)."""

from __future__ import annotations

from datetime import timedelta

from bots.slack.buttons import STALE
from bots.slack.render import ACTION_ANSWER_FEEDBACK
from core.domain import VoteCounts
from core.service import VOTE_SAME, VOTE_THANKS
from tests.slack.harness import ALICE, BOB, CHANNEL, MOD, Bot, block_text
from tests.support.fake_slack import FakeSlack


async def vote(bot: Bot, answer: dict[str, object], user: str, side: str) -> str:
    before = len(bot.slack.responses)
    sent = await bot.driver.click(answer, ACTION_ANSWER_FEEDBACK, user, side, channel=CHANNEL)
    assert sent.status == 200
    await bot.slack.wait_for_async(lambda: len(bot.slack.responses) > before, timeout=10, what="a response")
    return str(bot.slack.responses[-1].body["text"])


async def test_feedback_buttons_under_answers_record_one_vote_per_person(bot: Bot, slack: FakeSlack) -> None:
    root = await bot.mention("hello")
    (answer,) = await bot.answered(root)
    assert [b["type"] for b in answer["blocks"]][-1] == "context_actions"

    assert await vote(bot, answer, ALICE, "positive") == VOTE_THANKS
    assert await vote(bot, answer, ALICE, "positive") == VOTE_SAME  # a second click counts once
    assert await vote(bot, answer, BOB, "negative") == VOTE_THANKS
    assert await vote(bot, answer, BOB, "positive") == VOTE_THANKS  # changed their mind: replaced
    conversation = await bot.conversation(root)
    assert conversation is not None
    since = conversation.created_at - timedelta(minutes=1)
    assert await bot.runtime.store.answer_votes(since=since) == VoteCounts(helpful=2, not_helpful=0)

    # The next answer has its own buttons and its own votes.
    await bot.say("and another thing", root)
    second = (await bot.answered(root, 2))[-1]
    assert await vote(bot, second, ALICE, "negative") == VOTE_THANKS
    assert await bot.runtime.store.answer_votes(since=since) == VoteCounts(helpful=2, not_helpful=1)

    # The figures appear beside the feedback on endings, in stats and on the Home tab.
    stats = await bot.command("stats", user=MOD)
    assert "Feedback: answer helpful: *2*" in stats and "Feedback: answer not helpful: *1*" in stats
    assert "Feedback: ending was right" in stats
    await bot.driver.app_home_opened(MOD)
    await slack.wait_for_async(lambda: MOD in slack.views, timeout=10)
    assert "Feedback: answer helpful: *2*" in block_text(slack.views[MOD])


async def test_a_vote_for_a_conversation_elsewhere_does_not_count(bot: Bot, slack: FakeSlack) -> None:
    slack.add_channel("C0OTHER", "other")
    root = await bot.mention("hello")
    (answer,) = await bot.answered(root)
    conversation = await bot.conversation(root)
    assert conversation is not None
    elsewhere = slack.add_message("C0OTHER", BOB, "look", blocks=answer["blocks"])
    before = len(slack.responses)
    sent = await bot.driver.click(elsewhere, ACTION_ANSWER_FEEDBACK, BOB, "positive", channel="C0OTHER")
    assert sent.status == 200
    await slack.wait_for_async(lambda: len(slack.responses) > before, timeout=10)
    assert slack.responses[-1].body["text"] == STALE
    since = conversation.created_at - timedelta(minutes=1)
    assert await bot.runtime.store.answer_votes(since=since) == VoteCounts()
