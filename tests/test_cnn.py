"""The Table 3 CNN (docs/semantics.md §8): forward pass and pooling against NumPy, the conv local-loss gradient and the
feedback losses in closed form, one compiled step per method with per-layer optimizers, DFA = DDTP-linear with
frozen feedback, the full-size network, and the config / launcher / experiment path.

NumPy references are written from the variables' values, independently of the library's code: convolution as a
sum of shifted matmuls, max-pooling as the max over each window clipped to the map (which is what −∞ padding
means), gradients routed by hand through the window argmax, tanh and the convolution.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import ALL_METHODS, fast_tier, grads_by_variable, install_fixed_noise, np_output_error, to_np
from tp_keras.core import step as tp_step
from tp_keras.core.cnn import CNNModel
from tp_keras.core.layers import TPConv2D, max_pool_3x3_s2
from tp_keras.core.optimizers import LayerwiseOptimizer, TorchAdam, layerwise_adam
from tp_keras.reference.facts import CNN_METHODS
from tp_keras.run.config import CNN_METHODS as CONFIG_CNN_METHODS
from tp_keras.run.config import Config, ConfigError
from tp_keras.run.data import Dataset, Split
from fixture_data import write_cifar_batches

# A tiny CNN: 8×6×2 images (non-square, to catch H/W mix-ups) → conv 3 ch, pooled 4×3 → conv 4 ch, pooled 2×2
# → dense 5 → 3 logits.
IMAGE, CHANNELS, FC, OUT, BATCH = (8, 6, 2), (3, 4), (5,), 3, 3


def tiny(method, *, dtype="float64", target_stepsize=0.1, sigma=0.05, seed=3):
    from tp_keras.core.rules import get_rule
    used = get_rule(method).used(target_stepsize=target_stepsize, sigma=sigma)  # TPModel refuses unused ones
    return CNNModel(method, IMAGE, CHANNELS, FC, OUT, seed=seed, dtype=dtype, **used)


def randomize_biases(model, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    biases = [layer.bias for layer in model.tp_layers]
    if model.direct_feedback is not None:
        biases += [b for b in model.direct_feedback.biases if b is not None]
    for b in biases:
        b.assign(rng.normal(scale=scale, size=tuple(b.shape)))
    return model


def tiny_batch(seed=0, batch=BATCH):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch,) + IMAGE)
    y = (np.arange(batch) % OUT).astype(np.int32)
    return x, y


# --- NumPy reference ------------------------------------------------------------------------------------------

def np_conv(x, kernel, bias):
    """Stride 1, zero padding k//2, NHWC; kernel (k, k, C_in, C_out)."""
    k = kernel.shape[0]
    p = k // 2
    _, height, width, _ = x.shape
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for i in range(k):
        for j in range(k):
            out += padded[:, i:i + height, j:j + width, :] @ kernel[i, j]
    return out + bias


def pool_windows(n):
    """Rows (or columns) of each 3×3/2 window with padding 1: 2o−1..2o+1 clipped to the map (−∞ never wins)."""
    return [range(max(0, 2 * o - 1), min(n, 2 * o + 2)) for o in range((n - 1) // 2 + 1)]


def np_pool(a):
    rows, cols = pool_windows(a.shape[1]), pool_windows(a.shape[2])
    out = np.empty((a.shape[0], len(rows), len(cols), a.shape[3]))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            out[:, i, j] = a[:, r.start:r.stop, c.start:c.stop].max(axis=(1, 2))
    return out


def np_layer(layer, h):
    if isinstance(layer, TPConv2D):
        image = h.reshape((-1,) + layer.image_shape)
        return np_pool(np.tanh(np_conv(image, to_np(layer.kernel), to_np(layer.bias)))).reshape(len(h), -1)
    a = h.reshape(len(h), -1) @ to_np(layer.kernel) + to_np(layer.bias)
    return np.tanh(a) if layer.activation == "tanh" else a


def np_forward(model, x, start=0):
    """[input, h_{start+1}, ..., h_L] from layer index `start` on."""
    hs = [np.asarray(x, np.float64)]
    for layer in model.tp_layers[start:]:
        hs.append(np_layer(layer, hs[-1]))
    return hs


def np_conv_local_grads(layer, h_in, target):
    """Closed-form gradient of mean_elements(h − ĥ)² (h the pooled map) w.r.t. the kernel and bias: 2(h − ĥ)/(B·n)
    routed to each window's argmax, times tanh', correlated with the zero-padded input."""
    image = h_in.reshape((-1,) + layer.image_shape)
    kernel = to_np(layer.kernel)
    t = np.tanh(np_conv(image, kernel, to_np(layer.bias)))
    pooled = np_pool(t)
    batch, n = len(image), pooled[0].size
    d_pooled = 2.0 * (pooled - target.reshape(pooled.shape)) / (batch * n)
    d_t = np.zeros_like(t)
    rows, cols = pool_windows(t.shape[1]), pool_windows(t.shape[2])
    for b in range(batch):
        for f in range(t.shape[3]):
            for i, r in enumerate(rows):
                for j, c in enumerate(cols):
                    window = t[b, r.start:r.stop, c.start:c.stop, f]
                    di, dj = np.unravel_index(np.argmax(window), window.shape)
                    d_t[b, r.start + di, c.start + dj, f] += d_pooled[b, i, j, f]
    delta = d_t * (1.0 - t ** 2)
    k, p = kernel.shape[0], kernel.shape[0] // 2
    height, width = t.shape[1:3]
    padded = np.pad(image, ((0, 0), (p, p), (p, p), (0, 0)))
    d_kernel = np.zeros_like(kernel)
    for i in range(k):
        for j in range(k):
            d_kernel[i, j] = np.einsum("bhwc,bhwf->cf", padded[:, i:i + height, j:j + width, :], delta)
    return d_kernel, delta.sum(axis=(0, 1, 2))


# --- pooling and forward pass ---------------------------------------------------------------------------------

def test_pooling_pads_minus_infinity_on_both_sides():
    # All values negative: zero padding would put 0 on every border window; odd and even sizes (7, 8).
    rng = np.random.default_rng(1)
    x = -1.0 - rng.random((2, 7, 8, 3))
    ours = max_pool_3x3_s2(tf.constant(x)).numpy()
    np.testing.assert_array_equal(ours, np_pool(x))
    assert ours.shape == (2, 4, 4, 3) and np.all(ours < 0)
    # Keras/TF 'same' (0 before, 1 after for even sizes) picks other windows.
    same = tf.nn.max_pool2d(tf.constant(x), 3, 2, "SAME").numpy()
    assert same.shape == ours.shape and not np.allclose(same, ours)
    # The corner window covers only rows 0..1, columns 0..1.
    np.testing.assert_array_equal(ours[:, 0, 0], x[:, :2, :2].max(axis=(1, 2)))


def test_forward_pass_matches_numpy_reference():
    model = randomize_biases(tiny("ddtp_linear"))
    x, _ = tiny_batch()
    hs = [to_np(h) for h in model.activations(tf.constant(x))]
    ref = np_forward(model, x)
    assert [h.shape[1] for h in hs[1:]] == [4 * 3 * 3, 2 * 2 * 4, 5, 3] == model.hidden_sizes + [OUT]
    for ours, expected in zip(hs[1:], ref[1:]):
        np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    # The input may also come flattened in NHWC order; the logits are the model's call.
    np.testing.assert_allclose(to_np(model(tf.constant(x.reshape(BATCH, -1)))), ref[-1], rtol=1e-12, atol=1e-12)
    # Every forward bias exists (no DDTP-linear last-hidden-layer quirk in the CNN); conv Q's have no bias.
    assert all(layer.bias is not None for layer in model.tp_layers)
    assert [b is None for b in model.direct_feedback.biases] == [True, True, False]


def test_unsupported_methods_are_refused():
    assert tuple(CNN_METHODS) == tuple(CONFIG_CNN_METHODS)
    for name in sorted(set(ALL_METHODS) - set(CNN_METHODS)):
        with pytest.raises(ValueError, match="has no CNN"):
            tiny(name)


# --- local losses, targets, feedback losses in closed form -----------------------------------------------------

def test_conv_local_loss_gradient_is_element_mean_closed_form():
    eta = 0.1
    model = randomize_biases(tiny("ddtp_linear", target_stepsize=eta))
    x, y = tiny_batch()
    updates = tp_step.compute_updates(model, x, y, feedback=False)
    hs = np_forward(model, x)
    # Targets: ĥ_L = h_L − η̂e_L; hidden ĥ_ℓ = h_ℓ − η̂·e_L Q_ℓ (difference rule through a linear map,
    # docs/semantics.md §8.4).
    e = np_output_error(hs[-1], y)
    qs = [to_np(k) for k in model.direct_feedback.kernels]
    expected_targets = [hs[i + 1] - eta * e @ qs[i] for i in range(3)] + [hs[-1] - eta * e]
    for ours, expected in zip(updates.targets, expected_targets):
        np.testing.assert_allclose(to_np(ours), expected, rtol=1e-10, atol=1e-13)
    grads = grads_by_variable(model.forward_variables, updates.forward_grads)
    batch = len(x)
    for i, layer in enumerate(model.tp_layers):
        target = expected_targets[i]
        if isinstance(layer, TPConv2D):  # element mean over B·C·H·W, through pool, tanh and conv
            d_kernel, d_bias = np_conv_local_grads(layer, hs[i], target)
        else:  # dense: docs/semantics.md §2.2, (1/B)·Σ over units
            deriv = 1.0 - hs[i + 1] ** 2 if layer.activation == "tanh" else np.ones_like(hs[i + 1])
            delta = 2.0 * deriv * (hs[i + 1] - target)
            d_kernel, d_bias = hs[i].T @ delta / batch, delta.sum(axis=0) / batch
        np.testing.assert_allclose(grads[id(layer.kernel)], d_kernel, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(grads[id(layer.bias)], d_bias, rtol=1e-9, atol=1e-15)
    assert model.local_loss_scales == [1.0 / 36, 1.0 / 16, 1.0, 1.0]


def _install_noise(model, batch, seed=5):
    noise, _ = install_fixed_noise(model, batch, seed=seed)  # one block per flattened pooled map
    return noise


@pytest.mark.parametrize("name", ["ddtp_linear", "ddtp_control"])
def test_feedback_losses_on_pooled_maps(name, monkeypatch):
    """DRL: (1/σ²)·mean‖h + (ỹ − h_L)Q + d − d − h̃‖²; control: mean‖ỹQ + d − h̃‖² (no correction, no scale), both
    element means over the (flattened) pooled map; gradients w.r.t. Q in closed form."""
    model = randomize_biases(tiny(name))
    x, y = tiny_batch(1)
    noise = _install_noise(model, len(x))
    updates = tp_step.compute_updates(model, x, y)
    hs = np_forward(model, x)
    fb = model.direct_feedback
    grads = grads_by_variable(model.feedback_variables, updates.feedback_grads)
    sigma2 = model.sigma ** 2
    for i in range(3):
        noisy = hs[i + 1] + noise[i]
        out = np_forward(model, noisy, start=i + 1)[-1]  # ỹ: the corrupted map sent to the logits
        q = to_np(fb.kernels[i])
        d = 0.0 if fb.biases[i] is None else to_np(fb.biases[i])
        count = len(x) * noisy.shape[1]  # B × C·H·W
        if name == "ddtp_linear":
            diff = (out - hs[-1]) @ q - noise[i]
            loss, d_q = np.mean(diff ** 2) / sigma2, 2.0 * (out - hs[-1]).T @ diff / (sigma2 * count)
        else:
            diff = out @ q + d - noisy
            loss, d_q = np.mean(diff ** 2), 2.0 * out.T @ diff / count
        np.testing.assert_allclose(to_np(updates.feedback_losses[i]), loss, rtol=1e-10)
        np.testing.assert_allclose(grads[id(fb.kernels[i])], d_q, rtol=1e-8, atol=1e-14)


# --- one compiled step per method with per-layer optimizers ---------------------------------------------------

LRS, EPSILONS = (1e-3, 2e-3, 3e-3, 4e-3), (1e-8, 1e-7, 1e-6, 1e-5)


def _stepsize(name):
    return 1.0 if name in ("bp", "dfa") else 0.1  # DFA and BP configs have η̂ = 1


def _trainer(name, model):
    from tp_keras.run.factories import build_trainer
    config = Config(method=name, architecture="cnn", dataset="cifar10", lr=LRS, epsilon=EPSILONS,
                    target_stepsize=model.target_stepsize, sigma=model.sigma, lr_fb=1e-3, precision="float64")
    return build_trainer(config.validate(), model)


# The fast tier compiles one CNN step (BP); the slow tier every CNN method's.
@pytest.mark.parametrize("name", fast_tier(CNN_METHODS, fast=("bp",)))
def test_one_compiled_step_per_layer_adams(name):
    eta = _stepsize(name)
    model = randomize_biases(tiny(name, target_stepsize=eta))
    trainer = _trainer(name, model)
    x, y = tiny_batch(2)
    grads = tp_step.compute_updates(model, x, y, feedback=False).forward_grads
    before = [to_np(v) for v in model.forward_variables]
    fb_before = [to_np(v) for v in model.all_feedback_variables]
    metrics = trainer.train_step(tf.constant(x), tf.constant(y))
    assert np.isfinite(float(metrics["loss"]))

    opt = trainer.forward_optimizer
    assert isinstance(opt, LayerwiseOptimizer) and len(opt.optimizers) == 4
    # Layer i's Adam holds exactly that layer's W and b, took one step, with lr_i/η̂ (normalize_lr; BP: lr_i) and ε_i.
    index = 0
    for i, (layer, layer_opt) in enumerate(zip(model.tp_layers, opt.optimizers)):
        assert int(layer_opt.iterations) == 1
        assert [tuple(m.shape) for m in layer_opt._momentums] == [tuple(v.shape) for v in layer.forward_variables]
        lr = LRS[i] / (eta if model.method.uses_targets else 1.0)
        assert float(layer_opt.learning_rate) == pytest.approx(lr, rel=1e-12) and layer_opt.epsilon == EPSILONS[i]
        for v in layer.forward_variables:
            g = to_np(grads[index])
            # PyTorch Adam at t = 1: Δθ = −lr·g/(|g| + ε).
            np.testing.assert_allclose(to_np(v) - before[index], -lr * g / (np.abs(g) + EPSILONS[i]),
                                       rtol=1e-7, atol=1e-12 * lr)
            assert not np.array_equal(to_np(v), before[index])
            index += 1
    fb_after = [to_np(v) for v in model.all_feedback_variables]
    if name == "bp":
        assert model.direct_feedback is None and not fb_after
    elif name == "dfa":
        assert all(np.array_equal(a, b) for a, b in zip(fb_before, fb_after)) and trainer.feedback_optimizer is None
    else:  # every feedback map trains (the DRL bias d_3 has zero gradient; its Adam step is 0)
        assert all(not np.array_equal(a, b) for a, b in zip(fb_before, fb_after)
                   if a.ndim == 2)


@pytest.mark.slow
def test_dfa_equals_ddtp_linear_with_frozen_feedback():
    """One step: DFA's forward weights equal DDTP-linear's (same seed, same η̂), whose feedback moved meanwhile."""
    x, y = tiny_batch(3)
    models = {name: randomize_biases(tiny(name, target_stepsize=1.0, seed=11)) for name in ("dfa", "ddtp_linear")}
    for a, b in zip(models["dfa"].all_feedback_variables, models["ddtp_linear"].all_feedback_variables):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    fb_before = [to_np(v) for v in models["ddtp_linear"].feedback_variables]
    for name, model in models.items():
        _trainer(name, model).train_step(tf.constant(x), tf.constant(y))
    for a, b in zip(models["dfa"].forward_variables, models["ddtp_linear"].forward_variables):
        np.testing.assert_allclose(to_np(a), to_np(b), rtol=0, atol=1e-14)
    assert any(not np.array_equal(to_np(v), f) for v, f in zip(models["ddtp_linear"].feedback_variables, fb_before))


@pytest.mark.slow
def test_full_size_cnn_builds_and_steps():
    model = CNNModel("ddtp_linear", target_stepsize=0.05, sigma=0.05)  # (32, 32, 3), 32/64 channels, 512, 10
    assert model.hidden_sizes == [16 * 16 * 32, 8 * 8 * 64, 512]
    assert [tuple(v.shape) for v in model.forward_variables] == [
        (5, 5, 3, 32), (32,), (5, 5, 32, 64), (64,), (4096, 512), (512,), (512, 10), (10,)]
    assert [tuple(v.shape) for v in model.feedback_variables] == [(10, 8192), (10, 4096), (10, 512), (512,)]
    # Xavier-normal with fans C·k²: std² = 2/(25·(3 + 32)); Q_1 from its own shape: 2/(10 + 8192).
    assert np.std(to_np(model.tp_layers[0].kernel)) == pytest.approx(np.sqrt(2 / (25 * 35)), rel=0.06)
    assert np.std(to_np(model.direct_feedback.kernels[0])) == pytest.approx(np.sqrt(2 / 8202), rel=0.03)
    trainer = tp_step.Trainer(model, layerwise_adam(model, LRS, 0.9, 0.999, EPSILONS), TorchAdam(1e-3))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    before = [to_np(v) for v in model.forward_variables]
    metrics = trainer.train_step(tf.constant(x), tf.constant([1, 7], tf.int32))
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["rec_loss"]))
    assert all(not np.array_equal(to_np(v), b) for v, b in zip(model.forward_variables, before))


@pytest.mark.slow
def test_fit_with_one_forward_optimizer():
    model = tiny("ddtp_control", dtype="float32")
    model.compile(forward_optimizer=TorchAdam(1e-3), feedback_optimizer=TorchAdam(1e-3))
    x, y = tiny_batch(4, batch=8)
    history = model.fit(x.astype(np.float32), y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1]) and "rec_loss" in history.history


# --- config, launcher, experiment ------------------------------------------------------------------------------

def test_launcher_flags_take_per_layer_lists():
    from tp_keras.run import launch
    launch.FLAGS(["launch", "--architecture=cnn", "--method=ddtp_linear", "--dataset=cifar10",
                  "--lr=1e-4,2e-4,3e-4,4e-4", "--epsilon=1e-8", "--target_stepsize=0.5"])
    try:
        config = launch.config_from_flags().validate()
        serialized = launch.FLAGS["lr"].serialize()
    finally:
        launch.FLAGS.unparse_flags()
    assert config.architecture == "cnn" and config.lr == (1e-4, 2e-4, 3e-4, 4e-4) and config.epsilon == 1e-8
    assert config.forward_learning_rate == pytest.approx((2e-4, 4e-4, 6e-4, 8e-4), rel=1e-15)
    assert serialized == "--lr=0.0001,0.0002,0.0003,0.0004"
    launch.FLAGS(["launch", "--lr=3e-4", "--epsilon=1e-7"])  # an MLP keeps plain floats
    try:
        config = launch.config_from_flags().validate()
    finally:
        launch.FLAGS.unparse_flags()
    assert config.architecture == "mlp" and config.lr == 3e-4 and isinstance(config.lr, float)


@pytest.mark.parametrize("overrides, flag", [
    (dict(architecture="cnn", lr=(1e-4, 1e-4, 1e-4)), "lr"),
    (dict(architecture="cnn", epsilon=(1e-8, 1e-8)), "epsilon"),
    (dict(architecture="cnn", lr=(1e-4, -1e-4, 1e-4, 1e-4)), "lr"),
    (dict(lr=(1e-4, 1e-4, 1e-4, 1e-4)), "lr"),
    (dict(architecture="cnn", method="dtpdrl"), "method"),
    (dict(architecture="cnn", dataset="student_teacher"), "dataset"),
    (dict(architecture="cnn", log_angles=True), "log_angles"),
    (dict(architecture="cnn", only_train_first_layer=True), "only_train_first_layer"),
    (dict(architecture="rnn"), "architecture"),
])
def test_bad_cnn_settings_name_the_flag(overrides, flag):
    values = dict(method="ddtp_linear", dataset="cifar10")
    values.update(overrides)
    with pytest.raises(ConfigError) as err:
        Config.paper(values.pop("method"), **values).validate()
    assert err.value.flag == flag and str(err.value).startswith(f"--{flag}:") and "\n" not in str(err.value)


@pytest.mark.slow
def test_cnn_run_end_to_end_from_raw_cifar_and_resume(tmp_path):
    """train_and_evaluate loads NHWC images for the CNN, runs pre-training, an epoch and an extra feedback pass
    with 4 forward Adams, checkpoints them, and resumes for a second epoch with their states restored."""
    from tp_keras.run.experiment import train_and_evaluate
    from tp_keras.run.factories import build_trainer
    rng = np.random.default_rng(0)

    def batch(n):
        labels = rng.integers(0, 10, n)
        return rng.integers(0, 256, (n, 3072)).astype(np.uint8), labels

    data_dir = str(tmp_path / "cifar")
    write_cifar_batches(data_dir, [batch(8) for _ in range(5)], batch(12))
    config = Config.paper("ddtp_linear", architecture="cnn", dataset="cifar10", data_dir=data_dir, lr=LRS,
                          epsilon=EPSILONS, target_stepsize=0.05, epochs=1, epochs_fb=1, extra_fb_epochs=1,
                          batch_size=16, validation_size=8, progress=False)
    workdir = str(tmp_path / "run")

    def trainer():  # the launcher's trainer, kept to look at its optimizers (the data still loads in the run)
        return build_trainer(config, CNNModel("ddtp_linear", target_stepsize=config.target_stepsize,
                                              sigma=config.sigma, seed=config.seed))

    first = trainer()
    summary = train_and_evaluate(config, workdir, trainer=first)
    assert summary["status"] == "finished" and summary["epochs_run"] == 1
    assert [int(o.iterations) for o in first.forward_optimizer.optimizers] == [2] * 4  # 32 samples, batch 16
    assert int(first.feedback_optimizer.iterations) == 2 * 3  # pre-training, epoch, extra pass
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["lr"] == list(LRS)
    config.epochs = 2
    second = trainer()
    resumed = train_and_evaluate(config, workdir, trainer=second, resume=True)
    assert resumed["status"] == "finished" and resumed["epochs_run"] == 2
    assert [int(o.iterations) for o in second.forward_optimizer.optimizers] == [4] * 4  # restored, then stepped
    for a, b in zip(first.forward_optimizer.optimizers, second.forward_optimizer.optimizers):
        assert float(a.learning_rate) == float(b.learning_rate) and a.epsilon == b.epsilon


def test_build_model_uses_the_dataset_image_shape():
    from tp_keras.run.factories import build_model
    x = np.zeros((4,) + IMAGE, np.float32)
    split = Split(x, np.zeros(4, np.int32))
    dataset = Dataset("cifar10", split, None, split, 10, "classification", IMAGE)
    model = build_model(Config.paper("dfa", architecture="cnn", dataset="cifar10", target_stepsize=1.0), dataset)
    assert isinstance(model, CNNModel) and model.image_shape == IMAGE and not model.feedback_variables
    assert model.hidden_sizes == [4 * 3 * 32, 2 * 2 * 64, 512]


@pytest.mark.slow
def test_cnn_keras_file_round_trip(tmp_path):
    """A CNNModel saved as .keras loads back with every forward and feedback weight and predicts identically."""
    import keras
    model = CNNModel("ddtp_linear", image_shape=(8, 8, 1), conv_channels=(2, 3), fc_units=(5,), output_size=3,
                     seed=3)
    for v in model.weights:  # non-initial values, so the check cannot pass by re-initialisation
        v.assign(np.random.default_rng(len(v.path)).normal(size=v.shape).astype(v.dtype))
    path = str(tmp_path / "cnn.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, CNNModel) and restored.method == model.method
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), restored.predict(x, verbose=0))
