"""The callbacks of a TPModel's `fit`: `FeedbackSchedule` (the reference's feedback-only passes around the epochs),
`FeedbackLearningRateScheduler` (the feedback optimizer's learning rate by epoch), and `StopOnNonFinite`, which
`TPModel.fit` puts first."""
from __future__ import annotations

import math

import keras

from tp_keras.core.health import Diverged


class StopOnNonFinite(keras.callbacks.Callback):
    """Put first by `TPModel.fit`: at the end of an epoch with a non-finite loss or target, raises `Diverged` with
    the launcher's message before any later callback (a checkpoint, say) sees the broken weights."""

    def on_epoch_begin(self, epoch, logs=None):
        if self.model._first_nonfinite is not None:
            self.model._first_nonfinite.reset()

    def on_epoch_end(self, epoch, logs=None):
        if self.model._first_nonfinite is not None:
            problem = self.model._first_nonfinite.problem(f"epoch {epoch + 1}", len(self.model.tp_layers))
            if problem:
                self.model.stop_training = True
                raise Diverged(problem)


def with_first(callback, callbacks):
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks.callbacks.insert(0, callback)
        callback.set_model(callbacks.model)
        return callbacks
    return [callback] + list(callbacks or [])


def _check_feedback_schedule(model) -> None:
    """FeedbackSchedule on a model with no feedback weights to train would run nothing: refused in one line."""
    rule = getattr(model, "rule", None)
    if rule is None:
        raise ValueError(f"FeedbackSchedule: {type(model).__name__} is not a TPModel; the schedule trains a TPModel's "
                         "feedback weights")
    reason = rule.unused_because("feedback_schedule")
    if reason is not None:
        raise ValueError(f"FeedbackSchedule: {reason}, so its feedback-only passes would train nothing; drop the "
                         "callback")
    if not model.feedback_variables:
        raise ValueError("FeedbackSchedule: every feedback weight of this model is frozen (trainable=False), so its "
                         "feedback-only passes would train nothing; unfreeze them or drop the callback")


class FeedbackSchedule(keras.callbacks.Callback):
    """The reference's feedback schedule for `fit`: `pretrain_epochs` feedback-only passes before the first
    epoch and `extra_epochs` after every epoch (docs/semantics.md §5.2), on the training data given here (anything `fit`
    takes: arrays, a tf.data.Dataset, a keras.utils.PyDataset; see `TPModel.train_feedback`).

        model.fit(x, y, epochs=100, batch_size=128,
                  callbacks=[FeedbackSchedule(x, y, pretrain_epochs=6, extra_epochs=1)])
        model.fit(dataset, epochs=100, callbacks=[FeedbackSchedule(dataset, pretrain_epochs=6, extra_epochs=1)])

    The mean feedback loss of every pass is appended to `history` and the last one is logged as `rec_loss_extra`
    (put this callback before CSVLogger/TensorBoard in the list: callbacks run in order).

    On a model whose rule trains no feedback (bp, dfa, gnt, fw_dtp), or whose feedback weights are all frozen, it
    would run nothing: `fit` refuses it in one line before the first pass (at `on_train_begin`; the callback
    meets its model only there).
    """

    def __init__(self, x, y=None, *, pretrain_epochs: int = 0, extra_epochs: int = 0, batch_size: int | None = None,
                 seed: int = 0, verbose: bool = False):
        super().__init__()
        self.x, self.y = x, y
        self.pretrain_epochs, self.extra_epochs = int(pretrain_epochs), int(extra_epochs)
        self.batch_size, self.seed, self.verbose = batch_size, int(seed), verbose
        self.history: list[float] = []

    def _passes(self, count, where):
        losses = self.model.train_feedback(self.x, self.y, epochs=count, batch_size=self.batch_size,
                                           seed=self.seed, verbose=self.verbose, where=where)
        self.history.extend(losses)
        return losses

    def on_train_begin(self, logs=None):
        _check_feedback_schedule(self.model)
        if self.pretrain_epochs:
            self._passes(self.pretrain_epochs, "feedback pre-training pass")

    def on_epoch_end(self, epoch, logs=None):
        if self.extra_epochs:
            losses = self._passes(self.extra_epochs, f"extra feedback pass after epoch {epoch + 1}:")
            if logs is not None and losses:
                logs["rec_loss_extra"] = losses[-1]


class FeedbackLearningRateScheduler(keras.callbacks.Callback):
    """`keras.callbacks.LearningRateScheduler` for the FEEDBACK optimizer.

    On a TPModel, `model.optimizer` is the forward optimizer: Keras' LearningRateScheduler, ReduceLROnPlateau
    and a LearningRateSchedule passed to `optimizer=` change the forward learning rate only. This callback sets
    the feedback optimizer's learning rate to `schedule(epoch, lr)` before every epoch and logs it as
    `feedback_learning_rate`. (A LearningRateSchedule passed to the feedback optimizer also works: it follows
    that optimizer's own step counter, which counts feedback-only passes too.)
    """

    def __init__(self, schedule, verbose: int = 0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def _optimizer(self):
        optimizer = getattr(self.model, "feedback_optimizer", None)
        if optimizer is None:
            raise ValueError("FeedbackLearningRateScheduler: this model trains no feedback weights (no feedback "
                             "optimizer)")
        if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError("FeedbackLearningRateScheduler: the feedback optimizer's learning rate is already a "
                             "LearningRateSchedule; use one or the other")
        parts = getattr(optimizer, "optimizers", None)  # a LayerwiseOptimizer: one optimizer per hidden layer
        if parts and len({float(part.learning_rate.numpy()) for part in parts}) > 1:
            raise ValueError("FeedbackLearningRateScheduler: the feedback optimizers have one learning rate per "
                             "hidden layer, and a schedule of one rate would set them all alike; set each "
                             "optimizer's learning_rate in a callback of your own")
        return optimizer

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self._optimizer()
        rate = float(self.schedule(epoch, float(optimizer.learning_rate.numpy())))
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"FeedbackLearningRateScheduler: the schedule gave {rate!r} for epoch {epoch}")
        optimizer.learning_rate = rate
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: FeedbackLearningRateScheduler setting the feedback learning rate to {rate}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["feedback_learning_rate"] = float(self._optimizer().learning_rate.numpy())
