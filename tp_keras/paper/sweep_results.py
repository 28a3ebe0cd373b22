"""A sweep folder's results: the table math over its seed_<S>/ run folders and the tables it writes.

`summarize_sweep(out_dir)` reads every seed's summary.json, metrics.jsonl and config.json (no side effects) and
returns one row per seed, mean ± SD over the seeds with a final status (a diverged or pruned seed counts, as in
the reference's seed sweeps) and the per-epoch curves; a seed with a damaged file is never dropped quietly: it is
listed as unreadable, and a folder whose seeds ran different settings as mixed (`result_warnings` gives the lines
the commands print on stderr); `write_results(out_dir)` writes results.csv, results_per_epoch.csv and results.md
from it (through the run folder's atomic writes, `rundir.atomic_write`).
The sweep supervisor (tp_keras.paper.sweep) calls it after every seed; tp_keras.paper.tables reads the same dicts.

Plain Python (no TensorFlow, NumPy or Optuna): `--report_only` and the tables need none of them.
"""
from __future__ import annotations

import collections
import csv
import io
import json
import math
import os
import re
import statistics

from tp_keras.run import rundir

FINAL_STATUSES = ("finished", "diverged", "pruned")
# The settings (config.json keys) that may differ between the runs of one sweep: the seed, and what a run may change
# on --resume. Any other difference means the folder mixes runs of different settings.
SETTING_MAY_DIFFER = ("seed",) + rundir.RESUME_MAY_DIFFER
_SEED_DIR = re.compile(r"^seed_(-?\d+)$")

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


def read_json(path: str):
    """The JSON object of `path`, or None when it is missing or unreadable (a run still writing, or killed)."""
    return read_json_checked(path)[0]


def read_json_checked(path: str) -> tuple:
    """(object, None) for a readable file holding a JSON object (every file of a run or sweep folder does); (None,
    None) when there is no file; (None, "why") when the file is there but cannot be read, is not JSON or is not a
    JSON object. The run folder's files are written whole (atomic renames), so a file that is there and unreadable
    is damaged, not half-written."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        return None, None
    except OSError as err:
        return None, f"cannot read it ({rundir.reason(err, path)})"
    except ValueError as err:
        return None, f"not JSON ({_short(err)})"
    if not isinstance(value, dict):
        return None, f"not a JSON object (a {type(value).__name__})"
    return value, None


def _short(err: Exception) -> str:
    return str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__


def read_jsonl_checked(path: str, *, final: bool = True) -> tuple[list[dict], list[str]]:
    """(rows, problems) of a JSON-lines file; each problem is "line N: why" for a line that is not a JSON object.
    Metrics lines are appended whole or not at all (rundir.append_lines), so a bad line is damage and is reported;
    the one exception is the last line of a run that has not ended (`final=False`) while it lacks its newline: a
    line being written as the file is read, which is left out quietly. No file: no rows, no problem."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return [], []
    except (OSError, ValueError) as err:
        reason = rundir.reason(err, path) if isinstance(err, OSError) else _short(err)
        return [], [f"cannot read it ({reason})"]
    rows, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            if not final and number == len(lines) and not line.endswith("\n"):
                continue
            problems.append(f"line {number}: not JSON ({_short(err)})")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {number}: not a JSON object")
            continue
        rows.append(row)
    return rows, problems


def _read_jsonl(path: str) -> list[dict]:
    """The rows of a JSON-lines file that can be read (see read_jsonl_checked for the problems)."""
    return read_jsonl_checked(path, final=False)[0]


# --- Table math -----------------------------------------------------------------------------------------------

def finite_number(value):
    """A finite float, or None (missing, null, NaN, inf, non-numeric)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def finite_integer(value):
    value = finite_number(value)
    return None if value is None else int(value)


def mean_sd(values) -> dict:
    """{"mean", "sd", "n"} of the finite numbers in `values`; sd is the sample SD (ddof=1), None when n < 2."""
    xs = [v for v in (finite_number(v) for v in values) if v is not None]
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
    seconds = [s for s in (finite_number(m.get("epoch_seconds")) for m in epochs) if s is not None]
    error = finite_number(summary.get("error_test_val_best"))
    return {
        "seed": seed,
        "status": summary.get("status", "no summary"),
        "error_test_val_best_pct": None if error is None else 100.0 * error,
        "acc_test_last": finite_number(summary.get("acc_test_last")),
        "loss_test_val_best": finite_number(summary.get("loss_test_val_best")),
        "loss_test_last": finite_number(summary.get("loss_test_last")),
        "loss_train_last": finite_number(summary.get("loss_train_last")),
        "loss_train_best": finite_number(summary.get("loss_train_best")),
        "epochs_run": finite_integer(summary.get("epochs_run")),
        "epoch_best": finite_integer(summary.get("epoch_best_acc", summary.get("epoch_best_loss"))),
        "total_seconds": finite_number(summary.get("total_seconds")),
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
                    acc = finite_number(row.get(f"{split}_acc"))
                    if acc is not None:
                        values[f"{split}_error_pct"].append(100.0 * (1.0 - acc))
                else:
                    loss = finite_number(row.get(f"{split}_loss"))
                    if loss is not None:
                        values[f"{split}_loss"].append(loss)
            for key in ("train_loss", "epoch_seconds"):
                if finite_number(row.get(key)) is not None:
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
    final: running, interrupted, failed: "no summary"), "unreadable": [{"seed", "folder", "problems": ["<file>:
    why", ...]}] (a seed whose summary.json, config.json or a metrics.jsonl line is there but cannot be read: left
    out of every mean, its row's status "unreadable: ...") and "unreadable_seeds", "mixed": ["seed S: key=value
    (seed F: value)"] for final seeds whose config.json differs from the first one's beyond SETTING_MAY_DIFFER
    (a folder that mixes runs: the tables show no mean for it), "epochs": (min, max) epochs_run of the final seeds or
    None, "config": the first final seed's config.json essentials (method, dataset, precision, epochs,
    no_val_set, ...), "per_epoch": [{"epoch", "n", "test_error_pct"|"test_loss", "val_error_pct"|"val_loss",
    "train_loss", "epoch_seconds": each {"mean", "sd", "n"}}], "sweep": sweep.json or None}."""
    rows, summaries, metrics, configs, unreadable = [], [], [], [], []
    for seed, path in seed_dirs(out_dir):
        problems = []  # (file, why): a file of the run that is there but cannot be read
        summary = _read_object(os.path.join(path, "summary.json"), problems)
        final = summary is not None and is_final(summary.get("status"))
        metrics_path = os.path.join(path, "metrics.jsonl")
        rows_s, bad_lines = read_jsonl_checked(metrics_path, final=final)
        problems += [(metrics_path, why) for why in bad_lines]
        config = _read_object(os.path.join(path, "config.json"), problems)
        row = seed_row(seed, summary, rows_s)
        if problems:
            # Left out of every mean, and said so: the tables mark the cell and name the file, the commands warn.
            first_file, first_why = problems[0]
            row["status"] = f"unreadable: {os.path.basename(first_file)} {first_why}"
            unreadable.append({"seed": seed, "folder": path, "problems": [f"{f}: {why}" for f, why in problems]})
        rows.append(row)
        if final and not problems:
            summaries.append(summary)
            metrics.append(rows_s)
            configs.append((seed, config or {}))
    classification = _is_classification(summaries, metrics) if summaries else True
    columns = CLASSIFICATION_COLUMNS if classification else REGRESSION_COLUMNS
    final_rows = [r for r in rows if is_final(r["status"])]
    stats = {key: mean_sd(r[key] for r in final_rows) for key, _, _ in columns}
    statuses = collections.Counter(_status_kind(r["status"]) for r in final_rows)
    epochs = [int(r["epochs_run"]) for r in final_rows if r["epochs_run"] is not None]
    config = {}
    mixed = _mixed(configs)
    configs = [c for _, c in configs]
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
        "other_seeds": [r["seed"] for r in rows if not is_final(r["status"]) and not _unreadable(r)],
        "unreadable": unreadable,
        "mixed": mixed,
        "unreadable_seeds": [u["seed"] for u in unreadable],
        "epochs": (min(epochs), max(epochs)) if epochs else None,
        "config": config,
        "per_epoch": _per_epoch(metrics, classification),
        "sweep": read_json(os.path.join(out_dir, "sweep.json")),
    }


def _read_object(path: str, problems: list):
    """The JSON object in `path`, or None (no file, or unreadable: then (path, why) is added to `problems`)."""
    value, why = read_json_checked(path)
    if why is not None:
        problems.append((path, why))
    return value


def _mixed(configs: list[tuple[int, dict]]) -> list[str]:
    """'seed 3: method='dtpdrl' (seed 0: 'ddtp_linear')' for every final seed whose config.json differs from the
    first one's in a setting other than SETTING_MAY_DIFFER (up to three settings a seed)."""
    if not configs:
        return []
    first_seed, first = configs[0]
    found = []
    for seed, config in configs[1:]:
        differ = [f"{k}={config[k]!r} (seed {first_seed}: {first[k]!r})" for k in config
                  if k in first and k not in SETTING_MAY_DIFFER and config[k] != first[k]]
        if differ:
            found.append(f"seed {seed}: {', '.join(differ[:3])}")
    return found


def mixed_warnings(result: dict) -> list[str]:
    """One `warning: ...` line for a sweep folder whose final seeds ran different settings."""
    if not result.get("mixed"):
        return []
    return [f"warning: {result['out_dir']} mixes runs of different settings ({'; '.join(result['mixed'])}); the "
            "tables show no mean for it: sweep each setting into its own folder"]


def result_warnings(result: dict) -> list[str]:
    """The `warning:` lines a command prints on stderr for a summarize_sweep result: unreadable files, mixed
    settings."""
    return unreadable_warnings(result) + mixed_warnings(result)


def _unreadable(row: dict) -> bool:
    return row["status"].startswith("unreadable: ")


def unreadable_warnings(result: dict) -> list[str]:
    """One `warning: ...` line per unreadable file of a summarize_sweep result: the file, what is wrong with it,
    and that its run is left out of the means (and marked in the tables)."""
    return [f"warning: {problem}; seed {entry['seed']} of {result['out_dir']} is left out of the means and marked "
            "in the tables: repair or delete the file, or run the seed again"
            for entry in result.get("unreadable", ()) for problem in entry["problems"]]


def unreadable_text(result: dict) -> str:
    """'seed 2 (<folder>/summary.json: not JSON (...)), ...' for the tables' notes."""
    return ", ".join(f"seed {u['seed']} ({'; '.join(u['problems'])})" for u in result.get("unreadable", ()))


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
    if result.get("unreadable"):
        lines.append(f"**Unreadable, left out of the means: {unreadable_text(result)}.**")
    if result.get("mixed"):
        lines.append(f"**The seeds ran different settings, so the means below mix them: "
                     f"{'; '.join(result['mixed'])}.**")
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
    rundir.atomic_write(os.path.join(out_dir, "results.csv"), _csv_text(["seed", "status"] + keys, rows),
                        kind="--out")
    epoch_keys = [k for k in (result["per_epoch"][0] if result["per_epoch"] else {}) if k not in ("epoch", "n")]
    header = ["epoch", "n"] + [f"{k}_{s}" for k in epoch_keys for s in ("mean", "sd")]
    rows = [[e["epoch"], e["n"]] + [e[k][s] for k in epoch_keys for s in ("mean", "sd")]
            for e in result["per_epoch"]]
    rundir.atomic_write(os.path.join(out_dir, "results_per_epoch.csv"), _csv_text(header, rows), kind="--out")
    rundir.atomic_write(os.path.join(out_dir, "results.md"), results_markdown(result), kind="--out")
    return result
