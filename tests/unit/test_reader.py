"""Tests for pipeline.reader: real files on disk, expectations written out by hand."""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import reader
from pipeline.core.reasons import CATALOGUE
from pipeline.reader import (
    ALIASES,
    Batch,
    FileRejected,
    Header,
    _sniff_delimiter,  # the one case no valid header shows
    read_batches,
    read_header,
)


def write(tmp_path: Path, data: bytes | str, name: str = "upload.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read_all(path: Path, kind: str = "conversions", batch_size: int = 1000) -> tuple[Header, Batch]:
    """The header and all batches concatenated into one (checks the batch invariants on the way)."""
    header = read_header(path, kind)
    batches = list(read_batches(path, header, batch_size))
    assert batches, "read_batches must yield at least one batch"
    for b in batches:
        assert len(b.lines) == len(b.cells) and b.lines.dtype == np.int64
        assert len(b.lines) + len(b.malformed) + b.blank_lines <= batch_size
        assert list(b.cells.columns) == list(header.names)
        assert isinstance(b.cells.index, pd.RangeIndex)
        assert all(b.cells[c].dtype == "str" for c in b.cells.columns)
    whole = Batch(
        lines=np.concatenate([b.lines for b in batches]),
        cells=pd.concat([b.cells for b in batches], ignore_index=True),
        malformed=[m for b in batches for m in b.malformed],
        blank_lines=sum(b.blank_lines for b in batches),
    )
    return header, whole


def rows(batch: Batch) -> list[list[str]]:
    return batch.cells.to_numpy().tolist()


def rejected(path: Path, kind: str = "conversions") -> FileRejected:
    with pytest.raises(FileRejected) as info:
        header = read_header(path, kind)
        list(read_batches(path, header, 1000))
    assert CATALOGUE[info.value.code].scope == "file"
    return info.value


# --- encodings and delimiters ---------------------------------------------------------------


def test_plain_utf8(tmp_path: Path) -> None:
    path = write(
        tmp_path, "click_id,payout,conversion_time\nabc,12.50,2026-03-08 14:00:00\nd€f,1,\n"
    )
    header, batch = read_all(path)
    assert header == Header(
        encoding="utf-8",
        delimiter=",",
        names=("click_id", "payout", "conversion_time"),
        columns={"click_id": 0, "payout": 1, "conversion_time": 2},
        unknown=(),
        header_line=1,
    )
    assert rows(batch) == [["abc", "12.50", "2026-03-08 14:00:00"], ["d€f", "1", ""]]
    assert batch.lines.tolist() == [2, 3]
    assert batch.malformed == [] and batch.blank_lines == 0


def test_excel_utf8_bom_semicolons_crlf(tmp_path: Path) -> None:
    data = codecs.BOM_UTF8 + b"click_id;payout\r\nabc;12,50\r\nxyz;3\r\n"
    header, batch = read_all(write(tmp_path, data))
    assert (header.encoding, header.delimiter) == ("utf-8-sig", ";")
    assert header.names == ("click_id", "payout")  # BOM not part of the first name
    assert rows(batch) == [["abc", "12,50"], ["xyz", "3"]]
    assert batch.lines.tolist() == [2, 3]


@pytest.mark.parametrize(
    ("bom", "codec", "encoding"),
    [
        (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"),
    ],
)
def test_utf16_with_bom(tmp_path: Path, bom: bytes, codec: str, encoding: str) -> None:
    data = bom + "click_id\tpayout\r\nklïk\t5\r\n".encode(codec)
    header, batch = read_all(write(tmp_path, data))
    assert (header.encoding, header.delimiter) == (encoding, "\t")
    assert header.names == ("click_id", "payout")
    assert rows(batch) == [["klïk", "5"]]
    assert batch.lines.tolist() == [2]


def test_tab_delimited(tmp_path: Path) -> None:
    header, batch = read_all(write(tmp_path, "click_id\tpayout\tnote\na\t1\tx, y; z\n"))
    assert header.delimiter == "\t"
    assert rows(batch) == [["a", "1", "x, y; z"]]


def test_excel_sep_line(tmp_path: Path) -> None:
    header, batch = read_all(write(tmp_path, "sep=;\r\nclick_id;payout\r\na;1\r\nb;2\r\n"))
    assert (header.delimiter, header.header_line) == (";", 2)
    assert header.names == ("click_id", "payout")
    assert batch.lines.tolist() == [3, 4]
    assert rows(batch) == [["a", "1"], ["b", "2"]]


def test_sep_line_overrides_the_count(tmp_path: Path) -> None:
    header, batch = read_all(write(tmp_path, "sep=,\nclick_id,payout,note\na,1,x;y;z\n"))
    assert header.delimiter == ","
    assert rows(batch) == [["a", "1", "x;y;z"]]


@pytest.mark.parametrize(
    ("line", "delimiter"),
    [
        ("click_id;payout;time", ";"),
        ('"a,b,c";payout;click_id', ";"),  # commas inside quotes do not count
        ("click_id,payout,a;b;c", ","),  # tie: comma wins
        ("click_id;payout;a\tb\tc", ";"),  # tie: semicolon beats tab
        ("click_id\tpayout\ta;b", "\t"),
    ],
)
def test_delimiter_detection(tmp_path: Path, line: str, delimiter: str) -> None:
    header = read_header(write(tmp_path, line + "\n"), "conversions")
    assert header.delimiter == delimiter
    assert header.columns.keys() >= {"click_id", "payout"}


def test_no_delimiter_means_comma() -> None:
    assert _sniff_delimiter("click_id\r\n") == ","


# --- header matching --------------------------------------------------------------------------


def test_aliases_in_any_case_and_spacing(tmp_path: Path) -> None:
    path = write(tmp_path, "Click ID,Revenue,  DATE ,Order-ID,TYPE,Currency,Status\n")
    header = read_header(path, "conversions")
    assert header.columns == {
        "click_id": 0,
        "payout": 1,
        "conversion_time": 2,
        "conversion_type": 4,
        "status": 6,
        "event_id": 3,
        "currency": 5,
    }
    assert list(header.columns) == [  # ordered like CONVERSION_COLUMNS, not like the file
        "click_id",
        "payout",
        "conversion_time",
        "conversion_type",
        "status",
        "event_id",
        "currency",
    ]
    assert header.unknown == ()


@pytest.mark.parametrize("cell", ["SubID", "click-id", "CLICKID", "sub_id", " click__id "])
def test_click_id_spellings(tmp_path: Path, cell: str) -> None:
    header = read_header(write(tmp_path, f"{cell},amount\n"), "conversions")
    assert header.columns == {"click_id": 0, "payout": 1}


def test_aliases_table_is_keyed_by_normalised_text() -> None:
    assert ALIASES["click_id"] == "click_id"  # from "click id" and "click_id"
    assert ALIASES["clickid"] == ALIASES["subid"] == "click_id"
    assert ALIASES["txid"] == "event_id"
    assert ALIASES["timestamp"] == "conversion_time"
    assert "click id" not in ALIASES


def test_report_columns_ignored_and_unknown_listed(tmp_path: Path) -> None:
    data = "line,click_id,Affiliate,payout,Reason Code,reason,,Notes\n7,a,x,1,invalid_time,bad,,n\n"
    header, batch = read_all(write(tmp_path, data))
    assert header.columns == {"click_id": 1, "payout": 3}
    assert header.unknown == ("Affiliate", "column_7", "Notes")
    assert header.names == (
        "line",
        "click_id",
        "Affiliate",
        "payout",
        "Reason Code",
        "reason",
        "column_7",
        "Notes",
    )
    canonical = header.canonical(batch.cells)
    assert list(canonical.columns) == ["click_id", "payout"]
    assert canonical.to_numpy().tolist() == [["a", "1"]]


def test_status_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "Status,payout,clickid,tid\napproved,5,abc,T1\n")
    header, batch = read_all(path, kind="status")
    assert header.columns == {"click_id": 2, "status": 0, "event_id": 3}
    assert header.unknown == ("payout",)  # not a column of status files
    assert header.canonical(batch.cells).to_dict("list") == {
        "click_id": ["abc"],
        "status": ["approved"],
        "event_id": ["T1"],
    }


def test_status_kind_requires_status(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, "click_id,payout\na,1\n"), kind="status")
    assert error.code == "missing_required_column"
    assert "'status'" in error.detail


def test_missing_required_column(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, "click_id;revenu;time\na;1;x\n"))
    assert error.code == "missing_required_column"
    assert "'payout'" in error.detail
    assert "click_id;revenu;time" in error.detail


def test_missing_required_column_hints_at_a_header_in_one_cell(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, '"click_id;payout"\n"a;1"\n'))
    assert error.code == "missing_required_column"
    assert "columns 'click_id', 'payout'" in error.detail
    assert "one cell" in error.detail


def test_duplicate_column_via_alias(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, "click_id,payout,subid\n"))
    assert error.code == "duplicate_column"
    assert "'click_id'" in error.detail and "'subid'" in error.detail


@pytest.mark.parametrize("line", ["click_id,payout,Note,note", "click_id,payout,line,LINE"])
def test_duplicate_unknown_or_report_cells(tmp_path: Path, line: str) -> None:
    assert rejected(write(tmp_path, line + "\n")).code == "duplicate_column"


def test_empty_header_cells_are_unnamed_columns_not_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, "click_id,payout,,\r\na,1.00,,x\r\n")
    header = read_header(path, "conversions")
    assert header.names == ("click_id", "payout", "column_3", "column_4")
    assert header.unknown == ("column_3", "column_4")
    (batch,) = read_batches(path, header, 10)
    assert batch.cells.to_dict("records") == [
        {"click_id": "a", "payout": "1.00", "column_3": "", "column_4": "x"}
    ]


# --- whole-file rejections ----------------------------------------------------------------------


def test_invalid_utf8_in_the_middle_is_found_by_read_batches(tmp_path: Path) -> None:
    good = "".join(f"click{i},{i}.00\n" for i in range(2, 3001))  # lines 2..3000
    data = b"click_id,payout\n" + good.encode() + b"caf\xe9,1\n" + b"z,2\n"  # Latin-1 on line 3001
    path = write(tmp_path, data)
    header = read_header(path, "conversions")  # the header itself is fine
    with pytest.raises(FileRejected) as info:
        list(read_batches(path, header, 500))
    assert info.value.code == "unreadable_file"
    assert "utf-8" in info.value.detail
    assert "line 3001" in info.value.detail
    assert f"byte offset {data.index(b'caf') + 3}" in info.value.detail


def test_invalid_utf8_in_the_header(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, b"click_id,pay\xf6ut\na,1\n"))
    assert error.code == "unreadable_file"
    assert "header" in error.detail


def test_xlsx_magic(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, b"PK\x03\x04\x14\x00\x06\x00rest of a zip"))
    assert error.code == "unreadable_file"
    assert ".xlsx" in error.detail


def test_utf16_without_bom(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, "click_id,payout\r\na,1\r\n".encode("utf-16-le")))
    assert error.code == "unreadable_file"
    assert "UTF-16" in error.detail


@pytest.mark.parametrize(
    "data", [b"", codecs.BOM_UTF8, b"sep=;\r\n", b"\r\nclick_id,payout\n", b",,\n"]
)
def test_no_header(tmp_path: Path, data: bytes) -> None:
    assert rejected(write(tmp_path, data)).code == "empty_file"


# --- parsing, line numbers and cells -------------------------------------------------------------


def test_quoted_values_and_line_numbers_after_a_multiline_record(tmp_path: Path) -> None:
    data = 'click_id,payout,note\r\na,1,"x, ""quoted""\r\nsecond line"\r\nb,2,plain\r\n'
    _, batch = read_all(write(tmp_path, data))
    assert rows(batch) == [["a", "1", 'x, "quoted"\r\nsecond line'], ["b", "2", "plain"]]
    assert batch.lines.tolist() == [2, 3]  # the two-line record is one line


def test_cr_only_line_ends_and_nul_in_a_value(tmp_path: Path) -> None:
    _, batch = read_all(write(tmp_path, "click_id,payout\ra\x00b,1\rc,2"))
    assert rows(batch) == [["a\x00b", "1"], ["c", "2"]]
    assert batch.lines.tolist() == [2, 3]


def test_long_value(tmp_path: Path) -> None:
    long = "x" * 1_000_000  # beyond the csv module's default 128 KiB field limit
    _, batch = read_all(write(tmp_path, f"click_id,payout\n{long},1\n"))
    assert rows(batch) == [[long, "1"]]


def test_malformed_rows_beside_good_rows(tmp_path: Path) -> None:
    data = "click_id,payout,status\na,1,approved\nb,2\nc,3,pending\nd,4,x,extra\ne,5,\n"
    _, batch = read_all(write(tmp_path, data))
    assert rows(batch) == [["a", "1", "approved"], ["c", "3", "pending"], ["e", "5", ""]]
    assert batch.lines.tolist() == [2, 4, 6]
    assert batch.malformed == [(3, ["b", "2"]), (5, ["d", "4", "x", "extra"])]


def test_blank_records_skipped_but_counted(tmp_path: Path) -> None:
    data = "click_id,payout,status\n\na,1,x\n,,\n  , ,\t\n,\nb,2,y\n\n"
    _, batch = read_all(write(tmp_path, data))
    assert rows(batch) == [["a", "1", "x"], ["b", "2", "y"]]
    assert batch.lines.tolist() == [3, 7]
    assert batch.blank_lines == 5  # "", ",,", "  , ,\t", "," and the last ""
    assert batch.malformed == []


def test_apostrophe_rule(tmp_path: Path) -> None:
    data = "click_id,payout,note\na,'-5,'=1+1\nb,'+3,'@SUM(A1)\nc,1,'abc\nd,'',''=x\ne,2,\"'\t\"\n"
    _, batch = read_all(write(tmp_path, data))
    assert rows(batch) == [
        ["a", "-5", "=1+1"],
        ["b", "+3", "@SUM(A1)"],
        ["c", "1", "'abc"],
        ["d", "''", "''=x"],
        ["e", "2", "\t"],
    ]


def test_values_are_not_trimmed(tmp_path: Path) -> None:
    _, batch = read_all(write(tmp_path, 'click_id,payout\n  a ,\t1 \n" b",""\n'))
    assert rows(batch) == [["  a ", "\t1 "], [" b", ""]]


def test_batch_size_does_not_change_the_result(tmp_path: Path) -> None:
    data = (
        "sep=,\nclick_id,payout\n"
        + "".join(f"c{i},'={i}\n" if i % 7 else f"c{i}\n\n" for i in range(50))
        + 'q,"multi\nline"\n'
    )
    path = write(tmp_path, data)
    _, big = read_all(path, batch_size=10_000)
    for size in (1, 3, 7):
        _, small = read_all(path, batch_size=size)
        pd.testing.assert_frame_equal(small.cells, big.cells)
        assert small.lines.tolist() == big.lines.tolist()
        assert small.malformed == big.malformed
        assert small.blank_lines == big.blank_lines
    assert big.lines.tolist()[:3] == [5, 6, 7]  # line 3 is c0 (one cell), line 4 is blank
    assert big.malformed[:2] == [(3, ["c0"]), (11, ["c7"])]
    assert big.blank_lines == 8
    assert big.cells.iloc[-1].tolist() == ["q", "multi\nline"]
    assert big.lines[-1] == 3 + 50 + 8


def test_batches_hold_at_most_batch_size_records(tmp_path: Path) -> None:
    path = write(tmp_path, "click_id,payout\na,1\n\nb\nc,3\nd,4\n")
    header = read_header(path, "conversions")
    batches = list(read_batches(path, header, 2))
    # records: 2 good, 3 blank | 4 malformed, 5 good | 6 good
    assert [b.lines.tolist() for b in batches] == [[2], [5], [6]]
    assert [b.blank_lines for b in batches] == [1, 0, 0]
    assert [b.malformed for b in batches] == [[], [(4, ["b"])], []]


def test_exact_multiple_of_batch_size_has_no_trailing_empty_batch(tmp_path: Path) -> None:
    path = write(tmp_path, "click_id,payout\na,1\nb,2\n")
    header = read_header(path, "conversions")
    assert [len(b.cells) for b in read_batches(path, header, 2)] == [2]


def test_header_only_file_yields_one_empty_batch(tmp_path: Path) -> None:
    path = write(tmp_path, "click_id,payout\n")
    header = read_header(path, "conversions")
    (batch,) = read_batches(path, header, 100)
    assert batch.lines.tolist() == [] and batch.lines.dtype == np.int64
    assert list(batch.cells.columns) == ["click_id", "payout"]
    assert len(batch.cells) == 0 and all(batch.cells.dtypes == "str")
    assert batch.malformed == [] and batch.blank_lines == 0
    assert list(header.canonical(batch.cells).columns) == ["click_id", "payout"]


_cell = st.text(st.characters(exclude_categories=["Cs"]), max_size=8).filter(
    lambda c: not (c[:1] == "'" and c[1:2] in ("=", "+", "-", "@", "\t", "\r"))
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    table=st.lists(st.lists(_cell, min_size=3, max_size=3), max_size=12).filter(
        lambda t: all("".join(row).strip() for row in t)
    ),
    delimiter=st.sampled_from([",", ";", "\t"]),
    batch_size=st.integers(1, 5),
)
def test_round_trip_of_whatever_csv_writer_writes(
    tmp_path: Path, table: list[list[str]], delimiter: str, batch_size: int
) -> None:
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(
        [["click_id", "payout", "note"], *table]
    )
    _, batch = read_all(write(tmp_path, out.getvalue()), batch_size=batch_size)
    assert rows(batch) == table
    assert batch.lines.tolist() == list(range(2, len(table) + 2))


# --- bounds: max_line_bytes and max_columns (README "Files") ----------------------------------


def bounded(path: Path, max_line_bytes: int, max_columns: int = 1000) -> list[list[str]] | str:
    """The rows of a file read with these limits, or the `code: detail` it is refused with."""
    try:
        header = read_header(
            path, "conversions", max_line_bytes=max_line_bytes, max_columns=max_columns
        )
        assert header.max_line_bytes == max_line_bytes
        return [r for b in read_batches(path, header, 2) for r in rows(b)]
    except FileRejected as e:
        return f"{e.code}: {e.detail}"


def test_a_record_of_exactly_max_line_bytes_is_read_and_one_byte_more_is_refused(
    tmp_path: Path,
) -> None:
    """Bytes, line end included: `u1,12\n` is 6 bytes, `é` is 2 bytes in UTF-8."""
    path = write(tmp_path, "click_id,payout\nu1,12\n")  # the header is 16 bytes
    assert bounded(path, 16) == [["u1", "12"]]
    assert bounded(path, 15) == (
        "line_too_long: the header (line 1) is longer than settings.max_line_bytes (15 bytes)"
    )
    path = write(tmp_path, "click_id,payout\né,1234567890\n")  # 2 + 1 + 10 + 1 = 14 bytes
    assert bounded(path, 16) == [["é", "1234567890"]]
    path = write(tmp_path, "click_id,payout\néé,1234567890\n")  # 16 bytes, 15 characters
    assert bounded(path, 16) == [["éé", "1234567890"]]
    path = write(tmp_path, "click_id,payout\néé,12345678901\n")  # 17 bytes, 16 characters
    assert bounded(path, 16) == (
        "line_too_long: line 2 is longer than settings.max_line_bytes (16 bytes)"
    )


def test_utf16_lines_are_counted_in_their_own_bytes(tmp_path: Path) -> None:
    """`click_id,payout\n` is 16 characters, 32 bytes in UTF-16 (the BOM is no line's)."""
    path = write(tmp_path, codecs.BOM_UTF16_LE + "click_id,payout\nu1,1\n".encode("utf-16-le"))
    assert bounded(path, 32) == [["u1", "1"]]
    assert bounded(path, 31).startswith("line_too_long: the header (line 1) is longer")


def test_quoted_line_breaks_count_toward_the_record_and_its_line_is_the_spreadsheet_one(
    tmp_path: Path,
) -> None:
    """`sep=` is line 1, the header (16 bytes) line 2, `a;1` line 3, the quoted record of three
    physical lines (`"x""\n`, 10 `y` and `\n`, `z";2\n`: 5 + 11 + 5 = 21 bytes) line 4, and
    `c;` with 30 digits (33 bytes) line 5."""
    data = 'sep=;\nclick_id;payout\na;1\n"x""\n' + "y" * 10 + '\nz";2\nc;' + "9" * 30 + "\n"
    path = write(tmp_path, data)
    assert bounded(path, 40) == [["a", "1"], ['x"\n' + "y" * 10 + "\nz", "2"], ["c", "9" * 30]]
    assert bounded(path, 25) == (  # reading stops after 26 characters: no line end in them
        "line_too_long: line 5 is longer than settings.max_line_bytes (25 bytes); it has no"
        " line end within the limit"
    )
    assert bounded(path, 20) == (  # 21 > 20, though each of its physical lines is shorter
        "line_too_long: line 4 is longer than settings.max_line_bytes (20 bytes): a quoted value"
        " in it holds line breaks past the limit"
    )


def test_a_line_with_no_line_end_past_the_limit_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "click_id,payout\nu1," + "1" * 100)
    assert bounded(path, 50) == (
        "line_too_long: line 2 is longer than settings.max_line_bytes (50 bytes); it has no"
        " line end within the limit"
    )
    path = write(tmp_path, "x" * 100)
    assert bounded(path, 50).startswith("line_too_long: the header (line 1) is longer")
    path = write(tmp_path, "click_id,payout\nu1,1")  # short and without a line end: fine
    assert bounded(path, 50) == [["u1", "1"]]


def test_an_unbalanced_quote_past_the_limit_is_named_where_it_opened(tmp_path: Path) -> None:
    opened_at_3 = 'click_id,payout\nu1,1\nu2,"12\n' + "u3,1\n" * 20  # 20 lines after it
    assert bounded(write(tmp_path, opened_at_3), 50) == (
        "line_too_long: unbalanced quote: the quoted field opened at line 3 never closes (it"
        " runs to the end of the file, past settings.max_line_bytes (50 bytes))"
    )
    # Within the limit an open quote still runs to the end of the file, as before: one record.
    assert bounded(write(tmp_path, opened_at_3), 200) == [
        ["u1", "1"],
        ["u2", "12\n" + "u3,1\n" * 20],
    ]
    # A quote that does close, only past the limit, is a long record, not an unbalanced quote.
    closes = 'click_id,payout\nu1,"12\n' + "u3,1\n" * 20 + '"\nu4,1\n'
    assert bounded(write(tmp_path, closes), 50) == (
        "line_too_long: line 2 is longer than settings.max_line_bytes (50 bytes): a quoted"
        " value in it holds line breaks past the limit"
    )
    # `""` is a quote inside the field, even where it spans lines: still open, then closed.
    doubled = 'click_id,payout\nu1,"1""\n' + '""\n' * 30 + '"\n'
    assert bounded(write(tmp_path, doubled), 50).startswith("line_too_long: line 2 is longer")
    never = 'click_id,payout\nu1,"1""\n' + '""\n' * 30
    assert bounded(write(tmp_path, never), 50).startswith("line_too_long: unbalanced quote")


def test_more_header_cells_than_max_columns_is_refused_before_any_row(tmp_path: Path) -> None:
    """Line 2 is not even UTF-8: the header decides first."""
    path = write(tmp_path, b"click_id,payout,a,b\n\xff,1,2,3\n")
    assert bounded(path, 1000, max_columns=3) == (
        "too_many_columns: the header (line 1) has 4 columns; the limit (settings.max_columns) is 3"
    )
    path = write(tmp_path, b"click_id,payout,a,b\nu1,1,2,3\n")
    assert bounded(path, 1000, max_columns=4) == [["u1", "1", "2", "3"]]


def test_a_wide_batch_is_one_frame_with_only_its_neutralised_column_undone(
    tmp_path: Path,
) -> None:
    width = 3000
    names = ["click_id", "payout", *(f"c{i}" for i in range(width - 2))]
    cells = ["u1", "1", *("v" for _ in range(width - 3)), "'=1"]
    path = write(tmp_path, ",".join(names) + "\n" + ",".join(cells) + "\n'x,2" + ",w" * (width - 2))
    header = read_header(path, "conversions", max_columns=width)
    (batch,) = read_batches(path, header, 10)
    assert list(batch.cells.columns) == names
    assert all(batch.cells[c].dtype == "str" for c in names)
    assert rows(batch) == [[*cells[:-1], "=1"], ["'x", "2", *("w" for _ in range(width - 2))]]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    table=st.lists(st.lists(_cell, min_size=3, max_size=3), min_size=1, max_size=12).filter(
        lambda t: all("".join(row).strip() for row in t)
    ),
    delimiter=st.sampled_from([",", ";", "\t"]),
    limit=st.integers(12, 60),
)
def test_the_first_record_past_the_limit_is_the_one_named(
    tmp_path: Path, table: list[list[str]], delimiter: str, limit: int
) -> None:
    """Whatever the csv writer quotes (delimiters, quotes, line breaks): each record's bytes are
    what the writer wrote for it, and the first past the limit is named by its line."""
    written = []
    for row in [["click_id", "payout", "note"], *table]:
        out = io.StringIO(newline="")
        csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerow(row)
        written.append(out.getvalue())
    sizes = [len(r.encode("utf-8", "surrogatepass")) for r in written]
    got = bounded(write(tmp_path, "".join(written).encode("utf-8", "surrogatepass")), limit)
    too_long = [line for line, size in enumerate(sizes, start=1) if size > limit]
    if not too_long:
        assert got == table
    else:
        assert isinstance(got, str) and got.startswith("line_too_long: ")
        assert f"line {too_long[0]}" in got


def test_batches_are_bounded_in_bytes_and_cells_as_well_as_in_records(tmp_path, monkeypatch):
    """`batch_size` records, or fewer once a batch holds `BATCH_BYTES` of text or `BATCH_CELLS`
    cells; every record is read exactly once, in order, whatever the bounds."""
    lines = [f"c{i:03d},{'x' * (i % 7) * 10},2026-01-01 10:00:00" for i in range(200)]
    path = tmp_path / "f.csv"
    path.write_text("click_id,payout,conversion_time\n" + "\n".join(lines) + "\n")
    header = reader.read_header(path, "conversions", max_line_bytes=100)
    monkeypatch.setattr(reader, "BATCH_BYTES", 1_000)
    sizes, seen = [], []
    for batch in reader.read_batches(path, header, batch_size=150):
        text = sum(len(",".join(r)) + 1 for r in batch.cells.itertuples(index=False))
        sizes.append((len(batch.lines), text))
        seen += list(batch.cells["click_id"])
        assert text <= 1_000, sizes  # the budget, never passed (each step fits in what is left)
    assert seen == [f"c{i:03d}" for i in range(200)]
    assert len(sizes) > 10 and max(n for n, _ in sizes) < 150
    monkeypatch.setattr(reader, "BATCH_BYTES", 10**9)
    monkeypatch.setattr(reader, "BATCH_CELLS", 30)  # 3 columns: 10 records a batch
    counts = [len(b.lines) for b in reader.read_batches(path, header, batch_size=150)]
    assert counts == [10] * 20
