"""Output-space toy experiment (docs/semantics.md §13.7, the reference README's Fig. S2): where one GNT step and one BP
step move the output of a small regression network.

A 4-4-4-2 tanh student without biases (linear output) regresses the teacher of `tp_keras.run.data.make_student_teacher`
(4-1000-1000-1000-1000-2 ReLU, zero biases, Xavier-normal weights of gain 3) under the batch-mean MSE. On one
validation sample, the GNT update (Gauss-Newton targets with λ = 0 for every layer, then each layer's local-loss
gradient) and the BP gradient are each applied as one SGD step of a tiny learning rate to a copy of the weights,
and the resulting change of the output, Δy = y_after − y_before, is drawn as an arrow from y in the (y_1, y_2)
plane over the MSE contours.

What the figure shows: GNT moves the output along the negative gradient of the loss *in output space*, i.e.
towards the label for MSE, whereas BP follows the negative gradient in *parameter* space, whose image in output
space is −JJᵀ∇_yL (J the Jacobian of the output w.r.t. all weights), which in general points elsewhere. Precisely:
each layer's GN target step Δh_ℓ = J_ℓ⁺e_L is the minimum-norm change of h_ℓ that moves the output by exactly
e_L (J_ℓΔh_ℓ = e_L), and for a linear network the resulting weight steps move the output exactly along −e_L
(paper Theorem 5). With tanh layers the local-loss gradient realises Δh_ℓ only up to a positive per-unit
weighting s'², so the GNT arrow is close to, not exactly on, the direction label − y (measured for seed 93:
cosine 0.9966 for GNT, 0.9987 for BP; over seeds 1–7 GNT's cosine is the larger in five of seven). For this
tiny, nearly square network BP's arrow also points roughly at the label; the exact contrast is the linear case.

This module only computes; `tp_keras.paper.figures.output_space_figure` draws.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tp_keras.core.layers import TPDense, activation_fn
from tp_keras.core.targets import gauss_newton_steps, output_error, output_jacobians
from tp_keras.run.data import make_student_teacher

SIZE_INPUT, STUDENT_HIDDEN, SIZE_OUTPUT = 4, (4, 4), 2
LEARNING_RATE = 1e-5
GRID_POINTS = 100
GRID_MARGIN = 1.1


def xavier_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """U(±sqrt(6/(fan_in + fan_out))) of shape (fan_in, fan_out): PyTorch's `xavier_uniform_` (gain 1)."""
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=(fan_in, fan_out))


def make_student(seed: int, dtype: str = "float64", hidden_activation: str = "tanh") -> list[TPDense]:
    """The bias-free 4-4-4-2 student (tanh hidden layers unless `hidden_activation` says otherwise, linear
    output), Xavier-uniform weights from `np.random.default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    sizes = (SIZE_INPUT, *STUDENT_HIDDEN, SIZE_OUTPUT)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = TPDense(n_out, activation="linear" if i == len(sizes) - 2 else hidden_activation, use_bias=False,
                        seed=seed + i, dtype=dtype)
        layer.build((None, n_in))
        layer.kernel.assign(xavier_uniform(rng, n_in, n_out).astype(dtype))
        layers.append(layer)
    return layers


def _forward(kernels, layers, x):
    """[h_0..h_L] for the weight matrices `kernels` (the activations of `layers`)."""
    hs = [x]
    for w, layer in zip(kernels, layers):
        hs.append(activation_fn(layer.activation)(tf.matmul(hs[-1], w)))
    return hs


def gnt_gradients(layers, x, label):
    """The GNT update of every layer (λ = 0): targets ĥ_ℓ = h_ℓ − J_ℓ⁺e_L, then the local-loss gradient
    (2/B)·h_{ℓ−1}ᵀ(s'_ℓ ⊙ Δh_ℓ) of (1/B)‖h_ℓ − ĥ_ℓ‖² with the target held fixed."""
    hs = _forward([layer.kernel for layer in layers], layers, x)
    batch = int(x.shape[0])
    error = output_error(hs[-1], label, "regression", batch)
    steps = gauss_newton_steps(output_jacobians(layers, hs), error, damping=0.0)
    return [(2.0 / batch) * tf.matmul(h_prev, layer.activation_derivative(h) * dh, transpose_a=True)
            for layer, h_prev, h, dh in zip(layers, hs[:-1], hs[1:], steps)]


def bp_gradients(layers, x, label):
    """∂L/∂W_ℓ of the batch-mean MSE (mean over outputs) by autograd."""
    kernels = [layer.kernel for layer in layers]
    with tf.GradientTape() as tape:
        outputs = _forward(kernels, layers, x)[-1]
        loss = tf.reduce_mean(tf.square(outputs - label))
    return tape.gradient(loss, kernels)


def output_change(layers, x, gradients, lr: float = LEARNING_RATE) -> np.ndarray:
    """Δy = y(W − lr·∇W) − y(W) for one sample, on copies of the weights (the layers are not modified)."""
    kernels = [tf.convert_to_tensor(layer.kernel) for layer in layers]
    before = _forward(kernels, layers, x)[-1]
    after = _forward([w - lr * g for w, g in zip(kernels, gradients)], layers, x)[-1]
    return (after - before).numpy()[0]


def _rescaled(delta: np.ndarray, length: float) -> np.ndarray:
    norm = float(np.linalg.norm(delta))
    if norm == 0.0:
        raise ValueError("the update does not move the output (zero Δy); cannot draw its direction")
    return delta * (length / norm)


def compute(seed: int = 93, dtype: str = "float64") -> dict:
    """Everything the output-space figure needs, as NumPy values.

    Returns a dict with
      y:         (2,) the student's output on the first validation sample,
      label:     (2,) that sample's teacher output,
      gnt_arrow: (2,) Δy of one GNT step, rescaled to length ‖y − label‖/2,
      bp_arrow:  (2,) Δy of one BP step, rescaled likewise,
      gnt_delta, bp_delta: (2,) the raw Δy of the lr-1e-5 steps,
      grid_y1, grid_y2: (100, 100) meshgrid spanning label ± 1.1‖y − label‖ in each coordinate,
      loss_grid: (100, 100) MSE (mean over the 2 outputs) of each grid point against the label,
      seed, lr: the settings used.
    """
    data = make_student_teacher(seed, size_input=SIZE_INPUT, size_output=SIZE_OUTPUT, dtype=dtype)
    x = tf.constant(data.val.x[:1], dtype=dtype)
    label = tf.constant(data.val.y[:1], dtype=dtype)
    layers = make_student(seed, dtype)

    y = _forward([layer.kernel for layer in layers], layers, x)[-1].numpy()[0]
    label_np = label.numpy()[0]
    distance = float(np.linalg.norm(y - label_np))
    gnt_delta = output_change(layers, x, gnt_gradients(layers, x, label))
    bp_delta = output_change(layers, x, bp_gradients(layers, x, label))

    span = GRID_MARGIN * distance
    axis1 = np.linspace(label_np[0] - span, label_np[0] + span, GRID_POINTS)
    axis2 = np.linspace(label_np[1] - span, label_np[1] + span, GRID_POINTS)
    grid_y1, grid_y2 = np.meshgrid(axis1, axis2)
    loss_grid = ((grid_y1 - label_np[0]) ** 2 + (grid_y2 - label_np[1]) ** 2) / 2.0
    return {
        "y": y,
        "label": label_np,
        "gnt_arrow": _rescaled(gnt_delta, distance / 2.0),
        "bp_arrow": _rescaled(bp_delta, distance / 2.0),
        "gnt_delta": gnt_delta,
        "bp_delta": bp_delta,
        "grid_y1": grid_y1,
        "grid_y2": grid_y2,
        "loss_grid": loss_grid,
        "seed": int(seed),
        "lr": LEARNING_RATE,
    }
