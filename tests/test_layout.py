"""The package's layers (tp_keras/core, run, paper; search beside paper) and the old module paths kept working
(`tp_keras.MOVED`: `import tp_keras.model`, `python -m tp_keras.launch`, .keras files saved before the layering)."""
import ast
import importlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import tp_keras

PACKAGE = pathlib.Path(tp_keras.__file__).parent
HERE = pathlib.Path(__file__).parent
# The reference's data (tp_keras/reference: configurations and facts that every layer may read, the paper's
# configurations being the library's defaults) imports nothing else of tp_keras.
PAPER_DATA = {"tp_keras.reference.facts", "tp_keras.reference.configs", "tp_keras.reference"}
# Which packages each layer may import (besides itself and the reference's data).
MAY_IMPORT = {"reference": set(), "core": set(), "run": {"core"}, "search": {"core", "run"},
              "paper": {"core", "run", "search"}}
COMMANDS = ("launch", "sweep", "tables", "figures", "bench", "loop_bench", "nullspace", "damping_search", "search")
# The benchmarks define absl flags that clash with the launcher's (and each other's): no process imports both, so
# they are checked in a fresh process each.
OWN_PROCESS = ("bench", "loop_bench")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(nodes):
    """The statements that run when a module is imported (not those inside functions)."""
    for node in nodes:
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _top_level(ast.iter_child_nodes(node))


def _imports(path: pathlib.Path, import_time_only: bool = False) -> set[str]:
    """The tp_keras modules `path` imports (at import time, or also inside functions), each resolved to a module."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in (_top_level(tree.body) if import_time_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tp_keras."))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tp_keras"):
            for alias in node.names:  # `from tp_keras.run import cli` imports the module tp_keras.run.cli
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() or (
                    node.module == "tp_keras" and alias.name in tp_keras.MOVED)  # an old path
                found.add(sub if is_module else node.module)
    return {name for name in found if name != "tp_keras"}


def _graph(import_time_only: bool = False) -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, import_time_only) for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"}


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_every_module_belongs_to_a_layer_and_imports_only_the_layers_below_it():
    graph = _graph()
    assert {_layer(m) for m in graph} == set(MAY_IMPORT), sorted(graph)
    for module, imported in graph.items():
        for name in imported:
            assert name.startswith("tp_keras."), (module, name)
            if module in PAPER_DATA:
                assert name in PAPER_DATA, f"{module} (the paper's data) imports {name}"
            elif name not in PAPER_DATA and _layer(name) != _layer(module):
                assert _layer(name) in MAY_IMPORT[_layer(module)], f"{module} imports {name}: an arrow back up"
            assert not any(name == f"tp_keras.{old}" or name.startswith(f"tp_keras.{old}.")
                           for old in tp_keras.MOVED), f"{module} imports {name} by its old path"


def test_the_import_time_graph_has_no_cycle():
    """(An import inside a function, such as a rule looking up the registry that imports it, runs later.)"""
    graph = _graph(import_time_only=True)
    state = {}

    def visit(module, trail):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import cycle: " + " -> ".join(trail + [module])
        state[module] = "open"
        for name in sorted(graph.get(module, ())):
            if name in graph:
                visit(name, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


@pytest.mark.parametrize("old", sorted(set(tp_keras.MOVED) - set(OWN_PROCESS)))
def test_every_old_path_is_the_same_module_as_its_new_path(old):
    new = importlib.import_module(f"tp_keras.{tp_keras.MOVED[old]}")
    assert importlib.import_module(f"tp_keras.{old}") is new
    assert getattr(tp_keras, old) is new and sys.modules[f"tp_keras.{old}"] is new
    assert new.__name__ == new.__spec__.name == f"tp_keras.{tp_keras.MOVED[old]}"  # the module keeps its own spec


def test_old_paths_of_a_moved_subpackage_and_from_imports():
    from tp_keras.core.rules import base
    from tp_keras.rules.base import LearningRule
    import tp_keras.rules.components as components
    assert LearningRule is base.LearningRule and components is importlib.import_module("tp_keras.core.rules.components")
    from tp_keras.reference.facts import CNN_METHODS as new
    from tp_keras.paper_facts import CNN_METHODS
    assert CNN_METHODS is new


def test_a_monkeypatch_through_the_old_name_is_seen_through_the_new(monkeypatch):
    import tp_keras.experiment
    from tp_keras.run import experiment
    monkeypatch.setattr("tp_keras.experiment.PRUNE_ACCURACY", 0.5)
    assert experiment.PRUNE_ACCURACY == 0.5 and tp_keras.experiment is experiment


def test_saved_classes_name_the_modules_that_define_them():
    for name, module in tp_keras.SAVED_CLASSES.items():
        cls = getattr(importlib.import_module(f"tp_keras.{module}"), name)
        assert cls.__module__ == f"tp_keras.{module}", (name, cls.__module__)


def test_keras_files_saved_before_the_layering_still_load():
    """tests/data/saved_before_layering/: a DTP TPModel (fit once, default feedback Adam) and a DDTP-linear CNNModel
    saved by the flat package (their config names "module": "tp_keras.model" / "tp_keras.cnn")."""
    import keras
    from tp_keras.core.cnn import CNNModel
    from tp_keras.core.model import TPModel
    folder = HERE / "data" / "saved_before_layering"
    expected = np.load(folder / "expected.npz")
    mlp = keras.saving.load_model(folder / "mlp.keras")
    cnn = keras.saving.load_model(folder / "cnn.keras")
    assert type(mlp) is TPModel and mlp.method.name == "dtp" and type(cnn) is CNNModel
    assert type(mlp.feedback_optimizer).__name__ == "TorchAdam"
    # The expected predictions were computed on another CPU: float32 products may differ in the last bits between
    # instruction sets (oneDNN picks its kernels by them; 1.5e-7 measured between an AVX-512 and an AVX2 machine).
    # A weight that loaded wrong would be off by orders of magnitude more.
    np.testing.assert_allclose(mlp.predict(expected["x"], verbose=0), expected["mlp"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cnn.predict(expected["images"], verbose=0), expected["cnn"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_python_m_old_path_runs_the_new_module(command):
    """`python -m tp_keras.<old> --help` prints the command's usage from its new module (absl exits 1 after --help,
    argparse 0) and no traceback."""
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent))
    result = subprocess.run([sys.executable, "-m", f"tp_keras.{command}", "--help"], capture_output=True, text=True,
                            timeout=300, env=env, cwd=str(HERE))
    out = result.stdout + result.stderr
    assert result.returncode in (0, 1) and "Traceback" not in out, out[-3000:]
    new = tp_keras.MOVED.get(command, command).replace(".", "/")  # search did not move
    source = PACKAGE / (f"{new}/__init__.py" if (PACKAGE / new).is_dir() else f"{new}.py")
    doc = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or ""  # not imported: absl flags clash
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    assert (f"python -m tp_keras.{command}" in out) or (first and first in out), out[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("old", OWN_PROCESS)
def test_old_path_of_a_benchmark_is_the_same_module_in_a_fresh_process(old):
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent))
    new = tp_keras.MOVED[old]
    script = f"import tp_keras, tp_keras.{old} as a, tp_keras.{new} as b; assert a is b is tp_keras.{old}; print('ok')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.stdout.strip() == "ok", result.stderr[-3000:]
