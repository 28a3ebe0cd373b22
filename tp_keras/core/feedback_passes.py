"""Feedback-only passes of a TPModel (`TPModel.train_feedback`; the reference's pre-training and extra feedback
epochs, `FeedbackSchedule`): the compiled feedback half of the step over the data `fit` would take, with their own
batching (a fresh permutation per pass for arrays, the dataset's own batches otherwise)."""
from __future__ import annotations

import collections.abc

import keras
import numpy as np
import tensorflow as tf

from tp_keras.core import keras_checks as C
from tp_keras.core import loop, step
from tp_keras.core.health import Diverged, first_problem_stacked, stack_calls


def train_feedback(model, x, y=None, *, epochs: int = 1, batch_size: int | None = None, seed: int = 0,
                   verbose: bool = False, where: str = "feedback pass") -> list[float]:
    """`TPModel.train_feedback` (its docstring says what it does): each pass's mean feedback loss."""
    if not model.feedback_variables:
        return []
    if model.feedback_optimizer is None:
        raise ValueError("train_feedback needs compile(...) first (it trains with the feedback optimizer)")
    C.check_rule(model)
    C.check_data(model, x, y)
    if getattr(model, "_feedback_step", None) is None:
        object.__setattr__(model, "_feedback_step", tf.function(
            lambda xb, yb: step.train_step(model, model.optimizer, model.feedback_optimizer, xb, yb, forward=False),
            reduce_retracing=True))
    passes = getattr(model, "_feedback_passes", 0)
    batches = _batches(x, y, batch_size)
    steps = int(model.steps_per_execution or 1)
    means = []
    for _ in range(int(epochs)):
        losses, flags = [], {}
        data = batches(seed, passes)
        if isinstance(data, loop.Pass):  # arrays: compile's steps_per_execution batches per call (loop.py)
            multi_step = None
            if steps > 1:
                loop_ = getattr(model, "_feedback_loop", None)
                if loop_ is None or loop_.batch_size != data.batch_size:
                    object.__setattr__(model, "_feedback_loop", loop.StepLoop(model._feedback_step, data.batch_size))
                multi_step = model._feedback_loop
            calls = data.calls(model._feedback_step, multi_step, steps)
        else:
            calls = ((model._feedback_step(xb, yb), False) for xb, yb in data)
        for out, many in calls:
            out = dict(out)
            losses.append((out.pop("rec_loss"), many))
            for k, v in out.items():
                if k.startswith("finite_"):
                    flags.setdefault(k, []).append((v, many))
        if not losses:
            raise ValueError("train_feedback: the data yielded no batch")
        passes += 1
        object.__setattr__(model, "_feedback_passes", passes)
        problem = first_problem_stacked(f"{where} {len(means) + 1}",
                                        {k: stack_calls(v) for k, v in flags.items()})
        if problem:
            raise Diverged(problem)
        means.append(float(tf.reduce_mean(tf.cast(stack_calls(losses), tf.float64))))
        if verbose:
            print(f"[tp_keras] feedback pass {passes}: rec_loss {means[-1]:.4g}")
    return means


def _batches(x, y, batch_size):
    """`f(seed, pass_index)` → the (x, y) batches of one feedback pass over the data `fit` would take."""
    xs = C.host_array(x)
    if xs is not None:
        if y is None:
            raise ValueError("train_feedback: give the labels y with the arrays x (they give the logged loss)")
        ys = np.asarray(C.host_array(y))
        size = 128 if batch_size is None else int(batch_size)

        def shuffled(seed, index):
            order = np.random.default_rng([int(seed), index]).permutation(len(xs))
            return loop.Pass(tf.constant(xs[order]), tf.constant(ys[order]), size)
        return shuffled
    if isinstance(x, collections.abc.Iterator):
        raise ValueError("train_feedback: a Python generator or iterator can be passed over only once; give arrays, "
                         "a tf.data.Dataset or a keras.utils.PyDataset")
    if batch_size is not None:
        raise ValueError("train_feedback: batch_size is for arrays; a dataset brings its own batches")
    from keras.src.trainers.data_adapters import get_data_adapter  # the adapter fit itself uses
    try:
        adapter = get_data_adapter(x, y)
    except ValueError as err:
        raise ValueError(f"train_feedback: {str(err).splitlines()[0]}") from None

    def streamed(seed, index):
        for batch in adapter.get_tf_dataset():
            bx, by, _ = keras.utils.unpack_x_y_sample_weight(batch)
            if by is None:
                raise ValueError("train_feedback: the data must yield (x, y) batches, as for fit")
            yield bx, by
    return streamed
