"""Converting a user's Keras MLP or conv net into a TPModel, and the `.keras` save/load round trip.

Plus `fit` on a converted model for every method of the registry (tests/test_fit.py checks one method per feedback
path against the custom loop; here every method trains through `fit` and its loss falls).
"""
import dataclasses
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from conftest import ALL_METHODS, methods_where
import tp_keras
from tp_keras.core.convert import ConversionError, from_keras
from tp_keras.core.layers import DirectFeedback, TPDense
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchAdam, TorchSGD
from tp_keras.core.rules import RULES

L = keras.layers


def _x(n=10, d=7, seed=0, dtype="float32"):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def _sequential(d=7, hidden=(6, 5), out=3, activation="tanh", dtype="float32", seed=1, **last_hidden_kwargs):
    """A Keras MLP with non-zero biases (so a lost or misplaced bias shows in the outputs)."""
    layers = [keras.Input((d,), dtype=dtype)]
    for i, n in enumerate(hidden):
        kwargs = last_hidden_kwargs if i == len(hidden) - 1 else {}
        layers.append(L.Dense(n, activation=activation, dtype=dtype,
                              kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i), **kwargs))
    layers.append(L.Dense(out, dtype=dtype, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 10)))
    model = keras.Sequential(layers)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.bias is not None:
            layer.bias.assign(rng.normal(scale=0.3, size=layer.bias.shape).astype(dtype))
    return model


# --------------------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------------------

# The rules with forward biases: fw_dtp has none and refuses a non-zero Keras bias (tests/test_authors_semantics.py).
@pytest.mark.parametrize("method", [name for name in ALL_METHODS if RULES[name].forward_bias])
def test_sequential_conversion_keeps_forward_weights_and_adds_fresh_feedback(method):
    model = _sequential()
    x = _x()
    kwargs = dict(seed=5, **RULES[method].used(target_stepsize=0.2, sigma=0.07, size_hidden_fb=4))
    if RULES[method].last_hidden_bias:
        tp = from_keras(model, method, **kwargs)
    else:  # ddtp_linear and dfa have no last-hidden bias by default: the user's bias is kept, with a warning
        with pytest.warns(UserWarning, match="last_hidden_bias=True"):
            tp = from_keras(model, method, **kwargs)
    assert isinstance(tp, TPModel) and tp.method is RULES[method]
    assert (tp.input_size, tp.hidden_sizes, tp.output_size) == (7, [6, 5], 3)
    assert tp.hidden_activation == "tanh" and tp.last_hidden_bias and tp.dtype_policy.name == "float32"
    assert {k: getattr(tp, k) for k in kwargs if k != "size_hidden_fb"} == {
        k: v for k, v in kwargs.items() if k != "size_hidden_fb"}
    np.testing.assert_array_equal(tp(x).numpy(), model(x).numpy())  # exact, not just close
    dense = [layer for layer in model.layers]
    for tp_layer, layer in zip(tp.tp_layers, dense):
        np.testing.assert_array_equal(tp_layer.kernel.numpy(), layer.kernel.numpy())
        np.testing.assert_array_equal(tp_layer.bias.numpy(), layer.bias.numpy())
    # The feedback parameters are the method's fresh ones: those of a TPModel built from scratch with that seed.
    fresh = TPModel(method, 7, [6, 5], 3, last_hidden_bias=True, **kwargs)
    assert len(tp.all_feedback_variables) == len(fresh.all_feedback_variables)
    for a, b in zip(tp.all_feedback_variables, fresh.all_feedback_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert tp_keras.to_tp_model is from_keras


def test_functional_conversion_with_flatten_folded_activation_and_float64():
    inp = keras.Input((2, 4), dtype="float64")
    h = L.Flatten(dtype="float64")(inp)
    h = L.Dense(6, activation=keras.activations.tanh, dtype="float64", name="h1")(h)
    h = L.Dense(5, use_bias=False, dtype="float64", name="h2")(h)       # bias-less last hidden layer ...
    h = L.Activation("tanh", dtype="float64", name="act2")(h)           # ... whose tanh is a separate layer
    out = L.Dense(3, use_bias=False, dtype="float64", name="logits")(h)  # bias-less output layer
    model = keras.Model(inp, out)
    model.get_layer("h1").bias.assign(np.linspace(-0.5, 0.5, 6))
    x = np.random.default_rng(2).standard_normal((9, 2, 4))
    with pytest.warns(UserWarning) as record:
        tp = from_keras(model, "dtpdrl", seed=3)
    messages = " ".join(str(w.message) for w in record)
    assert "'logits'" in messages and "zero bias" in messages and "flat inputs of size 8" in messages
    assert (tp.input_size, tp.hidden_sizes, tp.output_size, tp.dtype_policy.name) == (8, [6, 5], 3, "float64")
    assert tp.last_hidden_bias is False and tp.tp_layers[1].bias is None  # expressible: kept bias-less
    assert not np.any(tp.tp_layers[2].bias.numpy())                     # not expressible: a zero bias
    np.testing.assert_array_equal(tp(x.reshape(9, -1)).numpy(), model(x).numpy())


def test_ddtp_linear_bias_rule():
    x = _x()
    # No bias on the user's last hidden layer: the reference's ddtp_linear architecture, no warning.
    model = _sequential(use_bias=False)
    tp = from_keras(model, "ddtp_linear")
    assert tp.last_hidden_bias is False and tp.tp_layers[1].bias is None and tp.direct_feedback.biases[-1] is None
    np.testing.assert_array_equal(tp(x).numpy(), model(x).numpy())
    # A (non-zero) bias there: kept, so last_hidden_bias=True and the last direct map gets its bias d too.
    model = _sequential()
    with pytest.warns(UserWarning, match="last hidden layer .* last_hidden_bias=True"):
        tp = from_keras(model, "ddtp_linear")
    assert tp.last_hidden_bias is True and tp.direct_feedback.biases[-1] is not None
    np.testing.assert_array_equal(tp(x).numpy(), model(x).numpy())
    # Forcing the reference architecture over a non-zero bias would lose weights: refused, naming the layer.
    last = model.layers[1]
    with pytest.raises(ConversionError, match=f"'{last.name}' \\(Dense\\).*last_hidden_bias=False"):
        from_keras(model, "ddtp_linear", last_hidden_bias=False)
    # ... but a zero bias may be dropped.
    last.bias.assign(np.zeros(5, "float32"))
    tp = from_keras(model, "ddtp_linear", last_hidden_bias=False)
    assert tp.tp_layers[1].bias is None
    np.testing.assert_array_equal(tp(x).numpy(), model(x).numpy())


def test_softmax_output_is_refused_unless_dropped():
    model = keras.Sequential([keras.Input((7,)), L.Dense(6, activation="tanh"), L.Dense(3, activation="softmax")])
    with pytest.raises(ConversionError, match="softmax.*logits.*drop_softmax=True"):
        from_keras(model, "dtp")
    tp = from_keras(model, "dtp", drop_softmax=True)
    x = _x()
    probs = keras.ops.softmax(tp(x)).numpy()
    np.testing.assert_allclose(probs, model(x).numpy(), rtol=1e-6, atol=1e-7)


def _residual():
    inp = keras.Input((7,))
    h = L.Dense(7, activation="tanh", name="inner")(inp)
    h = L.Add(name="skip")([inp, h])
    return keras.Model(inp, L.Dense(3)(h))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="my_subclassed")
        self.dense = L.Dense(3)

    def call(self, x):
        return self.dense(x)


def _chain(*layers, shape=(7,)):
    return keras.Sequential([keras.Input(shape), *layers])


def _conv(*layers, shape=(6, 6, 1)):
    """A conv chain: the given layers, then Flatten and Dense(3)."""
    return _chain(*layers, L.Flatten(), L.Dense(3), shape=shape)


REFUSALS = {
    "batchnorm": (lambda: _chain(L.Dense(6, activation="tanh"), L.BatchNormalization(name="bn"), L.Dense(3)),
                  ("'bn' (BatchNormalization)", ": normalisation")),
    "dropout": (lambda: _chain(L.Dense(6, activation="tanh"), L.Dropout(0.2, name="drop"), L.Dense(3)),
                ("'drop' (Dropout)", ": dropout .* deterministic")),
    "residual_add": (_residual, ("'skip' (Add)", ": combines 2 tensors \\(a residual")),
    "sigmoid": (lambda: _chain(L.Dense(6, activation="sigmoid", name="s"), L.Dense(3)),
                ("'s' (Dense)", ": hidden activation 'sigmoid' is not supported")),
    "mixed_hidden": (lambda: _chain(L.Dense(6, activation="tanh", name="t"), L.Dense(5, name="lin"), L.Dense(3)),
                     ("'lin' (Dense)", ": hidden activation 'linear' differs from 'tanh'")),
    "tanh_output": (lambda: _chain(L.Dense(6, activation="tanh"), L.Dense(3, activation="tanh", name="o")),
                    ("'o' (Dense)", ": output activation 'tanh'")),
    "conv_stride_2": (lambda: _conv(L.Conv2D(2, 3, strides=2, padding="same", name="c")),
                      ("'c' (Conv2D)", ": has strides \\(2, 2\\); conv blocks take stride 1")),
    "conv_valid": (lambda: _conv(L.Conv2D(2, 3, name="c")), ("'c' (Conv2D)", ": has padding='valid'")),
    "conv_7x7": (lambda: _conv(L.Conv2D(2, 7, padding="same", name="c")), ("'c' (Conv2D)", ": has a 7×7 kernel")),
    "conv_sigmoid": (lambda: _conv(L.Conv2D(2, 3, padding="same", activation="sigmoid", name="c")),
                     ("'c' (Conv2D)", ": hidden activation 'sigmoid' is not supported")),
    "pool_3x3": (lambda: _conv(L.Conv2D(2, 3, padding="same"), L.MaxPooling2D(3, name="p")),
                 ("'p' (MaxPooling2D)", ": pools \\(3, 3\\)")),
    "pool_without_conv": (lambda: _chain(L.MaxPooling2D(2, name="p"), L.Flatten(), L.Dense(4), L.Dense(3),
                                         shape=(6, 6, 1)), ("'p' (MaxPooling2D)", ": does not follow a Conv2D")),
    "conv_after_dense": (lambda: _conv(L.Dense(2), L.Conv2D(2, 3, padding="same", name="c")),
                         ("'c' (Conv2D)", ": follows a Flatten or Dense layer")),
    "conv_1d": (lambda: _chain(L.Conv1D(2, 3, padding="same", name="c"), L.Flatten(), L.Dense(3), shape=(6, 1)),
                ("'c' (Conv1D)", ": convolution and pooling layers other than")),
    "odd_average_pool": (lambda: _conv(L.Conv2D(2, 3, padding="same", name="c"), L.AveragePooling2D(2),
                                       shape=(5, 5, 1)), ("", "average pooling of an odd-sized 5×5 map")),
    "kernel_regularizer": (lambda: _chain(L.Dense(6, activation="tanh", kernel_regularizer="l2", name="reg"),
                                          L.Dense(3)), ("'reg' (Dense)", ": has a kernel_regularizer.*l2_decay")),
    "bias_constraint": (lambda: _chain(L.Dense(6, activation="tanh"), L.Dense(3, bias_constraint="non_neg",
                                                                              name="nn")),
                        ("'nn' (Dense)", ": has a bias_constraint")),
    "embedding": (lambda: _chain(L.Embedding(10, 4, name="e"), L.Flatten(), L.Dense(3), shape=(3,)),
                  ("'e' (Embedding)", ": embedding")),
    "subclassed": (lambda: _built(_Subclassed()), ("'my_subclassed' (_Subclassed)", " is a subclassed keras.Model")),
    "no_hidden": (lambda: _chain(L.Dense(3)), ("1 Dense layer", "")),
}


def _built(model):
    model(_x())
    return model


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_unsupported_models_are_refused_naming_the_layer(case):
    make, (layer, reason) = REFUSALS[case]
    with pytest.raises(ConversionError, match=re.escape(layer) + reason) as info:
        from_keras(make(), "dtpdrl")
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def _conv_keras_model(dtype="float32", functional=False, seed=3):
    """Conv 3×3 ELU → max-pool, conv 5×5 → Activation(relu) → average-pool, Flatten, Dense tanh, Dense: non-zero
    biases everywhere (a lost or misplaced bias shows in the outputs)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    layers = [L.Conv2D(3, 3, padding="same", activation="elu", kernel_initializer=init, dtype=dtype),
              L.MaxPooling2D(2, dtype=dtype),
              L.Conv2D(4, 5, padding="same", kernel_initializer=init, dtype=dtype), L.Activation("relu", dtype=dtype),
              L.AveragePooling2D(2, dtype=dtype), L.Flatten(dtype=dtype),
              L.Dense(5, activation="tanh", kernel_initializer=init, dtype=dtype),
              L.Dense(3, kernel_initializer=init, dtype=dtype)]
    inp = keras.Input((8, 8, 2), dtype=dtype)
    if functional:
        out = inp
        for layer in layers:
            out = layer(out)
        model = keras.Model(inp, out)
    else:
        model = keras.Sequential([inp, *layers])
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(scale=0.3, size=layer.bias.shape).astype(dtype))
    return model


def _images(n=6, seed=0, dtype="float32"):
    return np.random.default_rng(seed).standard_normal((n, 8, 8, 2)).astype(dtype)


@pytest.mark.parametrize("method", ["bp", "dtp", "dtpdrl", "ldrl", "fw_dtp", "ddtp_linear", "ddtp_control", "dfa"])
def test_conv_model_converts_with_its_weights_and_predictions(method):
    from tp_keras.core.conv_layers import TPConvBlock
    model = _conv_keras_model()
    x = _images()
    rule = RULES[method]
    if not rule.forward_bias:  # FW-DTP's authors have no forward biases: a bias-less Keras model converts
        for layer in model.layers:
            if getattr(layer, "bias", None) is not None:
                layer.bias.assign(np.zeros(layer.bias.shape, "float32"))
    tp = from_keras(model, method, seed=5)
    assert [type(layer) for layer in tp.tp_layers] == [TPConvBlock, TPConvBlock, TPDense, TPDense]
    assert [layer.pooling for layer in tp.tp_layers[:2]] == ["max", "average"]
    assert [layer.activation for layer in tp.tp_layers] == ["elu", "relu", "tanh", "linear"]
    np.testing.assert_allclose(tp(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)  # conv sums in another order
    weighted = [layer for layer in model.layers if layer.weights]
    for tp_layer, layer in zip(tp.tp_layers, weighted):
        np.testing.assert_array_equal(tp_layer.kernel.numpy(), layer.kernel.numpy())
        if tp_layer.bias is not None:
            np.testing.assert_array_equal(tp_layer.bias.numpy(), layer.bias.numpy())


def test_functional_conv_model_in_float64_predicts_as_the_original():
    model = _conv_keras_model("float64", functional=True)
    x = _images(dtype="float64")
    tp = from_keras(model, "ldrl")
    assert tp.dtype_policy.name == "float64"
    np.testing.assert_allclose(tp(x).numpy(), model(x).numpy(), rtol=1e-12, atol=1e-13)


def test_activation_after_max_pooling_folds_into_the_block():
    """s(max(a)) = max(s(a)) for the monotone activations: Conv2D → MaxPooling2D → Activation is a conv block."""
    model = _conv(L.Conv2D(2, 3, padding="same"), L.MaxPooling2D(2), L.Activation("tanh"))
    x = np.random.default_rng(1).standard_normal((4, 6, 6, 1)).astype("float32")
    tp = from_keras(model, "dtp")
    assert tp.tp_layers[0].activation == "tanh" and tp.tp_layers[0].pooling == "max"
    np.testing.assert_allclose(tp(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_relu_and_elu_mlps_convert():
    for activation in ("relu", "elu"):
        model = _sequential(activation=activation)
        tp = from_keras(model, "dtp")
        assert tp.hidden_activation == activation
        np.testing.assert_array_equal(tp(_x()).numpy(), model(_x()).numpy())
    # the ReLU and ELU layers fold into the layer before them (with their default arguments only)
    model = _chain(L.Conv2D(2, 3, padding="same"), L.ELU(), L.MaxPooling2D(2), L.Flatten(), L.Dense(4), L.ReLU(),
                   L.Dense(3), shape=(6, 6, 1))
    tp = from_keras(model, "ldrl")
    assert [layer.activation for layer in tp.tp_layers] == ["elu", "relu", "linear"]
    x = np.random.default_rng(2).standard_normal((4, 6, 6, 1)).astype("float32")
    np.testing.assert_allclose(tp(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    for layer, message in ((L.ReLU(max_value=6.0, name="r6"), "'r6' \\(ReLU\\): is a clipped or leaky ReLU"),
                           (L.ELU(alpha=0.5, name="e"), "'e' \\(ELU\\): has alpha=0.5")):
        with pytest.raises(ConversionError, match=message):
            from_keras(_chain(L.Dense(4), layer, L.Dense(3)), "dtp")


def test_converted_conv_model_round_trips_through_a_keras_file(tmp_path):
    model = _conv_keras_model()
    model.layers[0].trainable = False  # a frozen conv layer stays frozen, also after loading
    tp = from_keras(model, "ddtp_linear", seed=2)
    assert [layer.trainable for layer in tp.tp_layers] == [False, True, True, True]
    path = tmp_path / "conv.keras"
    tp.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.trainable for layer in loaded.tp_layers] == [False, True, True, True]
    x = _images()
    np.testing.assert_array_equal(loaded(x).numpy(), tp(x).numpy())
    for a, b in zip(loaded.all_feedback_variables, tp.all_feedback_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
def test_converted_conv_model_trains_through_fit():
    """A converted conv net under ldrl (layer-wise inverse blocks, feedback first): after feedback pre-training (the
    launcher's --epochs_fb), `fit` lowers the loss on images whose class is the brightest of three quadrants. Without
    it the loss first rises while the random inverse blocks align, and where it ends after 16 epochs varies with
    float rounding."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 64)
    x = rng.standard_normal((64, 8, 8, 2)).astype("float32") * 0.5
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 4 * r:4 * r + 4, 4 * col:4 * col + 4, :] += 1.0
    tp = from_keras(_conv_keras_model(), "ldrl", seed=1)
    tp.compile(forward_optimizer=TorchAdam(0.01), feedback_optimizer=TorchAdam(0.005))
    tp.train_feedback(x, y, epochs=10, batch_size=32)
    losses = tp.fit(x, y, epochs=16, batch_size=32, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]


def test_conv_model_takes_the_conv_networks_loss_and_feedback_init():
    model = _conv_keras_model()
    tp = from_keras(model, "dtpdrl", conv_loss="mean", init="torch", seed=4)
    assert tp.network.conv_loss == "mean" and tp.local_loss_scales == [1 / 48, 1 / 16, 1.0, 1.0]
    block = tp.tp_layers[1]  # its transposed conv: U(±1/√(C_in·k²)), C_in = 3, k = 5
    assert np.abs(block.feedback_kernel.numpy()).max() <= 1 / np.sqrt(3 * 25)
    for tp_layer, layer in zip(tp.tp_layers, [layer for layer in model.layers if layer.weights]):
        np.testing.assert_array_equal(tp_layer.kernel.numpy(), layer.kernel.numpy())  # forward weights kept


def test_conv_model_refuses_mlp_settings_and_rules_without_a_conv_version():
    with pytest.raises(TypeError, match="last_hidden_bias"):
        from_keras(_conv_keras_model(), "dtp", last_hidden_bias=False)
    with pytest.raises(ConversionError, match="Gauss-Newton"):
        from_keras(_conv_keras_model(), "gnt")


def test_sizes_come_from_the_model():
    with pytest.raises(TypeError, match="hidden_sizes"):
        from_keras(_sequential(), "dtp", hidden_sizes=[4])


@pytest.mark.slow  # fw_dtp_bn refuses conversion: batch normalisation would change the model's function
@pytest.mark.parametrize("method", methods_where(lambda rule: not rule.batch_dependent))
def test_converted_model_fits_with_every_method(method, blobs):
    """`fit` on a converted Sequential model, every method of the registry: two epochs lower the loss below 0.8 of
    its initial value (measured: at most 0.36 of it, over 4 tried initialisations), except vanilla TP, which does not
    learn (paper eq. 7; README results table): for it, training runs and stays finite."""
    x, y = blobs
    init = keras.initializers.GlorotUniform
    model = keras.Sequential([keras.Input((10,)), L.Dense(8, activation="tanh", kernel_initializer=init(seed=1)),
                              L.Dense(8, activation="tanh", kernel_initializer=init(seed=2)),
                              L.Dense(3, kernel_initializer=init(seed=3))])
    tp = from_keras(model, method, seed=1, last_hidden_bias=None if RULES[method].last_hidden_bias else False,
                    **RULES[method].used(target_stepsize=0.5 if method != "dfa" else 1.0, sigma=0.05,
                                           size_hidden_fb=8))
    tp.compile(forward_optimizer=TorchAdam(0.02), feedback_optimizer=TorchAdam(0.005))
    before = tp.evaluate(x, y, batch_size=200, verbose=0, return_dict=True)["loss"]
    history = tp.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
    after = tp.evaluate(x, y, batch_size=200, verbose=0, return_dict=True)["loss"]
    assert np.all(np.isfinite(history.history["loss"])) and np.isfinite(after)
    if method != "tp":
        assert after < 0.8 * before, (method, before, after)


# --------------------------------------------------------------------------------------------------------------
# .keras round trip
# --------------------------------------------------------------------------------------------------------------

def _assert_same_variables(a_vars, b_vars):
    assert [v.path for v in a_vars] == [v.path for v in b_vars]
    for a, b in zip(a_vars, b_vars):
        assert a.dtype == b.dtype, a.path
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


ROUND_TRIPS = {
    "dtp": dict(dtype="float32"),
    "ddtp_rhl": dict(dtype="float64", recurrent_input=True, size_hidden_fb=9),
    "bp": dict(dtype="float32"),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(ROUND_TRIPS))
def test_keras_file_round_trip_restores_everything_and_keeps_training(method, tmp_path, blobs):
    options = dict(ROUND_TRIPS[method])
    dtype = options.pop("dtype")
    x, y = blobs[0][:60].astype(dtype), blobs[1][:60]
    model = TPModel(method, 10, [6, 5], 3, seed=11, task="classification", dtype=dtype, **options,
                    **RULES[method].used(target_stepsize=0.3, sigma=0.06))
    model.compile(forward_optimizer=TorchAdam(0.01, 0.8, 0.99, 1e-6, precision=dtype),
                  feedback_optimizer=TorchAdam(0.003, 0.9, 0.995, 1e-5, l2_decay=1e-4, precision=dtype))
    model.fit(x, y, batch_size=20, epochs=1, shuffle=False, verbose=0)  # non-trivial optimizer and noise state
    path = str(tmp_path / f"{method}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert type(loaded) is TPModel and loaded.method is RULES[method]
    assert loaded.get_config() == model.get_config()  # method and every hyper-parameter
    _assert_same_variables(model.weights, loaded.weights)  # forward and feedback, the fixed random layer included
    if method == "ddtp_rhl":
        assert loaded.direct_feedback.random_kernel.shape == (3, 9) and loaded.direct_feedback.recurrent
    np.testing.assert_array_equal(loaded.noise_seed.state.numpy(), model.noise_seed.state.numpy())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # Both optimizers travel in the file, with their state.
    assert isinstance(loaded.optimizer, TorchAdam) and loaded.optimizer.get_config() == model.optimizer.get_config()
    _assert_same_variables(model.optimizer.variables, loaded.optimizer.variables)
    assert loaded.feedback_optimizer.get_config() == model.feedback_optimizer.get_config()
    if model.feedback_variables:
        _assert_same_variables(model.feedback_optimizer.variables, loaded.feedback_optimizer.variables)

    # Training continues exactly where the saved model stopped.
    trained = [w.numpy().copy() for w in loaded.weights]
    model.fit(x, y, batch_size=20, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=20, epochs=1, shuffle=False, verbose=0)
    _assert_same_variables(model.weights, loaded.weights)
    changed = {w.path for w0, w in zip(trained, loaded.weights) if not np.array_equal(w0, w.numpy())}
    # Every forward weight moves; the feedback kernels move (a linear map's bias gets no DRL gradient: the
    # difference g(u + δ) − g(u) cancels it).
    assert changed >= {v.path for v in loaded.forward_variables}
    assert changed >= {v.path for v in loaded.feedback_variables if "kernel" in v.path}


@pytest.mark.slow
def test_keras_file_loads_in_a_fresh_process(tmp_path):
    """The realistic use: saved here, loaded in another Python process that imports tp_keras.core.model only."""
    x = _x(d=5)
    model = TPModel("ddtp_rhl", 5, [4, 4], 2, seed=8, size_hidden_fb=6, sigma=0.03)
    model.compile(forward_optimizer=TorchAdam(0.01), feedback_optimizer=TorchAdam(0.002, l2_decay=1e-3))
    model.fit(x, np.arange(10) % 2, batch_size=5, epochs=1, verbose=0)
    path, out = tmp_path / "m.keras", tmp_path / "out.npz"
    model.save(str(path))
    code = textwrap.dedent(f"""
        import numpy as np, keras, tp_keras.core.model
        m = keras.saving.load_model({str(path)!r})
        np.savez({str(out)!r}, logits=m.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0),
                 fb_steps=int(m.feedback_optimizer.iterations.numpy()), sigma=m.sigma, method=m.method.name)
    """)
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    got = np.load(out)
    np.testing.assert_array_equal(got["logits"], model.predict(x, verbose=0))
    assert int(got["fb_steps"]) == 2 and float(got["sigma"]) == 0.03 and str(got["method"]) == "ddtp_rhl"


@pytest.mark.slow
def test_loaded_without_compile_can_be_compiled_and_trained(tmp_path, blobs):
    x, y = blobs[0][:40], blobs[1][:40]
    with pytest.warns(UserWarning, match="last_hidden_bias=True"):
        model = from_keras(_sequential(d=10, hidden=(6, 6)), "ddtp_linear", seed=4, sigma=0.05)
    path = str(tmp_path / "converted.keras")
    model.save(path)  # never compiled: no optimizer in the file
    loaded = keras.saving.load_model(path)
    assert loaded.last_hidden_bias and loaded.get_config() == model.get_config()
    _assert_same_variables(model.weights, loaded.weights)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    loaded.compile(forward_optimizer=TorchAdam(0.01), feedback_optimizer=TorchAdam(0.001))
    watched = loaded.forward_variables + [v for v in loaded.feedback_variables if "kernel" in v.path]
    before = [w.numpy().copy() for w in watched]
    loaded.fit(x, y, batch_size=20, epochs=1, verbose=0)
    assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, watched))


def test_custom_method_and_custom_objects_serialise(tmp_path):
    # A rule outside the registry travels as its fields.
    custom = dataclasses.replace(RULES["dtpdrl"], name="my_dtpdrl", feedback_activation="linear")
    model = TPModel(custom, 5, [4], 2, seed=2)
    path = str(tmp_path / "custom.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.method == custom
    _assert_same_variables(model.weights, loaded.weights)

    # Every custom object is registered and its config round trips.
    for obj in (TorchAdam(3e-4, 0.85, 0.995, 1e-5, l2_decay=1e-3, precision="float64"),
                TorchSGD(0.1, l2_decay=1e-2, precision="float64"),
                TPDense(4, activation="linear", use_bias=False, feedback_activation="tanh", seed=3, name="t"),
                DirectFeedback([4, 3], activation="tanh", use_bias=[True, False], seed=2, random_layer_size=5,
                               recurrent=True, name="d")):
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
        assert type(clone) is type(obj) and clone.get_config() == obj.get_config()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
        TorchAdam(0.1, precision="float64")))
    clone.build([keras.Variable(np.zeros(2), dtype="float64")])
    assert clone.learning_rate.dtype == "float64" and float(clone.learning_rate.numpy()) == 0.1
