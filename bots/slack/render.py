"""Core outcomes as Slack messages: pure functions, no I/O.

Two rules hold for everything here:
- Text from the model (and moderators' reasons) is escaped (`&`, `<`, `>`) and put in `verbatim` text
  objects, so `<!channel>`, `<!here>`, `<@U…>` or `<!subteam^…>` in it show as text and never ping.
- Output respects Slack's limits. Slack rejects a `section` whose text exceeds 3,000 characters and a
  message with more than 50 blocks, and silently truncates `text` past 40,000 characters. We cut model text
  into sections of at most 3,000 escaped characters (at paragraph, line or word boundaries, keeping code
  fences balanced) and put at most 10 sections in one message: 30,000 characters of fallback text, below
  the truncation point, and at most 10 + a few blocks, below the block limit. Longer replies continue in
  further messages in the same thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.domain import JSON, EndReason
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

SECTION_TEXT_LIMIT = 3000
# An ending explanation is short by contract (1,500 characters at most, 7,500 once escaped in the worst
# case): three sections always hold it.
EXPLANATION_SECTIONS = 3
SECTIONS_PER_MESSAGE = 10
HEADER_TEXT_LIMIT = 150  # Slack's limit for a header block's plain_text
CODE_FENCE = "```"
# Room for a closing and a reopening fence plus one escaped character ("&amp;") per piece.
MIN_SPLIT_LIMIT = 2 * (len(CODE_FENCE) + 1) + len("&amp;")

ACTION_NEW_CONVERSATION = "lastresort_new_conversation"
ACTION_FEEDBACK_HELPFUL = "lastresort_feedback_helpful"
ACTION_FEEDBACK_UNHELPFUL = "lastresort_feedback_unhelpful"
ACTION_CONFIRM_END = "lastresort_confirm_end"
ACTION_CONFIRM_KEEP = "lastresort_confirm_keep"
CONFIRM_BLOCK_ID = "lastresort_confirm"
NOTICE_ACTIONS_BLOCK_ID = "lastresort_after_ending"

HOW_TO_GO_ON = (
    "• *New conversation:* mention me in a channel, send me a direct message, or use the button below.\n"
    "• *Branch:* edit one of your earlier messages in this thread; I continue from that point in a new thread."
)
WARNING_NOTE = "⚠️ *Formal warning* about {behavior}. If this continues, this conversation may end."
ENDED_BY = {
    EndReason.PERSISTENT_ABUSE: "Ended by Claude after a formal warning.",
    EndReason.USER_REQUESTED: "Ended at the request of the person who started it.",
    EndReason.MODERATOR: "Ended by a moderator.",
}
REOPENED_NOTE = "🔓 A moderator reopened this conversation. You can continue here."


@dataclass(frozen=True, slots=True)
class SlackPost:
    """One message: `text` is the fallback Slack shows in notifications and to screen readers."""

    text: str
    blocks: tuple[JSON, ...] = ()

    def api_blocks(self) -> list[JSON] | None:
        return list(self.blocks) if self.blocks else None


@dataclass(frozen=True, slots=True)
class Rendered:
    """What an outcome becomes: thread messages everyone sees, and/or a note only the poster sees."""

    posts: tuple[SlackPost, ...] = ()
    ephemeral: SlackPost | None = None


# -- escaping ---------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Slack's three control characters; `&` first so the other entities are not escaped twice."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escaped_length(char: str) -> int:
    return len(escape(char))


# -- splitting --------------------------------------------------------------------------------------


def _fitting_prefix(text: str, limit: int) -> int:
    """How many characters of `text` fit in `limit` once escaped."""
    used = 0
    for index, char in enumerate(text):
        used += _escaped_length(char)
        if used > limit:
            return index
    return len(text)


def _cut_point(text: str, fit: int) -> int:
    """Where to cut so that text[:cut] fits: after a paragraph, a line, a sentence or a word (whitespace
    right at `fit` counts), and never in the first half, which would make tiny sections of one long line."""
    for separator, keep in (("\n\n", 0), ("\n", 0), (". ", 1), (" ", 0)):
        at = text.rfind(separator, 0, fit + 1 - keep)
        if at > 0 and at >= fit // 2:
            return at + keep
    return fit


def split_text(text: str, limit: int = SECTION_TEXT_LIMIT) -> list[str]:
    """Cut raw text into pieces whose *escaped* length is at most `limit`, keeping ``` fences balanced."""
    if limit < MIN_SPLIT_LIMIT:
        raise ValueError(f"limit must be at least {MIN_SPLIT_LIMIT} characters")
    # Room for a closing fence at the end of a piece and a reopening one at the start of the next.
    budget = limit - 2 * (len(CODE_FENCE) + 1)
    pieces: list[str] = []
    rest = text.strip()
    reopen = False
    while rest:
        if reopen:
            rest = f"{CODE_FENCE}\n{rest}"
        fit = _fitting_prefix(rest, budget)
        cut = len(rest) if fit == len(rest) else _cut_point(rest, fit)
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n ")
        reopen = piece.count(CODE_FENCE) % 2 == 1 and bool(rest)
        if reopen:
            piece += f"\n{CODE_FENCE}"
        if piece.strip():
            pieces.append(piece)
    return pieces


# -- blocks -----------------------------------------------------------------------------------------


def model_text(text: str) -> JSON:
    """A mrkdwn text object for untrusted text: escaped, and `verbatim` so Slack does not turn bare
    words like @here into mentions or channel names into links."""
    return {"type": "mrkdwn", "text": escape(text), "verbatim": True}


def trusted_text(text: str) -> JSON:
    """Our own or the operator's mrkdwn (may contain links and formatting on purpose)."""
    return {"type": "mrkdwn", "text": text}


def section(text: JSON) -> JSON:
    return {"type": "section", "text": text}


def context(text: JSON) -> JSON:
    return {"type": "context", "elements": [text]}


def button(action_id: str, label: str, value: str, style: str | None = None) -> JSON:
    element: JSON = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "value": value,
    }
    if style:
        element["style"] = style
    return element


def actions(block_id: str, *elements: JSON) -> JSON:
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}


def header(text: str) -> JSON:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:HEADER_TEXT_LIMIT], "emoji": True}}


def text_posts(text: str, tail: Sequence[JSON] = (), tail_fallback: str = "") -> list[SlackPost]:
    """Model text as sections over as many messages as needed, then `tail` blocks in the last one."""
    pieces = [escape(piece) for piece in split_text(text)] if text.strip() else []
    groups = [pieces[i : i + SECTIONS_PER_MESSAGE] for i in range(0, len(pieces), SECTIONS_PER_MESSAGE)]
    posts = [
        SlackPost(
            text="\n\n".join(group),
            blocks=tuple(section({"type": "mrkdwn", "text": piece, "verbatim": True}) for piece in group),
        )
        for group in groups
    ]
    if not tail:
        return posts
    if not posts:
        return [SlackPost(text=tail_fallback, blocks=tuple(tail))]
    last = posts[-1]
    posts[-1] = SlackPost(text=last.text, blocks=(*last.blocks, *tail))
    return posts


def draft_text(text: str) -> str:
    """The streaming draft: plain escaped text, cut to what one message may show."""
    limit = SECTION_TEXT_LIMIT * SECTIONS_PER_MESSAGE
    escaped = escape(text.strip()) or "…"
    return escaped if len(escaped) <= limit else escaped[: limit - 2].rsplit("&", 1)[0] + " …"


# -- outcomes ---------------------------------------------------------------------------------------


def reply_posts(text: str, support: str | None) -> list[SlackPost]:
    # Support resources are the operator's words, shown as written (they may hold links).
    tail = [context(trusted_text(f"💙 {support}"))] if support else []
    return text_posts(text or "…", tail, support or "")


def warning_posts(text: str, behavior: str) -> list[SlackPost]:
    # The whole note is verbatim: the behaviour is the model's words, and verbatim keeps a bare @here in
    # them from becoming a mention.
    note = WARNING_NOTE.format(behavior=escape(behavior.strip() or "this behaviour"))
    return text_posts(text, [context({"type": "mrkdwn", "text": note, "verbatim": True})], "⚠️ Formal warning")


def notice_post(conversation_id: int, notice: EndingNotice) -> SlackPost:
    """The ending notice: why (in the explanation's words), what the user can do now, and buttons."""
    value = str(conversation_id)
    blocks: list[JSON] = [header(f"🛑 {notice.title}")]
    if notice.explanation.strip():
        # Escaping can grow text up to five times; a section over Slack's limit would lose the whole notice.
        blocks += [section(model_text(piece)) for piece in split_text(notice.explanation)[:EXPLANATION_SECTIONS]]
    blocks += [
        section(trusted_text(f"{notice.next_steps}\n{HOW_TO_GO_ON}")),
        actions(
            NOTICE_ACTIONS_BLOCK_ID,
            button(ACTION_NEW_CONVERSATION, "Start a new conversation", value, "primary"),
            button(ACTION_FEEDBACK_HELPFUL, "👍 Ending was right", value),
            button(ACTION_FEEDBACK_UNHELPFUL, "👎 Ending was wrong", value),
        ),
        context(trusted_text(ENDED_BY.get(notice.reason, "Ended."))),
    ]
    return SlackPost(text=f"{notice.title}. {escape(notice.explanation)}".strip(), blocks=tuple(blocks))


def ended_posts(text: str, conversation_id: int, notice: EndingNotice) -> list[SlackPost]:
    return [*text_posts(text), notice_post(conversation_id, notice)]


def confirmation_posts(text: str, confirmation_id: int, question: str) -> list[SlackPost]:
    value = str(confirmation_id)
    tail = [
        section(trusted_text(f"*{question}*")),
        actions(
            CONFIRM_BLOCK_ID,
            button(ACTION_CONFIRM_END, "End conversation", value, "danger"),
            button(ACTION_CONFIRM_KEEP, "Keep talking", value, "primary"),
        ),
    ]
    return text_posts(text, tail, question)


def resolved_confirmation_blocks(blocks: Sequence[JSON], note: str) -> list[JSON]:
    """The question message once answered: the buttons give way to what happened."""
    kept = [b for b in blocks if b.get("block_id") != CONFIRM_BLOCK_ID]
    return [*kept, context(trusted_text(note))]


def short_notice(text: str) -> SlackPost:
    return SlackPost(text=text, blocks=(section(trusted_text(text)),))


def already_ended_note(text: str, conversation_id: int) -> SlackPost:
    blocks = (
        section(trusted_text(f"🔒 {text}")),
        section(trusted_text(HOW_TO_GO_ON)),
        actions(
            NOTICE_ACTIONS_BLOCK_ID,
            button(ACTION_NEW_CONVERSATION, "Start a new conversation", str(conversation_id), "primary"),
        ),
    )
    return SlackPost(text=text, blocks=blocks)


def render_outcome(outcome: Outcome) -> Rendered:
    match outcome:
        case Reply(text=text, support=support):
            return Rendered(posts=tuple(reply_posts(text, support)))
        case WarningGiven(text=text, behavior=behavior):
            return Rendered(posts=tuple(warning_posts(text, behavior)))
        case Ended(conversation=conversation, text=text, notice=notice):
            return Rendered(posts=tuple(ended_posts(text, conversation.id, notice)))
        case ConfirmationRequested(text=text, confirmation_id=cid, question=question):
            return Rendered(posts=tuple(confirmation_posts(text, cid, question)))
        case AlreadyEnded(conversation=conversation, text=text):
            return Rendered(ephemeral=already_ended_note(text, conversation.id))
        case ModelUnavailable(text=text) | ModelRefused(text=text):
            return Rendered(posts=(short_notice(text),))
        case Rejected(text=text):
            return Rendered(ephemeral=short_notice(text))
        case Ignored():
            return Rendered()


# -- inbound text -----------------------------------------------------------------------------------


def inbound_text(text: str, bot_user_id: str | None) -> str:
    """What a person wrote, for the model: without the mention of this bot, with Slack's entities undone."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    # `&amp;` last, so "&amp;lt;" (someone typing "&lt;") comes out as "&lt;", not "<".
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


def mentions(text: str, user_id: str | None) -> bool:
    return bool(user_id) and re.search(rf"<@{re.escape(user_id or '')}(?:\|[^>]*)?>", text) is not None


# -- starters of new threads ------------------------------------------------------------------------


def branch_starter(user: str, link: str | None) -> SlackPost:
    """The top-level message a branch lives under, linking the message it was branched from."""
    source = f"<{escape(link)}|a message>" if link else "a message"
    text = (
        f"✏️ <@{user}> edited {source}, so this is a new conversation branched from that point. "
        "Reply in this thread to continue; the original thread stays as it was."
    )
    return SlackPost(text=text, blocks=(section(trusted_text(text)),))


def fresh_starter(user: str) -> SlackPost:
    text = f"💬 <@{user}> started a new conversation with Claude. Reply in this thread, no mention needed."
    return SlackPost(text=text, blocks=(section(trusted_text(text)),))
