"""Multi-seed sweeps of one launcher configuration, resumable, on the search engine, with a results table (the
docs/semantics.md §10 quantities).

    python -m tp_keras.sweep --flagfile=launch/<cell>.flags [--seeds=5] [--first_seed=0] [--parallel=1]
                             [--gpus=0,1] [--out=sweeps/<cell>] [--data_dir=DIR] [--report_only]
                             [--storage=URL] [--study=NAME] [-- extra launcher flags, e.g. --epochs=3]

A sweep is an Optuna study over a fixed set of seeds (tp_keras.search.engine): each seed S = first_seed ..
first_seed+seeds-1 is a queued trial whose run trains `--flagfile` (plus the extra flags) with --seed=S into
`<out>/seed_S` (a launcher workdir; its output goes to `<out>/seed_S/launch.log`), in-process in one of
`--parallel` worker processes (`--gpus=0,1`: worker k sees only GPU gpus[k % len(gpus)]). The study lives in
`<out>/study.db` (SQLite) or at `--storage`: the same command on several machines with one PostgreSQL URL shares
the seeds among them (README: Hyper-parameter search).

Resuming. Run the same command again after an interruption (Ctrl-C, a killed job, a reboot): a seed whose
`summary.json` has a final status ("finished", "diverged: ...", "pruned: ...") and that was run with the same
flagfile and extra flags is skipped; every other seed is queued again and continues from its last checkpointed
epoch. A finished seed whose extra flags changed runs again from its checkpoint: after raising `--epochs` it
continues. `--data_dir` is not part of the comparison (it says where the data are, not what runs).

One folder, one sweep. `<out>` belongs to the flagfile that started it (sweep.json records its name and settings;
each seed's config.json what it ran): a sweep of another flagfile, or of other settings than --epochs (and what a
run may change on --resume: SETTING_MAY_DIFFER), into that folder is refused before anything runs or is written,
in one line naming the flagfile or setting that differs, with exit status 1; use another --out.

A seed already queued or running in the study (another machine, or an earlier sweep's worker that still runs) is
not queued twice; a seed whose worker died is retried by the engine, resuming from its checkpoint.

Bad settings (an unknown flag, --first_seed or --seeds outside the launcher's seeds 0..4294967295, an --out that
is a file, --report_only on a folder without seeds) stop the command before any work, in one line, exit status 2.

Failures. A seed that ends without a final status is reported in one line with its error; the other seeds go
on, and the sweep exits with status 1 at the end. A diverged or pruned seed is a result (its status is final and
shown in the tables), not a failure.

Results (rewritten after every seed and at the end; `--report_only` rewrites them without running anything, also
for folders written before the sweep ran on the engine):
  <out>/results.csv            one row per seed, then rows "mean", "sd" (sample SD, ddof=1) and "n"
  <out>/results_per_epoch.csv  per epoch: n seeds, mean and SD of test error % (classification) or test loss,
                               validation error/loss, training loss, epoch seconds
  <out>/results.md             both tables in Markdown, mean ± SD (n shown)
  <out>/sweep.json             the command: flagfile, extra flags, seeds
Means and SDs are over the seeds with a final status (a diverged or pruned seed counts, as in the reference's
seed sweeps; the status column says how many). A seed whose summary.json, config.json or a metrics.jsonl line
cannot be read is left out of them, shown as "unreadable: ..." in the tables and warned about on stderr.
`summarize_sweep(out_dir)` returns the same numbers as a dict.

This module is the supervisor (plan the seeds, queue them, report each as it ends); the tables are computed and
written by tp_keras.paper.sweep_results (plain Python: `--report_only` and tp_keras.tables need no TensorFlow,
NumPy or Optuna).
"""
from __future__ import annotations

import datetime
import os
import signal
import sys

from tp_keras.paper.sweep_results import (SETTING_MAY_DIFFER, finite_number, read_json, read_json_checked,
                                          result_warnings)
# The results' public functions stay importable from here (their first home).
from tp_keras.paper.sweep_results import (  # noqa: F401
    CLASSIFICATION_COLUMNS, FINAL_STATUSES, REGRESSION_COLUMNS, epochs_text, format_mean_sd, format_value, is_final,
    mean_sd, results_markdown, seed_dir, seed_dirs, seed_row, statuses_text, summarize_sweep, write_results)
from tp_keras.run import rundir
from tp_keras.run.config import ConfigError, MAX_SEED
from tp_keras.run.data import DataError
from tp_keras.search import options, runs

LOG_NAME = "launch.log"
RECORD_NAME = "sweep_seed.json"
_RESERVED = ("seed", "workdir", "resume", "noresume")
# The exit status of a sweep refused because its --out holds another sweep: 1, as for a seed that could not run.
EXIT_OTHER_SWEEP = 1


class OtherSweepError(ValueError):
    """--out holds the sweep of another flagfile (or of other settings); str(err) is the one line."""


# --- One folder, one sweep ------------------------------------------------------------------------------------

def setting_of(config) -> dict:
    """What makes a sweep folder's runs comparable: every setting of the launcher Config but SETTING_MAY_DIFFER,
    as JSON values."""
    import dataclasses
    import json
    values = json.loads(json.dumps(dataclasses.asdict(config), default=list))
    return {k: v for k, v in values.items() if k not in SETTING_MAY_DIFFER}


def _stem(flagfile: str) -> str:
    return os.path.splitext(os.path.basename(flagfile))[0]


def _differences(theirs: dict, ours: dict) -> list[str]:
    """'method=dtpdrl there, ddtp_linear here' for each setting both name and give different values."""
    return [f"{k}={theirs[k]!r} there, {ours[k]!r} here" for k in ours if k in theirs and theirs[k] != ours[k]]


def check_folder_owner(out_dir: str, flagfile: str, setting: dict) -> None:
    """Raises OtherSweepError (one line: what is there, and the fix) unless `out_dir` is new, empty of sweeps, or
    holds the sweep of this flagfile (the same file name) with these settings: sweep.json's flagfile and setting,
    and the config.json of every seed folder. Reads only; changes nothing."""
    fix = (f"choose another --out (e.g. --out=sweeps/{_stem(flagfile)}), or rerun that sweep with its own flagfile "
           "and flags (only --epochs may change between runs of one sweep)")
    where = f"--out={out_dir}"
    record_path = os.path.join(out_dir, "sweep.json")
    record, why = read_json_checked(record_path)
    if why is not None:
        raise OtherSweepError(f"{where}: its sweep.json cannot be read ({why}), so whose sweep the folder holds is "
                              f"unknown; {fix}, or repair {record_path}")
    record = record or {}
    if record.get("flagfile") and _stem(record["flagfile"]) != _stem(flagfile):
        raise OtherSweepError(f"{where} holds the sweep of another flagfile ({record['flagfile']}, not {flagfile}); "
                              f"{fix}")
    differences = _differences(record.get("setting") or {}, setting)
    if differences:
        raise OtherSweepError(f"{where} holds a sweep of {record.get('flagfile', 'another flagfile')} with other "
                              f"settings ({'; '.join(differences[:3])}); {fix}")
    for seed, path in seed_dirs(out_dir):
        config_path = os.path.join(path, "config.json")
        config, why = read_json_checked(config_path)
        if why is not None:
            raise OtherSweepError(f"{where}: {config_path} cannot be read ({why}), so whose run seed {seed} is, is "
                                  f"unknown; {fix}, or delete the folder {path} to run the seed again")
        differences = _differences(config or {}, setting)
        if differences:
            raise OtherSweepError(f"{where} holds runs of other settings (seed {seed}: {'; '.join(differences[:3])}"
                                  f"); {fix}")


# --- Running --------------------------------------------------------------------------------------------------

def check_extra(extra: list[str]) -> None:
    for arg in extra:
        name = arg.lstrip("-").split("=", 1)[0]
        if arg.startswith("-") and name in _RESERVED:
            raise SystemExit(f"error: {arg}: the sweep sets --seed, --workdir and --resume itself; use --seeds/"
                             "--first_seed and --out")


def _identity(flagfile: str, extra: list[str]) -> dict:
    """What decides whether a finished seed is still valid: the flagfile and the extra flags (not --data_dir)."""
    return {"flagfile": os.path.abspath(flagfile), "extra": [a for a in extra if not a.startswith("--data_dir")]}


def decide(out_dir: str, seed: int, identity: dict) -> tuple[str, str]:
    """('skip'|'run', why) for one seed, from its folder alone."""
    path = seed_dir(out_dir, seed)
    summary = read_json(os.path.join(path, "summary.json"))
    if summary is None:
        return "run", "new" if not os.path.exists(path) else "no summary yet"
    status = summary.get("status")
    record = read_json(os.path.join(path, RECORD_NAME))
    if is_final(status):
        if record is None or record.get("identity") == identity:
            return "skip", f"status {status!r}, {summary.get('epochs_run', 0)} epochs"
        return "run", "its flagfile or extra flags changed since it finished: continuing from its checkpoint"
    return "run", f"status {status!r}: resuming from its checkpoint"


def _headline(summary: dict) -> str:
    parts = [f"status {summary.get('status')!r}", f"{summary.get('epochs_run', 0)} epochs"]
    if finite_number(summary.get("error_test_val_best")) is not None:
        parts.append(f"test error at best val {100 * summary['error_test_val_best']:.2f} %")
    elif finite_number(summary.get("acc_test_last")) is not None:
        parts.append(f"test acc (last) {summary['acc_test_last']:.4f}")
    if finite_number(summary.get("loss_train_last")) is not None:
        parts.append(f"train loss (last) {summary['loss_train_last']:.4g}")
    return ", ".join(parts)


def _say(message: str) -> None:
    print(f"[sweep] {message}", flush=True)


class _Report:
    """One line per seed that starts or ends; the results tables rewritten after each end."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def trial(self, trial) -> None:
        from tp_keras.search import engine
        seed = trial.user_attrs.get("seed")
        log = os.path.join(seed_dir(self.out_dir, seed), LOG_NAME)
        if trial.state.name == "RUNNING":
            _say(f"seed {seed} started (trial {trial.number}, log {log})")
            return
        seconds = (f"{(trial.datetime_complete - trial.datetime_start).total_seconds():.1f} s"
                   if trial.datetime_complete and trial.datetime_start else "? s")
        summary = read_json(os.path.join(seed_dir(self.out_dir, seed), "summary.json")) or {}
        if trial.state.is_finished() and trial.state.name != "FAIL":
            verb = "finished" if summary.get("status", "").startswith("finished") else \
                "ended (final, kept in the tables)"
            _say(f"seed {seed} {verb} in {seconds}: {_headline(summary)}")
        elif trial.user_attrs.get(engine.ERROR):
            _say(f"seed {seed} FAILED after {seconds}: {trial.user_attrs[engine.ERROR]} [log {log}]")
        else:
            _say(f"seed {seed} stopped without a final status (status {summary.get('status')!r}: interrupted, or "
                 f"its worker died) [log {log}]")
        write_results(self.out_dir)

    @staticmethod
    def worker_failure(*failure) -> None:
        _say(options.worker_failure_line(*failure))


def run_sweep(flagfile: str, seeds: list[int], out_dir: str, *, workers: int = 1, data_dir: str | None = None,
              extra: list[str] = (), gpus: list[str] = (), storage: str | None = None, study: str | None = None,
              runner: str = "tp_keras.search.runs", trials_per_worker: int = 10, heartbeat: int = 10,
              grace: int = 60) -> int:
    """Queues the seeds that need running (skipping final ones), works them off, writes the results; returns the
    exit status (0, 1, 130 after SIGINT or 143 after SIGTERM). Raises ConfigError, DataError or EngineError (one
    line) for bad settings."""
    import importlib

    from tp_keras.search import engine
    extra = list(extra)
    check_extra(extra)
    launcher_extra, extra_data_dir = runs.without_data_dir(extra)
    data_dir = data_dir or extra_data_dir
    runs.check_flags(launcher_extra)
    flags = runs.merge_flags(runs.read_flagfile(flagfile), launcher_extra)
    data_flag = [f"--data_dir={data_dir}"] if data_dir else []
    setting = setting_of(runs.config_from_args(flags + data_flag))
    check_folder_owner(out_dir, flagfile, setting)  # another flagfile's sweep: refused before anything is written
    importlib.import_module(runner).prepare(flags + data_flag)  # a bad --data_dir stops here, in one line

    rundir.make_folder(out_dir, "--out")
    identity = _identity(flagfile, extra)
    previous = read_json(os.path.join(out_dir, "sweep.json")) or {}
    record = {"flagfile": flagfile, "extra": extra, "data_dir": data_dir,
              "seeds": sorted(set(previous.get("seeds", [])) | set(seeds)), "parallel": workers, "setting": setting}
    rundir.write_json(os.path.join(out_dir, "sweep.json"), record, kind="--out")
    url = storage or engine.default_storage(out_dir)
    name = study or f"{os.path.basename(os.path.normpath(out_dir))}_seeds"
    the_study = engine.open_study(engine.open_storage(url, heartbeat, grace), name, {"kind": "seeds"}, "maximize")
    engine.recover(the_study)
    queued = engine.busy_runs(the_study, (engine.TrialState.WAITING, engine.TrialState.RUNNING))
    for seed in seeds:
        action, why = decide(out_dir, seed, identity)
        run = os.path.basename(seed_dir(out_dir, seed))
        if action == "skip":
            _say(f"seed {seed} skipped: {why}")
        elif run in queued:
            _say(f"seed {seed} is already queued or running in study '{name}' (trial {queued[run].number}); "
                 "waiting for it")
        else:
            if why not in ("new", "no summary yet"):
                _say(f"seed {seed}: {why}")
            args = flags + [f"--seed={seed}"]
            os.makedirs(seed_dir(out_dir, seed), exist_ok=True)
            rundir.write_json(os.path.join(seed_dir(out_dir, seed), RECORD_NAME), {
                "identity": identity, "args": args, "queued": datetime.datetime.now().isoformat(timespec="seconds")},
                kind="--out")
            engine.enqueue(the_study, run, {"seed": seed}, {"seed": seed, "args": args})

    report = _Report(out_dir)
    driver = engine.Driver(
        the_study, engine.worker_argv(url, name, out_dir, data_dir=data_dir, runner=runner,
                                      trials_per_worker=trials_per_worker, heartbeat=heartbeat, grace=grace),
        workers=workers, log_dir=os.path.join(out_dir, "logs"), gpus=gpus, on_trial=report.trial,
        on_worker_failure=report.worker_failure)
    interrupted = driver.run()

    result = write_results(out_dir)
    _warn(result)
    final = [s for s in seeds if is_final((read_json(os.path.join(seed_dir(out_dir, s), "summary.json")) or {})
                                          .get("status"))]
    failed = [s for s in seeds if s not in final]
    stats_key = "error_test_val_best_pct" if result["task"] == "classification" else "loss_test_val_best"
    if result["summary"][stats_key]["n"] == 0:
        stats_key = "loss_train_last"
    shown = format_mean_sd(result["summary"][stats_key], dict((k, f) for k, _, f in result["columns"])[stats_key])
    _say(f"{len(final)} of {len(seeds)} seeds final ({statuses_text(result)}); {stats_key} = {shown or '–'} "
         f"over n={result['summary'][stats_key]['n']}, {epochs_text(result)}")
    if failed and not interrupted:
        _say(f"failed seeds: {', '.join(map(str, failed))} (rerun the same command to retry them)")
    _say(f"results: {os.path.join(out_dir, 'results.md')}, results.csv, results_per_epoch.csv")
    if interrupted:
        _say("interrupted: each seed keeps its finished epochs; rerun the same command to resume")
        name = signal.Signals(driver.stop_signal or signal.SIGINT).name  # the launcher's line and exit status
        print(f"error: interrupted by {name}; rerun the same command to resume", file=sys.stderr, flush=True)
        return 128 + int(getattr(signal, name))
    return 1 if failed else 0


def _warn(result: dict) -> None:
    for line in result_warnings(result):
        print(line, file=sys.stderr, flush=True)


def _refuse(message: str):
    """A bad command line that is not a parsing error: one line, `error: <what>; <fix>`, exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _check_out(out: str, report_only: bool) -> None:
    """--out must be a folder, or a path where one can be made; with --report_only, an existing sweep folder."""
    if os.path.lexists(out) and not os.path.isdir(out):
        _refuse(f"--out={out} exists and is not a folder; choose another --out or move the file away")
    blocker = rundir._first_non_directory(out)
    if blocker:
        _refuse(f"--out={out}: {blocker} is a file, not a folder; choose another --out or move the file away")
    if report_only and not os.path.isdir(out):
        _refuse(f"--out={out}: no such folder, so there are no results to report; name the sweep's folder "
                "(--report_only rewrites the tables of a sweep that ran), or run the sweep without --report_only")
    if report_only and not seed_dirs(out):
        _refuse(f"--out={out} holds no seed_<S> folders, so there are no results to report; name the sweep's "
                "folder, or run the sweep without --report_only")


def parse_args(argv: list[str]):
    argv = list(argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = options.OneLineParser(
        prog="python -m tp_keras.sweep", allow_abbrev=False,
        description="Run a launcher flagfile over several seeds (resumable; an Optuna study over the seeds) and "
                    "tabulate mean ± SD. Extra launcher flags go after --, e.g. -- --epochs=3.")
    parser.add_argument("--flagfile", help="the launcher flagfile of the cell, e.g. launch/mnist_DDTPlinear.flags")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument("--first_seed", type=int, default=0, help="first seed (default 0): seeds first_seed.."
                                                                  "first_seed+seeds-1")
    parser.add_argument("--out", help="sweep folder (default sweeps/<flagfile name>)")
    parser.add_argument("--data_dir", help="where every run reads its data")
    parser.add_argument("--report_only", action="store_true", help="only rewrite the results tables of --out")
    options.add_engine_arguments(parser, "worker processes, i.e. seeds at a time (default 1)")
    parser.add_argument("--parallel", dest="workers", type=int, help="the same as --workers")
    args = parser.parse_args(argv)
    options.check_engine_arguments(parser, args)
    if args.report_only:
        if not args.out:
            parser.error("--report_only needs --out")
    elif not args.flagfile:
        parser.error("--flagfile is required (e.g. --flagfile=launch/mnist_DDTPlinear.flags)")
    elif not os.path.isfile(args.flagfile):
        parser.error(f"--flagfile: {args.flagfile} does not exist")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if not 0 <= args.first_seed <= MAX_SEED:
        _refuse(f"--first_seed: {args.first_seed} must be between 0 and {MAX_SEED} (the launcher's seeds); e.g. "
                "--first_seed=0")
    if args.first_seed + args.seeds - 1 > MAX_SEED:
        _refuse(f"--seeds: {args.first_seed}..{args.first_seed + args.seeds - 1} passes the last seed, {MAX_SEED}; "
                f"lower --first_seed or --seeds (at most {MAX_SEED - args.first_seed + 1} from "
                f"--first_seed={args.first_seed})")
    if not args.out:
        args.out = os.path.join("sweeps", os.path.splitext(os.path.basename(args.flagfile))[0])
    _check_out(args.out, args.report_only)
    return args, extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        try:
            result = write_results(args.out)
        except rundir.RunDirError as err:  # e.g. a read-only folder: one line naming the file
            _refuse(str(err))
        _warn(result)
        _say(f"{len(result['rows'])} seed folders, {len(result['final_seeds'])} final; results: "
             f"{os.path.join(args.out, 'results.md')}")
        return 0
    try:
        from tp_keras.search import engine
    except ImportError:
        print("error: the sweep runs on Optuna: pip install 'tp_keras[search]'", file=sys.stderr)
        return 2
    engine.quiet_optuna()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))

    def run() -> int:
        try:
            return run_sweep(args.flagfile, seeds, args.out, workers=args.workers, data_dir=args.data_dir,
                             extra=extra, gpus=args.gpus, storage=args.storage, study=args.study, runner=args.runner,
                             trials_per_worker=args.trials_per_worker, heartbeat=args.heartbeat, grace=args.grace)
        except OtherSweepError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            return EXIT_OTHER_SWEEP
    return options.run_command(run, one_line_errors=(ConfigError, DataError, rundir.RunDirError))


if __name__ == "__main__":
    sys.exit(main())
