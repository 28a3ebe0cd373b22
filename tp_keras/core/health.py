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
