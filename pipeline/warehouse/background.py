"""Writes that overlap with the work that produces them.

PostgreSQL executes a `COPY` in its own process: while it stores one batch of a file's rows,
the client can already read, validate and resolve the next. `Background` runs a file's writes
one at a time, in order, on a thread of its own, so the two cores work at once; the caller
waits only when it hands over the next write while the previous one is still running. Only one
write is ever in flight, so memory holds at most one batch more than without it.

On SQLite the writes run inline: the database works in this process, under the same lock.

The thread only ever uses the connection while the caller does not: the caller hands the
connection over with each write and takes it back with `finish` (or by leaving the `with`
block). If the caller fails or is interrupted (a stop signal) while a write runs, that
statement is cancelled on the server and the thread is joined before the error goes on, so the
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
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="conversions-write")
            if conn.dialect.name == "postgresql"
            else None
        )
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
                    self.conn.connection.driver_connection.cancel_safe(timeout=5)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)  # the cancelled statement ends promptly
            self._pending = None
