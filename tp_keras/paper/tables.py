"""The paper's Tables 1–3 as Markdown, from sweep folders, with the paper's numbers beside ours.

    python -m tp_keras.tables --sweeps=sweeps/ [--out=tables.md]
    python -m tp_keras.tables --results=results [--out=-]     # Table 1's MNIST and Fashion-MNIST columns

`--results` is the repository's folder of 100-epoch runs (`results/<cell>/seed_<S>/summary.json` and
`metrics.jsonl`), laid out like a folder of sweep folders; it renders the README's compact Table 1: ours as
mean ± SD (n seeds), the paper's beside it, ▲/▼ where ours is more than one paper SD above/below the paper's
mean, "missing" where no seed of the cell has ended.

`--sweeps` is a folder of sweep folders (`python -m tp_keras.sweep --out=sweeps/<cell>`) or a comma-separated
list of sweep folders and/or such parents. A sweep folder's name is its cell: the reference's config name
(`mnist_DDTPlinear`, `fashion_mnist_train_DTP`, `cifar10_DDTPConv`, ...: the file names of the reference's
`final_configs/`) or the same name spelled with the launcher's method names (`mnist_ddtp_linear`,
`mnist_dtp_pretrained`): names are compared lower-case with every non-alphanumeric character removed. A folder whose
name matches no cell is tried under the stem of the flagfile its sweep.json names, and otherwise listed as unplaced.

Quantities (docs/semantics.md §10), mean ± SD over the seeds with a final status (sample SD, n − 1):
  Table 1  test error at the epoch of best validation accuracy (`error_test_val_best`), %
  Table 2  training loss of the last epoch (`loss_train_last`, the running mean of the minibatch losses during
           the last epoch; the paper says "training loss after 100 epochs", and the reference's summary does not
           say which of last/min it used, docs/semantics.md §10). The minimum over epochs (`loss_train_best`) is in the
           details table.
  Table 3  CNN test error at the best-validation epoch, %; the CNN `_train` configs' last training loss beside
           it (the paper reports no CNN training loss).
Each "ours" cell reads `mean ± SD (n=seeds, E ep)`; E is the number of epochs actually run, and a cell that ran
fewer epochs than the reference config is marked † (a short-horizon run, not comparable with the paper's number).
Cells without a sweep show "–"; "/" is the paper's "not applicable" (DFA on Frozen-MNIST).

Nothing is mixed or dropped quietly: a seed whose summary.json, config.json or a metrics.jsonl line cannot be read
is left out of n, the cell says "1 unreadable§" and a § note under the table names the file; a sweep folder whose
seeds ran different settings shows "mixed settings¶" instead of a mean, with a ¶ note; both are also `warning:`
lines on stderr. A --results or --sweeps that names no folder, or folders without sweeps, and an unknown option
stop the command in one line naming the fix (exit status 2).
"""
from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys

from tp_keras.reference import facts as paper_facts
from tp_keras.reference.facts import method_label
from tp_keras.paper.sweep_results import (epochs_text, format_mean_sd, seed_dirs, statuses_text, summarize_sweep,
                                          result_warnings, unreadable_text)
from tp_keras.run import cli, rundir

# Cells, the paper's numbers, labels and reference epochs: one source, paper_facts. A cell is a reference config's
# name (the flagfile's); several configs of one paper cell (the DDTP-RHL variants) get a row each when present.
CELLS = paper_facts.CELLS
REFERENCE_EPOCHS = paper_facts.REFERENCE_EPOCHS


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


def _quantity(table: int, column: str) -> tuple[str, str]:
    """(summary key, kind) a table cell reports."""
    if paper_facts.reports_error(table, column):
        return "error_test_val_best_pct", "error"
    return "loss_train_last", "loss"


def _fmt(stats_mean: float, stats_sd: float | None, kind: str) -> str:
    return format_error(stats_mean, stats_sd) if kind == "error" else format_loss(stats_mean, stats_sd)


UNREADABLE_MARK = "§"
MIXED_MARK = "¶"
MIXED_TEXT = f"mixed settings{MIXED_MARK}"


def _unreadable_part(result: dict) -> str:
    """', 1 unreadable§' for a sweep with seeds whose files cannot be read (left out of n), else ''."""
    count = len(result.get("unreadable_seeds") or ())
    return f", {count} unreadable{UNREADABLE_MARK}" if count else ""


def ours_text(entry: dict, table: int, column: str) -> str:
    """'2.04 ± 0.08 % (n=5, 100 ep)', with † for fewer epochs than the reference config, ', 1 unreadable§' for
    seeds left out because a file of theirs cannot be read, or '–'."""
    if entry is None:
        return "–"
    if entry["result"].get("mixed"):  # a mean over different settings means nothing: none is shown
        return MIXED_TEXT
    key, kind = _quantity(table, column)
    stats = entry["result"]["summary"].get(key) or {"mean": None, "n": 0}
    if stats["mean"] is None:
        return f"no value ({statuses_text(entry['result'])}{_unreadable_part(entry['result'])})"
    lo, hi = entry["result"]["epochs"] or (0, 0)
    ep = f"{hi} ep" if lo == hi else f"{lo}–{hi} ep"
    dagger = "†" if hi < REFERENCE_EPOCHS[entry["cell"]] else ""
    not_finished = sum(c for k, c in entry["result"]["statuses"].items() if k != "finished")
    flag = f", {not_finished} not finished" if not_finished else ""
    return f"{_fmt(stats['mean'], stats['sd'], kind)} (n={stats['n']}, {ep}{flag}{_unreadable_part(entry['result'])})" \
        f"{dagger}"


def paper_text(table: int, column: str, method: str) -> str:
    if (table, column, method) in paper_facts.NOT_APPLICABLE:
        return "/"
    number = paper_facts.paper_number(table, column, method)
    if number is None:
        return "not reported" if table == 3 else "–"
    return _fmt(*number, _quantity(table, column)[1])


# --- Collecting sweeps ----------------------------------------------------------------------------------------

_FOLDER_FIX = {
    "--results": "run from the repository's root (it holds results/) or name the results folder, e.g. "
                 "--results=path/to/results",
    "--sweeps": "name a folder of sweep folders, e.g. --sweeps=sweeps (python -m tp_keras.sweep "
                "--out=sweeps/<cell> writes one)",
}


def find_sweeps(spec: str, flag: str = "--sweeps") -> list[str]:
    """Sweep folders (holding seed_<S> folders) named by `flag`: folders themselves or their parents. A name that
    is no folder stops with SystemExit("error: ...; <fix>")."""
    found = []
    fix = _FOLDER_FIX.get(flag, f"name the folder with {flag}=DIR")
    items = [s.strip() for s in spec.split(",") if s.strip()]
    for item in items:
        if seed_dirs(item):
            found.append(item)
        elif os.path.isdir(item):
            found += [os.path.join(item, name) for name in sorted(os.listdir(item))
                      if os.path.isdir(os.path.join(item, name)) and seed_dirs(os.path.join(item, name))]
        elif os.path.lexists(item):
            raise SystemExit(f"error: {flag}={item} is a file, not a folder; {fix}")
        else:
            raise SystemExit(f"error: {flag}={item}: no such folder; {fix}")
    return found


def collect(sweep_folders: list[str]) -> tuple[dict, list[dict], list[dict]]:
    """({Cell: chosen entry}, every placed entry, unplaced entries). An entry is
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

def _rows_of(table: int, chosen: dict) -> list[tuple[str, str | None]]:
    """(method, variant) in paper order; variant rows only where some variant sweep exists in this table."""
    rows = []
    for method in paper_facts.TABLE_ROWS[table]:
        rows.append((method, None))
        variants = sorted({k.variant for k in chosen if k.table == table and k.method == method and k.variant},
                          key=list(paper_facts.RHL_VARIANTS).index)
        rows += [(method, v) for v in variants]
    return rows


def _row_label(method: str, variant: str | None) -> str:
    return method_label(method) if variant is None else \
        f"{method_label(method)} ({paper_facts.RHL_VARIANTS[variant][0]})‡"


def table_markdown(table: int, chosen: dict, placed: list[dict]) -> list[str]:
    columns = paper_facts.TABLE_COLUMNS[table]
    lines = [f"## {paper_facts.TABLE_TITLES[table]}", "",
             "Each cell: ours = mean ± SD (n = seeds with a final status, epochs run); paper = mean ± SD over 10 "
             "seeds, 100 epochs.", ""]
    header = ["method"] + [f"{label}: {who}" for label in columns.values() for who in ("ours", "paper")]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    footnotes = set()
    for method, variant in _rows_of(table, chosen):
        cells = [_row_label(method, variant)]
        for column in columns:
            entry = chosen.get(paper_facts.Cell(table, column, method, variant))
            text = ours_text(entry, table, column)
            if "†" in text:
                footnotes.add("†")
            cells += [text, paper_text(table, column, method)]
        if variant is not None:
            footnotes.add("‡")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += _footnotes(footnotes)
    lines += _unreadable_notes([e for e in placed if CELLS[e["cell"]].table == table])
    if table == 1:
        lines.append("CIFAR10 DDTP-control: the reference's `cifar10_DDTPControl.py` runs DDTP-linear "
                     "(docs/semantics.md §15.4); the details below say which method our sweep ran.")
    if table == 2:
        lines.append("Frozen-MNIST DTP (pre-trained): from `frozen_mnist_DTP_improved_train` (DTP with 6 "
                     "pre-training + 1 extra feedback epoch; the reference has no "
                     "`frozen_mnist_DTP_pretrained_train`).")
    mine = [e for e in placed if CELLS[e["cell"]].table == table]
    if mine:
        lines += ["", f"Details ({len(mine)} sweep folder{'s' if len(mine) > 1 else ''}):", ""]
        lines += _details(table, mine)
    lines.append("")
    return lines


def _unreadable_notes(entries: list[dict]) -> list[str]:
    """§: the seeds of these sweeps that were left out of n because a file of theirs cannot be read, by file;
    ¶: the sweeps whose seeds ran different settings."""
    entries = sorted(entries, key=lambda e: e["folder"])
    damaged = [e for e in entries if e["result"].get("unreadable")]
    mixed = [e for e in entries if e["result"].get("mixed")]
    lines = []
    if damaged:
        lines.append(f"{UNREADABLE_MARK} left out of n, a file of theirs cannot be read (repair or delete it, or run "
                     "the seed again): " + "; ".join(f"`{e['folder']}`: {unreadable_text(e['result'])}"
                                                     for e in damaged) + ".")
    if mixed:
        lines.append(f"{MIXED_MARK} the seeds ran different settings, so no mean is shown (sweep each setting into "
                     "its own folder): " + "; ".join(f"`{e['folder']}`: {'; '.join(e['result']['mixed'])}"
                                                    for e in mixed) + ".")
    return lines


def _footnotes(marks: set) -> list[str]:
    lines = []
    if "†" in marks:
        lines.append("† fewer epochs than the reference config (100; CIFAR-10 BP 150, CNN `_train` 300): a "
                     "short-horizon result, not comparable with the paper's number.")
    if "‡" in marks:
        lines.append("‡ an alternative reference config of the same cell; the paper does not record which DDTP-RHL "
                     "config its number came from (docs/semantics.md §15.7), so the paper column repeats "
                     "DDTP-RHL's number.")
    return lines


def _details(table: int, entries: list[dict]) -> list[str]:
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
            if arch is not None and (arch == "cnn") != (table == 3):
                ran += f" (**{arch} run in a {'CNN' if table == 3 else 'MLP'} table**)"
        seeds = f"{len(result['final_seeds'])} ({statuses_text(result)})"
        if result["other_seeds"]:
            seeds += f"; not final: {', '.join(map(str, result['other_seeds']))}"
        if result.get("unreadable_seeds"):
            seeds += f"; unreadable{UNREADABLE_MARK}: {', '.join(map(str, result['unreadable_seeds']))}"
        if result.get("mixed"):
            seeds += f"; {MIXED_TEXT}"
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
    for table in paper_facts.TABLE_TITLES:
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
                         f"{epochs_text(result)}" + (f"; unreadable, left out: {unreadable_text(result)}"
                                                     if result.get("unreadable") else "")
                         + (f"; mixed settings: {'; '.join(result['mixed'])}" if result.get("mixed") else ""))
        lines.append("")
    return "\n".join(lines)


# --- Table 1 from committed results ------------------------------------------------------------------------------
# results/<cell>/seed_<S>/{summary.json, metrics.jsonl}: the 100-epoch runs behind the README's Table 1.

RESULTS_COLUMNS = ("mnist", "fashion_mnist")


def results_rows(chosen: dict, columns=RESULTS_COLUMNS) -> list[dict]:
    """Table 1's rows for `columns`, ours beside the paper: one dict per (method, variant) with its "label" and,
    per column key, {"mean", "sd", "n", "epochs", "short", "paper": (mean, sd) or None, "mark"} (numbers in %;
    mean None when no seed of the cell has a final status). "mark" is "▲" (ours more than one paper SD above the
    paper's mean), "▼" (more than one below) or ""."""
    rows = []
    for method, variant in _rows_of(1, chosen):
        row = {"method": method, "variant": variant, "label": _row_label(method, variant)}
        for column in columns:
            entry = chosen.get(paper_facts.Cell(1, column, method, variant))
            mixed = bool(entry and entry["result"].get("mixed"))  # no mean over different settings
            stats = entry["result"]["summary"].get("error_test_val_best_pct") if entry and not mixed else None
            stats = stats or {"mean": None, "sd": None, "n": 0}
            epochs = (entry["result"]["epochs"] or (0, 0))[1] if entry else None
            paper = paper_facts.paper_number(1, column, method)
            mark = ""
            if stats["mean"] is not None and paper is not None and abs(stats["mean"] - paper[0]) > paper[1]:
                mark = "▲" if stats["mean"] > paper[0] else "▼"
            row[column] = {"mean": stats["mean"], "sd": stats["sd"], "n": stats["n"], "epochs": epochs,
                           "short": stats["mean"] is not None and epochs < REFERENCE_EPOCHS[entry["cell"]],
                           "paper": paper, "mark": mark, "not_final": entry["result"]["other_seeds"] if entry else [],
                           "unreadable": entry["result"].get("unreadable_seeds", []) if entry else [],
                           "mixed": mixed}
        rows.append(row)
    return rows


def _results_cell_text(cell: dict) -> str:
    if cell.get("mixed"):
        return MIXED_TEXT
    unreadable = len(cell.get("unreadable") or ())
    bad = f"{unreadable} unreadable{UNREADABLE_MARK}" if unreadable else ""
    if cell["mean"] is None:
        running = len(cell["not_final"])
        notes = [f"{running} seed{'s' if running != 1 else ''} not finished"] * bool(running) + [bad] * bool(bad)
        return "missing" + (f" ({', '.join(notes)})" if notes else "")
    value = f"{cell['mean']:.2f}" + ("" if cell["sd"] is None else f" ± {cell['sd']:.2f}")
    epochs = f", {cell['epochs']} ep†" if cell["short"] else ""
    bad = f", {bad}" if bad else ""
    return f"{value} (n={cell['n']}{epochs}{bad}){' ' + cell['mark'] if cell['mark'] else ''}"


def results_markdown(results_dir: str, collected: tuple | None = None, columns=RESULTS_COLUMNS) -> str:
    """Table 1's `columns` (MNIST and Fashion-MNIST) from a results folder, as Markdown for the README."""
    chosen, placed, _ = collected or collect(find_sweeps(results_dir, "--results"))
    rows = results_rows(chosen, columns)
    headings = [paper_facts.COLUMNS[c] for c in columns]
    lines = [f"Table 1, test error (%): ours (mean ± SD over n seeds) beside the paper's "
             f"({paper_facts.TABLE_QUANTITY[1][1]}).", "",
             "| method | " + " | ".join(f"{h}: ours | {h}: paper" for h in headings) + " |",
             "|" + " --- |" * (1 + 2 * len(columns))]
    marks = set()
    for row in rows:
        cells = [row["label"]]
        for column in columns:
            cell = row[column]
            cells += [_results_cell_text(cell), "–" if cell["paper"] is None else
                      f"{cell['paper'][0]:.2f} ± {cell['paper'][1]:.2f}"]
            marks.update(m for m in (cell["mark"], "†" if cell["short"] else "") if m)
        marks.update("‡" if row["variant"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if marks & {"▲", "▼"}:
        lines.append("▲ / ▼ ours is more than one of the paper's SDs above / below the paper's mean.")
    lines += _footnotes(marks)
    shown = {id(e) for e in chosen.values() if e["cell"] and CELLS[e["cell"]].table == 1
             and CELLS[e["cell"]].column in columns}
    lines += _unreadable_notes([e for e in placed if id(e) in shown])
    return "\n".join(lines) + "\n"


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose errors (an unknown option, a missing value) are one line naming the fix, exit status 2."""

    def error(self, message):
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            name = unknown.group(1).split("=", 1)[0]
            known = [o for action in self._actions for o in action.option_strings
                     if o.startswith("--") and o != "--help"]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            hint = f"did you mean {close[0]}?" if close else f"the options are {', '.join(known)}"
            cli.fail(f"unknown option {unknown.group(1)}; {hint} (python -m tp_keras.tables --help)")
        cli.fail(f"{message}; python -m tp_keras.tables --help lists the options")


@cli.guarded(interrupted_hint="no table was written")
def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m tp_keras.tables",
                                     description="Markdown Tables 1–3 from sweep folders, with the paper's numbers; "
                                                 "or, with --results, Table 1's MNIST and Fashion-MNIST columns.")
    parser.add_argument("--sweeps", default=None, help="a folder of sweep folders, or a comma-separated list "
                                                       "of sweep folders and/or such parents (default sweeps)")
    parser.add_argument("--results", default=None,
                        help="a results folder (<cell>/seed_<S>/summary.json, metrics.jsonl): renders Table 1's "
                             "MNIST and Fashion-MNIST columns only, for the README")
    parser.add_argument("--out", default="tables.md", help="Markdown file to write (default tables.md); - prints")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.sweeps is not None and args.results is not None:
        cli.fail("--sweeps and --results are two tables: pass one of them")
    if args.out != "-":
        rundir.check_writable(args.out, "--out")
    flag, spec = ("--results", args.results) if args.results is not None else ("--sweeps", args.sweeps or "sweeps")
    try:
        folders = find_sweeps(spec, flag)
    except SystemExit as err:
        cli.fail(str(err.code).removeprefix("error: "))
    if not folders:
        cli.fail(f"{flag}={spec}: no sweep folder in it (<cell>/seed_<S>/summary.json); "
                 f"{_FOLDER_FIX.get(flag)}")
    chosen, placed, unplaced = collected = collect(folders)
    for entry in placed + unplaced:  # a run that cannot be read is marked in the table (§) and said here
        for line in result_warnings(entry["result"]):
            print(line, file=sys.stderr)
    text = results_markdown(spec, collected) if args.results is not None else tables_markdown(folders, collected)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        rundir.atomic_write(args.out, text, kind="--out")
        print(f"[tables] {len(placed)} {'result' if args.results is not None else 'sweep'} folders placed in "
              f"{len(chosen)} cells" + (f", {len(unplaced)} unplaced" if unplaced else "") + f"; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
