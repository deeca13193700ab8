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

A ``duplicate_file`` re-sent under another mode than the applied copy's (a mode folder, ``--mode``)
is still a duplicate; its detail says that only ``force`` re-applies (``duplicate_detail``). A
file that was read but had every data line rejected (``all_rows_rejected``) ends ``applied`` like
any other, and still makes the CLI exit 1 (``exit_code``).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass

from pipeline.core.vocabulary import (
    APPLIED,
    DRY_RUN,
    DUPLICATE_FILE,
    FAILED,
    MODES,
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
# Added to DUPLICATE_DETAIL's facts when the file asks for another mode than the applied copy's.
FORCE_FOR_ANOTHER_MODE = (
    "a re-send under another mode needs --force (conversions ingest --force) or force (the "
    "replay DAG's param)"
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
    offer_source: str | None,
    odd_entry: str | None,
    configured: Collection[str],
    relative: str | None = None,
) -> Refusal | None:
    """Why a claimed inbox entry is quarantined before it is opened, or None: it is not a
    regular file (``odd_entry`` says what it is), or it lies outside every offer source's
    folder. With its inbox-relative path, a file in an offer source's sub-folder that the inbox
    does not read (a misspelt mode folder) is told so, with the folders it does read."""
    if odd_entry:
        return Refusal("unknown_offer_source", odd_entry)
    if offer_source is None:
        folder = _unread_folder(relative, configured)
        if folder is not None:
            return Refusal("unknown_offer_source", folder)
        return Refusal(
            "unknown_offer_source",
            "not inside a configured offer source's inbox folder "
            f"(configured: {', '.join(sorted(configured))})",
        )
    return None


def _unread_folder(relative: str | None, configured: Collection[str]) -> str | None:
    """Why a file inside a configured offer source's folder is not read: it lies in a sub-folder
    that is neither ``status/`` nor one of the six mode folders (a misspelt mode: ``edt/``), or
    deeper; None for a file outside every offer source's folder."""
    parts = (relative or "").split("/")
    if len(parts) < 3 or parts[0] not in configured:
        return None
    source, folder = parts[0], parts[1]
    where = (
        f"inbox/{source}/ reads files directly in it, in status/ (status files) and in one "
        f"folder per duplicate mode ({', '.join(f'{m}/' for m in MODES)})"
    )
    if len(parts) > 3:
        return f"{'/'.join(parts[1:-1])}/ is nested too deep: {where}"
    close = difflib.get_close_matches(folder.lower(), (*MODES, "status"), n=1, cutoff=0.6)
    guess = f" (did you mean {close[0]}/?)" if close else ""
    return f"{folder}/ is not a mode folder{guess}: {where}"


def refusal_of(ledger_detail: str | None, known_codes: Collection[str]) -> Refusal:
    """The refusal a quarantined ledger row records (see ``Refusal.ledger_detail``)."""
    code, _, detail = (ledger_detail or "").partition(": ")
    return Refusal(code if code in known_codes else "invalid_file", detail)


def duplicate_detail(applied_mode: str | None, mode: str | None) -> str:
    """The detail of a ``duplicate_file``: ``applied_mode`` is the mode override the applied copy
    of these bytes was applied under, ``mode`` this file's (None: no override, the configured
    modes). The same mode gives ``DUPLICATE_DETAIL``; another says what a re-send under another
    mode needs (``FORCE_FOR_ANOTHER_MODE``)."""
    if applied_mode == mode:
        return DUPLICATE_DETAIL
    return (
        "the same bytes were already applied for this offer source and kind under "
        f"{_mode_words(applied_mode)}, and this file asks for {_mode_words(mode)}; nothing "
        f"changed: {FORCE_FOR_ANOTHER_MODE}"
    )


def _mode_words(mode: str | None) -> str:
    return "the configured modes (no mode override)" if mode is None else f"the mode {mode}"


def all_rows_rejected(state: str, data_lines: int, rejected: int) -> bool:
    """Whether a file was read and every one of its data lines rejected: nothing of it applied,
    though the file itself was fine (wrong columns' contents, another network's export)."""
    return state in (APPLIED, DRY_RUN) and data_lines > 0 and rejected == data_lines


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


def exit_code(states: Collection[str], all_rows_rejected: bool = False) -> int:
    """0 when every file was processed (rows may be rejected), 1 if any was quarantined or
    failed, or if ``all_rows_rejected``: a file had every data line rejected (see
    ``all_rows_rejected``)."""
    if all_rows_rejected:
        return 1
    return 1 if any(s in (QUARANTINED, FAILED) for s in states) else 0
