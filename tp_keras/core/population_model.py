"""`PopulationModel`: K TPModels of one rule trained through one Keras `compile` / `fit`, with per-member logs.

    members = [TPModel("ddtp_linear", 784, [256] * 5, 10, seed=seed) for seed in (42, 43, 44)]
    population = PopulationModel(members)
    population.compile(optimizer=TorchAdam(1e-4), feedback_optimizer=TorchAdam(1e-4))   # cloned per member
    history = population.fit(x, y, batch_size=128, epochs=10, validation_data=(x_val, y_val))
    history.history["loss_0"], history.history["val_accuracy_2"]    # member 0's loss, member 2's val accuracy

Design. Each member is an ordinary compiled TPModel: `compile` compiles every member (its own forward and feedback
optimizers, its own loss tracker and compiled metrics), and the population's train step is `core.population`'s
step body (`Population.member_steps`: each member's ops are those of its single run, the members side by side in
one graph, a member that goes non-finite stopped alone) followed by each member's own metric updates, as
`TPModel._train_batch` makes them. So member k's weights, optimizer state, noise state and logs after
`population.fit(...)` are, bit for bit without XLA, those of `members[k].fit(...)` alone with the same arguments
(tests/test_population_fit.py).

Data: every member trains on the same batch stream. A Keras `fit` has one data pipeline and shuffles it with
Keras' own generator, so sharing it is the Keras-natural choice: members differ by seed (initialisation and noise)
and by hyper-parameters, not by shuffling order (the custom loop, `Population.loop`, gives each member its own).

Logs: flat, one key per member and metric, `<metric>_<k>` (`loss_0`, `accuracy_0`, `rec_loss_0`, then
`val_loss_0`, ... from validation), which History, the progress bar, CSVLogger and monitors (EarlyStopping,
ModelCheckpoint: `monitor="val_loss_1"`) handle as any metric. A member that stops (a non-finite loss, target,
feedback loss or gradient) keeps its last good weights and logs NaN for every metric from the execution where it
stopped on, in this and every later fit and evaluate; the others go on unchanged. `diverged()` says where each
stopped; fit stops when every member has. `predict` returns the list of the members' outputs; `evaluate` the
members' logs (a stopped member's kept weights are evaluated through the member itself, `members[k].evaluate`).

Keras' arguments: `steps_per_execution`, `jit_compile`, `run_eagerly` (compile), `validation_data`,
`validation_split`, `shuffle`, `initial_epoch`, `callbacks` (fit) are Keras' own. Refused in one line each:
`sample_weight` and `class_weight` in fit, and the callbacks that drive one model's optimizer or feedback passes
(LearningRateScheduler, ReduceLROnPlateau, FeedbackLearningRateScheduler, FeedbackSchedule), since each member has
its own optimizers.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tp_keras.core import keras_checks as C
from tp_keras.core.callbacks import FeedbackLearningRateScheduler, FeedbackSchedule
from tp_keras.core.model import TPModel
from tp_keras.core.population import Population

# Callbacks that act on one model's optimizer or on its feedback passes: a population's members each have their own.
_ONE_MODEL_CALLBACKS = (keras.callbacks.LearningRateScheduler, keras.callbacks.ReduceLROnPlateau,
                        FeedbackLearningRateScheduler, FeedbackSchedule)


@dataclasses.dataclass
class _CompiledMember:
    """A compiled member as `Population` reads a `step.Trainer`: the model and its compiled optimizers."""
    model: TPModel
    forward_optimizer: keras.optimizers.Optimizer
    feedback_optimizer: object

    @property
    def trains_feedback(self) -> bool:
        return bool(self.model.feedback_variables)


class _StopWhenEveryMemberStopped(keras.callbacks.Callback):
    """Ends fit at the end of an epoch after which no member trains any more (each stopped alone before)."""

    def on_epoch_end(self, epoch, logs=None):
        if not any(self.model.alive()):
            self.model.stop_training = True


def _for_member(value, k: int, members: int, argument: str):
    """Member k's value of a compile argument: a list or tuple of one per member gives member k's; an optimizer
    instance (or a list of per-layer ones) is cloned from its config, each member needing its own state; a name
    or None goes to every member as it is."""
    if isinstance(value, (list, tuple)) and len(value) == members:
        return value[k]
    if isinstance(value, (list, tuple)):
        return [_for_member(v, k, members, argument) for v in value]
    if isinstance(value, keras.optimizers.Optimizer):
        if value.built:
            raise ValueError(f"PopulationModel.compile: {argument}={value.name!r} already holds state, and each member "
                             f"is given a fresh clone of it; pass an unbuilt optimizer, or a list of {members}, one "
                             "per member")
        return type(value).from_config(value.get_config())
    return value


def _metrics_for_member(metrics, k: int):
    """Keras metrics for member k: metric objects cloned from their configs (each member keeps its own state)."""
    if metrics is None:
        return None
    if isinstance(metrics, keras.metrics.Metric):
        return type(metrics).from_config(metrics.get_config())
    if isinstance(metrics, dict):
        return {name: _metrics_for_member(m, k) for name, m in metrics.items()}
    if isinstance(metrics, (list, tuple)):
        return [_metrics_for_member(m, k) for m in metrics]
    return metrics  # a name or a function: Keras makes a metric of it for each member


class PopulationModel(keras.Model):
    """K `TPModel`s of one rule, dtype, task, input shape and output size, trained together by Keras' `fit`.

    Args:
      members: the member TPModels (each its own object; they may differ by seed, hyper-parameters and hidden
        sizes). They are compiled by `PopulationModel.compile`, not beforehand.

    See the module docstring for the logs, the data, divergence and the Keras arguments.
    """

    def __init__(self, members: Sequence[TPModel], **kwargs):
        members = list(members)
        if not members or not all(isinstance(m, TPModel) for m in members):
            raise ValueError("PopulationModel: give a list of TPModels, one per member")
        if len({id(m) for m in members}) < len(members):
            raise ValueError("PopulationModel: a model appears twice; give each member its own TPModel")
        first = members[0]
        for what, value in (("rule", lambda m: m.rule.name), ("dtype", lambda m: m.compute_dtype),
                            ("task", lambda m: m.task), ("input shape", lambda m: m.network.input_shape),
                            ("output size", lambda m: m.output_size)):
            values = {repr(value(m)) for m in members}
            if len(values) > 1:
                raise ValueError(f"PopulationModel: the members differ by {what} ({', '.join(sorted(values))}); a "
                                 f"population trains one rule in one dtype on one data set: make one per {what}")
        super().__init__(dtype=first.compute_dtype, **kwargs)
        self.members = members
        object.__setattr__(self, "_population", None)
        self.built = True

    def call(self, x):
        return [member(x) for member in self.members]

    # --- compile ---------------------------------------------------------------------------------------------
    def compile(self, optimizer=None, loss=None, metrics=None, *, forward_optimizer=None, feedback_optimizer=None,
                weighted_metrics=None, rule=None, **kwargs):
        """Compiles every member (`TPModel.compile`, with each member's own optimizers and metrics) and the
        population's train function.

        Args:
          optimizer / forward_optimizer, feedback_optimizer: one value for every member (an optimizer instance is
            cloned from its config for each; a name makes one each), or a list of one per member (members that
            differ by learning rate). None for feedback_optimizer: each member's default (its rule's paper Adam).
          loss, metrics, weighted_metrics, rule: as `TPModel.compile`, for every member (metric objects cloned).
          **kwargs: Keras' steps_per_execution, jit_compile, run_eagerly for the population's one train function
            (the members' own train functions are not used); a member's loss_weights/auto_scale_loss as
            TPModel.compile takes them.
        """
        population_kwargs = {k: kwargs.pop(k) for k in ("steps_per_execution", "jit_compile", "run_eagerly")
                             if k in kwargs}
        count = len(self.members)
        for k, member in enumerate(self.members):
            member.compile(optimizer=_for_member(optimizer, k, count, "optimizer"),
                           forward_optimizer=_for_member(forward_optimizer, k, count, "forward_optimizer"),
                           feedback_optimizer=_for_member(feedback_optimizer, k, count, "feedback_optimizer"),
                           loss=loss, metrics=_metrics_for_member(metrics, k),
                           weighted_metrics=_metrics_for_member(weighted_metrics, k), rule=rule, **kwargs)
        super().compile(optimizer=None, **population_kwargs)
        trainers = [_CompiledMember(m, m.optimizer, m.feedback_optimizer) for m in self.members]
        object.__setattr__(self, "_population", Population(trainers))

    # --- per-member state ---------------------------------------------------------------------------------------
    @property
    def population(self) -> Population:
        """The compiled step's `core.population.Population` (after compile)."""
        if self._population is None:
            raise ValueError("PopulationModel: call compile() first")
        return self._population

    def alive(self) -> list[bool]:
        """Per member, whether it still trains."""
        return self.population.alive()

    def diverged(self) -> list[str | None]:
        """Per member, None while it trains, else where it stopped (batch counted from its first fit)."""
        return self.population.diverged("population fit")

    @property
    def metrics(self):
        """Every member's metrics (Keras resets them at each epoch and evaluation)."""
        return [metric for member in self.members for metric in member.metrics]

    def get_metrics_result(self):
        """`<name>_<k>`: member k's results, NaN once it has stopped."""
        logs = {}
        for k, member in enumerate(self.members):
            stopped = None if self._population is None else self._population.members[k].record.first >= 0
            for name, value in member.get_metrics_result().items():
                if stopped is not None:
                    value = tf.where(stopped, tf.constant(np.nan, value.dtype), value)
                logs[f"{name}_{k}"] = value
        return logs

    def _symbolic_build(self, iterator=None, data_batch=None):
        # Each member's compiled metrics are built on a symbolic batch, as its own fit would, before any tracing.
        if data_batch is None and iterator is not None:
            for _, _, data in iterator:
                data_batch = data[0] if isinstance(data, (list, tuple)) else next(data)
                break
        for member in self.members:
            member._symbolic_build(data_batch=data_batch)
        super()._symbolic_build(data_batch=data_batch)

    # --- fit / evaluate ----------------------------------------------------------------------------------------
    def fit(self, *args, **kwargs):
        """Keras' fit of every member on one batch stream (see the module docstring), with TPModel.fit's checks of
        the data."""
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        self.population  # compiled
        for name in ("sample_weight", "class_weight"):
            if arguments[name] is not None:
                raise ValueError(f"PopulationModel.fit: {name} is not supported (the population's step takes "
                                 "unweighted batches); fit the members one by one (TPModel.fit takes it)")
        callbacks = arguments["callbacks"]
        listed = callbacks.callbacks if isinstance(callbacks, keras.callbacks.CallbackList) else list(callbacks or [])
        for callback in listed:
            if isinstance(callback, _ONE_MODEL_CALLBACKS):
                raise ValueError(f"PopulationModel.fit: {type(callback).__name__} drives one model's optimizer or "
                                 "feedback passes, and each member has its own: give each member's optimizer a "
                                 "LearningRateSchedule in compile (a list, one per member), or fit the members one "
                                 "by one")
        for member in self.members:
            C.check_strategy(member, "fit")
            C.check_trainable(member)
            C.check_rule(member)
        first = self.members[0]  # the members share input shape, output size, task and dtype
        C.check_arrays(first, arguments["x"], arguments["y"])
        C.check_data(first, arguments["x"], arguments["y"])
        validation = arguments["validation_data"]
        if isinstance(validation, (tuple, list)) and 2 <= len(validation) <= 3:
            C.check_arrays(first, *validation, where="validation_data")
            C.check_data(first, *validation[:2])
        elif isinstance(validation, tf.data.Dataset):
            C.check_data(first, validation)
        self._follow_label_shape(C.label_shape(arguments["x"], arguments["y"]), C.label_shape(*validation[:2])
                                 if isinstance(validation, (tuple, list)) else None)
        arguments["callbacks"] = _with_last(_StopWhenEveryMemberStopped(), callbacks)
        with C.labels_out_of_range_as_value_error():
            return super().fit(**arguments)

    def evaluate(self, *args, **kwargs):
        """Keras' evaluate of every member, with TPModel.evaluate's checks of the data."""
        arguments = inspect.signature(keras.Model.evaluate).bind(self, *args, **kwargs).arguments
        if not arguments.get("kwargs", {}).get("_use_cached_eval_dataset"):  # else fit's validation: checked
            first = self.members[0]
            C.check_strategy(first, "evaluate")
            C.check_arrays(first, arguments.get("x"), arguments.get("y"), arguments.get("sample_weight"))
            C.check_data(first, arguments.get("x"), arguments.get("y"))
            self._follow_label_shape(C.label_shape(arguments.get("x"), arguments.get("y")))
        with C.labels_out_of_range_as_value_error():
            return super().evaluate(*args, **kwargs)

    def _follow_label_shape(self, shape, validation_shape=None):
        """Each member's `TPModel._follow_label_shape`; the population's compiled functions are dropped with the
        members' (a member rebuilds its compiled metrics for labels of another shape)."""
        before = [getattr(m, "_label_shape", None) for m in self.members]
        for member in self.members:
            member._follow_label_shape(shape, validation_shape)
        if any(b is not None and b != getattr(m, "_label_shape", None) for b, m in zip(before, self.members)):
            self.train_function = self.test_function = None

    # --- the compiled step ---------------------------------------------------------------------------------------
    def make_train_function(self, force=False):
        """TPModel's train function (a loop over `steps_per_execution` batches that runs nothing of the step unless
        a batch came, `TPModel.make_train_function`), around this model's `_train_batch`; Keras' own for
        run_eagerly or an unrolled loop."""
        if self.train_function is not None and not force:
            return self.train_function
        if self.run_eagerly or self.unrolled_steps_per_execution != 1:
            return super().make_train_function(force)
        return TPModel.make_train_function(self, force)

    # TPModel.make_train_function keeps its own loop only for TPModel's train_step: this one.
    train_step = TPModel.train_step

    def _train_batch(self, data):
        """Every member's step on the batch (`Population.member_steps`), then each member's metric updates as
        `TPModel._train_batch` makes them (its loss, feedback loss and compiled metrics)."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError("PopulationModel.fit: sample_weight is not supported (the population's step takes "
                             "unweighted batches); give (x, y) batches")
        C.check_traced_data(self.members[0], x, y)
        rows = tf.shape(x)[0]
        for member, outputs in zip(self.members, self.population.member_steps(x, y, logits=True)):
            member._loss_tracker.update_state(outputs["loss"], sample_weight=rows)
            if "rec_loss" in outputs:
                member._rec_loss_tracker.update_state(outputs["rec_loss"], sample_weight=1.0)
            member._update_compiled_metrics(y, outputs["logits"], None)

    def test_step(self, data):
        for member in self.members:
            member.test_step(data)
        return {k: v for k, v in self.get_metrics_result().items() if not k.startswith("rec_loss_")}

    def get_config(self):
        raise NotImplementedError("PopulationModel is not saved as one file: save each member "
                                  "(population.members[k].save(...)), each an ordinary TPModel")


def _with_last(callback, callbacks):
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks.callbacks.append(callback)
        callback.set_model(callbacks.model)
        return callbacks
    return list(callbacks or []) + [callback]
