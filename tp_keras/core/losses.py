"""Local forward losses and feedback (reconstruction / DRL) losses, exact to the reference's scales.

* Local loss (docs/semantics.md §2.2): (1/B)·Σ_b‖h_ℓ − ĥ_ℓ‖², the target held fixed. Differentiated with the layer's
  input detached, its gradient is exactly 2·s'(a_ℓ)⊙(h_ℓ − ĥ_ℓ)·h_{ℓ−1}ᵀ/B. The step multiplies it by the rule's
  `forward_loss_scale` (1; ½ for L-DRL's authors, docs/semantics.md §7.12).
* Feedback losses are element means (over batch × units) times a scale (docs/semantics.md §3): 1/σ² for DRL,
  1/max(σ, 0.02)² for DTP's reconstruction loss, 1 for DDTP-control.

The DRL noisy passes (one corrupted copy per hidden layer, each sent to the output) are computed level by level
on a stack of the corrupted copies along the batch axis, so the O(L²) layer applications become L−1 matmuls of
growing height inside one graph (docs/semantics.md §14.1), never one tape or one Python-level pass per layer.
"""
from __future__ import annotations

from tp_keras.core.lazy_tf import tf

DTP_SIGMA_FLOOR = 0.02  # the reference clamps DTP's 1/σ² at 1/0.02² = 2500


def local_loss(h, target, batch_size):
    """(1/B)·Σ‖h − ĥ‖² with ĥ a constant."""
    return tf.reduce_sum(tf.square(h - tf.stop_gradient(target))) / tf.cast(batch_size, h.dtype)


def element_mean_square(diff, batch_size):
    """Mean of diff² over batch × units, with the batch count given explicitly (the global batch)."""
    count = tf.cast(batch_size, diff.dtype) * tf.cast(tf.shape(diff)[-1], diff.dtype)
    return tf.reduce_sum(tf.square(diff)) / count


def noisy_forward_stack(layers, noisy):
    """Sends every corrupted copy h̃_ℓ = h_ℓ + σε_ℓ (ℓ = 1..L−1) forward to the output, all at once.

    Level k of the loop applies forward layer k+1 to the copies of layers 1..k stacked along the batch axis, then
    appends h̃_{k+1}. Returns the outputs [ỹ_1; ...; ỹ_{L−1}] stacked in that order, shape ((L−1)·B, n_L).
    """
    stack = noisy[0]
    for k in range(1, len(layers)):
        stack = layers[k](stack)
        if k < len(layers) - 1:
            stack = tf.concat([stack, noisy[k]], axis=0)
    return stack


def noisy_outputs(layers, noisy):
    """[ỹ_1, ..., ỹ_{L−1}]: the output of every corrupted copy, as separate (B, n_L) blocks."""
    count = len(noisy)
    stack = noisy_forward_stack(layers, noisy)
    return tf.unstack(tf.reshape(stack, [count, tf.shape(noisy[0])[0], tf.shape(stack)[-1]]), num=count, axis=0)


def layerwise_reconstruction_losses(layers, noisy, scale, batch_size):
    """DTP (docs/semantics.md §7.3): L_k = c·mean‖g_k(f_{k+1}(h̃_k)) − h̃_k‖², one term per hidden layer k."""
    return [scale * element_mean_square(layers[k].feedback(layers[k](noisy[k - 1])) - noisy[k - 1], batch_size)
            for k in range(1, len(layers))]


def layerwise_drl(layers, hs, noisy, clean_terms, scale, batch_size, top_target=None):
    """DTPDRL (docs/semantics.md §7.5): every noisy output ỹ_ℓ returns along the difference-corrected feedback path.

    The stack [ĥ_L (optional); ỹ_1; ...; ỹ_{L−1}] descends level by level: at level k, g_k^diff(u) = g_k(u) + c_k
    is applied to every row, the rows of ỹ_k are finished (their loss trains g_k), the rest go one level down.
    The input of each level is detached: each loss must train only its own g_k (the upper maps act as
    constants), and that also keeps the tape from back-propagating through the whole path.
    Riding ĥ_L along in the same stack yields the targets ĥ_{L−1}..ĥ_1 with the same matmuls.

    Returns (losses [L_1..L_{L−1}], targets [ĥ_1..ĥ_{L−1}] or None).
    """
    batch = tf.shape(hs[0])[0]
    stack = noisy_forward_stack(layers, noisy)
    with_targets = top_target is not None
    if with_targets:
        stack = tf.concat([top_target, stack], axis=0)
    losses = [None] * (len(layers) - 1)
    targets = [None] * (len(layers) - 1)
    for k in range(len(layers) - 1, 0, -1):
        blocks = k + int(with_targets)  # rows: [target], copies of layers 1..k
        # Only the finishing rows (the copy of layer k) train g_k: the rows that go on down read g_k as a
        # constant, so the tape's backward matmul covers B rows instead of blocks·B.
        stack = tf.stop_gradient(stack)
        finishing = layers[k].feedback(stack[(blocks - 1) * batch:]) + clean_terms[k - 1]
        losses[k - 1] = scale * element_mean_square(finishing - noisy[k - 1], batch_size)
        if blocks > 1:
            stack = layers[k].feedback(stack[:(blocks - 1) * batch], constant=True)
            stack = stack + tf.tile(clean_terms[k - 1], [blocks - 1, 1])
            if with_targets:
                targets[k - 1] = stack[:batch]
    return losses, (targets if with_targets else None)


def direct_drl(direct, hs, noisy, layers, clean_outputs, scale, batch_size):
    """DDTP (docs/semantics.md §7.6): L_ℓ = (1/σ²)·mean‖g_ℓ(ỹ_ℓ) + h_ℓ − g_ℓ(h_L) − h̃_ℓ‖² for every hidden layer ℓ."""
    outputs = noisy_outputs(layers, noisy)
    return [scale * element_mean_square(
        direct.feedback(i, outputs[i], hs[i + 1]) + hs[i + 1] - clean_outputs[i] - noisy[i], batch_size)
        for i in range(len(noisy))]


def direct_control(direct, hs, noisy, layers, batch_size):
    """DDTP-control (docs/semantics.md §7.8): L_ℓ = mean‖g_ℓ(ỹ_ℓ) − h̃_ℓ‖² (no difference correction, no scale)."""
    outputs = noisy_outputs(layers, noisy)
    return [element_mean_square(direct.feedback(i, outputs[i], hs[i + 1]) - noisy[i], batch_size)
            for i in range(len(noisy))]
