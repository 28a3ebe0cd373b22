"""A worker process: pops the queued trials of a study and trains each one in this process.

    python -m tp_keras.search.worker --storage=URL --study=NAME --out=DIR [--trials=10] [--data_dir=DIR]

Started by the search and sweep commands (one per --workers slot), not by hand. It runs at most --trials trials
and exits 0 (also when the queue is empty); its driver starts a fresh one while trials are queued, so the memory
TensorFlow keeps per trained model (~20 MB per trial; docs/performance.md, "Search and sweeps") never accumulates
past that.
It dies with its driver: SIGTERM when the driver dies (Linux, engine.die_with_parent), and no new trial once it
finds itself re-parented; the trial it was running is then failed and retried by the next driver that starts
(engine.recover), resuming from its checkpoint.

A trial of a search draws its parameters from the study's space (TPE), trains `<out>/<run>` with the base flags
plus those values, reports the validation accuracy of every epoch to Optuna and stops when a pruner says so; its
value is the run's best validation accuracy (never a test number). A trial of a seed sweep trains its seed's
flags; its value is the number of epochs run (a sweep optimises nothing).
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback

import optuna

from tp_keras.search import engine, space
from tp_keras.search.runs import as_flags, config_from_args

# The reference's early stop (its seed sweeps' rule, thresholds in schedule.PRUNE_ACCURACY): from this epoch on,
# a run whose train accuracy is below the dataset's threshold is abandoned.
EARLY_STOP_EPOCH = 6


class EarlyStopRule(optuna.pruners.BasePruner):
    """The reference's early-stop rule as a pruner: from epoch 6 on, a trial whose train accuracy (the user
    attribute "train_acc", set every epoch) is below its dataset's threshold (schedule.PRUNE_ACCURACY: 40 %
    MNIST and Fashion-MNIST, 25 % CIFAR-10; no rule for other datasets) is pruned."""

    def __init__(self, dataset: str, first_epoch: int = EARLY_STOP_EPOCH):
        self.dataset, self.first_epoch = dataset, first_epoch

    @property
    def threshold(self):
        from tp_keras.run.schedule import PRUNE_ACCURACY  # TensorFlow: loaded only once a trial reaches epoch 6
        return PRUNE_ACCURACY.get(self.dataset)

    def prune(self, study, trial) -> bool:
        step, acc = trial.last_step, trial.user_attrs.get("train_acc")
        return (step is not None and step >= self.first_epoch and acc is not None and self.threshold is not None
                and acc < self.threshold)

    def reason(self, trial) -> str:
        return (f"train accuracy {trial.user_attrs['train_acc']:.3f} after epoch {trial.last_step} is below "
                f"{self.threshold:.2f} (the reference's early-stop rule)")


class AnyPruner(optuna.pruners.BasePruner):
    """Prunes when any of its pruners does; `reason` then says which one and why."""

    def __init__(self, pruners):
        self.pruners = list(pruners)
        self.reason = ""

    def prune(self, study, trial) -> bool:
        for pruner in self.pruners:
            if pruner.prune(study, trial):
                self.reason = pruner.reason(trial) if hasattr(pruner, "reason") else _optuna_reason(pruner, trial)
                return True
        return False


def _optuna_reason(pruner, trial) -> str:
    value = trial.intermediate_values[trial.last_step]
    where = f"validation accuracy {value:.4f} after epoch {trial.last_step}"
    if isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner):
        return f"{where} is below the successive-halving cut of its rung (SuccessiveHalvingPruner)"
    return f"{where} is below the median of earlier trials at that epoch (MedianPruner)"


PRUNERS = ("median", "halving", "none")


def make_pruner(settings: dict) -> optuna.pruners.BasePruner:
    """The study's pruner from its settings: the chosen Optuna pruner and, unless disabled, the early-stop rule."""
    if settings.get("kind") != "search":
        return optuna.pruners.NopPruner()
    pruners = []
    if settings["pruner"] == "median":
        pruners.append(optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0))
    elif settings["pruner"] == "halving":
        pruners.append(optuna.pruners.SuccessiveHalvingPruner())
    if settings["early_stop"]:
        pruners.append(EarlyStopRule(settings["dataset"]))
    return AnyPruner(pruners)


def sampler_seed(seed: int | None, study) -> int | None:
    """The sampler's seed for a worker given --sampler_seed=`seed`: a function of `seed` and of how many trials of
    the study have left the queue (started, finished, failed). A fresh search is reproducible (the same history,
    the same seeds); a rerun of an interrupted or extended search, whose study already holds trials, does not
    replay the draws of its first worker (TPE's first draws are random ones: the same seed would propose the
    earlier trials' values again)."""
    if seed is None:
        return None
    started = sum(1 for t in engine.all_trials(study) if t.state != optuna.trial.TrialState.WAITING)
    if not started:
        return seed
    import numpy as np
    return int(np.random.SeedSequence([seed, started]).generate_state(1)[0])


def make_sampler(settings: dict, seed: int | None):
    if settings.get("kind") != "search":
        return optuna.samplers.RandomSampler(seed)  # every parameter of a seed trial is fixed
    # constant_liar: a worker treats the others' running trials as bad results, so parallel workers spread out.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


class Objective:
    """Trains one trial's run; see the module docstring."""

    def __init__(self, study, out: str, runner, data_dir: str | None = None):
        self.study, self.out, self.runner, self.data_dir = study, out, runner, data_dir
        self.settings = study.user_attrs[engine.SETTINGS]
        self.search = self.settings["kind"] == "search"
        self.space = space.from_json(self.settings["space"]) if self.search else ()

    def __call__(self, trial) -> float:
        run = trial.user_attrs.get(engine.RUN)
        reason = engine.yield_reason(self.study, trial.number, run, finished_counts=self.search)
        if reason:
            trial.set_user_attr(engine.SURPLUS, reason)
            raise engine.Surplus(reason)
        trial.set_user_attr(engine.WORKER, f"{engine.HOST}:{os.getpid()}")
        for key in (engine.ERROR, engine.STATUS):  # a retry inherits the failed trial's attributes
            if key in trial.user_attrs:
                trial.set_user_attr(key, None)
        if self.search:
            args = self.settings["flags"] + as_flags(space.suggest(trial, self.space))
        else:
            seed = trial.user_attrs["seed"]
            trial.suggest_int("seed", seed, seed)
            args = list(trial.user_attrs["args"])
        if self.data_dir:
            args.append(f"--data_dir={self.data_dir}")
        workdir = os.path.join(self.out, run)
        try:
            hook = self._pruning_hook(trial, config_from_args(args).epochs) if self.search else None
            summary = self.runner.run_training(args, workdir, hook)
        except Exception as err:
            trial.set_user_attr(engine.ERROR, _error_line(err))
            try:
                with open(os.path.join(workdir, "launch.log"), "a") as log:
                    traceback.print_exc(file=log)
            except OSError:
                pass
            raise
        status = summary.get("status", "")
        trial.set_user_attr(engine.STATUS, status)
        for key in ("epochs_run", "epoch_best_acc", "acc_val_best"):
            if key in summary:
                trial.set_user_attr(key, summary[key])
        if status.startswith("pruned"):
            raise optuna.TrialPruned(status)
        if self.search:
            return float(summary.get("acc_val_best", 0.0))  # a run that diverged before any epoch: 0
        return float(summary.get("epochs_run", 0))

    def _pruning_hook(self, trial, epochs: int):
        def on_epoch_end(row):
            if "val_acc" not in row:
                return None
            try:
                trial.report(row["val_acc"], row["epoch"])
                if "train_acc" in row:
                    trial.set_user_attr("train_acc", row["train_acc"])
                # After the last epoch there is nothing left to save: the trial completes with its result.
                if row["epoch"] < epochs and trial.should_prune():
                    return f"pruned: {self.study.pruner.reason}"
            except optuna.exceptions.UpdateFinishedTrialError:
                # Failed as stale (a heartbeat stall longer than --grace) and retried: let the retry go on alone.
                return "abandoned: this trial was failed as stale and retried; the retry continues this run"
            return None
        return on_epoch_end


def _error_line(err: BaseException) -> str:
    line = engine.first_line(err)
    return line if line.startswith("--") or isinstance(err, ValueError) else f"{type(err).__name__}: {line}"


def orphaned(parent: int | None) -> bool:
    """True when this process's parent (pid `parent`, its driver) is gone: it was re-parented."""
    return parent is not None and os.getppid() != parent


def work(study, objective, max_trials: int, parent: int | None = None) -> int:
    """Runs queued trials until the queue is empty, `max_trials` ran, or the process's parent `parent` (its driver)
    died; returns how many ran. (On Linux the driver's death also sends this process SIGTERM: engine.die_with_parent;
    the check here covers the other systems, and a trial that ended as the driver died.)"""
    done = 0
    while (done < max_trials and not orphaned(parent)
           and engine.all_trials(study, (optuna.trial.TrialState.WAITING,))):
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # its trial was failed as stale meanwhile; the retry has it
        done += 1
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tp_keras.search.worker")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--data_dir")
    parser.add_argument("--heartbeat", type=int, default=10)
    parser.add_argument("--grace", type=int, default=60)
    parser.add_argument("--sampler_seed", type=int)
    parser.add_argument("--runner", default="tp_keras.search.runs")
    args = parser.parse_args(argv)
    parent = os.getppid()
    engine.quiet_optuna()
    # The driver stops workers with SIGINT, like Ctrl-C. A shell starts background jobs with SIGINT ignored and
    # children inherit that, so a search started with `&` could not stop its workers without this.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        storage = engine.open_storage(args.storage, args.heartbeat, args.grace)
        plain = engine.load_study(storage, args.study)
        settings = plain.user_attrs[engine.SETTINGS]
        study = engine.load_study(storage, args.study, pruner=make_pruner(settings),
                                  sampler=make_sampler(settings, sampler_seed(args.sampler_seed, plain)))
        ran = work(study, Objective(study, args.out, importlib.import_module(args.runner), args.data_dir),
                   args.trials, parent)
    except KeyboardInterrupt:
        print("error: interrupted: the trial keeps its finished epochs; rerun the command to resume it", flush=True)
        return 130
    except engine.EngineError as err:
        print(f"error: {err}", flush=True)
        return 2
    if orphaned(parent):
        print("error: the command that started this worker is gone; stopping (rerun the command to resume)",
              flush=True)
        return 1
    print(f"[worker] {ran} trials run; exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
