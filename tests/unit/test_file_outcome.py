"""A file's fate from facts (core.file_outcome): every rule of the file-level state machine,
by hand, with no file and no database."""

from __future__ import annotations

import pytest

from pipeline.core import file_outcome as fate
from pipeline.core.reasons import CATALOGUE

SOURCES = ("clickbank", "maxbounty")


def test_too_large_wins_over_an_unknown_offer_source():
    refusal = fate.refused_unread(2_000, 1_000, "nosuch", SOURCES)
    assert refusal.code == "file_too_large"
    assert refusal.detail == (
        "the file has 2,000 bytes; the limit (settings.max_file_bytes) is 1,000"
    )


def test_an_unknown_offer_source_names_the_configured_ones():
    refusal = fate.refused_unread(10, 1_000, "nosuch", SOURCES)
    assert (refusal.code, refusal.detail) == (
        "unknown_offer_source",
        "the offer source 'nosuch' is not in the configuration (configured: clickbank, maxbounty)",
    )
    assert fate.refused_unread(10, 1_000, "x", ()).detail.endswith("(configured: none)")


def test_a_file_at_the_limit_of_a_configured_source_is_read():
    assert fate.refused_unread(1_000, 1_000, "maxbounty", SOURCES) is None


def test_a_claimed_link_is_refused_before_its_folder_is_looked_at():
    odd = "a symbolic link; links in the inbox are never followed"
    assert fate.refused_claim(None, odd, SOURCES) == fate.Refusal("unknown_offer_source", odd)
    outside = fate.refused_claim(None, None, SOURCES)
    assert outside.code == "unknown_offer_source"
    assert outside.detail == (
        "not inside a configured offer source's inbox folder (configured: clickbank, maxbounty)"
    )
    assert fate.refused_claim("maxbounty", None, SOURCES) is None


@pytest.mark.parametrize(
    ("applied_before", "force", "dry_run", "state"),
    [
        (0, False, False, "applied"),
        (0, False, True, "dry_run"),
        (0, True, False, "applied"),
        (1, False, False, "duplicate_file"),
        (1, False, True, "duplicate_file"),  # a dry run of applied bytes says so
        (2, True, False, "applied"),  # forced: a replay re-applies
        (1, True, True, "dry_run"),
    ],
)
def test_the_state_after_the_ledger_check(applied_before, force, dry_run, state):
    assert fate.state_after_ledger_check(applied_before, force, dry_run) == state


def test_report_tags_keep_every_result_off_the_applied_files_names():
    assert fate.report_tag("applied", 7) is None
    assert fate.report_tag("applied", 7, names_taken=True) == "applied-7"
    assert fate.report_tag("duplicate_file", 8) == "duplicate-8"
    assert fate.report_tag("dry_run", 9) == "dry-run-9"
    assert fate.report_tag("quarantined", "ab12") == "quarantined-ab12"


@pytest.mark.parametrize(
    ("state", "dry_run", "where"),
    [
        ("applied", False, "archive"),
        ("duplicate_file", False, "archive"),
        ("quarantined", False, "quarantine"),
        ("quarantined", True, "quarantine"),  # unreadable is unreadable, rehearsal or not
        ("dry_run", True, "return_unpinned"),
        ("duplicate_file", True, "return_unpinned"),  # the real run still has to see it
        ("failed", False, "return"),
    ],
)
def test_where_the_file_goes(state, dry_run, where):
    assert fate.disposition(state, dry_run) == where


def test_a_failure_that_will_pass_goes_back_and_a_bug_is_quarantined():
    assert fate.failure_state(transient=True) == "failed"
    assert fate.failure_state(transient=False) == "quarantined"


def test_the_ledger_detail_of_a_quarantine_reads_back():
    refusal = fate.Refusal("missing_required_column", "no click_id column: a, b")
    assert refusal.ledger_detail == "missing_required_column: no click_id column: a, b"
    assert fate.refusal_of(refusal.ledger_detail, CATALOGUE) == refusal
    # A code that is not in the catalogue (an older release's) is filed as invalid_file.
    assert fate.refusal_of("gone_code: x: y", CATALOGUE) == fate.Refusal("invalid_file", "x: y")
    assert fate.refusal_of(None, CATALOGUE) == fate.Refusal("invalid_file", "")


@pytest.mark.parametrize(
    ("states", "code"),
    [
        ([], 0),
        (["applied", "dry_run", "duplicate_file"], 0),
        (["applied", "quarantined"], 1),
        (["failed"], 1),
        (["taken_over"], 0),
    ],
)
def test_exit_code(states, code):
    assert fate.exit_code(states) == code


@pytest.mark.parametrize(
    ("states", "all_rows_rejected", "code"),
    [
        (["applied"], True, 1),  # a file whose every data line was rejected
        (["applied", "dry_run"], False, 0),
        (["quarantined"], False, 1),
    ],
)
def test_exit_code_sees_a_file_with_every_data_line_rejected(states, all_rows_rejected, code):
    assert fate.exit_code(states, all_rows_rejected) == code


@pytest.mark.parametrize(
    ("state", "data_lines", "rejected", "expected"),
    [
        ("applied", 3, 3, True),
        ("dry_run", 1, 1, True),
        ("applied", 3, 2, False),
        ("applied", 0, 0, False),  # no data line: nothing was rejected
        ("duplicate_file", 0, 0, False),
        ("quarantined", 2, 2, False),  # not read as rows: its reason says why
        ("failed", 1, 1, False),
    ],
)
def test_all_rows_rejected(state, data_lines, rejected, expected):
    assert fate.all_rows_rejected(state, data_lines, rejected) is expected


FORCE = (
    "a re-send under another mode needs --force (conversions ingest --force) or force (the "
    "replay DAG's param)"
)


def test_a_duplicate_under_the_same_mode_keeps_the_old_words():
    for mode in (None, "edit"):
        assert fate.duplicate_detail(mode, mode) == fate.DUPLICATE_DETAIL
    assert fate.DUPLICATE_DETAIL == (
        "the same bytes were already applied for this offer source and kind; nothing changed "
        "(a replay with force re-applies)"
    )


def test_a_duplicate_under_another_mode_says_force_re_applies_it():
    assert fate.FORCE_FOR_ANOTHER_MODE == FORCE
    assert fate.duplicate_detail(None, "edit") == (
        "the same bytes were already applied for this offer source and kind under the configured "
        f"modes (no mode override), and this file asks for the mode edit; nothing changed: {FORCE}"
    )
    assert fate.duplicate_detail("increment_payout", None) == (
        "the same bytes were already applied for this offer source and kind under the mode "
        "increment_payout, and this file asks for the configured modes (no mode override); "
        f"nothing changed: {FORCE}"
    )
    assert fate.duplicate_detail("edit", "ignore").endswith(FORCE)
    assert "already applied" in fate.duplicate_detail("edit", "ignore")


MODE_FOLDERS = (
    "inbox/maxbounty/ reads files directly in it, in status/ (status files) and in one folder "
    "per duplicate mode (create_new/, new_or_repeated/, ignore/, edit/, increment_payout/, "
    "ignore_by_event_id/)"
)


@pytest.mark.parametrize(
    ("relative", "detail"),
    [
        ("maxbounty/edt/a.csv", f"edt/ is not a mode folder (did you mean edit/?): {MODE_FOLDERS}"),
        (
            "maxbounty/Edit/a.csv",
            f"Edit/ is not a mode folder (did you mean edit/?): {MODE_FOLDERS}",
        ),
        (
            "maxbounty/increment/a.csv",
            f"increment/ is not a mode folder (did you mean increment_payout/?): {MODE_FOLDERS}",
        ),
        (
            "maxbounty/stats/a.csv",
            f"stats/ is not a mode folder (did you mean status/?): {MODE_FOLDERS}",
        ),
        ("maxbounty/2026-07/a.csv", f"2026-07/ is not a mode folder: {MODE_FOLDERS}"),
        ("maxbounty/edit/deeper/a.csv", f"edit/deeper/ is nested too deep: {MODE_FOLDERS}"),
    ],
)
def test_a_file_in_an_unread_sub_folder_is_told_which_folders_are_read(relative, detail):
    refusal = fate.refused_claim(None, None, SOURCES, relative)
    assert refusal == fate.Refusal("unknown_offer_source", detail)


def test_a_file_outside_every_offer_sources_folder_keeps_the_old_words():
    outside = (
        "not inside a configured offer source's inbox folder (configured: clickbank, maxbounty)"
    )
    for relative in ("root.csv", "nosuch/a.csv", "nosuch/edit/a.csv", None):
        assert fate.refused_claim(None, None, SOURCES, relative).detail == outside
    link = "a symbolic link; links in the inbox are never followed"
    assert fate.refused_claim(None, link, SOURCES, "maxbounty/edt/a.csv").detail == link
