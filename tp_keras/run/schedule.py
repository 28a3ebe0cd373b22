"""The reference's schedule of a run (docs/semantics.md §5.2): `epochs_fb` feedback-only passes, then per epoch one
training pass (targets → feedback step → forward step on every batch), `extra_fb_epochs` feedback-only passes, and
evaluation on the validation and test sets; each epoch's row is recorded (and checkpointed) by the run folder."""
from __future__ import annotations

import time

import numpy as np

from tp_keras.core.optimizers import cosine_annealing, set_learning_rates
from tp_keras.run.passes import MultiSteps, evaluate, run_pass
from tp_keras.run.records import RunFolder

# docs/semantics.md §5.4: from the 6th epoch on, a run whose train accuracy is below this is pruned (if enabled).
PRUNE_ACCURACY = {"mnist": 0.40, "fashion_mnist": 0.40, "cifar10": 0.25}


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


def forward_learning_rates(config, epoch: int):
    """The forward learning rate(s) of epoch `epoch` (1 for the first) under config.lr_schedule: 'none' keeps
    `config.forward_learning_rate`; 'cosine' anneals each (per-layer) rate to lr_min over lr_schedule_epochs as
    PyTorch's CosineAnnealingLR stepped after every epoch (`optimizers.cosine_annealing`, epoch − 1 steps)."""
    rates = config.forward_learning_rate
    if config.lr_schedule == "none":
        return rates
    period = config.lr_schedule_epochs or config.epochs

    def anneal(rate):
        return cosine_annealing(rate, epoch - 1, period, config.lr_min)
    return tuple(anneal(r) for r in rates) if isinstance(rates, tuple) else anneal(rates)


def train_epochs(config, trainer, batches, dataset, folder: RunFolder, feedback_passes, log, *,
                 resumed_epoch: int | None, on_epoch_end=None, multi_steps: MultiSteps) -> str:
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
        rates = forward_learning_rates(config, epoch)
        if config.lr_schedule != "none":
            # Set before every epoch from its number alone, so a resumed run trains at the rates of an unbroken one.
            set_learning_rates(trainer.forward_optimizer, rates)
        t0 = time.perf_counter()
        logged = []
        train = run_pass(trainer.train_step, batches, "train", config.progress, angle_step=trainer.angle_step,
                          log_interval=config.log_interval, angles_out=logged, where=f"epoch {epoch}",
                          before_batch=folder.before_train_batch, **multi_steps.train)
        t1 = time.perf_counter()
        angle_rows = _angle_rows(epoch, batches.steps, logged)
        extra = feedback_passes(config.extra_fb_epochs, "fb_extra", f"extra feedback pass after epoch {epoch}:"
                                ) if trainer.trains_feedback else []
        t2 = time.perf_counter()
        row = {"epoch": epoch, "train_loss": train["loss"]}
        if config.lr_schedule != "none":  # the rate(s) this epoch trained at (one key per layer for per-layer rates)
            row.update({f"learning_rate_{i + 1}": r for i, r in enumerate(rates)} if isinstance(rates, tuple)
                       else {"learning_rate": rates})
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

