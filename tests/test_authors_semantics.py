"""L-DRL and FW-DTP as their authors ran them (docs/semantics.md §7.12, §7.13).

The references here are float64 NumPy transcriptions of the authors' code, in its own (PyTorch) conventions: a
Linear layer's weight is (out, in) and computes x Wᵀ + b.
* L-DRL (ernoult/scalingDTP): `target_prop/backward_layers.py` inverts a forward block Sequential(Linear, ρ) into
  Sequential(ρ, Linear') — the block's activation on the map's input, then a Linear from out to in; the output block
  (a Linear alone) into a Linear. `target_prop/feedback_loss.py:get_feedback_loss` is the feedback loss,
  `models/dtp.py:DTP.forward_loss` the first target logits − β·∂CE_sum/∂logits, the difference targets and the
  forward loss ½·mean_b Σ‖y − t‖²; `DTP.shared_step` trains each feedback layer its iterations, then the forward net.
* FW-DTP (TatsukichiShibuya/Fixed-Weight-Difference-Target-Propagation, algorithm FWDTP): `models/my_functions.py`
  (forward tanh(x Wᵀ), no bias; fixed feedback tanh(u Bᵀ), no bias), `models/tp_net.py` (compute_target with
  CE summed over the batch, update_weights: summed MSE stepped with lr/B).
Their β and stepsize act on the gradient of the summed loss; ours act on e_L = ∂(mean loss)/∂h_L, so η̂ = β·B.
"""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from conftest import FixedNoise, make_batch, onehot, randomize_biases, softmax, to_np
from tp_keras.core import step as tp_step
from tp_keras.core.convert import ConversionError
from tp_keras.core.convert import from_keras as to_tp_model
from tp_keras.core.layers import TPDense
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import LayerwiseOptimizer
from tp_keras.core.rules import RULES, LearningRule, RuleError
from tp_keras.core.rules.fw_dtp import FW_DTP
from tp_keras.core.rules.ldrl import LDRL
from tp_keras.core.rules.paper import PAPER_RULES

SIZES = (7, 6, 5, 4, 3)  # n_0 .. n_L
BATCH = 6
RHO = {"elu": lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0.0))), "tanh": np.tanh, "linear": lambda a: a}
RHO_SLOPE = {"elu": lambda a: np.where(a > 0, 1.0, np.exp(np.minimum(a, 0.0))), "tanh": lambda a: 1 - np.tanh(a) ** 2,
             "linear": lambda a: np.ones_like(a)}


def _model(rule, activation="elu", seed=3, **kwargs):
    return TPModel(rule, SIZES[0], list(SIZES[1:-1]), SIZES[-1], hidden_activation=activation, seed=seed,
                   dtype="float64", **kwargs)


# ==============================================================================================================
# L-DRL: the authors' network, feedback loss, targets and forward loss.
# ==============================================================================================================

class AuthorsDTP:
    """scalingDTP's DTP on an MLP, from a TPModel's weights: forward blocks F_i = ρ_i(x W_iᵀ + b_i) (the output
    block linear), their inverses G_i(u) = ρ_i(u) V_iᵀ + c_i (V_i: (in, out))."""

    def __init__(self, model, seed=9):
        self.act = [layer.activation for layer in model.tp_layers]
        self.w = [to_np(layer.kernel).T for layer in model.tp_layers]
        self.b = [to_np(layer.bias) for layer in model.tp_layers]
        self.v = [None] + [to_np(layer.feedback_kernel).T for layer in model.tp_layers[1:]]
        # The authors' inverse Linear has a bias c; where the model has none (ldrl's default), a random one: it
        # cancels from every difference, so it must change nothing.
        rng = np.random.default_rng(seed)
        self.c = [None] + [to_np(layer.feedback_bias_var) if layer.feedback_bias_var is not None
                           else rng.normal(size=layer.kernel.shape[0]) for layer in model.tp_layers[1:]]

    def F(self, i, x):
        return RHO[self.act[i]](x @ self.w[i].T + self.b[i])

    def G(self, i, u):
        return RHO[self.act[i]](u) @ self.v[i].T + self.c[i]

    def forward_all(self, x):
        ys = []
        for i in range(len(self.w)):
            x = self.F(i, x)
            ys.append(x)
        return ys

    def feedback_loss(self, i, x, y, dx, dy):
        """get_feedback_loss for block i (input x, output y) and its gradients with respect to V_i and c_i (the
        analytic gradient of the loss below: c_i cancels from both differences)."""
        r = self.G(i, y)
        dr = self.G(i, self.F(i, x + dx)) - r
        dr_y = self.G(i, y + dy) - r
        loss = -2 * (dx * dr).sum(1).mean() + (dr_y ** 2).sum(1).mean()
        moved_x = RHO[self.act[i]](self.F(i, x + dx)) - RHO[self.act[i]](y)  # dr = moved_x V_iᵀ
        moved_y = RHO[self.act[i]](y + dy) - RHO[self.act[i]](y)            # dr_y = moved_y V_iᵀ
        grad_v = (-2 * dx.T @ moved_x + 2 * (moved_y @ self.v[i].T).T @ moved_y) / len(x)
        return loss, grad_v, np.zeros_like(self.c[i])

    def targets(self, x, labels, beta):
        ys = self.forward_all(x)
        logits = ys[-1]
        targets = [None] * len(ys)
        targets[-1] = logits - beta * (softmax(logits) - onehot(labels, logits.shape[1]))  # ∂CE_sum/∂logits
        for i in reversed(range(1, len(ys))):
            targets[i - 1] = ys[i - 1] + self.G(i, targets[i]) - self.G(i, ys[i])
        return ys, targets

    def forward_grads(self, x, labels, beta):
        """Σ_i ½·mean_b Σ‖ys_i − t_i‖², each block's input detached: gradients with respect to W_i, b_i."""
        ys, targets = self.targets(x, labels, beta)
        inputs = [x] + ys[:-1]
        grads = []
        for i, (h_in, y, t) in enumerate(zip(inputs, ys, targets)):
            delta = (y - t) * RHO_SLOPE[self.act[i]](h_in @ self.w[i].T + self.b[i]) / len(x)
            grads.append((delta.T @ h_in, delta.sum(0)))
        return grads, targets


def _noise(model, seed=5):
    """The L-DRL draw's blocks (δx for every hidden layer's input h_k, then δy for its output h_{k+1}), as N(0, 1)
    float32 values, and σ_k times each in float64."""
    rng = np.random.default_rng(seed)
    hidden = list(SIZES[1:-1])
    sizes = hidden + hidden[1:] + [SIZES[-1]]
    eps = [rng.normal(size=(BATCH, n)).astype(np.float32) for n in sizes]
    count = len(hidden)
    sigmas = model.rule.sigmas(count) * 2
    scaled = [s * e.astype(np.float64) for s, e in zip(sigmas, eps)]
    return eps, scaled[:count], scaled[count:]


def test_ldrl_defaults_are_the_authors_forms():
    assert LDRL.feedback_form == "inverse_block" and LDRL.feedback_activation == "linear"
    assert LDRL.forward_loss_scale == 0.5 and LDRL.forward_bias and not LDRL.feedback_bias  # d cancels: left out
    assert (FW_DTP.forward_bias, FW_DTP.feedback_bias, FW_DTP.forward_loss_scale) == (False, False, 1.0)
    for rule in PAPER_RULES:  # the paper methods keep the paper's forms
        assert (rule.feedback_form, rule.forward_bias, rule.forward_loss_scale) == ("dtp", True, 1.0), rule.name


@pytest.mark.parametrize("activation", ["elu", "tanh"])
def test_inverse_block_feedback_is_the_forward_activation_then_the_linear_map(activation):
    """G(u) = s(u)Q + d with s the activation of the layer whose output u is: the hidden layers' s, and none on
    the map from the logits (the output layer is linear)."""
    model = randomize_biases(_model(dataclasses.replace(LDRL, feedback_bias=True), activation))
    u = np.random.default_rng(0).normal(scale=2.0, size=(BATCH, 8))
    for layer in model.tp_layers[1:]:
        q, d = to_np(layer.feedback_kernel), to_np(layer.feedback_bias_var)
        point = u[:, :layer.units]
        expected = RHO[layer.activation](point) @ q + d
        np.testing.assert_allclose(to_np(layer.feedback(point)), expected, rtol=1e-13, atol=1e-14)
    top = model.tp_layers[-1]
    assert top.activation == "linear"  # so the top map is affine: G(u) = uQ + d
    np.testing.assert_allclose(to_np(top.feedback(u[:, :3])), u[:, :3] @ to_np(top.feedback_kernel)
                               + to_np(top.feedback_bias_var), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("feedback_bias", [False, True])
def test_ldrl_matches_the_authors_feedback_loss_targets_and_forward_loss(feedback_bias):
    """One batch in float64: the feedback losses and their gradients (per layer), the difference targets and the
    forward gradients with the ½ of the authors' forward loss, against compute_updates to 1e-12; with or without
    the feedback bias d (the authors' c, which cancels: its gradient is zero)."""
    beta = 0.7
    rule = dataclasses.replace(LDRL, sigma=(0.4, 0.2, 0.08), feedback_bias=feedback_bias)
    model = randomize_biases(_model(rule, target_stepsize=beta * BATCH))
    eps, dxs, dys = _noise(model)
    model.set_rule(dataclasses.replace(model.rule, noise=FixedNoise(eps)))
    x, labels = make_batch(seed=2, batch=BATCH)
    authors = AuthorsDTP(model)
    upd = tp_step.compute_updates(model, x, labels)

    ys = authors.forward_all(x)
    inputs = [x] + ys[:-1]
    fb_grads = dict(zip([id(v) for v in model.feedback_variables], upd.feedback_grads))
    for i in range(1, len(model.tp_layers)):
        loss, grad_v, grad_c = authors.feedback_loss(i, inputs[i], ys[i], dxs[i - 1], dys[i - 1])
        layer = model.tp_layers[i]
        np.testing.assert_allclose(to_np(upd.feedback_losses[i - 1]), loss, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(fb_grads[id(layer.feedback_kernel)], grad_v.T, rtol=1e-12, atol=1e-14)
        if feedback_bias:
            np.testing.assert_allclose(fb_grads[id(layer.feedback_bias_var)], grad_c, atol=1e-14)
        else:
            assert layer.feedback_bias_var is None
        assert np.abs(grad_v).max() > 1e-3  # a real gradient, not a vanishing one

    grads, targets = authors.forward_grads(x, labels, beta)
    for got, expected in zip(upd.targets, targets):
        np.testing.assert_allclose(to_np(got), expected, rtol=1e-12, atol=1e-14)
    fwd = dict(zip([id(v) for v in model.forward_variables], upd.forward_grads))
    for layer, (grad_w, grad_b) in zip(model.tp_layers, grads):
        np.testing.assert_allclose(fwd[id(layer.kernel)], grad_w.T, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(fwd[id(layer.bias)], grad_b, rtol=1e-12, atol=1e-15)


def test_ldrl_training_batch_is_the_authors_shared_step():
    """One training batch with plain SGD (the authors' optimizers without momentum or decay): each feedback layer
    takes its own steps with its own rate, then the targets come from the new feedback weights and the forward
    net takes one step — the weights after it, against the authors' loop, to 1e-12. Rates are powers of two
    (exact in Keras' float32 learning-rate variables)."""
    beta, iterations = 0.5, (2, 3, 1)
    fb_rates, fwd_rate = (0.25, 0.125, 0.5), 0.5
    model = randomize_biases(_model(dataclasses.replace(LDRL, sigma=(0.4, 0.2, 0.08), feedback_iterations=iterations),
                                    target_stepsize=beta * BATCH))
    eps, dxs, dys = _noise(model, seed=8)
    model.set_rule(dataclasses.replace(model.rule, noise=FixedNoise(eps)))
    x, labels = make_batch(seed=4, batch=BATCH)
    authors = AuthorsDTP(model)

    ys = authors.forward_all(x)  # feedback_loss: the activations once, the forward weights fixed
    inputs = [x] + ys[:-1]
    for i in range(1, len(ys)):
        for _ in range(iterations[i - 1]):
            _, grad_v, grad_c = authors.feedback_loss(i, inputs[i], ys[i], dxs[i - 1], dys[i - 1])
            authors.v[i] = authors.v[i] - fb_rates[i - 1] * grad_v
            authors.c[i] = authors.c[i] - fb_rates[i - 1] * grad_c
    grads, _ = authors.forward_grads(x, labels, beta)  # forward_loss, with the trained feedback
    for i, (grad_w, grad_b) in enumerate(grads):
        authors.w[i] = authors.w[i] - fwd_rate * grad_w
        authors.b[i] = authors.b[i] - fwd_rate * grad_b

    groups = model.feedback_variable_groups
    feedback = LayerwiseOptimizer([keras.optimizers.SGD(rate) for rate in fb_rates], groups)
    tp_step.batch_updates(model, keras.optimizers.SGD(fwd_rate), feedback, x, labels)
    for i, layer in enumerate(model.tp_layers):
        np.testing.assert_allclose(to_np(layer.kernel), authors.w[i].T, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(to_np(layer.bias), authors.b[i], rtol=1e-12, atol=1e-14)
        if i:
            np.testing.assert_allclose(to_np(layer.feedback_kernel), authors.v[i].T, rtol=1e-12, atol=1e-14)


def test_forward_loss_scale_scales_every_forward_gradient_exactly():
    """c = ½ halves the local loss: the forward gradients are exactly half those of c = 1 (a power of two), the
    targets and the feedback gradients unchanged."""
    x, labels = make_batch(seed=1, batch=BATCH)
    updates = {}
    for scale in (0.5, 1.0):
        model = randomize_biases(_model(dataclasses.replace(LDRL, forward_loss_scale=scale)))
        eps, _, _ = _noise(model)
        model.set_rule(dataclasses.replace(model.rule, noise=FixedNoise(eps)))
        updates[scale] = tp_step.compute_updates(model, x, labels)
    for half, one in zip(updates[0.5].forward_grads, updates[1.0].forward_grads):
        np.testing.assert_array_equal(2.0 * to_np(half), to_np(one))
        assert np.abs(to_np(one)).max() > 0
    for a, b in zip(updates[0.5].targets + updates[0.5].feedback_grads,
                    updates[1.0].targets + updates[1.0].feedback_grads):
        np.testing.assert_array_equal(to_np(a), to_np(b))


# ==============================================================================================================
# FW-DTP: no forward bias.
# ==============================================================================================================

def test_fw_dtp_has_no_forward_bias_and_predicts_the_bias_free_closed_form():
    model = _model("fw_dtp", "tanh")
    assert all(layer.bias is None for layer in model.tp_layers) and not model.last_hidden_bias
    assert model.forward_variables == [layer.kernel for layer in model.tp_layers]
    x, _ = make_batch(seed=3, batch=BATCH)
    h = x
    for layer in model.tp_layers:
        h = RHO[layer.activation](h @ to_np(layer.kernel))
    np.testing.assert_allclose(to_np(model(x)), h, rtol=1e-13, atol=1e-15)
    # The form of tp_keras 0.1.0 stays reachable: every forward layer with a bias.
    with_bias = _model(dataclasses.replace(FW_DTP, forward_bias=True), "tanh")
    assert all(layer.bias is not None for layer in with_bias.tp_layers)


def test_fw_dtp_matches_the_authors_targets_and_forward_update():
    """FWDTP's compute_target and update_weights in float64: targets through tanh(u Bᵀ) without bias, and the
    gradient of the summed MSE over B (their lr/B step) — our local loss with c = 1."""
    stepsize = 0.04
    model = _model("fw_dtp", "tanh", target_stepsize=stepsize * BATCH)
    x, labels = make_batch(seed=6, batch=BATCH)
    w = [to_np(layer.kernel).T for layer in model.tp_layers]  # (out, in)
    back = [None] + [to_np(layer.feedback_kernel).T for layer in model.tp_layers[1:]]  # (in, out)
    acts = [layer.activation for layer in model.tp_layers]

    def forward(d, h):
        return RHO[acts[d]](h @ w[d].T)

    outputs, h = [], x
    for d in range(len(w)):
        h = forward(d, h)
        outputs.append(h)
    targets = [None] * len(w)
    targets[-1] = outputs[-1] - stepsize * (softmax(outputs[-1]) - onehot(labels, SIZES[-1]))
    for d in reversed(range(len(w) - 1)):
        plane = np.tanh(targets[d + 1] @ back[d + 1].T)
        targets[d] = plane + outputs[d] - np.tanh(forward(d + 1, outputs[d]) @ back[d + 1].T)
    inputs = [x] + outputs[:-1]

    upd = tp_step.compute_updates(model, x, labels)
    for got, expected in zip(upd.targets, targets):
        np.testing.assert_allclose(to_np(got), expected, rtol=1e-12, atol=1e-15)
    for d, grad in enumerate(upd.forward_grads):
        a = inputs[d] @ w[d].T
        weight_grad = (2 * (outputs[d] - targets[d]) * RHO_SLOPE[acts[d]](a)).T @ inputs[d]  # ∂ summed MSE / ∂W
        np.testing.assert_allclose(to_np(grad), weight_grad.T / BATCH, rtol=1e-12, atol=1e-15)


# ==============================================================================================================
# Saving, old configs, refusals.
# ==============================================================================================================

@pytest.mark.parametrize("rule", ["ldrl", "fw_dtp", dataclasses.replace(
    LDRL, feedback_form="dtp", feedback_activation="tanh", forward_loss_scale=1.0)], ids=["ldrl", "fw_dtp", "ldrl_0.1"])
def test_save_and_load_keep_the_forms(tmp_path, rule):
    model = randomize_biases(_model(rule))
    x, labels = make_batch(seed=2, batch=BATCH)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.rule == model.rule
    assert [layer.get_config().get("feedback_form", "dtp") for layer in loaded.tp_layers] == \
        [model.rule.feedback_form] * len(model.tp_layers)
    for a, b in zip(model.variables, loaded.variables):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    for a, b in zip(tp_step.compute_updates(model, x, labels, feedback=False).targets,
                    tp_step.compute_updates(loaded, x, labels, feedback=False).targets):
        np.testing.assert_array_equal(to_np(a), to_np(b))


def test_configs_without_the_new_keys_load_as_the_forms_they_had():
    """A rule or TPDense config saved before the fields existed is the paper's form: DTP's maps, forward biases,
    c = 1 (an unregistered rule saves its whole structure, so a 0.1.0 L-DRL variant reloads as it was)."""
    old = dataclasses.replace(LDRL, feedback_form="dtp", feedback_activation="tanh", forward_loss_scale=1.0)
    config = old.get_config()
    for key in ("feedback_form", "forward_bias", "forward_loss_scale"):
        del config[key]
    assert LearningRule.from_config(config) == old
    model = _model(old)
    saved = model.get_config()
    assert isinstance(saved["method"], dict)
    for key in ("feedback_form", "forward_bias", "forward_loss_scale"):
        del saved["method"][key]
    assert TPModel.from_config(saved).rule == old
    layer_config = model.tp_layers[1].get_config()
    assert "feedback_form" not in layer_config and TPDense.from_config(layer_config).feedback_form == "dtp"
    new_layer = _model("ldrl").tp_layers[1].get_config()
    assert TPDense.from_config(new_layer).feedback_form == "inverse_block"


@pytest.mark.parametrize("base, change, words", [
    (LDRL, dict(feedback_form="inverse"), "feedback_form='inverse'; choose one of dtp, inverse_block"),
    (LDRL, dict(feedback_activation="tanh"), "set feedback_activation='linear', not 'tanh'"),
    (RULES["ddtp_linear"], dict(feedback_form="inverse_block"), "needs feedback='layerwise', not 'direct'"),
    (LDRL, dict(forward_loss_scale=0.0), "forward_loss_scale=0.0 must be a finite number > 0"),
    (LDRL, dict(forward_loss_scale=float("nan")), "must be a finite number > 0"),
    (LDRL, dict(forward_loss_scale="half"), "forward_loss_scale='half' must be a finite number > 0"),
    (RULES["bp"], dict(forward_loss_scale=0.5), "a backprop rule has none"),
    (FW_DTP, dict(forward_bias="no"), "forward_bias='no' must be True or False"),
])
def test_bad_field_values_are_refused_in_one_line(base, change, words):
    with pytest.raises(RuleError) as err:
        dataclasses.replace(base, **change)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_forward_bias_conflicts_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^TPModel: last_hidden_bias=True, but rule 'fw_dtp' has no forward "
                                         r"biases \(forward_bias=False\); drop the argument$"):
        _model("fw_dtp", last_hidden_bias=True)
    with pytest.raises(ValueError, match="feedback_activation='linear', not 'tanh'"):
        TPDense(4, feedback_activation="tanh", feedback_form="inverse_block")
    keras_model = keras.Sequential([keras.Input((SIZES[0],)), keras.layers.Dense(4, activation="tanh"),
                                    keras.layers.Dense(3)])
    keras_model.layers[0].bias.assign(np.full(4, 0.5))
    with pytest.raises(ConversionError) as err:
        to_tp_model(keras_model, "fw_dtp")
    assert "has no forward biases" in str(err.value) and "\n" not in str(err.value)
    # Zero biases carry nothing: the conversion drops them, with the same outputs.
    keras_model.layers[0].bias.assign(np.zeros(4))
    x = np.random.default_rng(0).normal(size=(BATCH, SIZES[0])).astype(np.float32)
    converted = to_tp_model(keras_model, "fw_dtp")
    assert all(layer.bias is None for layer in converted.tp_layers)
    np.testing.assert_allclose(converted.predict(x, verbose=0), keras_model.predict(x, verbose=0), rtol=1e-6)
