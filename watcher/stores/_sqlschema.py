"""The SQLite store's schema and its migrations, versioned with ``PRAGMA user_version``.

To change the schema, append a migration to ``MIGRATIONS``: ``MIGRATIONS[n]`` takes a
database from version ``n`` to ``n + 1``. Each runs in its own transaction together with the
version bump, so a crash mid-migration leaves the previous version intact. Never edit a
migration that has shipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import aiosqlite

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

Migration = Callable[[aiosqlite.Connection], Awaitable[None]]

_V1: Sequence[str] = (
    """CREATE TABLE watches (
        source TEXT NOT NULL,
        task_id TEXT NOT NULL,
        watched_at REAL NOT NULL,
        due_at REAL NOT NULL,
        deadline_at REAL,
        batch TEXT,
        labels TEXT NOT NULL DEFAULT '{}',
        key TEXT NOT NULL DEFAULT '',
        polls INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
        outcome TEXT,
        finished_at REAL,
        PRIMARY KEY (source, task_id)
    )""",
    # pending(): by state then due time; the rowid in every index entry breaks ties.
    "CREATE INDEX watches_by_due ON watches (state, due_at)",
    # batch_counts() and list(batch=...) scan only the batch's entries.
    "CREATE INDEX watches_by_batch ON watches (batch, state, outcome)",
    # AUTOINCREMENT: a seq is never reused, even after the newest item was acked, so a seq
    # always names one item and seqs only grow.
    """CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sink TEXT NOT NULL,
        event_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        standalone INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        UNIQUE (sink, event_id)
    )""",
    "CREATE INDEX outbox_by_sink ON outbox (sink, seq)",
    """CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sink TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        reason TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        last_error TEXT,
        at REAL NOT NULL
    )""",
    "CREATE INDEX dead_letters_by_sink ON dead_letters (sink, id)",
    # Events queued by enqueue() (not tied to a watch) that left the outbox, delivered or
    # dead: enqueueing one again stays a no-op. One row per batch event and sink.
    """CREATE TABLE settled (
        sink TEXT NOT NULL,
        event_id TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (sink, event_id)
    ) WITHOUT ROWID""",
)


async def _create_v1(conn: aiosqlite.Connection) -> None:
    for statement in _V1:
        await conn.execute(statement)


MIGRATIONS: Sequence[Migration] = (_create_v1,)
SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(conn: aiosqlite.Connection) -> None:
    """Bring the database up to ``SCHEMA_VERSION``, one migration per transaction.

    The version is read again under the write lock, so two processes opening one new file at
    once do not both run a migration. A newer version is left alone (the caller refuses it).
    """
    while True:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            rows = await conn.execute_fetchall("PRAGMA user_version")
            current = int(next(iter(rows))[0])
            if current >= SCHEMA_VERSION:
                await conn.execute("COMMIT")
                return
            await MIGRATIONS[current](conn)
            # PRAGMA user_version is part of the transaction: bumped only if all of it commits.
            await conn.execute(f"PRAGMA user_version = {current + 1}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
