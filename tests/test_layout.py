"""The package's layers (tp_keras/reference, core, run, tools, search, paper), its commands (a module each, beside the
layers) and the .keras files saved before the layering."""
import ast
import functools
import importlib
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import tp_keras

PACKAGE = pathlib.Path(tp_keras.__file__).parent
HERE = pathlib.Path(__file__).parent
# The layers, bottom first. A module may import the modules of its own layer and of the layers below it, never one
# above: `reference` (the reference's configurations and facts, pure data that every layer may read) imports
# nothing else of tp_keras; `top` is the package's own files beside the layers (__init__.py and the commands,
# tp_keras/<command>.py).
LAYERS = ("reference", "core", "run", "tools", "search", "paper", "top")
THIRD_PARTY_TF = {"tensorflow", "keras"}
OPTIONAL = {"optuna", "matplotlib"}  # the `search` and `figures` extras
# Every import of one of our modules inside a function, and why it is there: it defers TensorFlow (the importing
# module loads none, so that `import tp_keras`, `--help`, a refused flag and the light commands such as tables and
# sweep answer in a second) or an optional dependency. Nothing else: no import hides a cycle. Checked below, the
# reason included (the imported module loads what the importing one does not).
DEFERRED_IMPORTS = {
    ("tp_keras.run.launch", "tp_keras.run.experiment"): "TensorFlow: the launcher parses and refuses flags first",
    ("tp_keras.run.launch", "tp_keras.run.distribute"): "TensorFlow: the launcher parses and refuses flags first",
    ("tp_keras.run.launch", "tp_keras.run.population_run"): "TensorFlow: the launcher parses and refuses flags first",
    ("tp_keras.tools.loop_bench", "tp_keras.core.model"): "TensorFlow: after start_tensorflow sets its threads",
    ("tp_keras.tools.loop_bench", "tp_keras.core.loop"): "TensorFlow: after start_tensorflow sets its threads",
    ("tp_keras.tools.loop_bench", "tp_keras.core.optimizers"): "TensorFlow: after start_tensorflow sets its threads",
    ("tp_keras.tools.loop_bench", "tp_keras.core.step"): "TensorFlow: after start_tensorflow sets its threads",
    ("tp_keras.tools.loop_bench", "tp_keras.run.factories"): "TensorFlow: after start_tensorflow sets its threads",
    ("tp_keras.tools.conv_bench", "tp_keras.core.conv_networks"): "TensorFlow: after start_tensorflow sets its threads",
    ("tp_keras.tools.conv_bench", "tp_keras.core.model"): "TensorFlow: after start_tensorflow sets its threads",
    ("tp_keras.tools.conv_bench", "tp_keras.core.step"): "TensorFlow: after start_tensorflow sets its threads",
    ("tp_keras.tools.bench", "tp_keras.tools.population_bench"): "TensorFlow: after start_tensorflow sets its threads",
    ("tp_keras.search.runs", "tp_keras.run.experiment"): "TensorFlow: only a trial that trains loads it",
    ("tp_keras.search.worker", "tp_keras.run.schedule"): "TensorFlow: once a trial reaches the pruning epoch",
    ("tp_keras.paper.damping_search", "tp_keras.core.diagnostics"): "TensorFlow: after the flags are checked",
    ("tp_keras.paper.damping_search", "tp_keras.core.step"): "TensorFlow: after the flags are checked",
    ("tp_keras.paper.damping_search", "tp_keras.run.experiment"): "TensorFlow: after the flags are checked",
    ("tp_keras.paper.damping_search", "tp_keras.run.factories"): "TensorFlow: after the flags are checked",
    ("tp_keras.paper.nullspace", "tp_keras.core.diagnostics"): "TensorFlow: plotting saved results needs none",
    ("tp_keras.paper.nullspace", "tp_keras.core.model"): "TensorFlow: plotting saved results needs none",
    ("tp_keras.paper.nullspace", "tp_keras.core.optimizers"): "TensorFlow: plotting saved results needs none",
    ("tp_keras.paper.nullspace", "tp_keras.core.step"): "TensorFlow: plotting saved results needs none",
    ("tp_keras.paper.figures", "tp_keras.paper.output_space"): "TensorFlow: only the output_space figure needs it",
    ("tp_keras.paper.sweep", "tp_keras.search.engine"): "optional: Optuna; --table and --help need none",
    ("tp_keras.search.options", "tp_keras.search.engine"): "optional: Optuna, once a command runs",
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(nodes):
    """The statements that run when a module is imported (not those inside functions)."""
    for node in nodes:
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _top_level(ast.iter_child_nodes(node))


def _in_functions(tree):
    """The statements inside functions (at any depth)."""
    top = {id(node) for node in _top_level(tree.body)}
    return [node for node in ast.walk(tree) if id(node) not in top]


def _imported(node) -> set[str]:
    """The modules an import statement imports: ours each resolved to a module (`from tp_keras.run import cli` is
    tp_keras.run.cli), others by their top-level package."""
    if isinstance(node, ast.Import):
        return {a.name if a.name.startswith("tp_keras") else a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if not node.module.startswith("tp_keras"):
            return {node.module.split(".")[0]}
        found = set()
        for alias in node.names:
            sub = f"{node.module}.{alias.name}"
            is_module = (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() or (
                PACKAGE.parent / sub.replace(".", "/") / "__init__.py").exists()
            found.add(sub if is_module else node.module)
        return found
    return set()


@functools.lru_cache(maxsize=None)  # parsed once per process: four tests read the same trees, none changes them
def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in PACKAGE.rglob("*.py")}


def _graph(import_time_only: bool = False) -> dict[str, set[str]]:
    """Module -> the modules it imports (at import time, or also inside functions), ours and others."""
    graph = {}
    for module, tree in _modules().items():
        nodes = list(_top_level(tree.body)) if import_time_only else list(ast.walk(tree))
        graph[module] = set().union(*(_imported(n) for n in nodes)) - {"tp_keras", module}
    return graph


def _ours(names) -> set[str]:
    return {n for n in names if n.startswith("tp_keras.")}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"


def _loads(module: str, graph: dict[str, set[str]]) -> set[str]:
    """The third-party packages that importing `module` imports (its import-time closure, parent packages included)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))] + sorted(graph.get(name, ()))
    return {name for name in seen if not name.startswith("tp_keras")}


def test_every_module_belongs_to_a_layer_and_imports_none_above_its_own():
    graph = _graph()
    assert {_layer(m) for m in graph} == set(LAYERS), sorted(graph)
    for module, imported in graph.items():
        for name in sorted(_ours(imported)):
            assert name in graph, f"{module} imports {name}, which is no module"
            assert LAYERS.index(_layer(name)) <= LAYERS.index(_layer(module)), (
                f"{module} ({_layer(module)}) imports {name} ({_layer(name)}): an arrow back up")
    assert not _ours(set().union(*(graph[m] for m in graph if _layer(m) == "reference"))
                     - {m for m in graph if _layer(m) == "reference"}), "reference imports the library"


@pytest.mark.parametrize("import_time_only", [True, False], ids=["import time", "with imports in functions"])
def test_the_import_graph_has_no_cycle(import_time_only):
    graph = {module: _ours(names) for module, names in _graph(import_time_only).items()}
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


def test_imports_inside_functions_are_the_listed_deferrals_of_tensorflow_or_an_optional_dependency():
    found = {(module, name) for module, tree in _modules().items()
             for node in _in_functions(tree) for name in _ours(_imported(node)) if name != module}
    assert sorted(found - set(DEFERRED_IMPORTS)) == [], "an import inside a function that DEFERRED_IMPORTS lacks"
    assert sorted(set(DEFERRED_IMPORTS) - found) == [], "DEFERRED_IMPORTS lists an import that is gone"
    graph = _graph(import_time_only=True)
    for (module, name), reason in DEFERRED_IMPORTS.items():
        deferred = _loads(name, graph) - _loads(module, graph)
        wanted = THIRD_PARTY_TF if reason.startswith("TensorFlow:") else OPTIONAL if reason.startswith(
            "optional:") else None
        assert wanted is not None, f"{module} -> {name}: the reason must be TensorFlow or an optional dependency"
        assert deferred & wanted, f"{module} -> {name} defers none of {sorted(wanted)} ({reason})"


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
def test_every_command_of_the_readme_is_a_module_that_runs():
    """Each `python -m tp_keras.<command>` of README.md is a module (a file, or a package with __main__.py) whose
    --help prints the command's usage (absl exits 1 after --help, argparse 0) and no traceback. One process per
    command (the benchmarks' absl flags clash with the launcher's), all at once."""
    commands = sorted(set(re.findall(r"python -m (tp_keras[\w.]*\w)", (PACKAGE.parent / "README.md").read_text())))
    assert "tp_keras.launch" in commands and "tp_keras.tables" in commands, commands
    for command in commands:
        path = PACKAGE.parent / command.replace(".", "/")
        assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), f"{command} is no module"
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent))
    runs = {command: subprocess.Popen([sys.executable, "-m", command, "--help"], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=env, cwd=str(HERE))
            for command in commands}
    for command, run in runs.items():
        out, _ = run.communicate(timeout=300)
        assert run.returncode in (0, 1) and "Traceback" not in out, (command, out[-3000:])
        assert f"python -m {command}" in out, (command, out[-3000:])
