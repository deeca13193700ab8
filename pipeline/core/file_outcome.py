"""A file's fate as a whole: which state it ends in, what its reports are called, and where the
file itself goes, decided from facts, with no I/O.

The ingest and the runner gather the facts (the file's size, whether its offer source is
configured, whether the ledger holds these bytes already, what went wrong) and carry out the
answer; every rule of the file-level state machine is here, so adding a state is one edit here
plus the I/O that carries it out. The states are the words of ``vocabulary``:

========================  =========================================  ==========================
state                     when                                       the file goes
========================  =========================================  ==========================
``quarantined``           refused before reading (too large,         quarantine, with the reason
                          unknown offer source, not a regular
                          file), unreadable as a whole, or a bug
``duplicate_file``        the same bytes were applied before for     archive
                          this offer source and kind, not forced
``dry_run``               a rehearsal: everything ran, rolled back   back to the inbox, received
                          (in a dry run, a duplicate goes back too)  anew next time
``applied``               otherwise                                  archive
``failed``                a failure that will pass (warehouse        back to the inbox, keeping
                          down, disk full)                           its received time
``taken_over``            an Airflow task's claim that another run   (already filed by that run)
                          recovered and finished
========================  =========================================  ==========================
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from pipeline.core.vocabulary import (
    APPLIED,
    DRY_RUN,
    DUPLICATE_FILE,
    FAILED,
    QUARANTINED,
)

# Where a claimed file goes once its state is known.
ARCHIVE = "archive"
QUARANTINE = "quarantine"
RETURN = "return"  # back to the inbox, keeping its received time (a retry gives the same result)
RETURN_UNPINNED = "return_unpinned"  # back to the inbox as if never claimed (a dry run's look)

DUPLICATE_DETAIL = (
    "the same bytes were already applied for this offer source and kind; nothing changed "
    "(a replay with force re-applies)"
)
TAKEN_OVER_DETAIL = "another run recovered this claim and processed the file"
INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class Refusal:
    """A whole-file reason to quarantine: a reason code of the catalogue and the detail."""

    code: str
    detail: str

    @property
    def ledger_detail(self) -> str:
        """How the ledger keeps it: ``<reason code>: <detail>`` (read back by ``refusal_of``)."""
        return f"{self.code}: {self.detail}"


def refused_unread(
    size: int, max_file_bytes: int, offer_source: str, configured: Collection[str]
) -> Refusal | None:
    """Why a file is quarantined before a byte of it is read, or None.

    Too large comes first: such a file is never read, not even hashed.
    """
    if size > max_file_bytes:
        return Refusal(
            "file_too_large",
            f"the file has {size:,} bytes; the limit (settings.max_file_bytes) is "
            f"{max_file_bytes:,}",
        )
    if offer_source not in configured:
        return Refusal(
            "unknown_offer_source",
            f"the offer source {offer_source!r} is not in the configuration (configured: "
            f"{', '.join(sorted(configured)) or 'none'})",
        )
    return None


def refused_claim(
    offer_source: str | None, odd_entry: str | None, configured: Collection[str]
) -> Refusal | None:
    """Why a claimed inbox entry is quarantined before it is opened, or None: it is not a
    regular file (``odd_entry`` says what it is), or it lies outside every offer source's
    folder."""
    if odd_entry:
        return Refusal("unknown_offer_source", odd_entry)
    if offer_source is None:
        return Refusal(
            "unknown_offer_source",
            "not inside a configured offer source's inbox folder "
            f"(configured: {', '.join(sorted(configured))})",
        )
    return None


def refusal_of(ledger_detail: str | None, known_codes: Collection[str]) -> Refusal:
    """The refusal a quarantined ledger row records (see ``Refusal.ledger_detail``)."""
    code, _, detail = (ledger_detail or "").partition(": ")
    return Refusal(code if code in known_codes else "invalid_file", detail)


def state_after_ledger_check(applied_before: int, force: bool, dry_run: bool) -> str:
    """The state a readable file of a configured offer source heads for."""
    if applied_before and not force:
        return DUPLICATE_FILE
    return DRY_RUN if dry_run else APPLIED


def report_tag(state: str, result_id: int | str, names_taken: bool = False) -> str | None:
    """The tag of a result's own report and summary names, or None for the file's own names.

    An application keeps the plain names unless another result of the same bytes, name and day
    holds them (a forced re-apply); every other result gets names of its own, so it never writes
    over the applied file's reports.
    """
    if state == APPLIED:
        return f"applied-{result_id}" if names_taken else None
    tags = {DUPLICATE_FILE: "duplicate", DRY_RUN: "dry-run", QUARANTINED: "quarantined"}
    return f"{tags[state]}-{result_id}"


def disposition(state: str, dry_run: bool = False) -> str:
    """Where the claimed file goes once its result is known.

    A dry run's file goes back to the inbox for the real run whatever the rehearsal found,
    unless it cannot be read at all (then the real run could not read it either).
    """
    if state == QUARANTINED:
        return QUARANTINE
    if dry_run or state == DRY_RUN:
        return RETURN_UNPINNED
    return {APPLIED: ARCHIVE, DUPLICATE_FILE: ARCHIVE, FAILED: RETURN}[state]


def failure_state(transient: bool) -> str:
    """A failure that will pass (the warehouse is down, the disk full) is ``failed`` and the
    file goes back; anything else is a bug, and the file is kept safe in quarantine."""
    return FAILED if transient else QUARANTINED


def exit_code(states: Collection[str]) -> int:
    """0 when every file was processed (rows may be rejected), 1 if any was quarantined or
    failed."""
    return 1 if any(s in (QUARANTINED, FAILED) for s in states) else 0
