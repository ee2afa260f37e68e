"""The package layout is the data flow: stages import only earlier stages, nothing imports in a circle,
and modules and functions stay small enough to read (docs/ARCHITECTURE.md describes the same order)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dsdi"
# Pipeline order: a module may import its own stage and any stage before it, never a later one.
# "base" is the top level of dsdi/ (errors, files, options, progress, runtime, workspace).
STAGES = ("base", "labels", "models", "train", "video", "index", "trecvid", "rank", "report", "search", "synth",
          "study", "cli")
MAX_TOP_LEVEL_MODULES = 12
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> str:
    if module == "dsdi.__main__":  # ``python -m dsdi``: the command line's entry point
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES) else "base"


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """dsdi modules that ``path`` imports anywhere (top level or inside functions), as module names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in known}


@pytest.fixture(scope="module")
def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}


def test_every_module_belongs_to_a_known_stage(import_graph):
    assert {stage_of(name) for name in import_graph} <= set(STAGES)


def test_no_stage_imports_a_later_stage(import_graph):
    upward = sorted(f"{name} -> {target}" for name, targets in import_graph.items() for target in targets
                    if STAGES.index(stage_of(target)) > STAGES.index(stage_of(name)))
    assert upward == []


def test_no_import_circle(import_graph):
    """Depth-first search over module imports (a package's __init__ counts as a module of its own)."""
    state: dict[str, int] = {}
    circles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(import_graph[name]):
            if state.get(target) == 1:
                circles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[name] = 2

    for name in sorted(import_graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_top_level_stays_small():
    modules = [path.name for path in PACKAGE.glob("*.py")]
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


def test_modules_and_functions_stay_readable():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines")
    assert too_long == []


def test_project_files_describe_the_product_not_its_history():
    """No tracked file speaks of issue numbers (the history lives in git log)."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    found = subprocess.run(["git", "grep", "-n", "-i", "-E", "issue [0-9]"], cwd=REPO, capture_output=True, text=True)
    assert found.stdout == ""
