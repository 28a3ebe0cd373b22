"""The run folder's files in one place: how they are written, appended, locked and read back, and what a
file-system error tells the user.

* Atomic writes (`atomic_write`, `write_json`, `write_checkpoint`): the content goes to a temporary file in the
  same folder (`.tmp_<name>.<random>`), is flushed and synced, and replaces the target by a rename; on any error
  or interrupt the temporary is removed and the previous file stays as it was. The temporary is created with mode
  0666 & ~umask, the mode `open()` gives a new file, so every file of a run folder has the same permissions.
  A process killed with SIGKILL mid-write can leave its temporary behind: `remove_stale_temporaries` deletes them
  when the next run takes the folder's lock.
* Appends (`append_lines`): a failed append is truncated back to the previous end of the file, so a JSON-lines
  file never ends in half a line.
* One writer per folder (`WorkdirLock`): an exclusive `flock` on `<workdir>/.lock`, which holds the pid, host and
  start time of its holder. A second run refuses in one line naming that process. The kernel drops the lock when
  its process dies, even by SIGKILL, so the lock of a killed run is stale and is taken over (its file remains and
  names the dead process, which is how a take-over is recognised and reported).
* One run per folder (`check_no_run`, `remove_run`): a new run refuses a folder that holds another run's files
  (RUN_FILES) in one line naming that run (method, seed, status, epochs) and the choices (--resume, another
  --workdir, --overwrite); `--overwrite` removes the old run's files before the new run writes its first one, so
  the folder never mixes two runs.
* Checkpoints (`write_checkpoint`, `read_checkpoint`): one .npz holding a JSON header and named arrays; any
  unreadable file (truncated, corrupt, empty, not an .npz, a folder) is one line naming the file and the fix.

Every failure is a `RunDirError`: an OSError whose message is one line saying what could not be done, why
(no space left, permission denied, read-only file system, not a directory, ...) and what to do.

This module needs NumPy only (no TensorFlow), so the table and figure commands use it too.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import zipfile
import zlib

TMP_PREFIX = ".tmp_"
LOCK_NAME = ".lock"


class RunDirError(OSError):
    """A file-system problem with a run folder's files. `str(err)` is one line: what, why and the fix."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- What an OSError means to the user ------------------------------------------------------------------------

_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def _first_non_directory(path: str) -> str | None:
    """The first existing component of `path` (from the root down) that is not a directory, if any."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:i]) or os.sep
        if os.path.lexists(prefix) and not os.path.isdir(prefix):
            return prefix
        if not os.path.lexists(prefix):
            return None
    return None


def reason(err: OSError, path: str) -> str:
    """Why `err` happened on `path`, in a few words (with the errno name, which is what one searches for)."""
    code = err.errno
    name = errno.errorcode.get(code, "")
    if code == errno.ENOTDIR or (code == errno.EEXIST and os.path.lexists(path) and not os.path.isdir(path)):
        blocker = _first_non_directory(path)
        what = f"{blocker} is a file, not a folder" if blocker else "a part of the path is not a folder"
        return f"{what} ({name})"
    text = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large for the file system", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted", errno.EROFS: "read-only file system",
            errno.EISDIR: "it is a folder", errno.ENOENT: "no such file or folder"}.get(code)
    text = text or (err.strerror or str(err)).strip().splitlines()[0]
    return f"{text} ({name})" if name else text


def fix_for(err: OSError, kind: str = "--workdir") -> str:
    """The usual remedy for `err`; `kind` names what the user should change (a flag, or 'folder')."""
    if err.errno in _SPACE:
        return f"free some space or choose another {kind}"
    if err.errno in _NOT_WRITABLE:
        return f"choose a writable {kind}"
    if err.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return f"choose another {kind} or move the file away"
    return f"check the path or choose another {kind}"


def error(err: OSError, doing: str, path: str, fix: str | None = None, kind: str = "--workdir") -> RunDirError:
    """A RunDirError 'cannot <doing> <path>: <reason>; <fix>'."""
    return RunDirError(f"cannot {doing} {path}: {reason(err, path)}; {fix or fix_for(err, kind)}")


# --- Folders --------------------------------------------------------------------------------------------------

def make_folder(path: str, flag: str = "--workdir", what: str | None = None) -> str:
    """Creates `path` (and its parents) if needed; a RunDirError naming `flag` if it cannot be a folder. `what`
    names the folder when it is not the flag's value itself (e.g. "the TensorBoard folder")."""
    if os.path.lexists(path) and not os.path.isdir(path):
        named = f"{what} {path}" if what else f"{flag}={path}"
        raise RunDirError(f"{named} exists and is not a folder; choose another {flag} or move the file away")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise error(err, "create the folder", path, kind=flag) from None
    return path


def check_writable(path: str, flag: str) -> str:
    """Fails now, in one line naming `flag`, if the file `path` could not be written later (a command checks its
    output before working for minutes): creates its folder if needed, then creates and removes a probe file."""
    if os.path.isdir(path):
        raise RunDirError(f"{flag}={path} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    blocker = _first_non_directory(folder)
    if blocker:
        raise RunDirError(f"{flag}={path}: {blocker} is a file, not a folder; choose another {flag} or move the "
                          "file away")
    make_folder(folder, flag)
    probe = os.path.join(folder, f"{TMP_PREFIX}probe.{secrets.token_hex(4)}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.remove(probe)
    except OSError as err:
        raise error(err, "write in", folder, kind=flag) from None
    return path


def remove_stale_temporaries(folder: str) -> list[str]:
    """Deletes the temporaries a killed writer left in `folder` (call it holding the folder's lock); returns
    their names."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if name.startswith(TMP_PREFIX) and os.path.isfile(path):
            try:
                os.remove(path)
                removed.append(name)
            except OSError:
                pass
    return removed


# --- Writing --------------------------------------------------------------------------------------------------

def _write_content(f, content) -> None:
    """Writes str/bytes, or calls content(f) to write into the binary file object f."""
    if callable(content):
        content(f)
    else:
        f.write(content.encode("utf-8") if isinstance(content, str) else content)


def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def atomic_write(path: str, content, *, before_rename=None, fix: str | None = None, kind: str = "--workdir") -> str:
    """Writes `content` (str, bytes, or a function writing into a binary file object) to `path` atomically.

    `before_rename()`, if given, runs when the temporary is complete and synced, just before the rename (the
    fault-injection hook kills there). On any failure the temporary is removed, `path` keeps its previous
    content, and an OSError becomes a one-line RunDirError ('cannot write <path>: <reason>; <fix>')."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f"{TMP_PREFIX}{os.path.basename(path)}.{secrets.token_hex(4)}")
    try:
        # O_EXCL with mode 0666: the kernel applies the umask, as for any file open() creates.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            _write_content(f, content)
            _sync(f)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(err, OSError) and not isinstance(err, RunDirError):
            raise error(err, "write", path, fix, kind) from None
        raise
    return path


def _json_default(value):
    import numpy as np  # imported here: the run folder's text files are written by commands that need no NumPy
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def json_text(obj, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, default=_json_default) + ("\n" if indent is not None else "")


def write_json(path: str, obj, *, before_rename=None, fix: str | None = None, kind: str = "--workdir") -> str:
    """Writes `obj` as indented JSON, atomically (see atomic_write)."""
    return atomic_write(path, json_text(obj), before_rename=before_rename, fix=fix, kind=kind)


def append_lines(path: str, lines: list[str], *, fix: str | None = None) -> None:
    """Appends text lines (each without its newline) to `path`; a failed append is truncated away, so the file
    keeps only whole lines."""
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    try:
        f = open(path, "ab")
    except OSError as err:
        raise error(err, "write", path, fix) from None
    with f:
        end = os.fstat(f.fileno()).st_size
        try:
            f.write(data)
            f.flush()
        except BaseException as err:
            try:
                f.truncate(end)
            except OSError:
                pass
            if isinstance(err, OSError):
                raise error(err, "write", path, fix) from None
            raise


# --- One writer per folder ------------------------------------------------------------------------------------

def _holder_text(raw: str) -> str:
    try:
        info = json.loads(raw)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


class WorkdirLock:
    """An exclusive lock on a run folder (`with WorkdirLock(workdir, flag="--workdir"): ...`).

    `acquire` raises a one-line RunDirError when another process holds it. After a successful acquire,
    `stale_holder` names the killed process whose lock was taken over (None when the folder was free)."""

    def __init__(self, folder: str, flag: str = "--workdir"):
        self.folder = folder
        self.flag = flag
        self.path = os.path.join(folder, LOCK_NAME)
        self.stale_holder = None
        self._fd = None

    def acquire(self) -> "WorkdirLock":
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise error(err, "write in", self.folder, kind=self.flag) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_text(_read_fd(fd))
                os.close(fd)
                raise RunDirError(f"{self.flag}={self.folder} is in use by another run ({holder}); wait for it "
                                  f"to end or stop it, or choose another {self.flag}") from None
            except OSError as err:  # e.g. ENOLCK: a network file system without locks
                os.close(fd)
                raise error(err, "lock", self.path, "put the run folder on a local disk", kind=self.flag) from None
            # The previous holder unlinks the file when it releases: if that happened between our open and our
            # flock, we hold a lock on a file nobody else will see; start again on the current file.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
                os.close(fd)
                continue
            break
        previous = _read_fd(fd).strip()
        self.stale_holder = _holder_text(previous) if previous else None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as err:
            os.close(fd)
            raise error(err, "write", self.path, kind=self.flag) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.remove(self.path)  # while still holding the lock, so nobody can take this file's lock meanwhile
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_fd(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return ""


# --- One run per folder ---------------------------------------------------------------------------------------

# The files that say a folder holds a run (what the launcher writes first and what it writes per epoch).
RUN_FILES = ("config.json", "summary.json", "checkpoint.npz", "metrics.jsonl")
# The settings (config.json keys) a resumed run may change: a run continues a folder's run when every other setting
# is equal (checkpoint.check_same_run); a sweep's runs may differ in these and the seed (sweep_results).
RESUME_MAY_DIFFER = ("epochs", "progress", "data_dir", "jit_compile", "steps_per_call", "tf32")
# What `remove_run` deletes, in this order: the checkpoint first (nothing can resume half a removal), config.json
# last (a removal cut short leaves only the old run's files, and they still say whose they are).
_OLD_RUN_ENTRIES = ("checkpoint.npz", "metrics.jsonl", "angles.jsonl", "damping_search.json", "tb", "summary.json",
                    "config.json")


def _is_file(path: str) -> bool:
    """Whether `path` is something a run writes as a file (a file, or a link, even broken; not a folder)."""
    return os.path.lexists(path) and not os.path.isdir(path)


def run_files(folder: str) -> list[str]:
    """The RUN_FILES present in `folder` (none when it is not a folder; a folder under such a name is no run's
    file, and writing the file fails later with its own one line)."""
    if not os.path.isdir(folder):
        return []
    return [name for name in RUN_FILES if _is_file(os.path.join(folder, name))]


def _read_json_quietly(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def _epochs_in_metrics(path: str) -> int | None:
    """The training epochs (epoch >= 1) recorded in a metrics.jsonl; None if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            count = 0
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] >= 1:
                    count += 1
            return count
    except OSError:
        return None


def describe_run(folder: str) -> str:
    """What the run in `folder` is, as far as its files say: 'method bp, seed 7, finished, 3/3 epochs'."""
    config = _read_json_quietly(os.path.join(folder, "config.json")) or {}
    summary = _read_json_quietly(os.path.join(folder, "summary.json")) or {}
    parts = []
    method = config.get("method", summary.get("method"))
    if method is not None:
        parts.append(f"method {method}")
    seed = config.get("seed", summary.get("seed"))
    if seed is not None:
        parts.append(f"seed {seed}")
    if summary.get("status") is not None:
        parts.append(str(summary["status"]).splitlines()[0][:80])
    elif os.path.lexists(os.path.join(folder, "summary.json")):
        parts.append("unreadable summary.json")
    else:
        parts.append("no summary.json")
    done = summary.get("epochs_run")
    if not isinstance(done, int):
        done = _epochs_in_metrics(os.path.join(folder, "metrics.jsonl"))
    total = config.get("epochs")
    if done is not None or total is not None:
        parts.append(f"{'?' if done is None else done}/{'?' if total is None else total} epochs")
    if not os.path.lexists(os.path.join(folder, "checkpoint.npz")):
        parts.append("no checkpoint")
    return ", ".join(parts)


def check_no_run(folder: str, flag: str = "--workdir") -> None:
    """A one-line RunDirError if `folder` holds a run's files (an empty folder, or one with other files, is
    fine): what run it is and the three choices."""
    found = run_files(folder)
    if found:
        raise RunDirError(f"{flag}={folder} already holds a run ({describe_run(folder)}); continue it with --resume, "
                          f"choose another {flag}, or replace it with --overwrite")


def remove_run(folder: str, flag: str = "--workdir") -> list[str]:
    """Deletes the files a run writes in `folder` (config, summary, metrics, angles, checkpoint, damping search
    result, TensorBoard folder), the checkpoint first and config.json last; returns the names removed. Other
    files (a log, the user's own) stay."""
    removed = []
    for name in _OLD_RUN_ENTRIES:
        path = os.path.join(folder, name)
        folder_entry = name == "tb" and os.path.isdir(path) and not os.path.islink(path)
        if not (folder_entry or _is_file(path)):  # a folder where a file belongs is left for the write to report
            continue
        try:
            if folder_entry:
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError as err:
            raise error(err, "remove the previous run's", path, kind=flag) from None
        removed.append(name)
    return removed


# --- Checkpoints ----------------------------------------------------------------------------------------------

def write_checkpoint(path: str, header: dict, arrays: dict, *, before_rename=None) -> str:
    """Writes a checkpoint: `header` as JSON plus the named arrays, in one .npz, atomically."""
    import numpy as np
    text = np.array(json.dumps(header, default=_json_default))
    fix = (f"the previous {os.path.basename(path)} is kept; free some space and continue with --resume, or "
           "choose another --workdir")
    return atomic_write(path, lambda f: np.savez(f, header=text, **arrays), before_rename=before_rename, fix=fix)


def _unreadable(path: str, why: str) -> RunDirError:
    return RunDirError(f"--resume: cannot read the checkpoint {path}: {why}; delete it to start the run over, or "
                       "choose another --workdir")


_ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive
_HEADER_KEYS = {"epoch": int, "passes": int, "history": list, "config": dict, "names": list}


def read_checkpoint(path: str) -> tuple[dict, dict]:
    """(header, {name: array}) of a checkpoint written by write_checkpoint, read completely; a one-line
    RunDirError naming the file for anything that is not such a checkpoint."""
    import numpy as np
    if os.path.isdir(path):
        raise _unreadable(path, "it is a folder, not a file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        data = np.load(path, allow_pickle=False) if magic.startswith(_ZIP_MAGIC) else None
    except OSError as err:
        raise _unreadable(path, reason(err, path)) from None
    except (EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise _unreadable(path, f"truncated or corrupt ({_short(err)})") from None
    if data is None:
        raise _unreadable(path, "the file is empty" if not magic else
                          "it is a single .npy array, not a checkpoint .npz" if magic.startswith(b"\x93NUMPY") else
                          "it is not an .npz file")
    try:
        with data:
            header = json.loads(str(data["header"]))
            arrays = {name: data[name] for name in data.files if name != "header"}
    except KeyError:
        raise _unreadable(path, "it has no checkpoint header (not written by tp_keras)") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise _unreadable(path, f"truncated or corrupt ({_short(err)})") from None
    if not isinstance(header, dict) or any(not isinstance(header.get(k), t) for k, t in _HEADER_KEYS.items()):
        raise _unreadable(path, "its header is not a tp_keras checkpoint header")
    missing = [f"v{i}" for i in range(len(header["names"])) if f"v{i}" not in arrays]
    if missing:
        raise _unreadable(path, f"it lacks the arrays {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
    return header, arrays


def _short(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."
