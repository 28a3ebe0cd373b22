"""A population run (tp_keras/run/population_run.py): K seeds of one rule trained as one Population, each writing
the ordinary workdir of its single run, whose numbers (every metric but the timings, every checkpoint array, the
summary) equal `experiment.train_and_evaluate` with that seed bit for bit in float64; a member that diverges stops
alone as its single run would; a population killed between two members' checkpoints resumes to the uninterrupted
population's files; a member's workdir holding a run is refused; what a population cannot train is refused in one
line; the memory estimate covers K members.

The end-to-end checks train tiny networks on synthetic data (the 100-sample MNIST look-alike of conftest.py, the
400-sample student-teacher regression), tens of seconds each on the 2-core CPU with their single runs: slow tier."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tp_keras.run import memory, rundir
from tp_keras.run.config import Config, ConfigError

TIMINGS = ("train_seconds", "fb_seconds", "eval_seconds", "epoch_seconds", "total_seconds")
SMALL = dict(num_hidden=2, size_hidden=8, progress=False, precision="float64")


def _rows(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _json(path):
    with open(path) as f:
        return json.load(f)


def _without_timings(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMINGS}


def _arrays(folder):
    with np.load(os.path.join(folder, "checkpoint.npz")) as z:
        return {k: z[k] for k in z.files if k.startswith("v")}


def _assert_same_run(member_dir, single_dir):
    """Every metric but the timings, every checkpoint array, the summary but its timing, the config and the
    checkpoint's header (epoch, shuffling passes, history, settings, data) of the member equal its single run's."""
    assert [_without_timings(r) for r in _rows(member_dir)] == [_without_timings(r) for r in _rows(single_dir)]
    a, b = _arrays(member_dir), _arrays(single_dir)
    assert a.keys() == b.keys()
    for key in b:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    summary, single = _json(os.path.join(member_dir, "summary.json")), _json(os.path.join(single_dir, "summary.json"))
    assert _without_timings(summary) == _without_timings(single)
    assert _json(os.path.join(member_dir, "config.json")) == _json(os.path.join(single_dir, "config.json"))
    header_a, _ = rundir.read_checkpoint(os.path.join(member_dir, "checkpoint.npz"))
    header_b, _ = rundir.read_checkpoint(os.path.join(single_dir, "checkpoint.npz"))
    for key in ("epoch", "passes", "config", "data"):
        assert header_a[key] == header_b[key], key
    assert len(header_a["names"]) == len(header_b["names"])  # Keras numbers the models' names per process
    assert [_without_timings(r) for r in header_a["history"]] == [_without_timings(r) for r in header_b["history"]]
    assert os.listdir(os.path.join(member_dir, "tb"))


def _population(configs, folder, **kwargs):
    from tp_keras.run.population_run import train_and_evaluate_population
    workdirs = [str(folder / f"seed_{c.seed}") for c in configs]
    return train_and_evaluate_population(configs, workdirs, **kwargs), workdirs


def _single(config, folder, dataset=None):
    from tp_keras.run.experiment import train_and_evaluate
    workdir = str(folder / f"single_{config.seed}")
    return train_and_evaluate(config, workdir, dataset), workdir


@pytest.mark.slow
@pytest.mark.parametrize("method, dataset, settings", [
    # classification with a validation split per seed (distinct training sets), feedback pre-training and extra
    # feedback passes; 3 batches per compiled call then the one-batch calls (the last batch is smaller)
    ("dtpdrl", "mnist", dict(epochs=2, epochs_fb=1, extra_fb_epochs=1, batch_size=16, validation_size=25,
                             steps_per_call="3")),
    # regression, a direct-feedback rule, one batch per call, the cosine schedule
    ("ddtp_linear", "student_teacher", dict(epochs=2, epochs_fb=1, extra_fb_epochs=0, batch_size=64,
                                            steps_per_call="1", lr_schedule="cosine")),
    ("bp", "mnist", dict(epochs=2, batch_size=16, validation_size=25, steps_per_call="epoch")),
])
def test_each_member_writes_its_single_runs_workdir_bit_for_bit(method, dataset, settings, mnist_dir, tmp_path):
    from tp_keras.run.population_run import member_configs
    config = Config.paper(method, dataset=dataset, data_dir=mnist_dir if dataset == "mnist" else None, **SMALL,
                          **settings)
    configs = member_configs(config, [3, 4])
    summaries, workdirs = _population(configs, tmp_path)
    assert [s["status"] for s in summaries] == ["finished", "finished"]
    assert [s["seed"] for s in summaries] == [3, 4]
    for member_config, workdir in zip(configs, workdirs):
        _, single_dir = _single(member_config, tmp_path)
        _assert_same_run(workdir, single_dir)
    # the seeds' runs differ (their own initialisation, split and shuffling)
    assert _rows(workdirs[0])[-1]["train_loss"] != _rows(workdirs[1])[-1]["train_loss"]


@pytest.mark.slow
def test_a_diverging_member_is_marked_alone_and_keeps_its_last_good_checkpoint(tmp_path, monkeypatch):
    """Right after seed 4's epoch-1 checkpoint, a NaN is written into its first layer's weights (in the population
    and in its single run alike): its epoch 2 goes non-finite. Its summary says where, as its single run's does;
    its checkpoint stays the one of epoch 1, as its single run's; seed 3 trains on and equals its single run."""
    from tp_keras.run import records
    from tp_keras.run.population_run import member_configs
    record = records.RunFolder.record

    def record_then_poison(folder, row):
        record(folder, row)
        if folder.config.seed == 4 and row["epoch"] == 1:
            kernel = folder.trainer.model.forward_variables[0]
            kernel.assign(np.where(np.arange(kernel.shape[-1]) == 0, np.nan, kernel.numpy()))

    monkeypatch.setattr(records.RunFolder, "record", record_then_poison)
    config = Config.paper("ddtp_linear", dataset="student_teacher", epochs=3, epochs_fb=1, extra_fb_epochs=0,
                          batch_size=64, **SMALL)
    configs = member_configs(config, [3, 4])
    summaries, workdirs = _population(configs, tmp_path)
    assert summaries[0]["status"] == "finished" and summaries[0]["epochs_run"] == 3
    assert summaries[1]["status"].startswith("diverged: non-finite ") and "in epoch 2, batch 0" in \
        summaries[1]["status"]
    assert summaries[1].checkpoint_epoch == 1 and [r["epoch"] for r in _rows(workdirs[1])] == [0, 1]
    for member_config, workdir, summary in zip(configs, workdirs, summaries):
        single, single_dir = _single(member_config, tmp_path)
        assert single["status"] == summary["status"]
        _assert_same_run(workdir, single_dir)
    # --resume: both runs have ended (one finished at --epochs, one diverged): nothing trains, the diverged
    # member's files stay byte for byte
    diverged_files = {name: (tmp_path / "seed_4" / name).read_bytes() for name in ("summary.json", "metrics.jsonl",
                                                                                    "checkpoint.npz")}
    again, _ = _population(configs, tmp_path, resume=True)
    assert [s["status"] for s in again] == [s["status"] for s in summaries]
    assert {name: (tmp_path / "seed_4" / name).read_bytes() for name in diverged_files} == diverged_files


_KILLED_POPULATION = """
import sys
from tp_keras.run.config import Config
from tp_keras.run.population_run import member_configs, train_and_evaluate_population
config = Config.paper("dtpdrl", dataset="student_teacher", epochs=2, epochs_fb=1, extra_fb_epochs=1,
                      batch_size=64, **{small!r})
configs = member_configs(config, [3, 4])
train_and_evaluate_population(configs, [sys.argv[1] + f"/seed_{{c.seed}}" for c in configs],
                              resume=sys.argv[2] == "resume")
"""


@pytest.mark.slow
def test_a_population_killed_between_two_members_checkpoints_resumes_to_the_uninterrupted_files(tmp_path):
    """SIGKILL right after the third checkpoint written: member 3 has epoch 1 done, member 4 only pre-training.
    --resume trains on (member 3 sitting epoch 1 out, restored after it) to the files of a population never
    interrupted: every metric but the timings, every checkpoint array, the summaries."""
    from tp_keras.run.population_run import member_configs
    script = tmp_path / "population.py"
    script.write_text(_KILLED_POPULATION.format(small=SMALL))
    killed = tmp_path / "killed"
    env = dict(os.environ, TP_KERAS_KILL_AT="after_checkpoint:3")
    run = subprocess.run([sys.executable, str(script), str(killed), "new"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == -9, run.stderr[-2000:]
    assert [r["epoch"] for r in _rows(killed / "seed_3")] == [0, 1]
    assert [r["epoch"] for r in _rows(killed / "seed_4")] == [0]
    env.pop("TP_KERAS_KILL_AT")
    run = subprocess.run([sys.executable, str(script), str(killed), "resume"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    config = Config.paper("dtpdrl", dataset="student_teacher", epochs=2, epochs_fb=1, extra_fb_epochs=1,
                          batch_size=64, **SMALL)
    _, workdirs = _population(member_configs(config, [3, 4]), tmp_path / "whole")
    for seed, whole in zip((3, 4), workdirs):
        _assert_same_run(str(killed / f"seed_{seed}"), whole)


@pytest.mark.slow
def test_sigint_stops_every_member_once_all_have_recorded_the_epoch(tmp_path, monkeypatch):
    """SIGINT right after the first member's epoch-1 checkpoint: the request waits until every member has recorded
    epoch 1, then each summary says "interrupted" with its epoch-1 checkpoint, and the raised Interrupted is one
    line naming --resume."""
    from tp_keras.run import faults
    from tp_keras.run.population_run import member_configs
    monkeypatch.setenv(faults.KILL_ENV, "after_checkpoint:1:INT")
    config = Config.paper("bp", dataset="student_teacher", epochs=3, batch_size=64, **SMALL)
    with pytest.raises(faults.Interrupted) as err:
        _population(member_configs(config, [3, 4]), tmp_path)
    assert str(err.value).startswith("interrupted by SIGINT in epoch 1; continue the population with --resume")
    assert "\n" not in str(err.value)
    for seed in (3, 4):
        summary = _json(tmp_path / f"seed_{seed}" / "summary.json")
        assert summary["status"] == "interrupted" and summary["interrupted_by"] == "SIGINT"
        assert summary["epochs_run"] == 1 and [r["epoch"] for r in _rows(tmp_path / f"seed_{seed}")] == [1]


def test_a_member_workdir_holding_a_run_is_refused_and_nothing_written(tmp_path, monkeypatch):
    """Without --resume or --overwrite, the population refuses in one line naming the member's workdir, before
    loading data, and leaves every folder as it was (the free member's is not created)."""
    from tp_keras.run import population_run
    from tp_keras.run.population_run import member_configs, train_and_evaluate_population
    monkeypatch.setattr(population_run, "load_dataset", lambda **_: pytest.fail("data loaded"))
    configs = member_configs(Config.paper("bp", dataset="student_teacher", **SMALL), [3, 4])
    held = tmp_path / "seed_4"
    held.mkdir()
    (held / "config.json").write_text(json.dumps({"method": "bp", "seed": 4}))
    (held / "summary.json").write_text(json.dumps({"status": "finished"}))
    with pytest.raises(rundir.RunDirError) as err:
        train_and_evaluate_population(configs, [str(tmp_path / "seed_3"), str(held)])
    assert str(held) in str(err.value) and "--resume" in str(err.value) and "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["seed_4"] and sorted(os.listdir(held)) == ["config.json", "summary.json"]


@pytest.mark.parametrize("settings, flag", [
    (dict(log_angles=True), "log_angles"),
    (dict(architecture="conv", augment="crop_flip", dataset="mnist", conv_channels=(2,)), "augment"),
])
def test_what_a_population_does_not_train_is_refused_in_one_line(settings, flag):
    from tp_keras.run.population_run import check_supported
    config = Config.paper("ddtp_linear", **settings)
    with pytest.raises(ConfigError) as err:
        check_supported(config)
    assert err.value.flag == flag and "\n" not in str(err.value)


def test_members_differ_by_seed_only(tmp_path):
    from tp_keras.run.population_run import train_and_evaluate_population
    configs = [Config.paper("bp", dataset="student_teacher", seed=3, **SMALL),
               Config.paper("bp", dataset="student_teacher", seed=4, lr=0.5, **SMALL)]
    with pytest.raises(ConfigError, match=r"^--lr: the members of a population differ by seed only"):
        train_and_evaluate_population(configs, [str(tmp_path / "a"), str(tmp_path / "b")])
    assert not os.listdir(tmp_path)


def test_member_workdirs_follow_the_single_runs_default_or_a_folder_of_seed_folders():
    from tp_keras.run.population_run import member_workdirs
    assert member_workdirs([42, 43], run_name="mnist_bp") == [os.path.join("runs", "mnist_bp_seed42"),
                                                             os.path.join("runs", "mnist_bp_seed43")]
    assert member_workdirs([42, 43], run_name="mnist_bp", workdir="out") == [os.path.join("out", "seed_42"),
                                                                             os.path.join("out", "seed_43")]


SHAPES = dict(input_size=784, image_shape=(28, 28, 1), num_outputs=10, num_train=55000, num_eval=10000)


@pytest.mark.parametrize("method", ["ddtp_linear", "dtpdrl", "bp"])
def test_the_memory_estimate_of_k_members(method):
    """The model's parts K times a single run's; on the device the given training sets (not the single run's set
    and shuffled copy) and each member's evaluation split."""
    config = Config.paper(method)
    one = memory.estimate_bytes(config, **SHAPES)
    five = memory.estimate_bytes(config, members=5, train_copies=5, **SHAPES)
    item = 4
    for part in one:
        if part != "data on the device":
            assert five[part] == 5 * one[part], part
    assert one["data on the device"] == (2 * 55000 + 10000) * 785 * item
    assert five["data on the device"] == (5 * 55000 + 5 * 10000) * 785 * item


def test_a_population_that_would_not_fit_is_refused_naming_seeds(monkeypatch):
    config = Config.paper("ddtp_linear")
    one = sum(memory.estimate_bytes(config, members=1, train_copies=1, **SHAPES).values())
    monkeypatch.setattr(memory, "available_bytes", lambda: 3 * one)
    memory.check_fits(config, members=2, train_copies=2, **SHAPES)  # fits
    with pytest.raises(ConfigError) as err:
        memory.check_fits(config, members=10, train_copies=10, **SHAPES)
    assert err.value.flag == "seeds" and "10 members need about" in str(err.value) and "\n" not in str(err.value)
    assert "lower --seeds" in str(err.value)
