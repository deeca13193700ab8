"""Object storage against the local disk: one inbox pass over one big file, each way.

    .venv/bin/python benchmarks/bench_objectstore.py              # N = 1,000,000 rows
    .venv/bin/python benchmarks/bench_objectstore.py --rows 20000 # a quick check

The file is benchmarks/generate.py's (as `bench_ingest.py` uses). A real S3 API runs on
loopback (moto's ThreadedMotoServer, in this parent process, so its memory is not the
children's); the file is uploaded to a new bucket, and copied into a local data directory. Then,
each in a fresh Python process (so its peak RSS is its own), `runner.run_inbox` makes one whole
pass into a fresh PostgreSQL warehouse (a schema of its own):

  local  CONVERSIONS_HOME a folder: a rename claim, read from disk, reports and archive on disk
  s3     CONVERSIONS_HOME=s3://bucket/home: a claim row, the object streamed to the spool,
         reports written to the bucket, the original copied server-side to the archive

"wall s" is the pass itself (claim to archive), measured inside its process; peak RSS is the
process's high-water mark (VmHWM), imports included. One run each, printed side by side; the
numbers are evidence for the README, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench_ingest import (  # noqa: E402
    CONFIG,
    DEFAULT_URL,
    MARKER,
    OFFER_SOURCE,
    Postgres,
    peak_rss_mb,
    versions,
)


def child(spec: dict) -> None:
    from pipeline import config, runner, warehouse
    from pipeline.context import Context
    from pipeline.datadir import LocalDataDir
    from pipeline.datadir.objectstore import ObjectStoreDataDir

    base = peak_rss_mb()
    settings = {**CONFIG, "settings": {"settle_seconds": 0}}
    engine = warehouse.connect(spec["url"])
    home = spec["home"]
    datadir = ObjectStoreDataDir(home, engine) if "://" in home else LocalDataDir(home)
    ctx = Context(config.parse(settings, "benchmark"), engine, datadir)
    started = time.perf_counter()
    [result] = runner.run_inbox(ctx)
    wall = time.perf_counter() - started
    engine.dispose()
    out = {
        "wall": wall,
        "rss_base_mb": base,
        "rss_peak_mb": peak_rss_mb(),
        "state": result.state,
        "data_lines": result.data_lines,
        "outcomes": result.outcomes,
        "report": result.report_path,
    }
    sys.stdout.write(MARKER + json.dumps(out, default=str) + "\n")


def run(spec: dict, env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=3600,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode or not lines:
        sys.stdout.write(proc.stdout)
        raise SystemExit(f"the {spec['name']} pass failed (exit code {proc.returncode})")
    return json.loads(lines[-1][len(MARKER) :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL (a schema per pass)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0

    import logging

    import boto3
    import generate
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    work = Path(tempfile.mkdtemp(prefix="bench-objectstore-"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    pg = Postgres(args.url)
    try:
        host, port = server.get_host_and_port()
        os.environ.update(  # the standard AWS environment, for this process and the passes
            AWS_ENDPOINT_URL=f"http://{host}:{port}",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )
        env = dict(os.environ)
        source = work / f"bench_{args.rows}.csv"
        size = generate.write(source, args.rows, args.seed)
        local_home = work / "home"
        (local_home / "inbox" / OFFER_SOURCE).mkdir(parents=True)
        shutil.copy(source, local_home / "inbox" / OFFER_SOURCE / source.name)
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        s3.upload_file(str(source), bucket, f"home/inbox/{OFFER_SOURCE}/{source.name}")
        print(f"{args.rows:,} rows, {size / 1e6:.1f} MB; {versions(pg, None)}")
        results = {}
        for name, home in (("local", str(local_home)), ("s3", f"s3://{bucket}/home")):
            spec = {"name": name, "home": home, "url": pg.fresh_schema(name)}
            results[name] = run(spec, env)
        print()
        print("| data directory | wall s | peak RSS MB | state | data lines | rejected |")
        print("| --- | ---: | ---: | --- | ---: | ---: |")
        for name, res in results.items():
            print(
                f"| {name} | {res['wall']:.1f} | {res['rss_peak_mb']:.0f} | {res['state']} | "
                f"{res['data_lines']:,} | {res['outcomes']['rejected']:,} |"
            )
        ratio = results["s3"]["wall"] / results["local"]["wall"]
        print(f"\ns3 / local wall time: {ratio:.2f}x")
    finally:
        pg.close()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
