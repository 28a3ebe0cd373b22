"""Runs that survive faults: a killed run resumed from its checkpoint ends exactly like an uninterrupted one, and
a non-finite value stops the run naming the epoch, batch and layer while the last good checkpoint stays."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tp_keras.config import Config

TINY = dict(num_hidden=2, size_hidden=8, batch_size=16, validation_size=20, progress=False)
TIME_KEYS = ("total_seconds", "train_seconds", "fb_seconds", "eval_seconds", "epoch_seconds")



def _without_times(obj):
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items() if k not in TIME_KEYS}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_killed_run_resumes_to_the_uninterrupted_result(mnist_dir, tmp_path):
    """A launcher process killed (SIGKILL) right after epoch 1 of 3, then resumed: summary, metrics and angles
    equal an uninterrupted run's exactly (timings aside)."""
    from tp_keras.experiment import train_and_evaluate
    args = dict(method="ddtp_linear", data_dir=mnist_dir, epochs=3, epochs_fb=1, extra_fb_epochs=1,
                log_angles=True, log_interval=2, **TINY)
    killed = tmp_path / "killed"
    flags = [f"--{k}={v}" for k, v in args.items() if k not in ("progress", "log_angles")]
    env = dict(os.environ, TP_KERAS_KILL_AT="after_checkpoint:2")
    result = subprocess.run([sys.executable, "-m", "tp_keras.launch", *flags, "--log_angles", "--noprogress",
                             f"--workdir={killed}"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert [r["epoch"] for r in _lines(killed / "metrics.jsonl")] == [0, 1]
    assert json.loads((killed / "summary.json").read_text())["status"] == "running"
    resumed = train_and_evaluate(Config.paper(**args), str(killed), resume=True)
    straight = train_and_evaluate(Config.paper(**args), str(tmp_path / "straight"))
    assert resumed["status"] == "finished" and resumed["epochs_run"] == 3
    assert _without_times(resumed) == _without_times(straight)
    assert _without_times(_lines(killed / "metrics.jsonl")) == _without_times(
        _lines(tmp_path / "straight" / "metrics.jsonl"))
    assert _lines(killed / "angles.jsonl") == _lines(tmp_path / "straight" / "angles.jsonl")


def test_resume_refuses_a_different_configuration(mnist_dir, tmp_path):
    from tp_keras.config import ConfigError
    from tp_keras.experiment import train_and_evaluate
    train_and_evaluate(Config.paper("dfa", data_dir=mnist_dir, epochs=1, **TINY), str(tmp_path))
    with pytest.raises(ConfigError, match="--resume: .*lr="):
        train_and_evaluate(Config.paper("dfa", data_dir=mnist_dir, epochs=2, lr=0.5, **TINY), str(tmp_path),
                           resume=True)
    # Extending a finished run (more epochs) is allowed and continues from its last epoch.
    summary = train_and_evaluate(Config.paper("dfa", data_dir=mnist_dir, epochs=2, **TINY), str(tmp_path),
                                 resume=True)
    assert [r["epoch"] for r in _lines(tmp_path / "metrics.jsonl")] == [1, 2] and summary["epochs_run"] == 2


def test_non_finite_target_stops_the_run_naming_epoch_batch_and_layer(mnist_dir, tmp_path):
    """NaN injected into hidden layer 2's feedback weights during epoch 2, before batch 3: the loss stays finite
    but ĥ_2 does not; the run stops with a message naming epoch 2, batch 3 and layer 2, and the checkpoint of
    epoch 1 (finite weights) is kept."""
    from tp_keras.data import load_dataset
    from tp_keras.experiment import CHECKPOINT, build_model, build_trainer, train_and_evaluate
    config = Config.paper("ddtp_linear", data_dir=mnist_dir, epochs=3, epochs_fb=0, extra_fb_epochs=0, **TINY)
    dataset = load_dataset("mnist", mnist_dir, seed=config.seed, validation_size=20)
    trainer = build_trainer(config, build_model(config, dataset))
    step, calls = trainer.train_step, []
    kernel = trainer.model.direct_feedback.kernels[1]

    def injecting_step(x, y):
        calls.append(1)
        if len(calls) == 5 + 4:  # 5 batches per epoch: epoch 2, batch index 3
            kernel.assign(np.full(kernel.shape, np.nan, kernel.dtype))
        return step(x, y)

    trainer.train_step = injecting_step
    summary = train_and_evaluate(config, str(tmp_path), dataset, trainer)
    assert summary["status"] == "diverged: non-finite layer 2's target (or activation) in epoch 2, batch 3"
    assert summary["epochs_run"] == 1
    with np.load(tmp_path / CHECKPOINT) as data:
        header = json.loads(str(data["header"]))
        assert header["epoch"] == 1
        assert all(np.all(np.isfinite(data[k])) for k in data.files if k != "header")


def test_launcher_reports_divergence_in_one_line(mnist_dir, tmp_path):
    """A learning rate that blows the run up: exit status 2, one error line naming the epoch and batch."""
    result = subprocess.run([sys.executable, "-m", "tp_keras.launch", "--method=bp", f"--data_dir={mnist_dir}",
                             "--epochs=2", "--lr=1e38", "--num_hidden=2", "--size_hidden=8", "--batch_size=16",
                             "--validation_size=20", "--noprogress", f"--workdir={tmp_path}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: diverged: non-finite") and "epoch" in last and "batch" in last, last
    assert (tmp_path / "summary.json").exists()


def test_launcher_runs_under_a_strategy_and_refuses_bad_combinations(mnist_dir, tmp_path):
    """--strategy=one_device runs the distributed trainer end to end (checkpoint included); angle logging under a
    strategy and a TPU address without --strategy are refused in one line naming the flag."""
    base = [sys.executable, "-m", "tp_keras.launch", "--method=dtpdrl", f"--data_dir={mnist_dir}", "--epochs=1",
            "--epochs_fb=0", "--num_hidden=2", "--size_hidden=8", "--batch_size=16", "--validation_size=20",
            "--noprogress"]
    ok = subprocess.run(base + ["--strategy=one_device", f"--workdir={tmp_path / 'a'}"], capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "OneDeviceStrategy with 1 replica" in ok.stdout
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["status"] == "finished"
    assert (tmp_path / "a" / "checkpoint.npz").exists()
    for extra, flag in ((["--strategy=one_device", "--log_angles"], "--log_angles"), (["--tpu=local"], "--tpu")):
        bad = subprocess.run(base + extra + [f"--workdir={tmp_path / 'b'}"], capture_output=True, text=True,
                             timeout=300)
        assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(f"error: {flag}:"), \
            bad.stderr[-1000:]
