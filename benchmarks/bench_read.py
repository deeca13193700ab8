"""The reader alone: `read_batches` (plain blocks by pyarrow) against the `csv` module's path.

    .venv/bin/python benchmarks/bench_read.py --rows 1000000 --reps 3

Both read the same generated file (`generate.py`, reused from `--file` if given) in one process,
interleaved csv/plain per repetition; it prints each run, the medians and their ratio, and checks
that both paths produced the same rows (a count and a digest of every cell and line number).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import generate
import pandas as pd

from pipeline import reader


def _read(read, path: Path) -> tuple[float, str]:
    header = reader.read_header(path, "conversions")
    digest = hashlib.sha256()
    started = time.perf_counter()
    batches = list(read(path, header, 50_000))
    seconds = time.perf_counter() - started
    for batch in batches:  # after the clock: what was read, not how fast it is hashed
        digest.update(batch.lines.tobytes())
        digest.update(pd.util.hash_pandas_object(batch.cells, index=False).to_numpy().tobytes())
        digest.update(repr(batch.malformed).encode() + str(batch.blank_lines).encode())
    return seconds, digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--file", type=Path, help="read this file (generated there if missing)")
    args = parser.parse_args()
    path = args.file or Path(tempfile.mkdtemp()) / "upload.csv"
    if not path.exists():
        generate.write(path, args.rows)
    runs: dict[str, list[float]] = {"csv": [], "plain": []}
    digests: dict[str, set[str]] = {"csv": set(), "plain": set()}
    for _ in range(args.reps):
        for name, read in (("csv", reader.read_batches_by_csv), ("plain", reader.read_batches)):
            seconds, digest = _read(read, path)
            runs[name].append(seconds)
            digests[name].add(digest)
    same = digests["csv"] == digests["plain"] and len(digests["csv"]) == 1
    csv_s, plain_s = (statistics.median(runs[n]) for n in ("csv", "plain"))
    size = path.stat().st_size / 1e6
    print(f"{path}: {size:.1f} MB; runs in order, csv then plain, {args.reps} repetitions")
    for name in runs:
        print(
            f"  {name:5} median {statistics.median(runs[name]):.2f} s  runs "
            + " / ".join(f"{s:.2f}" for s in runs[name])
        )
    print(f"  plain/csv {plain_s / csv_s:.2f}x; same rows, cells and lines: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
