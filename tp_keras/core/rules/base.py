"""`LearningRule`: a training method as one frozen, serialisable value.

A rule names its pieces (each a small component object looked up in `components.py` by name, so a rule saves
as a plain dict) and carries its hyper-parameters:

* ``feedback``: how the feedback maps are parameterised (the network builds them): ``none``, ``layerwise``
  (g_ℓ carried by forward layer ℓ+1), ``direct`` (from the output to every hidden layer) or ``direct_rhl``
  (direct, through a fixed random hidden layer). ``feedback_activation``, ``feedback_bias`` and
  ``feedback_init`` shape those maps; ``feedback_trained`` says whether the feedback optimizer steps.
* ``target_rule``: ``backprop``, ``difference`` (paper eq. 8), ``plain`` (eq. 3) or ``gnt`` (Gauss-Newton).
* ``feedback_loss``: ``none``, ``reconstruction`` (DTP), ``drl`` (difference reconstruction loss), ``control``
  (DDTP-control), ``ldrl`` (local difference reconstruction loss, Ernoult et al. 2022) or
  ``reconstruction_summed`` (DTP's loss as Shibuya et al.'s DTP-BN computes it, rules/dtp_bn.py).
* the in-batch schedule, a component (`components.InBatchSchedule`, `LearningRule.schedule`) saved as three
  fields: ``feedback_first`` (train the feedback before the targets are computed, instead of computing targets
  and both gradients from the same weights), ``feedback_iterations`` (feedback steps per batch: one value, or one
  per hidden layer) and ``per_layer_feedback_optimizers`` (one feedback optimizer per hidden layer, each with its
  own step counter); the step and the drivers ask the schedule, not the fields.
* hyper-parameters: ``sigma`` (noise std of the feedback loss, one value or one per hidden layer),
  ``target_stepsize`` (η̂), ``gn_damping`` (λ of the GNT targets) and ``noise`` (the N(0, 1) generator of the
  feedback losses: a registered name, or any callable ``noise(shape, seed)``, which is how tests inject noise).
* ``last_hidden_bias``: a reference quirk (DDTP-linear and DFA have no forward bias on the last hidden layer).
* the authors' forms of the later rules (docs/semantics.md §7.12, §7.13): ``feedback_form``, how a layer-wise map is
  built: ``dtp``, g(u) = t(uQ + d) (the paper methods), or ``inverse_block``, g(u) = s(u)Q + d with s the forward
  activation of the layer whose output u is (L-DRL's authors invert each forward block: its activation, then the
  transposed linear map; the output layer's map is purely linear); ``forward_bias`` (False: no forward layer has a
  bias, as FW-DTP's authors' layers); ``forward_loss_scale`` (c in the local loss c·(1/B)Σ‖h − ĥ‖²: 1 for the
  paper methods, ½ for L-DRL's authors); ``batch_norm`` (FW-DTP's authors' FWDTP-BN and DTP-BN: every hidden
  layer's output, every layer-wise feedback map and every difference target batch-normalised, docs/semantics.md
  §7.13, §7.14) and
  ``output_batch_norm`` (the output layer's logits normalised too, their ``--forward_last_activation=linear-BN``).

Every invalid combination is refused by the constructor with a one-line `RuleError` (a ValueError): a bool
field holding anything but True/False, and a hyper-parameter the rule does not use set to anything but its
default (`UnusedSettingError`). The rule is the one validator of its hyper-parameters: a value it cannot take
raises `HyperParameterError`, which names the field and carries the problem apart, so that TPModel and the
launcher say it in their own words (`TPModel: sigma=...`, `--sigma: ...`) without checking again;
`check_layers(count)` checks the per-layer values against a network's hidden layers.

Defaults. Each hyper-parameter's default is the field's default below, the one place it is written; a rule that
needs another value sets it on its own value (ldrl.py: three feedback steps). `Config` leaves what the method's
paper configuration does not give to the rule.

What a rule uses. The rule is the one place that knows which settings it uses (`uses`, `unused_because`,
`check_used`), derived from its components: ``sigma`` (and the feedback optimizer, ``feedback_optimizer``, and
feedback-only passes, ``feedback_schedule``) only where it trains feedback (by a noisy feedback loss);
``target_stepsize`` only where it propagates targets; ``gn_damping`` only for Gauss-Newton targets;
``feedback_iterations`` only where it trains the feedback first; ``size_hidden_fb`` and ``recurrent_input`` only
with DDTP-RHL's random feedback layer (``feedback='direct_rhl'``). `check_used` raises `UnusedSettingError`
(one line naming the setting and the fix); the front ends decide what counts as given (TPModel's keyword
arguments, the launcher's flags, a search space's lines) and say it in their own words. ``noise`` is not
checked: a generator is harmless where no feedback loss draws from it, and tests inject one into every rule.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable

import numpy as np

from tp_keras.core.rules import components as K

# The registry of every method by name, filled by tp_keras.core.rules (rules/__init__.py, which imports this
# module); `LearningRule.structure` reads it.
RULES: dict[str, LearningRule] = {}
FEEDBACK_KINDS = ("none", "layerwise", "direct", "direct_rhl")
FEEDBACK_INITS = ("xavier", "uniform_1e-3", "uniform_1e-2")
FEEDBACK_FORMS = ("dtp", "inverse_block")
# The feedback losses a batch-normalised rule can train with: each noisy copy passes through the maps alone, so the
# batch statistics are its own (FWDTP-BN's fixed feedback; DTP-BN's summed reconstruction loss, rules/dtp_bn.py).
_BATCH_NORM_FEEDBACK_LOSSES = ("none", "reconstruction_summed")
# The hyper-parameters of a rule (what TPModel's keyword arguments and the launcher's flags override); the other
# fields are its structure.
HYPER_PARAMETERS = ("sigma", "target_stepsize", "gn_damping", "noise", "feedback_iterations")
# The settings only some rules use (`LearningRule.uses`), with who uses them (for the messages): the rule's own
# hyper-parameters and what lies outside the rule (the feedback optimizer, feedback-only passes, DDTP-RHL's random
# feedback layer). TPModel's keyword arguments, the launcher's flags and the search spaces map onto these names.
SETTINGS = {
    "sigma": "rules that train their feedback (the noise std of the feedback loss)",
    "target_stepsize": "rules that propagate targets",
    "gn_damping": "Gauss-Newton targets (target_rule='gnt', method 'gnt')",
    "feedback_iterations": "rules that train their feedback first, feedback_first=True (e.g. 'ldrl')",
    "feedback_optimizer": "rules that train their feedback",
    "feedback_schedule": "rules that train their feedback (feedback-only passes)",
    "size_hidden_fb": "DDTP-RHL's random feedback layer (feedback='direct_rhl')",
    "recurrent_input": "DDTP-RHL's random feedback layer (feedback='direct_rhl')",
}
# The rule's hyper-parameter fields that only some rules use: set to anything but the default, refused where unused.
_CHECKED_FIELDS = ("sigma", "target_stepsize", "gn_damping", "feedback_iterations")
BOOL_FIELDS = ("feedback_trained", "last_hidden_bias", "feedback_bias", "feedback_first",
               "per_layer_feedback_optimizers", "forward_bias", "batch_norm", "output_batch_norm")


class RuleError(ValueError):
    """An invalid learning rule; `str(err)` is one line naming what is wrong and the fix."""


class UnusedSettingError(RuleError):
    """A setting the rule does not use, given a value: `setting`, `value`, `rule` (its name) and `reason` (why
    the rule does not use it) let TPModel, the launcher and the search say it in their own words."""

    def __init__(self, rule: str, setting: str, value, reason: str):
        self.rule, self.setting, self.value, self.reason = rule, setting, value, reason
        super().__init__(f"rule {rule!r}: {setting}={value!r} is not used ({reason}); drop it: {setting} is for "
                         f"{SETTINGS[setting]}")

    def __reduce__(self):
        return type(self), (self.rule, self.setting, self.value, self.reason)


class HyperParameterError(RuleError):
    """A value the rule cannot take for one of its hyper-parameters: `rule` (its name), `field`, `value`,
    `problem` (what is wrong and the fix, without the field's name) and `example` (a value that works, or None) let
    TPModel and the launcher say it in their own words (`reworded`)."""

    def __init__(self, rule: str, field: str, value, problem: str, example=None):
        self.rule, self.field, self.value, self.problem, self.example = rule, field, value, problem, example
        super().__init__(f"rule {rule!r}: " + self.reworded(f"{field}={value!r}", field))

    def reworded(self, given: str, name: str) -> str:
        """The message in a front end's words: `given` shows the value as it took it (``sigma=-1.0``, ``-1.0``),
        `name` names the setting in the example (``sigma``, ``--sigma``)."""
        return f"{given} {self.problem}" + (f", e.g. {name}={self.example}" if self.example is not None else "")

    def __reduce__(self):
        return type(self), (self.rule, self.field, self.value, self.problem, self.example)


def _number(value, lowest: float, *, strict: bool) -> bool:
    """A finite real number (not a bool) above `lowest` (strict) or at least `lowest`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value > lowest if strict else value >= lowest


def _plain(value, kind):
    """NumPy's scalars (and for floats any real number, as `float` takes it) as Python's `kind`, in a tuple too;
    anything else as it is (for the checks to refuse)."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v, kind) for v in value)
    if isinstance(value, (bool, np.bool_)):
        return value
    if kind is float and isinstance(value, numbers.Real):
        return float(value)
    if kind is int and isinstance(value, numbers.Integral):
        return int(value)
    return value


@dataclasses.dataclass(frozen=True)
class LearningRule:
    name: str
    summary: str
    feedback: str
    target_rule: str
    feedback_loss: str
    feedback_trained: bool
    feedback_activation: str | None = None  # t in g(u) = t(Qu + d)
    last_hidden_bias: bool = True
    feedback_bias: bool = True
    feedback_init: str = "xavier"
    # The defaults are the paper methods' forms (a saved rule without these keys loads as it was).
    feedback_form: str = "dtp"  # 'dtp': t(uQ + d); 'inverse_block': s(u)Q + d (s: the forward activation)
    forward_bias: bool = True
    forward_loss_scale: float = 1.0  # c in the local loss c·(1/B)Σ‖h − ĥ‖²
    batch_norm: bool = False  # FWDTP-BN: hidden outputs, layer-wise feedback maps and targets batch-normalised
    output_batch_norm: bool = False  # with batch_norm: the logits too (the authors' linear-BN last layer)
    # The in-batch schedule (`schedule`), saved as these three fields.
    feedback_first: bool = False
    feedback_iterations: int | tuple = 1
    per_layer_feedback_optimizers: bool = False
    # Hyper-parameters: these defaults are the only ones (see the module's docstring).
    sigma: float | tuple = 0.08
    target_stepsize: float = 0.01
    gn_damping: float = 0.0
    noise: Any = "philox"

    def __post_init__(self):
        for field in BOOL_FIELDS:
            value = getattr(self, field)
            if isinstance(value, np.bool_):  # NumPy's bool: the plain bool
                object.__setattr__(self, field, bool(value))
            elif not isinstance(value, bool):
                raise RuleError(f"rule {self.name!r}: {field}={value!r} must be True or False (a bool, not "
                                f"{type(value).__name__})")
        for field, kind in (("sigma", float), ("target_stepsize", float), ("gn_damping", float),
                            ("feedback_iterations", int), ("forward_loss_scale", float)):
            object.__setattr__(self, field, _plain(getattr(self, field), kind))  # lists as tuples
        n = self.name
        if self.feedback not in FEEDBACK_KINDS:
            raise RuleError(f"rule {n!r}: feedback={self.feedback!r}; choose one of {', '.join(FEEDBACK_KINDS)}")
        if self.target_rule not in K.TARGET_RULES:
            raise RuleError(f"rule {n!r}: target_rule={self.target_rule!r}; choose one of "
                            f"{', '.join(K.TARGET_RULES)}")
        if self.feedback_loss not in K.FEEDBACK_LOSSES:
            raise RuleError(f"rule {n!r}: feedback_loss={self.feedback_loss!r}; choose one of "
                            f"{', '.join(K.FEEDBACK_LOSSES)}")
        if self.feedback_init not in FEEDBACK_INITS:
            raise RuleError(f"rule {n!r}: feedback_init={self.feedback_init!r}; choose one of "
                            f"{', '.join(FEEDBACK_INITS)}")
        if self.feedback_form not in FEEDBACK_FORMS:
            raise RuleError(f"rule {n!r}: feedback_form={self.feedback_form!r}; choose one of "
                            f"{', '.join(FEEDBACK_FORMS)}")
        if self.feedback_form == "inverse_block" and self.feedback != "layerwise":
            raise RuleError(f"rule {n!r}: feedback_form='inverse_block' inverts each forward layer, so it needs "
                            f"feedback='layerwise', not {self.feedback!r}; use feedback_form='dtp'")
        if self.feedback_form == "inverse_block" and self.feedback_activation != "linear":
            raise RuleError(f"rule {n!r}: feedback_form='inverse_block' is s(u)Q + d, the forward activation s on "
                            f"the input and no activation on the output; set feedback_activation='linear', not "
                            f"{self.feedback_activation!r}")
        if self.output_batch_norm and not self.batch_norm:
            raise RuleError(f"rule {n!r}: output_batch_norm=True normalises the logits of a batch-normalised network; "
                            "set batch_norm=True too, or drop output_batch_norm")
        if self.batch_norm and ((self.feedback, self.target_rule, self.feedback_form) != (
                "layerwise", "difference", "dtp") or self.feedback_loss not in _BATCH_NORM_FEEDBACK_LOSSES):
            raise RuleError(f"rule {n!r}: batch_norm is built for FWDTP-BN and DTP-BN, layer-wise feedback t(uQ) "
                            "with difference targets, fixed or trained by the summed reconstruction loss (feedback="
                            "'layerwise', target_rule='difference', feedback_form='dtp', feedback_loss 'none' or "
                            f"'reconstruction_summed'), not {self.feedback!r}/{self.target_rule!r}/"
                            f"{self.feedback_form!r}/{self.feedback_loss!r}: the other feedback losses stack noisy "
                            "rows into one batch, which the batch statistics would mix; start from "
                            "RULES['fw_dtp_bn'] or RULES['dtp_bn']")
        if not _number(self.forward_loss_scale, 0, strict=True):
            raise RuleError(f"rule {n!r}: forward_loss_scale={self.forward_loss_scale!r} must be a finite number > 0 "
                            "(1.0: the paper's local loss; 0.5: L-DRL's authors')")
        if self.target_rule == "backprop" and self.forward_loss_scale != 1.0:
            raise RuleError(f"rule {n!r}: forward_loss_scale={self.forward_loss_scale!r} scales the local loss of "
                            "target methods; a backprop rule has none: drop it (leave 1.0)")
        if not isinstance(self.noise, str) and not callable(self.noise):
            raise RuleError(f"rule {n!r}: noise={self.noise!r} must be a registered name "
                            f"({', '.join(K.NOISE)}) or a callable noise(shape, seed)")
        if isinstance(self.noise, str) and self.noise not in K.NOISE:
            raise RuleError(f"rule {n!r}: noise={self.noise!r}; choose one of {', '.join(K.NOISE)}")
        targets, loss = self.targets, self.loss
        if self.feedback == "none":
            if targets.uses_feedback or self.feedback_loss != "none":
                raise RuleError(f"rule {n!r}: target rule {self.target_rule!r} and feedback loss "
                                f"{self.feedback_loss!r} need feedback maps; set feedback='layerwise' or 'direct'")
        elif not targets.uses_feedback:
            raise RuleError(f"rule {n!r}: target rule {self.target_rule!r} uses no feedback maps; set feedback='none'")
        elif self.feedback_activation is None:
            raise RuleError(f"rule {n!r}: feedback={self.feedback!r} needs a feedback_activation (e.g. 'tanh')")
        path = self.path.name if self.path is not None else None
        if self.feedback_loss != "none" and path not in loss.paths:
            raise RuleError(f"rule {n!r}: feedback loss {self.feedback_loss!r} trains only "
                            f"{' or '.join(loss.paths)} feedback, not {self.feedback!r}")
        if path in loss.needs_difference_on and not targets.difference:
            raise RuleError(f"rule {n!r}: feedback loss {self.feedback_loss!r} on {path} feedback uses the "
                            "difference correction; use target_rule='difference'")
        for field in _CHECKED_FIELDS:
            value = getattr(self, field)
            if not _same(value, _DEFAULTS[field]):
                self.check_used(field, value)
        if isinstance(self.sigma, tuple) and not loss.per_layer_sigma:
            per_layer = [name for name, other in K.FEEDBACK_LOSSES.items() if other.per_layer_sigma]
            raise HyperParameterError(n, "sigma", self.sigma, f"gives {len(self.sigma)} values; {n}'s feedback loss "
                                      f"{self.feedback_loss!r} takes one sigma (one per hidden layer is for "
                                      f"{', '.join(per_layer)})")
        if self.trains_feedback:
            sigmas = self.sigma if isinstance(self.sigma, tuple) else (self.sigma,)
            if not sigmas or not all(_number(s, 0, strict=True) for s in sigmas):
                raise HyperParameterError(n, "sigma", self.sigma, f"must be a finite number > 0; {n} trains its "
                                          "feedback with noise of std sigma > 0 (one value, or one per hidden "
                                          "layer)", example=0.05)
        if not _number(self.target_stepsize, 0, strict=True):
            raise HyperParameterError(n, "target_stepsize", self.target_stepsize, "must be a finite number > 0",
                                      example=0.05)
        if not _number(self.gn_damping, 0, strict=False):
            raise HyperParameterError(n, "gn_damping", self.gn_damping, "must be a finite number >= 0")
        counts = self.feedback_iterations if isinstance(self.feedback_iterations, tuple) else (
            self.feedback_iterations,)
        if not counts or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in counts):
            raise HyperParameterError(n, "feedback_iterations", self.feedback_iterations, "must be whole numbers "
                                      ">= 1 (one, or one per hidden layer)", example=3)
        if (isinstance(self.feedback_iterations, tuple) or self.per_layer_feedback_optimizers) \
                and path != "layerwise":
            raise RuleError(f"rule {n!r}: per-layer feedback iterations and optimizers need layer-wise feedback")
        if not self.feedback_trained and self.feedback_first:
            raise RuleError(f"rule {n!r}: feedback_first schedules feedback training, but feedback_trained=False")

    # --- the components ----------------------------------------------------------------------------------------
    @property
    def targets(self):
        return K.TARGET_RULES[self.target_rule]

    @property
    def loss(self):
        return K.FEEDBACK_LOSSES[self.feedback_loss]

    @property
    def path(self):
        """The feedback path component (how targets travel through this kind of feedback maps)."""
        return K.PATHS[self.feedback]

    @property
    def schedule(self) -> K.InBatchSchedule:
        """The in-batch schedule component (what the step and the drivers ask: feedback first or not, steps per
        layer, one feedback optimizer per layer or one)."""
        return K.InBatchSchedule(self.feedback_first, self.feedback_iterations, self.per_layer_feedback_optimizers)

    @property
    def noise_fn(self) -> Callable:
        return K.NOISE[self.noise] if isinstance(self.noise, str) else self.noise

    # --- derived facts -------------------------------------------------------------------------------------------
    @property
    def uses_targets(self) -> bool:
        return not self.targets.backprop

    @property
    def has_feedback(self) -> bool:
        return self.feedback != "none"

    @property
    def direct(self) -> bool:
        """Feedback straight from the output to every hidden layer (the DDTP family and DFA)."""
        return self.feedback in ("direct", "direct_rhl")

    @property
    def batch_dependent(self) -> bool:
        """Whether a sample's activations depend on the other rows of its batch (batch normalisation with batch
        statistics, in training and evaluation alike): refused where a guarantee needs per-sample maps (several
        replicas, angle diagnostics, conv networks, conversion)."""
        return self.batch_norm

    @property
    def trains_feedback(self) -> bool:
        return self.has_feedback and self.feedback_trained and self.feedback_loss != "none"

    # --- which settings the rule uses ----------------------------------------------------------------------------
    def unused_because(self, setting: str) -> str | None:
        """None where this rule uses `setting` (a key of `SETTINGS`), else why not (a clause naming the rule)."""
        n = self.name
        if setting in ("sigma", "feedback_optimizer", "feedback_schedule"):
            return None if self.trains_feedback else f"{n} does not train feedback weights"
        if setting == "target_stepsize":
            return None if self.uses_targets else f"{n} propagates no targets, it trains by backprop"
        if setting == "gn_damping":
            return None if self.target_rule == "gnt" else f"{n} has no Gauss-Newton targets"
        if setting == "feedback_iterations":
            if not self.trains_feedback:
                return f"{n} does not train feedback weights"
            return None if self.feedback_first else f"{n} takes one feedback step per batch, with its targets"
        if setting in ("size_hidden_fb", "recurrent_input"):
            return None if self.feedback == "direct_rhl" else f"{n} has no random feedback layer"
        raise RuleError(f"rule {n!r}: unknown setting {setting!r}; choose one of {', '.join(SETTINGS)}")

    def uses(self, setting: str) -> bool:
        return self.unused_because(setting) is None

    def check_used(self, setting: str, value) -> None:
        """Refuses `value` given for a setting this rule does not use (`UnusedSettingError`, one line). The caller
        decides what counts as given (TPModel: a keyword argument other than the rule's own value; the launcher:
        a flag other than the method's default)."""
        reason = self.unused_because(setting)
        if reason is not None:
            raise UnusedSettingError(self.name, setting, value, reason)

    def used(self, **values) -> dict:
        """The `values` (settings by name) this rule uses: for code that passes one set of hyper-parameters to
        every method, e.g. `TPModel(method, ..., **get_rule(method).used(target_stepsize=0.1, sigma=0.05))`."""
        return {k: v for k, v in values.items() if self.uses(k)}

    def check_layers(self, count: int) -> None:
        """Refuses a per-layer hyper-parameter (sigma, feedback_iterations) whose values are not one per hidden
        layer of a network with `count` hidden layers (`HyperParameterError`)."""
        for field in ("sigma", "feedback_iterations"):
            value = getattr(self, field)
            if isinstance(value, tuple) and len(value) != count:
                raise HyperParameterError(self.name, field, value, f"has {len(value)} values for the network's "
                                          f"{count} hidden layers; give one value, or one per hidden layer")

    def sigmas(self, count: int) -> list[float]:
        """σ_ℓ for hidden layers ℓ = 1..count."""
        self.check_layers(count)
        return list(self.sigma) if isinstance(self.sigma, tuple) else [self.sigma] * count

    def iterations(self, count: int) -> list[int]:
        """Feedback steps per batch for hidden layers ℓ = 1..count."""
        self.check_layers(count)
        return self.schedule.steps(count)

    def with_hyper_parameters(self, **values) -> "LearningRule":
        """This rule with some hyper-parameters replaced (None keeps the rule's value)."""
        unknown = set(values) - set(HYPER_PARAMETERS)
        if unknown:
            raise RuleError(f"rule {self.name!r}: {sorted(unknown)} are not hyper-parameters; choose from "
                            f"{', '.join(HYPER_PARAMETERS)}")
        values = {k: v for k, v in values.items() if v is not None}
        return dataclasses.replace(self, **values) if values else self

    def structure(self) -> "LearningRule":
        """This rule with its registry entry's hyper-parameters: what identifies the method."""
        entry = RULES.get(self.name)
        if entry is None:
            return self
        structure = dataclasses.replace(self, **{k: getattr(entry, k) for k in HYPER_PARAMETERS})
        return entry if structure == entry else structure

    def get_config(self) -> dict:
        if not isinstance(self.noise, str):
            raise RuleError(f"rule {self.name!r}: a custom noise callable cannot be saved; use a registered noise")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_config(cls, config: dict) -> "LearningRule":
        return cls(**config)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LearningRule)}


def _same(a, b) -> bool:
    """a == b as a plain truth value (False where the comparison has none, e.g. an array)."""
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False
