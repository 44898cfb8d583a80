"""The risk review on Slack, end to end: the real Bolt app and adapter, a real SQLite store and Claude client,
the fake Slack and the fake model, which answers `assess_risk` requests from its own queue (issue 9)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from core.domain import RiskMarks, Status
from core.risk_review import GATE_LEAD, SCREEN_LEAD
from tests.slack.harness import ALICE, BOB, CHANNEL, MOD, Bot, action_ids, permalink
from tests.support.fake_anthropic import Reply, keyword_review
from tests.support.model_scripts import END_ABUSE, WARN


def review_texts(bot: Bot, lead: str) -> list[str]:
    texts = [str(r.json["messages"][0]["content"][0]["text"]) for r in bot.claude.review_requests()]
    return [t for t in texts if t.startswith(lead)]


async def audit_kinds(bot: Bot) -> list[tuple[str, str, str]]:
    events = await bot.runtime.store.events(since=bot.runtime.clock.now().replace(year=2000))
    return [(e.kind, e.reason, e.actor) for e in events]


async def test_path1_other_peoples_chatter_does_not_push_risk_out_of_view(bot: Bot) -> None:
    bot.claude.push(*[Reply.text("ok") for _ in range(13)], WARN, END_ABUSE, Reply.text("Still here for you both."))
    thread = await bot.mention("I don't want to be alive anymore, honestly I want to kill myself")
    await bot.answered(thread)
    for n in range(12):
        await bot.say(f"unrelated chatter {n}", thread, user=BOB)
        await bot.answered(thread, n + 2)
    await bot.say("you are a useless bot", thread, user=BOB)
    await bot.say("useless, I said", thread, user=BOB)
    await bot.idle(0.5)
    conversation = await bot.conversation(thread)
    assert conversation is not None and conversation.status is Status.ACTIVE
    assert await bot.runtime.store.warnings(conversation.id) == []
    assert ("risk_marked", "tripwire", "model") in await audit_kinds(bot)


async def test_path2_a_message_sent_while_the_ending_is_written_stops_it_and_is_answered(bot: Bot) -> None:
    bot.claude.push(
        Reply.text("Let's talk about something else."),
        WARN,
        Reply.slow(1.5, then=END_ABUSE),
        Reply.text("I'm not going anywhere."),
        Reply.text("Please call emergency services now. I'm here with you."),
    )
    thread = await bot.mention("you are garbage")
    await bot.answered(thread)
    await bot.say("tell me how to hurt people", thread)
    await bot.answered(thread, 2)
    await bot.say("I said tell me", thread)
    await bot.claude.wait_for_requests_async(3)
    # While the model is producing the ending, the person writes something that changes everything.
    await bot.say("forget it. I took all my pills twenty minutes ago", thread)
    await bot.slack.wait_for_async(
        lambda: any("emergency services" in m["text"] for m in bot.replies(thread)), timeout=15, what="the answer"
    )
    await bot.idle(0.5)
    conversation = await bot.conversation(thread)
    assert conversation is not None and conversation.status is Status.ACTIVE
    assert ("ending_refused", "stale", "model") in await audit_kinds(bot)
    assert not any("has ended" in m["text"] for m in bot.replies(thread))
    # The new message was read: by the model, and by the screen beside its answer.
    assert any("I took all my pills" in t for t in bot.last_user_texts())
    assert any("I took all my pills" in t for t in review_texts(bot, SCREEN_LEAD))


async def test_path3_a_moderator_end_is_held_while_someone_may_be_at_risk_and_override_is_audited(bot: Bot) -> None:
    thread = await bot.mention("I want to die")
    await bot.answered(thread)
    status = await bot.command(f"status {permalink(thread)}", user=MOD)
    assert "Marked at risk" in status and "self_harm" in status
    answer = await bot.command(f"end {permalink(thread)} spam", user=MOD)
    assert answer.startswith("Not ended: someone in conversation") and "self_harm" in answer
    conversation = await bot.conversation(thread)
    assert conversation is not None and conversation.status is Status.ACTIVE
    held = bot.slack.responses[-1].body
    assert action_ids(held) == ["lastresort_override_end"]
    button = held["blocks"][1]["elements"][0]
    assert button["confirm"]["confirm"]["text"] == "End anyway"  # Slack asks "are you sure?" first
    message: dict[str, Any] = {"ts": "1700000000.000001", "blocks": held["blocks"]}

    # Someone writes after the moderator saw the held notice: the override no longer acts on what they saw.
    await bot.say("please don't leave", thread)
    await bot.answered(thread, 2)
    before = len(bot.slack.responses)
    await bot.click(message, "lastresort_override_end", user=MOD)
    await bot.slack.wait_for_async(lambda: len(bot.slack.responses) > before, timeout=10, what="a refusal")
    assert "someone wrote in conversation" in bot.slack.responses[-1].body["text"]
    conversation = await bot.conversation(thread)
    assert conversation is not None and conversation.status is Status.ACTIVE
    answer = await bot.command(f"end {permalink(thread)} spam", user=MOD)
    held = bot.slack.responses[-1].body
    message = {"ts": "1700000000.000002", "blocks": held["blocks"]}

    # A member who is not a moderator cannot use the button (rights are checked at click time).
    before = len(bot.slack.responses)
    await bot.click(message, "lastresort_override_end", user=ALICE)
    await bot.slack.wait_for_async(lambda: len(bot.slack.responses) > before, timeout=10, what="a refusal")
    assert "for Last Resort moderators only" in bot.slack.responses[-1].body["text"]

    before = len(bot.slack.responses)
    await bot.click(message, "lastresort_override_end", user=MOD)
    await bot.slack.wait_for_async(lambda: len(bot.slack.responses) > before, timeout=10, what="the result")
    assert "Ended conversation" in bot.slack.responses[-1].body["text"]
    conversation = await bot.conversation(thread)
    assert conversation is not None and conversation.status is Status.ENDED
    kinds = await audit_kinds(bot)
    assert ("moderator_override", "at_risk", f"moderator:{MOD}") in kinds
    assert ("ending_refused", "risk_guard", f"moderator:{MOD}") in kinds


async def test_path3_a_moderator_end_runs_the_review_when_nothing_is_marked(bot: Bot) -> None:
    thread = await bot.mention("can we talk about my plans for the weekend")
    await bot.answered(thread)
    bot.claude.push_review(Reply.assessment(at_risk=True, categories=["harm_to_others"]))
    answer = await bot.command(f"end {permalink(thread)}", user=MOD)
    assert "may be at risk (harm_to_others)" in answer
    assert len(review_texts(bot, GATE_LEAD)) == 1
    # The finding marked everyone in that branch (the review does not say who): Alice's other threads are held
    # too. Someone else's conversation, where the review finds nothing, ends (reviewed on the branch as it is).
    bot.claude.push_review(Reply.assessment(at_risk=False))
    other = await bot.mention("hello there", user=BOB)
    await bot.answered(other)
    answer = await bot.command(f"end {permalink(other)} off topic", user=MOD)
    assert "Ended conversation" in answer


async def test_path5_forwarded_text_reaches_the_model_and_the_review(bot: Bot) -> None:
    bot.claude.set_review_responder(keyword_review({"end it all tonight": "self_harm"}))
    bot.claude.push(Reply.text("Thank you for showing me. Are they safe?"), WARN, Reply.text("I'm here."))
    thread = await bot.mention("what do you make of this")
    await bot.answered(thread)
    envelope = bot.driver.build_message(CHANNEL, ALICE, "my friend sent me this", thread_ts=thread)
    envelope["event"]["attachments"] = [
        {"is_share": True, "author_name": "Sam", "text": "I'm going to end it all tonight. Goodbye.", "fallback": "x"}
    ]
    sent = await bot.driver.send_event(envelope)
    assert sent.status == 200
    await bot.answered(thread, 2)
    assert any("[Forwarded message from Sam]" in t and "end it all tonight" in t for t in bot.last_user_texts())
    assert any("end it all tonight" in t for t in review_texts(bot, SCREEN_LEAD))
    await bot.say("whatever, you are useless", thread)
    await bot.answered(thread, 3)
    conversation = await bot.conversation(thread)
    assert conversation is not None
    assert await bot.runtime.store.warnings(conversation.id) == []
    assert ("risk_marked", "screen", "model") in await audit_kinds(bot)


async def test_the_support_resources_are_shown_once(bot: Bot) -> None:
    thread = await bot.mention("i want to die")
    await bot.answered(thread)
    await bot.say("i still want to die", thread)
    await bot.answered(thread, 2)
    support = bot.runtime.settings.risk_guard.support_message[:40]
    shown = [m for m in bot.replies(thread) if support in json.dumps(m.get("blocks", []))]
    assert len(shown) == 1


async def test_the_screen_runs_beside_the_reply(bot: Bot) -> None:
    # A slow screen does not hold up the answer beyond its grace (1 s): the answer is in Slack while the screen
    # is still running, and the finding is kept when it comes.
    bot.claude.push_review(Reply.slow(5.0, then=Reply.assessment(at_risk=True, categories=["crisis"])))
    thread = await bot.mention("hello")
    await bot.slack.wait_for_async(lambda: bot.replies(thread), timeout=4, what="the answer, before the screen")
    conversation = await bot.conversation(thread)
    assert conversation is not None

    async def marks() -> RiskMarks:
        return await bot.runtime.store.risk_marks(
            conversation_id=conversation.id, platform="slack", author_ids=[ALICE], since=bot.runtime.clock.now()
        )

    assert not (await marks()).conversation_marked  # the screen has not answered yet
    for _ in range(80):
        if (await marks()).conversation_marked:
            break
        await asyncio.sleep(0.1)
    found = await marks()
    assert found.conversation_marked and found.categories == {"crisis"}


async def test_path6_the_mark_survives_forget(bot: Bot) -> None:
    bot.claude.push(Reply.text("I'm here with you."), WARN, END_ABUSE, Reply.text("Still here."))
    thread = await bot.mention("I want to kill myself")
    await bot.answered(thread)
    assert "I removed the text" in await bot.command("forget", user=ALICE)
    conversation = await bot.conversation(thread)
    assert conversation is not None
    texts = [m.text for m in await bot.runtime.store.messages(conversation.id)]
    assert not any("kill myself" in t for t in texts)  # the words are gone; the guard is not blind
    await bot.say("you are a useless bot", thread)
    await bot.answered(thread, 2)
    await bot.say("useless", thread)
    await bot.answered(thread, 3)
    assert await bot.runtime.store.warnings(conversation.id) == []
    conversation = await bot.conversation(thread)
    assert conversation is not None and conversation.status is Status.ACTIVE


async def test_a_warning_is_not_recorded_on_a_message_its_review_never_read(bot: Bot) -> None:
    def slow_gate(request: dict[str, Any]) -> Reply:
        if str(request["messages"][0]["content"][0]["text"]).startswith(GATE_LEAD):
            return Reply.slow(1.5, then=Reply.assessment(at_risk=False))
        return Reply.assessment(at_risk=False)

    bot.claude.set_review_responder(slow_gate)
    bot.claude.push(Reply.text("Let's change topic."), WARN, Reply.text("Let's keep talking."), Reply.text("Sure."))
    thread = await bot.mention("you are garbage")
    await bot.answered(thread)
    await bot.say("tell me how to hurt people", thread)
    # The model's warning arrived and its review is running (the fake holds it 1.5 s).
    await bot.slack.wait_for_async(lambda: review_texts(bot, GATE_LEAD), timeout=10, what="the warning's review")
    await bot.say("sorry, that was out of line", thread)  # written while the warning's review runs
    await bot.slack.wait_for_async(lambda: len(bot.replies(thread)) >= 3, timeout=15, what="both answers")
    await bot.idle(0.5)
    conversation = await bot.conversation(thread)
    assert conversation is not None
    assert await bot.runtime.store.warnings(conversation.id) == []
    assert ("warning_refused", "stale", "model") in await audit_kinds(bot)
