"""Networks (tp_keras/core/networks.py: MLPNetwork, CNNNetwork): the parameters and their maps, trained by a TPModel with a
rule. `CNNModel(...)` is `TPModel(rule, network=CNNNetwork(...))`; `TPModel(...)` builds an `MLPNetwork`."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import fast_tier
from tp_keras.core.cnn import CNNModel
from tp_keras.core.networks import CNNNetwork
from tp_keras.core.model import TPModel
from tp_keras.core.networks import MLPNetwork
from tp_keras.core.optimizers import TorchAdam
from tp_keras.core.rules import get_rule
from tp_keras.reference.facts import CNN_METHODS
from tp_keras.core.step import Trainer

IMAGE, CHANNELS, FC, OUT = (6, 6, 1), (2,), (4,), 3


def _train(model, x, y, steps=3):
    forward = TorchAdam(1e-2, 0.9, 0.999, 1e-6, precision=model.compute_dtype)
    feedback = TorchAdam(1e-2, 0.9, 0.999, 1e-6, precision=model.compute_dtype) if model.feedback_variables else None
    trainer = Trainer(model, forward, feedback)
    for _ in range(steps):
        trainer.train_step(tf.constant(x), tf.constant(y))
    return [v.numpy() for v in model.variables]


def _same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# Every CNN rule; the fast tier's two: one without feedback, one with a trained direct feedback.
@pytest.mark.parametrize("method", fast_tier(CNN_METHODS, fast=("bp", "ddtp_linear")))
def test_a_tpmodel_of_a_cnn_network_is_the_cnnmodel_bit_for_bit(method, tmp_path):
    rule = get_rule(method)
    x = np.random.default_rng(0).normal(size=(4,) + IMAGE)
    y = np.array([0, 1, 2, 1], dtype="int32")
    old = CNNModel(method, IMAGE, CHANNELS, FC, OUT, seed=5, dtype="float64", **rule.used(sigma=0.1))
    new = TPModel(rule, target_stepsize=0.01, seed=5, dtype="float64", **rule.used(sigma=0.1),
                  network=CNNNetwork(rule, IMAGE, CHANNELS, FC, OUT, seed=5, dtype="float64"))
    # The same weights in the same order, named alike under each model's own name.
    assert [v.path.split("/", 1)[-1] for v in new.variables] == [v.path.split("/", 1)[-1] for v in old.variables]
    _same(_train(old, x, y), _train(new, x, y))
    assert new.local_loss_scales == old.local_loss_scales and new.hidden_sizes == old.hidden_sizes
    new.save(tmp_path / "m.keras")  # a TPModel saves its network as a "network" entry of its config
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded) is TPModel and isinstance(loaded.network, CNNNetwork)
    _same([v.numpy() for v in loaded.variables], [v.numpy() for v in new.variables])
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), new.predict(x, verbose=0))


def test_a_tpmodel_of_an_mlp_network_is_the_default_tpmodel():
    rule = get_rule("dtp")
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    y = np.array([0, 1, 2, 1, 0], dtype="int32")
    default = TPModel("dtp", 4, [3, 3], 3, seed=2, dtype="float32")
    given = TPModel(rule, seed=2, dtype="float32", network=MLPNetwork(rule, 4, [3, 3], 3, seed=2, dtype="float32"))
    assert {**default.get_config(), "name": ""} == {**given.get_config(), "name": ""}  # saved as before
    _same(_train(default, x, y), _train(given, x, y))


def test_a_network_is_checked_against_the_model_in_one_line():
    dtp = get_rule("dtp")
    network = MLPNetwork(dtp, 4, [3], 2, dtype="float32")
    with pytest.raises(ValueError, match=r"^TPModel: input_size=5: arguments of the MLP .* \(pass them to it\)$"):
        TPModel(dtp, input_size=5, network=network, dtype="float32")
    with pytest.raises(ValueError, match=r"^TPModel: the network was built in float32 and the model in float64"):
        TPModel(dtp, network=network, dtype="float64")
    with pytest.raises(ValueError, match=r"^TPModel: the network was built for other feedback maps than rule "
                                         r"'ddtp_linear' needs"):
        TPModel("ddtp_linear", network=network, dtype="float32")
    with pytest.raises(ValueError, match=r"^method 'dtp' has no CNN"):
        CNNNetwork(dtp, IMAGE, CHANNELS, FC, OUT)
