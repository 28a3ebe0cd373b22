"""Multi-seed sweeps of one launcher configuration, resumable, on the search engine, with a results table (spec
§4.2 quantities).

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
epoch. A finished seed whose flagfile or extra flags changed runs again from its checkpoint: after raising
`--epochs` it continues; after any other change the run refuses to mix settings in one workdir and the seed is
reported as failed (use another --out). `--data_dir` is not part of the comparison (it says where the data are,
not what runs). A seed already queued or running in the study (another machine, or an earlier sweep's worker that
still runs) is not queued twice; a seed whose worker died is retried by the engine, resuming from its checkpoint.

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
seed sweeps; the status column says how many). `summarize_sweep(out_dir)` returns the same numbers as a dict.

The tables are plain Python (no TensorFlow, NumPy or Optuna): `--report_only` and tp_keras.tables need neither.
"""
from __future__ import annotations

import collections
import csv
import datetime
import json
import math
import os
import re
import statistics
import sys

FINAL_STATUSES = ("finished", "diverged", "pruned")
LOG_NAME = "launch.log"
RECORD_NAME = "sweep_seed.json"
_SEED_DIR = re.compile(r"^seed_(-?\d+)$")
_RESERVED = ("seed", "workdir", "resume", "noresume")

# Per-seed columns (the docs/semantics.md §10 quantities plus timing), in table order: key, Markdown header, format.
_COMMON_COLUMNS = (
    ("loss_train_last", "train loss (last)", "loss"),
    ("loss_train_best", "train loss (min)", "loss"),
    ("epochs_run", "epochs", "int"),
    ("epoch_best", "best-val epoch", "int"),
    ("total_seconds", "total s", "sec"),
    ("s_per_epoch", "s/epoch", "sec"),
    ("s_per_epoch_steady", "s/epoch from epoch 2", "sec"),
)
CLASSIFICATION_COLUMNS = (
    ("error_test_val_best_pct", "test error at best val (%)", "pct"),
    ("acc_test_last", "test acc (last)", "acc"),
) + _COMMON_COLUMNS
REGRESSION_COLUMNS = (
    ("loss_test_val_best", "test loss at best val", "loss"),
    ("loss_test_last", "test loss (last)", "loss"),
) + _COMMON_COLUMNS


def is_final(status) -> bool:
    """True for the statuses a run ends with for good: finished, diverged: ..., pruned: ..."""
    return isinstance(status, str) and status.startswith(FINAL_STATUSES)


def seed_dir(out_dir: str, seed: int) -> str:
    return os.path.join(out_dir, f"seed_{seed}")


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read_jsonl(path: str) -> list[dict]:
    """The rows of a JSON-lines file; a torn last line (a killed writer) is ignored."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return rows


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


# --- Table math -----------------------------------------------------------------------------------------------

def _number(value):
    """A finite float, or None (missing, null, NaN, inf, non-numeric)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _integer(value):
    value = _number(value)
    return None if value is None else int(value)


def mean_sd(values) -> dict:
    """{"mean", "sd", "n"} of the finite numbers in `values`; sd is the sample SD (ddof=1), None when n < 2."""
    xs = [v for v in (_number(v) for v in values) if v is not None]
    return {"mean": statistics.fmean(xs) if xs else None, "sd": statistics.stdev(xs) if len(xs) >= 2 else None,
            "n": len(xs)}


def seed_dirs(out_dir: str) -> list[tuple[int, str]]:
    """(seed, path) of every seed_<S> folder in out_dir, by seed."""
    found = []
    try:
        names = os.listdir(out_dir)
    except OSError:
        return []
    for name in names:
        match = _SEED_DIR.match(name)
        if match and os.path.isdir(os.path.join(out_dir, name)):
            found.append((int(match.group(1)), os.path.join(out_dir, name)))
    return sorted(found)


def seed_row(seed: int, summary: dict | None, metrics: list[dict]) -> dict:
    """One seed's row: status and the docs/semantics.md §10 quantities from summary.json, timing from metrics.jsonl."""
    summary = summary or {}
    epochs = [m for m in metrics if isinstance(m.get("epoch"), int) and m["epoch"] >= 1]
    seconds = [s for s in (_number(m.get("epoch_seconds")) for m in epochs) if s is not None]
    error = _number(summary.get("error_test_val_best"))
    return {
        "seed": seed,
        "status": summary.get("status", "no summary"),
        "error_test_val_best_pct": None if error is None else 100.0 * error,
        "acc_test_last": _number(summary.get("acc_test_last")),
        "loss_test_val_best": _number(summary.get("loss_test_val_best")),
        "loss_test_last": _number(summary.get("loss_test_last")),
        "loss_train_last": _number(summary.get("loss_train_last")),
        "loss_train_best": _number(summary.get("loss_train_best")),
        "epochs_run": _integer(summary.get("epochs_run")),
        "epoch_best": _integer(summary.get("epoch_best_acc", summary.get("epoch_best_loss"))),
        "total_seconds": _number(summary.get("total_seconds")),
        # Epoch 1 includes tracing/compilation; the steady-state figure leaves it out.
        "s_per_epoch": statistics.fmean(seconds) if seconds else None,
        "s_per_epoch_steady": statistics.fmean(seconds[1:]) if len(seconds) >= 2 else None,
    }


def _is_classification(summaries: list[dict], metrics: list[list[dict]]) -> bool:
    """Classification when any seed has accuracy keys; a regression run only has losses."""
    if any(any(k.startswith("acc_") or k == "error_test_val_best" for k in s) for s in summaries):
        return True
    return any("test_acc" in row for rows in metrics for row in rows)


def _per_epoch(metrics_by_seed: list[list[dict]], classification: bool) -> list[dict]:
    """Per epoch (≥ 1): n and mean/SD over seeds of test and validation error % (or loss), train loss, seconds."""
    quantities = {}
    for rows in metrics_by_seed:
        for row in rows:
            epoch = row.get("epoch")
            if not isinstance(epoch, int) or epoch < 1:
                continue
            values = quantities.setdefault(epoch, collections.defaultdict(list))
            for split in ("test", "val"):
                if classification:
                    acc = _number(row.get(f"{split}_acc"))
                    if acc is not None:
                        values[f"{split}_error_pct"].append(100.0 * (1.0 - acc))
                else:
                    loss = _number(row.get(f"{split}_loss"))
                    if loss is not None:
                        values[f"{split}_loss"].append(loss)
            for key in ("train_loss", "epoch_seconds"):
                if _number(row.get(key)) is not None:
                    values[key].append(row[key])
    keys = (("test_error_pct", "val_error_pct") if classification else ("test_loss", "val_loss")) + (
        "train_loss", "epoch_seconds")
    table = []
    for epoch in sorted(quantities):
        entry = {"epoch": epoch, "n": max(len(v) for v in quantities[epoch].values())}
        for key in keys:
            entry[key] = mean_sd(quantities[epoch].get(key, []))
        table.append(entry)
    return table


def summarize_sweep(out_dir: str) -> dict:
    """The table math of a sweep folder (seed_<S>/summary.json and metrics.jsonl), no side effects.

    Returns {"cell": folder name, "out_dir", "task": "classification"|"regression", "columns": [(key, header,
    format)], "rows": one dict per seed folder (seed_row), "summary": {column: {"mean", "sd", "n"}} over the
    seeds with a final status, "statuses": {status: count} of those seeds, "final_seeds", "other_seeds" (not
    final: running, interrupted, failed: "no summary"), "epochs": (min, max) epochs_run of the final seeds or
    None, "config": the first final seed's config.json essentials (method, dataset, precision, epochs,
    no_val_set, ...), "per_epoch": [{"epoch", "n", "test_error_pct"|"test_loss", "val_error_pct"|"val_loss",
    "train_loss", "epoch_seconds": each {"mean", "sd", "n"}}], "sweep": sweep.json or None}."""
    rows, summaries, metrics, configs = [], [], [], []
    for seed, path in seed_dirs(out_dir):
        summary = _read_json(os.path.join(path, "summary.json"))
        rows_s = _read_jsonl(os.path.join(path, "metrics.jsonl"))
        row = seed_row(seed, summary, rows_s)
        rows.append(row)
        if summary is not None and is_final(summary.get("status")):
            summaries.append(summary)
            metrics.append(rows_s)
            configs.append(_read_json(os.path.join(path, "config.json")) or {})
    classification = _is_classification(summaries, metrics) if summaries else True
    columns = CLASSIFICATION_COLUMNS if classification else REGRESSION_COLUMNS
    final_rows = [r for r in rows if is_final(r["status"])]
    stats = {key: mean_sd(r[key] for r in final_rows) for key, _, _ in columns}
    statuses = collections.Counter(_status_kind(r["status"]) for r in final_rows)
    epochs = [int(r["epochs_run"]) for r in final_rows if r["epochs_run"] is not None]
    config = {}
    if configs:
        keep = ("method", "architecture", "dataset", "precision", "epochs", "epochs_fb", "extra_fb_epochs", "no_val_set",
                "only_train_first_layer", "num_hidden", "size_hidden", "batch_size")
        config = {k: configs[0][k] for k in keep if k in configs[0]}
    return {
        "cell": os.path.basename(os.path.normpath(out_dir)),
        "out_dir": out_dir,
        "task": "classification" if classification else "regression",
        "columns": list(columns),
        "rows": rows,
        "summary": stats,
        "statuses": dict(statuses),
        "final_seeds": [r["seed"] for r in final_rows],
        "other_seeds": [r["seed"] for r in rows if not is_final(r["status"])],
        "epochs": (min(epochs), max(epochs)) if epochs else None,
        "config": config,
        "per_epoch": _per_epoch(metrics, classification),
        "sweep": _read_json(os.path.join(out_dir, "sweep.json")),
    }


def _status_kind(status: str) -> str:
    """'diverged: non-finite ...' -> 'diverged'."""
    return status.split(":", 1)[0]


# --- Formatting -----------------------------------------------------------------------------------------------

def format_value(value, kind: str) -> str:
    if value is None:
        return ""
    if kind == "pct":
        return f"{value:.2f}"
    if kind == "acc":
        return f"{value:.4f}"
    if kind == "int":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    if kind == "sec":
        return f"{value:.1f}"
    return f"{value:.4g}"


def format_mean_sd(stats: dict, kind: str) -> str:
    """'2.04 ± 0.08', '2.04' (one value: no SD), '' (none)."""
    if not stats or stats["mean"] is None:
        return ""
    if kind == "int" and stats["sd"] is not None:
        kind = "pct"  # a mean epoch count is not an integer
    text = format_value(stats["mean"], kind)
    if stats["sd"] is None:
        return text
    return f"{text} ± {stats['sd']:.2g}" if kind == "loss" else f"{text} ± {format_value(stats['sd'], kind)}"


def statuses_text(result: dict) -> str:
    parts = [f"{count} {kind}" for kind, count in sorted(result["statuses"].items(),
                                                         key=lambda kv: (kv[0] != "finished", kv[0]))]
    return ", ".join(parts) or "none final"


def epochs_text(result: dict) -> str:
    if not result["epochs"]:
        return "no epochs"
    lo, hi = result["epochs"]
    return f"{hi} epochs" if lo == hi else f"{lo}–{hi} epochs"


def results_markdown(result: dict) -> str:
    columns = result["columns"]
    lines = [f"# Sweep `{result['cell']}`", ""]
    sweep = result.get("sweep") or {}
    if sweep:
        extra = " ".join(sweep.get("extra") or []) or "none"
        lines.append(f"Flagfile `{sweep.get('flagfile')}`; extra launcher flags: `{extra}`.")
    config = result["config"]
    if config:
        planned = config.get("epochs")
        lines.append(f"Ran {config.get('method')} on {config.get('dataset')} ({config.get('precision')}), "
                     f"{epochs_text(result)} run (configured: {planned})"
                     + (", no validation set" if config.get("no_val_set") else "") + ".")
    lines.append(f"Seeds with a final status: {len(result['final_seeds'])} ({statuses_text(result)})"
                 + (f"; not final (running, interrupted or failed, left out of the means): "
                    f"{', '.join(map(str, result['other_seeds']))}" if result["other_seeds"] else "") + ".")
    lines += ["", "| seed | status | " + " | ".join(h for _, h, _ in columns) + " |",
              "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    for row in result["rows"]:
        status = row["status"] if len(row["status"]) <= 60 else row["status"][:57] + "..."
        lines.append(f"| {row['seed']} | {status} | "
                     + " | ".join(format_value(row[k], kind) for k, _, kind in columns) + " |")
    n = len(result["final_seeds"])
    lines.append(f"| **mean ± SD (n={n})** | {statuses_text(result)} | "
                 + " | ".join(format_mean_sd(result["summary"][k], kind) for k, _, kind in columns) + " |")
    lines += ["", "SD: sample standard deviation (n − 1) over the seeds with a final status.", ""]
    classification = result["task"] == "classification"
    label = "test error (%)" if classification else "test loss"
    lines += [f"## Per epoch: {label}, mean ± SD over seeds", ""]
    keys = (("test_error_pct", "test error (%)", "pct"), ("val_error_pct", "val error (%)", "pct")) \
        if classification else (("test_loss", "test loss", "loss"), ("val_loss", "val loss", "loss"))
    keys += (("train_loss", "train loss", "loss"), ("epoch_seconds", "s/epoch", "sec"))
    lines += ["| epoch | n | " + " | ".join(h for _, h, _ in keys) + " |",
              "| --- | --- | " + " | ".join("---" for _ in keys) + " |"]
    for entry in result["per_epoch"]:
        lines.append(f"| {entry['epoch']} | {entry['n']} | "
                     + " | ".join(format_mean_sd(entry[k], kind) for k, _, kind in keys) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(header: list[str], rows: list[list]) -> str:
    import io
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])
    return buffer.getvalue()


def write_results(out_dir: str) -> dict:
    """Writes results.csv, results_per_epoch.csv and results.md into out_dir; returns summarize_sweep(out_dir)."""
    result = summarize_sweep(out_dir)
    keys = [k for k, _, _ in result["columns"]]
    rows = [[r["seed"], r["status"]] + [r[k] for k in keys] for r in result["rows"]]
    for stat in ("mean", "sd", "n"):
        rows.append([stat, statuses_text(result) if stat == "n" else ""]
                    + [result["summary"][k][stat] for k in keys])
    _write_atomic(os.path.join(out_dir, "results.csv"), _csv_text(["seed", "status"] + keys, rows))
    epoch_keys = [k for k in (result["per_epoch"][0] if result["per_epoch"] else {}) if k not in ("epoch", "n")]
    header = ["epoch", "n"] + [f"{k}_{s}" for k in epoch_keys for s in ("mean", "sd")]
    rows = [[e["epoch"], e["n"]] + [e[k][s] for k in epoch_keys for s in ("mean", "sd")]
            for e in result["per_epoch"]]
    _write_atomic(os.path.join(out_dir, "results_per_epoch.csv"), _csv_text(header, rows))
    _write_atomic(os.path.join(out_dir, "results.md"), results_markdown(result))
    return result


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
    summary = _read_json(os.path.join(path, "summary.json"))
    if summary is None:
        return "run", "new" if not os.path.exists(path) else "no summary yet"
    status = summary.get("status")
    record = _read_json(os.path.join(path, RECORD_NAME))
    if is_final(status):
        if record is None or record.get("identity") == identity:
            return "skip", f"status {status!r}, {summary.get('epochs_run', 0)} epochs"
        return "run", "its flagfile or extra flags changed since it finished: continuing from its checkpoint"
    return "run", f"status {status!r}: resuming from its checkpoint"


def _headline(summary: dict) -> str:
    parts = [f"status {summary.get('status')!r}", f"{summary.get('epochs_run', 0)} epochs"]
    if _number(summary.get("error_test_val_best")) is not None:
        parts.append(f"test error at best val {100 * summary['error_test_val_best']:.2f} %")
    elif _number(summary.get("acc_test_last")) is not None:
        parts.append(f"test acc (last) {summary['acc_test_last']:.4f}")
    if _number(summary.get("loss_train_last")) is not None:
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
        summary = _read_json(os.path.join(seed_dir(self.out_dir, seed), "summary.json")) or {}
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
        from tp_keras.search import options
        _say(options.worker_failure_line(*failure))


def run_sweep(flagfile: str, seeds: list[int], out_dir: str, *, workers: int = 1, data_dir: str | None = None,
              extra: list[str] = (), gpus: list[str] = (), storage: str | None = None, study: str | None = None,
              runner: str = "tp_keras.search.runs", trials_per_worker: int = 10, heartbeat: int = 10,
              grace: int = 60) -> int:
    """Queues the seeds that need running (skipping final ones), works them off, writes the results; returns the
    exit status (0, 1 or 130). Raises ConfigError, DataError or EngineError (one line) for bad settings."""
    import importlib

    from tp_keras.search import engine, runs
    extra = list(extra)
    check_extra(extra)
    launcher_extra, extra_data_dir = runs.without_data_dir(extra)
    data_dir = data_dir or extra_data_dir
    runs.check_flags(launcher_extra)
    flags = runs.merge_flags(runs.read_flagfile(flagfile), launcher_extra)
    data_flag = [f"--data_dir={data_dir}"] if data_dir else []
    runs.config_from_args(flags + data_flag)
    importlib.import_module(runner).prepare(flags + data_flag)  # a bad --data_dir stops here, in one line

    os.makedirs(out_dir, exist_ok=True)
    identity = _identity(flagfile, extra)
    previous = _read_json(os.path.join(out_dir, "sweep.json")) or {}
    record = {"flagfile": flagfile, "extra": extra, "data_dir": data_dir,
              "seeds": sorted(set(previous.get("seeds", [])) | set(seeds)), "parallel": workers}
    _write_atomic(os.path.join(out_dir, "sweep.json"), json.dumps(record, indent=2) + "\n")
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
            _write_atomic(os.path.join(seed_dir(out_dir, seed), RECORD_NAME), json.dumps(
                {"identity": identity, "args": args,
                 "queued": datetime.datetime.now().isoformat(timespec="seconds")}, indent=2) + "\n")
            engine.enqueue(the_study, run, {"seed": seed}, {"seed": seed, "args": args})

    report = _Report(out_dir)
    driver = engine.Driver(
        the_study, engine.worker_argv(url, name, out_dir, data_dir=data_dir, runner=runner,
                                      trials_per_worker=trials_per_worker, heartbeat=heartbeat, grace=grace),
        workers=workers, log_dir=os.path.join(out_dir, "logs"), gpus=gpus, on_trial=report.trial,
        on_worker_failure=report.worker_failure)
    interrupted = driver.run()

    result = write_results(out_dir)
    final = [s for s in seeds if is_final((_read_json(os.path.join(seed_dir(out_dir, s), "summary.json")) or {})
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
        return 130
    return 1 if failed else 0


def parse_args(argv: list[str]):
    from tp_keras.search import options
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
    if not args.out:
        args.out = os.path.join("sweeps", os.path.splitext(os.path.basename(args.flagfile))[0])
    return args, extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        result = write_results(args.out)
        _say(f"{len(result['rows'])} seed folders, {len(result['final_seeds'])} final; results: "
             f"{os.path.join(args.out, 'results.md')}")
        return 0
    try:
        from tp_keras.search import engine
    except ImportError:
        print("error: the sweep runs on Optuna: pip install 'tp_keras[search]'", file=sys.stderr)
        return 2
    from tp_keras.run.config import ConfigError
    from tp_keras.run.data import DataError
    from tp_keras.search import options
    engine.quiet_optuna()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    try:
        with options.sigterm_as_interrupt():
            return run_sweep(args.flagfile, seeds, args.out, workers=args.workers, data_dir=args.data_dir,
                             extra=extra, gpus=args.gpus, storage=args.storage, study=args.study,
                             runner=args.runner, trials_per_worker=args.trials_per_worker,
                             heartbeat=args.heartbeat, grace=args.grace)
    except (ConfigError, DataError, engine.EngineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        message = engine.database_failure(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    except SystemExit as err:
        if isinstance(err.code, str):
            print(err.code, file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
