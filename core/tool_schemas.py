"""The two tools offered to Claude. Names and inputs are part of the product's public contract."""

from __future__ import annotations

from core.domain import JSON
from core.rules import END_TOOL, WARN_TOOL

WARN_USER: JSON = {
    "name": WARN_TOOL,
    "description": (
        "Mark this reply as the formal warning that comes before ending a conversation for persistent "
        "abuse. Use only after several replies that tried to redirect the conversation have failed. "
        "The text of this reply must name the behaviour, try once more to redirect, and say the "
        "conversation may end if it continues."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "behavior": {"type": "string", "description": "What the user keeps doing."},
            "redirect_attempts": {
                "type": "integer",
                "minimum": 0,
                "description": "How many of your earlier replies tried to redirect the conversation.",
            },
        },
        "required": ["behavior", "redirect_attempts"],
        "additionalProperties": False,
    },
}

END_CONVERSATION: JSON = {
    "name": END_TOOL,
    "description": (
        "End this conversation. Only as a last resort: after a formal warning the user persisted in "
        "abuse, or the user explicitly asked to end it (they will be asked to confirm). Never when the "
        "user may be at risk of harming themselves or others. Put your closing words in `explanation`."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "enum": ["persistent_abuse", "user_requested"]},
            "explanation": {
                "type": "string",
                "description": "Shown to the user in the ending notice: why the conversation ended.",
            },
        },
        "required": ["reason", "explanation"],
        "additionalProperties": False,
    },
}

TOOLS: tuple[JSON, ...] = (WARN_USER, END_CONVERSATION)
