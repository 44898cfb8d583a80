"""Slack as an AI app, end to end through the real Bolt app: feedback under every answer, the assistant
container (suggested prompts, status, title, one conversation per assistant thread)."""

from __future__ import annotations

from datetime import timedelta

from bots.slack.buttons import STALE
from bots.slack.render import ACTION_ANSWER_FEEDBACK, ACTION_CONFIRM_END
from core.domain import ThreadKey, VoteCounts
from core.service import VOTE_SAME, VOTE_THANKS
from tests.slack.harness import ALICE, BOB, CHANNEL, MOD, Bot, block_text
from tests.support.fake_anthropic import Reply
from tests.support.fake_slack import FakeSlack
from tests.support.model_scripts import END_REQUESTED


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


# -- the assistant container ------------------------------------------------------------------------------


async def test_the_assistant_thread_gets_prompts_a_status_before_the_answer_and_the_answer(
    bot: Bot, slack: FakeSlack
) -> None:
    dm, thread, sent = await bot.driver.assistant_thread_started(ALICE)
    assert sent.status == 200
    await slack.wait_for_async(lambda: (slack.assistant_thread(dm, thread) or {}).get("prompts"), timeout=10)
    opened = slack.assistant_thread(dm, thread)
    assert opened is not None and opened["prompts"] is not None
    assert 1 <= len(opened["prompts"]["prompts"]) <= 4
    assert bot.model_calls() == 0  # opening the container asks Claude nothing

    bot.claude.chunk_delay = 0.2
    bot.claude.push(Reply.text("**Sure.** " + "Here is a thought. " * 20))
    asked = await bot.driver.message(dm, ALICE, "How do tides work?\nAnd why twice a day?", thread_ts=thread)
    assert asked.status == 200
    await slack.wait_for_async(lambda: [m for m in slack.bot_messages(dm, thread) if m["ts"] != thread], timeout=10)
    await bot.idle()
    (answer,) = [m for m in slack.bot_messages(dm, thread) if m["ts"] != thread]
    (markdown,) = [b["text"] for b in answer["blocks"] if b["type"] == "markdown"]
    assert markdown.startswith("**Sure.**")
    assert "context_actions" in [b["type"] for b in answer["blocks"]]

    # The status came before the answer started, and was cleared after it.
    methods = [c.method for c in slack.calls]
    status_at = methods.index("assistant.threads.setStatus")
    assert status_at < methods.index("chat.startStream")
    thread_state = slack.assistant_thread(dm, thread)
    assert thread_state is not None
    assert thread_state["statuses"][0] == "is thinking…" and thread_state["status"] == ""
    assert thread_state["title"] == "How do tides work?"

    # One conversation per assistant thread: the next message continues it; the title stays.
    await bot.driver.message(dm, ALICE, "thanks!", thread_ts=thread)
    await slack.wait_for_async(lambda: len(slack.bot_messages(dm, thread)) >= 3, timeout=10)
    await bot.idle()
    conversation = await bot.runtime.service.find_conversation(ThreadKey("slack", dm, thread))
    assert conversation is not None and conversation.owner_id == ALICE
    assert bot.last_user_texts() == [
        "[Alice (U0ALICE)] How do tides work?\nAnd why twice a day?",
        "[Alice (U0ALICE)] thanks!",
    ]
    assert len(slack.calls_to("assistant.threads.setTitle")) == 1


async def test_endings_and_branching_work_in_the_assistant_thread(bot: Bot, slack: FakeSlack) -> None:
    dm, thread, _ = await bot.driver.assistant_thread_started(ALICE)
    first = await bot.driver.message(dm, ALICE, "first question", thread_ts=thread)
    first_ts = str(first.payload["event"]["ts"])
    await slack.wait_for_async(lambda: len(slack.bot_messages(dm, thread)) >= 2, timeout=10)
    await bot.idle()

    # Editing a message branches: a new thread continues from that point.
    edited = await bot.driver.message_changed(dm, ALICE, "first question, rephrased", first_ts, thread)
    assert edited.status == 200
    starter = await slack.wait_for_async(
        lambda: next((m for m in slack.bot_messages(dm) if "new conversation branched" in m["text"]), None),
        timeout=10,
    )
    await slack.wait_for_async(lambda: len(slack.bot_messages(dm, starter["ts"])) >= 2, timeout=10)
    await bot.idle()
    assert bot.last_user_texts()[-1] == "[Alice (U0ALICE)] first question, rephrased"

    # The user asks to end it: confirm, and the notice arrives in the assistant thread.
    bot.claude.push(END_REQUESTED)
    await bot.driver.message(dm, ALICE, "please end this conversation", thread_ts=thread)
    question = await slack.wait_for_async(
        lambda: next((m for m in slack.bot_messages(dm, thread) if ACTION_CONFIRM_END in str(m.get("blocks"))), None),
        timeout=10,
    )
    await bot.idle()
    await bot.driver.click(question, ACTION_CONFIRM_END, ALICE, channel=dm)
    notice = await slack.wait_for_async(
        lambda: next(
            (m for m in slack.bot_messages(dm, thread) if m.get("blocks", [{}])[0].get("type") == "header"), None
        ),
        timeout=10,
    )
    assert "Start a new conversation" in block_text(notice)
    await bot.idle()
    calls = bot.model_calls()
    await bot.driver.message(dm, ALICE, "hello again?", thread_ts=thread)
    await slack.wait_for_async(lambda: slack.ephemerals, timeout=10)
    await bot.idle()
    assert bot.model_calls() == calls  # the ended thread stays ended
    conversation = await bot.runtime.service.find_conversation(ThreadKey("slack", dm, thread))
    assert conversation is not None and conversation.is_ended
