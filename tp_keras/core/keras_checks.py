"""What a Keras user hands to a TPModel, checked: each refusal is one ValueError line naming what was wrong and
the fix.

Construction (`model_precision`, `whole`, `real`), the strategy and trainable state `fit` runs under, array
data before training (`check_arrays`, `check_class_weight`), and at trace time the form of the labels the step
receives (`check_label_form`). Streamed data (datasets, generators) cannot be checked beforehand: a non-finite
value stops `fit` at the end of its epoch (TPModel), and a label out of range, which fails inside TensorFlow's
cross-entropy kernel, is re-raised as one line (`labels_out_of_range_as_value_error`).
"""
from __future__ import annotations

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from tp_keras.core import targets as T

PRECISIONS = ("float32", "float64")
TASKS = ("classification", "regression")
MAX_SEED = 2 ** 32 - 1  # NumPy's legacy seeding (keras.utils.set_random_seed) takes 0..2**32 − 1
MAX_SIZE = 2 ** 31 - 1  # TensorFlow shapes some tensors with int32


def model_precision(dtype) -> str:
    """'float32' or 'float64': `dtype` (a name or a Keras DTypePolicy), or the global Keras dtype policy when None.

    Anything else is refused in one line: the feedback losses scale by 1/σ² (σ = 0.08 gives 156) and perturb the
    activations by noise of std σ, which float16/bfloat16 (and mixed precision, whose variables are float32 but
    whose arithmetic is not) can neither hold nor resolve."""
    name = getattr(dtype if dtype is not None else keras.config.dtype_policy(), "name", dtype)
    if name in PRECISIONS:
        return name
    given = f"dtype={name!r}" if dtype is not None else f"the global Keras dtype policy {name!r}"
    raise ValueError(f"{given}: TP models compute in float32 or float64 only (the feedback losses' 1/sigma^2 "
                     "scaling and noise of std sigma need their range and resolution); pass dtype='float32' or "
                     "dtype='float64'")


def whole(name: str, value, lowest: int, highest: int = MAX_SIZE) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lowest <= value <= highest:
        raise ValueError(f"TPModel: {name}={value!r} must be a whole number in {lowest}..{highest}")
    return int(value)


def is_multi_worker_strategy(strategy) -> bool:
    """Whether `strategy` is a MultiWorkerMirroredStrategy (by class name, as `distribute.is_tpu_strategy`)."""
    return any(cls.__name__.startswith(("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy"))
               for cls in type(strategy).__mro__)


def check_strategy(model, call: str):
    current = tf.distribute.get_strategy()
    if is_multi_worker_strategy(current) or is_multi_worker_strategy(model._distribute_strategy):
        raise ValueError(f"{call} under MultiWorkerMirroredStrategy is not supported (Keras 3's fit fails on its "
                         "per-replica values, keras-team/keras#20585): train multi-worker with the launcher "
                         "(--strategy=multi_worker) or tp_keras.run.distribute.DistributedTrainer")
    if tf.distribute.has_strategy() and current is not model._distribute_strategy:
        raise ValueError(f"{call}: this model was built outside the scope of the current "
                         f"{type(current).__name__}; build and compile it inside `with strategy.scope():`")


def check_trainable(model):
    if not model.trainable:
        raise ValueError("model.trainable = False freezes every layer; set trainable = False on the layers to "
                         "freeze (model.tp_layers[i], model.direct_feedback) instead")
    changed = [layer.name for layer, flag in getattr(model, "_compiled_trainable_state", {}).items()
               if layer.trainable != flag]
    if changed:
        raise ValueError(f"trainable changed on {', '.join(changed)} after compile(): call compile() again (as "
                         "for any Keras model) so that the optimizers and the step see it")


def feedback_layout(model) -> tuple:
    """What a compiled feedback optimizer was built for: the trained feedback variables (by identity), and whether
    they train with one optimizer per hidden layer (`TPModel.compile` records it; `check_rule` compares)."""
    return tuple(id(v) for v in model.feedback_variables), bool(model.rule.schedule.per_layer_optimizers)


def check_rule(model):
    """A rule changed after compile (set_rule, model.sigma = ...) applies at the next fit, unless it trains other
    feedback weights or with other feedback optimizers than the compiled optimizers were built for."""
    compiled = getattr(model, "_compiled_feedback", None)
    if compiled is not None and compiled != feedback_layout(model):
        raise ValueError(f"the rule changed to {model.rule.name!r} after compile(), and it trains other feedback "
                         "weights (or with other feedback optimizers) than the compiled one: call compile() again")


def check_input_spec(model, shape, dtype, where: str = "x"):
    """The inputs' shape (batch axis first) and dtype against the model's input, with Keras' wording for the
    shape (a layer's InputSpec check); a one-line ValueError otherwise."""
    dtype = tf.as_dtype(dtype)
    if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
        raise ValueError(f"{where} has dtype {dtype.name}; a TPModel takes numbers (float32 or float64): decode or "
                         "convert the inputs in the data pipeline")
    shape = tf.TensorShape(shape)
    if shape.rank is None:
        return
    expected = (None,) + tuple(model.network.input_shape)
    received = tuple(shape.as_list())
    prefix = f'Input 0 of layer "{model.name}" is incompatible with the layer: '
    fix = f"; this model takes x of shape (N, {', '.join(str(d) for d in expected[1:])})"
    if len(received) != len(expected):
        raise ValueError(f"{prefix}expected ndim={len(expected)}, found ndim={len(received)}. Full shape received: "
                         f"{received}{fix}")
    for axis in range(1, len(expected)):
        if received[axis] is not None and received[axis] != expected[axis]:
            name = -1 if axis == len(expected) - 1 else axis
            raise ValueError(f"{prefix}expected axis {name} of input shape to have value {expected[axis]}, but "
                             f"received input with shape {received}{fix}")


def check_label_dtype(model, dtype):
    dtype = tf.as_dtype(dtype)
    if dtype.is_floating or dtype.is_integer or dtype.is_bool:
        return
    if model.task == "classification":
        raise ValueError(f"labels have dtype {dtype.name}; a TPModel takes class ids (integers in [0, "
                         f"{model.output_size})) or one-hot rows: map them to ids in the data pipeline (e.g. "
                         "with keras.layers.StringLookup)")
    raise ValueError(f"regression targets have dtype {dtype.name}; give numbers")


def check_data(model, x, y=None):
    """Before the first step: the inputs' shape and dtype and the labels' dtype, from arrays or a tf.data.Dataset's
    element_spec (other streams are checked as the step is traced, `check_traced_data`)."""
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        x_spec, y_spec = (spec[0], spec[1] if len(spec) > 1 else None) if isinstance(spec, tuple) else (spec, None)
        if isinstance(x_spec, tf.TensorSpec):
            check_input_spec(model, x_spec.shape, x_spec.dtype)
        if isinstance(y_spec, tf.TensorSpec):
            check_label_dtype(model, y_spec.dtype)
        return
    array = host_array(x)
    if array is not None and array.dtype.kind in "iubf":
        check_input_spec(model, (None,) + array.shape[1:], array.dtype)


def check_traced_data(model, x, y):
    """As a step is traced, what `check_data` could not check beforehand (generators, PyDatasets): the inputs'
    shape and dtype, the labels' dtype and form."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        check_input_spec(model, x.shape, x.dtype)
    if y is not None and hasattr(y, "dtype"):
        check_label_dtype(model, y.dtype)
    check_label_form(model, y)


def check_arrays(model, x, y, sample_weight=None, where: str = ""):
    """One-line ValueErrors for array inputs (datasets and generators are checked as they stream: a
    non-finite value stops the epoch, a label out of range raises)."""
    xs = host_array(x)
    if xs is None:
        return
    where = f"{where}: " if where else ""
    if y is None:
        raise ValueError(f"{where}fit/evaluate need labels y (the output target is built from them)")
    _check_finite(f"{where}x", xs)
    ys = host_array(y)
    if ys is not None:
        if model.task == "classification":
            _check_class_labels(model, ys, where)
        else:
            _check_finite(f"{where}y", ys)
            if ys.shape[1:] not in ((model.output_size,), () if model.output_size == 1 else None):
                raise ValueError(f"{where}y has shape {ys.shape}; a regression model with {model.output_size} "
                                 f"outputs takes targets of shape (N, {model.output_size})")
    ws = host_array(sample_weight)
    if ws is not None:
        ws = ws[:, 0] if ws.ndim == 2 and ws.shape[1] == 1 else ws
        if ws.ndim != 1:
            raise ValueError(f"{where}sample_weight has shape {ws.shape}; give one weight per sample, (N,)")
        _check_finite(f"{where}sample_weight", ws)
        if np.any(ws < 0):
            raise ValueError(f"{where}sample_weight holds {ws[ws < 0][0]} (row {int(np.argmax(ws < 0))}): a "
                             "negative weight would push that sample's output target away from its label; "
                             "weights must be >= 0")


def _check_class_labels(model, y, where):
    classes = model.output_size
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and y.shape[1] == classes:
        _check_finite(f"{where}y", y)
        sums = y.sum(axis=1)
        bad = np.flatnonzero((y.min(axis=1) < 0) | (np.abs(sums - 1.0) > 1e-3))
        if bad.size:
            raise ValueError(f"{where}label row {int(bad[0])} ({y[bad[0]].tolist()[:12]}) is not a probability "
                             f"row; (N, {classes}) labels must be one-hot (or class probabilities summing to 1)")
        return
    if y.ndim != 1:
        raise ValueError(f"{where}y has shape {y.shape}; give class ids of shape (N,) or (N, 1), or one-hot "
                         f"rows of shape (N, {classes})")
    if y.dtype.kind not in "iub":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y))) if y.dtype.kind == "f" else [0]
        if len(bad):
            raise ValueError(f"{where}y holds {y[bad[0]].item()!r} (row {int(bad[0])}); labels must be integer "
                             f"class ids in [0, {classes})")
    bad = np.flatnonzero((y < 0) | (y >= classes))
    if bad.size:
        raise ValueError(f"{where}y holds {y[bad[0]].item()} (row {int(bad[0])}); labels must be class ids in "
                         f"[0, {classes}) for a model with {classes} outputs")


def check_class_weight(model, class_weight):
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be a dict {{class id: weight}}, got {type(class_weight).__name__}")
    for key, value in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, numbers.Integral) or not 0 <= key < model.output_size:
            raise ValueError(f"class_weight: key {key!r} is not a class id in [0, {model.output_size})")
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
            raise ValueError(f"class_weight[{key}] = {value!r}; weights must be finite and >= 0")


def check_label_form(model, y):
    """At trace time: labels of the form the compiled loss takes (a one-line ValueError otherwise)."""
    if y is None:
        raise ValueError("fit/evaluate need labels y: the data must yield (x, y) or (x, y, sample_weight)")
    if y.shape.rank is None:
        raise ValueError("labels of unknown rank: give the data a static label shape, (N,) or (N, 1) class ids "
                         "or (N, C) rows (e.g. tf.data's output_signature)")
    shape = tuple(y.shape)
    if model.task == "regression":
        if shape[1:] != (model.output_size,) and not (model.output_size == 1 and len(shape) == 1):
            raise ValueError(f"regression targets of shape {shape}; this model takes (N, {model.output_size})")
        return
    labels = T.class_labels(y)
    dense = T.is_dense(labels)
    if labels.shape.rank not in (1, 2) or (dense and labels.shape[-1] != model.output_size):
        raise ValueError(f"labels of shape {shape}: give class ids (N,) or (N, 1), or one-hot rows "
                         f"(N, {model.output_size})")
    if model._loss_kind == "sparse" and dense:
        raise ValueError(f"loss='sparse_categorical_crossentropy' takes class ids, these labels are rows of shape "
                         f"{shape}: use loss='categorical_crossentropy' (or the default loss=None)")
    if model._loss_kind == "categorical" and not dense:
        raise ValueError(f"loss='categorical_crossentropy' takes one-hot rows, these labels have shape {shape}: "
                         "use loss='sparse_categorical_crossentropy' (or the default loss=None)")


class labels_out_of_range_as_value_error:
    """A label outside [0, C) in streamed data fails inside TensorFlow's sparse cross-entropy kernel; say it in
    one line."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, tf.errors.InvalidArgumentError) and "valid range" in str(error):
            detail = next((line.strip() for line in str(error).splitlines() if "valid range" in line), "")
            raise ValueError(f"labels: a class id out of range in the data ({detail[:200]})") from None
        return False


def host_array(value):
    """`value` as a NumPy array when it is array data fit slices itself (arrays, eager tensors, lists); None for
    datasets, generators and other streams."""
    if value is None or isinstance(value, (tf.data.Dataset, keras.utils.PyDataset)):
        return None
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, tf.Tensor) and hasattr(value, "numpy"):
        return value.numpy()
    if isinstance(value, (list, tuple)) or hasattr(value, "__array__"):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):
            return None
        return array if array.dtype.kind in "iubf" else None
    return None


def label_shape(x, y) -> tuple | None:
    """The per-sample shape of the labels ((), (1,) or (C,)), from arrays or a tf.data.Dataset's element spec;
    None when unknown until the data stream."""
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        shape = spec[1].shape if isinstance(spec, tuple) and len(spec) > 1 and hasattr(spec[1], "shape") else None
    else:
        array = host_array(y)
        shape = None if array is None else tf.TensorShape(array.shape)
    return None if shape is None or shape.rank is None else tuple(shape.as_list()[1:])


def _check_finite(what: str, array):
    if array.dtype.kind not in "iubf":
        raise ValueError(f"{what} has dtype {array.dtype}; give numbers")
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            row = int(np.argwhere(~finite)[0][0])
            raise ValueError(f"{what} holds {array.size - int(finite.sum())} non-finite value(s) (the first in row "
                             f"{row}); targets and feedback losses of those samples would be NaN: clean or drop them")
