"""Every training method as a configuration of shared pieces, in one registry.

A method is not a class of its own. It is a choice of four pieces that the one train step (`step.py`) knows:

* ``feedback``: how the feedback path is parameterised.
    - ``none``: no feedback weights (BP, GNT).
    - ``layerwise``: each forward layer ℓ+1 carries g_ℓ(u) = t(Q_ℓ u + d_ℓ) back to layer ℓ (DTP family).
    - ``direct``: maps from the output straight to every hidden layer, g_ℓ(u) = t(Q_ℓ u + d_ℓ) (DDTP family).
    - ``direct_rhl``: direct maps through a fixed random hidden layer z(u) = tanh(R u + r) (DDTP-RHL).
* ``target_rule``: ``backprop`` (no targets: plain gradient of the loss), ``difference`` (targets with the
  difference correction ĥ_ℓ = g(ĥ) + h_ℓ − g(h), paper eq. 8), ``plain`` (ĥ_ℓ = g(ĥ), vanilla TP, eq. 3) or
  ``gnt`` (ideal Gauss-Newton targets ĥ_ℓ = h_ℓ − J_ℓ⁺e_L, per sample, spec §2.9).
* ``feedback_loss``: ``none``, ``reconstruction`` (DTP's layer-wise loss, 1/σ² clamped at σ = 0.02), ``drl``
  (difference reconstruction loss, 1/σ²) or ``control`` (reconstruction through the output loop, no difference
  correction, no scale).
* ``feedback_trained``: whether the feedback optimizer steps. DFA is DDTP-linear with this off.

Plus the reference's architectural quirks that belong to a method (spec §2.5: DDTP-linear and DFA have no
forward bias on the last hidden layer).
"""
from __future__ import annotations

import dataclasses

FEEDBACK_KINDS = ("none", "layerwise", "direct", "direct_rhl")
TARGET_RULES = ("backprop", "difference", "plain", "gnt")
FEEDBACK_LOSSES = ("none", "reconstruction", "drl", "control")


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    summary: str
    feedback: str
    target_rule: str
    feedback_loss: str
    feedback_trained: bool
    feedback_activation: str | None = None  # t in g(u) = t(Qu + d)
    # Reference quirk (spec §2.5): DMLPDTP2 builds the last hidden layer without forward and feedback bias.
    last_hidden_bias: bool = True

    def __post_init__(self):
        assert self.feedback in FEEDBACK_KINDS, self.feedback
        assert self.target_rule in TARGET_RULES, self.target_rule
        assert self.feedback_loss in FEEDBACK_LOSSES, self.feedback_loss
        if self.feedback == "none":
            assert self.target_rule in ("backprop", "gnt") and self.feedback_loss == "none"

    @property
    def uses_targets(self) -> bool:
        return self.target_rule != "backprop"

    @property
    def has_feedback(self) -> bool:
        return self.feedback != "none"

    @property
    def direct(self) -> bool:
        """Feedback straight from the output to every hidden layer (the DDTP family and DFA)."""
        return self.feedback in ("direct", "direct_rhl")

    @property
    def trains_feedback(self) -> bool:
        return self.has_feedback and self.feedback_trained and self.feedback_loss != "none"


_DTP = Method(
    name="dtp", summary="Difference target propagation, layer-wise tanh feedback, reconstruction loss",
    feedback="layerwise", target_rule="difference", feedback_loss="reconstruction", feedback_trained=True,
    feedback_activation="tanh")
_DDTP_LINEAR = Method(
    name="ddtp_linear",
    summary="Direct DTP: linear direct feedback from the output, trained with the difference reconstruction loss",
    feedback="direct", target_rule="difference", feedback_loss="drl", feedback_trained=True,
    feedback_activation="linear", last_hidden_bias=False)

METHODS: dict[str, Method] = {m.name: m for m in (
    Method(name="bp", summary="Backpropagation baseline", feedback="none", target_rule="backprop",
           feedback_loss="none", feedback_trained=False),
    Method(name="tp", summary="Vanilla target propagation (no difference correction), layer-wise reconstruction loss",
           feedback="layerwise", target_rule="plain", feedback_loss="reconstruction", feedback_trained=True,
           feedback_activation="tanh"),
    _DTP,
    # Same method as DTP; its own name carries its own paper config (feedback pre-training + extra epochs).
    dataclasses.replace(_DTP, name="dtp_pretrained",
                        summary="DTP with feedback pre-training and extra feedback-only epochs"),
    Method(name="dtpdrl", summary="DTP whose layer-wise feedback is trained with the difference reconstruction loss",
           feedback="layerwise", target_rule="difference", feedback_loss="drl", feedback_trained=True,
           feedback_activation="tanh"),
    _DDTP_LINEAR,
    Method(name="ddtp_rhl",
           summary="Direct DTP through a fixed random hidden feedback layer, difference reconstruction loss",
           feedback="direct_rhl", target_rule="difference", feedback_loss="drl", feedback_trained=True,
           feedback_activation="tanh"),
    Method(name="ddtp_control",
           summary="Control: direct linear feedback trained by reconstruction through the output, no difference "
                   "correction in its loss",
           feedback="direct", target_rule="difference", feedback_loss="control", feedback_trained=True,
           feedback_activation="linear"),
    dataclasses.replace(
        _DDTP_LINEAR, name="dfa", feedback_trained=False,
        summary="Direct feedback alignment: DDTP-linear with frozen random feedback (target stepsize 1)"),
    Method(name="gnt", summary="Ideal Gauss-Newton targets (per-sample damped pseudo-inverse of the output Jacobian)",
           feedback="none", target_rule="gnt", feedback_loss="none", feedback_trained=False),
)}


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def get_method(name: str | Method) -> Method:
    """Looks a method up by name; an unknown name raises ValueError listing the valid ones."""
    if isinstance(name, Method):
        return name
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}") from None
