"""A run folder is never replaced unasked and never mixes two runs or two data sets, in the catalogue
style of test_bad_inputs.py: the command runs in-process, its one `error:` line, exit status and the folder's
untouched bytes are checked.

* A workdir holding a run (finished, interrupted, another method's or seed's, the default workdir of an earlier
  command) is refused without --resume or --overwrite; --overwrite replaces it, removing the old run's files before
  writing its first one (a replacing run stopped at its first batch leaves only its own files).
* A run's data are fingerprinted (config.json, checkpoint): --resume on other data is refused, on the same data
  elsewhere (a plain copy of the gzipped files) continues.
* --resume with fewer --epochs than the run has done is refused and leaves config.json as it was.
* Known data sets are recognised from their files: Fashion-MNIST's files under --dataset=mnist are refused.
* --data_dir that is a file or missing names the fix; damping_search's workdir follows the launcher's rules.
"""
import gzip
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

import fixture_data
from tp_keras.run import data as data_module
from tp_keras.run import launch, rundir  # noqa: F401  (launch: its flags)
from tp_keras.paper import damping_search
from test_bad_inputs import TINY, _clean, _launch, _one_line, command  # noqa: F401  (command: the fixture)
from test_faults import _lines

CHOICES = ["continue it with --resume", "choose another --workdir", "or replace it with --overwrite"]


def _snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def _json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def finished_run(mnist_dir, tmp_path_factory):
    """A finished 2-epoch bp run (seed 7) made by the launcher; tests copy it before touching it."""
    from absl import flags

    from tp_keras.run import cli
    folder = tmp_path_factory.mktemp("finished") / "run"
    flags.FLAGS.unparse_flags()
    try:
        launch.main(cli.parse_flags_one_line(["prog", "--method=bp", f"--data_dir={mnist_dir}", "--epochs=2",
                                              "--seed=7", f"--workdir={folder}", *TINY]))
    finally:
        flags.FLAGS.unparse_flags()
    assert _json(folder / "summary.json")["status"] == "finished"
    return folder


@pytest.fixture
def run_copy(finished_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)
    return workdir


# --- Never replaced unasked ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    ["--seed=7"],                                # the same command again (from the shell history)
    ["--seed=8"],                                # another seed
    ["--seed=7", "--method=dfa"],                # another method
    ["--seed=7", "--lr=0.5", "--epochs=1"],      # other flags
])
def test_a_workdir_holding_a_run_is_refused_untouched(command, mnist_dir, run_copy, extra):
    before = _snapshot(run_copy)
    line = _one_line(*_launch(command, mnist_dir, run_copy, *extra, epochs=2),
                     starts=f"--workdir={run_copy} already holds a run (method bp, seed 7, finished, 2/2 epochs); ",
                     contains=CHOICES)
    assert "no checkpoint" not in line
    assert _snapshot(run_copy) == before  # byte for byte, and nothing added (no lock, no temporary)


def test_the_default_workdir_of_an_earlier_command_is_refused(command, mnist_dir, finished_run, tmp_path,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = os.path.join("runs", "mnist_bp_seed7")
    shutil.copytree(finished_run, tmp_path / default)
    before = _snapshot(tmp_path / default)
    status, lines = command(launch.main, ["--method=bp", f"--data_dir={mnist_dir}", "--seed=7", "--epochs=3",
                                          "--lr=0.001", *TINY])
    _one_line(status, lines, starts=f"--workdir={default} already holds a run (method bp, seed 7, finished, 2/2 "
                                    "epochs)", contains=CHOICES)
    assert _snapshot(tmp_path / default) == before


def test_an_interrupted_run_is_refused_naming_its_state_and_resume_continues_it(command, mnist_dir, tmp_path,
                                                                                monkeypatch):
    """Stopped (SIGTERM) in epoch 1, before its first checkpoint: the rerun without --resume is refused naming the
    interruption; --resume with other settings is refused by its config.json; --resume as it was starts over."""
    workdir = tmp_path / "run"
    monkeypatch.setenv("TP_KERAS_KILL_AT", "train_batch:2:TERM")
    monkeypatch.setattr("tp_keras.run.faults._reached", __import__("collections").Counter())
    _one_line(*_launch(command, mnist_dir, workdir), exit_status=143,
              starts="interrupted by SIGTERM in epoch 1; no checkpoint was written yet: rerun with --resume or "
                     "--overwrite to start over")
    monkeypatch.delenv("TP_KERAS_KILL_AT")
    before = _snapshot(workdir)
    _one_line(*_launch(command, mnist_dir, workdir),
              starts=f"--workdir={workdir} already holds a run (method bp, seed 42, interrupted, 0/1 epochs, no "
                     "checkpoint); ", contains=CHOICES)
    _one_line(*_launch(command, mnist_dir, workdir, "--resume", "--lr=0.5"),
              starts=f"--resume: {workdir / 'config.json'} was written with lr=", contains=["this run has 0.5"])
    assert _snapshot(workdir) == before
    status, lines = _launch(command, mnist_dir, workdir, "--resume")
    assert status == 0, lines
    assert _json(workdir / "summary.json")["status"] == "finished"
    assert [r["epoch"] for r in _lines(workdir / "metrics.jsonl")] == [1]


def test_a_population_refuses_a_member_workdir_holding_a_run(command, mnist_dir, finished_run, tmp_path):
    """--seeds: each member's workdir follows a single run's rule; the refusal names the member's, before any work,
    and the other member's folder is not made."""
    folder = tmp_path / "pop"
    shutil.copytree(finished_run, folder / "seed_7")
    before = _snapshot(folder)
    status, lines = command(launch.main, ["--method=bp", f"--data_dir={mnist_dir}", "--seed=6", "--seeds=2",
                                          "--epochs=2", f"--workdir={folder}", *TINY])
    _one_line(status, lines, starts=f"--workdir={folder / 'seed_7'} already holds a run (method bp, seed 7, finished, "
                                    "2/2 epochs)", contains=CHOICES)
    assert _snapshot(folder) == before and os.listdir(folder) == ["seed_7"]


def test_a_folder_without_run_files_is_used_and_its_other_files_kept(command, mnist_dir, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    status, lines = _launch(command, mnist_dir, workdir)
    assert status == 0, lines
    assert (workdir / "notes.txt").read_text() == "mine"
    assert _json(workdir / "summary.json")["status"] == "finished"


def test_resume_and_overwrite_together_are_refused(command, mnist_dir, run_copy):
    before = _snapshot(run_copy)
    _one_line(*_launch(command, mnist_dir, run_copy, "--resume", "--overwrite", "--seed=7", epochs=2),
              starts="--overwrite: --resume continues the run in the workdir, --overwrite replaces it; give one")
    assert _snapshot(run_copy) == before


# --- --overwrite ----------------------------------------------------------------------------------------------------

def test_overwrite_replaces_the_run_and_keeps_other_files(command, mnist_dir, run_copy):
    (run_copy / "notes.txt").write_text("mine")
    old_events = set(os.listdir(run_copy / "tb"))
    assert old_events
    status, lines = _launch(command, mnist_dir, run_copy, "--seed=8", "--overwrite")
    assert status == 0, lines
    assert not old_events & set(os.listdir(run_copy / "tb"))  # the old run's TensorBoard events are gone
    assert _json(run_copy / "config.json")["seed"] == 8
    assert _json(run_copy / "summary.json")["seed"] == 8 and _json(run_copy / "summary.json")["epochs_run"] == 1
    assert [r["epoch"] for r in _lines(run_copy / "metrics.jsonl")] == [1]
    header, _ = rundir.read_checkpoint(str(run_copy / "checkpoint.npz"))
    assert header["config"]["seed"] == 8 and header["epoch"] == 1
    assert (run_copy / "notes.txt").read_text() == "mine"
    _clean(run_copy)


class _Killed(BaseException):
    """Stands for SIGKILL: nothing of the run's own handling runs after it (no summary is written)."""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_replacing_run_stopped_at_its_first_batch_leaves_only_its_own_files(command, mnist_dir, run_copy,
                                                                              monkeypatch, how):
    """A mixed folder (the old run's summary and checkpoint beside the new run's config.json) cannot
    happen: the old files are gone before the new config.json is written."""
    from tp_keras.run import experiment
    if how == "SIGTERM":
        monkeypatch.setenv("TP_KERAS_KILL_AT", "train_batch:1:TERM")
        monkeypatch.setattr("tp_keras.run.faults._reached", __import__("collections").Counter())
    else:
        real = experiment.faults.kill_point

        def kill(point):
            if point == "train_batch":
                raise _Killed()
            real(point)
        monkeypatch.setattr(experiment.faults, "kill_point", kill)
    try:
        status, lines = _launch(command, mnist_dir, run_copy, "--seed=8", "--overwrite")
    except _Killed:
        status = None
    assert status == (143 if how == "SIGTERM" else None)
    assert _json(run_copy / "config.json")["seed"] == 8
    assert not (run_copy / "checkpoint.npz").exists()
    assert (run_copy / "metrics.jsonl").read_text() == ""
    if how == "SIGTERM":
        assert _json(run_copy / "summary.json")["seed"] == 8
        assert _json(run_copy / "summary.json")["status"] == "interrupted"
    else:
        assert not (run_copy / "summary.json").exists()


def test_an_overwrite_refused_before_training_leaves_the_old_run_untouched(command, tmp_path, run_copy):
    """The old run is removed only once the new one has its data and model: a new run that fails on its data
    (an empty test set) leaves the old run byte for byte."""
    from fixture_data import write_idx_images, write_idx_labels
    data = tmp_path / "data"
    data.mkdir()
    for prefix, n in (("train", 30), ("t10k", 0)):
        write_idx_images(data / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
        write_idx_labels(data / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(n, np.uint8))
    before = _snapshot(run_copy)
    _one_line(*_launch(command, str(data), run_copy, "--overwrite", "--no_val_set"),
              starts=f"--data_dir={data}: the test set has 0 samples")
    assert _snapshot(run_copy) == before


# --- --resume: the same run, on the same data ------------------------------------------------------------------------

def test_resume_with_fewer_epochs_than_done_is_refused_and_config_kept(command, mnist_dir, run_copy):
    before = _snapshot(run_copy)
    _one_line(*_launch(command, mnist_dir, run_copy, "--resume", "--seed=7", epochs=1),
              starts=f"--epochs: 1 is fewer than the 2 epochs {run_copy / 'checkpoint.npz'} has done; give "
                     "--epochs=2 or more to continue it, or choose another --workdir")
    assert _snapshot(run_copy) == before
    assert _json(run_copy / "config.json")["epochs"] == 2


def _copy_data(source, target, *, gunzip=False, flip=None):
    """A copy of the four IDX files; `gunzip`: uncompressed; `flip`: (file, offset) of one decoded byte to change."""
    target.mkdir()
    for name in os.listdir(source):
        with gzip.open(os.path.join(source, name), "rb") as f:
            content = bytearray(f.read())
        if flip and name.startswith(flip[0]):
            content[flip[1]] ^= 0x01
        if gunzip:
            (target / name.removesuffix(".gz")).write_bytes(bytes(content))
        else:
            with gzip.open(target / name, "wb") as f:
                f.write(bytes(content))
    return str(target)


def test_the_fingerprint_is_the_arrays_and_changes_with_one_byte(mnist_dir, tmp_path):
    load = lambda folder: data_module.load_dataset("mnist", folder, seed=1, validation_size=20)  # noqa: E731
    original = load(mnist_dir).fingerprint
    assert load(mnist_dir).fingerprint == original
    assert load(_copy_data(mnist_dir, tmp_path / "plain", gunzip=True)).fingerprint == original
    assert original["samples"] == {"train": 100, "test": 40}
    # The same definition as KNOWN_ARRAYS: the SHA-256 of each decoded IDX file less its header.
    with gzip.open(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        assert original["arrays"]["test_images"]["sha256"] == hashlib.sha256(f.read()[16:]).hexdigest()
    with gzip.open(os.path.join(mnist_dir, "train-labels-idx1-ubyte.gz"), "rb") as f:
        assert original["arrays"]["train_labels"]["sha256"] == hashlib.sha256(f.read()[8:]).hexdigest()
    pixel = load(_copy_data(mnist_dir, tmp_path / "pixel", flip=("t10k-images", 16 + 28 * 28 * 39 + 5))).fingerprint
    assert pixel["sha256"] != original["sha256"]
    assert pixel["arrays"]["test_images"] != original["arrays"]["test_images"]
    assert pixel["arrays"]["train_images"] == original["arrays"]["train_images"]
    label = load(_copy_data(mnist_dir, tmp_path / "label", flip=("train-labels", 8))).fingerprint
    assert label["sha256"] not in (original["sha256"], pixel["sha256"])
    # The split (seed) is not part of it: the run's config holds the seed.
    assert data_module.load_dataset("mnist", mnist_dir, seed=2, validation_size=30).fingerprint == original


def test_student_teacher_fingerprint_follows_its_generator():
    a, b = data_module.make_student_teacher(1, num_train=8), data_module.make_student_teacher(1, num_train=8)
    assert a.fingerprint == b.fingerprint
    assert data_module.make_student_teacher(2, num_train=8).fingerprint["sha256"] != a.fingerprint["sha256"]
    assert data_module.make_student_teacher(1, num_train=9).fingerprint["sha256"] != a.fingerprint["sha256"]


def test_resume_on_other_data_is_refused_on_the_same_data_elsewhere_continues(command, mnist_dir, run_copy,
                                                                              tmp_path):
    recorded = _json(run_copy / "config.json")["data"]
    assert recorded == data_module.load_dataset("mnist", mnist_dir, seed=7, validation_size=20).fingerprint
    assert rundir.read_checkpoint(str(run_copy / "checkpoint.npz"))[0]["data"] == recorded
    other = _copy_data(mnist_dir, tmp_path / "other", flip=("train-images", 16 + 300))
    before = _snapshot(run_copy)
    _one_line(*_launch(command, other, run_copy, "--resume", "--seed=7", epochs=3),
              starts=f"--resume: {run_copy / 'checkpoint.npz'} was trained on other data (100 train / 40 test "
                     f"samples, sha256 {recorded['sha256'][:12]}) than --data_dir={other} holds",
              contains=["point --data_dir at the files it was trained on, or choose another --workdir"])
    assert _snapshot(run_copy) == before
    same = _copy_data(mnist_dir, tmp_path / "same", gunzip=True)
    status, lines = _launch(command, same, run_copy, "--resume", "--seed=7", epochs=3)
    assert status == 0, lines
    assert [r["epoch"] for r in _lines(run_copy / "metrics.jsonl")] == [1, 2, 3]
    assert _json(run_copy / "config.json")["data"]["sha256"] == recorded["sha256"]


# --- Datasets recognised, not assumed ----------------------------------------------------------------------------

def test_known_dataset_constants_are_sha256_of_every_array():
    assert set(data_module.KNOWN_ARRAYS) == {"mnist", "fashion_mnist"}
    digests = [d for known in data_module.KNOWN_ARRAYS.values() for d in known.values()]
    assert len(set(digests)) == 8 and all(len(d) == 64 and int(d, 16) >= 0 for d in digests)
    for known in data_module.KNOWN_ARRAYS.values():
        assert set(known) == {"train_images", "train_labels", "test_images", "test_labels"}


def test_files_of_a_known_dataset_under_another_name_are_refused(command, mnist_dir, tmp_path, monkeypatch):
    """The tests cannot hold the real Fashion-MNIST: the fixture's files are declared to be it. Under the default
    --dataset=mnist the launcher refuses in one line naming --dataset=fashion_mnist; under that flag they load."""
    arrays = data_module.load_dataset("mnist", mnist_dir, validation_size=20).fingerprint["arrays"]
    monkeypatch.setitem(data_module.KNOWN_ARRAYS, "fashion_mnist",
                        {name: entry["sha256"] for name, entry in arrays.items()})
    workdir = tmp_path / "run"
    _one_line(*_launch(command, mnist_dir, workdir),
              starts=f"--data_dir={mnist_dir} holds Fashion-MNIST, not MNIST; pass --dataset=fashion_mnist")
    assert not workdir.exists()
    assert data_module.load_dataset("fashion_mnist", mnist_dir, validation_size=20).name == "fashion_mnist"
    # One file of one known set among another's: refused, whatever --dataset says.
    monkeypatch.setitem(data_module.KNOWN_ARRAYS, "mnist", {"test_labels": arrays["test_labels"]["sha256"]})
    monkeypatch.setitem(data_module.KNOWN_ARRAYS, "fashion_mnist", {"train_images": arrays["train_images"]["sha256"]})
    with pytest.raises(data_module.DataError, match="mixes files of Fashion-MNIST and MNIST"):
        data_module.load_dataset("fashion_mnist", mnist_dir, validation_size=20)


def test_unknown_files_keep_the_given_dataset(mnist_dir):
    assert data_module.recognise(data_module.load_dataset("mnist", mnist_dir, validation_size=20).fingerprint) \
        == set()
    assert data_module.load_dataset("fashion_mnist", mnist_dir, validation_size=20).name == "fashion_mnist"


# --- --data_dir that is not a folder ---------------------------------------------------------------------------------

def test_data_dir_that_is_a_file_or_missing_names_the_fix(command, mnist_dir, tmp_path):
    a_file = os.path.join(mnist_dir, "train-images-idx3-ubyte.gz")
    _one_line(*_launch(command, a_file, tmp_path / "run"),
              starts=f"--data_dir={a_file} is a file, not a folder; point --data_dir at the folder that holds the "
                     f"four MNIST IDX files", contains=[f"(e.g. --data_dir={mnist_dir})"])
    _one_line(*_launch(command, str(tmp_path / "nope"), tmp_path / "run"),
              starts=f"--data_dir={tmp_path / 'nope'} does not exist; point --data_dir at the folder that holds",
              contains=["or leave it out to use tensorflow-datasets"])
    assert not (tmp_path / "run").exists()


# --- damping_search -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_damping_search_does_not_replace_a_run_unasked(command, mnist_dir, tmp_path):
    workdir = tmp_path / "search"
    base = ["--method=ddtp_linear", f"--data_dir={mnist_dir}", *TINY, "--search_epochs=1", "--grid=0,1",
            "--log_interval=2", f"--workdir={workdir}"]
    status, lines = command(damping_search.main, base)
    assert status == 0, lines
    first = _snapshot(workdir)
    assert "damping_search.json" in first
    _one_line(*command(damping_search.main, base),
              starts=f"--workdir={workdir} already holds a run (method ddtp_linear, seed 42, finished, 1/1 epochs); ",
              contains=CHOICES)
    assert _snapshot(workdir) == first
    status, lines = command(damping_search.main, base + ["--overwrite", "--seed=3"])
    assert status == 0, lines
    assert _json(workdir / "config.json")["seed"] == 3 and _json(workdir / "damping_search.json")["seed"] == 3
    _clean(workdir)


def test_cifar_fingerprint_is_that_of_the_nhwc_images_whatever_the_file_form(tmp_path, monkeypatch):
    """Raw CIFAR-10 is an NHWC view of CHW rows (not contiguous): hashed in chunks, it equals the hash of the
    contiguous NHWC array (what tensorflow-datasets gives), for the extracted folder and the tarball alike."""
    rng = np.random.default_rng(3)
    batches = [(rng.integers(0, 256, (3, 3072)), rng.integers(0, 10, 3)) for _ in range(6)]
    folder, tarball = tmp_path / "folder", tmp_path / "tarball"
    fixture_data.write_cifar_batches(folder, batches[:5], batches[5])
    fixture_data.write_cifar_batches(tarball, batches[:5], batches[5], as_tarball=True)
    monkeypatch.setattr(data_module, "_HASH_CHUNK", 2)  # several chunks, the last one short
    a = data_module.load_dataset("cifar10", str(folder), validation_size=4).fingerprint
    assert a == data_module.load_dataset("cifar10", str(tarball), validation_size=4).fingerprint
    train = np.concatenate([b[0] for b in batches[:5]]).astype(np.uint8).reshape(-1, 3, 32, 32)
    nhwc = np.ascontiguousarray(train.transpose(0, 2, 3, 1))
    assert a["arrays"]["train_images"] == {"shape": [15, 32, 32, 3],
                                           "sha256": hashlib.sha256(nhwc.tobytes()).hexdigest()}
    assert a["samples"] == {"train": 15, "test": 3}
