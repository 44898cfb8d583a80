"""The multi-instance store on an asyncpg pool: same tables and meaning as the SQLite store.

Every write runs in its own transaction on a pooled connection. Message sequence numbers are assigned under a
row lock on the conversation, so several instances appending to one thread never collide. Leases and event
deduplication use the database's clock, so instances whose own clocks disagree still agree on who holds what.
Everything else is stamped with the injected clock, exactly like the SQLite store (tests and retention rely
on that).

`database_url` is a libpq-style URL (`postgres://` or `postgresql://`). Query parameters asyncpg does not
know become server settings, so `?search_path=lastresort` selects a schema; `server_settings=` does the same
from code.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

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
from core.storage import pg_routines, rows
from core.storage.errors import StoreUnavailableError
from core.storage.statement_counter import StatementCounter
from core.storage.urls import redact_url

# The stubs make the proxy generic; the runtime class is not subscriptable, hence the string.
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

# Message blocks stay TEXT holding rows.dump_blocks output: JSONB would reorder keys and break the
# byte-identical replay prompt caching depends on. Audit detail stays TEXT too, so anything SQLite accepts
# (NaN, "\u0000") is accepted here as well; cast to jsonb when querying it by hand.
# Risk categories add up on every new signal: the union of what was stored and what just came in.
_MERGED_CATEGORIES = """(SELECT string_agg(DISTINCT c, ',' ORDER BY c)
    FROM unnest(string_to_array({table}.categories || ',' || EXCLUDED.categories, ',')) AS c WHERE c <> '')"""

# Each author's mark ($2, an array), categories added to what it had, signal now.
_MARK_AUTHORS = f"""INSERT INTO author_risk (platform, author_id, categories, last_signal_at)
    SELECT $1, author, $3, $4 FROM unnest($2::text[]) AS author
    ON CONFLICT (platform, author_id) DO UPDATE SET
    categories = {_MERGED_CATEGORIES.format(table="author_risk")},
    last_signal_at = EXCLUDED.last_signal_at"""

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE conversations (
                id BIGSERIAL PRIMARY KEY,
                platform TEXT NOT NULL, place TEXT NOT NULL, thread TEXT NOT NULL,
                owner_id TEXT NOT NULL, status TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
                branched_from BIGINT, branch_point_seq INTEGER,
                ended_reason TEXT, ended_explanation TEXT, ended_at TIMESTAMPTZ, ended_by TEXT,
                UNIQUE (platform, place, thread))""",
            "CREATE INDEX conversations_ended ON conversations (status, ended_at)",
            "CREATE INDEX conversations_owner ON conversations (platform, owner_id)",
            """CREATE TABLE messages (
                id BIGSERIAL PRIMARY KEY,
                conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                seq INTEGER NOT NULL, role TEXT NOT NULL, blocks TEXT NOT NULL,
                author_id TEXT, author_name TEXT, platform TEXT NOT NULL, platform_message_id TEXT,
                answered BOOLEAN NOT NULL, excluded BOOLEAN NOT NULL DEFAULT FALSE,
                redacted BOOLEAN NOT NULL DEFAULT FALSE, created_at TIMESTAMPTZ NOT NULL,
                UNIQUE (conversation_id, seq))""",
            """CREATE UNIQUE INDEX messages_platform_id ON messages (platform, platform_message_id)
                WHERE platform_message_id IS NOT NULL""",
            "CREATE INDEX messages_author ON messages (platform, author_id)",
            "CREATE INDEX messages_unanswered ON messages (created_at) WHERE NOT answered",
            "CREATE INDEX messages_unredacted ON messages (created_at) WHERE NOT redacted",
            """CREATE TABLE warnings (
                id BIGSERIAL PRIMARY KEY,
                conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                after_seq INTEGER NOT NULL, behavior TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)""",
            "CREATE INDEX warnings_conversation ON warnings (conversation_id)",
            """CREATE TABLE confirmations (
                id BIGSERIAL PRIMARY KEY,
                conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                owner_id TEXT NOT NULL, explanation TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
                resolved BOOLEAN NOT NULL DEFAULT FALSE)""",
            "CREATE INDEX confirmations_conversation ON confirmations (conversation_id)",
            """CREATE TABLE audit_events (
                id BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL, conversation_id BIGINT,
                actor TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)""",
            "CREATE INDEX audit_events_time ON audit_events (created_at)",
            "CREATE INDEX audit_events_actor ON audit_events (actor)",
            """CREATE TABLE seen_events (
                source TEXT NOT NULL, event_id TEXT NOT NULL, seen_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (source, event_id))""",
            "CREATE INDEX seen_events_time ON seen_events (seen_at)",
            """CREATE TABLE leases (
                name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL)""",
            """CREATE TABLE usage (
                scope TEXT NOT NULL, day TEXT NOT NULL, tokens BIGINT NOT NULL,
                PRIMARY KEY (scope, day))""",
        ),
    ),
    (
        2,
        (
            # Risk marks (issue 9): flags and categories, never text, so they outlive retention and `forget`.
            """CREATE TABLE conversation_risk (
                conversation_id BIGINT PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
                categories TEXT NOT NULL, source TEXT NOT NULL, marked_at TIMESTAMPTZ NOT NULL,
                last_signal_at TIMESTAMPTZ NOT NULL, support_shown BOOLEAN NOT NULL DEFAULT FALSE)""",
            """CREATE TABLE author_risk (
                platform TEXT NOT NULL, author_id TEXT NOT NULL, categories TEXT NOT NULL,
                last_signal_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (platform, author_id))""",
        ),
    ),
    (
        3,
        (
            # An answer counts once the platform accepted it: until then its user message stays pending for
            # recovery (answered, not delivered). Existing rows were delivered, as far as anyone can tell.
            "ALTER TABLE messages ADD COLUMN delivered BOOLEAN NOT NULL DEFAULT TRUE",
            "CREATE INDEX messages_undelivered ON messages (created_at) WHERE NOT delivered",
        ),
    ),
    (
        4,
        (
            # One vote per person and answer (a Slack message or Discord message id); a new vote replaces it.
            """CREATE TABLE answer_votes (
                conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                answer_id TEXT NOT NULL, voter_id TEXT NOT NULL, helpful BOOLEAN NOT NULL,
                voted_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (conversation_id, answer_id, voter_id))""",
            "CREATE INDEX answer_votes_time ON answer_votes (voted_at)",
        ),
    ),
    (
        5,
        (
            """CREATE TABLE drafts (
                conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                message_id BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
                place TEXT NOT NULL, ts TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (conversation_id, ts))""",
        ),
    ),
    # The writes that lock a conversation first, one round trip each (see core/storage/pg_routines.py).
    (6, pg_routines.ROUTINES),
)

# Event ids only need remembering for as long as a platform may redeliver (Slack retries for minutes).
SEEN_EVENT_SECONDS = 24 * 3600
# Forgetting old event ids is housekeeping: done on one claim in this many, not on every one.
PRUNE_EVERY_CLAIMS = 500

# First key of the two-key advisory lock that serializes migrations; the second is the schema's hash, so
# separate schemas in one database migrate independently.
MIGRATION_LOCK_KEY = 0x4C52_0001

_SECRET_QUERY_KEYS = ("password", "sslpassword")


def _secrets(database_url: str) -> list[str]:
    """The secrets a URL carries (raw and percent-decoded), to keep out of every message."""
    found: list[str] = []
    try:
        parts = urllib.parse.urlsplit(database_url)
        if parts.password:
            found += [parts.password, urllib.parse.unquote(parts.password)]
        for key, value in urllib.parse.parse_qsl(parts.query):
            if key in _SECRET_QUERY_KEYS and value:
                found += [value, urllib.parse.quote(value, safe="")]
    except ValueError:
        pass
    return sorted({s for s in found if s}, key=len, reverse=True)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _utc(value: datetime) -> datetime:
    """Naive datetimes mean UTC, as they do in the SQLite store (asyncpg would read them as local time)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


FORGOTTEN = rows.FORGOTTEN


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pool's reset on release, without its query: the store never leaves session state behind (no SET,
    LISTEN, cursors or session advisory locks; transactions are always closed, which asyncpg checks anyway),
    so the default `RESET ALL; UNLISTEN *; ...` round trip on every release bought nothing."""


TURN_STATE = """SELECT (SELECT c FROM conversations c WHERE c.id = $1) AS conversation,
       ARRAY(SELECT m FROM messages m WHERE m.conversation_id = $1 ORDER BY m.seq) AS history,
       ARRAY(SELECT w FROM warnings w WHERE w.conversation_id = $1 ORDER BY w.id) AS warned"""


class PostgresStore:
    # Several instances share the database: threads are serialized across them with leases.
    multi_instance = True

    def __init__(
        self,
        database_url: str,
        *,
        clock: Clock,
        min_size: int = 1,
        max_size: int = 10,
        server_settings: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
        count_statements: bool = False,
    ) -> None:
        self._url = database_url
        self.statement_counter = StatementCounter() if count_statements else None
        # Histories are read whole on every turn: each row is parsed once, not once per turn.
        self._parsed = rows.ParsedMessages()
        self._clock = clock
        self._min_size = min_size
        self._max_size = max_size
        self._server_settings = dict(server_settings) if server_settings else None
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._claims = 0

    async def _init_connection(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        counter = self.statement_counter
        if counter is not None:
            conn.add_query_logger(lambda query: counter.saw(query.query, conn))

    def _describe(self) -> str:
        return _scrub(redact_url(self._url), _secrets(self._url))

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._url,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._connect_timeout,
                server_settings=self._server_settings,
                init=self._init_connection if self.statement_counter is not None else None,
                reset=_keep_session,
            )
        except Exception as exc:
            secrets = _secrets(self._url)
            reason = str(exc) or "no response"
            clean = _scrub(reason, secrets)
            error = StoreUnavailableError(
                f"cannot connect to PostgreSQL database {self._describe()}: {type(exc).__name__}: {clean}"
            )
            if clean != reason:
                # The driver's own message named a secret: do not chain it into tracebacks either.
                raise error from None
            raise error from exc
        self._pool = pool

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        try:
            await self.migrate()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise StoreUnavailableError("the PostgreSQL store is not open")
        return self._pool

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    def _now(self) -> datetime:
        return _utc(self._clock.now())

    async def migrate(self) -> None:
        async with self._tx() as conn:
            # Taken before anything else, so two instances starting at once migrate one after the other.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1::int4, hashtext(COALESCE(current_schema(), '')))",
                MIGRATION_LOCK_KEY,
            )
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            applied = {int(r["version"]) for r in await conn.fetch("SELECT version FROM schema_version")}
            # Each version not yet applied, not only those above the highest: versions are handed out to
            # branches that may land in any order.
            for version, statements in MIGRATIONS:
                if version not in applied:
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)

    async def schema_versions(self) -> tuple[int, int]:
        latest = max(version for version, _ in MIGRATIONS)
        async with self.pool.acquire() as conn:
            if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
                return 0, latest
            return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")), latest

    async def ping(self) -> None:
        pool = self.pool
        try:
            await pool.fetchval("SELECT 1", timeout=self._connect_timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailableError(
                f"PostgreSQL database {self._describe()} does not answer: {type(exc).__name__}: "
                f"{_scrub(str(exc), _secrets(self._url))}"
            ) from exc

    # -- conversations -------------------------------------------------------------------------------

    async def get_or_create_conversation(self, *, key: ThreadKey, owner_id: str) -> Conversation:
        async with self._tx() as conn:
            await conn.execute(
                """INSERT INTO conversations (platform, place, thread, owner_id, status, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (platform, place, thread) DO NOTHING""",
                key.platform,
                key.place,
                key.thread,
                owner_id,
                Status.ACTIVE.value,
                self._now(),
            )
            row = await conn.fetchrow(
                "SELECT * FROM conversations WHERE platform = $1 AND place = $2 AND thread = $3",
                key.platform,
                key.place,
                key.thread,
            )
        assert row is not None
        return rows.conversation(row)

    async def create_branch(
        self, *, key: ThreadKey, owner_id: str, source: Conversation, branch_point_seq: int
    ) -> Conversation:
        async with self._tx() as conn:
            row = await conn.fetchrow(
                """INSERT INTO conversations
                   (platform, place, thread, owner_id, status, created_at, branched_from, branch_point_seq)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
                key.platform,
                key.place,
                key.thread,
                owner_id,
                Status.ACTIVE.value,
                self._now(),
                source.id,
                branch_point_seq,
            )
            assert row is not None
            new_id = int(row["id"])
            # Copies carry no platform ids: those name the original posts, which stay with the original.
            await conn.execute(
                """INSERT INTO messages (conversation_id, seq, role, blocks, author_id, author_name, platform,
                       platform_message_id, answered, excluded, redacted, created_at)
                   SELECT $1, seq, role, blocks, author_id, author_name, platform, NULL, TRUE, excluded, redacted,
                       created_at
                   FROM messages WHERE conversation_id = $2 AND seq < $3 ORDER BY seq""",
                new_id,
                source.id,
                branch_point_seq,
            )
            await conn.execute(
                """INSERT INTO warnings (conversation_id, after_seq, behavior, created_at)
                   SELECT $1, after_seq, behavior, created_at FROM warnings
                   WHERE conversation_id = $2 AND after_seq < $3 ORDER BY id""",
                new_id,
                source.id,
                branch_point_seq,
            )
            # A branch carries the history that marked its source, so it carries the mark (not the banner).
            await conn.execute(
                """INSERT INTO conversation_risk (conversation_id, categories, source, marked_at, last_signal_at)
                   SELECT $1, categories, 'branch', $2, last_signal_at FROM conversation_risk
                   WHERE conversation_id = $3""",
                new_id,
                self._now(),
                source.id,
            )
        return rows.conversation(row)

    async def find_conversation(self, key: ThreadKey) -> Conversation | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM conversations WHERE platform = $1 AND place = $2 AND thread = $3",
            key.platform,
            key.place,
            key.thread,
        )
        return rows.conversation(row) if row else None

    async def latest_conversation(self, *, platform: str, place: str) -> Conversation | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM conversations WHERE platform = $1 AND place = $2 ORDER BY id DESC LIMIT 1",
            platform,
            place,
        )
        return rows.conversation(row) if row else None

    async def get_conversation(self, conversation_id: int) -> Conversation | None:
        row = await self.pool.fetchrow("SELECT * FROM conversations WHERE id = $1", conversation_id)
        return rows.conversation(row) if row else None

    async def end_conversation(
        self, *, conversation_id: int, reason: EndReason, explanation: str, actor: str
    ) -> Conversation:
        row = await self.pool.fetchrow(
            """UPDATE conversations SET status = $1, ended_reason = $2, ended_explanation = $3, ended_at = $4,
               ended_by = $5 WHERE id = $6 RETURNING *""",
            Status.ENDED.value,
            reason.value,
            explanation,
            self._now(),
            actor,
            conversation_id,
        )
        if row is None:
            raise KeyError(conversation_id)
        return rows.conversation(row)

    async def end_if_current(
        self, *, conversation_id: int, reason: EndReason, explanation: str, actor: str, after_message_id: int
    ) -> Conversation | None:
        # Appends take this lock too: once it is ours, the routine's next statement sees every message stored
        # before, so a message stored a moment ago cannot slip past the check.
        found = await self._call_locking(
            conversation_id,
            "SELECT * FROM lr_end_if_current_1($1, $2, $3, $4, $5, $6, $7, $8)",
            Status.ENDED.value,
            reason.value,
            explanation,
            self._now(),
            actor,
            Status.ACTIVE.value,
            after_message_id,
        )
        return rows.conversation(found[0]) if found else None

    async def mark_at_risk(
        self, *, conversation_id: int, platform: str, author_ids: Sequence[str], categories: Sequence[str], source: str
    ) -> bool:
        found = rows.join_categories(categories, "")
        now = self._now()
        async with self._tx() as conn:
            inserted = await conn.fetchval(
                f"""INSERT INTO conversation_risk (conversation_id, categories, source, marked_at, last_signal_at)
                    VALUES ($1, $2, $3, $4, $4) ON CONFLICT (conversation_id) DO UPDATE SET
                    categories = {_MERGED_CATEGORIES.format(table="conversation_risk")},
                    last_signal_at = EXCLUDED.last_signal_at
                    RETURNING (xmax = 0)""",
                conversation_id,
                found,
                source,
                now,
            )
            if author_ids:
                await conn.execute(_MARK_AUTHORS, platform, sorted(set(author_ids)), found, now)
        return bool(inserted)

    async def risk_marks(
        self, *, conversation_id: int, platform: str, author_ids: Sequence[str], since: datetime
    ) -> RiskMarks:
        found = await self.pool.fetch(
            """SELECT 'conversation' AS kind, categories AS value, support_shown FROM conversation_risk
               WHERE conversation_id = $1
               UNION ALL
               SELECT 'author', author_id, FALSE FROM author_risk
               WHERE platform = $2 AND last_signal_at >= $3 AND author_id = ANY($4::text[])""",
            conversation_id,
            platform,
            _utc(since),
            sorted(set(author_ids)),
        )
        own = next((row for row in found if row["kind"] == "conversation"), None)
        return RiskMarks(
            conversation_marked=own is not None,
            categories=frozenset(rows.split_categories(own["value"])) if own else frozenset(),
            authors=frozenset(str(row["value"]) for row in found if row["kind"] == "author"),
            support_shown=bool(own["support_shown"]) if own else False,
        )

    async def mark_authors_at_risk(
        self, *, platform: str, author_ids: Sequence[str], categories: Sequence[str]
    ) -> None:
        found = rows.join_categories(categories, "")
        await self.pool.execute(_MARK_AUTHORS, platform, sorted(set(author_ids)), found, self._now())

    async def note_support_shown(self, *, conversation_id: int) -> None:
        await self.pool.execute(
            "UPDATE conversation_risk SET support_shown = TRUE WHERE conversation_id = $1", conversation_id
        )

    async def prune_author_marks(self, *, older_than: datetime) -> int:
        status = await self.pool.execute("DELETE FROM author_risk WHERE last_signal_at < $1", _utc(older_than))
        return int(status.split()[-1])

    async def reopen_conversation(self, *, conversation_id: int) -> Conversation:
        row = await self.pool.fetchrow(
            """UPDATE conversations SET status = $1, ended_reason = NULL, ended_explanation = NULL,
               ended_at = NULL, ended_by = NULL WHERE id = $2 RETURNING *""",
            Status.ACTIVE.value,
            conversation_id,
        )
        if row is None:
            raise KeyError(conversation_id)
        return rows.conversation(row)

    async def recent_endings(self, *, limit: int) -> list[Conversation]:
        found = await self.pool.fetch(
            "SELECT * FROM conversations WHERE status = $1 ORDER BY ended_at DESC, id DESC LIMIT $2",
            Status.ENDED.value,
            limit,
        )
        return [rows.conversation(r) for r in found]

    # -- messages ------------------------------------------------------------------------------------

    async def _call_locking(self, conversation_id: int, query: str, *args: object) -> list[asyncpg.Record]:
        """One call of a routine that locks conversation rows first (pg_routines): the rows it returns.

        A conversation that does not exist (the routine raises no_data_found with its id) is a KeyError."""
        try:
            return await self.pool.fetch(pg_routines.WRITE_CALL + query, conversation_id, *args)
        except asyncpg.NoDataFoundError as exc:
            missing = getattr(exc, "detail", None)
            raise KeyError(int(missing) if missing else conversation_id) from None

    async def add_message(self, message: NewMessage) -> StoredMessage | None:
        # Serialized with every other append to the conversation by its row lock, taken inside the routine.
        found = await self._call_locking(
            message.conversation_id,
            "SELECT * FROM lr_append_message_1($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            message.role.value,
            rows.dump_blocks(message.blocks),
            message.author_id,
            message.author_name,
            message.platform_message_id,
            message.answered,
            self._now(),
            rows.starts_delivered(message),
        )
        return rows.message(found[0]) if found else None

    async def messages(self, conversation_id: int) -> list[StoredMessage]:
        read_in = self._parsed.generation
        found = await self.pool.fetch("SELECT * FROM messages WHERE conversation_id = $1 ORDER BY seq", conversation_id)
        return [self._parsed.message(r, read_in=read_in) for r in found]

    async def find_by_platform_id(self, *, platform: str, platform_message_id: str) -> StoredMessage | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM messages WHERE platform = $1 AND platform_message_id = $2",
            platform,
            platform_message_id,
        )
        return rows.message(row) if row else None

    async def complete_turn(
        self, *, conversation_id: int, replies: Sequence[NewMessage], after_seq: int, answered_up_to_seq: int
    ) -> list[StoredMessage]:
        # In id order, so two turns touching the same conversations cannot deadlock.
        locks = sorted({conversation_id, *(r.conversation_id for r in replies)})
        found = await self._call_locking(
            conversation_id,
            "SELECT * FROM lr_complete_turn_1($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            locks,
            after_seq,
            answered_up_to_seq,
            [r.role.value for r in replies],
            [rows.dump_blocks(r.blocks) for r in replies],
            [r.author_id for r in replies],
            [r.author_name for r in replies],
            [r.platform_message_id for r in replies],
            [r.answered for r in replies],
            [self._now() for _ in replies],
        )
        return sorted((rows.message(r) for r in found), key=lambda m: m.seq)

    async def exclude_message(self, message_id: int) -> None:
        await self.pool.execute("UPDATE messages SET excluded = TRUE WHERE id = $1", message_id)

    async def mark_answered(self, *, conversation_id: int, up_to_seq: int) -> None:
        await self.pool.execute(
            "UPDATE messages SET answered = TRUE WHERE conversation_id = $1 AND seq <= $2 AND NOT answered",
            conversation_id,
            up_to_seq,
        )

    async def mark_delivered(self, *, conversation_id: int, trigger_seq: int) -> None:
        await self.pool.execute(
            """UPDATE messages SET delivered = TRUE
               WHERE conversation_id = $1 AND NOT delivered AND answered AND seq < COALESCE(
                   (SELECT MIN(r.seq) FROM messages r
                    WHERE r.conversation_id = $1 AND r.role = 'assistant' AND r.seq > $2), $2 + 1)
               AND ($3 OR seq > COALESCE(
                   (SELECT MAX(p.seq) FROM messages p
                    WHERE p.conversation_id = $1 AND p.role = 'assistant' AND p.seq < $2), 0))""",
            # Only the messages this answer answered: an earlier answer that never arrived stays pending.
            conversation_id,
            trigger_seq,
            trigger_seq >= rows.EVERY_SEQ,
        )

    async def undelivered(self, *, platform: str, older_than: datetime, newer_than: datetime) -> list[StoredMessage]:
        found = await self.pool.fetch(
            """SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id
               WHERE NOT m.delivered AND m.answered AND m.role = 'user' AND c.platform = $1
                   AND m.created_at < $2 AND m.created_at >= $3
               ORDER BY m.conversation_id, m.seq""",
            platform,
            _utc(older_than),
            _utc(newer_than),
        )
        return [rows.message(r) for r in found]

    async def active_threads(self, *, platform: str, since: datetime, limit: int) -> list[ActiveThread]:
        found = await self.pool.fetch(
            """SELECT c.*, (SELECT m.platform_message_id FROM messages m
                       WHERE m.conversation_id = c.id AND m.platform_message_id IS NOT NULL
                       ORDER BY m.seq DESC LIMIT 1) AS last_platform_message_id
               FROM conversations c
               WHERE c.platform = $1 AND c.status = $2 AND (c.created_at >= $3 OR EXISTS (
                   SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.created_at >= $3))
               ORDER BY c.id DESC LIMIT $4""",
            platform,
            Status.ACTIVE.value,
            _utc(since),
            limit,
        )
        return [ActiveThread(rows.conversation(r), r["last_platform_message_id"]) for r in found]

    async def remember_draft(self, draft: Draft) -> None:
        await self.pool.execute(
            """INSERT INTO drafts (conversation_id, message_id, place, ts, created_at) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (conversation_id, ts) DO UPDATE SET message_id = excluded.message_id""",
            draft.conversation_id,
            draft.message_id,
            draft.place,
            draft.ts,
            self._now(),
        )

    async def orphan_drafts(self, conversation_id: int) -> list[Draft]:
        found = await self.pool.fetch(
            """SELECT d.* FROM drafts d JOIN messages m ON m.id = d.message_id
               WHERE d.conversation_id = $1 AND NOT m.answered ORDER BY d.created_at""",
            conversation_id,
        )
        return [Draft(r["conversation_id"], r["message_id"], r["place"], r["ts"]) for r in found]

    async def forget_draft(self, *, conversation_id: int, ts: str) -> None:
        await self.pool.execute("DELETE FROM drafts WHERE conversation_id = $1 AND ts = $2", conversation_id, ts)

    async def unanswered(self, *, older_than: datetime) -> list[StoredMessage]:
        found = await self.pool.fetch(
            """SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id
               WHERE NOT m.answered AND m.role = 'user' AND m.created_at < $1 AND c.status = $2
               ORDER BY m.conversation_id, m.seq""",
            _utc(older_than),
            Status.ACTIVE.value,
        )
        return [rows.message(r) for r in found]

    # -- warnings and confirmations ---------------------------------------------------------------------

    async def add_warning(self, *, conversation_id: int, after_seq: int, behavior: str) -> RecordedWarning:
        row = await self.pool.fetchrow(
            "INSERT INTO warnings (conversation_id, after_seq, behavior, created_at) "
            "VALUES ($1, $2, $3, $4) RETURNING *",
            conversation_id,
            after_seq,
            behavior,
            self._now(),
        )
        assert row is not None
        return rows.warning(row)

    async def warnings(self, conversation_id: int) -> list[RecordedWarning]:
        found = await self.pool.fetch("SELECT * FROM warnings WHERE conversation_id = $1 ORDER BY id", conversation_id)
        return [rows.warning(r) for r in found]

    async def turn_state(
        self, conversation_id: int
    ) -> tuple[Conversation | None, list[StoredMessage], list[RecordedWarning]]:
        # One statement, so one snapshot: the three reads agree with each other without a transaction (which
        # cost a BEGIN and a COMMIT round trip each turn). Rows come back as records of the tables' own types.
        read_in = self._parsed.generation
        try:
            found = await self.pool.fetchrow(TURN_STATE, conversation_id)
        except asyncpg.OutdatedSchemaCacheError:
            # A migration changed one of those types (a new column) since this connection cached it: asyncpg
            # has reloaded its cache by now, and the read is safe to repeat.
            found = await self.pool.fetchrow(TURN_STATE, conversation_id)
        assert found is not None
        own = found["conversation"]
        return (
            rows.conversation(own) if own is not None else None,
            [self._parsed.message(r, read_in=read_in) for r in found["history"]],
            [rows.warning(r) for r in found["warned"]],
        )

    async def add_confirmation(self, *, conversation_id: int, owner_id: str, explanation: str) -> PendingConfirmation:
        row = await self.pool.fetchrow(
            """INSERT INTO confirmations (conversation_id, owner_id, explanation, created_at)
               VALUES ($1, $2, $3, $4) RETURNING *""",
            conversation_id,
            owner_id,
            explanation,
            self._now(),
        )
        assert row is not None
        return rows.confirmation(row)

    async def get_confirmation(self, confirmation_id: int) -> PendingConfirmation | None:
        row = await self.pool.fetchrow("SELECT * FROM confirmations WHERE id = $1", confirmation_id)
        return rows.confirmation(row) if row else None

    async def resolve_confirmation(self, confirmation_id: int) -> bool:
        row = await self.pool.fetchrow(
            "UPDATE confirmations SET resolved = TRUE WHERE id = $1 AND NOT resolved RETURNING id",
            confirmation_id,
        )
        return row is not None

    # -- audit -----------------------------------------------------------------------------------------

    async def add_event(self, event: AuditEvent) -> None:
        await self.pool.execute(
            """INSERT INTO audit_events (kind, conversation_id, actor, reason, detail, created_at)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            event.kind,
            event.conversation_id,
            event.actor,
            event.reason,
            json.dumps(event.detail),
            _utc(event.created_at or self._clock.now()),
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
        found = await self.pool.fetch(
            f"""SELECT * FROM audit_events WHERE created_at >= $1 AND ($3::text[] IS NULL OR kind = ANY($3::text[]))
                ORDER BY created_at {order}, id {order} LIMIT $2""",  # order is one of two literals
            _utc(since),
            limit,
            list(kinds) if kinds is not None else None,
        )
        return [rows.audit_event(r) for r in found]

    async def count_events(self, *, since: datetime) -> dict[str, int]:
        found = await self.pool.fetch(
            "SELECT kind, COUNT(*) AS n FROM audit_events WHERE created_at >= $1 GROUP BY kind",
            _utc(since),
        )
        return {r["kind"]: int(r["n"]) for r in found}

    # -- votes on answers -------------------------------------------------------------------------------

    async def record_answer_vote(self, *, conversation_id: int, answer_id: str, voter_id: str, helpful: bool) -> bool:
        row = await self.pool.fetchrow(
            """INSERT INTO answer_votes (conversation_id, answer_id, voter_id, helpful, voted_at)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (conversation_id, answer_id, voter_id) DO UPDATE
                   SET helpful = excluded.helpful, voted_at = excluded.voted_at
                   WHERE answer_votes.helpful <> excluded.helpful
               RETURNING voter_id""",
            conversation_id,
            answer_id,
            voter_id,
            helpful,
            self._now(),
        )
        return row is not None

    async def answer_votes(self, *, since: datetime) -> VoteCounts:
        row = await self.pool.fetchrow(
            """SELECT COUNT(*) FILTER (WHERE helpful) AS up, COUNT(*) FILTER (WHERE NOT helpful) AS down
               FROM answer_votes WHERE voted_at >= $1""",
            _utc(since),
        )
        return VoteCounts(helpful=int(row["up"]) if row else 0, not_helpful=int(row["down"]) if row else 0)

    # -- deduplication, leases, usage ---------------------------------------------------------------------

    async def claim_event(self, *, source: str, event_id: str) -> bool:
        self._claims += 1
        if self._claims % PRUNE_EVERY_CLAIMS == 1:
            # Housekeeping, not on every claim. SKIP LOCKED: instances pruning at once split the old rows.
            await self.pool.execute(
                """DELETE FROM seen_events WHERE (source, event_id) IN (
                       SELECT source, event_id FROM seen_events
                       WHERE seen_at < now() - make_interval(secs => $1) FOR UPDATE SKIP LOCKED)""",
                float(SEEN_EVENT_SECONDS),
            )
        # One statement, its own transaction. An id last seen more than a day ago counts as new, pruned yet
        # or not; of two instances claiming one id at once, the second waits on the row and gets nothing.
        row = await self.pool.fetchrow(
            """INSERT INTO seen_events (source, event_id, seen_at) VALUES ($1, $2, now())
               ON CONFLICT (source, event_id) DO UPDATE SET seen_at = excluded.seen_at
               WHERE seen_events.seen_at < now() - make_interval(secs => $3)
               RETURNING event_id""",
            source,
            event_id,
            float(SEEN_EVENT_SECONDS),
        )
        return row is not None

    async def acquire_lease(self, *, name: str, holder: str, ttl_seconds: float) -> bool:
        # clock_timestamp(), not now(): the current moment, not the transaction's start.
        row = await self.pool.fetchrow(
            """INSERT INTO leases (name, holder, expires_at)
               VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
               ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
               WHERE leases.expires_at < clock_timestamp() OR leases.holder = excluded.holder
               RETURNING holder""",
            name,
            holder,
            float(ttl_seconds),
        )
        return row is not None

    async def release_lease(self, *, name: str, holder: str) -> None:
        await self.pool.execute("DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder)

    async def add_usage(self, *, scope: str, day: str, tokens: int) -> int:
        total = await self.pool.fetchval(
            """INSERT INTO usage (scope, day, tokens) VALUES ($1, $2, $3)
               ON CONFLICT (scope, day) DO UPDATE SET tokens = usage.tokens + excluded.tokens
               RETURNING tokens""",
            scope,
            day,
            tokens,
        )
        return int(total) if total is not None else 0

    async def usage(self, *, scope: str, day: str) -> int:
        total = await self.pool.fetchval("SELECT tokens FROM usage WHERE scope = $1 AND day = $2", scope, day)
        return int(total) if total is not None else 0

    # -- privacy -------------------------------------------------------------------------------------

    async def forget_user(self, *, platform: str, user_id: str) -> int:
        """Remove the text and identity of everything the user wrote, and all text of the conversations they
        started. Those conversations stay as tombstones, so an ended thread stays ended."""
        async with self._tx() as conn:
            count = int(
                await conn.fetchval(
                    "SELECT COUNT(*) FROM messages WHERE platform = $1 AND author_id = $2", platform, user_id
                )
            )
            owned = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM conversations WHERE platform = $1 AND owner_id = $2 ORDER BY id FOR UPDATE",
                    platform,
                    user_id,
                )
            ]
            touched = await conn.fetch(
                """SELECT id, blocks FROM messages
                   WHERE (platform = $1 AND author_id = $2) OR conversation_id = ANY($3::bigint[])
                   ORDER BY id FOR UPDATE""",
                platform,
                user_id,
                owned,
            )
            await conn.executemany(
                "UPDATE messages SET blocks = $1, author_id = NULL, author_name = NULL, redacted = TRUE WHERE id = $2",
                [(rows.redact_blocks(tuple(rows.load_json(r["blocks"]))), r["id"]) for r in touched],
            )
            await conn.execute(
                """UPDATE conversations SET owner_id = $1,
                       ended_explanation = CASE WHEN ended_explanation IS NULL THEN NULL ELSE $2 END
                   WHERE id = ANY($3::bigint[])""",
                FORGOTTEN,
                rows.REDACTED_TEXT,
                owned,
            )
            await conn.execute(
                "UPDATE warnings SET behavior = $1 WHERE conversation_id = ANY($2::bigint[])", rows.REDACTED_TEXT, owned
            )
            await conn.execute(
                """UPDATE confirmations SET explanation = $1,
                       owner_id = CASE WHEN owner_id = $2 THEN '' ELSE owner_id END
                   WHERE conversation_id = ANY($3::bigint[]) OR (owner_id = $2 AND conversation_id IN
                       (SELECT id FROM conversations WHERE platform = $4))""",
                rows.REDACTED_TEXT,
                user_id,
                owned,
                platform,
            )
            await conn.execute("DELETE FROM usage WHERE scope = $1", f"user:{platform}:{user_id}")
            await conn.execute(
                "DELETE FROM answer_votes WHERE voter_id = $1 AND conversation_id IN "
                "(SELECT id FROM conversations WHERE platform = $2)",
                user_id,
                platform,
            )
            await conn.execute(
                "UPDATE audit_events SET actor = 'user:forgotten' WHERE actor IN ($1, $2)",
                f"user:{user_id}",
                f"moderator:{user_id}",
            )
        # Parsed copies of the rows as they were must not keep the removed text in memory.
        self._parsed.clear()
        return count

    async def purge_text(self, *, older_than: datetime) -> int:
        cutoff = _utc(older_than)
        async with self._tx() as conn:
            # Conversations before messages: the same lock order as appending, so the two cannot deadlock.
            await conn.execute(
                "UPDATE conversations SET ended_explanation = $1 WHERE ended_at < $2 AND ended_explanation IS NOT NULL",
                rows.REDACTED_TEXT,
                cutoff,
            )
            await conn.execute(
                "UPDATE warnings SET behavior = $1 WHERE created_at < $2 AND behavior <> $1", rows.REDACTED_TEXT, cutoff
            )
            await conn.execute(
                "UPDATE confirmations SET explanation = $1 WHERE created_at < $2 AND explanation <> $1",
                rows.REDACTED_TEXT,
                cutoff,
            )
            old = await conn.fetch(
                "SELECT id, blocks FROM messages WHERE NOT redacted AND created_at < $1 FOR UPDATE", cutoff
            )
            await conn.executemany(
                "UPDATE messages SET blocks = $1, redacted = TRUE WHERE id = $2",
                [(rows.redact_blocks(tuple(rows.load_json(r["blocks"]))), r["id"]) for r in old],
            )
        # Parsed copies of the rows as they were must not keep the removed text in memory.
        self._parsed.clear()
        return len(old)
