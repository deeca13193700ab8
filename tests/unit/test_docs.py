"""The README stays true: its reason table is the catalogue, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.core import reasons

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_reason_table_is_the_catalogue():
    block = re.search(r"<!-- reasons:start -->\n(.*?)\n<!-- reasons:end -->", README, re.S)
    assert block, "the README lost its reason table markers"
    assert block.group(1) == reasons.markdown_table(), (
        "README reason table is out of date: regenerate it from `python -m pipeline.core.reasons`"
    )
    # Every table row has exactly four cells (a stray '|' would split one).
    for row in block.group(1).splitlines()[2:]:
        assert len(re.split(r"(?<!\\)\|", row.strip("|"))) == 4, row


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
    commands = [line.split("#")[0].strip() for line in first_block if line.strip()]
    assert commands == ["./run demo", "./run test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "./run test" in ci and "CONVERSIONS_TEST_POSTGRES_URL" in ci
