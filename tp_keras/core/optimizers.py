"""Adam and SGD with PyTorch semantics as Keras 3 optimizers, one optimizer per layer, and PyTorch's cosine
learning-rate schedule.

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

`TorchSGD` is `torch.optim.SGD` with momentum (the L-DRL authors' optimizer, forward and feedback);
`LayerwiseOptimizer`, `layerwise` and `clones` give each layer its own optimizer and learning rate (PyTorch's
parameter groups, or one optimizer per layer); `cosine_annealing` / `CosineAnnealing` are
`CosineAnnealingLR` stepped once per epoch (docs/semantics.md §4.7, §4.8).
"""
from __future__ import annotations

import contextlib
import math
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
    """SGD exactly as `torch.optim.SGD` with dampening 0 and nesterov off (what the L-DRL authors use):

        g ← g + wd·θ                  (coupled L2 `l2_decay`, PyTorch's `weight_decay`)
        buf ← μ·buf + g               (μ = `momentum`; PyTorch's first step sets buf = g, which equals μ·0 + g)
        θ ← θ − lr·buf                (θ ← θ − lr·g when μ = 0: no buffer is created)

    The learning rate multiplies the whole buffer, so a learning-rate schedule scales past gradients too; Keras' own
    SGD keeps lr inside its buffer (m ← μ·m − lr·g), which differs as soon as the rate changes. Like `TorchAdam`,
    `precision` keeps the learning rate in the model's precision. Dampening and Nesterov momentum are not
    implemented (refused); Keras' decoupled `weight_decay` is refused in favour of `l2_decay`.
    """

    def __init__(self, learning_rate=1e-3, momentum=0.0, l2_decay=0.0, name="torch_sgd",
                 precision: str | None = None, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("TorchSGD: use l2_decay (coupled L2, PyTorch's weight_decay), not weight_decay")
        kwargs.pop("weight_decay", None)
        for unsupported in ("nesterov", "dampening"):
            if kwargs.pop(unsupported, None):
                raise ValueError(f"TorchSGD: {unsupported} is not implemented (PyTorch's default, off, is what the "
                                 "reference uses); drop the argument")
        momentum = float(momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"TorchSGD: momentum={momentum} is outside [0, 1); e.g. momentum=0.9")
        with _floatx(precision):
            super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.precision = precision
        self.momentum = momentum
        self.l2_decay = float(l2_decay)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentum_buffers = self.add_optimizer_variables(var_list, "momentum_buffer") if self.momentum else []

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        theta = tf.convert_to_tensor(variable)
        grad = tf.cast(gradient, dtype)
        if self.l2_decay:
            grad = grad + tf.constant(self.l2_decay, dtype) * theta
        if self.momentum:
            buffer_var = self._momentum_buffers[self._get_variable_index(variable)]
            # μ·buf − (−g) is μ·buf + g exactly; written as a subtraction so that TensorFlow's graph optimizer does
            # not merge it with the addition of wd·θ into one three-term sum in another order (seen: fit's and
            # step.Trainer's steps then differed by an ulp in the biases).
            grad = tf.math.subtract(tf.convert_to_tensor(buffer_var) * tf.constant(self.momentum, dtype), -grad)
            self.assign(buffer_var, grad)
        self.assign(variable, theta - tf.cast(learning_rate, dtype) * grad)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, l2_decay=self.l2_decay, precision=self.precision)
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


def feedback_optimizers(model, make, name: str = "feedback_adam", learning_rates=None):
    """The feedback optimizer(s) `model`'s rule trains with: the one factory of `TPModel.compile` and the launcher,
    so that both drivers step the feedback weights alike.

    `make(name)` returns a new optimizer; with `learning_rates` (one value, or one per hidden layer for a rule with
    per-layer feedback optimizers) it is called `make(name, learning_rate)`. A rule whose in-batch schedule asks
    for one optimizer per hidden layer (`InBatchSchedule.per_layer_optimizers`: ldrl) gets one per hidden layer,
    named `name_1`, `name_2`, ..., each with its own step counter (and learning rate), behind a
    `LayerwiseOptimizer` over `model.feedback_variable_groups`; every other rule gets one, named `name`."""
    if not model.rule.schedule.per_layer_optimizers:
        if learning_rates is None:
            return make(name)
        rates = _values(learning_rates)
        if len(rates) != 1:
            raise ValueError(f"feedback_optimizers: {len(rates)} learning rates, but rule {model.rule.name!r} trains "
                             "its feedback with one optimizer; give one learning rate")
        return make(name, float(rates[0]))
    groups = model.feedback_variable_groups
    if learning_rates is None:
        return LayerwiseOptimizer([make(f"{name}_{i + 1}") for i in range(len(groups))], groups)
    rates = _per_layer("learning_rates", learning_rates, len(groups), "hidden layers")
    return LayerwiseOptimizer([make(f"{name}_{i + 1}", rate) for i, rate in enumerate(rates)], groups)


def _values(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _per_layer(name: str, value, count: int, what: str = "layers") -> list[float]:
    values = _values(value)
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise ValueError(f"{name}: {len(values)} values for {count} {what} (give one, or one per layer)")
    return [float(v) for v in values]


def clones(optimizer, count: int, name: str | None = None, **per_clone) -> list:
    """`count` new optimizers configured as `optimizer` (which must hold no state yet), named `<name>_1`,
    `<name>_2`, ... (`name` defaults to the optimizer's). Each keyword is a constructor argument of the optimizer
    (`learning_rate=`, `epsilon=`, ...) with one value for every clone or one per clone:

        feedback_optimizer=clones(TorchSGD(momentum=0.9), 5, learning_rate=[1e-4, 3.5e-4, 8e-3, 8e-3, 0.18])
    """
    if optimizer.built:
        raise ValueError(f"clones: optimizer {optimizer.name!r} already holds state; pass a new optimizer")
    config = optimizer.get_config()
    name = name or config["name"]
    values = {key: _per_layer(key, value, count, "optimizers") for key, value in per_clone.items()}
    return [type(optimizer).from_config({**config, **{key: v[i] for key, v in values.items()},
                                         "name": f"{name}_{i + 1}"}) for i in range(count)]


def layerwise(model, optimizer, name: str | None = None, **per_layer) -> LayerwiseOptimizer:
    """One optimizer per trained forward layer of `model`, each a clone of `optimizer` (`clones`), behind a
    `LayerwiseOptimizer` over the layers' forward variables: the forward optimizer of the CNN, and of an MLP given
    one learning rate per layer. Each keyword (`learning_rate=`, `epsilon=`, ...) gives one value for every layer,
    or one per layer of the network (`model.tp_layers`, of which the trained ones are taken) or per trained
    layer."""
    trained = list(model.trained_layers)
    layers = len(model.tp_layers)

    def for_trained(key, value):
        values = _values(value)
        if len(values) == layers != len(trained):
            values = [values[i] for i in trained]
        if len(values) not in (1, len(trained)):
            raise ValueError(f"layerwise: {key} has {len(values)} values; give one, one per layer ({layers}) or one "
                             f"per trained layer ({len(trained)})")
        return values

    made = clones(optimizer, len(trained), name, **{key: for_trained(key, v) for key, v in per_layer.items()})
    return LayerwiseOptimizer(made, [model.tp_layers[i].forward_variables for i in trained])


def layerwise_adam(model, learning_rates, beta_1: float, beta_2: float, epsilons, *, l2_decay: float = 0.0,
                   precision: str | None = None, name: str = "forward_adam") -> LayerwiseOptimizer:
    """One `TorchAdam` per trained layer of `model`, layer i with learning_rates[i] and epsilons[i] (a single value
    is used for every layer); β1, β2 and the coupled L2 decay are shared. The learning rates are the Adam ones
    (already lr/η̂ where the reference normalises, see `Config.forward_learning_rate`)."""
    template = TorchAdam(beta_1=beta_1, beta_2=beta_2, l2_decay=l2_decay, name=name, precision=precision)
    return layerwise(model, template, learning_rate=learning_rates, epsilon=epsilons)


def layerwise_sgd(model, learning_rates, momentum: float = 0.0, *, l2_decay: float = 0.0,
                  precision: str | None = None, name: str = "forward_sgd") -> LayerwiseOptimizer:
    """One `TorchSGD` per trained layer of `model`, layer i with learning_rates[i] (one value: every layer);
    momentum and the coupled L2 decay are shared (PyTorch's SGD with one parameter group per layer)."""
    template = TorchSGD(momentum=momentum, l2_decay=l2_decay, name=name, precision=precision)
    return layerwise(model, template, learning_rate=learning_rates)


def cosine_annealing(initial_learning_rate: float, epoch: int, t_max: int, eta_min: float = 0.0) -> float:
    """The learning rate `torch.optim.lr_scheduler.CosineAnnealingLR(T_max=t_max, eta_min=eta_min)` gives epoch
    `epoch` (0 for the first) when stepped once after every epoch, as the L-DRL authors step it: PyTorch's
    recursive ("chainable") form, in its order of operations in Python doubles, from lr_0 = lr:

        lr_e = (1 + cos(π·e/T)) / (1 + cos(π·(e−1)/T)) · (lr_{e−1} − eta_min) + eta_min
        lr_e = lr_{e−1} + (lr − eta_min)·(1 − cos(π/T))/2          where (e − 1 − T) is a multiple of 2T

    which equals the closed form eta_min + (lr − eta_min)·(1 + cos(π·e/T))/2 up to rounding (a few ulps). Past T
    it follows the cosine back up, as PyTorch's does (the authors train 90 epochs with T = 85)."""
    rate = float(initial_learning_rate)
    for e in range(1, epoch + 1):
        if (e - 1 - t_max) % (2 * t_max) == 0:
            rate = rate + (initial_learning_rate - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        else:
            rate = ((1 + math.cos(math.pi * e / t_max)) / (1 + math.cos(math.pi * (e - 1) / t_max))
                    * (rate - eta_min) + eta_min)
    return rate


class CosineAnnealing:
    """`cosine_annealing` as the schedule of `keras.callbacks.LearningRateScheduler`, which sets the (forward)
    optimizer's learning rate before every epoch of `fit`, as PyTorch's scheduler, stepped after every epoch,
    does:

        model.fit(x, y, epochs=90, callbacks=[keras.callbacks.LearningRateScheduler(CosineAnnealing(0.05, 85, 1e-5))])

    The rate depends on the epoch index only (which `keras.callbacks.BackupAndRestore` restores), not on the
    optimizer's current rate, so a resumed fit continues the schedule exactly."""

    def __init__(self, initial_learning_rate: float, t_max: int, eta_min: float = 0.0):
        if not (isinstance(t_max, int) and t_max >= 1):
            raise ValueError(f"CosineAnnealing: t_max={t_max!r} must be a whole number of epochs >= 1, e.g. 85")
        self.initial_learning_rate, self.t_max, self.eta_min = float(initial_learning_rate), t_max, float(eta_min)

    def __call__(self, epoch: int, learning_rate=None) -> float:
        return cosine_annealing(self.initial_learning_rate, epoch, self.t_max, self.eta_min)


def set_learning_rates(optimizer, rates) -> None:
    """Sets `optimizer`'s learning rate to `rates` (one value), or each optimizer of a `LayerwiseOptimizer` to its
    own (one value per optimizer)."""
    if isinstance(optimizer, LayerwiseOptimizer):
        for part, rate in zip(optimizer.optimizers, _per_layer("rates", rates, len(optimizer.optimizers),
                                                              "optimizers")):
            part.learning_rate = rate
    else:
        optimizer.learning_rate = float(_per_layer("rates", rates, 1, "optimizer")[0])


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
