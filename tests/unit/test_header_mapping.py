"""Real exports in, nothing silently wrong: header mapping, Parameters lines and encodings.

Real files on disk, offer sources built by `pipeline.config.parse` from the TOML shape a user
writes; every expectation is worked out by hand from the file's text.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import parse
from pipeline.core.model import OfferSource
from pipeline.core.reasons import CATALOGUE
from pipeline.reader import FileRejected, Header, read_batches, read_header


def source(**settings: Any) -> OfferSource:
    """An offer source `net` with these settings (as its TOML table would hold them)."""
    config = parse(
        {
            "accounts": {"main": {"timezone": "UTC"}},
            "offer_sources": {"net": {"account": "main", **settings}},
        }
    )
    return config.offer_sources["net"]


def write(tmp_path: Path, data: bytes | str, name: str = "upload.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read(
    path: Path, kind: str = "conversions", src: OfferSource | None = None
) -> tuple[Header, list[int], list[list[str]]]:
    """The header, the data lines and their cells (all batches)."""
    header = read_header(path, kind, source=src)
    lines: list[int] = []
    cells: list[list[str]] = []
    for batch in read_batches(path, header, 2):
        lines += batch.lines.tolist()
        cells += batch.cells.to_numpy().tolist()
    return header, lines, cells


def rejected(path: Path, kind: str = "conversions", src: OfferSource | None = None) -> FileRejected:
    with pytest.raises(FileRejected) as info:
        header = read_header(path, kind, source=src)
        list(read_batches(path, header, 1000))
    assert CATALOGUE[info.value.code].scope == "file"
    return info.value


# --- Google Ads' offline-conversion template -----------------------------------------------------

GOOGLE_HEADER = (
    "Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency"
)
GOOGLE_ROWS = (
    "Cj0KCQjw1,Purchase,2026-03-08 14:00:00,12.50,USD\r\n"
    "Cj0KCQjw2,Lead,2026-03-08 15:30:00,0,EUR\r\n"
    "Cj0KCQjw3,Purchase,2026-03-09 09:00:00,99.99,USD\r\n"
)


def test_the_google_ads_template_as_google_documents_it(tmp_path: Path) -> None:
    data = f"Parameters:TimeZone=America/New_York\r\n{GOOGLE_HEADER}\r\n{GOOGLE_ROWS}"
    header, lines, cells = read(write(tmp_path, data))
    assert header.columns == {
        "click_id": 0,
        "payout": 3,
        "conversion_time": 2,
        "conversion_type": 1,
        "currency": 4,
    }
    assert header.time_zone == "America/New_York"
    assert header.header_line == 2
    assert header.names == tuple(GOOGLE_HEADER.split(","))
    assert header.unknown == () and header.ignored == ()
    assert lines == [3, 4, 5]  # spreadsheet lines: Parameters 1, header 2
    assert cells[0] == ["Cj0KCQjw1", "Purchase", "2026-03-08 14:00:00", "12.50", "USD"]
    assert cells[2] == ["Cj0KCQjw3", "Purchase", "2026-03-09 09:00:00", "99.99", "USD"]


@pytest.mark.parametrize(
    ("first", "zone"),
    [
        ('"Parameters:TimeZone=America/New_York"', "America/New_York"),  # quoted as a whole
        ("Parameters:TimeZone=-0500,,,,", "-0500"),  # trailing delimiters of a spreadsheet
        ('"Parameters:TimeZone=-0500",,,,', "-0500"),
        ('"Parameters:TimeZone=-0500,,,,"', "-0500"),
        ("parameters:timezone = Europe/Berlin", "Europe/Berlin"),  # any case, spaces at =
        ("Parameters:TimeZone=+05:30", "+05:30"),
        ("Parameters:TimeZone=+0530", "+0530"),
        ("Parameters:TimeZone=+1400", "+1400"),
        ("Parameters:TimeZone=UTC", "UTC"),
    ],
)
def test_parameters_line_variants(tmp_path: Path, first: str, zone: str) -> None:
    data = f"{first}\r\n{GOOGLE_HEADER}\r\n{GOOGLE_ROWS}"
    header, lines, cells = read(write(tmp_path, data))
    assert (header.time_zone, header.header_line, header.delimiter) == (zone, 2, ",")
    assert lines == [3, 4, 5]
    assert cells[1] == ["Cj0KCQjw2", "Lead", "2026-03-08 15:30:00", "0", "EUR"]


def test_parameters_line_with_semicolons_and_a_utf8_bom(tmp_path: Path) -> None:
    text = "Parameters:TimeZone=-0500;;;\r\nGoogle Click ID;Conversion Value\r\ng1;1,5\r\n"
    data = codecs.BOM_UTF8 + text.encode()
    header, lines, cells = read(write(tmp_path, data))
    assert (header.encoding, header.delimiter) == ("utf-8-sig", ";")
    assert (header.time_zone, header.header_line) == ("-0500", 2)
    assert header.names == ("Google Click ID", "Conversion Value")
    assert (lines, cells) == ([3], [["g1", "1,5"]])


@pytest.mark.parametrize(
    "first", ["sep=;\r\nParameters:TimeZone=Asia/Dubai", "Parameters:TimeZone=Asia/Dubai\r\nsep=;"]
)
def test_sep_line_and_parameters_line_in_either_order(tmp_path: Path, first: str) -> None:
    data = f"{first}\r\nclick_id;payout;note\r\na;1;x,y\r\n"
    header, lines, cells = read(write(tmp_path, data))
    assert (header.delimiter, header.time_zone, header.header_line) == (";", "Asia/Dubai", 3)
    assert (lines, cells) == ([4], [["a", "1", "x,y"]])


def test_no_parameters_line_means_no_time_zone(tmp_path: Path) -> None:
    header, lines, _ = read(write(tmp_path, "click_id,payout\r\na,1\r\n"))
    assert (header.time_zone, header.header_line, lines) == (None, 1, [2])


@pytest.mark.parametrize(
    ("first", "written"),
    [
        ("Parameters:TimeZone=Mars/Base", "'Mars/Base'"),
        ("Parameters:TimeZone=-1500", "'-1500'"),  # hours past 14
        ("Parameters:TimeZone=+0560", "'+0560'"),  # minutes past 59
        ("Parameters:TimeZone=EST5", "'EST5'"),
        ("Parameters:TimeZone=", "''"),
        ("Parameters:TimeZone=america/new_york", "'america/new_york'"),  # zone names have a case
    ],
)
def test_an_invalid_zone_is_invalid_parameters_line(tmp_path: Path, first: str, written) -> None:
    error = rejected(write(tmp_path, f"{first}\r\n{GOOGLE_HEADER}\r\n{GOOGLE_ROWS}"))
    assert error.code == "invalid_parameters_line"
    assert error.detail == (
        f"line 1: Parameters:TimeZone={written} is neither an IANA time zone nor an offset like"
        " -0500"
    )


def test_another_parameter_is_invalid_parameters_line_naming_it(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, f"Parameters:Currency=USD\r\n{GOOGLE_HEADER}\r\n"))
    assert error.code == "invalid_parameters_line"
    assert "Parameters:Currency=" in error.detail and "line 1" in error.detail


def test_a_parameters_line_alone_is_an_empty_file(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, "Parameters:TimeZone=UTC\r\n"))
    assert error.code == "empty_file"
    assert "only the 'Parameters:' line" in error.detail


# --- an affiliate network's own export, mapped by `columns` ---------------------------------------


def test_a_network_export_mapped_by_columns(tmp_path: Path) -> None:
    src = source(
        columns={"click_id": "Sub ID", "payout": "Commission (USD)", "status": "Sale Status"},
        ignore_columns=["Sale Amount", "Click Date"],
        default_status="pending",
    )
    data = (
        "Transaction ID,Sub ID,Offer Name,Sale Amount,Commission (USD),Sale Status,"
        "Conversion Date,Click Date,sub2,IP,Country\n"
        "T-1,abc123,Spring Sale,120.00,12.00,Approved,2026-03-08 14:00:00,2026-03-07 09:00:00,"
        "x,10.0.0.1,DE\n"
    )
    header, lines, cells = read(write(tmp_path, data), src=src)
    assert header.columns == {
        "click_id": 1,
        "payout": 4,
        "conversion_time": 6,  # built-in alias "conversion date"
        "status": 5,
        "event_id": 0,  # built-in alias "transaction id"
    }
    assert header.ignored == ("Sale Amount", "Click Date")
    assert header.unknown == ("Offer Name", "sub2", "IP", "Country")
    assert lines == [2]
    assert cells == [
        [
            "T-1",
            "abc123",
            "Spring Sale",
            "120.00",
            "12.00",
            "Approved",
            "2026-03-08 14:00:00",
            "2026-03-07 09:00:00",
            "x",
            "10.0.0.1",
            "DE",
        ]
    ]


def test_columns_match_after_trimming_in_any_case(tmp_path: Path) -> None:
    src = source(columns={"click_id": "  SUB ID ", "payout": "Earned"})
    header = read_header(write(tmp_path, "sub id,EARNED\n"), "conversions", source=src)
    assert header.columns == {"click_id": 0, "payout": 1}


def test_columns_map_before_the_aliases(tmp_path: Path) -> None:
    # "Sub ID" is an alias of click_id; this network writes its order number there.
    src = source(columns={"event_id": "Sub ID", "click_id": "Ref"})
    header = read_header(write(tmp_path, "Ref,Sub ID,Amount\n"), "conversions", source=src)
    assert header.columns == {"click_id": 0, "payout": 2, "event_id": 1}


def test_a_columns_entry_for_a_field_of_the_other_kind_is_ignored(tmp_path: Path) -> None:
    src = source(columns={"payout": "Commission", "status": "State"})
    header = read_header(
        write(tmp_path, "click_id,State,Commission\n"), "status", source=src
    )  # payout is no column of status files: "Commission" is just unknown there
    assert header.columns == {"click_id": 0, "status": 1}
    assert header.unknown == ("Commission",)


def test_new_built_in_aliases(tmp_path: Path) -> None:
    data = "GCLID,Commission,Currency Code,Timestamp,Conversion Status,txn_id,Conversion Name\n"
    header = read_header(write(tmp_path, data), "conversions")
    assert header.columns == {
        "click_id": 0,
        "payout": 1,
        "conversion_time": 3,
        "conversion_type": 6,
        "status": 4,
        "event_id": 5,
        "currency": 2,
    }
    header = read_header(write(tmp_path, "Order ID,Payout Amount,click id\n"), "conversions")
    assert header.columns == {"click_id": 2, "payout": 1, "event_id": 0}


def test_harmless_unknown_headers_stay_unknown(tmp_path: Path) -> None:
    names = "click_id,payout,sub2,Sub ID 2,IP,Country,Offer Name,User Agent,device,campaign"
    header = read_header(write(tmp_path, names + "\n"), "conversions")
    assert header.unknown == tuple(names.split(",")[2:])
    header = read_header(write(tmp_path, "click_id,status,payout,Currency\n"), "status")
    assert header.unknown == ("payout", "Currency")  # no default of a status file behind them


# --- unmapped_column: nothing silently defaulted -------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field", "position", "detail"),
    [
        (
            "Order Status",
            "status",
            3,
            "the header 'Order Status' (column 3) looks like status, which this file would"
            ' otherwise take from default_status; map it in columns (status = "Order Status"),'
            " or list it in ignore_columns",
        ),
        (
            "Currency Used",
            "currency",
            3,
            "the header 'Currency Used' (column 3) looks like currency, which this file would"
            " otherwise take from the account's currency; map it in columns (currency ="
            ' "Currency Used"), or list it in ignore_columns',
        ),
        (
            "ConversionTime",
            "conversion_time",
            3,
            "the header 'ConversionTime' (column 3) looks like conversion_time, which this file"
            " would otherwise take from the time the file was received; map it in columns"
            ' (conversion_time = "ConversionTime"), or list it in ignore_columns',
        ),
    ],
)
def test_a_header_that_would_be_defaulted_stops_the_file(
    tmp_path: Path, extra: str, field: str, position: int, detail: str
) -> None:
    path = write(tmp_path, f"click_id,payout,{extra}\na,1,x\n")
    error = rejected(path)
    assert (error.code, error.detail) == ("unmapped_column", detail)
    # Listed in ignore_columns, it is read past and reported as ignored, not unknown.
    header = read_header(path, "conversions", source=source(ignore_columns=[extra.lower()]))
    assert (header.ignored, header.unknown) == ((extra,), ())
    assert field not in header.columns
    # Mapped in columns, it is that column.
    header = read_header(path, "conversions", source=source(columns={field: extra}))
    assert header.columns[field] == position - 1


def test_a_second_time_beside_a_mapped_one_stops_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path, "click_id,payout,Conversion Date,Click Date\na,1,2026-03-08,2026-03-07\n"
    )
    error = rejected(path)
    assert error.code == "unmapped_column"
    assert error.detail == (
        "the header 'Click Date' (column 4) looks like conversion_time, which this file takes"
        " from 'Conversion Date' (column 3); the reader never picks one of two: list it in"
        ' ignore_columns, or map it in columns (conversion_time = "Click Date") and list'
        " 'Conversion Date' in ignore_columns"
    )
    header = read_header(path, "conversions", source=source(ignore_columns=["Click Date"]))
    assert header.columns == {"click_id": 0, "payout": 1, "conversion_time": 2}
    assert header.ignored == ("Click Date",)
    # Or the other way round: the click's time is the conversion's, the other one ignored.
    src = source(columns={"conversion_time": "Click Date"}, ignore_columns=["Conversion Date"])
    header = read_header(path, "conversions", source=src)
    assert header.columns == {"click_id": 0, "payout": 1, "conversion_time": 3}
    assert header.ignored == ("Conversion Date",)


def test_a_second_payout_beside_a_mapped_one_stops_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "click_id,Commission,Commission Amount (EUR)\n")
    error = rejected(path)
    assert error.code == "unmapped_column"
    assert error.detail.startswith(
        "the header 'Commission Amount (EUR)' (column 3) looks like payout, which this file"
        " takes from 'Commission' (column 2)"
    )


def test_every_unmapped_header_is_named(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, "click_id,payout,Order Status,IP,Currency Used,Click Date\n"))
    assert error.code == "unmapped_column"
    assert error.detail.startswith("the header 'Order Status' (column 3) looks like status")
    assert error.detail.endswith(
        "; the same holds for 'Currency Used' (currency), 'Click Date' (conversion_time)"
    )


def test_status_files_watch_only_statuses_and_click_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "click_id,status,Commission Amount,Click Date,Currency Used\n")
    header = read_header(path, "status")
    assert header.unknown == ("Commission Amount", "Click Date", "Currency Used")
    error = rejected(write(tmp_path, "click_id,status,Order State\n"), kind="status")
    assert error.code == "unmapped_column"
    assert "'Order State' (column 3) looks like status, which this file takes from 'status'" in (
        error.detail
    )
    error = rejected(write(tmp_path, "Sub ID,status,Click Ref\n"), kind="status")
    assert error.code == "unmapped_column"
    assert "'Click Ref' (column 3) looks like click_id, which this file takes from 'Sub ID'" in (
        error.detail
    )


@pytest.mark.parametrize("kind", ["conversions", "status"])
@pytest.mark.parametrize(
    ("cell", "field"),
    [
        ("Click", "click_id"),
        ("Click Ref", "click_id"),
        ("click-id 2", "click_id"),
        ("GBRAID", "click_id"),
        ("wbraid", "click_id"),
        ("AffClickID", "click_id"),
        ("Click IP", None),  # an attribute of the click, not its id
        ("Click URL", None),
        ("Clicks", None),
        ("OrderStatus", "status"),
        ("Conversion State", "status"),
        ("Click Date", "conversion_time"),  # the first field its words name
        ("clickdate", "conversion_time"),
        ("Event Datetime", "conversion_time"),
        ("Day", "conversion_time"),
        ("Curr.", "currency"),
        ("CCY", "currency"),
        ("payoutCurrency", "currency"),
        ("Sale Amount", "payout"),
        ("Order Value", "payout"),
        ("Earnings", "payout"),
        ("Lifetime Value", "payout"),
        ("sub2", None),
        ("Sub ID 2", None),
        ("subid3", None),
        ("Offer Name", None),
        ("User Agent", None),
        ("Device", None),
        ("Campaign", None),
        ("Country", None),
        ("IP", None),
        ("Summary", None),
        ("Days Since Click", None),
    ],
)
def test_which_headers_look_like_a_field(tmp_path: Path, kind: str, cell: str, field) -> None:
    """Worked by hand from the word list in the module docstring; the ids are Sub ID's."""
    path = write(tmp_path, f"Sub ID,status,payout,{cell}\n")
    watched = {"conversions": {"status", "currency", "payout", "conversion_time", "click_id"}}
    watched["status"] = {"status", "click_id"}
    if field in watched[kind]:
        assert rejected(path, kind=kind).code == "unmapped_column"
    else:
        assert read_header(path, kind).unknown[-1] == cell


def test_a_missing_required_column_names_the_header_that_looks_like_it(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, "Sub ID,Commission Amount (EUR)\nabc,1\n"))
    assert error.code == "missing_required_column"
    assert error.detail == (
        "missing required column 'payout' (header: Sub ID,Commission Amount (EUR)); the header"
        " 'Commission Amount (EUR)' (column 2) looks like payout: map it in columns (payout ="
        ' "Commission Amount (EUR)")'
    )


def test_report_columns_are_never_unmapped(tmp_path: Path) -> None:
    header = read_header(
        write(tmp_path, "line,reason_code,Reason,click_id,payout\n"), "conversions"
    )
    assert (header.unknown, header.ignored) == ((), ())


# --- duplicate_column via columns -----------------------------------------------------------------


def test_a_columns_mapping_colliding_with_an_alias_is_a_duplicate(tmp_path: Path) -> None:
    src = source(columns={"click_id": "Affiliate Sub"})
    error = rejected(write(tmp_path, "Affiliate Sub,payout,clickid\n"), src=src)
    assert error.code == "duplicate_column"
    assert error.detail == (
        "header cells 1 ('Affiliate Sub') and 3 ('clickid') both name column 'click_id'"
        " ('Affiliate Sub' is mapped to it in columns; matching ignores case, spaces, '_' and '-')"
    )


def test_the_same_header_twice_is_a_duplicate_even_when_mapped(tmp_path: Path) -> None:
    src = source(columns={"payout": "Earned"})
    error = rejected(write(tmp_path, "click_id,Earned,earned\n"), src=src)
    assert error.code == "duplicate_column"
    assert "'Earned'" in error.detail and "'earned'" in error.detail


# --- encodings ----------------------------------------------------------------------------------

CP1252 = "click_id;payout;Offer Name\r\ncafé;1,50;Crème brûlée €\r\nb;2;x\r\n".encode("cp1252")


def test_a_cp1252_file_read_with_the_encoding_setting(tmp_path: Path) -> None:
    assert b"caf\xe9" in CP1252 and b"\x80" in CP1252  # é and € as Windows-1252 writes them
    header, lines, cells = read(write(tmp_path, CP1252), src=source(encoding="cp1252"))
    assert (header.encoding, header.delimiter) == ("cp1252", ";")
    assert lines == [2, 3]
    assert cells == [["café", "1,50", "Crème brûlée €"], ["b", "2", "x"]]


def test_the_cp1252_file_without_the_setting_names_it(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, CP1252))
    assert error.code == "unreadable_file"
    assert error.detail == (
        "the file is not valid utf-8: cannot decode byte(s) 0xe9 at byte offset 31 (near line 2);"
        ' save it as CSV UTF-8, or, if the file is from Excel, set encoding = "cp1252" for this'
        " offer source"
    )


def test_a_cp1252_header_without_the_setting_names_it(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, "click_id,payout,Catégorie\n".encode("cp1252")))
    assert error.code == "unreadable_file"
    assert error.detail.startswith("the header (line 1) is not valid utf-8; ")
    assert 'set encoding = "cp1252"' in error.detail
    header = read_header(
        write(tmp_path, "click_id,payout,Catégorie\n".encode("cp1252")),
        "conversions",
        source=source(encoding="cp1252"),
    )
    assert header.unknown == ("Catégorie",)


def test_a_bom_wins_over_the_encoding_setting(tmp_path: Path) -> None:
    data = codecs.BOM_UTF8 + "click_id,payout\r\ncafé,1\r\n".encode()
    header, lines, cells = read(write(tmp_path, data), src=source(encoding="cp1252"))
    assert header.encoding == "utf-8-sig"
    assert header.names == ("click_id", "payout")
    assert (lines, cells) == ([2], [["café", "1"]])  # not "cafÃ©"
    data = codecs.BOM_UTF16_LE + "click_id\tpayout\r\nklïk\t5\r\n".encode("utf-16-le")
    header, lines, cells = read(write(tmp_path, data), src=source(encoding="latin-1"))
    assert header.encoding == "utf-16-le"
    assert (lines, cells) == ([2], [["klïk", "5"]])


def test_bytes_undefined_in_the_setting_are_unreadable_and_name_it(tmp_path: Path) -> None:
    # 0x81 has no character in Windows-1252.
    data = b"click_id,payout\r\na,1\r\nb\x81,2\r\n"
    error = rejected(write(tmp_path, data), src=source(encoding="cp1252"))
    assert error.code == "unreadable_file"
    assert "not valid cp1252" in error.detail and "0x81" in error.detail
    assert "(near line 3)" in error.detail
    assert 'encoding = "cp1252"' in error.detail


def test_single_byte_encodings_count_one_byte_a_character(tmp_path: Path) -> None:
    # The header "click_id,payout\r\n" is 17 bytes. "é" * 13 + ",1\r\n" is 17 bytes in cp1252
    # (30 in UTF-8): a limit of 17 reads it; one "é" more is 18 bytes and refused.
    src = source(encoding="cp1252")
    path = write(tmp_path, ("click_id,payout\r\n" + "é" * 13 + ",1\r\n").encode("cp1252"))
    header = read_header(path, "conversions", max_line_bytes=17, source=src)
    (batch,) = read_batches(path, header, 10)
    assert batch.cells.to_numpy().tolist() == [["é" * 13, "1"]]
    path = write(tmp_path, ("click_id,payout\r\n" + "é" * 14 + ",1\r\n").encode("cp1252"))
    header = read_header(path, "conversions", max_line_bytes=17, source=src)
    with pytest.raises(FileRejected) as info:
        list(read_batches(path, header, 10))
    assert info.value.code == "line_too_long"
    assert info.value.detail.startswith("line 2 is longer than settings.max_line_bytes (17 bytes)")


def test_a_utf16_setting_reads_a_file_without_a_bom_as_little_endian(tmp_path: Path) -> None:
    data = "click_id\tpayout\r\nklïk\t5\r\n".encode("utf-16-le")
    header, lines, cells = read(write(tmp_path, data), src=source(encoding="utf-16"))
    assert (header.encoding, header.delimiter) == ("utf-16-le", "\t")
    assert (lines, cells) == ([2], [["klïk", "5"]])


def test_a_parameters_line_with_a_quoted_value_is_refused(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, 'Parameters:TimeZone="UTC"\r\nclick_id,payout\r\n'))
    assert error.code == "invalid_parameters_line"
    assert error.detail.startswith("line 1: ")


def test_an_undecodable_byte_in_a_parameters_key_is_named_escaped(tmp_path: Path) -> None:
    """Found by the fuzz: the detail went to the ledger with a lone surrogate in it, which no
    database takes; it must be printable text, the byte shown escaped."""
    path = tmp_path / "p.csv"
    path.write_bytes(b"Parameters:Time\xffZone=UTC\nclick_id,payout\nc1,1\n")
    with pytest.raises(FileRejected) as caught:
        read_header(path, "conversions")
    assert caught.value.code == "invalid_parameters_line"
    caught.value.detail.encode("utf-8")  # no lone surrogate
    assert "\\udcff" in caught.value.detail
