"""Sender text made safe to show on a terminal or in a log, in one place.

File names, details and warnings are the sender's text: a newline in a name would forge a line of
the run's output, an escape sequence would move the cursor, a bidi override would reorder what is
shown. `printable` escapes exactly those characters and leaves all other text as it is. Pure, so
the console (the summary) and the progress lines (layer 1) use the same rule.
"""

from __future__ import annotations

import re

# C0/C1 controls (newline, ESC...), line and paragraph separators, bidi marks/overrides/isolates,
# and lone surrogates (bytes of a name that were not UTF-8).
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def printable(text: str) -> str:
    """``text`` with the characters above as escapes: ``\\n``, ``\\x1b``, ``\\u202e``, and an
    undecodable byte of a file name as ``\\xNN``."""
    return _UNPRINTABLE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if "\udc80" <= char <= "\udcff":  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")
