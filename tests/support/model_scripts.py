"""What the model proposes in the tests, scripted once: a formal warning, and the two kinds of ending."""

from __future__ import annotations

from tests.support.fake_anthropic import Reply

WARN = Reply.tool(
    "warn_user",
    {"behavior": "demanding instructions for violence", "redirect_attempts": 2},
    text="I won't help with that. This is a formal warning: if it continues, this conversation may end.",
)
END_ABUSE = Reply.tool(
    "end_conversation",
    {"reason": "persistent_abuse", "explanation": "You kept demanding violent instructions after a warning."},
)
END_REQUESTED = Reply.tool(
    "end_conversation",
    {"reason": "user_requested", "explanation": "You asked to end this conversation."},
    text="Of course.",
)
