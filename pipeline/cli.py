"""`conversions`: the command line. Thin: it resolves settings, then calls the library.

Exit codes: 0 every file processed (rows may have been rejected: see the reports); 1 at least one
file quarantined or failed, or a file whose every data line was rejected (all_rows_rejected);
2 bad usage or configuration (the message says what and where).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from pipeline import __version__, export, runner, runtime, warehouse
from pipeline.config import load
from pipeline.console import Console
from pipeline.context import Context
from pipeline.core.model import ConfigError
from pipeline.core.vocabulary import FAILED, KINDS, MODES
from pipeline.datadir.claims import FileChanged
from pipeline.ingest import Upload, ingest_file
from pipeline.results import FileResult
from pipeline.shutdown import Interrupted

EXIT_OK, EXIT_FILES, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", help="TOML config (else $CONVERSIONS_CONFIG, else ./conversions.toml)"
    )
    common.add_argument(
        "--warehouse",
        metavar="URL",
        help="SQLAlchemy URL (else "
        "$CONVERSIONS_WAREHOUSE_URL, else the config, else SQLite in --home)",
    )
    common.add_argument("--home", help="data directory (else $CONVERSIONS_HOME, else ./var)")

    p = argparse.ArgumentParser(prog="conversions", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ing = sub.add_parser("ingest", parents=[common], help="apply files directly")
    ing.add_argument("--offer-source", required=True, metavar="NAME")
    ing.add_argument("--kind", choices=KINDS, default="conversions")
    ing.add_argument("--mode", choices=MODES, help="duplicate mode for every row of this run")
    ing.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and write reports; change nothing in the warehouse",
    )
    ing.add_argument(
        "--force",
        action="store_true",
        help="re-apply a file whose bytes were applied before (also what a re-send of them "
        "under another --mode needs)",
    )
    ing.add_argument(
        "--received-at",
        metavar="ISO8601",
        help="the file's received time (default: now); empty times take it",
    )
    ing.add_argument("files", nargs="+", metavar="FILE")

    ibx = sub.add_parser("inbox", parents=[common], help="process everything in the inbox once")
    ibx.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)

    exp = sub.add_parser("export", parents=[common], help="current conversions")
    exp.add_argument("--offer-source", metavar="NAME")
    exp.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    exp.add_argument(
        "--local-time",
        action="store_true",
        help="converted_at in the account's time zone, with its offset",
    )
    exp.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")

    tpl = sub.add_parser("template", help="print a CSV header and an example row")
    tpl.add_argument("--kind", choices=KINDS, default="conversions")
    tpl.add_argument(
        "--offer-source",
        metavar="NAME",
        help="also say how this offer source reads a file (times, payouts, columns), on stderr",
    )
    tpl.add_argument(
        "--config", help="TOML config (else $CONVERSIONS_CONFIG, else ./conversions.toml)"
    )

    demo = sub.add_parser("demo", help="run the sample end to end and show where to look")
    demo.add_argument("--home", help="demo data directory (default: ./var/demo)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(sys.stderr)
    try:
        return _COMMANDS[args.command](args, console)
    except ConfigError as exc:
        console.error(str(exc))
        return EXIT_USAGE
    except warehouse.WarehouseError as exc:
        console.error(str(exc))
        return EXIT_FILES
    except DBAPIError as exc:  # the warehouse failed mid-run; a file in progress rolled back
        first = (str(exc).strip().splitlines() or [""])[0]
        console.error(f"warehouse error: {first}")
        return EXIT_FILES
    except KeyboardInterrupt:
        console.error("interrupted; files being processed were rolled back")
        return 130


def _context(args, offer_source: str | None = None, console: Console | None = None) -> Context:
    home = runtime.resolve_home(args.home)
    config = load(runtime.resolve_config_path(args.config))
    for warning in config.warnings if console else ():
        console.warn(f"config: {warning}")
    if offer_source:  # refuse an unknown name before touching the warehouse
        config.offer_source(offer_source)
    url = runtime.resolve_warehouse_url(args.warehouse, config, home)
    return runtime.open_context(config, home, url)


def _ingest(args, console: Console) -> int:
    received = None
    if args.received_at:
        example = "e.g. 2026-03-08T14:00:00Z"
        try:
            received = datetime.fromisoformat(args.received_at)
        except ValueError:
            raise ConfigError(
                "--received-at", "", f"not an ISO 8601 time: {args.received_at!r} ({example})"
            ) from None
        if received.tzinfo is None:
            raise ConfigError("--received-at", "", f"needs an offset or Z, {example}")
    ctx = _context(args, args.offer_source, console)
    results: list[FileResult] = []
    with ctx.stop.handling(console.info), console.progress(len(args.files)) as advance:
        for name in args.files:
            path = Path(name)
            if not path.is_file():
                console.error(f"{name}: no such file")
                results.append(
                    FileResult(
                        path.name, args.offer_source, args.kind, FAILED, detail="no such file"
                    )
                )
                continue
            upload = Upload(
                path,
                args.offer_source,
                args.kind,
                received_at=received,
                mode_override=args.mode,
                dry_run=args.dry_run,
                force=args.force,
            )
            try:
                with ctx.stop.interruptible():
                    results.append(ingest_file(ctx, upload))
            except (FileChanged, Interrupted) as exc:  # nothing of it was applied
                console.error(f"{name}: {exc}" if isinstance(exc, Interrupted) else str(exc))
                results.append(
                    FileResult(path.name, args.offer_source, args.kind, FAILED, detail=str(exc))
                )
            advance(results[-1])
    console.summary(results)
    return runner.exit_code(results, ctx)


def _inbox(args, console: Console) -> int:
    ctx = _context(args, console=console)
    with ctx.stop.handling(console.info), console.progress(None) as advance:
        results = runner.run_inbox(ctx, mode_override=args.mode, on_file=advance)
    console.summary(results)
    if ctx.stop.requested:
        back = sum(1 for r in results if r.state == FAILED)
        console.info(f"stopped by {ctx.stop.name}: {back} file(s) put back in the inbox")
    return runner.exit_code(results, ctx)


def _export(args, console: Console) -> int:
    ctx = _context(args, args.offer_source)
    with contextlib.ExitStack() as stack:
        out = (
            stack.enter_context(open(args.output, "w", encoding="utf-8", newline=""))
            if args.output
            else sys.stdout
        )
        export.write(
            ctx.engine,
            ctx.config,
            out,
            offer_source=args.offer_source,
            fmt=args.format,
            local_time=args.local_time,
        )
    return EXIT_OK


def _template(args, console: Console) -> int:
    sys.stdout.write(export.template(args.kind))
    if args.offer_source:
        source = load(runtime.resolve_config_path(args.config)).offer_source(args.offer_source)
        for note in export.template_notes(source, args.kind):
            console.info(f"# {note}")
    return EXIT_OK


def _demo(args, console: Console) -> int:
    from pipeline import demo

    home = Path(args.home or Path("var") / "demo").resolve()
    return demo.run(home, console)


_COMMANDS = {
    "ingest": _ingest,
    "inbox": _inbox,
    "export": _export,
    "template": _template,
    "demo": _demo,
}
