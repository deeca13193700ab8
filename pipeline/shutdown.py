"""Graceful shutdown: SIGTERM or SIGINT stop a run between files, never in the middle of a commit.

Airflow sends SIGTERM when a task times out or a worker shuts down (and SIGKILL 5 s later), a
person presses Ctrl-C, a container runtime stops the container. Without a handler the process
dies on the spot: its claims stay in ``processing/`` until a later run recovers them. With one:

1. The first signal is logged and *requested*: the runner takes no new file.
2. The file in progress may finish for ``settings.shutdown_grace_seconds``; after that (or at a
   second signal) `Interrupted` is raised where the ingest is, its transaction rolls back and
   the runner puts the file back in the inbox with its received time. Once a file has started
   its commit (`Stop.committing`) it is never interrupted: it finishes and is filed away.
3. Every claimed file not yet started goes back to the inbox with its received time, and the
   process exits non-zero (128 + the signal's number, as a shell reports a signal).

SIGKILL cannot be caught; recovery (``datadir.claims.recover``) covers it as before.

`Interrupted` derives from `KeyboardInterrupt`, not `Exception`, so that no ``except
Exception`` on the way takes it for a bug; psycopg, seeing one during a query, cancels the query
on the server before re-raising, so the rollback does not wait for the statement to end.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)
log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """Raised in the file in progress when the grace after a stop signal has run out."""

    def __init__(self, signum: int, started: bool = True):
        super().__init__(signum)
        self.signum, self.started = signum, started

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        if not self.started:
            return f"not started: the run was stopped by {name}"
        return f"interrupted by {name}: its transaction was rolled back"


class Stopped(RuntimeError):
    """A run ended early because of a stop signal (what an Airflow task fails with)."""


class Stop:
    """A run's stop request: set by a signal while `handling` is active, read by the runner.

    A `Stop` that never handles signals is never requested: code that takes one works
    unchanged where no handler is installed (tests, a library call, a thread).
    """

    def __init__(self, grace_seconds: float = 0, say: Callable[[str], None] | None = None):
        self.grace_seconds = grace_seconds
        self.signum: int | None = None
        self._say = say or log.warning
        # Reentrant: the handler runs in the main thread, maybe while it holds the lock.
        self._lock = threading.RLock()
        self._in_file = False  # inside `interruptible`, before `committing`
        self._raised = False
        self._timer: threading.Timer | None = None
        self._installed = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """What the process exits with after a stop: 128 + the signal's number."""
        return 128 + int(self.signum or 0)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "no signal"

    def say(self, message: str) -> None:
        self._say(message)

    @contextmanager
    def handling(self, say: Callable[[str], None] | None = None) -> Iterator[Stop]:
        """Handle SIGTERM and SIGINT for the block (the main thread only: elsewhere Python
        cannot install handlers, and the block runs without them); the previous handlers come
        back at the end. ``say`` tells a person what a signal does (default: the log)."""
        if say is not None:
            self._say = say
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, self._on_signal)
        self._installed = True
        try:
            yield self
        finally:
            with self._lock:
                self._installed = False
                self._cancel_timer()
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """The span of one file's ingest: after the grace, `Interrupted` may be raised in it
        (before `committing`). Entered after a stop was requested, it raises at once: a file
        is not started once the run is stopping."""
        try:
            with self._lock:
                if self.requested:
                    raise Interrupted(int(self.signum or signal.SIGTERM), started=False)
                self._in_file, self._raised = True, False
            yield
        finally:
            with self._lock:
                self._in_file = False
                self._cancel_timer()

    def committing(self) -> None:
        """From here on the file in progress finishes: its commit is under way, and a rollback
        now could leave the warehouse and the data directory telling different stories."""
        with self._lock:
            self._in_file = False
            self._cancel_timer()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            first = self.signum is None
            if first:
                self.signum = signum
            interrupt_now = self._in_file and not self._raised
            if first and interrupt_now and self.grace_seconds > 0:
                interrupt_now = False
                self._start_timer(signum)
            if interrupt_now:
                self._raised = True
                self._cancel_timer()
            in_file = self._in_file
        if first:
            if not in_file:
                now = "no file is being applied"
            elif interrupt_now:
                now = "the file in progress is rolled back"
            else:
                now = (
                    f"the file in progress has {self.grace_seconds:g} s to finish, then it is "
                    "rolled back"
                )
            self.say(
                f"received {signal.Signals(signum).name}: stopping. Taking no new files; {now}; "
                "every claimed file not started goes back to the inbox with its received time"
            )
        if interrupt_now:
            raise Interrupted(signum)

    def _start_timer(self, signum: int) -> None:
        """After the grace, deliver the signal again to the main thread: a real signal, so a
        blocking wait (a query, a lock) is interrupted too, and the handler raises."""
        main = threading.main_thread().ident

        def expire() -> None:
            with self._lock:
                if self._timer is None or not self._installed or not self._in_file:
                    return
                self._timer = None
                signal.pthread_kill(int(main or 0), signum)

        self._timer = threading.Timer(self.grace_seconds, expire)
        self._timer.daemon = True
        self._timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
