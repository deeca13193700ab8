"""Step (g) of the benchmark: dlt's merge of the generated file into PostgreSQL.

What a data engineer would write instead of our pipeline: a pyarrow CSV reader as a dlt resource,
`write_disposition="merge"` on the key (click_id, conversion_type), the postgres destination with
its COPY loader (`loader_file_format="csv"`: dlt writes CSV files with pyarrow and loads each with
`COPY ... FROM STDIN`), the default merge strategy (delete-insert through a staging dataset,
deduplicating the staged rows on the primary key). Every column is read as text, as the COPY floors
read it: the file's bad values (`"12,50"`, day-first times) would otherwise stop pyarrow's type
inference. Rows with the wrong number of cells are skipped. It does far less than `ingest_file`: no
validation, no time zones, no increments, no history, no report.

Run by bench_ingest.py with the python of benchmarks/.dlt-venv (dlt is pinned in
dlt-requirements.txt and never installed into the project's environment), as

    .dlt-venv/bin/python dlt_merge.py '{"path": ..., "credentials": {...}, "dataset": ...,
                                        "work": ...}'

where credentials holds database, username, password, host and port (dlt insists on a password:
under trust authentication the benchmark passes a placeholder, which the server ignores).

It prints one line `BENCH_RESULT {json}` like bench_ingest.py's own child steps.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

MARKER = "BENCH_RESULT "
COLUMNS = (
    "click_id",
    "payout",
    "conversion_time",
    "conversion_type",
    "status",
    "event_id",
    "currency",
)
KEY = ("click_id", "conversion_type")
BLOCK = 16 << 20


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmHWM:\s+(\d+)", fh.read())[1]) / 1024


def main(spec: dict) -> dict:
    # No telemetry, and dlt's state and files in the benchmark's scratch directory.
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["DLT_DATA_DIR"] = os.path.join(spec["work"], "dlt-data")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")  # not a warning per arrow batch
    import dlt
    import pyarrow as pa
    import pyarrow.csv as pacsv

    base = peak_rss_mb()
    skipped = 0

    def skip(_row) -> str:
        nonlocal skipped
        skipped += 1
        return "skip"

    @dlt.resource(
        name="conversions",
        write_disposition="merge",
        primary_key=KEY,
        columns={c: {"data_type": "text", "nullable": c not in KEY} for c in COLUMNS},
    )
    def conversions():
        reader = pacsv.open_csv(
            spec["path"],
            read_options=pacsv.ReadOptions(block_size=BLOCK),
            parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(COLUMNS, pa.string())),
        )
        for batch in reader:
            yield pa.Table.from_batches([batch])

    started = time.perf_counter()
    pipeline = dlt.pipeline(
        pipeline_name="bench_dlt_merge",
        pipelines_dir=os.path.join(spec["work"], "dlt-pipelines"),
        destination=dlt.destinations.postgres(credentials=spec["credentials"]),
        dataset_name=spec["dataset"],
        progress="log" if spec.get("progress") else None,
    )
    pipeline.run(conversions(), loader_file_format="csv")
    wall = time.perf_counter() - started

    steps = {}
    trace = pipeline.last_trace
    for step in trace.steps if trace else []:
        if step.started_at and step.finished_at:
            steps[step.step] = round((step.finished_at - step.started_at).total_seconds(), 2)
    with pipeline.sql_client() as client:
        rows = client.execute_sql("SELECT count(*) FROM conversions")[0][0]
    return {
        "wall": wall,
        "rss_base_mb": base,
        "rss_peak_mb": peak_rss_mb(),
        "detail": {
            "rows_in_table": rows,
            "malformed_rows_skipped": skipped,
            "steps_s": steps,
            "dlt": dlt.__version__,
        },
    }


if __name__ == "__main__":
    out = main(json.loads(sys.argv[1]))
    sys.stdout.write(MARKER + json.dumps(out, default=str) + "\n")
