"""The embedded default store on aiosqlite: WAL, a busy timeout, and schema migrations in code.

One connection serves the process, on aiosqlite's one database thread. Every store call is one hop to that
thread: a transaction runs there whole (BEGIN IMMEDIATE, its statements, COMMIT), so transactions never
interleave on the connection and no coroutine waits on a lock for another's round trips.

The file belongs to one `lastresort run` process: threads are serialized in that process, without lease rows
(`multi_instance`), so two bots on one file could answer a thread twice. PostgreSQL is how Last Resort runs
as several instances. (One-off operator commands on the same file are fine: BEGIN IMMEDIATE plus the busy
timeout keep their writes apart.)
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import aiosqlite

from core.domain import (
    ActiveThread,
    AuditEvent,
    Conversation,
    Draft,
    EndReason,
    NewMessage,
    PendingConfirmation,
    RecordedWarning,
    RiskMarks,
    Status,
    StoredMessage,
    ThreadKey,
    VoteCounts,
)
from core.ports import Clock
from core.storage import rows
from core.storage.errors import StoreUnavailableError
from core.storage.statement_counter import StatementCounter

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE conversations (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                platform TEXT NOT NULL, place TEXT NOT NULL, thread TEXT NOT NULL,
                owner_id TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL,
                branched_from INTEGER, branch_point_seq INTEGER,
                ended_reason TEXT, ended_explanation TEXT, ended_at TEXT, ended_by TEXT,
                UNIQUE (platform, place, thread))""",
            "CREATE INDEX conversations_ended ON conversations (status, ended_at)",
            """CREATE TABLE messages (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                seq INTEGER NOT NULL, role TEXT NOT NULL, blocks TEXT NOT NULL,
                author_id TEXT, author_name TEXT, platform TEXT NOT NULL, platform_message_id TEXT,
                answered INTEGER NOT NULL, excluded INTEGER NOT NULL DEFAULT 0,
                redacted INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL,
                UNIQUE (conversation_id, seq))""",
            """CREATE UNIQUE INDEX messages_platform_id ON messages (platform, platform_message_id)
                WHERE platform_message_id IS NOT NULL""",
            "CREATE INDEX messages_author ON messages (platform, author_id)",
            "CREATE INDEX messages_unanswered ON messages (answered, created_at)",
            """CREATE TABLE warnings (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                after_seq INTEGER NOT NULL, behavior TEXT NOT NULL, created_at TEXT NOT NULL)""",
            """CREATE TABLE confirmations (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                owner_id TEXT NOT NULL, explanation TEXT NOT NULL, created_at TEXT NOT NULL,
                resolved INTEGER NOT NULL DEFAULT 0)""",
            """CREATE TABLE audit_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, conversation_id INTEGER,
                actor TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, created_at TEXT NOT NULL)""",
            "CREATE INDEX audit_events_time ON audit_events (created_at)",
            """CREATE TABLE seen_events (
                source TEXT NOT NULL, event_id TEXT NOT NULL, seen_at REAL NOT NULL,
                PRIMARY KEY (source, event_id))""",
            """CREATE TABLE leases (
                name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL)""",
            """CREATE TABLE usage (
                scope TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL,
                PRIMARY KEY (scope, day))""",
        ),
    ),
    (
        2,
        (
            # Risk marks (issue 9): flags and categories, never text, so they outlive retention and `forget`.
            """CREATE TABLE conversation_risk (
                conversation_id INTEGER PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
                categories TEXT NOT NULL, source TEXT NOT NULL, marked_at TEXT NOT NULL,
                last_signal_at TEXT NOT NULL, support_shown INTEGER NOT NULL DEFAULT 0)""",
            """CREATE TABLE author_risk (
                platform TEXT NOT NULL, author_id TEXT NOT NULL, categories TEXT NOT NULL,
                last_signal_at TEXT NOT NULL, PRIMARY KEY (platform, author_id))""",
        ),
    ),
    (
        3,
        (
            # An answer counts once the platform accepted it: until then its user message stays pending for
            # recovery (answered, not delivered). Existing rows were delivered, as far as anyone can tell.
            "ALTER TABLE messages ADD COLUMN delivered INTEGER NOT NULL DEFAULT 1",
            "CREATE INDEX messages_undelivered ON messages (created_at) WHERE delivered = 0",
        ),
    ),
    (
        4,
        (
            # One vote per person and answer (a Slack message or Discord message id); a new vote replaces it.
            """CREATE TABLE answer_votes (
                conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                answer_id TEXT NOT NULL, voter_id TEXT NOT NULL, helpful INTEGER NOT NULL, voted_at TEXT NOT NULL,
                PRIMARY KEY (conversation_id, answer_id, voter_id))""",
            "CREATE INDEX answer_votes_time ON answer_votes (voted_at)",
        ),
    ),
    (
        5,
        (
            """CREATE TABLE drafts (
                conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
                place TEXT NOT NULL, ts TEXT NOT NULL, created_at TEXT NOT NULL,
                PRIMARY KEY (conversation_id, ts))""",
        ),
    ),
    # PostgreSQL's server-side routines; nothing here, but both backends keep the same version numbers.
    (6, ()),
)

T = TypeVar("T")

# Event ids only need remembering for as long as a platform may redeliver (Slack retries for minutes).
SEEN_EVENT_SECONDS = 24 * 3600
# Forgetting old event ids is housekeeping: done on one claim in this many, not on every one.
PRUNE_EVERY_CLAIMS = 500


def sqlite_path(database_url: str) -> Path:
    """`sqlite:///relative.db` and `sqlite:////absolute/path.db`, as SQLAlchemy spells them."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix):
        raise ValueError(f"not a sqlite URL: {database_url!r}")
    rest = database_url[len(prefix) :]
    if not rest:
        raise ValueError("the sqlite URL names no file")
    return Path(rest)


def placeholders(count: int) -> str:
    return ", ".join("?" * count)


def _mark_authors(
    db: sqlite3.Connection, *, platform: str, author_ids: Sequence[str], categories: Sequence[str], now: str
) -> None:
    """Inside a write transaction: each author's mark, categories added to what it had, signal now."""
    for author in sorted(set(author_ids)):
        had = db.execute(
            "SELECT categories FROM author_risk WHERE platform = ? AND author_id = ?", (platform, author)
        ).fetchone()
        db.execute(
            """INSERT INTO author_risk (platform, author_id, categories, last_signal_at) VALUES (?, ?, ?, ?)
               ON CONFLICT (platform, author_id)
               DO UPDATE SET categories = excluded.categories, last_signal_at = excluded.last_signal_at""",
            (platform, author, rows.join_categories(categories, had["categories"] if had else ""), now),
        )


class SqliteStore:
    # One process per database file: threads are serialized in-process, without lease rows.
    multi_instance = False

    def __init__(self, path: Path, *, clock: Clock, count_statements: bool = False) -> None:
        self._path = path
        self._clock = clock
        self.statement_counter = StatementCounter() if count_statements else None
        self._db: aiosqlite.Connection | None = None
        self._claims = 0
        # Histories are read whole on every turn: each row is parsed once, not once per turn.
        self._parsed = rows.ParsedMessages()

    async def open(self) -> None:
        try:
            if str(self._path) != ":memory:":
                self._path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self._path, isolation_level=None, timeout=10.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"cannot open SQLite database {self._path}: {exc}") from exc
        db.row_factory = aiosqlite.Row
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA busy_timeout=10000")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA synchronous=NORMAL")
            if self.statement_counter is not None:
                await db.set_trace_callback(self.statement_counter.saw)
        except sqlite3.Error as exc:
            await db.close()
            raise StoreUnavailableError(f"cannot use SQLite database {self._path}: {exc}") from exc
        self._db = db

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        await self.migrate()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailableError("the SQLite store is not open")
        return self._db

    async def _on_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the database thread, in one hop however many statements it makes. aiosqlite has no
        public call for this; `_execute` is the queue every one of its own calls goes through (pinned range)."""
        db = self.db
        result: T = await db._execute(work, db._conn)  # type: ignore[no-untyped-call]
        return result

    async def _tx(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` as one write transaction, in one hop. A cancelled caller cannot leave it half done: the
        thread finishes (or rolls back) the transaction whatever happens to the coroutine awaiting it."""

        def atomically(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._on_thread(atomically)

    async def _one(self, sql: str, params: Sequence[object] = ()) -> aiosqlite.Row | None:
        found = await self._all(sql, params)
        return found[0] if found else None

    async def _all(self, sql: str, params: Sequence[object] = ()) -> list[aiosqlite.Row]:
        # One hop to the database thread (execute, fetch and close together): the store's hot path.
        return list(await self.db.execute_fetchall(sql, params))

    async def _write(self, sql: str, params: Sequence[object] = ()) -> aiosqlite.Row | None:
        """One statement is its own transaction (autocommit), so it needs no BEGIN and COMMIT round trips."""
        return await self._one(sql, params)

    def _now(self) -> str:
        return self._clock.now().isoformat()

    async def migrate(self) -> None:
        def upgrade(db: sqlite3.Connection) -> None:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            applied = {int(row[0]) for row in db.execute("SELECT version FROM schema_version").fetchall()}
            # Each version not yet applied, not only those above the highest: versions are handed out to
            # branches that may land in any order.
            for version, statements in MIGRATIONS:
                if version not in applied:
                    for statement in statements:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

        await self._tx(upgrade)

    async def ping(self) -> None:
        await self._one("SELECT 1")

    async def schema_versions(self) -> tuple[int, int]:
        latest = max(version for version, _ in MIGRATIONS)
        table = await self._one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
        if table is None:
            return 0, latest
        row = await self._one("SELECT MAX(version) FROM schema_version")
        return (int(row[0]) if row and row[0] is not None else 0), latest

    # -- conversations -------------------------------------------------------------------------------

    async def get_or_create_conversation(self, *, key: ThreadKey, owner_id: str) -> Conversation:
        now = self._now()

        def get_or_create(db: sqlite3.Connection) -> sqlite3.Row | None:
            db.execute(
                """INSERT INTO conversations (platform, place, thread, owner_id, status, created_at)
                   VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (platform, place, thread) DO NOTHING""",
                (key.platform, key.place, key.thread, owner_id, Status.ACTIVE.value, now),
            )
            found: sqlite3.Row | None = db.execute(
                "SELECT * FROM conversations WHERE platform = ? AND place = ? AND thread = ?",
                (key.platform, key.place, key.thread),
            ).fetchone()
            return found

        row = await self._tx(get_or_create)
        assert row is not None
        return rows.conversation(row)

    async def create_branch(
        self, *, key: ThreadKey, owner_id: str, source: Conversation, branch_point_seq: int
    ) -> Conversation:
        now = self._now()

        def branch(db: sqlite3.Connection) -> sqlite3.Row:
            row: sqlite3.Row | None = db.execute(
                """INSERT INTO conversations
                   (platform, place, thread, owner_id, status, created_at, branched_from, branch_point_seq)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *""",
                (
                    key.platform,
                    key.place,
                    key.thread,
                    owner_id,
                    Status.ACTIVE.value,
                    now,
                    source.id,
                    branch_point_seq,
                ),
            ).fetchone()
            assert row is not None
            new_id = int(row["id"])
            # Copies carry no platform ids: those name the original posts, which stay with the original.
            db.execute(
                """INSERT INTO messages (conversation_id, seq, role, blocks, author_id, author_name, platform,
                       platform_message_id, answered, excluded, redacted, created_at)
                   SELECT ?, seq, role, blocks, author_id, author_name, platform, NULL, 1, excluded, redacted,
                       created_at
                   FROM messages WHERE conversation_id = ? AND seq < ? ORDER BY seq""",
                (new_id, source.id, branch_point_seq),
            )
            db.execute(
                """INSERT INTO warnings (conversation_id, after_seq, behavior, created_at)
                   SELECT ?, after_seq, behavior, created_at FROM warnings
                   WHERE conversation_id = ? AND after_seq < ?""",
                (new_id, source.id, branch_point_seq),
            )
            # A branch carries the history that marked its source, so it carries the mark (not the banner).
            db.execute(
                """INSERT INTO conversation_risk (conversation_id, categories, source, marked_at, last_signal_at)
                   SELECT ?, categories, 'branch', ?, last_signal_at FROM conversation_risk
                   WHERE conversation_id = ?""",
                (new_id, now, source.id),
            )
            return row

        return rows.conversation(await self._tx(branch))

    async def find_conversation(self, key: ThreadKey) -> Conversation | None:
        row = await self._one(
            "SELECT * FROM conversations WHERE platform = ? AND place = ? AND thread = ?",
            (key.platform, key.place, key.thread),
        )
        return rows.conversation(row) if row else None

    async def latest_conversation(self, *, platform: str, place: str) -> Conversation | None:
        row = await self._one(
            "SELECT * FROM conversations WHERE platform = ? AND place = ? ORDER BY id DESC LIMIT 1",
            (platform, place),
        )
        return rows.conversation(row) if row else None

    async def get_conversation(self, conversation_id: int) -> Conversation | None:
        row = await self._one("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        return rows.conversation(row) if row else None

    async def end_conversation(
        self, *, conversation_id: int, reason: EndReason, explanation: str, actor: str
    ) -> Conversation:
        row = await self._write(
            """UPDATE conversations SET status = ?, ended_reason = ?, ended_explanation = ?, ended_at = ?,
                   ended_by = ? WHERE id = ? RETURNING *""",
            (Status.ENDED.value, reason.value, explanation, self._now(), actor, conversation_id),
        )
        if row is None:
            raise KeyError(conversation_id)
        return rows.conversation(row)

    async def end_if_current(
        self, *, conversation_id: int, reason: EndReason, explanation: str, actor: str, after_message_id: int
    ) -> Conversation | None:
        # Tool results are stored in the user role without an author: only what a person wrote counts.
        row = await self._write(
            """UPDATE conversations SET status = ?, ended_reason = ?, ended_explanation = ?, ended_at = ?,
                   ended_by = ? WHERE id = ? AND status = ? AND NOT EXISTS (
                       SELECT 1 FROM messages WHERE conversation_id = ? AND role = 'user'
                       AND author_id IS NOT NULL AND id > ?) RETURNING *""",
            (
                Status.ENDED.value,
                reason.value,
                explanation,
                self._now(),
                actor,
                conversation_id,
                Status.ACTIVE.value,
                conversation_id,
                after_message_id,
            ),
        )
        return rows.conversation(row) if row else None

    async def mark_at_risk(
        self, *, conversation_id: int, platform: str, author_ids: Sequence[str], categories: Sequence[str], source: str
    ) -> bool:
        now = self._now()
        found = sorted(set(categories))

        def mark(db: sqlite3.Connection) -> bool:
            before = db.execute(
                "SELECT categories FROM conversation_risk WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            merged = rows.join_categories(found, before["categories"] if before else "")
            db.execute(
                """INSERT INTO conversation_risk (conversation_id, categories, source, marked_at, last_signal_at)
                   VALUES (?, ?, ?, ?, ?) ON CONFLICT (conversation_id)
                   DO UPDATE SET categories = excluded.categories, last_signal_at = excluded.last_signal_at""",
                (conversation_id, merged, source, now, now),
            )
            _mark_authors(db, platform=platform, author_ids=author_ids, categories=found, now=now)
            return before is None

        return await self._tx(mark)

    async def risk_marks(
        self, *, conversation_id: int, platform: str, author_ids: Sequence[str], since: datetime
    ) -> RiskMarks:
        authors = sorted(set(author_ids))
        marks = placeholders(len(authors))

        def read(db: sqlite3.Connection) -> RiskMarks:
            own = db.execute(
                "SELECT categories, support_shown FROM conversation_risk WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
            live = (
                db.execute(
                    f"""SELECT author_id FROM author_risk WHERE platform = ? AND last_signal_at >= ?
                        AND author_id IN ({marks})""",
                    (platform, since.isoformat(), *authors),
                ).fetchall()
                if authors
                else []
            )
            return RiskMarks(
                conversation_marked=own is not None,
                categories=frozenset(rows.split_categories(own["categories"])) if own else frozenset(),
                authors=frozenset(str(row["author_id"]) for row in live),
                support_shown=bool(own["support_shown"]) if own else False,
            )

        return await self._on_thread(read)

    async def mark_authors_at_risk(
        self, *, platform: str, author_ids: Sequence[str], categories: Sequence[str]
    ) -> None:
        now = self._now()

        def mark(db: sqlite3.Connection) -> None:
            _mark_authors(db, platform=platform, author_ids=author_ids, categories=categories, now=now)

        await self._tx(mark)

    async def note_support_shown(self, *, conversation_id: int) -> None:
        await self._write(
            "UPDATE conversation_risk SET support_shown = 1 WHERE conversation_id = ?", (conversation_id,)
        )

    async def prune_author_marks(self, *, older_than: datetime) -> int:
        def prune(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM author_risk WHERE last_signal_at < ?", (older_than.isoformat(),)).rowcount

        return await self._tx(prune)

    async def reopen_conversation(self, *, conversation_id: int) -> Conversation:
        row = await self._write(
            """UPDATE conversations SET status = ?, ended_reason = NULL, ended_explanation = NULL,
                   ended_at = NULL, ended_by = NULL WHERE id = ? RETURNING *""",
            (Status.ACTIVE.value, conversation_id),
        )
        if row is None:
            raise KeyError(conversation_id)
        return rows.conversation(row)

    async def recent_endings(self, *, limit: int) -> list[Conversation]:
        found = await self._all(
            "SELECT * FROM conversations WHERE status = ? ORDER BY ended_at DESC, id DESC LIMIT ?",
            (Status.ENDED.value, limit),
        )
        return [rows.conversation(r) for r in found]

    # -- messages ------------------------------------------------------------------------------------

    def _insert_message_sql(self, message: NewMessage) -> tuple[str, tuple[object, ...]]:
        return (
            """INSERT INTO messages (conversation_id, seq, role, blocks, author_id, author_name, platform,
                   platform_message_id, answered, created_at, delivered)
               SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?,
                   (SELECT platform FROM conversations WHERE id = ?), ?, ?, ?, ?
               FROM messages WHERE conversation_id = ?
               ON CONFLICT DO NOTHING RETURNING *""",
            (
                message.conversation_id,
                message.role.value,
                rows.dump_blocks(message.blocks),
                message.author_id,
                message.author_name,
                message.conversation_id,
                message.platform_message_id,
                int(message.answered),
                self._now(),
                int(rows.starts_delivered(message)),
                message.conversation_id,
            ),
        )

    async def add_message(self, message: NewMessage) -> StoredMessage | None:
        row = await self._write(*self._insert_message_sql(message))
        return rows.message(row) if row else None

    async def messages(self, conversation_id: int) -> list[StoredMessage]:
        read_in = self._parsed.generation
        found = await self._all("SELECT * FROM messages WHERE conversation_id = ? ORDER BY seq", (conversation_id,))
        return [self._parsed.message(r, read_in=read_in) for r in found]

    async def find_by_platform_id(self, *, platform: str, platform_message_id: str) -> StoredMessage | None:
        row = await self._one(
            "SELECT * FROM messages WHERE platform = ? AND platform_message_id = ?",
            (platform, platform_message_id),
        )
        return rows.message(row) if row else None

    async def complete_turn(
        self, *, conversation_id: int, replies: Sequence[NewMessage], after_seq: int, answered_up_to_seq: int
    ) -> list[StoredMessage]:
        now = self._now()

        def complete(db: sqlite3.Connection) -> list[sqlite3.Row]:
            stored = []
            # Park later arrivals on negative seqs (never colliding), slot the reply in, move them back.
            parked = db.execute(
                "UPDATE messages SET seq = -seq WHERE conversation_id = ? AND seq > ?", (conversation_id, after_seq)
            ).rowcount
            for offset, reply in enumerate(replies, start=1):
                row = db.execute(
                    """INSERT INTO messages (conversation_id, seq, role, blocks, author_id, author_name, platform,
                           platform_message_id, answered, created_at)
                       SELECT ?, ?, ?, ?, ?, ?, platform, ?, ?, ? FROM conversations WHERE id = ?
                       RETURNING *""",
                    (
                        conversation_id,
                        after_seq + offset,
                        reply.role.value,
                        rows.dump_blocks(reply.blocks),
                        reply.author_id,
                        reply.author_name,
                        reply.platform_message_id,
                        int(reply.answered),
                        now,
                        conversation_id,
                    ),
                ).fetchone()
                assert row is not None
                stored.append(row)
            if parked:
                db.execute(
                    "UPDATE messages SET seq = -seq + ? WHERE conversation_id = ? AND seq < 0",
                    (len(replies), conversation_id),
                )
            db.execute(
                "UPDATE messages SET answered = 1 WHERE conversation_id = ? AND seq <= ? AND answered = 0",
                (conversation_id, answered_up_to_seq),
            )
            return stored

        return [rows.message(row) for row in await self._tx(complete)]

    async def exclude_message(self, message_id: int) -> None:
        await self._write("UPDATE messages SET excluded = 1 WHERE id = ?", (message_id,))

    async def mark_answered(self, *, conversation_id: int, up_to_seq: int) -> None:
        await self._write(
            "UPDATE messages SET answered = 1 WHERE conversation_id = ? AND seq <= ? AND answered = 0",
            (conversation_id, up_to_seq),
        )

    async def mark_delivered(self, *, conversation_id: int, trigger_seq: int) -> None:
        await self._write(
            """UPDATE messages SET delivered = 1
               WHERE conversation_id = ? AND delivered = 0 AND answered = 1 AND seq < COALESCE(
                   (SELECT MIN(r.seq) FROM messages r
                    WHERE r.conversation_id = ? AND r.role = 'assistant' AND r.seq > ?), ? + 1)
               AND (? OR seq > COALESCE(
                   (SELECT MAX(p.seq) FROM messages p
                    WHERE p.conversation_id = ? AND p.role = 'assistant' AND p.seq < ?), 0))""",
            # Only the messages this answer answered: an earlier answer that never arrived stays pending.
            (
                conversation_id,
                conversation_id,
                trigger_seq,
                trigger_seq,
                trigger_seq >= rows.EVERY_SEQ,
                conversation_id,
                trigger_seq,
            ),
        )

    async def undelivered(self, *, platform: str, older_than: datetime, newer_than: datetime) -> list[StoredMessage]:
        found = await self._all(
            """SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id
               WHERE m.delivered = 0 AND m.answered = 1 AND m.role = 'user' AND c.platform = ?
                   AND m.created_at < ? AND m.created_at >= ?
               ORDER BY m.conversation_id, m.seq""",
            (platform, older_than.isoformat(), newer_than.isoformat()),
        )
        return [rows.message(r) for r in found]

    async def active_threads(self, *, platform: str, since: datetime, limit: int) -> list[ActiveThread]:
        found = await self._all(
            """SELECT c.*, (SELECT m.platform_message_id FROM messages m
                       WHERE m.conversation_id = c.id AND m.platform_message_id IS NOT NULL
                       ORDER BY m.seq DESC LIMIT 1) AS last_platform_message_id
               FROM conversations c
               WHERE c.platform = ? AND c.status = ? AND (c.created_at >= ? OR EXISTS (
                   SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.created_at >= ?))
               ORDER BY c.id DESC LIMIT ?""",
            (platform, Status.ACTIVE.value, since.isoformat(), since.isoformat(), limit),
        )
        return [ActiveThread(rows.conversation(r), r["last_platform_message_id"]) for r in found]

    async def remember_draft(self, draft: Draft) -> None:
        await self._write(
            """INSERT INTO drafts (conversation_id, message_id, place, ts, created_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (conversation_id, ts) DO UPDATE SET message_id = excluded.message_id""",
            (draft.conversation_id, draft.message_id, draft.place, draft.ts, self._now()),
        )

    async def orphan_drafts(self, conversation_id: int) -> list[Draft]:
        found = await self._all(
            """SELECT d.* FROM drafts d JOIN messages m ON m.id = d.message_id
               WHERE d.conversation_id = ? AND m.answered = 0 ORDER BY d.created_at""",
            (conversation_id,),
        )
        return [Draft(r["conversation_id"], r["message_id"], r["place"], r["ts"]) for r in found]

    async def forget_draft(self, *, conversation_id: int, ts: str) -> None:
        await self._write("DELETE FROM drafts WHERE conversation_id = ? AND ts = ?", (conversation_id, ts))

    async def unanswered(self, *, older_than: datetime) -> list[StoredMessage]:
        found = await self._all(
            """SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id
               WHERE m.answered = 0 AND m.role = 'user' AND m.created_at < ? AND c.status = ?
               ORDER BY m.conversation_id, m.seq""",
            (older_than.isoformat(), Status.ACTIVE.value),
        )
        return [rows.message(r) for r in found]

    # -- warnings and confirmations ---------------------------------------------------------------------

    async def add_warning(self, *, conversation_id: int, after_seq: int, behavior: str) -> RecordedWarning:
        row = await self._write(
            "INSERT INTO warnings (conversation_id, after_seq, behavior, created_at) VALUES (?, ?, ?, ?) RETURNING *",
            (conversation_id, after_seq, behavior, self._now()),
        )
        assert row is not None
        return rows.warning(row)

    async def warnings(self, conversation_id: int) -> list[RecordedWarning]:
        found = await self._all("SELECT * FROM warnings WHERE conversation_id = ? ORDER BY id", (conversation_id,))
        return [rows.warning(r) for r in found]

    async def turn_state(
        self, conversation_id: int
    ) -> tuple[Conversation | None, list[StoredMessage], list[RecordedWarning]]:
        def read(db: sqlite3.Connection) -> tuple[sqlite3.Row | None, list[sqlite3.Row], list[sqlite3.Row]]:
            # One hop; nothing else runs on the connection in between, so the three reads agree.
            found = db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            history = db.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY seq", (conversation_id,)
            ).fetchall()
            warned = db.execute(
                "SELECT * FROM warnings WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
            return found, history, warned

        read_in = self._parsed.generation
        found, history, warned = await self._on_thread(read)
        return (
            rows.conversation(found) if found else None,
            [self._parsed.message(r, read_in=read_in) for r in history],
            [rows.warning(r) for r in warned],
        )

    async def add_confirmation(self, *, conversation_id: int, owner_id: str, explanation: str) -> PendingConfirmation:
        row = await self._write(
            """INSERT INTO confirmations (conversation_id, owner_id, explanation, created_at)
               VALUES (?, ?, ?, ?) RETURNING *""",
            (conversation_id, owner_id, explanation, self._now()),
        )
        assert row is not None
        return rows.confirmation(row)

    async def get_confirmation(self, confirmation_id: int) -> PendingConfirmation | None:
        row = await self._one("SELECT * FROM confirmations WHERE id = ?", (confirmation_id,))
        return rows.confirmation(row) if row else None

    async def resolve_confirmation(self, confirmation_id: int) -> bool:
        row = await self._write(
            "UPDATE confirmations SET resolved = 1 WHERE id = ? AND resolved = 0 RETURNING id", (confirmation_id,)
        )
        return row is not None

    # -- audit -----------------------------------------------------------------------------------------

    async def add_event(self, event: AuditEvent) -> None:
        created = (event.created_at or self._clock.now()).isoformat()
        await self._write(
            """INSERT INTO audit_events (kind, conversation_id, actor, reason, detail, created_at)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (event.kind, event.conversation_id, event.actor, event.reason, json.dumps(event.detail), created),
        )

    async def events(
        self,
        *,
        since: datetime,
        limit: int = 10_000,
        kinds: Sequence[str] | None = None,
        newest_first: bool = False,
    ) -> list[AuditEvent]:
        order = "DESC" if newest_first else "ASC"
        wanted = list(kinds) if kinds is not None else []
        only = f"AND kind IN ({', '.join('?' for _ in wanted)})" if kinds is not None else ""
        found = await self._all(
            f"SELECT * FROM audit_events WHERE created_at >= ? {only} ORDER BY created_at {order}, id {order} LIMIT ?",
            (since.isoformat(), *wanted, limit),
        )
        return [rows.audit_event(r) for r in found]

    async def count_events(self, *, since: datetime) -> dict[str, int]:
        found = await self._all(
            "SELECT kind, COUNT(*) AS n FROM audit_events WHERE created_at >= ? GROUP BY kind",
            (since.isoformat(),),
        )
        return {r["kind"]: int(r["n"]) for r in found}

    # -- votes on answers -------------------------------------------------------------------------------

    async def record_answer_vote(self, *, conversation_id: int, answer_id: str, voter_id: str, helpful: bool) -> bool:
        row = await self._write(
            """INSERT INTO answer_votes (conversation_id, answer_id, voter_id, helpful, voted_at)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (conversation_id, answer_id, voter_id) DO UPDATE
                   SET helpful = excluded.helpful, voted_at = excluded.voted_at
                   WHERE answer_votes.helpful <> excluded.helpful
               RETURNING voter_id""",
            (conversation_id, answer_id, voter_id, int(helpful), self._now()),
        )
        return row is not None

    async def answer_votes(self, *, since: datetime) -> VoteCounts:
        row = await self._one(
            """SELECT COALESCE(SUM(helpful), 0) AS up, COALESCE(SUM(1 - helpful), 0) AS down
               FROM answer_votes WHERE voted_at >= ?""",
            (since.isoformat(),),
        )
        return VoteCounts(helpful=int(row["up"]) if row else 0, not_helpful=int(row["down"]) if row else 0)

    # -- deduplication, leases, usage ---------------------------------------------------------------------

    async def claim_event(self, *, source: str, event_id: str) -> bool:
        now = time.time()
        self._claims += 1
        if self._claims % PRUNE_EVERY_CLAIMS == 1:
            await self._write("DELETE FROM seen_events WHERE seen_at < ?", (now - SEEN_EVENT_SECONDS,))
        # An id last seen more than a day ago counts as new, whether or not it was pruned yet.
        row = await self._write(
            """INSERT INTO seen_events (source, event_id, seen_at) VALUES (?, ?, ?)
               ON CONFLICT (source, event_id) DO UPDATE SET seen_at = excluded.seen_at
               WHERE seen_events.seen_at < ?
               RETURNING event_id""",
            (source, event_id, now, now - SEEN_EVENT_SECONDS),
        )
        return row is not None

    async def acquire_lease(self, *, name: str, holder: str, ttl_seconds: float) -> bool:
        now = time.time()
        row = await self._write(
            """INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
               WHERE leases.expires_at < ? OR leases.holder = excluded.holder
               RETURNING holder""",
            (name, holder, now + ttl_seconds, now),
        )
        return row is not None

    async def release_lease(self, *, name: str, holder: str) -> None:
        await self._write("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    async def add_usage(self, *, scope: str, day: str, tokens: int) -> int:
        row = await self._write(
            """INSERT INTO usage (scope, day, tokens) VALUES (?, ?, ?)
               ON CONFLICT (scope, day) DO UPDATE SET tokens = usage.tokens + excluded.tokens
               RETURNING tokens""",
            (scope, day, tokens),
        )
        return int(row[0]) if row else 0

    async def usage(self, *, scope: str, day: str) -> int:
        row = await self._one("SELECT tokens FROM usage WHERE scope = ? AND day = ?", (scope, day))
        return int(row[0]) if row else 0

    # -- privacy -------------------------------------------------------------------------------------

    async def forget_user(self, *, platform: str, user_id: str) -> int:
        """Remove the text and identity of everything the user wrote, and all text of the conversations they
        started. Those conversations stay as tombstones, so an ended thread stays ended."""
        owned = "SELECT id FROM conversations WHERE platform = ? AND owner_id = ?"

        def forget(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT COUNT(*) FROM messages WHERE platform = ? AND author_id = ?", (platform, user_id)
            ).fetchone()
            count = int(row[0]) if row else 0
            touched = db.execute(
                "SELECT id, blocks FROM messages "
                f"WHERE (platform = ? AND author_id = ?) OR conversation_id IN ({owned})",
                (platform, user_id, platform, user_id),
            ).fetchall()
            db.executemany(
                "UPDATE messages SET blocks = ?, author_id = NULL, author_name = NULL, redacted = 1 WHERE id = ?",
                [(rows.redact_blocks(tuple(rows.load_json(m["blocks"]))), m["id"]) for m in touched],
            )
            db.execute(
                f"UPDATE warnings SET behavior = ? WHERE conversation_id IN ({owned})",
                (rows.REDACTED_TEXT, platform, user_id),
            )
            db.execute(
                f"""UPDATE confirmations SET explanation = ?,
                        owner_id = CASE WHEN owner_id = ? THEN '' ELSE owner_id END
                    WHERE conversation_id IN ({owned}) OR (owner_id = ? AND conversation_id IN
                        (SELECT id FROM conversations WHERE platform = ?))""",
                (rows.REDACTED_TEXT, user_id, platform, user_id, user_id, platform),
            )
            db.execute(
                """UPDATE conversations SET owner_id = ?,
                       ended_explanation = CASE WHEN ended_explanation IS NULL THEN NULL ELSE ? END
                   WHERE platform = ? AND owner_id = ?""",
                (rows.FORGOTTEN, rows.REDACTED_TEXT, platform, user_id),
            )
            db.execute("DELETE FROM usage WHERE scope = ?", (f"user:{platform}:{user_id}",))
            db.execute(
                "DELETE FROM answer_votes WHERE voter_id = ? AND conversation_id IN "
                "(SELECT id FROM conversations WHERE platform = ?)",
                (user_id, platform),
            )
            db.execute(
                "UPDATE audit_events SET actor = 'user:forgotten' WHERE actor IN (?, ?)",
                (f"user:{user_id}", f"moderator:{user_id}"),
            )
            return count

        forgotten = await self._tx(forget)
        # Parsed copies of the rows as they were must not keep the removed text in memory.
        self._parsed.clear()
        return forgotten

    async def purge_text(self, *, older_than: datetime) -> int:
        cutoff = older_than.isoformat()

        def purge(db: sqlite3.Connection) -> int:
            db.execute(
                "UPDATE warnings SET behavior = ? WHERE created_at < ? AND behavior <> ?",
                (rows.REDACTED_TEXT, cutoff, rows.REDACTED_TEXT),
            )
            db.execute(
                "UPDATE confirmations SET explanation = ? WHERE created_at < ? AND explanation <> ?",
                (rows.REDACTED_TEXT, cutoff, rows.REDACTED_TEXT),
            )
            old = db.execute(
                "SELECT id, blocks FROM messages WHERE redacted = 0 AND created_at < ?", (cutoff,)
            ).fetchall()
            db.executemany(
                "UPDATE messages SET blocks = ?, redacted = 1 WHERE id = ?",
                [(rows.redact_blocks(tuple(rows.load_json(row["blocks"]))), row["id"]) for row in old],
            )
            db.execute(
                "UPDATE conversations SET ended_explanation = ? WHERE ended_at < ? AND ended_explanation IS NOT NULL",
                (rows.REDACTED_TEXT, cutoff),
            )
            return len(old)

        purged = await self._tx(purge)
        # Parsed copies of the rows as they were must not keep the removed text in memory.
        self._parsed.clear()
        return purged
