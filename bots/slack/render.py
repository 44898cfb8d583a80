"""Core outcomes as Slack messages: pure functions, no I/O.

Two rules hold for everything here:
- The model writes standard Markdown, and Slack's `markdown` block (and `markdown_text` of the streaming
  methods) renders it: `**bold**`, headings, lists, tables and code arrive as formatting. Before it goes
  out, model text is neutralised (`neutralise`): `&`, `<`, `>` are escaped, so `<!channel>`, `<!here>`,
  `<!everyone>`, `<@U…>`, `<!subteam^…>` and `<url|label>` show as text and never ping or link; a word
  joiner after every `@` keeps a bare `@here` from becoming a mention, and one after every `]` keeps a
  Markdown link from hiding where it goes (the URL stays visible). Every rule works character by character,
  so the neutral form of a prefix is a prefix of the neutral form of the whole: what was streamed stays
  valid as the answer grows.
- Output respects Slack's limits. A `markdown` block holds at most 12,000 characters, and all markdown
  blocks of one message together no more: model text is cut into pieces of at most 12,000 neutralised
  characters (at paragraph, line or word boundaries, keeping code fences balanced), one message each; longer
  replies continue in further messages in the same thread. Our own notices keep Block Kit (sections of at
  most 3,000 characters, `verbatim` where the model's words appear in them).
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
# Slack's limit for one markdown block, for all markdown blocks of a message together, and for the
# `markdown_text` of one streaming call.
MARKDOWN_LIMIT = 12_000
# An ending explanation is short by contract (1,500 characters at most, 7,500 once escaped in the worst
# case): three sections always hold it.
EXPLANATION_SECTIONS = 3
HEADER_TEXT_LIMIT = 150  # Slack's limit for a header block's plain_text
CODE_FENCE = "```"
# Room for a closing and a reopening fence plus one escaped character ("&amp;") per piece.
MIN_SPLIT_LIMIT = 2 * (len(CODE_FENCE) + 1) + len("&amp;")

ACTION_NEW_CONVERSATION = "lastresort_new_conversation"
ACTION_FEEDBACK_HELPFUL = "lastresort_feedback_helpful"
ACTION_FEEDBACK_UNHELPFUL = "lastresort_feedback_unhelpful"
ACTION_CONFIRM_END = "lastresort_confirm_end"
ACTION_CONFIRM_KEEP = "lastresort_confirm_keep"
ACTION_ANSWER_FEEDBACK = "lastresort_answer_feedback"
ACTION_OVERRIDE_END = "lastresort_override_end"
ANSWER_FEEDBACK_BLOCK_ID = "lastresort_answer_feedback"
VOTE_GOOD = "good"
VOTE_BAD = "bad"
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
    """One message: `text` is the fallback Slack shows in notifications and to screen readers.

    A message of model text has `markdown`: its body, already neutralised, which is also its first block;
    the blocks after it (`tail`) are ours. A streamed answer streams the body and attaches the tail when
    the stream stops."""

    text: str
    blocks: tuple[JSON, ...] = ()
    markdown: str | None = None

    def api_blocks(self) -> list[JSON] | None:
        return list(self.blocks) if self.blocks else None

    @property
    def tail(self) -> tuple[JSON, ...]:
        return self.blocks[1:] if self.markdown is not None else self.blocks


@dataclass(frozen=True, slots=True)
class Rendered:
    """What an outcome becomes: thread messages everyone sees, and/or a note only the poster sees."""

    posts: tuple[SlackPost, ...] = ()
    ephemeral: SlackPost | None = None


# -- escaping ---------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Slack's three control characters; `&` first so the other entities are not escaped twice."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Characters whose neutral form is longer than themselves (see the module docstring): the invisible word
# joiner (U+2060) after `@` stops mentions, after `]` it stops `[label](url)` links.
WORD_JOINER = "\u2060"
_NEUTRAL = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "@": "@" + WORD_JOINER, "]": "]" + WORD_JOINER})


def neutralise(text: str) -> str:
    """Model text made safe for a markdown block or streamed `markdown_text`: nothing in it can ping,
    mention or hide a link. Character by character, so prefixes stay prefixes."""
    return text.translate(_NEUTRAL)


def _escaped_length(char: str) -> int:
    # The longest form any of our renderings gives the character (escaping, or neutralising).
    return len(neutralise(char))


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
    """Cut raw text into pieces whose *escaped* (or neutralised) length is at most `limit`, keeping ```
    fences balanced."""
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


def markdown_block(neutral: str) -> JSON:
    return {"type": "markdown", "text": neutral}


def markdown_pieces(text: str) -> list[str]:
    """Model text as the neutralised bodies of consecutive messages, each within MARKDOWN_LIMIT."""
    return [neutralise(piece) for piece in split_text(text, MARKDOWN_LIMIT)] if text.strip() else []


def stream_text(text: str) -> str:
    """What a streamed answer shows of the text so far: the neutral form of what its first message will
    hold, cut to the first half of the limit, where `split_text` never cuts, so the final first message
    always extends what was streamed."""
    shown = neutralise(text.strip())
    if len(shown) <= MARKDOWN_LIMIT // 2:
        return shown
    return neutralise(text.strip()[: _fitting_prefix(text.strip(), MARKDOWN_LIMIT // 2)]).rstrip()


def text_posts(text: str, tail: Sequence[JSON] = (), tail_fallback: str = "") -> list[SlackPost]:
    """Model text as markdown over as many messages as needed, then `tail` blocks in the last one."""
    posts = [SlackPost(text=piece, blocks=(markdown_block(piece),), markdown=piece) for piece in markdown_pieces(text)]
    if not tail:
        return posts
    if not posts:
        return [SlackPost(text=tail_fallback, blocks=tuple(tail))]
    last = posts[-1]
    posts[-1] = SlackPost(text=last.text, blocks=(*last.blocks, *tail), markdown=last.markdown)
    return posts


def answer_feedback(conversation_id: int) -> JSON:
    """👍/👎 under an answer (Slack's feedback_buttons): the value says which conversation and which way."""

    def choice(label: str, described: str, vote: str) -> JSON:
        return {
            "text": {"type": "plain_text", "text": label, "emoji": True},
            "accessibility_label": described,
            "value": f"{conversation_id}:{vote}",
        }

    return {
        "type": "context_actions",
        "block_id": ANSWER_FEEDBACK_BLOCK_ID,
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": ACTION_ANSWER_FEEDBACK,
                "positive_button": choice("👍", "This answer was helpful", VOTE_GOOD),
                "negative_button": choice("👎", "This answer was not helpful", VOTE_BAD),
            }
        ],
    }


def parse_vote(value: str) -> tuple[int, bool] | None:
    """(conversation id, helpful) from a feedback button's value, or None for anything else."""
    conversation, _, vote = value.partition(":")
    if not conversation.isdigit() or vote not in (VOTE_GOOD, VOTE_BAD):
        return None
    return int(conversation), vote == VOTE_GOOD


def draft_post(text: str) -> SlackPost:
    """An answer being written, for the post-and-update path: its text so far as markdown, or a neutral
    placeholder (notifications show the first post, and the first words may still be withdrawn)."""
    shown = stream_text(text)
    if not shown:
        return SlackPost(text="…")
    return SlackPost(text=shown, blocks=(markdown_block(shown),), markdown=shown)


# -- outcomes ---------------------------------------------------------------------------------------


def reply_posts(text: str, support: str | None, conversation_id: int) -> list[SlackPost]:
    # Support resources are the operator's words, shown as written (they may hold links).
    tail = [context(trusted_text(f"💙 {support}"))] if support else []
    return text_posts(text or "…", [*tail, answer_feedback(conversation_id)], support or "")


def warning_posts(text: str, behavior: str, conversation_id: int) -> list[SlackPost]:
    # The whole note is verbatim: the behaviour is the model's words, and verbatim keeps a bare @here in
    # them from becoming a mention.
    note = WARNING_NOTE.format(behavior=escape(behavior.strip() or "this behaviour"))
    tail = [context({"type": "mrkdwn", "text": note, "verbatim": True}), answer_feedback(conversation_id)]
    return text_posts(text, tail, "⚠️ Formal warning")


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
        case Reply(conversation=conversation, text=text, support=support):
            return Rendered(posts=tuple(reply_posts(text, support, conversation.id)))
        case WarningGiven(conversation=conversation, text=text, behavior=behavior):
            return Rendered(posts=tuple(warning_posts(text, behavior, conversation.id)))
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
