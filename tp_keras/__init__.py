"""tp_keras: target propagation for Keras 3 / TensorFlow: every method of Meulemans et al. (NeurIPS 2020), exact
to the reference implementation's semantics by default.

Packages, each importing only those before it (BUILD_NOTES.md, "Architecture"): `reference` (the reference's
data), `core` (the algorithm), `run` (running experiments), `tools` (benchmarks, profiling), `search`
(hyper-parameter search), `paper` (sweeps, tables, figures). Each command, `python -m tp_keras.<command>`, is a
module beside this file that runs the module implementing it (the search's is its package). `import tp_keras`
imports no TensorFlow, yet it is all a process needs before `keras.saving.load_model` of a tp_keras model
(core/saving.py).
"""
import importlib as _importlib
import os as _os

from tp_keras.core import saving as _saving

# The library is written for the TensorFlow backend (tf.function, GradientTape, tf.distribute).
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# Every class a saved .keras file of this library can name, and the module defining it. Keras finds a saved class
# by its registered name "tp_keras>Name" (a file's "module" entry, "tp_keras.model" before the layering, is unused).
SAVED_CLASSES = {"TPModel": "core.model", "CNNModel": "core.cnn", "TPDense": "core.layers",
                 "DirectFeedback": "core.layers", "TPConv2D": "core.layers", "TPConvBlock": "core.conv_layers",
                 "XavierNormal": "core.layers", "UniformFanIn": "core.layers", "UniformBound": "core.layers",
                 "TorchAdam": "core.optimizers", "TorchSGD": "core.optimizers"}


def __getattr__(name):
    # `tp_keras.to_tp_model(keras_model, method, ...)`, `tp_keras.PopulationModel` and the learning rules
    # (tp_keras/core/rules/), imported on first use so that `import tp_keras` stays light.
    if name in ("to_tp_model", "ConversionError"):
        convert = _importlib.import_module("tp_keras.core.convert")
        return convert.from_keras if name == "to_tp_model" else convert.ConversionError
    if name == "PopulationModel":  # K TPModels trained through one Keras fit, logs per member
        return _importlib.import_module("tp_keras.core.population_model").PopulationModel
    if name in ("LearningRule", "RuleError", "RULES", "get_rule"):
        return getattr(_importlib.import_module("tp_keras.core.rules"), name)
    raise AttributeError(f"module 'tp_keras' has no attribute {name!r}")


_saving.register_when_keras_is_imported(SAVED_CLASSES)
