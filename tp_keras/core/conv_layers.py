"""Conv blocks with layer-wise feedback: the forward block conv → s → pool and the map g that inverts it, as
Ernoult et al. (ICML 2022, L-DRL; code ernoult/scalingDTP) build it by inverting each forward block.

`TPConvBlock` computes h = pool(s(conv_k×k(x) + b)) (stride 1, 'same' zero padding; pooling none, max 2×2/2 or
average 2×2/2, floor on odd sizes) and returns it flattened in NHWC order, one row per sample, like `TPConv2D`, so
the MLP's passes, noisy stacks and losses apply unchanged. Its feedback g maps the block's output space back to its
input space, the reversed block of the authors' `invert`:

    unpool → [s] → transposed conv (+ d) → [t]

* unpooling of max-pooling puts each value at its window's argmax in the forward pass being inverted (first
  maximum in row-major order, PyTorch's MaxPool2d index) and zeros elsewhere (MaxUnpool2d); for odd sizes the
  row/column that the pooling dropped stays zero (MaxUnpool2d with output_size). Unpooling of average pooling
  copies each value to its 2×2 window (the authors' AdaptiveAvgPool2d to the input size: nearest upsampling).
* the transposed conv has the forward kernel's shape (k, k, C_in, C_out), stride 1, 'same' padding: the adjoint of
  the forward conv (PyTorch ConvTranspose2d(C_out, C_in, k, padding=k//2)); Q = W makes g's linear part the
  transposed Jacobian of the conv. Its bias d (C_in values) exists with `feedback_bias`.
* the activation: `feedback_form='inverse_block'` (the authors') applies the block's own forward activation s on
  the map's input, g(u) = convT(s(unpool(u))) + d; `feedback_form='dtp'` applies t = `feedback_activation` on its
  output, g(u) = t(convT(unpool(u)) + d), DTP's form.

Which argmax: the pooling indices belong to one forward pass, so g reads that pass's input: `feedback(u,
forward_input)` recomputes the block's pre-pooling map from `forward_input` and takes its window argmaxes (the
"switches"). The authors pass indices through a one-slot "magic bridge" that holds those of the most recent forward
call; the callers here name the pass explicitly, which gives the same indices in each of their losses (see
rules/components.py, `bind_forward_inputs`) and keeps the step stateless (tf.function, replicas, no cache to clear).

Initialisation: the project's Xavier-normal kernels from explicit seeds (fans C_in·k² and C_out·k², as PyTorch's
xavier_normal_ on a conv weight), zero biases; the feedback kernel uses seed + 1.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tp_keras.core.layers import (FEEDBACK_FORMS, FEEDBACK_INITIALIZERS, PairedWeights, XavierNormal,
                                  activation_fn, derivative_from_output, max_pool_3x3_s2, pooled_size)

# 'max_3x3_s2': the 2020 reference CNN's overlapping MaxPool2d(3, 2, padding 1) (`TPConv2D`), for direct feedback
# and BP only (its windows overlap: no unpooling inverse here).
POOLINGS = ("none", "max", "average", "max_3x3_s2")
KERNEL_SIZES = (3, 5)


def first_max_switches(a):
    """One-hot (B, H/2, W/2, 4·C) of each 2×2/2 window's first maximum in row-major order (PyTorch's MaxPool2d
    index), in space_to_depth's layout: channel (2·dy + dx)·C + c. `a`'s odd last row/column (dropped by the
    pooling) is ignored."""
    height, width = int(a.shape[1]) // 2 * 2, int(a.shape[2]) // 2 * 2
    channels = int(a.shape[3])
    windows = tf.nn.space_to_depth(a[:, :height, :width, :], 2)  # (B, H/2, W/2, 4·C)
    rows = tf.shape(windows)[0]
    windows = tf.reshape(windows, [rows, height // 2, width // 2, 4, channels])
    is_max = tf.unstack(tf.equal(windows, tf.reduce_max(windows, axis=3, keepdims=True)), axis=3)
    # a maximum no earlier position of its window holds: logical ops on the 4 positions, 7x faster on the CPU than
    # a cumulative sum along them (measured: 77 ms against 570 ms for 128x28x28x32 on the loaded 2-core CPU)
    first, seen = [is_max[0]], is_max[0]
    for position in is_max[1:]:
        first.append(tf.logical_and(position, tf.logical_not(seen)))
        seen = tf.logical_or(seen, position)
    return tf.reshape(tf.cast(tf.stack(first, axis=3), a.dtype), [rows, height // 2, width // 2, 4 * channels])


def max_unpool(u, switches, output_hw):
    """u (N, H/2, W/2, C) placed at the switches' positions of a (N, H, W, C) map, zeros elsewhere. `switches` may
    hold fewer rows than u (N = m·B, a stack of m blocks read at the same forward pass): they are tiled."""
    reps = tf.shape(u)[0] // tf.shape(switches)[0]
    switches = tf.tile(switches, tf.stack([reps, 1, 1, 1]))
    up = tf.nn.depth_to_space(tf.tile(u, [1, 1, 1, 4]) * switches, 2)
    return _pad_to(up, output_hw)


def transposed_conv_of_constant(up, kernel, output_shape):
    """tf.nn.conv2d_transpose(up, kernel, output_shape, 1, 'SAME') for an input `up` that no gradient reaches, whose
    gradient is the kernel's alone. TensorFlow's registered gradient of the transposed conv also computes the
    input's (a conv as costly as the op itself) whatever the caller needs; Grappler prunes it from a graph's main
    body, but neither eager execution nor a while-loop body (L-DRL's feedback rounds) does. The kernel's gradient
    is the registered one's, op for op (the same numbers)."""
    up = tf.stop_gradient(up)

    @tf.custom_gradient
    def transposed_conv(kernel):
        def grad(upstream):  # the transposed conv's is the conv's input gradient: its filter gradient swaps roles
            return tf.raw_ops.Conv2DBackpropFilter(
                input=upstream, filter_sizes=tf.shape(kernel), out_backprop=up, strides=[1, 1, 1, 1],
                padding="SAME", use_cudnn_on_gpu=True, explicit_paddings=[], data_format="NHWC",
                dilations=[1, 1, 1, 1])
        return tf.nn.conv2d_transpose(up, kernel, output_shape, strides=1, padding="SAME"), grad

    return transposed_conv(tf.convert_to_tensor(kernel))


def kernel_gradient(v, p, kernel_size):
    """Σ_{b,i,j} v[b, i+di−r, j+dj−r, c]·p[b, i, j, o] (zero outside v, r = k//2): the (k, k, C_in, C_out) gradient of
    Σ v·T_Q(p) (T_Q the stride-1 'SAME' transposed conv) with respect to Q, and of Σ p·conv(v, Q) — the number
    Conv2DBackpropFilter(v, p) gives, written as a plain NHWC/HWIO conv: the samples as channels, the channels as
    samples, p's map as the window. XLA on a CPU runs a conv through Eigen only in this canonical layout, and it
    rewrites other layouts to it in the main computation alone: a Conv2DBackpropFilter or a transposed conv in a
    while-loop body (L-DRL's feedback rounds) became a naive loop nest there, 17 s instead of 0.25 s for one pair on
    128×28×28×32 (docs/performance.md). Unjitted it is also quicker than Conv2DBackpropFilter on this CPU."""
    pad = kernel_size // 2
    g = tf.nn.conv2d(tf.transpose(v, [3, 1, 2, 0]), tf.transpose(p, [1, 2, 0, 3]), strides=1,
                     padding=[[0, 0], [pad, pad], [pad, pad], [0, 0]])
    return tf.transpose(g, [1, 2, 0, 3])


def transposed_conv_as_conv(p, kernel):
    """T_Q(p) = conv2d_transpose(p, Q, stride 1, 'SAME') for a constant input p (odd k), as the plain conv of p with
    Q flipped in space and its channel axes swapped, with Q's gradient alone (`kernel_gradient`): both in the
    canonical layout XLA runs through Eigen inside a loop body too (`kernel_gradient` says why)."""
    p = tf.stop_gradient(p)
    kernel = tf.convert_to_tensor(kernel)
    size = int(kernel.shape[0])

    @tf.custom_gradient
    def transposed_conv(kernel):
        flipped = tf.reverse(tf.transpose(kernel, [0, 1, 3, 2]), [0, 1])
        return tf.nn.conv2d(p, flipped, strides=1, padding="SAME"), lambda upstream: kernel_gradient(upstream, p, size)

    return transposed_conv(kernel)


def nearest_upsample(u, output_hw):
    """Each value of u (N, H/2, W/2, C) copied to its 2×2 window."""
    return _pad_to(tf.nn.depth_to_space(tf.tile(u, [1, 1, 1, 4]), 2), output_hw)


def _pad_to(x, output_hw):
    extra_h, extra_w = output_hw[0] - int(x.shape[1]), output_hw[1] - int(x.shape[2])
    if extra_h or extra_w:
        x = tf.pad(x, [[0, 0], [0, extra_h], [0, extra_w], [0, 0]])
    return x


@keras.saving.register_keras_serializable(package="tp_keras")
class TPConvBlock(PairedWeights, keras.layers.Layer):
    """conv k×k (stride 1, 'same') → s → pool; h = the (pooled) map flattened NHWC; with its layer-wise feedback g.

    Args:
      filters: output channels C_out.
      image_shape: (H, W, C_in) of the input map (read as NHWC images or flattened in NHWC order).
      kernel_size: 3 or 5.
      activation: s ('tanh', 'elu', 'relu', 'linear').
      pooling: 'none', 'max' (2×2, stride 2), 'average' (2×2, stride 2; even H and W) or 'max_3x3_s2' (the 2020
        reference CNN's, without layer-wise feedback).
      use_bias: forward bias per channel.
      feedback_activation: t of the 'dtp' form, or None for a block without feedback weights; with
        'inverse_block' any name gives the map (its activation is s).
      feedback_form: 'inverse_block' (convT(s(unpool(u))) + d, the authors') or 'dtp' (t(convT(unpool(u)) + d)).
      feedback_bias: whether g has a bias d.
      feedback_init: 'xavier' or 'uniform_1e-3' (as TPDense).
      feedback_trainable: False freezes Q and d.
      seed: seed of the kernel's init (Q uses seed + 1).
    """

    feedback_reads_input = True  # g needs the forward pass's input (the pooling's argmax): see the module docstring

    def __init__(self, filters: int, image_shape: Sequence[int], kernel_size: int = 3, activation: str = "elu",
                 pooling: str = "max", use_bias: bool = True, feedback_activation: str | None = None,
                 feedback_form: str = "inverse_block", feedback_bias: bool = True, feedback_init: str = "xavier",
                 feedback_trainable: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"TPConvBlock: image_shape must be (H, W, C), got {self.image_shape}")
        self.kernel_size = int(kernel_size)
        if self.kernel_size not in KERNEL_SIZES:
            raise ValueError(f"TPConvBlock: kernel_size={kernel_size!r}; choose one of {KERNEL_SIZES}")
        if pooling not in POOLINGS:
            raise ValueError(f"TPConvBlock: pooling={pooling!r}; choose one of {POOLINGS}")
        height, width, _ = self.image_shape
        if pooling == "average" and (height % 2 or width % 2):
            raise ValueError(f"TPConvBlock: average pooling of an odd-sized {height}×{width} map has no exact "
                             "upsampling inverse; use even sizes or max pooling")
        if pooling == "max_3x3_s2" and feedback_activation:
            raise ValueError("TPConvBlock: pooling='max_3x3_s2' has overlapping windows and no unpooling inverse, "
                             "so no layer-wise feedback; use it with direct feedback or BP, or pool 'max' 2×2")
        if pooling in ("max", "average") and min(height, width) < 2:
            raise ValueError(f"TPConvBlock: a {height}×{width} map is too small to pool 2×2; use pooling='none'")
        if feedback_form not in FEEDBACK_FORMS:
            raise ValueError(f"TPConvBlock: feedback_form={feedback_form!r}; choose one of {FEEDBACK_FORMS}")
        if feedback_init not in FEEDBACK_INITIALIZERS:
            raise ValueError(f"TPConvBlock: feedback_init={feedback_init!r}; choose one of "
                             f"{sorted(FEEDBACK_INITIALIZERS)}")
        self.activation, self.pooling, self.use_bias = activation, pooling, bool(use_bias)
        self.feedback_activation, self.feedback_form = feedback_activation, feedback_form
        self.feedback_bias, self.feedback_init = bool(feedback_bias), feedback_init
        self.feedback_trainable, self.seed = bool(feedback_trainable), int(seed)
        self._act = activation_fn(activation)
        self._fb_act = activation_fn(feedback_activation) if feedback_activation else None
        self.conv_image_shape = (height, width, self.filters)
        self.output_image_shape = {
            "none": self.conv_image_shape, "max_3x3_s2": (pooled_size(height), pooled_size(width), self.filters),
        }.get(pooling, (height // 2, width // 2, self.filters))
        self.units = int(np.prod(self.output_image_shape))  # size of the flattened (pooled) map
        self.kernel = self.bias = self.feedback_kernel = self.feedback_bias_var = None

    def build(self, input_shape=None):
        if self.kernel is not None:
            return
        k, channels = self.kernel_size, self.image_shape[-1]
        shape = (k, k, channels, self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=XavierNormal(self.seed))
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        if self.feedback_activation:
            self.feedback_kernel = self.add_weight(
                name="feedback_kernel", shape=shape,
                initializer=FEEDBACK_INITIALIZERS[self.feedback_init](self.seed + 1), trainable=self.feedback_trainable)
            if self.feedback_bias:
                self.feedback_bias_var = self.add_weight(
                    name="feedback_bias", shape=(channels,), initializer="zeros", trainable=self.feedback_trainable)

    # --- forward ---------------------------------------------------------------------------------------------
    def pre_pooling(self, x):
        """s(conv(x) + b), an NHWC map of the input's height and width."""
        x = tf.reshape(x, (-1,) + self.image_shape)
        a = tf.nn.conv2d(x, self.kernel, strides=1, padding="SAME")
        if self.bias is not None:
            a = a + self.bias
        return self._act(a)

    def pool(self, a):
        if self.pooling == "max":
            return tf.nn.max_pool2d(a, 2, 2, "VALID")
        if self.pooling == "average":
            return tf.nn.avg_pool2d(a, 2, 2, "VALID")
        if self.pooling == "max_3x3_s2":
            return max_pool_3x3_s2(a)
        return a

    def call(self, x):
        return tf.reshape(self.pool(self.pre_pooling(x)), [-1, self.units])

    def call_with_switches(self, x):
        """(call(x), switches(x)) from one conv: the forward pass and the argmax its inverse unpools at (the very
        tensors of the two calls; None for the switches without max pooling)."""
        a = self.pre_pooling(x)
        h = tf.reshape(self.pool(a), [-1, self.units])
        return h, (tf.stop_gradient(first_max_switches(a)) if self.pooling == "max" else None)

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.units)

    def activation_derivative(self, h):
        return derivative_from_output(self.activation, h)

    # --- feedback --------------------------------------------------------------------------------------------
    def switches(self, forward_input):
        """Where each max-pooling window's maximum is in the forward pass on `forward_input` (a constant for
        gradients); None without max pooling."""
        if self.pooling != "max":
            return None
        return tf.stop_gradient(first_max_switches(self.pre_pooling(tf.stop_gradient(forward_input))))

    def unpool(self, u, switches=None):
        """The pooling's inverse on u (N, H', W', C_out) NHWC: max-unpooling at `switches`, nearest upsampling,
        or nothing."""
        if self.pooling == "max":
            if switches is None:
                raise ValueError(f"{self.name}: max-unpooling needs the forward pass's input (its argmax)")
            return max_unpool(u, switches, self.conv_image_shape[:2])
        if self.pooling == "average":
            return nearest_upsample(u, self.conv_image_shape[:2])
        return u

    def feedback(self, u, forward_input=None, constant: bool = False, *, switches=None, detach_input: bool = False):
        """g(u): this block's output space → its input space, unpooling at the argmax of the forward pass on
        `forward_input` (or at precomputed `switches`). constant=True reads Q and d as constants for gradients;
        detach_input=True reads u as one (its gradient is then Q's only: see `transposed_conv_of_constant`)."""
        if switches is None and self.pooling == "max":
            if forward_input is None:
                raise ValueError(f"{self.name}: the feedback of a max-pooling block needs the forward pass's input")
            switches = self.switches(forward_input)
        kernel, bias = self.feedback_kernel, self.feedback_bias_var
        if constant:
            kernel = tf.stop_gradient(kernel)
            bias = None if bias is None else tf.stop_gradient(bias)
        if detach_input:
            u = tf.stop_gradient(u)
        up = self._unpooled(u, switches)
        output_shape = tf.stack([tf.shape(up)[0], *self.image_shape])
        if detach_input and not constant:
            a = transposed_conv_of_constant(up, kernel, output_shape)
        else:
            a = tf.nn.conv2d_transpose(up, kernel, output_shape, strides=1, padding="SAME")
        if bias is not None:
            a = a + bias
        if self.feedback_form == "dtp":
            a = self._fb_act(a)
        return tf.reshape(a, [-1, int(np.prod(self.image_shape))])

    def _unpooled(self, u, switches):
        """unpool(u), with s on it in the inverse-block form: what g's transposed conv reads, an NHWC map."""
        up = self.unpool(tf.reshape(u, (-1,) + self.output_image_shape), switches)
        return self._act(up) if self.feedback_form == "inverse_block" else up

    # --- the inverse block's linear part (L-DRL's differences) ------------------------------------------------
    # In the inverse-block form g(u) = T_Q(P(u)) + d, with P(u) = s(unpool(u)) and T_Q the transposed conv, is
    # linear in P(u): g(a) − g(b) = T_Q(P(a) − P(b)), one transposed conv instead of two, d cancelled exactly.
    def linear_feedback_input(self, u, switches=None):
        """P(u) = s(unpool(u)) (unpooling at `switches`) as a constant for gradients: the NHWC map g's linear part
        reads, g(u) = T_Q(P(u)) + d (feedback_form='inverse_block' only)."""
        if self.feedback_form != "inverse_block":
            raise ValueError(f"{self.name}: feedback_form={self.feedback_form!r} is not linear in its unpooled "
                             "input; the linear part exists for feedback_form='inverse_block'")
        return tf.stop_gradient(self._unpooled(tf.stop_gradient(u), switches))

    def linear_feedback(self, p):
        """T_Q(p), flattened: g's linear part on an input map p of `linear_feedback_input`'s, Q's gradient alone,
        as plain convs (`transposed_conv_as_conv`: L-DRL runs it in a loop body, which XLA does not canonicalise)."""
        a = transposed_conv_as_conv(p, self.feedback_kernel)
        return tf.reshape(a, [-1, int(np.prod(self.image_shape))])

    def linear_feedback_pairing(self, v, p):
        """Σ v·T_Q(p) over all its entries (v: rows in this block's input space, a constant), with no transposed
        conv: T_Q(p) is linear in Q, so the sum is Σ Q ⊙ ∂/∂Q, and ∂/∂Q is one kernel gradient
        (`kernel_gradient` of v and p, what Q's gradient through T_Q(p) computes with upstream v)."""
        v = tf.reshape(tf.stop_gradient(v), (-1,) + self.image_shape)
        kernel = tf.convert_to_tensor(self.feedback_kernel)
        gradient = kernel_gradient(v, tf.stop_gradient(p), self.kernel_size)
        return tf.reduce_sum(kernel * tf.stop_gradient(gradient))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, image_shape=list(self.image_shape), kernel_size=self.kernel_size,
                      activation=self.activation, pooling=self.pooling, use_bias=self.use_bias,
                      feedback_activation=self.feedback_activation, feedback_form=self.feedback_form,
                      feedback_bias=self.feedback_bias, feedback_init=self.feedback_init,
                      feedback_trainable=self.feedback_trainable, seed=self.seed)
        return config
