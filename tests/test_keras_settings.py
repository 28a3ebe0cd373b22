"""Keras settings that must not silently do nothing: each Keras setting on a TPModel takes effect or is refused
in one line. A catalogue: each case one test of a real property (bit-identity with the reference computation, or
the refusal's text). Tiny networks, tiny data.
"""
import dataclasses
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tp_keras
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import LayerwiseOptimizer, TorchAdam, feedback_optimizers
from tp_keras.core.rules import components as K
from tp_keras.core.step import Trainer

QUIET = dict(verbose=0, shuffle=False)


def _data(n=48, d=7, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    # float32: Keras' fit casts float arrays to floatx, so both drivers then see the same inputs
    return rng.normal(size=(n, d)).astype("float32"), (np.arange(n) % classes).astype("int32")


def _model(method="dtpdrl", **kwargs):
    kwargs.setdefault("seed", 5)
    return TPModel(method, 7, [6, 5], 3, target_stepsize=0.1, dtype="float64", **kwargs)


def _adam(rate=1e-2, **kwargs):
    return TorchAdam(rate, precision="float64", **kwargs)


def _compiled(method="dtpdrl", **kwargs):
    model = _model(method, **kwargs)
    model.compile(optimizer=_adam(), feedback_optimizer=_adam(1e-3))
    return model


def _values(variables):
    return [np.asarray(v.numpy()).copy() for v in variables]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def _state(model):
    """Every weight and every optimizer variable (step counters and moments of both optimizers)."""
    return _values(model.weights) + _values(model.optimizer.variables) + _values(model.feedback_optimizer.variables)


# --------------------------------------------------------------------------------------------------------------
# 1. A rule changed after fit applies at the next fit
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change", ["target_stepsize", *(pytest.param(c, marks=pytest.mark.slow)
                                                          for c in ("sigma", "rule", "set_rule"))])
def test_a_rule_change_after_fit_applies_at_the_next_fit(change):
    """The next fit equals a model recompiled with the new rule from the same state, bit for bit, and differs
    from the unchanged model's (a reused compiled step would train with the old rule: bit-identical to no
    change)."""
    x, y = _data()
    changed, recompiled, unchanged = (_compiled() for _ in range(3))
    for model in (changed, recompiled, unchanged):
        model.fit(x, y, batch_size=16, epochs=1, **QUIET)
    if change == "target_stepsize":
        changed.target_stepsize = 0.5
    elif change == "sigma":
        changed.sigma = 0.3
    elif change == "rule":
        changed.rule = dataclasses.replace(changed.rule, target_stepsize=0.3)
    else:
        changed.set_rule("dtp")
    assert changed.rule != unchanged.rule
    recompiled.compile(optimizer=recompiled.optimizer, feedback_optimizer=recompiled.feedback_optimizer,
                       rule=changed.rule)
    for model in (changed, recompiled, unchanged):
        model.fit(x, y, batch_size=16, epochs=1, **QUIET)
    assert _same(_state(changed), _state(recompiled))
    assert not _same(_values(changed.weights), _values(unchanged.weights))


@pytest.mark.slow
def test_a_rule_change_that_needs_other_optimizers_is_refused_until_compile():
    """set_rule('ldrl') on a compiled DTPDRL network needs one feedback optimizer per hidden layer, and
    'dtpdrl' on an LDRL network one for all: fit and train_feedback refuse in one line until compile() is called
    again."""
    x, y = _data()
    ldrl = dataclasses.replace(tp_keras.RULES["ldrl"], feedback_form="dtp", feedback_activation="tanh",
                               feedback_bias=True)  # L-DRL on DTP's maps: the same network as DTPDRL's
    for built, rule in (("dtpdrl", ldrl), (ldrl, "dtpdrl")):
        model = _compiled(built)
        model.fit(x, y, batch_size=16, epochs=1, **QUIET)
        model.set_rule(rule)
        name = getattr(rule, "name", rule)
        message = rf"^the rule changed to '{name}' after compile\(\), .* call compile\(\) again$"
        with pytest.raises(ValueError, match=message):
            model.fit(x, y, batch_size=16, **QUIET)
        with pytest.raises(ValueError, match=message):
            model.train_feedback(x, y, batch_size=16)
        model.compile(optimizer=_adam(), feedback_optimizer=_adam(1e-3))
        model.fit(x, y, batch_size=16, epochs=1, **QUIET)


# --------------------------------------------------------------------------------------------------------------
# 2. trainable, both optimizers' state and the rule survive save/load, clone_model and JSON
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["ddtp_linear", *(pytest.param(m, marks=pytest.mark.slow)
                                                     for m in ("dtpdrl", "ldrl"))])
def test_save_load_keeps_frozen_layers_optimizer_states_and_rule(tmp_path, method):
    """A frozen layer stays frozen after load_model; both optimizers (ldrl: one feedback Adam per hidden layer)
    load their state with no "Skipping variable loading" warning; the rule's changed hyper-parameters are kept;
    continued training after load is bit-identical to continued training without save/load (a lost forward
    optimizer state drifts it by about 7.9e-3 in one epoch)."""
    x, y = _data()
    kwargs = dict(feedback_iterations=(1, 3)) if method == "ldrl" else {}
    model = _model(method, **kwargs)
    model.tp_layers[1].trainable = False
    if method == "ddtp_linear":
        model.tp_layers[0].trainable = False
    model.compile(optimizer=_adam(), feedback_optimizer=_adam(1e-3))
    model.fit(x, y, batch_size=16, epochs=1, **QUIET)
    model.target_stepsize = 0.07
    model.save(tmp_path / "m.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.models.load_model(tmp_path / "m.keras")
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    assert [layer.trainable for layer in loaded.tp_layers] == [layer.trainable for layer in model.tp_layers]
    assert loaded.rule == model.rule and loaded.target_stepsize == 0.07
    if method == "ldrl":
        assert isinstance(loaded.feedback_optimizer, LayerwiseOptimizer)
    assert _same(_state(loaded), _state(model))
    for m in (model, loaded):
        m.fit(x, y, batch_size=16, epochs=1, **QUIET)
    assert _same(_state(loaded), _state(model))


def test_clone_model_and_json_keep_frozen_layers_and_frozen_direct_feedback():
    model = _model("ddtp_linear")
    model.tp_layers[1].trainable = False
    model.direct_feedback.trainable = False
    for copy in (keras.models.clone_model(model), keras.models.model_from_json(model.to_json())):
        assert [layer.trainable for layer in copy.tp_layers] == [True, False, True]
        assert not copy.direct_feedback.trainable and copy.feedback_variables == []
    unfrozen = _model("ddtp_linear")
    assert "frozen_layers" not in unfrozen.get_config()  # configs of unfrozen models are unchanged


# --------------------------------------------------------------------------------------------------------------
# 3. A custom noise callable is refused by save in one line; a registered one is kept by name
# --------------------------------------------------------------------------------------------------------------

def test_a_custom_noise_callable_is_refused_by_save_and_a_registered_one_is_kept(tmp_path, monkeypatch):
    def my_noise(shape, seed):
        return K.standard_normal(shape, seed)

    model = _model()
    model.set_rule(dataclasses.replace(model.rule, noise=my_noise))
    with pytest.raises(ValueError, match=r"^rule 'dtpdrl' draws its noise from the custom callable my_noise, which "
                                         r"cannot be saved: register it .*NOISE\['my_noise'\] = fn"):
        model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match="^rule 'dtpdrl' draws its noise from the custom callable"):
        model.to_json()
    monkeypatch.setitem(K.NOISE, "my_noise", my_noise)
    for rule in (dataclasses.replace(model.rule, noise="my_noise"), model.rule):  # by name, or the registered fn
        model.set_rule(rule)
        model.save(tmp_path / "m.keras")
        assert keras.models.load_model(tmp_path / "m.keras").rule.noise == "my_noise"


# --------------------------------------------------------------------------------------------------------------
# 4. ldrl: one feedback optimizer per hidden layer in fit as in the launcher (one factory)
# --------------------------------------------------------------------------------------------------------------

def test_ldrl_fit_trains_as_the_custom_loop_with_the_launchers_per_layer_feedback_optimizers():
    """Unequal feedback_iterations: each hidden layer's feedback Adam has its own step counter. fit (compile's
    optimizers) and step.Trainer with the launcher's factory (`optimizers.feedback_optimizers`, which
    factories.feedback_optimizer calls) give the same weights, bit for bit, after 3 batches."""
    from tp_keras.run import factories
    assert "feedback_optimizers(model" in __import__("inspect").getsource(factories.feedback_optimizer)
    x, y = _data()
    by_fit, by_loop = _model("ldrl", feedback_iterations=(1, 3)), _model("ldrl", feedback_iterations=(1, 3))
    by_fit.compile(optimizer=_adam(), feedback_optimizer=_adam(1e-3))
    assert isinstance(by_fit.feedback_optimizer, LayerwiseOptimizer) and len(by_fit.feedback_optimizer.optimizers) == 2
    before = _values(by_fit.weights)
    by_fit.fit(x, y, batch_size=16, epochs=1, **QUIET)
    trainer = Trainer(by_loop, _adam(), feedback_optimizers(by_loop, lambda name: _adam(1e-3, name=name)))
    for i in range(0, 48, 16):
        trainer.train_step(x[i:i + 16], y[i:i + 16])
    assert _same(_values(by_fit.weights), _values(by_loop.weights))
    assert not _same(before, _values(by_fit.weights))
    steps = [int(o.iterations.numpy()) for o in by_fit.feedback_optimizer.optimizers]
    assert steps == [3, 9]  # 3 batches: 1 and 3 feedback steps per batch


def test_ldrl_default_feedback_optimizers_are_the_launchers():
    model = _model("ldrl")
    model.compile(optimizer=_adam())
    names = [o.name for o in model.feedback_optimizer.optimizers]
    assert names == ["feedback_adam_1", "feedback_adam_2"]
    with pytest.raises(ValueError, match=r"^compile: 3 feedback optimizers for 2 hidden layers"):
        _model("ldrl").compile(optimizer=_adam(), feedback_optimizer=[_adam(), _adam(), _adam()])
    with pytest.raises(ValueError, match=r"^compile: rule 'dtpdrl' trains its feedback with one optimizer"):
        _model().compile(optimizer=_adam(), feedback_optimizer=[_adam(), _adam()])


# --------------------------------------------------------------------------------------------------------------
# 5. compile is atomic
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [dict(optimizer="no_such_optimizer"), dict(loss="hinge"), dict(metrics="accuracy"),
                                 dict(loss_weights=[1.0])])
def test_a_compile_that_raises_changes_nothing(bad):
    model = _compiled()
    rule, forward, feedback = model.rule, model.optimizer, model.feedback_optimizer
    arguments = dict(optimizer=_adam(), feedback_optimizer=_adam(), rule="dtp")
    arguments.update(bad)
    with pytest.raises(ValueError):
        model.compile(**arguments)
    assert model.rule is rule and model.optimizer is forward and model.feedback_optimizer is feedback


# --------------------------------------------------------------------------------------------------------------
# 6. The data's shapes and dtypes are checked before the first step
# --------------------------------------------------------------------------------------------------------------

KERAS_SHAPE = (r'^Input 0 of layer "{name}" is incompatible with the layer: expected axis -1 of input shape to '
               r'have value 7, but received input with shape \(None, 10\); this model takes x of shape \(N, 7\)$')


def test_inputs_with_the_wrong_number_of_features_are_refused_in_keras_words():
    model = _compiled()
    x, y = np.zeros((8, 10)), np.zeros(8, "int32")
    message = KERAS_SHAPE.format(name=re.escape(model.name))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(ValueError, match=message):
        model.fit(dataset, **QUIET)
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, **QUIET)
    with pytest.raises(ValueError, match=message):
        model.evaluate(dataset, verbose=0)
    good = tf.data.Dataset.from_tensor_slices((np.zeros((8, 7)), y)).batch(4)
    before = _values(model.weights)
    with pytest.raises(ValueError, match=message):  # before the first step, not at the end of the epoch
        model.fit(good, validation_data=dataset, **QUIET)
    assert _same(before, _values(model.weights))
    with pytest.raises(ValueError, match=message):
        model.train_feedback(x, y)

    def generator():  # a stream fit cannot look at beforehand: refused as the step is traced
        yield x[:4], y[:4]
    with pytest.raises(ValueError, match=message):
        model.fit(generator(), **QUIET)
    with pytest.raises(ValueError, match=r"expected ndim=2, found ndim=3. Full shape received: \(None, 7, 1\)"):
        model.fit(np.zeros((8, 7, 1)), y, **QUIET)


def test_string_labels_and_inputs_in_a_dataset_are_refused_in_one_line():
    model = _compiled()
    x = np.zeros((8, 7))
    labels = tf.data.Dataset.from_tensor_slices((x, np.array(["a", "b"] * 4))).batch(4)
    with pytest.raises(ValueError, match=r"^labels have dtype string; a TPModel takes class ids \(integers in "
                                         r"\[0, 3\)\) or one-hot rows: .*StringLookup"):
        model.fit(labels, **QUIET)
    inputs = tf.data.Dataset.from_tensor_slices((np.array(["a"] * 8), np.zeros(8, "int32"))).batch(4)
    with pytest.raises(ValueError, match=r"^x has dtype string; a TPModel takes numbers"):
        model.fit(inputs, **QUIET)


# --------------------------------------------------------------------------------------------------------------
# 7. keras.layers.Softmax() as the output layer is dropped under drop_softmax=True
# --------------------------------------------------------------------------------------------------------------

def test_a_softmax_layer_is_dropped_under_drop_softmax():
    keras_model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(6, activation="tanh"),
                                    keras.layers.Dense(3), keras.layers.Softmax()])
    with pytest.raises(ValueError, match="output activation 'softmax'.*drop_softmax=True"):
        tp_keras.to_tp_model(keras_model, "dtpdrl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tp_keras.to_tp_model(keras_model, "dtpdrl", drop_softmax=True)
    x, _ = _data(8)
    x = x.astype("float32")
    logits = model.predict(x, verbose=0)
    np.testing.assert_allclose(keras.ops.softmax(logits).numpy(), keras_model.predict(x, verbose=0), rtol=1e-5)
    hidden = keras.Sequential([keras.Input((7,)), keras.layers.Dense(6), keras.layers.Softmax(),
                               keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="hidden activation 'softmax' is not supported"):
        tp_keras.to_tp_model(hidden, "dtpdrl", drop_softmax=True)
