"""The paper's figures from saved results: alignment angles (Fig. 4), nullspace ratios (Fig. 2), output-space
arrows (README Fig. S2), and the learning curves of Table 1's runs.

Command line (each writes one PNG, or one per dataset for `alignment` and `curves`, and prints the paths):

    python -m tp_keras.figures alignment --runs=DIR1,DIR2 [--layer=5] [--window=30] --out=alignment.png
    python -m tp_keras.figures nullspace --results=nullspace.json --out=nullspace.png
    python -m tp_keras.figures output_space --out=output_space.png [--seed=93]
    python -m tp_keras.figures curves --results=results --out=launch/figures/learning_curves.png

A problem stops the command with one line `error: ...` on stderr and exit status 2. `curves` leaves out what
Table 1 leaves out, never quietly: a seed whose metrics.jsonl has a line that is not JSON (or whose summary.json
cannot be read) is a `warning:` line on stderr naming the file and line, and a note under the figure.

This is the only module of tp_keras that uses matplotlib, and it imports it lazily (`_pyplot`): training, the
tests that do not draw and every other module work without the optional `plots` extra. Nor does it import
TensorFlow at module level; only the `output_space` command loads it (through `tp_keras.paper.output_space`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings

import numpy as np
from absl import flags

from tp_keras.paper import tables
from tp_keras.paper.sweep_results import result_warnings
from tp_keras.reference import facts as paper_facts
from tp_keras.reference.facts import COLUMNS, method_label, method_order
from tp_keras.run import cli, rundir
from tp_keras.run.config import MAX_SEED, check_integer

MISSING_PLOTS_MESSAGE = 'figures need matplotlib: pip install -e ".[plots]"'

ANGLES_FILE = "angles.jsonl"
CONFIG_FILE = "config.json"


class FigureError(ValueError):
    """Unusable input for a figure; ``str(err)`` is one line naming the file or value and what is wrong."""


class MissingPlotsError(RuntimeError):
    """matplotlib is not installed (it is the optional ``plots`` extra)."""


def _pyplot():
    """matplotlib.pyplot, imported on first use, with the non-interactive Agg backend.

    The backend is only chosen when pyplot has not been imported yet, so a notebook's own backend is left alone
    (every function here only saves files)."""
    try:
        import matplotlib
    except ImportError:
        raise MissingPlotsError(MISSING_PLOTS_MESSAGE) from None
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out_path: str) -> str:
    """Saves the figure atomically (a failed save leaves no partial image, and the previous one stays); the image
    format follows the file's extension (PNG without one)."""
    plt = _pyplot()
    fmt = os.path.splitext(out_path)[1].lstrip(".").lower() or "png"
    try:
        rundir.make_folder(os.path.dirname(os.path.abspath(out_path)), "--out")
        rundir.atomic_write(out_path, lambda f: fig.savefig(f, format=fmt, dpi=120, bbox_inches="tight"),
                            kind="--out")
    finally:
        plt.close(fig)
    return out_path


# --------------------------------------------------------------------------------------------------------------
# Alignment angles (paper Fig. 4, docs/semantics.md §13.5).


def rolling_mean_std(values, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing rolling mean and standard deviation, as pandas' ``rolling(window, min_periods=1)``.

    Point i summarises values[max(0, i − window + 1) .. i], so the first points use the values there are.
    NaNs are skipped (a window of only NaNs gives NaN). The std is the sample std (ddof = 1, pandas' default),
    hence NaN where the window holds a single value, the very first point in particular.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise FigureError(f"rolling_mean_std: expected a 1-D series, got shape {values.shape}")
    if int(window) != window or window < 1:
        raise FigureError(f"window must be a positive integer, got {window!r}")
    window = min(int(window), max(1, values.size))  # a window longer than the series covers it from the start
    if values.size == 0:
        return values.copy(), values.copy()
    padded = np.concatenate([np.full(window - 1, np.nan), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)
    with warnings.catch_warnings():
        # All-NaN windows and single-value stds are NaN by definition; numpy warns about both.
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(windows, axis=1), np.nanstd(windows, axis=1, ddof=1)


@dataclasses.dataclass
class Run:
    """One training run directory: its config and its logged angle rows (empty for BP)."""

    path: str
    config: dict
    rows: list

    @property
    def method(self) -> str:
        return str(self.config["method"])

    @property
    def dataset(self) -> str:
        return str(self.config["dataset"])


def load_run(run_dir: str) -> Run:
    """Reads `config.json` and, when present, `angles.jsonl` of a run directory written by the launcher."""
    config_path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(config_path):
        what = "does not exist" if not os.path.isdir(run_dir) else f"has no {CONFIG_FILE}"
        raise FigureError(f"run directory {run_dir} {what}; pass directories written by python -m tp_keras.launch")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise FigureError(f"{config_path}: cannot read it as JSON ({err})") from None
    if not isinstance(config, dict):
        raise FigureError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    missing = [key for key in ("method", "dataset") if key not in config]
    if missing:
        raise FigureError(f"{config_path}: missing {', '.join(missing)}")
    rows = []
    angles_path = os.path.join(run_dir, ANGLES_FILE)
    if os.path.isfile(angles_path):
        with open(angles_path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise FigureError(f"{angles_path}:{number}: not a JSON object ({err.msg})") from None
                if not isinstance(row, dict) or not row.get("bp_angle"):
                    raise FigureError(f"{angles_path}:{number}: expected an object with a non-empty bp_angle list")
                rows.append(row)
    return Run(path=run_dir, config=config, rows=rows)


def _angle(value) -> float:
    return np.nan if value is None else float(value)


def _run_series(run: Run, layer: int | None) -> tuple[int, dict]:
    """(layer, {iteration: (bp angle, gnt angle)}) of one run at a 1-based hidden layer (None: the last one).

    A later row at the same iteration replaces an earlier one (a resumed run logs it again)."""
    angles_path = os.path.join(run.path, ANGLES_FILE)
    num_layers = len(run.rows[0]["bp_angle"])
    if any(len(row["bp_angle"]) != num_layers for row in run.rows):
        raise FigureError(f"{angles_path}: rows disagree on the number of layers in bp_angle")
    hidden = num_layers - 1
    if hidden < 1:
        raise FigureError(f"{angles_path}: the network has no hidden layer to plot")
    if layer is None:
        layer = hidden
    elif not 1 <= layer <= hidden:
        raise FigureError(f"layer {layer} is out of range for {run.path}: valid hidden layers are 1..{hidden} "
                          f"(layer {num_layers} is the output layer, which the figure omits)")
    series = {}
    for index, row in enumerate(run.rows):
        if "iteration" in row:
            iteration = int(row["iteration"])
        elif "log_interval" in run.config:  # the reference's x axis: log counter × interval (docs/semantics.md §13.5)
            iteration = index * int(run.config["log_interval"])
        else:
            raise FigureError(f"{angles_path}: rows have no iteration and {CONFIG_FILE} no log_interval")
        gnt = row.get("gnt_angle") or []
        if gnt and len(gnt) != hidden:
            raise FigureError(f"{angles_path}: gnt_angle has {len(gnt)} values, expected one per hidden layer "
                              f"({hidden})")
        series[iteration] = (_angle(row["bp_angle"][layer - 1]), _angle(gnt[layer - 1]) if gnt else np.nan)
    return layer, series


def alignment_curves(run_dirs, *, layer: int | None = None) -> dict:
    """The data of the alignment figure: per dataset, per method, the seed-averaged angle series of one layer.

    Runs of the same method and dataset (different seeds) are averaged point by point over the iterations that
    all of them logged (a NaN angle is left out of its point's mean). Runs without angles (BP) are skipped.

    Args:
      run_dirs: run directories written by the launcher.
      layer: 1-based hidden layer; None for the last hidden layer.

    Returns:
      {dataset: {"layer": int, "skipped": [run dirs without angles],
                 "methods": {method: {"iteration": (n,) int array, "bp_angle": (n,), "gnt_angle": (n,) (NaN where
                                      no GNT angle was logged), "seeds": [...], "runs": [...]}}}}
      with every dataset that has at least one run with angles, in sorted order.

    Raises:
      FigureError: a directory without config.json, malformed angles, a layer out of range, runs of one dataset
        with different depths and no explicit layer, seeds without a common log point, or no run with angles.
    """
    run_dirs = [os.fspath(d) for d in run_dirs]
    if not run_dirs:
        raise FigureError("no run directories given")
    runs = [load_run(d) for d in run_dirs]
    with_angles = [r for r in runs if r.rows]
    if not with_angles:
        raise FigureError(f"no run with angles among {', '.join(run_dirs)} (BP runs log none); pass the run "
                          f"directories of target-propagation methods")
    grouped: dict = {}
    for run in with_angles:
        grouped.setdefault(run.dataset, {}).setdefault(run.method, []).append(run)
    result = {}
    for dataset in sorted(grouped):
        layers_used = set()
        methods = {}
        for method in sorted(grouped[dataset], key=method_order):
            group = grouped[dataset][method]
            series = []
            for run in group:
                run_layer, run_series = _run_series(run, layer)
                layers_used.add(run_layer)
                series.append(run_series)
            common = sorted(set.intersection(*(set(s) for s in series)))
            if not common:
                raise FigureError(f"the {method} runs on {dataset} ({', '.join(r.path for r in group)}) share no "
                                  f"logged iteration, so their seeds cannot be averaged")
            stacked = np.array([[s[i] for i in common] for s in series])  # (runs, points, 2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN points (no GNT angle) stay NaN
                mean = np.nanmean(stacked, axis=0)
            methods[method] = {"iteration": np.array(common, dtype=np.int64), "bp_angle": mean[:, 0],
                               "gnt_angle": mean[:, 1], "seeds": [r.config.get("seed") for r in group],
                               "runs": [r.path for r in group]}
        if len(layers_used) > 1:
            raise FigureError(f"the runs on {dataset} have different depths (last hidden layers "
                              f"{', '.join(map(str, sorted(layers_used)))}); choose the layer explicitly")
        skipped = [r.path for r in runs if not r.rows and r.dataset == dataset]
        result[dataset] = {"layer": layers_used.pop(), "methods": methods, "skipped": skipped}
    return result


def _dataset_path(out_path: str, dataset: str) -> str:
    root, ext = os.path.splitext(out_path)
    return f"{root}_{dataset}{ext or '.png'}"


def alignment_figure(run_dirs, out_path, *, layer: int | None = None, window: int = 30) -> list[str]:
    """Angles of each method's updates with BP (a) and with GNT (b) over training, paper Fig. 4 style.

    One curve per method (seeds averaged, see `alignment_curves`), smoothed by a trailing rolling mean over
    `window` log points with a ± rolling-std band. Runs without angles (BP) are skipped with a note under the
    plot. Runs of several datasets give one PNG per dataset, `out_path` with `_<dataset>` before the extension.

    Returns the written paths.
    """
    out_path = os.fspath(out_path)
    if int(window) != window or window < 1:
        raise FigureError(f"window must be a positive integer, got {window!r}")
    data = alignment_curves(run_dirs, layer=layer)
    plt = _pyplot()
    written = []
    for dataset, entry in data.items():
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        panels = ((axes[0], "bp_angle", "(a) angle with BP"), (axes[1], "gnt_angle", "(b) angle with GNT"))
        for ax, key, title in panels:
            drawn = 0
            for number, (method, curve) in enumerate(entry["methods"].items()):
                values = curve[key]
                if np.all(np.isnan(values)):
                    continue
                mean, std = rolling_mean_std(values, window)
                std = np.nan_to_num(std)  # a one-value window has no spread: draw no band there
                color = f"C{number % 10}"
                ax.plot(curve["iteration"], mean, color=color, lw=1.5, label=method_label(method))
                ax.fill_between(curve["iteration"], mean - std, mean + std, color=color, alpha=0.2, lw=0)
                drawn += 1
            ax.set_title(title)
            ax.set_xlabel("training iteration")
            ax.set_ylabel("angle (degrees)")
            ax.set_ylim(bottom=0)
            if drawn:
                ax.legend(frameon=False)
            else:
                ax.text(0.5, 0.5, "no angles logged", transform=ax.transAxes, ha="center", va="center")
        fig.suptitle(f"{dataset}: hidden layer {entry['layer']} (rolling mean ± SD over {window} logged batches)")
        if entry["skipped"]:
            names = ", ".join(os.path.basename(os.path.normpath(p)) for p in entry["skipped"])
            fig.text(0.01, -0.02, f"skipped (no angles logged, e.g. BP): {names}", fontsize=8, ha="left")
        path = out_path if len(data) == 1 else _dataset_path(out_path, dataset)
        written.append(_save(fig, path))
    return written


# --------------------------------------------------------------------------------------------------------------
# Learning curves of Table 1's runs: test error against epoch, every method, one figure per dataset.


def _collect_results(results_dir) -> tuple:
    """tables.collect of a results folder: (chosen, placed, unplaced)."""
    try:
        return tables.collect(tables.find_sweeps(os.fspath(results_dir), "--results"))
    except SystemExit as err:
        raise FigureError(str(err.code).removeprefix("error: ")) from None


def learning_curves(results_dir, collected: tuple | None = None) -> dict:
    """{dataset: {method: {"cell", "epoch", "mean", "sd", "n", "unreadable"}}} from a results folder
    (results/<cell>/seed_<S>/metrics.jsonl, the cell a Table 1 config's name): per epoch ≥ 1, the test error in %
    (100 · (1 − test_acc)), mean and sample SD (NaN for one seed) over the seeds with a final status, as Table 1
    counts them, and their number; "unreadable": the seeds left out because a file of theirs (a metrics.jsonl line,
    summary.json) cannot be read, as Table 1 leaves them out (`unreadable_runs` names the files). DDTP-RHL variants
    and cells of other tables are left out; datasets and methods in Table 1's order. `collected`: the folder as
    `tables.collect` read it, when the caller has it."""
    chosen, _, _ = collected or _collect_results(results_dir)
    curves = {}
    for cell, entry in chosen.items():
        per_epoch = [e for e in entry["result"]["per_epoch"] if (e.get("test_error_pct") or {}).get("mean") is not None]
        if cell.table != 1 or cell.variant or not per_epoch or entry["result"].get("mixed"):
            continue  # a cell whose seeds ran different settings has no curve, as it has no mean in Table 1
        errors = [e["test_error_pct"] for e in per_epoch]
        curves.setdefault(cell.column, {})[cell.method] = {
            "cell": entry["cell"], "epoch": np.array([e["epoch"] for e in per_epoch]),
            "mean": np.array([e["mean"] for e in errors], dtype=np.float64),
            "sd": np.array([np.nan if e["sd"] is None else e["sd"] for e in errors], dtype=np.float64),
            "n": np.array([e["n"] for e in errors]), "unreadable": list(entry["result"]["unreadable_seeds"])}
    columns = list(paper_facts.COLUMNS)
    return {dataset: dict(sorted(curves[dataset].items(), key=lambda kv: method_order(kv[0])))
            for dataset in sorted(curves, key=columns.index)}


def unreadable_runs(collected: tuple) -> dict:
    """{dataset: ["<cell> seed S", "<cell> (mixed settings)", ...]}: what the curves of Table 1's cells leave out:
    seeds with a file that cannot be read, and cells whose seeds ran different settings."""
    chosen = collected[0]
    left = {}
    for cell, entry in chosen.items():
        if cell.table == 1 and not cell.variant:
            left.setdefault(cell.column, []).extend(f"{entry['cell']} seed {s}"
                                                    for s in entry["result"]["unreadable_seeds"])
            if entry["result"].get("mixed"):
                left[cell.column].append(f"{entry['cell']} (mixed settings)")
    return {dataset: seeds for dataset, seeds in left.items() if seeds}


def learning_curves_figure(results_dir, out_path) -> list[str]:
    """One PNG per dataset, `out_path` with `_<dataset>` before the extension: the test error of every method
    against epoch (seed mean, ± SD band where there are several seeds), from `learning_curves`. Returns the paths.

    A seed whose files cannot be read (a metrics.jsonl line that is not JSON, a damaged summary.json) is never
    dropped quietly: one `warning:` line per file and line on stderr, and a note under the figure naming it."""
    out_path = os.fspath(out_path)
    collected = _collect_results(results_dir)
    for entry in collected[1] + collected[2]:
        for line in result_warnings(entry["result"]):
            print(line, file=sys.stderr)
    left_out = unreadable_runs(collected)
    data = learning_curves(results_dir, collected)
    if not data:
        raise FigureError(f"{os.fspath(results_dir)}: no Table 1 cell with a finished seed "
                          "(expected <cell>/seed_<S>/metrics.jsonl and summary.json, e.g. mnist_BP/seed_42)")
    plt = _pyplot()
    written = []
    for dataset, methods in data.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for number, (method, curve) in enumerate(methods.items()):
            color = f"C{number % 10}"
            seeds = int(curve["n"].max())
            bad = f", {len(curve['unreadable'])} unreadable" if curve["unreadable"] else ""
            ax.plot(curve["epoch"], curve["mean"], color=color, lw=1.3,
                    label=f"{method_label(method)} (n={seeds}{bad})")
            if seeds > 1:
                band = np.nan_to_num(curve["sd"])
                ax.fill_between(curve["epoch"], curve["mean"] - band, curve["mean"] + band, color=color, alpha=0.15,
                                lw=0)
        lowest = min(float(np.nanmin(c["mean"])) for c in methods.values())
        # Zoom on convergence: the first epochs' errors would flatten every curve at the bottom.
        top = max(float(c["mean"][min(2, len(c["mean"]) - 1)]) for c in methods.values())
        ax.set_ylim(0.9 * lowest, max(top, 1.1 * lowest))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{COLUMNS.get(dataset, dataset)}: test error per epoch (mean over seeds)")
        ax.legend(frameon=False, fontsize=8, ncol=2)
        ax.grid(alpha=0.3)
        if left_out.get(dataset):
            fig.text(0.01, -0.02, f"left out (see the warnings on stderr): {', '.join(left_out[dataset])}",
                     fontsize=8, ha="left")
        written.append(_save(fig, _dataset_path(out_path, dataset)))
    return written


# --------------------------------------------------------------------------------------------------------------
# Nullspace bars (paper Fig. 2, docs/semantics.md §13.6).


def _load_json(source, what: str):
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, encoding="utf-8") as f:
                return json.load(f)
        except OSError as err:
            path = os.fspath(source)
            raise FigureError(f"cannot read the {what} file {path}: {rundir.reason(err, path)}") from None
        except json.JSONDecodeError as err:
            raise FigureError(f"{os.fspath(source)}: not JSON ({err.msg} at line {err.lineno})") from None
    return source


def nullspace_figure(results, out_path) -> str:
    """Bar chart of ‖P_null ΔW_ℓ‖ / ‖ΔW_ℓ‖ per method with SD error bars (paper Fig. 2).

    Args:
      results: {"layer": ℓ, "methods": {name: {"label": str, "mean": float, "std": float, "n": int}}}, or the
        path of a JSON file holding it ("label" defaults to the method's display name, "n" is optional).
      out_path: the PNG to write.

    Returns out_path.
    """
    out_path = os.fspath(out_path)
    results = _load_json(results, "nullspace results")
    if not isinstance(results, dict) or "layer" not in results or not results.get("methods"):
        raise FigureError('nullspace results need {"layer": l, "methods": {name: {"mean": m, "std": s}, ...}}')
    methods = results["methods"]
    if not isinstance(methods, dict):
        raise FigureError("nullspace results: methods must be an object mapping a method name to its statistics")
    names, means, stds, counts = [], [], [], []
    for key, stats in methods.items():
        try:
            mean, std = float(stats["mean"]), float(stats["std"])
        except (TypeError, KeyError, ValueError):
            raise FigureError(f"nullspace results: method {key!r} needs numeric mean and std") from None
        names.append(str(stats.get("label") or method_label(key)))
        means.append(mean)
        stds.append(std)
        counts.append(stats.get("n"))
    layer = results["layer"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 4))
    positions = np.arange(len(names))
    ax.bar(positions, means, yerr=stds, capsize=6, width=0.6,
           color=[f"C{i % 10}" for i in range(len(names))], error_kw={"elinewidth": 1.2})
    ax.set_xticks(positions)
    ax.set_xticklabels([name if n is None else f"{name}\n(n = {n})" for name, n in zip(names, counts)])
    ax.set_ylabel(f"‖P_null ΔW_{layer}‖ / ‖ΔW_{layer}‖")
    top = max(m + s for m, s in zip(means, stds))
    ax.set_ylim(0.0, max(1.0, 1.08 * top))
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out_path)


# --------------------------------------------------------------------------------------------------------------
# Output-space arrows (docs/semantics.md §13.7).

_OUTPUT_SPACE_KEYS = ("y", "label", "gnt_arrow", "bp_arrow", "grid_y1", "grid_y2", "loss_grid")


def output_space_figure(data: dict, out_path) -> str:
    """MSE contours in the (y_1, y_2) plane with the label and the GNT (blue) and BP (red) output steps drawn
    from the current output y; `data` is the dict of `tp_keras.paper.output_space.compute()`. Returns out_path."""
    out_path = os.fspath(out_path)
    missing = [k for k in _OUTPUT_SPACE_KEYS if k not in data]
    if missing:
        raise FigureError(f"output-space data lacks {', '.join(missing)} (expected the dict of "
                          f"tp_keras.paper.output_space.compute())")
    y, label = np.asarray(data["y"], float), np.asarray(data["label"], float)
    plt = _pyplot()
    from matplotlib.lines import Line2D
    fig, ax = plt.subplots(figsize=(5.5, 5))
    contours = ax.contour(data["grid_y1"], data["grid_y2"], data["loss_grid"], levels=12, colors="0.55",
                          linewidths=0.8)
    ax.clabel(contours, fontsize=7, fmt="%.2g")
    arrows = (("gnt_arrow", "tab:blue", "GNT"), ("bp_arrow", "tab:red", "BP"))
    for key, color, _ in arrows:
        tip = y + np.asarray(data[key], float)
        ax.annotate("", xy=tuple(tip), xytext=tuple(y),
                    arrowprops={"arrowstyle": "-|>", "color": color, "lw": 2, "shrinkA": 0, "shrinkB": 0})
    ax.plot(*y, "o", color="black", ms=5)
    ax.plot(*label, "*", color="tab:green", ms=14)
    handles = [Line2D([], [], color=color, lw=2, label=name) for _, color, name in arrows]
    handles += [Line2D([], [], marker="o", ls="", color="black", label="output y"),
                Line2D([], [], marker="*", ls="", ms=12, color="tab:green", label="label")]
    ax.legend(handles=handles, loc="best", fontsize=9)
    ax.set_xlabel("output y_1")
    ax.set_ylabel("output y_2")
    ax.set_aspect("equal")
    ax.set_title("one step in output space (MSE contours)")
    return _save(fig, out_path)


# --------------------------------------------------------------------------------------------------------------
# Command line. The flags live in their own FlagValues so that importing this module next to the launcher
# (which defines --seed too) cannot clash.

COMMANDS = ("alignment", "nullspace", "output_space", "curves")
_FLAGS = flags.FlagValues()
flags.DEFINE_list("runs", None, "alignment: comma-separated run directories.", flag_values=_FLAGS)
flags.DEFINE_integer("layer", None, "alignment: 1-based hidden layer (default: the last hidden layer).",
                     flag_values=_FLAGS)
flags.DEFINE_integer("window", 30, "alignment: rolling window in log points.", flag_values=_FLAGS)
flags.DEFINE_string("results", None, "nullspace: JSON file of per-method ratio statistics; curves: a results folder "
                    "(<cell>/seed_<S>/metrics.jsonl and summary.json).", flag_values=_FLAGS)
flags.DEFINE_integer("seed", 93, "output_space: seed of the data and the student.", flag_values=_FLAGS)
flags.DEFINE_string("out", None, "The PNG to write.", flag_values=_FLAGS)
_COMMAND_FLAGS = {"alignment": ("runs", "layer", "window"), "nullspace": ("results",), "output_space": ("seed",),
                  "curves": ("results",)}
_REQUIRED = {"alignment": ("runs", "out"), "nullspace": ("results", "out"), "output_space": ("out",),
             "curves": ("results", "out")}


def _usage() -> str:
    commands = "\n".join(f"  python -m tp_keras.figures {c} {_example(c)}" for c in COMMANDS)
    return f"usage:\n{commands}\n\nflags:\n{_FLAGS.get_help(include_special_flags=False)}"


def _run_command(command: str) -> list[str]:
    rundir.check_writable(_FLAGS.out, "--out")
    if command == "alignment":
        return alignment_figure(_FLAGS.runs, _FLAGS.out, layer=_FLAGS.layer, window=_FLAGS.window)
    if command == "nullspace":
        return [nullspace_figure(_FLAGS.results, _FLAGS.out)]
    if command == "curves":
        return learning_curves_figure(_FLAGS.results, _FLAGS.out)
    _pyplot()  # fail on a missing matplotlib before spending seconds on TensorFlow
    from tp_keras.paper.output_space import compute
    check_integer("seed", _FLAGS.seed, 0, MAX_SEED, example=93)
    return [output_space_figure(compute(seed=_FLAGS.seed), _FLAGS.out)]


@cli.guarded(user_errors=(FigureError, MissingPlotsError), interrupted_hint="no figure was written")
def main(argv=None) -> int:
    """`python -m tp_keras.figures <command> --flags`; returns 0, or exits with status 2 and one error line."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
        print(_usage())
        return 0
    _FLAGS.unparse_flags()  # main may run more than once in a process (tests): start from the defaults
    try:
        rest = _FLAGS(argv)
    except flags.Error as err:
        cli.fail(str(err).splitlines()[0])
    if len(rest) < 2:
        cli.fail(f"missing command: python -m tp_keras.figures <command> --flags, command one of {', '.join(COMMANDS)}")
    command = rest[1]
    if command not in COMMANDS:
        cli.fail(f"unknown command {command!r}: choose one of {', '.join(COMMANDS)}")
    if len(rest) > 2:
        cli.fail(f"unexpected argument {rest[2]!r}: flags take the form --name=value")
    for name in ("runs", "layer", "window", "results", "seed"):
        if _FLAGS[name].present and name not in _COMMAND_FLAGS[command]:
            cli.fail(f"--{name} does not apply to {command}")
    missing = [f"--{name}" for name in _REQUIRED[command] if not getattr(_FLAGS, name)]
    if missing:
        cli.fail(f"{command} needs {' and '.join(missing)}, e.g. {_example(command)}")
    paths = _run_command(command)
    for path in paths:
        print(path)
    return 0


def _example(command: str) -> str:
    return {
        "alignment": "--runs=runs/a,runs/b --out=alignment.png",
        "nullspace": "--results=nullspace.json --out=nullspace.png",
        "output_space": "--out=output_space.png",
        "curves": "--results=results --out=launch/figures/learning_curves.png",
    }[command]


if __name__ == "__main__":
    sys.exit(main())
