"""Pick the store from DATABASE_URL: SQLite by default, PostgreSQL for several instances."""

from __future__ import annotations

from core.ports import Clock, Store
from core.storage.errors import StoreUnavailableError
from core.storage.urls import redact_url

DEFAULT_DATABASE_URL = "sqlite:///lastresort.db"


async def open_store(database_url: str, *, clock: Clock, migrate: bool = True, count_statements: bool = False) -> Store:
    """Open (and by default migrate) the store a URL names; raises StoreUnavailableError clearly."""
    if database_url.startswith("sqlite:"):
        from core.storage.sqlite_store import SqliteStore, sqlite_path

        try:
            path = sqlite_path(database_url)
        except ValueError as exc:
            raise StoreUnavailableError(f"DATABASE_URL {database_url!r}: {exc}") from exc
        sqlite = SqliteStore(path, clock=clock, count_statements=count_statements)
        await sqlite.open()
        store: Store = sqlite
    elif database_url.startswith(("postgres://", "postgresql://")):
        from core.storage.postgres_store import PostgresStore

        postgres = PostgresStore(database_url, clock=clock, count_statements=count_statements)
        await postgres.open()
        store = postgres
    else:
        raise StoreUnavailableError(
            f"DATABASE_URL {redact_url(database_url)!r} is not supported: use sqlite:///file.db, "
            "sqlite:////absolute/file.db, postgres://... or postgresql://..."
        )
    if migrate:
        try:
            await store.migrate()
        except Exception:
            await store.close()
            raise
    return store
