"""TorchAdam and TorchSGD: Adam and SGD with PyTorch semantics (docs/semantics.md §4.1, §4.7).

PyTorch's Adam update, per step t, with coupled L2 weight decay wd:
    g ← g + wd·θ;  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
    m̂ = m/(1−β1^t);  v̂ = v/(1−β2^t);  θ ← θ − lr·m̂/(√v̂ + ε)
PyTorch's SGD with momentum μ (dampening 0, no Nesterov), as its documentation writes it:
    g ← g + wd·θ;  b ← g at the first step, else b ← μ·b + g;  θ ← θ − lr·b
"""
from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tp_keras.core.optimizers import TorchAdam

SHAPES = [(3, 4), (5,), (2, 2, 3)]
N_STEPS = 20
# Hyper-parameters that are exactly representable in float32 (dyadic): they isolate the update arithmetic from
# any rounding of the constants.
DYADIC = dict(learning_rate=2.0 ** -7, beta_1=0.875, beta_2=1 - 2.0 ** -10, epsilon=2.0 ** -20)
# Typical (non-dyadic) PyTorch hyper-parameters.
TYPICAL = dict(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8)


def numpy_torch_adam(theta0, grads, learning_rate, beta_1, beta_2, epsilon, l2_decay=0.0):
    """PyTorch Adam (coupled L2), float64; returns the parameters after every step."""
    theta = [np.array(t, dtype=np.float64) for t in theta0]
    m = [np.zeros_like(t) for t in theta]
    v = [np.zeros_like(t) for t in theta]
    history = []
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = g + l2_decay * theta[i]
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            v[i] = beta_2 * v[i] + (1 - beta_2) * g * g
            m_hat = m[i] / (1 - beta_1 ** t)
            v_hat = v[i] / (1 - beta_2 ** t)
            theta[i] = theta[i] - learning_rate * m_hat / (np.sqrt(v_hat) + epsilon)
        history.append([th.copy() for th in theta])
    return history


def random_problem(seed=0, steps=N_STEPS):
    """Initial values and a sequence of gradients of very different scales (one variable's gradients are ~1e-8,
    comparable to ε, so the ε placement matters)."""
    rng = np.random.default_rng(seed)
    theta0 = [rng.normal(size=s) for s in SHAPES]
    scales = [1.0, 1e-3, 1e-8]
    grads = [[scale * rng.normal(size=s) for s, scale in zip(SHAPES, scales)] for _ in range(steps)]
    return theta0, grads


@contextlib.contextmanager
def floatx(dtype):
    old = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(old)


def run_optimizer(opt, theta0, grads, dtype="float64", compiled=False):
    variables = [keras.Variable(t, dtype=dtype) for t in theta0]
    opt.build(variables)

    def apply(step_grads):
        opt.apply_gradients(zip(step_grads, variables))

    if compiled:
        apply = tf.function(apply)
    history = []
    for step_grads in grads:
        apply([tf.constant(g, dtype=dtype) for g in step_grads])
        history.append([np.array(v.numpy(), copy=True) for v in variables])
    return history


def assert_trajectories_equal(got, expected, theta0, rtol):
    """Compares the displacements θ_t − θ_0 (not θ_t, whose O(1) size would hide errors in the small steps)."""
    assert len(got) == len(expected)
    for t, (g_step, e_step) in enumerate(zip(got, expected), start=1):
        for i, (g, e, t0) in enumerate(zip(g_step, e_step, theta0)):
            np.testing.assert_allclose(g - t0, e - t0, rtol=rtol, atol=1e-15,
                                       err_msg=f"step {t}, variable {i}")


@pytest.mark.parametrize("l2_decay", [0.0, 2.0 ** -4])
def test_torch_adam_matches_pytorch_formula_float64_dyadic(l2_decay):
    """The update arithmetic, 20 steps in float64, with constants exact in any precision."""
    theta0, grads = random_problem(seed=1)
    got = run_optimizer(TorchAdam(**DYADIC, l2_decay=l2_decay), theta0, grads)
    expected = numpy_torch_adam(theta0, grads, **DYADIC, l2_decay=l2_decay)
    assert_trajectories_equal(got, expected, theta0, rtol=1e-12)


@pytest.mark.parametrize("l2_decay", [0.0, 1e-2])
def test_torch_adam_matches_pytorch_formula_float64_typical_hyperparameters(l2_decay):
    """The same with typical PyTorch values (β1 = 0.9, β2 = 0.999, ε = 1e-8, lr = 1e-3) in a float64 setup
    (`set_floatx('float64')`, as the reference's double-precision configs need, so that Keras
    keeps the learning rate in float64). PyTorch applies these constants in float64; a float64 optimizer that
    rounds β1, β2, ε or l2_decay to float32 (0.9 → 0.8999999761581421) drifts by ~1e-7 relative per step."""
    theta0, grads = random_problem(seed=2)
    with floatx("float64"):
        opt = TorchAdam(**TYPICAL, l2_decay=l2_decay)
        got = run_optimizer(opt, theta0, grads)
        assert opt.learning_rate.dtype == "float64"
    expected = numpy_torch_adam(theta0, grads, **TYPICAL, l2_decay=l2_decay)
    assert_trajectories_equal(got, expected, theta0, rtol=1e-12)


def test_torch_adam_float32_many_steps_close_to_formula():
    """float32 variables: 20 steps stay within float32 accuracy of the float64 formula (θ ~ 1 in float32 has
    ulp 1.2e-7, so the displacements can only be compared to ~1e-6 absolute)."""
    theta0, grads = random_problem(seed=3)
    theta0 = [t.astype(np.float32).astype(np.float64) for t in theta0]
    grads = [[g.astype(np.float32).astype(np.float64) for g in step] for step in grads]
    got = run_optimizer(TorchAdam(**TYPICAL, l2_decay=1e-2), theta0, grads, dtype="float32")
    expected = numpy_torch_adam(theta0, grads, **TYPICAL, l2_decay=1e-2)
    for g_step, e_step in zip(got, expected):
        for g, e, t0 in zip(g_step, e_step, theta0):
            assert g.dtype == np.float32
            np.testing.assert_allclose(g.astype(np.float64) - t0, e - t0, rtol=1e-4, atol=1e-6)


def test_torch_adam_float32_first_step_matches_pytorch():
    """One float32 step from θ = 0 (so the step is stored with full relative precision): PyTorch's is
    −lr·g/(|g| + ε) to float32 accuracy (~2e-7), because it computes the bias corrections 1 − β^t in Python
    double. Computing 1 − β2^t in float32 from β2 rounded to float32 (0.999 → 0.9990000128746033) gets
    1 − β2 wrong by 1.3e-5 relative, i.e. every step wrong by ~6.5e-6 relative at t = 1, decaying only over
    thousands of steps."""
    rng = np.random.default_rng(7)
    g = (rng.normal(size=50) * np.logspace(-10, 0, 50)).astype(np.float32).astype(np.float64)
    got = run_optimizer(TorchAdam(**TYPICAL), [np.zeros(50)], [[g]], dtype="float32")
    expected = -TYPICAL["learning_rate"] * g / (np.abs(g) + TYPICAL["epsilon"])
    np.testing.assert_allclose(got[0][0].astype(np.float64), expected, rtol=1e-6, atol=0)


def test_coupled_l2_decay_acts_through_adam_not_decoupled():
    """With zero gradient, coupled L2 feeds wd·θ into the moments: the first step is −lr·wdθ/(|wdθ| + ε),
    i.e. ≈ −lr·sign(θ), not AdamW's −lr·wd·θ."""
    theta0 = [np.array([0.5, -2.0, 3.0])]
    lr, wd, eps = 2.0 ** -7, 2.0 ** -3, 2.0 ** -20
    opt = TorchAdam(learning_rate=lr, beta_1=DYADIC["beta_1"], beta_2=DYADIC["beta_2"], epsilon=eps, l2_decay=wd)
    got = run_optimizer(opt, theta0, [[np.zeros(3)]])
    g = wd * theta0[0]
    np.testing.assert_allclose(got[0][0], theta0[0] - lr * g / (np.abs(g) + eps), rtol=1e-14)
    assert not np.allclose(got[0][0], theta0[0] - lr * wd * theta0[0], rtol=1e-3)
    with pytest.raises(ValueError, match="l2_decay"):
        TorchAdam(learning_rate=1e-3, weight_decay=1e-2)


def test_torch_adam_differs_from_keras_adam_with_the_same_epsilon():
    """Why the custom optimizer exists (docs/semantics.md §4.1): Keras adds ε to √v (uncorrected), PyTorch to √v̂.

    At t = 1, m̂ = g and v̂ = g², so PyTorch steps −lr·g/(|g| + ε). Keras steps −lr·g/(|g| + ε/√(1−β2)):
    the same as PyTorch with a 32× larger ε for β2 = 1 − 2^-10 (31.6× for 0.999). With |g| ~ ε (tuned ε up to
    1e-4) the steps differ by a large factor. (Dyadic constants, so that only the placement of ε is at stake.)
    """
    lr, b1, b2, eps = 2.0 ** -10, 0.875, 1 - 2.0 ** -10, 2.0 ** -13
    theta0 = [np.array([1.0, -1.0, 0.5, 2.0])]
    g = np.array([1.0, -3.0, 0.5, 10.0]) * eps
    torch_hist = run_optimizer(TorchAdam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps), theta0, [[g]])
    keras_hist = run_optimizer(keras.optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps),
                               theta0, [[g]])
    torch_step = torch_hist[0][0] - theta0[0]
    keras_step = keras_hist[0][0] - theta0[0]
    np.testing.assert_allclose(torch_step, -lr * g / (np.abs(g) + eps), rtol=1e-12)
    np.testing.assert_allclose(keras_step, -lr * g / (np.abs(g) + eps / np.sqrt(1 - b2)), rtol=1e-5)
    ratio = torch_step / keras_step
    assert np.all(ratio > 1.5)  # PyTorch's steps are much larger here
    assert ratio[0] > 10  # |g| = ε: (1 + 32)/(1 + 1) = 16.5

    # Over many steps the two stay different (the gap decays only as β2^t → 0).
    theta0, grads = random_problem(seed=4, steps=5)
    a = run_optimizer(TorchAdam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps), theta0, grads)
    b = run_optimizer(keras.optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps), theta0, grads)
    assert not np.allclose(a[-1][1] - theta0[1], b[-1][1] - theta0[1], rtol=1e-2)


def test_torch_adam_inside_tf_function():
    theta0, grads = random_problem(seed=5)
    opt = TorchAdam(**DYADIC, l2_decay=2.0 ** -5)
    got = run_optimizer(opt, theta0, grads, compiled=True)
    expected = numpy_torch_adam(theta0, grads, **DYADIC, l2_decay=2.0 ** -5)
    assert_trajectories_equal(got, expected, theta0, rtol=1e-12)
    assert int(opt.iterations.numpy()) == N_STEPS


def test_torch_adam_get_config_round_trip():
    opt = TorchAdam(learning_rate=3e-4, beta_1=0.85, beta_2=0.995, epsilon=1e-5, l2_decay=1e-3)
    config = opt.get_config()
    for key, value in dict(beta_1=0.85, beta_2=0.995, epsilon=1e-5, l2_decay=1e-3).items():
        assert config[key] == value
    assert config["learning_rate"] == pytest.approx(3e-4, rel=1e-7)
    clone = TorchAdam.from_config(config)
    assert isinstance(clone, TorchAdam)
    assert clone.get_config() == config
    # The clone behaves identically.
    theta0, grads = random_problem(seed=6, steps=3)
    a = run_optimizer(opt, theta0, grads)
    b = run_optimizer(clone, theta0, grads)
    for sa, sb in zip(a, b):
        for va, vb in zip(sa, sb):
            np.testing.assert_array_equal(va, vb)


def test_torch_sgd_is_coupled_l2_sgd_in_float64():
    from tp_keras.core.optimizers import TorchSGD
    lr, wd = 0.0022485520139920064, 9.821494271391093e-05
    theta0 = np.array([0.3, -1.2, 2.0])
    var = keras.Variable(theta0.copy(), dtype="float64")
    opt = TorchSGD(lr, l2_decay=wd, precision="float64")
    expected = theta0.copy()
    for g in ([0.1, 0.2, -0.3], [1.0, -2.0, 0.5]):
        opt.apply_gradients([(tf.constant(g, tf.float64), var)])
        expected = expected - lr * (np.array(g) + wd * expected)
    np.testing.assert_allclose(var.numpy(), expected, rtol=0, atol=1e-16)


def numpy_torch_sgd(theta0, grads, learning_rates, momentum, l2_decay=0.0):
    """torch.optim.SGD's documented update in float64 (dampening 0, nesterov off): the buffer starts as the first
    gradient; learning_rates[t] is the rate of step t (a scheduler may change it between steps)."""
    theta = [np.array(t, dtype=np.float64) for t in theta0]
    buffers = [None] * len(theta)
    history = []
    for rate, step_grads in zip(learning_rates, grads):
        for i, g in enumerate(step_grads):
            g = g + l2_decay * theta[i]
            if momentum:
                buffers[i] = g.copy() if buffers[i] is None else momentum * buffers[i] + g
                g = buffers[i]
            theta[i] = theta[i] - rate * g
        history.append([th.copy() for th in theta])
    return history


@pytest.mark.parametrize("momentum,l2_decay", [(0.9, 1e-4), (0.5, 0.0), (0.0, 1e-4)])
def test_torch_sgd_matches_pytorchs_documented_update_float64(momentum, l2_decay):
    """Eight steps with momentum and coupled L2; the rate changes after step 4, which scales the whole buffer
    (PyTorch's order), so a Keras-style buffer (lr inside it) would differ from there on."""
    from tp_keras.core.optimizers import TorchSGD
    theta0, grads = random_problem(seed=3, steps=8)
    rates = [0.05] * 4 + [0.0125] * 4
    opt = TorchSGD(rates[0], momentum=momentum, l2_decay=l2_decay, precision="float64")
    variables = [keras.Variable(t, dtype="float64") for t in theta0]
    opt.build(variables)
    got = []
    for rate, step_grads in zip(rates, grads):
        opt.learning_rate = rate
        opt.apply_gradients(zip([tf.constant(g, tf.float64) for g in step_grads], variables))
        got.append([np.array(v.numpy(), copy=True) for v in variables])
    expected = numpy_torch_sgd(theta0, grads, rates, momentum, l2_decay)
    for step_got, step_expected in zip(got, expected):
        for g, e in zip(step_got, step_expected):
            np.testing.assert_array_equal(g, e)
    assert len(opt.variables) == 2 + (len(SHAPES) if momentum else 0)  # iterations, lr, one buffer per variable


@pytest.mark.slow
def test_torch_sgd_momentum_buffer_is_state_that_get_config_and_a_keras_file_keep(tmp_path):
    """The buffers are optimizer variables: a compiled TPModel saved after training and loaded trains on exactly as
    the original (same weights after one more step), and the clone from get_config holds the same settings."""
    from tp_keras.core.model import TPModel
    from tp_keras.core.optimizers import TorchSGD
    opt = TorchSGD(0.05, momentum=0.9, l2_decay=1e-4, precision="float64")
    config = opt.get_config()
    assert (config["momentum"], config["l2_decay"]) == (0.9, 1e-4)
    assert TorchSGD.from_config(config).get_config() == config
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 5)), (np.arange(32) % 3).astype("int32")
    model = TPModel("bp", 5, [4], 3, seed=2, dtype="float64")
    model.compile(optimizer=opt)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    buffers = [v for v in model.optimizer.variables if "momentum_buffer" in v.path]
    assert len(buffers) == len(model.forward_variables) and any(np.any(v.numpy()) for v in buffers)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("kwargs,says", [
    (dict(nesterov=True), "nesterov is not implemented"), (dict(dampening=0.1), "dampening is not implemented"),
    (dict(weight_decay=1e-4), "use l2_decay"), (dict(momentum=1.0), r"momentum=1.0 is outside \[0, 1\)"),
    (dict(momentum=-0.1), "is outside")])
def test_torch_sgd_refuses_what_it_does_not_implement_in_one_line(kwargs, says):
    from tp_keras.core.optimizers import TorchSGD
    with pytest.raises(ValueError, match=f"^TorchSGD: .*{says}") as err:
        TorchSGD(0.1, **kwargs)
    assert "\n" not in str(err.value)
