"""Learning rules, by name. A new rule is one new file plus one line in RULES."""
from __future__ import annotations

import inspect

from ..errors import BioPropError
from .base import LearningRule
from .bp import BackpropRule
from .circuit import FourSynapseCircuit
from .credit import CreditRule
from .dfa import DirectFeedbackAlignment
from .fa import FeedbackAlignment
from .fazil import FullyAutonomousZIL
from .il import InferenceLearning
from .kp import KolenPollack
from .sign import SignSymmetry
from .zil import ZeroDivergenceIL

RULES: dict[str, type[LearningRule]] = {
    "bp": BackpropRule,
    "il": InferenceLearning,
    "zil": ZeroDivergenceIL,
    "fazil": FullyAutonomousZIL,
    "fa": FeedbackAlignment,
    "kp": KolenPollack,
    "sign": SignSymmetry,
    "dfa": DirectFeedbackAlignment,
    "circuit": FourSynapseCircuit,
    "credit": CreditRule,
}


def make_rule(name: str, **options) -> LearningRule:
    """Build a rule by name with its options as keywords, e.g. make_rule("zil", lr=0.01, loss="mse")."""
    try:
        cls = RULES[name]
    except (KeyError, TypeError):
        raise BioPropError(f"rule={name!r} is not known; choose one of {sorted(RULES)}") from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise BioPropError(f"rule {name!r}: unknown option(s) {unknown}; it accepts {accepted}")
    return cls(**options)


def rule_names() -> list[str]:
    return sorted(RULES)


__all__ = ["LearningRule", "RULES", "make_rule", "rule_names"]
