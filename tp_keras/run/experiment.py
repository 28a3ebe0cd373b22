"""`train_and_evaluate(config, workdir)`: one full run with the reference's schedule, metrics and summary.

Schedule (docs/semantics.md §5.2): `epochs_fb` feedback-only passes, then per epoch one training pass
(targets → feedback step → forward step on every batch), `extra_fb_epochs` feedback-only passes, and evaluation on the
validation and test sets. Every pass reshuffles the training set with a permutation drawn from (seed, pass index).

Written to `workdir` (one run per folder: a new run refuses a folder that holds another run's files, unless asked
to resume it or to replace it, see train_and_evaluate):
  config.json     the full configuration of the run, and under "data" the fingerprint of the data it trains on
                  (tp_keras.run.data, "Fingerprints"; also in the checkpoint, and checked by --resume)
  metrics.jsonl   one JSON object per epoch (epoch 0 = after feedback pre-training, when there is any)
  tb/             TensorBoard scalars of the same
  angles.jsonl    with config.log_angles: one JSON object per logged batch {epoch, batch, iteration, bp_angle
                  [per layer, degrees], gnt_angle [per hidden layer]} (docs/semantics.md §13.5; also in TensorBoard
                  under angles/)
  summary.json    the docs/semantics.md §10 quantities (test error at the best-validation epoch, last/best training
                  loss, ...)
  checkpoint.npz  after feedback pre-training and after every epoch: what --resume continues from
All through tp_keras.run.rundir: whole files are written atomically (temporary file + rename), lines are appended
whole, and the workdir is locked for the run (.lock). After every epoch the checkpoint is written first, then the
metrics line and summary.json (status "running", then "finished", "interrupted", "diverged: ..." or
"pruned: ..."), so a run killed or failing at any moment leaves complete files and a checkpoint to resume from.
SIGINT and SIGTERM stop the run after the current batch (faults.StopRequests); TP_KERAS_KILL_AT kills it at a
named point (faults.KILL_POINTS) for the tests.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tp_keras.core import loop
# Diverged stays importable from here (its first home); the private names are the ones this module always used.
from tp_keras.core.health import HEALTH_KEYS as _HEALTH_KEYS
from tp_keras.core.health import Diverged  # noqa: F401
from tp_keras.core.health import first_problem as _first_problem
from tp_keras.core.health import first_problem_stacked as _first_problem_stacked
from tp_keras.core.health import stack_calls as _stacked
from tp_keras.core.step import Trainer
from tp_keras.run import faults, memory, rundir, trace_ahead
from tp_keras.run.cli import op_error_text
from tp_keras.run.config import Config, ConfigError
from tp_keras.run.data import DataError, Dataset, dataset_fingerprint, load_dataset
from tp_keras.run.factories import build_model, build_trainer, worker_workdir

# docs/semantics.md §5.4: from the 6th epoch on, a run whose train accuracy is below this is pruned (if enabled).
PRUNE_ACCURACY = {"mnist": 0.40, "fashion_mnist": 0.40, "cifar10": 0.25}


class _Batches:
    """The training set, reshuffled for every pass by a permutation drawn from (seed, pass index).

    The data are placed on the device once; each pass gathers its permuted copy there and slices it, so no
    per-batch host work is left but the slice (a tf.data pipeline cost ~2 s more per MNIST pass on 2 cores;
    permuting on the host and uploading every pass cost 0.2–0.4 s, the device gather 0.11 s)."""

    def __init__(self, split, batch_size: int, seed: int):
        self.x, self.y = tf.constant(split.x), tf.constant(split.y)
        self.batch_size = batch_size
        self.seed = seed
        self.passes = 0
        self.steps = math.ceil(int(self.x.shape[0]) / batch_size)

        self.full_steps = int(self.x.shape[0]) // batch_size  # batches of exactly batch_size rows

    def permuted(self):
        """The next pass's shuffled copy of the whole set, on the device."""
        perm = np.random.default_rng([self.seed, self.passes]).permutation(int(self.x.shape[0]))
        self.passes += 1
        return tf.gather(self.x, perm), tf.gather(self.y, perm)


def _in_order(x, y, batch_size):
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    for start in range(0, int(x.shape[0]), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]


class _MultiSteps:
    """The compiled multi-batch loops of a run (loop.StepLoop around the trainer's train and feedback steps), as
    keyword arguments of `_run_pass`: empty with one batch per call (config.steps_per_call resolved for the
    device and the pass, see loop.device_defaults), which leaves the one-batch-per-call loop exactly as it was."""

    def __init__(self, config: Config, trainer, batches: _Batches, log):
        steps = loop.resolve_steps(config.steps_per_call, batches.steps)
        jit = loop.resolve_jit(config.jit_compile)
        self.train = self.feedback = {}
        if steps > 1 and batches.full_steps > 1:
            if _distributed(trainer):  # strategy.run per batch
                make = lambda forward: loop.DistributedStepLoop(trainer, forward, batches.batch_size)  # noqa: E731
            else:
                make = lambda forward: loop.StepLoop(  # noqa: E731
                    trainer.train_step if forward else trainer.feedback_step, batches.batch_size, jit_compile=jit)
            self.train = {"multi_step": make(True), "steps_per_call": steps}
            if trainer.trains_feedback:
                self.feedback = {"multi_step": make(False), "steps_per_call": steps}
        device = loop.device_defaults().device
        log(f"[tp_keras] {device}: XLA {'on' if jit else 'off'}, {steps} batch(es) per compiled call"
            + (" (the whole pass)" if steps >= batches.steps else "")
            + (f", TF32 {'on' if config.tf32 else 'off'}" if device == "GPU" else ""))


def _run_pass(step_fn, batches: _Batches, label: str, show_progress: bool, *, angle_step=None,
              log_interval: int = 0, angles_out: list | None = None, where: str = "", before_batch=None,
              multi_step=None, steps_per_call: int = 1) -> dict:
    """Runs `step_fn` over one shuffled pass; returns the unweighted means over batches of its metrics.

    With `angle_step`, batches whose index is a multiple of `log_interval` run it instead, and
    (batch index, bp_angle, gnt_angle) is appended to `angles_out`. With `multi_step` (a loop.StepLoop of
    `step_fn`) and steps_per_call > 1, runs of full batches go through it, up to `steps_per_call` per call
    (loop.plan_pass; bit-identical to one batch per call). Metrics, angles and the finiteness flags
    stay on the device; the host reads them every `sync_every` steps for the progress bar and once at the end of
    the pass, when a non-finite value raises `Diverged` naming the first bad batch and layer (`where`
    describes the pass, e.g. "epoch 3"). `before_batch()`, if given, runs before every call (where a stop request
    is honoured)."""
    bar = keras.utils.Progbar(batches.steps, verbose=1 if sys.stdout.isatty() else 2, unit_name="batch") \
        if show_progress else None
    collected: dict[str, list] = {}
    flags: dict[str, list] = {}
    sync_every = loop.progress_interval(batches.steps)
    logged = []
    x, y = batches.permuted()
    size = batches.batch_size
    plan = loop.plan_pass(batches.steps, batches.full_steps, steps_per_call if multi_step is not None else 1,
                          log_interval if angle_step is not None else 0)
    for kind, i, count in plan:
        if before_batch is not None:
            before_batch()
        if kind == "loop":
            metrics = dict(multi_step(x, y, i * size, count))
        else:
            xb, yb = x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]
            if kind == "angle":
                metrics = dict(angle_step(xb, yb))
                logged.append((i, metrics.pop("bp_angle"), metrics.pop("gnt_angle")))
            else:
                metrics = dict(step_fn(xb, yb))
        many = kind == "loop"
        for key in _HEALTH_KEYS:
            if key in metrics:
                flags.setdefault(key, []).append((metrics.pop(key), many))
        for key, value in metrics.items():
            collected.setdefault(key, []).append((value, many))
        done = i + count
        if bar is not None and (done // sync_every > i // sync_every or done == batches.steps):
            bar.update(done, [(f"{label}_{k}", float(v[-1] if many else v)) for k, v in metrics.items()])
    problem = _first_problem_stacked(where or label, {k: _stacked(v) for k, v in flags.items()}) if flags else None
    if problem:
        raise Diverged(problem)
    if angles_out is not None:
        angles_out.extend((i, bp.numpy().tolist(), gnt.numpy().tolist()) for i, bp, gnt in logged)
    return {k: float(tf.reduce_mean(tf.cast(_stacked(v), tf.float64))) for k, v in collected.items()}


def evaluate(trainer: Trainer, split, batch_size: int) -> dict:
    """Loss (and accuracy, for classification) on a split: sample-weighted means, and the reference's unweighted
    means over batches (`*_batchmean`, where the small last batch is over-weighted; docs/semantics.md §15.12).

    The per-batch sums stay on the device; the host reads them once, after the last batch."""
    sums = [trainer.eval_step(x, y) for x, y in _in_order(split.x, split.y, batch_size)]
    table = {k: np.array([float(v) for v in tf.stack([s[k] for s in sums]).numpy()]) for k in sums[0]}
    result = {"loss": float(table["loss_sum"].sum() / table["count"].sum()),
              "loss_batchmean": float(np.mean(table["loss_sum"] / table["count"]))}
    if "correct" in table:
        result.update(acc=float(table["correct"].sum() / table["count"].sum()),
                      acc_batchmean=float(np.mean(table["correct"] / table["count"])))
    return result


def summarize(history: list[dict], has_val: bool) -> dict:
    """The docs/semantics.md §10 quantities from the per-epoch history (training epochs only). Accuracy-based entries
    exist for classification only; a regression run's best-validation epoch is the one of lowest validation loss."""
    epochs = [h for h in history if h["epoch"] >= 1]
    if not epochs:
        return {}
    summary = {"epochs_run": len(epochs)}
    classification = "train_acc" in epochs[-1]
    metrics = (("acc", max), ("loss", min)) if classification else (("loss", min),)
    for name, best in metrics:
        summary.update({
            f"{name}_train_last": epochs[-1][f"train_{name}"], f"{name}_test_last": epochs[-1][f"test_{name}"],
            f"{name}_train_best": best(h[f"train_{name}"] for h in epochs),
            f"{name}_test_best": best(h[f"test_{name}"] for h in epochs),
        })
    if has_val:
        best_loss = min(range(len(epochs)), key=lambda i: (epochs[i]["val_loss"], i))  # first argmin
        summary.update({
            "epoch_best_loss": epochs[best_loss]["epoch"], "loss_val_best": epochs[best_loss]["val_loss"],
            "loss_test_val_best": epochs[best_loss]["test_loss"],
            "loss_train_val_best": epochs[best_loss]["train_loss"],
        })
        if classification:
            best_acc = max(range(len(epochs)), key=lambda i: (epochs[i]["val_acc"], -i))  # first argmax
            summary.update({
                "epoch_best_acc": epochs[best_acc]["epoch"], "acc_val_best": epochs[best_acc]["val_acc"],
                "acc_val_last": epochs[-1]["val_acc"], "acc_test_val_best": epochs[best_acc]["test_acc"],
                "acc_train_val_best": epochs[best_acc]["train_acc"],
            })
            summary["error_test_val_best"] = 1.0 - summary["acc_test_val_best"]
    return summary


def _angle_rows(epoch: int, steps: int, logged) -> list[dict]:
    return [{"epoch": epoch, "batch": i, "iteration": (epoch - 1) * steps + i, "bp_angle": bp, "gnt_angle": gnt}
            for i, bp, gnt in logged]


def _mean_angles(rows: list[dict]) -> dict:
    """Per-epoch means of the logged angles, one key per layer (bp_angle_1.., gnt_angle_1..)."""
    means = {}
    for key in ("bp_angle", "gnt_angle"):
        for layer, values in enumerate(zip(*(r[key] for r in rows)), start=1):
            means[f"{key}_{layer}"] = float(np.mean(values))
    return means


def _train_epochs(config, trainer, batches, dataset, folder: "_RunFolder", feedback_passes, log, *,
                  resumed_epoch: int | None, on_epoch_end=None, multi_steps: "_MultiSteps") -> str:
    """Feedback pre-training (unless resuming from a checkpoint, which is written after it), then the epochs after
    `resumed_epoch` up to config.epochs; returns the run's final status. `folder.record` checkpoints each row.
    `on_epoch_end(row)` may return a final status (e.g. "pruned: ...") that stops the run after that epoch.
    `folder.where` says what is running (for an interrupt's message)."""
    has_val = dataset.val is not None
    status = "finished"
    if resumed_epoch is None and trainer.trains_feedback and config.epochs_fb > 0:
        folder.where = "feedback pre-training"
        t0 = time.perf_counter()
        pre = feedback_passes(config.epochs_fb, "fb_pretrain", "feedback pre-training pass")
        row = {"epoch": 0, "rec_loss_first": pre[0], "rec_loss_init": pre[-1],
               "fb_seconds": time.perf_counter() - t0}
        folder.record(row)
        log(f"[tp_keras] feedback pre-training: {config.epochs_fb} passes, rec_loss {pre[0]:.4g} -> {pre[-1]:.4g}")

    first_epoch = 1 if resumed_epoch is None else resumed_epoch + 1
    for epoch in range(first_epoch, config.epochs + 1):
        folder.where = f"epoch {epoch}"
        t0 = time.perf_counter()
        logged = []
        train = _run_pass(trainer.train_step, batches, "train", config.progress, angle_step=trainer.angle_step,
                          log_interval=config.log_interval, angles_out=logged, where=f"epoch {epoch}",
                          before_batch=folder.before_train_batch, **multi_steps.train)
        t1 = time.perf_counter()
        angle_rows = _angle_rows(epoch, batches.steps, logged)
        extra = feedback_passes(config.extra_fb_epochs, "fb_extra", f"extra feedback pass after epoch {epoch}:"
                                ) if trainer.trains_feedback else []
        t2 = time.perf_counter()
        row = {"epoch": epoch, "train_loss": train["loss"]}
        if "accuracy" in train:
            row["train_acc"] = train["accuracy"]
        if "rec_loss" in train:
            row["rec_loss"] = train["rec_loss"]
        if extra:
            row["rec_loss_extra"] = float(np.mean(extra))
        if angle_rows:
            folder.record_angles(angle_rows)
            row.update(_mean_angles(angle_rows))
        for name, split in (("val", dataset.val), ("test", dataset.test)):
            if split is not None:
                for key, value in evaluate(trainer, split, config.batch_size).items():
                    row[f"{name}_{key}"] = value
        t3 = time.perf_counter()
        row.update(train_seconds=t1 - t0, fb_seconds=t2 - t1, eval_seconds=t3 - t2, epoch_seconds=t3 - t0)
        folder.record(row)
        shown = "acc" if "train_acc" in row else "loss"
        log(f"[tp_keras] epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}"
            + (f" acc {row['train_acc']:.4f}" if "train_acc" in row else "")
            + (f" | val {shown} {row[f'val_{shown}']:.4f}" if has_val else "")
            + f" | test {shown} {row[f'test_{shown}']:.4f} | {row['epoch_seconds']:.1f}s")
        if (config.prune_early and epoch >= 6 and "train_acc" in row
                and row["train_acc"] < PRUNE_ACCURACY.get(config.dataset, -1.0)):
            status = f"pruned: train accuracy {row['train_acc']:.3f} after epoch {epoch}"
            log(f"[tp_keras] stopping: {status}")
            return status
        if on_epoch_end is not None:
            stop = on_epoch_end(row)
            if stop:
                log(f"[tp_keras] stopping: {stop}")
                return stop

    folder.where = "the final summary"
    return status


# --- Checkpoints ----------------------------------------------------------------------------------------------
# One file, checkpoint.npz: every model variable (forward and feedback weights, DDTP-RHL's fixed layer, the noise
# generator's state), both optimizers' variables (step counters, moments, learning rates), and a JSON header with
# the epoch, the shuffling pass counter and the metrics history. Written to a temporary file and renamed, so the
# workdir always holds a complete checkpoint (the last good one).

CHECKPOINT = "checkpoint.npz"
_RESUME_MAY_DIFFER = ("epochs", "progress", "data_dir", "jit_compile", "steps_per_call", "tf32")


def _checkpoint_variables(trainer: Trainer) -> list:
    variables = list(trainer.model.variables) + list(trainer.forward_optimizer.variables)
    if trainer.feedback_optimizer is not None and trainer.trains_feedback:
        variables += list(trainer.feedback_optimizer.variables)
    return variables


def save_checkpoint(path: str, trainer: Trainer, *, epoch: int, passes: int, history: list, config: Config,
                    data: dict | None = None):
    variables = _checkpoint_variables(trainer)
    header = {"epoch": epoch, "passes": passes, "history": history, "config": dataclasses.asdict(config),
              "names": [f"{i}:{v.path}" for i, v in enumerate(variables)]}
    if data is not None:
        header["data"] = data
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    rundir.write_checkpoint(path, header, arrays, before_rename=lambda: faults.kill_point("checkpoint_rename"))


def _data_text(data: dict) -> str:
    samples = data.get("samples") or {}
    counts = " / ".join(f"{n} {split}" for split, n in samples.items())
    return f"{counts + ' samples, ' if counts else ''}sha256 {str(data.get('sha256'))[:12]}"


def check_same_run(path: str, saved: dict, saved_data: dict | None, config: Config, data: dict | None) -> None:
    """ConfigError (one line) unless the run `path` describes (its settings `saved`, the fingerprint `saved_data`
    of its data) is the one `config` on `data` continues: every setting but those of _RESUME_MAY_DIFFER equal,
    and the same data, wherever --data_dir now points (a run recorded before fingerprints existed is not
    compared)."""
    current = dataclasses.asdict(config)
    for key in current:
        if key not in _RESUME_MAY_DIFFER and json.dumps(saved.get(key)) != json.dumps(current[key], default=list):
            raise ConfigError("resume", f"{path} was written with {key}={saved.get(key)!r}, this run has "
                                        f"{current[key]!r}; use the same settings or another --workdir")
    if isinstance(saved_data, dict) and data is not None and saved_data.get("sha256") != data.get("sha256"):
        here = f"--data_dir={config.data_dir}" if config.data_dir is not None else "this run's data"
        raise ConfigError("resume", f"{path} was trained on other data ({_data_text(saved_data)}) than {here} "
                                    f"holds ({_data_text(data)}); point --data_dir at the files it was trained on, "
                                    "or choose another --workdir")


def load_checkpoint(path: str, trainer: Trainer, config: Config, data: dict | None = None) -> dict:
    """Restores every variable from `path`; returns its header (epoch, passes, history). Raises RunDirError (one
    line naming the file) if it cannot be read, ConfigError if it was written by a different configuration or
    model, on other data (`data`: the fingerprint of this run's, see check_same_run), or holds more epochs than
    config.epochs; in every case no variable has changed."""
    header, arrays = rundir.read_checkpoint(path)
    check_same_run(path, header["config"], header.get("data"), config, data)
    if header["epoch"] > config.epochs:
        raise ConfigError("epochs", f"{config.epochs} is fewer than the {header['epoch']} epochs {path} has done; "
                                    f"give --epochs={header['epoch']} or more to continue it, or choose another "
                                    "--workdir")
    variables = _checkpoint_variables(trainer)
    if len(variables) != len(header["names"]):
        raise ConfigError("resume", f"{path} holds {len(header['names'])} variables, this model "
                                    f"{len(variables)}; use another --workdir")
    values = [arrays[f"v{i}"] for i in range(len(variables))]
    for name, value, v in zip(header["names"], values, variables):
        if tuple(value.shape) != tuple(v.shape):
            raise ConfigError("resume", f"{path}: variable {name} has shape {value.shape}, the model's is "
                                        f"{tuple(v.shape)}; use another --workdir")
    for value, v in zip(values, variables):
        v.assign(value)
    return header


# --- The run folder -------------------------------------------------------------------------------------------

class RunSummary(dict):
    """summary.json's content, plus `checkpoint_epoch`: the epoch of the run's last good checkpoint in its workdir
    (None when it has none)."""
    checkpoint_epoch: int | None = None


class _RunFolder:
    """The files of one run in its workdir (see the module docstring), all written through tp_keras.run.rundir: the
    workdir's lock, config.json, metrics.jsonl, angles.jsonl, tb/, checkpoint.npz and summary.json.

    `history` holds exactly the rows of the last checkpoint written (or read back), so a summary written after a
    failure or an interrupt describes the checkpoint that --resume continues from."""

    def __init__(self, workdir: str, config: Config, log, overwrite: bool = False):
        self.workdir = workdir
        self.config = config
        self.log = log
        self.overwrite = overwrite
        self.data = None  # the fingerprint of the run's data (data.dataset_fingerprint), once loaded
        self.checkpoint_path = os.path.join(workdir, CHECKPOINT)
        self.metrics_path = os.path.join(workdir, "metrics.jsonl")
        self.angles_path = os.path.join(workdir, "angles.jsonl")
        self.summary_path = os.path.join(workdir, "summary.json")
        self.history: list[dict] = []
        self.checkpoint_epoch = None
        self.lock = rundir.WorkdirLock(workdir)
        self.created = False
        self.writer = None
        self.stop = None  # faults.StopRequests while the epochs run
        self.where = "the start"  # what is running, for an interrupt's message
        self.trainer = self.batches = None
        self.has_val = False
        self.start = time.perf_counter()

    def acquire(self) -> None:
        """Creates the workdir, takes its lock, deletes temporaries a killed run left behind."""
        self.created = not os.path.isdir(self.workdir)
        rundir.make_folder(self.workdir)
        self.lock.acquire()
        if self.lock.stale_holder:
            self.log(f"[tp_keras] taking over the lock of {self.workdir} left by a run that ended without releasing "
                     f"it ({self.lock.stale_holder})")
        removed = rundir.remove_stale_temporaries(self.workdir)
        if removed:
            self.log(f"[tp_keras] removed {len(removed)} temporary file(s) a killed run left in {self.workdir}")

    def check_free(self) -> None:
        """Refuses (one line) a folder that holds another run's files, unless this run replaces it."""
        if not self.overwrite:
            rundir.check_no_run(self.workdir)

    def release(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.lock.release()
        if self.created:  # a run refused before writing anything leaves no empty folder behind
            try:
                os.rmdir(self.workdir)
            except OSError:
                pass

    def resume(self, trainer, batches) -> int | None:
        """Restores the checkpoint if there is one; returns its epoch (None: start from the beginning)."""
        if not os.path.lexists(self.checkpoint_path):
            config_path = os.path.join(self.workdir, "config.json")
            if os.path.isfile(config_path):  # a run killed before its first checkpoint: the same one, or refused
                try:
                    with open(config_path, encoding="utf-8") as f:
                        saved = json.load(f)
                except (OSError, ValueError):
                    saved = None
                if isinstance(saved, dict):
                    check_same_run(config_path, saved, saved.get("data"), self.config, self.data)
            self.log(f"[tp_keras] --resume: no checkpoint in {self.workdir}, starting from the beginning")
            return None
        header = load_checkpoint(self.checkpoint_path, trainer, self.config, self.data)
        self.history, batches.passes = header["history"], header["passes"]
        self.checkpoint_epoch = header["epoch"]
        self.log(f"[tp_keras] resuming from {self.checkpoint_path}: epoch {header['epoch']} done")
        return header["epoch"]

    def open(self, trainer, batches, has_val: bool, first_epoch: int) -> None:
        """Writes config.json, rewrites the per-epoch files to hold exactly the checkpointed epochs (a killed run
        may have written one more line), opens TensorBoard's writer."""
        self.trainer, self.batches, self.has_val = trainer, batches, has_val
        if self.overwrite:  # the old run's files go before the first of this run's is written: never a mixed folder
            removed = rundir.remove_run(self.workdir)
            if removed:
                self.log(f"[tp_keras] --overwrite: removed the previous run's {', '.join(removed)} from "
                         f"{self.workdir}")
        rundir.write_json(os.path.join(self.workdir, "config.json"),
                          {**dataclasses.asdict(self.config), "data": self.data})
        rundir.atomic_write(self.metrics_path, "".join(rundir.json_text(row, None) + "\n" for row in self.history))
        if self.config.log_angles:
            kept = [line for line in _read_lines(self.angles_path) if _angle_epoch(line) < first_epoch] \
                if first_epoch > 1 else []
            rundir.atomic_write(self.angles_path, "".join(kept))
        tb = rundir.make_folder(os.path.join(self.workdir, "tb"), what="the TensorBoard folder")
        try:
            self.writer = tf.summary.create_file_writer(tb)
        except tf.errors.OpError as err:
            raise rundir.RunDirError(f"cannot write TensorBoard events in {tb}: {op_error_text(err)}; choose "
                                     "another --workdir") from None
        self.start = time.perf_counter() - (self.history[-1].get("total_seconds", 0.0) if self.history else 0.0)

    def before_train_batch(self) -> None:
        self.stop.check()
        faults.kill_point("train_batch")

    def before_feedback_batch(self) -> None:
        self.stop.check()
        faults.kill_point("feedback_batch")

    def record(self, row: dict) -> None:
        """Checkpoints a finished epoch (or pre-training, epoch 0), then appends its metrics line and TensorBoard
        scalars and rewrites the summary. A failure leaves the previous checkpoint and summary as they were."""
        row["total_seconds"] = time.perf_counter() - self.start
        self.history.append(row)
        try:
            save_checkpoint(self.checkpoint_path, self.trainer, epoch=row["epoch"], passes=self.batches.passes,
                            history=self.history, config=self.config, data=self.data)
        except BaseException:
            self.history.pop()
            raise
        self.checkpoint_epoch = row["epoch"]
        rundir.append_lines(self.metrics_path, [rundir.json_text(row, None)])
        self._scalars(row["epoch"], [(key, value) for key, value in row.items()
                                     if key != "epoch" and isinstance(value, (int, float))])
        self.write_summary("running")  # an interrupted or killed run still leaves the summary of its epochs
        faults.kill_point("after_checkpoint")
        self.stop.check()

    def record_angles(self, rows: list[dict]) -> None:
        rundir.append_lines(self.angles_path, [json.dumps(row) for row in rows])
        for row in rows:
            self._scalars(row["iteration"], [(f"angles/{key}_{layer}", value) for key in ("bp_angle", "gnt_angle")
                                             for layer, value in enumerate(row[key], start=1)])

    def _scalars(self, step: int, items) -> None:
        try:
            with self.writer.as_default(step=step):
                for key, value in items:
                    tf.summary.scalar(key, value)
            self.writer.flush()
        except tf.errors.OpError as err:
            raise rundir.RunDirError(f"cannot write TensorBoard events in {os.path.join(self.workdir, 'tb')}: "
                                     f"{op_error_text(err)}; free some space or choose another --workdir, then "
                                     "continue with --resume") from None

    def write_summary(self, status: str, **details) -> RunSummary:
        config = self.config
        summary = RunSummary({"method": config.method, "dataset": config.dataset, "seed": config.seed,
                              "status": status, **details, "total_seconds": time.perf_counter() - self.start,
                              **summarize(self.history, self.has_val)})
        if self.history and self.history[0]["epoch"] == 0:
            summary["rec_loss_first"] = self.history[0]["rec_loss_first"]
            summary["rec_loss_init"] = self.history[0]["rec_loss_init"]
        summary.checkpoint_epoch = self.checkpoint_epoch
        rundir.write_json(self.summary_path, summary, before_rename=lambda: faults.kill_point("summary_rename"),
                          fix=f"the previous summary.json and {CHECKPOINT} are kept; free some space and continue "
                              "with --resume, or choose another --workdir")
        return summary

    def where_to_continue(self) -> str:
        if self.checkpoint_epoch is None:
            return "no checkpoint was written yet: rerun with --resume or --overwrite to start over"
        return (f"the last good checkpoint (epoch {self.checkpoint_epoch}) is {self.checkpoint_path}: continue "
                "with --resume")


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    except FileNotFoundError:
        return []
    except OSError as err:
        raise rundir.error(err, "read", path) from None


def _angle_epoch(line: str) -> float:
    """The epoch of an angles.jsonl line; a damaged line counts as after every epoch (it is dropped)."""
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _check_splits(dataset: Dataset) -> None:
    for name in ("train", "test") + (("val",) if dataset.val is not None else ()):
        if len(getattr(dataset, name).x) == 0:
            raise DataError(f"the {name} split of {dataset.name} has 0 samples; give every split at least one "
                            "sample")


def train_and_evaluate(config: Config, workdir: str, dataset: Dataset | None = None,
                       trainer: Trainer | None = None, *, resume: bool = False, overwrite: bool = False,
                       on_epoch_end=None) -> RunSummary:
    """Runs one experiment and returns its summary (also written to workdir/summary.json).

    Args:
      config: the experiment (validated here).
      workdir: output directory (created). One run at a time: a second run on a workdir in use raises a one-line
        RunDirError naming the process that holds it. One run per folder: unless `resume` or `overwrite`, a
        workdir that holds a run's files (rundir.RUN_FILES) raises a one-line RunDirError naming that run.
      dataset: optional pre-loaded data (otherwise loaded from config.dataset / config.data_dir).
      trainer: optional `Trainer` from build_trainer(config, build_model(config, dataset)), for a caller that
        wants the trained model afterwards (trainer.model).
      resume: continue from workdir/checkpoint.npz if there is one (written after feedback pre-training and
        after every epoch): same weights, optimizer states, noise state, shuffling and history, so the
        finished run equals an uninterrupted one. Refused (ConfigError) when the checkpoint (or, before the first
        one, config.json) was written with other settings or on other data (its fingerprint), or has done more
        epochs than config.epochs.
      overwrite: replace the run the workdir holds: its files (rundir.remove_run) are removed once this run has
        loaded its data and built its model, just before it writes its config.json.
      on_epoch_end: optional `f(row)` called after every training epoch has been recorded and checkpointed
        (`row` is that epoch's metrics.jsonl line); returning a status string (e.g. "pruned: ...") ends the run
        with that status. A hyper-parameter search prunes trials with it.

    A non-finite value ends the run with status "diverged: ..." (returned, not raised). SIGINT or SIGTERM stops
    it at the next batch: summary.json gets status "interrupted" and `faults.Interrupted` (a KeyboardInterrupt)
    is raised with a one-line message. A run that would not fit in memory raises ConfigError before building the
    model; file-system failures raise RunDirError; in every case the previous checkpoint and summary stay valid.
    """
    config.validate()
    if resume and overwrite:
        raise ConfigError("overwrite", "--resume continues the run in the workdir, --overwrite replaces it; give "
                                       "one of the two")
    faults.kill_spec()  # a malformed TP_KERAS_KILL_AT fails now, not at the kill point
    if trainer is not None:  # multi-worker: only the chief writes workdir (the others a removed temporary folder)
        workdir = worker_workdir(trainer, workdir, resume)
    log = print if config.progress else (lambda *a, **k: None)
    folder = _RunFolder(workdir, config, log, overwrite=overwrite)
    folder.acquire()
    tf32_before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(config.tf32)  # for this run; restored after it
    try:
        if not resume:
            folder.check_free()
        return _run(config, folder, dataset, trainer, resume, on_epoch_end, log)
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32_before)
        folder.release()


def _run(config, folder: _RunFolder, dataset, trainer, resume, on_epoch_end, log) -> RunSummary:
    keras.utils.set_random_seed(config.seed)
    if dataset is None:
        dataset = load_dataset(config.dataset, config.data_dir, seed=config.seed,
                               validation_size=config.validation_size, no_val_set=config.no_val_set,
                               flatten=config.architecture != "cnn")
    _check_splits(dataset)
    folder.data = dataset_fingerprint(dataset)
    if trainer is None:
        memory.check_dataset_fits(config, dataset)
        trainer = build_trainer(config, build_model(config, dataset))
    batches = _Batches(dataset.train, config.batch_size, config.seed)
    has_val = dataset.val is not None
    resumed_epoch = folder.resume(trainer, batches) if resume else None
    folder.open(trainer, batches, has_val, 1 if resumed_epoch is None else resumed_epoch + 1)
    log(f"[tp_keras] {config.method} on {config.dataset}: {len(dataset.train.x)} train / "
        f"{len(dataset.val.x) if has_val else 0} val / {len(dataset.test.x)} test, {config.precision}, "
        f"workdir {folder.workdir}")

    multi_steps = _MultiSteps(config, trainer, batches, log)
    ahead = _trace_ahead(config, trainer, batches, dataset, multi_steps, resumed_epoch).start()

    def feedback_passes(count, label, where):
        return [_run_pass(trainer.feedback_step, batches, label, config.progress, where=f"{where} {k + 1}",
                          before_batch=folder.before_feedback_batch, **multi_steps.feedback)["rec_loss"]
                for k in range(count)]

    try:
        with faults.StopRequests() as folder.stop:
            status = _train_epochs(config, trainer, batches, dataset, folder, feedback_passes, log,
                                   resumed_epoch=resumed_epoch, on_epoch_end=on_epoch_end,
                                   multi_steps=multi_steps)
    except KeyboardInterrupt as err:  # faults.Interrupted (SIGINT/SIGTERM), or a bare Ctrl-C from elsewhere
        name = getattr(err, "signal_name", "SIGINT")
        folder.write_summary("interrupted", interrupted_by=name, interrupted_in=folder.where)
        raise faults.Interrupted(name, f"interrupted by {name} in {folder.where}; "
                                       f"{folder.where_to_continue()}") from None
    except Diverged as err:
        status = f"diverged: {err}"
        log(f"[tp_keras] stopping: {status}; " + (
            f"the last good checkpoint (epoch {folder.checkpoint_epoch}) is {folder.checkpoint_path}"
            if folder.checkpoint_epoch is not None else "no checkpoint was written"))
    finally:
        ahead.stop()  # normally long done; an interrupted run waits for the current trace only
    return folder.write_summary(status)


def _distributed(trainer) -> bool:
    """Whether `trainer` is a distribute.DistributedTrainer (one strategy.run per batch)."""
    return hasattr(trainer, "replica_batch_step")


def _trace_ahead(config, trainer, batches, dataset, multi_steps, resumed_epoch) -> trace_ahead.TraceAhead:
    """The run's step traces, made on a thread while its first batches run (run.trace_ahead): none under a
    strategy (its scope is per thread) or when a resumed run has no epoch left; no training-step traces when angle
    logging sends some batches, maybe the smaller last one, through the angle step instead; no feedback-step traces
    when no feedback-only pass runs."""
    nothing_left = resumed_epoch is not None and resumed_epoch >= config.epochs
    if not trace_ahead.ENABLED or _distributed(trainer) or nothing_left:
        return trace_ahead.TraceAhead([])
    pretraining = resumed_epoch is None and trainer.trains_feedback and config.epochs_fb > 0
    jobs = trace_ahead.planned_traces(
        trainer, batches, [s for s in (dataset.val, dataset.test) if s is not None], feedback_first=pretraining,
        train_loop=multi_steps.train.get("multi_step"), feedback_loop=multi_steps.feedback.get("multi_step"),
        train=trainer.angle_step is None, feedback=pretraining or config.extra_fb_epochs > 0)
    return trace_ahead.TraceAhead(jobs)
