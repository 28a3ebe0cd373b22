"""Tracing a run's compiled steps ahead of their first use, on a background thread.

A compiled step's first call at a new batch shape pays a trace: about 1 s for the paper's network on 2 CPU cores,
for the training step at the full batch size and again at the pass's last, smaller batch. A run knows every shape
each step will meet and in which order (the full batch, then the remainder; the validation and test splits'
batches), so a thread traces them while the first batches run; the run's own calls then find the traces made.

Same results, bit for bit (tests/test_trace_ahead.py): each step is traced at the same shapes in the same order as
the run's own calls would trace it. The order matters: with `reduce_retracing` a step's second shape gets a trace
of unknown batch size, and that graph may round differently from the full batch's. A step's `tf.function` lock
serialises the thread and the run, so whichever comes first traces and the other reuses it. Only tracing moves to
the thread (a call would train); the first call's graph optimisation stays where it was.

Not used under a `tf.distribute` strategy (its scope is per thread) or when `ENABLED` is False.
"""
from __future__ import annotations

import threading

import tensorflow as tf

from tp_keras.run.passes import is_distributed

ENABLED = True


def batch_sizes(rows: int, batch_size: int) -> list[int]:
    """The batch sizes of a pass over `rows` rows in order of first appearance (full, then the remainder)."""
    sizes = [batch_size] if rows >= batch_size else []
    return sizes + ([rows % batch_size] if rows % batch_size else [])


def _spec(data, rows: int) -> tf.TensorSpec:
    """A batch of `rows` rows of `data` (a tensor or a NumPy array), as the run's calls pass it."""
    return tf.TensorSpec([rows] + list(data.shape[1:]), tf.as_dtype(data.dtype))


def planned_traces(trainer, batches, splits, *, feedback_first: bool, train_loop=None, feedback_loop=None,
                   train: bool = True, feedback: bool = True) -> list:
    """The traces a run will make, in the order it first needs them, as argument-less callables.

    `batches` is the run's training set (`x`, `y`, `batch_size`), `splits` the evaluated splits in order
    (validation, test), `feedback_first` whether feedback passes come before the first training pass (pre-training),
    `train_loop`/`feedback_loop` the run's `loop.StepLoop`s, if any; `train=False` / `feedback=False` leave out
    the training / feedback-only step's."""
    x, y, size = batches.x, batches.y, batches.batch_size

    def steps(step, loop_, data_x, data_y):
        jobs = [lambda n=n: step.get_concrete_function(_spec(data_x, n), _spec(data_y, n))
                for n in batch_sizes(int(data_x.shape[0]), size)]
        if loop_ is not None:
            jobs.append(lambda: loop_.trace(_spec(data_x, int(data_x.shape[0])), _spec(data_y, int(data_y.shape[0]))))
        return jobs

    train = steps(trainer.train_step, train_loop, x, y) if train else []
    feedback = steps(trainer.feedback_step, feedback_loop, x, y) if feedback and trainer.trains_feedback else []
    evaluation = [job for split in splits for job in steps(trainer.eval_step, None, split.x, split.y)]
    return (feedback + train if feedback_first else train + feedback) + evaluation


class TraceAhead:
    """Runs `jobs` in order on a thread. A failing job ends the thread quietly: the run meets the same error at its
    own call, with its own message."""

    def __init__(self, jobs):
        self._jobs = list(jobs)
        self._stop = threading.Event()
        # Not a daemon: the interpreter waits for the current trace rather than kill the thread inside TensorFlow.
        self._thread = threading.Thread(target=self._work, name="tp_keras-trace-ahead")

    def start(self) -> "TraceAhead":
        if self._jobs:
            self._thread.start()
        return self

    def _work(self):
        for job in self._jobs:
            if self._stop.is_set():
                return
            try:
                job()
            except Exception:  # noqa: BLE001 - reported by the run's own call
                return

    def join(self) -> None:
        """Returns when every job has run (or one failed)."""
        if self._thread.is_alive():
            self._thread.join()

    def stop(self) -> None:
        """Runs no further job and returns when the current one is done: a thread still tracing when the
        interpreter exits aborts the process ("terminate called ... exception not rethrown")."""
        self._stop.set()
        self.join()


def for_run(config, trainer, batches, dataset, multi_steps, resumed_epoch) -> TraceAhead:
    """The traces of a run of tp_keras.run.experiment, to make ahead: none under a strategy (its scope is per
    thread) or when a resumed run has no epoch left; no training-step traces when angle logging sends some batches,
    maybe the smaller last one, through the angle step instead; no feedback-step traces when no feedback-only pass
    runs."""
    nothing_left = resumed_epoch is not None and resumed_epoch >= config.epochs
    if not ENABLED or is_distributed(trainer) or nothing_left:
        return TraceAhead([])
    pretraining = resumed_epoch is None and trainer.trains_feedback and config.epochs_fb > 0
    jobs = planned_traces(
        trainer, batches, [s for s in (dataset.val, dataset.test) if s is not None], feedback_first=pretraining,
        train_loop=multi_steps.train.get("multi_step"), feedback_loop=multi_steps.feedback.get("multi_step"),
        train=trainer.angle_step is None, feedback=pretraining or config.extra_fb_epochs > 0)
    return TraceAhead(jobs)
