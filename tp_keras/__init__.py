"""tp_keras: target propagation for Keras 3 / TensorFlow.

Every method of Meulemans et al., "A Theoretical Framework for Target Propagation" (NeurIPS 2020), exact to
the reference implementation's semantics by default.

The package has three layers (BUILD_NOTES.md, "Architecture"): `tp_keras.core` (the algorithm: layers, learning
rules, targets, losses, step, model), `tp_keras.run` (running experiments: config, data, experiment, run folder,
distribution, the launcher) and `tp_keras.paper` (the paper's facts and analyses: sweeps, tables, figures); each
imports only the layers below it. `tp_keras.search` is the hyper-parameter search beside `paper`.

Every module's path before the layering (`tp_keras.model`, `python -m tp_keras.launch`, ...) still works: `MOVED`
maps it to its new module, and importing the old name gives the very same module object (see `_OldPathFinder`).

`import tp_keras` is light (no TensorFlow), yet it is all a process needs before `keras.saving.load_model` of a
tp_keras model: the saved classes are put in Keras' registry as soon as Keras is imported (see `_register`).
"""
import importlib as _importlib
import importlib.abc as _importlib_abc
import importlib.util as _importlib_util
import os as _os
import sys as _sys

# The library is written for the TensorFlow backend (tf.function, GradientTape, tf.distribute).
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# Every module's path before the layering -> its module now (`import tp_keras.<old>` and `python -m tp_keras.<old>`
# keep working; a subpackage's modules follow it: tp_keras.rules.base -> tp_keras.core.rules.base).
MOVED = {
    **{old: f"core.{old}" for old in ("layers", "rules", "targets", "losses", "optimizers", "step", "loop", "model",
                                       "cnn", "convert", "diagnostics", "keras_checks", "methods")},
    **{old: f"run.{old}" for old in ("config", "data", "experiment", "rundir", "distribute", "faults", "cli",
                                      "memory", "launch", "bench", "loop_bench")},
    **{old: f"paper.{old}" for old in ("sweep", "tables", "figures", "nullspace", "damping_search", "output_space")},
    "paper_facts": "reference.facts", "paper_configs": "reference.configs",
}

# Every class a saved .keras file of this library can name ("tp_keras>Name"), and the module defining it. Keras
# finds a saved class by that registered name (the file's "module" entry, e.g. "tp_keras.model" in files saved
# before the layering, is not needed; it would import through MOVED anyway).
SAVED_CLASSES = {"TPModel": "core.model", "CNNModel": "core.cnn", "TPDense": "core.layers",
                 "DirectFeedback": "core.layers", "TPConv2D": "core.layers", "XavierNormal": "core.layers",
                 "UniformFanIn": "core.layers", "UniformBound": "core.layers", "TorchAdam": "core.optimizers",
                 "TorchSGD": "core.optimizers"}


def __getattr__(name):
    # `tp_keras.to_tp_model(keras_model, method, ...)`, imported on first use so that `import tp_keras` stays light.
    if name in ("to_tp_model", "ConversionError"):
        from tp_keras.core import convert
        return convert.from_keras if name == "to_tp_model" else convert.ConversionError
    if name in ("LearningRule", "RuleError", "RULES", "get_rule"):  # the learning rules (tp_keras/core/rules/)
        from tp_keras.core import rules
        return getattr(rules, name)
    if name in MOVED:  # `tp_keras.model` as an attribute, as before the layering
        return _importlib.import_module(f"tp_keras.{name}")
    raise AttributeError(f"module 'tp_keras' has no attribute {name!r}")


class _Deferred:
    """Holds a tp_keras class's place in Keras' registry until its module is imported (whose decorator then
    registers the class itself). Keras builds a saved object with `from_config`, which imports the module here."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def from_config(self, config):
        cls = getattr(_importlib.import_module(f"tp_keras.{self.module}"), self.name)
        return cls.from_config(config)


def _register(keras_module):
    """Puts every saved class in Keras' registry (where a module already registered it, that stays): no tp_keras
    module is imported here, so this is safe at any point of an import, including a tp_keras module's own
    `import keras`."""
    registry = keras_module.saving.get_custom_objects()
    for name, module in SAVED_CLASSES.items():
        registry.setdefault(f"tp_keras>{name}", _Deferred(module, name))


class _RegisterAfterKerasImport(_importlib_abc.MetaPathFinder):
    """Runs `_register` right after `keras` is imported, so that `import tp_keras` need not import Keras (and
    TensorFlow: seconds and ~650 MB for the light commands such as tables and sweep)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        _sys.meta_path.remove(self)
        spec = _importlib_util.find_spec(fullname)  # the finder that would have found it
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def execute_then_register(module):
                execute(module)
                _register(module)
            spec.loader.exec_module = execute_then_register
        return spec


def _moved_to(fullname: str) -> str | None:
    """The module now at the old path `fullname` (tp_keras.<old>[.<sub>...]), or None if it did not move."""
    prefix, _, rest = fullname.partition(".")
    if prefix != "tp_keras" or not rest:
        return None
    old, dot, sub = rest.partition(".")
    return f"tp_keras.{MOVED[old]}{dot}{sub}" if old in MOVED else None


class _OldPathFinder(_importlib_abc.MetaPathFinder):
    """Imports an old path as its new module: `sys.modules` gets the SAME object under both names, so a monkeypatch
    through either name is seen through the other. Placed before the path finder, which would otherwise find
    nothing (old files are gone) or, for a moved subpackage's modules, a second copy."""

    def find_spec(self, fullname, path, target=None):
        new = _moved_to(fullname)
        if new is None:
            return None
        new_spec = _importlib_util.find_spec(new)  # imports the new module's parents, not the module
        if new_spec is None:
            return None
        return _importlib_util.spec_from_loader(fullname, _AliasLoader(new, new_spec), origin=new_spec.origin)


class _AliasLoader(_importlib_abc.Loader):
    """Loads an old path as the module at `new`. `get_code` serves runpy: `python -m tp_keras.<old>` runs the new
    module's code as `__main__`."""

    def __init__(self, new: str, new_spec):
        self.new, self.new_spec = new, new_spec

    def create_module(self, spec):
        module = _importlib.import_module(self.new)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # The import system has just set the module's __spec__ to the old name's spec; the module keeps its own.
        module.__spec__ = self.own_spec

    def get_code(self, fullname):
        return self.new_spec.loader.get_code(self.new)

    def is_package(self, fullname):
        return False  # runpy runs an old path's code itself, never its `__main__` submodule


_sys.meta_path.insert(0, _OldPathFinder())

if "keras" in _sys.modules:
    _register(_sys.modules["keras"])
else:
    _sys.meta_path.insert(0, _RegisterAfterKerasImport())
