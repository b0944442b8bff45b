"""Balance functions g(s) of the credit rule (Fan & Mysore 2024), by name.

A neuron's balance is a bell-shaped function of its net input s, largest at the balanced
(E = I) set point s = 0. It gates both the retrograde credit a neuron sends to its presynaptic
partners, c_i g(s_i) w_ij, and its own synapses' plasticity, dw_ij = r c_i g(s_i) x_j.

- "derivative": g = sigma', the neuron's own activation derivative (each neuron its own:
  hidden neurons sigma', output neurons the output activation's derivative, so 1 for a linear
  output). This is the choice under which the rule is backpropagation.
- "gaussian": g(s) = exp(-s^2 / (2 width^2)), peak 1 at s = 0; any width != the activation's
  makes the rule deviate from BP (a negative control and a model of imperfect balance).
- a user function: any callable of the net input tensor returning a tensor of the same shape,
  passed directly or registered under a name with `register_balance`. It is applied to every
  neuron that is not firing-clamped (hidden and output alike).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .errors import BioPropError

Tensor = torch.Tensor

#: The name of the balance that equals each neuron's activation derivative (the BP case).
DERIVATIVE = "derivative"


@dataclass(frozen=True)
class Balance:
    """A resolved balance choice. `function` is None for "derivative": the network supplies
    each neuron's own sigma'; otherwise g = function(s) for every non-clamped neuron."""

    name: str
    function: Callable[[Tensor], Tensor] | None

    @property
    def is_derivative(self) -> bool:
        return self.function is None

    def __call__(self, s: Tensor) -> Tensor:
        """g(s), checked: a user function must return a tensor of the net input's shape."""
        g = self.function(s)
        if not isinstance(g, Tensor) or g.shape != s.shape:
            shape = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
            raise BioPropError(
                f"balance={self.name!r}: returned {shape} for a net input of shape {tuple(s.shape)}; a balance function "
                "must map the net input tensor elementwise to a tensor of the same shape"
            )
        return g


def gaussian(width: float) -> Callable[[Tensor], Tensor]:
    """g(s) = exp(-s^2 / (2 width^2))."""
    scale = -0.5 / (width * width)

    def balance(s: Tensor) -> Tensor:
        return torch.exp(scale * s * s)

    return balance


_FACTORIES: dict[str, Callable[[float], Callable[[Tensor], Tensor]]] = {"gaussian": gaussian}
_REGISTERED: dict[str, Callable[[Tensor], Tensor]] = {}


def register_balance(name: str, function: Callable[[Tensor], Tensor]) -> None:
    """Make `function` (a callable of the net input s) selectable as balance=name."""
    if not isinstance(name, str) or not name or name == DERIVATIVE or name in _FACTORIES:
        raise BioPropError(f"register_balance: name {name!r} is empty or built in; choose another name")
    if not callable(function):
        raise BioPropError(f"register_balance({name!r}): function must be a callable of the net input tensor")
    _REGISTERED[name] = function


def balance_names() -> list[str]:
    return sorted([DERIVATIVE, *_FACTORIES, *_REGISTERED])


def get_balance(balance: str | Callable[[Tensor], Tensor] | Balance, width: float = 1.0) -> Balance:
    """Resolve a balance option: a name (with `width` for "gaussian") or a callable of s."""
    if isinstance(balance, Balance):
        return balance
    if callable(balance):
        return Balance(getattr(balance, "__name__", "custom"), balance)
    if not isinstance(balance, str):
        raise BioPropError(f"balance={balance!r}: give a name (one of {balance_names()}) or a callable of the net input")
    if balance == DERIVATIVE:
        return Balance(DERIVATIVE, None)
    if balance in _FACTORIES:
        if not isinstance(width, (int, float)) or isinstance(width, bool) or not math.isfinite(width) or width <= 0:
            raise BioPropError(f"width={width!r}: the {balance} balance needs a finite width > 0")
        return Balance(balance, _FACTORIES[balance](float(width)))
    if balance in _REGISTERED:
        return Balance(balance, _REGISTERED[balance])
    raise BioPropError(
        f"balance={balance!r} is not known; choose one of {balance_names()}, pass a callable of the net input, "
        "or add one with bioprop.balance.register_balance(name, function)"
    )
