"""The components a `LearningRule` is built from, each registered by name (a rule saves as names).

* feedback paths (`PATHS`): how targets travel through one kind of feedback maps, and the difference
  correction's clean terms on that path;
* target rules (`TARGET_RULES`): backprop (no targets), difference, plain, Gauss-Newton;
* feedback losses (`FEEDBACK_LOSSES`): `FeedbackLoss.losses(...)` gives one loss per hidden layer (and, where
  a loss computes them on the way, the targets too);
* noise (`NOISE`): N(0, 1) generators `noise(shape, seed)`;
* the in-batch schedule (`InBatchSchedule`): when a batch trains the feedback, how many steps each hidden layer
  takes, and whether each hidden layer has its own feedback optimizer.

A new feedback loss is a subclass of `FeedbackLoss` plus `register_feedback_loss(...)` (see rules/ldrl.py).
"""
from __future__ import annotations

import dataclasses
import math

from tp_keras.core.lazy_tf import tf

from tp_keras.core import losses as L
from tp_keras.core import targets as T


# --- noise ---------------------------------------------------------------------------------------------------
def standard_normal(shape, seed):
    """N(0, 1) samples in float32 by the Box–Muller transform of stateless Philox uniforms.

    Exact Gaussian up to float32 resolution (|ε| ≤ 5.8, the largest radius a float32 uniform gives: a tail of
    probability 7e-9 is cut). Measured on a 2-core CPU, 1 thread, 128×1280 samples: 1.25 ms against 2.07 ms for
    `tf.random.stateless_normal`, which is ~10 % of a DDTP-linear step (docs/performance.md, "Figures behind design
    decisions").
    """
    rows, cols = shape
    half = (cols + 1) // 2
    u = tf.random.stateless_uniform([2, rows, half], seed=seed, dtype=tf.float32, alg="philox")
    radius = tf.sqrt(-2.0 * tf.math.log1p(-u[0]))  # 1 − u ∈ (0, 1]: the log is finite
    angle = tf.constant(2.0 * math.pi, tf.float32) * u[1]
    return tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=1)[:, :cols]


NOISE = {"philox": standard_normal}


class NoiseDraw:
    """One batch's noise: `draw(sizes)` gives one N(0, 1) block per size, in the activations' dtype, drawn in
    ONE call of the rule's generator (float32, then cast: float32 and float64 runs see the same noise).

    With noise_rows=(offset, total) this batch is rows offset.. of a `total`-row global batch (a replica's shard):
    the global batch's noise is drawn and this shard's rows kept, so replicas see the one-device noise."""

    def __init__(self, noise_fn, seed_generator, rows, dtype, noise_rows=None):
        self.noise_fn, self.seed_generator = noise_fn, seed_generator
        self.rows, self.dtype, self.noise_rows = rows, dtype, noise_rows

    def draw(self, sizes):
        offset, total = (0, self.rows) if self.noise_rows is None else self.noise_rows
        eps = self.noise_fn([total, sum(sizes)], self.seed_generator.next())
        if self.noise_rows is not None:
            eps = eps[offset:offset + self.rows]
        return tf.split(tf.cast(eps, self.dtype), sizes, axis=1)

    def scaled(self, tensors, sigmas):
        """σ_ℓ·ε_ℓ shaped like each tensor (2-D), from one draw."""
        eps = self.draw([int(t.shape[-1]) for t in tensors])
        return [e * tf.constant(s, e.dtype) for e, s in zip(eps, sigmas)]


# --- feedback paths --------------------------------------------------------------------------------------------
_UNSET = object()


class FeedbackAt:
    """A layer whose feedback reads the forward pass it inverts (a max-pooling conv block: the pooling's argmax),
    bound to that pass's input: `feedback(u, constant)` as a dense layer's, the forward call unchanged. The
    argmax (`switches`, if not given) is computed once, on first use or at `prepare()`, and serves every row block
    of a stack read at that pass. The feedback reads u as a constant (`TPConvBlock.feedback(detach_input=True)`):
    every caller's input is one (each loss trains its own map; targets are constants), and so no gradient of the
    input is computed."""

    def __init__(self, layer, forward_input, switches=_UNSET):
        self.layer, self.forward_input, self._switches = layer, forward_input, switches

    def __call__(self, x):
        return self.layer(x)

    def __getattr__(self, name):  # the layer's other attributes, as the unbound layer's
        return getattr(self.layer, name)

    def prepare(self):
        """The argmax computed now (in the graph where the binding is made, e.g. before a loop that reads it)."""
        if self._switches is _UNSET:
            self._switches = self.layer.switches(self.forward_input)
        return self

    def bound_switches(self):
        """The bound pass's argmax (None without max pooling)."""
        return self.prepare()._switches

    def feedback(self, u, constant=False):
        self.prepare()
        return self.layer.feedback(u, constant=constant, switches=self._switches, detach_input=True)


def _reads_input(layer) -> bool:
    return getattr(layer, "feedback_reads_input", False)


def bind_forward_inputs(layers, inputs):
    """`layers` with the feedback of layers[k] bound to `inputs[k]`, the input of the forward pass it inverts,
    where the feedback reads it (conv blocks, `feedback_reads_input`); the list itself when none does (the MLP's
    layers go to the target and loss functions untouched).

    Which pass: the clean one (inputs = hs) for the targets, the difference correction and DRL (the map as the
    targets use it); the noisy one for DTP's reconstruction g(f(h̃)) and L-DRL's g(f(h + δx)), as in the
    authors' code, where unpooling takes the indices of the most recent forward call."""
    if not any(_reads_input(layer) for layer in layers):
        return layers
    return [FeedbackAt(layer, x) if _reads_input(layer) else layer for layer, x in zip(layers, inputs)]


def bind_clean_pass(layers, hs):
    """`layers` bound to the clean pass h_0..h_L (`bind_forward_inputs(layers, hs[:-1])`) with every argmax
    computed now: one binding for all that read that pass in a batch (the feedback rounds of a feedback-first
    batch, its targets), each argmax a conv computed once instead of once per reader."""
    bound = bind_forward_inputs(layers, hs[:-1])
    return [layer.prepare() if isinstance(layer, FeedbackAt) else layer for layer in bound]


def forward_and_bound(layer, x):
    """(layer(x), the layer bound to this pass), both from one forward conv where the feedback reads the pass
    (`TPConvBlock.call_with_switches`): what the noisy terms g(f(x)) of a loss need."""
    if not _reads_input(layer):
        return layer(x), layer
    h, switches = layer.call_with_switches(x)
    return h, FeedbackAt(layer, x, switches)
class LayerwisePath:
    """g_k carried by forward layer k+1 (the DTP family): targets descend layer by layer."""
    name = "layerwise"
    layerwise = True  # each hidden layer's target comes from the layer above it (not from the output)

    def clean(self, net, hs, clean_layers=None):
        layers = bind_forward_inputs(net.tp_layers, hs) if clean_layers is None else clean_layers
        return T.layerwise_clean_terms(layers, hs)

    def targets(self, net, hs, top_target, clean, clean_layers=None):
        layers = bind_forward_inputs(net.tp_layers, hs) if clean_layers is None else clean_layers
        return T.propagate_layerwise(layers, hs, top_target, clean)


class DirectPath:
    """g_ℓ from the output to every hidden layer (the DDTP family, DFA): all targets in parallel."""
    name = "direct"
    layerwise = False

    def clean(self, net, hs, clean_layers=None):
        return net.direct_feedback(hs[-1], hidden=hs[1:-1])

    def targets(self, net, hs, top_target, clean, clean_layers=None):
        return T.direct_targets(net.direct_feedback, hs, top_target, clean)


PATHS = {"none": None, "layerwise": LayerwisePath(), "direct": DirectPath(), "direct_rhl": DirectPath()}


# --- target rules ----------------------------------------------------------------------------------------------
class TargetRule:
    """backprop: no targets at all; uses_feedback: hidden targets come through the feedback path (else from the
    output Jacobians, `all_targets`); difference: the path's clean terms enter the targets (paper eq. 8)."""
    def __init__(self, name, *, backprop=False, uses_feedback=True, difference=False):
        self.name, self.backprop, self.uses_feedback, self.difference = name, backprop, uses_feedback, difference

    def all_targets(self, net, hs, error, rule):
        raise NotImplementedError(self.name)


class GaussNewtonTargets(TargetRule):
    def all_targets(self, net, hs, error, rule):
        return T.gnt_targets(net.tp_layers, hs, error, rule.gn_damping)


TARGET_RULES = {t.name: t for t in (
    TargetRule("backprop", backprop=True, uses_feedback=False),
    TargetRule("difference", difference=True),
    TargetRule("plain"),
    GaussNewtonTargets("gnt", uses_feedback=False),
)}


# --- feedback losses -------------------------------------------------------------------------------------------
class FeedbackLoss:
    """One loss per hidden layer for the feedback maps.

    paths: the feedback kinds it trains; needs_difference_on: paths where it uses the difference correction
    (the rule must then have the difference target rule); needs_clean: it needs the path's clean terms."""
    name = "none"
    paths: tuple = ()
    needs_difference_on: tuple = ()
    needs_clean = False
    per_layer_sigma = False

    def losses(self, net, rule, hs, noise, clean, batch_size, top_target=None, clean_layers=None):
        """(losses [L_1..L_{L−1}], targets [ĥ_1..ĥ_{L−1}] when it computed them on the way from `top_target`,
        else None). clean_layers: the network's layers bound to the clean pass hs (`bind_clean_pass`) where the
        caller shares one binding among several readers; None: bound here where needed."""
        raise NotImplementedError(self.name)


def noisy_hidden_copies(rule, hs, noise):
    """h̃_ℓ = h_ℓ + σ_ℓε_ℓ for ℓ = 1..L−1, fresh noise for each layer, drawn in one call."""
    hidden = hs[1:-1]
    return [h + e for h, e in zip(hidden, noise.scaled(hidden, rule.sigmas(len(hidden))))]


class Reconstruction(FeedbackLoss):
    """DTP's layer-wise loss, scale 1/max(σ, 0.02)² (the reference's clamp)."""
    name, paths = "reconstruction", ("layerwise",)

    def losses(self, net, rule, hs, noise, clean, batch_size, top_target=None, clean_layers=None):
        scale = 1.0 / max(rule.sigma, L.DTP_SIGMA_FLOOR) ** 2
        noisy = noisy_hidden_copies(rule, hs, noise)
        layers = bind_forward_inputs(net.tp_layers, hs[:1] + noisy)  # g_k inverts f_{k+1}(h̃_k)
        return L.layerwise_reconstruction_losses(layers, noisy, scale, batch_size), None


class DifferenceReconstruction(FeedbackLoss):
    """DRL (scale 1/σ²); on the layer-wise path the targets ride along in its stack (same matmuls)."""
    name, paths, needs_difference_on, needs_clean = "drl", ("layerwise", "direct"), ("layerwise",), True

    def losses(self, net, rule, hs, noise, clean, batch_size, top_target=None, clean_layers=None):
        noisy = noisy_hidden_copies(rule, hs, noise)
        scale = 1.0 / rule.sigma ** 2
        if rule.path.layerwise:
            layers = bind_forward_inputs(net.tp_layers, hs) if clean_layers is None else clean_layers
            return L.layerwise_drl(layers, hs, noisy, clean, scale, batch_size, top_target)
        return L.direct_drl(net.direct_feedback, hs, noisy, net.tp_layers, clean, scale, batch_size), None


class Control(FeedbackLoss):
    """DDTP-control: reconstruction through the output loop, no difference correction, no scale."""
    name, paths = "control", ("direct",)

    def losses(self, net, rule, hs, noise, clean, batch_size, top_target=None, clean_layers=None):
        return L.direct_control(net.direct_feedback, hs, noisy_hidden_copies(rule, hs, noise), net.tp_layers,
                                batch_size), None


FEEDBACK_LOSSES: dict = {"none": FeedbackLoss()}


def register_feedback_loss(loss: FeedbackLoss) -> FeedbackLoss:
    FEEDBACK_LOSSES[loss.name] = loss
    return loss


for _loss in (Reconstruction(), DifferenceReconstruction(), Control()):
    register_feedback_loss(_loss)


# --- the in-batch schedule -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class InBatchSchedule:
    """How one batch trains the feedback: what the step and the drivers ask of a rule (`LearningRule.schedule`,
    made from the rule's fields `feedback_first`, `feedback_iterations`, `per_layer_feedback_optimizers`, which
    stay the rule's saved form).

    feedback_first: False, the reference's order (targets with the old feedback weights, then one feedback step
    and the forward step, all gradients from the same weights); True, the feedback steps come first and the
    targets see the new feedback weights. iterations: feedback steps per batch when feedback_first (one value, or
    one per hidden layer). per_layer_optimizers: one feedback optimizer per hidden layer, each with its own step
    counter (with unequal iterations one shared counter would bias-correct the layers wrongly), or one for all."""
    feedback_first: bool = False
    iterations: int | tuple = 1
    per_layer_optimizers: bool = False

    def steps(self, count: int) -> list[int]:
        """Feedback steps per batch of hidden layers 1..count (their number is the rule's to check,
        `LearningRule.check_layers`; a mismatch here is a bug of the caller)."""
        if not isinstance(self.iterations, tuple):
            return [self.iterations] * count
        if len(self.iterations) != count:
            raise ValueError(f"feedback_iterations has {len(self.iterations)} values for {count} hidden layers")
        return list(self.iterations)

    def rounds(self, count: int) -> list:
        """The feedback steps of one batch, feedback first: round i steps the hidden layers (0-based) that have
        more than i steps, all layers together while every one has steps left (None: all of them)."""
        counts = self.steps(count)
        rounds = []
        for i in range(max(counts)):
            active = [k for k, steps in enumerate(counts) if steps > i]
            rounds.append(None if len(active) == len(counts) else active)
        return rounds

    def groups(self, count: int) -> list:
        """`rounds` as runs of consecutive rounds with the same active set: [(active, number of rounds), ...]
        (K = (20, 30, 35, 55, 20): 20 rounds of all layers, then 10 of layers 1, 2, 3, 5 of 2, 3 and 20 of 3)."""
        runs = []
        for active in self.rounds(count):
            if runs and runs[-1][0] == active:
                runs[-1][1] += 1
            else:
                runs.append([active, 1])
        return [tuple(run) for run in runs]
