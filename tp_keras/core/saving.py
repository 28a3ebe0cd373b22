"""How a saved .keras file finds the classes of tp_keras without `import tp_keras` importing Keras.

A .keras file names each class by its registered name ("tp_keras>TPModel"); Keras looks that name up in its
registry (the file's "module" entry, "tp_keras.model" in files saved before the layering, is not used). A class's
module registers it when imported (`keras.saving.register_keras_serializable`), but a process that only did
`import tp_keras` has imported none of them: `register_when_keras_is_imported` (called by tp_keras/__init__.py with
`SAVED_CLASSES`) puts a deferred entry for every saved class in Keras' registry right after `keras` is imported,
which imports the class's module on `from_config`. Importing Keras here instead would cost `import tp_keras`
TensorFlow's seconds and ~650 MB, also in the light commands such as tables and sweep.

Imports nothing of tp_keras (a module is imported by name, on `from_config`).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys


class _Deferred:
    """Holds a tp_keras class's place in Keras' registry until its module is imported (whose decorator then
    registers the class itself). Keras builds a saved object with `from_config`, which imports the module here."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def from_config(self, config):
        cls = getattr(importlib.import_module(f"tp_keras.{self.module}"), self.name)
        return cls.from_config(config)


def _register(keras_module, saved_classes: dict[str, str]):
    """Puts every saved class (name -> its module under tp_keras) in Keras' registry (where a module already
    registered it, that stays): no tp_keras module is imported here, so this is safe at any point of an import,
    including a tp_keras module's own `import keras`."""
    registry = keras_module.saving.get_custom_objects()
    for name, module in saved_classes.items():
        registry.setdefault(f"tp_keras>{name}", _Deferred(module, name))


class _RegisterAfterKerasImport(importlib.abc.MetaPathFinder):
    """Runs `_register` right after `keras` is imported (placed first in `sys.meta_path`, it answers only `keras`,
    and only once, with the spec of the finder that would have found it)."""

    def __init__(self, saved_classes: dict[str, str]):
        self.saved_classes = saved_classes

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # the finder that would have found it
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def execute_then_register(module):
                execute(module)
                _register(module, self.saved_classes)
            spec.loader.exec_module = execute_then_register
        return spec


def register_when_keras_is_imported(saved_classes: dict[str, str]) -> None:
    """Registers `saved_classes` (name -> module under tp_keras) with Keras now if it is imported, else right after
    its import."""
    if "keras" in sys.modules:
        _register(sys.modules["keras"], saved_classes)
    else:
        sys.meta_path.insert(0, _RegisterAfterKerasImport(saved_classes))
