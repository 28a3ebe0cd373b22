"""Many batches per compiled call (tp_keras/loop.py): the plan of a pass, and bit-identity with one batch per call
in the custom loop (every method, pre-training, extra feedback passes, angle logging, resume) and in Keras fit."""
import json

import numpy as np
import pytest

from conftest import ALL_METHODS
from tp_keras.core import loop
from tp_keras.core.methods import METHODS
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


@pytest.mark.parametrize("bad", [0, -2, "many", 2.5, True])
def test_bad_steps_per_call_is_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match=r"^--steps_per_call: .* give a positive integer, 'epoch'"):
        Config.paper("bp", steps_per_call=bad).validate()


def _run(mnist_dir, folder, method, steps_per_call, **overrides):
    from tp_keras.run.experiment import train_and_evaluate
    settings = dict(data_dir=mnist_dir, epochs=2, epochs_fb=1, extra_fb_epochs=1, steps_per_call=steps_per_call,
                    **TINY)
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


# Every method, ddtp_control included: its targets' sum (ĥ_L Q + d) + r once rounded differently inside the loop's
# body than in a step's own graph (BUILD_NOTES, "Many batches per compiled call"); since the rule refactor both agree.
@pytest.mark.slow
@pytest.mark.parametrize("method", ALL_METHODS)
def test_custom_loop_is_bit_identical_for_every_method(mnist_dir, tmp_path, method):
    one = _run(mnist_dir, tmp_path / "one", method, 1)
    _assert_identical(one, _run(mnist_dir, tmp_path / "three", method, 3))
    _assert_identical(one, _run(mnist_dir, tmp_path / "epoch", method, "epoch"))


def _fitted(method, steps_per_execution, pretrain=1, extra=1):
    from test_keras_conventions import METRIC_FREE, _compiled, _data
    from tp_keras.core.model import FeedbackSchedule
    x, y = _data(n=27)  # batches of 4: six full and one of 3
    model = _compiled(method, steps_per_execution=steps_per_execution)
    callbacks = [FeedbackSchedule(x, y, pretrain_epochs=pretrain, extra_epochs=extra, batch_size=4)] \
        if METHODS[method].trains_feedback else []
    history = model.fit(x, y, batch_size=4, epochs=2, callbacks=callbacks, **METRIC_FREE).history
    return [np.asarray(v.numpy()) for v in model.weights], history, [c.history for c in callbacks]


@pytest.mark.parametrize("method", [pytest.param("ddtp_linear", marks=pytest.mark.slow), "bp"])
def test_fit_steps_per_execution_is_bit_identical(method):
    one, four = _fitted(method, 1), _fitted(method, 4)
    for a, b in zip(one[0], four[0]):
        np.testing.assert_array_equal(a, b)
    assert one[1:] == four[1:]


@pytest.mark.slow
@pytest.mark.parametrize("method", ALL_METHODS)
def test_fit_steps_per_execution_is_bit_identical_for_every_method(method):
    test_fit_steps_per_execution_is_bit_identical(method)


@pytest.mark.slow
def test_gpu_check_script_runs_on_cpu_with_tiny_sizes(mnist_dir, tmp_path):
    import os
    import subprocess
    import sys
    out = tmp_path / "check.json"
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch", "gpu_check.py")
    done = subprocess.run([sys.executable, script, f"--data_dir={mnist_dir}", f"--out={out}", "--tiny"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert {(r["method"], r["steps_per_call"], r["xla"]) for r in report["paper_network"]} == {
        (m, n, x) for m in ("bp", "ddtp_linear") for n in (1, "epoch") for x in (False, True)}
    assert {(r["driver"], r["steps_per_call"]) for r in report["host_bound"]} == {
        (d, n) for d in ("loop", "fit") for n in (1, 4)}
    assert all(r["steps_per_second"] > 0 for r in report["paper_network"] + report["host_bound"])
    run = report["ddtp_linear_run"]
    assert run["summary"]["status"] == "finished" and run["summary"]["epochs_run"] == 2 and run["epochs_fb"] == 1


_DISTRIBUTED = r'''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from tp_keras.core import loop
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchAdam
from tp_keras.run.distribute import DistributedTrainer, make_strategy
strategy = make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2
rng = np.random.default_rng(0)
X = tf.constant(rng.normal(size=(48, 7)).astype("float32"))
Y = tf.constant((np.arange(48) % 3).astype("int32"))
for method in sys.argv[1:]:
    runs = []
    for multi in (False, True):
        t = DistributedTrainer(lambda: TPModel(method, 7, [6, 5, 4], 3, target_stepsize=0.1, sigma=0.1, seed=5),
                               lambda: TorchAdam(1e-2, epsilon=1e-4), lambda: TorchAdam(1e-2, epsilon=1e-4), strategy)
        losses = []
        for forward, step, key in ((True, t.train_step, "loss"), (False, t.feedback_step, "rec_loss")):
            if not forward and not t.trains_feedback:
                continue
            if multi:
                losses += loop.DistributedStepLoop(t, forward, 6)(X, Y, 0, 8)[key].numpy().tolist()
            else:
                losses += [float(step(X[i * 6:(i + 1) * 6], Y[i * 6:(i + 1) * 6])[key]) for i in range(8)]
        replicas = [getattr(getattr(v, "value", v), "values", None) for v in t.model.weights]
        assert all(r is not None and np.array_equal(r[0].numpy(), r[1].numpy()) for r in replicas)
        runs.append((np.array(losses), [r[0].numpy() for r in replicas]))
    loss_gap = float(np.max(np.abs(runs[0][0] - runs[1][0])))
    weight_gap = max(float(np.max(np.abs(a - b))) for a, b in zip(runs[0][1], runs[1][1]))
    print("GAP", method, len(runs[0][0]), loss_gap, weight_gap, flush=True)
'''


@pytest.mark.slow
def test_distributed_loop_runs_each_batch_per_replica_as_one_batch_per_call(tmp_path):
    """Under MirroredStrategy over 2 logical CPUs, DistributedStepLoop (strategy.run per batch inside the compiled
    loop, each replica slicing its shard) trains like DistributedTrainer's one-batch calls, to float32 rounding:
    |Δ| ≤ 1e-5 after 8 training and 8 feedback batches (measured ≤ 1e-6; a wrong shard or noise row is ≥ 1e-3)."""
    import os
    import subprocess
    import sys
    script = tmp_path / "distributed_loop.py"
    script.write_text(_DISTRIBUTED)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(script), "bp", "ddtp_linear", "dtpdrl"], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    gaps = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("GAP")]
    assert [g[0] for g in gaps] == ["bp", "ddtp_linear", "dtpdrl"]
    assert [int(g[1]) for g in gaps] == [8, 16, 16]
    assert all(float(g[2]) <= 1e-5 and float(g[3]) <= 1e-5 for g in gaps), gaps
