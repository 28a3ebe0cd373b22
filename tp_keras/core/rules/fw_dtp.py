"""FW-DTP: difference target propagation with fixed random feedback weights (Shibuya et al., "Fixed-Weight
Difference Target Propagation", AAAI 2023).

The feedback of layer k is g_k(u) = tanh(u B_k), B_k a fixed random matrix without bias, never trained; the
targets are DTP's difference targets ĥ_k = g_k(ĥ_{k+1}) + h_k − g_k(h_{k+1}). No feedback loss, no feedback
optimizer, no noise: each batch costs one target pass and the forward update.

As the authors' code (TatsukichiShibuya/Fixed-Weight-Difference-Target-Propagation, models/my_functions.py), the
forward layers have no bias either, h = s(xW) (`forward_bias=False`); the local loss is the paper's (1/B)Σ‖h − ĥ‖²
(their summed MSE stepped with lr/B). `dataclasses.replace(FW_DTP, forward_bias=True)` gives every forward layer a
bias b (this rule's form in tp_keras 0.1.0).

FW_DTP_BN ('fw_dtp_bn') is their default and headline variant, FWDTP-BN: the same rule with every hidden layer's
output, every feedback map and every difference target batch-normalised by the batch's own statistics, in training
and in evaluation alike (`layers.batch_normalize`; docs/semantics.md §7.13): h_ℓ = BN(tanh(h_{ℓ−1}W_ℓ)),
g_k(u) = BN(tanh(u B_k)), ĥ_k = BN(g_k(ĥ_{k+1}) + h_k − g_k(h_{k+1})); the logits stay linear (their
`--forward_last_activation` default; `dataclasses.replace(FW_DTP_BN, output_batch_norm=True)`, the launcher's
`--output_batch_norm`, is their README's MNIST command's `linear-BN`). DTP_BN (rules/dtp_bn.py) is this rule with its
feedback trained. Its fixed feedback takes the authors' init, B_k ~ U(±10⁻³): the normalisation after
tanh(u B_k) removes the 10⁻³ scale that drowns FWDTP's differences in float32 (on a 20-32×5-10 net, float32 forward
gradients within 3e-5 of float64 with either init; FWDTP's layer 1 with U(±10⁻³): 9e5).

Initialisation: B_k is drawn as DTP's feedback kernel (Xavier normal, same seed). The authors' code defaults to
B_k ~ U(−10⁻³, 10⁻³) (`dataclasses.replace(FW_DTP, feedback_init="uniform_1e-3")`); with it the difference
g(ĥ) − g(h) shrinks by ~10⁻³ per layer and drowns in float32 rounding below the top layers (on the 7-6-5-4-3
test net, layer 1's float32 gradient has relative error 66 against float64), hence the deviation.
"""
from __future__ import annotations

import dataclasses

from tp_keras.core.rules.paper import DTP

FW_DTP = dataclasses.replace(
    DTP, name="fw_dtp", summary="DTP with fixed random feedback weights (Shibuya et al. 2023): no feedback training",
    feedback_loss="none", feedback_trained=False, feedback_bias=False, forward_bias=False)
FW_DTP_BN = dataclasses.replace(
    FW_DTP, name="fw_dtp_bn", batch_norm=True, feedback_init="uniform_1e-3",
    summary="FW-DTP with batch normalisation (Shibuya et al. 2023's FWDTP-BN): hidden layers, fixed feedback maps "
            "and targets normalised by the batch's statistics")
