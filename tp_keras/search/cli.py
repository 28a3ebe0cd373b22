"""`python -m tp_keras.search`: a hyper-parameter search of one launcher configuration, on Optuna.

    python -m tp_keras.search --flagfile=launch/mnist_DDTPlinear.flags [--trials=20] [--workers=1]
        [--space=launch/spaces/<method>.space] [--out=searches/<cell>] [--storage=URL] [--study=NAME]
        [--pruner=median|halving|none] [--noearly_stop] [--sampler_seed=S] [launcher flags, e.g. --epochs=3
        --data_dir=DIR]

The flagfile is the base configuration; the space file names the flags to search and their ranges; any other
--name=value is a launcher flag applied to every trial (--data_dir says where the data are and is not part of
the study). --trials is the number of runs the study plans in all (rerunning with a larger number adds runs).
Every trial trains `<out>/trial_NNNN` (a launcher workdir) with the flagfile's seed, reports its validation
accuracy per epoch, and is pruned by the chosen Optuna pruner or by the reference's early-stop rule (train
accuracy below 40 % MNIST/Fashion-MNIST, 25 % CIFAR-10 from epoch 6); its value is its best validation accuracy.

Rerun the same command after an interruption or a crash: finished trials stay, interrupted or lost ones resume
from their last epoch checkpoint, the rest run. Ctrl-C or SIGTERM stops the workers and ends the command in one line
(exit status 130 or 143); the workers also die with a command killed outright (kill -9). --sampler_seed makes a
fresh search reproducible (one worker); a rerun seeds from it and the trials already in the study, so it draws new
values. Start the same command on several machines with one --storage=postgresql://... URL and they share the
study (README: Hyper-parameter search).

Results in --out (rewritten from the database by `--out=DIR --report_only`): best.flags (the best trial's
configuration as a launcher flagfile, its header naming the study, trial and validation accuracy), trials.csv,
history.png and importance.png (Optuna's optimization history and PED-ANOVA parameter importances).
"""
from __future__ import annotations

import importlib
import os
import signal
import sys

from optuna.trial import TrialState

from tp_keras.core.rules import get_rule
from tp_keras.run import faults, launch
from tp_keras.run.config import ConfigError
from tp_keras.run.data import DataError
from tp_keras.run.rundir import RunDirError
from tp_keras.search import engine, options, results, runs, space
from tp_keras.search.space import SpaceError


def parse_args(argv):
    parser = options.OneLineParser(
        prog="python -m tp_keras.search", allow_abbrev=False,
        description="Hyper-parameter search of a launcher flagfile on Optuna (TPE, pruning, resumable, "
                    "multi-machine). Any other --name=value is a launcher flag for every trial.")
    parser.add_argument("--flagfile", help="base launcher flagfile, e.g. launch/mnist_DDTPlinear.flags")
    parser.add_argument("--space", help="search-space file (default launch/spaces/<method>.space)")
    parser.add_argument("--trials", type=int, default=20, help="runs the study plans in all (default 20)")
    parser.add_argument("--out", help="output folder (default searches/<cell or method>)")
    parser.add_argument("--pruner", choices=("median", "halving", "none"), default="median",
                        help="Optuna pruner on per-epoch validation accuracy (default median)")
    parser.add_argument("--noearly_stop", dest="early_stop", action="store_false",
                        help="do not prune by the reference's early-stop rule (train accuracy from epoch 6)")
    parser.add_argument("--sampler_seed", type=int, help="TPE seed (worker start k uses seed + k)")
    parser.add_argument("--report_only", action="store_true",
                        help="only rewrite best.flags, trials.csv and the figures of --out from the database")
    options.add_engine_arguments(parser, "local worker processes (default 1)")
    args, rest = parser.parse_known_args(argv)
    options.check_engine_arguments(parser, args)
    if args.trials < 1:
        parser.error("--trials must be >= 1")
    if not args.report_only and not args.flagfile:
        parser.error("--flagfile is required (e.g. --flagfile=launch/mnist_DDTPlinear.flags)")
    if args.report_only and not (args.out or args.flagfile):
        parser.error("--report_only needs --out (or the --flagfile that named it)")
    return args, rest


def _say(message: str) -> None:
    print(f"[search] {message}", flush=True)


def _params_text(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class _Report:
    """One line per trial that starts or ends; trials.csv and best.flags rewritten after each end."""

    def __init__(self, study, out: str, url: str):
        self.study, self.out, self.url = study, out, url

    def trial(self, trial) -> None:
        attrs = trial.user_attrs
        retry = trial.system_attrs.get("failed_trial")
        name = f"trial {trial.number} ({attrs.get(engine.RUN)}" + (
            f", the retry of trial {retry})" if retry is not None else ")")
        if trial.state == TrialState.RUNNING:
            _say(f"{name} started")
            return
        if trial.state == TrialState.COMPLETE:
            best = results.best_trial(self.study)
            _say(f"{name} finished in {_seconds(trial)}: val acc {trial.value:.4f} at epoch "
                 f"{attrs.get('epoch_best_acc')} of {attrs.get('epochs_run')}; {_params_text(trial.params)}"
                 + (f" (best: trial {best.number}, {best.value:.4f})" if best is not None else ""))
        elif trial.state == TrialState.PRUNED:
            _say(f"{name} {attrs.get(engine.STATUS) or 'pruned'}; {_params_text(trial.params)}")
        elif attrs.get(engine.ERROR):
            log = os.path.join(self.out, attrs.get(engine.RUN) or "", runs.LOG_NAME)
            _say(f"{name} FAILED: {attrs[engine.ERROR]} [log {log}]")
        else:
            _say(f"{name} stopped without a result (interrupted, or its worker died); it is resumed when "
                 "re-queued")
        results.write_results(self.study, self.out, self.url, plots=False)

    def worker_failure(self, *failure) -> None:
        _say(options.worker_failure_line(*failure))


def _seconds(trial) -> str:
    if trial.datetime_complete and trial.datetime_start:
        return f"{(trial.datetime_complete - trial.datetime_start).total_seconds():.0f} s"
    return "? s"


def _defaults(args, flags) -> tuple[str, str]:
    """(--out, --study) with their defaults: searches/<cell or method>, the out folder's name."""
    named = {runs.flag_name(f): f.split("=", 1)[1] for f in flags if "=" in f}
    out = args.out or os.path.join("searches", named.get("cell") or named.get("method") or "search")
    return out, args.study or os.path.basename(os.path.normpath(out))


def report_only(args) -> int:
    flags = runs.read_flagfile(args.flagfile) if args.flagfile else []
    out, name = _defaults(args, flags)
    url = args.storage or engine.default_storage(out)
    if not args.storage and not os.path.exists(os.path.join(out, "study.db")):
        raise engine.EngineError(f"--out: {out} holds no study.db; name the search's --out (or its --storage)")
    study = engine.load_study(engine.open_storage(url, args.heartbeat, args.grace), name)
    for note in results.write_results(study, out, url):
        _say(note)
    _say(f"results of study '{name}' rewritten in {out}: best.flags, trials.csv, history.png, importance.png")
    return 0


def run_search(args, launcher_args) -> int:
    extra, data_dir = runs.without_data_dir(launcher_args)
    runs.check_flags(extra)
    flags = runs.merge_flags(runs.read_flagfile(args.flagfile), extra)
    with_data = flags + ([f"--data_dir={data_dir}"] if data_dir else [])
    config = runs.config_from_args(with_data)
    if config.dataset == "student_teacher":
        raise ConfigError("dataset", "the search maximises validation accuracy, which the student-teacher "
                                     "regression has not; search a classification dataset")
    if config.no_val_set:
        raise ConfigError("no_val_set", "the search maximises validation accuracy and never looks at the test set; "
                                        "drop --no_val_set (Table 2's _train cells) to search with a validation split")
    space_path = args.space or space.default_path(config.method)
    params = space.load(space_path, searchable=launch._OVERRIDABLE)
    space.check_method(params, get_rule(config.method))
    for arg in extra:
        if any(p.name == runs.flag_name(arg) for p in params):
            raise ConfigError(runs.flag_name(arg), f"is set on the command line and searched by {space_path}; "
                                                   "drop one of the two")
    # Every value the space can give, through the launcher's own checks: a bad one stops here, not in every trial.
    space.check_values(params, lambda flag, value: runs.config_from_args(with_data + runs.as_flags({flag: value})),
                       space_path)
    out, name = _defaults(args, flags)
    check_folder(out, "--out")
    url = args.storage or engine.default_storage(out)
    runner = importlib.import_module(args.runner)
    runner.prepare(with_data)  # a bad --data_dir stops here, in one line, before any trial

    storage = engine.open_storage(url, args.heartbeat, args.grace)
    settings = {"kind": "search", "flags": flags, "space": space.to_json(params), "pruner": args.pruner,
                "early_stop": args.early_stop, "dataset": config.dataset}
    study = engine.open_study(storage, name, settings, "maximize")
    if results.SOURCE not in study.user_attrs:
        study.set_user_attr(results.SOURCE, {"flagfile": args.flagfile, "space": space_path, "extra": extra})
    engine.requeue_failed(study)
    engine.recover(study)
    present = engine.busy_runs(study, None)
    for i in range(args.trials):
        if f"trial_{i:04d}" not in present:
            engine.enqueue(study, f"trial_{i:04d}")
    ended, planned = _tally(study)
    _say(f"study '{name}' in {engine.shown(url)}: {len(planned)} runs planned, {len(ended)} ended; "
         f"{args.workers} worker(s); searching {', '.join(p.name for p in params)} ({space_path})")

    report = _Report(study, out, url)
    driver = engine.Driver(
        study, engine.worker_argv(url, name, out, data_dir=data_dir, runner=args.runner,
                                  trials_per_worker=args.trials_per_worker, heartbeat=args.heartbeat,
                                  grace=args.grace, sampler_seed=args.sampler_seed),
        workers=args.workers, log_dir=os.path.join(out, "logs"), gpus=args.gpus, on_trial=report.trial,
        on_worker_failure=report.worker_failure)
    interrupted = driver.run()
    notes = results.write_results(study, out, url)
    ended, planned = _tally(study)
    best = results.best_trial(study)
    _say(f"study '{name}': {len(ended)} of {len(planned)} runs ended ("
         + ", ".join(f"{n} {s}" for s, n in _states(study).items()) + ")"
         + (f"; best: trial {best.number}, val acc {best.value:.4f}" if best else "")
         + f"; results in {out}: " + ", ".join(
             f for f in ("best.flags", "trials.csv", "history.png", "importance.png")
             if os.path.exists(os.path.join(out, f))))
    for note in notes:
        _say(note)
    missing = sorted(set(planned) - set(ended))
    if interrupted:  # the launcher's line and exit status (130 for SIGINT, 143 for SIGTERM)
        raise faults.Interrupted(signal.Signals(driver.stop_signal or signal.SIGINT).name)
    if missing:
        _say(f"not ended: {', '.join(missing)} (rerun the same command to resume them)")
    return 1 if missing or driver.failed_slots else 0


def check_folder(path: str, flag: str) -> None:
    """Refuses a folder to be (`path`) that is, or lies under, an existing file, before any work."""
    part = os.path.abspath(path)
    while True:
        if os.path.lexists(part) and not os.path.isdir(part):
            where = f"{path}" if part == os.path.abspath(path) else f"{part} (in {flag}={path})"
            raise RunDirError(f"{flag}: {where} is a file, not a folder; choose another {flag} or move the file "
                              "away")
        parent = os.path.dirname(part)
        if parent == part:
            return
        part = parent


def _stoppable(work) -> int:
    """Runs `work()` with SIGTERM as an interrupt; an interrupt ends in the launcher's one line on stderr,
    `error: interrupted by SIGTERM; ...`, and its exit status (143; 130 for SIGINT)."""
    previous = faults.terminate_as_interrupt()
    try:
        return work()
    except KeyboardInterrupt as err:
        name = getattr(err, "signal_name", "SIGINT")
        print(f"error: interrupted by {name}; rerun the same command to resume (finished trials are kept, "
              "interrupted ones resume from their last epoch)", file=sys.stderr, flush=True)
        return 128 + int(getattr(signal, name))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _tally(study) -> tuple[list[str], list[str]]:
    """(runs with a finished or pruned trial, all runs) of the study."""
    trials = [t for t in engine.all_trials(study) if not engine.is_surplus(t)]
    ended = sorted({t.user_attrs.get(engine.RUN) for t in trials if t.state in engine.FINISHED})
    return ended, sorted({t.user_attrs.get(engine.RUN) for t in trials})


def _states(study) -> dict:
    counts = {"finished": 0, "pruned": 0}
    for trial in engine.all_trials(study, engine.FINISHED):
        counts["finished" if trial.state == TrialState.COMPLETE else "pruned"] += 1
    return counts


def main(argv=None) -> int:
    args, launcher_args = parse_args(sys.argv[1:] if argv is None else argv)
    engine.quiet_optuna()
    return options.run_command(
        lambda: _stoppable(lambda: report_only(args) if args.report_only else run_search(args, launcher_args)),
        one_line_errors=(ConfigError, DataError, SpaceError, RunDirError))
