"""`TPModel`: a Keras model of forward layers with the feedback parameters its training method needs.

It behaves like a Keras model wherever a Keras user touches it (`compile`, `fit`, `evaluate`, `predict`,
callbacks, `save`/`load_model`, `summary`), with one meaning for each Keras argument under target propagation
(README, "Keras API"; BUILD_NOTES, "Keras conventions"); what has no meaning is refused in one line.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import math
import warnings
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tp_keras.core import keras_checks as C
from tp_keras.core import loop, step
from tp_keras.core import targets as T
from tp_keras.core.health import Diverged, first_problem, first_problem_stacked, stack_calls
from tp_keras.core.networks import MLPNetwork, Network, deserialize_network, feedback_structure, serialize_network
from tp_keras.core.optimizers import LayerwiseOptimizer, TorchAdam, feedback_optimizers
from tp_keras.core.rules import RULES, LearningRule, RuleError, get_rule
from tp_keras.core.rules import components as K
from tp_keras.core.rules.base import SETTINGS, HyperParameterError, UnusedSettingError
from tp_keras.reference import configs as paper_configs

# compile(loss=...): what each accepted name means, by task.
_CLASSIFICATION_LOSSES = {"sparse_categorical_crossentropy": "sparse", "categorical_crossentropy": "categorical"}
_REGRESSION_LOSSES = {"mean_squared_error": "mse", "mse": "mse"}


@keras.saving.register_keras_serializable(package="tp_keras")
class TPModel(keras.Model):
    """A network trained by one learning rule: by default an MLP (tanh hidden layers, linear output) built for the
    rule's feedback maps (`networks.MLPNetwork`), or the network given as `network=` (e.g. `networks.CNNNetwork`).
    The model holds the rule, the optimizers and Keras' training state; the network holds the parameters and
    their forward and feedback maps.

    Calling the model returns the output (logits). Training goes through `tp_keras.core.step`, either from the
    custom loop (`step.Trainer`, used by the launcher) or from Keras:

        model.compile(optimizer="adam")            # forward optimizer; a TP method gets a default feedback one
        model.compile(optimizer=TorchAdam(...), feedback_optimizer=TorchAdam(...))
        model.fit(x, y, batch_size=128, epochs=...)

    whose `train_step` runs the very same `step.compute_updates` / `step.apply_updates`.

    Args:
      method: the learning rule: a registry name ('dtpdrl', 'ddtp_linear', 'ldrl', ...) or a
        `tp_keras.core.rules.LearningRule` (`model.rule`; `compile(rule=...)` switches to another rule of the same
        feedback maps).
      input_size, hidden_sizes, output_size: the architecture n_0, n_1..n_{L−1}, n_L.
      target_stepsize: η̂ of the output target ĥ_L = h_L − η̂·e_L (None: the rule's).
      sigma: std of the noise of the feedback losses (None: the rule's; one per hidden layer for 'ldrl').
      hidden_activation: s of the hidden layers.
      last_hidden_bias: None keeps the method's reference behaviour (no bias on the last hidden layer for
        DDTP-linear and DFA, docs/semantics.md §7.6); True/False forces it.
      size_hidden_fb: n_fb, the size of DDTP-RHL's fixed random feedback layer.
      recurrent_input: DDTP-RHL's variant that feeds each layer's own activation into its feedback map.
      gn_damping: Tikhonov damping λ of the GNT targets (method 'gnt'; None: the rule's).
      feedback_iterations: feedback steps per batch of a rule that trains its feedback first ('ldrl'): one
        value or one per hidden layer (None: the rule's).
      only_train_first_layer: Frozen-MNIST (docs/semantics.md §11): only the first hidden layer's forward weights train
        (every other forward weight keeps its initial value; feedback weights train as usual), and the step
        computes no local loss or gradient for the frozen layers. `layer.trainable = False` freezes any layer
        the same way.
      task: 'classification' (softmax cross-entropy on logits) or 'regression' (mean squared error).
      seed: initialisation and noise seed (with `network=`, the noise seed; the network has its own).
      network: a `Network` built for this rule (same feedback maps, same dtype), instead of the MLP that
        input_size, hidden_sizes, output_size, hidden_activation, last_hidden_bias, size_hidden_fb and
        recurrent_input describe (those are then refused).
      dtype: 'float32' or 'float64' for every variable and computation (default: the global Keras policy, which
        must then be one of the two).

    Every argument is checked here; a bad one raises a one-line ValueError naming it. That includes per-layer
    values of the wrong length (sigma, feedback_iterations: one per hidden layer of the network), non-bool flags,
    and a hyper-parameter the rule does not use (the rule decides: `LearningRule.uses`), e.g.
    `TPModel("fw_dtp", sigma=0.5)` (fw_dtp trains no feedback), `TPModel("bp", target_stepsize=0.5)`,
    `TPModel("ldrl", gn_damping=0.5)`, size_hidden_fb/recurrent_input without DDTP-RHL's random layer. What the
    rule ignores anyway is accepted and dropped: the argument's default, the rule's own value, and the value of
    the method's paper configuration (tp_keras/reference/configs.py), which the launcher and the paper flagfiles
    carry for every method (e.g. bp's target_stepsize=1.0). Code passing one set of hyper-parameters to every
    method writes `TPModel(method, ..., **get_rule(method).used(target_stepsize=0.1, sigma=0.05))`.

    Saving: `model.save("m.keras")` / `keras.saving.load_model("m.keras")` restores every forward and feedback
    weight (DDTP-RHL's fixed random layer included), the noise generator's state, the method and every
    hyper-parameter above, the frozen layers (`trainable = False`, also kept by `clone_model` and JSON), and, for a
    compiled model, both optimizers with their state (the forward one as Keras' `optimizer`, the feedback one, or
    ldrl's one per hidden layer, as `feedback_optimizer`), so a loaded model continues training exactly where the
    saved one stopped. A rule whose noise is an unregistered callable is refused in one line (it cannot be saved).
    `import tp_keras` is all a fresh process needs before `load_model`.
    """

    def __init__(self, method: str | LearningRule = "ddtp_linear", input_size: int = 784,
                 hidden_sizes: Sequence[int] = (256,) * 5, output_size: int = 10, *,
                 target_stepsize: float | None = None, sigma: float | Sequence[float] | None = None,
                 hidden_activation: str = "tanh", last_hidden_bias: bool | None = None,
                 task: str = "classification", seed: int = 42, size_hidden_fb: int = 1024,
                 recurrent_input: bool = False, gn_damping: float | None = None,
                 feedback_iterations: int | Sequence[int] | None = None, only_train_first_layer: bool = False,
                 network=None, dtype: str | None = None, **kwargs):
        dtype = C.model_precision(dtype)
        super().__init__(dtype=dtype, **kwargs)
        _check_bools(only_train_first_layer=only_train_first_layer, recurrent_input=recurrent_input,
                     last_hidden_bias=last_hidden_bias)
        self.only_train_first_layer = bool(only_train_first_layer)
        m = get_rule(method)  # a name, a LearningRule, or a rule's config dict (get_config of an unregistered one)
        if network is None:
            _check_used(m, "size_hidden_fb", size_hidden_fb, 1024)
            _check_used(m, "recurrent_input", recurrent_input, False)
        self.rule = _rule_with(m, *_given_hyper_parameters(m, target_stepsize, sigma, gn_damping,
                                                           feedback_iterations))
        if task not in C.TASKS:
            raise ValueError(f"TPModel: task={task!r}; choose 'classification' (softmax cross-entropy on the "
                             "logits) or 'regression' (mean squared error)")
        self.task = task
        self.seed = C.whole("seed", seed, 0, C.MAX_SEED)
        if isinstance(network, dict):  # a saved model's "network" entry
            network = deserialize_network(network, m, dtype)
        if network is None:
            network = MLPNetwork(m, input_size, hidden_sizes, output_size, hidden_activation=hidden_activation,
                                 last_hidden_bias=last_hidden_bias, size_hidden_fb=size_hidden_fb,
                                 recurrent_input=recurrent_input, seed=self.seed, dtype=dtype)
        else:
            given = {name: value for name, value, default in (
                ("input_size", input_size, 784),
                ("hidden_sizes", tuple(hidden_sizes) if isinstance(hidden_sizes, list) else hidden_sizes, (256,) * 5),
                ("output_size", output_size, 10), ("hidden_activation", hidden_activation, "tanh"),
                ("last_hidden_bias", last_hidden_bias, None), ("size_hidden_fb", size_hidden_fb, 1024),
                ("recurrent_input", recurrent_input, False)) if value != default}
            if given:
                raise ValueError(f"TPModel: {', '.join(f'{k}={v!r}' for k, v in given.items())}: arguments of the MLP "
                                 "TPModel builds without network=; a network has its own (pass them to it)")
        if not isinstance(network, Network):
            raise ValueError(f"TPModel: network={network!r} must be a tp_keras network (MLPNetwork, CNNNetwork)")
        if network.dtype != dtype:
            raise ValueError(f"TPModel: the network was built in {network.dtype} and the model in {dtype}; "
                             f"pass dtype={network.dtype!r} to both")
        if network.structure != feedback_structure(m):
            raise ValueError(f"TPModel: the network was built for other feedback maps than rule {m.name!r} needs "
                             f"({network.structure} vs {feedback_structure(m)}); build it for this rule")
        _check_per_layer(self.rule, len(network.tp_layers) - 1)
        object.__setattr__(self, "network", network)  # a plain object: Keras tracks its layers under the model
        for name, value in network.attributes().items():
            setattr(self, name, value)
        self.tp_layers = network.tp_layers
        self.direct_feedback = network.direct_feedback
        self.noise_seed = keras.random.SeedGenerator(self.seed + 7919, name="noise_seed")
        self._init_training_state()
        self.build((None,) + network.input_shape)

    def _init_training_state(self):
        """What fit needs besides Keras' own compile state."""
        self._rec_loss_tracker = keras.metrics.Mean(name="rec_loss")
        object.__setattr__(self, "feedback_optimizer", None)
        object.__setattr__(self, "_loss_kind", "auto")
        object.__setattr__(self, "_first_nonfinite", None)
        object.__setattr__(self, "_compiled_feedback", None)

    def build(self, input_shape):
        self.network.build(input_shape)
        self.built = True

    def activations(self, x, detach_inputs: bool = False):
        """[h_0 = x, h_1, ..., h_L] (`Network.activations`; with `detach_inputs` each layer's input is a constant
        for gradients)."""
        return self.network.activations(x, detach_inputs)

    def call(self, x):
        return self.activations(x)[-1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:1] + (self.output_size,)

    # --- compile ---------------------------------------------------------------------------------------------
    def compile(self, optimizer=None, loss=None, metrics=None, *, forward_optimizer=None, feedback_optimizer=None,
                weighted_metrics=None, loss_weights=None, rule=None, **kwargs):
        """Keras' compile, with target propagation's meaning for each argument.

        Args:
          optimizer: the FORWARD optimizer (trains the forward weights by the local target losses, or by BP for
            'bp'): a Keras optimizer or its name ("adam", ...). `forward_optimizer=` is the same argument.
            Learning-rate callbacks (LearningRateScheduler, ReduceLROnPlateau) and a LearningRateSchedule given
            to it drive this optimizer; `FeedbackLearningRateScheduler` drives the feedback one.
          feedback_optimizer: trains the feedback weights of methods that train them. Default: the method's
            paper MNIST feedback Adam (`default_feedback_optimizer`). The same object as `optimizer` is cloned
            (a fresh one from its config) when it holds no state yet, else refused. A rule with per-layer
            feedback optimizers (ldrl) gets one per hidden layer, as from the launcher
            (`optimizers.feedback_optimizers`): clones of the one given, or a list of them, one per hidden layer.
          loss: None (the task's loss), 'sparse_categorical_crossentropy' / 'categorical_crossentropy' (or
            the Keras loss objects with from_logits=True) for classification, 'mse' for regression. It is the
            loss whose closed-form gradient e_L builds the output target; anything else is refused by name.
          metrics, weighted_metrics: Keras metrics on the logits (unweighted / weighted by sample_weight or
            class_weight, as in Keras). With neither, classification reports a weighted "accuracy" (a real
            accuracy metric, so monitors infer mode="max").
          rule: train with this learning rule from now on (`set_rule`: a name or a LearningRule of the same
            feedback maps); None keeps the model's.
          **kwargs: Keras' run_eagerly, steps_per_execution, jit_compile, auto_scale_loss.

        Atomic: every argument is checked before anything changes, so a compile that raises leaves the model (its
        rule, optimizers and compiled state) as it was.
        """
        previous = self.rule
        new_rule = self._checked_rule(rule) if rule is not None else previous
        # The checks read the rule (which feedback weights train, their default optimizer): the new one, on trial.
        object.__setattr__(self, "_rule", new_rule)
        try:
            if optimizer is not None and forward_optimizer is not None:
                raise ValueError("compile: optimizer= and forward_optimizer= are the same argument (the forward "
                                 "optimizer); pass one of them")
            forward = _keras_optimizer(optimizer if optimizer is not None else forward_optimizer, "optimizer")
            if not self.trained_layers:
                raise ValueError("compile: every forward layer is frozen (trainable=False), so fit would train no "
                                 "forward weight; unfreeze a layer, or train the feedback alone with train_feedback()")
            if loss_weights is not None:
                raise ValueError("compile: loss_weights weigh the losses of several outputs; a TP model has one "
                                 "output")
            feedback = self._feedback_optimizer_for(forward, feedback_optimizer)
            kind = self._compiled_loss_kind(loss)
            if metrics is None and weighted_metrics is None and self.task == "classification":
                weighted_metrics = ["accuracy"]
            from keras.src.trainers.compile_utils import CompileMetrics
            CompileMetrics(metrics, weighted_metrics)  # Keras' own checks of their form, before Keras' compile
            _check_owns(forward, self.forward_variables)
            if feedback is not None and self.feedback_variables:
                _check_owns(feedback, self.feedback_variables)
            super().compile(optimizer=forward, loss=loss, metrics=metrics, weighted_metrics=weighted_metrics,
                            **kwargs)
        except BaseException:
            object.__setattr__(self, "_rule", previous)
            raise
        if new_rule is not previous:
            self._rule_changed()
        # Set past Keras' attribute tracking, which is locked once the model is built.
        object.__setattr__(self, "feedback_optimizer", feedback)
        object.__setattr__(self, "_loss_kind", kind)
        self.optimizer.build(self.forward_variables)
        if feedback is not None and self.feedback_variables:
            feedback.build(self.feedback_variables)
        object.__setattr__(self, "_compiled_feedback", C.feedback_layout(self))
        with self.distribute_strategy.scope():
            object.__setattr__(self, "_first_nonfinite", _FirstNonFinite(self._health_width()))

    def _feedback_optimizer_for(self, forward, feedback):
        """The feedback optimizer(s) of `compile`, through the factory the launcher uses too
        (`optimizers.feedback_optimizers`): for a rule with per-layer feedback optimizers (ldrl), one per hidden
        layer, cloned from the one given (or a list of them, one per hidden layer, or a LayerwiseOptimizer)."""
        if not self.feedback_variables:
            if feedback is not None and not isinstance(feedback, (list, tuple, LayerwiseOptimizer)):
                # kept (and saved with the model), but it has nothing to train
                warnings.warn(f"compile: method {self.method.name!r} trains no feedback weights here; "
                              "feedback_optimizer is not used", UserWarning, stacklevel=3)
                return _keras_optimizer(feedback, "feedback_optimizer")
            return None
        if feedback is None:
            return default_feedback_optimizer(self)
        per_layer = self.rule.schedule.per_layer_optimizers
        groups = len(self.tp_layers) - 1
        if isinstance(feedback, LayerwiseOptimizer) or isinstance(feedback, (list, tuple)):
            given = feedback.optimizers if isinstance(feedback, LayerwiseOptimizer) else list(feedback)
            if not per_layer:
                raise ValueError(f"compile: rule {self.rule.name!r} trains its feedback with one optimizer; pass "
                                 "feedback_optimizer=<one optimizer>, not one per layer")
            if len(given) != groups:
                raise ValueError(f"compile: {len(given)} feedback optimizers for {groups} hidden layers; give one "
                                 "per hidden layer, or one to be cloned for each")
            given = [_keras_optimizer(o, "feedback_optimizer") for o in given]
            if isinstance(feedback, LayerwiseOptimizer) and [[id(v) for v in g] for g in feedback.variable_groups] \
                    != [[id(v) for v in g] for g in self.feedback_variable_groups]:
                raise ValueError("compile: this LayerwiseOptimizer was made for other variables; pass a list of "
                                 "optimizers, one per hidden layer")
            if any(o is forward for o in given):
                raise ValueError("compile: the forward optimizer is among the feedback optimizers; pass new ones")
            made = iter(given)
            return feedback_optimizers(self, lambda name: next(made))
        feedback = _keras_optimizer(feedback, "feedback_optimizer")
        if per_layer:
            if feedback.built:
                raise ValueError(f"compile: rule {self.rule.name!r} trains its feedback with one optimizer per "
                                 f"hidden layer, cloned from feedback_optimizer={feedback.name!r}, which already "
                                 "holds state; pass a new optimizer, or a list of optimizers, one per hidden layer")
            config = feedback.get_config()
            return feedback_optimizers(self, lambda name: type(feedback).from_config({**config, "name": name}),
                                       name=config["name"])
        if feedback is forward:
            if forward.built:
                raise ValueError("compile: the same optimizer object for the forward and the feedback weights, and "
                                 "it already holds state; pass feedback_optimizer=<a new optimizer>")
            feedback = type(forward).from_config(forward.get_config())  # each optimizer needs its own state
        return feedback

    def _compiled_loss_kind(self, loss) -> str:
        """'auto' (the task's loss), 'sparse', 'categorical' or 'mse'; a one-line ValueError otherwise."""
        if loss is None:
            return "auto"
        if isinstance(loss, keras.losses.Loss):
            config = loss.get_config()
            name = getattr(getattr(loss, "fn", None), "__name__", type(loss).__name__)
            if config.get("from_logits") is False:
                raise ValueError(f"loss={type(loss).__name__}(from_logits=False) reads the outputs as probabilities, "
                                 "but a TP model outputs logits (the targets live on them): pass from_logits=True "
                                 f"or the name {name!r}")
            extras = {k: v for k, v in config.items() if k in ("label_smoothing", "ignore_class", "axis")
                      and v not in (0, 0.0, None, -1)}
            if extras or config.get("reduction", "sum_over_batch_size") != "sum_over_batch_size":
                raise ValueError(f"loss={type(loss).__name__}({extras or config.get('reduction')}): only the plain "
                                 "loss (batch mean, no label smoothing or ignored class) has the closed-form output "
                                 "error the targets are built from; drop these settings")
        elif isinstance(loss, str) or callable(loss):
            name = loss if isinstance(loss, str) else getattr(loss, "__name__", repr(loss))
        else:
            name = repr(loss)
        by_task = {"classification": _CLASSIFICATION_LOSSES, "regression": _REGRESSION_LOSSES}
        if name in by_task[self.task]:
            return by_task[self.task][name]
        other = next(task for task in by_task if task != self.task)
        if name in by_task[other]:
            raise ValueError(f"loss={name!r} is a {other} loss, but this TPModel was built with task={self.task!r}; "
                             f"build it with task={other!r}")
        raise ValueError(f"loss={name!r} is not supported: the output target is built from the closed-form gradient "
                         "of softmax cross-entropy on the logits ('sparse_categorical_crossentropy', "
                         "'categorical_crossentropy') or of mean squared error ('mse', task='regression')")

    def get_compile_config(self):
        """Keras' compile config (the forward optimizer as `optimizer`) plus the feedback optimizer, so that a
        `.keras` file restores both optimizers and their states."""
        config = super().get_compile_config()
        optimizer = self.feedback_optimizer
        if config and isinstance(optimizer, LayerwiseOptimizer):  # one per hidden layer: saved as their list
            config["feedback_optimizer"] = [keras.saving.serialize_keras_object(o) for o in optimizer.optimizers]
        elif config and optimizer is not None:
            config["feedback_optimizer"] = keras.saving.serialize_keras_object(optimizer)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        # Builds both optimizers, so that loading then restores their variables (step counters and moments).
        self.compile(**config)

    def save_own_variables(self, store):
        # The noise generator's state is not a layer weight; saved so that a loaded model draws the same noise.
        super().save_own_variables(store)
        store["noise_seed_state"] = self.noise_seed.state

    def load_own_variables(self, store):
        if "noise_seed_state" in store:
            self.noise_seed.state.assign(store["noise_seed_state"])
        super().load_own_variables({k: store[k] for k in store.keys() if k != "noise_seed_state"})

    @property
    def metrics(self):
        """Keras' (loss, compiled metrics), and rec_loss, the mean feedback loss, when feedback trains."""
        tracker = getattr(self, "_rec_loss_tracker", None)
        metrics = [m for m in super().metrics if m is not tracker]
        if tracker is not None and self.feedback_variables:
            metrics.append(tracker)
        return metrics

    # --- fit / evaluate ----------------------------------------------------------------------------------------
    def fit(self, *args, **kwargs):
        """Keras' fit, after checking what TP training needs (one line each): a usable strategy, unchanged
        trainable flags since compile, finite inputs, labels that are class ids in range (or one-hot rows),
        non-negative finite sample/class weights. A non-finite loss or target stops training at the end of its
        epoch with `tp_keras.core.health.Diverged` and the launcher's message."""
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        C.check_strategy(self, "fit")
        C.check_trainable(self)
        C.check_rule(self)
        C.check_arrays(self, arguments["x"], arguments["y"], arguments["sample_weight"])
        C.check_data(self, arguments["x"], arguments["y"])
        if arguments["class_weight"] is not None:
            C.check_class_weight(self, arguments["class_weight"])
        validation = arguments["validation_data"]
        if isinstance(validation, (tuple, list)) and 2 <= len(validation) <= 3:
            C.check_arrays(self, *validation, where="validation_data")
            C.check_data(self, *validation[:2])
        elif isinstance(validation, tf.data.Dataset):
            C.check_data(self, validation)
        arguments["callbacks"] = _with_first(_StopOnNonFinite(), arguments["callbacks"])
        self._follow_label_shape(C.label_shape(arguments["x"], arguments["y"]), C.label_shape(*validation[:2])
                                 if isinstance(validation, (tuple, list)) else None)
        with C.labels_out_of_range_as_value_error():
            return super().fit(**arguments)

    def evaluate(self, *args, **kwargs):
        """Keras' evaluate, with fit's checks of the data; `sample_weight` weighs the loss and the weighted
        metrics (the default accuracy among them)."""
        arguments = inspect.signature(keras.Model.evaluate).bind(self, *args, **kwargs).arguments
        if not arguments.get("kwargs", {}).get("_use_cached_eval_dataset"):  # else fit's validation: checked
            C.check_strategy(self, "evaluate")
            C.check_arrays(self, arguments.get("x"), arguments.get("y"), arguments.get("sample_weight"))
            C.check_data(self, arguments.get("x"), arguments.get("y"))
            self._follow_label_shape(C.label_shape(arguments.get("x"), arguments.get("y")))
        with C.labels_out_of_range_as_value_error():
            return super().evaluate(*args, **kwargs)

    def _follow_label_shape(self, shape, validation_shape=None):
        """Prepares for labels of per-sample shape `shape` ((), (1,) or (C,); None when unknown until the data
        stream). When it differs from the shape the compiled functions were traced with, they are dropped (else
        tf.function would relax both to a shape of unknown rank, and the step chooses its loss from the static
        shape) and the compiled metrics are rebuilt (Keras resolves "accuracy" from the labels' shape)."""
        if shape is not None and validation_shape is not None and shape != validation_shape:
            shapes = ["(N" + "".join(f", {d}" for d in form) + ")" for form in (validation_shape, shape)]
            raise ValueError(f"validation labels of shape {shapes[0]}, training labels of shape {shapes[1]}: give "
                             "both in one form (class ids, or one-hot rows)")
        previous = getattr(self, "_label_shape", None)
        if shape is None or shape == previous:
            return
        if previous is not None:
            self.train_function = self.test_function = None
            if self._compile_metrics is not None:
                from keras.src.trainers.compile_utils import CompileMetrics
                config = self._compile_config.config
                object.__setattr__(self, "_compile_metrics",  # past Keras' tracking, locked once built
                                   CompileMetrics(config["metrics"], config["weighted_metrics"]))
        object.__setattr__(self, "_label_shape", shape)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _check_traced_data(self, x, y)
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        rows = tf.shape(x)[0]
        shard = {}
        if replicas > 1:
            # Keras hands each replica a contiguous shard and sums the replicas' gradients: scale the losses by
            # the GLOBAL batch and draw the global batch's noise, so the sum is the one-device update.
            counts = context.all_gather(rows[None], axis=0)
            total = tf.reduce_sum(counts)
            shard = dict(batch_size=total, noise_rows=(tf.reduce_sum(counts[:context.replica_id_in_sync_group]), total))
        updates = step.batch_updates(self, self.optimizer, self.feedback_optimizer, x, y, sample_weight=sample_weight,
                                     **shard)
        self._record_health(step.health(updates), context if replicas > 1 else None)
        self._loss_tracker.update_state(updates.loss, sample_weight=rows)
        metrics = step.step_metrics(updates)
        if "rec_loss" in metrics:  # each replica's part of the global feedback loss: the parts add up
            self._rec_loss_tracker.update_state(metrics["rec_loss"] * replicas, sample_weight=1.0 / replicas)
        self._update_compiled_metrics(y, updates.activations[-1], sample_weight)
        return self.get_metrics_result()

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _check_traced_data(self, x, y)
        logits = self(x)
        per_sample = T.output_loss_per_sample(logits, y, self.task)
        if sample_weight is not None:
            per_sample = per_sample * tf.reshape(tf.cast(sample_weight, per_sample.dtype), [-1])
        self._loss_tracker.update_state(tf.reduce_mean(per_sample), sample_weight=tf.shape(x)[0])
        self._update_compiled_metrics(y, logits, sample_weight)
        return {k: v for k, v in self.get_metrics_result().items() if k != "rec_loss"}

    def _update_compiled_metrics(self, y, logits, sample_weight):
        if self._compile_metrics is not None:
            # Keras metrics keep float32 state, and some of their ops (top-k) take float32 predictions only.
            self._compile_metrics.update_state(y, tf.cast(logits, "float32"), sample_weight)

    # --- non-finite values during fit --------------------------------------------------------------------------
    def _health_width(self) -> int:
        """Length of a batch's flattened `step.health` flags: the loss, every layer, every feedback loss."""
        return 1 + len(self.tp_layers) + ((len(self.tp_layers) - 1) if self.feedback_variables else 0)

    def _record_health(self, flags, context):
        if self._first_nonfinite is None:
            return
        parts = [tf.reshape(flags["finite_loss"], [1])] + [flags[k] for k in ("finite_layers", "finite_feedback")
                                                            if k in flags]
        finite = tf.cast(tf.concat(parts, axis=0), tf.float32)
        if context is not None:  # the global batch is finite where no replica saw a non-finite value
            bad = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - finite)
            finite = tf.cast(tf.equal(bad, 0.0), tf.float32)
        self._first_nonfinite.update(finite)

    def _nonfinite_problem(self, where: str) -> str | None:
        """The launcher's message for the first non-finite batch recorded since the last reset, or None."""
        record = self._first_nonfinite
        batch = int(record.first.numpy())
        if batch < 0:
            return None
        flags = np.asarray(record.flags.numpy())
        layers = len(self.tp_layers)
        row = {"finite_loss": flags[0], "finite_layers": flags[1:1 + layers]}
        if len(flags) > 1 + layers:
            row["finite_feedback"] = flags[1 + layers:]
        finite = {k: np.ones_like(v) for k, v in row.items()}
        return first_problem(where, [finite] * batch + [row])

    # --- feedback-only passes ----------------------------------------------------------------------------------
    def train_feedback(self, x, y=None, *, epochs: int = 1, batch_size: int | None = None, seed: int = 0,
                       verbose: bool = False, where: str = "feedback pass") -> list[float]:
        """Feedback-only passes (the schedule's pre-training and extra feedback epochs) with the compiled
        feedback half of the step; returns each pass's mean feedback loss. Needs `compile(...)` first.

        Data: what `fit` takes. NumPy arrays or tensors (x, y) are reshuffled for every pass with a permutation
        drawn from (seed, pass number), in batches of `batch_size` (default 128); a tf.data.Dataset or a
        keras.utils.PyDataset yielding (x, y[, sample_weight]) batches is passed over as it is (its own batching
        and shuffling). The feedback losses use no labels and no sample weights (labels only give the logged
        loss). A non-finite feedback loss raises `tp_keras.core.health.Diverged` with the launcher's message,
        naming the pass as `where` k. `FeedbackSchedule` runs this from `fit`."""
        if not self.feedback_variables:
            return []
        if self.feedback_optimizer is None:
            raise ValueError("train_feedback needs compile(...) first (it trains with the feedback optimizer)")
        C.check_rule(self)
        C.check_data(self, x, y)
        if getattr(self, "_feedback_step", None) is None:
            object.__setattr__(self, "_feedback_step", tf.function(
                lambda xb, yb: step.train_step(self, self.optimizer, self.feedback_optimizer, xb, yb, forward=False),
                reduce_retracing=True))
        passes = getattr(self, "_feedback_passes", 0)
        batches = _feedback_batches(x, y, batch_size)
        steps = int(self.steps_per_execution or 1)
        means = []
        for _ in range(int(epochs)):
            losses, flags = [], {}
            data = batches(seed, passes)
            if isinstance(data, loop.Pass):  # arrays: compile's steps_per_execution batches per call (loop.py)
                multi_step = None
                if steps > 1:
                    if getattr(self, "_feedback_loop", None) is None or self._feedback_loop.batch_size != data.batch_size:
                        object.__setattr__(self, "_feedback_loop", loop.StepLoop(self._feedback_step, data.batch_size))
                    multi_step = self._feedback_loop
                calls = data.calls(self._feedback_step, multi_step, steps)
            else:
                calls = ((self._feedback_step(xb, yb), False) for xb, yb in data)
            for out, many in calls:
                out = dict(out)
                losses.append((out.pop("rec_loss"), many))
                for k, v in out.items():
                    if k.startswith("finite_"):
                        flags.setdefault(k, []).append((v, many))
            if not losses:
                raise ValueError("train_feedback: the data yielded no batch")
            passes += 1
            object.__setattr__(self, "_feedback_passes", passes)
            problem = first_problem_stacked(f"{where} {len(means) + 1}",
                                            {k: stack_calls(v) for k, v in flags.items()})
            if problem:
                raise Diverged(problem)
            means.append(float(tf.reduce_mean(tf.cast(stack_calls(losses), tf.float64))))
            if verbose:
                print(f"[tp_keras] feedback pass {passes}: rec_loss {means[-1]:.4g}")
        return means

    # --- which weights train -----------------------------------------------------------------------------------
    @property
    def forward_variables(self):
        """The forward parameters the forward optimizer trains (those of `trained_layers`)."""
        return [v for i in self.trained_layers for v in self.tp_layers[i].forward_variables]

    @property
    def trained_layers(self) -> list[int]:
        """Indices into tp_layers of the layers whose forward weights train: every layer with trainable=True
        (only the first with only_train_first_layer)."""
        candidates = [0] if self.only_train_first_layer else range(len(self.tp_layers))
        return [i for i in candidates if self.tp_layers[i].trainable]

    @property
    def local_loss_scales(self) -> list[float]:
        """Per layer, the factor on its local loss (the network's: 1 for dense layers, 1/n_ℓ for conv layers)."""
        return self.network.local_loss_scales

    @property
    def all_feedback_variables(self):
        variables = [v for layer in self.tp_layers for v in layer.feedback_variables]
        if self.direct_feedback is not None:
            variables += self.direct_feedback.feedback_variables
        return variables

    @property
    def feedback_variables(self):
        """The feedback parameters the feedback optimizer trains: empty for BP and frozen feedback (DFA, or
        `direct_feedback.trainable = False`). A frozen forward layer's own layer-wise feedback still trains."""
        if not self.rule.trains_feedback:
            return []
        variables = [v for layer in self.tp_layers for v in layer.feedback_variables]
        if self.direct_feedback is not None and self.direct_feedback.trainable:
            variables += self.direct_feedback.feedback_variables
        return variables

    @property
    def feedback_variable_groups(self) -> list[list]:
        """The trained feedback variables of each hidden layer ℓ = 1..L−1 (layer-wise feedback: g_ℓ's Q and d),
        for per-layer feedback iterations and optimizers."""
        if self.direct_feedback is not None:
            raise ValueError("feedback_variable_groups: direct feedback has no per-layer groups")
        trained = {id(v) for v in self.feedback_variables}
        return [[v for v in layer.feedback_variables if id(v) in trained] for layer in self.tp_layers[1:]]

    # --- the learning rule ---------------------------------------------------------------------------------------
    @property
    def rule(self) -> LearningRule:
        """The learning rule this model trains with. Setting it (a LearningRule of the same feedback maps) is
        `set_rule`: it applies from the next fit."""
        return self._rule

    @rule.setter
    def rule(self, value):
        if "_rule" not in self.__dict__:  # the constructor's
            object.__setattr__(self, "_rule", value)
            return
        if not isinstance(value, LearningRule):
            raise ValueError(f"model.rule = {value!r}: assign a LearningRule, or call set_rule({value!r}) (a name "
                             "keeps this model's hyper-parameters)")
        object.__setattr__(self, "_rule", self._checked_rule(value))
        self._rule_changed()

    @property
    def method(self) -> LearningRule:
        """The registry entry of this model's rule (its structure, the registry's hyper-parameters)."""
        return self.rule.structure()

    # The rule's hyper-parameters, read (and set: a new rule value) through the model as before.
    @property
    def target_stepsize(self) -> float:
        return self.rule.target_stepsize

    @target_stepsize.setter
    def target_stepsize(self, value):
        self._replace_rule(target_stepsize=value)

    @property
    def sigma(self):
        return self.rule.sigma

    @sigma.setter
    def sigma(self, value):
        self._replace_rule(sigma=value)

    @property
    def gn_damping(self) -> float:
        return self.rule.gn_damping

    @gn_damping.setter
    def gn_damping(self, value):
        self._replace_rule(gn_damping=value)

    def _replace_rule(self, **values):
        self.rule = self.rule.with_hyper_parameters(**values)

    def set_rule(self, rule):
        """Trains this network with another learning rule of the same feedback maps (a name or a LearningRule;
        a name keeps this model's hyper-parameters), e.g. a DTP network with 'ldrl'. Refused in one line when
        the maps differ.

        A rule changed after `compile` (here, or by setting `target_stepsize`, `sigma`, `gn_damping`) applies from
        the next `fit` or `train_feedback` on (their compiled steps are traced again); a rule that trains other
        feedback weights, or with other feedback optimizers, than the compiled one is refused there until
        `compile` is called again."""
        self.rule = self._checked_rule(rule)

    def _checked_rule(self, rule) -> LearningRule:
        """`rule` as set_rule would take it (a name keeps this model's hyper-parameters), checked; nothing changes."""
        new = get_rule(rule)
        if not isinstance(rule, LearningRule):
            new = _rule_with(new, self.target_stepsize, self.sigma if new.trains_feedback or not isinstance(
                self.sigma, tuple) else None, self.gn_damping, None)
        built = feedback_structure(self.rule)
        if feedback_structure(new) != built:
            raise ValueError(f"rule {new.name!r} needs other feedback maps than this {self.rule.name!r} network "
                             f"({feedback_structure(new)} vs {built}); build a TPModel({new.name!r}, ...)")
        return new

    def _rule_changed(self):
        """Drops every compiled step that read the rule when it was traced (Keras' train function, the feedback
        step), so the next fit or train_feedback traces them with the new rule: one retrace, no recompile."""
        object.__setattr__(self, "_feedback_step", None)
        object.__setattr__(self, "_feedback_loop", None)
        if getattr(self, "train_function", None) is not None:
            self.train_function = None

    def _saved_method(self):
        """The config's "method": the registry name, or the rule's structure as a dict (an unregistered rule, or a
        registered noise other than the registry's). A custom noise callable cannot be saved: refused in one
        line (the structure would otherwise silently save the registry's noise)."""
        structure = self.rule.structure()
        noise = self.rule.noise
        if not isinstance(noise, str):
            names = [name for name, fn in K.NOISE.items() if fn is noise]
            if not names:
                raise ValueError(f"rule {self.rule.name!r} draws its noise from the custom callable "
                                 f"{getattr(noise, '__name__', type(noise).__name__)}, which cannot be saved: register "
                                 "it (tp_keras.core.rules.components.NOISE['my_noise'] = fn) and set the rule's "
                                 "noise='my_noise', or set_rule() a rule with noise='philox' before saving")
            noise = names[0]
        if noise != structure.noise:
            structure = dataclasses.replace(structure, noise=noise)
        return structure.name if RULES.get(structure.name) == structure else structure.get_config()

    def _saved_state(self) -> dict:
        """What the config holds beyond the constructor's arguments, only where it is not the default: the frozen
        layers (`trainable = False`), restored by `from_config` (so load_model, clone_model and model_from_json
        keep them, and a loaded model's optimizers are built on the same variables as the saved ones)."""
        state = {}
        frozen = [i for i, layer in enumerate(self.tp_layers) if not layer.trainable]
        if frozen:
            state["frozen_layers"] = frozen
        if self.direct_feedback is not None and not self.direct_feedback.trainable:
            state["frozen_direct_feedback"] = True
        return state

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        frozen = config.pop("frozen_layers", ())
        frozen_direct_feedback = config.pop("frozen_direct_feedback", False)
        model = super().from_config(config, custom_objects)
        for i in frozen:
            model.tp_layers[i].trainable = False
        if frozen_direct_feedback:
            model.direct_feedback.trainable = False
        return model

    def get_config(self):
        method = self._saved_method()
        sigma = list(self.sigma) if isinstance(self.sigma, tuple) else self.sigma
        iterations = self.rule.feedback_iterations
        if type(self.network) is not MLPNetwork:  # e.g. TPModel(rule, network=CNNNetwork(...))
            return {"method": method, "network": serialize_network(self.network),
                    "target_stepsize": self.target_stepsize, "sigma": sigma, "task": self.task, "seed": self.seed,
                    "gn_damping": self.gn_damping,
                    "feedback_iterations": list(iterations) if isinstance(iterations, tuple) else iterations,
                    "only_train_first_layer": self.only_train_first_layer, "dtype": self.dtype_policy.name,
                    "name": self.name, **self._saved_state()}
        return {"method": method, "input_size": self.input_size, "hidden_sizes": self.hidden_sizes,
                "output_size": self.output_size, "target_stepsize": self.target_stepsize, "sigma": sigma,
                "hidden_activation": self.hidden_activation, "last_hidden_bias": self.last_hidden_bias,
                "task": self.task, "seed": self.seed, "size_hidden_fb": self.size_hidden_fb,
                "recurrent_input": self.recurrent_input, "gn_damping": self.gn_damping,
                "feedback_iterations": list(iterations) if isinstance(iterations, tuple) else iterations,
                "only_train_first_layer": self.only_train_first_layer, "dtype": self.dtype_policy.name,
                "name": self.name, **self._saved_state()}


def _unused_message(err) -> str:
    """An `UnusedSettingError` of the rule in TPModel's words."""
    return (f"TPModel: {err.setting}={err.value!r} is not used by rule {err.rule!r} ({err.reason}); drop the "
            f"argument: {err.setting} is for {SETTINGS[err.setting]}")


def _paper_values(rule: LearningRule) -> dict:
    """The values the method's paper configuration carries (tp_keras/reference/configs.py: the launcher passes them
    to TPModel for every method, used or not); {} for a rule outside the registry."""
    if RULES.get(rule.name) != rule.structure():
        return {}
    return paper_configs.MNIST_CONFIGS.get(paper_configs.DEFAULTS_FROM.get(rule.name, rule.name), {})


def _check_used(rule: LearningRule, setting: str, value, default) -> None:
    """Refuses a keyword argument for a setting the rule does not use (the rule decides, `rule.check_used`),
    unless it is what the rule ignores anyway: the argument's default, the rule's own value, or the value of the
    method's paper configuration (which the launcher passes for every method)."""
    if value is None or rule.uses(setting):
        return
    if any(_same(value, other) for other in (default, getattr(rule, setting, default))):
        return
    if setting in _paper_values(rule) and _same(value, _paper_values(rule)[setting]):
        return
    try:
        rule.check_used(setting, value)
    except UnusedSettingError as err:
        raise ValueError(_unused_message(err)) from None


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _given_hyper_parameters(rule: LearningRule, target_stepsize, sigma, gn_damping, feedback_iterations) -> tuple:
    """TPModel's hyper-parameter keyword arguments, each refused when the rule does not use it (`_check_used`),
    and None (the rule's own) where it is what the rule ignores anyway."""
    values = dict(target_stepsize=target_stepsize, sigma=sigma, gn_damping=gn_damping,
                  feedback_iterations=feedback_iterations)
    for name, value in values.items():
        _check_used(rule, name, value, None)
    return tuple(value if rule.uses(name) else None for name, value in values.items())


def _check_bools(**values) -> None:
    for name, value in values.items():
        if not (isinstance(value, (bool, np.bool_)) or (value is None and name == "last_hidden_bias")):
            allowed = "True, False or None" if name == "last_hidden_bias" else "True or False"
            raise ValueError(f"TPModel: {name}={value!r} must be {allowed} (a bool, not {type(value).__name__})")


def _in_tpmodel_words(err: RuleError) -> ValueError:
    """A rule's refusal in TPModel's words: a hyper-parameter's value as the keyword argument
    (`TPModel: sigma=[0.1, 0.2] ...`, a per-layer value shown as the list it was given as)."""
    if isinstance(err, HyperParameterError):
        shown = list(err.value) if isinstance(err.value, tuple) else err.value
        return ValueError("TPModel: " + err.reworded(f"{err.field}={shown!r}", err.field))
    return ValueError(f"TPModel: {err}")


def _check_per_layer(rule: LearningRule, num_hidden: int) -> None:
    """Per-layer hyper-parameters (sigma, feedback_iterations) must give one value per hidden layer of the network
    (the rule checks, `LearningRule.check_layers`, when the model is built, not at the first step)."""
    try:
        rule.check_layers(num_hidden)
    except RuleError as err:
        raise _in_tpmodel_words(err) from None


def _rule_with(rule: LearningRule, target_stepsize, sigma, gn_damping, feedback_iterations) -> LearningRule:
    """`rule` with TPModel's keyword arguments as its hyper-parameters (None keeps the rule's), checked by the
    rule and refused in TPModel's words (`_in_tpmodel_words`). Values for hyper-parameters the rule does not use
    are dropped (the constructor refuses them before, `_given_hyper_parameters`; set_rule by name keeps only what
    the new rule uses)."""
    values = dict(target_stepsize=target_stepsize, sigma=sigma, gn_damping=gn_damping,
                  feedback_iterations=feedback_iterations)
    try:
        return rule.with_hyper_parameters(**{name: v for name, v in values.items() if rule.uses(name)})
    except RuleError as err:
        raise _in_tpmodel_words(err) from None


def default_feedback_optimizer(model: TPModel):
    """The feedback optimizer `compile` gives a TP method when none is passed: the method's paper MNIST feedback
    Adam (PyTorch semantics: `lr_fb`, `beta1_fb`, `beta2_fb`, `epsilon_fb`, coupled L2 `feedback_wd`; 'tp' takes
    DTP's), in the model's precision; one per hidden layer for a rule with per-layer feedback optimizers (ldrl),
    as the launcher gives it (`optimizers.feedback_optimizers`)."""
    name = model.method.name
    config = paper_configs.MNIST_CONFIGS.get(paper_configs.DEFAULTS_FROM.get(name, name))
    if config is None or RULES.get(name) != model.method:
        raise ValueError(f"compile: method {name!r} has no paper configuration to take a default feedback optimizer "
                         "from; pass feedback_optimizer=")
    return feedback_optimizers(model, lambda optimizer_name: TorchAdam(
        config["lr_fb"], config["beta1_fb"], config["beta2_fb"], config["epsilon_fb"], l2_decay=config["feedback_wd"],
        name=optimizer_name, precision=model.compute_dtype))


def _keras_optimizer(optimizer, argument: str):
    if optimizer is None:
        raise ValueError(f"compile: pass {argument}= (the forward optimizer), e.g. optimizer='adam' or "
                         "optimizer=TorchAdam(3e-4)")
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    try:
        return keras.optimizers.get(optimizer)
    except (ValueError, TypeError):
        raise ValueError(f"compile: {argument}={optimizer!r} is not a Keras optimizer or optimizer name (per-layer "
                         "optimizers are for step.Trainer and the launcher)") from None


def _check_owns(optimizer, variables):
    """A built optimizer must hold state for these variables (else it was built for another model)."""
    if hasattr(optimizer, "variable_groups"):  # a LayerwiseOptimizer: each of its optimizers, its own group
        for part, group in zip(optimizer.optimizers, optimizer.variable_groups):
            _check_owns(part, group)
        return
    if optimizer.built and any(optimizer._var_key(v) not in optimizer._trainable_variables_indices
                               for v in variables):
        raise ValueError(f"compile: optimizer {optimizer.name!r} was already built for other variables (another "
                         "model, or other trainable layers); pass a new optimizer")


class _FirstNonFinite:
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


class _StopOnNonFinite(keras.callbacks.Callback):
    """Put first by `TPModel.fit`: at the end of an epoch with a non-finite loss or target, raises `Diverged` with
    the launcher's message before any later callback (a checkpoint, say) sees the broken weights."""

    def on_epoch_begin(self, epoch, logs=None):
        if self.model._first_nonfinite is not None:
            self.model._first_nonfinite.reset()

    def on_epoch_end(self, epoch, logs=None):
        if self.model._first_nonfinite is not None:
            problem = self.model._nonfinite_problem(f"epoch {epoch + 1}")
            if problem:
                self.model.stop_training = True
                raise Diverged(problem)


def _with_first(callback, callbacks):
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks.callbacks.insert(0, callback)
        callback.set_model(callbacks.model)
        return callbacks
    return [callback] + list(callbacks or [])


def _check_traced_data(model, x, y):
    """At trace time, what fit could not check beforehand (generators, PyDatasets): the inputs' shape and dtype,
    the labels' dtype and form."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        C.check_input_spec(model, x.shape, x.dtype)
    if y is not None and hasattr(y, "dtype"):
        C.check_label_dtype(model, y.dtype)
    C.check_label_form(model, y)


def _feedback_batches(x, y, batch_size):
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
