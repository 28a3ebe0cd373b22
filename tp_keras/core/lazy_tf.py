"""`tf`: TensorFlow, imported on its first use.

The rule registry (`tp_keras.core.rules`, hence `--method`'s choices) and the losses and targets its components
call are imported by the launcher before it parses its flags; with this they load without TensorFlow, so that
`--help` and a bad flag answer in a second, in one line (TensorFlow's import takes seconds and writes its C++
start-up lines to stderr). Nothing changes once TensorFlow is in: the first attribute read imports it and every
later read is an ordinary attribute of this object."""
from __future__ import annotations

import importlib


class _TensorFlowOnFirstUse:
    def __getattr__(self, name):
        value = getattr(importlib.import_module("tensorflow"), name)
        setattr(self, name, value)  # later reads of `name` skip __getattr__
        return value


tf = _TensorFlowOnFirstUse()
