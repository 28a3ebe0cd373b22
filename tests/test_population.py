"""Populations (tp_keras/core/population.py): each member's numbers are its single run's (every rule, members that
differ by seed and by hyper-parameter values, one batch per call and the compiled loop, XLA), a member that diverges
stops alone with its last good state, and a population's state restored continues bit for bit.

Each check traces a population and its members' single runs (seconds each), so the fast tier keeps one rule's
bit-identity and the slow tier runs the rest."""
import numpy as np
import pytest

from conftest import ALL_METHODS, fast_tier
from tp_keras.core.health import first_problem
from tp_keras.core.rules import get_rule

SIZES = dict(input_size=8, hidden_sizes=[6, 6], output_size=4)
BATCH = 5
# Two members that differ by seed, forward learning rate, η̂ and σ (where the rule uses them), and a third.
MEMBERS = [dict(seed=1, lr=1e-3, target_stepsize=0.1, sigma=0.1),
           dict(seed=2, lr=3e-3, target_stepsize=0.2, sigma=0.05),
           dict(seed=3, lr=2e-3, target_stepsize=0.15, sigma=0.08)]


def _trainer(method, member, dtype, jit_compile=False):
    from tp_keras.core.model import TPModel
    from tp_keras.core.optimizers import TorchAdam
    from tp_keras.core.step import Trainer
    hyper = get_rule(method).used(target_stepsize=member["target_stepsize"], sigma=member["sigma"])
    model = TPModel(method, **SIZES, seed=member["seed"], dtype=dtype, **hyper)
    feedback = TorchAdam(1e-3) if model.feedback_variables else None
    return Trainer(model, TorchAdam(member["lr"]), feedback, jit_compile=jit_compile)


def _population(method, members, dtype="float64", jit_compile=False):
    from tp_keras.core.population import Population
    return Population([_trainer(method, m, dtype) for m in members], jit_compile=jit_compile)


def _batches(steps, members, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, members, BATCH, SIZES["input_size"])).astype("float32")
    y = rng.integers(0, SIZES["output_size"], (steps, members, BATCH)).astype("int32")
    return x, y


def _values(trainer):
    from tp_keras.core.population import member_variables
    return [np.asarray(v.numpy()) for v in member_variables(trainer)]


def _assert_same(a, b, tolerance=0.0):
    assert len(a) == len(b)
    for p, q in zip(a, b):
        if tolerance:
            np.testing.assert_allclose(p, q, rtol=tolerance, atol=tolerance)
        else:
            np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("method", fast_tier(ALL_METHODS, {"fw_dtp"}))
def test_each_member_equals_its_single_run_bit_for_bit(method):
    """float64, two members differing by seed and hyper-parameters, two batches, one per call: every variable of
    every member (weights, noise state, both optimizers) and every output equals the single run's."""
    members, steps = MEMBERS[:2], 2
    x, y = _batches(steps, len(members))
    population = _population(method, members)
    outputs = [population.train_step(x[i], y[i]) for i in range(steps)]
    for k, member in enumerate(members):
        single = _trainer(method, member, "float64")
        single_outputs = [single.train_step(x[i, k], y[i, k]) for i in range(steps)]
        _assert_same(_values(population.trainers[k]), _values(single))
        for i in range(steps):
            for key, value in single_outputs[i].items():
                np.testing.assert_array_equal(outputs[i][key][k].numpy(), value.numpy(), err_msg=key)
            assert bool(outputs[i]["alive"][k])
    assert population.alive() == [True, True] and population.diverged() == [None, None]


@pytest.mark.parametrize("method", fast_tier(["dtpdrl", "ldrl"], set()))
def test_float32_members_equal_their_single_runs(method):
    members, steps = MEMBERS[:2], 2
    x, y = _batches(steps, len(members))
    population = _population(method, members, "float32")
    for i in range(steps):
        population.train_step(x[i], y[i])
    for k, member in enumerate(members):
        single = _trainer(method, member, "float32")
        for i in range(steps):
            single.train_step(x[i, k], y[i, k])
        _assert_same(_values(population.trainers[k]), _values(single))


@pytest.mark.parametrize("method", fast_tier(["dtpdrl", "ldrl", "bp"], set()))
def test_the_compiled_loop_reads_each_members_order_and_equals_the_single_runs(method):
    """`Population.loop` over the shared data, each member in its own shuffling order, feedback-only batches then
    training batches, against each single run's `loop.StepLoop` over its permuted copy of the data."""
    import tensorflow as tf
    from tp_keras.core import loop
    members, batches = MEMBERS[:2], 3
    rows = BATCH * batches
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, SIZES["input_size"])).astype("float32")
    y = rng.integers(0, SIZES["output_size"], rows).astype("int32")
    order = np.stack([np.random.default_rng([m["seed"], 0]).permutation(rows) for m in members]).astype("int32")
    population = _population(method, members)
    trains_feedback = bool(population.models[0].feedback_variables)
    if trains_feedback:
        population.loop(x, y, order, 0, batches, BATCH, forward=False)
    out = population.loop(x, y, order, BATCH, batches - 1, BATCH)
    assert out["loss"].shape == (batches - 1, len(members))
    for k, member in enumerate(members):
        single = _trainer(method, member, "float64")
        xk, yk = tf.gather(x, order[k]), tf.gather(y, order[k])
        if trains_feedback:
            loop.StepLoop(single.feedback_step, BATCH)(xk, yk, 0, batches)
        single_out = loop.StepLoop(single.train_step, BATCH)(xk, yk, BATCH, batches - 1)
        _assert_same(_values(population.trainers[k]), _values(single))
        np.testing.assert_array_equal(out["loss"][:, k].numpy(), single_out["loss"].numpy())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ddtp_linear", "ldrl"])
def test_under_xla_members_agree_with_their_single_runs_to_1e12_in_float64(method):
    """XLA compiles the members as one cluster (its fusions may differ from a single run's): float64 to 1e-12."""
    members, steps = MEMBERS[:2], 2
    x, y = _batches(steps, len(members))
    population = _population(method, members, jit_compile=True)
    for i in range(steps):
        population.train_step(x[i], y[i])
    for k, member in enumerate(members):
        single = _trainer(method, member, "float64", jit_compile=True)
        for i in range(steps):
            single.train_step(x[i, k], y[i, k])
        _assert_same(_values(population.trainers[k]), _values(single), tolerance=1e-12)


@pytest.mark.parametrize("method", fast_tier(["ddtp_linear", "ldrl"], set()))
def test_a_diverging_member_stops_alone_with_its_last_good_state(method):
    """Member 1's second batch holds a NaN: it keeps its state from after its first batch (as its single run had
    it before the bad batch), computes nothing after (NaN metrics, not alive), and is reported where its single
    run's Diverged would say; members 0 and 2 equal their single runs over all three batches."""
    members, steps = MEMBERS, 3
    x, y = _batches(steps, len(members))
    x[1, 1, 2, 3] = np.nan
    population = _population(method, members)
    outputs = [population.train_step(x[i], y[i]) for i in range(steps)]
    assert [bool(o["alive"][1]) for o in outputs] == [True, False, False]  # alive after the batch
    assert population.alive() == [True, False, True]
    assert np.isnan(outputs[2]["loss"][1].numpy())
    for k, member in enumerate(members):
        single = _trainer(method, member, "float64")
        good = steps if k != 1 else 1
        flags = [single.train_step(x[i, k], y[i, k]) for i in range(good)]
        if k == 1:  # the state the single run had before its bad batch
            state_before_bad_batch = _values(single)
            flags.append(single.train_step(x[1, k], y[1, k]))
            expected = first_problem("population", [{key: f[key] for key in f if key.startswith("finite_")}
                                                    for f in flags])
            assert population.diverged()[1] == expected and "batch 1" in expected
            kept = _values(population.trainers[k])
            noise_state = [i for i, v in enumerate(population.trainers[k].model.variables)
                           if "seed" in v.path]
            # every value as before the bad batch, but the noise generator, which drew that batch's noise
            _assert_same([v for i, v in enumerate(kept) if i not in noise_state],
                         [v for i, v in enumerate(state_before_bad_batch) if i not in noise_state])
        else:
            _assert_same(_values(population.trainers[k]), _values(single))
    assert population.diverged()[0] is None and population.diverged()[2] is None


@pytest.mark.slow
def test_a_restored_population_continues_bit_for_bit():
    """Two batches, state saved (a diverged member included), two more batches; a population of fresh members
    (other seeds: other weights and noise states; the same hyper-parameters, which are settings, not state, as in
    a single run's checkpoint) restored from the saved state runs the same two batches to the same values and
    records."""
    method, steps = "dtpdrl", 4
    x, y = _batches(steps, 2)
    x[1, 1, 0, 0] = np.inf
    population = _population(method, MEMBERS[:2])
    for i in range(2):
        population.train_step(x[i], y[i])
    saved = population.state()
    for i in range(2, steps):
        population.train_step(x[i], y[i])
    restored = _population(method, [dict(m, seed=m["seed"] + 10) for m in MEMBERS[:2]])
    restored.restore(saved)
    for i in range(2, steps):
        restored.train_step(x[i], y[i])
    for k in range(2):
        _assert_same(restored.member_state(k), population.member_state(k))
    assert restored.alive() == population.alive() == [True, False]
    assert restored.diverged() == population.diverged()


def test_a_members_state_is_its_single_run_checkpoints_variables():
    """A member's checkpoint is an ordinary one: `member_variables` lists what run/checkpoint.py saves, in its
    order."""
    from tp_keras.core.population import member_variables
    from tp_keras.run import checkpoint
    for method in ("dtpdrl", "bp"):
        trainer = _trainer(method, MEMBERS[0], "float64")
        assert [id(v) for v in member_variables(trainer)] == [id(v) for v in checkpoint._checkpoint_variables(trainer)]


def test_a_population_is_of_one_rule_and_dtype_and_each_member_its_own_model():
    from tp_keras.core.population import Population
    with pytest.raises(ValueError, match="one rule in one dtype"):
        Population([_trainer("dtpdrl", MEMBERS[0], "float64"), _trainer("ddtp_linear", MEMBERS[1], "float64")])
    with pytest.raises(ValueError, match="one rule in one dtype"):
        Population([_trainer("dtpdrl", MEMBERS[0], "float64"), _trainer("dtpdrl", MEMBERS[1], "float32")])
    trainer = _trainer("dtpdrl", MEMBERS[0], "float64")
    with pytest.raises(ValueError, match="appears twice"):
        Population([trainer, trainer])


@pytest.mark.slow
def test_the_bench_times_singles_against_the_population_and_steps_per_second_against_k():
    """tools/population_bench.py on a tiny network: a row per method against the singles (samples/s both ways, the
    ratio of the median seconds, each round's seconds) and a row per K."""
    from tp_keras.tools import population_bench
    report = population_bench.run(["ddtp_linear"], [4], members=2, samples=64, batch_size=16,
                                  xla_settings=[False], k_values=[1, 2], repeats=1)
    (row,) = report["against_singles"]
    (rounds,) = row["rounds"]
    assert row["ratio"] == pytest.approx(rounds["singles_seconds"] / rounds["population_seconds"])
    assert row["population_samples_per_second"] == pytest.approx(2 * 64 / rounds["population_seconds"])
    assert [r["members"] for r in report["against_k"]] == [1, 2]
    for r in report["against_k"]:
        assert r["samples_per_second"] == pytest.approx(r["members"] * 16 * r["steps_per_second"])
