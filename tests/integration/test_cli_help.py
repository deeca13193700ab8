"""`conversions --help` teaches: every option explained, examples per command, the rules a media
buyer needs (exit codes, duplicate modes, times, the inbox); `template -o`; `inbox --dry-run`;
the demo's "Try:" commands work exactly as printed."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli, demo, export
from pipeline.core.vocabulary import MODES
from tests.helpers import REPO, SAMPLE_CONFIG, write_csv


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without CONVERSIONS_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERSIONS_")}
    return env | (extra or {})


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def commands() -> dict[str | None, argparse.ArgumentParser]:
    """The top-level parser (key None) and every subcommand's parser."""
    parser = cli._parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {None: parser, **sub.choices}


def help_of(command: str | None) -> str:
    parser = commands()[command]
    return parser.format_help()


# --- the help ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, "ingest", "inbox", "export", "template", "demo"])
def test_every_option_has_help_and_every_command_examples(command):
    parser = commands()[command]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # the commands' one-line summaries
                assert choice.help and choice.help != argparse.SUPPRESS, choice.dest
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{command or 'conversions'}: {name} has no help"
        assert action.help != argparse.SUPPRESS, f"{command or 'conversions'}: {name} is hidden"
    assert parser.formatter_class is argparse.RawDescriptionHelpFormatter
    assert parser.epilog, f"{command}: no epilog"
    examples = [
        line.strip()
        for line in parser.epilog.splitlines()
        if line.strip().startswith("conversions ")
    ]
    if command is not None:
        examples = [e for e in examples if e.startswith(f"conversions {command}")]
    assert len(examples) >= 2, (command, examples)
    for example in examples:  # every example parses
        argv = example.split("#")[0].split("(")[0].split()[1:]
        if "COMMAND" not in argv and "NAME" not in argv:
            cli._parser().parse_args(argv)


def test_every_command_is_in_the_parser_and_has_an_epilog():
    assert set(commands()) - {None} == set(cli._COMMANDS) == set(cli.EPILOGS) - {None}


def test_the_top_level_help_is_for_people_not_the_module_docstring():
    text = help_of(None)
    assert "Thin" not in text and "resolves settings" not in text
    assert cli.DESCRIPTION.splitlines()[0] in text
    for command in cli._COMMANDS:
        assert re.search(rf"^\s+{command}\s+\w", text, re.M), command


def test_exit_codes_are_in_the_help():
    for command in (None, "ingest", "inbox"):
        text = " ".join(help_of(command).split())
        for fragment in (
            "Exit codes:",
            "0 every file was processed",
            "1 a file was quarantined or failed",
            "all_rows_rejected",
            "the warehouse could not be reached",
            "2 bad usage or configuration",
            "143 stopped by SIGTERM",
            "130 stopped by SIGINT",
        ):
            assert fragment in text, (command, fragment)


def test_the_six_modes_one_line_each():
    assert tuple(cli.MODE_LINES) == MODES
    for command in ("ingest", "inbox"):
        text = help_of(command)
        section = text[text.index("Duplicate modes:") :]
        for mode in MODES:
            assert re.search(rf"^  {mode} +\w", section, re.M), (command, mode)


def test_times_and_the_inbox_layout_are_explained():
    for command in ("ingest", "template"):
        text = " ".join(help_of(command).split())
        for fragment in (
            "A time without an offset is UTC by default, as the tracker reads file times",
            'file_times = "account"',
            "Parameters:TimeZone=",
            "conversions template --offer-source NAME",
        ):
            assert fragment in text, (command, fragment)
    text = help_of("inbox")
    for fragment in (
        "inbox/<offer_source>/*.csv",
        "inbox/<offer_source>/status/*.csv",
        "inbox/<offer_source>/<mode>/*.csv",
        "quarantine/",
        "archive/",
        "reports/<date>/",
    ):
        assert fragment in text, fragment
    # --mode and --dry-run of inbox are documented, not hidden
    assert "--mode MODE" in text and "--dry-run" in text


def test_python_dash_m_pipeline_shows_the_same_help(tmp_path):
    done = run_module("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: conversions ")
    assert "Exit codes:" in done.stdout
    done = run_module("ingest", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "Duplicate modes:" in done.stdout


# --- template -o ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["conversions", "status"])
def test_template_output_writes_the_bytes_stdout_would(tmp_path, kind):
    config = write_csv(tmp_path / "conversions.toml", SAMPLE_CONFIG)
    args = ["template", "--kind", kind, "--offer-source", "maxbounty", "--config", str(config)]
    printed = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    out = tmp_path / "t.csv"
    written = subprocess.run(
        [sys.executable, "-m", "pipeline", *args, "-o", str(out)],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        timeout=120,
    )
    assert written.returncode == 0, written.stderr
    assert written.stdout == b""
    assert out.read_bytes() == printed.stdout == export.template(kind).encode("utf-8")
    assert written.stderr == printed.stderr and b"# offer source maxbounty" in written.stderr


def test_template_output_for_an_unknown_offer_source_writes_nothing(tmp_path):
    config = write_csv(tmp_path / "conversions.toml", SAMPLE_CONFIG)
    out = tmp_path / "t.csv"
    args = ["template", "--offer-source", "nope", "--config", str(config), "-o", str(out)]
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(args) == cli.EXIT_USAGE
    assert not out.exists()


# --- inbox --dry-run --------------------------------------------------------------------------


def test_inbox_dry_run_rehearses_and_leaves_the_inbox_as_it_was(tmp_path, warehouse_url, engine):
    config = write_csv(tmp_path / "conversions.toml", SAMPLE_CONFIG)
    home = tmp_path / "home"
    files = {
        "maxbounty/a.csv": "click_id,payout,conversion_time\nm1,5.00,2026-07-01 14:00:00\n"
        "m1,6.00,2026-07-01 15:00:00\nm2,x,2026-07-01 16:00:00\n",
        "maxbounty/edit/fix.csv": "click_id,payout,conversion_time\nm3,1.00,2026-07-01 14:00:00\n",
        "clickbank/c.csv": "click_id,payout,conversion_time\nc1,7.25,2026-07-01 10:00:00\n",
    }
    for relative, content in files.items():
        write_csv(home / "inbox" / relative, content)
    before = {
        p.relative_to(home / "inbox"): p.read_bytes()
        for p in (home / "inbox").rglob("*")
        if p.is_file()
    }
    options = ["--config", str(config), "--home", str(home), "--warehouse", warehouse_url]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["inbox", "--dry-run", *options])
    assert code == 0, err.getvalue()
    assert "3 file(s) rehearsed and left in the inbox" in err.getvalue()

    after = {
        p.relative_to(home / "inbox"): p.read_bytes()
        for p in (home / "inbox").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert after == before
    assert not [p for p in (home / "archive").rglob("*") if p.is_file()]
    assert not [p for p in (home / "quarantine").rglob("*") if p.is_file()]
    summaries = sorted(p.name for p in (home / "reports").rglob("*.summary.json"))
    assert len(summaries) == 3 and all(".dry-run-" in name for name in summaries), summaries
    assert len(list((home / "reports").rglob("a.*.dry-run-*.rejected.csv"))) == 1

    exported = io.StringIO()
    with contextlib.redirect_stdout(exported):
        assert cli.main(["export", *options]) == 0
    assert exported.getvalue().splitlines() == [",".join(export.COLUMNS)]

    # The real pass then applies every file, none of them taken for already seen.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["inbox", *options]) == 0
    assert not [p for p in (home / "inbox").rglob("*.csv")]
    exported = io.StringIO()
    with contextlib.redirect_stdout(exported):
        assert cli.main(["export", *options]) == 0
    assert len(exported.getvalue().splitlines()) == 1 + 3  # m1, m3, c1


def test_inbox_mode_is_accepted_with_dry_run(tmp_path):
    args = cli._parser().parse_args(["inbox", "--dry-run", "--mode", "edit"])
    assert (args.dry_run, args.mode) == (True, "edit")
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as exc:
        cli._parser().parse_args(["inbox", "--mode", "edt"])
    assert exc.value.code == 2


# --- the demo's "Try:" ------------------------------------------------------------------------


def test_the_try_command_is_the_script_beside_the_interpreter(tmp_path):
    venv_python = REPO / ".venv" / "bin" / "python"
    if (REPO / ".venv" / "bin" / "conversions").is_file():
        assert demo.conversions_command(str(venv_python)) == ".venv/bin/conversions"
    other = tmp_path / "env with space" / "bin"
    other.mkdir(parents=True)
    (other / "conversions").write_text("#!/bin/sh\n")
    assert demo.conversions_command(str(other / "python")) == f"'{other / 'conversions'}'"
    bare = tmp_path / "bare" / "bin"
    bare.mkdir(parents=True)
    assert demo.conversions_command(str(bare / "python")) == f"{bare / 'python'} -m pipeline"


def test_the_demo_try_commands_work_exactly_as_printed(tmp_path):
    home = tmp_path / "demo"
    done = run_module("demo", "--home", str(home), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    block = done.stdout[done.stdout.index("\nTry") :].splitlines()[2:]
    tries = [line.strip() for line in block if line.startswith("  ")]
    assert len(tries) == 3, done.stdout
    expected = demo.conversions_command()
    assert all(expected in line for line in tries), (expected, tries)
    for line in tries:
        ran = subprocess.run(
            line,
            shell=True,
            cwd=REPO,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, (line, ran.stderr)
        assert ran.stdout, line
    export_line = next(line for line in tries if " export " in line)
    ran = subprocess.run(
        export_line, shell=True, cwd=REPO, env=clean_env(), capture_output=True, text=True
    )
    assert ran.stdout.splitlines()[0] == ",".join(export.COLUMNS)
    assert len(ran.stdout.splitlines()) > 1  # the demo's conversions, in the demo's warehouse
