"""A population through Keras `fit` (tp_keras/core/population_model.py): member k's history, weights, optimizer and
noise state equal, bit for bit in float64 without XLA, those of `TPModel.fit` of the same member alone; a member
that goes non-finite stops alone (NaN logs from there, its last good weights kept) while the others go on; predict
and evaluate are per member; what the population does not support is refused in one line.

Each fit traces the population and its members' single fits (seconds each), so the fast tier keeps one rule and the
slow tier runs the others."""
import numpy as np
import pytest

from conftest import fast_tier
from tp_keras.core.rules import get_rule

SIZES = dict(input_size=8, hidden_sizes=[6, 6], output_size=4)
ROWS, BATCH = 30, 8  # three full batches and one of 6
# Members that differ by seed, forward learning rate, and η̂ and σ where the rule uses them.
MEMBERS = [dict(seed=1, lr=1e-2, target_stepsize=0.1, sigma=0.1),
           dict(seed=2, lr=3e-2, target_stepsize=0.2, sigma=0.05),
           dict(seed=3, lr=2e-2, target_stepsize=0.15, sigma=0.08)]
FIT = dict(batch_size=BATCH, verbose=0)


def _data(seed=0, rows=ROWS):
    rng = np.random.default_rng(seed)
    # values float32 holds exactly: Keras' array adapter hands float inputs to the model in floatx
    x = rng.standard_normal((rows, SIZES["input_size"])).astype("float32").astype("float64")
    return x, rng.integers(0, SIZES["output_size"], rows).astype("int32")


def _member(method, member):
    from tp_keras.core.model import TPModel
    hyper = get_rule(method).used(target_stepsize=member["target_stepsize"], sigma=member["sigma"])
    return TPModel(method, **SIZES, seed=member["seed"], dtype="float64", **hyper)


def _optimizers(method, members):
    from tp_keras.core.optimizers import TorchAdam
    feedback = {"feedback_optimizer": TorchAdam(1e-2, precision="float64")} if get_rule(method).trains_feedback else {}
    return dict(optimizer=[TorchAdam(m["lr"], precision="float64") for m in members], **feedback)


def _population(method, members, jit_compile=False, **compile_kwargs):
    from tp_keras.core.population_model import PopulationModel
    population = PopulationModel([_member(method, m) for m in members])
    population.compile(**_optimizers(method, members), jit_compile=jit_compile, **compile_kwargs)
    return population


def _single(method, member, jit_compile=False, **compile_kwargs):
    """The member alone, compiled as the population compiles it."""
    from tp_keras.core.optimizers import TorchAdam
    model = _member(method, member)
    feedback = {"feedback_optimizer": TorchAdam(1e-2, precision="float64")} if model.feedback_variables else {}
    model.compile(optimizer=TorchAdam(member["lr"], precision="float64"), jit_compile=jit_compile, **feedback,
                  **compile_kwargs)
    return model


def _fit(model, *args, **kwargs):
    import keras
    keras.utils.set_random_seed(5)  # Keras' shuffling draws from it: one order for the population and the singles
    return model.fit(*args, **kwargs).history


def _state(model):
    """A member's whole state: weights, noise generator, forward and feedback optimizer variables."""
    variables = list(model.variables) + list(model.optimizer.variables)
    if model.feedback_variables:
        variables += list(model.feedback_optimizer.variables)
    return [np.asarray(v.numpy()) for v in variables]


def _member_history(history, k):
    suffix = f"_{k}"
    return {key[:-len(suffix)]: values for key, values in history.items() if key.endswith(suffix)}


@pytest.mark.parametrize("method", fast_tier(["fw_dtp", "bp", "ddtp_linear", "dtpdrl"], {"fw_dtp"}))
def test_each_members_fit_equals_its_single_fit_bit_for_bit(method):
    """Two members, two epochs shuffled by Keras, two batches per execution, validation data: each member's history
    (loss, accuracy, rec_loss, val_*) and whole state equal its own fit's."""
    x, y = _data()
    members = MEMBERS[:2]
    kwargs = dict(FIT, epochs=2, shuffle=True, validation_data=_data(1, 12))
    population = _population(method, members, steps_per_execution=2)
    history = _fit(population, x, y, **kwargs)
    assert set(history) == {f"{name}_{k}" for name in _member_history(history, 0) for k in range(2)}
    for k, member in enumerate(members):
        single = _single(method, member, steps_per_execution=2)
        expected = _fit(single, x, y, **kwargs)
        assert _member_history(history, k) == expected
        assert len(_state(single)) == len(_state(population.members[k]))
        for a, b in zip(_state(population.members[k]), _state(single)):
            np.testing.assert_array_equal(a, b)
    assert population.alive() == [True, True] and population.diverged() == [None, None]


class _PoisonAfterEpoch:
    """A callback that writes NaN into one weight of one member at the end of an epoch, as a diverged update
    would leave it."""

    def __new__(cls, member, epoch):
        import keras

        class Poison(keras.callbacks.Callback):
            def on_epoch_end(self, done, logs=None):
                if done == epoch:
                    kernel = member.tp_layers[0].forward_variables[0]
                    value = kernel.numpy()
                    value[0, 0] = np.nan
                    kernel.assign(value)
        return Poison()


@pytest.mark.parametrize("method", fast_tier(["fw_dtp", "ddtp_linear", "dtpdrl"], {"fw_dtp"}))
def test_a_member_that_goes_non_finite_stops_alone(method):
    """Member 1 gets a NaN weight after epoch 1 (of 3): its epoch-1 logs are its single fit's, its later logs NaN,
    its state the single fit's after epoch 1 but for the noise generator, which drew the bad batch's noise; it is
    reported as stopped at the first batch of epoch 2. Members 0 and 2 equal their single fits over all three
    epochs."""
    x, y = _data()
    population = _population(method, MEMBERS)
    history = _fit(population, x, y, epochs=3, shuffle=False, callbacks=[_PoisonAfterEpoch(population.members[1], 0)],
                   **FIT)
    batches_per_epoch = -(-ROWS // BATCH)
    assert population.alive() == [True, False, True]
    stopped = population.diverged()
    assert stopped[0] is None and stopped[2] is None and f"batch {batches_per_epoch}" in stopped[1]
    for k, member in enumerate(MEMBERS):
        single = _single(method, member)
        expected = _fit(single, x, y, epochs=3 if k != 1 else 1, shuffle=False, **FIT)
        logs = _member_history(history, k)
        if k == 1:
            assert {name: values[:1] for name, values in logs.items()} == expected
            assert all(np.isnan(values[1:]).all() for values in logs.values())
            noise = [i for i, v in enumerate(single.variables) if "seed" in v.path]
            kept, after_epoch_1 = _state(population.members[1]), _state(single)
            kernel = population.members[1].tp_layers[0].forward_variables[0]
            poisoned = [i for i, v in enumerate(population.members[1].variables) if v is kernel]
            assert len(poisoned) == 1 and np.isnan(kept[poisoned[0]][0, 0])
            kept[poisoned[0]][0, 0] = after_epoch_1[poisoned[0]][0, 0]
            for i, (a, b) in enumerate(zip(kept, after_epoch_1)):
                if i not in noise:
                    np.testing.assert_array_equal(a, b)
        else:
            assert logs == expected
            for a, b in zip(_state(population.members[k]), _state(single)):
                np.testing.assert_array_equal(a, b)


def test_fit_ends_when_every_member_has_stopped():
    x, y = _data()
    population = _population("bp", MEMBERS[:1])
    population.members[0].tp_layers[0].forward_variables[0].assign(
        np.full(population.members[0].tp_layers[0].forward_variables[0].shape, np.nan))
    history = population.fit(x, y, epochs=5, **FIT).history
    assert population.alive() == [False] and len(history["loss_0"]) == 1 and np.isnan(history["loss_0"][0])
    assert isinstance(population.diverged()[0], str)


def test_predict_and_evaluate_are_per_member():
    """predict: the list of each member's outputs; evaluate: each member's own evaluate, under `<name>_<k>`."""
    x, y = _data()
    population = _population("ddtp_linear", MEMBERS[:2])
    outputs = population.predict(x, **FIT)
    results = population.evaluate(x, y, return_dict=True, **FIT)
    assert len(outputs) == 2
    for k, member in enumerate(population.members):
        np.testing.assert_array_equal(outputs[k], member.predict(x, **FIT))
        alone = member.evaluate(x, y, return_dict=True, **FIT)
        assert {name: results[f"{name}_{k}"] for name in alone} == alone
    assert set(results) == {f"{name}_{k}" for name in ("loss", "accuracy") for k in range(2)}


def test_what_a_population_does_not_take_is_refused_in_one_line():
    import keras
    from tp_keras.core.callbacks import FeedbackSchedule
    from tp_keras.core.optimizers import TorchAdam
    from tp_keras.core.population_model import PopulationModel
    x, y = _data()
    with pytest.raises(ValueError, match="differ by rule"):
        PopulationModel([_member("dtpdrl", MEMBERS[0]), _member("ddtp_linear", MEMBERS[1])])
    member = _member("bp", MEMBERS[0])
    with pytest.raises(ValueError, match="appears twice"):
        PopulationModel([member, member])
    population = PopulationModel([_member("bp", m) for m in MEMBERS[:2]])
    with pytest.raises(ValueError, match="compile"):
        population.fit(x, y)
    used = TorchAdam(1e-3, precision="float64")
    used.build([keras.Variable(np.zeros(2))])
    with pytest.raises(ValueError, match="already holds state"):
        population.compile(optimizer=used)
    population.compile(optimizer=TorchAdam(1e-3, precision="float64"))
    assert population.members[0].optimizer is not population.members[1].optimizer
    for refused, match in ((dict(sample_weight=np.ones(ROWS)), "sample_weight is not supported"),
                           (dict(class_weight={0: 1.0}), "class_weight is not supported"),
                           (dict(callbacks=[keras.callbacks.LearningRateScheduler(lambda e, lr: lr)]),
                            "LearningRateScheduler drives one model's optimizer"),
                           (dict(callbacks=[FeedbackSchedule(x, y, pretrain_epochs=1)]), "FeedbackSchedule")):
        with pytest.raises(ValueError, match=match) as error:
            population.fit(x, y, **refused, **FIT)
        assert "\n" not in str(error.value)


@pytest.mark.slow
def test_the_bench_times_fit_against_the_custom_loop():
    """tools/population_bench.py's fit rows on a tiny network: samples/s both ways from each round's seconds."""
    from tp_keras.tools import population_bench
    report = population_bench.run_fit(["ddtp_linear"], [4], members=2, samples=64, batch_size=16,
                                      xla_settings=[False], steps_per_execution=[1, 2], repeats=1)
    rows = report["fit_against_loop"]
    assert [r["steps_per_execution"] for r in rows] == [1, 2]
    for row in rows:
        (rounds,) = row["rounds"]
        assert row["fit_samples_per_second"] == pytest.approx(2 * 64 / rounds["fit_seconds"])
        assert row["loop_samples_per_second"] == pytest.approx(2 * 64 / rounds["loop_seconds"])
        assert row["fit_over_loop_seconds"] == pytest.approx(rounds["fit_seconds"] / rounds["loop_seconds"])


@pytest.mark.slow
def test_on_a_dataset_of_unknown_size_members_equal_their_single_fits():
    """A tf.data.Dataset whose end is found by running out (Keras' StopIteration), 4 batches per execution, two
    epochs: the population's train function runs nothing of the step once the data ended (TPModel's), so each
    member draws its single fit's noise in the second epoch too."""
    import tensorflow as tf
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda *_: True).batch(BATCH)
    population = _population("dtpdrl", MEMBERS[:2], steps_per_execution=4)
    history = population.fit(dataset, epochs=2, verbose=0).history
    for k, member in enumerate(MEMBERS[:2]):
        single = _single("dtpdrl", member, steps_per_execution=4)
        assert _member_history(history, k) == single.fit(dataset, epochs=2, verbose=0).history
        for a, b in zip(_state(population.members[k]), _state(single)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_under_xla_members_agree_with_their_single_fits_to_1e12_in_float64():
    """XLA compiles the members as one cluster (its fusions may differ from a single model's): float64 state to
    1e-12, the float32 logs to float32 rounding."""
    x, y = _data()
    population = _population("ddtp_linear", MEMBERS[:2], jit_compile=True)
    history = _fit(population, x, y, epochs=2, shuffle=True, **FIT)
    for k, member in enumerate(MEMBERS[:2]):
        single = _single("ddtp_linear", member, jit_compile=True)
        expected = _fit(single, x, y, epochs=2, shuffle=True, **FIT)
        for name, values in expected.items():
            np.testing.assert_allclose(_member_history(history, k)[name], values, rtol=1e-6)
        for a, b in zip(_state(population.members[k]), _state(single)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
