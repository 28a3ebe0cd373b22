"""Keras layers that carry paired forward and feedback weights.

Row-vector convention (Keras): a batch is a matrix with one sample per row, a forward layer computes
h = s(x W + b) with W of shape (n_in, n_out), and a feedback map computes g(u) = t(u Q + d).

* `TPDense`: one forward layer plus, optionally, the layer-wise feedback map that inverts it. In the paper's
  numbering, the layer that computes h_{ℓ+1} from h_ℓ carries g_ℓ, which maps h_{ℓ+1} back to h_ℓ's space
  (Q_ℓ is stored here as an (n_{ℓ+1}, n_ℓ) matrix). This is how the DTP family is parameterised.
* `DirectFeedback`: the direct maps g_ℓ from the network output to every hidden layer (DDTP family, DFA).
* `TPConv2D`: the paper's CNN's conv block (docs/semantics.md §8), conv → s → max-pool 3×3/2; its activation h_ℓ
  is the pooled map returned flattened (NHWC order, one row per sample), and it reads its input either as NHWC
  images or as such a flattened map, so the MLP's passes, noisy stacks and element-mean losses apply unchanged.

Initialisation follows the reference (docs/semantics.md §6): untruncated Xavier-normal weights drawn from each matrix's
own shape, zero biases. Weights are drawn with NumPy from an explicit seed in float64 and then cast, so the same
seed gives the same network in float32 and float64 and on every platform.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

ACTIVATIONS = {
    "tanh": tf.tanh,
    "elu": tf.nn.elu,
    "relu": tf.nn.relu,
    "linear": lambda a: a,
}


def derivative_from_output(name: str, h):
    """s'(a) read from the output h = s(a): 1 − h² (tanh); 1 where h > 0, else h + 1 = eᵃ (ELU); 1 where h > 0,
    else 0 (ReLU); 1 (linear)."""
    if name == "tanh":
        return 1.0 - tf.square(h)
    if name == "elu":
        return tf.where(h > 0, tf.ones_like(h), h + 1.0)
    if name == "relu":
        return tf.cast(h > 0, h.dtype)
    return tf.ones_like(h)


# FWDTP-BN's batch normalisation (Shibuya et al.'s `utils.batch_normalization`): ε added to the standard deviation.
BATCH_NORM_EPSILON = 1e-12


def batch_normalize(z):
    """(z − mean_b z)/(std_b z + 10⁻¹²) over the rows of the batch, the standard deviation with Bessel's correction
    (`torch.std`), no affine parameters and no running statistics: FW-DTP's authors' batch normalisation
    (docs/semantics.md §7.13). A batch of one row has no standard deviation: NaN, as theirs."""
    rows = tf.cast(tf.shape(z)[0], z.dtype)
    centred = z - tf.reduce_mean(z, axis=0)
    std = tf.sqrt(tf.reduce_sum(tf.square(centred), axis=0) / (rows - 1.0))
    return centred / (std + tf.constant(BATCH_NORM_EPSILON, z.dtype))


class ReplicaShardError(ValueError):
    """A batch-normalised layer called in a replica context of several replicas. Raised inside a layer's call, it
    keeps its one line: Keras adds the call's arguments to an exception unless it carries this marker."""
    _keras_call_info_injected = True


def refuse_several_replicas(who: str) -> None:
    """Batch statistics over one replica's shard are not those of the global batch: a batch-normalised layer
    refuses to run in a replica context of several replicas (at trace time, one line)."""
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        raise ReplicaShardError(f"{who}: batch normalisation over one replica's shard of the batch differs from the "
                         f"one-device batch ({context.num_replicas_in_sync} replicas); train and evaluate it on "
                         "one device (no tf.distribute strategy with several replicas)")


def activation_fn(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


@keras.saving.register_keras_serializable(package="tp_keras")
class XavierNormal(keras.initializers.Initializer):
    """Untruncated N(0, 2/(fan_in + fan_out)) (PyTorch's `xavier_normal_`; Keras' GlorotNormal is truncated)."""

    def __init__(self, seed: int, gain: float = 1.0):
        self.seed = int(seed)
        self.gain = float(gain)

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = shape[-2], shape[-1]
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        std = self.gain * np.sqrt(2.0 / (receptive * (fan_in + fan_out)))
        values = np.random.default_rng(self.seed).standard_normal(shape) * std
        return tf.constant(values, dtype=dtype or "float32")

    def get_config(self):
        return {"seed": self.seed, "gain": self.gain}


@keras.saving.register_keras_serializable(package="tp_keras")
class UniformFanIn(keras.initializers.Initializer):
    """U(−1/√fan_in, +1/√fan_in): PyTorch's default `nn.Linear` init, used by the fixed random layer of DDTP-RHL
    for both its kernel and its bias (docs/semantics.md §6)."""

    def __init__(self, fan_in: int, seed: int):
        self.fan_in = int(fan_in)
        self.seed = int(seed)

    def __call__(self, shape, dtype=None):
        bound = 1.0 / np.sqrt(self.fan_in)
        values = np.random.default_rng(self.seed).uniform(-bound, bound, size=shape)
        return tf.constant(values, dtype=dtype or "float32")

    def get_config(self):
        return {"fan_in": self.fan_in, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tp_keras")
class UniformBound(keras.initializers.Initializer):
    """U(−bound, +bound) from an explicit seed (FW-DTP's fixed feedback: bound 10⁻³)."""

    def __init__(self, bound: float, seed: int):
        self.bound = float(bound)
        self.seed = int(seed)

    def __call__(self, shape, dtype=None):
        values = np.random.default_rng(self.seed).uniform(-self.bound, self.bound, size=shape)
        return tf.constant(values, dtype=dtype or "float32")

    def get_config(self):
        return {"bound": self.bound, "seed": self.seed}


# The forms of a layer-wise feedback map (TPDense's feedback_form): DTP's t(uQ + d), the inverse block s(u)Q + d.
FEEDBACK_FORMS = ("dtp", "inverse_block")
# Initialisers of the layer-wise feedback kernel Q, by name, from the layer's seed.
FEEDBACK_INITIALIZERS = {"xavier": XavierNormal, "uniform_1e-3": lambda seed: UniformBound(1e-3, seed),
                         "uniform_1e-2": lambda seed: UniformBound(1e-2, seed)}  # DTP-BN's authors' trained Q


class PairedWeights:
    """The variable lists of a layer with a forward map (`kernel`, `bias`) and a layer-wise feedback map
    (`feedback_kernel`, `feedback_bias_var`), each None where absent: what the step's tapes and optimizers take."""

    @property
    def forward_variables(self):
        return [v for v in (self.kernel, self.bias) if v is not None]

    @property
    def feedback_variables(self):
        return [v for v in (self.feedback_kernel, self.feedback_bias_var) if v is not None]


@keras.saving.register_keras_serializable(package="tp_keras")
class TPDense(PairedWeights, keras.layers.Layer):
    """Forward map h = s(x W + b), paired with its layer-wise feedback g (x's space ← h's space): g(u) = t(u Q + d)
    (DTP's form), or g(u) = s(u) Q + d (the inverse of the block x ↦ s(xW + b): its activation, then the linear map).

    Args:
      units: output size.
      activation: forward non-linearity s ('tanh', 'elu', 'relu' or 'linear').
      use_bias: whether the forward map has a bias b.
      feedback_activation: t, or None for a layer without feedback weights ('linear' with the inverse-block form).
      feedback_bias: whether g has a bias d.
      feedback_form: 'dtp', g(u) = t(u Q + d); or 'inverse_block', g(u) = s(u) Q + d with s this layer's forward
        activation (L-DRL's authors' feedback; on the linear output layer it is u Q + d).
      feedback_init: 'xavier' (Xavier-normal Q, as the forward kernels) or 'uniform_1e-3' (Q ~ U(±10⁻³), the
        fixed feedback of FW-DTP's reference code).
      feedback_trainable: False freezes Q and d (they still exist and are saved).
      seed: seed of this layer's initialisation (Q uses seed + 1).
      batch_norm: the output batch-normalised, h = BN(s(x W + b)) (`batch_normalize`: FWDTP-BN's forward layers).
      feedback_batch_norm: the feedback map's output batch-normalised, g(u) = BN(t(u Q + d)), and the difference
        target it gives normalised too, ĥ = BN(g(ĥ_up) + h − g(h_up)) (`normalize_target`; FWDTP-BN's feedback).
    """

    def __init__(self, units: int, activation: str = "tanh", use_bias: bool = True,
                 feedback_activation: str | None = None, feedback_bias: bool = True,
                 feedback_trainable: bool = True, seed: int = 0, feedback_init: str = "xavier",
                 feedback_form: str = "dtp", batch_norm: bool = False, feedback_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.feedback_activation = feedback_activation
        self.feedback_bias = bool(feedback_bias)
        self.feedback_trainable = bool(feedback_trainable)
        if feedback_init not in FEEDBACK_INITIALIZERS:
            raise ValueError(f"TPDense: feedback_init={feedback_init!r}; choose one of {sorted(FEEDBACK_INITIALIZERS)}")
        self.feedback_init = feedback_init
        if feedback_form not in FEEDBACK_FORMS:
            raise ValueError(f"TPDense: feedback_form={feedback_form!r}; choose one of {', '.join(FEEDBACK_FORMS)}")
        if feedback_form == "inverse_block" and feedback_activation not in (None, "linear"):
            raise ValueError(f"TPDense: feedback_form='inverse_block' is s(u)Q + d, with no output activation; set "
                             f"feedback_activation='linear', not {feedback_activation!r}")
        self.feedback_form = feedback_form
        self.batch_norm = bool(batch_norm)
        if feedback_batch_norm and not feedback_activation:
            raise ValueError("TPDense: feedback_batch_norm=True normalises the feedback map, and this layer has none; "
                             "give a feedback_activation or drop feedback_batch_norm")
        self.feedback_batch_norm = bool(feedback_batch_norm)
        self.seed = int(seed)
        self._act = activation_fn(activation)
        self._fb_act = activation_fn(feedback_activation) if feedback_activation else None

    def build(self, input_shape):
        n_in = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(n_in, self.units), initializer=XavierNormal(self.seed))
        self.bias = (self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
                     if self.use_bias else None)
        self.feedback_kernel = self.feedback_bias_var = None
        if self.feedback_activation:
            self.feedback_kernel = self.add_weight(
                name="feedback_kernel", shape=(self.units, n_in),
                initializer=FEEDBACK_INITIALIZERS[self.feedback_init](self.seed + 1),
                trainable=self.feedback_trainable)
            if self.feedback_bias:
                self.feedback_bias_var = self.add_weight(
                    name="feedback_bias", shape=(n_in,), initializer="zeros", trainable=self.feedback_trainable)

    def call(self, x):
        a = tf.matmul(x, self.kernel)
        if self.bias is not None:
            a = a + self.bias
        if self.batch_norm:
            refuse_several_replicas(f"TPDense {self.name!r}")
            return batch_normalize(self._act(a))
        return self._act(a)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units,)

    def activation_derivative(self, h):
        """s'(a) from the output h = s(a); a batch-normalised output h = BN(s(a)) does not give it (one line)."""
        if self.batch_norm:
            raise ValueError(f"TPDense {self.name!r}: its output is batch-normalised, h = BN(s(a)), so s'(a) cannot "
                             "be read from h and the per-sample Jacobians (GNT targets, angles, nullspace) do not "
                             "exist: the batch statistics couple the samples; use a rule without batch_norm")
        return derivative_from_output(self.activation, h)

    def feedback(self, u, constant: bool = False):
        """g(u) = t(u Q + d), or s(u) Q + d in the inverse-block form: maps this layer's output space back to its
        input space.

        constant=True reads Q and d as constants for gradients: rows whose loss does not train this map skip
        the backward matmul."""
        kernel, bias = self.feedback_kernel, self.feedback_bias_var
        if constant:
            kernel = tf.stop_gradient(kernel)
            bias = None if bias is None else tf.stop_gradient(bias)
        if self.feedback_form == "inverse_block":
            u = self._act(u)
        a = tf.matmul(u, kernel)
        if bias is not None:
            a = a + bias
        if self.feedback_batch_norm:  # over the rows of u: ĥ's rows for a target, h's for the clean term
            refuse_several_replicas(f"TPDense {self.name!r}")
            return batch_normalize(self._fb_act(a))
        return self._fb_act(a)

    def normalize_target(self, target):
        """The difference target g(ĥ_up) + h − g(h_up) this layer's feedback gives, batch-normalised where the
        feedback is (FWDTP-BN's `difference` function with `linear-BN`), else as it is."""
        return batch_normalize(target) if self.feedback_batch_norm else target

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                      feedback_activation=self.feedback_activation, feedback_bias=self.feedback_bias,
                      feedback_trainable=self.feedback_trainable, seed=self.seed)
        if self.feedback_init != "xavier":  # configs of layers saved before the option stay as they were
            config["feedback_init"] = self.feedback_init
        if self.feedback_form != "dtp":  # likewise
            config["feedback_form"] = self.feedback_form
        for key in ("batch_norm", "feedback_batch_norm"):  # likewise
            if getattr(self, key):
                config[key] = True
        return config


@keras.saving.register_keras_serializable(package="tp_keras")
class DirectFeedback(keras.layers.Layer):
    """Direct feedback from the output to every hidden layer: g_ℓ(u) = t(u Q_ℓ + d_ℓ), Q_ℓ of shape (n_L, n_ℓ).

    With `random_layer_size` = n_fb (DDTP-RHL, docs/semantics.md §7.7), the maps of hidden layers 1..L−2 read a fixed
    random hidden layer z(u) = tanh(u R + r) instead of u (R: (n_L, n_fb), R and r ~ U(±1/√n_L), never trained):
    g_ℓ(u) = t(z(u) Q_ℓ + d_ℓ); with `recurrent`, their input is [z(u), h_ℓ] (the layer's own clean activation).
    The last hidden layer bypasses the random layer: g_{L−1}(u) = t(u Q_{L−1} + d_{L−1}).

    Args:
      hidden_units: n_1..n_{L−1}, one map per hidden layer.
      activation: t ('linear' for DDTP-linear and DFA, 'tanh' for DDTP-RHL).
      use_bias: one flag per hidden layer (the reference's DDTP-linear has no d on the last hidden layer).
      trainable: False freezes every map (DFA).
      seed: seed of the initialisation (map ℓ uses seed + ℓ, the random layer seed + 100).
      random_layer_size: n_fb of the fixed random hidden layer, or None for maps straight from the output.
      recurrent: feed each layer's own activation into its map too (DDTP-RHL's `recurrent_input`).
    """

    def __init__(self, hidden_units: Sequence[int], activation: str = "linear",
                 use_bias: Sequence[bool] | None = None, trainable: bool = True, seed: int = 0,
                 random_layer_size: int | None = None, recurrent: bool = False, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.hidden_units = [int(n) for n in hidden_units]
        self.activation = activation
        self.use_bias = [True] * len(self.hidden_units) if use_bias is None else [bool(b) for b in use_bias]
        if len(self.use_bias) != len(self.hidden_units):
            raise ValueError("DirectFeedback: use_bias needs one flag per hidden layer")
        self.seed = int(seed)
        self.random_layer_size = int(random_layer_size) if random_layer_size else None
        if recurrent and not self.random_layer_size:
            raise ValueError("DirectFeedback: recurrent input exists only with a random hidden layer")
        self.recurrent = bool(recurrent)
        self._act = activation_fn(activation)

    def _through_random_layer(self, index: int) -> bool:
        return self.random_layer_size is not None and index < len(self.hidden_units) - 1

    def build(self, input_shape):
        n_out = int(input_shape[-1])
        self.random_kernel = self.random_bias = None
        if self.random_layer_size:
            self.random_kernel = self.add_weight(
                name="random_kernel", shape=(n_out, self.random_layer_size),
                initializer=UniformFanIn(n_out, self.seed + 100), trainable=False)
            self.random_bias = self.add_weight(
                name="random_bias", shape=(self.random_layer_size,), initializer=UniformFanIn(n_out, self.seed + 101),
                trainable=False)

        def fan_in(i, n):
            if not self._through_random_layer(i):
                return n_out
            return self.random_layer_size + (n if self.recurrent else 0)

        self.kernels = [
            self.add_weight(name=f"kernel_{i + 1}", shape=(fan_in(i, n), n), initializer=XavierNormal(self.seed + i))
            for i, n in enumerate(self.hidden_units)]
        self.biases = [
            self.add_weight(name=f"bias_{i + 1}", shape=(n,), initializer="zeros") if has_bias else None
            for i, (n, has_bias) in enumerate(zip(self.hidden_units, self.use_bias))]

    def random_features(self, u):
        """z(u) = tanh(u R + r), the fixed random hidden layer."""
        return tf.tanh(tf.matmul(u, self.random_kernel) + self.random_bias)

    def call(self, u, hidden=None):
        """Returns [g_1(u), ..., g_{L−1}(u)]; `hidden` = [h_1..h_{L−1}] is needed with recurrent input."""
        if self.random_layer_size is None:
            # All maps read u: one matmul against the concatenated Q's.
            kernel = tf.concat(self.kernels, axis=1) if len(self.kernels) > 1 else self.kernels[0]
            parts = tf.split(tf.matmul(u, kernel), self.hidden_units, axis=1)
            return [self._act(p + b) if b is not None else self._act(p) for p, b in zip(parts, self.biases)]
        z = self.random_features(u)  # shared by every map that reads it
        return [self._map(i, z if self._through_random_layer(i) else u, hidden[i] if hidden else None)
                for i in range(len(self.hidden_units))]

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape)[:-1] + (n,) for n in self.hidden_units]

    def feedback(self, index: int, u, hidden=None):
        """g_ℓ(u) for the hidden layer with 0-based index `index` alone (`hidden`: its activation h_ℓ)."""
        x = self.random_features(u) if self._through_random_layer(index) else u
        return self._map(index, x, hidden)

    def _map(self, index, x, hidden):
        if self.recurrent and self._through_random_layer(index):
            if hidden is None:
                raise ValueError("DirectFeedback: recurrent input needs the hidden activations")
            x = tf.concat([x, hidden], axis=-1)
        a = tf.matmul(x, self.kernels[index])
        if self.biases[index] is not None:
            a = a + self.biases[index]
        return self._act(a)

    @property
    def feedback_variables(self):
        """The trainable maps (the random layer R, r is fixed and excluded)."""
        return self.kernels + [b for b in self.biases if b is not None]

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units, activation=self.activation, use_bias=self.use_bias,
                      seed=self.seed, random_layer_size=self.random_layer_size, recurrent=self.recurrent)
        return config


def max_pool_3x3_s2(x):
    """PyTorch's MaxPool2d(3, stride=2, padding=1) on NHWC maps: one row and column of −∞ on **both** sides, then
    3×3 windows with stride 2 (out = ⌊(n − 1)/2⌋ + 1). Keras/TF 'same' pads 0 before and 1 after for even sizes,
    which shifts every window by one pixel (docs/semantics.md §8.1)."""
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-np.inf)
    return tf.nn.max_pool2d(padded, ksize=3, strides=2, padding="VALID")


def pooled_size(n: int) -> int:
    return (int(n) - 1) // 2 + 1


@keras.saving.register_keras_serializable(package="tp_keras")
class TPConv2D(PairedWeights, keras.layers.Layer):
    """conv k×k (stride 1, zero padding k//2) → s → max-pool 3×3/2 (−∞ padding); h = the pooled map, flattened.

    Args:
      filters: output channels.
      image_shape: (H, W, C_in) of the input map. The input may come as NHWC images or flattened (NHWC order).
      kernel_size: odd k (5 in the paper).
      activation: s ('tanh').
      use_bias: forward bias per channel.
      seed: seed of the kernel's Xavier-normal init (fans C_in·k² and C_out·k², docs/semantics.md §6).
    """

    def __init__(self, filters: int, image_shape: Sequence[int], kernel_size: int = 5, activation: str = "tanh",
                 use_bias: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"TPConv2D: image_shape must be (H, W, C), got {self.image_shape}")
        self.kernel_size = int(kernel_size)
        if self.kernel_size % 2 != 1:
            raise ValueError("TPConv2D: the kernel size must be odd (zero padding k//2 keeps the size)")
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.seed = int(seed)
        self._act = activation_fn(activation)
        height, width, _ = self.image_shape
        self.output_image_shape = (pooled_size(height), pooled_size(width), self.filters)
        self.units = int(np.prod(self.output_image_shape))  # size of the flattened pooled map
        # No layer-wise feedback (the CNN methods use direct feedback); the attributes exist for generic code.
        self.feedback_kernel = self.feedback_bias_var = None

    def build(self, input_shape=None):
        k, channels = self.kernel_size, self.image_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(k, k, channels, self.filters),
                                      initializer=XavierNormal(self.seed))
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
                     if self.use_bias else None)

    def pre_activation(self, x):
        """a = conv(x) + b, an NHWC map of the input's height and width."""
        x = tf.reshape(x, (-1,) + self.image_shape)
        p = self.kernel_size // 2
        a = tf.nn.conv2d(x, self.kernel, strides=1, padding=[[0, 0], [p, p], [p, p], [0, 0]])
        if self.bias is not None:
            a = a + self.bias
        return a

    def call(self, x):
        pooled = max_pool_3x3_s2(self._act(self.pre_activation(x)))
        return tf.reshape(pooled, [-1, self.units])

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, image_shape=list(self.image_shape), kernel_size=self.kernel_size,
                      activation=self.activation, use_bias=self.use_bias, seed=self.seed)
        return config
