"""The plain-block path of `read_batches` (pyarrow) against the `csv` module's path.

The `csv` path is the definition (hand-worked tests in test_reader.py pin it); here random files
of hostile records (quotes in every place, blank and whitespace records, wrong cell counts, all
three line ends, BOMs, non-ASCII whitespace, undecodable bytes, records at the line limit,
quoted line breaks that send the rest of the file to the `csv` path) must come out of both paths
the same: the same rows and cells, line numbers, malformed records, blank count, and the same
refusal, detail and all. Reads of a few bytes at a time put block edges everywhere.
"""

from __future__ import annotations

import codecs
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import plain_block, reader
from pipeline.reader import FileRejected, read_batches, read_batches_by_csv, read_header

CELL_TEXT = st.lists(
    st.sampled_from(
        ["a", "7", " ", '"', ",", ";", "\t", "é", "\u2003", "\x1c", "\x00", "\ufeff", "'="]
    ),
    max_size=6,
).map("".join)
QUOTE = '"'
LINE_END = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def records(draw, delimiter: str) -> bytes:
    """One record's bytes: mostly ordinary, sometimes quoted, blank, short or long."""
    shape = draw(st.sampled_from(["plain", "plain", "plain", "quoted", "blank", "odd", "broken"]))
    width = 3
    if shape == "plain":
        cells = [draw(st.text(alphabet="abc19. -", max_size=8)) for _ in range(width)]
    elif shape == "quoted":
        cells = [draw(CELL_TEXT) for _ in range(width)]
        quoted = [QUOTE + c.replace(QUOTE, QUOTE * 2) + QUOTE for c in cells]
        cells = [q if draw(st.booleans()) else c for c, q in zip(cells, quoted, strict=True)]
    elif shape == "broken":  # a quoted line break, or a quote that stays open to the end
        cells = [draw(st.text(alphabet="ab", max_size=3)) for _ in range(width)]
        cells[draw(st.integers(0, width - 1))] = draw(st.sampled_from(['"x\ny"', '"x\r\n', '"']))
    elif shape == "blank":
        cells = [draw(st.sampled_from(["", " ", "\t", "\u3000", "\x1f"])) for _ in range(width)]
        cells = cells[: draw(st.integers(0, width))]
    else:
        cells = [draw(CELL_TEXT) for _ in range(draw(st.integers(0, 5)))]
    text = delimiter.join(cells) + draw(LINE_END)
    if draw(st.integers(0, 20)) == 0:
        text = "\ufeff" + text  # a BOM as data, at a record's start
    data = text.encode("utf-8")
    if draw(st.integers(0, 30)) == 0:
        data = data.replace(b"a", b"\xff", 1)  # not UTF-8
    return data


@st.composite
def files(draw) -> tuple[bytes, int, int, int]:
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    bom = draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\xef\xbb\xbf" * 2]))  # 2: re-saved
    header = delimiter.join(["click_id", "payout", "conversion_time"]) + draw(LINE_END)
    body = b"".join(draw(st.lists(records(delimiter), max_size=40)))
    if draw(st.booleans()):
        body = body.rstrip(b"\r\n")  # no line end after the last record
    limit = draw(st.sampled_from([36, 48, 4096]))  # the header is 32 bytes
    return (
        bom + header.encode() + body,
        draw(st.integers(1, 7)),  # batch size
        draw(st.integers(1, 23)),  # bytes the plain path reads at a time
        limit,
    )


def outcome(read, path: Path, batch_size: int, limit: int):
    """Everything a caller keeps: the rows with their lines, malformed records and blanks, or
    the refusal; and that every batch keeps to the batch size."""
    header = read_header(path, "conversions", max_line_bytes=limit)
    lines, rows, malformed, blank = [], [], [], 0
    try:
        for batch in read(path, header, batch_size):
            assert len(batch.lines) + len(batch.malformed) <= batch_size
            assert list(batch.cells.columns) == list(header.names)
            lines += batch.lines.tolist()
            rows += batch.cells.to_numpy().tolist()
            malformed += batch.malformed
            blank += batch.blank_lines
    except FileRejected as e:  # what was yielded before is thrown away (the docstring says so)
        return ("refused", e.code, e.detail)
    return ("read", lines, rows, malformed, blank)


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=files())
def test_plain_blocks_read_what_the_csv_module_reads(tmp_path, case):
    data, batch_size, read_bytes, limit = case
    path = tmp_path / "upload.csv"
    path.write_bytes(data)
    try:
        read_header(path, "conversions", max_line_bytes=limit)
    except FileRejected:
        return  # the header itself is refused: no records are read by either path
    expected = outcome(read_batches_by_csv, path, batch_size, limit)
    with mock.patch.object(reader, "_READ_BYTES", read_bytes):
        assert outcome(read_batches, path, batch_size, limit) == expected


def test_a_plain_file_is_read_in_plain_blocks_to_its_end(tmp_path, monkeypatch):
    """Quoted values, a malformed record and blank ones do not stop the plain path; a quoted
    line break does, from its block on, and line numbers run on across the switch."""
    blocks: list[plain_block.PlainBlock | None] = []
    split = plain_block.split

    def spy(*args, **kwargs):
        blocks.append(split(*args, **kwargs))
        return blocks[-1]

    monkeypatch.setattr(plain_block, "split", spy)
    path = tmp_path / "upload.csv"
    path.write_bytes(
        b"click_id,payout,conversion_time\n"
        b'a1,"12,50",2026-11-01\n'  # line 2: quoted, good
        b"a2,3\n"  # line 3: malformed
        b"\n"  # line 4: blank
        b" , ,\t\r\n"  # line 5: blank, right width
        b'a3,"4\n5",x\n'  # lines 6: a quoted line break, one record
        b"a4,1,y\n"  # line 7
    )
    header = read_header(path, "conversions")
    batches = list(read_batches(path, header, 3))
    assert [b is not None for b in blocks] == [True, False]  # lines 2-4 plain; 5-7 are not
    lines = np.concatenate([b.lines for b in batches]).tolist()
    assert lines == [2, 6, 7]
    rows = [r for b in batches for r in b.cells.to_numpy().tolist()]
    assert rows == [["a1", "12,50", "2026-11-01"], ["a3", "4\n5", "x"], ["a4", "1", "y"]]
    assert [m for b in batches for m in b.malformed] == [(3, ["a2", "3"])]
    assert sum(b.blank_lines for b in batches) == 2


def test_a_file_of_plain_records_never_falls_back(tmp_path, monkeypatch):
    results: list[bool] = []
    split = plain_block.split
    monkeypatch.setattr(
        plain_block, "split", lambda *a, **k: results.append((r := split(*a, **k)) is not None) or r
    )
    monkeypatch.setattr(reader, "_READ_BYTES", 50)
    rows = [f"id{i},{i}.25,2026-11-0{1 + i % 9} 10:00" for i in range(200)]
    path = tmp_path / "upload.csv"
    path.write_text("click_id,payout,conversion_time\r\n" + "\r\n".join(rows), encoding="utf-8")
    header = read_header(path, "conversions")
    batches = list(read_batches(path, header, 64))
    assert results and all(results)
    got = [r for b in batches for r in b.cells.to_numpy().tolist()]
    assert got == [r.split(",") for r in rows]
    assert np.concatenate([b.lines for b in batches]).tolist() == list(range(2, 202))


@pytest.mark.parametrize("data", [b"", b"\n", b"\r", b"a\r\nb", b"a\rb\r", b"\r\r\n\n"])
def test_line_ends_are_where_readline_splits(data):
    expected, at = [], 0
    for line in data.decode().splitlines(keepends=True):  # only \r and \n occur here
        at += len(line)
        if line.endswith(("\r", "\n")):
            expected.append(at - 1)
    assert plain_block.line_ends(data, 0, at_end=True).tolist() == expected


def test_the_whitespace_of_a_blank_record_is_pythons():
    python = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
    assert python == plain_block.PYTHON_WHITESPACE


def test_a_bom_in_a_record_where_the_csv_path_takes_over_is_data(tmp_path):
    """The `csv` path reads on from the middle of a file with a BOM: a BOM there is a cell's
    text, as it is when the `csv` module reads the file from its start."""
    path = tmp_path / "upload.csv"
    path.write_bytes(
        b"\xef\xbb\xbfclick_id,payout,conversion_time\n"
        b"a1,1,x\n"
        b"\xef\xbb\xbfa2,2,y\n"  # line 3: starts the block that is not plain
        b'a3,"3\n4",z\n'
    )
    header = read_header(path, "conversions")
    for read in (read_batches, read_batches_by_csv):
        rows = [r for b in read(path, header, 1) for r in b.cells.to_numpy().tolist()]
        assert rows == [["a1", "1", "x"], ["\ufeffa2", "2", "y"], ["a3", "3\n4", "z"]]


def test_the_reader_benchmark_finds_both_paths_read_the_same(tmp_path):
    """`benchmarks/bench_read.py` on a small generated file (its own check, not its timing)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_read.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--rows",
            "3000",
            "--reps",
            "1",
            "--file",
            str(tmp_path / "f.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "same rows, cells and lines: True" in done.stdout


def test_a_header_after_two_boms_is_skipped_whole(tmp_path):
    """A UTF-8 file saved again with a BOM starts with two; the records start after both and
    the header (found by the fuzz test: the plain path once began 3 bytes into the header)."""
    path = tmp_path / "upload.csv"
    path.write_bytes(codecs.BOM_UTF8 * 2 + b"click id,payout\n" + b"c1,2.50\n")
    header = read_header(path, "conversions")
    for read in (read_batches, read_batches_by_csv):
        [batch] = list(read(path, header, 10))
        assert (batch.lines.tolist(), batch.malformed, batch.blank_lines) == ([2], [], 0)
        assert batch.cells.to_numpy().tolist() == [["c1", "2.50"]]


def test_a_file_that_quotes_every_cell_is_left_to_the_csv_module(tmp_path, monkeypatch):
    """Quoted lines are parsed one by one; a file of them is faster by the `csv` path, and the
    rows are the same whichever reads them."""
    results: list[bool] = []
    split = plain_block.split
    monkeypatch.setattr(
        plain_block, "split", lambda *a, **k: results.append((r := split(*a, **k)) is not None) or r
    )
    rows = [[f"id{i}", f"{i},25", "2026-11-01"] for i in range(300)]
    path = tmp_path / "upload.csv"
    path.write_text(
        '"click_id","payout","conversion_time"\n'
        + "".join(",".join(f'"{c}"' for c in row) + "\n" for row in rows),
        encoding="utf-8",
    )
    header = read_header(path, "conversions")
    for read in (read_batches, read_batches_by_csv):
        assert [r for b in read(path, header, 1000) for r in b.cells.to_numpy().tolist()] == rows
    assert results == [False]  # one try, then the csv module reads the file
