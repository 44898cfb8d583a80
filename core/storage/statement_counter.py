"""Counts what a store sends to its database, for `make bench` (statements and transactions per message).

Off unless asked for (LASTRESORT_COUNT_STATEMENTS=1): the stores hook it into the driver's own trace
(sqlite3's trace callback, asyncpg's query logger), so it sees BEGIN, COMMIT and pool resets too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# "/* WRITE */" opens a call of a routine that writes (core/storage/pg_routines.py): one statement, one
# write transaction, though it reads as a SELECT.
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "/* WRITE */")
_RESETS = ("pg_advisory_unlock_all", "RESET ALL")


@dataclass
class StatementCounter:
    statements: int = 0  # what the store asked for, without transaction control
    transactions: int = 0  # write transactions: BEGIN ... COMMIT, or one write statement on its own
    round_trips: int = 0  # everything sent, BEGIN, COMMIT and pool resets included
    resets: int = 0  # pool-reset queries (PostgreSQL)
    _open: set[object] = field(default_factory=set)

    def saw(self, sql: str, session: object = None) -> None:
        """One statement sent on `session` (a connection); called in the order they ran on it."""
        self.round_trips += 1
        head = sql.lstrip()[:16].upper()
        if head.startswith("BEGIN"):
            self.transactions += 1
            self._open.add(session)
        elif head.startswith(("COMMIT", "ROLLBACK", "END")):
            self._open.discard(session)
        elif any(marker in sql for marker in _RESETS):
            self.resets += 1
        else:
            self.statements += 1
            if session not in self._open and head.startswith(_WRITES):
                self.transactions += 1

    def snapshot(self) -> dict[str, int]:
        return {
            "statements": self.statements,
            "transactions": self.transactions,
            "round_trips": self.round_trips,
            "resets": self.resets,
        }
