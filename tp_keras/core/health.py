"""Where training first went non-finite: `Diverged` and its message, from the per-batch finiteness flags of
`step.health` (shared by the launcher's loop and `TPModel.fit`, which must say the same)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

class Diverged(RuntimeError):
    """A non-finite loss, target or feedback loss; `str(err)` says where (pass, batch, layer)."""


HEALTH_KEYS = ("finite_loss", "finite_layers", "finite_feedback")


def first_problem(label: str, flags: list[dict]) -> str | None:
    """Where the first non-finite value of a pass appeared, from the per-batch flags of step.health."""
    if not flags:
        return None
    # One device-side stack and one host read per flag kind (not one read per batch).
    return first_problem_stacked(label, {k: tf.stack([f[k] for f in flags]) for k in flags[0]})


def first_problem_stacked(label: str, stacked: dict) -> str | None:
    """`first_problem` from the flags stacked over the batches (each of shape (batches, ...))."""
    stacked = {k: np.asarray(tf.convert_to_tensor(v).numpy()) for k, v in stacked.items()}
    stacked = {k: v.reshape(len(v), -1) for k, v in stacked.items()}
    count = len(stacked["finite_loss"])
    bad = [i for i in range(count) if any(np.any(v[i] == 0) for v in stacked.values())]
    if not bad:
        return None
    i = bad[0]
    if stacked["finite_loss"][i, 0] == 0:
        where = "loss"
    elif "finite_layers" in stacked and np.any(stacked["finite_layers"][i] == 0):
        where = f"layer {int(np.argmin(stacked['finite_layers'][i])) + 1}'s target (or activation)"
    else:
        where = f"feedback loss of hidden layer {int(np.argmin(stacked['finite_feedback'][i])) + 1}"
    return f"non-finite {where} in {label}, batch {i}"


def stack_calls(entries: list) -> tf.Tensor:
    """One (batches, ...) tensor from per-call entries: (value, True) of a multi-batch call, already stacked, or
    (value, False) of a one-batch call."""
    if not any(many for _, many in entries):
        return tf.stack([value for value, _ in entries])  # one batch per call: as the loop always did
    return tf.concat([value if many else value[None] for value, many in entries], axis=0)


class FirstNonFinite:
    """Where the first non-finite batch of an epoch is: device-side state that every train step writes (its index
    and its flattened `step.health` flags), read by the host once per epoch, so the step never waits for a read.

    Sync-on-read variables: each replica keeps its copy (all replicas write the same all-reduced flags), and the
    host reads the first replica's."""

    def __init__(self, width: int):
        local = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.batch = tf.Variable(0, dtype=tf.int32, **local)
        self.first = tf.Variable(-1, dtype=tf.int32, **local)
        self.flags = tf.Variable(tf.ones([width], tf.float32), **local)

    def reset(self):
        self.batch.assign(0)
        self.first.assign(-1)
        self.flags.assign(tf.ones_like(self.flags))

    def update(self, finite):
        new = tf.logical_and(self.first < 0, tf.reduce_min(finite) < 1.0)
        self.first.assign(tf.where(new, self.batch, self.first))
        self.flags.assign(tf.where(new, finite, self.flags))
        self.batch.assign_add(1)

    def record(self, flags: dict, context) -> None:
        """Records a train step's `step.health` flags; under a strategy (`context`, the replica context), the global
        batch is finite where no replica saw a non-finite value."""
        parts = [tf.reshape(flags["finite_loss"], [1])] + [flags[k] for k in ("finite_layers", "finite_feedback")
                                                            if k in flags]
        finite = tf.cast(tf.concat(parts, axis=0), tf.float32)
        if context is not None:
            bad = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - finite)
            finite = tf.cast(tf.equal(bad, 0.0), tf.float32)
        self.update(finite)

    def problem(self, where: str, layers: int) -> str | None:
        """The launcher's message (`first_problem`) for the first non-finite batch recorded since the last reset of
        a model of `layers` layers, or None."""
        batch = int(self.first.numpy())
        if batch < 0:
            return None
        flags = np.asarray(self.flags.numpy())
        row = {"finite_loss": flags[0], "finite_layers": flags[1:1 + layers]}
        if len(flags) > 1 + layers:
            row["finite_feedback"] = flags[1 + layers:]
        finite = {k: np.ones_like(v) for k, v in row.items()}
        return first_problem(where, [finite] * batch + [row])
