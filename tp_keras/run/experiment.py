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

import keras

from tp_keras.core.health import Diverged
from tp_keras.core.step import Trainer
from tp_keras.run import faults, memory, precision, trace_ahead
from tp_keras.run.config import Config, ConfigError
from tp_keras.run.data import DataError, Dataset, dataset_fingerprint, dataset_options, load_dataset
from tp_keras.run.factories import build_model, build_trainer, worker_workdir
from tp_keras.run.passes import Batches, MultiSteps, run_pass
from tp_keras.run.records import RunFolder, RunSummary
from tp_keras.run.schedule import train_epochs


def check_splits(dataset: Dataset) -> None:
    """DataError (one line) for a split without samples."""
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
    folder = RunFolder(workdir, config, log, overwrite=overwrite)
    folder.acquire()
    try:
        with precision.tensor_float_32(config.tf32):  # for this run; restored after it
            if not resume:
                folder.check_free()
            return _run(config, folder, dataset, trainer, resume, on_epoch_end, log)
    finally:
        folder.release()


def _run(config, folder: RunFolder, dataset, trainer, resume, on_epoch_end, log) -> RunSummary:
    keras.utils.set_random_seed(config.seed)
    if dataset is None:
        dataset = load_dataset(**dataset_options(config))
    check_splits(dataset)
    folder.data = dataset_fingerprint(dataset)
    if trainer is None:
        memory.check_dataset_fits(config, dataset)
        trainer = build_trainer(config, build_model(config, dataset))
    batches = Batches(dataset.train, config.batch_size, config.seed, augment=config.augment)
    has_val = dataset.val is not None
    resumed_epoch = folder.resume(trainer, batches) if resume else None
    folder.open(trainer, batches, has_val, 1 if resumed_epoch is None else resumed_epoch + 1)
    log(f"[tp_keras] {config.method} on {config.dataset}: {len(dataset.train.x)} train / "
        f"{len(dataset.val.x) if has_val else 0} val / {len(dataset.test.x)} test, {config.precision}, "
        f"workdir {folder.workdir}")

    multi_steps = MultiSteps(config, trainer, batches, log)
    ahead = trace_ahead.for_run(config, trainer, batches, dataset, multi_steps, resumed_epoch).start()

    def feedback_passes(count, label, where):
        return [run_pass(trainer.feedback_step, batches, label, config.progress, where=f"{where} {k + 1}",
                         before_batch=folder.before_feedback_batch, **multi_steps.feedback)["rec_loss"]
                for k in range(count)]

    try:
        with faults.StopRequests() as folder.stop:
            status = train_epochs(config, trainer, batches, dataset, folder, feedback_passes, log,
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
