"""Runs that survive faults: a killed run resumed from its checkpoint ends exactly like an uninterrupted one, and
a non-finite value stops the run naming the epoch, batch and layer while the last good checkpoint stays."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tp_keras.run.config import Config

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


# The kill chain: each step resumes the run the step before killed, and is itself killed at the next point; the
# last step finishes. 5 batches per pass (80 training samples, batch 16); epochs=2, epochs_fb=1, extra_fb_epochs=1.
# Counts are per process: a process resumed from epoch 0 runs no pre-training, so its first feedback batches are
# those of the extra pass after epoch 1.
KILL_CHAIN = [
    # (TP_KERAS_KILL_AT, exit status, epoch of the checkpoint left (None: none), what the point is)
    ("feedback_batch:3", -signal.SIGKILL, None, "in feedback pre-training, before the first checkpoint"),
    ("after_checkpoint:1", -signal.SIGKILL, 0, "right after pre-training's checkpoint"),
    ("train_batch:3", -signal.SIGKILL, 0, "mid-epoch (epoch 1, batch 3)"),
    ("feedback_batch:2", -signal.SIGKILL, 0, "during the extra feedback pass after epoch 1"),
    ("checkpoint_rename:1", -signal.SIGKILL, 0, "during epoch 1's checkpoint write, temporary complete"),
    ("train_batch:7:TERM", 128 + signal.SIGTERM, 1, "SIGTERM in epoch 2, batch 2"),
    ("summary_rename:2", -signal.SIGKILL, 2, "during the last epoch's final summary write"),
    (None, 0, 2, "the resumed run finishes"),
]


def _launch_flags(mnist_dir, workdir):
    return ["--method=ddtp_linear", f"--data_dir={mnist_dir}", "--epochs=2", "--epochs_fb=1",
            "--extra_fb_epochs=1", "--num_hidden=2", "--size_hidden=8", "--batch_size=16", "--validation_size=20",
            "--log_angles", "--log_interval=2", "--noprogress", f"--workdir={workdir}"]


def _child(flags, kill_at=None):
    env = dict(os.environ, TF_DETERMINISTIC_OPS="1", PYTHONUNBUFFERED="1")
    env.pop("TP_KERAS_KILL_AT", None)
    if kill_at:
        env["TP_KERAS_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "tp_keras.launch", *flags], env=env, capture_output=True,
                          text=True, timeout=300)


def _checkpoint(workdir):
    from tp_keras.run.rundir import read_checkpoint
    return read_checkpoint(str(workdir / "checkpoint.npz")) if (workdir / "checkpoint.npz").exists() else None


@pytest.mark.slow
def test_killed_anywhere_the_resumed_run_ends_exactly_as_an_uninterrupted_one(mnist_dir, tmp_path):
    """SIGKILL (and one SIGTERM) at every kill point of a run with feedback pre-training, extra feedback passes and
    angle logging, each followed by --resume: summary.json, metrics.jsonl, angles.jsonl and every weight and
    optimizer slot of the checkpoint equal those of an uninterrupted run with the same seed, bit for bit (timings
    aside); child processes run with TF_DETERMINISTIC_OPS=1."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = _child(_launch_flags(mnist_dir, straight))
    assert reference.returncode == 0, reference.stderr[-2000:]
    for step, (kill_at, status, epoch, what) in enumerate(KILL_CHAIN):
        result = _child(_launch_flags(mnist_dir, killed) + (["--resume"] if step else []), kill_at)
        assert result.returncode == status, (what, result.returncode, result.stderr[-2000:])
        left = _checkpoint(killed)
        assert (left[0]["epoch"] if left else None) == epoch, what
        temporaries = [n for n in os.listdir(killed) if n.startswith(".tmp_")]
        assert temporaries == ([] if kill_at not in ("checkpoint_rename:1", "summary_rename:2") else temporaries)
        if kill_at == "checkpoint_rename:1":  # SIGKILL leaves the complete temporary; the next run removes it
            assert len(temporaries) == 1 and temporaries[0].startswith(".tmp_checkpoint.npz.")
        if status == 128 + signal.SIGTERM:
            assert json.loads((killed / "summary.json").read_text())["status"] == "interrupted"
            assert result.stderr.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM in epoch 2")
    assert sorted(os.listdir(killed)) == sorted(os.listdir(straight))  # no temporary, no lock left
    for name in ("summary.json",):
        assert _without_times(json.loads((killed / name).read_text())) == _without_times(
            json.loads((straight / name).read_text()))
    assert _without_times(_lines(killed / "metrics.jsonl")) == _without_times(_lines(straight / "metrics.jsonl"))
    assert _lines(killed / "angles.jsonl") == _lines(straight / "angles.jsonl")
    (header, arrays), (ref_header, ref_arrays) = _checkpoint(killed), _checkpoint(straight)
    assert (header["epoch"], header["passes"], header["names"]) == (ref_header["epoch"], ref_header["passes"],
                                                                   ref_header["names"])
    assert _without_times(header["history"]) == _without_times(ref_header["history"])
    assert sorted(arrays) == sorted(ref_arrays) and len(arrays) == len(header["names"])
    for key, value in ref_arrays.items():  # every weight, optimizer slot and the noise generator's state
        assert arrays[key].dtype == value.dtype and np.array_equal(arrays[key], value), header["names"][int(key[1:])]


def test_kill_points_are_named_and_counted(monkeypatch):
    from tp_keras.run import faults
    signals = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: signals.append(sig))
    monkeypatch.setattr(faults, "_reached", __import__("collections").Counter())
    monkeypatch.setenv("TP_KERAS_KILL_AT", "train_batch:3:TERM")
    for _ in range(5):
        faults.kill_point("train_batch")
        faults.kill_point("feedback_batch")
    assert signals == [signal.SIGTERM]
    monkeypatch.setenv("TP_KERAS_KILL_AT", "after_checkpoint")
    faults.kill_point("after_checkpoint")
    assert signals == [signal.SIGTERM, signal.SIGKILL]
    for bad in ("nowhere", "train_batch:x", "train_batch:2:HUP"):
        monkeypatch.setenv("TP_KERAS_KILL_AT", bad)
        with pytest.raises(faults.KillSpecError, match=f"^TP_KERAS_KILL_AT={bad}: expected"):
            faults.kill_spec()


@pytest.mark.slow
def test_resume_refuses_a_different_configuration(mnist_dir, tmp_path):
    from tp_keras.run.config import ConfigError
    from tp_keras.run.experiment import train_and_evaluate
    train_and_evaluate(Config.paper("dfa", data_dir=mnist_dir, epochs=1, **TINY), str(tmp_path))
    with pytest.raises(ConfigError, match="--resume: .*lr="):
        train_and_evaluate(Config.paper("dfa", data_dir=mnist_dir, epochs=2, lr=0.5, **TINY), str(tmp_path),
                           resume=True)
    # Extending a finished run (more epochs) is allowed and continues from its last epoch.
    summary = train_and_evaluate(Config.paper("dfa", data_dir=mnist_dir, epochs=2, **TINY), str(tmp_path),
                                 resume=True)
    assert [r["epoch"] for r in _lines(tmp_path / "metrics.jsonl")] == [1, 2] and summary["epochs_run"] == 2


@pytest.mark.slow
def test_non_finite_target_stops_the_run_naming_epoch_batch_and_layer(mnist_dir, tmp_path):
    """NaN injected into hidden layer 2's feedback weights during epoch 2, before batch 3: the loss stays finite
    but ĥ_2 does not; the run stops with a message naming epoch 2, batch 3 and layer 2, and the checkpoint of
    epoch 1 (finite weights) is kept."""
    from tp_keras.run.data import load_dataset
    from tp_keras.run.checkpoint import CHECKPOINT
    from tp_keras.run.experiment import train_and_evaluate
    from tp_keras.run.factories import build_model, build_trainer
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


@pytest.mark.slow
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


@pytest.mark.slow
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
