"""bioprop: biologically plausible learning circuits that compute backpropagation.

    import torch, bioprop
    net = bioprop.MLP([64, 32, 32, 10], activation="sigmoid", dtype=torch.float64, seed=0)
    rule = bioprop.make_rule("zil", lr=0.01, loss="mse")
    x = torch.randn(20, 64, dtype=torch.float64)
    info = rule.step(net, x, torch.randint(0, 10, (20,)))

The public names below are imported on first use (PEP 562), so `import bioprop` and
`bioprop --version` do not pay for torch; `bioprop.MLP` and the others behave as plain
attributes, and the submodules (`bioprop.diagnostics`, `bioprop.rules`, ...) load the same way.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from .errors import BioPropError, DataUnavailableError

__version__ = "0.1.0"

#: public name -> the submodule that defines it
_LAZY = {
    "Activation": "activations",
    "get_activation": "activations",
    "register_activation": "activations",
    "get_loss": "losses",
    "DtypeWarning": "batches",
    "load_run": "train",
    "MLP": "network",
    "ForwardPass": "network",
    "Network": "network",
    "ElmanRNN": "recurrent",
    "wrap": "wrap",
    "RateNetwork": "rate_network",
    "LearningRule": "rules",
    "make_rule": "rules",
    "rule_names": "rules",
    "StepResult": "rules.base",
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from .activations import Activation, get_activation, register_activation
    from .batches import DtypeWarning
    from .train import load_run
    from .losses import get_loss
    from .network import MLP, ForwardPass, Network
    from .rate_network import RateNetwork
    from .recurrent import ElmanRNN
    from .rules import LearningRule, make_rule, rule_names
    from .rules.base import StepResult
    from .wrap import wrap


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)  # a submodule: bioprop.diagnostics, ...
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """`bioprop.wrap` is the function, although a submodule has the same name: importing the
    submodule (models.py does) makes the import system bind it on the package, which would hide
    the function; that binding is dropped, so the name stays free for __getattr__."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "wrap" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "MLP",
    "Network",
    "ForwardPass",
    "ElmanRNN",
    "StepResult",
    "wrap",
    "load_run",
    "RateNetwork",
    "Activation",
    "BioPropError",
    "DataUnavailableError",
    "DtypeWarning",
    "LearningRule",
    "get_activation",
    "get_loss",
    "make_rule",
    "register_activation",
    "rule_names",
]
