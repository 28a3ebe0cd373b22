"""The catalogue of bad inputs and faults: every one ends in exactly one `error: ...` line naming what was wrong and
the fix, no traceback, a non-zero exit status, and a run folder with nothing half-written and no temporary or
lock left behind (the previous checkpoint and summary, where there were some, still valid).

Classes: out-of-range numbers, file-system errors, unreadable checkpoints, empty splits, a run too large for
memory, a busy workdir, a full disk (ENOSPC) while writing the checkpoint, the summary or a metrics line, SIGTERM
and SIGINT, a divergence before the first checkpoint, and the same for the other commands (figures, tables,
nullspace, damping_search, bench). Commands run in-process (main() with captured stderr) where their flags allow;
bench, whose flags clash with the launcher's, runs as a subprocess (no TensorFlow is loaded before it refuses).
"""
import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from tp_keras.run import cli, launch, rundir  # noqa: F401  (damping_search: its flags)
from tp_keras.paper import damping_search
from tp_keras.run.config import Config
from test_faults import _lines, _without_times
from test_rundir import _corrupt

TINY = ["--num_hidden=2", "--size_hidden=8", "--batch_size=16", "--validation_size=20", "--noprogress"]
TINY_CONFIG = dict(num_hidden=2, size_hidden=8, batch_size=16, validation_size=20, progress=False)


@pytest.fixture
def command(capsys):
    """run(main, argv) -> (exit status, stderr lines) for an absl command run in this process."""
    previous = signal.getsignal(signal.SIGTERM)

    def run(main, argv):
        flags.FLAGS.unparse_flags()
        status = 0
        try:
            main(cli.parse_flags_one_line(["prog", *argv]))
        except SystemExit as exit_:
            status = exit_.code
        finally:
            flags.FLAGS.unparse_flags()
        return status, [line for line in capsys.readouterr().err.splitlines() if line.strip()]

    yield run
    assert signal.getsignal(signal.SIGTERM) == previous  # the commands restore the handler they replace


def _one_line(status, lines, *, starts, contains=(), exit_status=2):
    errors = [line for line in lines if line.startswith("error:")]
    assert status == exit_status, (status, lines)
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert not any("Traceback" in line for line in lines), lines
    assert errors[0].startswith(f"error: {starts}"), errors[0]
    for words in contains:
        assert words in errors[0], errors[0]
    return errors[0]


def _clean(folder):
    """Nothing left behind: no temporary, no lock."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    assert not [n for n in names if n.startswith(rundir.TMP_PREFIX) or n == rundir.LOCK_NAME], names


def _launch(command, mnist_dir, workdir, *extra, method="bp", epochs=1):
    return command(launch.main, [f"--method={method}", f"--data_dir={mnist_dir}", f"--epochs={epochs}",
                                 f"--workdir={workdir}", *TINY, *extra])


# --- Out-of-range numbers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, starts, contains", [
    ("--seed=-1", "--seed: -1 must be between 0 and 4294967295", ["e.g. --seed=42"]),
    ("--seed=4294967296", "--seed: 4294967296 must be between 0 and 4294967295", []),
    ("--batch_size=100000000000000000000", "--batch_size: 100000000000000000000 must be between 1 and", []),
    ("--size_hidden=100000000000000000000", "--size_hidden: 100000000000000000000 must be between 1 and", []),
    ("--batch_size=1e20", "flag --batch_size=1e20: invalid literal for int()", []),
    ("--target_stepsize=nan", "--target_stepsize: nan is not used by bp", ["drop the flag"]),  # bp: no targets
    ("--size_hidden=100000000", "--size_hidden: this run needs about",
     ["GiB of memory (", "this machine has available; lower --size_hidden or --num_hidden"]),
])
def test_out_of_range_numbers(command, mnist_dir, tmp_path, flag, starts, contains):
    workdir = tmp_path / "run"
    _one_line(*_launch(command, mnist_dir, workdir, flag), starts=starts, contains=contains)
    assert not workdir.exists()  # refused before the workdir is touched


def test_the_memory_estimate_grows_with_what_it_counts():
    from tp_keras.run import memory
    shapes = dict(input_size=784, image_shape=(28, 28, 1), num_outputs=10, num_train=55000, num_eval=5000)
    small = memory.estimate_bytes(Config.paper("ddtp_linear"), **shapes)
    # 5×256 DDTP-linear on MNIST: the data dominate (2·55,000 + 5,000 samples of 785 float32 values).
    assert small["data on the device"] == 115000 * 785 * 4 and sum(small.values()) < 2 ** 30
    wide = memory.estimate_bytes(Config.paper("ddtp_linear", size_hidden=2560), **shapes)
    assert wide["parameters"] > 50 * small["parameters"]
    big_batch = memory.estimate_bytes(Config.paper("dtpdrl", batch_size=12800), **shapes)
    assert big_batch["noise stack"] == 100 * memory.estimate_bytes(Config.paper("dtpdrl"), **shapes)["noise stack"]


# --- File-system errors -----------------------------------------------------------------------------------------

def test_workdir_that_is_a_file_or_under_a_file(command, mnist_dir, tmp_path):
    (tmp_path / "afile").write_text("keep me")
    _one_line(*_launch(command, mnist_dir, tmp_path / "afile"),
              starts=f"--workdir={tmp_path / 'afile'} exists and is not a folder; choose another --workdir")
    _one_line(*_launch(command, mnist_dir, tmp_path / "afile" / "run"),
              starts=f"cannot create the folder {tmp_path / 'afile' / 'run'}: {tmp_path / 'afile'} is a file")
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied (EACCES); choose a writable --workdir"),
                                         (errno.EROFS, "read-only file system (EROFS); choose a writable"),
                                         (errno.ENOSPC, "no space left on device (ENOSPC); free some space")])
def test_workdir_that_cannot_be_written(command, mnist_dir, tmp_path, monkeypatch, code, words):
    """Permissions cannot be tested for real as root (root writes anywhere): the file system's answer is faked."""
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "run"))
    monkeypatch.setattr(rundir.os, "makedirs", refuse)
    _one_line(*_launch(command, mnist_dir, tmp_path / "run"), starts="cannot create the folder", contains=[words])


@pytest.mark.slow
@pytest.mark.parametrize("blocker, starts", [
    ("tb", "the TensorBoard folder {workdir}/tb exists and is not a folder"),
    ("metrics.jsonl/", "cannot write {workdir}/metrics.jsonl: it is a folder (EISDIR)"),
    ("summary.json/", "cannot write {workdir}/summary.json: it is a folder (EISDIR)"),
])
def test_workdir_whose_files_are_blocked(command, mnist_dir, tmp_path, blocker, starts):
    workdir = tmp_path / "run"
    workdir.mkdir()
    if blocker.endswith("/"):
        (workdir / blocker).mkdir()
    else:
        (workdir / blocker).write_text("")
    _one_line(*_launch(command, mnist_dir, workdir), starts=starts.format(workdir=workdir))
    _clean(workdir)


def test_missing_flagfile(command, tmp_path):
    _one_line(*command(launch.main, [f"--flagfile={tmp_path / 'nothere.flags'}"]),
              starts=f"--flagfile={tmp_path / 'nothere.flags'}: no such file (ENOENT); check the path")


def test_workdir_under_proc(command, mnist_dir):
    _one_line(*_launch(command, mnist_dir, "/proc/tp_keras_test/run"),
              starts="cannot create the folder /proc/tp_keras_test/run: ")


# --- Unreadable checkpoints ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["folder", "empty", "text", "truncated"])
def test_unreadable_checkpoint_under_resume(command, mnist_dir, tmp_path, kind):
    workdir = tmp_path / "run"
    workdir.mkdir()
    path = workdir / "checkpoint.npz"
    _corrupt(str(path), kind)
    before = sorted(os.listdir(workdir))
    _one_line(*_launch(command, mnist_dir, workdir, "--resume"), starts=f"--resume: cannot read the checkpoint {path}",
              contains=["delete it to start the run over, or choose another --workdir"])
    assert sorted(os.listdir(workdir)) == before  # nothing written, the file left for the user to inspect
    _clean(workdir)


# --- Empty splits ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("empty", ["train", "t10k"])
def test_empty_split(command, tmp_path, empty):
    from fixture_data import write_idx_images, write_idx_labels
    data = tmp_path / "data"
    data.mkdir()
    for prefix in ("train", "t10k"):
        n = 0 if prefix == empty else 30
        write_idx_images(data / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
        write_idx_labels(data / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(n, np.uint8))
    split = "training" if empty == "train" else "test"
    _one_line(*_launch(command, str(data), tmp_path / "run", "--no_val_set"),
              starts=f"--data_dir={data}: the {split} set has 0 samples")
    _clean(tmp_path / "run")


@pytest.mark.slow
def test_empty_split_of_a_dataset_given_in_python(tmp_path):
    from tp_keras.run.data import DataError, Dataset, Split
    from tp_keras.run.experiment import train_and_evaluate
    x, y = np.zeros((8, 4), "float32"), np.zeros(8, "int32")
    dataset = Dataset("mine", Split(x, y), None, Split(x[:0], y[:0]), 2, "classification", (4,))
    with pytest.raises(DataError, match="^the test split of mine has 0 samples"):
        train_and_evaluate(Config.paper("bp", **TINY_CONFIG), str(tmp_path), dataset)
    _clean(tmp_path)


# --- One workdir, one writer -------------------------------------------------------------------------------------

def test_busy_workdir(command, mnist_dir, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with rundir.WorkdirLock(str(workdir)):
        _one_line(*_launch(command, mnist_dir, workdir),
                  starts=f"--workdir={workdir} is in use by another run (pid {os.getpid()} on ",
                  contains=["wait for it to end or stop it, or choose another --workdir"])
        assert os.listdir(workdir) == [rundir.LOCK_NAME]  # the holder's lock, untouched


# --- A full disk --------------------------------------------------------------------------------------------------

def _disk_full_from_epoch(monkeypatch, epoch, what):
    """on_epoch_end hook: after `epoch` has been recorded, the disk is full for `what` ('checkpoint', 'summary' or
    'metrics')."""
    from tp_keras.run import experiment

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def hook(row):
        if row["epoch"] != epoch:
            return None
        if what == "checkpoint":
            real = rundir._write_content
            monkeypatch.setattr(rundir, "_write_content", lambda f, content: (real(f, content), full()))
        elif what == "summary":
            real_kill = experiment.faults.kill_point
            monkeypatch.setattr(experiment.faults, "kill_point",
                                lambda point: full() if point == "summary_rename" else real_kill(point))
        else:
            monkeypatch.setattr(rundir, "append_lines", lambda path, lines, **k: (_ for _ in ()).throw(
                rundir.error(OSError(errno.ENOSPC, "No space left on device"), "write", path)))
        return None
    return hook


def _full_disk_config(mnist_dir):
    return Config.paper("ddtp_linear", data_dir=mnist_dir, epochs=2, epochs_fb=1, extra_fb_epochs=0, **TINY_CONFIG)


@pytest.fixture(scope="module")
def straight_run(mnist_dir, tmp_path_factory):
    """The uninterrupted run the full-disk tests resume to: (summary, metrics rows, workdir), run under umask 027."""
    from tp_keras.run.experiment import train_and_evaluate
    workdir = tmp_path_factory.mktemp("straight")
    umask = os.umask(0o027)
    try:
        summary = train_and_evaluate(_full_disk_config(mnist_dir), str(workdir))
    finally:
        os.umask(umask)
    return summary, _lines(workdir / "metrics.jsonl"), workdir


@pytest.mark.slow
def test_every_file_of_a_run_has_the_mode_of_a_new_file(straight_run):
    """Atomically written files (checkpoint, summary, config) and appended or TensorFlow-written ones alike:
    0666 & ~umask."""
    workdir = straight_run[2]
    modes = {os.path.relpath(os.path.join(root, name), workdir): os.stat(os.path.join(root, name)).st_mode & 0o777
             for root, _, names in os.walk(workdir) for name in names}
    assert set(modes) >= {"checkpoint.npz", "summary.json", "config.json", "metrics.jsonl"}
    assert set(modes.values()) == {0o640}, modes


@pytest.mark.slow
@pytest.mark.parametrize("what", ["checkpoint", "summary", "metrics"])
def test_full_disk_keeps_the_previous_checkpoint_and_summary(mnist_dir, tmp_path, monkeypatch, straight_run, what):
    """ENOSPC while epoch 2 is recorded: one-line RunDirError naming the file; the checkpoint and summary of the
    last epoch recorded whole stay valid, no temporary or lock is left, and --resume then finishes the run with
    exactly the numbers of an uninterrupted one."""
    from tp_keras.run.checkpoint import CHECKPOINT
    from tp_keras.run.experiment import train_and_evaluate
    config = _full_disk_config(mnist_dir)
    workdir = tmp_path / "run"
    with pytest.raises(rundir.RunDirError) as err:
        train_and_evaluate(config, str(workdir), on_epoch_end=_disk_full_from_epoch(monkeypatch, 1, what))
    message = str(err.value)
    assert "no space left on device (ENOSPC)" in message and "\n" not in message
    target = {"checkpoint": CHECKPOINT, "summary": "summary.json", "metrics": "metrics.jsonl"}[what]
    assert message.startswith(f"cannot write {workdir / target}: "), message
    monkeypatch.undo()
    _clean(workdir)
    header, _ = rundir.read_checkpoint(str(workdir / CHECKPOINT))
    summary = json.loads((workdir / "summary.json").read_text())
    # The checkpoint is written first: a failure after it leaves the checkpoint one epoch ahead of the summary.
    assert header["epoch"] == (1 if what == "checkpoint" else 2)
    assert summary["status"] == "running" and summary["epochs_run"] == 1
    assert [r["epoch"] for r in _lines(workdir / "metrics.jsonl")] == [0, 1] + ([2] if what == "summary" else [])
    resumed = train_and_evaluate(config, str(workdir), resume=True)
    assert resumed["status"] == "finished" and _without_times(resumed) == _without_times(straight_run[0])
    assert _without_times(_lines(workdir / "metrics.jsonl")) == _without_times(straight_run[1])


# --- Signals ------------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name, status", [("TERM", 143), ("INT", 130)])
def test_stop_signal_ends_the_run_cleanly(command, mnist_dir, tmp_path, monkeypatch, name, status):
    """SIGTERM/SIGINT during batch 2 of epoch 2 (5 batches per epoch): the run stops after that batch with status
    'interrupted', epoch 1's checkpoint kept, one line and exit status 128 + the signal's number."""
    workdir = tmp_path / "run"
    monkeypatch.setenv("TP_KERAS_KILL_AT", f"train_batch:7:{name}")
    monkeypatch.setattr("tp_keras.run.faults._reached", __import__("collections").Counter())
    line = _one_line(*_launch(command, mnist_dir, workdir, method="ddtp_linear", epochs=3), exit_status=status,
                     starts=f"interrupted by SIG{name} in epoch 2; the last good checkpoint (epoch 1) is "
                            f"{workdir / 'checkpoint.npz'}: continue with --resume")
    assert line
    summary = json.loads((workdir / "summary.json").read_text())
    assert (summary["status"], summary["interrupted_by"], summary["interrupted_in"], summary["epochs_run"]) == (
        "interrupted", f"SIG{name}", "epoch 2", 1)
    assert rundir.read_checkpoint(str(workdir / "checkpoint.npz"))[0]["epoch"] == 1
    _clean(workdir)


@pytest.mark.slow
def test_stop_signal_before_the_first_checkpoint(command, mnist_dir, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    monkeypatch.setenv("TP_KERAS_KILL_AT", "feedback_batch:2:TERM")
    monkeypatch.setattr("tp_keras.run.faults._reached", __import__("collections").Counter())
    _one_line(*_launch(command, mnist_dir, workdir, method="ddtp_linear"), exit_status=143,
              starts="interrupted by SIGTERM in feedback pre-training; no checkpoint was written yet: rerun with "
                     "--resume or --overwrite to start over")
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "epochs_run" not in summary
    assert not (workdir / "checkpoint.npz").exists()
    _clean(workdir)


def test_malformed_kill_spec(command, mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TP_KERAS_KILL_AT", "nowhere:1")
    _one_line(*_launch(command, mnist_dir, tmp_path / "run"), starts="TP_KERAS_KILL_AT=nowhere:1: expected")


# --- Divergence ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_divergence_before_the_first_checkpoint_says_so(command, mnist_dir, tmp_path):
    workdir = tmp_path / "run"
    line = _one_line(*_launch(command, mnist_dir, workdir, "--lr=1e38", epochs=2),
                     starts="diverged: non-finite loss in epoch 1, batch ")
    assert "it diverged before its first checkpoint; lower the learning rates" in line
    assert "checkpoint is kept" not in line and not (workdir / "checkpoint.npz").exists()
    assert json.loads((workdir / "summary.json").read_text())["status"].startswith("diverged: non-finite loss")
    _clean(workdir)


# --- The other commands ------------------------------------------------------------------------------------------

def test_damping_search_refusals(command, mnist_dir, tmp_path):
    base = ["--method=ddtp_linear", f"--data_dir={mnist_dir}", *TINY]
    _one_line(*command(damping_search.main, base + ["--grid=0,-1", f"--workdir={tmp_path / 'a'}"]),
              starts="--grid: give one or more finite damping values >= 0")
    _one_line(*command(damping_search.main, base + ["--search_epochs=-2", f"--workdir={tmp_path / 'a'}"]),
              starts="--search_epochs: -2 must be between 0 and")
    (tmp_path / "afile").write_text("")
    _one_line(*command(damping_search.main, base + ["--search_epochs=1", f"--workdir={tmp_path / 'afile'}"]),
              starts=f"--workdir={tmp_path / 'afile'} exists and is not a folder")


def test_figures_and_tables_refusals(tmp_path, capsys):
    from tp_keras.paper import figures, tables
    (tmp_path / "afile").write_text("")

    def run(main, argv):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        return exit_.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]

    _one_line(*run(figures.main, ["figures", "output_space", f"--out={tmp_path / 'afile' / 'x.png'}"]),
              starts=f"--out={tmp_path / 'afile' / 'x.png'}: {tmp_path / 'afile'} is a file, not a folder")
    _one_line(*run(figures.main, ["figures", "output_space", "--seed=-5", f"--out={tmp_path / 'x.png'}"]),
              starts="--seed: -5 must be between 0 and 4294967295")
    _one_line(*run(figures.main, ["figures", "nullspace", f"--results={tmp_path / 'afile'}",
                                  f"--out={tmp_path / 'x.png'}"]), starts=f"{tmp_path / 'afile'}: not JSON")
    _one_line(*run(tables.main, ["--sweeps=.", f"--out={tmp_path / 'afile' / 't.md'}"]),
              starts=f"--out={tmp_path / 'afile' / 't.md'}: {tmp_path / 'afile'} is a file")
    _one_line(*run(tables.main, ["--sweeps=.", f"--out={tmp_path}"]), starts=f"--out={tmp_path} is a folder")
    _clean(tmp_path)


def test_nullspace_refusals(tmp_path, capsys):
    from tp_keras.paper import nullspace

    def run(**kwargs):
        with pytest.raises(SystemExit) as exit_:
            cli.guarded(nullspace.run_experiment)(**kwargs)
        return exit_.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]

    _one_line(*run(workdir=str(tmp_path), seed=-1), starts="--seed: -1 must be between 0 and 4294967295")
    (tmp_path / "afile").write_text("")
    _one_line(*run(workdir=str(tmp_path / "afile")), starts=f"--workdir={tmp_path / 'afile'} exists and is not")
    (tmp_path / "busy").mkdir()
    with rundir.WorkdirLock(str(tmp_path / "busy")):
        _one_line(*run(workdir=str(tmp_path / "busy")), starts=f"--workdir={tmp_path / 'busy'} is in use")


@pytest.mark.slow
@pytest.mark.parametrize("args, starts", [
    (["--threads=x"], "--threads: integers expected, got x"),
    (["--methods=nope"], "--methods: unknown nope; choose from"),
    (["--samples=3000000000"], "--samples: 3000000000 must be between 1 and 2147483647"),
    (["--samples=2000000000", "--methods=bp"], "--samples: this run needs about"),
    (["--json=afile/b.json"], "--json=afile/b.json: "),
    (["--repeats=0"], "flag --repeats=0: 0 is not a positive integer"),
    (["extra"], "unexpected argument 'extra'"),
    (["--loop", "--threads=1,2"], "--threads: --loop measures one thread setting per run, got 1,2"),
    (["--loop", "--precision=float64"], "--precision: --loop times float32 training passes only"),
    (["--loop", "--proxy_steps_per_call=1"], "flag --proxy_steps_per_call=1: 1 is not"),
])
def test_bench_refusals(tmp_path, args, starts):
    (tmp_path / "afile").write_text("")
    result = subprocess.run([sys.executable, "-m", "tp_keras.bench", *args], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    _one_line(result.returncode, lines, starts=starts)
    assert "tensorflow" not in result.stderr.lower()  # refused before TensorFlow loads


def test_out_of_memory_and_other_os_errors_are_one_line():
    """What cli.guarded prints for errors no check caught first: TensorFlow's device out-of-memory error (its
    graph decorations dropped), MemoryError, and an OSError with its path; a bug keeps its traceback."""
    import tensorflow as tf
    oom = tf.errors.ResourceExhaustedError(None, None, "{{function_node __wrapped__MatMul}} OOM when allocating "
                                                       "tensor with shape[100000,100000] [Op:MatMul] name: ")
    assert cli.describe(oom) == ("out of memory (OOM when allocating tensor with shape[100000,100000]); lower "
                                 "--batch_size or the layer sizes, or run on a machine with more memory")
    assert cli.describe(MemoryError()).startswith("out of memory; lower --batch_size")
    assert cli.describe(OSError(errno.EDQUOT, "Disk quota exceeded", "/x/y.json")) == (
        "/x/y.json: disk quota exceeded (EDQUOT); free some space or choose another path")
    assert cli.describe(TypeError("a bug")) is None
    with pytest.raises(TypeError):
        cli.guarded(lambda: (_ for _ in ()).throw(TypeError("a bug")))()
