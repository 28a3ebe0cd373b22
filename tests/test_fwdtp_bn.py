"""FWDTP-BN ('fw_dtp_bn'), FW-DTP's authors' default and headline variant, as they compute it (docs/semantics.md §7.13).

The reference is a float64 NumPy transcription of TatsukichiShibuya/Fixed-Weight-Difference-Target-Propagation,
algorithm FWDTP-BN, in its own (PyTorch) conventions (a weight is (out, in), a layer computes x Wᵀ):
* `utils.batch_normalization`: (x − mean)/(std + 1e-12) over the batch's rows, `torch.std` (Bessel's correction),
  no affine parameters, no running statistics;
* `Main.set_params`: ff2 'tanh-BN' (hidden layers), the last layer `--forward_last_activation` ('linear' by default,
  'linear-BN' in their README's MNIST command), bf1 a fixed `random_function` with 'tanh-BN', bf2 `difference` with
  'linear-BN';
* `tp_net.compute_target` (CE summed over the batch, targets down the layers through bf1 then bf2) and
  `update_weights` (the summed MSE of each layer, differentiated through the batch statistics, stepped with lr/B);
* `net.test`: each evaluation batch normalised by its own statistics (`forward(x, update=False)`).
Their stepsize acts on the gradient of the summed loss, ours on e_L = ∂(mean loss)/∂h_L: η̂ = stepsize·B.
"""
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

from conftest import make_batch, onehot, softmax, to_np
from tp_keras.core import diagnostics as D
from tp_keras.core import step as tp_step
from tp_keras.core.conv_networks import ConvChainNetwork
from tp_keras.core.convert import ConversionError
from tp_keras.core.convert import from_keras as to_tp_model
from tp_keras.core.layers import BATCH_NORM_EPSILON, TPDense, batch_normalize
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchSGD
from tp_keras.core.rules import RULES, RuleError
from tp_keras.core.rules.fw_dtp import FW_DTP, FW_DTP_BN

SIZES = (7, 6, 5, 4, 3)  # n_0 .. n_L
BATCH = 6
STEPSIZE = 0.04  # the authors' --stepsize (their README's MNIST command)
LR = 0.1  # their --learning_rate


def _model(rule="fw_dtp_bn", seed=3, dtype="float64", **kwargs):
    return TPModel(rule, SIZES[0], list(SIZES[1:-1]), SIZES[-1], seed=seed, dtype=dtype, **kwargs)


# --- the authors' code, transcribed ------------------------------------------------------------------------------

def authors_bn(x):
    """utils.batch_normalization(x): mean and torch.std (ddof 1) over dim 0, ε = 1e-12 on the std."""
    return (x - x.mean(axis=0)) / (x.std(axis=0, ddof=1) + 1e-12)


def authors_bn_backward(x, grad):
    """∂(Σ grad·authors_bn(x))/∂x, as autograd differentiates batch_normalization (through the mean and the std)."""
    n = x.shape[0]
    centred = x - x.mean(axis=0)
    std = np.sqrt((centred ** 2).sum(axis=0) / (n - 1))
    denominator = std + 1e-12
    d_centred = grad / denominator - (grad * centred).sum(axis=0) / denominator ** 2 * centred / ((n - 1) * std)
    return d_centred - d_centred.mean(axis=0)


class AuthorsFWDTPBN:
    """tp_net with FWDTP-BN's params from a TPModel's weights: forward weights W_d (out, in), fixed feedback B_d
    (in, out) of layer d (bf1: u ↦ BN(tanh(u B_dᵀ)))."""

    def __init__(self, model, last="linear"):
        self.w = [to_np(layer.kernel).T for layer in model.tp_layers]
        self.back = [None] + [to_np(layer.feedback_kernel).T for layer in model.tp_layers[1:]]
        self.last = last
        self.depth = len(self.w)

    def layer_forward(self, d, h):
        """tp_layer.forward: ff1 identity, then ff2 = act(h W_dᵀ) with 'tanh-BN', or the last layer's act."""
        a = h @ self.w[d].T
        if d < self.depth - 1:
            return authors_bn(np.tanh(a))
        return authors_bn(a) if self.last == "linear-BN" else a

    def forward(self, x):
        outputs, h = [], x
        for d in range(self.depth):
            h = self.layer_forward(d, h)
            outputs.append(h)
        return outputs

    def bf1(self, d, u):
        return authors_bn(np.tanh(u @ self.back[d].T))

    def compute_target(self, outputs, labels, stepsize):
        targets = [None] * self.depth
        targets[-1] = outputs[-1] - stepsize * (softmax(outputs[-1]) - onehot(labels, outputs[-1].shape[1]))
        for d in reversed(range(self.depth - 1)):
            plane = self.bf1(d + 1, targets[d + 1])
            # difference_function: upper = layers[d+1].forward(original, update=False), rec = bf1(upper)
            rec = self.bf1(d + 1, self.layer_forward(d + 1, outputs[d]))
            targets[d] = authors_bn(plane + outputs[d] - rec)  # 'linear-BN'
        return targets

    def weight_grads(self, x, outputs, targets):
        """∂ MSELoss(sum)(target_d, output_d) / ∂W_d for every layer, through the batch statistics; (out, in)."""
        grads, inputs = [], [x] + outputs[:-1]
        for d in range(self.depth):
            a = inputs[d] @ self.w[d].T
            hidden = d < self.depth - 1
            z = np.tanh(a) if hidden else a
            g = 2.0 * (outputs[d] - targets[d])
            if hidden or self.last == "linear-BN":
                g = authors_bn_backward(z, g)
            if hidden:
                g = g * (1.0 - z ** 2)
            grads.append(g.T @ inputs[d])
        return grads

    def test(self, batches):
        """net.test: predictions batch by batch, then CE_sum / N and the accuracy."""
        pred = np.concatenate([self.forward(x)[-1] for x, _ in batches])
        labels = np.concatenate([y for _, y in batches])
        log_softmax = pred - pred.max(axis=1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
        loss = -log_softmax[np.arange(len(labels)), labels].sum() / len(labels)
        return pred, loss, float((pred.argmax(axis=1) == labels).mean())


# --- the rule and its layers -------------------------------------------------------------------------------------

def test_fw_dtp_bn_is_fw_dtp_with_batch_norm_on_hidden_layers_feedback_and_targets():
    assert RULES["fw_dtp_bn"] is FW_DTP_BN
    assert FW_DTP_BN == dataclasses.replace(FW_DTP, name="fw_dtp_bn", summary=FW_DTP_BN.summary, batch_norm=True,
                                            feedback_init="uniform_1e-3")  # the authors' B ~ U(±1e-3)
    assert FW_DTP_BN.batch_dependent and not FW_DTP.batch_dependent and not FW_DTP_BN.output_batch_norm
    model = _model()
    layers = model.tp_layers
    assert [layer.batch_norm for layer in layers] == [True, True, True, False]  # the logits stay linear
    assert [layer.feedback_batch_norm for layer in layers] == [False, True, True, True]
    assert all(layer.bias is None and layer.feedback_bias_var is None for layer in layers)
    assert model.feedback_variables == [] and len(model.all_feedback_variables) == len(layers) - 1
    for layer in layers[1:]:
        b = to_np(layer.feedback_kernel)
        assert np.abs(b).max() <= 1e-3 and np.abs(b).max() > 5e-4  # U(±1e-3)
    with_output_bn = _model(dataclasses.replace(FW_DTP_BN, output_batch_norm=True))
    assert [layer.batch_norm for layer in with_output_bn.tp_layers] == [True] * 4


def test_batch_normalize_is_the_authors_batch_normalization():
    z = np.random.default_rng(0).normal(size=(9, 4)) * [1.0, 3.0, 0.1, 10.0] + [0.0, 2.0, -1.0, 5.0]
    np.testing.assert_allclose(to_np(batch_normalize(tf.constant(z))), authors_bn(z), rtol=1e-14, atol=1e-14)
    assert BATCH_NORM_EPSILON == 1e-12
    # One row has no standard deviation (0/0): NaN, as torch.std of one row.
    assert np.all(np.isnan(to_np(batch_normalize(tf.constant(z[:1])))))


@pytest.mark.parametrize("last", ["linear", "linear-BN"])
def test_one_batch_is_the_authors_forward_targets_gradients_and_sgd_step(last):
    """FWDTP-BN in float64 against the transcription: the forward pass with BN, compute_target, the gradients of
    update_weights through the batch statistics and one SGD step W ← W − (lr/B)·∂MSE_sum/∂W, to 1e-12."""
    rule = FW_DTP_BN if last == "linear" else dataclasses.replace(FW_DTP_BN, output_batch_norm=True)
    model = _model(rule, target_stepsize=STEPSIZE * BATCH)
    authors = AuthorsFWDTPBN(model, last)
    x, labels = make_batch(seed=6, batch=BATCH)
    outputs = authors.forward(x)
    targets = authors.compute_target(outputs, labels, STEPSIZE)
    grads = authors.weight_grads(x, outputs, targets)

    updates = tp_step.compute_updates(model, x, labels)
    for got, expected in zip(updates.activations[1:], outputs):
        np.testing.assert_allclose(to_np(got), expected, rtol=1e-12, atol=1e-13)
    for got, expected in zip(updates.targets, targets):
        np.testing.assert_allclose(to_np(got), expected, rtol=1e-12, atol=1e-13)
    for got, expected in zip(updates.forward_grads, grads):
        np.testing.assert_allclose(to_np(got), expected.T / BATCH, rtol=1e-12, atol=1e-13)
    # Normalised targets: every column of a hidden target has mean 0 and std 1 (what a missing BN would break).
    for target in updates.targets[:-1]:
        np.testing.assert_allclose(to_np(target).mean(axis=0), 0.0, atol=1e-13)
        np.testing.assert_allclose(to_np(target).std(axis=0, ddof=1), 1.0, rtol=1e-10)

    tp_step.train_step(model, TorchSGD(LR, precision="float64"), None, tf.constant(x), tf.constant(labels))
    for layer, w, g in zip(model.tp_layers, authors.w, grads):
        np.testing.assert_allclose(to_np(layer.kernel), (w - LR / BATCH * g).T, rtol=1e-12, atol=1e-13)


def test_evaluation_normalises_each_batch_by_its_own_statistics():
    """predict and evaluate as the authors' net.test: every batch of `batch_size` rows (the last one shorter) by its
    own statistics; the loss is CE summed over all samples / N. A prediction therefore depends on its batch."""
    model = _model()
    model.compile(forward_optimizer=TorchSGD(LR, precision="float64"))
    authors = AuthorsFWDTPBN(model)
    x, labels = make_batch(seed=4, batch=10)
    x = x.astype(np.float32).astype(np.float64)  # Keras' predict and evaluate feed floatx (float32) inputs
    batches = [(x[i:i + 4], labels[i:i + 4]) for i in range(0, 10, 4)]  # 4, 4, 2 rows
    expected, loss, accuracy = authors.test(batches)
    np.testing.assert_allclose(model.predict(x, batch_size=4, verbose=0), expected, rtol=1e-12, atol=1e-13)
    # Keras' loss tracker (a Mean metric) accumulates in float32.
    results = model.evaluate(x, labels, batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["loss"], loss, rtol=1e-6)
    whole = model.predict(x, batch_size=10, verbose=0)
    np.testing.assert_allclose(whole, authors.forward(x)[-1], rtol=1e-12, atol=1e-13)
    assert np.max(np.abs(whole[:4] - expected[:4])) > 1e-3  # other rows in the batch, other outputs
    assert 0.0 <= accuracy <= 1.0


def test_the_launchers_evaluation_normalises_each_batch_of_batch_size():
    """run.passes.evaluate (the launcher's val/test numbers): batches of --batch_size in order, each by its own
    statistics, as the authors' loaders (shuffle=False) and net.test; float64, so to 1e-12."""
    from tp_keras.run.data import Split
    from tp_keras.run.passes import evaluate
    model = _model()
    authors = AuthorsFWDTPBN(model)
    x, labels = make_batch(seed=5, batch=11)
    _, loss, accuracy = authors.test([(x[i:i + 4], labels[i:i + 4]) for i in range(0, 11, 4)])  # 4, 4, 3 rows
    result = evaluate(tp_step.Trainer(model, TorchSGD(LR, precision="float64")),
                      Split(x, labels.astype(np.int32)), batch_size=4)
    np.testing.assert_allclose(result["loss"], loss, rtol=1e-12)
    assert result["acc"] == accuracy


# --- saving and resuming -----------------------------------------------------------------------------------------

def _train(trainer, steps, first=0):
    """`steps` eager training steps (the compiled step's numbers are those of the one-batch test; eager costs no
    tracing) on batches seeded first.."""
    for s in range(first, first + steps):
        x, labels = make_batch(seed=1 + s, batch=BATCH)
        tp_step.train_step(trainer.model, trainer.forward_optimizer, None, tf.constant(x), tf.constant(labels))
    return trainer


def _trainer(model):
    return tp_step.Trainer(model, TorchSGD(LR, momentum=0.9, precision=model.compute_dtype))


def test_save_and_load_keep_fwdtp_bn_bit_for_bit(tmp_path):
    model = _model(dataclasses.replace(FW_DTP_BN, output_batch_norm=True), dtype="float32")
    _train(_trainer(model), 2)
    path = str(tmp_path / "fwdtp_bn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.rule == model.rule and loaded.rule.output_batch_norm
    assert [(layer.batch_norm, layer.feedback_batch_norm) for layer in loaded.tp_layers] == \
        [(layer.batch_norm, layer.feedback_batch_norm) for layer in model.tp_layers]
    for a, b in zip(model.variables, loaded.variables):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    x, labels = make_batch(seed=9, batch=BATCH)
    np.testing.assert_array_equal(model.predict(x, batch_size=BATCH, verbose=0),
                                  loaded.predict(x, batch_size=BATCH, verbose=0))
    for a, b in zip(tp_step.compute_updates(model, x, labels).targets,
                    tp_step.compute_updates(loaded, x, labels).targets):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    # A TPDense config without the keys (saved before they existed) loads without batch normalisation.
    config = loaded.tp_layers[1].get_config()
    assert config["batch_norm"] and config["feedback_batch_norm"]
    plain = _model("fw_dtp").tp_layers[1].get_config()
    assert "batch_norm" not in plain and not TPDense.from_config(plain).batch_norm


def test_checkpoint_resume_is_bit_identical(tmp_path):
    """FWDTP-BN keeps no statistics between batches (no running mean or variance): the checkpoint's weights and
    optimizer state are its whole state, and training resumed from it continues bit for bit."""
    from tp_keras.run.checkpoint import load_checkpoint, save_checkpoint
    from tp_keras.run.config import Config
    config = Config(method="fw_dtp_bn", num_hidden=3, size_hidden=5, epochs=2)
    straight = _model(dtype="float32")
    trainer = _train(_trainer(straight), 2)
    path = str(tmp_path / "checkpoint.npz")
    save_checkpoint(path, trainer, epoch=1, passes=1, history=[], config=config)
    names = [v.path for v in straight.variables]
    assert not any("moving" in n or "running" in n for n in names), names
    _train(trainer, 2, first=2)

    resumed = _model(dtype="float32", seed=11)  # other initial weights: the checkpoint must replace them all
    resumed_trainer = _trainer(resumed)
    load_checkpoint(path, resumed_trainer, config)
    _train(resumed_trainer, 2, first=2)
    for a, b in zip(straight.variables, resumed.variables):
        np.testing.assert_array_equal(to_np(a), to_np(b))


# --- refusals ------------------------------------------------------------------------------------------------------

def _one_line(err) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


@pytest.mark.parametrize("change, words", [
    (dict(batch_norm=False, output_batch_norm=True), "set batch_norm=True too"),
    (dict(feedback_loss="drl", feedback_trained=True), "batch_norm is built for FWDTP-BN"),
    (dict(target_rule="plain"), "batch_norm is built for FWDTP-BN"),
    (dict(batch_norm="yes"), "batch_norm='yes' must be True or False"),
])
def test_bad_batch_norm_rules_are_refused_in_one_line(change, words):
    with pytest.raises(RuleError) as err:
        dataclasses.replace(FW_DTP_BN, **change)
    assert words in _one_line(err)


class _Replicas:
    num_replicas_in_sync = 2


def test_several_replicas_are_refused(monkeypatch):
    """Each replica would normalise its own shard: the layers refuse to trace in a context of several replicas
    (Keras fit or predict under a strategy), and the launcher's distributed trainer refuses before building."""
    from tp_keras.run import distribute
    model = _model(dtype="float32")
    x, _ = make_batch(seed=2, batch=BATCH)
    model(x)
    monkeypatch.setattr(tf.distribute, "get_replica_context", lambda: _Replicas())
    with pytest.raises(ValueError) as err:
        model(x)
    assert "batch normalisation over one replica's shard" in _one_line(err) and "2 replicas" in str(err.value)
    with pytest.raises(ValueError) as err:
        model.tp_layers[1].feedback(tf.constant(np.zeros((BATCH, SIZES[2]), np.float32)))
    assert "train and evaluate it on one device" in _one_line(err)
    monkeypatch.undo()

    class TwoReplicas:
        num_replicas_in_sync = 2
        extended = None

        def scope(self):
            return tf.distribute.get_strategy().scope()

    monkeypatch.setattr(distribute, "is_tpu_strategy", lambda strategy: False)
    with pytest.raises(distribute.DistributeError) as err:
        distribute.DistributedTrainer(lambda: _model(dtype="float32"), lambda: TorchSGD(LR), None, TwoReplicas())
    assert "'fw_dtp_bn' normalises each layer by the batch's statistics" in _one_line(err)


def test_angles_conv_networks_and_conversion_are_refused():
    model = _model()
    x, labels = make_batch(seed=3, batch=BATCH)
    updates = tp_step.compute_updates(model, x, labels)
    for call in (lambda: D.angles(model, updates, labels), lambda: D.gnt_angles_for_dampings(model, updates, labels,
                                                                                             [0.0])):
        with pytest.raises(ValueError) as err:
            call()
        assert "drop the angle logging (--log_angles)" in _one_line(err)
    with pytest.raises(ValueError) as err:  # s'(a) cannot be read from a normalised output
        model.tp_layers[0].activation_derivative(updates.activations[1])
    assert "the batch statistics couple the samples" in _one_line(err)
    with pytest.raises(ValueError) as err:
        ConvChainNetwork(FW_DTP_BN, (8, 8, 1), [{"filters": 2}, {"units": 3}])
    assert "built for the MLP only" in _one_line(err)
    keras_model = keras.Sequential([keras.Input((SIZES[0],)), keras.layers.Dense(4, activation="tanh",
                                                                                 use_bias=False),
                                    keras.layers.Dense(3, use_bias=False)])
    with pytest.raises(ConversionError) as err:
        to_tp_model(keras_model, "fw_dtp_bn")
    assert "build a TPModel('fw_dtp_bn', ...) instead" in _one_line(err)


def test_the_launcher_takes_fw_dtp_bn_and_refuses_angles_and_the_conv_chain_in_one_line():
    from tp_keras.run.config import Config, ConfigError
    from tp_keras.run.launch import FLAGS
    assert "fw_dtp_bn" in FLAGS["method"].parser.enum_values  # --method's choices are the registry's names
    config = Config.paper("fw_dtp_bn").validate()
    assert config.method == "fw_dtp_bn" and config.target_stepsize == Config.paper("fw_dtp").target_stepsize
    with pytest.raises(ConfigError) as err:
        Config.paper("fw_dtp_bn", log_angles=True).validate()
    assert _one_line(err).startswith("--log_angles: fw_dtp_bn batch-normalises its layers")
    with pytest.raises(ConfigError) as err:
        Config.paper("fw_dtp_bn", architecture="conv", dataset="fashion_mnist", conv_channels=(4,)).validate()
    assert _one_line(err).startswith("--method: fw_dtp_bn has no conv chain")


def test_the_launchers_output_batch_norm_builds_the_linear_bn_rule_and_is_refused_without_batch_norm():
    """--output_batch_norm (the authors' linear-BN last layer) reaches the model's rule and its output layer; a rule
    without batch_norm refuses it in one line naming the fix."""
    from tp_keras.run import launch
    from tp_keras.run.config import ConfigError
    from tp_keras.run.factories import build_model

    def parse(*argv):
        launch.FLAGS(["launch", *argv])
        try:
            return launch.config_from_flags().validate()
        finally:
            launch.FLAGS.unparse_flags()

    class _Data:  # what build_model reads of a Dataset for the MLP
        train = type("Split", (), {"x": np.zeros((1, 6))})()
        num_outputs, task = 3, "classification"

    for argv, expected in (((), False), (("--output_batch_norm",), True), (("--nooutput_batch_norm",), False)):
        config = parse("--method=fw_dtp_bn", "--num_hidden=2", "--size_hidden=4", *argv)
        assert config.output_batch_norm is expected and config.rule.output_batch_norm is expected
        model = build_model(config, _Data())
        assert model.rule.output_batch_norm is expected and model.tp_layers[-1].batch_norm is expected
        assert all(layer.batch_norm for layer in model.tp_layers[:-1])
    with pytest.raises(ConfigError) as err:
        parse("--method=fw_dtp", "--output_batch_norm")
    assert _one_line(err).startswith("--output_batch_norm:") and "--method=fw_dtp_bn" in _one_line(err)

_TWO_REPLICAS = r'''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchSGD
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
x = np.random.default_rng(0).normal(size=(8, 7)).astype("float32")
y = (np.arange(8) % 3).astype("int32")
with strategy.scope():
    model = TPModel("fw_dtp_bn", 7, [6, 5], 3, seed=1)
    model.compile(forward_optimizer=TorchSGD(0.1))
for name, call in (("fit", lambda: model.fit(x, y, batch_size=8, epochs=1, verbose=0)),
                   ("predict", lambda: model.predict(x, batch_size=8, verbose=0))):
    try:
        call()
        print("NOT REFUSED", name)
    except ValueError as err:
        print("REFUSED", name, str(err).replace("\n", "<newline>"))
'''


@pytest.mark.slow
def test_keras_fit_and_predict_under_two_replicas_are_refused_in_one_line():
    """The refusal where it matters: Keras `fit` and `predict` inside a MirroredStrategy of 2 logical CPUs (which
    must be configured before TensorFlow starts: a subprocess)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stdout.splitlines() if "REFUSED" in line]
    assert proc.returncode == 0 and len(lines) == 2, proc.stderr[-3000:]
    for name, line in zip(("fit", "predict"), lines):
        assert line.startswith(f"REFUSED {name} TPDense 'layer_1': batch normalisation over one replica's shard"), line
        assert "<newline>" not in line and "(2 replicas)" in line


# --- DTP-BN ('dtp_bn'): FWDTP-BN with its feedback trained (docs/semantics.md §7.14) ----------------------------------

SIGMA = 0.01  # the authors' --std_backward
LR_FB = 0.05  # an --learning_rate_backward large enough that the feedback steps visibly move Q


class SequenceNoise:
    """A rule's noise component returning known N(0, 1) blocks (NumPy's, rounded to float32 as the library's draw
    is), a new one on every call, in order: what each feedback round of a batch draws."""

    def __init__(self, draws):
        self.draws = [d.astype(np.float32) for d in draws]
        self.calls = 0

    def __call__(self, shape, seed):
        assert tuple(int(s) for s in shape) == self.draws[self.calls].shape
        self.calls += 1
        return tf.constant(self.draws[self.calls - 1])


class AuthorsDTPBN(AuthorsFWDTPBN):
    """tp_net with DTP-BN's params: bf1 a trained `parameterized_function` with 'tanh-BN' (Q_d, (in, out) in their
    convention), the rest as FWDTP-BN's; `train_back_weights(loss_type='DTP')` and the SGD step of `update_backward`."""

    def train_back_weights(self, x, noise, lrb):
        """One feedback step of every layer d = depth−1..1: q = h_{d−1} + noise, h = bf1(layers[d].forward(q)),
        loss = MSELoss(sum)(h, q), Q_d ← Q_d − (lrb/B)·∂loss/∂Q_d (through bf1's batch statistics). Returns the
        losses, layer 1 first."""
        outputs = self.forward(x)
        losses = [None] * (self.depth - 1)
        for d in reversed(range(1, self.depth)):
            q = outputs[d - 1] + noise[d - 1]
            q_upper = self.layer_forward(d, q)
            z = np.tanh(q_upper @ self.back[d].T)
            h = authors_bn(z)
            losses[d - 1] = ((h - q) ** 2).sum()
            da = authors_bn_backward(z, 2.0 * (h - q)) * (1.0 - z ** 2)
            self.back[d] = self.back[d] - lrb / len(x) * (da.T @ q_upper)
        return losses


def test_dtp_bn_is_fwdtp_bn_with_its_feedback_trained_first():
    from tp_keras.core.rules.dtp_bn import DTP_BN
    assert RULES["dtp_bn"] is DTP_BN
    assert DTP_BN == dataclasses.replace(
        FW_DTP_BN, name="dtp_bn", summary=DTP_BN.summary, feedback_loss="reconstruction_summed",
        feedback_trained=True, feedback_init="uniform_1e-2", feedback_first=True, feedback_iterations=5, sigma=0.01)
    assert DTP_BN.batch_dependent and DTP_BN.trains_feedback and DTP_BN.uses("feedback_iterations")
    model = _model("dtp_bn")
    layers = model.tp_layers
    assert [layer.batch_norm for layer in layers] == [True, True, True, False]
    assert [layer.feedback_batch_norm for layer in layers] == [False, True, True, True]
    assert all(layer.bias is None and layer.feedback_bias_var is None for layer in layers)
    assert model.feedback_variables == [layer.feedback_kernel for layer in layers[1:]]  # trained, no bias
    for layer in layers[1:]:
        q = to_np(layer.feedback_kernel)
        assert np.abs(q).max() <= 1e-2 and np.abs(q).max() > 5e-3  # the authors' parameterized 'uniform': U(±1e-2)


@pytest.mark.parametrize("iterations", [5, 2])
def test_dtp_bn_one_batch_is_the_authors_feedback_steps_targets_and_forward_step(iterations):
    """DTP-BN in float64 against the transcription of their `tp_net.train` for one batch: `iterations` feedback
    steps (`train_back_weights`, loss 'DTP', fresh noise each), then `compute_target` with the new Q and
    `update_weights`: the first step's losses, every Q after the steps, every W after the forward SGD step, to
    1e-12."""
    model = _model("dtp_bn", sigma=SIGMA, target_stepsize=STEPSIZE * BATCH, feedback_iterations=iterations)
    authors = AuthorsDTPBN(model)
    rng = np.random.default_rng(8)
    draws = [rng.normal(size=(BATCH, sum(SIZES[1:-1]))) for _ in range(iterations)]
    noise = SequenceNoise(draws)
    model.set_rule(dataclasses.replace(model.rule, noise=noise))
    x, labels = make_batch(seed=6, batch=BATCH)

    splits = np.cumsum(SIZES[1:-2])
    first_losses = None
    for draw in noise.draws:
        losses = authors.train_back_weights(x, [SIGMA * e for e in np.split(draw.astype(np.float64), splits,
                                                                            axis=1)], LR_FB)
        first_losses = losses if first_losses is None else first_losses
    outputs = authors.forward(x)
    targets = authors.compute_target(outputs, labels, STEPSIZE)
    grads = authors.weight_grads(x, outputs, targets)

    updates = tp_step.batch_updates(model, TorchSGD(LR, precision="float64"), TorchSGD(LR_FB, precision="float64"),
                                    tf.constant(x), tf.constant(labels), unroll_feedback_rounds=True)
    assert noise.calls == iterations
    np.testing.assert_allclose([to_np(v) for v in updates.feedback_losses], np.array(first_losses) / BATCH,
                               rtol=1e-12)
    for layer, q in zip(model.tp_layers[1:], authors.back[1:]):
        np.testing.assert_allclose(to_np(layer.feedback_kernel), q.T, rtol=1e-12, atol=1e-14)
    for got, expected in zip(updates.targets, targets):
        np.testing.assert_allclose(to_np(got), expected, rtol=1e-12, atol=1e-13)
    for layer, w, g in zip(model.tp_layers, authors.w, grads):
        np.testing.assert_allclose(to_np(layer.kernel), (w - LR / BATCH * g).T, rtol=1e-12, atol=1e-13)
    # The feedback steps moved every Q (the comparison above is not of untouched initial values).
    assert all(not np.allclose(q, to_np(layer.feedback_kernel).T)
               for layer, q in zip(model.tp_layers[1:], AuthorsDTPBN(_model("dtp_bn")).back[1:]))


# --- the authors' configurations as flagfiles (launch/*_FWDTPBN.flags, launch/*_DTPBN.flags) -------------------------

LAUNCH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "launch")
FLAGFILES = {f"{data}_{algorithm}": (data, algorithm) for data in ("mnist", "fashion_mnist")
             for algorithm in ("FWDTPBN", "DTPBN")}
# Their README's MNIST command (`--learning_rate=0.1 --stepsize=0.04 --test`) and Main.py's defaults (batch 256,
# 100 epochs, --depth=6 --hid_dim=256; DTP-BN: --learning_rate_backward=1e-3 --std_backward=1e-2
# --epochs_backward=5), in the launcher's terms: lr on the mean gradient (their lr/B on the summed loss), the target
# step on the mean loss (stepsize·B).
AUTHORS_VALUES = dict(num_hidden=5, size_hidden=256, optimizer="sgd", momentum=0.0, lr=0.1, normalize_lr=False,
                      target_stepsize=0.04 * 256, forward_wd=0.0, batch_size=256, epochs=100, no_val_set=True,
                      precision="float32")
AUTHORS_DTP_BN_FEEDBACK = dict(optimizer_fb="sgd", momentum_fb=0.0, lr_fb=1e-3, feedback_wd=0.0, sigma=0.01,
                               feedback_iterations=5, epochs_fb=1)


def _parse_flagfile(name):
    from tp_keras.run import launch
    launch.FLAGS(["launch", f"--flagfile={os.path.join(LAUNCH_DIR, name + '.flags')}"])
    try:
        return launch.config_from_flags().validate(), launch.FLAGS.cell
    finally:
        launch.FLAGS.unparse_flags()


def test_one_flagfile_per_authors_configuration():
    names = sorted(f[:-len(".flags")] for f in os.listdir(LAUNCH_DIR) if f.endswith(("_FWDTPBN.flags",
                                                                                       "_DTPBN.flags")))
    assert names == sorted(FLAGFILES)


@pytest.mark.parametrize("name", sorted(FLAGFILES))
def test_authors_flagfile_header_and_values(name):
    """Header first (what it reproduces, the paper's number or where to read it, the setting, the cost, the
    command), then one flag per line; the launcher reads exactly the authors' values."""
    data, algorithm = FLAGFILES[name]
    with open(os.path.join(LAUNCH_DIR, name + ".flags"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert lines[:len(header)] == header and lines[0].startswith(f"# {name}: Shibuya et al. (AAAI 2023)")
    assert all(line.startswith("--") for line in lines[len(header):]) and f"--cell={name}" in lines
    assert all(len(line) <= 120 for line in lines)
    comment = " ".join(line[2:].strip() for line in header)
    for part in ("Paper: ", "Setting: ", "Departure", "Cost: measured", "s/batch",
                 f"--algorithm={'FWDTP-BN' if algorithm == 'FWDTPBN' else 'DTP-BN'}"):
        assert part in comment, (name, part)
    assert header[-1] == (f"# Run: python -m tp_keras.launch --flagfile=launch/{name}.flags "
                          f"--data_dir=../shared/data/{data}")
    config, cell = _parse_flagfile(name)
    assert cell == name and config.dataset == data
    assert config.method == {"FWDTPBN": "fw_dtp_bn", "DTPBN": "dtp_bn"}[algorithm]
    assert config.output_batch_norm is (algorithm == "FWDTPBN")  # their linear-BN is FWDTP-BN's only
    expected = dict(AUTHORS_VALUES, **(AUTHORS_DTP_BN_FEEDBACK if algorithm == "DTPBN" else {}))
    assert {key: getattr(config, key) for key in expected} == expected


@pytest.mark.parametrize("name", sorted(FLAGFILES))
def test_authors_flagfile_builds_its_model_and_takes_one_training_step(name):
    """The file's model (784-256x5-10, its rule, the logits' BN) and optimizers take one finite training step on 8
    random samples: every forward weight moves, and DTP-BN's feedback weights too."""
    from tp_keras.run.data import Dataset, Split
    from tp_keras.run.factories import build_model, build_trainer
    config, _ = _parse_flagfile(name)
    split = Split(np.zeros((1, 784), "float32"), np.zeros((1,), "int32"))
    dataset = Dataset(name=config.dataset, train=split, val=None, test=split, num_outputs=10,
                      task="classification", image_shape=(28, 28, 1))
    model = build_model(config, dataset)
    trainer = build_trainer(config, model)
    assert [layer.units for layer in model.tp_layers] == [256] * 5 + [10]
    assert model.tp_layers[-1].batch_norm is config.output_batch_norm
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 784)).astype("float32"), np.arange(8, dtype="int32")
    before = [to_np(v) for v in model.forward_variables + model.feedback_variables]
    out = tp_step.train_step(model, trainer.forward_optimizer, trainer.feedback_optimizer, x, y)
    assert np.isfinite(float(out["loss"]))
    after = [to_np(v) for v in model.forward_variables + model.feedback_variables]
    assert all(np.all(np.isfinite(a)) and not np.array_equal(a, b) for a, b in zip(after, before))
    assert bool(model.feedback_variables) is (config.method == "dtp_bn")


@pytest.mark.slow  # two compiled feedback-first trainers: ~15 s of tracing on the 2-core CPU
def test_dtp_bn_checkpoint_resume_is_bit_identical(tmp_path):
    """DTP-BN's state is its weights, both optimizers' (SGD with momentum here, so they have some) and the noise
    generator's: training resumed from a checkpoint continues bit for bit, the feedback steps' noise included."""
    from tp_keras.run.checkpoint import load_checkpoint, save_checkpoint
    from tp_keras.run.config import Config
    config = Config(method="dtp_bn", num_hidden=3, size_hidden=5, epochs=2)

    def trainer_of(model):
        return tp_step.Trainer(model, TorchSGD(LR, momentum=0.9, precision=model.compute_dtype),
                               TorchSGD(LR_FB, momentum=0.9, precision=model.compute_dtype))

    def train(trainer, first, steps=2):
        for s in range(first, first + steps):
            x, labels = make_batch(seed=1 + s, batch=BATCH)
            trainer.train_step(tf.constant(x, tf.float32), tf.constant(labels))

    straight = _model("dtp_bn", dtype="float32")
    trainer = trainer_of(straight)
    train(trainer, 0)
    path = str(tmp_path / "checkpoint.npz")
    save_checkpoint(path, trainer, epoch=1, passes=1, history=[], config=config)
    train(trainer, 2)
    resumed = _model("dtp_bn", dtype="float32", seed=11)  # other initial weights: the checkpoint must replace them
    resumed_trainer = trainer_of(resumed)
    load_checkpoint(path, resumed_trainer, config)
    train(resumed_trainer, 2)
    for a, b in zip(straight.variables + straight.feedback_variables, resumed.variables + resumed.feedback_variables):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    assert not np.array_equal(to_np(straight.tp_layers[1].feedback_kernel),
                              to_np(_model("dtp_bn", dtype="float32").tp_layers[1].feedback_kernel))


def test_dtp_bn_is_refused_where_fwdtp_bn_is_and_the_launcher_takes_it():
    from tp_keras.core.rules.dtp_bn import DTP_BN
    from tp_keras.run.config import Config, ConfigError
    with pytest.raises(ValueError) as err:
        ConvChainNetwork(DTP_BN, (8, 8, 1), [{"filters": 2}, {"units": 3}])
    assert "built for the MLP only" in _one_line(err)
    keras_model = keras.Sequential([keras.Input((SIZES[0],)), keras.layers.Dense(4, activation="tanh",
                                                                                 use_bias=False),
                                    keras.layers.Dense(3, use_bias=False)])
    with pytest.raises(ConversionError) as err:
        to_tp_model(keras_model, "dtp_bn")
    assert "build a TPModel('dtp_bn', ...) instead" in _one_line(err)
    config = Config.paper("dtp_bn").validate()  # DTP's MNIST configuration, as fw_dtp_bn
    assert (config.lr, config.lr_fb, config.sigma) == (Config.paper("dtp").lr, Config.paper("dtp").lr_fb,
                                                      Config.paper("dtp").sigma)
    assert config.feedback_iterations is None  # the rule's 5
    for change, starts in ((dict(log_angles=True), "--log_angles: dtp_bn batch-normalises its layers"),
                           (dict(architecture="conv", dataset="fashion_mnist", conv_channels=(4,)),
                            "--method: dtp_bn has no conv chain")):
        with pytest.raises(ConfigError) as err:
            Config.paper("dtp_bn", **change).validate()
        assert _one_line(err).startswith(starts)


@pytest.mark.slow  # three launcher processes
def test_the_dtp_bn_flagfile_runs_end_to_end_and_resumes_bit_identically(mnist_dir, tmp_path):
    """launch/mnist_DTPBN.flags on the 100-image MNIST look-alike (a small net): the feedback-only epoch, 2 epochs,
    finite metrics; run 1 epoch then --resume to 2, and the metrics equal the straight run's."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    common = [sys.executable, "-m", "tp_keras.launch", f"--flagfile={os.path.join(LAUNCH_DIR, 'mnist_DTPBN.flags')}",
              f"--data_dir={mnist_dir}", "--num_hidden=2", "--size_hidden=8", "--batch_size=16", "--progress=false"]

    def run(workdir, *argv):
        done = subprocess.run(common + [f"--workdir={tmp_path / workdir}", *argv], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return [json.loads(line) for line in (tmp_path / workdir / "metrics.jsonl").read_text().splitlines()]

    straight = run("straight", "--epochs=2")
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["method"] == "dtp_bn"
    assert [row["epoch"] for row in straight] == [0, 1, 2]  # the feedback-only epoch (--epochs_fb=1), then 2
    assert all(np.isfinite(row["test_loss"]) for row in straight[1:])
    run("resumed", "--epochs=1")
    resumed = run("resumed", "--epochs=2", "--resume")
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    assert [{k: row.get(k) for k in keys} for row in resumed] == [{k: row.get(k) for k in keys} for row in straight]
