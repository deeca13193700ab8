"""The import direction of `pipeline/`, read from the source (nothing is imported).

The packages are layers, and an import may only point down the table below: a module may import any
lower layer and its own layer (a package's modules import each other, `cli` calls `export`), never a
higher one; the cycle test keeps a layer's own arrows one-way. `pipeline.core` is the bottom (pure
code, nothing from outside `core`); `pipeline.airflow` is the top and only `dags/` (and tests)
import it; `pipeline/__init__.py` and `__main__.py` are exempt. Every import counts: at module
level, inside a function (lazy, to keep a DAG's parse light), or under `if TYPE_CHECKING:` — an
arrow is an arrow whenever it runs. The module graph within `pipeline` has no cycles.

A new module gets a row here (or a package's row covers it) before it is imported anywhere.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO

# Lowest first. A row names packages or modules of `pipeline`; a package covers its submodules.
LAYERS: dict[int, tuple[str, ...]] = {
    0: ("core",),
    1: ("config", "reader", "plain_block", "results", "shutdown", "progress"),
    2: ("datadir", "warehouse"),
    3: ("reports", "context"),
    4: ("ingest",),
    5: ("runner",),
    6: ("runtime", "export", "console", "demo", "cli"),
    7: ("airflow", "page"),  # the DAGs' tasks; the page inside Airflow (neither imports the other)
}
EXEMPT = {"pipeline", "pipeline.__main__"}

PIPELINE = REPO / "pipeline"
DAGS = REPO / "dags"


@dataclass(frozen=True)
class Import:
    """One import statement's arrow: who imports what, and where it is written."""

    importer: str  # dotted module name, or "dags/<file>.py"
    path: Path
    line: int
    imported: str  # the dotted pipeline module the arrow points to
    source: str  # the statement as written

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: {self.source}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def existing_module(dotted: str) -> str | None:
    """The deepest module of `dotted` that exists under pipeline/ (a file or a folder)."""
    parts = dotted.split(".")
    while parts:
        base = REPO.joinpath(*parts)
        if base.with_suffix(".py").is_file() or base.is_dir():
            return ".".join(parts)
        parts.pop()
    return None


def imports_of(path: Path, text: str | None = None) -> Iterator[Import]:
    """Every import of a pipeline module in one file: top level, lazy, or type-only."""
    text = path.read_text(encoding="utf-8") if text is None else text
    importer = module_name(path) if path.is_relative_to(PIPELINE) else str(path.relative_to(REPO))
    is_package = path.name == "__init__.py"
    tree = ast.parse(text, filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package
                package = importer.split(".") if is_package else importer.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            # `from pipeline import datadir` names a module; `from pipeline.x import f`, x.
            targets = [
                f"{base}.{alias.name}"
                if existing_module(f"{base}.{alias.name}") == f"{base}.{alias.name}"
                else base
                for alias in node.names
            ]
        else:
            continue
        source = " ".join((ast.get_source_segment(text, node) or "").split())
        for target in dict.fromkeys(targets):  # `from pipeline.x import a, b`: one arrow
            if target == "pipeline" or target.startswith("pipeline."):
                yield Import(importer, path, node.lineno, target, source)


def pipeline_files() -> list[Path]:
    return sorted(PIPELINE.rglob("*.py"))


@functools.cache
def all_imports() -> list[Import]:
    files = [*pipeline_files(), *sorted(DAGS.glob("*.py"))]
    return [i for path in files for i in imports_of(path)]


def unit_of(module: str) -> str | None:
    """The LAYERS row entry a pipeline module belongs to ("core", "warehouse", ...)."""
    rest = module.split(".")[1:]
    return rest[0] if rest else None


def layer_of(module: str) -> int | None:
    unit = unit_of(module)
    return next((n for n, units in LAYERS.items() if unit in units), None)


def test_every_module_has_a_layer() -> None:
    missing = [
        f"{path.relative_to(REPO)}: {module_name(path)} is in no row of LAYERS"
        for path in pipeline_files()
        if module_name(path) not in EXEMPT and layer_of(module_name(path)) is None
    ]
    assert not missing, "\n".join(missing)


def test_every_pipeline_import_names_a_module_that_exists() -> None:
    broken = [
        f"{i}: no module {i.imported} under pipeline/"
        for i in all_imports()
        if existing_module(i.imported) != i.imported
    ]
    assert not broken, "\n".join(broken)


def test_core_imports_nothing_from_pipeline_outside_core() -> None:
    wrong = [
        f"{i}: pipeline.core may import only pipeline.core, not {i.imported}"
        for i in all_imports()
        if unit_of(i.importer) == "core"
        and i.importer.startswith("pipeline.")
        and unit_of(i.imported) != "core"
    ]
    assert not wrong, "\n".join(wrong)


def test_only_dags_import_pipeline_airflow() -> None:
    wrong = [
        f"{i}: only dags/ (and pipeline.airflow itself) may import {i.imported}"
        for i in all_imports()
        if unit_of(i.imported) == "airflow"
        and i.importer.startswith("pipeline")
        and unit_of(i.importer) != "airflow"
    ]
    assert not wrong, "\n".join(wrong)


def test_layers_only_point_down() -> None:
    wrong = []
    for i in all_imports():
        if not i.importer.startswith("pipeline") or i.importer in EXEMPT:
            continue
        here, there = layer_of(i.importer), layer_of(i.imported)
        if here is None or there is None or unit_of(i.importer) == unit_of(i.imported):
            continue  # no layer: the first test says so; the same package: free
        if there > here:
            wrong.append(
                f"{i}: {unit_of(i.importer)} (layer {here}) imports {unit_of(i.imported)} "
                f"(layer {there}): points up"
            )
    assert not wrong, "\n".join(wrong)


def test_the_module_graph_has_no_cycles() -> None:
    edges: dict[str, dict[str, Import]] = {}
    for i in all_imports():
        if i.importer.startswith("pipeline") and i.imported != i.importer:
            edges.setdefault(i.importer, {}).setdefault(i.imported, i)
    cycles: list[list[Import]] = []
    state: dict[str, str] = {}  # "open" while on the DFS stack, then "done"
    stack: list[Import] = []

    def visit(module: str) -> None:
        state[module] = "open"
        for target, arrow in sorted(edges.get(module, {}).items()):
            if state.get(target) == "open":
                start = next(n for n, a in enumerate(stack) if a.importer == target)
                cycles.append([*stack[start:], arrow] if stack else [arrow])
            elif target not in state:
                stack.append(arrow)
                visit(target)
                stack.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "\n\n".join(
        "a cycle:\n" + "\n".join(f"  {a}" for a in cycle) for cycle in cycles
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from pipeline import datadir, warehouse", ["pipeline.datadir", "pipeline.warehouse"]),
        ("from pipeline.core.model import Config", ["pipeline.core.model"]),
        ("def f():\n    import pipeline.runner", ["pipeline.runner"]),
        ("from . import model", ["pipeline.core.model"]),
        ("from .vocabulary import MODES", ["pipeline.core.vocabulary"]),
        ("import pandas", []),
    ],
)
def test_the_reader_of_imports_sees_every_form(source: str, expected: list[str]) -> None:
    """The tests above can fail: top-level, lazy, absolute and relative imports all count."""
    path = PIPELINE / "core" / "probe.py"  # read as if it were pipeline.core.probe
    assert [i.imported for i in imports_of(path, source)] == expected
