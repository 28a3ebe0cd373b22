"""Hyper-parameter search on Optuna (tp_keras.search): space files, flags, the engine's queue, pruning, results,
refusals, and end to end with worker processes (tests/fake_runner.py trains nothing; one test trains for real)."""
import csv
import json
import math
import os
import signal
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

import fake_runner  # noqa: E402  (tests/ is on sys.path)
from conftest import wait_for  # noqa: E402
from test_bad_inputs import command  # noqa: E402,F401  (the in-process absl fixture)
from tp_keras.core.rules import RULES, get_rule  # noqa: E402
from tp_keras.reference import configs as paper_configs  # noqa: E402
from tp_keras.run import faults, launch  # noqa: E402
from tp_keras.run.config import Config, ConfigError  # noqa: E402
from tp_keras.search import cli, engine, results, runs, space, worker  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
SPACES = os.path.join(REPO, "launch", "spaces")
TINY_SPACE = "lr log 1e-6 1e-2\ntarget_stepsize log 0.01 0.3\n"


# --- Space files ------------------------------------------------------------------------------------------------

def test_every_method_has_a_space_that_holds_its_published_values():
    """Each launch/spaces/<method>.space parses with the launcher's flags, suits its method, and its ranges hold
    every value the reference published for the method (its MLP table configs; the MNIST launcher default for tp
    and gnt, which the paper did not tune)."""
    for method in RULES:
        params = space.load(os.path.join(SPACES, f"{method}.space"), searchable=launch._OVERRIDABLE)
        space.check_method(params, get_rule(method))
        cells = [c for c in paper_configs.FINAL_CONFIGS.values()
                 if c["method"] == method and c["architecture"] == "mlp"]
        published = cells or [vars(Config.paper(method))]
        for p in params:
            for cell in published:
                assert p.contains(cell[p.name]), (method, p, cell[p.name])
        names = {p.name for p in params}
        assert "lr" in names and "epsilon" in names and "beta1" in names
        assert ("lr_fb" in names and "sigma" in names) == get_rule(method).trains_feedback, method
    assert not [f for f in os.listdir(SPACES) if f[:-len(".space")] not in RULES]


@pytest.mark.parametrize("text, message", [
    ("lr lognormal 1 2\n", "KIND one of log, float, int, choice"),
    ("lr log 1e-3\n", "log takes LOW HIGH"),
    ("lr log 1e-2 1e-3\n", "LOW < HIGH"),
    ("lr log 0 1e-3\n", "a log range needs LOW > 0"),
    ("lr log 1e-6 1e-3\nlr log 1e-6 1e-3\n", "listed twice"),
    ("learning_rate log 1e-6 1e-3\n", "not a launcher hyper-parameter"),
    ("beta1 choice 0.9 fast\n", "'fast' is not a number"),
    ("# only a comment\n", "no parameters"),
])
def test_space_errors_are_one_line(text, message):
    with pytest.raises(space.SpaceError) as err:
        space.parse(text, "my.space", searchable=launch._OVERRIDABLE)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("my.space")


def test_space_refuses_parameters_the_method_ignores():
    params = space.parse("lr log 1e-5 1e-2\nsigma log 0.01 0.3\n")
    with pytest.raises(space.SpaceError, match="bp does not train feedback weights"):
        space.check_method(params, get_rule("bp"))
    with pytest.raises(space.SpaceError, match="propagates no targets"):
        space.check_method(space.parse("target_stepsize log 0.01 1\n"), get_rule("bp"))
    space.check_method(params, get_rule("ddtp_linear"))


def test_drawn_values_reach_the_config_exactly():
    """What a trial draws becomes launcher flags and comes back as the same float (repr round trip)."""
    params = space.load(os.path.join(SPACES, "ddtp_linear.space"), searchable=launch._OVERRIDABLE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(3):
        values = space.suggest(study.ask(), params)
        config = runs.config_from_args(["--method=ddtp_linear"] + runs.as_flags(values))
        assert {k: getattr(config, k) for k in values} == values


def test_merge_flags_and_launcher_flag_checks():
    merged = runs.merge_flags(["--method=dtp", "--lr=1", "--prune_early"], ["--lr=2", "--noprune_early"])
    assert merged == ["--method=dtp", "--lr=2", "--noprune_early"]
    for args, message in ((["--foo=1"], "--foo: not a launcher flag"), (["--workdir=x"], "its own folder"),
                          (["--strategy=mirrored"], "one device"), (["lr=1"], "unexpected argument")):
        with pytest.raises(ConfigError, match=message):
            runs.check_flags(args)
    with pytest.raises(ConfigError, match="--lr: could not convert"):
        runs.config_from_args(["--lr=abc"])
    assert runs.without_data_dir(["--a=1", "--data_dir=/d", "--b=2"]) == (["--a=1", "--b=2"], "/d")


# --- The queue and the objective, in this process ------------------------------------------------------------------

def _study(tmp_path, *, pruner="median", early_stop=True, text=TINY_SPACE, flags=("--method=ddtp_linear",)):
    url = engine.default_storage(str(tmp_path))
    settings = {"kind": "search", "flags": list(flags), "space": space.to_json(space.parse(text)),
                "pruner": pruner, "early_stop": early_stop, "dataset": "mnist"}
    study = engine.open_study(engine.open_storage(url), "s", settings, "maximize")
    return engine.load_study(engine.open_storage(url), "s", sampler=worker.make_sampler(settings, 0),
                             pruner=worker.make_pruner(settings)), url


@pytest.fixture
def calls(tmp_path, monkeypatch):
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(path))
    for name in ("FAKE_EPOCH_SECONDS", "FAKE_FAIL", "FAKE_KILL_AFTER", "FAKE_HANG_AFTER", "FAKE_DIVERGE"):
        monkeypatch.delenv(name, raising=False)

    def made():
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return made


@pytest.mark.slow
def test_median_pruner_stops_a_bad_trial(tmp_path, calls):
    study, _ = _study(tmp_path)
    for i in range(5):  # five good trials (lr 1e-4: fake validation accuracy 0.9 + epoch/100)
        engine.enqueue(study, f"trial_{i:04d}", {"lr": 1e-4, "target_stepsize": 0.05})
    engine.enqueue(study, "trial_0005", {"lr": 1e-6, "target_stepsize": 0.05})  # 0.7 + epoch/100
    objective = worker.Objective(study, str(tmp_path), fake_runner)
    assert worker.work(study, objective, 100) == 6
    bad = study.trials[5]
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 5 + [optuna.trial.TrialState.PRUNED]
    assert bad.last_step == 1 and bad.intermediate_values == {1: pytest.approx(0.71)}
    assert "below the median of earlier trials at that epoch (MedianPruner)" in bad.user_attrs["status"]
    summary = json.loads((tmp_path / "trial_0005" / "summary.json").read_text())
    assert summary["status"] == bad.user_attrs["status"] and summary["epochs_run"] == 1  # the run stopped there
    assert study.trials[0].value == pytest.approx(0.92) and study.trials[0].user_attrs["epoch_best_acc"] == 2


@pytest.mark.slow
def test_no_trial_is_pruned_after_its_last_epoch(tmp_path, calls):
    """Pruning saves the remaining epochs; after the last one the trial completes and counts for the best."""
    study, _ = _study(tmp_path, flags=("--method=ddtp_linear", "--epochs=1"))
    for i, lr in enumerate([1e-4] * 5 + [1e-6]):
        engine.enqueue(study, f"trial_{i:04d}", {"lr": lr, "target_stepsize": 0.05})
    worker.work(study, worker.Objective(study, str(tmp_path), fake_runner), 100)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.trials[5].value == pytest.approx(0.71)


@pytest.mark.slow
def test_early_stop_rule_prunes_from_epoch_6(tmp_path, calls):
    """The reference's rule on train accuracy (40 % on MNIST from epoch 6), as a pruner of its own."""
    study, _ = _study(tmp_path, pruner="none", flags=("--method=ddtp_linear", "--epochs=9"))
    engine.enqueue(study, "trial_0000", {"lr": 5e-5, "target_stepsize": 0.05})  # train acc 0.35
    engine.enqueue(study, "trial_0001", {"lr": 2e-4, "target_stepsize": 0.05})  # train acc 0.5
    worker.work(study, worker.Objective(study, str(tmp_path), fake_runner), 100)
    slow, fine = study.trials
    assert slow.state == optuna.trial.TrialState.PRUNED and slow.last_step == 6
    assert slow.user_attrs["status"] == ("pruned: train accuracy 0.350 after epoch 6 is below 0.40 (the reference's "
                                         "early-stop rule)")
    assert fine.state == optuna.trial.TrialState.COMPLETE and fine.user_attrs["epochs_run"] == 9


def test_queue_yields_duplicates_and_requeues_failures(tmp_path, calls):
    study, _ = _study(tmp_path)
    objective = worker.Objective(study, str(tmp_path), fake_runner)
    engine.enqueue(study, "trial_0000", {"lr": 1e-4, "target_stepsize": 0.05})
    engine.enqueue(study, "trial_0000", {"lr": 1e-3, "target_stepsize": 0.05})  # two drivers planned one run
    worker.work(study, objective, 100)
    first, second = study.trials
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert second.state == optuna.trial.TrialState.FAIL and second.params == {}  # yielded before drawing
    assert second.user_attrs["surplus"] == "trial 0 already ran trial_0000"
    study.optimize(objective, n_trials=1, catch=(Exception,))  # the queue is empty: Optuna makes a bare trial
    assert study.trials[-1].user_attrs["surplus"].startswith("no run attached")

    # A trial that failed (here: interrupted after 1 of 2 epochs) is re-queued once, with its parameters and run,
    # and resumes from the run's checkpoint.
    engine.enqueue(study, "trial_0001", {"lr": 3e-4, "target_stepsize": 0.1})
    real = fake_runner.run_training

    def interrupted(args, workdir, hook=None):
        real(args + ["--epochs=1"], workdir, hook)
        raise KeyboardInterrupt
    fake_runner.run_training = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            worker.work(study, objective, 1)
    finally:
        fake_runner.run_training = real
    failed = study.trials[-1]
    assert failed.state == optuna.trial.TrialState.FAIL and "surplus" not in failed.user_attrs
    assert [t.number for t in engine.requeue_failed(study)] == [failed.number]
    assert engine.requeue_failed(study) == []  # already retried
    worker.work(study, objective, 100)
    retry = study.trials[-1]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == failed.params
    assert retry.system_attrs["failed_trial"] == failed.number and retry.user_attrs["run"] == "trial_0001"
    assert "resuming from" in (tmp_path / "trial_0001" / "launch.log").read_text()
    val = 0.9 - abs(math.log10(3e-4) + 4) / 10  # the fake's validation accuracy before epoch / 100
    assert retry.user_attrs["epochs_run"] == 2  # epoch 1 inherited, epoch 2 reported by the retry:
    assert retry.intermediate_values == {1: pytest.approx(val + 0.01), 2: pytest.approx(val + 0.02)}


@pytest.mark.slow
def test_recover_requeues_the_trials_of_dead_workers_of_this_host(tmp_path):
    study, _ = _study(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    engine.enqueue(study, "trial_0000", {"lr": 1e-4, "target_stepsize": 0.05})
    engine.enqueue(study, "trial_0001", {"lr": 1e-4, "target_stepsize": 0.05})
    for number, pid in ((0, dead.pid), (1, os.getpid())):
        trial = study.ask()
        trial.set_user_attr(engine.WORKER, f"{engine.HOST}:{pid}")
        assert trial.number == number
    assert engine.recover(study) == [0]  # this process is alive: its trial stays
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING]
    assert study.trials[2].user_attrs["run"] == "trial_0000" and study.trials[2].system_attrs["failed_trial"] == 0


def test_results_best_flags_csv_and_figures(tmp_path):
    study, url = _study(tmp_path, flags=("--method=ddtp_linear", "--cell=c", "--lr=1", "--epochs=3"))
    study.set_user_attr(results.SOURCE, {"flagfile": "launch/c.flags", "space": "s.space", "extra": ["--epochs=3"]})
    dists = {"lr": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
             "target_stepsize": optuna.distributions.FloatDistribution(0.01, 0.3, log=True)}
    for number, (value, lr) in enumerate(((0.91, 1e-4), (0.95, 2e-4), (0.95, 3e-4), (0.5, 1e-5))):
        study.add_trial(optuna.trial.create_trial(
            value=value, params={"lr": lr, "target_stepsize": [0.05, 0.06, 0.07, 0.08][number]}, distributions=dists,
            user_attrs={"run": f"trial_{number:04d}", "epoch_best_acc": 2, "epochs_run": 3}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"surplus": "x"}))
    assert results.best_trial(study).number == 1  # 0.95 twice: the first
    assert results.write_results(study, str(tmp_path), url) == []
    text = (tmp_path / "best.flags").read_text()
    flags = [line for line in text.splitlines() if not line.startswith("#")]
    assert flags == ["--method=ddtp_linear", "--cell=s_best", "--lr=0.0002", "--epochs=3", "--target_stepsize=0.06"]
    header = " ".join(line[2:] for line in text.splitlines() if line.startswith("# "))
    assert "trial 1 (run folder trial_0001), validation accuracy 0.9500 at epoch 2 of 3" in header
    with open(tmp_path / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == [f"trial_{i:04d}" for i in range(4)]  # the surplus trial is left out
    assert float(rows[1]["val_acc_best"]) == 0.95 and float(rows[1]["lr"]) == 2e-4
    for name in ("history.png", "importance.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


# --- The command's refusals: one line, exit status 2, no worker started --------------------------------------------

@pytest.fixture
def flagfile(tmp_path):
    path = tmp_path / "cell.flags"
    path.write_text("# a cell\n--method=ddtp_linear\n--dataset=mnist\n--cell=cell\n")
    space_path = tmp_path / "tiny.space"
    space_path.write_text(TINY_SPACE)
    return str(path), str(space_path)


@pytest.mark.parametrize("extra, message", [
    (["--foo=1"], "error: --foo: not a launcher flag"),
    (["--workdir=x"], "error: --workdir: the engine gives every run its own folder under --out; drop it"),
    (["--no_val_set"], "error: --no_val_set: the search maximises validation accuracy"),
    (["--dataset=student_teacher"], "error: --dataset: the search maximises validation accuracy"),
    (["--lr=1e-4"], "error: --lr: is set on the command line and searched by"),
    (["--space=missing.space"], "error: --space: cannot read missing.space"),
    (["--storage=postgresql://me:secret@localhost:1/db"], "postgresql://me:***@localhost:1/db"),
    (["--trials=0"], "error: --trials must be >= 1"),
    (["--grace=5", "--heartbeat=5"], "error: --grace=5 must exceed --heartbeat=5"),
])
def test_search_refusals_are_one_line(flagfile, tmp_path, capsys, extra, message):
    path, space_path = flagfile
    argv = [f"--flagfile={path}", f"--out={tmp_path / 'out'}", "--runner=fake_runner"]
    if not any(a.startswith("--space=") for a in extra):
        argv.append(f"--space={space_path}")
    try:
        code = cli.main(argv + extra)
    except SystemExit as exited:  # a bad command line: the parser's one line
        code = exited.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert "secret" not in err
    assert not (tmp_path / "out" / "logs").exists()


def test_search_refuses_to_join_a_study_made_with_other_settings(flagfile, tmp_path, capsys, monkeypatch):
    path, space_path = flagfile
    out = tmp_path / "out"
    url = engine.default_storage(str(out))
    engine.open_study(engine.open_storage(url), "out", {"kind": "search", "flags": ["--method=ddtp_linear"]},
                      "maximize")
    assert cli.main([f"--flagfile={path}", f"--space={space_path}", f"--out={out}", "--runner=fake_runner",
                     "--epochs=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: --study: study 'out' in sqlite:///" in err
    assert "was made with" in err and "or start another --study (or --out)" in err
    monkeypatch.setenv("FAKE_PREPARE_FAIL", "--data_dir: no MNIST files in /nowhere")
    assert cli.main([f"--flagfile={path}", f"--space={space_path}", f"--out={tmp_path / 'o2'}",
                     "--runner=fake_runner"]) == 2
    assert capsys.readouterr().err == "error: --data_dir: no MNIST files in /nowhere\n"


# --- Worker processes --------------------------------------------------------------------------------------------

def _env(tmp_path, **more):
    return dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, TESTS]), FAKE_CALLS=str(tmp_path / "calls.jsonl"),
                **{k: str(v) for k, v in more.items()})


def _calls(tmp_path):
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _search(flagfile, out, *more):
    path, space_path = flagfile
    return [sys.executable, "-m", "tp_keras.search", f"--flagfile={path}", f"--space={space_path}", f"--out={out}",
            "--runner=fake_runner", *more]


@pytest.mark.slow
def test_two_drivers_share_one_sqlite_study_without_losing_or_repeating_a_trial(flagfile, tmp_path):
    """Two commands on one study (the multi-machine setup, on one machine), started together: both plan the same 8
    runs, 3 worker processes in all pop them, and every run is trained exactly once."""
    out = tmp_path / "out"
    env = _env(tmp_path, FAKE_EPOCH_SECONDS=0.2)
    procs = [subprocess.Popen(_search(flagfile, out, "--trials=8", f"--workers={k}", "--epochs=2"), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in (1, 2)]
    texts = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], texts
    runs_trained = [c["workdir"] for c in _calls(tmp_path)]
    assert sorted(runs_trained) == [f"trial_{i:04d}" for i in range(8)]  # none lost, none twice
    assert len({c["pid"] for c in _calls(tmp_path)}) >= 2
    study = engine.load_study(engine.open_storage(engine.default_storage(str(out))), "out")
    ended = [t.user_attrs["run"] for t in study.trials if t.state in engine.FINISHED]
    assert sorted(ended) == sorted(runs_trained)
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    with open(out / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == 8
    assert "runs ended (" in texts[0] and "8 of 8 runs ended" in texts[0] + texts[1]
    assert (out / "best.flags").exists() and (out / "history.png").exists()


@pytest.mark.slow
def test_a_lost_workers_trial_is_retried_after_its_heartbeat_stops_and_resumes(flagfile, tmp_path):
    """Command A's worker hangs in a trial after epoch 1; B joins; A (driver and worker) is killed like a lost
    machine. B fails A's trial once its heartbeat is older than the grace period, and the retry resumes the run
    from its epoch-1 checkpoint."""
    out = tmp_path / "out"
    timing = ["--trials=3", "--heartbeat=1", "--grace=3", "--epochs=2"]
    a = subprocess.Popen(_search(flagfile, out, *timing), env=_env(tmp_path, FAKE_HANG_AFTER=1),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    hung = wait_for(lambda: [c["workdir"] for c in _calls(tmp_path)
                             if (out / c["workdir"] / "metrics.jsonl").exists()], "A's first epoch")[0]
    b = subprocess.Popen(_search(flagfile, out, *timing), env=_env(tmp_path), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: len(_calls(tmp_path)) >= 2, "B's first trial")
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    text, _ = b.communicate(timeout=240)
    assert b.returncode == 0, text
    trained = [c["workdir"] for c in _calls(tmp_path)]
    assert sorted(trained) == sorted([f"trial_{i:04d}" for i in range(3)] + [hung])  # the hung run: twice
    assert "resuming from" in (out / hung / "launch.log").read_text()
    study = engine.load_study(engine.open_storage(engine.default_storage(str(out))), "out")
    lost = [t for t in study.trials if t.user_attrs.get("run") == hung and t.state == optuna.trial.TrialState.FAIL]
    retry = [t for t in study.trials if t.user_attrs.get("run") == hung and t.state in engine.FINISHED]
    assert len(lost) == 1 and len(retry) == 1 and retry[0].system_attrs["failed_trial"] == lost[0].number
    assert f"the retry of trial {lost[0].number})" in text and "3 of 3 runs ended" in text


@pytest.mark.slow
def test_real_search_resumes_a_killed_trial_and_its_best_flagfile_reproduces_it(command, mnist_dir, tmp_path):
    """Training for real: the worker is SIGKILLed after the first epoch of trial 0; the rerun resumes that run from
    its checkpoint; the launcher run from best.flags (in this process) ends with the best trial's numbers, bit for
    bit."""
    flagfile = tmp_path / "tiny.flags"
    flagfile.write_text("--method=ddtp_linear\n--dataset=mnist\n--precision=float32\n")
    space_path = tmp_path / "tiny.space"
    space_path.write_text("lr log 1e-3 3e-2\ntarget_stepsize log 0.03 0.3\n")
    out = tmp_path / "out"
    search = [sys.executable, "-m", "tp_keras.search", f"--flagfile={flagfile}", f"--space={space_path}",
              f"--out={out}", "--trials=2", f"--data_dir={mnist_dir}", "--num_hidden=2", "--size_hidden=8",
              "--batch_size=16", "--validation_size=20", "--epochs=2", "--epochs_fb=1"]
    env = dict(os.environ, PYTHONPATH=REPO)
    first = subprocess.run(search, env=dict(env, TP_KERAS_KILL_AT="after_checkpoint:2"), capture_output=True,
                           text=True, timeout=400)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "worker 0 FAILED (exit status -9): killed by SIGKILL; its trial 0 is re-queued" in first.stdout
    assert "not ended: trial_0000, trial_0001" in first.stdout
    second = subprocess.run(search, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "(trial_0000, the retry of trial 0) finished" in second.stdout and "2 of 2 runs ended" in second.stdout
    assert "resuming from" in (out / "trial_0000" / "launch.log").read_text()

    best_flags = (out / "best.flags").read_text()
    number = int(best_flags.split("): trial ")[1].split()[0])
    study = engine.load_study(engine.open_storage(engine.default_storage(str(out))), "out")
    best = study.trials[number]
    status, lines = command(launch.main, [f"--flagfile={out / 'best.flags'}", f"--data_dir={mnist_dir}",
                                          f"--workdir={tmp_path / 'again'}", "--noprogress"])
    assert status == 0, lines
    trial_summary = json.loads((out / best.user_attrs["run"] / "summary.json").read_text())
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["acc_val_best"] == best.value == trial_summary["acc_val_best"]
    for key in ("loss_train_last", "loss_val_best", "acc_test_val_best", "epoch_best_acc"):
        assert again[key] == trial_summary[key], key


# --- The exit statuses of `python -m tp_keras.search` and `python -m tp_keras.sweep` (one helper serves both) ---

def _raise(err):
    def run():
        raise err
    return run


@pytest.mark.parametrize("err, status, line", [
    (ConfigError("lr", "must be > 0"), 2, "error: --lr: must be > 0"),
    (engine.EngineError("--study: x exists with other settings"), 2, "error: --study: x exists with other settings"),
    (SystemExit("error: --seed: the sweep sets it"), 2, "error: --seed: the sweep sets it"),
    (KeyboardInterrupt(), 130, "error: interrupted by SIGINT; rerun the same command to resume"),
    (faults.Interrupted("SIGTERM"), 143, "error: interrupted by SIGTERM; rerun the same command to resume"),
])
def test_run_command_maps_each_failure_to_its_exit_status_and_one_line(err, status, line, capsys):
    from tp_keras.search import options
    assert options.run_command(_raise(err), one_line_errors=(ConfigError,)) == status
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_run_command_reports_a_database_failure_with_status_1_and_lets_other_errors_through(capsys):
    import sqlalchemy.exc
    from tp_keras.search import options
    locked = sqlalchemy.exc.OperationalError("UPDATE trials", {}, Exception("database is locked"))
    assert options.run_command(_raise(locked)) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --storage: the study database failed:") and "database is locked" in line
    assert options.run_command(lambda: 0) == 0
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        options.run_command(_raise(ZeroDivisionError("x")))
    with pytest.raises(SystemExit):  # a plain exit status is not a message
        options.run_command(_raise(SystemExit(3)))
