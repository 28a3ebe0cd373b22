"""Every Keras argument a user sets on a TPModel is honoured with a tested meaning, or refused in one line.

Meanings (BUILD_NOTES, "Keras conventions"): sample/class weights scale each sample's output error, hence its
output target (the feedback losses use no labels and are not weighted); `trainable = False` freezes a layer's
forward weights; metrics are Keras metrics on the logits; `optimizer=` is the forward optimizer; the data's shapes,
dtypes and values are checked before the first step. How the settings live on after fit (rule changes, save/load,
clone_model, compile's atomicity) is tests/test_keras_settings.py. Tiny networks, tiny data.
"""
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tp_keras
from conftest import ALL_METHODS, TP_METHODS, make_batch, make_model, np_forward, onehot, softmax
from tp_keras.core import health, step
from tp_keras.core.callbacks import FeedbackLearningRateScheduler, FeedbackSchedule
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchAdam
from tp_keras.core.rules import RULES
from tp_keras.run import experiment

METRIC_FREE = dict(verbose=0, shuffle=False)


def _data(n=24, d=7, classes=3, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(dtype), (np.arange(n) % classes).astype("int32")


def _compiled(method, **compile_kwargs):
    model = make_model(method)
    compile_kwargs.setdefault("optimizer", TorchAdam(1e-2, precision="float64"))
    if RULES[method].trains_feedback:
        compile_kwargs.setdefault("feedback_optimizer", TorchAdam(1e-2, precision="float64"))
    model.compile(**compile_kwargs)
    return model


def _values(variables):
    return [np.asarray(v.numpy()).copy() for v in variables]


def _assert_same(a, b):
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def _restored(model, values):
    """`model` with every variable set back to `values` (`_values(model.variables)`, the noise generator's state
    included): updates computed again from it see the same weights and the same noise, as a second model of the
    same seed would, without building one."""
    for variable, value in zip(model.variables, values, strict=True):
        variable.assign(value)
    return model


# --------------------------------------------------------------------------------------------------------------
# sample_weight / class_weight
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ALL_METHODS)
def test_zero_sample_weights_give_no_forward_update_and_leave_the_feedback_losses_alone(method):
    """All-zero weights: no output error, so every target is its activation and every forward gradient is exactly
    0 (for DTP's difference correction this is exact only because zero-weight samples keep h as target). The
    feedback losses use no labels: their gradients equal the unweighted ones (same model, same noise)."""
    x, y = make_batch()
    model = make_model(method)
    state = _values(model.variables)
    updates = step.compute_updates(model, x, y, sample_weight=np.zeros(len(x)))
    reference = step.compute_updates(_restored(model, state), x, y)
    assert all(np.all(g.numpy() == 0) for g in updates.forward_grads), method
    if updates.targets is not None:
        for target, h in zip(updates.targets, updates.activations[1:]):
            np.testing.assert_array_equal(target.numpy(), h.numpy())
    if reference.feedback_grads is not None:
        for g, r in zip(updates.feedback_grads, reference.feedback_grads):
            np.testing.assert_array_equal(g.numpy(), r.numpy())


@pytest.mark.parametrize("method", TP_METHODS)
def test_sample_weight_scales_the_output_error(method):
    """Weights of 2 double every output error: bit for bit the step of the unweighted model with η̂ doubled (a
    power of two scales exactly). And the output target is ĥ_L = h_L − η̂·w_b·(softmax − onehot)/B (NumPy)."""
    x, y = make_batch()
    model = make_model(method, target_stepsize=0.1)
    state = _values(model.variables)
    if RULES[method].target_rule != "gnt":  # GNT's targets do not use η̂
        doubled = step.compute_updates(model, x, y, sample_weight=np.full(len(x), 2.0))
        model.target_stepsize = 0.2
        reference = step.compute_updates(_restored(model, state), x, y)
        for a, b in zip(doubled.forward_grads + doubled.targets, reference.forward_grads + reference.targets):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        model.target_stepsize = 0.1

    w = np.linspace(0.0, 2.0, len(x))
    h_out = np_forward(model, x)[-1]
    expected = h_out - model.target_stepsize * w[:, None] * (softmax(h_out) - onehot(y, h_out.shape[1])) / len(x)
    if RULES[method].target_rule == "gnt":  # GNT: ĥ_L = h_L − J_L⁺e_L with J_L = I
        expected = h_out - w[:, None] * (softmax(h_out) - onehot(y, h_out.shape[1])) / len(x)
    top = step.compute_updates(model, x, y, sample_weight=w).targets[-1].numpy()
    np.testing.assert_allclose(top, expected, rtol=0, atol=1e-12)


def test_bp_sample_weight_is_the_gradient_of_keras_weighted_loss():
    x, y = make_batch()
    w = np.linspace(0.0, 2.0, len(x))
    model = make_model("bp")
    grads = step.compute_updates(model, x, y, sample_weight=w).forward_grads
    variables = [v.value for v in model.forward_variables]
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")(y, model(x),
                                                                                          sample_weight=w)
    for g, r in zip(grads, tape.gradient(loss, variables)):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ddtp_linear", "bp"])
def test_zero_class_weights_in_fit_leave_every_forward_weight_unchanged(method):
    x, y = _data()
    model = _compiled(method)
    forward, feedback = _values(model.forward_variables), _values(model.feedback_variables)
    model.fit(x, y, batch_size=8, epochs=1, class_weight={0: 0.0, 1: 0.0, 2: 0.0}, **METRIC_FREE)
    _assert_same(forward, _values(model.forward_variables))
    if feedback:  # the feedback losses are unweighted: they still train
        assert not np.array_equal(feedback[0], model.feedback_variables[0].numpy())


@pytest.mark.slow
def test_class_weight_is_the_sample_weight_of_each_label():
    x, y = _data(n=16)
    class_weight = {0: 0.5, 1: 2.0, 2: 0.0}
    by_class, by_sample = _compiled("dtpdrl"), _compiled("dtpdrl")
    by_class.fit(x, y, batch_size=8, epochs=1, class_weight=class_weight, **METRIC_FREE)
    weights = np.array([class_weight[c] for c in y])[:, None]  # an (N, 1) column, as Keras also takes
    by_sample.fit(x, y, batch_size=8, epochs=1, sample_weight=weights, **METRIC_FREE)
    _assert_same(_values(by_class.weights), _values(by_sample.weights))


def test_evaluate_sample_weight_weights_the_loss_and_the_accuracy():
    x, y = _data()
    w = np.linspace(0.0, 1.0, len(x))
    model = _compiled("dtpdrl")
    result = model.evaluate(x, y, sample_weight=w, batch_size=10, verbose=0, return_dict=True)
    logits = model.predict(x, verbose=0)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits, sample_weight=w)
    assert result["loss"] == pytest.approx(float(keras_loss), rel=1e-6)
    correct = np.argmax(logits, axis=1) == y
    assert result["accuracy"] == pytest.approx(np.sum(w * correct) / np.sum(w), rel=1e-6)
    assert result["accuracy"] != pytest.approx(np.mean(correct))  # the weights matter here


# --------------------------------------------------------------------------------------------------------------
# trainable = False
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_frozen_layers_generalise_only_train_first_layer():
    """Freezing layers 2..L by `trainable = False` is Frozen-MNIST's only_train_first_layer, bit for bit; the
    frozen layers' forward weights do not move, their layer-wise feedback (DTPDRL) still trains."""
    x, y = _data()
    first_only = make_model("dtpdrl", only_train_first_layer=True)
    frozen = make_model("dtpdrl")
    for layer in frozen.tp_layers[1:]:
        layer.trainable = False
    assert frozen.trained_layers == first_only.trained_layers == [0]
    before = _values(frozen.weights)
    for model in (first_only, frozen):
        model.compile(optimizer=TorchAdam(1e-2, precision="float64"),
                      feedback_optimizer=TorchAdam(1e-2, precision="float64"))
        model.fit(x, y, batch_size=8, epochs=1, **METRIC_FREE)
    _assert_same(_values(first_only.weights), _values(frozen.weights))
    moved = {v.path for v, b in zip(frozen.weights, before) if not np.array_equal(b, v.numpy())}
    frozen_forward = {v.path for layer in frozen.tp_layers[1:] for v in layer.forward_variables}
    assert not moved & frozen_forward
    assert {v.path for v in frozen.tp_layers[1].feedback_variables} <= moved


@pytest.mark.slow
def test_frozen_direct_feedback_and_the_trainable_refusals():
    x, y = _data()
    model = make_model("ddtp_linear")
    model.direct_feedback.trainable = False  # DFA-style: the direct maps stay fixed
    assert model.feedback_variables == []
    model.compile(optimizer=TorchAdam(1e-2, precision="float64"))
    before = _values(model.direct_feedback.weights)
    model.fit(x, y, batch_size=8, epochs=1, **METRIC_FREE)
    _assert_same(before, _values(model.direct_feedback.weights))

    model.tp_layers[0].trainable = False  # changed after compile: Keras would silently ignore it
    with pytest.raises(ValueError, match=r"^trainable changed on layer_1 after compile\(\): call compile\(\) again"):
        model.fit(x, y, verbose=0)
    model.trainable = False
    with pytest.raises(ValueError, match="^model.trainable = False freezes every layer"):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="^compile: every forward layer is frozen"):
        model.compile(optimizer="adam")


@pytest.mark.slow
def test_conversion_keeps_a_frozen_dense_layer_frozen():
    import tp_keras
    keras_model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(6, activation="tanh"),
                                    keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(3)])
    keras_model.layers[0].trainable = False
    model = tp_keras.to_tp_model(keras_model, "dtpdrl", sigma=0.05)
    assert model.trained_layers == [1, 2]
    x, y = _data(dtype="float32")
    model.compile(optimizer="adam")
    before = _values(model.tp_layers[0].forward_variables)
    model.fit(x, y, batch_size=8, epochs=1, **METRIC_FREE)
    _assert_same(before, _values(model.tp_layers[0].forward_variables))


# --------------------------------------------------------------------------------------------------------------
# metrics, loss, labels
# --------------------------------------------------------------------------------------------------------------

def test_a_softmax_layer_is_dropped_under_drop_softmax():
    keras_model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(6, activation="tanh"),
                                    keras.layers.Dense(3), keras.layers.Softmax()])
    with pytest.raises(ValueError, match="output activation 'softmax'.*drop_softmax=True"):
        tp_keras.to_tp_model(keras_model, "dtpdrl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tp_keras.to_tp_model(keras_model, "dtpdrl", drop_softmax=True)
    x, _ = _data(8, dtype="float32")
    logits = model.predict(x, verbose=0)
    np.testing.assert_allclose(keras.ops.softmax(logits).numpy(), keras_model.predict(x, verbose=0), rtol=1e-5)
    hidden = keras.Sequential([keras.Input((7,)), keras.layers.Dense(6), keras.layers.Softmax(),
                               keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="hidden activation 'softmax' is not supported"):
        tp_keras.to_tp_model(hidden, "dtpdrl", drop_softmax=True)


@pytest.mark.slow
def test_metrics_are_keras_metrics_on_the_logits_and_monitors_infer_their_direction(tmp_path):
    x, y = _data(n=30)
    model = _compiled("ddtp_linear", metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2"),
                                              "accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=5)
    best = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="val_accuracy", save_best_only=True)
    history = model.fit(x, y, batch_size=10, epochs=2, validation_data=(x, y), callbacks=[stop, best], **METRIC_FREE)
    assert {"loss", "accuracy", "top2", "rec_loss", "val_loss", "val_accuracy", "val_top2"} == set(history.history)
    assert stop.monitor_op is keras.ops.greater and best.monitor_op is keras.ops.greater
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    logits = model.predict(x, verbose=0)
    top2 = np.mean([label in np.argsort(row)[-2:] for row, label in zip(logits, y)])
    assert result["top2"] == pytest.approx(top2) and result["accuracy"] == pytest.approx(
        np.mean(np.argmax(logits, 1) == y))


@pytest.mark.slow
def test_default_metrics_are_loss_accuracy_and_rec_loss():
    x, y = _data()
    assert set(_compiled("dtpdrl").fit(x, y, batch_size=8, **METRIC_FREE).history) == {"loss", "accuracy", "rec_loss"}
    assert set(_compiled("bp").fit(x, y, batch_size=8, **METRIC_FREE).history) == {"loss", "accuracy"}


@pytest.mark.parametrize("method", ALL_METHODS)
def test_one_hot_and_column_labels_give_the_step_of_class_ids(method):
    x, y = make_batch()
    model = make_model(method)
    state = _values(model.variables)
    reference = step.compute_updates(model, x, y)
    for labels in (np.eye(3)[y], y[:, None]):
        updates = step.compute_updates(_restored(model, state), x, labels)
        _assert_same([g.numpy() for g in reference.forward_grads + (reference.feedback_grads or [])],
                     [g.numpy() for g in updates.forward_grads + (updates.feedback_grads or [])])
        assert float(updates.loss) == pytest.approx(float(reference.loss), rel=1e-14)


@pytest.mark.slow
def test_fit_on_one_hot_labels_equals_fit_on_class_ids():
    x, y = _data(n=16)
    reference, model = _compiled("dtpdrl"), _compiled("dtpdrl", loss="categorical_crossentropy")
    reference.fit(x, y, batch_size=8, epochs=1, **METRIC_FREE)
    model.fit(x, np.eye(3)[y], batch_size=8, epochs=1, **METRIC_FREE)
    _assert_same(_values(reference.weights), _values(model.weights))
    reference.fit(x, np.eye(3)[y], batch_size=8, epochs=1, **METRIC_FREE)  # a new label shape: a new trace
    with pytest.raises(ValueError, match=r"^loss='categorical_crossentropy' takes one-hot rows, these labels have "
                                         r"shape \(8, 1\)"):
        model.fit(x, y[:, None], batch_size=8, epochs=1, **METRIC_FREE)


@pytest.mark.parametrize("loss, kind", [(None, "auto"), ("sparse_categorical_crossentropy", "sparse"),
                                        (keras.losses.CategoricalCrossentropy(from_logits=True), "categorical"),
                                        (keras.losses.sparse_categorical_crossentropy, "sparse")])
def test_accepted_classification_losses(loss, kind):
    model = make_model("bp")
    model.compile(optimizer="sgd", loss=loss)
    assert model._loss_kind == kind


def test_a_loss_that_does_not_match_the_labels_is_refused():
    x, y = _data()
    model = _compiled("ddtp_linear", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="^loss='sparse_categorical_crossentropy' takes class ids.*categorical_cross"):
        model.fit(x, np.eye(3)[y], **METRIC_FREE)


@pytest.mark.parametrize("loss, message", [
    ("hinge", "^loss='hinge' is not supported: the output target is built from the closed-form gradient"),
    (keras.losses.KLDivergence(), "^loss='kl_divergence' is not supported"),
    (keras.losses.SparseCategoricalCrossentropy(), r"^loss=SparseCategoricalCrossentropy\(from_logits=False\) reads "
                                                   "the outputs as probabilities.*from_logits=True"),
    (keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1), ".*label_smoothing.*drop these"),
    ("mse", "^loss='mse' is a regression loss, but this TPModel was built with task='classification'"),
])
def test_unsupported_losses_are_refused_by_name(loss, message):
    with pytest.raises(ValueError, match=message):
        make_model("ddtp_linear").compile(optimizer="adam", loss=loss)


@pytest.mark.slow
def test_regression_trains_with_mse_and_reports_keras_mse():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 7)), rng.normal(size=(20, 2))
    model = make_model("ddtp_linear", output=2, task="regression")
    model.compile(optimizer=TorchAdam(1e-2, precision="float64"), loss="mse")
    model.fit(x, y, batch_size=5, epochs=1, **METRIC_FREE)
    loss = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(float(keras.losses.MeanSquaredError()(y, model.predict(x, verbose=0))), rel=1e-6)
    with pytest.raises(ValueError, match="categorical_crossentropy' is a classification loss.*task='regression'"):
        model.compile(optimizer="adam", loss="categorical_crossentropy")


# --------------------------------------------------------------------------------------------------------------
# optimizers, learning rates
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_optimizer_names_and_standard_keras_optimizers():
    x, y = _data(dtype="float32")
    for method in ("dtpdrl", "bp"):
        model = make_model(method, dtype="float32")
        model.compile(optimizer="adam")
        assert isinstance(model.optimizer, keras.optimizers.Adam)
        assert (model.feedback_optimizer is None) == (method == "bp")
        before = _values(model.forward_variables)
        model.fit(x, y, batch_size=8, **METRIC_FREE)
        assert not np.array_equal(before[0], model.forward_variables[0].numpy())
    model = make_model("ddtp_linear", dtype="float32")
    model.compile(forward_optimizer="sgd", feedback_optimizer=keras.optimizers.RMSprop(1e-3))
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert isinstance(model.feedback_optimizer, keras.optimizers.RMSprop)


def test_one_optimizer_object_for_both_is_cloned_or_refused():
    shared = TorchAdam(1e-3, precision="float64")
    model = make_model("dtpdrl")
    model.compile(optimizer=shared, feedback_optimizer=shared)
    assert model.optimizer is shared and model.feedback_optimizer is not shared
    assert model.feedback_optimizer.get_config() == shared.get_config()
    with pytest.raises(ValueError, match="^compile: the same optimizer object .* already holds state"):
        make_model("dtpdrl").compile(optimizer=shared, feedback_optimizer=shared)
    with pytest.raises(ValueError, match="^compile: optimizer 'torch_adam' was already built for other variables"):
        make_model("dtpdrl").compile(optimizer=shared)
    with pytest.raises(ValueError, match="^compile: optimizer= and forward_optimizer= are the same argument"):
        make_model("bp").compile(optimizer="adam", forward_optimizer="sgd")
    with pytest.raises(ValueError, match="^compile: pass optimizer="):
        make_model("bp").compile()


@pytest.mark.slow
def test_learning_rate_callbacks_drive_the_forward_optimizer_and_feedback_scheduler_the_feedback_one():
    x, y = _data()
    model = _compiled("dtpdrl", optimizer=TorchAdam(1e-2, precision="float64"),
                      feedback_optimizer=TorchAdam(1e-3, precision="float64"))
    history = model.fit(x, y, batch_size=8, epochs=3, callbacks=[
        keras.callbacks.LearningRateScheduler(lambda epoch, lr: 1e-2 * 0.5 ** epoch),
        FeedbackLearningRateScheduler(lambda epoch, lr: 1e-3 * 0.1 ** epoch)], **METRIC_FREE).history
    np.testing.assert_allclose(history["learning_rate"], [1e-2, 5e-3, 2.5e-3], rtol=1e-12)
    np.testing.assert_allclose(history["feedback_learning_rate"], [1e-3, 1e-4, 1e-5], rtol=1e-12)


@pytest.mark.slow
def test_a_schedule_on_the_feedback_optimizer_follows_its_own_step_counter():
    """The feedback optimizer steps on every training batch and every feedback-only batch."""
    x, y = _data()
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=1, decay_rate=0.5)
    model = _compiled("dtpdrl", feedback_optimizer=TorchAdam(schedule, precision="float64"))
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[FeedbackSchedule(x, y, pretrain_epochs=2, batch_size=12)],
              **METRIC_FREE)
    assert int(model.feedback_optimizer.iterations) == 2 * 2 + 3
    assert int(model.optimizer.iterations) == 3


# --------------------------------------------------------------------------------------------------------------
# FeedbackSchedule on datasets
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_feedback_on_a_dataset_is_the_feedback_step_over_its_batches():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    by_dataset, by_hand = _compiled("ddtp_linear"), _compiled("ddtp_linear")
    losses = by_dataset.train_feedback(dataset, epochs=2)
    for _ in range(2):
        for xb, yb in dataset:
            step.train_step(by_hand, by_hand.optimizer, by_hand.feedback_optimizer, xb, yb, forward=False)
    assert len(losses) == 2
    _assert_same(_values(by_dataset.weights), _values(by_hand.weights))


@pytest.mark.slow
def test_feedback_schedule_in_fit_on_a_dataset_and_a_used_up_generator():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model = _compiled("dtpdrl")
    schedule = FeedbackSchedule(dataset, pretrain_epochs=2, extra_epochs=1)
    history = model.fit(dataset, epochs=2, callbacks=[schedule], verbose=0).history
    assert len(schedule.history) == 4 and len(history["rec_loss_extra"]) == 2
    generator = ((x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8))
    with pytest.raises(ValueError, match="^train_feedback: a Python generator or iterator can be passed over only "
                                         "once"):
        model.train_feedback(generator, epochs=2)


# --------------------------------------------------------------------------------------------------------------
# Construction, precision, strategies, summary
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(sigma=-1.0), r"^TPModel: sigma=-1.0 must be a finite number > 0; dtpdrl trains its feedback with noise"),
    (dict(sigma=float("nan")), "^TPModel: sigma=nan must be a finite number > 0"),
    (dict(target_stepsize=float("nan")), "^TPModel: target_stepsize=nan must be a finite number > 0"),
    (dict(target_stepsize=0.0), "^TPModel: target_stepsize=0.0 must be a finite number > 0"),
    (dict(hidden=[4, 0]), r"^TPModel: hidden_sizes=0 must be a whole number in 1\.\."),
    (dict(hidden=[]), r"^TPModel: hidden_sizes=\[\] must be a non-empty list"),
    (dict(input_size=2.5), r"^TPModel: input_size=2.5 must be a whole number"),
    (dict(seed=-1), r"^TPModel: seed=-1 must be a whole number in 0\.\.4294967295"),
    (dict(gn_damping=-1.0), "^TPModel: gn_damping=-1.0 is not used by rule 'dtpdrl'"),
    (dict(task="ranking"), "^TPModel: task='ranking'; choose 'classification'"),
    (dict(hidden_activation="sigmoid"), "^TPModel: hidden_activation='sigmoid'"),
    (dict(dtype="mixed_float16"), "^dtype='mixed_float16': TP models compute in float32 or float64 only .*1/sigma"),
    (dict(dtype="float16"), "^dtype='float16': TP models compute in float32 or float64 only"),
    (dict(dtype="bfloat16"), "^dtype='bfloat16': TP models compute in float32 or float64 only"),
])
def test_bad_settings_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        make_model("dtpdrl", **kwargs)
    assert "\n" not in str(info.value)


def test_a_mixed_precision_global_policy_is_refused_unless_the_model_says_its_precision():
    from tp_keras.core.cnn import CNNModel
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        with pytest.raises(ValueError, match="^the global Keras dtype policy 'mixed_float16': TP models compute"):
            TPModel("bp", 4, [3], 2)
        with pytest.raises(ValueError, match="^the global Keras dtype policy 'mixed_float16'"):
            CNNModel("bp", image_shape=(8, 8, 1), conv_channels=(2,), fc_units=(4,), output_size=2)
        assert TPModel("bp", 4, [3], 2, dtype="float32").compute_dtype == "float32"
    finally:
        keras.config.set_dtype_policy(previous)


def test_a_model_built_outside_the_strategy_scope_is_refused_by_fit():
    x, y = _data()
    model = _compiled("ddtp_linear")
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        with pytest.raises(ValueError, match="^fit: this model was built outside the scope of the current "
                                             "OneDeviceStrategy; build and compile it inside"):
            model.fit(x, y, verbose=0)


def test_fit_under_a_multi_worker_strategy_is_refused(monkeypatch):
    """Detected by class (as for TPUs, so this fake stands in for one); the real strategy is refused the same way
    in tests/test_multi_worker.py."""
    from tp_keras.core import keras_checks
    x, y = _data()
    model = _compiled("ddtp_linear")
    fake = type("MultiWorkerMirroredStrategy", (), {})()
    assert keras_checks.is_multi_worker_strategy(fake) and not keras_checks.is_multi_worker_strategy(
        tf.distribute.get_strategy())
    monkeypatch.setattr(tf.distribute, "get_strategy", lambda: fake)
    with pytest.raises(ValueError, match=r"^fit under MultiWorkerMirroredStrategy is not supported .*"
                                         r"--strategy=multi_worker\) or tp_keras.run.distribute.DistributedTrainer$"):
        model.fit(x, y, verbose=0)


def test_summary_shows_output_shapes():
    lines = []
    make_model("ddtp_linear").summary(print_fn=lambda line, **kwargs: lines.append(line))
    text = "\n".join(lines)
    assert all(s in text for s in ("(None, 6)", "(None, 5)", "(None, 4)", "(None, 3)")) and "│ ?" not in text


@pytest.mark.slow
def test_steps_per_execution_trains_exactly_like_one_step_per_call():
    x, y = _data()
    one, four = _compiled("dtpdrl"), _compiled("dtpdrl", steps_per_execution=4)
    for model in (one, four):
        model.fit(x, y, batch_size=4, epochs=2, **METRIC_FREE)
    _assert_same(_values(one.weights), _values(four.weights))


# --------------------------------------------------------------------------------------------------------------
# Inputs checked before training; non-finite values during training
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda x, y, w: (x, np.where(y == 1, 0.5, y), w), r"^y holds 0.5 \(row 1\); labels must be integer class ids"),
    (lambda x, y, w: (x, np.where(y == 2, 3, y), w), r"^y holds 3 \(row 2\); labels must be class ids in \[0, 3\)"),
    (lambda x, y, w: (x, np.eye(4)[y], w), r"^y has shape \(24, 4\); give class ids of shape \(N,\) or \(N, 1\)"),
    (lambda x, y, w: (x, 2 * np.eye(3)[y], w), r"^label row 0 .* is not a probability row"),
    (lambda x, y, w: (np.where(x > 1.5, np.nan, x), y, w), r"^x holds \d+ non-finite value\(s\) \(the first in row"),
    (lambda x, y, w: (x, y, -w), r"^sample_weight holds -1.0 \(row 0\): a negative weight"),
    (lambda x, y, w: (x, None, w), "^fit/evaluate need labels y"),
])
def test_bad_inputs_are_refused_before_training(change, message):
    model = _compiled("ddtp_linear")
    x, y = _data()
    x, y, w = change(x, y, np.ones(len(x)))
    for call in (lambda: model.fit(x, y, sample_weight=w, verbose=0),
                 lambda: model.evaluate(x, y, sample_weight=w, verbose=0)):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match="^validation_data: " + message.lstrip("^")):
        model.fit(*_data(), validation_data=(x, y, w), verbose=0)


def test_bad_class_weights_are_refused():
    model = _compiled("ddtp_linear")
    x, y = _data()
    with pytest.raises(ValueError, match=r"^class_weight: key 3 is not a class id in \[0, 3\)"):
        model.fit(x, y, class_weight={0: 1.0, 3: 1.0}, verbose=0)
    with pytest.raises(ValueError, match=r"^class_weight\[1\] = nan; weights must be finite and >= 0"):
        model.fit(x, y, class_weight={0: 1.0, 1: float("nan")}, verbose=0)


KERAS_SHAPE = (r'^Input 0 of layer "{name}" is incompatible with the layer: expected axis -1 of input shape to '
               r'have value 7, but received input with shape \(None, 10\); this model takes x of shape \(N, 7\)$')


def test_inputs_with_the_wrong_number_of_features_are_refused_in_keras_words():
    model = _compiled("dtpdrl")
    x, y = np.zeros((8, 10)), np.zeros(8, "int32")
    message = KERAS_SHAPE.format(name=re.escape(model.name))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(ValueError, match=message):
        model.fit(dataset, **METRIC_FREE)
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, **METRIC_FREE)
    with pytest.raises(ValueError, match=message):
        model.evaluate(dataset, verbose=0)
    good = tf.data.Dataset.from_tensor_slices((np.zeros((8, 7)), y)).batch(4)
    before = _values(model.weights)
    with pytest.raises(ValueError, match=message):  # before the first step, not at the end of the epoch
        model.fit(good, validation_data=dataset, **METRIC_FREE)
    _assert_same(before, _values(model.weights))
    with pytest.raises(ValueError, match=message):
        model.train_feedback(x, y)

    def generator():  # a stream fit cannot look at beforehand: refused as the step is traced
        yield x[:4], y[:4]
    with pytest.raises(ValueError, match=message):
        model.fit(generator(), **METRIC_FREE)
    with pytest.raises(ValueError, match=r"expected ndim=2, found ndim=3. Full shape received: \(None, 7, 1\)"):
        model.fit(np.zeros((8, 7, 1)), y, **METRIC_FREE)


def test_string_labels_and_inputs_in_a_dataset_are_refused_in_one_line():
    model = _compiled("dtpdrl")
    x = np.zeros((8, 7))
    labels = tf.data.Dataset.from_tensor_slices((x, np.array(["a", "b"] * 4))).batch(4)
    with pytest.raises(ValueError, match=r"^labels have dtype string; a TPModel takes class ids \(integers in "
                                         r"\[0, 3\)\) or one-hot rows: .*StringLookup"):
        model.fit(labels, **METRIC_FREE)
    inputs = tf.data.Dataset.from_tensor_slices((np.array(["a"] * 8), np.zeros(8, "int32"))).batch(4)
    with pytest.raises(ValueError, match=r"^x has dtype string; a TPModel takes numbers"):
        model.fit(inputs, **METRIC_FREE)


@pytest.mark.slow
def test_a_label_out_of_range_in_a_dataset_is_one_line():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, np.where(np.arange(len(y)) == 9, 7, y))).batch(8)
    with pytest.raises(ValueError, match=r"^labels: a class id out of range in the data \(Received a label value of "
                                         r"7 which is outside the valid range of \[0, 3\)"):
        _compiled("ddtp_linear").fit(dataset, verbose=0)


@pytest.mark.slow
def test_a_non_finite_value_during_fit_stops_with_the_launchers_message():
    """A NaN arriving through a dataset (not checkable beforehand) ends fit at the end of that epoch with
    Diverged and exactly the message the launcher's loop gives for the same batches."""
    x, y = _data()
    x[13, 2] = np.nan  # in batch 3 of 4-sample batches
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    model = _compiled("dtpdrl")
    with pytest.raises(experiment.Diverged) as info:
        model.fit(dataset, epochs=3, verbose=0)
    trainer = step.Trainer(make_model("dtpdrl"), TorchAdam(1e-2, precision="float64"),
                           TorchAdam(1e-2, precision="float64"))
    flags = []
    for xb, yb in dataset:
        out = trainer.train_step(xb, yb)
        flags.append({k: v for k, v in out.items() if k.startswith("finite_")})
    assert str(info.value) == health.first_problem("epoch 1", flags)
    assert re.fullmatch(r"non-finite .* in epoch 1, batch 3", str(info.value))


@pytest.mark.slow
def test_a_non_finite_feedback_pass_stops_with_the_launchers_message():
    x, y = _data()
    x[5, 0] = np.nan
    model = _compiled("ddtp_linear")
    with pytest.raises(experiment.Diverged, match="^non-finite .* in feedback pre-training pass 1, batch 0$"):
        model.fit(x[8:16], y[8:16], verbose=0, callbacks=[
            FeedbackSchedule(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), pretrain_epochs=1)])
