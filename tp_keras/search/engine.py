"""The engine under `python -m tp_keras.search` and `python -m tp_keras.sweep`: an Optuna study used as a queue
of named runs, worked off by local worker processes on one machine or on many.

Storage. A study lives in a database: by default a SQLite file, `<out>/study.db`; a PostgreSQL or MySQL URL
(`--storage=postgresql://user:password@host/db`) lets any number of machines join the same study — the same
command started on each of them is the whole multi-machine setup.

Runs. Each planned run is an enqueued trial whose user attribute "run" names its folder under --out
(`trial_0003` for a search, `seed_4` for a seed sweep). Worker processes (`tp_keras.search.worker`) pop queued
trials one at a time (Optuna pops a waiting trial atomically) and train them in-process; the folder is a normal
launcher workdir (config.json, metrics.jsonl, summary.json, checkpoint.npz, launch.log).

Nothing lost, nothing run twice:
  - every worker keeps a heartbeat on its trial in the database (RDBStorage heartbeat_interval); a trial whose
    heartbeat is older than the grace period (its worker was killed, its machine lost) is failed by the next
    process that looks, and Optuna's RetryHeartbeatStaleTrialCallback enqueues a retry with the same parameters,
    user attributes — hence the same run folder — and reported epochs. The retry resumes from the run's last
    epoch checkpoint when the folder is reachable (same machine, or a shared --out), else starts it afresh;
  - a driver fails and re-queues the trial of one of its own workers that died (it sees the exit status), and on
    start does the same for the trials of dead processes of this host; a search driver also re-queues trials that
    failed or were interrupted (Ctrl-C) in an earlier invocation;
  - a trial yields at once, without running (state FAIL, user attribute "surplus"), when another trial of the same
    run with a lower number is running or (in a search) has finished, and when it carries no run at all (Optuna
    makes a fresh trial if the queue emptied between a worker's look and its pop).
"""
from __future__ import annotations

import ctypes
import dataclasses
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings

import optuna
from optuna.trial import TrialState

from tp_keras.run.rundir import fix_for, reason

RUN = "run"            # the run folder's name under --out; a retry inherits it
SURPLUS = "surplus"    # why a trial yielded without running
WORKER = "worker"      # host:pid of the process that runs (or ran) the trial
ERROR = "error"        # one line: why the run failed
STATUS = "status"      # the run's status from its summary.json
SETTINGS = "tp_keras"  # study user attribute: what the study runs (kind, flags, space, pruner)
HOST = socket.gethostname()
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
with warnings.catch_warnings():  # experimental since Optuna 2.8, stable in use
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    RETRY = optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)
# Database driver module -> its package (SQLAlchemy 2.1 reads postgresql:// with psycopg 3, postgresql+psycopg2://
# with psycopg2).
_DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pymysql": "PyMySQL",
            "MySQLdb": "mysqlclient"}


class EngineError(ValueError):
    """A bad storage, study or setting; `str(err)` is one line naming the flag and the fix."""


def database_failure(err: BaseException) -> str | None:
    """The one-line message for an error of the study database met while running (a lost server connection, a
    locked SQLite file past its timeout), or None when `err` is something else."""
    import sqlalchemy.exc
    if isinstance(err, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)):
        return (f"--storage: the study database failed: {first_line(err)}; rerun the same command to continue "
                "(finished trials are kept)")
    return None


class Surplus(Exception):
    """Raised by a trial that yields without running (see the module docstring)."""


def quiet_optuna() -> None:
    """Our commands print one line per trial themselves; Optuna's per-trial log and its experimental-feature
    warnings (heartbeat, retry callback, matplotlib plots) would repeat or clutter them."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= 300 else line[:297] + "..."


# --- Storage and study ------------------------------------------------------------------------------------------

def default_storage(out: str) -> str:
    return "sqlite:///" + os.path.join(out, "study.db")


def shown(url: str) -> str:
    """The URL without its password, for messages and files."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str, heartbeat: int = 10, grace: int = 60) -> optuna.storages.RDBStorage:
    """The study database, with a heartbeat every `heartbeat` s and stale trials retried after `grace` s."""
    if url.startswith("sqlite:///"):
        folder = os.path.dirname(url[len("sqlite:///"):]) or "."
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise EngineError(f"--storage: cannot create the folder {folder} of {shown(url)}: {reason(err, folder)}; "
                              f"{fix_for(err, '--out (or --storage)')}") from None
        kwargs = {"connect_args": {"timeout": 60}}  # wait for another process's write instead of failing
    else:
        kwargs = {"pool_pre_ping": True}  # a server connection dropped during a long trial is reopened
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                                     grace_period=grace, heartbeat_stale_trial_callback=RETRY)
            break
        except ImportError as err:  # Optuna re-raises the driver's ModuleNotFoundError as an ImportError
            missing = next((e.name for e in (err, err.__cause__, err.__context__)
                            if isinstance(e, ModuleNotFoundError)), None)
            raise EngineError(f"--storage: {shown(url)} needs the database driver {missing or 'for its scheme'}: "
                              f"pip install {_DRIVERS.get(missing, missing or 'it')!r}") from None
        except Exception as err:
            # Two processes creating a new database at once collide on its version table (seen with SQLite): the
            # loser finds the tables made on its next try.
            if attempt == 4 or "UNIQUE constraint" not in str(err) and "already exists" not in str(err):
                raise EngineError(f"--storage: cannot open {shown(url)}: {first_line(err)} (check the URL, that "
                                  "the server runs and that the database exists)") from None
            time.sleep(0.5 * (attempt + 1))
    if url.startswith("sqlite"):
        _serialize_sqlite(storage.engine)
    return storage


def _serialize_sqlite(engine) -> None:
    """Makes every SQLite transaction take the write lock when it begins (BEGIN IMMEDIATE; SQLAlchemy's recipe for
    pysqlite). Optuna pops a queued trial by reading its state and then writing RUNNING, relying on SELECT ... FOR
    UPDATE, which SQLite ignores: two workers could pop (and train) the same trial — seen here with two workers.
    Serialized transactions make the pop atomic; the cost is that readers wait for writers, which a few workers
    doing a handful of small transactions per epoch do not notice."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # pysqlite would begin deferred transactions itself

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while the storage was created lack the hook


def _normal(settings: dict) -> dict:
    return json.loads(json.dumps(settings))


def _difference(old: dict, new: dict) -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list) and key == "flags":
            only_old = [f for f in a if f not in b]
            only_new = [f for f in b if f not in a]
            return (f"flags {' '.join(only_old) or '(none)'} where this command has "
                    f"{' '.join(only_new) or '(none)'}")
        return f"{key} = {json.dumps(a)} where this command has {json.dumps(b)}"
    return "the same settings"


def open_study(storage, name: str, settings: dict, direction: str) -> optuna.Study:
    """Creates the study or joins it; refuses to join one made with other settings."""
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
    except Exception as err:
        raise EngineError(f"--study: cannot create or load {name!r}: {first_line(err)}") from None
    settings = _normal(settings)
    existing = study.user_attrs.get(SETTINGS)
    if existing is None:
        study.set_user_attr(SETTINGS, settings)
    elif existing != settings:
        raise EngineError(f"--study: study {name!r} in {shown(storage.url)} was made with "
                          f"{_difference(existing, settings)}; rerun it with its own settings, or start another "
                          "--study (or --out)")
    return study


def load_study(storage, name: str, **kwargs) -> optuna.Study:
    try:
        study = optuna.load_study(study_name=name, storage=storage, **kwargs)
    except KeyError:
        raise EngineError(f"--study: there is no study {name!r} in {shown(storage.url)}; start it first (without "
                          "--report_only), or name the right --study/--storage") from None
    if SETTINGS not in study.user_attrs:
        raise EngineError(f"--study: {name!r} in {shown(storage.url)} was not made by tp_keras; use another --study")
    return study


# --- The queue --------------------------------------------------------------------------------------------------

def all_trials(study, states=None) -> list:
    return study.get_trials(deepcopy=False, states=states)


def is_surplus(trial) -> bool:
    return bool(trial.user_attrs.get(SURPLUS))


def enqueue(study, run: str, params: dict | None = None, attrs: dict | None = None) -> None:
    study.enqueue_trial(params or {}, user_attrs={RUN: run, **(attrs or {})})


def busy_runs(study, states) -> dict:
    """{run name: trial} of the non-surplus trials in `states`."""
    return {t.user_attrs.get(RUN): t for t in all_trials(study, states) if not is_surplus(t)}


def requeue_failed(study) -> list:
    """Re-queues (as Optuna's retry: same parameters, attributes and run folder) every failed trial that has not
    been retried yet and whose run has no other live or finished trial; returns them."""
    trials = all_trials(study)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    live = {t.user_attrs.get(RUN) for t in trials if t.state != TrialState.FAIL and not is_surplus(t)}
    failed = [t for t in trials if t.state == TrialState.FAIL and not is_surplus(t) and t.user_attrs.get(RUN)
              and t.number not in retried and t.user_attrs[RUN] not in live]
    for trial in failed:
        RETRY(study, trial)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(study, dead_pids=None) -> list[int]:
    """Fails and re-queues the running trials of dead worker processes of this host (`dead_pids`, or every pid
    that no longer exists); returns their numbers. Other hosts' trials are left to the heartbeat."""
    recovered = []
    for trial in all_trials(study, (TrialState.RUNNING,)):
        host, _, pid = (trial.user_attrs.get(WORKER) or "").rpartition(":")
        if host != HOST or not pid.isdigit():
            continue
        dead = int(pid) in dead_pids if dead_pids is not None else not _alive(int(pid))
        if not dead:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        except Exception:  # finished or failed by another process meanwhile
            continue
        RETRY(study, trial)
        recovered.append(trial.number)
    return recovered


def yield_reason(study, number: int, run: str | None, finished_counts: bool) -> str | None:
    """Why trial `number` must not run `run` (None: it may)."""
    if not run:
        return "no run attached: the queue was empty when it started"
    for trial in all_trials(study):
        if trial.number == number or is_surplus(trial) or trial.user_attrs.get(RUN) != run:
            continue
        if trial.state == TrialState.RUNNING and trial.number < number:
            return f"trial {trial.number} is running {run}"
        if finished_counts and trial.state in FINISHED:
            return f"trial {trial.number} already ran {run}"
    return None


# --- Worker processes -------------------------------------------------------------------------------------------

def worker_argv(storage_url: str, study: str, out: str, *, data_dir=None, runner=None, trials_per_worker=10,
                heartbeat=10, grace=60, sampler_seed=None):
    """f(slot, serial) -> the command line of a worker process."""
    def argv(slot: int, serial: int) -> list[str]:
        args = [sys.executable, "-m", "tp_keras.search.worker", f"--storage={storage_url}", f"--study={study}",
                f"--out={out}", f"--trials={trials_per_worker}", f"--heartbeat={heartbeat}", f"--grace={grace}"]
        if data_dir:
            args.append(f"--data_dir={data_dir}")
        if runner:
            args.append(f"--runner={runner}")
        if sampler_seed is not None:  # distinct per worker start, or every worker would draw the same points
            args.append(f"--sampler_seed={sampler_seed + serial}")
        return args
    return argv


def last_error_line(log_path: str, offset: int, returncode: int) -> str:
    """A dead process's last line that says what went wrong: 'error: ...', a traceback's last line, or the signal."""
    try:
        with open(log_path, errors="replace") as f:
            f.seek(offset)
            lines = [line.strip() for line in f.read().splitlines() if line.strip()]
    except OSError:
        lines = []
    ours = [line for line in lines if line.startswith("error:")]
    raised = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Exception", "Interrupt"))]
    line = (ours or raised or (lines if returncode > 0 else []) or [""])[-1]
    if returncode < 0:  # killed by a signal, e.g. SIGKILL from the out-of-memory killer
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        line = f"killed by {name}" + (f"; last output: {line}" if line else "")
    line = line or f"no output (exit status {returncode})"
    return line if len(line) <= 300 else line[:297] + "..."


PR_SET_PDEATHSIG = 1  # linux/prctl.h
_libc = None


def _load_libc():
    """libc, loaded in the driver (a child between fork and exec must not load libraries); None off Linux."""
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    return _libc or None


def die_with_parent(parent: int):
    """A subprocess preexec_fn: the child gets SIGTERM when its parent (the driver, pid `parent`) dies, even by
    SIGKILL (Linux prctl PR_SET_PDEATHSIG); and exits at once if the parent already died between fork and here.
    Elsewhere the worker's check of its parent between trials (worker.work) is the only guard."""
    libc = _load_libc()

    def preexec():
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    return preexec


@dataclasses.dataclass
class _Worker:
    proc: subprocess.Popen
    log: object
    log_path: str
    offset: int


class Driver:
    """Keeps up to `workers` local worker processes on the study while it has queued trials, and waits until no
    trial of the study runs anywhere (other machines included), failing stale ones so that they are retried.

    Reports through callbacks: on_trial(trial) when a (non-surplus) trial starts or ends, on_worker_failure(slot,
    returncode, line, retried, log_path) when a worker dies. A worker that exits 0 (queue empty, or its trial
    quota reached: a fresh process bounds TensorFlow's memory) may be started again; one that failed is not."""

    def __init__(self, study, argv, *, workers: int, log_dir: str, gpus=(), on_trial=None, on_worker_failure=None,
                 poll: float = 1.0):
        self.study, self.argv, self.workers, self.log_dir, self.gpus = study, argv, workers, log_dir, list(gpus)
        self.on_trial = on_trial or (lambda trial: None)
        self.on_worker_failure = on_worker_failure or (lambda *a: None)
        self.poll = poll
        self.procs: dict[int, _Worker] = {}
        self.failed_slots: set[int] = set()
        self.states = {t.number: t.state for t in all_trials(study)}  # what was there before is not reported
        self.serial = 0
        self.interrupted = False
        self.stop_signal: int | None = None  # the signal that stopped run() (SIGINT or SIGTERM), if one did

    def _start(self, slot: int) -> None:
        os.makedirs(self.log_dir, exist_ok=True)
        log_path = os.path.join(self.log_dir, f"worker_{HOST}_{slot}.log")
        log = open(log_path, "a")
        argv = self.argv(slot, self.serial)
        log.write(f"=== {datetime.datetime.now().isoformat(timespec='seconds')}: {' '.join(argv)}\n")
        log.flush()
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        if self.workers > 1:
            env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # several workers share a GPU
        # A worker dies with its driver (kill -9 included): else it would go on taking trials, and a rerun of the
        # command would run more workers than --workers.
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=die_with_parent(os.getpid()))
        self.procs[slot] = _Worker(proc, log, log_path, log.tell())
        self.serial += 1

    def _reap(self) -> None:
        for slot, worker in list(self.procs.items()):
            code = worker.proc.poll()
            if code is None:
                continue
            worker.log.close()
            del self.procs[slot]
            if code != 0:
                self.failed_slots.add(slot)
                retried = recover(self.study, dead_pids={worker.proc.pid})
                if not self.interrupted:
                    self.on_worker_failure(slot, code, last_error_line(worker.log_path, worker.offset, code),
                                           retried, worker.log_path)

    def _report(self) -> list:
        trials = all_trials(self.study)
        for trial in trials:
            if self.states.get(trial.number) == trial.state:
                continue
            self.states[trial.number] = trial.state
            if not is_surplus(trial) and trial.state != TrialState.WAITING:
                self.on_trial(trial)
        return trials

    def run(self) -> bool:
        """Works the queue off; returns True if stopped by Ctrl-C or SIGTERM (which one: `stop_signal`; the command
        exits with 128 + its number, as the launcher does). Those signals only set a flag here:
        raised as KeyboardInterrupt in the middle of a database call, they leave the SQLAlchemy session unusable."""
        stop = []
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, lambda signum, frame: stop.append(signum))
            except ValueError:  # not the main thread: the caller handles signals
                pass
        try:
            while not stop:
                self._reap()
                trials = self._report()
                waiting = sum(t.state == TrialState.WAITING for t in trials)
                running = sum(t.state == TrialState.RUNNING for t in trials)
                idle = [s for s in range(self.workers) if s not in self.failed_slots and s not in self.procs]
                for slot in idle[:waiting]:
                    self._start(slot)
                if not self.procs:
                    if not running and (not waiting or not idle):
                        break  # done, or every worker failed
                    optuna.storages.fail_stale_trials(self.study)  # another machine's, or an unrecorded worker's
                time.sleep(self.poll)
            if stop:
                self.interrupted = True
                self.stop_signal = stop[0]
                self._stop()
            self._reap()
            self._report()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.interrupted

    def _stop(self) -> None:
        """Interrupts the workers like Ctrl-C (each trial keeps its finished epochs), kills any left after 60 s."""
        for worker in self.procs.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGINT)
        deadline = time.time() + 60
        for worker in self.procs.values():
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
