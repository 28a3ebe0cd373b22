"""Adam with PyTorch semantics, as a Keras 3 optimizer.

The reference trains everything with `torch.optim.Adam`, whose hyper-parameters (tuned ε up to 1e-4) only
transfer if the update is reproduced exactly. Keras' own Adam differs in two ways that matter here:

* ε placement: Keras folds the bias corrections into the step size and adds ε to √v ("ε-hat"); PyTorch adds ε
  to √v̂, *after* bias correction. With β2 = 0.999 the two differ by a factor √(1−β2^t) ≈ 1/31 at t = 1.
* weight decay: Keras' `weight_decay=` is decoupled (AdamW). PyTorch's Adam `weight_decay` is *coupled* L2,
  g ← g + wd·θ before the moment updates. The reference uses it on the feedback weights in place of the
  λ-term of the DRL loss.

`TorchAdam` implements PyTorch's update in the same order of operations:

    g ← g + wd·θ
    m ← m + (1−β1)(g − m)
    v ← β2·v + (1−β2)·g²
    θ ← θ − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + ε)
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import keras
import tensorflow as tf
from keras.src.saving.keras_saveable import KerasSaveable

from tp_keras.core.rules import RULES
from tp_keras.reference import configs as paper_configs


@contextlib.contextmanager
def _floatx(precision: str | None):
    """Keras stores an optimizer's learning rate in floatx; building it under the model's precision keeps a
    float64 run's learning rate from being rounded to float32."""
    previous = keras.config.floatx()
    if precision:
        keras.config.set_floatx(precision)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)


@keras.saving.register_keras_serializable(package="tp_keras")
class TorchAdam(keras.optimizers.Optimizer):
    """Adam exactly as `torch.optim.Adam` (ε after bias correction, coupled L2 `l2_decay`).

    Args:
      learning_rate: step size (the reference's forward optimizer receives lr / target_stepsize).
      beta_1, beta_2: moment decay rates.
      epsilon: added to √v̂ after bias correction.
      l2_decay: coupled L2 weight decay (PyTorch's `weight_decay`), added to the gradient before the moments.
        Keras' own `weight_decay` argument (decoupled) is deliberately not used.
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, l2_decay=0.0,
                 name="torch_adam", precision: str | None = None, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("TorchAdam: use l2_decay (coupled L2, PyTorch semantics), not weight_decay.")
        kwargs.pop("weight_decay", None)
        with _floatx(precision):
            super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.precision = precision
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.l2_decay = float(l2_decay)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # The step's scalars are formed once per apply, not once per variable.
        self._step_scalars = self._scalars(learning_rate)
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._step_scalars = None

    def _scalars(self, learning_rate):
        """(lr, 1 − β1^t, 1 − β2^t) in float64, as PyTorch forms them in Python doubles (tf.cast of a Python
        float would round it through float32 first)."""
        step = tf.cast(self.iterations + 1, tf.float64)
        return (tf.cast(learning_rate, tf.float64), 1.0 - tf.pow(tf.constant(self.beta_1, tf.float64), step),
                1.0 - tf.pow(tf.constant(self.beta_2, tf.float64), step))

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr, bias_correction1, bias_correction2 = getattr(self, "_step_scalars", None) or self._scalars(learning_rate)

        def const(value):
            return tf.constant(value, dtype=dtype)

        step_size = tf.cast(lr / bias_correction1, dtype)
        sqrt_bc2 = tf.cast(tf.sqrt(bias_correction2), dtype)
        grad = tf.cast(gradient, dtype)
        theta = tf.convert_to_tensor(variable)
        if self.l2_decay:
            grad = grad + const(self.l2_decay) * theta
        index = self._get_variable_index(variable)
        m_var, v_var = self._momentums[index], self._velocities[index]
        # Each slot is read once and written once; the update uses the new values as tensors. Not TensorFlow's
        # fused ResourceApplyAdam: it forms 1 − β2 inside the kernel from β2 in the variable's precision, in
        # float32 1.3e-5 off for β2 = 0.999 (PyTorch forms it in double). An XLA-compiled version of these
        # lines was not measurably faster on CPU (1.46 vs 1.97 ms, noise ±0.5) and not bit-identical (FMA).
        m = tf.convert_to_tensor(m_var)
        v = tf.convert_to_tensor(v_var)
        m = m + (grad - m) * const(1.0 - self.beta_1)
        v = v * const(self.beta_2) + tf.square(grad) * const(1.0 - self.beta_2)
        theta = theta - step_size * m / (tf.sqrt(v) / sqrt_bc2 + const(self.epsilon))
        self.assign(m_var, m)
        self.assign(v_var, v)
        self.assign(variable, theta)

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                       "l2_decay": self.l2_decay, "precision": self.precision})
        return config


@keras.saving.register_keras_serializable(package="tp_keras")
class TorchSGD(keras.optimizers.Optimizer):
    """Plain SGD as `torch.optim.SGD` without momentum: θ ← θ − lr·(g + wd·θ) (coupled L2 `l2_decay`).

    The nullspace toy (docs/semantics.md §13.6) trains its feedback weights with it. Like `TorchAdam`, `precision` keeps
    the learning rate in the model's precision.
    """

    def __init__(self, learning_rate=1e-3, l2_decay=0.0, name="torch_sgd", precision: str | None = None, **kwargs):
        with _floatx(precision):
            super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.precision = precision
        self.l2_decay = float(l2_decay)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        theta = tf.convert_to_tensor(variable)
        grad = tf.cast(gradient, dtype)
        if self.l2_decay:
            grad = grad + tf.constant(self.l2_decay, dtype) * theta
        self.assign(variable, theta - tf.cast(learning_rate, dtype) * grad)

    def get_config(self):
        config = super().get_config()
        config.update(l2_decay=self.l2_decay, precision=self.precision)
        return config


class LayerwiseOptimizer(KerasSaveable):
    """One optimizer per layer behind the one-optimizer interface of `step.apply_updates`, `step.Trainer` and the
    checkpoints: `build(var_list)`, `apply_gradients(pairs)`, `variables`.

    A Keras saveable: a model's `.keras` file (and `save_weights`) holds every optimizer's state, under
    `feedback_optimizer/optimizers/...` when it is a TPModel's feedback optimizer.

    The reference's list-valued `lr` and `epsilon` (CNN configs, docs/semantics.md §4.5) mean one Adam per layer over
    that layer's W and b, each with its own step counter (all step together, once per batch).

    Args:
      optimizers: one (Keras) optimizer per group.
      variable_groups: the variables of each group (a layer's forward variables), in the order the flat
        variable list (`model.forward_variables`) holds them.
    """

    def __init__(self, optimizers: Sequence, variable_groups: Sequence[Sequence]):
        self.optimizers = list(optimizers)
        self.variable_groups = [list(group) for group in variable_groups]
        if len(self.optimizers) != len(self.variable_groups):
            raise ValueError(f"LayerwiseOptimizer: {len(self.optimizers)} optimizers for "
                             f"{len(self.variable_groups)} variable groups")
        self._owner = {id(v): i for i, group in enumerate(self.variable_groups) for v in group}

    def build(self, var_list):
        expected = [v for group in self.variable_groups for v in group]
        if [id(v) for v in var_list] != [id(v) for v in expected]:
            raise ValueError("LayerwiseOptimizer: built on other variables than its groups (in their order)")
        for optimizer, group in zip(self.optimizers, self.variable_groups):
            optimizer.build(group)

    def apply_gradients(self, grads_and_vars):
        per_group = [[] for _ in self.optimizers]
        for grad, variable in grads_and_vars:
            if id(variable) not in self._owner:
                raise ValueError(f"LayerwiseOptimizer: variable {getattr(variable, 'path', variable)} is in no group")
            per_group[self._owner[id(variable)]].append((grad, variable))
        for optimizer, pairs in zip(self.optimizers, per_group):
            if pairs:
                optimizer.apply_gradients(pairs)

    @property
    def variables(self) -> list:
        return [v for optimizer in self.optimizers for v in optimizer.variables]

    @property
    def iterations(self):
        return self.optimizers[0].iterations

    # Learning rate, for FeedbackLearningRateScheduler: read from the first optimizer, set on every one.
    @property
    def _learning_rate(self):
        return self.optimizers[0]._learning_rate

    @property
    def learning_rate(self):
        return self.optimizers[0].learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        for optimizer in self.optimizers:
            optimizer.learning_rate = value

    @property
    def built(self) -> bool:
        return all(optimizer.built for optimizer in self.optimizers)

    def _obj_type(self):
        return "Optimizer"  # Keras walks its attributes as an optimizer's: `optimizers` holds the state

    def __reduce__(self):  # KerasSaveable pickles whole models only
        return object.__reduce__(self)


def feedback_optimizers(model, make, name: str = "feedback_adam"):
    """The feedback optimizer(s) `model`'s rule trains with: the one factory of `TPModel.compile` and the launcher,
    so that both drivers step the feedback weights alike.

    `make(name)` returns a new optimizer. A rule whose in-batch schedule asks for one optimizer per hidden layer
    (`InBatchSchedule.per_layer_optimizers`: ldrl) gets one per hidden layer, named `name_1`, `name_2`, ..., each
    with its own step counter, behind a `LayerwiseOptimizer` over `model.feedback_variable_groups`; every other
    rule gets one, named `name`."""
    if not model.rule.schedule.per_layer_optimizers:
        return make(name)
    groups = model.feedback_variable_groups
    return LayerwiseOptimizer([make(f"{name}_{i + 1}") for i in range(len(groups))], groups)


def _per_layer(name: str, value, count: int) -> list[float]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise ValueError(f"{name}: {len(values)} values for {count} layers (give one, or one per layer)")
    return [float(v) for v in values]


def layerwise_adam(model, learning_rates, beta_1: float, beta_2: float, epsilons, *, l2_decay: float = 0.0,
                   precision: str | None = None, name: str = "forward_adam") -> LayerwiseOptimizer:
    """One `TorchAdam` per trained layer of `model`, layer i with learning_rates[i] and epsilons[i] (a single value
    is used for every layer); β1, β2 and the coupled L2 decay are shared. The learning rates are the Adam ones
    (already lr/η̂ where the reference normalises, see `Config.forward_learning_rate`)."""
    layers = [model.tp_layers[i] for i in model.trained_layers]
    lrs = _per_layer("learning_rates", learning_rates, len(layers))
    eps = _per_layer("epsilons", epsilons, len(layers))
    optimizers = [TorchAdam(lr, beta_1, beta_2, e, l2_decay=l2_decay, name=f"{name}_{i + 1}", precision=precision)
                  for i, (lr, e) in enumerate(zip(lrs, eps))]
    return LayerwiseOptimizer(optimizers, [layer.forward_variables for layer in layers])


def default_feedback_optimizer(model):
    """The feedback optimizer `compile` gives a TP method when none is passed: the method's paper MNIST feedback
    Adam (PyTorch semantics: `lr_fb`, `beta1_fb`, `beta2_fb`, `epsilon_fb`, coupled L2 `feedback_wd`; 'tp' takes
    DTP's), in the model's precision; one per hidden layer for a rule with per-layer feedback optimizers (ldrl),
    as the launcher gives it (`feedback_optimizers`)."""
    name = model.method.name
    config = paper_configs.MNIST_CONFIGS.get(paper_configs.DEFAULTS_FROM.get(name, name))
    if config is None or RULES.get(name) != model.method:
        raise ValueError(f"compile: method {name!r} has no paper configuration to take a default feedback optimizer "
                         "from; pass feedback_optimizer=")
    return feedback_optimizers(model, lambda optimizer_name: TorchAdam(
        config["lr_fb"], config["beta1_fb"], config["beta2_fb"], config["epsilon_fb"], l2_decay=config["feedback_wd"],
        name=optimizer_name, precision=model.compute_dtype))
