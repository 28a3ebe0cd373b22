"""L-DRL: DTP's layer-wise feedback trained with the local difference reconstruction loss (Ernoult et al.,
"Towards Scaling Difference Target Propagation by Learning Backprop Targets", ICML 2022).

For hidden layer k with forward map F = f_{k+1} (h_k → h_{k+1}) and feedback G = g_k, r = G(F(h_k)):

    L_k = −2·Σ δx·(G(F(h_k + δx)) − r)/B + Σ‖G(F(h_k) + δy) − r‖²/B,   δx, δy ~ N(0, σ_k²),

summed over units, averaged over the batch. On a linear layer F(h) = hW, G(u) = uQ its expectation is
σ²(‖Q‖² − 2·tr(WQ)), minimised by Q = Wᵀ: G's Jacobian becomes F's transposed Jacobian and DTP's targets
approach backprop's. As in the authors' code: no loss scale, one noise scale σ_k and K_k feedback steps per
layer per batch, each layer with its own feedback optimizer, and the feedback trained before the targets are
computed; targets are DTP's (difference rule).

Also as the authors' code (ernoult/scalingDTP: `invert` reverses each forward block, models/dtp.py), by default:
* the feedback map inverts its forward layer, G(u) = s(u)Q + d (`feedback_form='inverse_block'`): the forward
  activation s of the layer whose output u is, then the linear map; the output layer has no activation, so the
  map from the logits is purely linear, uQ + d;
* the forward loss of every layer is ½·(1/B)Σ‖h − ĥ‖² (`forward_loss_scale=0.5`): half the paper methods' local
  loss, so half their gradients (invisible under Adam but for its ε, half the step under SGD).
The authors' inverse Linear also has a bias d, but d cancels from every difference L-DRL takes (G(F(h + δx)) − r,
G(y + δy) − r and the targets' G(ĥ) − G(h)): it never matters and its gradient is zero, which autodiff returns
as rounding noise that Adam would turn into steps of size lr. The rule leaves it out (`feedback_bias=False`);
`feedback_bias=True` gives the same losses, gradients and targets up to rounding.
`dataclasses.replace(LDRL, feedback_form="dtp", feedback_activation="tanh", feedback_bias=True,
forward_loss_scale=1.0)` is L-DRL's loss on DTP's maps g(u) = tanh(uQ + d) with the paper's local loss: this rule's
form in tp_keras 0.1.0 (CHANGELOG.md says how a model saved then loads). docs/semantics.md §7.12.
"""
from __future__ import annotations

from tp_keras.core.lazy_tf import tf

from tp_keras.core.rules import components as K
from tp_keras.core.rules.base import LearningRule


class LocalDifferenceReconstruction(K.FeedbackLoss):
    """linear_differences=True: on a conv block's inverse block g(u) = T_Q(P(u)) + d (P(u) = s(unpool(u)), T_Q the
    transposed conv), the differences are taken before the linear map, g(a) − g(b) = T_Q(P(a) − P(b)), and the δx
    term Σ δx·T_Q(P(a) − P(b)) is read off one kernel gradient (`TPConvBlock.linear_feedback_pairing`): per conv
    block and round one conv (F(h + δx)), one transposed conv and two kernel gradients instead of one, three and
    three; the same loss and gradients up to rounding (d cancels exactly: its gradient is 0). False (the loss
    'ldrl_as_written'): every g applied, then subtracted, in the authors' order. Dense layers take the written
    form either way (their maps cost little)."""
    paths, per_layer_sigma = ("layerwise",), True

    def __init__(self, name: str = "ldrl", linear_differences: bool = True):
        self.name, self.linear_differences = name, linear_differences

    def losses(self, net, rule, hs, noise, clean, batch_size, top_target=None, clean_layers=None):
        layers = net.tp_layers
        inputs, outputs = hs[1:-1], hs[2:]  # h_k and h_{k+1} = F(h_k) for k = 1..L−1
        sigmas = rule.sigmas(len(inputs))
        deltas = noise.scaled(inputs + outputs, sigmas + sigmas)
        dx, dy = deltas[:len(inputs)], deltas[len(inputs):]
        b = tf.cast(batch_size, hs[0].dtype)
        # r and the δy term invert the clean pass, the δx term the pass on h + δx (conv blocks: their argmax, from
        # the very conv that computes F(h + δx))
        if clean_layers is None:
            clean_layers = K.bind_forward_inputs(layers, hs[:-1])
        losses = []
        for k in range(1, len(layers)):
            if self.linear_differences and _inverts_linearly(layers[k]):
                losses.append(_inverse_block_loss(layers[k], clean_layers[k], inputs[k - 1], outputs[k - 1],
                                                  dx[k - 1], dy[k - 1], b))
                continue
            y, g = outputs[k - 1], clean_layers[k].feedback
            r = g(y)
            noisy_output, noisy = K.forward_and_bound(layers[k], inputs[k - 1] + dx[k - 1])
            dr = noisy.feedback(tf.stop_gradient(noisy_output)) - r
            dr_y = g(y + dy[k - 1]) - r
            losses.append((-2.0 * tf.reduce_sum(dx[k - 1] * dr) + tf.reduce_sum(tf.square(dr_y))) / b)
        return losses, None


def _inverts_linearly(layer) -> bool:
    """A conv block whose map is the inverse block T_Q(s(unpool(u))) + d (TPConvBlock.linear_feedback_*)."""
    return getattr(layer, "feedback_form", None) == "inverse_block" and hasattr(layer, "linear_feedback_pairing")


def _inverse_block_loss(layer, clean, x, y, dx, dy, b):
    """L_k on a conv block's inverse block from its linear part: with P the map's activated unpooled input,
    G(F(x + δx)) − r = T_Q(P(F(x + δx)) − P(y)) and G(y + δy) − r = T_Q(P(y + δy) − P(y))."""
    switches = clean.bound_switches() if isinstance(clean, K.FeedbackAt) else None
    p = layer.linear_feedback_input(y, switches)
    noisy_output, noisy_switches = layer.call_with_switches(x + dx)
    moved_x = layer.linear_feedback_input(noisy_output, noisy_switches) - p
    dr_y = layer.linear_feedback(layer.linear_feedback_input(y + dy, switches) - p)
    loss = (-2.0 * layer.linear_feedback_pairing(dx, moved_x) + tf.reduce_sum(tf.square(dr_y))) / b
    if layer.feedback_bias_var is not None:  # d cancelled: its gradient 0, not None, for the optimizer
        loss += 0.0 * tf.reduce_sum(layer.feedback_bias_var)
    return loss


LOSS = K.register_feedback_loss(LocalDifferenceReconstruction())
# The same loss in the authors' order of operations (every map applied, then the differences): the reference the
# tests compare with and the benchmark's baseline; `dataclasses.replace(LDRL, feedback_loss="ldrl_as_written")`.
AS_WRITTEN = K.register_feedback_loss(LocalDifferenceReconstruction("ldrl_as_written", linear_differences=False))

LDRL = LearningRule(
    name="ldrl", summary="DTP with layer-wise feedback trained by the local difference reconstruction loss "
                         "(Ernoult et al. 2022), several feedback steps per layer before the targets",
    feedback="layerwise", target_rule="difference", feedback_loss="ldrl", feedback_trained=True,
    feedback_activation="linear", feedback_form="inverse_block", feedback_bias=False, forward_loss_scale=0.5,
    feedback_first=True, feedback_iterations=3, per_layer_feedback_optimizers=True)
