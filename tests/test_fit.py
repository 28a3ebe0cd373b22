"""One step, two drivers: Keras `fit` on a TPModel and the custom loop (`step.Trainer`) give the same weights."""
import os
import numpy as np
import pytest

from conftest import FEEDBACK_PATH_METHODS
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchAdam
from tp_keras.core.step import Trainer


@pytest.mark.slow
@pytest.mark.parametrize("method", FEEDBACK_PATH_METHODS)
def test_fit_equals_custom_loop(method):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 12)).astype("float32")
    y = rng.integers(0, 3, 96).astype("int32")
    from tp_keras.core.rules import get_rule
    kwargs = dict(get_rule(method).used(target_stepsize=0.1, sigma=0.1), seed=3)
    by_fit = TPModel(method, 12, [8, 8], 3, **kwargs)
    by_loop = TPModel(method, 12, [8, 8], 3, **kwargs)
    initial = [w.numpy().copy() for w in by_fit.weights]
    by_fit.compile(forward_optimizer=TorchAdam(1e-2), feedback_optimizer=TorchAdam(1e-3))
    history = by_fit.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    trainer = Trainer(by_loop, TorchAdam(1e-2), TorchAdam(1e-3))
    for _ in range(2):
        for i in range(0, 96, 32):
            trainer.train_step(x[i:i + 32], y[i:i + 32])
    changed = 0
    for w0, a, b in zip(initial, by_fit.weights, by_loop.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
        changed += int(not np.array_equal(w0, a.numpy()))
    assert changed >= len(by_fit.forward_variables)  # training did happen
    assert set(history.history) >= {"loss", "accuracy"}
    result = by_fit.evaluate(x, y, verbose=0, return_dict=True)
    logits = by_fit.predict(x, verbose=0)
    assert result["accuracy"] == pytest.approx(np.mean(np.argmax(logits, 1) == y), abs=1e-6)


def test_compile_without_feedback_optimizer_gives_the_papers_feedback_adam():
    """A method that trains feedback weights and gets no feedback_optimizer= trains them with its paper MNIST
    feedback Adam, rather than being refused."""
    from tp_keras.reference import configs as paper_configs
    model = TPModel("dtpdrl", 4, [3], 2, dtype="float64")
    model.compile(forward_optimizer=TorchAdam(1e-3))
    paper = paper_configs.MNIST_CONFIGS["dtpdrl"]
    config = model.feedback_optimizer.get_config()
    assert isinstance(model.feedback_optimizer, TorchAdam) and config["precision"] == "float64"
    assert (config["learning_rate"], config["beta_1"], config["beta_2"], config["epsilon"], config["l2_decay"]) == (
        pytest.approx(paper["lr_fb"], rel=1e-15), paper["beta1_fb"], paper["beta2_fb"], paper["epsilon_fb"],
        paper["feedback_wd"])


@pytest.mark.slow
def test_feedback_schedule_in_fit_matches_the_custom_loop_schedule():
    """FeedbackSchedule(pretrain, extra) in fit runs the same feedback-only passes as train_feedback called by
    hand around fit epochs: identical weights; and the pre-training lowers the feedback loss."""
    import numpy as np
    import keras
    from tp_keras.core.callbacks import FeedbackSchedule
    from tp_keras.core.optimizers import TorchAdam
    from conftest import make_model
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 7))
    y = rng.integers(0, 3, 48)
    weights = []
    for use_callback in (True, False):
        model = make_model("ddtp_linear")
        model.compile(forward_optimizer=TorchAdam(1e-3), feedback_optimizer=TorchAdam(1e-2))
        if use_callback:
            schedule = FeedbackSchedule(x, y, pretrain_epochs=3, extra_epochs=1, batch_size=16)
            model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[schedule])
            assert len(schedule.history) == 3 + 2 and schedule.history[2] < schedule.history[0]
        else:
            model.train_feedback(x, y, epochs=3, batch_size=16)
            for _ in range(2):
                model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
                model.train_feedback(x, y, epochs=1, batch_size=16)
        weights.append([np.asarray(v.numpy()) for v in model.forward_variables + model.feedback_variables])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_fit_with_standard_keras_callbacks(tmp_path):
    """TensorBoard, CSVLogger, EarlyStopping and ModelCheckpoint (.keras files) work with a TP model's fit: the
    CSV has one row per epoch with the tracked metrics, early stopping stops, and the checkpointed file loads
    back and predicts exactly like the model at that epoch."""
    import csv
    import numpy as np
    import keras
    from tp_keras.core.callbacks import FeedbackSchedule
    from tp_keras.core.optimizers import TorchAdam
    from conftest import make_model
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 7)), rng.integers(0, 3, 40)
    model = make_model("dtpdrl")
    model.compile(forward_optimizer=TorchAdam(1e-3), feedback_optimizer=TorchAdam(1e-3))
    # FeedbackSchedule first: callbacks run in order, and it adds rec_loss_extra to the epoch's logs.
    callbacks = [FeedbackSchedule(x, y, extra_epochs=1, batch_size=20),
                 keras.callbacks.TensorBoard(str(tmp_path / "tb")),
                 keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
                 # min_delta larger than any change: stops after `patience` epochs without improvement
                 keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=10.0, patience=2),
                 keras.callbacks.ModelCheckpoint(str(tmp_path / "epoch{epoch}.keras"))]
    history = model.fit(x, y, batch_size=20, epochs=10, validation_data=(x[:10], y[:10]), verbose=0,
                        callbacks=callbacks)
    assert len(history.history["loss"]) == 3  # epoch 1, then 2 without a 10.0 improvement
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {"loss", "accuracy", "rec_loss", "val_loss", "rec_loss_extra"} <= set(rows[0])
    assert os.listdir(tmp_path / "tb")
    restored = keras.saving.load_model(str(tmp_path / "epoch3.keras"))
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))


# --- TPModel's train function: the loop over steps_per_execution batches -------------------------------------------
class _Recorder:
    """What fit hands its callbacks: (hook, step or epoch, logs as Python floats) in order."""

    def __new__(cls):
        import keras

        class Recorder(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.calls = []

            def on_train_batch_begin(self, batch, logs=None):
                self.calls.append(("batch_begin", batch, dict(logs or {})))

            def on_train_batch_end(self, batch, logs=None):
                self.calls.append(("batch_end", batch, {k: float(v) for k, v in (logs or {}).items()}))

            def on_epoch_end(self, epoch, logs=None):
                self.calls.append(("epoch_end", epoch, {k: float(v) for k, v in (logs or {}).items()}))
        return Recorder()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ddtp_linear", "dtpdrl", "bp"])
def test_fit_with_steps_per_execution_equals_single_steps_of_the_custom_loop(method):
    """fit with compile(steps_per_execution=3) over 7 full batches (executions of 3, 3 and 1 batches) gives, bit for
    bit, the weights of 7 single steps of the custom loop (`step.Trainer.train_step`), and the epoch's loss is the
    Keras mean of those steps' losses, weighted by rows, accumulated in float32 as keras.metrics.Mean does."""
    from conftest import make_model
    rng = np.random.default_rng(4)
    # Values float32 holds exactly: Keras' array adapter hands float inputs to the model in floatx (float32).
    x, y = rng.normal(size=(28, 7)).astype("float32").astype("float64"), rng.integers(0, 3, 28).astype("int32")
    by_fit, by_loop = make_model(method), make_model(method)
    def extra():
        return {"feedback_optimizer": TorchAdam(1e-2, precision="float64")} if by_fit.feedback_variables else {}
    by_fit.compile(optimizer=TorchAdam(1e-2, precision="float64"), steps_per_execution=3, **extra())
    history = by_fit.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    trainer = Trainer(by_loop, TorchAdam(1e-2, precision="float64"), extra().get("feedback_optimizer"))
    losses = [trainer.train_step(x[i:i + 4], y[i:i + 4])["loss"].numpy() for i in range(0, 28, 4)]
    for a, b in zip(by_fit.weights, by_loop.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    total = count = np.float32(0)
    for loss in losses:  # Mean.update_state(loss, sample_weight=rows): float32 state
        total, count = total + np.float32(loss) * np.float32(4), count + np.float32(4)
    assert history.history["loss"] == [float(total / count)]


def _fit_recorded(keras_own_function, method="dtpdrl", steps_per_execution=3, jit_compile=False, **fit_kwargs):
    import keras
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
    from conftest import make_model
    model = make_model(method)
    model.compile(optimizer=TorchAdam(1e-2, precision="float64"),
                  feedback_optimizer=TorchAdam(1e-2, precision="float64"),
                  steps_per_execution=steps_per_execution, jit_compile=jit_compile, metrics=["accuracy"])
    if keras_own_function:
        TensorFlowTrainer.make_train_function(model)  # Keras' own loop: fit finds it made and keeps it
    recorder = _Recorder()
    keras.utils.set_random_seed(11)  # shuffle=True draws Keras' permutation from it
    history = model.fit(callbacks=[recorder], verbose=0, **fit_kwargs)
    return [v.numpy() for v in model.weights], recorder.calls, history.history


def _assert_same_fit(ours, keras_own):
    for a, b in zip(ours[0], keras_own[0]):
        np.testing.assert_array_equal(a, b)
    assert ours[1] == keras_own[1]  # every hook, in order, with the same step numbers and logs
    assert ours[2] == keras_own[2]


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True])
def test_train_function_reports_to_callbacks_as_keras_own_does(jit_compile):
    """TPModel's train function against Keras' own (TensorFlowTrainer.make_train_function) on the same model and
    data: 27 rows in batches of 4 (six full, one of 3), 3 batches per execution, shuffled by Keras, sample weights,
    validation data, two epochs, XLA off and on: the same weights, the same hooks with the same step numbers and
    batch logs (once per execution), the same history."""
    from test_keras_conventions import _data
    x, y = _data(n=27)
    weights = np.random.default_rng(2).uniform(0.5, 1.5, 27)
    kwargs = dict(x=x, y=y, batch_size=4, epochs=2, shuffle=True, sample_weight=weights,
                  validation_data=(x[:9], y[:9]))
    ours, keras_own = (_fit_recorded(own, jit_compile=jit_compile, **kwargs) for own in (False, True))
    assert [step for hook, step, _ in ours[1] if hook == "batch_end"] == [2, 5, 8] * 2
    assert {"loss", "accuracy", "rec_loss"} <= set(ours[1][1][2])
    _assert_same_fit(ours, keras_own)


@pytest.mark.slow
def test_fit_on_a_dataset_of_unknown_size_draws_the_custom_loops_noise():
    """A tf.data.Dataset of unknown cardinality, where the data running out ends the epoch (Keras' StopIteration):
    fit with 1 and 4 batches per execution gives, bit for bit, the weights of the custom loop over the same batches
    for two epochs, so the second epoch draws the custom loop's noise. (Keras' own one-batch function does not: its
    call that finds the data ended has already run the step's data-independent ops, among them the noise
    generator's advance, so the next epoch draws other noise.) With 4, the hooks and history are Keras' own."""
    import tensorflow as tf
    from conftest import make_model
    from test_keras_conventions import _data
    x, y = _data(n=22)  # five batches of 4 and one of 2
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda *_: True).batch(4)
    model = make_model("dtpdrl")
    trainer = Trainer(model, TorchAdam(1e-2, precision="float64"), TorchAdam(1e-2, precision="float64"))
    for _ in range(2):
        for x_batch, y_batch in dataset:
            trainer.train_step(x_batch, y_batch)
    for steps in (1, 4):
        ours = _fit_recorded(False, steps_per_execution=steps, x=dataset, epochs=2, shuffle=False)
        for a, b in zip(ours[0], model.weights):
            np.testing.assert_array_equal(a, b.numpy())
    assert [step for hook, step, _ in ours[1] if hook == "batch_end"] == [3, 7] * 2
    _assert_same_fit(ours, _fit_recorded(True, steps_per_execution=4, x=dataset, epochs=2, shuffle=False))
