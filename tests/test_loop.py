"""Many batches per compiled call (tp_keras/core/loop.py): the plan of a pass, and bit-identity with one batch per call
in the custom loop (every method, pre-training, extra feedback passes, angle logging, resume) and in Keras fit."""
import json

import numpy as np
import pytest

from conftest import STEP_METHODS, fast_tier
from tp_keras.core import loop
from tp_keras.core.rules import RULES
from tp_keras.run.config import Config, ConfigError

# 77 training samples in batches of 16: four full batches and one of 13.
TINY = dict(num_hidden=2, size_hidden=8, batch_size=16, validation_size=23, progress=False)


def test_plan_cuts_a_pass_into_loops_single_steps_and_angle_batches():
    assert list(loop.plan_pass(5, 4, 1)) == [("step", i, 1) for i in range(5)]
    assert list(loop.plan_pass(5, 4, 3)) == [("loop", 0, 3), ("step", 3, 1), ("step", 4, 1)]
    assert list(loop.plan_pass(5, 4, 100)) == [("loop", 0, 4), ("step", 4, 1)]
    assert list(loop.plan_pass(10, 10, 100, log_interval=4)) == [
        ("angle", 0, 1), ("loop", 1, 3), ("angle", 4, 1), ("loop", 5, 3), ("angle", 8, 1), ("step", 9, 1)]
    plan = list(loop.plan_pass(469, 468, 50, log_interval=80))
    assert [b for _, first, count in plan for b in range(first, first + count)] == list(range(469))


@pytest.mark.parametrize("value, parsed", [("auto", "auto"), ("EPOCH", "epoch"), ("7", 7), (3, 3)])
def test_steps_per_call_values(value, parsed):
    assert Config.paper("bp", steps_per_call=value).validate().steps_per_call == parsed


def test_auto_is_one_call_per_progress_update_on_a_cpu_and_the_whole_pass_on_an_accelerator(monkeypatch):
    device_defaults = loop.device_defaults
    for device, expected in (("CPU", {5: 1, 39: 1, 40: 2, 430: 21, 469: 23}), ("GPU", {5: 5, 430: 430}),
                             ("TPU", {430: 430})):
        monkeypatch.setattr(loop, "device_defaults", lambda device_=None, d=device: device_defaults(d))
        assert {steps: loop.resolve_steps("auto", steps) for steps in expected} == expected
    # The progress bar of a pass updates after every such call (run.passes.run_pass), 20 times a pass.
    assert [loop.progress_interval(steps) for steps in (5, 430)] == [1, 21]
    assert [loop.resolve_steps(value, 430) for value in (1, 7, "epoch")] == [1, 7, 430]


@pytest.mark.parametrize("bad", [0, -2, "many", 2.5, True])
def test_bad_steps_per_call_is_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match=r"^--steps_per_call: .* give a positive integer, 'epoch'"):
        Config.paper("bp", steps_per_call=bad).validate()


def _run(mnist_dir, folder, method, steps_per_call, **overrides):
    from tp_keras.run.experiment import train_and_evaluate
    settings = dict(data_dir=mnist_dir, epochs=2, steps_per_call=steps_per_call, **TINY,
                    **(dict(epochs_fb=1, extra_fb_epochs=1) if RULES[method].trains_feedback else {}))
    settings.update(overrides)
    summary = train_and_evaluate(Config.paper(method, **settings), str(folder))
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    rows = [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]
    with np.load(folder / "checkpoint.npz") as saved:
        arrays = {k: saved[k] for k in saved.files if k.startswith("v")}
    angles = (folder / "angles.jsonl").read_text() if (folder / "angles.jsonl").exists() else None
    return summary["status"], rows, arrays, angles


def _assert_identical(a, b):
    assert a[0] == b[0] == "finished"
    assert a[1] == b[1]  # every metric of every epoch, to the last bit
    assert a[2].keys() == b[2].keys()
    for key in a[2]:
        np.testing.assert_array_equal(a[2][key], b[2][key])
    assert a[3] == b[3]


@pytest.mark.slow
def test_custom_loop_is_bit_identical_with_angles(mnist_dir, tmp_path):
    runs = [_run(mnist_dir, tmp_path / str(n), "ddtp_linear", n, log_angles=True, log_interval=3)
            for n in (1, "epoch")]
    _assert_identical(*runs)


# Every method (one per compiled step: conftest.STEP_METHODS), ddtp_control included: its targets' sum (ĥ_L Q + d) + r
# can round differently inside the loop's body than in a step's own graph (BUILD_NOTES, "Many batches per
# compiled call"), and must not.
# N = 3 runs the loop at two counts per pass (3, then the 1 full batch left); the whole pass in one call is the same
# loop at a third count, checked once above (with angles) rather than for every method, to keep the suite short.
# The N = 1 run traces its steps itself (run.trace_ahead off), the N = 3 run on the trace-ahead thread: the same
# bits show that neither the loop nor tracing ahead changes a result.
@pytest.mark.slow
@pytest.mark.parametrize("method", STEP_METHODS)
def test_custom_loop_is_bit_identical_for_every_method(mnist_dir, tmp_path, method, monkeypatch):
    from tp_keras.run import trace_ahead
    monkeypatch.setattr(trace_ahead, "ENABLED", False)
    one = _run(mnist_dir, tmp_path / "one", method, 1)
    monkeypatch.setattr(trace_ahead, "ENABLED", True)
    _assert_identical(one, _run(mnist_dir, tmp_path / "three", method, 3))


def _fitted(method, steps_per_execution, pretrain=1, extra=1):
    from test_keras_conventions import METRIC_FREE, _compiled, _data
    from tp_keras.core.callbacks import FeedbackSchedule
    x, y = _data(n=27)  # batches of 4: six full and one of 3
    model = _compiled(method, steps_per_execution=steps_per_execution)
    callbacks = [FeedbackSchedule(x, y, pretrain_epochs=pretrain, extra_epochs=extra, batch_size=4)] \
        if RULES[method].trains_feedback else []
    history = model.fit(x, y, batch_size=4, epochs=2, callbacks=callbacks, **METRIC_FREE).history
    return [np.asarray(v.numpy()) for v in model.weights], history, [c.history for c in callbacks]


@pytest.mark.parametrize("method", fast_tier(STEP_METHODS, fast=("bp",)))
def test_fit_steps_per_execution_is_bit_identical(method):
    one, four = _fitted(method, 1), _fitted(method, 4)
    for a, b in zip(one[0], four[0]):
        np.testing.assert_array_equal(a, b)
    assert one[1:] == four[1:]
