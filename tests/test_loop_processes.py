"""The multi-step loop in processes of its own: the GPU check script (launch/gpu_check.py) at tiny sizes, and the
loop under tf.distribute (the CPU split into 2 logical devices, which must happen before TensorFlow starts). Apart
from tests/test_loop.py so that the two halves run in parallel under `pytest -n 2 --dist loadfile`."""
import json
import os
import subprocess
import sys

import pytest

from conftest import assert_no_tensorflow_startup_noise


@pytest.mark.slow
def test_gpu_check_script_runs_on_cpu_with_tiny_sizes(mnist_dir, tmp_path):
    out = tmp_path / "check.json"
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch", "gpu_check.py")
    done = subprocess.run([sys.executable, script, f"--data_dir={mnist_dir}", f"--out={out}", "--tiny", "--xla=on"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_no_tensorflow_startup_noise(done.stderr)
    report = json.loads(out.read_text())
    assert {(r["method"], r["steps_per_call"], r["xla"]) for r in report["paper_network"]} == {
        ("ddtp_linear", n, True) for n in (1, "epoch")}
    assert {(r["method"], r["driver"], r["steps_per_call"], r["xla"]) for r in report["host_bound"]} == {
        ("ddtp_linear", d, n, True) for d in ("loop", "fit") for n in (1, 4)}
    assert set(report["part_seconds"]) == {"agree", "run", "paper", "proxy"}
    assert all(r["steps_per_second"] > 0 for r in report["paper_network"] + report["host_bound"])
    assert report["gpu_cpu_agreement"] == {"ddtp_linear": {"xla_on": 0.0}}  # the CPU against itself
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
from tp_keras.core.rules import RULES
from tp_keras.run.distribute import DistributedTrainer, make_strategy
strategy = make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2
rng = np.random.default_rng(0)
X = tf.constant(rng.normal(size=(48, 7)).astype("float32"))
Y = tf.constant((np.arange(48) % 3).astype("int32"))
for method in sys.argv[1:]:
    runs = []
    for multi in (False, True):
        t = DistributedTrainer(lambda: TPModel(method, 7, [6, 5, 4], 3, seed=5,
                                               **RULES[method].used(target_stepsize=0.1, sigma=0.1)),
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
