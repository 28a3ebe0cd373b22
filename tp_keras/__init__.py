"""tp_keras: target propagation for Keras 3 / TensorFlow.

Every method of Meulemans et al., "A Theoretical Framework for Target Propagation" (NeurIPS 2020), exact to
the reference implementation's semantics by default.

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

# Every class a saved .keras file of this library can name ("tp_keras>Name"), and the module defining it.
SAVED_CLASSES = {"TPModel": "model", "CNNModel": "cnn", "TPDense": "layers", "DirectFeedback": "layers",
                 "TPConv2D": "cnn", "XavierNormal": "layers", "UniformFanIn": "layers", "UniformBound": "layers",
                 "TorchAdam": "optimizers", "TorchSGD": "optimizers"}


def __getattr__(name):
    # `tp_keras.to_tp_model(keras_model, method, ...)`, imported on first use so that `import tp_keras` stays light.
    if name in ("to_tp_model", "ConversionError"):
        from tp_keras import convert
        return convert.from_keras if name == "to_tp_model" else convert.ConversionError
    if name in ("LearningRule", "RuleError", "RULES", "get_rule"):  # the learning rules (tp_keras/rules/)
        from tp_keras import rules
        return getattr(rules, name)
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


if "keras" in _sys.modules:
    _register(_sys.modules["keras"])
else:
    _sys.meta_path.insert(0, _RegisterAfterKerasImport())
