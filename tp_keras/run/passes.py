"""One pass over the training set, and the evaluation of a split: the launcher's loop around the trainer's compiled
steps (tp_keras.core.step.Trainer), one batch or many per compiled call (tp_keras.core.loop).

Every pass reshuffles the training set with a permutation drawn from (seed, pass index)."""
from __future__ import annotations

import math
import sys
import weakref

import keras
import numpy as np
import tensorflow as tf

from tp_keras.core import loop
from tp_keras.core.health import HEALTH_KEYS, Diverged, first_problem_stacked, stack_calls
from tp_keras.core.step import Trainer
from tp_keras.run.config import Config
from tp_keras.run.data import crop_flip_draws, crop_flip_indices


def pass_permutation(seed: int, pass_index: int, rows: int) -> np.ndarray:
    """The order of a training set's rows in pass `pass_index` of a run seeded `seed` (every pass reshuffles)."""
    return np.random.default_rng([seed, pass_index]).permutation(rows)


class Batches:
    """The training set, reshuffled for every pass by a permutation drawn from (seed, pass index).

    The data are placed on the device once; each pass gathers its permuted copy there and slices it, so no
    per-batch host work is left but the slice (a tf.data pipeline cost ~2 s more per MNIST pass on 2 cores;
    permuting on the host and uploading every pass cost 0.2–0.4 s, the device gather 0.11 s)."""

    def __init__(self, split, batch_size: int, seed: int, augment: str = "none"):
        self.x, self.y = tf.constant(split.x), tf.constant(split.y)
        self.augment = augment  # 'crop_flip': data.crop_flip on every pass's copy (NHWC images)
        self.batch_size = batch_size
        self.seed = seed
        self.passes = 0
        self.steps = math.ceil(int(self.x.shape[0]) / batch_size)

        self.full_steps = int(self.x.shape[0]) // batch_size  # batches of exactly batch_size rows

    def permuted(self):
        """The next pass's shuffled copy of the whole set, on the device."""
        n = int(self.x.shape[0])
        perm = pass_permutation(self.seed, self.passes, n)
        x = tf.gather(self.x, perm)
        if self.augment == "crop_flip":
            rows, cols = crop_flip_indices(*self.x.shape[1:3], *crop_flip_draws(self.seed, self.passes, n))
            x = tf.gather(tf.gather(x, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
        self.passes += 1
        return x, tf.gather(self.y, perm)


def in_order(x, y, batch_size):
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    for start in range(0, int(x.shape[0]), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]


class MultiSteps:
    """The compiled multi-batch loops of a run (loop.StepLoop around the trainer's train and feedback steps), as
    keyword arguments of `run_pass`: empty with one batch per call (config.steps_per_call resolved for the
    device and the pass, see loop.device_defaults), which leaves the one-batch-per-call loop exactly as it was."""

    def __init__(self, config: Config, trainer, batches: Batches, log):
        steps = loop.resolve_steps(config.steps_per_call, batches.steps)
        jit = loop.resolve_jit(config.jit_compile)
        self.train = self.feedback = {}
        if steps > 1 and batches.full_steps > 1:
            if is_distributed(trainer):  # strategy.run per batch
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


def run_pass(step_fn, batches: Batches, label: str, show_progress: bool, *, angle_step=None,
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
        for key in HEALTH_KEYS:
            if key in metrics:
                flags.setdefault(key, []).append((metrics.pop(key), many))
        for key, value in metrics.items():
            collected.setdefault(key, []).append((value, many))
        done = i + count
        if bar is not None and (done // sync_every > i // sync_every or done == batches.steps):
            bar.update(done, [(f"{label}_{k}", float(v[-1] if many else v)) for k, v in metrics.items()])
    problem = first_problem_stacked(where or label, {k: stack_calls(v) for k, v in flags.items()}) if flags else None
    if problem:
        raise Diverged(problem)
    if angles_out is not None:
        angles_out.extend((i, bp.numpy().tolist(), gnt.numpy().tolist()) for i, bp, gnt in logged)
    return {k: float(tf.reduce_mean(tf.cast(stack_calls(v), tf.float64))) for k, v in collected.items()}


def evaluate(trainer: Trainer, split, batch_size: int) -> dict:
    """Loss (and accuracy, for classification) on a split: sample-weighted means, and the reference's unweighted
    means over batches (`*_batchmean`, where the small last batch is over-weighted; docs/semantics.md §15.12).

    The split's full batches go through the trainer's eval step in one compiled loop (loop.StepLoop: the same
    per-batch computation, bit for bit, tests/test_launch.py), the last, smaller batch alone; the split stays on
    the device between evaluations. The per-batch sums stay there too; the host reads them once, at the end."""
    if is_distributed(trainer):  # strategy.run per batch
        sums = [trainer.eval_step(x, y) for x, y in in_order(split.x, split.y, batch_size)]
        columns = {k: [np.atleast_1d(v) for v in tf.stack([s[k] for s in sums]).numpy()] for k in sums[0]}
    else:
        data, multi_step = _evaluation(trainer, split, batch_size)
        calls = [out for out, _ in data.calls(trainer.eval_step, multi_step, max(1, data.full_steps))]
        columns = {k: [np.atleast_1d(out[k].numpy()) for out in calls] for k in calls[0]}
    # float64 sums of the float32 per-batch values, in batch order.
    table = {k: np.concatenate(v).astype(np.float64) for k, v in columns.items()}
    result = {"loss": float(table["loss_sum"].sum() / table["count"].sum()),
              "loss_batchmean": float(np.mean(table["loss_sum"] / table["count"]))}
    if "correct" in table:
        result.update(acc=float(table["correct"].sum() / table["count"].sum()),
                      acc_batchmean=float(np.mean(table["correct"] / table["count"])))
    return result


# Per trainer: its evaluation loop and each evaluated split on the device, made at the first evaluation.
_EVALUATIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _evaluation(trainer, split, batch_size: int):
    """(loop.Pass of `split` on the device, loop.StepLoop of trainer.eval_step), kept for the next evaluation."""
    kept = _EVALUATIONS.setdefault(trainer, {"splits": []})
    if kept.get("batch_size") != batch_size:
        kept.update(batch_size=batch_size, splits=[],
                    # Not XLA-compiled itself: the step inside keeps its own compilation, so its numbers.
                    loop=loop.StepLoop(trainer.eval_step, batch_size))
    for held, data in kept["splits"]:
        if held is split:
            return data, kept["loop"]
    data = loop.Pass(split.x, split.y, batch_size)
    if not kept["splits"]:  # one trace for every split: the rows unknown (each batch keeps its static shape)
        kept["loop"].trace(*(tf.TensorSpec([None] + t.shape[1:].as_list(), t.dtype) for t in (data.x, data.y)))
    kept["splits"].append((split, data))
    return data, kept["loop"]


def is_distributed(trainer) -> bool:
    """Whether `trainer` is a distribute.DistributedTrainer (one strategy.run per batch)."""
    return hasattr(trainer, "replica_batch_step")
