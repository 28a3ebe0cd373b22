"""tp_keras: target propagation for Keras 3 / TensorFlow.

Every method of Meulemans et al., "A Theoretical Framework for Target Propagation" (NeurIPS 2020), exact to
the reference implementation's semantics by default.
"""
import os as _os

# The library is written for the TensorFlow backend (tf.function, GradientTape, tf.distribute).
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def __getattr__(name):
    # `tp_keras.to_tp_model(keras_model, method, ...)`, imported on first use so that `import tp_keras` stays light.
    if name in ("to_tp_model", "ConversionError"):
        from tp_keras import convert
        return convert.from_keras if name == "to_tp_model" else convert.ConversionError
    raise AttributeError(f"module 'tp_keras' has no attribute {name!r}")
