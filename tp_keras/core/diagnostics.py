"""Diagnostics that show the theory (docs/semantics.md §13): update angles against BP and GNT, and the nullspace ratio.

Everything here is batched TensorFlow that runs inside compiled steps; nothing loops over samples or outputs.

* `update_angle`: the whole-tensor angle in degrees between two updates (docs/semantics.md §13.1).
* `bp_and_gnt_kernel_updates`: ∂L/∂W_ℓ of the batch-mean loss for every layer and the GNT update of every
  hidden layer, from the clean activations the step already has (no second forward pass, no tape).
* `gnt_kernel_updates`: the GNT weight update of every hidden layer (docs/semantics.md §13.3):
  Δh_ℓ = J_ℓᵀ(J_ℓJ_ℓᵀ + λ_ℓI)⁻¹e_L per sample (J_ℓ⁺e_L for λ_ℓ = 0), then the local-loss gradient toward h_ℓ − Δh_ℓ. The
  per-sample Jacobians come from the batched chain rule; one eigendecomposition of each small Gram matrix serves every
  λ.
* `angles`: both angle sets for one batch, from the updates a step computed.
* `nullspace_ratio`: ‖P_null ∇W_ℓ‖/‖∇W_ℓ‖ with the nullspace of J = ∂h_L/∂vec(W_ℓ) (docs/semantics.md §13.6), computed
  from J's row space through its small Gram matrix: never the square SVD of the n_ℓn_{ℓ−1}-dimensional parameter
  space.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from tp_keras.core import targets as T

# The damping grid of the reference's gn_damping_hpsearch (docs/semantics.md §13.4).
DAMPING_GRID = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def update_angle(a, b):
    """Angle in degrees between two same-shaped tensors, flattened (docs/semantics.md §13.1); the cosine is clamped to
    [−1, 1] (rounding can push it past 1 for parallel updates)."""
    a = tf.reshape(a, [-1])
    b = tf.reshape(b, [-1])
    cosine = tf.reduce_sum(a * b) / (tf.norm(a) * tf.norm(b))
    return tf.acos(tf.clip_by_value(cosine, -1.0, 1.0)) * tf.constant(180.0 / math.pi, a.dtype)


def kernel_indices(layers) -> list[int]:
    """Positions of each layer's weight matrix in the model's `forward_variables` (biases are skipped)."""
    indices, position = [], 0
    for layer in layers:
        indices.append(position)
        position += len(layer.forward_variables)
    return indices


def damped_gn_steps(jacobian, error, dampings: Sequence[float]):
    """Δh = Jᵀ(JJᵀ + λI)⁻¹e per sample for every λ in `dampings` (λ = 0: J⁺e).

    `jacobian` is (B, n_L, n_ℓ) with n_L ≤ n_ℓ (every hidden layer here is at least as wide as the output).
    One λ: targets._gram_solve (a Cholesky solve for λ > 0, ~4x faster on CPU than the eigendecomposition
    that λ = 0 needs). Several λ: one eigendecomposition of the Gram matrix serves them all, with the same
    pseudo-inverse cut-off (eigenvalues below n·eps of the largest count as zero).
    """
    gram = tf.matmul(jacobian, jacobian, transpose_b=True)
    if len(dampings) == 1:
        coefficients = [T._gram_solve(gram, error[:, :, None], float(dampings[0]))]
    else:
        eigenvalues, vectors = tf.linalg.eigh(gram)
        projected = tf.matmul(vectors, error[:, :, None], transpose_a=True)  # Vᵀe, (B, n_L, 1)
        n = int(gram.shape[-1])
        cutoff = (n * np.finfo(gram.dtype.as_numpy_dtype).eps) * tf.reduce_max(tf.abs(eigenvalues), -1,
                                                                                keepdims=True)
        coefficients = []
        for damping in dampings:
            if damping > 0.0:
                inverse = 1.0 / (eigenvalues + tf.constant(damping, gram.dtype))
            else:
                keep = eigenvalues > cutoff
                inverse = tf.where(keep, 1.0 / tf.where(keep, eigenvalues, tf.ones_like(eigenvalues)),
                                   tf.zeros_like(eigenvalues))
            coefficients.append(tf.matmul(vectors, inverse[:, :, None] * projected))  # (G + λI)⁻¹e
    return [tf.matmul(jacobian, c, transpose_a=True)[:, :, 0] for c in coefficients]


def _kernel_gradients(h_in, pre_activation_deltas, scale=None):
    """h_inᵀδ for several δ of one layer, in one matmul (the columns stacked side by side)."""
    width = int(pre_activation_deltas[0].shape[-1])
    grads = tf.split(tf.matmul(h_in, tf.concat(pre_activation_deltas, axis=1), transpose_a=True),
                     [width] * len(pre_activation_deltas), axis=1)
    return grads if scale is None else [g * scale for g in grads]


def gnt_kernel_updates(layers, hs, error, dampings: Sequence[Sequence[float]]):
    """GNT weight updates of the hidden layers ℓ = 1..L−1: result[ℓ−1][j] uses damping dampings[ℓ−1][j].

    The update of docs/semantics.md §13.3: the local-loss gradient (2/B)·h_{ℓ−1}ᵀ(s'(a_ℓ) ⊙ Δh_ℓ) toward h_ℓ − Δh_ℓ.

    Args:
      layers, hs: the forward layers and clean activations h_0..h_L.
      error: e_L (with its 1/B).
      dampings: per hidden layer, the λ values to evaluate.
    """
    jacobians = T.output_jacobians(layers, hs)
    scale = 2.0 / tf.cast(tf.shape(hs[0])[0], hs[0].dtype)
    updates = []
    for k, layer_dampings in enumerate(dampings):  # hidden layer ℓ = k + 1, computed by layers[k]
        slope = layers[k].activation_derivative(hs[k + 1])
        steps = damped_gn_steps(jacobians[k], error, layer_dampings)
        updates.append(_kernel_gradients(hs[k], [s * slope for s in steps], scale))
    return updates


def per_layer_damping(gn_damping, num_hidden: int) -> list[float]:
    """The λ of every hidden layer from a scalar or a per-hidden-layer list (docs/semantics.md §13.3)."""
    values = [float(v) for v in (gn_damping if isinstance(gn_damping, (list, tuple)) else [gn_damping])]
    if len(values) == 1:
        values = values * num_hidden
    if len(values) != num_hidden:
        raise ValueError(f"gn_damping has {len(values)} values; give one, or one per hidden layer ({num_hidden})")
    if any(v < 0 or not math.isfinite(v) for v in values):
        raise ValueError(f"gn_damping values must be finite and >= 0, got {values}")
    return values


def _method_kernel_updates(layers, updates):
    return [updates.forward_grads[i] for i in kernel_indices(layers)]


def bp_and_gnt_kernel_updates(layers, hs, error, dampings: Sequence[float]):
    """(BP gradients ∂L/∂W_ℓ for ℓ = 1..L, GNT updates of the hidden layers ℓ = 1..L−1 with damping dampings[ℓ−1]).

    One set of per-sample Jacobians serves both: BP's deltas are J_ℓᵀe_L (no backward matmuls), and each layer's
    BP and GNT weight updates come from one matmul. `error` is e_L with its 1/B.
    """
    jacobians = T.output_jacobians(layers, hs)
    scale = 2.0 / tf.cast(tf.shape(hs[0])[0], hs[0].dtype)  # GNT's local-loss factor; BP's gradient has none
    bp, gnt = [], []
    for k, layer in enumerate(layers):
        slope = layer.activation_derivative(hs[k + 1])
        if k == len(layers) - 1:  # the output layer: BP's delta is e_L itself; no GNT update
            bp.extend(_kernel_gradients(hs[k], [error * slope]))
        else:
            bp_delta = tf.einsum("bo,boi->bi", error, jacobians[k])  # J_ℓᵀe_L: the back-propagated error at h_ℓ
            (gn_delta,) = damped_gn_steps(jacobians[k], error, [dampings[k]])
            bp_update, gnt_update = _kernel_gradients(hs[k], [bp_delta * slope, gn_delta * slope * scale])
            bp.append(bp_update)
            gnt.append(gnt_update)
    return bp, gnt


def check_angles_defined(rule) -> None:
    """Refuses, in one line, a rule whose angles are not defined: the BP and GNT updates here come from
    per-sample Jacobians with s'(a) read from h, which a batch-normalised network has neither of (the batch
    statistics couple the samples)."""
    if rule.batch_dependent:
        raise ValueError(f"angles: rule {rule.name!r} batch-normalises its layers, so a sample's output depends on "
                         "the whole batch and the per-sample Jacobians that the BP and GNT updates are computed "
                         "from do not exist; drop the angle logging (--log_angles) for this rule")


def angles(model, updates, y, gn_damping=0.0) -> dict:
    """Angles (degrees) of the method's weight updates in `updates` (from step.compute_updates, forward=True)
    against the BP gradient of the same batch (every layer, output included) and against the GNT update with
    per-hidden-layer damping (hidden layers only). Returns {'bp_angle': (L,), 'gnt_angle': (L−1,)} tensors.
    """
    check_angles_defined(model.rule)
    layers, hs = model.tp_layers, updates.activations
    error = T.output_error(hs[-1], y, model.task, tf.shape(hs[0])[0])
    method = _method_kernel_updates(layers, updates)
    bp, gnt = bp_and_gnt_kernel_updates(layers, hs, error, per_layer_damping(gn_damping, len(layers) - 1))
    return {"bp_angle": tf.stack([update_angle(m, b) for m, b in zip(method, bp)]),
            "gnt_angle": tf.stack([update_angle(m, g) for m, g in zip(method, gnt)])}


def gnt_angles_for_dampings(model, updates, y, dampings: Sequence[float]):
    """GNT angles of every hidden layer for every λ in `dampings`: a (len(dampings), L−1) tensor (the search of
    docs/semantics.md §13.4, all λ from one Jacobian and one eigendecomposition per layer)."""
    check_angles_defined(model.rule)
    layers, hs = model.tp_layers, updates.activations
    error = T.output_error(hs[-1], y, model.task, tf.shape(hs[0])[0])
    method = _method_kernel_updates(layers, updates)
    gnt = gnt_kernel_updates(layers, hs, error, [list(dampings)] * (len(layers) - 1))
    return tf.stack([tf.stack([update_angle(method[k], gnt[k][j]) for k in range(len(layers) - 1)])
                     for j in range(len(dampings))])


def nullspace_ratios(layers, hs, kernel_updates):
    """Per sample and layer, ‖P_null vec(ΔW_ℓ)‖/‖vec(ΔW_ℓ)‖ with the nullspace of J_b = ∂h_L^(b)/∂vec(W_ℓ)
    (docs/semantics.md §13.6; the reference evaluates it with batch size 1, where ΔW_ℓ is that sample's update).

    J_b's rows are the outer products h_{ℓ−1}^(b) ⊗ m_o with m_o the rows of M = ∂h_L/∂a_ℓ (pre-activation), so
    its Gram matrix is ‖h_{ℓ−1}‖²·MMᵀ and ⟨row_o, vec ΔW⟩ = h_{ℓ−1}ᵀΔW m_o. Then ‖P_row x‖² = bᵀG⁺b and
    ‖P_null x‖² = ‖x‖² − ‖P_row x‖²: an (n_L × n_L) problem per sample instead of the SVD of an
    n_ℓn_{ℓ−1}-dimensional space.

    Returns a (B, L) tensor (column ℓ−1 for W_ℓ).
    """
    jacobians = T.output_jacobians(layers, hs)
    columns = []
    for k, update in enumerate(kernel_updates):  # W_{k+1}, from h_k to h_{k+1}
        m = jacobians[k] * layers[k].activation_derivative(hs[k + 1])[:, None, :]  # (B, n_L, n_{k+1})
        h_in = hs[k]
        gram = tf.reduce_sum(tf.square(h_in), -1)[:, None, None] * tf.matmul(m, m, transpose_b=True)
        inner = tf.einsum("bj,boj->bo", h_in @ update, m)  # hᵀ ΔW m_o
        row_sq = tf.reduce_sum(inner[:, :, None] * T._gram_solve(gram, inner[:, :, None], 0.0), axis=[1, 2])
        total_sq = tf.reduce_sum(tf.square(update))
        columns.append(tf.sqrt(tf.maximum(total_sq - row_sq, 0.0) / total_sq))
    return tf.stack(columns, axis=1)
