"""`pipeline.shutdown.Stop` with real signals sent to this process (pytest runs tests in the
main thread, where Python handles signals). Every wait is bounded: a failure ends in seconds."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from pipeline.shutdown import Interrupted, Stop

BOUND_S = 5.0  # no test waits longer for a signal's effect


def _wait_for_interrupt(bound: float = BOUND_S) -> float:
    """Sleep in small steps until `Interrupted` arrives; the seconds it took (fails past bound)."""
    started = time.monotonic()
    while time.monotonic() - started < bound:
        time.sleep(0.01)
    raise AssertionError(f"no Interrupted within {bound} s")


def test_a_stop_that_handles_no_signal_is_never_requested() -> None:
    stop = Stop()
    with stop.interruptible():
        stop.committing()
    assert not stop.requested
    assert stop.exit_code == 128


def test_a_signal_between_files_is_recorded_and_the_handlers_come_back() -> None:
    said: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    stop = Stop(grace_seconds=3)
    with stop.handling(said.append):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs in this thread at the next bytecode
        assert stop.requested and stop.name == "SIGTERM"
        with pytest.raises(Interrupted) as caught, stop.interruptible():
            pass  # a file is not started once the run is stopping
    assert not caught.value.started
    assert "not started" in str(caught.value)
    assert stop.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before
    [message] = said
    assert "received SIGTERM: stopping" in message and "no file is being applied" in message


def test_with_no_grace_the_file_in_progress_is_interrupted_at_once() -> None:
    stop = Stop(grace_seconds=0, say=lambda _: None)
    with stop.handling(), pytest.raises(Interrupted) as caught, stop.interruptible():
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for_interrupt(1.0)
    assert caught.value.started and caught.value.signum == signal.SIGINT
    assert stop.exit_code == 130


def test_after_the_grace_the_file_in_progress_is_interrupted_even_in_a_blocking_wait() -> None:
    stop = Stop(grace_seconds=0.3, say=lambda _: None)
    event = threading.Event()
    with stop.handling(), pytest.raises(Interrupted), stop.interruptible():
        started = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # within the grace: not interrupted yet
        assert time.monotonic() - started >= 0.1
        event.wait(BOUND_S)  # a blocking wait, like a query's or a lock's
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < BOUND_S - 1, elapsed


def test_a_second_signal_interrupts_at_once_whatever_the_grace() -> None:
    stop = Stop(grace_seconds=60, say=lambda _: None)
    with stop.handling(), pytest.raises(Interrupted), stop.interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        started = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for_interrupt()
    assert time.monotonic() - started < 1


def test_a_file_that_started_its_commit_is_never_interrupted() -> None:
    stop = Stop(grace_seconds=0.1, say=lambda _: None)
    with stop.handling(), stop.interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.02)
        stop.committing()
        time.sleep(0.4)  # past the grace: its timer was cancelled
        os.kill(os.getpid(), signal.SIGTERM)  # and a second signal is only noted
        time.sleep(0.05)
    assert stop.requested


def test_the_grace_timer_does_not_outlive_the_file() -> None:
    stop = Stop(grace_seconds=0.2, say=lambda _: None)
    with stop.handling():
        with stop.interruptible():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.02)
        time.sleep(0.4)  # the file ended within the grace: nothing is raised afterwards
    assert stop.requested


def test_outside_the_main_thread_no_handler_is_installed() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def body() -> None:
        with Stop().handling() as stop:
            seen.append((signal.getsignal(signal.SIGTERM), stop.requested))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(BOUND_S)
    assert seen == [(before, False)]
