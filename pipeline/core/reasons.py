"""The catalogue of reason codes: why a row or a whole file was not applied, and how to fix it.

Codes are a public, stable contract: reports, the `rejected_rows` table and users' own scripts key
on them. Add codes freely; never rename or reuse one. The README's catalogue is generated from
this table (`python -m pipeline.core.reasons`), so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.model import DEFAULT_FUTURE_TOLERANCE_SECONDS


@dataclass(frozen=True)
class Reason:
    code: str
    scope: str  # "row" or "file"
    message: str
    hint: str


_ROW = [
    (
        "malformed_row",
        "the row has a different number of cells than the header",
        "check for an unquoted delimiter inside a value, or a missing/extra delimiter",
    ),
    ("missing_click_id", "click_id is empty", "fill in the tracker's click id"),
    (
        "invalid_click_id",
        "click_id has characters other than A-Za-z0-9._~- or is over 128 "
        "characters, or does not match the offer source's click_id_pattern",
        "copy the click id exactly as the tracker shows it",
    ),
    (
        "click_id_mangled_by_spreadsheet",
        "click_id looks like a number a spreadsheet rewrote (e.g. 6.21E+23)",
        "re-export the file with the click_id column formatted as text",
    ),
    (
        "missing_payout",
        "payout is empty but this row creates a conversion or adds to its payout",
        "fill in the payout (e.g. 12.50)",
    ),
    (
        "invalid_payout",
        "payout is not a plain decimal number with '.' and at most 6 decimals",
        "write the payout like 12.50: no currency sign, thousands separator or decimal comma",
    ),
    (
        "negative_payout",
        "payout is negative and the offer source does not allow negative payouts",
        "use a positive payout, or set allow_negative_payout = true for this offer source",
    ),
    (
        "payout_out_of_range",
        "adding this row's payout would take the conversion's payout past 12 digits "
        "(999999999999.999999 either way); the conversion keeps its payout",
        "check the payout and its unit (cents instead of dollars?)",
    ),
    (
        "payout_decimal_comma",
        "payout is written with a decimal comma (12,50 or 1.234,56) but the offer source "
        "reads '.' as the decimal point",
        'set decimal_separator = "," for this offer source, or write the payout like 12.50',
    ),
    (
        "unquoted_decimal_comma",
        "the row has one cell more than the header because a payout with a decimal comma "
        "was not quoted (12,50 split into 12 and 50)",
        'quote the payout ("12,50"), or export with ";" as the delimiter',
    ),
    (
        "invalid_time",
        "conversion_time is not YYYY-MM-DD HH:MM[:SS[.ffffff]][Z|+HH:MM|+HHMM], Unix epoch "
        "seconds (10 digits) or milliseconds (13 digits), or the offer source's time_format",
        "write the time like 2026-03-08 14:00:00; day-first or month-first dates are never guessed",
    ),
    (
        "time_reformatted_by_spreadsheet",
        "conversion_time looks like a time a spreadsheet reformatted on save (11/3/2026 8:30): "
        "day and month cannot be told apart",
        "drop the original time again as YYYY-MM-DD HH:MM:SS; format the column as text before "
        "saving (or import it as text), so the spreadsheet keeps it as written",
    ),
    (
        "nonexistent_local_time",
        "conversion_time falls in the account's daylight-saving gap (the clock skipped that hour)",
        'add the UTC offset (e.g. +01:00) or set nonexistent_times = "shift_forward"',
    ),
    (
        "ambiguous_local_time",
        "conversion_time happens twice in the account's time zone (the clock fell back)",
        'add the UTC offset (e.g. -04:00) or set ambiguous_times = "earliest" or "latest"',
    ),
    (
        "time_in_future",
        "conversion_time is later than the file's received time plus the allowed tolerance"
        f" (settings.future_tolerance_seconds, {DEFAULT_FUTURE_TOLERANCE_SECONDS} seconds"
        " by default)",
        "check the time zone of the file (file_times) and the date",
    ),
    (
        "time_out_of_range",
        "conversion_time is a well-formed time outside the years 1970 to 2200",
        "check the year; a spreadsheet may have written a placeholder such as 9999-12-31",
    ),
    (
        "invalid_status",
        "status is not approved, pending, declined or other, nor one of their aliases "
        "(approve, accepted, confirmed; hold, on hold, waiting; decline, rejected, reject, "
        "denied, chargeback, reversed) or the offer source's status_aliases",
        "use one of approved, pending, declined, other (any case), or map the network's word "
        "in status_aliases (only in an upload file may it be empty: the offer source's "
        "default_status)",
    ),
    (
        "missing_status",
        "status is empty in a status update file",
        "fill in approved, pending, declined or other",
    ),
    (
        "unknown_conversion_type",
        "conversion_type is not one of the offer source's allowed_conversion_types",
        "use an allowed type (names are case-sensitive) or leave it empty for the default",
    ),
    (
        "invalid_conversion_type",
        "conversion_type is longer than 64 characters or has control characters",
        "shorten the type name",
    ),
    (
        "invalid_currency",
        "currency is not an ISO 4217 code",
        "use a code like USD or EUR, or leave it empty for the account's currency",
    ),
    (
        "missing_event_id",
        "event_id is empty but the duplicate mode is ignore_by_event_id",
        "fill in the network's order/transaction id",
    ),
    (
        "invalid_event_id",
        "event_id is longer than 255 characters or has control characters",
        "copy the order/transaction id exactly",
    ),
    (
        "unknown_conversion",
        "no conversion matches this click_id (and type/event_id)",
        "check the click id; status files can only change conversions already in the warehouse",
    ),
    (
        "ambiguous_conversion",
        "several conversions match this click_id",
        "add conversion_type and/or event_id to pick exactly one conversion",
    ),
]

_FILE = [
    (
        "unreadable_file",
        "the file is not CSV in UTF-8 (with or without BOM) or UTF-16 with BOM, or not in "
        "the offer source's encoding",
        'save the file as CSV UTF-8, or set encoding = "cp1252" (or the file\'s encoding) for '
        "this offer source",
    ),
    (
        "missing_required_column",
        "a required column is missing from the header",
        "add the column (see `conversions template`)",
    ),
    (
        "unmapped_column",
        "a header names a field of ours (a status, currency, payout, time or click id) that no "
        "column is mapped to: its values would be replaced by defaults",
        'map it in `columns` (field = "header"), or list it in `ignore_columns`',
    ),
    (
        "invalid_parameters_line",
        "the file's first line is a Parameters:TimeZone= line whose zone is neither an IANA "
        "time zone nor an offset like +0100 or -0500",
        "write Parameters:TimeZone=America/New_York (or -0500), as Google Ads' template does",
    ),
    (
        "duplicate_column",
        "two header cells name the same column (aliases count)",
        "remove or rename one of them",
    ),
    (
        "file_too_large",
        "the file exceeds the configured max_file_bytes",
        "split the file, or raise max_file_bytes",
    ),
    (
        "unknown_offer_source",
        "the file is not inside a configured offer source's inbox folder",
        "move it to inbox/<offer_source>/ (or inbox/<offer_source>/status/)",
    ),
    ("empty_file", "the file has no header line", "export the file again with its header"),
    (
        "line_too_long",
        "a line (the header or a record) is longer than settings.max_line_bytes, or has no "
        "line end at all; the detail names the line",
        "check that the file is CSV with line breaks, and that no quote is left open",
    ),
    (
        "too_many_columns",
        "the header has more columns than settings.max_columns",
        "remove the columns the upload does not need, or raise max_columns",
    ),
    (
        "internal_error",
        "the pipeline failed on this file (a bug); nothing was applied",
        "report it together with the quarantined file; drop it again once fixed",
    ),
    (
        "invalid_file",
        "the file cannot be processed with the current configuration",
        "read the report's detail, fix the file or the configuration, and drop it again",
    ),
]

CATALOGUE: dict[str, Reason] = {
    code: Reason(code, "row", message, hint) for code, message, hint in _ROW
} | {code: Reason(code, "file", message, hint) for code, message, hint in _FILE}


def describe(code: str) -> str:
    """One line for a report's `reason` column: what is wrong, then how to fix it."""
    reason = CATALOGUE[code]
    return f"{reason.message}; fix: {reason.hint}"


def markdown_table() -> str:
    """The catalogue as the README's table (a test keeps the README in step with it)."""
    lines = ["| code | applies to | what is wrong | how to fix it |", "|---|---|---|---|"]
    for r in CATALOGUE.values():
        message, hint = (t.replace("|", "\\|") for t in (r.message, r.hint))
        lines.append(f"| `{r.code}` | {r.scope} | {message} | {hint} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
