"""End-to-end: train_and_evaluate and the launcher on tiny IDX files written by the test."""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_no_tensorflow_startup_noise
from test_bad_inputs import _one_line, command  # noqa: F401  (command: the in-process absl fixture)
from tp_keras.run import launch
from tp_keras.run.config import Config, ConfigError

TINY = dict(num_hidden=2, size_hidden=8, batch_size=16, validation_size=20, progress=False)



def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_train_and_evaluate_writes_metrics_and_summary(mnist_dir, tmp_path):
    from tp_keras.run.experiment import train_and_evaluate
    config = Config.paper("dtpdrl", data_dir=mnist_dir, epochs=3, epochs_fb=2, extra_fb_epochs=1,
                          lr=1e-2, target_stepsize=0.5, **TINY)
    summary = train_and_evaluate(config, str(tmp_path))
    rows = _lines(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]  # 0 = after feedback pre-training
    for row in rows[1:]:
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "rec_loss",
                    "rec_loss_extra", "epoch_seconds"):
            assert np.isfinite(row[key]), key
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    # Best-validation bookkeeping is consistent with the history (first argmax of val accuracy).
    val_accs = [r["val_acc"] for r in rows[1:]]
    best = int(np.argmax(val_accs))
    assert summary["epoch_best_acc"] == best + 1
    assert summary["acc_test_val_best"] == rows[1 + best]["test_acc"]
    assert summary["error_test_val_best"] == pytest.approx(1 - rows[1 + best]["test_acc"])
    assert summary["loss_train_last"] == rows[-1]["train_loss"]
    assert summary["loss_train_best"] == min(r["train_loss"] for r in rows[1:])
    assert summary["rec_loss_first"] == rows[0]["rec_loss_first"]
    # The network learns the (easy) task: training loss falls over the epochs.
    assert rows[-1]["train_loss"] < rows[1]["train_loss"]
    config_json = json.loads((tmp_path / "config.json").read_text())
    assert config_json["method"] == "dtpdrl" and config_json["sigma"] == config.sigma
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "tb"))


@pytest.mark.slow
def test_no_val_set_summary_has_no_val_keys(mnist_dir, tmp_path):
    from tp_keras.run.experiment import train_and_evaluate
    config = Config.paper("bp", data_dir=mnist_dir, epochs=1, no_val_set=True, **TINY)
    summary = train_and_evaluate(config, str(tmp_path))
    assert "acc_test_val_best" not in summary and summary["epochs_run"] == 1
    assert "val_acc" not in _lines(tmp_path / "metrics.jsonl")[0]


@pytest.mark.slow
def test_same_seed_same_run(mnist_dir, tmp_path):
    from tp_keras.run.experiment import train_and_evaluate
    config = Config.paper("ddtp_linear", data_dir=mnist_dir, epochs=1, epochs_fb=1, extra_fb_epochs=0,
                          **TINY)
    a = train_and_evaluate(config, str(tmp_path / "a"))
    b = train_and_evaluate(config, str(tmp_path / "b"))
    for key in ("loss_train_last", "acc_test_last", "acc_val_best", "rec_loss_first"):
        assert a[key] == b[key], key


def test_paper_defaults_and_lr_normalisation():
    config = Config.paper("ddtp_linear")
    assert config.target_stepsize == pytest.approx(0.06096940412767466)
    assert config.forward_learning_rate == pytest.approx(0.0003338463851366897)  # lr / η̂ (the reference's value)
    assert (config.epochs_fb, config.extra_fb_epochs, config.num_hidden, config.size_hidden) == (6, 1, 5, 256)
    assert Config.paper("bp").forward_learning_rate == Config.paper("bp").lr
    assert Config.paper("dfa").target_stepsize == 1.0


@pytest.mark.parametrize("overrides, flag", [
    (dict(sigma=-0.1), "sigma"), (dict(sigma=0.0), "sigma"), (dict(lr=0.0), "lr"), (dict(beta1=1.0), "beta1"),
    (dict(batch_size=0), "batch_size"), (dict(epochs=-1), "epochs"), (dict(precision="float16"), "precision"),
    (dict(num_hidden=0), "num_hidden"), (dict(target_stepsize=float("nan")), "target_stepsize"),
    (dict(gn_damping=(1.0, 2.0)), "gn_damping"), (dict(gn_damping=(-1.0,)), "gn_damping"),
    (dict(log_interval=0), "log_interval"),
])
def test_bad_settings_name_the_flag(overrides, flag):
    with pytest.raises(ConfigError) as err:
        Config.paper("dtpdrl", **overrides).validate()
    assert err.value.flag == flag and str(err.value).startswith(f"--{flag}:")
    assert "\n" not in str(err.value)


def test_dfa_needs_no_sigma():
    Config.paper("dfa").validate()  # frozen feedback: σ is unused, and a --sigma that changes it is refused
    with pytest.raises(ConfigError, match=r"^--sigma: 0.0 is not used by dfa"):
        Config.paper("dfa", sigma=0.0).validate()


def _launch(*args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "tp_keras.launch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_launcher_end_to_end(mnist_dir, tmp_path):
    workdir = tmp_path / "run"
    result = _launch("--method=ddtp_linear", f"--data_dir={mnist_dir}", f"--workdir={workdir}", "--epochs=1",
                     "--epochs_fb=1", "--num_hidden=2", "--size_hidden=8", "--batch_size=16",
                     "--validation_size=20", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_no_tensorflow_startup_noise(result.stderr)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["method"] == "ddtp_linear" and summary["status"] == "finished"
    assert 0.0 <= summary["error_test_val_best"] <= 1.0
    assert "epoch 1/1" in result.stdout


@pytest.mark.parametrize("args, starts", [
    (["--method=nope"], "flag --method=nope: value should be one of <bp|"),
    (["--method=dtpdrl", "--sigma=-1"], "--sigma: -1.0 must be a finite number > 0"),
    (["--method=dtp", "--beta2=1.5"], "--beta2: 1.5 is outside [0, 1)"),
])
def test_launcher_bad_flags_one_line(command, args, starts):
    """In this process (the refusal in a fresh process, with no TensorFlow loaded: the test below)."""
    _one_line(*command(launch.main, args), starts=starts)


@pytest.mark.slow
def test_launcher_trains_seeds_as_a_population_one_workdir_each(mnist_dir, tmp_path):
    """--seeds=2 --workdir=W: W/seed_5 and W/seed_6, each an ordinary run folder of its seed (what the tables read
    as a sweep's seeds); the numbers equal the single runs' (tests/test_population_run.py)."""
    from tp_keras.paper.sweep_results import seed_dirs
    workdir = tmp_path / "pop"
    result = _launch("--method=ddtp_linear", f"--data_dir={mnist_dir}", f"--workdir={workdir}", "--seeds=2",
                     "--seed=5", "--epochs=1", "--epochs_fb=1", "--num_hidden=2", "--size_hidden=8",
                     "--batch_size=16", "--validation_size=20", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_no_tensorflow_startup_noise(result.stderr)
    assert [seed for seed, _ in seed_dirs(str(workdir))] == [5, 6]
    for seed in (5, 6):
        member = workdir / f"seed_{seed}"
        assert json.loads((member / "config.json").read_text())["seed"] == seed
        summary = json.loads((member / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["seed"] == seed and summary["epochs_run"] == 1
        assert [row["epoch"] for row in _lines(member / "metrics.jsonl")] == [0, 1]
        assert (member / "checkpoint.npz").is_file() and os.listdir(member / "tb")
        assert f"done: seed {seed}:" in result.stdout


@pytest.mark.parametrize("args, starts", [
    (["--seeds=0"], "--seeds: 0 is not a number of seeds"),
    (["--seeds=2", "--strategy=mirrored"], "--strategy: a population of --seeds=2 trains on one device"),
    (["--seeds=2", "--tpu=local"], "--tpu: a population of --seeds=2 trains on one device"),
    (["--seeds=2", "--log_angles"], "--log_angles: angle logging runs in single runs only"),
])
def test_what_a_population_cannot_train_is_refused_in_one_line(command, args, starts):
    _one_line(*command(launch.main, ["--method=ddtp_linear", *args]), starts=starts)


@pytest.mark.slow
def test_a_bad_flag_is_refused_before_tensorflow_loads(tmp_path):
    """The launcher's flags, the rule registry behind --method and the refusal need no TensorFlow: the answer is
    the one line alone (TensorFlow's import would add its C++ start-up lines to stderr, and seconds)."""
    result = _launch("--method=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: flag --method=nope: value should be one of <bp|")
    probe = subprocess.run([sys.executable, "-c", "import sys, tp_keras.run.launch, tp_keras.core.rules; "
                            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"],
                           capture_output=True, text=True, timeout=300)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr[-2000:]


@pytest.mark.slow
def test_a_run_on_data_files_loads_no_optional_package(mnist_dir, tmp_path):
    """A --data_dir run needs neither tensorflow-datasets nor Optuna, nor what Keras and TensorFlow import at start-up
    only for features no run uses (cli.OPTIONAL_AT_TENSORFLOW_IMPORT: matplotlib, IPython, scipy); none is loaded
    when the launcher exits. Run as `python -m tp_keras.launch` runs it, with a hook that lists them at exit."""
    optional = ("tensorflow_datasets", "optuna", "matplotlib", "IPython", "scipy")
    code = ("import atexit, runpy, sys\n"
            f"atexit.register(lambda: print('loaded:', sorted(m for m in {optional!r} if m in sys.modules)))\n"
            "sys.argv[0] = 'tp_keras.launch'\n"
            "runpy.run_module('tp_keras.launch', run_name='__main__', alter_sys=True)\n")
    result = subprocess.run([sys.executable, "-c", code, "--method=bp", f"--data_dir={mnist_dir}",
                             f"--workdir={tmp_path / 'run'}", "--epochs=1", "--num_hidden=2", "--size_hidden=8",
                             "--batch_size=16", "--validation_size=20"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"
    assert result.stdout.strip().splitlines()[-1] == "loaded: []", result.stdout[-2000:]


def test_modules_are_held_back_only_inside_the_block_and_only_if_not_yet_imported(tmp_path, monkeypatch):
    from tp_keras.run import cli
    (tmp_path / "tp_keras_held_back.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tp_keras_held_back", raising=False)
    # By name, not an import statement: the module exists only in tmp_path (test_readme_commands reads the tests'
    # import statements for the packages the install extras must bring).
    with cli.without_modules(["json", "tp_keras_held_back"]):
        again = importlib.import_module("json")  # imported before the block: untouched
        with pytest.raises(ImportError):
            importlib.import_module("tp_keras_held_back")
    held_back = importlib.import_module("tp_keras_held_back")  # after the block it loads as usual
    assert again is json and held_back.VALUE == 7


@pytest.mark.parametrize("code, status, err", [
    (2, 2, ""),
    pytest.param(None, 0, "", marks=pytest.mark.slow),
    pytest.param("error: bad; fix it", 1, "error: bad; fix it\n", marks=pytest.mark.slow),
])
def test_exit_without_teardown_is_sys_exit_with_its_handlers_and_buffered_output(code, status, err):
    """As sys.exit(code): status, message, atexit handlers, output still in the buffers; a non-daemon thread still
    running is waited for (the ordinary exit)."""
    program = ("import atexit, sys, threading, time\n"
               "from tp_keras.run import cli\n"
               "atexit.register(lambda: print('handler ran', end=''))\n"
               "worker = threading.Thread(target=lambda: (time.sleep(0.3), print('thread done; ', end='')))\n"
               "worker.start() if sys.argv[1] == 'thread' else None\n"
               "sys.stdout.write('buffered; ')\n"
               f"cli.exit_without_teardown({code!r})\n")
    for threads in ("none", "thread"):
        result = subprocess.run([sys.executable, "-c", program, threads], capture_output=True, text=True,
                                timeout=60, env=dict(os.environ, PYTHONUNBUFFERED="0"))
        waited = "thread done; " if threads == "thread" else ""
        assert (result.returncode, result.stdout, result.stderr) == (status, f"buffered; {waited}handler ran", err)


@pytest.mark.slow
def test_launcher_missing_data_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _launch("--method=bp", f"--data_dir={tmp_path / 'does_not_exist'}", "--epochs=1", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    # TensorFlow prints its own start-up lines on stderr; ours is exactly one line, the last.
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and result.stderr.strip().splitlines()[-1] == ours[0], result.stderr
    assert "--data_dir" in ours[0] and "does not exist" in ours[0]


@pytest.mark.slow
def test_interrupted_run_keeps_a_summary_of_its_finished_epochs(mnist_dir, tmp_path, monkeypatch):
    from tp_keras.run import experiment, schedule
    calls = []
    real_evaluate = schedule.evaluate

    def evaluate_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # epoch 1 evaluates val and test; Ctrl-C during epoch 2's evaluation
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(schedule, "evaluate", evaluate_then_interrupt)
    config = Config.paper("dfa", data_dir=mnist_dir, epochs=5, **TINY)
    with pytest.raises(KeyboardInterrupt):
        experiment.train_and_evaluate(config, str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_run"] == 1
    assert summary["acc_test_last"] == _lines(tmp_path / "metrics.jsonl")[0]["test_acc"]


@pytest.mark.slow
def test_regression_run_reports_losses_not_accuracies(tmp_path):
    """student_teacher is a regression: no accuracy anywhere; the best-validation epoch is by validation loss."""
    from tp_keras.run.experiment import train_and_evaluate
    config = Config.paper("ddtp_linear", dataset="student_teacher", epochs=3, epochs_fb=1, num_hidden=2,
                          size_hidden=6, batch_size=16, lr=1e-3, progress=False)
    summary = train_and_evaluate(config, str(tmp_path))
    rows = _lines(tmp_path / "metrics.jsonl")[1:]
    assert not any("acc" in key for row in rows for key in row)
    assert not any("acc" in key for key in summary)
    best = int(np.argmin([r["val_loss"] for r in rows]))
    assert summary["epoch_best_loss"] == best + 1 and summary["loss_test_val_best"] == rows[best]["test_loss"]
    assert summary["loss_train_last"] == rows[-1]["train_loss"] and np.isfinite(summary["loss_train_last"])


@pytest.mark.slow
def test_angle_logging_run_writes_angles_and_per_epoch_means(mnist_dir, tmp_path):
    """--log_angles: one row per batch with index % log_interval == 0, every layer's BP angle and every hidden
    layer's GNT angle, their per-epoch means in metrics.jsonl, and a figure drawn from the run directory."""
    from tp_keras.run.experiment import train_and_evaluate
    config = Config.paper("ddtp_linear", data_dir=mnist_dir, epochs=2, epochs_fb=1, extra_fb_epochs=0,
                          log_angles=True, log_interval=2, gn_damping=(0.5, 1e-3), **TINY)
    train_and_evaluate(config, str(tmp_path))
    rows = _lines(tmp_path / "angles.jsonl")
    # 80 training samples / batch 16 = 5 batches per epoch: indices 0, 2, 4 are logged.
    assert [(r["epoch"], r["batch"], r["iteration"]) for r in rows] == [
        (1, 0, 0), (1, 2, 2), (1, 4, 4), (2, 0, 5), (2, 2, 7), (2, 4, 9)]
    for r in rows:
        assert len(r["bp_angle"]) == 3 and len(r["gnt_angle"]) == 2
        assert all(0.0 <= a <= 180.0 for a in r["bp_angle"] + r["gnt_angle"])
        # The output layer's update is the BP gradient; in float32, acos near cos = 1 resolves only ~0.03°.
        assert r["bp_angle"][-1] < 0.2
    metrics = _lines(tmp_path / "metrics.jsonl")
    for row in metrics[1:]:
        mine = [r for r in rows if r["epoch"] == row["epoch"]]
        assert row["gnt_angle_2"] == pytest.approx(np.mean([r["gnt_angle"][1] for r in mine]))
        assert row["bp_angle_1"] == pytest.approx(np.mean([r["bp_angle"][0] for r in mine]))
    pytest.importorskip("matplotlib")
    from tp_keras.paper import figures
    (path,) = figures.alignment_figure([str(tmp_path)], str(tmp_path / "alignment.png"), layer=2, window=2)
    assert os.path.getsize(path) > 1000


@pytest.mark.slow
def test_damping_search_table_and_best_values(mnist_dir):
    """The search pass: one row per λ, the best λ per layer is the argmin of the mean angles, and the row of a λ
    equals the angles the training step would log with that damping."""
    import tensorflow as tf
    from tp_keras.core import diagnostics, step
    from tp_keras.paper import damping_search
    from tp_keras.run.data import load_dataset
    from tp_keras.run.factories import build_model, build_trainer
    config = Config.paper("dtpdrl", data_dir=mnist_dir, **TINY).validate()
    dataset = load_dataset("mnist", mnist_dir, seed=0, validation_size=20)
    trainer = build_trainer(config, build_model(config, dataset))
    grid = [0.0, 1e-2, 10.0]
    result = damping_search.search(trainer, dataset.train, grid, batch_size=16, log_interval=4, seed=0)
    table = np.array(result["mean_angles"])
    assert table.shape == (3, 2) and result["logged_batches"] == 2  # batches 0 and 4 of 5
    assert result["best"] == [grid[j] for j in np.argmin(table, axis=0)]
    # Recompute the λ = 10 row from the same batches with the training step's angle function.
    perm = np.random.default_rng([0, 10**6]).permutation(len(dataset.train.x))
    x, y = dataset.train.x[perm], dataset.train.y[perm]
    expected = []
    for start in (0, 64):
        xb, yb = tf.constant(x[start:start + 16]), tf.constant(y[start:start + 16])
        updates = step.compute_updates(trainer.model, xb, yb, forward=True, feedback=False)
        expected.append(diagnostics.angles(trainer.model, updates, yb, 10.0)["gnt_angle"].numpy())
    np.testing.assert_allclose(table[2], np.mean(expected, axis=0), atol=1e-3)


# --- train_and_evaluate's per-epoch hook (what a hyper-parameter search prunes with), and the TF32 switch ---------

@pytest.mark.slow
def test_on_epoch_end_sees_every_epoch_and_can_stop_the_run(mnist_dir, tmp_path):
    from tp_keras.run.experiment import train_and_evaluate
    config = Config.paper("ddtp_linear", data_dir=mnist_dir, epochs=4, epochs_fb=1, extra_fb_epochs=0, **TINY)
    seen = []

    def hook(row):
        seen.append(row["epoch"])
        return "pruned: stopped by the hook" if row["epoch"] == 2 else None

    summary = train_and_evaluate(config, str(tmp_path), on_epoch_end=hook)
    assert seen == [1, 2]  # training epochs only (not the pre-training row), none after the stop
    assert summary["status"] == "pruned: stopped by the hook"
    assert summary["epochs_run"] == 2
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == summary["status"]


def _evaluated_batch_by_batch(trainer, split, batch_size):
    """The evaluation written out: each batch alone through the trainer's eval step, its sums read at once, the
    means taken in float64 on the host (the reference's per-batch means beside the sample-weighted ones)."""
    loss, correct, count = [], [], []
    for start in range(0, len(split.x), batch_size):
        sums = trainer.eval_step(split.x[start:start + batch_size], split.y[start:start + batch_size])
        loss.append(float(sums["loss_sum"]))
        correct.append(float(sums["correct"]))
        count.append(float(sums["count"]))
    loss, correct, count = np.array(loss), np.array(correct), np.array(count)
    return {"loss": float(loss.sum() / count.sum()), "loss_batchmean": float(np.mean(loss / count)),
            "acc": float(correct.sum() / count.sum()), "acc_batchmean": float(np.mean(correct / count))}


# The evaluation runs a split's full batches in one compiled loop around the eval step; every number must equal
# the batches run one by one, on a split with a smaller last batch, one without, and one smaller than a batch,
# again after training has changed the weights (the loop and the split's device copy are kept between calls).
@pytest.mark.parametrize("method, settings", [
    ("bp", dict(precision="float32")),
    pytest.param("ddtp_linear", dict(precision="float64"), marks=pytest.mark.slow),
    pytest.param("bp", dict(architecture="cnn", precision="float32"), marks=pytest.mark.slow),
])
def test_evaluation_equals_the_batches_run_one_by_one(mnist_dir, method, settings):
    import tensorflow as tf

    from tp_keras.run.data import Split, load_dataset
    from tp_keras.run.factories import build_model, build_trainer
    from tp_keras.run.passes import evaluate
    config = Config.paper(method, data_dir=mnist_dir, **{**TINY, **settings}).validate()
    dataset = load_dataset("mnist", mnist_dir, validation_size=20, flatten=not config.uses_images,
                           dtype=config.precision)
    trainer = build_trainer(config, build_model(config, dataset))
    size = config.batch_size
    splits = [dataset.test, dataset.val, Split(dataset.test.x[:2 * size], dataset.test.y[:2 * size]),
              Split(dataset.test.x[:size // 2], dataset.test.y[:size // 2])]
    assert len(dataset.test) % size and not len(splits[2]) % size and len(splits[3]) < size
    for _ in range(2):
        for split in splits:
            assert evaluate(trainer, split, size) == _evaluated_batch_by_batch(trainer, split, size)
        before = evaluate(trainer, dataset.test, size)
        trainer.train_step(tf.constant(dataset.train.x[:size]), tf.constant(dataset.train.y[:size]))
        assert evaluate(trainer, dataset.test, size) != before


@pytest.mark.parametrize("tf32", [False, True])
def test_the_run_sets_tensorflow_tf32_switch_from_its_config_and_restores_it(mnist_dir, tmp_path, tf32):
    # TF32 (float32 matmuls at ~1e-3 relative error on NVIDIA GPUs from Ampere on) is TensorFlow's default; a run
    # turns it off unless config.tf32, as the reference computes in full float32. The switch is process-wide, so
    # the run puts back what it found.
    import tensorflow as tf

    from tp_keras.run.experiment import train_and_evaluate
    config = Config.paper("bp", data_dir=mnist_dir, epochs=1, tf32=tf32, **TINY)
    during = []
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(not tf32)
    try:
        train_and_evaluate(config, str(tmp_path), on_epoch_end=lambda row: during.append(
            tf.config.experimental.tensor_float_32_execution_enabled()))
        assert during == [tf32]
        assert tf.config.experimental.tensor_float_32_execution_enabled() is (not tf32)
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)
