"""Every command: bad settings are refused before any work, in one line naming the fix (`error: <what>;
<fix>`, no traceback, exit status 2); SIGTERM ends a command with 143 and the launcher's line; worker processes die
with their parent; a rerun of a search with --sampler_seed does not replay the draws of its first run.

The catalogue style of tests/test_bad_inputs.py: absl commands run in-process (main() with captured stderr), the
search's refusals too (cli.main); what needs a process of its own (SIGKILL, SIGTERM) runs as a subprocess, with
tests/fake_runner.py as the trainer (no TensorFlow, a trial in a second or less).
"""
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import wait_for
from test_bad_inputs import _one_line, command  # noqa: F401  (command: the in-process absl fixture)
from tp_keras.paper import damping_search
from tp_keras.run import launch

optuna = pytest.importorskip("optuna")

import fake_runner  # noqa: E402  (tests/ is on sys.path)
from tp_keras.search import cli, engine, space, worker  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
BINARY = bytes(range(128, 256)) * 2  # not UTF-8 from its first byte (0x80)


# --- Flag errors of every absl command (run/cli.parse_flags_one_line) -------------------------------------------

@pytest.mark.parametrize("main", [launch.main, damping_search.main], ids=["launch", "damping_search"])
def test_binary_flagfile_is_one_line(command, tmp_path, main):
    """Every absl command parses its flags with run/cli.parse_flags_one_line (here the launcher and damping_search)."""
    path = tmp_path / "cell.flags"
    path.write_bytes(BINARY)
    _one_line(*command(main, [f"--flagfile={path}"]),
              starts=f"--flagfile={path}: not a text file (byte 0x80 at position 0 is not UTF-8); name a flagfile "
                     "of --name=value lines, e.g. launch/")


def test_binary_flagfile_named_by_a_flagfile_is_the_one_named(command, tmp_path):
    inner = tmp_path / "inner.flags"
    inner.write_bytes(BINARY)
    outer = tmp_path / "outer.flags"
    outer.write_text(f"--method=bp\n--flagfile={inner}\n")
    _one_line(*command(launch.main, [f"--flagfile={outer}"]), starts=f"--flagfile={inner}: not a text file")


@pytest.mark.parametrize("kind, starts", [
    ("missing", "--flagfile={path}: no such file (ENOENT); check the path (the paper's cells are launch/*.flags"),
    ("folder", "--flagfile={path} is a folder; name a flagfile (a file of --name=value lines), e.g. launch/"),
])
def test_missing_or_folder_flagfile_names_the_fix(command, tmp_path, kind, starts):
    path = tmp_path / "cell.flags"
    if kind == "folder":
        path.mkdir()
    _one_line(*command(launch.main, [f"--flagfile={path}"]), starts=starts.format(path=path))


@pytest.mark.parametrize("flag, starts", [
    ("--bogusxyz=1", "--bogusxyz: unknown flag; check its spelling (--helpfull lists every flag of this command)"),
    ("--lrr=1", "--lrr: unknown flag; did you mean --lr or --lr_fb or --lr_min or --lr_schedule or "
                "--lr_schedule_epochs? (--helpfull lists every flag)"),
])
def test_unknown_flag_names_the_fix(command, flag, starts):
    _one_line(*command(launch.main, [flag]), starts=starts)


# --- The search's refusals: one line, exit status 2, before any trial ---------------------------------------------

@pytest.fixture
def search(tmp_path, monkeypatch, capsys):
    """(run(argv) -> (exit status, stderr lines), calls made by fake trials, the base flagfile, a space file)."""
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([REPO, TESTS]))
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    for name in ("FAKE_EPOCH_SECONDS", "FAKE_FAIL", "FAKE_KILL_AFTER", "FAKE_HANG_AFTER", "FAKE_DIVERGE"):
        monkeypatch.delenv(name, raising=False)
    flagfile = tmp_path / "cell.flags"
    flagfile.write_text("--method=ddtp_linear\n--dataset=mnist\n--cell=cell\n")
    space_path = tmp_path / "tiny.space"
    space_path.write_text("lr log 1e-6 1e-2\ntarget_stepsize log 0.01 0.3\n")

    def run(argv):
        try:
            status = cli.main(["--runner=fake_runner", *argv])
        except SystemExit as exited:
            status = exited.code
        return status, [line for line in capsys.readouterr().err.splitlines() if line.strip()]

    def made():
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return run, made, str(flagfile), str(space_path)


@pytest.mark.parametrize("kind, starts", [
    ("binary", "--flagfile: {path}: not a text file (byte 0x80 at position 0 is not UTF-8)"),
    ("missing", "--flagfile: {path}: no such file (ENOENT); check the path"),
    ("folder", "--flagfile: {path} is a folder; name a flagfile"),
])
def test_search_unreadable_flagfile_is_one_line(search, tmp_path, kind, starts):
    run, made, _, space_path = search
    path = tmp_path / "bad.flags"
    if kind == "binary":
        path.write_bytes(BINARY)
    elif kind == "folder":
        path.mkdir()
    _one_line(*run([f"--flagfile={path}", f"--space={space_path}", f"--out={tmp_path / 'out'}"]),
              starts=starts.format(path=path))
    assert not (tmp_path / "out").exists() and not made()


@pytest.mark.parametrize("under", [False, True])
def test_search_out_naming_a_file_is_one_line(search, tmp_path, under):
    """--out that is a file, or lies under one: refused before the data are loaded and before any study exists
    (was a FileExistsError or NotADirectoryError traceback from creating study.db's folder)."""
    run, made, flagfile, space_path = search
    blocker = tmp_path / "results"
    blocker.write_text("my notes\n")
    out = blocker / "sub" if under else blocker
    named = f"{blocker} (in --out={out})" if under else f"{out}"
    _one_line(*run([f"--flagfile={flagfile}", f"--space={space_path}", f"--out={out}"]),
              starts=f"--out: {named} is a file, not a folder; choose another --out or move the file away")
    assert blocker.read_text() == "my notes\n" and not made()


def test_engine_storage_folder_that_is_a_file_is_one_line(tmp_path):
    """The same for every command on the engine (the sweep's --out, a --storage path): one EngineError line."""
    blocker = tmp_path / "results"
    blocker.write_text("")
    with pytest.raises(engine.EngineError, match=r"^--storage: cannot create the folder .*results of sqlite:///.*: "
                                                 r".*results is a file, not a folder \(EEXIST\); choose another "
                                                 r"--out \(or --storage\) or move the file away$"):
        engine.open_storage(engine.default_storage(str(blocker)))


@pytest.mark.parametrize("line, starts", [
    ("beta1 choice 0.9 1.5", "{space}: beta1: the launcher refuses the choice 1.5 (--beta1: 1.5 is outside [0, 1)"),
    ("num_hidden choice 2 2.5", "{space}: num_hidden: the launcher refuses the choice 2.5 (--num_hidden: "),
    ("sigma float -1 0.3", "{space}: sigma: the launcher refuses the float range's end -1 (--sigma: "),
])
def test_search_space_value_the_launcher_refuses_stops_before_the_first_trial(search, tmp_path, line, starts):
    """Was: every trial that drew the value failed, exit status 1, empty stderr."""
    run, made, flagfile, _ = search
    space_path = tmp_path / "bad.space"
    space_path.write_text(f"lr log 1e-6 1e-2\n{line}\n")
    message = _one_line(*run([f"--flagfile={flagfile}", f"--space={space_path}", f"--out={tmp_path / 'out'}"]),
                        starts=starts.format(space=space_path))
    assert message.endswith("; fix or remove it in the space file")
    assert not (tmp_path / "out").exists() and not made()


def test_every_shipped_space_passes_the_launchers_checks():
    """The check refuses nothing the shipped spaces give: each launch/spaces/<method>.space with its method."""
    from tp_keras.search import runs
    for name in sorted(os.listdir(os.path.join(REPO, "launch", "spaces"))):
        method = name.removesuffix(".space")
        params = space.load(os.path.join(REPO, "launch", "spaces", name), searchable=launch._OVERRIDABLE)
        space.check_values(params, lambda flag, value: runs.config_from_args(
            [f"--method={method}"] + runs.as_flags({flag: value})), name)


# --- The sampler's seed: a rerun does not replay earlier draws; a fresh search is reproducible --------------------

def _params_by_run(out):
    study = engine.load_study(engine.open_storage(engine.default_storage(str(out))), os.path.basename(out))
    ended = [t for t in study.trials if t.state in engine.FINISHED]
    return {t.user_attrs["run"]: t.params for t in ended}


@pytest.mark.slow
def test_rerun_with_sampler_seed_draws_new_values_and_a_fresh_search_repeats_its_own(search, tmp_path):
    """An extended rerun (--trials=2, then 4, the same --sampler_seed) proposes values none of the study's trials
    had (a rerun's worker seeded as the first run's would replay its draws: TPE's first draws are random, so
    trial 2 would get trial 0's values); a fresh search with the same seed draws the first run's values again."""
    run, made, flagfile, space_path = search
    base = [f"--flagfile={flagfile}", f"--space={space_path}", "--sampler_seed=7", "--epochs=1"]
    first = tmp_path / "first"
    assert run(base + [f"--out={first}", "--trials=2"]) == (0, [])
    before = _params_by_run(first)
    assert run(base + [f"--out={first}", "--trials=4"]) == (0, [])
    after = _params_by_run(first)
    assert {k: after[k] for k in before} == before and len(after) == 4
    for new in ("trial_0002", "trial_0003"):
        for old in before.values():
            assert all(after[new][name] != value for name, value in old.items()), (after[new], old)
    fresh = tmp_path / "fresh"
    assert run(base + [f"--out={fresh}", "--trials=2"]) == (0, [])
    assert _params_by_run(fresh) == before


def test_sampler_seed_is_the_given_one_on_a_fresh_study_and_another_once_trials_started(tmp_path):
    url = engine.default_storage(str(tmp_path))
    study = engine.open_study(engine.open_storage(url), "s", {"kind": "search"}, "maximize")
    assert worker.sampler_seed(None, study) is None
    engine.enqueue(study, "trial_0000")
    assert worker.sampler_seed(7, study) == 7  # queued only: nothing drawn yet
    with pytest.warns(UserWarning, match="Heartbeat"):  # ask() outside optimize(): no heartbeat, as intended here
        study.ask()  # pops trial_0000
    seeds = {worker.sampler_seed(s, study) for s in (7, 8)}
    assert 7 not in seeds and 8 not in seeds and len(seeds) == 2
    assert worker.sampler_seed(7, study) == worker.sampler_seed(7, study)


# --- Processes: workers die with their parent; SIGTERM is 143 and one line ------------------------------------------

def _alive(pid):
    """True while `pid` runs (a zombie, dead but not reaped by a parent that does not reap, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def test_worker_takes_no_trial_once_its_parent_is_gone(tmp_path, monkeypatch):
    """The worker's own check between trials (the guard off Linux, where no parent-death signal exists): with its
    recorded parent gone it takes no queued trial; with its parent there it does."""
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("FAKE_EPOCH_SECONDS", raising=False)
    url = engine.default_storage(str(tmp_path))
    settings = {"kind": "seeds"}
    study = engine.open_study(engine.open_storage(url), "s", settings, "maximize")
    for seed in (0, 1):
        engine.enqueue(study, f"seed_{seed}", {"seed": seed}, {"seed": seed, "args": ["--method=bp", "--epochs=1"]})
    objective = worker.Objective(study, str(tmp_path), fake_runner)
    assert worker.work(study, objective, 10, parent=os.getppid() + 1) == 0  # recorded parent != the parent now
    assert not (tmp_path / "calls.jsonl").exists()
    assert worker.work(study, objective, 1, parent=os.getppid()) == 1
    assert len((tmp_path / "calls.jsonl").read_text().splitlines()) == 1


def _command(kind, tmp_path, flagfile, space_path, *more):
    if kind == "search":
        return [sys.executable, "-m", "tp_keras.search", f"--flagfile={flagfile}", f"--space={space_path}",
                f"--out={tmp_path / 'out'}", "--runner=fake_runner", "--trials=3", "--noearly_stop", "--epochs=20",
                *more]
    return [sys.executable, "-m", "tp_keras.sweep", f"--flagfile={flagfile}", f"--out={tmp_path / 'out'}",
            "--seeds=3", "--runner=fake_runner", *more, "--", "--epochs=20"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["search", "sweep"])
def test_worker_dies_with_its_killed_parent_and_the_rerun_finishes_its_trial(search, tmp_path, kind):
    """kill -9 of the command's main process: its worker is gone within 10 s (an orphaned worker would go on training
    and take the next trials, beside the rerun's own workers); the rerun resumes the killed worker's trial from its
    checkpoint and ends every run, none of them by the old worker."""
    _, made, flagfile, space_path = search
    command = _command(kind, tmp_path, flagfile, space_path)
    main = subprocess.Popen(command, env=dict(os.environ, FAKE_EPOCH_SECONDS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        first = wait_for(lambda: made(), "the first trial")[0]
        wait_for(lambda: (tmp_path / "out" / first["workdir"] / "checkpoint.json").exists(), "its first epoch")
        main.kill()
        main.wait()
        wait_for(lambda: not _alive(first["pid"]), "the worker's end after its parent's (it outlived it by 10 s)",
                 timeout=10, poll=0.05)
    finally:
        try:
            os.killpg(main.pid, signal.SIGKILL)  # whatever is left of its session (nothing, when the test passes)
        except ProcessLookupError:
            pass
    again = subprocess.run(command, env=dict(os.environ, FAKE_EPOCH_SECONDS="0"), capture_output=True, text=True,
                           timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [c for c in made() if c["pid"] == first["pid"]] == [first]  # the old worker took no other trial
    names = [f"trial_{i:04d}" for i in range(3)] if kind == "search" else [f"seed_{i}" for i in range(3)]
    for name in names:
        assert json.loads((tmp_path / "out" / name / "summary.json").read_text())["status"] == "finished", name
    assert "resuming from" in (tmp_path / "out" / first["workdir"] / fake_runner.LOG).read_text()


@pytest.mark.slow
def test_sigterm_ends_a_search_with_143_and_one_line_and_the_rerun_draws_new_values(search, tmp_path):
    """SIGTERM to the search: its worker stops, stderr is the launcher's one line, exit status 143 (was 130 with an
    empty stderr). The rerun (same --sampler_seed) retries the interrupted trial with its values and draws values
    for the others that no earlier trial had."""
    _, made, flagfile, space_path = search
    command = _command("search", tmp_path, flagfile, space_path, "--sampler_seed=3")
    main = subprocess.Popen(command, env=dict(os.environ, FAKE_EPOCH_SECONDS="30"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        first = wait_for(lambda: made(), "the first trial")[0]
        main.terminate()
        out, err = main.communicate(timeout=90)
    finally:
        try:
            os.killpg(main.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert main.returncode == 143, out + err
    assert err == ("error: interrupted by SIGTERM; rerun the same command to resume (finished trials are kept, "
                   "interrupted ones resume from their last epoch)\n"), err
    assert not _alive(first["pid"])
    study = engine.load_study(engine.open_storage(engine.default_storage(str(tmp_path / "out"))), "out")
    drawn = [t.params for t in study.trials if t.params]
    assert len(drawn) == 1
    again = subprocess.run(command, env=dict(os.environ, FAKE_EPOCH_SECONDS="0"), capture_output=True, text=True,
                           timeout=240)
    assert again.returncode == 0 and again.stderr == "", again.stdout + again.stderr
    params = _params_by_run(tmp_path / "out")
    assert params[first["workdir"]] == drawn[0]  # the retry keeps its values
    for run_name, values in params.items():
        if run_name != first["workdir"]:
            assert all(values[name] != value for name, value in drawn[0].items()), (values, drawn[0])
