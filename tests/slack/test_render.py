"""The Slack adapter's pure functions: escaping, splitting at Slack's limits, Block Kit for each outcome,
reading events, links and slash commands. Tables of cases, no network."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from slack_bolt.request.async_request import AsyncBoltRequest

from bots.slack.commands import Command, help_text, parse_command
from bots.slack.home import member_home, moderator_home
from bots.slack.http import repair_form_body
from bots.slack.inbound import ThreadRef, parse_thread_link, user_edit, user_message
from bots.slack.render import (
    ACTION_ANSWER_FEEDBACK,
    ACTION_CONFIRM_END,
    ACTION_CONFIRM_KEEP,
    ACTION_FEEDBACK_HELPFUL,
    ACTION_FEEDBACK_UNHELPFUL,
    ACTION_NEW_CONVERSATION,
    CONFIRM_BLOCK_ID,
    MARKDOWN_LIMIT,
    SECTION_TEXT_LIMIT,
    WORD_JOINER,
    Rendered,
    draft_post,
    escape,
    inbound_text,
    neutralise,
    parse_vote,
    render_outcome,
    resolved_confirmation_blocks,
    split_text,
    stream_text,
    text_posts,
)
from core.domain import Conversation, EndReason, Status, ThreadKey
from core.outcomes import (
    AlreadyEnded,
    ConfirmationRequested,
    Ended,
    EndingNotice,
    Ignored,
    ModelRefused,
    ModelUnavailable,
    Rejected,
    Reply,
    WarningGiven,
)
from core.overview import Overview
from tests.support.paths import REPO

BOT = "UBOT"
NOW = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
CONVERSATION = Conversation(7, ThreadKey("slack", "C1", "1700000000.000100"), "U0ALICE", Status.ACTIVE, NOW)
ENDED = Conversation(
    8,
    ThreadKey("slack", "C1", "1700000000.000200"),
    "U0ALICE",
    Status.ENDED,
    NOW,
    ended_reason=EndReason.PERSISTENT_ABUSE,
    ended_explanation="You kept <!channel>-pinging after a warning.",
    ended_at=NOW,
    ended_by="model",
)
NOTICE = EndingNotice(EndReason.PERSISTENT_ABUSE, "You kept <!here> spamming.", "model", "Ended", "You lose nothing.")


def all_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def buttons(blocks: Any) -> list[str]:
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


# -- escaping -------------------------------------------------------------------------------------------

PINGS = ["<!channel>", "<!here>", "<!everyone>", "<@U0BOB>", "<!subteam^S123|@mods>", "<#C123>", "<https://x|y>"]


@pytest.mark.parametrize("ping", PINGS)
def test_escape_defuses_every_slack_control_sequence(ping: str) -> None:
    escaped = escape(f"hi {ping} & bye")
    assert "<" not in escaped and ">" not in escaped
    assert escaped.count("&") == escaped.count("&amp;") + escaped.count("&lt;") + escaped.count("&gt;")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a < b", "a &lt; b"),
        ("a > b", "a &gt; b"),
        ("fish & chips", "fish &amp; chips"),
        ("&lt;", "&amp;lt;"),  # already-looking entities are escaped again, so they show as typed
        ("plain", "plain"),
    ],
)
def test_escape_table(raw: str, expected: str) -> None:
    assert escape(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"<@{BOT}> hello", "hello"),
        (f"<@{BOT}|lastresort> hello", "hello"),
        (f"hey <@{BOT}>, what is 1 &lt; 2 &amp;&amp; 3 &gt; 2?", "hey , what is 1 < 2 && 3 > 2?"),
        ("typed &amp;lt; literally", "typed &lt; literally"),
        ("<@U0BOB> stays", "<@U0BOB> stays"),
    ],
)
def test_inbound_text_table(raw: str, expected: str) -> None:
    assert inbound_text(raw, BOT) == expected


# -- splitting ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "pieces"),
    [
        ("short", 100, ["short"]),
        ("", 100, []),
        ("aaaa bbbb cccc dddd", 22, ["aaaa bbbb cccc", "dddd"]),
        ("para one.\n\npara two is longer", 28, ["para one.", "para two is longer"]),
        ("x" * 40, 20, ["x" * 12, "x" * 12, "x" * 12, "x" * 4]),  # no boundary: hard cuts at 20 - 8
    ],
)
def test_split_text_table(text: str, limit: int, pieces: list[str]) -> None:
    assert split_text(text, limit) == pieces


@pytest.mark.parametrize(
    "text",
    [
        "word " * 2000,
        "<&>" * 3000,  # every character triples or more once escaped
        "line\n" * 3000,
        "intro\n```\n" + "x = 1\n" * 1500 + "```\noutro",
        "a" * 10_000,
    ],
)
def test_split_pieces_fit_a_section_once_escaped_and_lose_nothing(text: str) -> None:
    pieces = split_text(text)
    assert all(len(escape(p)) <= SECTION_TEXT_LIMIT for p in pieces)
    assert all(p.count("```") % 2 == 0 for p in pieces)
    assert "".join(p.replace("```", "") for p in pieces).replace("\n", "").replace(" ", "") == text.replace(
        "```", ""
    ).replace("\n", "").replace(" ", "")


@pytest.mark.parametrize("ping", [*PINGS, "@here", "@channel", "@everyone", "[your bank](https://evil.example)"])
def test_neutralised_markdown_cannot_ping_mention_or_hide_a_link(ping: str) -> None:
    shown = neutralise(f"hi {ping} & **bye**")
    assert "<" not in shown and ">" not in shown
    for live in ("@here", "@channel", "@everyone", "]("):
        assert live not in shown
    assert "**bye**" in shown  # Markdown itself survives
    assert shown.replace(WORD_JOINER, "") == escape(f"hi {ping} & **bye**")  # nothing visible changes


@pytest.mark.parametrize("text", ["a <b> & [c](d) @here", "**bold** <!channel>", "x" * 20])
def test_neutralising_keeps_prefixes_prefixes(text: str) -> None:
    # What was streamed stays valid as the answer grows: the neutral prefix starts the neutral whole.
    for cut in range(len(text) + 1):
        assert neutralise(text).startswith(neutralise(text[:cut]))


@pytest.mark.parametrize(("length", "messages"), [(10, 1), (11_000, 1), (30_000, 3)])
def test_long_text_spreads_over_markdown_messages_within_slack_limits(length: int, messages: int) -> None:
    posts = text_posts("word " * (length // 5))
    assert len(posts) == messages
    for post in posts:
        (block,) = post.blocks
        assert block == {"type": "markdown", "text": post.markdown}
        assert len(block["text"]) <= MARKDOWN_LIMIT
        assert len(post.text) <= 40_000


def test_escapes_count_against_the_markdown_limit() -> None:
    posts = text_posts("<&>" * 4000)  # 12,000 characters, 40,000 once escaped
    assert len(posts) >= 4 and all(len(p.markdown or "") <= MARKDOWN_LIMIT for p in posts)


@pytest.mark.parametrize("text", ["word " * 5000, "&<>" * 3000, "short", "  padded  "])
def test_what_streams_is_always_the_start_of_the_first_message(text: str) -> None:
    first = text_posts(text)[0].markdown or ""
    for cut in range(0, len(text) + 1, max(1, len(text) // 50)):
        assert first.startswith(stream_text(text[:cut]))
    assert len(stream_text(text)) <= MARKDOWN_LIMIT // 2


def test_draft_is_markdown_or_a_placeholder() -> None:
    assert draft_post("").text == "…" and draft_post("").blocks == ()
    draft = draft_post("**hi** <!channel>")
    assert draft.blocks == ({"type": "markdown", "text": "**hi** &lt;!channel&gt;"},)


# -- outcomes ---------------------------------------------------------------------------------------------


def test_reply_with_support_resources_and_feedback_buttons() -> None:
    rendered = render_outcome(Reply(CONVERSATION, "I'm **here** <!here>", support="Call 123"))
    (post,) = rendered.posts
    assert post.blocks[0] == {"type": "markdown", "text": "I'm **here** &lt;!here&gt;"}
    support, feedback = post.tail
    assert support["type"] == "context" and "Call 123" in support["elements"][0]["text"]
    assert feedback["type"] == "context_actions"
    (element,) = feedback["elements"]
    assert (element["type"], element["action_id"]) == ("feedback_buttons", ACTION_ANSWER_FEEDBACK)
    votes = [parse_vote(element[side]["value"]) for side in ("positive_button", "negative_button")]
    assert votes == [(CONVERSATION.id, True), (CONVERSATION.id, False)]
    assert rendered.ephemeral is None


@pytest.mark.parametrize("value", ["", "7", "7:maybe", "x:good", ":good", "7:good:extra"])
def test_foreign_vote_values_are_refused(value: str) -> None:
    assert parse_vote(value) is None


def test_warning_is_a_distinct_context_block() -> None:
    (post,) = render_outcome(WarningGiven(CONVERSATION, "Please stop.", "posting <!channel>")).posts
    note = post.blocks[-2]
    assert note["type"] == "context"
    assert note["elements"][0]["text"].startswith("⚠️ *Formal warning*")
    assert "&lt;!channel&gt;" in note["elements"][0]["text"]


def test_ended_notice_has_explanation_next_steps_and_buttons() -> None:
    posts = render_outcome(Ended(ENDED, "", NOTICE)).posts
    (notice,) = posts
    assert notice.blocks[0]["type"] == "header"
    assert "&lt;!here&gt;" in all_text(notice.blocks)
    assert "<!here>" not in all_text(notice.blocks)
    assert "You lose nothing." in all_text(notice.blocks)
    assert buttons(notice.blocks) == [ACTION_NEW_CONVERSATION, ACTION_FEEDBACK_HELPFUL, ACTION_FEEDBACK_UNHELPFUL]
    values = {e["value"] for b in notice.blocks if b["type"] == "actions" for e in b["elements"]}
    assert values == {str(ENDED.id)}


def test_ended_with_closing_words_puts_them_first() -> None:
    posts = render_outcome(Ended(ENDED, "Goodbye.", NOTICE)).posts
    assert posts[0].markdown == "Goodbye."
    assert posts[-1].blocks[0]["type"] == "header"


def test_confirmation_buttons_carry_the_confirmation_id() -> None:
    (post,) = render_outcome(ConfirmationRequested(CONVERSATION, "Sure.", 42, "End it?", "asked")).posts
    (block,) = [b for b in post.blocks if b["type"] == "actions"]
    assert block["block_id"] == CONFIRM_BLOCK_ID
    assert [(e["action_id"], e["value"]) for e in block["elements"]] == [
        (ACTION_CONFIRM_END, "42"),
        (ACTION_CONFIRM_KEEP, "42"),
    ]
    resolved = resolved_confirmation_blocks(post.blocks, "done")
    assert buttons(resolved) == []
    assert resolved[-1]["elements"][0]["text"] == "done"


@pytest.mark.parametrize(
    ("outcome", "posts", "ephemeral"),
    [
        (AlreadyEnded(ENDED, "It ended."), 0, True),
        (ModelUnavailable(CONVERSATION, "Unavailable."), 1, False),
        (ModelRefused(CONVERSATION, "Refused."), 1, False),
        (Rejected("empty", "Empty."), 0, True),
        (Ignored("duplicate"), 0, False),
    ],
)
def test_where_each_outcome_goes(outcome: Any, posts: int, ephemeral: bool) -> None:
    rendered: Rendered = render_outcome(outcome)
    assert len(rendered.posts) == posts
    assert (rendered.ephemeral is not None) is ephemeral


def test_already_ended_note_offers_a_new_conversation() -> None:
    note = render_outcome(AlreadyEnded(ENDED, "It ended.")).ephemeral
    assert note is not None
    assert buttons(note.blocks) == [ACTION_NEW_CONVERSATION]


# -- events ------------------------------------------------------------------------------------------------


def message_event(**fields: Any) -> dict[str, Any]:
    return {"type": "message", "user": "U0ALICE", "text": "hi", "ts": "1.000001", "channel": "C1"} | fields


@pytest.mark.parametrize(
    ("event", "may_start", "thread"),
    [
        (message_event(), False, "1.000001"),
        (message_event(text=f"<@{BOT}> hi"), True, "1.000001"),
        (message_event(thread_ts="0.000009"), False, "0.000009"),
        (message_event(channel_type="im", channel="D1"), True, "1.000001"),
        (message_event(subtype="thread_broadcast", thread_ts="0.000009"), False, "0.000009"),
    ],
)
def test_user_messages(event: dict[str, Any], may_start: bool, thread: str) -> None:
    message = user_message(event, BOT)
    assert message is not None
    assert (message.may_start, message.thread_ts) == (may_start, thread)
    assert message.platform_message_id == f"{event['channel']}:1.000001"


@pytest.mark.parametrize(
    "event",
    [
        message_event(bot_id="B0OTHER"),
        message_event(subtype="bot_message", user=None),
        message_event(user=BOT),
        message_event(subtype="channel_join"),
        message_event(subtype="message_deleted"),
        message_event(user=None),
    ],
)
def test_not_user_messages(event: dict[str, Any]) -> None:
    assert user_message(event, BOT) is None


def test_app_mention_is_addressed() -> None:
    message = user_message(message_event(type="app_mention"), BOT, addressed=True)
    assert message is not None and message.may_start


def edit_event(message: dict[str, Any], previous_text: str = "old") -> dict[str, Any]:
    return {
        "type": "message",
        "subtype": "message_changed",
        "channel": "C1",
        "ts": "2.000000",
        "message": {"user": "U0ALICE", "ts": "1.000001", "text": "new"} | message,
        "previous_message": {"user": "U0ALICE", "ts": "1.000001", "text": previous_text},
    }


@pytest.mark.parametrize(
    ("event", "editor"),
    [
        (edit_event({"edited": {"user": "U0ALICE", "ts": "2.000000"}}), "U0ALICE"),
        (edit_event({"edited": {"user": "U0ADMIN", "ts": "2.000000"}}), "U0ADMIN"),
        (edit_event({}), None),  # an unfurl or thread update, not an edit
        (edit_event({"edited": {"ts": "2.0"}}, previous_text="new"), None),  # same text
        (edit_event({"edited": {"user": "BBOT", "ts": "2.0"}, "user": BOT, "bot_id": "BBOT"}), None),
    ],
)
def test_user_edits(event: dict[str, Any], editor: str | None) -> None:
    edit = user_edit(event, BOT)
    assert (edit.user if edit else None) == editor


# -- links and commands -----------------------------------------------------------------------------------

LINK = "https://x.slack.com/archives/C123/p1700000000000100"
THREAD = ThreadRef("C123", "1700000000.000100")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (LINK, ThreadRef("C123", "1700000000.000100")),
        (f"{LINK}?thread_ts=1690000000.000200&cid=C123", ThreadRef("C123", "1690000000.000200")),
        (f"<{LINK}?thread_ts=1690000000.000200&amp;cid=C123>", ThreadRef("C123", "1690000000.000200")),
        (f"<{LINK}|the thread>", ThreadRef("C123", "1700000000.000100")),
        ("https://x.slack.com/archives/G0PRIV/p1700000000000100", ThreadRef("G0PRIV", "1700000000.000100")),
        ("https://evil.example.com/archives/C123/p1700000000000100", None),
        ("https://x.slack.com/messages/C123", None),
        ("C123", None),
        ("", None),
    ],
)
def test_parse_thread_link(text: str, expected: ThreadRef | None) -> None:
    assert parse_thread_link(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Command("")),
        ("help", Command("help")),
        ("STATS", Command("stats")),
        ("forget", Command("forget")),
        ("status", Command("status")),
        (f"status {LINK}", Command("status", ThreadRef("C123", "1700000000.000100"))),
        (f"end {LINK} spam and  abuse", Command("end", ThreadRef("C123", "1700000000.000100"), "spam and  abuse")),
        ("end not-a-link reason", Command("end", None, "reason")),
        (f"end {LINK} threats &amp; &lt;slurs&gt;", Command("end", THREAD, "threats & <slurs>")),
        (f"reopen <{LINK}>", Command("reopen", ThreadRef("C123", "1700000000.000100"))),
        ("delete everything", Command("", unknown="delete")),
    ],
)
def test_parse_command(text: str, expected: Command) -> None:
    assert parse_command(text) == expected


def test_unknown_command_gets_help() -> None:
    assert help_text(parse_command("bogus")).startswith("I don't know `bogus`.")
    assert "/lastresort forget" in help_text(parse_command(""))


@pytest.mark.parametrize(
    ("body", "content_type", "expected_text"),
    [
        (
            "command=%2Flastresort&text=end+the+payload+was+abuse",
            "application/x-www-form-urlencoded",
            "end the payload was abuse",
        ),
        ("command=%2Flastresort&text=stats", "application/x-www-form-urlencoded", "stats"),
    ],
)
def test_form_bodies_mentioning_payload_are_read_as_forms(body: str, content_type: str, expected_text: str) -> None:
    request = AsyncBoltRequest(body=body, headers={"content-type": content_type})
    repair_form_body(request)
    assert request.body["text"] == expected_text


def test_real_interactivity_payload_is_left_alone() -> None:
    body = "payload=" + json.dumps({"type": "block_actions", "user": {"id": "U1"}})
    request = AsyncBoltRequest(body=body, headers={"content-type": "application/x-www-form-urlencoded"})
    repair_form_body(request)
    assert request.body["type"] == "block_actions"


# -- home ----------------------------------------------------------------------------------------------------


def test_moderator_home_lists_endings_with_links_and_counts() -> None:
    overview = Overview(
        days=7,
        counts={"ending_approved": 3, "risk_guard_fired": 2},
        recent_endings=[ENDED],
        recent_events=[],
        helpful=4,
    )
    view = moderator_home(overview, {ENDED.id: "https://x.slack.com/archives/C1/p1700000000000200"})
    text = all_text(view["blocks"])
    assert view["type"] == "home"
    assert "<https://x.slack.com/archives/C1/p1700000000000200|conversation #8>" in text
    assert "Endings approved: *3*" in text and "Risk-guard firings: *2*" in text
    assert "Feedback: ending was right: *4*" in text
    assert "<!channel>" not in text  # the explanation is the model's words
    assert len(view["blocks"]) <= 50


def test_member_home_is_short_and_plain() -> None:
    view = member_home()
    assert view["type"] == "home"
    assert len(view["blocks"]) <= 5


# -- the app manifest matches what the adapter listens to ------------------------------------------------------


def test_manifest_routes_everything_to_the_adapter() -> None:
    import yaml

    from bots.slack.http import EVENTS_PATH

    manifest = yaml.safe_load((REPO / "config" / "slack-manifest.yaml").read_text())
    settings = manifest["settings"]
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/lastresort"
    urls = [settings["event_subscriptions"]["request_url"], settings["interactivity"]["request_url"], command["url"]]
    assert all(url.endswith(EVENTS_PATH) for url in urls)
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "app_mention",
        "message.channels",
        "message.groups",
        "message.im",
        "app_home_opened",
        "assistant_thread_started",
        "assistant_thread_context_changed",
    }
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "commands", "users:read", "usergroups:read", "app_mentions:read"} <= scopes
    assert {"assistant:write", "im:history"} <= scopes  # the assistant container and its messages
    assert manifest["features"]["assistant_view"]["assistant_description"]
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
