"""`fit` on arrays trains from device-resident slices, `steps_per_execution` batches per compiled loop
(`loop.FitArrays`), instead of Keras' tf.data iterator: the same weights and per-epoch metrics, bit for bit, as
Keras' own path (the model's `_arrays_for_fit` switched off), and the same steps."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchAdam
from tp_keras.core.rules import get_rule

ROWS, BATCH = 45, 8  # five full batches of 8 and one of 5


def _data(dtype="float32", rows=ROWS):
    rng = np.random.default_rng(1)
    return rng.standard_normal((rows, 10)).astype(dtype), rng.integers(0, 3, rows).astype("int32")


def _model(method, steps_per_execution, dtype="float32", jit_compile=False):
    model = TPModel(method, 10, [6, 6], 3, seed=5, dtype=dtype, **get_rule(method).used(target_stepsize=0.1, sigma=0.1))
    extra = {"feedback_optimizer": TorchAdam(1e-2)} if model.feedback_variables else {}
    model.compile(optimizer=TorchAdam(1e-2), steps_per_execution=steps_per_execution, jit_compile=jit_compile,
                  **extra)
    return model


class _Path(keras.callbacks.Callback):
    """Records, at each batch end, whether fit runs on the array path, and the batch numbers seen."""

    def __init__(self, stop_after=None):
        super().__init__()
        self.array_path, self.batches, self.stop_after = [], [], stop_after

    def on_train_batch_end(self, batch, logs=None):
        self.array_path.append(getattr(self.model, "_fit_arrays", None) is not None)
        self.batches.append(batch)
        if self.stop_after is not None and len(self.batches) == self.stop_after:
            self.model.stop_training = True


def _fit(method, steps_per_execution, *, keras_path, dtype="float32", jit_compile=False, stop_after=None,
         epochs=2, rows=ROWS, **fit_arguments):
    model = _model(method, steps_per_execution, dtype, jit_compile)
    if keras_path:
        model._arrays_for_fit = lambda arguments: None  # today's fit: Keras' tf.data iterator, batch by batch
    x, y = _data(dtype, rows)
    path = _Path(stop_after)
    history = model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=[path],
                        **fit_arguments)
    return model, history.history, path


def _assert_same(a, b):
    (model_a, history_a, _), (model_b, history_b, _) = a, b
    assert history_a == history_b
    for wa, wb in zip(model_a.weights, model_b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy(), err_msg=wa.path)
    assert int(model_a.optimizer.iterations) == int(model_b.optimizer.iterations)


CASES = [(method, dtype, steps) for method in ("ddtp_linear", "dtpdrl", "bp") for dtype in ("float32", "float64")
         for steps in (1, 4, 8)]  # 8: more than the epoch's five batches
FAST = {("bp", "float32", 4)}


@pytest.mark.parametrize("method, dtype, steps_per_execution", [
    case if case in FAST else pytest.param(*case, marks=pytest.mark.slow) for case in CASES])
def test_array_path_equals_keras_path(method, dtype, steps_per_execution):
    fast = _fit(method, steps_per_execution, keras_path=False, dtype=dtype, validation_split=0.2)
    assert all(fast[2].array_path) and fast[2].array_path
    _assert_same(fast, _fit(method, steps_per_execution, keras_path=True, dtype=dtype, validation_split=0.2))
    steps = -(-int(ROWS * 0.8) // BATCH)  # Keras keeps the first 80 % for training: 36 rows, five batches
    assert int(fast[0].optimizer.iterations) == 2 * steps


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True])
def test_whole_batches_equal_keras_path(jit_compile):
    """No smaller last batch: Keras' batches have a static size, and so do the array path's (its trace, its slices)."""
    for steps_per_execution in (1, 4):
        fast = _fit("dtpdrl", steps_per_execution, keras_path=False, rows=5 * BATCH, jit_compile=jit_compile)
        _assert_same(fast, _fit("dtpdrl", steps_per_execution, keras_path=True, rows=5 * BATCH,
                                jit_compile=jit_compile))


@pytest.mark.slow
@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_stop_mid_epoch_trains_exactly_the_executions_run(steps_per_execution):
    fast = _fit("dtpdrl", steps_per_execution, keras_path=False, stop_after=2, epochs=3)
    _assert_same(fast, _fit("dtpdrl", steps_per_execution, keras_path=True, stop_after=2, epochs=3))
    # Two executions of steps_per_execution batches, then fit stops (Keras checks between executions).
    assert int(fast[0].optimizer.iterations) == 2 * steps_per_execution
    assert len(fast[1]["loss"]) == 1


@pytest.mark.slow
def test_keras_path_where_the_array_path_does_not_apply():
    """tf.data, shuffling, sample weights: Keras' own iterator; a later array fit on the same model uses the array
    path again, and both sequences of fits train alike."""
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    models = []
    for keras_path in (False, True):
        model = _model("ddtp_linear", 4)
        if keras_path:
            model._arrays_for_fit = lambda arguments: None
        seen = []
        for data, extra in ((dict(x=dataset), {}), (dict(x=x, y=y), dict(sample_weight=np.ones(ROWS))),
                            (dict(x=x, y=y), {})):
            path = _Path()
            model.fit(**data, **extra, batch_size=None if "y" not in data else BATCH, epochs=1, shuffle=False,
                      verbose=0, callbacks=[path])
            seen.append(any(path.array_path))
        if not keras_path:
            assert seen == [False, False, True]
        models.append(model)
    for a, b in zip(*(m.weights for m in models)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_shuffled_fit_stays_on_keras_path():
    model, _, path = _fit("bp", 4, keras_path=False, epochs=1)
    assert all(path.array_path)
    x, y = _data()
    path = _Path()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[path])  # shuffle=True, Keras' default
    assert path.array_path and not any(path.array_path)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ddtp_linear", "dtpdrl"])
def test_array_path_with_xla_equals_keras_path(method):
    """XLA compiles the whole loop of batches; the step is traced for a batch of unknown size, as Keras traces it,
    so XLA's arithmetic is the same."""
    for steps_per_execution in (1, 4):
        _assert_same(_fit(method, steps_per_execution, keras_path=False, jit_compile=True),
                     _fit(method, steps_per_execution, keras_path=True, jit_compile=True))
