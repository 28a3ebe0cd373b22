"""The conv-net cost figure: `python -m tp_keras.bench --conv [--xla=off|on|both] [--samples=1280] [--repeats=3]`.

The five rules of the Fashion-MNIST conv comparison (launch/fashion_mnist_conv_*.flags: bp, ldrl, dtpdrl,
ddtp_linear, fw_dtp) on its network — 28×28×1 images, 4 conv blocks 3×3 'same' ELU of 32, 32, 64, 64 channels, 2×2
max-pool after blocks 2 and 4, the linear layer to 10, Xavier init, summed local losses, each rule's default
hyper-parameters (L-DRL: K = 3 feedback steps per batch, its flagfile's) — timed in one process on random
Fashion-MNIST-shaped batches prepared on the device. Per XLA setting and rule (BP first): the first call's seconds
(trace, compile, one step), then `repeats` timed passes over the batches, the rules' passes alternating so that a
change of load hits all of them alike; the median pass gives seconds per batch, samples/s and × BP, with the
process's CPU seconds per batch beside it (on a shared machine, the figure other work disturbs least). Rules that
train a feedback path also time their feedback-only step (the pass of `--epochs_fb` and `--extra_fb_epochs`), and
a training epoch's cost against BP's counts the feedback-only passes per epoch their flagfiles run
(`EXTRA_FEEDBACK_PASSES`).
"""
from __future__ import annotations

import dataclasses
import statistics
import time

from tp_keras.core.rules import get_rule

CONV_METHODS = ("bp", "ldrl", "dtpdrl", "ddtp_linear", "fw_dtp")
IMAGE_SHAPE = (28, 28, 1)
CHANNELS = (32, 32, 64, 64)
POOLING = ("none", "max", "none", "max")
# Feedback-only passes per training epoch in launch/fashion_mnist_conv_*.flags (--extra_fb_epochs); L-DRL trains
# its feedback inside each batch instead, as its authors.
EXTRA_FEEDBACK_PASSES = {"dtpdrl": 1, "ddtp_linear": 1}
# Variants timed beside the rules (`figures(methods=...)`): L-DRL's loss in the authors' order of operations, every
# inverse block applied and then subtracted (rules/ldrl.py), the baseline of its linear differences.
RULE_VARIANTS = {"ldrl_as_written": lambda: dataclasses.replace(get_rule("ldrl"), feedback_loss="ldrl_as_written")}


def rule_of(method):
    """The rule a method name of this benchmark stands for: a rule's name or one of RULE_VARIANTS."""
    return RULE_VARIANTS[method]() if method in RULE_VARIANTS else get_rule(method)

FIELDS = {
    "method": "the rule (or one of RULE_VARIANTS)",
    "xla": "XLA compilation of the steps (jit_compile)",
    "first_call_seconds": "the first training call: trace, compile and one step",
    "seconds_per_batch": "one training step (median pass / batches)",
    "cpu_seconds_per_batch": "process CPU seconds of one training step (same passes)",
    "samples_per_second": "batch size / seconds_per_batch",
    "ratio_to_bp": "seconds_per_batch / BP's at the same XLA setting",
    "cpu_ratio_to_bp": "cpu_seconds_per_batch / BP's at the same XLA setting",
    "feedback_seconds_per_batch": "one feedback-only step (rules that train feedback; else null)",
    "extra_feedback_passes": "feedback-only passes per training epoch in the rule's flagfile",
    "epoch_ratio_to_bp": "(seconds_per_batch + extra_feedback_passes * feedback_seconds_per_batch) / BP's "
                         "seconds_per_batch: one epoch's cost against BP's",
}


def network_specs(channels=CHANNELS):
    return [{"filters": c, "kernel_size": 3, "activation": "elu", "pooling": p}
            for c, p in zip(channels, POOLING)] + [{"units": 10}]


def conv_trainer(method, *, xla: bool, seed: int = 42, channels=CHANNELS, image_shape=IMAGE_SHAPE):
    """A `Trainer` of `method` on the conv comparison's network with Adam optimizers (their step count, not their
    settings, is what costs)."""
    import keras

    from tp_keras.core.conv_networks import ConvChainNetwork
    from tp_keras.core.model import TPModel
    from tp_keras.core.step import Trainer
    rule = rule_of(method)
    net = ConvChainNetwork(rule, image_shape, network_specs(channels), init="xavier", conv_loss="sum", seed=seed)
    model = TPModel(rule, network=net, seed=seed)
    feedback = keras.optimizers.Adam(1e-5) if model.feedback_variables else None
    return Trainer(model, keras.optimizers.Adam(1e-5), feedback, jit_compile=xla)


def refusal(method) -> str | None:
    """Why `method` has no conv version (ConvChainNetwork's one line), or None."""
    from tp_keras.core.conv_networks import check_rule
    try:
        check_rule(rule_of(method))
    except ValueError as error:
        return str(error)
    return None


def fashion_mnist_shaped_batches(samples, batch_size, seed=0, image_shape=IMAGE_SHAPE):
    """Random normalised images (28×28×1) with labels 0..9, whole batches only, on the device."""
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    count = max(1, samples // batch_size)
    x = ((rng.integers(0, 256, (count * batch_size,) + tuple(image_shape)) / 255.0 - 0.5) / 0.5).astype("float32")
    y = rng.integers(0, 10, count * batch_size).astype("int32")
    return [(tf.constant(x[i:i + batch_size]), tf.constant(y[i:i + batch_size]))
            for i in range(0, count * batch_size, batch_size)]


def _sync(out):
    float(out["loss"])  # the host waits for the step


def _timed_pass(step, batches):
    """(wall seconds, process CPU seconds) of one pass."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = None
    for x, y in batches:
        out = step(x, y)
    _sync(out)
    return time.perf_counter() - wall, time.process_time() - cpu


def _first_call(step, batch):
    start = time.perf_counter()
    _sync(step(*batch))
    return time.perf_counter() - start


def figures(batches, *, methods=CONV_METHODS, xla_settings=(False, True), repeats=3, report=print,
            channels=CHANNELS):
    """One row per XLA setting and rule (FIELDS), BP first; `report(line)` gets the table as it goes. `channels`
    (4 values) and the batches' image shape give a smaller net of the same structure (tests)."""
    methods = ["bp"] + [m for m in methods if m != "bp"]
    rows, count, batch_size = [], len(batches), int(batches[0][0].shape[0])
    report(f"{'method':<17}{'xla':<5}{'first s':>9}{'s/batch':>9}{'cpu s/b':>9}{'samples/s':>10}{'x BP':>7}"
           f"{'cpu x BP':>9}{'fb s/b':>8}{'epoch x BP':>11}")
    for xla in xla_settings:
        trainers = {}
        first = {}
        for method in methods:
            trainers[method] = conv_trainer(method, xla=xla, channels=channels,
                                            image_shape=tuple(int(d) for d in batches[0][0].shape[1:]))
            first[method] = _first_call(trainers[method].train_step, batches[0])
            if trainers[method].trains_feedback:
                _first_call(trainers[method].feedback_step, batches[0])
        passes = {m: [] for m in methods}
        feedback_passes = {m: [] for m in methods if trainers[m].trains_feedback}
        for _ in range(repeats):  # the rules' passes alternate
            for method in methods:
                passes[method].append(_timed_pass(trainers[method].train_step, batches))
                if method in feedback_passes:
                    feedback_passes[method].append(_timed_pass(trainers[method].feedback_step, batches)[0])
        group = []
        for method in methods:
            wall = statistics.median(p[0] for p in passes[method]) / count
            cpu = statistics.median(p[1] for p in passes[method]) / count
            fb = statistics.median(feedback_passes[method]) / count if method in feedback_passes else None
            group.append({"method": method, "xla": xla, "first_call_seconds": first[method],
                          "seconds_per_batch": wall, "cpu_seconds_per_batch": cpu,
                          "samples_per_second": batch_size / wall, "feedback_seconds_per_batch": fb,
                          "extra_feedback_passes": EXTRA_FEEDBACK_PASSES.get(method, 0)})
        bp = group[0]
        for row in group:
            row["ratio_to_bp"] = row["seconds_per_batch"] / bp["seconds_per_batch"]
            row["cpu_ratio_to_bp"] = row["cpu_seconds_per_batch"] / bp["cpu_seconds_per_batch"]
            extra = row["extra_feedback_passes"] * (row["feedback_seconds_per_batch"] or 0.0)
            row["epoch_ratio_to_bp"] = (row["seconds_per_batch"] + extra) / bp["seconds_per_batch"]
            fb = "-" if row["feedback_seconds_per_batch"] is None else f"{row['feedback_seconds_per_batch']:.3f}"
            report(f"{row['method']:<17}{'on' if xla else 'off':<5}{row['first_call_seconds']:>9.2f}"
                   f"{row['seconds_per_batch']:>9.3f}{row['cpu_seconds_per_batch']:>9.3f}"
                   f"{row['samples_per_second']:>10.1f}{row['ratio_to_bp']:>7.2f}{row['cpu_ratio_to_bp']:>9.2f}"
                   f"{fb:>8}{row['epoch_ratio_to_bp']:>11.2f}")
        rows += group
    return rows
