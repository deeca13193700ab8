"""The domain's words, each defined once: every other module imports them from here.

Open this file first to find a rule: a mode, status, kind, time policy, row outcome or file state
named here is spelt the same in the config, the warehouse, the reports and the README. The
behaviour behind each word lives in the module named beside it.
"""

from __future__ import annotations

import re

# What a data line does in the merge (core/duplicates.py): its *action*. An action that changes a
# conversion is also the `conversion_history.action` it records; each is counted as its outcome.
INSERT = "insert"
EDIT = "edit"
INCREMENT = "increment"
STATUS_UPDATE = "status"  # a row of a status update file (kind "status")
IGNORE = "ignore"
REJECT = "reject"
OUTCOME_OF = {
    INSERT: "inserted",
    EDIT: "updated",
    INCREMENT: "incremented",
    STATUS_UPDATE: "status_updated",
    IGNORE: "ignored_duplicate",
    REJECT: "rejected",
}
# Every data line ends in exactly one of these (the accounting invariant, core/duplicates.py).
# Stored in the ledger's counts and the reports: the spelling is a contract.
OUTCOMES = tuple(OUTCOME_OF.values())
HISTORY_ACTIONS = (INSERT, EDIT, INCREMENT, STATUS_UPDATE)

# Duplicate postback modes (README "Duplicate postback modes"), each with what a row does when
# its key already has a conversion (in the warehouse or from an earlier row of the file). The first
# row of a new key inserts under every mode. The mode comes from the run's override, else the
# conversion type's, else the offer source's (`OfferSource.modes`).
NEW_OR_REPEATED = "new_or_repeated"  # its inserts are marked new or repeated (duplicate_status)
IGNORE_BY_EVENT_ID = "ignore_by_event_id"  # the event id joins the duplicate key and is required
LATER_ROW_ACTION = {
    "create_new": INSERT,
    NEW_OR_REPEATED: INSERT,
    "ignore": IGNORE,
    "edit": EDIT,
    "increment_payout": INCREMENT,
    IGNORE_BY_EVENT_ID: IGNORE,
}
# So `increment_payout` rows of a known key take the action INCREMENT, which the history records
# as "increment" and the outcomes count as "incremented"; `edit` rows: EDIT, "edit", "updated".
MODES = tuple(LATER_ROW_ACTION)
# Modes in which every row needs a payout: each row inserts, or adds its payout.
PAYOUT_MODES = tuple(m for m, action in LATER_ROW_ACTION.items() if action in (INSERT, INCREMENT))

# A conversion's `duplicate_status`: new or repeated under new_or_repeated, unknown otherwise.
NEW, REPEATED, UNKNOWN = "new", "repeated", "unknown"
DUPLICATE_STATUSES = (NEW, REPEATED, UNKNOWN)

# Conversion statuses; the offer source's `default_status` is one of them.
STATUSES = ("approved", "pending", "declined", "other")
# What a file holds: conversion uploads (inbox/<source>/) or status updates (.../status/).
KINDS = ("conversions", "status")
# Offer source names are also inbox folder names.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# How times without an offset are read (core/timezones.py), and the DST policies: `file_times`
# is one of these words or an IANA zone name (a network that exports in its own zone).
FILE_TIMES = ("account", "utc")
DECIMAL_SEPARATORS = (".", ",")  # `decimal_separator`: how an offer source writes payouts
NONEXISTENT_POLICIES = ("reject", "shift_forward")  # a wall time inside a DST gap
AMBIGUOUS_POLICIES = ("reject", "earliest", "latest")  # a wall time inside a DST overlap

# What happens to a file as a whole (core/file_outcome.py decides; the ledger records it).
APPLIED = "applied"
DRY_RUN = "dry_run"
QUARANTINED = "quarantined"
DUPLICATE_FILE = "duplicate_file"
FAILED = "failed"  # a failure that will pass: the file went back to the inbox
TAKEN_OVER = "taken_over"  # an Airflow task whose claim another run recovered and processed
PROCESSING = "processing"  # a ledger row inside the file's open transaction, never committed so
# The states a ledger row can end in, and all states a result can report.
LEDGER_STATES = (APPLIED, DRY_RUN, QUARANTINED, DUPLICATE_FILE)
FILE_STATES = (*LEDGER_STATES, FAILED, TAKEN_OVER)

# Upload columns, as canonical field names (headers are mapped to these by the reader).
CONVERSION_COLUMNS = (
    "click_id",
    "payout",
    "conversion_time",
    "conversion_type",
    "status",
    "event_id",
    "currency",
)
STATUS_COLUMNS = ("click_id", "status", "conversion_type", "event_id")
KIND_COLUMNS = {"conversions": CONVERSION_COLUMNS, "status": STATUS_COLUMNS}
REQUIRED_COLUMNS = {"conversions": ("click_id", "payout"), "status": ("click_id", "status")}
# Written by our rejection reports; silently ignored on input so a fixed report can be re-uploaded.
# `original_line`: in the report of a re-dropped report, the first file's line of each row.
REPORT_COLUMNS = ("line", "original_line", "reason_code", "reason")

# A conversion's fields that a later row may change (edit, increment, status update), in the
# order the history table records them as old_<field>/new_<field>.
MUTABLE_FIELDS = ("payout", "status", "converted_at", "currency", "event_id")
