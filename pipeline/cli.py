"""`conversions`: the command line (also `python -m pipeline`).

Each command resolves its settings (options, then environment, then config, then defaults), then
calls the library; everything a user reads about a command is in its parser below: the help of
every option, and an epilog with examples and the rules it follows (duplicate modes, how times are
read, the inbox layout, exit codes). tests/integration/test_cli_help.py keeps it complete.

Exit codes: 0 every file processed (rows may have been rejected: see the reports); 1 at least one
file quarantined or failed, or a file whose every data line was rejected (all_rows_rejected), or
the warehouse unreachable; 2 bad usage or configuration (the message says what and where);
128 + the signal (143 SIGTERM, 130 SIGINT) when stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from pipeline import __version__, export, runner, runtime, warehouse
from pipeline.config import load
from pipeline.console import Console
from pipeline.context import Context
from pipeline.core.model import ConfigError
from pipeline.core.vocabulary import DRY_RUN, FAILED, KINDS, MODES
from pipeline.datadir.claims import FileChanged
from pipeline.datadir.layout import is_url
from pipeline.ingest import Upload, ingest_file
from pipeline.results import FileResult
from pipeline.shutdown import Interrupted

EXIT_OK, EXIT_FILES, EXIT_USAGE = 0, 1, 2

# --- the help: what a media buyer reads in `conversions [COMMAND] --help` ---------------------

DESCRIPTION = """\
Load the conversion CSV files your networks and trackers export (missed
postbacks, payout corrections, status updates such as chargebacks) into the
conversions warehouse. Every row is checked and ends in one outcome: inserted,
updated, incremented, status_updated, ignored_duplicate or rejected. A rejected
row is written, with its reason, to a report you can fix and drop back in."""

# One line per duplicate postback mode (README "Duplicate postback modes"); a test checks that
# the keys are exactly vocabulary.MODES.
MODE_LINES = {
    "create_new": "every row is a new conversion, even for a click that already converted",
    "new_or_repeated": "every row is a new conversion, marked new (its click's first) or repeated",
    "ignore": "the click's first conversion counts; later rows are ignored_duplicate",
    "edit": "a later row updates the conversion with its non-empty payout, status, time, "
    "currency, event id",
    "increment_payout": "a later row adds its payout to the conversion's (upsells add up)",
    "ignore_by_event_id": "the event id (order id) is part of the key: the same one again is "
    "ignored; a row without one is rejected",
}

MODES_TEXT = "\n".join(
    [
        "Duplicate modes: what a row does when its click_id and conversion_type already",
        "have a conversion (a click's first row is always inserted). The mode comes from",
        "--mode, else the conversion type's duplicate_mode in the config, else the offer",
        "source's:",
        *(
            textwrap.fill(line, 78, initial_indent=f"  {mode:<19} ", subsequent_indent=" " * 22)
            for mode, line in MODE_LINES.items()
        ),
    ]
)

TIMES_TEXT = """\
How times are read: a conversion_time with an offset (Z, +02:00, -0500) or Unix
epoch digits is exact. A time without an offset is UTC by default, as the
tracker reads file times: to see 14:00 in a New York account's logs in July,
the file says 18:00. If a network exports its own local times, say so once per
offer source in the config: file_times = "account" (the account's time zone)
or file_times = "Europe/Berlin" (any zone name). A file whose first line is
Parameters:TimeZone=America/New_York (as Google Ads' template writes it) is
read in that zone. An empty time is the time the file was received.
To see how an offer source reads a file, and what to write:
  conversions template --offer-source NAME"""

INBOX_TEXT = """\
The inbox, inside the data directory (--home):
  inbox/<offer_source>/*.csv          conversion files of that offer source
  inbox/<offer_source>/status/*.csv   status updates (approve or decline
                                      conversions already loaded)
  inbox/<offer_source>/<mode>/*.csv   conversion files applied under one
                                      duplicate mode, e.g. inbox/maxbounty/edit/
                                      for payout corrections
Write a file under a temporary name (*.partial, *.tmp, or a name starting with
".") and rename it when it is complete. A processed file moves to archive/, a
refused one to quarantine/ (with a .reason.json saying why). Its reports go to
reports/<date>/: <name>.rejected.csv (the rejected rows with their reasons: fix
them and drop the file back in) and <name>.summary.json."""

EXIT_TEXT = """\
Exit codes:
  0    every file was processed (rows may have been rejected: read the reports)
  1    a file was quarantined or failed, a file had every row rejected
       (all_rows_rejected), or the warehouse could not be reached
  2    bad usage or configuration (the message says what is wrong and where)
  143  stopped by SIGTERM; 130 stopped by SIGINT (Ctrl-C): files not finished
       are back in the inbox"""

SETTINGS_TEXT = """\
Where the settings come from, first found wins:
  --config     $CONVERSIONS_CONFIG, ./conversions.toml
  --home       $CONVERSIONS_HOME, ./var
  --warehouse  $CONVERSIONS_WAREHOUSE_URL, settings.warehouse_url in the config,
               SQLite at <home>/warehouse.db"""


def _prose(text: str) -> str:
    """A paragraph wrapped as argparse wraps the option help (its own text is kept raw)."""
    return textwrap.fill(text, 78)


def _epilog(examples: str, *sections: str) -> str:
    return "\n\n".join(("Examples:\n" + examples, *sections))


EPILOGS = {
    None: _epilog(
        """\
  conversions ingest --offer-source maxbounty --dry-run network_export.csv
  conversions inbox
  conversions export --local-time -o conversions.csv
  conversions template --offer-source maxbounty
  conversions COMMAND --help          (each command's options and examples)""",
        EXIT_TEXT,
        SETTINGS_TEXT,
    ),
    "ingest": _epilog(
        """\
  conversions ingest --offer-source maxbounty network_export.csv
  conversions ingest --offer-source maxbounty --dry-run network_export.csv
  conversions ingest --offer-source maxbounty --kind status chargebacks.csv
  conversions ingest --offer-source maxbounty --mode edit --force corrected.csv""",
        MODES_TEXT,
        TIMES_TEXT,
        EXIT_TEXT,
    ),
    "inbox": _epilog(
        """\
  conversions inbox
  conversions inbox --dry-run
  conversions inbox --mode edit
  conversions inbox --home /data/conversions --config /data/conversions/conversions.toml""",
        INBOX_TEXT,
        MODES_TEXT,
        EXIT_TEXT,
    ),
    "export": _epilog(
        """\
  conversions export -o conversions.csv
  conversions export --offer-source maxbounty --local-time
  conversions export --format jsonl -o conversions.jsonl""",
        _prose(
            "Columns: conversion_id, offer_source, click_id, conversion_type, event_id, "
            "status, payout (exact, as loaded), currency, converted_at (UTC with Z, or with "
            "--local-time the account's time with its offset), duplicate_status (new, "
            "repeated or unknown)."
        ),
        _prose(
            "Exit codes: 0 written; 1 the warehouse could not be reached; 2 bad usage or "
            "configuration."
        ),
    ),
    "template": _epilog(
        """\
  conversions template -o upload.csv
  conversions template --kind status -o status_update.csv
  conversions template --offer-source maxbounty -o maxbounty.csv""",
        TIMES_TEXT,
        _prose("Exit codes: 0 written; 2 bad usage, an unknown offer source or a bad config."),
    ),
    "demo": _epilog(
        """\
  conversions demo
  conversions demo --home /tmp/conversions-demo""",
        _prose(
            "It copies the sample config and files into a fresh data directory (replacing an "
            "old one), runs the conversions_inbox Airflow DAG on them with SQLite, prints what "
            "happened to every file, where to look, and commands to try next."
        ),
        _prose("Exit codes: 0 the DAG run succeeded; 1 it did not (see the Airflow log it names)."),
    ),
}

HELP_FORMAT = argparse.RawDescriptionHelpFormatter
MODE_CHOICES = ", ".join(MODES)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="the TOML config: accounts, offer sources, their modes and time rules "
        "(else $CONVERSIONS_CONFIG, else ./conversions.toml)",
    )
    common.add_argument(
        "--warehouse",
        metavar="URL",
        help="the warehouse database, as an SQLAlchemy URL, e.g. "
        "postgresql+psycopg://user:pass@host/db (else $CONVERSIONS_WAREHOUSE_URL, else the "
        "config's settings.warehouse_url, else SQLite in --home)",
    )
    common.add_argument(
        "--home",
        metavar="DIR",
        help="the data directory: inbox, archive, quarantine, reports "
        "(else $CONVERSIONS_HOME, else ./var)",
    )

    p = argparse.ArgumentParser(
        prog="conversions",
        description=DESCRIPTION,
        epilog=EPILOGS[None],
        formatter_class=HELP_FORMAT,
    )
    p.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    sub = p.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        title="commands",
        help="`conversions COMMAND --help` says what it does, its options and examples",
    )

    def command(name: str, help: str, description: str, parents=()) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=list(parents),
            help=help,
            description=_prose(description),
            epilog=EPILOGS[name],
            formatter_class=HELP_FORMAT,
        )

    ing = command(
        "ingest",
        "load files you name, for one offer source",
        "Load the CSV files you name for one offer source, with the same checks and the same "
        "reports as the inbox. Each file is one transaction: all of its rows are applied, or "
        "none. The same bytes loaded again are a duplicate_file and change nothing.",
        [common],
    )
    ing.add_argument(
        "--offer-source",
        required=True,
        metavar="NAME",
        help="the offer source (network) the files come from, as named in the config: its "
        "account, time zone, duplicate mode and columns apply",
    )
    ing.add_argument(
        "--kind",
        choices=KINDS,
        default="conversions",
        help="conversions (the default): conversions and their corrections; status: status "
        "updates (click_id and status, e.g. declined for a chargeback) for conversions "
        "already loaded",
    )
    ing.add_argument(
        "--mode",
        choices=MODES,
        metavar="MODE",
        help=f"the duplicate mode for every row of these files, over the config's ({MODE_CHOICES};"
        " see Duplicate modes below)",
    )
    ing.add_argument(
        "--dry-run",
        action="store_true",
        help="a rehearsal: check every row and write the reports, with the outcomes a real run "
        "would have, but change no conversion in the warehouse",
    )
    ing.add_argument(
        "--force",
        action="store_true",
        help="load a file again even though these exact bytes were loaded before (also what a "
        "re-send under another --mode needs)",
    )
    ing.add_argument(
        "--received-at",
        metavar="ISO8601",
        help="when the file was received, with an offset, e.g. 2026-03-08T14:00:00Z (default: "
        "now); rows with an empty time take it, and a time more than a few minutes after it is "
        "rejected (time_in_future)",
    )
    ing.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="the CSV files to load (comma, semicolon or tab separated; a rejection report "
        "of ours can be loaded as it is; an s3:// URL, such as an archived original to "
        "replay, is streamed to a local copy first)",
    )
    ing.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON on stdout instead of the text: a list with one object "
        "per file (what its .summary.json holds)",
    )

    ibx = command(
        "inbox",
        "process every file waiting in the inbox, once",
        "Process every file waiting in the inbox once, as the scheduled Airflow DAG does: "
        "each offer source's conversion files first, then its status updates. A file still "
        "being written (changed in the last settle_seconds) waits for the next pass.",
        [common],
    )
    ibx.add_argument(
        "--dry-run",
        action="store_true",
        help="a rehearsal pass: process every waiting file as a dry run, write its reports, "
        "change no conversion in the warehouse, and leave the files in the inbox for the "
        "real run",
    )
    ibx.add_argument(
        "--mode",
        choices=MODES,
        metavar="MODE",
        help="apply every conversion file of this pass under MODE, over the config's modes and "
        f"the mode folders' ({MODE_CHOICES}); status files take no mode",
    )
    ibx.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON on stdout instead of the text: a list with one object "
        "per file (what its .summary.json holds)",
    )

    exp = command(
        "export",
        "write the current conversions as CSV or JSON lines",
        "Write the conversions in the warehouse as they are now (after every edit, increment "
        "and status update), one line per conversion.",
        [common],
    )
    exp.add_argument(
        "--offer-source", metavar="NAME", help="only this offer source's conversions (default: all)"
    )
    exp.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        default="csv",
        help="csv (the default) or jsonl: one JSON object per line",
    )
    exp.add_argument(
        "--local-time",
        action="store_true",
        help="converted_at in the account's time zone, with its offset, as the account's logs "
        "show it (default: UTC, with Z)",
    )
    exp.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")

    tpl = command(
        "template",
        "print an example CSV to fill in (and how an offer source reads it)",
        "Print a CSV header and an example row that the pipeline accepts as it is. With "
        "--offer-source, also say on stderr how that offer source reads a file: its times "
        "(what to write to see a given time in the account's logs), payouts, columns, status "
        "words and mode folders.",
    )
    tpl.add_argument(
        "--kind",
        choices=KINDS,
        default="conversions",
        help="conversions (the default) or status: a status update file",
    )
    tpl.add_argument(
        "--offer-source",
        metavar="NAME",
        help="also say how this offer source reads a file (times, payouts, columns), on stderr",
    )
    tpl.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write the CSV to FILE instead of stdout (the offer source's notes still go to "
        "stderr)",
    )
    tpl.add_argument(
        "--config",
        metavar="FILE",
        help="the TOML config that names the offer source (else $CONVERSIONS_CONFIG, else "
        "./conversions.toml)",
    )

    demo = command(
        "demo",
        "run the sample files end to end and show where to look",
        "Run the sample files (two accounts in different time zones, offer sources in "
        "different duplicate modes, bad rows, a duplicate, a status update, a stray file) "
        "through the real conversions_inbox Airflow DAG, on SQLite.",
    )
    demo.add_argument(
        "--home",
        metavar="DIR",
        help="the demo's data directory, replaced on every run (default: ./var/demo)",
    )
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
    config = load(runtime.resolve_config_path(args.config))
    home = runtime.resolve_home(args.home, config=config)
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
    with ctx.stop.handling(console.info), console.progress(len(args.files)) as (advance, rows):
        ctx = ctx.with_progress(rows)
        for name in args.files:
            with _local_file(name) as path:
                if path is None or not path.is_file():
                    console.error(f"{name}: no such file")
                    results.append(
                        FileResult(
                            _name(name), args.offer_source, args.kind, FAILED, detail="no such file"
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
    console.summary(results, home=ctx.datadir.location, as_json=args.json)
    return runner.exit_code(results, ctx)


@contextlib.contextmanager
def _local_file(name: str) -> Iterator[Path | None]:
    """A FILE argument as a local file: itself, or for an ``s3://`` URL (an archived original
    on object storage, to replay it) a copy streamed to a temporary file and removed after its
    ingest; None when there is no such object."""
    if not is_url(name):
        yield Path(name)
        return
    from pipeline.datadir.objectstore import spooled  # with its fsspec, when used

    with contextlib.ExitStack() as stack:
        try:
            path: Path | None = stack.enter_context(spooled(name))
        except FileNotFoundError:
            path = None
        yield path


def _name(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1] if is_url(name) else Path(name).name


def _inbox(args, console: Console) -> int:
    ctx = _context(args, console=console)
    with ctx.stop.handling(console.info), console.progress(None) as (advance, rows):
        ctx = ctx.with_progress(rows)
        results = runner.run_inbox(
            ctx, mode_override=args.mode, dry_run=args.dry_run, on_file=advance
        )
    console.summary(results, home=ctx.datadir.location, as_json=args.json)
    if args.dry_run:
        rehearsed = sum(1 for r in results if r.state == DRY_RUN)
        console.info(
            f"dry run: no conversion was changed; {rehearsed} file(s) rehearsed and left in "
            "the inbox for the real run (conversions inbox)"
        )
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
    notes = []
    if args.offer_source:  # an unknown name or a bad config is refused before writing anything
        source = load(runtime.resolve_config_path(args.config)).offer_source(args.offer_source)
        notes = export.template_notes(source, args.kind)
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            out.write(export.template(args.kind))
    else:
        sys.stdout.write(export.template(args.kind))
    for note in notes:
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
