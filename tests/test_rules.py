"""Learning rules as values (tp_keras/core/rules/), and the two rules beyond the paper's: L-DRL and FW-DTP."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import (BATCH, NP_ACT, FixedNoise, install_fixed_noise, make_batch, make_model, np_forward,
                      np_output_error, randomize_biases, to_np)
from tp_keras.core import step as tp_step
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import LayerwiseOptimizer
from tp_keras.core.rules import RULES, LearningRule, RuleError, get_rule
from tp_keras.core.rules.fw_dtp import FW_DTP
from tp_keras.core.rules.ldrl import LDRL
from tp_keras.run.config import Config, ConfigError


# ==============================================================================================================
# 1. The rule as a value.
# ==============================================================================================================

@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_round_trips_through_its_config(name):
    rule = RULES[name]
    config = rule.get_config()
    assert json.loads(json.dumps(config)) == config  # plain JSON: names, numbers, lists
    assert LearningRule.from_config(config) == rule
    assert get_rule(config) == rule and get_rule(name) is rule


@pytest.mark.parametrize("change, words", [
    (dict(feedback="none"), "need feedback maps"),
    (dict(target_rule="gnt"), "uses no feedback maps"),
    (dict(feedback_loss="control"), "trains only direct feedback"),
    (dict(feedback="direct", feedback_loss="ldrl"), "trains only layerwise feedback"),
    (dict(target_rule="plain", feedback_loss="drl"), "difference correction"),
    (dict(sigma=0.0), "sigma > 0"),
    (dict(sigma=(0.1, 0.2)), "takes one sigma"),
    (dict(feedback_iterations=3), "feedback_iterations=3 is not used"),
    (dict(feedback_iterations=0, feedback_first=True), "whole numbers >= 1"),
    (dict(target_stepsize=-1.0), "target_stepsize"),
    (dict(feedback_loss="nope"), "choose one of"),
    (dict(noise=3), "callable noise"),
    (dict(feedback_trained=False, feedback_first=True), "feedback_trained=False"),
])
def test_invalid_combinations_are_refused_in_one_line(change, words):
    with pytest.raises(RuleError) as err:
        dataclasses.replace(RULES["dtpdrl"], **change)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_model_takes_a_rule_value_or_a_name_and_keeps_hyper_parameters_on_the_rule():
    by_name = make_model("dtpdrl", sigma=0.07, target_stepsize=0.3)
    assert by_name.rule.sigma == 0.07 and by_name.rule.target_stepsize == 0.3
    assert by_name.method is RULES["dtpdrl"]  # the registry entry: the rule's structure
    rule = dataclasses.replace(RULES["dtpdrl"], sigma=0.07, target_stepsize=0.3)
    by_value = make_model(rule, sigma=None, target_stepsize=None)
    assert by_value.rule == by_name.rule
    # Setting a hyper-parameter through the model gives it a new rule value.
    by_value.target_stepsize = 0.5
    assert by_value.rule.target_stepsize == 0.5 and rule.target_stepsize == 0.3


def test_model_config_round_trip_with_per_layer_ldrl_settings(tmp_path):
    model = make_model("ldrl", sigma=[0.1, 0.2, 0.3], feedback_iterations=[1, 2, 3])
    assert model.rule.sigma == (0.1, 0.2, 0.3) and model.rule.feedback_iterations == (1, 2, 3)
    again = TPModel.from_config(model.get_config())
    assert again.rule == model.rule
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.rule == model.rule
    for a, b in zip(model.variables, loaded.variables):
        np.testing.assert_array_equal(to_np(a), to_np(b))


def test_compile_switches_to_a_rule_of_the_same_feedback_maps():
    model = make_model("dtpdrl")
    # L-DRL's loss on DTP's maps tanh(uQ + d) (ldrl itself inverts each forward block: other maps).
    on_dtp_maps = dataclasses.replace(LDRL, feedback_form="dtp", feedback_activation="tanh", feedback_bias=True)
    model.compile(optimizer="sgd", rule="dtp")
    assert model.rule.name == "dtp" and model.rule.sigma == 0.05  # a name keeps the model's hyper-parameters
    model.compile(optimizer="sgd", rule=on_dtp_maps,  # not a registry rule: no paper feedback optimizer to take
                  feedback_optimizer=[keras.optimizers.SGD() for _ in model.hidden_sizes])
    assert model.rule == on_dtp_maps
    for other in ("ddtp_linear", "ldrl"):
        with pytest.raises(ValueError, match="needs other feedback maps") as err:
            model.compile(optimizer="sgd", rule=other)
        assert "\n" not in str(err.value)


def test_noise_comes_from_the_rule():
    """The feedback losses read their N(0, 1) draws from the rule's noise component (the DTP loss recomputed
    with the injected noise)."""
    model = randomize_biases(make_model("dtp", sigma=0.05))
    noise, calls = install_fixed_noise(model, BATCH)
    x, y = make_batch()
    upd = tp_step.compute_updates(model, x, y, forward=False)
    assert len(calls) == 1
    hs = np_forward(model, x)
    for k in range(1, len(model.tp_layers)):
        layer = model.tp_layers[k]
        noisy = hs[k] + noise[k - 1]
        up = NP_ACT[layer.activation](noisy @ to_np(layer.kernel) + to_np(layer.bias))
        rec = np.tanh(up @ to_np(layer.feedback_kernel) + to_np(layer.feedback_bias_var))
        expected = np.mean((rec - noisy) ** 2) / 0.05 ** 2
        np.testing.assert_allclose(to_np(upd.feedback_losses[k - 1]), expected, rtol=1e-10)


# ==============================================================================================================
# 2. L-DRL (Ernoult et al. 2022).
# ==============================================================================================================

def _ldrl_noise_sizes(model):
    """The L-DRL draw: δx for every hidden layer's input h_k, then δy for its output h_{k+1} (k = 1..L−1)."""
    return list(model.hidden_sizes) + list(model.hidden_sizes[1:]) + [model.output_size]


def test_ldrl_loss_matches_its_equation():
    """L_k = −2·Σ δx·(G(F(h+δx)) − r)/B + Σ‖G(F(h)+δy) − r‖²/B, r = G(F(h)), G(u) = s(u)Q, recomputed in NumPy."""
    model = randomize_biases(make_model("ldrl", sigma=[0.05, 0.1, 0.2]))
    sizes = _ldrl_noise_sizes(model)
    rng = np.random.default_rng(4)
    eps = [rng.normal(size=(BATCH, n)).astype(np.float32) for n in sizes]
    model.set_rule(dataclasses.replace(model.rule, noise=FixedNoise(eps)))
    x, y = make_batch(seed=2)
    upd = tp_step.compute_updates(model, x, y, forward=False)
    hs = np_forward(model, x)
    count = len(model.hidden_sizes)
    for k in range(1, len(model.tp_layers)):
        layer, sigma = model.tp_layers[k], model.rule.sigma[k - 1]
        dx, dy = sigma * eps[k - 1].astype(np.float64), sigma * eps[count + k - 1].astype(np.float64)
        f = lambda h: NP_ACT[layer.activation](h @ to_np(layer.kernel) + to_np(layer.bias))  # noqa: E731
        # The inverse block of the layer, without the bias that cancels (rules/ldrl.py): G(u) = s(u)Q.
        assert layer.feedback_bias_var is None
        g = lambda u: NP_ACT[layer.activation](u) @ to_np(layer.feedback_kernel)  # noqa: E731
        r = g(hs[k + 1])
        expected = (-2 * np.sum(dx * (g(f(hs[k] + dx)) - r)) + np.sum((g(hs[k + 1] + dy) - r) ** 2)) / BATCH
        np.testing.assert_allclose(to_np(upd.feedback_losses[k - 1]), expected, rtol=1e-10, atol=1e-15)


def _whitened(rows, cols, rng):
    """√rows·U with U's columns orthonormal: εᵀε/rows = I exactly."""
    q, _ = np.linalg.qr(rng.normal(size=(rows, cols)))
    return np.sqrt(rows) * q


def test_ldrl_minimiser_makes_feedback_jacobian_the_transposed_forward_jacobian():
    """On linear layers F(h) = hW, G(u) = uQ + d the L-DRL loss is −2·tr(Cx W Q) + tr(Qᵀ Cy Q) with Cx = δxᵀδx/B,
    Cy = δyᵀδy/B; with whitened noise (Cx = Cy = σ²I) its gradient is 2σ²(Q − Wᵀ) and d's is 0, so its minimiser
    is Q = Wᵀ: J_G = Qᵀ = W = J_Fᵀ (Ernoult et al. 2022, the L-DRL optimum). The rule's own feedback-first steps
    with plain SGD reach it. (The inverse-block map of a linear layer is uQ + d; d, which the rule leaves out, is
    kept here to show that it gets no gradient.)"""
    rule = dataclasses.replace(LDRL, feedback_bias=True, feedback_iterations=30, per_layer_feedback_optimizers=False)
    batch, sigma = 32, 0.5
    model = randomize_biases(make_model(rule, hidden=(6, 5, 4), sigma=sigma, hidden_activation="linear"))
    rng = np.random.default_rng(0)
    eps = [_whitened(batch, n, rng).astype(np.float32) for n in _ldrl_noise_sizes(model)]
    eps = [e.astype(np.float64) for e in eps]  # whitened in float64 ...
    # ... and kept exactly whitened in float32 (the library's noise dtype): re-orthonormalise the rounded values.
    model.set_rule(dataclasses.replace(model.rule, noise=FixedNoise([e.astype(np.float32) for e in eps])))
    eps32 = [e.astype(np.float32).astype(np.float64) for e in eps]
    x = np.random.default_rng(1).normal(size=(batch, 7))
    y = np.arange(batch) % 3
    upd = tp_step.compute_updates(model, x, y, forward=False)
    grads = dict(zip([id(v) for v in model.feedback_variables], upd.feedback_grads))
    count = len(model.hidden_sizes)
    for k in range(1, len(model.tp_layers)):
        layer = model.tp_layers[k]
        w, q = to_np(layer.kernel), to_np(layer.feedback_kernel)
        cx = sigma ** 2 * eps32[k - 1].T @ eps32[k - 1] / batch
        cy = sigma ** 2 * eps32[count + k - 1].T @ eps32[count + k - 1] / batch
        np.testing.assert_allclose(to_np(grads[id(layer.feedback_kernel)]), 2 * (cy @ q - w.T @ cx), atol=1e-12)
        np.testing.assert_allclose(cx, sigma ** 2 * np.eye(len(cx)), atol=1e-6)  # hence ≈ 2σ²(Q − Wᵀ)
        np.testing.assert_allclose(to_np(grads[id(layer.feedback_bias_var)]), 0.0, atol=1e-12)
    # Descend: 30 SGD steps of rate 1 shrink Q − Wᵀ by (1 − 2σ²)³⁰ = 2⁻³⁰, from 1.7 to 1.5e-9, below the floor that
    # the float32 noise's whitening leaves (measured max |Q − Wᵀ| 4.1e-8 after 30 steps and after 60).
    tp_step.feedback_first_updates(model, keras.optimizers.SGD(1.0), x, y)
    for layer in model.tp_layers[1:]:
        np.testing.assert_allclose(to_np(layer.feedback_kernel), to_np(layer.kernel).T, atol=1e-5)


def test_ldrl_trains_feedback_before_the_targets_with_per_layer_steps_and_optimizers():
    model = make_model("ldrl", feedback_iterations=[1, 2, 3], dtype="float64")
    groups = model.feedback_variable_groups
    feedback = LayerwiseOptimizer([keras.optimizers.Adam(1e-2) for _ in groups], groups)
    forward = keras.optimizers.SGD(0.0)  # the forward weights stay: the targets below are comparable
    trainer = tp_step.Trainer(model, forward, feedback)
    x, y = make_batch(seed=3)
    before = tp_step.compute_updates(model, x, y, feedback=False).targets
    trainer.train_step(tf.constant(x), tf.constant(y))
    assert [int(o.iterations.numpy()) for o in feedback.optimizers] == [1, 2, 3]
    after = tp_step.compute_updates(model, x, y, feedback=False).targets
    # The forward step used the targets of the NEW feedback weights (computed after the feedback steps).
    used = tp_step.batch_updates(model, forward, feedback, x, y).targets
    assert not np.allclose(to_np(before[0]), to_np(after[0]))
    assert [int(o.iterations.numpy()) for o in feedback.optimizers] == [2, 4, 6]
    later = tp_step.compute_updates(model, x, y, feedback=False).targets
    np.testing.assert_allclose(to_np(used[0]), to_np(later[0]), rtol=1e-12)


# ==============================================================================================================
# 3. FW-DTP (Shibuya et al. 2023).
# ==============================================================================================================

def test_fw_dtp_feedback_is_fixed_bias_free_and_drawn_like_dtps():
    model, dtp = make_model("fw_dtp"), make_model("dtp")
    assert model.feedback_variables == [] and len(model.all_feedback_variables) == len(model.hidden_sizes)
    for layer, reference in zip(model.tp_layers[1:], dtp.tp_layers[1:]):
        assert layer.feedback_bias_var is None and not layer.feedback_kernel.trainable
        np.testing.assert_array_equal(to_np(layer.feedback_kernel), to_np(reference.feedback_kernel))
    uniform = TPModel(dataclasses.replace(FW_DTP, feedback_init="uniform_1e-3"), 7, [6, 5], 3, dtype="float64")
    assert all(np.abs(to_np(v)).max() <= 1e-3 for v in uniform.all_feedback_variables)


def test_fw_dtp_feedback_never_changes_in_fit_or_the_trainer():
    model = make_model("fw_dtp", dtype="float32")
    fixed = [to_np(v) for v in model.all_feedback_variables]
    x, y = make_batch(seed=1, batch=24)
    trainer = tp_step.Trainer(model, keras.optimizers.Adam(1e-2))
    assert not trainer.trains_feedback
    forward = [to_np(v) for v in model.forward_variables]
    trainer.train_step(tf.constant(x, tf.float32), tf.constant(y))
    assert any(not np.array_equal(a, to_np(b)) for a, b in zip(forward, model.forward_variables))
    model.compile(optimizer="adam")
    assert model.feedback_optimizer is None
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for a, b in zip(fixed, model.all_feedback_variables):
        np.testing.assert_array_equal(a, to_np(b))


def _graph_ops(model):
    trainer = tp_step.Trainer(model, keras.optimizers.SGD(0.1),
                              keras.optimizers.SGD(0.1) if model.feedback_variables else None)
    x, y = make_batch()
    graph = trainer.train_step.get_concrete_function(tf.constant(x), tf.constant(y)).graph
    return [op.type for op in graph.get_operations()]


def test_fw_dtp_step_is_cheaper_than_dtps():
    """No noise, no feedback loss, no feedback update: fewer operations than DTP's step, and no random draw."""
    fw, dtp = _graph_ops(make_model("fw_dtp")), _graph_ops(make_model("dtp"))
    assert len(fw) < 0.7 * len(dtp)
    assert not any("Random" in op for op in fw) and any("Random" in op for op in dtp)
    assert fw.count("MatMul") < dtp.count("MatMul")


# ==============================================================================================================
# 4. Flags and runs.
# ==============================================================================================================

@pytest.mark.parametrize("method, overrides, flag", [
    ("dtp", dict(feedback_iterations=3), "feedback_iterations"),
    ("ldrl", dict(feedback_iterations=(1, 2)), "feedback_iterations"),
    ("ldrl", dict(feedback_iterations=0), "feedback_iterations"),
    ("dtpdrl", dict(sigma=(0.1, 0.1, 0.1, 0.1, 0.1)), "sigma"),
    ("ldrl", dict(sigma=(0.1, 0.1)), "sigma"),
])
def test_bad_rule_settings_name_the_flag(method, overrides, flag):
    with pytest.raises(ConfigError) as err:
        Config.paper(method, **overrides).validate()
    assert str(err.value).startswith(f"--{flag}:") and "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("method, extra", [("ldrl", ["--feedback_iterations=1,2", "--sigma=0.1,0.05", "--epochs_fb=1"]),
                                           ("fw_dtp", [])])
def test_launcher_runs_the_new_rules(mnist_dir, tmp_path, method, extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run([sys.executable, "-m", "tp_keras.launch", f"--method={method}", f"--data_dir={mnist_dir}",
                           "--epochs=2", "--num_hidden=2", "--size_hidden=8", "--batch_size=16",
                           "--validation_size=20", "--progress=false", "--log_angles", "--log_interval=1",
                           f"--workdir={tmp_path / 'run'}", *extra],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished"
    angles = (tmp_path / "run" / "angles.jsonl").read_text().splitlines()
    assert angles and all(np.all(np.isfinite(json.loads(line)["bp_angle"])) for line in angles)


@pytest.mark.slow
def test_launcher_runs_fw_dtp_bn_and_refuses_its_angles(mnist_dir, tmp_path):
    """--method=fw_dtp_bn trains to a finished run with finite metrics (evaluation by batch statistics, in batches
    of --batch_size); --log_angles, and the damping search (GNT angles), are refused before any work, in one line,
    exit status 2."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    common = [sys.executable, "-m", "tp_keras.launch", "--method=fw_dtp_bn", f"--data_dir={mnist_dir}", "--epochs=2",
              "--num_hidden=2", "--size_hidden=8", "--batch_size=16", "--validation_size=20", "--progress=false"]
    done = subprocess.run(common + [f"--workdir={tmp_path / 'run'}"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["method"] == "fw_dtp_bn"
    assert np.isfinite(summary["loss_train_last"]) and np.isfinite(summary["loss_test_val_best"])
    refused = subprocess.run(common + ["--log_angles", f"--workdir={tmp_path / 'angles'}"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: --log_angles: fw_dtp_bn batch-normalises")
    assert not (tmp_path / "angles" / "summary.json").exists()
    search = subprocess.run([sys.executable, "-m", "tp_keras.damping_search", "--method=fw_dtp_bn",
                             f"--data_dir={mnist_dir}", f"--workdir={tmp_path / 'search'}"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert search.returncode == 2
    assert search.stderr.strip().splitlines()[-1].startswith("error: --method: fw_dtp_bn batch-normalises its layers")
