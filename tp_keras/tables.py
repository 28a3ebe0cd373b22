"""The paper's Tables 1–3 as Markdown, from sweep folders, with the paper's numbers beside ours.

    python -m tp_keras.tables --sweeps=sweeps/ [--out=tables.md]

`--sweeps` is a folder of sweep folders (`python -m tp_keras.sweep --out=sweeps/<cell>`) or a comma-separated
list of sweep folders and/or such parents. A sweep folder's name is its cell: the reference's config name
(`mnist_DDTPlinear`, `fashion_mnist_train_DTP`, `cifar10_DDTPConv`, ..., configs.json "final_configs") or the
same name spelled with the launcher's method names (`mnist_ddtp_linear`, `mnist_dtp_pretrained`): names are
compared lower-case with every non-alphanumeric character removed. A folder whose name matches no cell is
tried under the stem of the flagfile its sweep.json names, and otherwise listed as unplaced.

Quantities (spec §4.2), mean ± SD over the seeds with a final status (sample SD, n − 1):
  Table 1  test error at the epoch of best validation accuracy (`error_test_val_best`), %
  Table 2  training loss of the last epoch (`loss_train_last`, the running mean of the minibatch losses during
           the last epoch; the paper says "training loss after 100 epochs", and the reference's summary does not
           say which of last/min it used, spec §4.2). The minimum over epochs (`loss_train_best`) is in the
           details table.
  Table 3  CNN test error at the best-validation epoch, %; the CNN `_train` configs' last training loss beside
           it (the paper reports no CNN training loss).
Each "ours" cell reads `mean ± SD (n=seeds, E ep)`; E is the number of epochs actually run, and a cell that ran
fewer epochs than the reference config is marked † (a short-horizon run, not comparable with the paper's number).
Cells without a sweep show "–"; "/" is the paper's "not applicable" (DFA on Frozen-MNIST).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys

from tp_keras import cli, rundir
from tp_keras.sweep import epochs_text, format_mean_sd, seed_dirs, statuses_text, summarize_sweep

COLUMNS = ("MNIST", "Frozen-MNIST", "Fashion-MNIST", "CIFAR10")
ROWS = ("BP", "DDTP-linear", "DDTP-RHL", "DTPDRL", "DDTP-control", "DTP", "DTP (pre-trained)", "DFA")
CNN_ROWS = ("BP", "DDTP-linear", "DDTP-control", "DFA")
CNN_COLUMNS = ("test error", "train loss")

# Cell -> (table, column, row, variant). The names are the reference's final configs
# (/work/shared/reference/configs.json "final_configs", spec §3). A variant is an alternative config of the same
# paper cell: the reference keeps four DDTP-RHL configs per dataset and does not record which one the paper's
# DDTP-RHL entry came from (spec §7 item 7); the plain one is the row, the others get their own row when swept.
CELLS = {
    # Table 1, MNIST (5000-sample validation split)
    "mnist_BP": ("1", "MNIST", "BP", None),
    "mnist_DDTPlinear": ("1", "MNIST", "DDTP-linear", None),
    "mnist_DDTPRHL": ("1", "MNIST", "DDTP-RHL", None),
    "mnist_DDTPRHL_extrafb": ("1", "MNIST", "DDTP-RHL", "extrafb"),
    "mnist_DDTPRHL_rec": ("1", "MNIST", "DDTP-RHL", "rec"),
    "mnist_DDTPRHL_rec_extrafb": ("1", "MNIST", "DDTP-RHL", "rec_extrafb"),
    "mnist_DTPDRL": ("1", "MNIST", "DTPDRL", None),
    "mnist_DDTPControl": ("1", "MNIST", "DDTP-control", None),
    "mnist_DTP": ("1", "MNIST", "DTP", None),
    "mnist_DTP_pretrained": ("1", "MNIST", "DTP (pre-trained)", None),
    "mnist_DFA": ("1", "MNIST", "DFA", None),
    # Table 1, Frozen-MNIST (no DFA)
    "mnist_frozen_BP": ("1", "Frozen-MNIST", "BP", None),
    "mnist_frozen_DDTPlinear": ("1", "Frozen-MNIST", "DDTP-linear", None),
    "mnist_frozen_DDTPRHL": ("1", "Frozen-MNIST", "DDTP-RHL", None),
    "mnist_frozen_DDTPRHL_extrafb": ("1", "Frozen-MNIST", "DDTP-RHL", "extrafb"),
    "mnist_frozen_DDTPRHL_rec_extrafb": ("1", "Frozen-MNIST", "DDTP-RHL", "rec_extrafb"),
    "mnist_frozen_DTPDRL": ("1", "Frozen-MNIST", "DTPDRL", None),
    "mnist_frozen_DDTPControl": ("1", "Frozen-MNIST", "DDTP-control", None),
    "mnist_frozen_DTP": ("1", "Frozen-MNIST", "DTP", None),
    "mnist_frozen_DTP_pretrained": ("1", "Frozen-MNIST", "DTP (pre-trained)", None),
    # Table 1, Fashion-MNIST
    "fashion_mnist_BP": ("1", "Fashion-MNIST", "BP", None),
    "fashion_mnist_DDTPlinear": ("1", "Fashion-MNIST", "DDTP-linear", None),
    "fashion_mnist_DDTPRHL": ("1", "Fashion-MNIST", "DDTP-RHL", None),
    "fashion_mnist_DDTPRHL_extrafb": ("1", "Fashion-MNIST", "DDTP-RHL", "extrafb"),
    "fashion_mnist_DDTPRHL_rec": ("1", "Fashion-MNIST", "DDTP-RHL", "rec"),
    "fashion_mnist_DDTPRHL_rec_extrafb": ("1", "Fashion-MNIST", "DDTP-RHL", "rec_extrafb"),
    "fashion_mnist_DTPDRL": ("1", "Fashion-MNIST", "DTPDRL", None),
    "fashion_mnist_DDTPControl": ("1", "Fashion-MNIST", "DDTP-control", None),
    "fashion_mnist_DTP": ("1", "Fashion-MNIST", "DTP", None),
    "fashion_mnist_DTP_pretrained": ("1", "Fashion-MNIST", "DTP (pre-trained)", None),
    "fashion_mnist_DFA": ("1", "Fashion-MNIST", "DFA", None),
    # Table 1, CIFAR-10 MLP (cifar10_DDTPControl.py runs DDTP-linear in the reference, spec §7 item 4: the
    # details table says which method the sweep actually ran)
    "cifar10_BP": ("1", "CIFAR10", "BP", None),
    "cifar10_DDTPlinear": ("1", "CIFAR10", "DDTP-linear", None),
    "cifar10_DDTPRHL": ("1", "CIFAR10", "DDTP-RHL", None),
    "cifar10_DDTPRHL_extrafb": ("1", "CIFAR10", "DDTP-RHL", "extrafb"),
    "cifar10_DDTPRHL_rec_extrafb": ("1", "CIFAR10", "DDTP-RHL", "rec_extrafb"),
    "cifar10_DTPDRL": ("1", "CIFAR10", "DTPDRL", None),
    "cifar10_DDTPControl": ("1", "CIFAR10", "DDTP-control", None),
    "cifar10_DTP": ("1", "CIFAR10", "DTP", None),
    "cifar10_DTP_pretrained": ("1", "CIFAR10", "DTP (pre-trained)", None),
    "cifar10_DFA": ("1", "CIFAR10", "DFA", None),
    # Table 2, MNIST (`_train`: no validation set, own hyper-parameters)
    "mnist_BP_train": ("2", "MNIST", "BP", None),
    "mnist_DDTPlinear_train": ("2", "MNIST", "DDTP-linear", None),
    "mnist_DDTPRHL_train": ("2", "MNIST", "DDTP-RHL", None),
    "mnist_DTPDRL_train": ("2", "MNIST", "DTPDRL", None),
    "mnist_DDTPControl_train": ("2", "MNIST", "DDTP-control", None),
    "mnist_DTP_train": ("2", "MNIST", "DTP", None),
    "mnist_DTP_pretrained_train": ("2", "MNIST", "DTP (pre-trained)", None),
    "mnist_DFA_train": ("2", "MNIST", "DFA", None),
    # Table 2, Frozen-MNIST. There is no frozen_mnist_DTP_pretrained_train; frozen_mnist_DTP_improved_train is
    # DTP with the pre-training schedule (6 pre-training + 1 extra feedback epoch, fb wd), so it is taken as the
    # "DTP (pre-trained)" cell.
    "frozen_mnist_BP_train": ("2", "Frozen-MNIST", "BP", None),
    "frozen_mnist_DDTPlinear_train": ("2", "Frozen-MNIST", "DDTP-linear", None),
    "frozen_mnist_DDTPRHL_train": ("2", "Frozen-MNIST", "DDTP-RHL", None),
    "frozen_mnist_DTPDRL_train": ("2", "Frozen-MNIST", "DTPDRL", None),
    "frozen_mnist_DDTPControl_train": ("2", "Frozen-MNIST", "DDTP-control", None),
    "frozen_mnist_DTP_train": ("2", "Frozen-MNIST", "DTP", None),
    "frozen_mnist_DTP_improved_train": ("2", "Frozen-MNIST", "DTP (pre-trained)", None),
    # Table 2, Fashion-MNIST
    "fashion_mnist_train_BP": ("2", "Fashion-MNIST", "BP", None),
    "fashion_mnist_train_DDTPlinear": ("2", "Fashion-MNIST", "DDTP-linear", None),
    "fashion_mnist_train_DDTPRHL": ("2", "Fashion-MNIST", "DDTP-RHL", None),
    "fashion_mnist_train_DTPDRL": ("2", "Fashion-MNIST", "DTPDRL", None),
    "fashion_mnist_train_DDTPControl": ("2", "Fashion-MNIST", "DDTP-control", None),
    "fashion_mnist_train_DTP": ("2", "Fashion-MNIST", "DTP", None),
    "fashion_mnist_train_DTP_pretrained": ("2", "Fashion-MNIST", "DTP (pre-trained)", None),
    "fashion_mnist_train_DFA": ("2", "Fashion-MNIST", "DFA", None),
    # Table 2, CIFAR-10 MLP
    "cifar10_BP_train": ("2", "CIFAR10", "BP", None),
    "cifar10_DDTPlinear_train": ("2", "CIFAR10", "DDTP-linear", None),
    "cifar10_DDTPRHL_train": ("2", "CIFAR10", "DDTP-RHL", None),
    "cifar10_DTPDRL_train": ("2", "CIFAR10", "DTPDRL", None),
    "cifar10_DDTPControl_train": ("2", "CIFAR10", "DDTP-control", None),
    "cifar10_DTP_train": ("2", "CIFAR10", "DTP", None),
    "cifar10_DTP_pretrained_train": ("2", "CIFAR10", "DTP (pre-trained)", None),
    "cifar10_DFA_train": ("2", "CIFAR10", "DFA", None),
    # Table 3, CIFAR-10 CNN: test error (with validation split) and the `_train` configs' training loss
    "cifar10_BPConv": ("3", "test error", "BP", None),
    "cifar10_DDTPConv": ("3", "test error", "DDTP-linear", None),
    "cifar10_DDTPControlConv": ("3", "test error", "DDTP-control", None),
    "cifar10_DFAConv": ("3", "test error", "DFA", None),
    "cifar10_BPConv_train": ("3", "train loss", "BP", None),
    "cifar10_DDTPConv_train": ("3", "train loss", "DDTP-linear", None),
    "cifar10_DFAConv_train": ("3", "train loss", "DFA", None),
}

# Epochs of the reference config of each cell (spec §3): 100, except cifar10_BP (150) and the CNN `_train`
# configs (300). A sweep that ran fewer is marked † in the tables.
REFERENCE_EPOCHS = {name: 100 for name in CELLS}
REFERENCE_EPOCHS.update({"cifar10_BP": 150, "cifar10_BPConv_train": 300, "cifar10_DDTPConv_train": 300,
                         "cifar10_DFAConv_train": 300})

VARIANT_LABELS = {"extrafb": "extra fb", "rec": "rec", "rec_extrafb": "rec + extra fb"}

# The paper's numbers, transcribed from /work/shared/paper/theoretical_framework_for_target_propagation.txt
# (Meulemans et al., NeurIPS 2020): Table 1 and Table 3 (test error at the best-validation epoch, %, mean ± SD
# over 10 seeds, 100 epochs) and Table 2 (training loss after 100 epochs, mean ± SD over 10 seeds). None is the
# paper's "/" (not applicable: DFA on Frozen-MNIST).
# Table 2's text extraction is scrambled: the MNIST column and the Frozen-MNIST column come as two runs of 8
# values in row order (BP, DDTP-linear, DDTP-RHL, DTPDRL, DDTP-control, DTP, DTP (pre-trained), DFA; Frozen's
# DFA is "/"), then one pair per row for the last two columns. The pair order is (Fashion-MNIST, CIFAR10): it
# is the header's column order, and only this order agrees with the text ("DDTP-linear achieves a lower
# training loss after 100 epochs compared to BP on MNIST and Fashion-MNIST": 1.03e-5 < 6.46e-5 on
# Fashion-MNIST, while on CIFAR10 BP's 1.01e-7 is below DDTP-linear's 1.77e-6).
PAPER = {
    "1": {
        "MNIST": {"BP": (1.98, 0.14), "DDTP-linear": (2.04, 0.08), "DDTP-RHL": (2.10, 0.14),
                  "DTPDRL": (2.21, 0.09), "DDTP-control": (2.51, 0.08), "DTP": (2.39, 0.19),
                  "DTP (pre-trained)": (2.26, 0.18), "DFA": (2.17, 0.14)},
        "Frozen-MNIST": {"BP": (4.39, 0.13), "DDTP-linear": (6.42, 0.17), "DDTP-RHL": (5.11, 0.19),
                         "DTPDRL": (6.10, 0.17), "DDTP-control": (9.70, 0.31), "DTP": (10.64, 0.53),
                         "DTP (pre-trained)": (9.31, 0.40), "DFA": None},
        "Fashion-MNIST": {"BP": (10.74, 0.16), "DDTP-linear": (11.11, 0.35), "DDTP-RHL": (11.53, 0.31),
                          "DTPDRL": (11.22, 0.20), "DDTP-control": (11.71, 0.28), "DTP": (11.49, 0.23),
                          "DTP (pre-trained)": (11.52, 0.31), "DFA": (11.26, 0.25)},
        "CIFAR10": {"BP": (45.60, 0.50), "DDTP-linear": (50.36, 0.26), "DDTP-RHL": (51.94, 0.49),
                    "DTPDRL": (50.80, 0.43), "DDTP-control": (51.75, 0.43), "DTP": (51.74, 0.30),
                    "DTP (pre-trained)": (52.20, 0.50), "DFA": (51.28, 0.41)},
    },
    "2": {
        "MNIST": {"BP": (2.87e-8, 4.11e-8), "DDTP-linear": (1.99e-9, 1.90e-9), "DDTP-RHL": (2.29e-7, 0.56e-7),
                  "DTPDRL": (3.43e-9, 2.57e-9), "DDTP-control": (4.74e-6, 9.51e-6), "DTP": (1.28e-7, 1.04e-7),
                  "DTP (pre-trained)": (5.72e-4, 5.91e-4), "DFA": (1.57e-6, 2.10e-6)},
        "Frozen-MNIST": {"BP": (0.191, 0.019), "DDTP-linear": (0.349, 0.029), "DDTP-RHL": (0.289, 0.014),
                         "DTPDRL": (0.317, 0.016), "DDTP-control": (0.995, 0.049), "DTP": (1.184, 0.072),
                         "DTP (pre-trained)": (0.928, 0.002), "DFA": None},
        "Fashion-MNIST": {"BP": (6.46e-5, 0.25e-5), "DDTP-linear": (1.03e-5, 0.15e-5),
                          "DDTP-RHL": (3.51e-3, 0.80e-3), "DTPDRL": (1.36e-3, 0.48e-3),
                          "DDTP-control": (3.88e-3, 2.63e-3), "DTP": (4.07e-2, 0.42e-2),
                          "DTP (pre-trained)": (2.73e-2, 0.67e-2), "DFA": (1.98e-2, 0.24e-2)},
        "CIFAR10": {"BP": (1.01e-7, 0.57e-7), "DDTP-linear": (1.77e-6, 0.06e-6), "DDTP-RHL": (4.26e-2, 3.61e-2),
                    "DTPDRL": (2.13e-6, 0.83e-6), "DDTP-control": (6.14e-5, 0.92e-5), "DTP": (9.81e-5, 6.42e-5),
                    "DTP (pre-trained)": (6.77e-5, 1.89e-5), "DFA": (2.05e-5, 1.3e-5)},
    },
    "3": {
        "test error": {"BP": (24.38, 0.29), "DDTP-linear": (23.99, 0.31), "DDTP-control": (28.69, 0.87),
                       "DFA": (30.00, 0.74)},
        "train loss": {},  # not reported in the paper
    },
}

TITLES = {
    "1": "Table 1: test error (%) at the epoch of best validation accuracy",
    "2": "Table 2: training loss of the last epoch (`_train` configs, no validation set)",
    "3": "Table 3: CIFAR-10 CNN, test error (%) at the best-validation epoch; training loss of the `_train` configs",
}


def normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_NORMALIZED = {normalize(name): name for name in CELLS}
assert len(_BY_NORMALIZED) == len(CELLS), "two cell names normalize alike"


def cell_of(name: str) -> str | None:
    """The reference config name a sweep folder's name stands for, or None."""
    return _BY_NORMALIZED.get(normalize(name))


# --- Formatting -----------------------------------------------------------------------------------------------

def format_error(mean: float, sd: float | None) -> str:
    return f"{mean:.2f} %" if sd is None else f"{mean:.2f} ± {sd:.2f} %"


def format_loss(mean: float, sd: float | None) -> str:
    """0.191 ± 0.019, or (2.87 ± 4.11)e-8 with the mean's exponent for small or large values (as the paper)."""
    if mean == 0 or 0.1 <= abs(mean) < 1000:
        return f"{mean:.3f}" if sd is None else f"{mean:.3f} ± {sd:.3f}"
    exponent = math.floor(math.log10(abs(mean)))
    scale = 10.0 ** exponent
    return f"{mean / scale:.2f}e{exponent}" if sd is None else f"({mean / scale:.2f} ± {sd / scale:.2f})e{exponent}"


def _quantity(table: str, column: str) -> tuple[str, str]:
    """(summary key, kind) a table cell reports."""
    if table == "1" or (table == "3" and column == "test error"):
        return "error_test_val_best_pct", "error"
    return "loss_train_last", "loss"


def _fmt(stats_mean: float, stats_sd: float | None, kind: str) -> str:
    return format_error(stats_mean, stats_sd) if kind == "error" else format_loss(stats_mean, stats_sd)


def ours_text(entry: dict, table: str, column: str) -> str:
    """'2.04 ± 0.08 % (n=5, 100 ep)', with † for fewer epochs than the reference config, or '–'."""
    if entry is None:
        return "–"
    key, kind = _quantity(table, column)
    stats = entry["result"]["summary"].get(key) or {"mean": None, "n": 0}
    if stats["mean"] is None:
        return f"no value ({statuses_text(entry['result'])})"
    lo, hi = entry["result"]["epochs"] or (0, 0)
    ep = f"{hi} ep" if lo == hi else f"{lo}–{hi} ep"
    dagger = "†" if hi < REFERENCE_EPOCHS[entry["cell"]] else ""
    not_finished = sum(c for k, c in entry["result"]["statuses"].items() if k != "finished")
    flag = f", {not_finished} not finished" if not_finished else ""
    return f"{_fmt(stats['mean'], stats['sd'], kind)} (n={stats['n']}, {ep}{flag}){dagger}"


def paper_text(table: str, column: str, row: str) -> str:
    values = PAPER[table].get(column, {})
    if row not in values:
        return "not reported" if table == "3" else "–"
    if values[row] is None:
        return "/"
    _, kind = _quantity(table, column)
    return _fmt(values[row][0], values[row][1], kind)


# --- Collecting sweeps ----------------------------------------------------------------------------------------

def find_sweeps(spec: str) -> list[str]:
    """Sweep folders (holding seed_<S> folders) named by --sweeps: folders themselves or their parents."""
    found = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if seed_dirs(item):
            found.append(item)
        elif os.path.isdir(item):
            found += [os.path.join(item, name) for name in sorted(os.listdir(item))
                      if os.path.isdir(os.path.join(item, name)) and seed_dirs(os.path.join(item, name))]
        else:
            raise SystemExit(f"error: --sweeps: {item} is not a folder")
    return found


def collect(sweep_folders: list[str]) -> tuple[dict, list[dict], list[dict]]:
    """({(table, column, row, variant): chosen entry}, every placed entry, unplaced entries). An entry is
    {"cell", "folder", "result"}. When several folders map to one cell, the one with the most epochs, then the
    most final seeds, fills the table (all are in the details)."""
    placed, unplaced = [], []
    for folder in sweep_folders:
        result = summarize_sweep(folder)
        name = os.path.basename(os.path.normpath(folder))
        cell = cell_of(name)
        if cell is None and result.get("sweep") and result["sweep"].get("flagfile"):
            cell = cell_of(os.path.splitext(os.path.basename(result["sweep"]["flagfile"]))[0])
        entry = {"cell": cell, "folder": folder, "result": result}
        (placed if cell else unplaced).append(entry)
    chosen = {}
    for entry in placed:
        key = CELLS[entry["cell"]]
        rank = ((entry["result"]["epochs"] or (0, 0))[1], len(entry["result"]["final_seeds"]))
        if key not in chosen or rank > chosen[key][0]:
            chosen[key] = (rank, entry)
    return {k: e for k, (_, e) in chosen.items()}, placed, unplaced


# --- Markdown ------------------------------------------------------------------------------------------------

def _rows_of(table: str, chosen: dict) -> list[tuple[str, str | None]]:
    """(row, variant) in paper order; variant rows only where some variant sweep exists in this table."""
    base = CNN_ROWS if table == "3" else ROWS
    rows = []
    for row in base:
        rows.append((row, None))
        variants = sorted({k[3] for k in chosen if k[0] == table and k[2] == row and k[3] is not None},
                          key=list(VARIANT_LABELS).index)
        rows += [(row, v) for v in variants]
    return rows


def table_markdown(table: str, chosen: dict, placed: list[dict]) -> list[str]:
    columns = CNN_COLUMNS if table == "3" else COLUMNS
    lines = [f"## {TITLES[table]}", "",
             "Each cell: ours = mean ± SD (n = seeds with a final status, epochs run); paper = mean ± SD over 10 "
             "seeds, 100 epochs.", ""]
    header = ["method"] + [f"{c}: {who}" for c in columns for who in ("ours", "paper")]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    footnotes = set()
    for row, variant in _rows_of(table, chosen):
        label = row if variant is None else f"{row} ({VARIANT_LABELS[variant]})‡"
        cells = [label]
        for column in columns:
            entry = chosen.get((table, column, row, variant))
            text = ours_text(entry, table, column)
            if "†" in text:
                footnotes.add("†")
            cells += [text, paper_text(table, column, row)]
        if variant is not None:
            footnotes.add("‡")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if "†" in footnotes:
        lines.append("† fewer epochs than the reference config (100; CIFAR-10 BP 150, CNN `_train` 300): a "
                     "short-horizon result, not comparable with the paper's number.")
    if "‡" in footnotes:
        lines.append("‡ an alternative reference config of the same cell; the paper does not record which DDTP-RHL "
                     "config its number came from (spec §7 item 7), so the paper column repeats DDTP-RHL's number.")
    if table == "1":
        lines.append("CIFAR10 DDTP-control: the reference's `cifar10_DDTPControl.py` runs DDTP-linear (spec §7 "
                     "item 4); the details below say which method our sweep ran.")
    if table == "2":
        lines.append("Frozen-MNIST DTP (pre-trained): from `frozen_mnist_DTP_improved_train` (DTP with 6 "
                     "pre-training + 1 extra feedback epoch; the reference has no "
                     "`frozen_mnist_DTP_pretrained_train`).")
    mine = [e for e in placed if CELLS[e["cell"]][0] == table]
    if mine:
        lines += ["", f"Details ({len(mine)} sweep folder{'s' if len(mine) > 1 else ''}):", ""]
        lines += _details(table, mine)
    lines.append("")
    return lines


def _details(table: str, entries: list[dict]) -> list[str]:
    header = ["cell", "folder", "ran", "seeds", "epochs", "test error at best val (%)", "train loss (last)",
              "train loss (min)", "s/epoch"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for entry in sorted(entries, key=lambda e: (e["cell"], e["folder"])):
        result = entry["result"]
        config = result["config"]
        ran = "?"
        if config:
            arch = config.get("architecture")
            ran = (f"{config.get('method', '?')}{f' ({arch})' if arch and arch != 'mlp' else ''} on "
                   f"{config.get('dataset', '?')}, {config.get('precision', '?')}")
            if arch is not None and (arch == "cnn") != (table == "3"):
                ran += f" (**{arch} run in a {'CNN' if table == '3' else 'MLP'} table**)"
        seeds = f"{len(result['final_seeds'])} ({statuses_text(result)})"
        if result["other_seeds"]:
            seeds += f"; not final: {', '.join(map(str, result['other_seeds']))}"
        stats = result["summary"]
        error = stats.get("error_test_val_best_pct")
        lines.append("| " + " | ".join([
            f"`{entry['cell']}`", f"`{entry['folder']}`", ran, seeds,
            f"{epochs_text(result)} of {REFERENCE_EPOCHS[entry['cell']]}",
            format_mean_sd(error, "pct") if error else "",
            _loss_or_blank(stats.get("loss_train_last")), _loss_or_blank(stats.get("loss_train_best")),
            format_mean_sd(stats.get("s_per_epoch"), "sec")]) + " |")
    return lines


def _loss_or_blank(stats: dict | None) -> str:
    if not stats or stats["mean"] is None:
        return ""
    return format_loss(stats["mean"], stats["sd"])


def tables_markdown(sweep_folders: list[str], collected: tuple | None = None) -> str:
    chosen, placed, unplaced = collected or collect(sweep_folders)
    lines = ["# Tables 1–3: our sweeps beside the paper", "",
             f"From {len(sweep_folders)} sweep folder{'s' if len(sweep_folders) != 1 else ''} "
             "(`python -m tp_keras.tables`). Mean ± SD: sample SD (n − 1) over the seeds whose run ended "
             "(finished, diverged or pruned); \"–\": no sweep; \"/\": not applicable in the paper.", ""]
    for table in ("1", "2", "3"):
        lines += table_markdown(table, chosen, placed)
    if unplaced:
        lines += ["## Sweeps that match no paper cell", "",
                  "Name a sweep folder after its reference config (e.g. `mnist_DDTPlinear`) to place it.", ""]
        for entry in unplaced:
            result = entry["result"]
            stats = result["summary"]
            error = stats.get("error_test_val_best_pct")
            shown = f"test error {format_error(error['mean'], error['sd'])}" if error and error["mean"] is not None \
                else f"train loss {_loss_or_blank(stats.get('loss_train_last')) or '–'}"
            n = len(result["final_seeds"])
            lines.append(f"- `{entry['folder']}`: {shown}, {n} seed{'s' if n != 1 else ''}, "
                         f"{epochs_text(result)}")
        lines.append("")
    return "\n".join(lines)


@cli.guarded(interrupted_hint="no table was written")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tp_keras.tables",
                                     description="Markdown Tables 1–3 from sweep folders, with the paper's numbers.")
    parser.add_argument("--sweeps", default="sweeps", help="a folder of sweep folders, or a comma-separated list "
                                                           "of sweep folders and/or such parents (default sweeps)")
    parser.add_argument("--out", default="tables.md", help="Markdown file to write (default tables.md); - prints")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.out != "-":
        rundir.check_writable(args.out, "--out")
    try:
        folders = find_sweeps(args.sweeps)
    except SystemExit as err:
        print(err.code, file=sys.stderr)
        return 2
    chosen, placed, unplaced = collected = collect(folders)
    text = tables_markdown(folders, collected)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        rundir.atomic_write(args.out, text, kind="--out")
        print(f"[tables] {len(placed)} sweep folders placed in {len(chosen)} cells"
              + (f", {len(unplaced)} unplaced" if unplaced else "") + f"; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
