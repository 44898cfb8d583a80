"""Buttons and the "Edit & branch" form: their custom ids, and the discord.py objects that show them.

Every custom id carries the id it acts on (a confirmation, a conversation), so a click is understood from
the custom id alone: no view is kept in memory, and a button posted before a restart, or by another
instance during a rolling deploy, works like a new one. The adapter routes clicks and form submissions
itself (`parse_custom_id`), which is why the views built here are stopped before they are sent:
discord.py then does not keep them, and nothing else answers the interaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import discord

PREFIX = "lastresort"
# Discord's limits for modals: title and labels 45 characters, a text input's value 4000.
MODAL_TEXT_LIMIT = 4000
TEXT_FIELD = "text"
NUMBER_FIELD = "number"


# -- actions a custom id stands for -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Confirm:
    confirmation_id: int
    confirmed: bool


@dataclass(frozen=True, slots=True)
class NewConversation:
    conversation_id: int


@dataclass(frozen=True, slots=True)
class EditAndBranch:
    """The button: opens the form."""

    conversation_id: int


@dataclass(frozen=True, slots=True)
class BranchForm:
    """The submitted form."""

    conversation_id: int


@dataclass(frozen=True, slots=True)
class Feedback:
    conversation_id: int
    helpful: bool


Action = Confirm | NewConversation | EditAndBranch | BranchForm | Feedback

_PATTERN = re.compile(
    rf"{PREFIX}:(?:"
    r"confirm:(?P<confirm>\d+):(?P<answer>yes|no)"
    r"|new:(?P<new>\d+)"
    r"|edit:(?P<edit>\d+)"
    r"|branch:(?P<branch>\d+)"
    r"|feedback:(?P<feedback>\d+):(?P<vote>up|down)"
    r")"
)


def confirm_id(confirmation_id: int, confirmed: bool) -> str:
    return f"{PREFIX}:confirm:{confirmation_id}:{'yes' if confirmed else 'no'}"


def new_conversation_id(conversation_id: int) -> str:
    return f"{PREFIX}:new:{conversation_id}"


def edit_and_branch_id(conversation_id: int) -> str:
    return f"{PREFIX}:edit:{conversation_id}"


def branch_form_id(conversation_id: int) -> str:
    return f"{PREFIX}:branch:{conversation_id}"


def feedback_id(conversation_id: int, helpful: bool) -> str:
    return f"{PREFIX}:feedback:{conversation_id}:{'up' if helpful else 'down'}"


def parse_custom_id(custom_id: str) -> Action | None:
    """The action a custom id stands for; None for anything that is not ours (or is malformed)."""
    match = _PATTERN.fullmatch(custom_id)
    if match is None:
        return None
    groups = match.groupdict()
    if groups["confirm"] is not None:
        return Confirm(int(groups["confirm"]), groups["answer"] == "yes")
    if groups["new"] is not None:
        return NewConversation(int(groups["new"]))
    if groups["edit"] is not None:
        return EditAndBranch(int(groups["edit"]))
    if groups["branch"] is not None:
        return BranchForm(int(groups["branch"]))
    return Feedback(int(groups["feedback"]), groups["vote"] == "up")


# -- buttons ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ButtonSpec:
    """A button as data, so rendering stays pure (a discord.py View needs a running event loop)."""

    label: str
    custom_id: str
    style: discord.ButtonStyle = discord.ButtonStyle.secondary
    emoji: str | None = None


def as_view(buttons: Sequence[ButtonSpec]) -> discord.ui.View | None:
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for spec in buttons:
        view.add_item(discord.ui.Button(label=spec.label, custom_id=spec.custom_id, style=spec.style, emoji=spec.emoji))
    # Clicks are routed by custom id (see the module docstring); a stopped view is not kept by discord.py.
    view.stop()
    return view


# -- the "Edit & branch" form -------------------------------------------------------------------------


def branch_modal(conversation_id: int, *, last_text: str, message_count: int) -> discord.ui.Modal:
    """Prefilled with the user's last message; the number picks which of their messages to replace."""
    modal = discord.ui.Modal(title="Edit a message and branch", custom_id=branch_form_id(conversation_id))
    modal.add_item(
        discord.ui.TextInput(
            label="Your message, as it should have been",
            custom_id=TEXT_FIELD,
            style=discord.TextStyle.paragraph,
            default=last_text[:MODAL_TEXT_LIMIT],
            max_length=MODAL_TEXT_LIMIT,
        )
    )
    modal.add_item(
        discord.ui.TextInput(
            label=f"Which of your messages? (1 to {message_count})"[:45],
            custom_id=NUMBER_FIELD,
            style=discord.TextStyle.short,
            default=str(message_count),
            max_length=6,
        )
    )
    modal.stop()  # submissions are routed by custom id, like clicks
    return modal


def _walk(components: Sequence[Any]) -> Iterator[Mapping[str, Any]]:
    for component in components:
        if not isinstance(component, Mapping):
            continue
        yield component
        yield from _walk(component.get("components") or [])
        inner = component.get("component")  # a Label (type 18) wraps one input
        if isinstance(inner, Mapping):
            yield from _walk([inner])


def modal_values(data: Mapping[str, Any]) -> dict[str, str]:
    """custom_id -> value of every text input in a modal submission's `data`."""
    return {
        str(c["custom_id"]): str(c.get("value") or "")
        for c in _walk(data.get("components") or [])
        if c.get("type") == discord.ComponentType.text_input.value and "custom_id" in c
    }


def parse_message_number(raw: str, count: int) -> int | None:
    """The message number a person typed, if it names one of their `count` messages."""
    text = raw.strip().lstrip("#")
    if not text.isdigit():
        return None
    number = int(text)
    return number if 1 <= number <= count else None
