"""`ConvChainNetwork`: a chain of conv blocks, then dense layers, as a TP network for BP, the layer-wise feedback
rules and the direct feedback rules.

    net = ConvChainNetwork(rule, (32, 32, 3), [
        {"filters": 128, "kernel_size": 3, "activation": "elu", "pooling": "max"},
        {"filters": 256, "kernel_size": 3, "activation": "elu", "pooling": "max"},
        {"units": 10}])                                   # flatten, then the linear output layer
    model = TPModel(rule, network=net)

Each conv block (`conv_layers.TPConvBlock`: conv k×k, stride 1, 'same' → s → pool none / max 2×2 / average 2×2)
is one layer ℓ whose activation h_ℓ is its (pooled) map flattened in NHWC order; the dense layers (`TPDense`) read
the flattened map; the last layer is linear (the logits). The feedback maps follow the rule:

* layer-wise rules ('dtp', 'tp', 'dtpdrl', 'ldrl', 'fw_dtp'): every layer but the first carries g_ℓ, the conv
  blocks the inverse block of the module conv_layers (unpooling at the forward pass's argmax → transposed conv),
  in the rule's `feedback_form` ('dtp': the rule's feedback activation on the output; 'inverse_block': the
  block's forward activation on the map's input, Ernoult et al.'s inverse);
* direct rules ('ddtp_linear', 'ddtp_control', 'dfa'): `DirectFeedback` from the output to every hidden layer's
  flattened map, without bias for the conv layers (as `CNNNetwork`, the reference's DDTPConvLayer);
* 'bp': no feedback.
Gauss-Newton targets (dense Jacobians) and DDTP-RHL's random feedback layer are refused at construction.

Local losses: (1/B)·Σ‖h_ℓ − ĥ_ℓ‖² on every layer (`conv_loss='sum'`, the per-sample sum of Ernoult et al.'s
code), or the element mean 1/(B·n_ℓ)·Σ‖h_ℓ − ĥ_ℓ‖² on the conv layers (`conv_loss='mean'`, the 2020 reference's
CNN, `CNNNetwork`).
"""
from __future__ import annotations

from typing import Sequence

from tp_keras.core import keras_checks as C
from tp_keras.core.conv_layers import KERNEL_SIZES, POOLINGS, TPConvBlock
from tp_keras.core.layers import ACTIVATIONS, DirectFeedback, TPDense, UniformFanIn
from tp_keras.core.networks import Network, feedback_structure, register_network
from tp_keras.core.rules import LearningRule

CONV_KEYS = {"filters", "kernel_size", "activation", "pooling", "use_bias"}
DENSE_KEYS = {"units", "activation", "use_bias"}
CONV_LOSSES = ("sum", "mean")
INITS = ("xavier", "torch")
TORCH_BIAS_SEED = 100_003  # offset of a bias's seed from its kernel's under init='torch'
# The feedback losses each feedback path supports on conv blocks.
LAYERWISE_LOSSES = ("reconstruction", "drl", "ldrl", "ldrl_as_written", "none")
DIRECT_LOSSES = ("drl", "control", "none")


def check_rule(rule: LearningRule) -> None:
    """Refuses, in one line, a rule whose feedback maps or targets a conv chain cannot have."""
    if rule.batch_dependent:
        raise ValueError(f"ConvChainNetwork: rule {rule.name!r} batch-normalises its layers, which is built for the "
                         "MLP only (the authors' FWDTP-BN is an MLP); use an MLP (TPModel without network=) or "
                         "'fw_dtp'")
    if rule.target_rule == "gnt":
        raise ValueError(f"ConvChainNetwork: rule {rule.name!r} uses Gauss-Newton targets, which need dense "
                         "layers' Jacobians; use an MLP (TPModel without network=) or another rule")
    if rule.feedback == "direct_rhl":
        raise ValueError(f"ConvChainNetwork: rule {rule.name!r} feeds back through a random hidden layer, which "
                         "has no conv version; use 'ddtp_linear' or 'ddtp_control'")
    allowed = {"none": ("none",), "layerwise": LAYERWISE_LOSSES, "direct": DIRECT_LOSSES}[rule.feedback]
    if rule.feedback_loss not in allowed:
        raise ValueError(f"ConvChainNetwork: rule {rule.name!r} trains its {rule.feedback} feedback with "
                         f"{rule.feedback_loss!r}, which conv blocks do not support; supported: {', '.join(allowed)}")


def _spec(i: int, spec: dict, conv_seen_dense: bool) -> dict:
    if not isinstance(spec, dict):
        raise ValueError(f"ConvChainNetwork: layer {i + 1} spec {spec!r} must be a dict, e.g. {{'filters': 8}} "
                         "or {'units': 10}")
    if "filters" in spec:
        unknown = set(spec) - CONV_KEYS
        if conv_seen_dense:
            raise ValueError(f"ConvChainNetwork: conv layer {i + 1} follows a dense layer; conv blocks come first")
        out = {"filters": C.whole(f"layer {i + 1} filters", spec["filters"], 1),
               "kernel_size": spec.get("kernel_size", 3), "activation": spec.get("activation", "elu"),
               "pooling": spec.get("pooling", "max"), "use_bias": bool(spec.get("use_bias", True))}
        if out["kernel_size"] not in KERNEL_SIZES:
            raise ValueError(f"ConvChainNetwork: layer {i + 1} kernel_size={out['kernel_size']!r}; choose one of "
                             f"{KERNEL_SIZES}")
        if out["pooling"] not in POOLINGS:
            raise ValueError(f"ConvChainNetwork: layer {i + 1} pooling={out['pooling']!r}; choose one of {POOLINGS}")
    elif "units" in spec:
        unknown = set(spec) - DENSE_KEYS
        out = {"units": C.whole(f"layer {i + 1} units", spec["units"], 1),
               "activation": spec.get("activation", "elu"), "use_bias": bool(spec.get("use_bias", True))}
    else:
        raise ValueError(f"ConvChainNetwork: layer {i + 1} spec {spec!r} needs 'filters' (a conv block) or 'units' "
                         "(a dense layer)")
    if unknown:
        raise ValueError(f"ConvChainNetwork: layer {i + 1} spec has unknown key(s) {sorted(unknown)}; a conv block "
                         f"takes {sorted(CONV_KEYS)}, a dense layer {sorted(DENSE_KEYS)}")
    if out["activation"] not in ACTIVATIONS:
        raise ValueError(f"ConvChainNetwork: layer {i + 1} activation={out['activation']!r}; choose one of "
                         f"{sorted(ACTIVATIONS)}")
    return out


@register_network
class ConvChainNetwork(Network):
    """Conv blocks, then dense layers, with the feedback maps `rule` needs (see the module docstring).

    Args:
      rule: the learning rule it is built for.
      image_shape: (H, W, C) of one input image (NHWC; the input may also come flattened in NHWC order).
      layer_specs: one dict per layer, conv blocks first: {'filters', 'kernel_size' (3), 'activation' ('elu'),
        'pooling' ('max'), 'use_bias' (True)} or dense {'units', 'activation' ('elu'), 'use_bias' (True)}; the
        last is a dense layer with activation 'linear' (the default for the last one).
      conv_loss: 'sum' or 'mean' (the conv layers' local loss, see the module docstring).
      init: 'xavier' (Xavier-normal kernels, zero biases: the project's and the 2020 reference's) or 'torch'
        (PyTorch's default Conv2d / Linear / ConvTranspose2d init, which Ernoult et al.'s code keeps: kernels and
        biases U(±1/√fan_in), fan_in = C_in·k² for a conv and its transposed conv, n_in for a dense layer and
        n_out for its inverse). 'torch' leaves a rule's other feedback init (FW-DTP's 'uniform_1e-3') and the
        direct maps as they are. Values are drawn with NumPy from the layer seeds (same distribution as PyTorch's,
        not its numbers).
      seed: seed of the initialisation (layer i: seed·1009 + 2i, as the MLP and the CNN; direct maps + 500).
      dtype: as for `TPModel`.
    """

    def __init__(self, rule: LearningRule, image_shape: Sequence[int] = (32, 32, 3),
                 layer_specs: Sequence[dict] = ({"filters": 32}, {"units": 10}), *, conv_loss: str = "sum",
                 init: str = "xavier", seed: int = 42, dtype: str = "float32"):
        check_rule(rule)
        self.dtype, self.structure = dtype, feedback_structure(rule)
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"ConvChainNetwork: image_shape={tuple(image_shape)!r} must be (H, W, C)")
        self.input_shape = self.image_shape
        if conv_loss not in CONV_LOSSES:
            raise ValueError(f"ConvChainNetwork: conv_loss={conv_loss!r}; choose one of {CONV_LOSSES}")
        self.conv_loss = conv_loss
        if init not in INITS:
            raise ValueError(f"ConvChainNetwork: init={init!r}; choose one of {INITS}")
        self.init, self._torch_init_done = init, False
        self.seed = seed = C.whole("seed", seed, 0, C.MAX_SEED)
        specs = list(layer_specs)
        if len(specs) < 2 or not isinstance(specs[-1], dict) or "units" not in specs[-1]:
            raise ValueError("ConvChainNetwork: layer_specs needs at least one hidden layer and a dense output layer "
                             "last, e.g. [{'filters': 8}, {'units': 10}]")
        specs[-1] = {"activation": "linear", **specs[-1]}
        checked, dense_seen = [], False
        for i, spec in enumerate(specs):
            checked.append(_spec(i, spec, dense_seen))
            dense_seen = dense_seen or "units" in checked[-1]
        if checked[-1]["activation"] != "linear":
            raise ValueError(f"ConvChainNetwork: the output layer's activation is {checked[-1]['activation']!r}; "
                             "it must be 'linear' (the logits)")
        self.layer_specs = checked
        self.output_size = checked[-1]["units"]

        layerwise = rule.feedback == "layerwise"
        form, forward_bias = rule.feedback_form, rule.forward_bias  # FW-DTP's authors: no forward biases
        layers, shape = [], self.image_shape
        for i, spec in enumerate(checked):
            fb = dict(feedback_activation=rule.feedback_activation if layerwise and i > 0 else None,
                      feedback_bias=rule.feedback_bias, feedback_init=rule.feedback_init,
                      feedback_trainable=rule.feedback_trained, seed=seed * 1009 + 2 * i, dtype=dtype,
                      name=f"layer_{i + 1}")
            if "filters" in spec:
                layer = TPConvBlock(spec["filters"], shape, kernel_size=spec["kernel_size"],
                                    activation=spec["activation"], pooling=spec["pooling"],
                                    use_bias=spec["use_bias"] and forward_bias, feedback_form=form, **fb)
                shape = layer.output_image_shape
            else:
                layer = TPDense(spec["units"], activation=spec["activation"],
                                use_bias=spec["use_bias"] and forward_bias, feedback_form=form, **fb)
            layers.append(layer)
        self.tp_layers = layers
        self.direct_feedback = None
        if rule.direct:
            self.direct_feedback = DirectFeedback(
                self.hidden_sizes, activation=rule.feedback_activation,
                use_bias=[not isinstance(layer, TPConvBlock) for layer in layers[:-1]],
                trainable=rule.feedback_trained, seed=seed * 1009 + 500, dtype=dtype, name="direct_feedback")

    @staticmethod
    def check_rule(rule: LearningRule) -> None:
        """What `TPModel.set_rule` / `compile(rule=...)` ask before another rule of the same maps trains this
        network (bp's network would take 'gnt')."""
        check_rule(rule)

    @property
    def conv_layers(self) -> list:
        return [layer for layer in self.tp_layers if isinstance(layer, TPConvBlock)]

    @property
    def local_loss_scales(self) -> list[float]:
        mean = self.conv_loss == "mean"
        return [1.0 / layer.units if mean and isinstance(layer, TPConvBlock) else 1.0 for layer in self.tp_layers]

    def build(self, input_shape):
        super().build(input_shape)
        if self.init == "torch" and not self._torch_init_done:  # once: a loaded model's weights then replace them
            self._torch_init_done = True
            self._torch_init()

    def _torch_init(self):
        for i, layer in enumerate(self.tp_layers):
            seed = self.seed * 1009 + 2 * i
            conv = isinstance(layer, TPConvBlock)
            fan_in = layer.kernel_size ** 2 * layer.image_shape[-1] if conv else int(layer.kernel.shape[0])
            draws = [(layer.kernel, fan_in, seed), (layer.bias, fan_in, seed + TORCH_BIAS_SEED)]
            if layer.feedback_init == "xavier":  # the default; another named init is the rule's own
                feedback_fan_in = fan_in if conv else layer.units
                draws += [(layer.feedback_kernel, feedback_fan_in, seed + 1),
                          (layer.feedback_bias_var, feedback_fan_in, seed + 1 + TORCH_BIAS_SEED)]
            for variable, n, s in draws:
                if variable is not None:
                    variable.assign(UniformFanIn(n, s)(tuple(variable.shape), variable.dtype))

    def attributes(self) -> dict:
        return {"image_shape": self.image_shape, "layer_specs": self.layer_specs, "conv_loss": self.conv_loss,
                "hidden_sizes": self.hidden_sizes, "output_size": self.output_size, "input_size": self.input_size}

    def get_config(self) -> dict:
        return {"image_shape": list(self.image_shape), "layer_specs": [dict(s) for s in self.layer_specs],
                "conv_loss": self.conv_loss, "init": self.init, "seed": self.seed}
