"""Output loss and error, output target, and target propagation (spec §1.2, §2.2, §2.5).

Notation: `hs = [h_0, h_1, ..., h_L]` are the clean forward activations (h_0 = x, h_L = the linear output),
`layers[k]` is the forward layer that computes h_{k+1} from h_k and carries the layer-wise feedback g_k.
`batch_size` is the number of samples the losses are averaged over (the global batch under a distribution
strategy); e_L contains its 1/B exactly as the reference's autograd of a batch-mean loss does.
"""
from __future__ import annotations

import tensorflow as tf


def output_loss_per_sample(outputs, labels, task: str):
    """Per-sample loss: softmax cross-entropy on the logits, or squared error summed then averaged over outputs."""
    if task == "classification":
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=outputs)
    return tf.reduce_mean(tf.square(outputs - tf.cast(labels, outputs.dtype)), axis=-1)


def output_error(outputs, labels, task: str, batch_size):
    """e_L = ∂L/∂h_L of the batch-mean loss, in closed form: (softmax − onehot)/B, or 2(h_L − y)/(B·n_L) for MSE."""
    b = tf.cast(batch_size, outputs.dtype)
    if task == "classification":
        onehot = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(outputs)[-1], dtype=outputs.dtype)
        return (tf.nn.softmax(outputs) - onehot) / b
    n_out = tf.cast(tf.shape(outputs)[-1], outputs.dtype)
    return 2.0 * (outputs - tf.cast(labels, outputs.dtype)) / (b * n_out)


def accuracy_per_sample(outputs, labels):
    return tf.cast(tf.equal(tf.argmax(outputs, axis=-1, output_type=tf.int32), tf.cast(labels, tf.int32)),
                   outputs.dtype)


def output_target(outputs, error, target_stepsize):
    """ĥ_L = h_L − η̂·e_L (on the logits; η̂ is not rescaled by B).

    η̂ is a Python float: tf.constant keeps it exact in float64 (tf.cast would round it through float32)."""
    return outputs - tf.constant(target_stepsize, outputs.dtype) * error


def layerwise_clean_terms(layers, hs):
    """c_k = h_k − g_k(h_{k+1}) for k = 1..L−1: the difference correction, computed once per batch."""
    return [hs[k] - layers[k].feedback(hs[k + 1]) for k in range(1, len(layers))]


def propagate_layerwise(layers, hs, top_target, clean_terms=None):
    """Targets ĥ_1..ĥ_{L−1} through the layer-wise feedback.

    With `clean_terms` (difference rule, DTP): ĥ_k = g_k(ĥ_{k+1}) + h_k − g_k(h_{k+1}).
    Without (plain rule, vanilla TP, paper eq. 3): ĥ_k = g_k(ĥ_{k+1}).
    """
    targets = [None] * (len(layers) - 1)
    target = top_target
    for k in range(len(layers) - 1, 0, -1):
        target = layers[k].feedback(target)
        if clean_terms is not None:
            target = target + clean_terms[k - 1]
        targets[k - 1] = target
    return targets


def direct_targets(direct, hs, top_target, clean_outputs=None):
    """Targets ĥ_1..ĥ_{L−1} through the direct feedback maps, all in parallel.

    With `clean_outputs` = [g_ℓ(h_L)] (difference rule): ĥ_ℓ = g_ℓ(ĥ_L) + h_ℓ − g_ℓ(h_L); otherwise ĥ_ℓ = g_ℓ(ĥ_L).
    """
    projected = direct(top_target)
    if clean_outputs is None:
        return projected
    return [p + h - c for p, h, c in zip(projected, hs[1:-1], clean_outputs)]
