"""Real stores for tests: SQLite in a temporary directory, PostgreSQL in a fresh schema per test, and a clock
the test moves by hand.

Pytest finds fixtures through the test module's globals, so import the ones you use. Each is defined as
`<name>_fixture` with `@pytest.fixture(name="<name>")`, so a test's `store` parameter does not shadow the
import (ruff F811):

    from tests.support.stores import clock_fixture, store_fixture, store_opener_fixture  # noqa: F401

`store` needs `store_opener` and `clock` imported too; `sqlite_store` and `postgres_store` need `clock`.

- `clock`: a `ManualClock` starting at `START`; every store a test opens stamps rows with it.
- `store`: an open, migrated store, once per backend (test ids `[sqlite]` and `[postgres]`).
- `store_opener`: the `StoreOpener` behind `store`; `await store_opener.open()` is another instance on the same
  database (what a second process sees). Everything it opened is closed after the test.
- `sqlite_store`, `postgres_store`: one backend only.

PostgreSQL is the server at `LASTRESORT_TEST_POSTGRES_URL` (default postgresql://postgres@127.0.0.1:5432/test).
Each test gets its own schema `t_<random>`, reached through the `search_path` server setting and dropped
afterwards; tests never skip when the server is missing, they fail.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest

from core.ports import Store
from core.storage.postgres_store import PostgresStore
from core.storage.sqlite_store import SqliteStore

POSTGRES_URL = os.environ.get("LASTRESORT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
START = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
BACKENDS = ("sqlite", "postgres")


class ManualClock:
    """`now()` is whatever the test last set; it never moves on its own."""

    def __init__(self, start: datetime = START) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when if when.tzinfo else when.replace(tzinfo=UTC)

    def advance(self, seconds: float = 0.0, **delta: float) -> datetime:
        """Move forward by `seconds` (and/or timedelta keywords: minutes=, hours=, days=); returns the new now."""
        self._now += timedelta(seconds=seconds, **delta)
        return self._now


FrozenClock = ManualClock


class OpenableStore(Store, Protocol):
    async def open(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PostgresSchema:
    """An empty schema of its own on the test server."""

    url: str
    name: str

    @property
    def server_settings(self) -> dict[str, str]:
        return {"search_path": self.name}

    def store(self, clock: ManualClock, **options: Any) -> PostgresStore:
        return PostgresStore(self.url, clock=clock, server_settings=self.server_settings, **options)

    async def admin(self) -> asyncpg.Connection[asyncpg.Record]:
        """A plain connection with the schema on its search path, for looking behind the store's back."""
        return await asyncpg.connect(self.url, server_settings=self.server_settings)


@asynccontextmanager
async def fresh_postgres_schema(url: str = POSTGRES_URL) -> AsyncIterator[PostgresSchema]:
    name = f"t_{secrets.token_hex(8)}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    finally:
        await conn.close()
    try:
        yield PostgresSchema(url, name)
    finally:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()


class StoreOpener:
    """Opens instances of one backend on one database: each instance is what another process would see."""

    def __init__(
        self, backend: str, make: Callable[[], OpenableStore], execute: Callable[[str], Awaitable[None]]
    ) -> None:
        self.backend = backend
        self._make = make
        self._execute = execute
        self._opened: list[OpenableStore] = []

    async def execute(self, sql: str) -> None:
        """Run SQL on the database behind the stores' backs (to age rows, say); the dialect is the backend's."""
        await self._execute(sql)

    async def open(self, *, migrate: bool = True) -> OpenableStore:
        store = self._make()
        self._opened.append(store)
        await store.open()
        if migrate:
            await store.migrate()
        return store

    async def close_all(self) -> None:
        for store in reversed(self._opened):
            await store.close()
        self._opened.clear()


@asynccontextmanager
async def sqlite_opener(path: Path, clock: ManualClock) -> AsyncIterator[StoreOpener]:
    async def execute(sql: str) -> None:
        with sqlite3.connect(path) as db:
            db.execute(sql)
        db.close()

    opener = StoreOpener("sqlite", lambda: SqliteStore(path, clock=clock), execute)
    try:
        yield opener
    finally:
        await opener.close_all()


@asynccontextmanager
async def postgres_opener(clock: ManualClock) -> AsyncIterator[StoreOpener]:
    async with fresh_postgres_schema() as schema:

        async def execute(sql: str) -> None:
            conn = await schema.admin()
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        opener = StoreOpener("postgres", lambda: schema.store(clock), execute)
        try:
            yield opener
        finally:
            await opener.close_all()


@asynccontextmanager
async def opener_for(backend: str, tmp_path: Path, clock: ManualClock) -> AsyncIterator[StoreOpener]:
    """A fresh, empty database of the named backend."""
    if backend == "sqlite":
        async with sqlite_opener(tmp_path / "lastresort.db", clock) as opener:
            yield opener
    elif backend == "postgres":
        async with postgres_opener(clock) as opener:
            yield opener
    else:
        raise ValueError(f"unknown backend {backend!r}")


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(name="clock")
def clock_fixture() -> ManualClock:
    return ManualClock()


@pytest.fixture(name="sqlite_store")
async def sqlite_store_fixture(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "lastresort.db", clock=clock) as store:
        yield store


@pytest.fixture(name="postgres_store")
async def postgres_store_fixture(clock: ManualClock) -> AsyncIterator[PostgresStore]:
    async with fresh_postgres_schema() as schema, schema.store(clock) as store:
        yield store


@pytest.fixture(name="store_opener", params=BACKENDS)
async def store_opener_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[StoreOpener]:
    async with opener_for(request.param, tmp_path, clock) as opener:
        yield opener


@pytest.fixture(name="store")
async def store_fixture(store_opener: StoreOpener) -> OpenableStore:
    return await store_opener.open()


def latest_schema_version() -> int:
    """The newest migration this release knows, so tests never hard-code a number that each migration moves."""
    from core.storage.sqlite_store import MIGRATIONS

    return max(version for version, _ in MIGRATIONS)
