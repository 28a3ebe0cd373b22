"""The ten learning rules of Meulemans et al. (NeurIPS 2020), as `LearningRule` values."""
from __future__ import annotations

import dataclasses

from tp_keras.core.rules.base import LearningRule

BP = LearningRule(name="bp", summary="Backpropagation baseline", feedback="none", target_rule="backprop",
                  feedback_loss="none", feedback_trained=False)
TP = LearningRule(
    name="tp", summary="Vanilla target propagation (no difference correction), layer-wise reconstruction loss",
    feedback="layerwise", target_rule="plain", feedback_loss="reconstruction", feedback_trained=True,
    feedback_activation="tanh")
DTP = LearningRule(
    name="dtp", summary="Difference target propagation, layer-wise tanh feedback, reconstruction loss",
    feedback="layerwise", target_rule="difference", feedback_loss="reconstruction", feedback_trained=True,
    feedback_activation="tanh")
# Same rule as DTP; its own name carries its own paper config (feedback pre-training + extra epochs).
DTP_PRETRAINED = dataclasses.replace(DTP, name="dtp_pretrained",
                                     summary="DTP with feedback pre-training and extra feedback-only epochs")
DTPDRL = LearningRule(
    name="dtpdrl", summary="DTP whose layer-wise feedback is trained with the difference reconstruction loss",
    feedback="layerwise", target_rule="difference", feedback_loss="drl", feedback_trained=True,
    feedback_activation="tanh")
# Reference quirk: DDTP-linear (and DFA) build the last hidden layer without forward and feedback bias.
DDTP_LINEAR = LearningRule(
    name="ddtp_linear",
    summary="Direct DTP: linear direct feedback from the output, trained with the difference reconstruction loss",
    feedback="direct", target_rule="difference", feedback_loss="drl", feedback_trained=True,
    feedback_activation="linear", last_hidden_bias=False)
DDTP_RHL = LearningRule(
    name="ddtp_rhl",
    summary="Direct DTP through a fixed random hidden feedback layer, difference reconstruction loss",
    feedback="direct_rhl", target_rule="difference", feedback_loss="drl", feedback_trained=True,
    feedback_activation="tanh")
DDTP_CONTROL = LearningRule(
    name="ddtp_control",
    summary="Control: direct linear feedback trained by reconstruction through the output, no difference "
            "correction in its loss",
    feedback="direct", target_rule="difference", feedback_loss="control", feedback_trained=True,
    feedback_activation="linear")
DFA = dataclasses.replace(
    DDTP_LINEAR, name="dfa", feedback_trained=False,
    summary="Direct feedback alignment: DDTP-linear with frozen random feedback (target stepsize 1)")
GNT = LearningRule(
    name="gnt", summary="Ideal Gauss-Newton targets (per-sample damped pseudo-inverse of the output Jacobian)",
    feedback="none", target_rule="gnt", feedback_loss="none", feedback_trained=False)

PAPER_RULES = (BP, TP, DTP, DTP_PRETRAINED, DTPDRL, DDTP_LINEAR, DDTP_RHL, DDTP_CONTROL, DFA, GNT)
