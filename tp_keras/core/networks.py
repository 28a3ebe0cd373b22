"""Networks: the parameters and their forward and feedback maps, nothing else (no rule, optimizer or training state).

A network is built for the feedback maps a learning rule needs (`LearningRule.feedback`, `feedback_activation`,
...) and offers what the step and the rule's components read: `tp_layers` (forward layer ℓ with its layer-wise
feedback map g_ℓ, if any), `direct_feedback` (the maps from the output to every hidden layer, or None),
`activations(x, detach_inputs)`, `local_loss_scales` and `build`. `TPModel(rule, network=...)` trains one; the
MLP (`MLPNetwork`, what `TPModel(method, input_size, hidden_sizes, ...)` builds) and the paper's CNN
(`CNNNetwork`, the Table 3 network of docs/semantics.md §8, which `cnn.CNNModel` builds) live here.

The layers are plain Keras layers that the model tracks under its own attributes (`model.tp_layers`,
`model.direct_feedback`), so the weights' paths and a `.keras` file's layout are those of the model.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tp_keras.core import keras_checks as C
from tp_keras.core.layers import ACTIVATIONS, DirectFeedback, TPConv2D, TPDense
from tp_keras.core.rules import LearningRule
from tp_keras.reference.facts import CNN_METHODS  # the methods with a CNN: BPConvCIFAR, DDTPConvCIFAR, ...


def feedback_structure(rule: LearningRule) -> tuple:
    """What a rule asks of the network's feedback maps (rules that agree here can share one network)."""
    return (rule.feedback, rule.feedback_activation, rule.feedback_bias, rule.feedback_init, rule.feedback_trained,
            rule.last_hidden_bias, rule.feedback_form, rule.forward_bias, rule.batch_norm, rule.output_batch_norm)


class Network:
    """What every network offers; subclasses create `tp_layers` and `direct_feedback` in their constructor and
    record `structure`, the `feedback_structure` of the rule they were built for."""

    tp_layers: list
    direct_feedback: DirectFeedback | None
    input_shape: tuple  # one sample's shape: (n_0,) for the MLP, (H, W, C) for the CNN
    structure: tuple
    output_size: int
    dtype: str

    @property
    def hidden_sizes(self) -> list[int]:
        """n_1..n_{L−1}: the flattened width of every hidden layer."""
        return [layer.units for layer in self.tp_layers[:-1]]

    @property
    def input_size(self) -> int:
        size = 1
        for d in self.input_shape:
            size *= int(d)
        return size

    def build(self, input_shape):
        """Builds every layer: the first from `input_shape` (batch axis first), the next from the previous width."""
        shape = tuple(input_shape)
        for layer in self.tp_layers:
            layer.build(shape)
            shape = (shape[0], layer.units)
        if self.direct_feedback is not None:
            self.direct_feedback.build((None, self.output_size))

    def activations(self, x, detach_inputs: bool = False):
        """[h_0 = x, h_1, ..., h_L]. With `detach_inputs`, every layer's input is a constant for gradients, so a
        tape over this pass gives each layer's local gradient alone."""
        hs = [tf.cast(x, self.dtype)]
        for layer in self.tp_layers:
            inp = tf.stop_gradient(hs[-1]) if detach_inputs else hs[-1]
            hs.append(layer(inp))
        return hs

    @property
    def local_loss_scales(self) -> list[float]:
        """Per layer, the factor on its local loss (1/B)·Σ‖h_ℓ − ĥ_ℓ‖²: 1 for dense layers (docs/semantics.md
        §2.2); the CNN's conv layers take the element mean, 1/n_ℓ (docs/semantics.md §8.4)."""
        return [1.0] * len(self.tp_layers)

    def attributes(self) -> dict:
        """What a model shows as its own attributes (its architecture, as before networks were split off)."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """The constructor's arguments besides the rule and dtype (which the model saves)."""
        raise NotImplementedError


# Network classes by name, for a saved TPModel's "network" entry (each class below registers itself).
NETWORKS = {}


def register_network(cls):
    NETWORKS[cls.__name__] = cls
    return cls


def serialize_network(network: Network) -> dict:
    return {"class_name": type(network).__name__, "config": network.get_config()}


def deserialize_network(config: dict, rule: LearningRule, dtype: str) -> Network:
    """The network of a saved TPModel's "network" entry, built for `rule` in `dtype`."""
    name = config.get("class_name")
    if name not in NETWORKS:
        raise ValueError(f"TPModel: unknown network {name!r}; known: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name](rule, **config["config"], dtype=dtype)


@register_network
class MLPNetwork(Network):
    """Dense layers n_0 → n_1 … n_{L−1} (hidden activation) → n_L (linear), with the feedback maps `rule` needs:
    a layer-wise g_ℓ on every layer but the first (DTP, DRL, vanilla TP, L-DRL, FW-DTP), or direct maps from the
    output (DDTP, DFA; DDTP-RHL through a fixed random layer of `size_hidden_fb` units), or none (BP, GNT). The
    layer-wise maps take the rule's `feedback_form` (DTP's t(uQ + d), or L-DRL's authors' s(u)Q + d); a rule
    without `forward_bias` (FW-DTP) builds every forward layer without a bias; one with `batch_norm` (FWDTP-BN)
    batch-normalises the hidden layers' outputs (and the logits with `output_batch_norm`) and every feedback map.

    The arguments are TPModel's of the same names (checked with its one-line messages)."""

    def __init__(self, rule: LearningRule, input_size: int = 784, hidden_sizes: Sequence[int] = (256,) * 5,
                 output_size: int = 10, *, hidden_activation: str = "tanh", last_hidden_bias: bool | None = None,
                 size_hidden_fb: int = 1024, recurrent_input: bool = False, seed: int = 42, dtype: str = "float32"):
        m = rule
        self.dtype, self.structure = dtype, feedback_structure(rule)
        self.input_shape = (C.whole("input_size", input_size, 1),)
        if isinstance(hidden_sizes, (str, bytes)) or not isinstance(hidden_sizes, Sequence) or not hidden_sizes:
            raise ValueError(f"TPModel: hidden_sizes={hidden_sizes!r} must be a non-empty list of layer sizes "
                             "(TPModel needs at least one hidden layer), e.g. [256, 256]")
        hidden = [C.whole("hidden_sizes", n, 1) for n in hidden_sizes]
        self.output_size = C.whole("output_size", output_size, 1)
        if hidden_activation not in ACTIVATIONS:
            raise ValueError(f"TPModel: hidden_activation={hidden_activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.hidden_activation = hidden_activation
        if not m.forward_bias and last_hidden_bias:
            raise ValueError(f"TPModel: last_hidden_bias=True, but rule {m.name!r} has no forward biases "
                             "(forward_bias=False); drop the argument")
        self.last_hidden_bias = (m.last_hidden_bias and m.forward_bias) if last_hidden_bias is None \
            else bool(last_hidden_bias)
        self.seed = seed
        self.size_hidden_fb = C.whole("size_hidden_fb", size_hidden_fb, 1)
        self.recurrent_input = bool(recurrent_input)

        sizes = hidden + [self.output_size]
        layerwise_fb = m.feedback_activation if m.feedback == "layerwise" else None
        self.tp_layers = [
            TPDense(n, activation="linear" if i == len(sizes) - 1 else hidden_activation,
                    use_bias=m.forward_bias and (self.last_hidden_bias or i != len(sizes) - 2),
                    # Layer 1 would carry g_0 (to the input), which no method uses.
                    feedback_activation=layerwise_fb if i > 0 else None, feedback_bias=m.feedback_bias,
                    feedback_init=m.feedback_init, feedback_form=m.feedback_form,
                    feedback_trainable=m.feedback_trained, seed=seed * 1009 + 2 * i,
                    # FWDTP-BN: BN on the hidden outputs (and the logits with output_batch_norm), every feedback map
                    batch_norm=m.batch_norm and (i != len(sizes) - 1 or m.output_batch_norm),
                    feedback_batch_norm=m.batch_norm and i > 0, dtype=dtype, name=f"layer_{i + 1}")
            for i, n in enumerate(sizes)]
        self.direct_feedback = None
        if m.direct:
            rhl = m.feedback == "direct_rhl"
            self.direct_feedback = DirectFeedback(
                hidden, activation=m.feedback_activation, use_bias=[True] * (len(hidden) - 1) + [self.last_hidden_bias],
                trainable=m.feedback_trained, seed=seed * 1009 + 500,
                random_layer_size=self.size_hidden_fb if rhl else None,
                recurrent=self.recurrent_input and rhl, dtype=dtype, name="direct_feedback")

    def attributes(self) -> dict:
        return {"input_size": self.input_size, "hidden_sizes": self.hidden_sizes, "output_size": self.output_size,
                "hidden_activation": self.hidden_activation, "last_hidden_bias": self.last_hidden_bias,
                "size_hidden_fb": self.size_hidden_fb, "recurrent_input": self.recurrent_input}

    def get_config(self) -> dict:
        return {**self.attributes(), "seed": self.seed}


def _check_cnn_method(method: LearningRule) -> None:
    supported = (method.feedback == "none" and method.target_rule == "backprop") or (
        method.feedback == "direct" and method.target_rule == "difference"
        and method.feedback_loss in ("drl", "control", "none") and method.feedback_activation == "linear")
    supported = supported and method.forward_bias  # the CNN's layers all have a bias
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
        self.output_size = C.whole("output_size", output_size, 1)
        self.kernel_size = int(kernel_size)
        self.hidden_activation = hidden_activation
        self.seed = seed = C.whole("seed", seed, 0, C.MAX_SEED)
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
