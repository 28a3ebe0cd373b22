"""Conv blocks with layer-wise feedback (core/conv_layers.py) and the conv chain network (core/conv_networks.py).

The NumPy references below are written from the definitions the authors' code uses (ernoult/scalingDTP: PyTorch
Conv2d(padding=k//2), MaxPool2d(2) with its first-maximum index, MaxUnpool2d, AdaptiveAvgPool2d as upsampling,
ConvTranspose2d(padding=k//2), `invert` reversing each block, and `get_feedback_loss` with the indices of the most
recent forward call), not from our TensorFlow code.
"""
import dataclasses
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tp_keras.core.conv_layers import TPConvBlock, transposed_conv_as_conv, transposed_conv_of_constant
from tp_keras.core.conv_networks import ConvChainNetwork
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchAdam
from tp_keras.core.rules import get_rule
from tp_keras.core.rules import components as K
from tp_keras.core.rules.ldrl import AS_WRITTEN as LDRL_AS_WRITTEN, LOSS as LDRL_LOSS
from tp_keras.core import step

ACT = {"elu": lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0))), "tanh": np.tanh,
       "relu": lambda a: np.maximum(a, 0), "linear": lambda a: a}


# --- NumPy references ------------------------------------------------------------------------------------------
def np_conv(x, w):
    """Cross-correlation, stride 1, zero padding k//2 (PyTorch Conv2d):
    out[i, j, o] = Σ x[i+di−p, j+dj−p, c]·w[di, dj, c, o]."""
    k = w.shape[0]
    p = k // 2
    b, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((b, h, wd, w.shape[3]))
    for di in range(k):
        for dj in range(k):
            out += xp[:, di:di + h, dj:dj + wd, :] @ w[di, dj]
    return out


def np_conv_transpose(y, q):
    """PyTorch ConvTranspose2d(stride 1, padding k//2): out[i−p+di, j−p+dj, c] += y[i, j, o]·q[di, dj, c, o]."""
    k = q.shape[0]
    p = k // 2
    b, h, wd, _ = y.shape
    out = np.zeros((b, h + 2 * p, wd + 2 * p, q.shape[2]))
    for di in range(k):
        for dj in range(k):
            out[:, di:di + h, dj:dj + wd, :] += y @ q[di, dj].T
    return out[:, p:p + h, p:p + wd, :]


def np_max_pool(a):
    """MaxPool2d(2): values and each window's flat index of its first maximum (row-major, np.argmax)."""
    b, h, w, c = a.shape
    ho, wo = h // 2, w // 2
    values, index = np.zeros((b, ho, wo, c)), np.zeros((b, ho, wo, c), dtype=int)
    for i in range(ho):
        for j in range(wo):
            window = a[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2, :].reshape(b, 4, c)
            index[:, i, j, :] = np.argmax(window, axis=1)
            values[:, i, j, :] = window.max(axis=1)
    return values, index


def np_max_unpool(u, index, hw):
    """MaxUnpool2d(2) with output_size: u at each window's argmax, zeros elsewhere (also a dropped odd row)."""
    b, ho, wo, c = u.shape
    out = np.zeros((b,) + tuple(hw) + (c,))
    for i in range(ho):
        for j in range(wo):
            for n in range(b):
                for ch in range(c):
                    di, dj = divmod(index[n, i, j, ch], 2)
                    out[n, 2 * i + di, 2 * j + dj, ch] = u[n, i, j, ch]
    return out


def np_block(x, w, bias, act, pooling):
    """The forward block: pool(s(conv(x) + b)); with the pooling's indices."""
    a = ACT[act](np_conv(x, w) + bias)
    if pooling == "max":
        return np_max_pool(a)
    if pooling == "average":
        b, h, wd, c = a.shape
        return a.reshape(b, h // 2, 2, wd // 2, 2, c).mean(axis=(2, 4)), None
    return a, None


def np_inverse_block(u, index, q, d, act, pooling, conv_hw):
    """The authors' inverted block (reversed Sequential): unpool → s → ConvTranspose2d (+ d)."""
    if pooling == "max":
        u = np_max_unpool(u, index, conv_hw)
    elif pooling == "average":
        u = u.repeat(2, axis=1).repeat(2, axis=2)  # AdaptiveAvgPool2d to the input size: nearest upsampling
    return np_conv_transpose(ACT[act](u), q) + d


def _block(pooling="max", activation="elu", form="inverse_block", image=(6, 6, 2), filters=3, k=3, seed=0,
           dtype="float64", feedback_activation="linear"):
    layer = TPConvBlock(filters, image, kernel_size=k, activation=activation, pooling=pooling,
                        feedback_activation=feedback_activation, feedback_form=form, seed=seed, dtype=dtype)
    layer.build()
    rng = np.random.default_rng(seed + 7)
    for v in (layer.bias, layer.feedback_bias_var):
        v.assign(rng.normal(scale=0.3, size=v.shape))
    return layer


def _images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# --- the maps ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 5])
def test_transposed_conv_is_the_adjoint_of_the_conv(k):
    """⟨conv(x), y⟩ = ⟨x, convT(y)⟩ with Q = W: g's linear part is the conv's transposed Jacobian."""
    layer = _block(pooling="none", activation="linear", form="dtp", k=k)
    layer.bias.assign(np.zeros(3))
    layer.feedback_bias_var.assign(np.zeros(2))
    layer.feedback_kernel.assign(layer.kernel)
    x, y = _images((4, 6, 6, 2), 1), _images((4, 6, 6, 3), 2)
    fx = layer(x.reshape(4, -1)).numpy()
    gy = layer.feedback(y.reshape(4, -1), x).numpy()
    np.testing.assert_allclose(np.sum(fx * y.reshape(4, -1)), np.sum(x.reshape(4, -1) * gy), rtol=1e-12)
    # and the Jacobian of the (linear) conv, transposed, applied to y is g(y)
    xt = tf.constant(x.reshape(4, -1))
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = layer(xt)
    vjp = tape.gradient(out, xt, output_gradients=tf.constant(y.reshape(4, -1))).numpy()
    np.testing.assert_allclose(gy, vjp, rtol=1e-12, atol=1e-12)


def test_max_unpooling_puts_each_value_at_its_windows_first_argmax():
    """Ties (ReLU's zeros) go to the first maximum in row-major order; an odd row/column stays zero."""
    layer = _block(pooling="max", activation="relu", image=(5, 7, 2))
    x = _images((3, 5, 7, 2), 3)
    a = ACT["relu"](np_conv(x, layer.kernel.numpy()) + layer.bias.numpy())
    assert np.sum(a == 0) > 10  # ties do occur
    _, index = np_max_pool(a)
    u = _images((3, 2, 3, 3), 4)
    expected = np_max_unpool(u, index, (5, 7))
    got = layer.unpool(tf.constant(u), layer.switches(x.reshape(3, -1))).numpy()
    np.testing.assert_array_equal(got, expected)


def test_switches_are_the_one_hot_first_argmax_of_each_window_under_every_tie():
    """Values 0..2 in 2×2 windows: every tie pattern occurs; the one-hot is np.argmax's (the first maximum)."""
    from tp_keras.core.conv_layers import first_max_switches
    a = np.random.default_rng(8).integers(0, 3, (4, 6, 8, 3)).astype(np.float32)
    windows = a.reshape(4, 3, 2, 4, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(4, 3, 4, 4, 3)  # (.., dy·2+dx, c)
    expected = np.eye(4, dtype=np.float32)[np.argmax(windows, axis=3)]  # (4, 3, 4, C, 4)
    expected = expected.transpose(0, 1, 2, 4, 3).reshape(4, 3, 4, 12)  # space_to_depth's (dy·2+dx)·C + c
    np.testing.assert_array_equal(first_max_switches(tf.constant(a)).numpy(), expected)


def test_average_unpooling_copies_each_value_to_its_window():
    layer = _block(pooling="average")
    u = _images((2, 3, 3, 3), 5)
    np.testing.assert_array_equal(layer.unpool(tf.constant(u)).numpy(), u.repeat(2, axis=1).repeat(2, axis=2))


@pytest.mark.parametrize("pooling,activation", [("max", "elu"), ("average", "tanh"), ("none", "relu")])
def test_forward_and_inverse_block_agree_with_numpy(pooling, activation):
    layer = _block(pooling=pooling, activation=activation, image=(6, 4, 2))
    x = _images((3, 6, 4, 2), 6)
    h, index = np_block(x, layer.kernel.numpy(), layer.bias.numpy(), activation, pooling)
    np.testing.assert_allclose(layer(x.reshape(3, -1)).numpy(), h.reshape(3, -1), rtol=1e-12, atol=1e-12)
    u = _images(h.shape, 7)
    expected = np_inverse_block(u, index, layer.feedback_kernel.numpy(), layer.feedback_bias_var.numpy(), activation,
                                pooling, (6, 4))
    got = layer.feedback(u.reshape(3, -1), x.reshape(3, -1)).numpy()
    np.testing.assert_allclose(got, expected.reshape(3, -1), rtol=1e-12, atol=1e-12)


def test_dtp_form_applies_the_feedback_activation_on_the_output():
    layer = _block(pooling="max", activation="elu", form="dtp", feedback_activation="tanh")
    x = _images((2, 6, 6, 2), 8)
    h, index = np_block(x, layer.kernel.numpy(), layer.bias.numpy(), "elu", "max")
    u = _images(h.shape, 9)
    linear = np_inverse_block(u, index, layer.feedback_kernel.numpy(), layer.feedback_bias_var.numpy(), "linear",
                              "max", (6, 6))
    np.testing.assert_allclose(layer.feedback(u.reshape(2, -1), x.reshape(2, -1)).numpy(),
                               np.tanh(linear).reshape(2, -1), rtol=1e-12, atol=1e-12)


def test_mlp_layers_reach_the_target_and_loss_functions_untouched():
    """Only layers whose feedback reads its forward input are wrapped: an MLP's list is passed as it is."""
    rule = get_rule("dtp")
    model = TPModel(rule, 5, [4, 3], 2)
    hs = model.activations(np.zeros((2, 5), "float32"))
    assert K.bind_forward_inputs(model.tp_layers, hs) is model.tp_layers
    net = ConvChainNetwork(rule, (4, 4, 1), [{"filters": 2}, {"filters": 2}, {"units": 2}])
    bound = K.bind_forward_inputs(net.tp_layers, [None] * 3)
    assert [type(b) for b in bound] == [K.FeedbackAt, K.FeedbackAt, type(net.tp_layers[2])]


def test_stacked_rows_read_the_same_forward_pass():
    """DRL descends a stack of m·B rows read at one forward pass: each block gets the pass's argmax."""
    layer = _block()
    x = _images((2, 6, 6, 2), 10).reshape(2, -1)
    u = _images((6, 27), 11)
    stacked = layer.feedback(u, x).numpy()
    for i in range(3):
        np.testing.assert_array_equal(stacked[2 * i:2 * i + 2], layer.feedback(u[2 * i:2 * i + 2], x).numpy())


# --- the same numbers from less work ----------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 5])
def test_transposed_conv_as_conv_is_the_transposed_conv_and_its_kernel_gradient(k):
    """`transposed_conv_as_conv` (a plain conv of the flipped kernel, the kernel gradient a plain conv too) against
    tf.nn.conv2d_transpose and its registered gradient, in float64."""
    rng = np.random.default_rng(k)
    p, upstream = tf.constant(rng.standard_normal((2, 5, 6, 3))), tf.constant(rng.standard_normal((2, 5, 6, 4)))
    kernel = tf.Variable(rng.standard_normal((k, k, 4, 3)))
    results = []
    for transposed in (lambda: transposed_conv_as_conv(p, kernel),
                       lambda: tf.nn.conv2d_transpose(p, kernel, [2, 5, 6, 4], strides=1, padding="SAME")):
        with tf.GradientTape() as tape:
            out = transposed()
            total = tf.reduce_sum(out * upstream)
        results.append((out.numpy(), tape.gradient(total, kernel).numpy()))
    for mine, registered in zip(*results):
        np.testing.assert_allclose(mine, registered, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][0], np_conv_transpose(p.numpy(), kernel.numpy()), rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # compiles a loop with XLA (~5 s on the loaded 2-core CPU)
def test_the_inverse_blocks_linear_part_stays_canonical_for_xla_in_a_loop_body():
    """XLA on a CPU rewrites convs to the layout Eigen runs (NHWC input, HWIO kernel: dim_labels b01f_01io->b01f)
    in the main computation only; in a while body a transposed conv or a kernel gradient stays a naive loop nest.
    L-DRL's round, in a tf.while_loop under XLA, compiles to canonical convs only; TensorFlow's own transposed conv
    and Conv2DBackpropFilter in the same loop do not (so the check can fail)."""
    layer = _block("max", image=(6, 6, 2), filters=3, dtype="float32")
    x = tf.constant(_images((4, 72), 1), tf.float32)
    switches = layer.switches(x)

    def round_(own_ops):
        def body(i, acc):
            with tf.GradientTape() as tape:
                p = layer.linear_feedback_input(layer(x) + acc[0, 0, 0, 0], switches)
                if own_ops:
                    out = tf.nn.conv2d_transpose(p, layer.feedback_kernel, [4, 6, 6, 2], strides=1, padding="SAME")
                    loss = tf.reduce_sum(tf.square(out))
                else:
                    loss = tf.reduce_sum(tf.square(layer.linear_feedback(p))) + layer.linear_feedback_pairing(x, p)
            return i + 1, acc + tape.gradient(loss, layer.feedback_kernel)
        return tf.while_loop(lambda i, acc: i < 2, body, (0, tf.zeros(layer.feedback_kernel.shape)))[1]

    for own_ops in (False, True):
        hlo = tf.function(lambda: round_(own_ops), jit_compile=True).experimental_get_compiler_ir()(
            stage="optimized_hlo")
        labels = re.findall(r"convolution\(.*?dim_labels=([^ ,]+)", hlo)
        assert len(labels) >= (2 if own_ops else 4)
        assert (set(labels) == {"b01f_01io->b01f"}) != own_ops, labels


@pytest.mark.parametrize("pooling", ["max", "average"])
def test_inverse_blocks_linear_part_is_the_transposed_conv_of_the_activated_unpooled_input(pooling):
    """g(u) = T_Q(P(u)) + d with P(u) = s(unpool(u)) (NumPy: the authors' reversed block without d), g(a) − g(b) =
    T_Q(P(a) − P(b)), and the pairing Σ v·T_Q(p) with its gradient Σ_b,i,j p[i, j, o]·v[i + di − 1, j + dj − 1, c]
    for Q[di, dj, c, o] (NumPy correlation sums), in float64."""
    layer = _block(pooling, image=(6, 6, 2), filters=3)
    x = tf.constant(_images((2, 72), 1))
    _, index = np_block(x.numpy().reshape(2, 6, 6, 2), layer.kernel.numpy(), layer.bias.numpy(), "elu", pooling)
    switches = layer.switches(x)
    q = layer.feedback_kernel.numpy()
    a, b, v = _images((2, 27), 2), _images((2, 27), 3), _images((2, 72), 4)

    def p_of(u):
        return layer.linear_feedback_input(tf.constant(u), switches)
    expected_p = np_inverse_block(a.reshape(2, 3, 3, 3), index, np.eye(3).reshape(1, 1, 3, 3), 0.0, "elu", pooling,
                                  (6, 6))  # a 1×1 identity transposed conv leaves P(a)
    np.testing.assert_allclose(p_of(a).numpy(), expected_p, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(layer.linear_feedback(p_of(a) - p_of(b)).numpy(),
                               (layer.feedback(a, x) - layer.feedback(b, x)).numpy(), rtol=1e-12, atol=1e-13)
    p = p_of(a)
    with tf.GradientTape() as tape:
        pairing = layer.linear_feedback_pairing(tf.constant(v), p)
    gradient = tape.gradient(pairing, layer.feedback_kernel).numpy()
    v_map = np.pad(v.reshape(2, 6, 6, 2), ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected_gradient = np.einsum("bijo,bijdec->deco", p.numpy(), np.stack(
        [np.stack([v_map[:, di:di + 6, dj:dj + 6, :] for dj in range(3)], axis=3) for di in range(3)], axis=3))
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(pairing.numpy(), np.sum(v.reshape(2, 6, 6, 2) * np_conv_transpose(p.numpy(), q)),
                               rtol=1e-12)


@pytest.mark.parametrize("compile_", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_transposed_conv_of_a_constant_has_the_registered_gradient_bit_for_bit(dtype, compile_):
    """Output and kernel gradient are TensorFlow's transposed conv's and its registered gradient's, to the bit
    (C_in ≠ C_out: swapped roles would not even run); the input, read as a constant, gets no gradient."""
    rng = np.random.default_rng(3)
    up = tf.constant(rng.standard_normal((2, 5, 6, 3)), dtype)  # (B, H, W, C_out)
    kernel = tf.Variable(rng.standard_normal((3, 3, 2, 3)), dtype=dtype)  # (k, k, C_in, C_out)
    upstream = tf.constant(rng.standard_normal((2, 5, 6, 2)), dtype)
    shape = tf.constant([2, 5, 6, 2])

    def run(transposed_conv):
        def fn():
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(up)
                out = transposed_conv(up, kernel, shape)
                loss = tf.reduce_sum(out * upstream)
            return out, tape.gradient(loss, kernel), tape.gradient(loss, up)
        return tf.function(fn, autograph=False)() if compile_ else fn()

    out, grad, _ = run(lambda u, k, s: tf.nn.conv2d_transpose(u, k, s, strides=1, padding="SAME"))
    mine, mine_grad, input_grad = run(transposed_conv_of_constant)
    np.testing.assert_array_equal(mine.numpy(), out.numpy())
    np.testing.assert_array_equal(mine_grad.numpy(), grad.numpy())
    assert input_grad is None


@pytest.mark.parametrize("pooling", ["max", "average", "none"])
def test_call_with_switches_is_the_call_and_its_argmax(pooling):
    layer = _block(pooling, image=(6, 4, 2))
    x = tf.constant(_images((3, 48), 4))
    h, switches = layer.call_with_switches(x)
    np.testing.assert_array_equal(h.numpy(), layer(x).numpy())
    if pooling == "max":
        np.testing.assert_array_equal(switches.numpy(), layer.switches(x).numpy())
    else:
        assert switches is None


def _ldrl_losses_each_term_binding_its_pass(net, rule, hs, noise, batch_size):
    """L-DRL's losses as first written: each feedback call unpools at the argmax of its own pass, computed by its own
    conv, F(h + δx) by another, and TensorFlow's registered gradient of every transposed conv."""
    layers = net.tp_layers
    inputs, outputs = hs[1:-1], hs[2:]
    sigmas = rule.sigmas(len(inputs))
    deltas = noise.scaled(inputs + outputs, sigmas + sigmas)
    dx, dy = deltas[:len(inputs)], deltas[len(inputs):]

    def g(k, u, forward_input):
        layer = layers[k]
        return layer.feedback(u, forward_input) if isinstance(layer, TPConvBlock) else layer.feedback(u)

    losses = []
    for k in range(1, len(layers)):
        shifted = inputs[k - 1] + dx[k - 1]
        r = g(k, outputs[k - 1], hs[k])
        dr = g(k, tf.stop_gradient(layers[k](shifted)), shifted) - r
        dr_y = g(k, outputs[k - 1] + dy[k - 1], hs[k]) - r
        losses.append((-2.0 * tf.reduce_sum(dx[k - 1] * dr) + tf.reduce_sum(tf.square(dr_y))) / batch_size)
    return losses


def _ldrl_on_a_small_conv_chain(dtype, feedback_bias=False):
    """(net, rule, hs, eps, feedback variables): a conv chain with no, max and average pooling, its clean pass on
    3 random images, fixed N(0, 1) noise and random feedback biases."""
    rule = dataclasses.replace(get_rule("ldrl"), sigma=(0.3, 0.2, 0.1), feedback_bias=feedback_bias)
    specs = [{"filters": 2, "pooling": "none"}, {"filters": 3, "pooling": "max"},
             {"filters": 2, "pooling": "average"}, {"units": 4}]
    net = ConvChainNetwork(rule, (8, 8, 2), specs, seed=1, dtype=dtype)
    net.build((None, 8, 8, 2))
    rng = np.random.default_rng(5)
    for layer in net.tp_layers[1:]:
        if layer.feedback_bias_var is not None:
            layer.feedback_bias_var.assign(rng.normal(scale=0.3, size=layer.feedback_bias_var.shape))
    hs = net.activations(tf.constant(_images((3, 8, 8, 2), 13), dtype))
    sizes = [int(h.shape[-1]) for h in hs[1:-1]] + [int(h.shape[-1]) for h in hs[2:]]
    eps = rng.standard_normal((3, sum(sizes))).astype(np.float32)
    variables = [v.value for layer in net.tp_layers[1:] for v in layer.feedback_variables]
    return net, rule, hs, eps, variables


def _losses_and_gradients(losses_fn, eps, dtype, variables):
    """[each layer's loss, then the sum's gradient for each variable] from `losses_fn(noise)` on the noise eps."""
    noise = K.NoiseDraw(_FixedNoise(eps), _Seeds(), 3, tf.as_dtype(dtype))
    with tf.GradientTape() as tape:
        tape.watch(variables)
        losses = losses_fn(noise)
        total = tf.add_n(losses)
    return [l.numpy() for l in losses] + [g.numpy() for g in tape.gradient(total, variables)]


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
def test_ldrl_losses_and_gradients_on_shared_argmaxes_are_bit_identical(dtype):
    """The loss in the authors' order ('ldrl_as_written') on one clean binding (`bind_clean_pass`, as every round of
    a batch shares it), F(h + δx) and its argmax from one conv, and the kernel-only gradient of the transposed convs:
    the same losses and feedback gradients, bit for bit, as each term binding its own pass with TensorFlow's own
    gradients."""
    net, rule, hs, eps, variables = _ldrl_on_a_small_conv_chain(dtype)
    mine = _losses_and_gradients(lambda noise: LDRL_AS_WRITTEN.losses(
        net, rule, hs, noise, None, 3, clean_layers=K.bind_clean_pass(net.tp_layers, hs))[0], eps, dtype, variables)
    reference = _losses_and_gradients(lambda noise: _ldrl_losses_each_term_binding_its_pass(net, rule, hs, noise, 3),
                                      eps, dtype, variables)
    assert len(mine) == len(reference) == 3 + len(variables)
    for a, b in zip(mine, reference):
        np.testing.assert_array_equal(a, b)


# float64: rounding (measured ≤ 6e-16 of the largest entry); float32: measured ≤ 2.3e-7 of the largest entry (the
# differences taken before the transposed conv instead of after it round otherwise)
LINEAR_DIFFERENCE_TOLERANCE = {"float64": 1e-13, "float32": 2e-6}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("feedback_bias", [False, True])
def test_ldrl_linear_differences_are_the_written_loss_to_rounding(dtype, feedback_bias):
    """L-DRL's default on inverse conv blocks, G(a) − G(b) = T_Q(P(a) − P(b)) and the δx term from one kernel
    gradient, against the authors' order ('ldrl_as_written'): every loss and gradient to rounding, relative to the
    largest entry of each; the feedback bias d, which cancels, gets an exact zero gradient (the written form:
    rounding noise)."""
    net, rule, hs, eps, variables = _ldrl_on_a_small_conv_chain(dtype, feedback_bias)
    clean_layers = K.bind_clean_pass(net.tp_layers, hs)
    linear = _losses_and_gradients(lambda noise: LDRL_LOSS.losses(net, rule, hs, noise, None, 3,
                                                                  clean_layers=clean_layers)[0], eps, dtype, variables)
    written = _losses_and_gradients(lambda noise: LDRL_AS_WRITTEN.losses(net, rule, hs, noise, None, 3,
                                                                         clean_layers=clean_layers)[0],
                                    eps, dtype, variables)
    biases = {id(layer.feedback_bias_var.value): isinstance(layer, TPConvBlock) for layer in net.tp_layers[1:]
              if layer.feedback_bias_var is not None}
    assert list(biases.values()) == ([True, True, False] if feedback_bias else [])
    entries = [(f"loss {k}", None) for k in (1, 2, 3)] + [(v.name, id(v)) for v in variables]
    for (name, key), a, b in zip(entries, linear, written):
        if key in biases:  # d cancels: 0 on a conv block, the written form's rounding noise on the dense map
            np.testing.assert_array_equal(a, 0.0 if biases[key] else b, err_msg=name)
            continue
        scale = np.abs(b).max()
        assert scale > 1e-3, name  # a real loss or gradient, not a vanishing one
        np.testing.assert_allclose(a, b, rtol=0, atol=LINEAR_DIFFERENCE_TOLERANCE[dtype] * scale, err_msg=name)


# --- L-DRL against the authors' loss ---------------------------------------------------------------------------
class _FixedNoise:
    def __init__(self, eps):
        self.eps = eps

    def __call__(self, shape, seed):
        assert list(shape) == list(self.eps.shape)
        return tf.constant(self.eps, tf.float32)


class _Seeds:
    def next(self):
        return tf.constant([0, 0], tf.int64)


def test_ldrl_loss_on_conv_blocks_is_the_authors_get_feedback_loss():
    """The δx term unpools at the argmax of the pass on h + δx, r and the δy term at the clean pass's (the authors'
    magic bridge holds the most recent forward call's indices), in float64."""
    # The authors' inverse block; their ConvTranspose2d copies the forward conv's bias flag (True in SimpleVGG).
    rule = dataclasses.replace(get_rule("ldrl"), sigma=(0.3, 0.2), feedback_form="inverse_block",
                               feedback_activation="linear", feedback_bias=True)
    specs = [{"filters": 2, "activation": "elu"}, {"filters": 3, "activation": "elu"}, {"units": 4}]
    net = ConvChainNetwork(rule, (8, 8, 2), specs, seed=1, dtype="float64")
    net.build((None, 8, 8, 2))
    rng = np.random.default_rng(12)
    for layer in net.tp_layers:
        for v in layer.feedback_variables + [layer.bias]:
            if v is not None and len(v.shape) == 1:
                v.assign(rng.normal(scale=0.2, size=v.shape))
    batch = 3
    x = _images((batch, 8, 8, 2), 13)
    hs = net.activations(tf.constant(x))
    sizes = [int(h.shape[-1]) for h in hs[1:-1]] + [int(h.shape[-1]) for h in hs[2:]]
    eps = rng.standard_normal((batch, sum(sizes))).astype(np.float32)
    noise = K.NoiseDraw(_FixedNoise(eps), _Seeds(), batch, tf.float64)
    losses, _ = LDRL_LOSS.losses(net, rule, hs, noise, None, batch)

    parts = np.split(eps.astype(np.float64), np.cumsum(sizes)[:-1], axis=1)
    sigmas = [0.3, 0.2]
    blocks = net.tp_layers
    w = [blk.kernel.numpy() for blk in blocks[:2]]
    bias = [blk.bias.numpy() for blk in blocks[:2]]
    shapes = [(batch, 8, 8, 2), (batch, 4, 4, 2)]
    for k in (1,):  # hidden layer 1: block 2 (conv) with its inverse; layer 2's map is the dense output's
        layer = blocks[k]
        xk = hs[k].numpy()
        dx, dy = parts[k - 1] * sigmas[k - 1], parts[2 + k - 1] * sigmas[k - 1]

        def forward(inp):
            return np_block(inp.reshape(shapes[k]), w[k], bias[k], "elu", "max")

        def g(u, index):
            q, d = layer.feedback_kernel.numpy(), layer.feedback_bias_var.numpy()
            return np_inverse_block(u.reshape(batch, 2, 2, 3), index, q, d, "elu", "max", (4, 4)).reshape(batch, -1)

        y, clean_index = forward(xk)
        r = g(y, clean_index)
        y_noise, noisy_index = forward(xk + dx)
        dr = g(y_noise, noisy_index) - r
        dr_y = g(y.reshape(batch, -1) + dy, clean_index) - r
        expected = -2 * np.sum(dx * dr) / batch + np.sum(dr_y ** 2) / batch
        np.testing.assert_allclose(losses[k - 1].numpy(), expected, rtol=1e-10)
        # the clean pass's argmax would give another loss: the test tells the passes apart
        wrong = -2 * np.sum(dx * (g(y_noise, clean_index) - r)) / batch + np.sum(dr_y ** 2) / batch
        assert abs(wrong - expected) > 1e-6


# --- the network ------------------------------------------------------------------------------------------------
SPECS = [{"filters": 3, "activation": "elu", "pooling": "max"},
         {"filters": 4, "activation": "tanh", "pooling": "average"}, {"units": 3}]


def _data(n=64, seed=0):
    """8×8×2 images whose class is the quadrant (of three) with the largest mean: learnable by a small conv net."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, 8, 2)).astype("float32") * 0.5
    y = rng.integers(0, 3, n)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 4 * r:4 * r + 4, 4 * col:4 * col + 4, :] += 1.0
    return x, y


def _keras_twin(net):
    """The same forward pass as keras layers (Conv2D 'same', Activation, pooling, Flatten, Dense)."""
    layers = [keras.Input(net.image_shape)]
    for spec in net.layer_specs:
        if "filters" in spec:
            layers += [keras.layers.Conv2D(spec["filters"], spec["kernel_size"], padding="same"),
                       keras.layers.Activation(spec["activation"])]
            if spec["pooling"] == "max":
                layers.append(keras.layers.MaxPooling2D(2))
            elif spec["pooling"] == "average":
                layers.append(keras.layers.AveragePooling2D(2))
        else:
            if not any(isinstance(layer, keras.layers.Flatten) for layer in layers[1:]):
                layers.append(keras.layers.Flatten())
            layers.append(keras.layers.Dense(spec["units"], activation=spec["activation"]))
    model = keras.Sequential(layers)
    weighted = [layer for layer in model.layers if layer.weights]
    for mine, theirs in zip(net.tp_layers, weighted):
        theirs.kernel.assign(mine.kernel)
        theirs.bias.assign(mine.bias)
    return model


def test_bp_through_the_conv_network_is_keras_autograd():
    rule = get_rule("bp")
    model = TPModel(rule, network=ConvChainNetwork(rule, (8, 8, 2), SPECS, seed=2))
    x, y = _data(16)
    twin = _keras_twin(model.network)
    np.testing.assert_allclose(model(x).numpy(), twin(x).numpy(), rtol=1e-5, atol=1e-6)
    updates = step.compute_updates(model, x, y)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, twin(x), from_logits=True))
    grads = tape.gradient(loss, [w for layer in twin.layers for w in layer.trainable_weights])
    for mine, theirs in zip(updates.forward_grads, grads):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6)


def _fit_losses(method, epochs=16):
    rule = get_rule(method)
    model = TPModel(rule, network=ConvChainNetwork(rule, (8, 8, 2), SPECS, seed=3))
    trains_feedback = bool(model.feedback_variables) and rule.feedback_loss != "none"
    model.compile(forward_optimizer=TorchAdam(0.01),
                  **({"feedback_optimizer": TorchAdam(0.005)} if trains_feedback else {}))
    x, y = _data()
    return model.fit(x, y, epochs=epochs, batch_size=32, verbose=0).history["loss"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ldrl", "ddtp_linear"])
def test_conv_network_trains_through_fit(method):
    losses = _fit_losses(method)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["bp", "dtp", "tp", "dtpdrl", "fw_dtp", "ddtp_control", "dfa"])
def test_every_supported_rule_trains_the_conv_network(method):
    losses = _fit_losses(method)
    assert np.all(np.isfinite(losses))
    if method != "tp":  # vanilla TP (no difference correction) stays near chance here, as it is the weakest on MLPs
        assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("method,match", [("gnt", "Gauss-Newton"), ("ddtp_rhl", "random hidden layer")])
def test_rules_without_a_conv_version_are_refused(method, match):
    with pytest.raises(ValueError, match=match):
        ConvChainNetwork(get_rule(method), (8, 8, 2), SPECS)


def test_a_rule_change_to_one_without_a_conv_version_is_refused():
    """bp and gnt share their (absent) feedback maps; the network refuses Gauss-Newton targets all the same."""
    rule = get_rule("bp")
    model = TPModel(rule, network=ConvChainNetwork(rule, (8, 8, 2), SPECS))
    with pytest.raises(ValueError, match="Gauss-Newton"):
        model.set_rule("gnt")
    assert model.rule is rule


@pytest.mark.parametrize("specs,match", [
    ([{"units": 3}], "at least one hidden layer"),
    ([{"filters": 2, "kernel_size": 7}, {"units": 3}], "kernel_size=7"),
    ([{"filters": 2, "pooling": "min"}, {"units": 3}], "pooling='min'"),
    ([{"units": 4}, {"filters": 2}, {"units": 3}], "follows a dense layer"),
    ([{"filters": 2, "stride": 2}, {"units": 3}], "unknown key"),
    ([{"filters": 2}, {"units": 3, "activation": "tanh"}], "must be 'linear'"),
    ([{"filters": 2, "activation": "sigmoid"}, {"units": 3}], "activation='sigmoid'"),
])
def test_bad_layer_specs_are_refused_in_one_line(specs, match):
    with pytest.raises(ValueError, match=match) as err:
        ConvChainNetwork(get_rule("dtp"), (8, 8, 2), specs)
    assert "\n" not in str(err.value)


def test_keras_file_round_trip_of_a_conv_chain_model(tmp_path):
    rule = get_rule("dtpdrl")
    model = TPModel(rule, network=ConvChainNetwork(rule, (8, 8, 2), SPECS, conv_loss="mean", seed=4))
    rng = np.random.default_rng(5)
    for v in model.forward_variables + model.all_feedback_variables:  # no zero bias left: a lost one would show
        v.assign(v.numpy() + rng.normal(scale=0.1, size=v.shape).astype("float32"))
    x, _ = _data(8)
    path = tmp_path / "conv.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.network) is ConvChainNetwork and loaded.network.get_config() == model.network.get_config()
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    for a, b in zip(loaded.all_feedback_variables, model.all_feedback_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded.local_loss_scales == model.local_loss_scales == [1 / 48, 1 / 16, 1.0]


@pytest.mark.parametrize("method", ["bp", "ddtp_linear", "ddtp_control", "dfa"])
def test_the_papers_cnn_is_one_conv_chain_network_bit_for_bit(method):
    """CNNNetwork = conv 5×5 tanh blocks with the reference's 3×3/2 pooling, element-mean conv losses, then dense
    tanh layers: the same weights, predictions, direct feedback and gradients, to the bit."""
    from tp_keras.core.networks import CNNNetwork
    rule = get_rule(method)
    cnn = TPModel(rule, network=CNNNetwork(rule, (8, 8, 2), (3, 4), (5,), 3, seed=6))
    specs = [{"filters": c, "kernel_size": 5, "activation": "tanh", "pooling": "max_3x3_s2"} for c in (3, 4)]
    chain = TPModel(rule, network=ConvChainNetwork(rule, (8, 8, 2), specs + [{"units": 5, "activation": "tanh"},
                                                                             {"units": 3}], conv_loss="mean", seed=6))
    assert chain.local_loss_scales == cnn.local_loss_scales
    for a, b in zip(chain.forward_variables + chain.all_feedback_variables,
                    cnn.forward_variables + cnn.all_feedback_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x, y = _data(8)
    np.testing.assert_array_equal(chain(x).numpy(), cnn(x).numpy())
    mine, theirs = step.compute_updates(chain, x, y), step.compute_updates(cnn, x, y)
    for a, b in zip(mine.forward_grads + (mine.feedback_grads or []),
                    theirs.forward_grads + (theirs.feedback_grads or [])):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_overlapping_pooling_has_no_layerwise_feedback():
    with pytest.raises(ValueError, match="no unpooling inverse"):
        ConvChainNetwork(get_rule("dtp"), (8, 8, 2), [{"filters": 2}, {"filters": 2, "pooling": "max_3x3_s2"},
                                                       {"units": 3}])


def _whitened(rows, cols, rng):
    """rows × cols noise with εᵀε/rows = I exactly (orthonormal columns, scaled)."""
    q, _ = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sqrt(rows)


def test_ldrl_on_a_linear_conv_block_is_minimised_by_the_forward_kernel():
    """F(h) = conv(h, W), G(u) = convT(u, Q) + d: with whitened noise (Cx = Cy = σ²I) the L-DRL loss is
    σ²(‖A_Q − A_W‖² − ‖A_W‖²), A_K the conv's matrix, so G's Jacobian becomes F's transposed Jacobian at Q = W:
    the loss's gradient vanishes there and L(W + E) − L(W) = σ²‖A_E‖² (A_E from NumPy convolutions of unit maps)."""
    sigma, batch = 0.4, 64
    rule = dataclasses.replace(get_rule("ldrl"), sigma=sigma, feedback_bias=True)
    specs = [{"filters": 2, "activation": "elu"}, {"filters": 3, "activation": "linear", "pooling": "none"},
             {"units": 4}]
    net = ConvChainNetwork(rule, (8, 8, 2), specs, seed=2, dtype="float64")
    net.build((None, 8, 8, 2))
    hs = net.activations(tf.constant(_images((batch, 8, 8, 2), 14)))
    rng = np.random.default_rng(15)
    sizes = [int(h.shape[-1]) for h in hs[1:-1]] + [int(h.shape[-1]) for h in hs[2:]]
    eps = np.concatenate([_whitened(batch, n, rng) for n in sizes], axis=1).astype(np.float32)
    block = net.tp_layers[1]
    w = block.kernel.numpy()

    def loss_and_gradient(q):
        block.feedback_kernel.assign(q)
        noise = K.NoiseDraw(_FixedNoise(eps), _Seeds(), batch, tf.float64)
        with tf.GradientTape() as tape:
            loss = LDRL_LOSS.losses(net, rule, hs, noise, None, batch)[0][0]
        return loss.numpy(), tape.gradient(loss, block.feedback_kernel).numpy()

    at_w, gradient_at_w = loss_and_gradient(w)
    e = rng.normal(scale=0.3, size=w.shape)
    moved, gradient_moved = loss_and_gradient(w + e)
    np.testing.assert_allclose(gradient_at_w, 0.0, atol=1e-5 * np.abs(gradient_moved).max())
    basis = np.eye(32).reshape(32, 4, 4, 2)  # the conv block's input: 4×4×2 maps
    a_e = np_conv(basis, e).reshape(32, -1)
    np.testing.assert_allclose(moved - at_w, sigma ** 2 * np.sum(a_e ** 2), rtol=1e-5)


def test_torch_init_draws_every_map_uniform_within_one_over_root_fan_in(tmp_path):
    """init='torch': PyTorch's default Conv2d / Linear / ConvTranspose2d init (Ernoult et al.'s code keeps it):
    kernels and biases U(±1/√fan_in), fan_in = C_in·k² for a conv and its transposed conv, n_in for a dense layer and
    n_out for its inverse; kept, not redrawn, by a .keras round trip."""
    rule = get_rule("dtpdrl")
    specs = [{"filters": 6}, {"filters": 8, "kernel_size": 5}, {"units": 40}, {"units": 3}]
    model = TPModel(rule, network=ConvChainNetwork(rule, (8, 8, 2), specs, init="torch", seed=7))
    fan_ins = [2 * 9, 6 * 25, 2 * 2 * 8, 40]
    feedback_fan_ins = [None, 6 * 25, 40, 3]
    for layer, n, m in zip(model.tp_layers, fan_ins, feedback_fan_ins):
        for variable, bound in [(layer.kernel, n), (layer.bias, n), (layer.feedback_kernel, m),
                                (layer.feedback_bias_var, m)]:
            if bound is None:
                assert variable is None
                continue
            values = variable.numpy()
            assert np.abs(values).max() <= 1 / np.sqrt(bound)
            if values.size >= 50:  # filled out to the bound, not a narrower law (P(fail) < 0.8⁵⁰)
                assert np.abs(values).max() > 0.8 / np.sqrt(bound)
    model.tp_layers[1].kernel.assign(model.tp_layers[1].kernel + 0.01)  # a trained value, not a fresh draw
    path = tmp_path / "torch_init.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(loaded.forward_variables + loaded.all_feedback_variables,
                    model.forward_variables + model.all_feedback_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="init='he'"):
        ConvChainNetwork(rule, (8, 8, 2), specs, init="he")
