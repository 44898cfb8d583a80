"""The Discord adapter's pure parts: splitting and titles, outcomes as messages, custom ids, the branch form,
inbound text and the invite link. Tables of cases; no network."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

import discord
import pytest

from bots.discord.components import original_text
from bots.discord.inbound import clean_text, dm_key, dm_number, jump_url
from bots.discord.invite import invite_url, required_permissions
from bots.discord.render import (
    CODE_FENCE,
    MESSAGE_LIMIT,
    DiscordPost,
    branch_choices,
    clip,
    draft_text,
    ended_answer,
    plain_notice,
    render_outcome,
    reopened_answer,
    split_text,
    stats_text,
    status_text,
    thread_title,
)
from bots.discord.targets import conversation_number_in, thread_id_in
from bots.discord.views import (
    NUMBER_FIELD,
    TEXT_FIELD,
    BranchForm,
    ButtonSpec,
    Confirm,
    EditAndBranch,
    Feedback,
    NewConversation,
    as_view,
    branch_form_id,
    branch_modal,
    confirm_id,
    edit_and_branch_id,
    feedback_id,
    modal_values,
    new_conversation_id,
    parse_custom_id,
    parse_message_number,
)
from core.domain import Conversation, EndReason, Role, Status, StoredMessage, ThreadKey
from core.outcomes import (
    AlreadyEnded,
    ConfirmationRequested,
    Ended,
    EndingNotice,
    Ignored,
    ModelRefused,
    ModelUnavailable,
    Outcome,
    Rejected,
    Reply,
    WarningGiven,
)
from core.prompt import user_text_block
from core.service import ConversationStatus
from tests.support.fake_discord import Perm

NOW = datetime(2025, 1, 1, tzinfo=UTC)
BIG = 10**18  # beyond any id in these tables
CONVERSATION = Conversation(7, ThreadKey("discord", "100", "200"), "42", Status.ACTIVE, NOW)
ENDED = Conversation(
    7,
    ThreadKey("discord", "100", "200"),
    "42",
    Status.ENDED,
    NOW,
    ended_reason=EndReason.PERSISTENT_ABUSE,
    ended_explanation="Repeated abuse after a warning.",
    ended_by="model",
)
NOTICE = EndingNotice(
    reason=EndReason.PERSISTENT_ABUSE,
    explanation="Repeated abuse after a warning.",
    ended_by="model",
    title="This conversation has ended",
    next_steps="You have lost nothing.",
)
WORDS = " ".join(f"word{i}" for i in range(800))  # about 6,300 characters


# -- splitting ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", [], id="empty"),
        pytest.param("   \n ", [], id="blank"),
        pytest.param("hello", ["hello"], id="short"),
        pytest.param("x" * MESSAGE_LIMIT, None, id="exactly-the-limit-still-splits-for-fence-room"),
        pytest.param("a" * 1500 + "\n\n" + "b" * 1500, ["a" * 1500, "b" * 1500], id="at-a-paragraph"),
        pytest.param("a" * 1500 + "\n" + "b" * 1500, ["a" * 1500, "b" * 1500], id="at-a-line"),
        pytest.param("a" * 1500 + ". " + "b" * 1500, ["a" * 1500 + ".", "b" * 1500], id="after-a-sentence"),
    ],
)
def test_split_text_cuts_at_boundaries(text: str, expected: list[str] | None) -> None:
    pieces = split_text(text)
    assert all(0 < len(p) <= MESSAGE_LIMIT for p in pieces)
    if expected is not None:
        assert pieces == expected
    else:
        assert "".join(pieces) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(WORDS, id="words"),
        pytest.param("y" * 5000, id="one-long-word"),
        pytest.param("\n".join(f"line {i}" for i in range(900)), id="lines"),
    ],
)
def test_split_text_loses_nothing(text: str) -> None:
    pieces = split_text(text)
    assert len(pieces) >= 2
    assert all(len(p) <= MESSAGE_LIMIT for p in pieces)
    assert "".join("".join(pieces).split()) == "".join(text.split())


def test_split_text_keeps_code_fences_balanced() -> None:
    code = CODE_FENCE + "python\n" + "\n".join(f"print({i})" for i in range(400)) + "\n" + CODE_FENCE
    pieces = split_text("Here is code:\n\n" + code + "\n\nDone.")
    assert len(pieces) >= 2
    assert all(p.count(CODE_FENCE) % 2 == 0 for p in pieces)
    assert all(len(p) <= MESSAGE_LIMIT for p in pieces)
    assert pieces[1].startswith(CODE_FENCE + "python\n")  # the second piece reopens the block, highlighted
    assert all(p.startswith(CODE_FENCE + "python\n") for p in pieces[1:-1])


def test_a_continued_fence_without_a_language_reopens_plain() -> None:
    code = CODE_FENCE + "\n" + "\n".join(f"step {i}" for i in range(400)) + "\n" + CODE_FENCE
    pieces = split_text(code)
    assert len(pieces) >= 2 and pieces[1].startswith(CODE_FENCE + "\nstep")


def test_split_text_rejects_a_limit_with_no_room() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_text("abc", limit=8)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("exactly ten", 11, "exactly ten"),
        ("far too long for this", 10, "far too l…"),
        ("ends in a space here", 9, "ends in…"),
    ],
)
def test_clip(text: str, limit: int, expected: str) -> None:
    assert clip(text, limit) == expected
    assert len(clip(text, limit)) <= limit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "…"),
        ("  partial answer ", "partial answer"),
        ("z" * 2500, "z" * (MESSAGE_LIMIT - 1) + "…"),
    ],
)
def test_draft_text_fits_one_message(text: str, expected: str) -> None:
    assert draft_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("hello there", "hello there", id="short"),
        pytest.param("  \n\nsecond line wins\nthird", "second line wins", id="first-non-blank-line"),
        pytest.param("spaced    out\twords", "spaced out words", id="whitespace-collapsed"),
        pytest.param("", "Conversation with Claude", id="fallback"),
        pytest.param(
            "Could you explain the difference between a thread and a forum post on Discord please",
            "Could you explain the difference between a thread and a…",
            id="long-cut-at-a-word",
        ),
        pytest.param("x" * 300, "x" * 60 + "…", id="one-long-word"),
    ],
)
def test_thread_title(text: str, expected: str) -> None:
    title = thread_title(text)
    assert title == expected
    assert 1 <= len(title) <= 100


# -- outcomes ------------------------------------------------------------------------------------------------


def ids(post: DiscordPost) -> list[str]:
    return [b.custom_id for b in post.buttons]


def titles(post: DiscordPost) -> list[str | None]:
    return [e.title for e in post.embeds]


@pytest.mark.parametrize(
    ("outcome", "contents", "embed_titles", "buttons"),
    [
        pytest.param(Reply(CONVERSATION, "Hi!"), ["Hi!"], [[]], [[]], id="reply"),
        pytest.param(Reply(CONVERSATION, ""), ["…"], [[]], [[]], id="empty-reply"),
        pytest.param(Reply(CONVERSATION, "Hi!", support="Call a helpline."), ["Hi!"], [[None]], [[]], id="support"),
        pytest.param(
            WarningGiven(CONVERSATION, "Please stop.", "spam"),
            ["Please stop."],
            [["⚠️ Formal warning"]],
            [[]],
            id="warning",
        ),
        pytest.param(
            Ended(ENDED, "", NOTICE),
            [""],
            [["🛑 This conversation has ended"]],
            [["lastresort:new:7", "lastresort:edit:7", "lastresort:feedback:7:up", "lastresort:feedback:7:down"]],
            id="ended",
        ),
        pytest.param(
            Ended(ENDED, "Goodbye.", NOTICE),
            ["Goodbye.", ""],
            [[], ["🛑 This conversation has ended"]],
            [[], ["lastresort:new:7", "lastresort:edit:7", "lastresort:feedback:7:up", "lastresort:feedback:7:down"]],
            id="ended-with-words",
        ),
        pytest.param(
            ConfirmationRequested(CONVERSATION, "Of course.", 9, "End this conversation?", "You asked."),
            ["Of course."],
            [["End this conversation?"]],
            [["lastresort:confirm:9:yes", "lastresort:confirm:9:no"]],
            id="confirmation",
        ),
        pytest.param(
            AlreadyEnded(ENDED, "This conversation has ended."),
            ["🔒 This conversation has ended."],
            [[]],
            [["lastresort:new:7", "lastresort:edit:7"]],
            id="already-ended",
        ),
        pytest.param(ModelUnavailable(CONVERSATION, "Try later."), ["Try later."], [[]], [[]], id="unavailable"),
        pytest.param(ModelRefused(CONVERSATION, "Declined."), ["Declined."], [[]], [[]], id="refused"),
        pytest.param(Rejected("too_long", "Too long."), ["Too long."], [[]], [[]], id="rejected"),
        pytest.param(Ignored("duplicate"), [], [], [], id="ignored"),
    ],
)
def test_render_outcome(
    outcome: Outcome, contents: list[str], embed_titles: list[list[str | None]], buttons: list[list[str]]
) -> None:
    posts = render_outcome(outcome, in_dm=False)
    assert [p.content for p in posts] == contents
    assert [titles(p) for p in posts] == embed_titles
    assert [ids(p) for p in posts] == buttons


def test_long_replies_carry_their_embed_on_the_last_message() -> None:
    posts = render_outcome(WarningGiven(CONVERSATION, WORDS, "spam"), in_dm=False)
    assert len(posts) >= 4
    assert [bool(p.embeds) for p in posts] == [False] * (len(posts) - 1) + [True]
    assert all(len(p.content) <= MESSAGE_LIMIT for p in posts)


@pytest.mark.parametrize(
    ("in_dm", "expected", "absent"),
    [(False, "/lastresort chat", "/lastresort new"), (True, "/lastresort new", "/lastresort chat")],
)
def test_the_notice_says_how_to_go_on_where_it_is_shown(in_dm: bool, expected: str, absent: str) -> None:
    [post] = render_outcome(Ended(ENDED, "", NOTICE), in_dm=in_dm)
    [embed] = post.embeds
    text = str(embed.to_dict())
    assert "Repeated abuse after a warning." in text and "You have lost nothing." in text
    assert expected in text and absent not in text
    assert embed.footer.text == "Ended by Claude after a formal warning."


def test_the_plain_notice_carries_the_same_news_within_one_message() -> None:
    text = plain_notice(NOTICE)
    assert "This conversation has ended" in text and "Repeated abuse after a warning." in text
    assert "/lastresort branch" in text  # no buttons here: the command does what "Edit & branch" did
    huge = EndingNotice(EndReason.MODERATOR, "e" * 9000, "moderator:1", "t", "n")
    assert len(plain_notice(huge)) <= MESSAGE_LIMIT


def test_embeds_respect_discord_limits() -> None:
    huge = EndingNotice(EndReason.MODERATOR, "e" * 9000, "moderator:1", "t" * 400, "n" * 100)
    [post] = render_outcome(Ended(ENDED, "", huge), in_dm=False)
    [embed] = post.embeds
    assert len(embed.title or "") <= 256
    assert len(embed.description or "") <= 4096
    assert len(embed) <= 6000


# -- custom ids and the branch form -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("custom_id", "action"),
    [
        (confirm_id(12, True), Confirm(12, True)),
        (confirm_id(12, False), Confirm(12, False)),
        (new_conversation_id(7), NewConversation(7)),
        (edit_and_branch_id(7), EditAndBranch(7)),
        (branch_form_id(7), BranchForm(7)),
        (feedback_id(7, True), Feedback(7, True)),
        (feedback_id(BIG, False), Feedback(BIG, False)),
    ],
)
def test_custom_ids_carry_what_they_act_on(custom_id: str, action: object) -> None:
    assert parse_custom_id(custom_id) == action
    assert len(custom_id) <= 100  # Discord's limit


@pytest.mark.parametrize(
    "custom_id",
    [
        "",
        "somebody-elses:button",
        "lastresort:confirm:12",
        "lastresort:confirm:12:maybe",
        "lastresort:feedback:7:sideways",
        "lastresort:new:seven",
        "lastresort:new:7:extra",
        "xlastresort:new:7",
    ],
)
def test_foreign_or_malformed_custom_ids_are_not_ours(custom_id: str) -> None:
    assert parse_custom_id(custom_id) is None


def submitted(components: list[dict[str, Any]]) -> dict[str, Any]:
    return {"custom_id": branch_form_id(7), "components": components}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            submitted(
                [
                    {"type": 1, "components": [{"type": 4, "custom_id": TEXT_FIELD, "value": "new words"}]},
                    {"type": 1, "components": [{"type": 4, "custom_id": NUMBER_FIELD, "value": "2"}]},
                ]
            ),
            {TEXT_FIELD: "new words", NUMBER_FIELD: "2"},
            id="action-rows",
        ),
        pytest.param(
            submitted([{"type": 18, "component": {"type": 4, "custom_id": TEXT_FIELD, "value": "in a label"}}]),
            {TEXT_FIELD: "in a label"},
            id="labels",
        ),
        pytest.param(submitted([]), {}, id="nothing"),
    ],
)
def test_modal_values(data: dict[str, Any], expected: dict[str, str]) -> None:
    assert modal_values(data) == expected


@pytest.mark.parametrize(
    ("raw", "count", "expected"),
    [("1", 3, 1), (" 3 ", 3, 3), ("#2", 3, 2), ("0", 3, None), ("4", 3, None), ("two", 3, None), ("", 3, None)],
)
def test_parse_message_number(raw: str, count: int, expected: int | None) -> None:
    assert parse_message_number(raw, count) == expected


async def test_branch_modal_is_prefilled_and_within_limits() -> None:
    modal = branch_modal(7, last_text="q" * 5000, message_count=3)
    data = modal.to_dict()
    assert data["custom_id"] == branch_form_id(7)
    assert len(data["title"]) <= 45
    inputs = {c["custom_id"]: c for c in _inputs(data["components"])}
    assert inputs[TEXT_FIELD]["value"] == "q" * 4000  # Discord rejects a longer prefill
    assert inputs[NUMBER_FIELD]["value"] == "3"
    assert all(len(c["label"]) <= 45 for c in inputs.values())
    assert modal.is_finished()  # routed by custom id: discord.py must not keep it


async def test_as_view_shows_buttons_but_is_not_kept_by_discord_py() -> None:
    assert as_view([]) is None
    view = as_view([ButtonSpec("Go", new_conversation_id(7)), ButtonSpec("Stop", confirm_id(1, False))])
    assert view is not None
    assert [item.custom_id for item in view.children if isinstance(item, discord.ui.Button)] == [
        "lastresort:new:7",
        "lastresort:confirm:1:no",
    ]
    assert view.is_finished()


def _inputs(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for component in components:
        found += [c for c in component.get("components", []) if c.get("type") == 4]
        inner = component.get("component")
        if isinstance(inner, dict) and inner.get("type") == 4:
            found.append(inner)
    return found


@pytest.mark.parametrize(
    ("author_name", "author_id"),
    [("Alice", "42"), (None, "42"), ("Alice", None), ("42", "42")],
)
def test_original_text_undoes_the_author_prefix(author_name: str | None, author_id: str | None) -> None:
    block = user_text_block("[not a prefix] my words", author_name=author_name, author_id=author_id)
    message = StoredMessage(1, 7, 1, Role.USER, (block,), author_id=author_id, author_name=author_name)
    assert original_text(message) == "[not a prefix] my words"


# -- inbound --------------------------------------------------------------------------------------------------


BOT = 999


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(f"<@{BOT}> hello", "hello", id="leading-mention"),
        pytest.param(f"<@!{BOT}> hello", "hello", id="nickname-mention"),
        pytest.param(f"hey <@{BOT}> there", "hey there", id="inner-mention"),
        pytest.param(f"ask <@5> about it <@{BOT}>", "ask @Bob about it", id="other-people-by-name"),
        pytest.param("who is <@6>?", "who is <@6>?", id="unknown-id-kept"),
        pytest.param(f"<@{BOT}>\nline one\nline two", "line one\nline two", id="lines-kept"),
    ],
)
def test_clean_text(content: str, expected: str) -> None:
    assert clean_text(content, bot_user_id=BOT, names={5: "Bob"}) == expected


@pytest.mark.parametrize(
    ("latest", "expected"),
    [
        (None, 1),
        (Conversation(1, dm_key(5, 1), "5", Status.ACTIVE, NOW), 1),
        (Conversation(3, dm_key(5, 4), "5", Status.ENDED, NOW), 4),
        (Conversation(3, ThreadKey("discord", "dm:5", "odd"), "5", Status.ACTIVE, NOW), 1),
    ],
)
def test_dm_number(latest: Conversation | None, expected: int) -> None:
    assert dm_number(latest) == expected


def test_jump_urls() -> None:
    assert jump_url(1, 2, 3) == "https://discord.com/channels/1/2/3"
    assert jump_url(1, 2) == "https://discord.com/channels/1/2"
    assert jump_url(None, 2, 3) == "https://discord.com/channels/@me/2/3"


# -- moderators and the invite ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, "not a Last Resort conversation"),
        (ConversationStatus(CONVERSATION, 3, 0), "is **active**. 3 user message(s), 0 formal warning(s)."),
        (ConversationStatus(ENDED, 5, 1), "is **ended** (persistent_abuse, by model). 5 user message(s), 1 formal"),
    ],
)
def test_status_text(status: ConversationStatus | None, expected: str) -> None:
    assert expected in status_text(status)


def test_stats_text() -> None:
    text = stats_text([("Ended by moderators", 2), ("Feedback: ending was right", 1)], 3)
    assert text.splitlines() == ["Last 3 days:", "• Ended by moderators: **2**", "• Feedback: ending was right: **1**"]


@pytest.mark.parametrize(
    ("done", "expected"),
    [
        (True, ["Ended conversation #7 and locked <#200>."]),
        (False, ["Ended conversation #7, but I could not lock <#200>", "Manage Threads", "I will not answer"]),
    ],
)
def test_a_moderator_hears_whether_the_thread_is_locked(done: bool, expected: list[str]) -> None:
    answer = ended_answer(7, "<#200>", locked=done)
    assert all(part in answer for part in expected)
    assert ("locked <#200>" in answer) is done


@pytest.mark.parametrize(
    ("done", "expected"),
    [
        (True, ["Reopened conversation #7; <#200> is open again."]),
        (False, ["Reopened conversation #7, but I could not unlock <#200>", "Manage Threads", "Unlock it yourself"]),
    ],
)
def test_a_moderator_hears_whether_the_thread_is_open_again(done: bool, expected: list[str]) -> None:
    answer = reopened_answer(7, "<#200>", unlocked=done)
    assert all(part in answer for part in expected)


def test_branch_choices_match_what_was_typed() -> None:
    older = dataclasses.replace(ENDED, id=3, ended_at=datetime(2025, 1, 2, 9, 30, tzinfo=UTC))
    newer = dataclasses.replace(ENDED, id=12, ended_at=datetime(2025, 1, 3, 18, 5, tzinfo=UTC))
    assert branch_choices([newer, older], "") == [
        ("Conversation #12, ended 2025-01-03 18:05 UTC", "12"),
        ("Conversation #3, ended 2025-01-02 09:30 UTC", "3"),
    ]
    assert branch_choices([newer, older], "#3") == [("Conversation #3, ended 2025-01-02 09:30 UTC", "3")]
    assert len(branch_choices([newer] * 40, "")) == 25  # Discord shows at most 25


@pytest.mark.parametrize(
    ("text", "thread", "number"),
    [
        ("https://discord.com/channels/111/222222222222222222", 222222222222222222, None),
        ("https://discord.com/channels/111/222222222222222222/333", 222222222222222222, None),
        ("<#222222222222222222>", 222222222222222222, None),
        (" 222222222222222222 ", 222222222222222222, None),
        ("#12", None, 12),
        ("12", None, 12),
        ("twelve", None, None),
    ],
)
def test_commands_name_threads_and_conversations(text: str, thread: int | None, number: int | None) -> None:
    assert thread_id_in(text) == thread
    assert conversation_number_in(text) == number


def test_the_invite_asks_for_exactly_what_the_bot_uses() -> None:
    expected = (
        Perm.VIEW_CHANNEL
        | Perm.SEND_MESSAGES
        | Perm.SEND_MESSAGES_IN_THREADS
        | Perm.CREATE_PUBLIC_THREADS
        | Perm.MANAGE_THREADS
        | Perm.READ_MESSAGE_HISTORY
        | Perm.EMBED_LINKS
    )
    assert required_permissions().value == expected
    url = invite_url(1234)
    assert url.startswith("https://discord.com/oauth2/authorize?")
    assert re.search(r"[?&]client_id=1234(&|$)", url)
    assert re.search(rf"[?&]permissions={expected}(&|$)", url)
    assert re.search(r"[?&]scope=bot\+applications\.commands(&|$)", url)
