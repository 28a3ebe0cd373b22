"""The paper's facts, defined once: method labels, which methods each architecture has, the cells of Tables 1–3,
the quantity each table reports and the paper's printed numbers (Meulemans et al., NeurIPS 2020).

The reference's configurations themselves are `configs.FINAL_CONFIGS`; everything here that depends on a
configuration (its cell, its reference epoch count) is derived from it. The flagfiles (`launch/make_flagfiles.py`),
the tables (`tp_keras.tables`) and the figures (`tp_keras.figures`) read these names; nothing else spells them.
Imports no TensorFlow.

Keys: a method is this library's method name (`bp`, `ddtp_linear`, ...); a column is a dataset key (`mnist`,
`frozen_mnist`, `fashion_mnist`, `cifar10`; Table 3 has `cifar10`, the CNN's test error, and `cifar10_train`, the
training loss of its `_train` configs, which the paper does not print); a table is 1, 2 or 3.
"""
from __future__ import annotations

from typing import NamedTuple

from tp_keras.reference.configs import FINAL_CONFIGS

# ---- Methods ---------------------------------------------------------------------------------------------------

# Display names (the paper's spelling), in the paper's row order first. A method without an entry (a method added
# after the paper) is shown by its name: see `method_label`.
METHOD_LABELS = {
    "bp": "BP", "ddtp_linear": "DDTP-linear", "ddtp_rhl": "DDTP-RHL", "dtpdrl": "DTPDRL",
    "ddtp_control": "DDTP-control", "dtp": "DTP", "dtp_pretrained": "DTP (pre-trained)", "dfa": "DFA",
    "tp": "TP", "gnt": "GNT",
}
# The rows of Tables 1 and 2, in the paper's order.
TABLE_METHODS = ("bp", "ddtp_linear", "ddtp_rhl", "dtpdrl", "ddtp_control", "dtp", "dtp_pretrained", "dfa")
# The methods with a CNN (the paper's Table 3 rows: BPConvCIFAR, DDTPConvCIFAR, DDTPConvControlCIFAR,
# DFAConvCIFAR); every method has the MLP.
CNN_METHODS = ("bp", "ddtp_linear", "ddtp_control", "dfa")


def method_label(method: str) -> str:
    """The paper's name of `method`, or the name itself for a method the paper does not have."""
    return METHOD_LABELS.get(method, method)


def method_order(method: str) -> tuple:
    """Sort key: the paper's methods in METHOD_LABELS' order, then any other method by name."""
    order = list(METHOD_LABELS)
    return (order.index(method), "") if method in order else (len(order), method)


# ---- Tables ----------------------------------------------------------------------------------------------------

# Column keys → the paper's headings, per table.
COLUMNS = {"mnist": "MNIST", "frozen_mnist": "Frozen-MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR10"}
TABLE_COLUMNS = {1: COLUMNS, 2: COLUMNS, 3: {"cifar10": "test error", "cifar10_train": "train loss"}}
TABLE_ROWS = {1: TABLE_METHODS, 2: TABLE_METHODS, 3: CNN_METHODS}
TABLE_TITLES = {
    1: "Table 1: test error (%) at the epoch of best validation accuracy",
    2: "Table 2: training loss of the last epoch (`_train` configs, no validation set)",
    3: "Table 3: CIFAR-10 CNN, test error (%) at the best-validation epoch; training loss of the `_train` configs",
}
# The quantity each table reports (the summary key, and the paper's description).
TABLE_QUANTITY = {
    1: ("error_test_val_best", "test error at the epoch of best validation accuracy, 100 epochs, "
                               "mean ± SD over 10 seeds"),
    2: ("loss_train_last", "training loss after 100 epochs, trained without a validation set, mean ± SD over "
                           "10 seeds"),
    3: ("error_test_val_best", "test error at the epoch of best validation accuracy, 100 epochs, "
                               "mean ± SD over 10 seeds"),
}


def reports_error(table: int, column: str) -> bool:
    """Whether a cell reports the test error in % (Tables 1 and 3's test column), else the training loss."""
    return table == 1 or (table == 3 and column == "cifar10")


def _results(table, column, printed):
    """{method: "2.87±4.11e-8"} as printed (mantissas share the exponent) → PAPER_RESULTS entries."""
    out = {}
    for method, text in printed.items():
        mean, sd = text.split("±")
        mantissa, _, exponent = sd.partition("e")
        suffix = f"e{exponent}" if exponent else ""
        shown = f"{mean} ± {mantissa}" + (f" · 10^{exponent}" if exponent else "") + ("%" if table != 2 else "")
        out[(table, column, method)] = {"mean": float(mean + suffix), "sd": float(sd), "text": shown}
    return out


# The paper's Tables 1–3, as printed. Tables 1 and 3: test error in %. Table 2: training loss. (The text
# extraction of Table 2 lists the Frozen-MNIST column as one block and the Fashion-MNIST/CIFAR10 pairs row by row;
# the assignment below follows the row order BP, DDTP-linear, DDTP-RHL, DTPDRL, DDTP-control, DTP, DTP
# (pre-trained), DFA and agrees with the paper's text: DDTP-linear's training loss is below BP's on MNIST and
# Fashion-MNIST, while on CIFAR10 BP's is below DDTP-linear's.) The paper prints "/" for DFA on Frozen-MNIST (not
# run): no entry, see NOT_APPLICABLE.
PAPER_RESULTS = {
    **_results(1, "mnist", {"bp": "1.98±0.14", "ddtp_linear": "2.04±0.08", "ddtp_rhl": "2.10±0.14",
                            "dtpdrl": "2.21±0.09", "ddtp_control": "2.51±0.08", "dtp": "2.39±0.19",
                            "dtp_pretrained": "2.26±0.18", "dfa": "2.17±0.14"}),
    **_results(1, "frozen_mnist", {"bp": "4.39±0.13", "ddtp_linear": "6.42±0.17", "ddtp_rhl": "5.11±0.19",
                                   "dtpdrl": "6.10±0.17", "ddtp_control": "9.70±0.31", "dtp": "10.64±0.53",
                                   "dtp_pretrained": "9.31±0.40"}),
    **_results(1, "fashion_mnist", {"bp": "10.74±0.16", "ddtp_linear": "11.11±0.35", "ddtp_rhl": "11.53±0.31",
                                    "dtpdrl": "11.22±0.20", "ddtp_control": "11.71±0.28", "dtp": "11.49±0.23",
                                    "dtp_pretrained": "11.52±0.31", "dfa": "11.26±0.25"}),
    **_results(1, "cifar10", {"bp": "45.60±0.50", "ddtp_linear": "50.36±0.26", "ddtp_rhl": "51.94±0.49",
                              "dtpdrl": "50.80±0.43", "ddtp_control": "51.75±0.43", "dtp": "51.74±0.30",
                              "dtp_pretrained": "52.20±0.50", "dfa": "51.28±0.41"}),
    **_results(2, "mnist", {"bp": "2.87±4.11e-8", "ddtp_linear": "1.99±1.90e-9", "ddtp_rhl": "2.29±0.56e-7",
                            "dtpdrl": "3.43±2.57e-9", "ddtp_control": "4.74±9.51e-6", "dtp": "1.28±1.04e-7",
                            "dtp_pretrained": "5.72±5.91e-4", "dfa": "1.57±2.10e-6"}),
    **_results(2, "frozen_mnist", {"bp": "0.191±0.019", "ddtp_linear": "0.349±0.029", "ddtp_rhl": "0.289±0.014",
                                   "dtpdrl": "0.317±0.016", "ddtp_control": "0.995±0.049", "dtp": "1.184±0.072",
                                   "dtp_pretrained": "0.928±0.002"}),
    **_results(2, "fashion_mnist", {"bp": "6.46±0.25e-5", "ddtp_linear": "1.03±0.15e-5", "ddtp_rhl": "3.51±0.80e-3",
                                    "dtpdrl": "1.36±0.48e-3", "ddtp_control": "3.88±2.63e-3", "dtp": "4.07±0.42e-2",
                                    "dtp_pretrained": "2.73±0.67e-2", "dfa": "1.98±0.24e-2"}),
    **_results(2, "cifar10", {"bp": "1.01±0.57e-7", "ddtp_linear": "1.77±0.06e-6", "ddtp_rhl": "4.26±3.61e-2",
                              "dtpdrl": "2.13±0.83e-6", "ddtp_control": "6.14±0.92e-5", "dtp": "9.81±6.42e-5",
                              "dtp_pretrained": "6.77±1.89e-5", "dfa": "2.05±1.3e-5"}),
    **_results(3, "cifar10", {"bp": "24.38±0.29", "ddtp_linear": "23.99±0.31", "ddtp_control": "28.69±0.87",
                              "dfa": "30.00±0.74"}),
}
# The paper's "/" (not run): DFA on Frozen-MNIST, in Tables 1 and 2.
NOT_APPLICABLE = {(1, "frozen_mnist", "dfa"), (2, "frozen_mnist", "dfa")}


# ---- Cells: every reference config's place in the tables -------------------------------------------------------

# DDTP-RHL variants: the reference keeps up to four DDTP-RHL configs per dataset and does not record which one the
# paper's DDTP-RHL number came from; the plain config is the paper's row, a variant gets a row of its own.
# Suffix → (short label for a table row, description for a flagfile header).
RHL_VARIANTS = {
    "extrafb": ("extra fb", "extra-feedback (4 feedback-only epochs after each epoch)"),
    "rec": ("rec", "recurrent-input"),
    "rec_extrafb": ("rec + extra fb", "recurrent-input + extra-feedback"),
}


class Cell(NamedTuple):
    """Where a reference config's result goes: table, column key, method (the row) and DDTP-RHL variant or None."""

    table: int
    column: str
    method: str
    variant: str | None


def _variant(name: str) -> str | None:
    if "DDTPRHL" not in name:
        return None
    for suffix in sorted(RHL_VARIANTS, key=len, reverse=True):
        if name.endswith("_" + suffix):
            return suffix
    return None


def _cell(name: str, config: dict) -> Cell:
    if config["architecture"] == "cnn":
        return Cell(3, "cifar10_train" if config["no_val_set"] else "cifar10", config["method"], None)
    column = "frozen_mnist" if config["only_train_first_layer"] else config["dataset"]
    return Cell(2 if config["no_val_set"] else 1, column, config["method"], _variant(name))


# Every reference config (the name of its flagfile, launch/<name>.flags) → its Cell.
CELLS = {name: _cell(name, config) for name, config in FINAL_CONFIGS.items()}
# Config → (table, column, method) of the paper number it reproduces, or None (DDTP-RHL variants, CNN `_train`).
PAPER_CELLS = {name: (None if cell.variant or (cell.table, cell.column, cell.method) not in PAPER_RESULTS
                      else (cell.table, cell.column, cell.method)) for name, cell in CELLS.items()}
# The epochs of each config as the reference ships it (100, except cifar10_BP 150 and the CNN `_train` configs
# 300); a result of fewer epochs is a short-horizon run.
REFERENCE_EPOCHS = {name: config["epochs"] for name, config in FINAL_CONFIGS.items()}


def paper_number(table: int, column: str, method: str) -> tuple[float, float] | None:
    """(mean, sd) the paper prints for a cell, or None (not printed, or "/")."""
    entry = PAPER_RESULTS.get((table, column, method))
    return None if entry is None else (entry["mean"], entry["sd"])


def paper_result(name: str) -> str:
    """One line: the paper's table, cell and number for config `name`, or why it has none (flagfile headers)."""
    cell = CELLS[name]
    key = PAPER_CELLS[name]
    if key is not None:
        table, column, method = key
        where = f"Table {table}" + (f", {COLUMNS[column]}" if table != 3 else ", CIFAR10 CNN") + \
            f", {method_label(method)}"
        return f"{where}: {PAPER_RESULTS[key]['text']} ({TABLE_QUANTITY[table][1]})"
    if cell.variant:
        return (f"not in the paper: Table 1 reports one DDTP-RHL number for {COLUMNS[cell.column]} "
                f"({PAPER_RESULTS[(1, cell.column, 'ddtp_rhl')]['text']}) without recording which DDTP-RHL variant "
                f"produced it (docs/semantics.md §15.7); this config is the {RHL_VARIANTS[cell.variant][1]} variant")
    return ("not in the paper: Table 3 reports the CNN's test errors only; this is its training-loss config "
            "(no validation set), which the paper does not print")
