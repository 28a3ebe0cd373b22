"""One step, two drivers: Keras `fit` on a TPModel and the custom loop (`step.Trainer`) give the same weights."""
import numpy as np
import pytest

from tp_keras.model import TPModel
from tp_keras.optimizers import TorchAdam
from tp_keras.step import Trainer


@pytest.mark.parametrize("method", ["bp", "dtpdrl", "ddtp_linear", "dfa"])
def test_fit_equals_custom_loop(method):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 12)).astype("float32")
    y = rng.integers(0, 3, 96).astype("int32")
    kwargs = dict(target_stepsize=0.1, sigma=0.1, seed=3)
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


def test_compile_requires_feedback_optimizer_when_feedback_trains():
    model = TPModel("dtpdrl", 4, [3], 2)
    with pytest.raises(ValueError, match="feedback_optimizer"):
        model.compile(forward_optimizer=TorchAdam(1e-3))


def test_feedback_schedule_in_fit_matches_the_custom_loop_schedule():
    """FeedbackSchedule(pretrain, extra) in fit runs the same feedback-only passes as train_feedback called by
    hand around fit epochs: identical weights; and the pre-training lowers the feedback loss."""
    import numpy as np
    import keras
    from tp_keras.model import FeedbackSchedule
    from tp_keras.optimizers import TorchAdam
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
