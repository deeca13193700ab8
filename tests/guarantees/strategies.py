"""Hypothesis strategies for the fuzz tests: files from a model, damaged, or random bytes.

A *model* of a table (header spellings, aliases, unknown, report, empty, duplicated and missing
columns, and unknown ones that name a field; a Google Ads `Parameters:TimeZone=` line, valid or
not; rows that are valid or hold anything from odd Unicode to every time shape (epoch numbers,
spreadsheet rewrites), status words and extreme or decimal-comma payouts; blank and malformed
rows, unquoted decimal commas among them) is written with a random dialect (delimiter, `sep=` line,
quoting, line breaks, BOMs and encodings); `Upload.model` stays set only while the bytes are a
faithful copy, so `test_fuzz.py` can check the model against the second reader (`oracle.py`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from tests.guarantees.oracle import (
    KIND_COLUMNS,
    KNOWN_CURRENCIES,
    MANGLED,
    NOT_CURRENCIES,
    REQUIRED,
    SPELLINGS,
    STATUS_WORDS,
    STATUSES,
    matched,
)

# --- files from a model ------------------------------------------------------------------------

ID_CHARS = string.ascii_letters + string.digits + "._~-"
WHITESPACE = [" ", "\t", "\u00a0", "\u2003", "\u3000", "\u2028", "\x0b", "\x0c", "\x1c", "\x85"]
ODD = [
    "\u0301",  # combining acute accent
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\ufeff",  # zero-width no-break space (a BOM inside a cell)
    "\U0001f600",
    "\U0001f44d\U0001f3fd",  # emoji with a skin-tone modifier
    "é",
    "\uff41",  # fullwidth a
    "\u0663",  # Arabic-Indic three
    " ",
    "\u00a0",
    "\t",
    ",",
    ";",
    '"',
    "\n",
    "\r\n",
    "\r",
    "\x00",
    "\x7f",
    "\\",
    "'",
]


def rarely(n: int) -> st.SearchStrategy[bool]:
    """True about once in `n` (`st.integers(0, n - 1) == 0` is far likelier: hypothesis favours
    boundary values); shrinks to False."""
    return st.sampled_from([False] * (n - 1) + [True])


@st.composite
def click_id_cells(draw) -> str:
    valid = st.text(ID_CHARS, min_size=1, max_size=24)
    return draw(
        st.one_of(
            valid,
            valid,
            st.sampled_from(["c1", "c2", "C1", "c-1"]),  # repeated keys
            st.builds(
                lambda w, v, z: w + v + z,
                st.sampled_from(WHITESPACE),
                valid,
                st.sampled_from(WHITESPACE),
            ),
            st.builds(lambda a, o, b: a + o + b, valid, st.sampled_from(ODD), valid),
            st.sampled_from(
                [
                    "6.21E+23",
                    "1e5",
                    "-2.5e-3",
                    "7,1E+10",
                    "",
                    " ",
                    "'-x1",
                    "'=x1",
                    "''=x1",
                    '=HYPERLINK("http://x")',
                    "@SUM(A1)",
                    "x" * 128,
                    "y" * 129,
                    "a\x00b",
                    "\u05d0\u05d1",  # Hebrew
                ]
            ),
            st.text(max_size=12),
        )
    )


BIG_PAYOUTS = ["999999999999.999999", "500000000000.5", "-999999999999.999999", "0.000001"]
# README `payout_decimal_comma` / `decimal_separator = ","`: 12,50 and 1.234,56.
COMMA_PAYOUTS = [
    "12,50",
    "0,5",
    "1.234,56",
    "-3,25",
    "1.234.567,891",
    "999.999.999.999,999999",
    "1.234",  # 1.234 with ".", 1234 with ","
    "12,",
    ",5",
    "12,5000000",  # a 7th decimal: invalid either way
    "1.23,5",  # not grouped in threes
    "12.345.67",
    "1,234.56",
    "1.000.000.000.000,5",  # 13 digits
]


@st.composite
def comma_payouts(draw) -> str:
    units = draw(st.integers(0, 10**9))
    grouped = f"{units:,}".replace(",", ".") if draw(st.booleans()) else str(units)
    sign = draw(st.sampled_from(["", "", "-"]))
    return sign + grouped + "," + draw(st.text("0123456789", min_size=1, max_size=6))


@st.composite
def payout_cells(draw) -> str:
    units = draw(st.text("0123456789", max_size=12))
    decimals = draw(st.text("0123456789", max_size=6))
    sign = draw(st.sampled_from(["", "", "+", "-"]))
    dot = draw(st.booleans()) or not units
    generated = sign + units + ("." + decimals if dot else "")
    return draw(
        st.one_of(
            st.just(generated),
            st.just(generated),
            comma_payouts(),
            st.sampled_from(COMMA_PAYOUTS),
            st.sampled_from(BIG_PAYOUTS),
            st.sampled_from(
                [
                    "1e308",
                    "1e-30",
                    "99999999999999999999.99",
                    "999999999999.999999",
                    "-999999999999.999999",
                    "0.000001",
                    "-0",
                    "-0.0",
                    "NaN",
                    "nan",
                    "inf",
                    "-inf",
                    "Infinity",
                    "1,000.00",
                    "1 000.00",
                    "1.000,50",
                    "$5.00",
                    "5.00$",
                    "\u20ac5",
                    "5,50",
                    "1.0000001",
                    "1234567890123",
                    ".5",
                    "5.",
                    ".",
                    "+",
                    "-",
                    "0x1F",
                    "\u0661\u0662",
                    "\uff11\uff12",
                    "'-5.00",
                    "'+3",
                    "",
                    " 12.50 ",
                    "\u00a012.5\u3000",
                    "12.50\x00",
                ]
            ),
            st.text(max_size=8),
        )
    )


@st.composite
def standard_times(draw, moments: st.SearchStrategy[datetime]) -> str:
    """README "Times": `YYYY-MM-DD[ T]HH:MM[:SS[.f]][Z|+HH:MM|+HHMM|+HH]`, any fraction length
    (up to 9 digits: 7 or more are `invalid_time`)."""
    when = draw(moments)
    seconds = not draw(rarely(5))
    digits = draw(st.integers(0, 9)) if seconds else 0
    fraction = (f"{when.microsecond:06d}" + draw(st.text("0123456789", min_size=3, max_size=3)))[
        :digits
    ]
    minutes = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    sign, (hh, mm) = ("-" if minutes < 0 else "+"), divmod(abs(minutes), 60)
    offset = draw(
        st.sampled_from(
            ["", "", "Z", f"{sign}{hh:02d}:{mm:02d}", f"{sign}{hh:02d}{mm:02d}", f"{sign}{hh:02d}"]
        )
    )
    return (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}{draw(st.sampled_from(' T'))}"
        f"{when.hour:02d}:{when.minute:02d}"
        + (f":{when.second:02d}" if seconds else "")
        + ("." + fraction if fraction else "")
        + offset
    )


PAST = st.datetimes(datetime(2000, 1, 1), datetime(2026, 6, 30))
EPOCH = datetime(1970, 1, 1)


@st.composite
def epoch_times(draw, moments: st.SearchStrategy[datetime]) -> str:
    """README "Times": Unix epoch seconds (10 digits) or milliseconds (13), UTC instants; other
    lengths (a time before 2001-09-09 has 9 digits) are `invalid_time`."""
    micros = (draw(moments) - EPOCH) // EPOCH.resolution
    seconds, millis = micros // 1_000_000, micros // 1_000
    return str(seconds if draw(st.booleans()) else millis)


@st.composite
def spreadsheet_times(draw, moments: st.SearchStrategy[datetime]) -> str:
    """What a spreadsheet writes back on save: `11/3/2026 8:30`, `3/11/2026 8:30:15 PM`,
    `31.07.2026 10:00` (README `time_reformatted_by_spreadsheet`)."""
    when = draw(moments)
    first, second = draw(st.permutations([when.month, when.day]))
    dotted = draw(st.booleans())
    date = f"{when.day:02d}.{when.month:02d}.{when.year}" if dotted else f"{first}/{second}/"
    if not dotted:
        date += str(when.year) if draw(st.booleans()) else f"{when.year % 100:02d}"
    hour = when.hour
    suffix = ""
    if not dotted and draw(st.booleans()):
        hour, suffix = (hour % 12 or 12), draw(st.sampled_from([" PM", " AM", " pm", "AM"]))
    seconds = f":{when.second:02d}" if draw(st.booleans()) else ""
    return f"{date} {hour}:{when.minute:02d}{seconds}{suffix}"


@st.composite
def time_cells(draw) -> str:
    moments = st.one_of(
        PAST,
        st.datetimes(datetime(2026, 3, 8, 1, 30), datetime(2026, 3, 8, 3, 30)),  # the gap
        st.datetimes(datetime(2026, 11, 1, 0, 30), datetime(2026, 11, 1, 2, 30)),  # overlap
        st.datetimes(datetime(2026, 6, 30), datetime(2026, 7, 2)),  # around the future limit
        st.datetimes(datetime(1969, 12, 30), datetime(1970, 1, 2)),  # the range's first instant
        st.datetimes(datetime(2200, 12, 30), datetime(2201, 1, 2)),  # and its end
        st.datetimes(datetime(2026, 3, 29, 1, 30), datetime(2026, 3, 29, 3, 30)),  # Berlin's gap
        st.datetimes(datetime(2026, 10, 25, 1, 30), datetime(2026, 10, 25, 3, 30)),  # overlap
        st.datetimes(),
    )
    shaped = draw(standard_times(moments))
    recent = st.one_of(PAST, st.datetimes(datetime(2026, 6, 30), datetime(2026, 7, 2)))
    return draw(
        st.one_of(
            st.just(shaped),
            st.just(shaped),
            epoch_times(st.one_of(recent, st.datetimes(EPOCH, datetime(2300, 1, 1)))),
            spreadsheet_times(recent),
            st.sampled_from(
                [
                    "",
                    "2026-03-29 02:30:00",  # Berlin's gap
                    "2026-10-25 02:30:00",  # Berlin's overlap
                    "2026-07-01 14:05",  # no seconds: the future limit in New York
                    "2026-07-01 18:05Z",
                    "2026-07-01 10:00+0200",
                    "2026-07-01 10:00.5",  # a fraction needs its seconds
                    "0000000000",  # epoch: 1970-01-01T00:00:00Z
                    "7289654399",  # 2200-12-31T23:59:59Z, the last second
                    "7289654400",
                    "7289654399999",
                    "7289654400000",
                    "9999999999",
                    "1782936000",  # 2026-07-01T20:00:00Z: in the future
                    "1782929100",  # 18:05:00Z, exactly the future limit
                    "178290000",  # 9 digits
                    "17829000000",  # 11 digits
                    "+1782900000",
                    "1782900000.5",
                    "11/3/2026 8:30",
                    "3.11.2026 8:30:00",
                    "11/3/2026 8:30 PM",
                    "31.07.2026 10:00",
                    "7/1/26 14:05",
                    "2026-03-08 02:30:00",  # New York's gap
                    "2026-11-01 01:30:00",  # New York's overlap
                    "2026-11-01 01:30:00-04:00",
                    "2026-03-08T02:30:00Z",
                    "2026-02-30 10:00:00",
                    "2026-02-29 10:00:00",
                    "2024-02-29 10:00:00",
                    "2026-07-01 24:00:00",
                    "2026-07-01 23:60:00",
                    "2026-06-30 23:59:60",
                    "2026-13-01 00:00:00",
                    "0000-01-01 00:00:00",
                    "0001-01-01 00:00:00",
                    "9999-12-31 23:59:59",
                    "9999-12-31T23:59:59-23:59",  # past year 9999 in UTC
                    "0001-01-01T00:00:00+23:59",  # before year 1 in UTC
                    "0000-02-29 00:00:00",  # year 0 (1 BC), a leap year
                    "0000-00-00 00:00:00",  # a database's zero date
                    "2263-01-01 00:00:00",  # past pandas' nanosecond range
                    "1969-12-31T23:59:59.999999Z",  # one microsecond before the range
                    "1970-01-01T00:00:00Z",
                    "1969-12-31 19:00:00",  # New York (EST): 1970-01-01T00:00:00Z
                    "1969-12-31 18:59:59.999999",
                    "2200-12-31T23:59:59.999999Z",  # in range, but in the future
                    "2201-01-01T00:00:00Z",
                    "2026-01-01 10:00:00.1234567",  # a 7th fractional digit
                    "2026-01-01 10:00:00.1234560",
                    "29/02/0000 10:00",  # year 0 under time_format = "%d/%m/%Y %H:%M"
                    "31/12/9999 23:59",
                    "99991231235959",  # under time_format = "%Y%m%d%H%M%S"
                    "19691231235959",
                    "01/07/2026 10:00",  # valid under time_format = "%d/%m/%Y %H:%M"
                    "1/7/2026 9:05",
                    "08/03/2026 02:30",  # the gap, day first
                    "01/11/2026 01:30",  # the overlap, day first
                    "31/06/2026 10:00",
                    "20260701100000",  # valid under time_format = "%Y%m%d%H%M%S"
                    "20260308023000",
                    "20261301000000",
                    "07/01/2026 10:00:00",
                    "2026-07-01",
                    "2026-07-01 10:00",
                    "1782900000",
                    "1782900000000",
                    "2026-07-01T10:00:00+24:00",
                    "2026-07-01T10:00:00+05:60",
                    "2026-07-01 10:00:00 +05:00",
                    "2026-07-01T10:00:00.Z",
                    "2026-07-01T10:00:00z",
                    "2026-07-01T10:00:00UTC",
                    "2026-07-01 14:05:00",  # exactly the future limit
                    "2026-07-01 14:05:01",
                    "2026-07-01T18:05:00.000001Z",
                    "2026-07-01T10:00:00.1234567891",
                    "\u0662\u0660\u0662\u0666-07-01 10:00:00",
                    " 2026-07-01T10:00:00Z ",
                    "'+2026",
                ]
            ),
            st.text(max_size=8),
        )
    )


def _text_cells(limit: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                "",
                "Purchase",
                " Lead ",
                "a" * limit,
                "b" * (limit + 1),
                "x\ty",
                "\x7f",
                "Kauf\U0001f600",
                "x\u2028y",
                "\\N",
                "\\.",
                "x\x85y",
                "=1+1",
                '"quoted"',
                "line\nbreak",
                "\u202eabc",
            ]
        ),
        st.text(max_size=limit + 3),
    )


def _any_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda ups: "".join(c.upper() if u else c for c, u in zip(word, ups, strict=True))
    )


def _status_words() -> st.SearchStrategy[str]:
    """README: our four words and their aliases, any case, runs of inner spaces."""
    words = st.sampled_from(sorted(STATUS_WORDS)).flatmap(_any_case)
    return words.flatmap(
        lambda w: st.sampled_from([" ", "  ", "   "]).map(lambda gap: w.replace(" ", gap))
    )


STATUS_CELLS = st.one_of(
    st.sampled_from(STATUSES).flatmap(_any_case),
    _status_words(),
    st.sampled_from(
        [
            "",
            " Pending ",
            "approve",
            "ok",
            "Approved!",
            "\u0430pproved",
            "PENDİNG",
            "onhold",
            "on-hold",
            "paid",
            "refunded",
            "on\thold",
            " On  Hold ",
        ]
    ),
    st.text(max_size=6),
)
CURRENCY_CELLS = st.one_of(
    st.sampled_from(KNOWN_CURRENCIES).flatmap(_any_case),
    st.sampled_from(["", *NOT_CURRENCIES, " usd "]),
)
OTHER_CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "=cmd|' /C calc'!A0", "a,b;c\td", 'say "hi"', "two\r\nlines", "\x00"]),
    st.integers(10_000, 200_000).map(lambda n: ("long," * (n // 5 + 1))[:n]),  # a very long cell
)
VALID_CELLS: dict[str | None, Callable[[], st.SearchStrategy[str]]] = {
    "click_id": lambda: st.one_of(
        st.text(ID_CHARS, min_size=1, max_size=24).filter(lambda v: not MANGLED.fullmatch(v)),
        st.sampled_from(["c1", "c2"]),
    ),
    "payout": lambda: st.one_of(
        st.from_regex(r"\A[0-9]{1,12}(\.[0-9]{1,6})?\Z"),
        st.from_regex(r"\A[0-9]{1,12}(\.[0-9]{1,6})?\Z"),
        st.sampled_from(BIG_PAYOUTS[:2]),
        comma_payouts(),  # valid where the offer source reads decimal commas
    ),
    "conversion_time": lambda: st.one_of(
        standard_times(PAST),
        standard_times(PAST),
        epoch_times(st.datetimes(datetime(2001, 9, 10), datetime(2026, 6, 30))),
        st.just(""),
    ),
    "conversion_type": lambda: st.sampled_from(["", "Purchase", "Lead", "Kauf \U0001f600"]),
    "status": lambda: st.one_of(
        st.just(""), st.sampled_from(STATUSES).flatmap(_any_case), _status_words()
    ),
    "event_id": lambda: st.one_of(st.just(""), st.text(ID_CHARS, max_size=12)),
    "currency": lambda: st.one_of(
        st.just(""), st.sampled_from(KNOWN_CURRENCIES).flatmap(_any_case)
    ),
    None: lambda: OTHER_CELLS,
}
CELLS: dict[str | None, Callable[[], st.SearchStrategy[str]]] = {
    "click_id": click_id_cells,
    "payout": payout_cells,
    "conversion_time": time_cells,
    "conversion_type": lambda: _text_cells(64),
    "status": lambda: STATUS_CELLS,
    "event_id": lambda: _text_cells(255),
    "currency": lambda: CURRENCY_CELLS,
    None: lambda: OTHER_CELLS,
}


@st.composite
def spellings(draw, column: str) -> str:
    """One way a sender may write a column's header: an alias, any case, `_`/`-`/space alike."""
    word = draw(st.sampled_from(SPELLINGS[column]))
    word = re.sub(r"[ _]", lambda _: draw(st.sampled_from([" ", "_", "-", "__", " - "])), word)
    word = draw(_any_case(word))
    return draw(st.sampled_from(["", " ", "  "])) + word + draw(st.sampled_from(["", " "]))


UNKNOWN_HEADERS = [  # headers that name nothing of ours: ignored (or report columns)
    "notes",
    "Offer Name",
    "campaign",
    "",
    "line",
    "Reason Code",
    "reason",
    "sub2",
    "Sub ID 2",
    "IP",
    "Country",
    "User Agent",
]
# Unknown headers that name a field of ours by its words (README `unmapped_column`), whatever
# the kind: a status or click id stops any file, the others only an upload (a status file
# ignores them). None is a compound the README leaves open (`orderstatus`, `Click IP`).
FIELD_HEADERS = [
    "order status",
    "Conversion State",
    "currency used",
    "CCY",
    "payout 2",
    "Commission Amount (EUR)",
    "Revenue USD",
    "Value",
    "Payout Currency",
    "Transaction Date",
    "day",
    "Sub Click ID",
    "Click ID 2",
    "gbraid",
    "click",
    "Click Ref",
]
UPLOAD_FIELD_HEADERS = ["click date", "Last Click Time"]  # a time, or a click id: either stops it
# README "Times": Google Ads' first line, `Parameters:` and what follows it, with the zone it
# names (None: `invalid_parameters_line`).
PARAMETERS: list[tuple[str, str | None]] = [
    ("TimeZone=America/New_York", "America/New_York"),
    ("TimeZone=Europe/Berlin", "Europe/Berlin"),
    ("TimeZone=Asia/Kolkata", "Asia/Kolkata"),
    ("TimeZone=UTC", "UTC"),
    ("TimeZone=Etc/GMT+4", "Etc/GMT+4"),  # IANA's own name for UTC-4
    ("TimeZone=-0500", "-0500"),
    ("TimeZone=+05:30", "+05:30"),
    ("TimeZone=+0000", "+0000"),
    ("TimeZone=-03:00", "-03:00"),
    ("TimeZone=+1400", "+1400"),
    ("TimeZone=Mars/Olympus_Mons", None),
    ("TimeZone=america/new_york", None),
    ("TimeZone=+2500", None),
    ("TimeZone=+05:60", None),
    ("TimeZone=-05", None),
    ("TimeZone=", None),
    ("TimeZone", None),
    ("Currency=USD", None),
    ("Time Zone=UTC", None),
]
# The two halves of an unquoted decimal-comma payout (README `unquoted_decimal_comma`).
SPLIT_PAYOUTS = [("12", "50"), ("0", "5"), ("1.234", "56"), ("-3", "25"), ("12", "500000")]


@dataclass
class Model:
    """A table as intended, before it is written with some dialect."""

    kind: str
    names: list[str]
    rows: list[list[str]]  # data rows, blank rows ([] or empty cells) and malformed rows
    parameters: tuple[str, str | None] | None = None  # a Parameters: line and its zone


@st.composite
def models(draw, kind: str) -> Model:
    columns = list(KIND_COLUMNS[kind])
    chosen = draw(st.lists(st.sampled_from(columns), unique=True, max_size=len(columns)))
    required = [c for c in REQUIRED[kind] if not draw(rarely(20))]  # 1 in 20 missing
    header: list[tuple[str, str | None]] = [
        (draw(spellings(c)), c) for c in dict.fromkeys(required + chosen)
    ]
    others = draw(st.lists(st.sampled_from(UNKNOWN_HEADERS), max_size=2, unique_by=matched))
    if draw(rarely(12)):  # a header naming a field no column is mapped to
        fields = FIELD_HEADERS + (UPLOAD_FIELD_HEADERS if kind == "conversions" else [])
        others.append(draw(st.sampled_from(fields)))
    header += [(name, None) for name in others]
    if draw(rarely(15)):  # a column named twice (aliases count)
        twice = draw(st.sampled_from(columns))
        header.append((draw(spellings(twice)), twice))
    header = draw(st.permutations(header))
    width = len(header)
    crowded = {}
    if draw(rarely(3)):  # few keys: duplicates for every mode to resolve
        crowded = {
            "click_id": lambda: st.sampled_from(["c1", "c2", "c3"]),
            "payout": lambda: st.one_of(payout_cells(), st.sampled_from(BIG_PAYOUTS)),
            "conversion_type": lambda: st.sampled_from(["", "Purchase"]),
            "event_id": lambda: st.sampled_from(["", "e1", "e2"]),
        }
    rows = []
    for _ in range(draw(st.integers(0, 10))):
        shape = draw(st.sampled_from(["data"] * 17 + ["empty", "blank", "malformed", "split"]))
        if shape == "empty":
            rows.append([])  # an empty line
        elif shape == "blank":
            rows.append([draw(st.sampled_from(["", " ", "\t"])) for _ in range(width)])
        else:
            cells = VALID_CELLS if draw(st.booleans()) else CELLS  # a valid row, or anything
            row = [draw((crowded.get(c) or cells[c])()) for _, c in header]
            if shape == "malformed":  # a missing or an extra cell
                row = (
                    row[:-1]
                    if row and draw(st.booleans())
                    else row + draw(st.lists(OTHER_CELLS, min_size=1, max_size=3))
                )
            payout = next((i for i, (_, c) in enumerate(header) if c == "payout"), None)
            if shape == "split" and payout is not None:  # 12,50 written without its quotes
                row[payout : payout + 1] = draw(st.sampled_from(SPLIT_PAYOUTS))
            rows.append(row)
    parameters = None
    if draw(rarely(6)):  # Google Ads' first line: three in four name a zone
        valid = [p for p in PARAMETERS if p[1] is not None]
        invalid = [p for p in PARAMETERS if p[1] is None]
        parameters = draw(st.sampled_from(invalid if draw(rarely(4)) else valid))
    return Model(kind, [name for name, _ in header], rows, parameters)


@dataclass
class Upload:
    """A generated file: its bytes, and the model it was written from if it is a faithful copy."""

    raw: bytes
    kind: str
    model: Model | None
    how: str

    def __repr__(self) -> str:  # a failing example may hold 200 kB cells: show its shape
        raw = self.raw if len(self.raw) <= 600 else self.raw[:400] + b"..." + self.raw[-150:]
        return f"Upload({len(self.raw)} bytes {raw!r}, kind={self.kind!r}, {self.how})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' failure report
        printer.text(repr(self))


def _needs_quotes(cell: str, delimiter: str) -> bool:
    return any(c in cell for c in (delimiter, '"', "\r", "\n"))


@st.composite
def written(draw, model: Model) -> Upload:
    """Write a model with a random dialect; `model` stays set only if the bytes are faithful."""
    faithful = True
    delimiter = draw(st.sampled_from([",", ";", "\t", ",", ";", "\t", ",", "|"]))
    if delimiter == "|":
        faithful = False  # not a delimiter the README accepts: the header is one cell
    sep_line = draw(rarely(5))
    quoting = draw(st.sampled_from(["minimal", "all", "random"]))
    out: list[str] = []
    if sep_line:
        out.append(f"sep={delimiter}" + draw(st.sampled_from(["\n", "\r\n", "\r"])))
        if delimiter == "|":
            faithful = False
    if model.parameters is not None:  # as Google Ads and spreadsheets write it
        key, equals, value = model.parameters[0].partition("=")
        if key == "TimeZone":
            key = draw(_any_case(key))
        around = draw(st.sampled_from(["", "", " "]))
        line = draw(_any_case("Parameters")) + ":" + key + (around + equals + around + value)
        if draw(rarely(4)):
            line = f'"{line}"'
        line += draw(st.sampled_from(["", "", delimiter * 3, ",,"]))
        line += draw(st.sampled_from(["\n", "\r\n", "\r"]))
        out.insert(draw(st.integers(0, len(out))), line)
    previous = "\n"
    for row in [model.names, *model.rows]:
        cells = []
        for cell in row:
            quote = (
                _needs_quotes(cell, delimiter)
                or quoting == "all"
                or (quoting == "random" and draw(st.booleans()))
            )
            cells.append('"' + cell.replace('"', '""') + '"' if quote else cell)
        body = delimiter.join(cells)
        ends = ["\n", "\r\n", "\r"] if body or previous != "\r" else ["\r", "\r\n"]
        previous = draw(st.sampled_from(ends))  # CR then an empty LF line would be one CRLF
        out.append(body + previous)
    if draw(st.booleans()) and out:
        out[-1] = out[-1].rstrip("\r\n") if model.rows and model.rows[-1] else out[-1]
    text = "".join(out)
    encoding = draw(
        st.sampled_from(
            [
                "utf-8",
                "utf-8",
                "utf-8",
                "utf-8-sig",
                "utf-8-sig",
                "utf-16-le",
                "utf-16-be",
                "cp1252",
                "latin-1",
                "utf-16-nobom",
            ]
        )
    )
    if draw(rarely(20)):  # a BOM written twice
        text = "\ufeff" + text
        faithful = faithful and not sep_line and model.parameters is None
    if encoding in ("cp1252", "latin-1"):
        raw = text.encode(encoding, errors="replace")
        faithful = faithful and text.isascii()  # non-ASCII bytes are not UTF-8 (or other text)
    elif encoding == "utf-16-nobom":
        raw = text.encode("utf-16-le", errors="surrogatepass")
        faithful = False
    else:
        boms = {
            "utf-8": b"",
            "utf-8-sig": b"\xef\xbb\xbf",
            "utf-16-le": b"\xff\xfe",
            "utf-16-be": b"\xfe\xff",
        }
        codec = "utf-8" if encoding.startswith("utf-8") else encoding
        raw = boms[encoding] + text.encode(codec, errors="surrogatepass")
    how = f"{encoding} delimiter={delimiter!r} sep_line={sep_line} quoting={quoting}"
    if model.parameters is not None:
        how += f" parameters={model.parameters[0]!r}"
    return Upload(raw, model.kind, model if faithful else None, how)


@st.composite
def damaged(draw, upload: Upload) -> Upload:
    """The same file with a few bytes damaged: the model no longer describes it."""
    raw = bytearray(upload.raw)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw)))
        damage = draw(
            st.sampled_from(
                [
                    b'"',  # an unbalanced quote
                    b"\x00",
                    b"\xff",
                    b"\xc3",  # a truncated UTF-8 sequence
                    b"\xed\xa0\x80",  # a surrogate written as UTF-8 bytes
                    b"\r",
                    b"\n",
                    b",",
                    b";",
                    b"truncate",
                    b"cut",
                ]
            )
        )
        if damage == b"truncate":
            del raw[at:]
        elif damage == b"cut":
            del raw[at : at + draw(st.integers(1, 20))]
        else:
            raw[at:at] = damage
    return Upload(bytes(raw), upload.kind, None, upload.how + " damaged")


def random_bytes(kind: str) -> st.SearchStrategy[Upload]:
    header = {"conversions": b"click_id,payout,conversion_time\n", "status": b"click_id,status\n"}
    return st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: header[kind] + b),
        st.lists(
            st.sampled_from([b'"', b",", b";", b"\t", b"\r", b"\n", b"a", b"1", b"\x00", b" "]),
            max_size=80,
        ).map(lambda parts: header[kind] + b"".join(parts)),
        st.sampled_from(
            [
                b"",
                b"\xef\xbb\xbf",
                b"\xff\xfe",
                b"\xff\xfea",
                b"sep=;",
                b"sep=;\n",
                b"PK\x03\x04rest",
            ]
        ),
    ).map(lambda raw: Upload(raw, kind, None, "random bytes"))


def uploads(
    kinds: tuple[str, ...] = ("conversions", "conversions", "conversions", "status"),
) -> st.SearchStrategy[Upload]:
    def of_kind(kind: str) -> st.SearchStrategy[Upload]:
        clean = models(kind).flatmap(written)
        ways = {"clean": clean, "damaged": clean.flatmap(damaged), "random": random_bytes(kind)}
        return st.sampled_from(["clean"] * 6 + ["damaged"] * 2 + ["random"]).flatmap(ways.get)

    return st.sampled_from(kinds).flatmap(of_kind)
