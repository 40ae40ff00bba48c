"""The project's modules import in one direction: no circle, and training never loads the collector."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import ROOT

PACKAGES = ("common", "data", "models", "runner")


def module_graph() -> dict[str, set[str]]:
    """{module: the project modules it imports}, at the top or inside a function alike."""
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(next(([t] for t in targets if t in files and t != name), []))
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import one another, directly or round a circle."""
    reach = {name: set() for name in graph}
    for start in graph:
        stack = list(graph[start])
        while stack:
            name = stack.pop()
            if name not in reach[start]:
                reach[start].add(name)
                stack.extend(graph[name])
    groups = {frozenset(n for n in graph if n in reach[m] and m in reach[n]) | {m} for m in graph if m in reach[m]}
    return sorted(sorted(group) for group in groups)


def test_no_module_imports_in_a_circle():
    assert circles(module_graph()) == []


def test_circles_are_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_training_does_not_load_the_collector():
    code = ("import sys, runner.run.train, runner.fused.loop; "
            "print(sorted(m for m in sys.modules if m in ('runner.collect', 'runner.results.read', 'runner.results.best_run')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


PRIVATE_PLUGIN_METHODS = {"_configure_trials", "_process_searchspace_config", "_parse_sweeper_params_config",
                          "_get_directions", "_to_grid_sampler_choices"}


def private_hydra_uses(path) -> list[str]:
    """Imports of Hydra's or a Hydra plugin's private modules, and calls of the Optuna plugin's private methods."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if name.startswith("hydra._internal") or (parts[0] == "hydra_plugins"
                                                      and any(p.startswith("_") for p in parts[1:])):
                found.append(f"{path.name}:{node.lineno} imports {name}")
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_PLUGIN_METHODS:
            found.append(f"{path.name}:{node.lineno} calls {node.attr}")
    return found


def test_only_the_adapter_reaches_into_hydra_internals():
    """A Hydra or plugin release that changes its private API breaks one file: runner/hydra_adapter.py."""
    adapter = ROOT / "runner" / "hydra_adapter.py"
    others = [p for package in (*PACKAGES, "hydra_plugins") for p in (ROOT / package).rglob("*.py") if p != adapter]
    assert [use for path in others for use in private_hydra_uses(path)] == []
    assert private_hydra_uses(adapter)  # the check does see them


def test_data_and_models_never_import_the_runner():
    """The layers point one way: data/ and models/ share only common/ with the runner."""
    graph = module_graph()
    reaching = {name: sorted(t for t in targets if t.split(".")[0] == "runner")
                for name, targets in graph.items() if name.split(".")[0] in ("data", "models", "common")}
    assert {name: targets for name, targets in reaching.items() if targets} == {}
