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
