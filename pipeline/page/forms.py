"""What a person types into the page, turned into the CSV files the engine reads.

The seed's "Add conversions" pop-up takes click ids and payouts, one per line, and its "Update
status" takes click ids and a status. Both become an ordinary file in the offer source's inbox,
so they are validated, recorded and reported like any upload: this module only splits lines
into cells and writes them with ``csv.writer`` (quoted as needed). It judges nothing about the
values; the engine does, with its reason codes. A line with more cells than the form has
columns is refused here, naming the line, because there is no column to put the rest in.
"""

from __future__ import annotations

import csv
import io

ADD_COLUMNS = ("click_id", "payout", "conversion_time", "conversion_type", "status")
STATUS_COLUMNS = ("click_id", "status")
MAX_LINES = 10_000


class FormError(ValueError):
    """What the person typed cannot become a file; the message names the line."""


def _cells(line: str) -> list[str]:
    """A pasted line's cells: tab-separated (a spreadsheet's copy), else comma-separated."""
    return [c.strip() for c in (line.split("\t") if "\t" in line else next(csv.reader([line])))]


def _lines(text: str) -> list[tuple[int, str]]:
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise FormError("nothing to send: type at least one line")
    if len(lines) > MAX_LINES:
        raise FormError(f"{len(lines)} lines is more than {MAX_LINES}: upload a file instead")
    return lines


def added_conversions(text: str) -> bytes:
    """``click_id, payout[, time[, type[, status]]]`` per line -> a conversions CSV file."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(ADD_COLUMNS)
    for number, line in _lines(text):
        cells = _cells(line)
        if len(cells) > len(ADD_COLUMNS):
            raise FormError(
                f"line {number} has {len(cells)} values; at most {len(ADD_COLUMNS)}: "
                f"{', '.join(ADD_COLUMNS)}"
            )
        writer.writerow(cells + [""] * (len(ADD_COLUMNS) - len(cells)))
    return out.getvalue().encode("utf-8")


def status_updates(text: str, status: str) -> bytes:
    """One click id per line, all given ``status`` -> a status CSV file."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(STATUS_COLUMNS)
    for number, line in _lines(text):
        cells = _cells(line)
        if len(cells) != 1:
            raise FormError(f"line {number} has {len(cells)} values; write one click id a line")
        writer.writerow([cells[0], status])
    return out.getvalue().encode("utf-8")
