"""Output loss and error, output target, and target propagation (docs/semantics.md §2.1, §7.3, §7.6).

Notation: `hs = [h_0, h_1, ..., h_L]` are the clean forward activations (h_0 = x, h_L = the linear output),
`layers[k]` is the forward layer that computes h_{k+1} from h_k and carries the layer-wise feedback g_k.
`batch_size` is the number of samples the losses are averaged over (the global batch under a distribution
strategy); e_L contains its 1/B exactly as the reference's autograd of a batch-mean loss does.
"""
from __future__ import annotations

import numpy as np
from tp_keras.core.lazy_tf import tf


def class_labels(labels):
    """Classification labels as the losses take them: class ids of shape (B,) (an (B, 1) column is read as ids),
    or rows of shape (B, C) of class probabilities (one-hot or soft labels). Which form is decided by the static
    shape, so a traced step has one branch."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] == 1:
        labels = labels[:, 0]
    return labels


def is_dense(labels) -> bool:
    """Whether `class_labels(...)` are (B, C) probability rows rather than class ids."""
    return labels.shape.rank == 2


def _regression_labels(labels, outputs):
    labels = tf.cast(labels, outputs.dtype)
    if labels.shape.rank == 1 and outputs.shape[-1] == 1:  # (B,) targets of a single-output model
        return labels[:, None]
    return labels


def output_loss_per_sample(outputs, labels, task: str):
    """Per-sample loss: softmax cross-entropy on the logits, or squared error summed then averaged over outputs."""
    if task == "classification":
        labels = class_labels(labels)
        if is_dense(labels):
            return tf.nn.softmax_cross_entropy_with_logits(labels=tf.cast(labels, outputs.dtype), logits=outputs)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=outputs)
    return tf.reduce_mean(tf.square(outputs - _regression_labels(labels, outputs)), axis=-1)


def output_error(outputs, labels, task: str, batch_size):
    """e_L = ∂L/∂h_L of the batch-mean loss, in closed form: (softmax − onehot)/B (the label rows themselves
    for (B, C) labels), or 2(h_L − y)/(B·n_L) for MSE."""
    b = tf.cast(batch_size, outputs.dtype)
    if task == "classification":
        labels = class_labels(labels)
        if is_dense(labels):
            onehot = tf.cast(labels, outputs.dtype)
        else:
            onehot = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(outputs)[-1], dtype=outputs.dtype)
        return (tf.nn.softmax(outputs) - onehot) / b
    n_out = tf.cast(tf.shape(outputs)[-1], outputs.dtype)
    return 2.0 * (outputs - _regression_labels(labels, outputs)) / (b * n_out)


def accuracy_per_sample(outputs, labels):
    labels = class_labels(labels)
    ids = tf.argmax(labels, axis=-1, output_type=tf.int32) if is_dense(labels) else tf.cast(labels, tf.int32)
    return tf.cast(tf.equal(tf.argmax(outputs, axis=-1, output_type=tf.int32), ids), outputs.dtype)


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
        if getattr(layers[k], "feedback_batch_norm", False):  # FWDTP-BN: ĥ_k = BN(g_k(ĥ_{k+1}) + h_k − g_k(h_{k+1}))
            target = layers[k].normalize_target(target)
        targets[k - 1] = target
    return targets


def direct_targets(direct, hs, top_target, clean_outputs=None):
    """Targets ĥ_1..ĥ_{L−1} through the direct feedback maps, all in parallel.

    With `clean_outputs` = [g_ℓ(h_L)] (difference rule): ĥ_ℓ = g_ℓ(ĥ_L) + h_ℓ − g_ℓ(h_L); otherwise ĥ_ℓ = g_ℓ(ĥ_L).
    (Maps with recurrent input read the clean h_ℓ in both terms.)
    """
    projected = direct(top_target, hidden=hs[1:-1])
    if clean_outputs is None:
        return projected
    return [p + h - c for p, h, c in zip(projected, hs[1:-1], clean_outputs)]


def output_jacobians(layers, hs):
    """J_ℓ = ∂h_L/∂h_ℓ per sample, for ℓ = 1..L: a list of (B, n_L, n_ℓ) tensors (J_L = I).

    By the chain rule through the forward layers, J_ℓ = (J_{ℓ+1} ⊙ s'_{ℓ+1}) W_{ℓ+1}ᵀ in the row-vector
    convention, batched over samples: exactly what `GradientTape.batch_jacobian` gives, at the cost of one
    (B·n_L)×n_{ℓ+1}×n_ℓ matmul per layer and no loop over samples or outputs (J_{L−1} = s'_L ⊙ W_Lᵀ needs none).
    """
    outputs = hs[-1]
    batch, n_out = tf.shape(outputs)[0], int(outputs.shape[-1])
    top = layers[-1]
    jacobian = top.activation_derivative(outputs)[:, :, None] * tf.transpose(top.kernel)[None]  # J_{L−1}
    jacobians = [jacobian, tf.eye(n_out, batch_shape=[batch], dtype=outputs.dtype)]
    for k in range(len(layers) - 2, 0, -1):  # layers[k] maps h_k to h_{k+1}
        upper = jacobian * layers[k].activation_derivative(hs[k + 1])[:, None, :]
        rows = tf.reshape(upper, [-1, int(upper.shape[-1])])  # (B·n_L, n_{k+1}): one large matmul
        jacobian = tf.reshape(tf.matmul(rows, layers[k].kernel, transpose_b=True),
                              [batch, n_out, int(layers[k].kernel.shape[0])])  # static width: callers need it
        jacobians.insert(0, jacobian)
    return jacobians


def _gram_solve(gram, rhs, damping: float):
    """(G + λI)⁻¹ rhs for a batch of symmetric PSD G; for λ = 0 the pseudo-inverse G⁺ rhs.

    G⁺ comes from a batched eigendecomposition of the small Gram matrix, eigenvalues below n·eps·λ_max
    treated as zero: singular values of J below √(n·eps) of the largest (≈1e-3 in float32, 5e-8 in float64),
    which the Gram matrix cannot resolve anyway. An SVD-based pinv of J itself is avoided: under XLA on CPU it
    costs seconds per batch (measured 7.9 s vs 31 ms per GNT step).
    """
    if damping > 0.0:
        n = int(gram.shape[-1])
        return tf.linalg.cholesky_solve(tf.linalg.cholesky(gram + damping * tf.eye(n, dtype=gram.dtype)), rhs)
    eigenvalues, vectors = tf.linalg.eigh(gram)
    eps = tf.constant(int(gram.shape[-1]) * np.finfo(gram.dtype.as_numpy_dtype).eps, gram.dtype)
    cutoff = eps * tf.reduce_max(tf.abs(eigenvalues), axis=-1, keepdims=True)
    keep = eigenvalues > cutoff
    inverse = tf.where(keep, 1.0 / tf.where(keep, eigenvalues, tf.ones_like(eigenvalues)),
                       tf.zeros_like(eigenvalues))
    return tf.matmul(vectors, inverse[..., None] * tf.matmul(vectors, rhs, transpose_a=True))


def gauss_newton_steps(jacobians, error, damping: float = 0.0):
    """Δh_ℓ = J⁺e (damping 0, Moore–Penrose) or Jᵀ(JJᵀ + λI)⁻¹e, per sample (docs/semantics.md §7.10); e has its 1/B.

    Both go through the smaller Gram matrix, as the reference does: J⁺ = Jᵀ(JJᵀ)⁺ when n_L ≤ n_ℓ, else
    (JᵀJ)⁺Jᵀ, and likewise Jᵀ(JJᵀ + λI)⁻¹ = (JᵀJ + λI)⁻¹Jᵀ.
    """
    e = error[:, :, None]
    steps = []
    for jac in jacobians:
        n_out, n_layer = int(jac.shape[1]), int(jac.shape[2])
        if n_out <= n_layer:
            gram = tf.matmul(jac, jac, transpose_b=True)
            delta = tf.matmul(jac, _gram_solve(gram, e, damping), transpose_a=True)
        else:
            gram = tf.matmul(jac, jac, transpose_a=True)
            delta = _gram_solve(gram, tf.matmul(jac, e, transpose_a=True), damping)
        steps.append(delta[:, :, 0])
    return steps


def gnt_targets(layers, hs, error, damping: float = 0.0):
    """Ideal Gauss-Newton targets ĥ_ℓ = h_ℓ − Δh_ℓ for every layer ℓ = 1..L, the output included (η̂ unused)."""
    steps = gauss_newton_steps(output_jacobians(layers, hs), error, damping)
    return [h - d for h, d in zip(hs[1:], steps)]
