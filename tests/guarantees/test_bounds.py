"""Every resource bounded (issue 17, cases 3-5): wide headers, files with no line end, open quotes.

Through the real `ingest.ingest_file` on SQLite and PostgreSQL, on real files. Each case is
bounded by construction: a SIGALRM deadline stops a run that would never finish (the old code
took minutes for a wide header), and the bounds on wall time and memory are generous enough
that only unbounded or quadratic work breaks them. Memory is measured with `tracemalloc`
(every Python string the reader holds is traced) and the growth of the process's peak RSS.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import reader
from pipeline.context import Context
from pipeline.datadir import LocalDataDir
from pipeline.ingest import Upload, ingest_file
from tests.helpers import assert_accounted, make_config

RECEIVED = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
MIB = 1024 * 1024
ROW = "u{:08d},12.50,2026-01-01 10:00:00,Purchase,approved,evt{:08d},USD\n"  # 70 bytes
HEADER = "click_id,payout,conversion_time,conversion_type,status,event_id,currency\n"


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block runs past `seconds`."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: work is not bounded")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def measured(trace: bool = True) -> Iterator[dict[str, float]]:
    """Wall time, peak traced Python memory (with `trace`) and peak RSS growth of the block."""
    out: dict[str, float] = {}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - started
        if trace:
            out["traced_peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["rss_growth"] = rss_after - rss_before


def ingest(engine, tmp_path: Path, path: Path, batch_size: int | None = None, **settings: int):
    config = make_config(settings={"settle_seconds": 0, **settings})
    result = ingest_file(
        Context(config, engine, LocalDataDir(tmp_path / "data")),
        Upload(path, "maxbounty", received_at=RECEIVED, batch_size=batch_size),
    )
    assert_accounted(result, path, engine)
    return result


def write_chunks(path: Path, head: bytes, chunk: bytes, count: int, tail: bytes = b"") -> Path:
    """A large file written a chunk at a time (the test itself stays in bounded memory)."""
    with open(path, "wb") as out:
        out.write(head)
        for _ in range(count):
            out.write(chunk)
        out.write(tail)
    return path


def wide_header(width: int) -> str:
    return "click_id,payout," + ",".join(f"extra_{i}" for i in range(width - 2)) + "\n"


def test_a_100000_column_header_is_too_many_columns_before_any_row_is_read(
    engine, tmp_path: Path
) -> None:
    path = tmp_path / "wide.csv"
    row = "u1,1.00," + ",".join("x" for _ in range(99_998)) + "\n"
    path.write_text(wide_header(100_000) + row * 3 + "u2,\xff\n", encoding="utf-8")
    with deadline(120), measured() as used:
        result = ingest(engine, tmp_path, path)
    assert (result.state, result.reason_code) == ("quarantined", "too_many_columns")
    assert result.detail == (
        "the header (line 1) has 100,000 columns; the limit (settings.max_columns) is 1,000"
    )
    assert result.data_lines == 0
    assert used["seconds"] < 20, used
    assert used["traced_peak"] < 64 * MIB, used  # the header line is ~1 MB of text
    assert used["rss_growth"] < 300 * MIB, used


def test_a_10000_column_file_is_applied_in_linear_work_when_max_columns_allows_it(
    engine, tmp_path: Path
) -> None:
    """A 10,000-column file with good rows and a malformed one: the malformed row's cells reach
    the report, and nothing is built one column at a time. The batch has no row that
    normalising rejects, the case where the old code inserted 10,000 empty columns one by one
    (`_with_cells`), and the malformed row is laid out by a header walk per cell (`_malformed`).

    Not under tracemalloc (it slows pandas several times over). The bound is 60 s, not 20:
    writing the rejection report (`reports.RejectionReport.write`, neutralised column by column)
    still costs about 1.5 ms a column, ~15 s here; linear, and outside the reader and ingest."""
    width = 10_000
    extras = ",".join(f"v{i}" for i in range(width - 2))
    lines = [
        f"u1,1.00,{extras}",  # line 2: applied
        "u3,3.00,short",  # line 3: malformed_row
        f"u4,4.00,{extras}",  # line 4: applied
    ]
    path = tmp_path / "wide.csv"
    path.write_text(wide_header(width) + "\n".join(lines) + "\n", encoding="utf-8")
    with deadline(300), measured(trace=False) as used:
        result = ingest(engine, tmp_path, path, max_columns=width)
    assert result.state == "applied", result
    assert result.data_lines == 3
    assert result.outcomes["inserted"] == 2 and result.outcomes["rejected"] == 1
    assert result.reasons == {"malformed_row": 1}
    report = Path(result.report_path).read_text(encoding="utf-8-sig").splitlines()
    assert len(report) == 2  # header and the malformed row
    assert report[0].startswith("line,click_id,payout,extra_0,") and ",extra_9997," in report[0]
    assert report[1].startswith("3,u3,3.00,short" + "," * (width - 3) + ",malformed_row,")
    assert used["seconds"] < 60, used
    assert used["rss_growth"] < 300 * MIB, used


def test_a_batch_is_bounded_in_cells_whatever_the_files_width(engine, tmp_path: Path) -> None:
    """10,000 records of 1,000 two-letter cells (20 MB): a batch of `batch_size` (50,000)
    records would hold 10 million Python strings, over 600 MB; a batch holds at most
    `reader.BATCH_CELLS` cells, so the peak stays far below the 500 MB target."""
    width, rows = 1_000, 10_000
    cells = ",".join("ab" for _ in range(width - 3))
    body = "".join(f"u{i},1.00,2026-01-01 10:00:00,{cells}\n" for i in range(rows))
    header = "click_id,payout,conversion_time," + ",".join(f"e{i}" for i in range(width - 3))
    path = tmp_path / "wide-and-long.csv"
    path.write_text(header + "\n" + body, encoding="utf-8")
    del body
    config = make_config(settings={"settle_seconds": 0, "max_columns": width})
    with deadline(300), measured(trace=False) as used:
        result = ingest_file(
            Context(config, engine, LocalDataDir(tmp_path / "data")),
            Upload(path, "maxbounty", received_at=RECEIVED),
        )
    assert (result.state, result.outcomes["inserted"]) == ("applied", rows), result
    assert used["rss_growth"] < 250 * MIB, used
    assert_accounted(result, path, engine)  # after: its second reader holds the whole file


@pytest.mark.parametrize(
    ("head", "detail"),
    [
        (
            b"",
            "the header (line 1) is longer than settings.max_line_bytes (1,048,576 bytes); it"
            " has no line end within the limit",
        ),
        (
            HEADER.encode(),
            "line 2 is longer than settings.max_line_bytes (1,048,576 bytes); it has no line"
            " end within the limit",
        ),
    ],
    ids=["no-line-end-at-all", "no-line-end-after-the-header"],
)
def test_a_64_mb_file_without_a_line_end_is_line_too_long_in_bounded_memory(
    engine, tmp_path: Path, head: bytes, detail: str
) -> None:
    path = write_chunks(tmp_path / "endless.csv", head, b"click_id,payout," * 65_536, 64)
    assert path.stat().st_size >= 64 * MIB
    with deadline(120), measured() as used:
        result = ingest(engine, tmp_path, path, max_line_bytes=MIB)
    assert (result.state, result.reason_code, result.detail) == (
        "quarantined",
        "line_too_long",
        detail,
    )
    assert used["traced_peak"] < 16 * MIB, used  # the old reader held the whole 64 MB line
    assert used["rss_growth"] < 48 * MIB, used


def test_a_record_over_the_limit_in_the_middle_of_a_file_is_named_by_its_line(
    engine, tmp_path: Path
) -> None:
    """Line numbers as a spreadsheet shows them: the `sep=` line is line 1, the header line 2,
    and a record with quoted line breaks counts once, so the long record is line 503."""
    body = "".join(ROW.format(i, i).replace(",", ";") for i in range(499))  # lines 3-501
    quoted = 'u-multi;1.00;;;;"a\nb\nc";\n'  # line 502, three physical lines
    long = "u-long;1.00;;;;" + "x" * (2 * MIB) + ";\n"  # line 503
    path = tmp_path / "middle.csv"
    path.write_text(
        "sep=;\n" + HEADER.replace(",", ";") + body + quoted + long + ROW.format(1, 1),
        encoding="utf-8",
    )
    with deadline(60):
        result = ingest(engine, tmp_path, path, max_line_bytes=MIB)
    assert (result.state, result.reason_code) == ("quarantined", "line_too_long")
    assert result.detail == (
        "line 503 is longer than settings.max_line_bytes (1,048,576 bytes); it has no line end"
        " within the limit"
    )
    # Quoted line breaks count as part of the record: 1,200 lines of 1 KB in one quoted value.
    value = "".join("y" * 1023 + "\n" for _ in range(1_200))
    path.write_text(HEADER + ROW.format(1, 1) + f'u2,1.00,,,,"{value}",\n', encoding="utf-8")
    result = ingest(engine, tmp_path, path, max_line_bytes=MIB)
    assert (result.reason_code, result.detail) == (
        "line_too_long",
        "line 3 is longer than settings.max_line_bytes (1,048,576 bytes): a quoted value in it"
        " holds line breaks past the limit",
    )


def test_an_unbalanced_quote_is_named_at_the_line_where_it_opened(engine, tmp_path: Path) -> None:
    """Line 2 opens a quote that never closes; the rest of the 100,000-line file (7 MB) is past
    the default 4 MiB limit. The old reader said "near line 511769: field larger than field
    limit" for such a file, or read on to the end."""
    path = write_chunks(
        tmp_path / "open-quote.csv",
        (HEADER + '"' + ROW.format(0, 0)).encode(),
        ROW.format(1, 1).encode(),
        99_999,
    )
    with deadline(60), measured() as used:
        result = ingest(engine, tmp_path, path)
    assert (result.state, result.reason_code) == ("quarantined", "line_too_long")
    assert result.detail == (
        "unbalanced quote: the quoted field opened at line 2 never closes (it runs to the end of"
        " the file, past settings.max_line_bytes (4,194,304 bytes))"
    )
    assert used["traced_peak"] < 32 * MIB, used


def test_the_reader_alone_refuses_a_wide_header_and_an_endless_line(tmp_path: Path) -> None:
    """The same limits on `reader.read_header`, without the ingest around it."""
    wide = tmp_path / "wide.csv"
    wide.write_text(wide_header(100_000), encoding="utf-8")
    with deadline(60), pytest.raises(reader.FileRejected) as info:
        reader.read_header(wide, "conversions")
    assert info.value.code == "too_many_columns"
    endless = write_chunks(tmp_path / "endless.csv", b"", b"x" * MIB, 64)
    with measured() as used, pytest.raises(reader.FileRejected) as info:
        reader.read_header(endless, "conversions", max_line_bytes=MIB)
    assert info.value.code == "line_too_long"
    assert used["traced_peak"] < 8 * MIB, used
