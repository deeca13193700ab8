"""Deterministic generator of realistic conversion uploads (and warehouse fill rows) for benchmarks.

Usage: .venv/bin/python benchmarks/generate.py --rows 1000000 -o conversions.csv [--seed 7]

Every value is built column-wise with numpy and pyarrow compute (no Python statement per row), so
5,000,000 rows take a few seconds. What a file holds (the fractions are approximate):

- click ids of 24-32 characters (70% lowercase hex of 24-32, 30% mixed-case alphanumeric of 32).
  A click id and its conversion type are a pure function of a 64-bit *key number*, so a row that
  repeats a key repeats both: a real duplicate under the key (offer source, click_id, type).
- 5% of rows repeat the key of an earlier row (mostly a recent one, as networks re-send
  postbacks; some from far back in the file).
- 1% bad rows: a payout with a decimal comma (`"12,50"`), a day-first time (`05/10/2026 14:03`),
  a click id mangled by a spreadsheet (`6.21E+23`), or a malformed row (6 or 8 cells).
- conversion types "" 40%, Lead 30%, Purchase 20%, Upsell 10%.
- statuses approved/pending/declined/empty, a few capitalised.
- times between 2026-09-02 and 2026-10-30 (no DST change in America/New_York), roughly in file
  order, as `2026-10-05 14:03:00` (account-local), `2026-10-05T14:03:00Z`, with an offset
  (`+02:00`, `-04:00`, `+05:30`), with fractional seconds, and a few empty.
- event ids on ~50% of rows; currencies USD/EUR/empty (and a few lowercase).

About 82 bytes per row. `RECEIVED_AT` is later than every generated time, so no row is in the
future when ingested with it.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = "click_id,payout,conversion_time,conversion_type,status,event_id,currency"
GENERATOR_VERSION = 1  # part of cached file names: bump when the output changes
RECEIVED_AT = "2026-11-15T00:00:00+00:00"
CHUNK_ROWS = 500_000

TYPES = np.array(["", "Lead", "Purchase", "Upsell"])
TYPE_CUTS = np.array([410, 710, 910])  # of 1024: "" 40%, Lead 30%, Purchase 20%, Upsell 10%
DUPLICATE_FRACTION = 0.05
BAD_FRACTION = 0.01

_T0 = int(np.datetime64("2026-09-02T00:00:00", "s").astype("int64"))
_T1 = int(np.datetime64("2026-10-30T00:00:00", "s").astype("int64"))
_DAY0 = _T0 // 86400
_DATES = pa.array(
    np.datetime_as_string(np.arange(_DAY0 - 2, _T1 // 86400 + 3).astype("datetime64[D]"))
)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_ALNUM = np.frombuffer(
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8
)
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _clock_table() -> pa.Array:
    s = np.arange(86400)
    hh, mm, ss = s // 3600, s // 60 % 60, s % 60
    two = np.char.zfill(np.arange(60).astype(str), 2)
    return pa.array(np.char.add(np.char.add(np.char.add(two[hh], ":"), two[mm]), ":" + two[ss]))


_CLOCK: pa.Array | None = None


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return z ^ (z >> np.uint64(31))


def namespace(name: str) -> int:
    """A base key number for a family of keys (disjoint from other names in practice)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") << 32


def click_ids(keys: np.ndarray) -> pa.Array:
    """The click id of each key number (deterministic, 24-32 characters)."""
    keys = np.asarray(keys, dtype=np.uint64)
    h = np.empty((len(keys), 4), dtype=np.uint64)
    h[:, 0] = _splitmix(keys)
    for j in range(1, 4):
        h[:, j] = _splitmix(h[:, j - 1])
    raw = h.view(np.uint8).reshape(len(keys), 32)
    selector = h[:, 3] >> np.uint64(40)
    is_hex = (selector & np.uint64(1023)) < 717
    chars = np.where(is_hex[:, None], _HEX[raw & 15], _ALNUM[raw % 62])
    lengths = np.where(is_hex, 24 + (h[:, 2] >> np.uint64(59)).astype(np.int64) % 9, 32)
    data = chars[np.arange(32) < lengths[:, None]]
    offsets = np.zeros(len(keys) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.StringArray.from_buffers(
        len(keys), pa.py_buffer(offsets), pa.py_buffer(data.tobytes())
    )


def conversion_types(keys: np.ndarray) -> np.ndarray:
    """The conversion type index (into TYPES) of each key number."""
    h = _splitmix(_splitmix(np.asarray(keys, dtype=np.uint64)) ^ np.uint64(0x5851F42D4C957F2D))
    return np.searchsorted(TYPE_CUTS, (h >> np.uint64(20)) & np.uint64(1023), side="right")


def _pick(rng: np.random.Generator, n: int, values: list[str], weights: list[float]) -> pa.Array:
    idx = rng.choice(len(values), size=n, p=np.asarray(weights) / sum(weights))
    return pc.take(pa.array(values), pa.array(idx))


def _join(*cols, sep: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*cols, sep)


def _digits(values: np.ndarray) -> pa.Array:
    return pa.array(values).cast(pa.string())


def _times(rng: np.random.Generator, secs: np.ndarray) -> pa.Array:
    """Mixed time formats for UTC-ish seconds `secs`."""
    global _CLOCK
    if _CLOCK is None:
        _CLOCK = _clock_table()
    n = len(secs)
    date = pc.take(_DATES, pa.array(secs // 86400 - (_DAY0 - 2)))
    clock = pc.take(_CLOCK, pa.array(secs % 86400))
    frac = pc.take(
        pa.array([".250", ".5", ".123456", ".000001"]), pa.array(rng.integers(0, 4, size=n))
    )
    offset = pc.take(
        pa.array(["+02:00", "-04:00", "+05:30", "+0100"]), pa.array(rng.integers(0, 4, size=n))
    )
    variants = [
        _join(date, " ", clock),  # account-local wall time
        _join(date, "T", clock, "Z"),
        _join(date, " ", clock, offset),
        _join(date, " ", clock, frac),
        _join(date, "T", clock, frac, "Z"),
        pa.scalar(""),  # empty: the file's received time
    ]
    kind = rng.choice(6, size=n, p=[0.45, 0.20, 0.20, 0.10, 0.04, 0.01])
    return pc.choose(pa.array(kind.astype(np.int8)), *variants)


@dataclass
class Plan:
    """Per row of a whole file: its key number, and whether it repeats an earlier row."""

    keys: np.ndarray  # uint64
    duplicate: np.ndarray  # bool
    bad: np.ndarray  # int8: 0 good, 1 payout "12,50", 2 bad time, 3 mangled id, 4/5 malformed


def plan(
    rows: int,
    seed: int,
    *,
    name: str = "upload",
    existing_base: int | None = None,
    existing_rows: int = 0,
    existing_fraction: float = 0.0,
) -> Plan:
    """Key numbers for a file of `rows` rows.

    With `existing_*`, about `existing_fraction` of the original (non-repeated) rows take a key
    number from `existing_base + [0, existing_rows)`: a click id the warehouse already holds.
    """
    rng = np.random.default_rng([seed, 1])
    base = np.uint64(namespace(f"{name}:{seed}"))
    duplicate = rng.random(rows) < DUPLICATE_FRACTION
    if rows:
        duplicate[0] = False
    original_keys = base + np.arange(rows, dtype=np.uint64)
    if existing_rows and existing_fraction:
        hit = rng.random(rows) < existing_fraction
        picked = rng.integers(0, existing_rows, size=int(hit.sum()), dtype=np.uint64)
        original_keys[hit] = np.uint64(existing_base) + picked
    keys = original_keys.copy()
    originals = np.flatnonzero(~duplicate)
    dup_rows = np.flatnonzero(duplicate)
    before = np.cumsum(~duplicate)[dup_rows]  # originals before each repeated row (>= 1)
    near = rng.random(len(dup_rows)) < 0.7
    back = np.where(
        near,
        np.minimum(rng.geometric(1 / 300, size=len(dup_rows)), before) - 1,
        (rng.random(len(dup_rows)) * before).astype(np.int64),
    )
    source = np.where(near, before - 1 - back, back)
    keys[dup_rows] = original_keys[originals[source]]
    bad = np.zeros(rows, dtype=np.int8)
    bad_rows = np.flatnonzero(
        (rng.random(rows) < BAD_FRACTION / (1 - DUPLICATE_FRACTION)) & ~duplicate
    )
    bad[bad_rows] = rng.choice([1, 2, 3, 4, 5], size=len(bad_rows), p=[0.3, 0.3, 0.2, 0.1, 0.1])
    return Plan(keys, duplicate, bad)


def csv_chunks(rows: int, seed: int, *, malformed: bool = True, **plan_args) -> Iterator[bytes]:
    """The file's data lines (no header) as byte blocks of up to CHUNK_ROWS rows.

    `malformed=False` writes the malformed rows with the right number of cells instead (and
    every other byte the same): a twin of the file that PostgreSQL's COPY accepts.
    """
    p = plan(rows, seed, **plan_args)
    for start in range(0, rows, CHUNK_ROWS):
        stop = min(rows, start + CHUNK_ROWS)
        yield _chunk(p, start, stop, seed, malformed)


def _chunk(p: Plan, start: int, stop: int, seed: int, malformed: bool = True) -> bytes:
    rng = np.random.default_rng([seed, 2, start])
    n = stop - start
    keys = p.keys[start:stop]
    bad = p.bad[start:stop]

    click = click_ids(keys)
    click = pc.if_else(pa.array(bad == 3), pa.scalar("6.21E+23"), click)

    cents = rng.integers(50, 15_000, size=n)
    whole = rng.random(n) < 0.05
    cents = np.where(whole, cents // 100 * 100, cents)
    payout = pc.if_else(
        pa.array(whole),
        _digits(cents // 100),
        _join(_digits(cents // 100), ".", pc.utf8_lpad(_digits(cents % 100), 2, "0")),
    )
    payout = pc.if_else(
        pa.array(bad == 1),
        _join('"', _digits(cents // 100), ",", pc.utf8_lpad(_digits(cents % 100), 2, "0"), '"'),
        payout,
    )

    span = _T1 - _T0 - 4 * 3600
    secs = _T0 + 2 * 3600 + (np.arange(start, stop) * (span / len(p.keys))).astype(np.int64)
    secs = np.clip(secs + rng.integers(-7200, 7200, size=n), _T0, _T1)
    when = _times(rng, secs)
    day_first = _join(
        pc.utf8_slice_codeunits(pc.take(_DATES, pa.array(secs // 86400 - (_DAY0 - 2))), 8, 10),
        "/",
        pc.utf8_slice_codeunits(pc.take(_DATES, pa.array(secs // 86400 - (_DAY0 - 2))), 5, 7),
        "/2026 14:03",
    )
    when = pc.if_else(pa.array(bad == 2), day_first, when)

    ctype = pc.take(pa.array(TYPES), pa.array(conversion_types(keys)))
    status = _pick(
        rng,
        n,
        ["approved", "pending", "declined", "", "Approved", "DECLINED"],
        [50, 20, 10, 15, 4, 1],
    )
    has_event = rng.random(n) < 0.5
    event = pc.if_else(
        pa.array(has_event),
        _join("ord-", _digits(rng.integers(10**11, 10**12, size=n))),
        pa.scalar(""),
    )
    currency = _pick(rng, n, ["USD", "EUR", "", "usd"], [65, 13, 20, 2])

    line = _join(click, payout, when, ctype, status, event, currency, sep=",")
    short = _join(click, payout, when, ctype, status, event, sep=",")  # 6 cells
    if malformed:
        line = pc.if_else(pa.array(bad == 4), short, line)
        line = pc.if_else(pa.array(bad == 5), _join(line, ",extra"), line)  # 8 cells
    return _bytes(_join(line, "\n"))


def _bytes(line: pa.Array | pa.ChunkedArray) -> bytes:
    """The concatenated values of a string array."""
    if isinstance(line, pa.ChunkedArray):
        line = line.combine_chunks()
    offsets = np.frombuffer(
        line.buffers()[1], dtype=np.int32, count=len(line) + 1, offset=line.offset * 4
    )
    return line.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


FILL_COLUMNS = (
    "conversion_id",
    "offer_source",
    "click_id",
    "conversion_type",
    "event_id",
    "status",
    "payout",
    "currency",
    "converted_at",
    "duplicate_status",
    "file_id",
    "line",
    "created_at",
    "updated_at",
)


def fill_base(seed: int) -> int:
    """The key numbers of a warehouse fill are fill_base(seed) + [0, rows)."""
    return namespace(f"fill:{seed}")


def fill_chunks(
    rows: int, seed: int, *, offer_source: str, file_id: int, chunk_rows: int = CHUNK_ROWS
) -> Iterator[bytes]:
    """CSV blocks (no header, FILL_COLUMNS order) of conversions as the warehouse stores them.

    One conversion per key number fill_base(seed) + i, with the click id and type an upload
    planned with `existing_base=fill_base(seed)` gives that key, so such rows are duplicates of
    these. `event_id` is empty (NULL): load with FORCE_NOT_NULL (conversion_type) so the default
    type stays the empty string.
    """
    base = np.uint64(fill_base(seed))
    for start in range(0, rows, chunk_rows):
        stop = min(rows, start + chunk_rows)
        n = stop - start
        rng = np.random.default_rng([seed, 3, start])
        index = np.arange(start, stop)
        keys = base + index.astype(np.uint64)
        first = _T0 - 90 * 86400  # the warehouse's history reaches back three months
        secs = first + (index * ((_T1 - first) / max(rows, 1))).astype(np.int64)
        cents = rng.integers(50, 15_000, size=n)
        line = _join(
            _join("fill-", _digits(index)),
            offer_source,
            click_ids(keys),
            pc.take(pa.array(TYPES), pa.array(conversion_types(keys))),
            "",
            _pick(rng, n, ["approved", "pending", "declined"], [70, 20, 10]),
            _join(_digits(cents // 100), ".", pc.utf8_lpad(_digits(cents % 100), 2, "0")),
            _pick(rng, n, ["USD", "EUR"], [85, 15]),
            _join(pa.array(np.datetime_as_string(secs.astype("datetime64[s]"))), "+00"),
            "unknown",
            str(file_id),
            _digits(index + 2),
            "2026-09-01 00:00:00+00",
            "2026-09-01 00:00:00+00",
            sep=",",
        )
        yield _bytes(_join(line, "\n"))


def write(
    path: str | Path, rows: int, seed: int = 7, *, malformed: bool = True, **plan_args
) -> int:
    """Write a file of `rows` data lines; returns its size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(HEADER.encode() + b"\n")
        for block in csv_chunks(rows, seed, malformed=malformed, **plan_args):
            fh.write(block)
    tmp.replace(path)
    return path.stat().st_size


def head(src: str | Path, dst: str | Path, rows: int) -> None:
    """The header and the first `rows` data lines of `src` (generated lines never span lines)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        buf = io.BufferedWriter(fout)
        for i, line in enumerate(fin):
            if i > rows:
                break
            buf.write(line)
        buf.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    t = time.perf_counter()
    size = write(args.output, args.rows, args.seed)
    seconds = time.perf_counter() - t
    print(
        f"{args.output}: {args.rows:,} rows, {size / 1e6:.1f} MB "
        f"({size / max(args.rows, 1):.1f} bytes/row) in {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
