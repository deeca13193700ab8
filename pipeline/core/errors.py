"""How an unexpected error is told in a result, a log line or a quarantine reason."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """``<type>: <first line of the message>``: one log line, never a traceback's text (a
    driver's multi-line message would otherwise forge lines in a task log)."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
