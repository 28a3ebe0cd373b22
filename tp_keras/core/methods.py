"""The method registry under its first names: a method is a `tp_keras.core.rules.LearningRule` (see core/rules/)."""
from __future__ import annotations

from tp_keras.core.rules import RULES as METHODS
from tp_keras.core.rules import LearningRule as Method
from tp_keras.core.rules import get_rule as get_method
from tp_keras.core.rules import rule_names as method_names
from tp_keras.core.rules.base import FEEDBACK_KINDS
from tp_keras.core.rules.components import FEEDBACK_LOSSES, TARGET_RULES

__all__ = ["FEEDBACK_KINDS", "FEEDBACK_LOSSES", "METHODS", "Method", "TARGET_RULES", "get_method", "method_names"]
