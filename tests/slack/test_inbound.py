"""Slack posts as the core reads them: forwarded, attached and shared text comes with what the person wrote."""

from __future__ import annotations

from typing import Any

from bots.slack.inbound import MAX_ATTACHED_CHARS, attached_text, user_edit, user_message

BOT = "U0BOT"


def event(**fields: Any) -> dict[str, Any]:
    return {"type": "message", "user": "U1", "channel": "C1", "ts": "1.000001", "text": "look", **fields}


def test_a_forwarded_message_says_who_wrote_it() -> None:
    shared = {"is_share": True, "author_name": "Sam", "text": "I can&apos;t do this &amp; more", "fallback": "x"}
    message = user_message(event(attachments=[shared]), BOT)
    assert message is not None
    assert message.text == "look\n\n[Forwarded message from Sam]\nI can&apos;t do this & more"


def test_attachments_fields_and_file_previews_are_read_and_capped() -> None:
    legacy = {"pretext": "Alert", "title": "Build", "text": "failed", "fields": [{"title": "t", "value": "v1"}]}
    long_file = {"name": "notes.txt", "preview": "x" * (MAX_ATTACHED_CHARS + 10)}
    text = attached_text({"attachments": [legacy, {"fallback": "only a fallback"}], "files": [long_file]}, BOT)
    assert "[Attachment]\nAlert\nBuild\nfailed\nv1" in text
    assert "[Attachment]\nonly a fallback" in text
    assert "[Attached file notes.txt]\n" in text and text.endswith(" […]")
    assert attached_text({"attachments": ["junk", {"text": ""}], "files": [None, {"name": "a.png"}]}, BOT) == ""


def test_an_edit_keeps_what_was_attached() -> None:
    changed = {
        "user": "U1",
        "ts": "1.000001",
        "text": "edited",
        "edited": {"user": "U1", "ts": "2.000000"},
        "attachments": [{"is_share": True, "text": "forwarded words"}],
    }
    edit = user_edit({"channel": "C1", "message": changed, "previous_message": {"text": "before"}}, BOT)
    assert edit is not None and edit.text == "edited\n\n[Forwarded message]\nforwarded words"
