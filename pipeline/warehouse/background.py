"""Writes that overlap with the work that produces them.

PostgreSQL executes a `COPY` in its own process: while it stores one batch of a file's rows,
the client can already read, validate and resolve the next. `Background` runs a file's writes
one at a time, in order, on a thread of its own, so the two cores work at once; the caller
waits only when it hands over the next write while the previous one is still running. Only one
write is ever in flight, so memory holds at most one batch more than without it.

SQLite works in this process, but its library lets go of Python's lock while it stores rows,
so there too the next chunk is resolved while the last one is written (1,000,000 rows: 37.5 s
against 40-44 s inline, README "Performance").

The thread only ever uses the connection while the caller does not: the caller hands the
connection over with each write and takes it back with `finish` (or by leaving the `with`
block). If the caller fails or is interrupted (a stop signal) while a write runs, that
statement is cancelled (PostgreSQL's cancel request, SQLite's `interrupt`, both made to be called
from another thread) and the thread is joined before the error goes on, so the
file's transaction is rolled back by one thread, with nothing still running on it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from types import TracebackType

from sqlalchemy import Connection


class Background:
    """One write in flight at a time: ``writes(fn, *args)`` runs ``fn(conn, *args)``."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="conversions-write")
        self._pending: Future | None = None

    def __call__(self, write: Callable[..., None], *args, **kwargs) -> None:
        """Start `write` once the previous write has finished (raising that one's error)."""
        self.finish()
        if self._pool is None:
            write(self.conn, *args, **kwargs)
        else:
            self._pending = self._pool.submit(write, self.conn, *args, **kwargs)

    def finish(self) -> None:
        """Wait for the write in flight; the connection is the caller's again afterwards."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> Background:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                self.finish()
            elif self._pending is not None and not self._pending.done():
                with suppress(Exception):
                    driver = self.conn.connection.driver_connection
                    if self.conn.dialect.name == "postgresql":
                        driver.cancel_safe(timeout=5)
                    else:  # sqlite3: the one call made for another thread
                        driver.interrupt()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)  # the cancelled statement ends promptly
            self._pending = None
