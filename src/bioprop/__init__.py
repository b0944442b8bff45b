"""bioprop: biologically plausible learning circuits that compute backpropagation.

    import torch, bioprop
    net = bioprop.MLP([64, 32, 32, 10], activation="sigmoid", dtype=torch.float64, seed=0)
    rule = bioprop.make_rule("zil", lr=0.01, loss="mse")
    info = rule.step(net, x, y)
"""
from .activations import Activation, get_activation, register_activation
from .batches import DtypeWarning
from .errors import BioPropError, DataUnavailableError
from .losses import get_loss
from .network import MLP, ForwardPass, Network
from .recurrent import ElmanRNN
from .wrap import wrap
from .rate_network import RateNetwork
from .rules import LearningRule, make_rule, rule_names
from .rules.base import StepResult

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "Network",
    "ForwardPass",
    "ElmanRNN",
    "StepResult",
    "wrap",
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
