"""`TPModel`: a Keras model of forward layers with the feedback parameters its training method needs.

It behaves like a Keras model wherever a Keras user touches it (`compile`, `fit`, `evaluate`, `predict`,
callbacks, `save`/`load_model`, `summary`), with one meaning for each Keras argument under target propagation
(README, "Keras API"; BUILD_NOTES, "Keras conventions"); what has no meaning is refused in one line.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tp_keras.core import compile_arguments, feedback_passes, step
from tp_keras.core import keras_checks as C
from tp_keras.core import targets as T
from tp_keras.core.callbacks import StopOnNonFinite, with_first
from tp_keras.core.health import FirstNonFinite
from tp_keras.core.networks import MLPNetwork, Network, deserialize_network, feedback_structure, serialize_network
from tp_keras.core import conv_networks  # noqa: F401  registers ConvChainNetwork (networks.NETWORKS) for load_model
from tp_keras.core.optimizers import LayerwiseOptimizer
from tp_keras.core.rules import RULES, LearningRule, RuleError, get_rule
from tp_keras.core.rules import components as K
from tp_keras.core.rules.base import SETTINGS, HyperParameterError, UnusedSettingError
from tp_keras.reference import configs as paper_configs


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
            paper MNIST feedback Adam (`optimizers.default_feedback_optimizer`). The same object as `optimizer`
            is cloned (a fresh one from its config) when it holds no state yet, else refused. A rule with
            per-layer feedback optimizers (ldrl) gets one per hidden layer, as from the launcher
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
            forward = compile_arguments.keras_optimizer(
                optimizer if optimizer is not None else forward_optimizer, "optimizer")
            if not self.trained_layers:
                raise ValueError("compile: every forward layer is frozen (trainable=False), so fit would train no "
                                 "forward weight; unfreeze a layer, or train the feedback alone with train_feedback()")
            if loss_weights is not None:
                raise ValueError("compile: loss_weights weigh the losses of several outputs; a TP model has one "
                                 "output")
            feedback = compile_arguments.feedback_optimizer_for(self, forward, feedback_optimizer)
            kind = compile_arguments.loss_kind(self.task, loss)
            if metrics is None and weighted_metrics is None and self.task == "classification":
                weighted_metrics = ["accuracy"]
            from keras.src.trainers.compile_utils import CompileMetrics
            CompileMetrics(metrics, weighted_metrics)  # Keras' own checks of their form, before Keras' compile
            compile_arguments.check_owns(forward, self.forward_variables)
            if feedback is not None and self.feedback_variables:
                compile_arguments.check_owns(feedback, self.feedback_variables)
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
            object.__setattr__(self, "_first_nonfinite", FirstNonFinite(self._health_width()))

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
        arguments["callbacks"] = with_first(StopOnNonFinite(), arguments["callbacks"])
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

    def make_train_function(self, force=False):
        """Keras' train function (TensorFlowTrainer.make_train_function) with its loop over `steps_per_execution`
        batches written so that a call runs nothing of the step unless a batch came: Keras' one-batch function calls
        the step on `iterator.get_next()`, and on a dataset of unknown size the call that finds the data ended has
        already run the step's data-independent ops (the noise generator's advance), so the next epoch draws other
        noise than the custom loop. Here every call is one `tf.while_loop` that runs `_train_batch` (the step and
        the metric updates, the compiled function Keras' `train_step` runs, XLA-compiled alike) while the execution
        has steps left and the iterator a batch, and reads the metric results once, after the loop (Keras carries
        each batch's results through its loop in an Optional). Batches, their order, every update and the logs
        handed to callbacks (once per execution) are Keras' own. The speed is Keras' own too: on the host-bound
        proxy, fit's time per batch beyond the custom loop's is Keras' tf.data iterator and the per-batch metric
        updates, not this loop. Eager runs (`run_eagerly=True`), an unrolled loop (`unrolled_steps_per_execution`)
        and a subclass's own `train_step` keep Keras' function."""
        if self.train_function is not None and not force:
            return self.train_function
        if (self.run_eagerly or self.unrolled_steps_per_execution != 1
                or type(self).train_step is not TPModel.train_step):
            return super().make_train_function(force)
        from keras.src.backend.tensorflow.trainer import reduce_per_replica
        strategy, steps = self.distribute_strategy, int(self.steps_per_execution)

        @tf.autograph.experimental.do_not_convert
        def one_batch(data):
            strategy.run(self._train_batch, args=(data,))

        one_batch = self._autoconvert_optionals(tf.function(one_batch, reduce_retracing=True,
                                                            jit_compile=self.jit_compile))

        def results():
            return reduce_per_replica(strategy.run(self.get_metrics_result), strategy, reduction="auto")

        @tf.autograph.experimental.do_not_convert
        def batches_of_one_execution(iterator):
            def more(count, batch):
                return tf.logical_and(count < steps, batch.has_value())

            def body(count, batch):
                one_batch(batch.get_value())
                # The next batch only while the execution has steps left: one fetched past them would be lost.
                following = tf.cond(count + 1 < steps, iterator.get_next_as_optional, lambda: batch)
                return count + 1, following

            count, _ = tf.while_loop(more, body, (tf.constant(0), iterator.get_next_as_optional()))
            return count, results()

        batches_of_one_execution = tf.function(batches_of_one_execution, reduce_retracing=True)
        results_once = tf.function(results)

        def function(iterator):
            if isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
                count, logs = batches_of_one_execution(iterator)
                if not count:  # Keras' signal that the data ran out
                    raise StopIteration
                return logs
            for _, data in zip(range(steps), iterator):
                one_batch(data)
            return results_once()

        self.train_function = function
        return function

    def train_step(self, data):
        """One batch as Keras' train_step: the update (`_train_batch`), then the metric results."""
        self._train_batch(data)
        return self.get_metrics_result()

    def _train_batch(self, data):
        """The TP step on one batch of Keras' data, and the updates of the loss tracker and compiled metrics."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        C.check_traced_data(self, x, y)
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
        flags = step.health(updates)
        if self._first_nonfinite is not None:
            self._first_nonfinite.record(flags, context if replicas > 1 else None)
        self._loss_tracker.update_state(updates.loss, sample_weight=rows)
        metrics = step.step_metrics(updates)
        if "rec_loss" in metrics:  # each replica's part of the global feedback loss: the parts add up
            self._rec_loss_tracker.update_state(metrics["rec_loss"] * replicas, sample_weight=1.0 / replicas)
        self._update_compiled_metrics(y, updates.activations[-1], sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        C.check_traced_data(self, x, y)
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
        return feedback_passes.train_feedback(self, x, y, epochs=epochs, batch_size=batch_size, seed=seed,
                                              verbose=verbose, where=where)

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
        check = getattr(self.network, "check_rule", None)  # what the layers cannot train (GNT on conv blocks)
        if check is not None:
            check(new)
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
