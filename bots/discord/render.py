"""Core outcomes as Discord messages: pure functions, no I/O.

- Discord rejects message content over 2,000 characters: model text is cut into pieces at paragraph, line,
  sentence or word boundaries, with ``` code fences closed and reopened across pieces, and sent as
  several messages.
- Nothing here needs escaping to stay quiet: every message goes out with `AllowedMentions.none()`, so
  `@everyone`, `@here`, `<@id>` and `<@&role>` in model text show as text and ping nobody.
- Warnings and ending notices are embeds, so they stand apart from the conversation's text; embed fields
  have their own limits (title 256, description 4,096), which `clip` keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import discord

from bots.discord.views import (
    ButtonSpec,
    confirm_id,
    edit_and_branch_id,
    feedback_id,
    new_conversation_id,
)
from core.domain import Conversation, EndReason
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
from core.service import ConversationStatus, ModeratorAction

MESSAGE_LIMIT = 2000
EMBED_TITLE_LIMIT = 256
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_FIELD_LIMIT = 1024
THREAD_NAME_LIMIT = 100
# Long enough to recognise a conversation in the channel list, short enough not to be cut there.
THREAD_TITLE_TARGET = 60
CODE_FENCE = "```"
FENCE_ROOM = 2 * (len(CODE_FENCE) + 1)  # a closing fence at the end of a piece, a reopening one after
MAX_FENCE_LANGUAGE = 20  # a reopening fence repeats the block's language tag (```python), up to this long
ELLIPSIS = "…"
EMPTY_REPLY = ELLIPSIS
DEFAULT_THREAD_TITLE = "Conversation with Claude"

WARNING_COLOUR = discord.Colour.orange()
ENDED_COLOUR = discord.Colour.red()
INFO_COLOUR = discord.Colour.blurple()
SUPPORT_COLOUR = discord.Colour.blue()

HOW_TO_GO_ON = (
    "• **New conversation:** use the button below, mention me in a channel, or run `/lastresort chat`.\n"
    "• **Branch:** press **Edit & branch** to rewrite one of your messages; I continue from that point in a "
    "new thread. Editing the message that started this thread does the same, and so does `/lastresort branch` "
    "in the channel once this thread is archived (an archived thread takes no clicks).\n"
    "• **Feedback:** 👍 or 👎 tells us whether this ending was right."
)
HOW_TO_GO_ON_DM = (
    "• **New conversation:** use the button below or run `/lastresort new`.\n"
    "• **Branch:** edit one of your earlier messages here, press **Edit & branch** or run `/lastresort branch`; "
    "I continue from that point as a new conversation.\n"
    "• **Feedback:** 👍 or 👎 tells us whether this ending was right."
)
# When the notice itself cannot be posted (its embed refused): the same news, as plain text without buttons.
PLAIN_HOW_TO_GO_ON = (
    "Run `/lastresort chat` for a new conversation, or `/lastresort branch` to edit one of your messages."
)
ENDED_BY = {
    EndReason.PERSISTENT_ABUSE: "Ended by Claude after a formal warning.",
    EndReason.USER_REQUESTED: "Ended at the request of the person who started it.",
    EndReason.MODERATOR: "Ended by a moderator.",
}
WARNING_TITLE = "⚠️ Formal warning"
WARNING_TEXT = "This reply is a formal warning about: {behavior}. If this continues, this conversation may end."
REOPENED = "🔓 A moderator reopened this conversation. You can continue here."
CANNOT_LOCK = (
    "⚠️ I could not lock this thread: I am missing the **Manage Threads** permission. The conversation has "
    "still ended and I will not answer here. Moderators: grant me Manage Threads so ended threads are locked "
    "(I say this once per server)."
)
MISSING_MANAGE_THREADS = "I am missing the **Manage Threads** permission"
# Replaces a half-written draft when a shutdown cuts the answer short; the message is answered again later.
INTERRUPTED = "_This answer was interrupted by a restart. It will be answered again shortly._"
# After giving up on posting an answer (Discord kept failing it): said once, plainly.
UNDELIVERED = (
    "⚠️ I answered your last message here, but Discord would not take the answer, so it is lost. "
    "Please send your message again."
)


def cannot_post_note(thread_mention: str, missing: list[str]) -> str:
    """For moderators, once per server: the bot answers nothing where it may not post."""
    names = " and ".join(f"**{name}**" for name in missing)
    return (
        f"⚠️ I cannot answer in {thread_mention}: I am missing the {names} permission there, so I do not "
        "answer (and do not ask Claude) in threads like it. Moderators: grant it to me in this channel "
        "(I say this once per server)."
    )


def lock_failed_note(thread_mention: str, why: str) -> str:
    """For moderators, once per server: an ended thread stays open, though the bot keeps it closed."""
    return (
        f"⚠️ A conversation ended in {thread_mention}, but I could not lock the thread ({why}). The notice is "
        "posted and I will not answer there, but members can still post. Moderators: check my Manage Threads "
        "and View Channel permissions (I say this once per server)."
    )


NO_THREAD_PERMISSION = (
    "I cannot start a conversation here: I need the **Create Public Threads** permission in this channel."
)


@dataclass(frozen=True, slots=True)
class DiscordPost:
    """One message to send (or to put in place of the streamed draft)."""

    content: str = ""
    embeds: tuple[discord.Embed, ...] = ()
    buttons: tuple[ButtonSpec, ...] = field(default=())


# -- text -----------------------------------------------------------------------------------------------


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with an ellipsis when something was cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def _cut_point(text: str, fit: int) -> int:
    """Where to cut so that text[:cut] fits in `fit`: after a paragraph, a line, a sentence or a word, and
    never in the first half, which would leave tiny pieces of one long line."""
    for separator, keep in (("\n\n", 0), ("\n", 0), (". ", 1), (" ", 0)):
        at = text.rfind(separator, 0, fit + 1 - keep)
        if at > 0 and at >= fit // 2:
            return at + keep
    return fit


def _open_fence_language(piece: str) -> str:
    """The language tag of the fence `piece` leaves open (its last fence opens a block): ```py -> "py"."""
    after = piece[piece.rfind(CODE_FENCE) + len(CODE_FENCE) :]
    tag = after.split("\n", 1)[0].strip()
    return tag if len(tag) <= MAX_FENCE_LANGUAGE and all(c.isalnum() or c in "+#.-_" for c in tag) else ""


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Cut text into pieces of at most `limit` characters, keeping ``` code fences balanced; a block
    continued in the next piece reopens with its language tag, so it keeps its highlighting."""
    if limit <= FENCE_ROOM + MAX_FENCE_LANGUAGE:
        raise ValueError(f"limit must be more than {FENCE_ROOM + MAX_FENCE_LANGUAGE} characters")
    pieces: list[str] = []
    rest = text.strip()
    reopen = False
    language = ""
    while rest:
        if reopen:
            rest = f"{CODE_FENCE}{language}\n{rest}"
        budget = limit - FENCE_ROOM - MAX_FENCE_LANGUAGE
        cut = len(rest) if len(rest) <= budget else _cut_point(rest, budget)
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n ")
        reopen = piece.count(CODE_FENCE) % 2 == 1 and bool(rest)
        if reopen:
            language = _open_fence_language(piece)
            piece += f"\n{CODE_FENCE}"
        if piece.strip():
            pieces.append(piece)
    return pieces


def draft_text(text: str) -> str:
    """What the streamed draft shows: the text so far, cut to one message."""
    return clip(text.strip(), MESSAGE_LIMIT) or ELLIPSIS


def thread_title(text: str, fallback: str = DEFAULT_THREAD_TITLE) -> str:
    """A short thread name from the first line of what someone wrote (1 to 100 characters)."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    words = " ".join(line.split())
    if not words:
        return clip(fallback, THREAD_NAME_LIMIT)
    if len(words) <= THREAD_TITLE_TARGET:
        return words
    cut = words.rfind(" ", 0, THREAD_TITLE_TARGET)
    return words[: cut if cut >= THREAD_TITLE_TARGET // 2 else THREAD_TITLE_TARGET].rstrip() + ELLIPSIS


def text_posts(
    text: str, *, last_embeds: Sequence[discord.Embed] = (), last_buttons: Sequence[ButtonSpec] = ()
) -> list[DiscordPost]:
    """Model text over as many messages as needed, with embeds and buttons on the last one."""
    pieces = split_text(text)
    if not pieces and not last_embeds and not last_buttons:
        pieces = [EMPTY_REPLY]
    posts = [DiscordPost(content=piece) for piece in pieces]
    if not last_embeds and not last_buttons:
        return posts
    last = posts.pop() if posts else DiscordPost()
    posts.append(DiscordPost(content=last.content, embeds=tuple(last_embeds), buttons=tuple(last_buttons)))
    return posts


# -- embeds and buttons ------------------------------------------------------------------------------------


def warning_embed(behavior: str) -> discord.Embed:
    described = behavior.strip() or "this behaviour"
    return discord.Embed(
        title=WARNING_TITLE,
        description=clip(WARNING_TEXT.format(behavior=described), EMBED_DESCRIPTION_LIMIT),
        colour=WARNING_COLOUR,
    )


def support_embed(support: str) -> discord.Embed:
    # The operator's words, shown as written.
    return discord.Embed(description=clip(f"💙 {support}", EMBED_DESCRIPTION_LIMIT), colour=SUPPORT_COLOUR)


def after_ending_buttons(conversation_id: int) -> tuple[ButtonSpec, ...]:
    return (
        ButtonSpec("New conversation", new_conversation_id(conversation_id), discord.ButtonStyle.primary),
        ButtonSpec("Edit & branch", edit_and_branch_id(conversation_id), discord.ButtonStyle.secondary),
        ButtonSpec("Ending was right", feedback_id(conversation_id, True), discord.ButtonStyle.secondary, "👍"),
        ButtonSpec("Ending was wrong", feedback_id(conversation_id, False), discord.ButtonStyle.secondary, "👎"),
    )


def notice_post(conversation_id: int, notice: EndingNotice, *, in_dm: bool) -> DiscordPost:
    """The ending notice: why (in the explanation's words), what the person can do now, and buttons."""
    explanation = notice.explanation.strip()
    description = f"{explanation}\n\n{notice.next_steps}" if explanation else notice.next_steps
    embed = discord.Embed(
        title=clip(f"🛑 {notice.title}", EMBED_TITLE_LIMIT),
        description=clip(description, EMBED_DESCRIPTION_LIMIT),
        colour=ENDED_COLOUR,
    )
    embed.add_field(name="What you can do now", value=HOW_TO_GO_ON_DM if in_dm else HOW_TO_GO_ON, inline=False)
    embed.set_footer(text=ENDED_BY.get(notice.reason, "Ended."))
    return DiscordPost(embeds=(embed,), buttons=after_ending_buttons(conversation_id))


def confirmation_buttons(confirmation_id: int) -> tuple[ButtonSpec, ...]:
    return (
        ButtonSpec("End conversation", confirm_id(confirmation_id, True), discord.ButtonStyle.danger),
        ButtonSpec("Keep talking", confirm_id(confirmation_id, False), discord.ButtonStyle.primary),
    )


def confirmation_embed(question: str, explanation: str, note: str | None = None) -> discord.Embed:
    """The question; once answered (`note`), the same embed says what happened instead of asking."""
    embed = discord.Embed(
        title=clip(question, EMBED_TITLE_LIMIT),
        description=clip(explanation.strip(), EMBED_DESCRIPTION_LIMIT) or None,
        colour=INFO_COLOUR,
    )
    if note:
        embed.set_footer(text=note)
    return embed


def already_ended_post(text: str, conversation_id: int) -> DiscordPost:
    buttons = after_ending_buttons(conversation_id)[:2]  # new conversation, edit & branch
    return DiscordPost(content=f"🔒 {text}", buttons=buttons)


def short_post(text: str) -> DiscordPost:
    return DiscordPost(content=clip(text, MESSAGE_LIMIT))


def plain_notice(notice: EndingNotice) -> str:
    explanation = notice.explanation.strip()
    body = f"{explanation}\n\n{notice.next_steps}" if explanation else notice.next_steps
    return clip(f"🛑 **{notice.title}**\n{body}\n{PLAIN_HOW_TO_GO_ON}", MESSAGE_LIMIT)


def render_outcome(outcome: Outcome, *, in_dm: bool) -> list[DiscordPost]:
    match outcome:
        case Reply(text=text, support=support):
            return text_posts(text, last_embeds=[support_embed(support)] if support else [])
        case WarningGiven(text=text, behavior=behavior):
            return text_posts(text, last_embeds=[warning_embed(behavior)])
        case Ended(conversation=conversation, text=text, notice=notice):
            before = text_posts(text) if text.strip() else []
            return [*before, notice_post(conversation.id, notice, in_dm=in_dm)]
        case ConfirmationRequested(text=text, confirmation_id=cid, question=question, explanation=explanation):
            return text_posts(
                text, last_embeds=[confirmation_embed(question, explanation)], last_buttons=confirmation_buttons(cid)
            )
        case AlreadyEnded(conversation=conversation, text=text):
            return [already_ended_post(text, conversation.id)]
        case ModelUnavailable(text=text) | ModelRefused(text=text) | Rejected(text=text):
            return [short_post(text)]
        case Ignored():
            return []


# -- thread starters and other notes -----------------------------------------------------------------------


def fresh_starter(user_id: int) -> str:
    return f"💬 <@{user_id}> started a new conversation with Claude. Reply in this thread, no mention needed."


def branch_starter(user_id: int, link: str | None) -> str:
    source = f"[a message]({link})" if link else "a message"
    return (
        f"✏️ <@{user_id}> edited {source}, so this is a new conversation that continues from that point. "
        "Reply in this thread; the original conversation stays as it was."
    )


DM_BRANCH_NOTE = "✏️ You edited a message, so this is a new conversation that continues from that point."
DM_NEW_CONVERSATION = "💬 New conversation started. Send me a message whenever you are ready."


# -- moderator views ------------------------------------------------------------------------------------


def status_text(status: ConversationStatus | None) -> str:
    if status is None:
        return "This thread is not a Last Resort conversation."
    conversation = status.conversation
    line = f"Conversation #{conversation.id} is **{conversation.status.value}**"
    if conversation.is_ended:
        reason = conversation.ended_reason.value if conversation.ended_reason else "unknown"
        line += f" ({reason}, by {conversation.ended_by or 'unknown'})"
    counts = f"{line}. {status.user_messages} user message(s), {status.warnings} formal warning(s)."
    marks = status.risk
    if not marks.marked:
        return counts
    what = ", ".join(sorted(marks.categories)) or "a participant's recent signal"
    shown = "; support resources shown" if marks.support_shown else ""
    return f"{counts}\n⚠️ **Marked at risk** ({what}){shown}: it will not be warned or ended by the model or on request."


HELD = {
    "at_risk": (
        "Not ended: someone in conversation #{id} may be at risk ({categories}), so the bot stays with them and "
        "keeps offering support. To end it anyway, run the command again with `override: True`; the override is "
        "recorded with your name."
    ),
    "review_unavailable": (
        "Not ended: the risk review could not run, so I cannot tell whether anyone in conversation #{id} is at "
        "risk. Try again in a moment, or run it with `override: True`; the override is recorded with your name."
    ),
    "stale": "Not ended: someone wrote in conversation #{id} while I was checking it. Read it and try again.",
}


def held_text(action: ModeratorAction) -> str:
    """Why a moderator's `end` was held back, and how to override where that is allowed."""
    categories = ", ".join(sorted(action.categories)) or "a recent signal"
    return HELD[action.held or "stale"].format(id=action.conversation.id, categories=categories)


def ended_answer(
    conversation_id: int, thread_mention: str, *, locked: bool, why: str = "", notice_shown: bool = True
) -> str:
    """What a moderator is told after ending a conversation: exactly what happened on Discord."""
    unseen = "" if notice_shown else " Discord refused the ending notice, so the thread does not show it yet."
    if locked:
        return f"Ended conversation #{conversation_id} and locked {thread_mention}.{unseen}"
    if not why or why == MISSING_MANAGE_THREADS:
        return (
            f"Ended conversation #{conversation_id}, but I could not lock {thread_mention}: "
            f"{MISSING_MANAGE_THREADS}. Members can still post there; I will not answer them. "
            f"Grant me Manage Threads so ended threads are locked.{unseen}"
        )
    return (
        f"Ended conversation #{conversation_id}, but I could not lock {thread_mention}: {why}. Members can "
        f"still post there; I will not answer them.{unseen}"
    )


def reopened_answer(conversation_id: int, thread_mention: str, *, unlocked: bool) -> str:
    """What a moderator is told after reopening: whether people can actually post in the thread again."""
    if unlocked:
        return f"Reopened conversation #{conversation_id}; {thread_mention} is open again."
    return (
        f"Reopened conversation #{conversation_id}, but I could not unlock {thread_mention}: "
        f"{MISSING_MANAGE_THREADS}. Unlock it yourself (thread menu → Unlock Thread) so people can post there."
    )


def branch_choice(conversation: Conversation) -> str:
    """How one ended conversation is offered in `/lastresort branch`'s suggestions."""
    ended = f", ended {conversation.ended_at:%Y-%m-%d %H:%M} UTC" if conversation.ended_at else ""
    return f"Conversation #{conversation.id}{ended}"


def branch_choices(conversations: Sequence[Conversation], typed: str, limit: int = 25) -> list[tuple[str, str]]:
    """(label, value) suggestions matching what the person typed so far; Discord shows at most 25."""
    wanted = typed.strip().lower()
    labelled = [(branch_choice(c), str(c.id)) for c in conversations]
    return [(label, value) for label, value in labelled if wanted in label.lower()][:limit]


def stats_text(figures: Sequence[tuple[str, int]], days: int) -> str:
    lines = [f"• {label}: **{value}**" for label, value in figures]
    return clip(f"Last {days} days:\n" + "\n".join(lines), MESSAGE_LIMIT)
