"""What every learning rule shares: argument checks, the batch contract, the SGD write.

A rule is a thin object holding its hyper-parameters; `step(net, x, y)` performs one training
step on a batch in place and returns a dict of diagnostics (at least "loss", the batch loss
before the update, and "output", the network output z_L before the update).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..batches import check_examples
from ..errors import BioPropError
from ..losses import Loss, get_loss
from ..network import MLP

Tensor = torch.Tensor


class LearningRule:
    """Base class. Subclasses set `name`, `claims_exactness` and implement `_step`."""

    name: str = "rule"
    #: True when the SPEC claims the rule's update equals BP's SGD update exactly.
    claims_exactness: bool = False

    def __init__(self, lr: float = 0.01, loss: str | Loss = "mse"):
        self.lr = check_positive("lr", lr)
        self.loss = get_loss(loss)

    def step(self, net: MLP, x: Tensor, y: Tensor, trace: bool = False) -> dict[str, Any]:
        """One training step on the batch (x, y); updates `net` in place.

        x: (B, n_0) inputs. y: (B, n_L) targets (one-hot or real-valued), or (B,) integer labels
        (turned into one-hot). With trace=True the returned dict holds "trace", a list of the
        rule's inference states (per step: value and error nodes of every layer).
        """
        x, y = check_batch(net, x, y)
        with torch.no_grad():
            return self._step(net, x, y, trace)

    def _step(self, net: MLP, x: Tensor, y: Tensor, trace: bool) -> dict[str, Any]:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The rule's hyper-parameters, as keywords that `make_rule` accepts."""
        return {"lr": self.lr, "loss": self.loss.name}

    def state_dict(self) -> dict[str, Any]:
        """Rule-owned state to checkpoint (none for stateless rules)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise BioPropError(f"{name}={value!r}: give a number") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise BioPropError(f"{name}={value!r}: must be finite and {bound}")
    return value


def check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BioPropError(f"{name}={value!r}: give an integer >= {minimum}")
    return value


def check_batch(net: MLP, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a batch against the network and bring it to the net's dtype and device."""
    if not isinstance(net, MLP):
        raise BioPropError(f"net: expected a bioprop.MLP, got {type(net).__name__}")
    return check_examples(x, y, net.sizes[0], net.sizes[-1], f"a net with sizes {net.sizes}", net.dtype, net.device)


def sgd_write(parameter: Tensor, change: Tensor) -> None:
    """Add a rule's update to a parameter in place (the rule has already scaled it by lr)."""
    parameter.data.add_(change)


def hebbian_change(lr: float, error: Tensor, rates: Tensor, gate: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Batch-mean local update  lr * <gate * error, rates^T>  and its bias part lr * <gate * error>.

    error (B, n_l), rates (B, n_{l-1}); gate None (always on) or (B, n_l) per-neuron rates.
    """
    if gate is not None:
        error = error * gate
    batch = error.shape[0]
    return (lr / batch) * (error.T @ rates), (lr / batch) * error.sum(dim=0)
