"""What a search leaves in --out: trials.csv, best.flags, history.png and importance.png (all rewritable from the
study's database alone: `python -m tp_keras.search --out=DIR --report_only`)."""
from __future__ import annotations

import csv
import datetime
import io
import os
import textwrap
import warnings

from optuna.trial import TrialState

from tp_keras.run import rundir
from tp_keras.search import engine
from tp_keras.search.runs import as_flags, merge_flags

SOURCE = "tp_keras_source"  # study user attribute: the flagfile, space file and extra flags it was started with
COLUMNS = ("number", "run", "state", "val_acc_best", "epoch_best", "epochs_run", "status", "seconds", "retry_of",
           "worker", "error")


def trial_rows(study) -> list[dict]:
    """One row per trial that ran or was meant to (surplus trials left out), by trial number."""
    rows = []
    for trial in engine.all_trials(study):
        if engine.is_surplus(trial):
            continue
        attrs = trial.user_attrs
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
            if trial.datetime_complete and trial.datetime_start else None
        row = {"number": trial.number, "run": attrs.get(engine.RUN), "state": trial.state.name,
               "val_acc_best": trial.value if trial.state == TrialState.COMPLETE else attrs.get("acc_val_best"),
               "epoch_best": attrs.get("epoch_best_acc"), "epochs_run": attrs.get("epochs_run"),
               "status": attrs.get(engine.STATUS), "seconds": seconds,
               "retry_of": trial.system_attrs.get("failed_trial"), "worker": attrs.get(engine.WORKER),
               "error": attrs.get(engine.ERROR)}
        row.update(trial.params)
        rows.append(row)
    return rows


def write_trials_csv(study, path: str) -> None:
    rows = trial_rows(study)
    params = [name for name, _, _ in study.user_attrs[engine.SETTINGS].get("space", [])]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(COLUMNS) + params)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else (repr(row[k]) if isinstance(row[k], float) else row[k])
                         for k in list(COLUMNS) + params])
    rundir.atomic_write(path, buffer.getvalue(), kind="--out")


def best_trial(study):
    """The completed trial of highest validation accuracy (the first, on a tie), or None."""
    done = [t for t in engine.all_trials(study, (TrialState.COMPLETE,)) if not engine.is_surplus(t)]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def best_flags_text(study, storage_url: str) -> str | None:
    best = best_trial(study)
    if best is None:
        return None
    settings, source = study.user_attrs[engine.SETTINGS], study.user_attrs.get(SOURCE, {})
    attrs = best.user_attrs
    finished = sum(1 for t in engine.all_trials(study, (TrialState.COMPLETE,)) if not engine.is_surplus(t))
    extra = " ".join(source.get("extra") or []) or "none"
    header = (
        f"Best trial of the search study '{study.study_name}' ({engine.shown(storage_url)}): trial {best.number} (run "
        f"folder {attrs.get(engine.RUN)}), validation accuracy {best.value:.4f} at epoch {attrs.get('epoch_best_acc')} "
        f"of {attrs.get('epochs_run')} (the best of {finished} finished trials). Base: "
        f"{source.get('flagfile', 'the study flags')}; extra flags: {extra}; searched "
        f"({source.get('space', 'the study space')}): {', '.join(best.params)}. Written by python -m tp_keras.search "
        f"on {datetime.date.today().isoformat()}.")
    lines = ["# " + line for line in textwrap.wrap(header, 114, break_on_hyphens=False, break_long_words=False)]
    lines.append("# Run: python -m tp_keras.launch --flagfile=<this file> --data_dir=DIR (the same seed: the trial's "
                 "numbers)")
    # --cell only names the default workdir: a name of its own keeps a rerun out of the base cell's runs/ folder.
    cell = [f"--cell={study.study_name}_best"]
    return "\n".join(lines + merge_flags(settings["flags"], cell, as_flags(best.params))) + "\n"


def write_plots(study, out: str) -> list[str]:
    """history.png and importance.png (Optuna's matplotlib plots; PED-ANOVA importance, which needs no
    scikit-learn); returns one note per figure not drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.importance import PedAnovaImportanceEvaluator
        from optuna.visualization import matplotlib as plots
    except ImportError:
        return ["figures not drawn: matplotlib is not installed (pip install 'tp_keras[search]')"]
    completed = [t for t in engine.all_trials(study, (TrialState.COMPLETE,)) if not engine.is_surplus(t)]
    figures = (("history.png", 1, lambda: plots.plot_optimization_history(
                    study, target_name="best validation accuracy")),
               ("importance.png", 2, lambda: plots.plot_param_importances(
                    study, evaluator=PedAnovaImportanceEvaluator(), target_name="best validation accuracy")))
    notes = []
    for name, needed, draw in figures:
        if len(completed) < needed:
            notes.append(f"{name} not drawn: it needs {needed} finished trials, the study has {len(completed)}")
            continue
        try:
            with warnings.catch_warnings():  # PED-ANOVA warns when few trials make every importance equal
                warnings.simplefilter("ignore")
                axes = draw()
            loc = "left" if axes.get_title(loc="left") else "center"  # Optuna titles its plots on the left
            axes.set_title(f"{axes.get_title(loc=loc)}: study {study.study_name}", loc=loc)
            axes.figure.savefig(os.path.join(out, name), dpi=120, bbox_inches="tight")
            plt.close(axes.figure)
        except Exception as err:  # e.g. every parameter constant: no importance to compute
            notes.append(f"{name} not drawn: {engine.first_line(err)}")
    return notes


def write_results(study, out: str, storage_url: str, *, plots: bool = True) -> list[str]:
    """Writes trials.csv, best.flags (once a trial finished) and, with `plots`, the figures; returns notes."""
    os.makedirs(out, exist_ok=True)
    write_trials_csv(study, os.path.join(out, "trials.csv"))
    text = best_flags_text(study, storage_url)
    if text is not None:
        rundir.atomic_write(os.path.join(out, "best.flags"), text, kind="--out")
    return write_plots(study, out) if plots else []
