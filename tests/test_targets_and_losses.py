"""Targets and feedback losses of DDTP-RHL, DDTP-control, GNT and vanilla TP in closed form (docs/semantics.md §7.7,
§7.8, §7.10; paper eq. 3, eq. 7 and Lemma 1), beyond the every-rule contracts of tests/test_rule_contracts.py; and
the launcher defaults and the frozen-MNIST setting of every method."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from conftest import (BATCH, HIDDEN, OUTPUT, install_fixed_noise, make_batch, make_model, np_output_error,
                      randomize_biases, to_np)
from tp_keras.core import step as tp_step
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchAdam
from tp_keras.core.rules import RULES
from tp_keras.run.config import Config

N_FB = 9  # a small random feedback layer for the RHL tests


# ------------------------------------------------------------------------------------------------ DDTP-RHL ---

def test_rhl_random_layer_is_fixed_and_the_last_hidden_layer_bypasses_it():
    model = make_model("ddtp_rhl", size_hidden_fb=N_FB, dtype="float32")
    fb = model.direct_feedback
    r_kernel, r_bias = to_np(fb.random_kernel).copy(), to_np(fb.random_bias).copy()
    # U(±1/√n_L) for both (PyTorch's default nn.Linear init), and not among the trained variables.
    bound = 1 / np.sqrt(OUTPUT)
    assert r_kernel.shape == (OUTPUT, N_FB) and np.all(np.abs(r_kernel) <= bound) and np.all(np.abs(r_bias) <= bound)
    assert np.std(r_kernel) > 0.3 * bound
    trained = {id(v) for v in model.feedback_variables}
    assert id(fb.random_kernel) not in trained and id(fb.random_bias) not in trained
    # Shapes: hidden layers 1..L−2 read z (n_fb), the last hidden layer reads the output directly.
    assert [tuple(k.shape) for k in fb.kernels] == [(N_FB, HIDDEN[0]), (N_FB, HIDDEN[1]), (OUTPUT, HIDDEN[2])]
    x, y = make_batch(seed=1)
    trainer = tp_step.Trainer(model, TorchAdam(1e-2), TorchAdam(1e-2))
    kernels0 = [to_np(k).copy() for k in fb.kernels]
    for _ in range(5):
        trainer.train_step(x, y)
    np.testing.assert_array_equal(to_np(fb.random_kernel), r_kernel)
    np.testing.assert_array_equal(to_np(fb.random_bias), r_bias)
    assert all(not np.array_equal(k0, to_np(k)) for k0, k in zip(kernels0, fb.kernels))


def test_rhl_recurrent_input_size():
    model = make_model("ddtp_rhl", size_hidden_fb=N_FB, recurrent_input=True)
    shapes = [tuple(k.shape) for k in model.direct_feedback.kernels]
    assert shapes == [(N_FB + HIDDEN[0], HIDDEN[0]), (N_FB + HIDDEN[1], HIDDEN[1]), (OUTPUT, HIDDEN[2])]


@pytest.mark.parametrize("recurrent", [False, True])
def test_rhl_targets_and_drl_match_direct_computation(monkeypatch, recurrent):
    """docs/semantics.md §7.7: g_ℓ(u) = tanh([z(u), h_ℓ] Q_ℓ + d_ℓ), z(u) = tanh(u R + r);
    ĥ_ℓ = g_ℓ(ĥ_L) + h_ℓ − g_ℓ(h_L);
    DRL: (1/σ²)·mean‖g_ℓ(ỹ_ℓ) + h_ℓ − g_ℓ(h_L) − h̃_ℓ‖², gradient w.r.t. (Q_ℓ, d_ℓ)."""
    model = randomize_biases(make_model("ddtp_rhl", size_hidden_fb=N_FB, recurrent_input=recurrent))
    x, y = make_batch(seed=3)
    noise, _ = install_fixed_noise(model, BATCH)
    upd = tp_step.compute_updates(model, x, y)
    fb = model.direct_feedback
    R, r = to_np(fb.random_kernel), to_np(fb.random_bias)
    Qs, ds = [to_np(k) for k in fb.kernels], [to_np(b) for b in fb.biases]
    hs = [to_np(h) for h in upd.activations]
    last = len(HIDDEN) - 1

    def g(i, u, h):
        inp = u if i == last else np.tanh(u @ R + r)
        if recurrent and i != last:
            inp = np.concatenate([inp, h], axis=1)
        return np.tanh(inp @ Qs[i] + ds[i])

    top = to_np(upd.targets[-1])
    for i in range(len(HIDDEN)):
        expected = g(i, top, hs[i + 1]) + hs[i + 1] - g(i, hs[-1], hs[i + 1])
        np.testing.assert_allclose(to_np(upd.targets[i]), expected, rtol=1e-12, atol=1e-13)

    # DRL losses, with the upper layers applied to the corrupted copy.
    def forward_from(i, h):
        for layer in model.tp_layers[i + 1:]:
            h = h @ to_np(layer.kernel) + (to_np(layer.bias) if layer.bias is not None else 0)
            h = np.tanh(h) if layer.activation == "tanh" else h
        return h

    for i in range(len(HIDDEN)):
        noisy = hs[i + 1] + noise[i]
        r_i = g(i, forward_from(i, noisy), hs[i + 1]) + hs[i + 1] - g(i, hs[-1], hs[i + 1])
        expected = np.mean((r_i - noisy) ** 2) / model.sigma ** 2
        assert float(upd.feedback_losses[i]) == pytest.approx(expected, rel=1e-12)


# -------------------------------------------------------------------------------------------- DDTP-control ---

def test_ddtp_control_feedback_gradient_matches_spec(monkeypatch):
    """docs/semantics.md §7.8: L_ℓ = mean‖ỹ_ℓ Q_ℓ + d_ℓ − h̃_ℓ‖² (no difference correction, no 1/σ²), last hidden layer
    with forward and feedback biases."""
    model = randomize_biases(make_model("ddtp_control"))
    assert model.tp_layers[-2].bias is not None and model.direct_feedback.biases[-1] is not None
    x, y = make_batch(seed=4)
    noise, _ = install_fixed_noise(model, BATCH)
    upd = tp_step.compute_updates(model, x, y)
    hs = [to_np(h) for h in upd.activations]
    fb = model.direct_feedback
    grads = {id(v): to_np(g) for v, g in zip(model.feedback_variables, upd.feedback_grads)}
    for i, n in enumerate(HIDDEN):
        noisy = hs[i + 1] + noise[i]
        y_tilde = noisy
        for layer in model.tp_layers[i + 1:]:
            y_tilde = y_tilde @ to_np(layer.kernel) + to_np(layer.bias)
            y_tilde = np.tanh(y_tilde) if layer.activation == "tanh" else y_tilde
        residual = y_tilde @ to_np(fb.kernels[i]) + to_np(fb.biases[i]) - noisy
        assert float(upd.feedback_losses[i]) == pytest.approx(np.mean(residual ** 2), rel=1e-12)
        scale = 2.0 / (BATCH * n)
        np.testing.assert_allclose(grads[id(fb.kernels[i])], scale * y_tilde.T @ residual, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(grads[id(fb.biases[i])], scale * residual.sum(0), rtol=1e-10, atol=1e-14)
        # The bias matters here (unlike DDTP-linear, where its gradient is exactly 0).
        assert np.max(np.abs(grads[id(fb.biases[i])])) > 1e-6


# ----------------------------------------------------------------------------------------------------- GNT ---

def _jacobian_tf(model, hs, index):
    """∂h_L/∂h_index per sample, by tf batch_jacobian over a fresh forward pass from h_index."""
    h = tf.constant(to_np(hs[index]))
    with tf.GradientTape() as tape:
        tape.watch(h)
        out = h
        for layer in model.tp_layers[index:]:
            out = layer(out)
    return to_np(tape.batch_jacobian(out, h))


@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_eq5_eq13_gnt_targets_are_damped_pseudo_inverse_steps(damping):
    """docs/semantics.md §7.10: Δh_ℓ = J⁺e (λ = 0) or Jᵀ(JJᵀ + λI)⁻¹e per sample, for every layer including the
    output."""
    model = randomize_biases(make_model("gnt", gn_damping=damping, hidden=(6, 2, 4)))
    x, y = make_batch(seed=6)
    upd = tp_step.compute_updates(model, x, y)
    hs = [to_np(h) for h in upd.activations]
    e = np_output_error(hs[-1], y)
    for index in range(1, len(hs)):
        jac = _jacobian_tf(model, hs, index)  # (B, n_L, n_ℓ); the 2-unit layer makes J of layers 1–2 rank 2 < n_L
        if damping == 0.0:
            delta = np.einsum("bij,bj->bi", np.linalg.pinv(jac), e)
        else:
            n_out = jac.shape[1]
            gram = jac @ np.transpose(jac, (0, 2, 1)) + damping * np.eye(n_out)
            delta = np.einsum("bji,bj->bi", jac, np.linalg.solve(gram, e[:, :, None])[:, :, 0])
        np.testing.assert_allclose(hs[index] - to_np(upd.targets[index - 1]), delta, rtol=1e-7, atol=1e-12,
                                   err_msg=f"layer {index}")
        if damping == 0.0 and all(np.linalg.matrix_rank(j) == jac.shape[1] for j in jac):
            # Full row rank: the step reproduces the output error exactly through the linearisation.
            np.testing.assert_allclose(np.einsum("bij,bj->bi", jac, delta), e, rtol=1e-8, atol=1e-12)


def _exact_inverse(layer):
    """The exact inverse of h = tanh(x W + b) (or of the linear output layer): x = (s⁻¹(h) − b) W⁻¹."""
    w_inv = np.linalg.inv(to_np(layer.kernel))
    b = to_np(layer.bias)
    inverse_act = np.arctanh if layer.activation == "tanh" else (lambda h: h)

    def feedback(u):
        return tf.constant((inverse_act(to_np(u)) - b) @ w_inv)
    return feedback


def test_tp_on_invertible_network_matches_lemma_1(monkeypatch):
    """Lemma 1: with exact inverses as feedback, DTP's hidden target updates are −η̂·J_ℓ⁻¹e_L + O(η̂²)."""
    width = 4
    model = randomize_biases(make_model("dtp", input_size=width, hidden=(width, width), output=width, seed=11),
                             scale=0.1)
    for layer in model.tp_layers[1:]:
        monkeypatch.setattr(layer, "feedback", _exact_inverse(layer))
    x, y = make_batch(seed=8, input_size=width, output=width)
    errors = []
    for eta in (1e-1, 1e-2, 1e-3):
        model.target_stepsize = eta
        upd = tp_step.compute_updates(model, x, y, feedback=False)
        hs = [to_np(h) for h in upd.activations]
        e = np_output_error(hs[-1], y)
        worst = 0.0
        for index in range(1, len(hs) - 1):
            predicted = -eta * np.einsum("bij,bj->bi", np.linalg.inv(_jacobian_tf(model, hs, index)), e)
            update = to_np(upd.targets[index - 1]) - hs[index]
            worst = max(worst, np.max(np.abs(update - predicted)) / np.max(np.abs(predicted)))
        errors.append(worst)
    # The relative error is O(η̂): it shrinks ~10x per 10x smaller η̂, and is small at the smallest.
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 0.3 * errors[0] and errors[2] < 0.3 * errors[1]
    assert errors[2] < 1e-3


# ---------------------------------------------------------------------------------------------- vanilla TP ---

def test_vanilla_tp_targets_differ_from_dtp_by_accumulated_reconstruction_errors():
    """Eq. (3) vs eq. (8): with the same weights, D_k = ĥ_k^TP − ĥ_k^DTP satisfies D_{L−1} = g_{L−1}(h_L) − h_{L−1}
    and D_k = g_k(ĥ_{k+1}^TP) − g_k(ĥ_{k+1}^DTP) + (g_k(h_{k+1}) − h_k): each layer adds its reconstruction error
    and carries the difference above it through g (eq. 7's interference). For linear feedback this is exactly
    D_k = D_{k+1} Q_k + (g_k(h_{k+1}) − h_k)."""
    x, y = make_batch(seed=2)
    for activation in ("tanh", "linear"):
        tp_method = dataclasses.replace(RULES["tp"], feedback_activation=activation)
        dtp_method = dataclasses.replace(RULES["dtp"], feedback_activation=activation)
        tp = randomize_biases(make_model(tp_method))
        dtp = randomize_biases(make_model(dtp_method))
        for a, b in zip(tp.weights, dtp.weights):
            np.testing.assert_array_equal(to_np(a), to_np(b))
        tp_upd = tp_step.compute_updates(tp, x, y, feedback=False)
        dtp_upd = tp_step.compute_updates(dtp, x, y, feedback=False)
        hs = [to_np(h) for h in tp_upd.activations]
        t_tp, t_dtp = [to_np(t) for t in tp_upd.targets], [to_np(t) for t in dtp_upd.targets]
        np.testing.assert_array_equal(t_tp[-1], t_dtp[-1])  # same output target
        layers = tp.tp_layers
        g = [None] + [lambda u, k=k: to_np(layers[k].feedback(tf.constant(u))) for k in range(1, len(layers))]
        reconstruction_errors = []
        for k in range(len(layers) - 1, 0, -1):  # hidden layer k (1-based), g_k on layers[k]
            rec_error = g[k](hs[k + 1]) - hs[k]
            reconstruction_errors.append(np.max(np.abs(rec_error)))
            d_k = t_tp[k - 1] - t_dtp[k - 1]
            carried = g[k](t_tp[k]) - g[k](t_dtp[k])
            np.testing.assert_allclose(d_k, carried + rec_error, rtol=1e-10, atol=1e-12)
            if activation == "linear":
                q = to_np(layers[k].feedback_kernel)
                np.testing.assert_allclose(d_k, (t_tp[k] - t_dtp[k]) @ q + rec_error, rtol=1e-10, atol=1e-12)
        # The network is not invertible, so the reconstruction errors (and the difference) are far from 0.
        assert min(reconstruction_errors) > 1e-2


def test_gnt_and_tp_defaults_borrow_a_paper_config():
    assert Config.paper("tp").sigma == Config.paper("dtp").sigma
    assert Config.paper("gnt").lr == Config.paper("bp").lr and Config.paper("gnt").target_stepsize == 1.0
    assert Config.paper("ddtp_rhl").size_hidden_fb == 1024
    assert (Config.paper("dtp_pretrained").epochs_fb, Config.paper("dtp_pretrained").extra_fb_epochs) == (6, 1)
    assert (Config.paper("dtp").epochs_fb, Config.paper("dtp").extra_fb_epochs) == (0, 0)


def test_every_method_builds_from_its_launcher_default():
    for name in RULES:
        config = Config.paper(name, num_hidden=2, size_hidden=5,
                              **RULES[name].used(size_hidden_fb=7)).validate()
        model = TPModel(name, 9, config.hidden_sizes, 3, target_stepsize=config.target_stepsize,
                        sigma=config.sigma, size_hidden_fb=config.size_hidden_fb)
        assert model(np.zeros((2, 9), "float32")).shape == (2, 3)


@pytest.mark.slow
def test_gnt_step_traces_for_two_batch_sizes():
    """A compiled GNT step that has seen two batch sizes (reduce_retracing makes the batch dimension unknown)
    still knows every Jacobian's width (a reshape to the unknown batch dimension would lose it)."""
    from tp_keras.core import step as tp_step
    from tp_keras.core.optimizers import TorchAdam
    model = make_model("gnt", dtype="float32")
    trainer = tp_step.Trainer(model, TorchAdam(1e-3))
    rng = np.random.default_rng(0)
    for n in (8, 7, 5):
        out = trainer.train_step(tf.constant(rng.normal(size=(n, 7)), tf.float32),
                                 tf.constant(rng.integers(0, 3, n), tf.int32))
        assert np.isfinite(float(out["loss"]))


@pytest.mark.parametrize("method", ["dtpdrl"] + [pytest.param(m, marks=pytest.mark.slow)
                                                 for m in ("bp", "ddtp_linear", "dtp")])
def test_frozen_mnist_trains_only_the_first_layer(method):
    """only_train_first_layer (docs/semantics.md §11): after compiled training steps every forward weight but layer 1's
    is bit-identical to its initial value (the output layer's included), layer 1's changed, every trained feedback
    weight changed; the step computes gradients for layer 1 only (the forward optimizer holds only W_1, b_1)."""
    model = make_model(method, only_train_first_layer=True)
    assert model.forward_variables == model.tp_layers[0].forward_variables
    frozen = [v for layer in model.tp_layers[1:] for v in layer.forward_variables]
    before = [np.array(v.numpy()) for v in frozen]
    first = [np.array(v.numpy()) for v in model.forward_variables]
    feedback = [np.array(v.numpy()) for v in model.feedback_variables]
    trainer = tp_step.Trainer(model, TorchAdam(1e-2), TorchAdam(1e-2) if model.feedback_variables else None)
    x, y = make_batch(seed=3)
    updates = tp_step.compute_updates(model, tf.constant(x), tf.constant(y))
    assert len(updates.forward_grads) == len(model.tp_layers[0].forward_variables)
    for _ in range(3):
        trainer.train_step(tf.constant(x), tf.constant(y))
    for v, b in zip(frozen, before):
        np.testing.assert_array_equal(v.numpy(), b)
    assert all(not np.array_equal(v.numpy(), a) for v, a in zip(model.forward_variables, first))
    assert all(not np.array_equal(v.numpy(), a) for v, a in zip(model.feedback_variables, feedback)
               if v.path.endswith("kernel") or "kernel" in v.path)
