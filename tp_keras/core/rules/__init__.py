"""Learning rules as values, and the registry of every method by name.

Adding a method: write its module (a `LearningRule` value, plus any new component it needs, registered there)
and add it to `RULES` below; see ldrl.py and fw_dtp.py.
"""
from __future__ import annotations

from tp_keras.core.rules.base import (HYPER_PARAMETERS, SETTINGS, HyperParameterError, LearningRule, RuleError,
                                      UnusedSettingError)
from tp_keras.core.rules.base import RULES  # the registry (base's, so that LearningRule reads it), filled below
from tp_keras.core.rules.components import NoiseDraw, standard_normal
from tp_keras.core.rules.dtp_bn import DTP_BN
from tp_keras.core.rules.fw_dtp import FW_DTP, FW_DTP_BN
from tp_keras.core.rules.ldrl import LDRL
from tp_keras.core.rules.paper import PAPER_RULES

RULES.update({r.name: r for r in (*PAPER_RULES, LDRL, FW_DTP, FW_DTP_BN, DTP_BN)})  # base.RULES, the one registry


def rule_names() -> tuple[str, ...]:
    return tuple(RULES)


def get_rule(rule) -> LearningRule:
    """A rule from its name, a LearningRule (returned as is) or its config dict; an unknown name raises a one-line
    ValueError listing the valid ones."""
    if isinstance(rule, LearningRule):
        return rule
    if isinstance(rule, dict):
        return LearningRule.from_config(rule)
    try:
        return RULES[rule]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {rule!r}; choose one of: {', '.join(RULES)}") from None


__all__ = ["HYPER_PARAMETERS", "HyperParameterError", "LearningRule", "NoiseDraw", "RULES", "RuleError", "SETTINGS",
           "UnusedSettingError", "get_rule", "rule_names", "standard_normal"]
