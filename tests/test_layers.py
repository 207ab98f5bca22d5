"""The layers of the code base: search_spaces -> orchestrator -> trainables, the analysis beside
them. Lower layers never import higher ones, and Ray stays in the Tune-facing modules."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The only modules that may import Ray: the orchestrator's Tune-facing ones and the trainable wrapper.
RAY_MODULES = {"orchestrator/results.py", "orchestrator/sweep.py", "orchestrator/cluster.py",
               "orchestrator/tune_mapping.py", "trainables/tune_trainable.py",
               "orchestrator/progress.py", "orchestrator/callbacks.py", "orchestrator/guard.py"}
# files under a path -> modules they must not import (a layer above them, or a cycle)
FORBIDDEN = {
    "trainables/": ("orchestrator", "search_spaces"),
    "search_spaces/": ("orchestrator",),
    "orchestrator/schema.py": ("orchestrator", "search_spaces"),
    "orchestrator/analysis/": ("orchestrator.report", "orchestrator.analyze", "orchestrator.sweep",
                               "orchestrator.results", "orchestrator.tune_mapping"),
    "orchestrator/report/": ("orchestrator.analyze", "orchestrator.sweep", "orchestrator.results"),
}


def _imports(path: Path) -> set[str]:
    """Top-level names of every module a file imports (at any depth of the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _sources() -> list[Path]:
    return sorted(p for package in ("orchestrator", "search_spaces", "trainables")
                  for p in (ROOT / package).rglob("*.py"))


def test_no_module_imports_a_higher_layer() -> None:
    wrong = []
    for path in _sources():
        where = path.relative_to(ROOT).as_posix()
        forbidden = [m for prefix, modules in FORBIDDEN.items() if where.startswith(prefix) for m in modules]
        wrong += [f"{where} imports {name}" for name in _imports(path)
                  if any(name == m or name.startswith(m + ".") for m in forbidden)]
    assert not wrong, wrong


def test_ray_only_in_the_tune_facing_modules() -> None:
    wrong = [str(path.relative_to(ROOT)) for path in _sources()
             if any(n.split(".")[0] == "ray" for n in _imports(path))
             and path.relative_to(ROOT).as_posix() not in RAY_MODULES]
    assert not wrong, f"Ray imported outside the Tune-facing modules: {wrong}"


def test_analysis_schema_search_spaces_and_core_import_without_ray() -> None:
    modules = ["orchestrator.schema", "orchestrator.analyze", "orchestrator.analysis", "orchestrator.report",
               "orchestrator.testing", "search_spaces", "trainables.cli", "trainables.config", "trainables.keys",
               "trainables.model", "trainables.train", "trainables.data", "trainables.metrics"]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_tests_never_import_tests() -> None:
    """Shared test helpers live in orchestrator.testing, shared fixtures in tests/conftest.py."""
    wrong = [f"{path.name} imports {name}" for path in sorted((ROOT / "tests").glob("*.py"))
             for name in _imports(path) if name == "tests" or name.startswith("tests.")]
    assert not wrong, wrong
