"""tp_keras.run.rundir: atomic writes (no partial file, no temporary left, the mode of a new file), appends that roll
back, the workdir lock (busy, stale, take-over) and checkpoints that are refused in one line when unreadable."""
import errno
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tp_keras.run import rundir
from tp_keras.run.rundir import RunDirError


def _files(folder):
    return sorted(os.listdir(folder))


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_replaces_whole_files_with_the_mode_of_a_new_file(tmp_path):
    old_umask = os.umask(0o027)
    try:
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        rundir.write_json(str(tmp_path / "a.json"), {"k": np.float32(1.5), "n": np.int64(3)})
        rundir.atomic_write(str(tmp_path / "b.bin"), b"\x00\x01")
        rundir.atomic_write(str(tmp_path / "c.txt"), lambda f: f.write(b"written by a function"))
    finally:
        os.umask(old_umask)
    modes = {name: os.stat(tmp_path / name).st_mode & 0o777 for name in _files(tmp_path)}
    assert modes == {"plain.txt": 0o640, "a.json": 0o640, "b.bin": 0o640, "c.txt": 0o640}
    assert json.loads((tmp_path / "a.json").read_text()) == {"k": 1.5, "n": 3}
    assert (tmp_path / "c.txt").read_bytes() == b"written by a function"


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / "summary.json")
    rundir.write_json(path, {"epoch": 1})
    monkeypatch.setattr(rundir, "_sync", _full_disk)
    with pytest.raises(RunDirError) as err:
        rundir.write_json(path, {"epoch": 2}, fix="the previous summary.json is kept")
    assert str(err.value) == (f"cannot write {path}: no space left on device (ENOSPC); the previous summary.json "
                              "is kept")
    assert json.loads(open(path).read()) == {"epoch": 1} and _files(tmp_path) == ["summary.json"]

    def interrupted(f):
        f.write(b"half")
        raise KeyboardInterrupt
    monkeypatch.undo()
    with pytest.raises(KeyboardInterrupt):
        rundir.atomic_write(path, interrupted)
    assert json.loads(open(path).read()) == {"epoch": 1} and _files(tmp_path) == ["summary.json"]


class _HalfWritingFile:
    """A file whose write stores half the data, then fails as a full disk does."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        self.real.write(data[:len(data) // 2])
        self.real.flush()
        _full_disk()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_a_failed_append_is_truncated_back_to_whole_lines(tmp_path, monkeypatch):
    path = str(tmp_path / "metrics.jsonl")
    rundir.append_lines(path, ['{"epoch": 1}'])
    monkeypatch.setattr(rundir, "open", lambda p, mode: _HalfWritingFile(open(p, mode)), raising=False)
    with pytest.raises(RunDirError, match="no space left on device"):
        rundir.append_lines(path, ['{"epoch": 2, "train_loss": 0.25}'])
    assert open(path).read() == '{"epoch": 1}\n'


def test_folders_that_cannot_be_made_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    with pytest.raises(RunDirError, match=r"^--workdir=.*afile exists and is not a folder; choose another"):
        rundir.make_folder(str(tmp_path / "afile"))
    with pytest.raises(RunDirError, match=r"afile is a file, not a folder \(ENOTDIR\)"):
        rundir.make_folder(str(tmp_path / "afile" / "run"))
    for code, words in ((errno.EACCES, "permission denied (EACCES); choose a writable --workdir"),
                        (errno.EROFS, "read-only file system (EROFS); choose a writable --workdir"),
                        (errno.ENOSPC, "no space left on device (ENOSPC); free some space")):
        monkeypatch.setattr(rundir.os, "makedirs", lambda *a, code=code, **k: (_ for _ in ()).throw(
            OSError(code, os.strerror(code))))
        with pytest.raises(RunDirError) as err:
            rundir.make_folder(str(tmp_path / "new"))
        assert words in str(err.value) and "\n" not in str(err.value)
    monkeypatch.undo()
    with pytest.raises(RunDirError, match=r"^--out=.*afile/x.png: .*afile is a file, not a folder"):
        rundir.check_writable(str(tmp_path / "afile" / "x.png"), "--out")
    assert rundir.check_writable(str(tmp_path / "deeper" / "x.png"), "--out") and _files(tmp_path / "deeper") == []


_HOLD = ("import sys, time; from tp_keras.run.rundir import WorkdirLock; lock = WorkdirLock(sys.argv[1]).acquire(); "
         "print('locked', flush=True); time.sleep(60)")


@pytest.mark.slow
def test_the_lock_refuses_a_second_writer_and_is_taken_over_after_a_kill(tmp_path):
    """Another process holds the lock: refused in one line naming its pid and host. Killed (SIGKILL, no
    clean-up): its lock is stale and the next run takes it over, naming the dead process."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError) as err:
            rundir.WorkdirLock(str(tmp_path)).acquire()
        assert f"is in use by another run (pid {holder.pid} on " in str(err.value)
        assert str(err.value).endswith("wait for it to end or stop it, or choose another --workdir")
    finally:
        holder.kill()
        holder.wait()
    with rundir.WorkdirLock(str(tmp_path)) as lock:
        assert lock.stale_holder.startswith(f"pid {holder.pid} on ")
        assert json.loads((tmp_path / rundir.LOCK_NAME).read_text())["pid"] == os.getpid()
    assert _files(tmp_path) == []  # released: the lock file is gone
    with rundir.WorkdirLock(str(tmp_path)) as lock:
        assert lock.stale_holder is None


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with rundir.WorkdirLock(str(tmp_path)):
        with pytest.raises(RunDirError, match=f"in use by another run \\(pid {os.getpid()} "):
            rundir.WorkdirLock(str(tmp_path)).acquire()


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".tmp_checkpoint.npz.1a2b3c4d").write_bytes(b"half a zip")
    (tmp_path / ".tmp_x1y2.json").write_text("{")  # the name an older version gave its temporaries
    (tmp_path / "summary.json").write_text("{}")
    assert sorted(rundir.remove_stale_temporaries(str(tmp_path))) == [".tmp_checkpoint.npz.1a2b3c4d",
                                                                      ".tmp_x1y2.json"]
    assert _files(tmp_path) == ["summary.json"]


def _checkpoint(path):
    header = {"epoch": 2, "passes": 4, "history": [{"epoch": 1}], "config": {"seed": 1}, "names": ["0:w", "1:b"]}
    rundir.write_checkpoint(str(path), header, {"v0": np.arange(6.0).reshape(2, 3), "v1": np.zeros(3, "float32")})
    return header


def test_checkpoints_round_trip(tmp_path):
    header = _checkpoint(tmp_path / "checkpoint.npz")
    read, arrays = rundir.read_checkpoint(str(tmp_path / "checkpoint.npz"))
    assert read == header and arrays["v0"].tolist() == [[0, 1, 2], [3, 4, 5]] and arrays["v1"].dtype == np.float32


def _corrupt(path, kind):
    if kind == "folder":
        os.makedirs(path)
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "text":
        open(path, "w").write("not a checkpoint\n")
    elif kind == "npy":
        np.save(open(path, "wb"), np.zeros(3))
    elif kind == "foreign npz":
        np.savez(open(path, "wb"), weights=np.zeros(3))
    elif kind == "bad header":
        np.savez(open(path, "wb"), header=np.array('{"epoch": "one"}'))
    elif kind == "missing arrays":
        np.savez(open(path, "wb"), header=np.array(json.dumps(
            {"epoch": 1, "passes": 1, "history": [], "config": {}, "names": ["0:w"]})))
    else:
        _checkpoint(path)
        data = bytearray(open(path, "rb").read())
        if kind == "truncated":
            data = data[:len(data) // 2]
        else:  # flipped bytes inside the first member
            data[100:140] = bytes(b ^ 0xFF for b in data[100:140])
        open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("kind, why", [
    ("folder", "it is a folder, not a file"), ("empty", "the file is empty"), ("text", "it is not an .npz file"),
    ("npy", "it is a single .npy array"), ("foreign npz", "it has no checkpoint header"),
    ("bad header", "its header is not a tp_keras checkpoint header"), ("missing arrays", "it lacks the arrays v0"),
    ("truncated", "truncated or corrupt (BadZipFile"), ("flipped", "truncated or corrupt ("),
])
def test_unreadable_checkpoints_are_one_line_naming_the_file(tmp_path, kind, why):
    path = str(tmp_path / "checkpoint.npz")
    _corrupt(path, kind)
    with pytest.raises(RunDirError) as err:
        rundir.read_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"--resume: cannot read the checkpoint {path}: {why}"), message
    assert message.endswith("; delete it to start the run over, or choose another --workdir") and "\n" not in message


def test_a_checkpoint_is_a_zip_archive(tmp_path):
    """What read_checkpoint's first check relies on: np.savez writes a zip (magic PK\\x03\\x04)."""
    _checkpoint(tmp_path / "checkpoint.npz")
    assert zipfile.is_zipfile(tmp_path / "checkpoint.npz")
    assert open(tmp_path / "checkpoint.npz", "rb").read(4) == rundir._ZIP_MAGIC
