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
    name, paths, per_layer_sigma = "ldrl", ("layerwise",), True

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
            y, g = outputs[k - 1], clean_layers[k].feedback
            r = g(y)
            noisy_output, noisy = K.forward_and_bound(layers[k], inputs[k - 1] + dx[k - 1])
            dr = noisy.feedback(tf.stop_gradient(noisy_output)) - r
            dr_y = g(y + dy[k - 1]) - r
            losses.append((-2.0 * tf.reduce_sum(dx[k - 1] * dr) + tf.reduce_sum(tf.square(dr_y))) / b)
        return losses, None


LOSS = K.register_feedback_loss(LocalDifferenceReconstruction())

LDRL = LearningRule(
    name="ldrl", summary="DTP with layer-wise feedback trained by the local difference reconstruction loss "
                         "(Ernoult et al. 2022), several feedback steps per layer before the targets",
    feedback="layerwise", target_rule="difference", feedback_loss="ldrl", feedback_trained=True,
    feedback_activation="linear", feedback_form="inverse_block", feedback_bias=False, forward_loss_scale=0.5,
    feedback_first=True, feedback_iterations=3, per_layer_feedback_optimizers=True)
