"""A TPModel's settings over its life, which must not silently do nothing: a rule changed after fit applies at the
next fit (or is refused until compile); the trainable flags, both optimizers' state and the rule survive save/load,
clone_model and JSON, and a fresh process that imports tp_keras alone loads them; a compile that raises changes
nothing. What each Keras argument means when it is given is tests/test_keras_conventions.py. A catalogue: each case
one test of a real property (bit-identity with the reference computation, or the refusal's text). Tiny networks,
tiny data.
"""
import dataclasses
import warnings

import keras
import numpy as np
import pytest

import tp_keras
from conftest import make_model
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


def _variables(model):
    """What a fit reads and writes: the model's variables (the noise generator's state too) and both optimizers'."""
    return list(model.variables) + list(model.optimizer.variables) + list(model.feedback_optimizer.variables)


def _assign(variables, values):
    assert len(variables) == len(values)
    for variable, value in zip(variables, values):
        variable.assign(value)


def _state(model):
    """Every weight and every optimizer variable (step counters and moments of both optimizers)."""
    return _values(model.weights) + _values(model.optimizer.variables) + _values(model.feedback_optimizer.variables)


# --------------------------------------------------------------------------------------------------------------
# 1. A rule changed after fit applies at the next fit
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change", ["target_stepsize", *(pytest.param(c, marks=pytest.mark.slow)
                                                          for c in ("sigma", "rule", "set_rule"))])
def test_a_rule_change_after_fit_applies_at_the_next_fit(change):
    """From the state after a first fit, the next fit with the changed rule equals a model compiled with the new
    rule from the same state, bit for bit, and differs from the old rule's next fit (a reused compiled step would
    train with the old rule: bit-identical to no change). One model plays the old rule's next fit and then the
    change from the restored state, so the test traces three steps, not five."""
    x, y = _data()
    changed = _compiled()
    changed.fit(x, y, batch_size=16, epochs=1, **QUIET)
    after_first = _values(_variables(changed))
    changed.fit(x, y, batch_size=16, epochs=1, **QUIET)
    unchanged = _values(changed.weights)
    _assign(_variables(changed), after_first)
    old_rule = changed.rule
    if change == "target_stepsize":
        changed.target_stepsize = 0.5
    elif change == "sigma":
        changed.sigma = 0.3
    elif change == "rule":
        changed.rule = dataclasses.replace(changed.rule, target_stepsize=0.3)
    else:
        changed.set_rule("dtp")
    assert changed.rule != old_rule
    recompiled = _model()
    recompiled.compile(optimizer=_adam(), feedback_optimizer=_adam(1e-3), rule=changed.rule)
    _assign(_variables(recompiled), after_first)
    for model in (changed, recompiled):
        model.fit(x, y, batch_size=16, epochs=1, **QUIET)
    assert _same(_values(_variables(changed)), _values(_variables(recompiled)))
    assert not _same(_values(changed.weights), unchanged)


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
# 6. Saving: `import tp_keras` is all a fresh process needs
# --------------------------------------------------------------------------------------------------------------

def test_saved_classes_lists_every_registered_class():
    import importlib
    import tp_keras
    for module in set(tp_keras.SAVED_CLASSES.values()):
        importlib.import_module(f"tp_keras.{module}")
    registry = keras.saving.get_custom_objects()
    registered = {name for name, obj in registry.items()
                  if name.startswith("tp_keras>") and isinstance(obj, type)}
    assert registered == {f"tp_keras>{name}" for name in tp_keras.SAVED_CLASSES}
    for name, module in tp_keras.SAVED_CLASSES.items():
        assert registry[f"tp_keras>{name}"] is getattr(importlib.import_module(f"tp_keras.{module}"), name)


@pytest.mark.slow
def test_import_tp_keras_alone_loads_saved_models_in_a_fresh_process(tmp_path):
    """Saved here (a TPModel with a default feedback Adam, a CNNModel); loaded in new processes that import
    tp_keras only, before or after keras; and `import tp_keras` itself imports neither Keras nor TensorFlow."""
    import subprocess
    import sys
    import textwrap
    from tp_keras.core.cnn import CNNModel
    x, y = _data()
    mlp = make_model("ddtp_linear", dtype="float32")
    mlp.compile(optimizer="adam")
    mlp.fit(x, y, batch_size=8, **QUIET)
    cnn = CNNModel("ddtp_linear", image_shape=(6, 6, 1), conv_channels=(2,), fc_units=(4,), output_size=3,
                   sigma=0.1, dtype="float32")
    cnn.compile(optimizer="sgd")
    images = np.random.default_rng(0).normal(size=(4, 6, 6, 1)).astype("float32")
    mlp.save(tmp_path / "mlp.keras")
    cnn.save(tmp_path / "cnn.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected_mlp.npy", mlp.predict(x, verbose=0))
    np.save(tmp_path / "expected_cnn.npy", cnn.predict(images, verbose=0))
    load = textwrap.dedent(f"""
        import keras, numpy as np
        d = {str(tmp_path)!r}
        for name, data in (("mlp", "x"), ("cnn", "images")):
            model = keras.saving.load_model(f"{{d}}/{{name}}.keras")
            np.testing.assert_array_equal(model.predict(np.load(f"{{d}}/{{data}}.npy"), verbose=0),
                                          np.load(f"{{d}}/expected_{{name}}.npy"))
            print(type(model).__name__, type(model.optimizer).__name__, type(model.feedback_optimizer).__name__)
    """)
    # First tp_keras alone, which must load neither Keras nor TensorFlow; then Keras before tp_keras.
    light = 'import sys, tp_keras\nassert not {"tensorflow", "keras"} & set(sys.modules), "Keras or TF loaded"\n'
    for first in (light, "import keras, tp_keras\n"):
        result = subprocess.run([sys.executable, "-c", first + load], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split() == ["TPModel", "Adam", "TorchAdam", "CNNModel", "SGD", "TorchAdam"], result.stdout
