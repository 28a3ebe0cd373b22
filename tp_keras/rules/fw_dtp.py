"""FW-DTP: difference target propagation with fixed random feedback weights (Shibuya et al., "Fixed-Weight
Difference Target Propagation", AAAI 2023).

The feedback of layer k is g_k(u) = tanh(u B_k), B_k a fixed random matrix without bias, never trained; the
targets are DTP's difference targets ĥ_k = g_k(ĥ_{k+1}) + h_k − g_k(h_{k+1}). No feedback loss, no feedback
optimizer, no noise: each batch costs one target pass and the forward update. B_k ~ U(−10⁻³, 10⁻³), the
authors' code default (`feedback_init='xavier'` gives DTP's Xavier-normal feedback init instead).
"""
from __future__ import annotations

import dataclasses

from tp_keras.rules.paper import DTP

FW_DTP = dataclasses.replace(
    DTP, name="fw_dtp", summary="DTP with fixed random feedback weights (Shibuya et al. 2023): no feedback training",
    feedback_loss="none", feedback_trained=False, feedback_bias=False, feedback_init="uniform_1e-3")
