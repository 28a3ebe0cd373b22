"""The records of one run in its workdir (see tp_keras.run.experiment): the workdir's lock, config.json,
metrics.jsonl, angles.jsonl, tb/, checkpoint.npz and summary.json, all written through tp_keras.run.rundir; and the
summary's docs/semantics.md §10 quantities."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import tensorflow as tf

from tp_keras.run import faults, rundir
from tp_keras.run.checkpoint import CHECKPOINT, check_same_run, load_checkpoint, save_checkpoint
from tp_keras.run.cli import op_error_text
from tp_keras.run.config import Config


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



class RunSummary(dict):
    """summary.json's content, plus `checkpoint_epoch`: the epoch of the run's last good checkpoint in its workdir
    (None when it has none)."""
    checkpoint_epoch: int | None = None


class RunFolder:
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

