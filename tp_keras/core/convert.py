"""Turning a user's Keras MLP or conv net into a `TPModel` trained by one of the target-propagation methods.

    import tp_keras
    tp_model = tp_keras.to_tp_model(keras_model, "ddtp_linear", target_stepsize=0.06, sigma=0.09)

`from_keras` (exported as `tp_keras.to_tp_model`) reads a `keras.Sequential` or Functional model that is a plain
chain of layers, builds the `TPModel` of the requested method with the same sizes, copies the forward weights
(kernels and biases) and returns it with the method's freshly initialised feedback parameters (seeded by
`seed=`). The converted model computes the original model's outputs (exactly for an MLP; to float rounding for
a conv net, whose convolutions TensorFlow may sum in another order).

What converts:
  * Dense layers; an optional leading `InputLayer` and `Flatten` (the TP model then takes the flattened
    inputs, `x.reshape(len(x), -1)`); an `Activation` (or default `ReLU()` / `ELU()`) layer right after a linear
    Dense is folded into it; nested Sequential/Functional models are flattened into the chain.
  * Hidden activations: tanh, ELU, ReLU or linear (layers.ACTIVATIONS), one for all hidden layers of an MLP.
  * Conv nets: conv blocks, then `Flatten`, then Dense layers, on NHWC inputs of a known (H, W, C) shape (the TP
    model takes the same images). A conv block is `Conv2D` (3×3 or 5×5, stride 1, padding 'same', channels_last)
    with its activation (argument or a following `Activation`), then at most one 2×2/2 `MaxPooling2D` or
    `AveragePooling2D` ('valid'; an `Activation` after a max pooling folds into the block, as s(max a) = max s(a)
    for these monotone activations). Each layer keeps its own activation and bias flag; the model is a
    `TPModel` on a `conv_networks.ConvChainNetwork`, and the rule's feedback maps are the network's (layer-wise
    inverse blocks, direct maps from the output, or none; Gauss-Newton targets and DDTP-RHL are refused).
  * Output activation: linear (logits). A softmax output (the last Dense's activation, an `Activation('softmax')`
    or a `Softmax()` layer after it) is refused unless `drop_softmax=True`: the methods' losses, output targets
    and `predict` work on logits, so the softmax is removed and the TP model outputs the logits (argmax, hence
    accuracy, unchanged).

The bias rule of an MLP (a conv net keeps every layer's `use_bias`): `TPModel` can leave out the forward bias of
the last hidden layer only (`last_hidden_bias`).
  * Last hidden layer: `last_hidden_bias` follows the Keras layer's `use_bias`, so the weights are kept whatever
    the method's reference default is. Under `ddtp_linear` / `dfa` (no bias there by default) a Keras layer
    with a bias gives `last_hidden_bias=True` (a warning says so; for these methods this also gives the last
    direct feedback map its bias d, as `--last_hidden_bias` does). Passing `last_hidden_bias=` explicitly
    wins; `last_hidden_bias=False` over a non-zero Keras bias is refused (it would lose weights).
    A bias-less last hidden layer gives `last_hidden_bias=False` under every method (for the direct methods
    this also leaves out that layer's feedback bias d, as `--last_hidden_bias=False` does).
  * Any other bias-less Dense gets a zero bias (predictions unchanged) that then trains like every bias of the
    TP model; a warning names those layers.

Kept from the Keras layers: `trainable = False` on a Dense layer freezes that layer's forward weights in the TP
model too (see `TPModel.trained_layers`). Regularizers and constraints are refused (the forward weights train by
local target losses; a coupled L2 penalty is the forward optimizer's `TorchAdam(l2_decay=...)`).

Anything else (BatchNormalization, Dropout, residual/merge connections, strided, 'valid', 7×7 or 1-D
convolutions, 3×3 or global pooling, Embedding, recurrent layers, subclassed models, sigmoid, differing hidden
activations of an MLP, ...) raises `ConversionError` (a ValueError) whose one-line message names the layer, its
class and the reason. (The 2020 paper's CNN, with its 3×3/2 pooling, is its own model,
`tp_keras.core.cnn.CNNModel`, or `--architecture=cnn` in the launcher.)
"""
from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from tp_keras.core.conv_networks import ConvChainNetwork
from tp_keras.core.keras_checks import model_precision
from tp_keras.core.model import TPModel
from tp_keras.core.rules import get_rule

__all__ = ["ConversionError", "from_keras"]

# Keyword arguments of TPModel that the Keras model decides.
_FROM_MODEL = ("input_size", "hidden_sizes", "output_size", "hidden_activation")

_TANH = "tanh"
_LINEAR = "linear"
_HIDDEN = ("tanh", "elu", "relu", "linear")  # layers.ACTIVATIONS: the hidden activations TP layers implement


class ConversionError(ValueError):
    """A Keras model (or one of its layers) that cannot become a TPModel; the message names the layer and why."""


def _functional_class():
    # Keras 3 exports no public name for the class `keras.Model(inputs, outputs)` returns.
    from keras.src.models.functional import Functional
    return Functional


def _describe(layer) -> str:
    return f"layer {getattr(layer, 'name', '?')!r} ({type(layer).__name__})"


def _refuse(layer, why: str):
    raise ConversionError(f"{_describe(layer)}: {why}")


def _activation_name(fn) -> str:
    """'tanh', 'linear', or the function's own name for anything else (which is then refused)."""
    if fn is None or fn is keras.activations.linear:
        return _LINEAR
    if fn in (keras.activations.tanh, keras.ops.tanh, tf.tanh, tf.math.tanh, tf.nn.tanh):
        return _TANH
    if fn in (keras.activations.relu, keras.ops.relu, tf.nn.relu):
        return "relu"
    if fn in (tf.nn.elu, keras.ops.elu):
        return "elu"
    if fn is keras.activations.elu:  # keras' elu(x, alpha=1.0): the default alpha is TP's ELU
        return "elu"
    if fn is keras.activations.softmax or fn is tf.nn.softmax:
        return "softmax"
    return getattr(fn, "__name__", repr(fn))


# --------------------------------------------------------------------------------------------------------------
# The chain of layers
# --------------------------------------------------------------------------------------------------------------

def _functional_chain(model) -> list:
    """The layers from input to output of a single-input, single-output Functional model that is a chain."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConversionError(
            f"model {model.name!r} ({type(model).__name__}) has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs: a TP model maps one input vector to one output")
    chain, seen = [], set()
    tensor = model.outputs[0]
    while True:
        op, node_index, _ = tensor._keras_history
        if op is None or isinstance(op, keras.layers.InputLayer):
            break
        inputs = op._inbound_nodes[node_index].input_tensors
        if len(inputs) != 1:
            _refuse(op, f"combines {len(inputs)} tensors (a residual or merge connection); a TP model is a plain "
                        "chain of layers, each computing h_l = s(h_(l-1) W + b) from the one before")
        if id(op) in seen:
            _refuse(op, "is applied more than once (shared weights); a TP model has one weight matrix per layer")
        seen.add(id(op))
        chain.append(op)
        tensor = inputs[0]
    return chain[::-1]


def _chain(model) -> list:
    Functional = _functional_class()
    if isinstance(model, keras.Sequential):
        layers = list(model.layers)
    elif isinstance(model, Functional):
        layers = _functional_chain(model)
    elif isinstance(model, TPModel):
        raise ConversionError(f"model {model.name!r} is already a TPModel (method {model.method.name!r})")
    elif isinstance(model, keras.Model):
        raise ConversionError(
            f"model {model.name!r} ({type(model).__name__}) is a subclassed keras.Model: its call() is Python code "
            "whose layer graph cannot be read; build it as keras.Sequential or with the Functional API")
    else:
        raise ConversionError(f"expected a keras.Sequential or Functional model, got {type(model).__name__}")
    flat = []
    for layer in layers:
        if isinstance(layer, (keras.Sequential, Functional)):
            flat += _chain(layer)
        elif isinstance(layer, keras.Model):
            _refuse(layer, "a subclassed model inside the model cannot be read; use Sequential or Functional")
        else:
            flat.append(layer)
    return flat


def _unsupported_reason(layer) -> str:
    name = type(layer).__name__
    norm = tuple(getattr(keras.layers, n) for n in ("BatchNormalization", "LayerNormalization", "GroupNormalization",
                                                    "UnitNormalization", "Normalization", "RMSNormalization")
                 if hasattr(keras.layers, n))
    noise = tuple(getattr(keras.layers, n) for n in ("Dropout", "SpatialDropout1D", "SpatialDropout2D",
                                                     "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
                                                     "AlphaDropout", "ActivityRegularization")
                  if hasattr(keras.layers, n))
    if isinstance(layer, norm):
        return ("normalisation layers are not supported: targets and feedback maps assume every layer is "
                "h_l = s(h_(l-1) W + b) of the one before; fold it into the neighbouring Dense weights or remove it")
    if isinstance(layer, noise):
        return ("dropout and noise layers are not supported: the targets and feedback losses assume a deterministic "
                "forward pass; remove it")
    if "Conv" in name or "Pooling" in name:
        return ("convolution and pooling layers other than Conv2D (3×3 or 5×5, stride 1, 'same') and 2×2 "
                "MaxPooling2D / AveragePooling2D do not convert")
    if isinstance(layer, keras.layers.Embedding):
        return "embedding lookups are not supported: a TP model is a chain of Dense layers on a float vector input"
    if isinstance(layer, keras.layers.RNN) or name in ("LSTM", "GRU", "SimpleRNN", "Bidirectional"):
        return "recurrent layers are not supported: a TP model is a chain of Dense layers"
    return ("not a layer the converter knows: a TP model is a chain of Dense layers (tanh or linear hidden, linear "
            "output), with an optional leading InputLayer/Flatten")


def _input_shape(model):
    try:
        return tuple(model.inputs[0].shape)
    except Exception:  # a Sequential without an Input has no symbolic inputs
        return None


def _activation_layer_name(layer) -> str:
    """The activation an Activation, ReLU or ELU layer applies ('relu'/'elu' only with their default arguments)."""
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer.activation)
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is not None or layer.negative_slope != 0 or layer.threshold != 0:
            _refuse(layer, f"is a clipped or leaky ReLU (max_value={layer.max_value}, negative_slope="
                           f"{layer.negative_slope}, threshold={layer.threshold}); TP layers have the plain relu")
        return "relu"
    if layer.alpha != 1.0:
        _refuse(layer, f"has alpha={layer.alpha}; TP layers have the ELU of alpha 1")
    return "elu"


def _check_weights(layer):
    """The refusals every weighted layer shares (built, plain float weights, nothing a TP model cannot honour)."""
    if not layer.built:
        _refuse(layer, "is not built, so it has no weights to keep: give the model an Input or call it on a batch")
    if getattr(layer, "lora_enabled", False):
        _refuse(layer, "has LoRA enabled; merge the LoRA weights into the kernel first")
    if getattr(layer.dtype_policy, "quantization_mode", None):
        _refuse(layer, "is quantized; only float32/float64 layers convert")
    if layer.compute_dtype != layer.variable_dtype:
        _refuse(layer, f"computes in {layer.compute_dtype} with {layer.variable_dtype} weights (mixed precision); "
                       "TP models compute in float32 or float64")
    if layer.variable_dtype not in ("float32", "float64"):
        _refuse(layer, f"has {layer.variable_dtype} weights; TP models use float32 or float64")
    for setting in ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                    "bias_constraint"):
        if getattr(layer, setting, None) is not None:
            _refuse(layer, f"has a {setting}, which a TP model cannot honour (its forward weights train by local "
                           "target losses); remove it (a coupled L2 penalty on every forward weight is "
                           "TorchAdam(l2_decay=...) as the forward optimizer)")


def _conv_spec(layer) -> dict:
    """A Conv2D that a `TPConvBlock` computes: k×k (3 or 5), stride 1, 'same', channels_last, no dilation/groups."""
    k = tuple(layer.kernel_size)
    if k not in ((3, 3), (5, 5)):
        _refuse(layer, f"has a {k[0]}×{k[1]} kernel; conv blocks take 3×3 or 5×5 kernels")
    if tuple(layer.strides) != (1, 1):
        _refuse(layer, f"has strides {tuple(layer.strides)}; conv blocks take stride 1 (downsample with a 2×2 "
                       "MaxPooling2D or AveragePooling2D)")
    if layer.padding != "same":
        _refuse(layer, f"has padding={layer.padding!r}; conv blocks take padding='same'")
    if tuple(layer.dilation_rate) != (1, 1) or getattr(layer, "groups", 1) != 1:
        _refuse(layer, "is dilated or grouped; conv blocks take dilation_rate=1, groups=1")
    if layer.data_format != "channels_last":
        _refuse(layer, "is channels_first; conv blocks read NHWC (channels_last) maps")
    _check_weights(layer)
    return {"layer": layer, "kernel": np.asarray(layer.kernel.numpy()),
            "bias": None if layer.bias is None else np.asarray(layer.bias.numpy()),
            "activation": _activation_name(layer.activation), "pooling": "none", "names": [layer.name]}


def _pooling(layer) -> str:
    """'max' or 'average' for a 2×2, stride 2, 'valid', channels_last pooling layer (else refused)."""
    kind = "max" if isinstance(layer, keras.layers.MaxPooling2D) else "average"
    strides = tuple(layer.strides) if layer.strides is not None else tuple(layer.pool_size)
    if tuple(layer.pool_size) != (2, 2) or strides != (2, 2):
        _refuse(layer, f"pools {tuple(layer.pool_size)} with strides {strides}; conv blocks pool 2×2 with stride 2")
    if layer.padding != "valid":
        _refuse(layer, f"has padding={layer.padding!r}; conv blocks pool with padding='valid'")
    if layer.data_format != "channels_last":
        _refuse(layer, "is channels_first; conv blocks read NHWC (channels_last) maps")
    return kind


def _dense_specs(model, drop_softmax: bool):
    """[{layer, kernel, bias, activation, names}] per Dense layer, whether a leading Flatten was dropped, and the
    conv blocks before the Flatten ([{..., pooling}], empty for an MLP)."""
    specs, convs, flattened = [], [], False
    for layer in _chain(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if type(layer) is keras.layers.Conv2D:
            if specs or flattened:
                _refuse(layer, "follows a Flatten or Dense layer; conv blocks come first, then Flatten and Dense")
            convs.append(_conv_spec(layer))
            continue
        if type(layer) in (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D):
            if not convs or specs or flattened or convs[-1]["pooling"] != "none":
                _refuse(layer, "does not follow a Conv2D (and its activation); a conv block is Conv2D → activation "
                               "→ one optional 2×2 pooling")
            convs[-1]["pooling"] = _pooling(layer)
            convs[-1]["names"].append(layer.name)
            continue
        if isinstance(layer, keras.layers.Flatten):
            if specs:
                _refuse(layer, "only a Flatten before the first Dense layer converts")
            if getattr(layer, "data_format", "channels_last") == "channels_first":
                _refuse(layer, "flattens in channels_first order; use channels_last and reshape the inputs")
            flattened = True
            continue
        if isinstance(layer, (keras.layers.Activation, keras.layers.ReLU, keras.layers.ELU)):
            act = _activation_layer_name(layer)
            owner = specs[-1] if specs else (convs[-1] if convs and not flattened else None)
            if owner is None:
                _refuse(layer, "an activation before any Dense or Conv2D layer has no TP equivalent")
            if owner["activation"] != _LINEAR:
                _refuse(layer, f"follows a layer that already applies {owner['activation']!r}")
            if not specs and owner["pooling"] == "average":
                _refuse(layer, "follows an average pooling; put the activation before the pooling (conv → s → pool)")
            # after a max pooling: s(max(a)) = max(s(a)) for the monotone activations that convert
            owner["activation"] = act
            owner["names"].append(layer.name)
            continue
        if type(layer) is keras.layers.Softmax:  # the output activation as its own layer, as Activation('softmax')
            if not specs:
                _refuse(layer, "a softmax before any Dense layer has no TP equivalent")
            if layer.axis not in (-1, 1, [-1], [1], (-1,), (1,)):
                _refuse(layer, f"takes the softmax over axis {layer.axis}; only the last axis (the classes) converts")
            if specs[-1]["activation"] != _LINEAR:
                _refuse(layer, f"follows a Dense layer that already applies {specs[-1]['activation']!r}")
            specs[-1]["activation"] = "softmax"
            specs[-1]["names"].append(layer.name)
            continue
        if type(layer) is not keras.layers.Dense:
            _refuse(layer, "a subclass of Dense may compute something else; only keras.layers.Dense converts"
                    if isinstance(layer, keras.layers.Dense) else _unsupported_reason(layer))
        _check_weights(layer)
        if convs and not flattened:
            _refuse(layer, "follows a conv block without a Flatten; put a Flatten between the conv blocks and Dense")
        specs.append({"layer": layer, "kernel": np.asarray(layer.kernel.numpy()),
                      "bias": None if layer.bias is None else np.asarray(layer.bias.numpy()),
                      "activation": _activation_name(layer.activation), "names": [layer.name]})
    shape = _input_shape(model)
    if specs and not flattened and shape is not None and len(shape) > 2:
        _refuse(specs[0]["layer"], f"is applied to inputs of shape {shape}: TP models take flat vectors; put a "
                                   "Flatten first")
    if convs and not specs:
        raise ConversionError(f"model {model.name!r} ends with a conv block: a TP model's output layer is a Dense "
                              "layer (Flatten, then Dense)")
    if len(specs) + len(convs) < 2:
        raise ConversionError(f"model {model.name!r} has {len(specs)} Dense layer(s): a TP model needs at least one "
                              "hidden Dense layer and an output Dense layer")
    hidden, out = convs + specs[:-1], specs[-1]
    first = hidden[0]
    for spec in hidden:
        act = spec["activation"]
        if act not in _HIDDEN:
            _refuse(spec["layer"], f"hidden activation {act!r} is not supported: TP models have "
                                   f"{', '.join(_HIDDEN)} hidden layers")
        if act != first["activation"] and not convs:  # a conv chain has one activation per layer, an MLP one
            _refuse(spec["layer"], f"hidden activation {act!r} differs from {first['activation']!r} of layer "
                                   f"{first['names'][0]!r}: a TP model has one hidden activation")
    if out["activation"] == "softmax":
        if not drop_softmax:
            _refuse(out["layer"], "output activation 'softmax': the methods' losses and targets take logits; build "
                                  "the last Dense with activation=None (and train it with from_logits=True), or pass "
                                  "drop_softmax=True to convert it to a model that outputs the logits")
        out["activation"] = _LINEAR
    elif out["activation"] != _LINEAR:
        _refuse(out["layer"], f"output activation {out['activation']!r}: a TP model's output layer is linear (logits)")
    dtypes = {spec["layer"].variable_dtype for spec in convs + specs}
    if len(dtypes) > 1:
        raise ConversionError(f"model {model.name!r} mixes weight dtypes {sorted(dtypes)}")
    return specs, flattened, convs


# --------------------------------------------------------------------------------------------------------------
# The conversion
# --------------------------------------------------------------------------------------------------------------

def _conv_chain_model(model, method, convs, specs, tp_kwargs) -> TPModel:
    """A conv chain's TPModel on a `ConvChainNetwork`: each layer keeps its own activation and bias flag."""
    mlp_only = sorted(name for name in ("last_hidden_bias", "size_hidden_fb", "recurrent_input")
                      if tp_kwargs.get(name) is not None)
    if mlp_only:
        raise TypeError(f"from_keras: {', '.join(mlp_only)} shape(s) an MLP; a conv model keeps every layer's bias "
                        "flag and has no random feedback layer: drop it")
    for spec in convs + specs:  # a rule without forward biases (fw_dtp) would drop them
        if not method.forward_bias and spec["bias"] is not None and np.any(spec["bias"] != 0):
            _refuse(spec["layer"], f"has a non-zero bias, and rule {method.name!r} has no forward biases "
                                   "(forward_bias=False); use dataclasses.replace(rule, forward_bias=True)")
    shape = _input_shape(model)
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        _refuse(convs[0]["layer"], f"reads inputs of shape {shape}; a conv model needs a known (H, W, C) input: "
                                   "give the model a keras.Input((H, W, C))")
    layer_specs = [{"filters": int(c["kernel"].shape[-1]), "kernel_size": int(c["kernel"].shape[0]),
                    "activation": c["activation"], "pooling": c["pooling"], "use_bias": c["bias"] is not None}
                   for c in convs]
    layer_specs += [{"units": int(d["kernel"].shape[1]), "activation": d["activation"],
                     "use_bias": d["bias"] is not None} for d in specs]
    tp_kwargs.setdefault("dtype", convs[0]["layer"].variable_dtype)
    network_kwargs = {name: tp_kwargs.pop(name) for name in ("conv_loss", "init") if name in tp_kwargs}
    try:
        network = ConvChainNetwork(method, tuple(int(d) for d in shape[1:]), layer_specs, **network_kwargs,
                                   seed=tp_kwargs.get("seed", 42), dtype=model_precision(tp_kwargs["dtype"]))
    except ValueError as err:  # a rule the conv network cannot train, an odd map under average pooling, ...
        raise ConversionError(f"model {model.name!r}: {err}") from None
    tp_model = TPModel(method, network=network, **tp_kwargs)
    for layer, spec in zip(tp_model.tp_layers, convs + specs):
        layer.trainable = spec["layer"].trainable  # a frozen layer stays frozen
        layer.kernel.assign(spec["kernel"].astype(layer.kernel.dtype))
        if layer.bias is not None:
            layer.bias.assign(spec["bias"].astype(layer.bias.dtype))
    return tp_model


def from_keras(model, method="ddtp_linear", *, drop_softmax: bool = False, **tp_kwargs) -> TPModel:
    """A `TPModel` of `method` with `model`'s architecture and forward weights, and fresh feedback weights.

    Args:
      model: a built `keras.Sequential` or Functional model: a chain of Dense layers (tanh, ELU, ReLU or linear
        hidden layers, linear output), optionally led by an InputLayer and a Flatten, or of conv blocks, Flatten
        and Dense layers (see the module docstring).
      method: a method name ('ddtp_linear', 'dtpdrl', ...) or a `tp_keras.core.rules.LearningRule`.
      drop_softmax: accept a softmax output layer and convert it without the softmax (the TP model outputs
        logits).
      **tp_kwargs: any other `TPModel` argument (target_stepsize, sigma, seed, task, size_hidden_fb,
        recurrent_input, gn_damping, dtype, last_hidden_bias, name). The sizes and the hidden activation come
        from `model`; `dtype` defaults to the model's weight dtype; `last_hidden_bias` follows the last hidden
        layer's `use_bias` unless given (see the module docstring for the bias rule). A conv net also takes
        `ConvChainNetwork`'s `conv_loss` ('sum' / 'mean') and `init` ('xavier' / 'torch': the feedback weights'
        init, the forward weights being the model's).

    Returns:
      The TPModel, ready to `compile(forward_optimizer=..., feedback_optimizer=...)` and `fit`. An MLP's inputs
      are flat vectors (flatten them when `model` starts with a Flatten); a conv net's are the model's NHWC
      images.

    Raises:
      ConversionError (a ValueError): a layer or a structure that TP cannot train, named in the message.
    """
    given = sorted(set(_FROM_MODEL) & set(tp_kwargs))
    if given:
        raise TypeError(f"from_keras: {', '.join(given)} come(s) from the Keras model and cannot be passed")
    method = get_rule(method)
    if method.batch_dependent:  # the Keras model's outputs are per sample; BN's would depend on the batch
        raise ConversionError(f"rule {method.name!r} batch-normalises every hidden layer by the batch's statistics, "
                              f"so the converted model would not compute model {model.name!r}'s function; build a "
                              f"TPModel({method.name!r}, ...) instead, or convert with 'fw_dtp'")
    specs, flattened, convs = _dense_specs(model, drop_softmax)
    if convs:
        return _conv_chain_model(model, method, convs, specs, tp_kwargs)
    hidden, out = specs[:-1], specs[-1]

    last = hidden[-1]
    for spec in specs:  # a rule without forward biases (fw_dtp) would drop them
        if not method.forward_bias and spec["bias"] is not None and np.any(spec["bias"] != 0):
            _refuse(spec["layer"], f"has a non-zero bias, and rule {method.name!r} has no forward biases "
                                   "(forward_bias=False); use dataclasses.replace(rule, forward_bias=True)")
    has_last_bias = last["bias"] is not None and method.forward_bias
    if "last_hidden_bias" in tp_kwargs and tp_kwargs["last_hidden_bias"] is not None:
        last_hidden_bias = bool(tp_kwargs["last_hidden_bias"])
        if not last_hidden_bias and has_last_bias and np.any(last["bias"] != 0):
            _refuse(last["layer"], "has a non-zero bias that last_hidden_bias=False would drop; leave "
                                   "last_hidden_bias unset to keep it")
    else:
        last_hidden_bias = has_last_bias
        if has_last_bias and not method.last_hidden_bias:
            warnings.warn(
                f"from_keras: keeping the bias of the last hidden layer {last['names'][0]!r}, so the "
                f"{method.name} model gets last_hidden_bias=True (the reference's {method.name} has no forward or "
                "feedback bias there; pass last_hidden_bias=False to drop a zero bias)", UserWarning, stacklevel=2)
    tp_kwargs["last_hidden_bias"] = last_hidden_bias

    zero_bias = [s["names"][0] for i, s in enumerate(specs)
                 if s["bias"] is None and (i != len(specs) - 2 or last_hidden_bias) and method.forward_bias]
    if zero_bias:
        warnings.warn(f"from_keras: Dense layer(s) {', '.join(map(repr, zero_bias))} have no bias; the TP model gives "
                      "them a zero bias (same outputs) that trains like every other bias", UserWarning, stacklevel=2)
    if flattened:
        warnings.warn(f"from_keras: the model's Flatten is not part of the TP model, which takes flat inputs of size "
                      f"{specs[0]['kernel'].shape[0]}: pass x.reshape(len(x), -1)", UserWarning, stacklevel=2)

    tp_kwargs.setdefault("dtype", specs[0]["layer"].variable_dtype)
    tp_model = TPModel(method, input_size=specs[0]["kernel"].shape[0],
                       hidden_sizes=[s["kernel"].shape[1] for s in hidden], output_size=out["kernel"].shape[1],
                       hidden_activation=hidden[0]["activation"], **tp_kwargs)
    for layer, spec in zip(tp_model.tp_layers, specs):
        layer.trainable = spec["layer"].trainable  # a frozen Dense layer stays frozen
        layer.kernel.assign(spec["kernel"].astype(layer.kernel.dtype))
        if layer.bias is not None:
            bias = spec["bias"] if spec["bias"] is not None else np.zeros(layer.units)
            layer.bias.assign(bias.astype(layer.bias.dtype))
    return tp_model
