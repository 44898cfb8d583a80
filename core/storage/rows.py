"""Row <-> domain conversions shared by every backend, so SQLite and PostgreSQL agree on meaning."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from core.domain import (
    AuditEvent,
    Conversation,
    EndReason,
    NewMessage,
    PendingConfirmation,
    RecordedWarning,
    Role,
    Status,
    StoredMessage,
    ThreadKey,
)


class Row(Protocol):
    """What both drivers' rows offer: access by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


class ValuesRow(Row, Protocol):
    """A row that also iterates over its values, in column order (sqlite3.Row and asyncpg's Record do)."""

    def __iter__(self) -> Iterator[Any]: ...


# Written in place of message text by retention and by "forget": the turn's shape stays valid for replay.
REDACTED_TEXT = "[removed]"
# The owner of a conversation whose owner asked to be forgotten: the thread stays, nobody owns it.
FORGOTTEN = "forgotten"


def to_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def opt_time(value: Any) -> datetime | None:
    return None if value is None else to_time(value)


def dump_blocks(blocks: tuple[dict[str, Any], ...]) -> str:
    # Compact and key-order preserving: the replayed history must be byte-identical every turn.
    return json.dumps(list(blocks), ensure_ascii=False, separators=(",", ":"))


def load_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def conversation(row: Row) -> Conversation:
    return Conversation(
        id=int(row["id"]),
        key=ThreadKey(row["platform"], row["place"], row["thread"]),
        owner_id=row["owner_id"],
        status=Status(row["status"]),
        created_at=to_time(row["created_at"]),
        branched_from=row["branched_from"],
        branch_point_seq=row["branch_point_seq"],
        ended_reason=EndReason(row["ended_reason"]) if row["ended_reason"] else None,
        ended_explanation=row["ended_explanation"],
        ended_at=opt_time(row["ended_at"]),
        ended_by=row["ended_by"],
    )


def message(row: Row) -> StoredMessage:
    return StoredMessage(
        id=int(row["id"]),
        conversation_id=int(row["conversation_id"]),
        seq=int(row["seq"]),
        role=Role(row["role"]),
        blocks=tuple(load_json(row["blocks"])),
        author_id=row["author_id"],
        author_name=row["author_name"],
        platform_message_id=row["platform_message_id"],
        created_at=opt_time(row["created_at"]),
        answered=bool(row["answered"]),
        excluded=bool(row["excluded"]),
        delivered=bool(row["delivered"]),
    )


# Characters of row text kept parsed (each row is held twice: its raw columns as the key, and parsed); past
# this the memo starts again empty, and a turn parses its history once more. About 16-64 MB, whatever the
# length of the messages.
PARSED_CHARACTERS_LIMIT = 8_000_000


class ParsedMessages:
    """StoredMessages by the exact contents of the row they came from, so that a history read on every turn
    is parsed (JSON blocks, times, enums) once per row version, not once per turn. Keyed by every column: a
    row changed in any way (answered, excluded, redacted by `forget`, even by another process) is a new key
    and parsed afresh. The messages are frozen and nothing mutates their blocks, so sharing them is safe.

    `clear()` after a forget or purge also starts a new generation: a read that began before it (on another
    connection, so it may return rows from before the deletion) parses its rows but keeps none of them."""

    def __init__(self, limit: int = PARSED_CHARACTERS_LIMIT) -> None:
        self._limit = limit
        self._parsed: dict[tuple[Any, ...], StoredMessage] = {}
        self._characters = 0
        self.generation = 0

    def clear(self) -> None:
        """Forget every parsed row: after `forget` or a purge, no removed text stays in this process's memory."""
        self._parsed.clear()
        self._characters = 0
        self.generation += 1

    def message(self, row: ValuesRow, *, read_in: int) -> StoredMessage:
        """The row parsed; `read_in` is the generation the read that returned it started in."""
        key = tuple(row)
        found = self._parsed.get(key)
        if found is None:
            found = message(row)
            if read_in != self.generation:
                return found
            size = len(row["blocks"])
            if self._characters + size > self._limit:
                self._parsed.clear()
                self._characters = 0
            self._parsed[key] = found
            self._characters += size
        return found


def starts_delivered(message: NewMessage) -> bool:
    """A person's message waits for its answer to be delivered; everything else has nothing to deliver."""
    return not (message.role is Role.USER and not message.answered)


def warning(row: Row) -> RecordedWarning:
    return RecordedWarning(
        id=int(row["id"]),
        conversation_id=int(row["conversation_id"]),
        after_seq=int(row["after_seq"]),
        behavior=row["behavior"],
        created_at=to_time(row["created_at"]),
    )


def confirmation(row: Row) -> PendingConfirmation:
    return PendingConfirmation(
        id=int(row["id"]),
        conversation_id=int(row["conversation_id"]),
        owner_id=row["owner_id"],
        explanation=row["explanation"],
        created_at=to_time(row["created_at"]),
        resolved=bool(row["resolved"]),
    )


def audit_event(row: Row) -> AuditEvent:
    return AuditEvent(
        id=int(row["id"]),
        kind=row["kind"],
        conversation_id=row["conversation_id"],
        actor=row["actor"],
        reason=row["reason"],
        detail=load_json(row["detail"]) or {},
        created_at=to_time(row["created_at"]),
    )


def redact_blocks(blocks: tuple[dict[str, Any], ...]) -> str:
    """Replace text and tool input text with a marker, keeping ids so tool_use/tool_result still pair."""
    redacted: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            redacted.append({"type": "text", "text": REDACTED_TEXT})
        elif kind == "tool_use":
            redacted.append({**block, "input": dict.fromkeys(block.get("input", {}), REDACTED_TEXT)})
        else:
            redacted.append(block)
    return dump_blocks(tuple(redacted))


# A seq after every message: "everything answered so far" (a new branch's only answer).
EVERY_SEQ = 2**62


def split_categories(joined: str) -> list[str]:
    return [c for c in joined.split(",") if c]


def join_categories(found: Sequence[str], before: str) -> str:
    """Risk categories add up: a later signal never erases an earlier one."""
    return ",".join(sorted({*found, *split_categories(before)}))
