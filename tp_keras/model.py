"""`TPModel`: a Keras model of forward layers with the feedback parameters its training method needs."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tp_keras.layers import DirectFeedback, TPDense
from tp_keras.methods import METHODS, Method, get_method


@keras.saving.register_keras_serializable(package="tp_keras")
class TPModel(keras.Model):
    """An MLP (tanh hidden layers, linear output) set up for one training method of the registry.

    Calling the model returns the output (logits). Training goes through `tp_keras.step`, either from the
    custom loop (`step.Trainer`, used by the launcher) or from Keras:

        model.compile(forward_optimizer=TorchAdam(...), feedback_optimizer=TorchAdam(...))
        model.fit(x, y, batch_size=128, epochs=...)

    whose `train_step` calls the very same `step.train_step`.

    Args:
      method: a registry name ('dtpdrl', 'ddtp_linear', ...) or a `Method`.
      input_size, hidden_sizes, output_size: the architecture n_0, n_1..n_{L−1}, n_L.
      target_stepsize: η̂ of the output target ĥ_L = h_L − η̂·e_L.
      sigma: std of the noise of the feedback losses.
      hidden_activation: s of the hidden layers.
      last_hidden_bias: None keeps the method's reference behaviour (no bias on the last hidden layer for
        DDTP-linear and DFA, spec §2.5); True/False forces it.
      size_hidden_fb: n_fb, the size of DDTP-RHL's fixed random feedback layer.
      recurrent_input: DDTP-RHL's variant that feeds each layer's own activation into its feedback map.
      gn_damping: Tikhonov damping λ of the GNT targets (method 'gnt').
      only_train_first_layer: Frozen-MNIST (spec §4.3): only the first hidden layer's forward weights train
        (every other forward weight keeps its initial value; feedback weights train as usual), and the step
        computes no local loss or gradient for the frozen layers.
      task: 'classification' (softmax cross-entropy on logits) or 'regression' (mean squared error).
      seed: initialisation and noise seed.
      dtype: 'float32' or 'float64' for every variable and computation.

    Saving: `model.save("m.keras")` / `keras.saving.load_model("m.keras")` restores every forward and feedback
    weight (DDTP-RHL's fixed random layer included), the noise generator's state, the method and every
    hyper-parameter above, and, for a compiled model, both optimizers with their state (the forward one as
    Keras' `optimizer`, the feedback one as `feedback_optimizer`), so a loaded model continues training exactly
    where the saved one stopped. In a fresh process, `import tp_keras.model` before `keras.saving.load_model`
    (Keras finds the custom classes through their registration at import).
    """

    def __init__(self, method: str | Method = "ddtp_linear", input_size: int = 784,
                 hidden_sizes: Sequence[int] = (256,) * 5, output_size: int = 10, *,
                 target_stepsize: float = 0.01, sigma: float = 0.08, hidden_activation: str = "tanh",
                 last_hidden_bias: bool | None = None, task: str = "classification", seed: int = 42,
                 size_hidden_fb: int = 1024, recurrent_input: bool = False, gn_damping: float = 0.0,
                 only_train_first_layer: bool = False, dtype: str = "float32", **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.only_train_first_layer = bool(only_train_first_layer)
        if isinstance(method, dict):  # a Method outside the registry, as `get_config` writes it
            method = Method(**method)
        self.method = get_method(method)
        self.input_size = int(input_size)
        self.hidden_sizes = [int(n) for n in hidden_sizes]
        self.output_size = int(output_size)
        self.target_stepsize = float(target_stepsize)
        self.sigma = float(sigma)
        self.hidden_activation = hidden_activation
        self.last_hidden_bias = self.method.last_hidden_bias if last_hidden_bias is None else bool(last_hidden_bias)
        self.task = task
        self.seed = int(seed)
        self.size_hidden_fb = int(size_hidden_fb)
        self.recurrent_input = bool(recurrent_input)
        self.gn_damping = float(gn_damping)
        if not self.hidden_sizes:
            raise ValueError("TPModel needs at least one hidden layer")

        m = self.method
        sizes = self.hidden_sizes + [self.output_size]
        layerwise_fb = m.feedback_activation if m.feedback == "layerwise" else None
        self.tp_layers = [
            TPDense(n, activation="linear" if i == len(sizes) - 1 else hidden_activation,
                    use_bias=self.last_hidden_bias or i != len(sizes) - 2,
                    # Layer 1 would carry g_0 (to the input), which no method uses.
                    feedback_activation=layerwise_fb if i > 0 else None,
                    feedback_trainable=m.feedback_trained, seed=self.seed * 1009 + 2 * i, dtype=dtype,
                    name=f"layer_{i + 1}")
            for i, n in enumerate(sizes)]
        self.direct_feedback = None
        if m.direct:
            rhl = m.feedback == "direct_rhl"
            self.direct_feedback = DirectFeedback(
                self.hidden_sizes, activation=m.feedback_activation,
                use_bias=[True] * (len(self.hidden_sizes) - 1) + [self.last_hidden_bias],
                trainable=m.feedback_trained, seed=self.seed * 1009 + 500,
                random_layer_size=self.size_hidden_fb if rhl else None,
                recurrent=self.recurrent_input and rhl, dtype=dtype, name="direct_feedback")
        self.noise_seed = keras.random.SeedGenerator(self.seed + 7919, name="noise_seed")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "accuracy", "rec_loss")}
        self.build((None, self.input_size))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.tp_layers:
            layer.build(shape)
            shape = (shape[0], layer.units)
        if self.direct_feedback is not None:
            self.direct_feedback.build((None, self.output_size))
        self.built = True

    def activations(self, x, detach_inputs: bool = False):
        """[h_0 = x, h_1, ..., h_L]. With `detach_inputs`, every layer's input is a constant for gradients, so a
        tape over this pass gives each layer's local gradient alone."""
        hs = [tf.cast(x, self.compute_dtype)]
        for layer in self.tp_layers:
            inp = tf.stop_gradient(hs[-1]) if detach_inputs else hs[-1]
            hs.append(layer(inp))
        return hs

    def call(self, x):
        return self.activations(x)[-1]

    # --- Keras fit/evaluate integration -------------------------------------------------------------------
    def compile(self, forward_optimizer=None, feedback_optimizer=None, **kwargs):
        """`forward_optimizer` trains the forward weights (by local target losses, or by BP for 'bp');
        `feedback_optimizer` the feedback weights (required when the method trains them)."""
        if self.feedback_variables and feedback_optimizer is None:
            raise ValueError(f"method {self.method.name!r} trains feedback weights: pass feedback_optimizer=")
        super().compile(optimizer=forward_optimizer, **kwargs)
        # Set past Keras' attribute tracking, which is locked once the model is built.
        object.__setattr__(self, "feedback_optimizer", feedback_optimizer)
        self.optimizer.build(self.forward_variables)
        if feedback_optimizer is not None and self.feedback_variables:
            feedback_optimizer.build(self.feedback_variables)

    def get_compile_config(self):
        """Keras' compile config (the forward optimizer as `optimizer`) plus the feedback optimizer, so that a
        `.keras` file restores both optimizers and their states."""
        config = super().get_compile_config()
        feedback_optimizer = getattr(self, "feedback_optimizer", None)
        if config and feedback_optimizer is not None:
            config["feedback_optimizer"] = keras.saving.serialize_keras_object(feedback_optimizer)
        return config

    def compile_from_config(self, config):
        from tp_keras import optimizers  # noqa: F401  (registers TorchAdam/TorchSGD for deserialisation)
        config = keras.saving.deserialize_keras_object(config)
        forward_optimizer = config.pop("optimizer", None)
        feedback_optimizer = config.pop("feedback_optimizer", None)
        # Builds both optimizers, so that loading then restores their variables (step counters and moments).
        self.compile(forward_optimizer=forward_optimizer, feedback_optimizer=feedback_optimizer, **config)

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
        return list(self._trackers.values())

    def train_feedback(self, x, y, *, epochs: int = 1, batch_size: int = 128, seed: int = 0,
                       verbose: bool = False) -> list[float]:
        """Feedback-only passes (the schedule's pre-training and extra feedback epochs) with the compiled
        feedback half of the step; returns each pass's mean feedback loss. Each pass reshuffles with a
        permutation drawn from (seed, pass number). Needs `compile(...)` with a feedback optimizer first.
        `FeedbackSchedule` runs it from `fit`."""
        from tp_keras import step
        if not self.feedback_variables:
            return []
        if getattr(self, "feedback_optimizer", None) is None:
            raise ValueError("train_feedback needs compile(forward_optimizer=..., feedback_optimizer=...) first")
        if getattr(self, "_feedback_step", None) is None:
            object.__setattr__(self, "_feedback_step", tf.function(
                lambda xb, yb: step.train_step(self, self.optimizer, self.feedback_optimizer, xb, yb,
                                               forward=False)["rec_loss"], reduce_retracing=True))
        x, y = np.asarray(x), np.asarray(y)
        passes = getattr(self, "_feedback_passes", 0)
        means = []
        for _ in range(int(epochs)):
            order = np.random.default_rng([int(seed), passes]).permutation(len(x))
            xs, ys = tf.constant(x[order]), tf.constant(y[order])
            losses = [self._feedback_step(xs[i:i + batch_size], ys[i:i + batch_size])
                      for i in range(0, len(x), batch_size)]
            means.append(float(tf.reduce_mean(tf.cast(tf.stack(losses), tf.float64))))
            passes += 1
            if verbose:
                print(f"[tp_keras] feedback pass {passes}: rec_loss {means[-1]:.4g}")
        object.__setattr__(self, "_feedback_passes", passes)
        return means

    def train_step(self, data):
        from tp_keras import step  # step imports this module's siblings; imported late to keep layering flat
        x, y = data[0], data[1]
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        if replicas == 1:
            return self._track(step.train_step(self, self.optimizer, self.feedback_optimizer, x, y))
        # Under a strategy Keras hands each replica a contiguous shard and sums the replicas' gradients: scale
        # the losses by the GLOBAL batch and draw the global batch's noise, so the sum is the one-device update.
        rows = tf.shape(x)[0]
        counts = context.all_gather(rows[None], axis=0)
        total = tf.reduce_sum(counts)
        offset = tf.reduce_sum(counts[:context.replica_id_in_sync_group])
        results = step.train_step(self, self.optimizer, self.feedback_optimizer, x, y, batch_size=total,
                                  noise_rows=(offset, total))
        share = tf.cast(rows, results["loss"].dtype) / tf.cast(total, results["loss"].dtype)
        for name, value in results.items():
            if name == "rec_loss":  # each replica's part of the global feedback loss: the parts add up
                self._trackers[name].update_state(value * replicas, sample_weight=1.0 / replicas)
            elif name in self._trackers:  # a replica's batch mean, weighted by its share of the batch
                self._trackers[name].update_state(value, sample_weight=share)
        return {n: t.result() for n, t in self._trackers.items() if n in results}

    def test_step(self, data):
        from tp_keras import step
        x, y = data[0], data[1]
        sums = step.eval_sums(self, x, y)
        results = {"loss": sums["loss_sum"] / sums["count"]}
        if "correct" in sums:
            results["accuracy"] = sums["correct"] / sums["count"]
        return self._track(results)

    def _track(self, results):
        for name, value in results.items():
            if name in self._trackers:  # the step's other outputs (finiteness flags) are for the custom loop
                self._trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self._trackers.items() if name in results}

    @property
    def forward_variables(self):
        """The forward parameters the forward optimizer trains (the first layer's only, with
        only_train_first_layer)."""
        return [v for i in self.trained_layers for v in self.tp_layers[i].forward_variables]

    @property
    def trained_layers(self) -> list[int]:
        """Indices into tp_layers of the layers whose forward weights train."""
        return [0] if self.only_train_first_layer else list(range(len(self.tp_layers)))

    @property
    def local_loss_scales(self) -> list[float]:
        """Per layer, the factor on its local loss (1/B)·Σ‖h_ℓ − ĥ_ℓ‖²: 1 for dense layers (spec §1.3); the
        CNN's conv layers (`tp_keras.cnn.CNNModel`) take the element mean, 1/n_ℓ (spec §2.11)."""
        return [1.0] * len(self.tp_layers)

    @property
    def all_feedback_variables(self):
        variables = [v for layer in self.tp_layers for v in layer.feedback_variables]
        if self.direct_feedback is not None:
            variables += self.direct_feedback.feedback_variables
        return variables

    @property
    def feedback_variables(self):
        """The feedback parameters the feedback optimizer trains (empty for BP and frozen feedback)."""
        return self.all_feedback_variables if self.method.trains_feedback else []

    def get_config(self):
        method = self.method.name if METHODS.get(self.method.name) == self.method else dataclasses.asdict(self.method)
        return {"method": method, "input_size": self.input_size, "hidden_sizes": self.hidden_sizes,
                "output_size": self.output_size, "target_stepsize": self.target_stepsize, "sigma": self.sigma,
                "hidden_activation": self.hidden_activation, "last_hidden_bias": self.last_hidden_bias,
                "task": self.task, "seed": self.seed, "size_hidden_fb": self.size_hidden_fb,
                "recurrent_input": self.recurrent_input, "gn_damping": self.gn_damping,
                "only_train_first_layer": self.only_train_first_layer, "dtype": self.dtype_policy.name,
                "name": self.name}


class FeedbackSchedule(keras.callbacks.Callback):
    """The reference's feedback schedule for `fit`: `pretrain_epochs` feedback-only passes before the first
    epoch and `extra_epochs` after every epoch (spec §1.5), on the training data given here.

        model.fit(x, y, epochs=100, batch_size=128,
                  callbacks=[FeedbackSchedule(x, y, pretrain_epochs=6, extra_epochs=1)])

    The mean feedback loss of every pass is appended to `history` and the last one is logged as `rec_loss_extra`
    (put this callback before CSVLogger/TensorBoard in the list: callbacks run in order).
    """

    def __init__(self, x, y, *, pretrain_epochs: int = 0, extra_epochs: int = 0, batch_size: int = 128,
                 seed: int = 0, verbose: bool = False):
        super().__init__()
        self.x, self.y = x, y
        self.pretrain_epochs, self.extra_epochs = int(pretrain_epochs), int(extra_epochs)
        self.batch_size, self.seed, self.verbose = int(batch_size), int(seed), verbose
        self.history: list[float] = []

    def _passes(self, count):
        losses = self.model.train_feedback(self.x, self.y, epochs=count, batch_size=self.batch_size,
                                           seed=self.seed, verbose=self.verbose)
        self.history.extend(losses)
        return losses

    def on_train_begin(self, logs=None):
        if self.pretrain_epochs:
            self._passes(self.pretrain_epochs)

    def on_epoch_end(self, epoch, logs=None):
        if self.extra_epochs:
            losses = self._passes(self.extra_epochs)
            if logs is not None and losses:
                logs["rec_loss_extra"] = losses[-1]
