"""A feedback-first batch (L-DRL) with its clean forward pass computed once and its rounds run as compiled loops
(`step.feedback_first_updates`) gives the very numbers of the rounds written out one by one, each recomputing
the forward pass (`unrolled_reference_batch` below: the step as it was before the loops, written out here).

Bit-identity where the arithmetic is the same: the forward weights do not move during the rounds, so the clean
pass is the same tensor value, and a loop iteration runs the same kernels on the same values as a written-out
round. Checked on every variable (forward and feedback weights, every per-layer optimizer's state and step
counter, the noise seed) and on the reported metrics after a few batches, with unequal K (so that groups of one
round, run unlooped, and groups of several, looped, both occur), in float64 and float32: eagerly, under
tf.function and in Keras `fit` with Grappler's arithmetic optimizer off.

With it on (TensorFlow's default), it rewrites the ops of the step's main graph (where the written-out rounds
are) and those of a while-loop body differently (op fusions and reorderings that change rounding): the runs
then agree to rounding, as under XLA, which also compiles a loop body apart from the rest. Measured with
ITERATIONS, 2 batches, on CPU: max |Δ| 1.7e-16 (float64) and 3.1e-6 (float32, Adam's ε = 1e-4 amplifying
float32 rounding in the feedback gradients by lr/ε) under tf.function; 1.5e-15 and 3.6e-7 under XLA. Tolerance
1e-13 and 3e-5 there: a semantic slip (a round skipped or taken by the wrong layers, noise drawn anew or not,
the wrong optimizer's counter) moves a weight by an Adam step, lr ≥ 1e-2.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from conftest import INPUT, OUTPUT, make_batch, make_model, randomize_biases
from tp_keras.core import step
from tp_keras.core.conv_layers import TPConvBlock
from tp_keras.core.conv_networks import ConvChainNetwork
from tp_keras.core.model import TPModel
from tp_keras.core.rules import get_rule
from tp_keras.core.optimizers import LayerwiseOptimizer, TorchAdam
from tp_keras.core.rules.components import InBatchSchedule

# 3 hidden layers: rounds 0-2 all layers, round 3 layers {0, 1}, rounds 4-5 layer {1}: a looped run after the
# reported first round, a group of one round and a looped group of a subset.
ITERATIONS = (4, 6, 3)
BATCHES = 2
TOLERANCE = {"float64": 1e-13, "float32": 3e-5}
CONV_IMAGE = (6, 6, 1)


def unrolled_reference_batch(model, forward_optimizer, feedback_optimizer, x, y, forward=True):
    """The feedback-first batch written out: one `compute_updates` per round (each computing its own forward
    pass), then the forward step's (computing it once more); the first round reports the feedback losses."""
    first = None
    for active in model.rule.schedule.rounds(len(model.tp_layers) - 1):
        updates = step.compute_updates(model, x, y, forward=False, feedback=True, feedback_layers=active)
        step.apply_updates(model, updates, None, feedback_optimizer)
        first = first or updates
    if not forward:
        return first
    updates = step.compute_updates(model, x, y, forward=True, feedback=False)
    step.apply_updates(model, updates, forward_optimizer, None)
    return dataclasses.replace(updates, feedback_losses=first.feedback_losses)


def _reference_step(model, forward_optimizer, feedback_optimizer, x, y, forward=True):
    updates = unrolled_reference_batch(model, forward_optimizer, feedback_optimizer, x, y, forward)
    return {**step.step_metrics(updates), **step.health(updates)}


def _optimizers(model):
    """The forward optimizer and the per-layer feedback optimizer, built; unequal feedback rates, so that a step
    taken by the wrong layer's optimizer shows."""
    groups = model.feedback_variable_groups
    feedback = LayerwiseOptimizer([TorchAdam(1e-2 * (i + 1), epsilon=1e-4) for i in range(len(groups))], groups)
    forward = TorchAdam(1e-2)
    forward.build(model.forward_variables)
    feedback.build(model.feedback_variables)
    return forward, feedback


def _setup(dtype, iterations=ITERATIONS):
    model = randomize_biases(make_model("ldrl", dtype=dtype, feedback_iterations=list(iterations)))
    return (model, *_optimizers(model))


def _state(model, forward, feedback):
    variables = model.forward_variables + model.feedback_variables + forward.variables + feedback.variables
    return [np.array(v.numpy()) for v in variables] + [np.array(model.noise_seed.state.numpy())]


def _setup_conv(dtype, iterations=ITERATIONS):
    """A conv chain with 3 hidden layers (no pooling, average pooling, max pooling of an odd-sized map) and L-DRL's
    inverse blocks."""
    rule = dataclasses.replace(get_rule("ldrl"), feedback_iterations=tuple(iterations), sigma=0.05)
    specs = [{"filters": 2, "pooling": "none"}, {"filters": 3, "pooling": "average"},
             {"filters": 2, "pooling": "max"}, {"units": OUTPUT}]
    net = ConvChainNetwork(rule, CONV_IMAGE, specs, seed=3, dtype=dtype)
    model = randomize_biases(TPModel(rule, network=net, seed=3, dtype=dtype))
    return (model, *_optimizers(model))


def _input_size(model):
    return int(np.prod(model.network.image_shape)) if isinstance(model.network, ConvChainNetwork) else INPUT


def _run(step_fn, model, forward, feedback, compile_, forward_step=True):
    fn = lambda x, y: step_fn(model, forward, feedback, x, y, forward=forward_step)  # noqa: E731
    if compile_ is not None:
        fn = tf.function(fn, jit_compile=compile_ == "xla", autograph=False)
    metrics = []
    for seed in range(BATCHES):
        x, y = make_batch(seed=seed, input_size=_input_size(model))
        out = fn(tf.constant(x, model.compute_dtype), tf.constant(y))
        metrics.append({k: np.array(v.numpy()) for k, v in out.items()})
    return metrics, _state(model, forward, feedback)


def _assert_identical(a, b, atol=0.0):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        if atol:
            np.testing.assert_allclose(u, v, rtol=0, atol=atol)
        else:
            np.testing.assert_array_equal(u, v)


@pytest.fixture
def without_arithmetic_rewrites():
    """Grappler's arithmetic optimizer off for the graphs traced meanwhile (see the module docstring)."""
    before = tf.config.optimizer.get_experimental_options().get("arithmetic_optimization", True)
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    yield
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": before})


def test_groups_are_the_rounds_run_length_encoded():
    """The CIFAR-10 setting's 55 rounds are 4 groups; expanding the groups gives `rounds` back."""
    schedule = InBatchSchedule(feedback_first=True, iterations=(20, 30, 35, 55, 20))
    assert schedule.groups(5) == [(None, 20), ([1, 2, 3], 10), ([2, 3], 5), ([3], 20)]
    for iterations in [(20, 30, 35, 55, 20), ITERATIONS, (3, 1, 3), 4]:
        schedule = InBatchSchedule(feedback_first=True, iterations=iterations)
        expanded = [active for active, count in schedule.groups(3 if iterations != (20, 30, 35, 55, 20) else 5)
                    for _ in range(count)]
        assert expanded == schedule.rounds(3 if iterations != (20, 30, 35, 55, 20) else 5)


def _compare(dtype, compile_, atol=0.0, setup=_setup):
    model, forward, feedback = setup(dtype)
    ref_metrics, ref_state = _run(_reference_step, model, forward, feedback, compile_)
    assert [int(o.iterations.numpy()) for o in feedback.optimizers] == [BATCHES * k for k in ITERATIONS]
    model, forward, feedback = setup(dtype)
    metrics, state = _run(step.train_step, model, forward, feedback, compile_)
    _assert_identical(state, ref_state, atol)
    for mine, theirs in zip(metrics, ref_metrics):
        assert mine.keys() == theirs.keys()
        _assert_identical(list(mine.values()), list(theirs.values()), atol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("compile_", [None, pytest.param("graph", marks=pytest.mark.slow)])
def test_looped_rounds_are_bit_identical_to_the_written_out_rounds(dtype, compile_, without_arithmetic_rewrites):
    _compare(dtype, compile_)


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
def test_conv_looped_rounds_are_bit_identical_to_the_written_out_rounds(dtype):
    """The same on conv blocks, eagerly: the argmaxes of the clean pass computed once for every round, the noisy
    pass's from the conv of F(h + δx), the transposed convs' kernel-only gradients."""
    _compare(dtype, None, setup=_setup_conv)


@pytest.mark.slow
@pytest.mark.parametrize("compile_", ["graph", "xla"])
def test_conv_looped_rounds_agree_to_rounding_compiled(compile_):
    _compare("float64", compile_, TOLERANCE["float64"], setup=_setup_conv)


@pytest.mark.slow  # traces the step (~7 s on the loaded 2-core CPU)
def test_a_conv_round_in_a_loop_body_runs_four_plain_convs_per_inverted_block():
    """What a looped round computes on conv blocks (Grappler does not prune a while body): per hidden layer whose
    map is a conv block's inverse, one forward conv (F(h + δx), whose argmax the δx term unpools at), one
    transposed conv (G(y + δy) − G(y) = T_Q(P(y + δy) − P(y))) and two kernel gradients (its own and the δx term's,
    Σ δx·T_Q(P(F(h + δx)) − P(y)) read off Q's gradient), all four plain NHWC/HWIO convs (`kernel_gradient`: the
    layout XLA runs through Eigen in a loop body); no conv for the clean pass's argmax (computed once per batch,
    before the loop) and none for the transposed convs' unread input gradients. The authors' order
    ('ldrl_as_written') runs three transposed convs (r, G(F(h + δx)), G(y + δy)) and their three kernel gradients."""
    model, forward, feedback = _setup_conv("float32", (3, 3, 3))
    x, y = make_batch(input_size=_input_size(model))
    fn = tf.function(lambda x, y: step.train_step(model, forward, feedback, x, y), autograph=False)
    graph = fn.get_concrete_function(tf.constant(x, tf.float32), tf.constant(y)).graph.as_graph_def()
    bodies = [f for f in graph.library.function if "while_body" in f.signature.name]
    assert len(bodies) == 1
    ops = [node.op for node in bodies[0].node_def]
    inverted = sum(isinstance(layer, TPConvBlock) for layer in model.tp_layers[1:])
    assert inverted == 2
    assert ops.count("Conv2D") == 4 * inverted
    assert ops.count("Conv2DBackpropInput") == ops.count("Conv2DBackpropFilter") == 0


@pytest.mark.slow  # traces and compiles both steps (7-45 s on a shared 2-core CPU)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("compile_", ["graph", "xla"])
def test_looped_rounds_agree_to_rounding_with_graph_rewrites_and_xla(dtype, compile_):
    _compare(dtype, compile_, TOLERANCE[dtype])


@pytest.mark.slow
def test_feedback_only_step_and_unrolled_option_match_the_reference(without_arithmetic_rewrites):
    """forward=False (the feedback-only pass) returns the first round's full updates; unroll_feedback_rounds=True
    (the benchmark's baseline) gives the same numbers."""
    model, forward, feedback = _setup("float32")
    ref_metrics, ref_state = _run(_reference_step, model, forward, feedback, "graph", forward_step=False)
    model, forward, feedback = _setup("float32")
    metrics, state = _run(step.train_step, model, forward, feedback, "graph", forward_step=False)
    _assert_identical(state, ref_state)
    _assert_identical([v for m in metrics for v in m.values()], [v for m in ref_metrics for v in m.values()])
    model, forward, feedback = _setup("float32")
    unrolled = lambda *a, **k: step.train_step(*a, **k, unroll_feedback_rounds=True)  # noqa: E731
    _, state = _run(unrolled, model, forward, feedback, "graph")
    model, forward, feedback = _setup("float32")
    _, ref_state = _run(_reference_step, model, forward, feedback, "graph")
    _assert_identical(state, ref_state)


@pytest.mark.slow
def test_the_graph_holds_one_round_per_group():
    """The traced step's size grows with the number of groups, not with K: K = (3, 5, 7) and K = (30, 50, 70)
    (the same groups, every one looped, ten times as many rounds) trace to graphs of the same number of ops."""
    def op_count(iterations):
        model, forward, feedback = _setup("float32", iterations)
        x, y = make_batch()
        fn = tf.function(lambda x, y: step.train_step(model, forward, feedback, x, y), autograph=False)
        graph = fn.get_concrete_function(tf.constant(x, tf.float32), tf.constant(y)).graph
        return len(graph.as_graph_def().node) + sum(len(f.node_def) for f in graph.as_graph_def().library.function)
    assert op_count((3, 5, 7)) == op_count((30, 50, 70))


@pytest.mark.slow
def test_fit_is_bit_identical_to_the_written_out_rounds(monkeypatch, without_arithmetic_rewrites):
    """Keras `fit` (TPModel.train_step → step.train_step) with the loops against fit with the reference batch."""
    x = np.concatenate([make_batch(seed=s)[0] for s in range(BATCHES)]).astype("float32")
    y = np.concatenate([make_batch(seed=s)[1] for s in range(BATCHES)])

    def fitted():
        model = randomize_biases(make_model("ldrl", dtype="float32", feedback_iterations=list(ITERATIONS)))
        model.compile(optimizer=TorchAdam(1e-2), jit_compile=False)
        history = model.fit(x, y, batch_size=len(x) // BATCHES, epochs=1, shuffle=False, verbose=0)
        variables = model.forward_variables + model.feedback_variables + model.feedback_optimizer.variables
        return history.history, [v.numpy() for v in variables] + [model.noise_seed.state.numpy()]

    history, state = fitted()
    monkeypatch.setattr(step, "batch_updates", lambda model, fwd, fb, x, y, **kw: unrolled_reference_batch(
        model, fwd, fb, x, y, kw.get("forward", True)) if kw.get("sample_weight") is None else pytest.fail(
        "a sample weight the reference does not take"))
    ref_history, ref_state = fitted()
    _assert_identical(state, ref_state)
    assert history == ref_history


@pytest.mark.slow
def test_feedback_rounds_bench_times_bp_and_both_forms_of_the_rounds():
    """`python -m tp_keras.bench --feedback_rounds`' figures: one row per step and XLA setting, ratios to BP's."""
    from tp_keras.tools import loop_bench
    batches = loop_bench.mnist_shaped_batches(128, 64)
    rows = loop_bench.feedback_rounds_figures(batches, iterations=(2, 1, 1, 3, 1), xla_settings=(False,), repeats=1)
    assert [row["step"] for row in rows] == ["bp", "ldrl unrolled", "ldrl looped"]
    assert rows[0]["ratio_to_bp"] == 1.0
    for row in rows:
        assert row["first_call_seconds"] > 0
        assert row["ratio_to_bp"] == pytest.approx(row["seconds_per_batch"] / rows[0]["seconds_per_batch"])
