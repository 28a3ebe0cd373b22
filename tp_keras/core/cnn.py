"""The CNN of Table 3 (docs/semantics.md §8) for BP, DDTP-linear, DDTP-control and DFA, on the one train step.

Architecture (paper sizes, all parameters of `CNNNetwork` and `CNNModel`):

    conv 5×5, 32 (stride 1, zero padding 2) → tanh → max-pool 3×3 / 2 (padding 1 of −∞)   layer 1: 16×16×32
    conv 5×5, 64                            → tanh → max-pool 3×3 / 2                      layer 2:  8×8×64
    flatten → dense 512, tanh                                                             layer 3
    dense 10, linear (logits)                                                             layer 4

How it rides on `tp_keras.step` unchanged:

* A conv layer (`TPConv2D`) is conv → tanh → pool, and its activation h_ℓ is the **pooled** map, returned
  flattened (NHWC order, one row per sample). It reads its input either as NHWC images or as such a flattened
  map, so `model.activations(x, detach_inputs)`, the stacked noisy passes of the DRL loss
  (`losses.noisy_forward_stack`, which applies layer k to rows of flattened maps) and the element-mean feedback
  losses (`losses.element_mean_square`, mean over B × units) work on the CNN as they do on the MLP.
* The direct feedback from the output to each hidden layer is the MLP's `layers.DirectFeedback`: a linear map
  Q_ℓ from the 10 logits to the layer's flattened pooled map (i.e. Q_ℓ reshaped onto the pooled map), **without
  bias for the conv layers** and with a bias for the dense hidden layer, as the reference's DDTPConvLayer and
  DDTPMLPLayer. Targets ĥ_ℓ = Q_ℓĥ_L + h_ℓ − Q_ℓh_L (`targets.direct_targets`); DRL and control losses are
  `losses.direct_drl` / `losses.direct_control` on the pooled maps. Xavier-normal from each Q's own shape.
* Local losses (`CNNNetwork.local_loss_scales`, read by `step.compute_updates` through the model): the conv layers use the **element
  mean** (1/(B·C·H·W))·Σ‖h_ℓ − ĥ_ℓ‖² (PyTorch `mse_loss` in the reference), the dense layers the docs/semantics.md §2.2
  loss (1/B)·Σ‖h_ℓ − ĥ_ℓ‖². Each is differentiated with the layer's input detached, so the conv gradient flows through
  the layer's own pool, tanh and conv only.
* One forward optimizer per layer (the reference's list-valued `lr` / `epsilon`, docs/semantics.md §4.5):
  `LayerwiseOptimizer` puts one optimizer per layer behind the single-optimizer interface the step, `step.Trainer` and
  the checkpoints use (`build`, `apply_gradients`, `variables`); `layerwise_adam` builds it from per-layer lr and ε.

Every forward bias exists (the MLP DDTP-linear quirk of a bias-less last hidden layer is not in the reference's
CNNs). BP is the same forward network trained by the gradient of the loss.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tp_keras.core.keras_checks import MAX_SEED, model_precision, whole
from tp_keras.core.layers import DirectFeedback, TPDense, XavierNormal, activation_fn
from tp_keras.core.model import TPModel
from tp_keras.core.networks import Network, feedback_structure, register_network
from tp_keras.core.optimizers import LayerwiseOptimizer, TorchAdam  # noqa: F401 (LayerwiseOptimizer's first home)
from tp_keras.core.rules import LearningRule, get_rule
from tp_keras.reference.facts import CNN_METHODS  # the methods with a CNN: BPConvCIFAR, DDTPConvCIFAR, ...


def max_pool_3x3_s2(x):
    """PyTorch's MaxPool2d(3, stride=2, padding=1) on NHWC maps: one row and column of −∞ on **both** sides, then
    3×3 windows with stride 2 (out = ⌊(n − 1)/2⌋ + 1). Keras/TF 'same' pads 0 before and 1 after for even sizes,
    which shifts every window by one pixel (docs/semantics.md §8.1)."""
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-np.inf)
    return tf.nn.max_pool2d(padded, ksize=3, strides=2, padding="VALID")


def pooled_size(n: int) -> int:
    return (int(n) - 1) // 2 + 1


@keras.saving.register_keras_serializable(package="tp_keras")
class TPConv2D(keras.layers.Layer):
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

    @property
    def forward_variables(self):
        return [v for v in (self.kernel, self.bias) if v is not None]

    @property
    def feedback_variables(self):
        return []

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, image_shape=list(self.image_shape), kernel_size=self.kernel_size,
                      activation=self.activation, use_bias=self.use_bias, seed=self.seed)
        return config


def _check_cnn_method(method: LearningRule) -> None:
    supported = (method.feedback == "none" and method.target_rule == "backprop") or (
        method.feedback == "direct" and method.target_rule == "difference"
        and method.feedback_loss in ("drl", "control", "none") and method.feedback_activation == "linear")
    if not supported:
        raise ValueError(f"method {method.name!r} has no CNN; the CNN supports {', '.join(CNN_METHODS)} "
                         "(backprop, or linear direct feedback with the DRL or control loss)")


@register_network
class CNNNetwork(Network):
    """The Table 3 CNN's parameters and maps (docs/semantics.md §8) for a rule: 'bp', 'ddtp_linear',
    'ddtp_control' or 'dfa' (BP, or linear direct feedback with the DRL/control loss).

    Input: NHWC images of `image_shape` (or the same flattened in NHWC order). Hidden activations h_1, h_2 are
    the flattened pooled maps. Train it with `TPModel(rule, network=CNNNetwork(rule, ...))`, or `CNNModel(...)`.

    Args:
      rule: the learning rule it is built for (its feedback maps).
      image_shape: (H, W, C) of the input ((32, 32, 3) for CIFAR-10).
      conv_channels: output channels of the conv blocks ((32, 64)).
      fc_units: sizes of the dense tanh hidden layers after the flatten ((512,)).
      output_size: number of logits.
      kernel_size: conv kernel size (5).
      hidden_activation, seed, dtype: as for `TPModel`.
    """

    def __init__(self, rule: LearningRule, image_shape: Sequence[int] = (32, 32, 3),
                 conv_channels: Sequence[int] = (32, 64), fc_units: Sequence[int] = (512,), output_size: int = 10,
                 *, kernel_size: int = 5, hidden_activation: str = "tanh", seed: int = 42, dtype: str = "float32"):
        _check_cnn_method(rule)
        self.dtype, self.structure = dtype, feedback_structure(rule)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.input_shape = self.image_shape
        self.conv_channels = [int(c) for c in conv_channels]
        self.fc_units = [int(n) for n in fc_units]
        self.output_size = whole("output_size", output_size, 1)
        self.kernel_size = int(kernel_size)
        self.hidden_activation = hidden_activation
        self.seed = seed = whole("seed", seed, 0, MAX_SEED)
        if not self.conv_channels:
            raise ValueError("CNNNetwork needs at least one conv layer (conv_channels)")

        layers = []
        shape = self.image_shape
        for i, channels in enumerate(self.conv_channels):
            layer = TPConv2D(channels, shape, kernel_size=self.kernel_size, activation=hidden_activation,
                             seed=seed * 1009 + 2 * i, dtype=dtype, name=f"layer_{i + 1}")
            layers.append(layer)
            shape = layer.output_image_shape
        sizes = self.fc_units + [self.output_size]
        for j, n in enumerate(sizes):
            i = len(self.conv_channels) + j
            layers.append(TPDense(n, activation="linear" if j == len(sizes) - 1 else hidden_activation,
                                  use_bias=True, feedback_activation=None, seed=seed * 1009 + 2 * i,
                                  dtype=dtype, name=f"layer_{i + 1}"))
        self.tp_layers = layers
        self.direct_feedback = None
        if rule.direct:
            # Q_ℓ: logits → flattened pooled map; no bias on the conv layers' maps (reference DDTPConvLayer).
            self.direct_feedback = DirectFeedback(
                self.hidden_sizes, activation=rule.feedback_activation,
                use_bias=[False] * len(self.conv_channels) + [True] * len(self.fc_units),
                trainable=rule.feedback_trained, seed=seed * 1009 + 500, dtype=dtype, name="direct_feedback")

    @property
    def conv_layers(self) -> list:
        return [layer for layer in self.tp_layers if isinstance(layer, TPConv2D)]

    @property
    def local_loss_scales(self) -> list[float]:
        """1/(C·H·W) for the conv layers (element mean of the pooled map), 1 for the dense layers
        (docs/semantics.md §8.4)."""
        return [1.0 / layer.units if isinstance(layer, TPConv2D) else 1.0 for layer in self.tp_layers]

    def attributes(self) -> dict:
        return {"image_shape": self.image_shape, "conv_channels": self.conv_channels, "fc_units": self.fc_units,
                "output_size": self.output_size, "kernel_size": self.kernel_size,
                "hidden_activation": self.hidden_activation, "hidden_sizes": self.hidden_sizes,
                "input_size": self.input_size}

    def get_config(self) -> dict:
        return {"image_shape": list(self.image_shape), "conv_channels": list(self.conv_channels),
                "fc_units": list(self.fc_units), "output_size": self.output_size, "kernel_size": self.kernel_size,
                "hidden_activation": self.hidden_activation, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tp_keras")
class CNNModel(TPModel):
    """`TPModel(method, network=CNNNetwork(method, ...))` under its first name: the Table 3 CNN set up for one
    method, 'bp', 'ddtp_linear', 'ddtp_control' or 'dfa'. The class adds no behaviour (the network holds the
    layers and their maps); it keeps the constructor, `isinstance` checks and `.keras` files of earlier versions.

    Args: `CNNNetwork`'s (image_shape, conv_channels, fc_units, output_size, kernel_size, hidden_activation, seed,
    dtype) and `TPModel`'s target_stepsize and sigma.

    Per-layer learning rates and ε: train with `step.Trainer(model, layerwise_adam(model, lrs, ..., epsilons))`.
    `compile(forward_optimizer=...)` / `fit` take one forward optimizer (the same one for every layer).
    """

    def __init__(self, method: str | LearningRule = "ddtp_linear", image_shape: Sequence[int] = (32, 32, 3),
                 conv_channels: Sequence[int] = (32, 64), fc_units: Sequence[int] = (512,), output_size: int = 10,
                 *, kernel_size: int = 5, target_stepsize: float = 0.01, sigma: float = 0.08,
                 hidden_activation: str = "tanh", seed: int = 42, dtype: str | None = None, **kwargs):
        rule = get_rule(method)
        network = CNNNetwork(rule, image_shape, conv_channels, fc_units, output_size, kernel_size=kernel_size,
                             hidden_activation=hidden_activation, seed=seed, dtype=model_precision(dtype))
        super().__init__(rule, target_stepsize=target_stepsize, sigma=sigma, seed=seed, network=network,
                         dtype=dtype, **kwargs)

    @property
    def conv_layers(self) -> list:
        return self.network.conv_layers

    def get_config(self):
        method = self._saved_method()
        network = self.network.get_config()
        return {"method": method, **{k: network[k] for k in ("image_shape", "conv_channels", "fc_units", "output_size",
                                                             "kernel_size")},
                "target_stepsize": self.target_stepsize, "sigma": self.sigma,
                "hidden_activation": network["hidden_activation"], "seed": self.seed, "dtype": self.dtype_policy.name,
                "name": self.name, **self._saved_state()}


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
