"""What every learning rule shares: argument checks, the batch contract, the typed step result.

A rule is a thin object holding its hyper-parameters; `step(net, x, y)` performs one training
step on a batch in place, on any `bioprop.Network` (an MLP, a wrapped nn.Sequential, an ElmanRNN),
and returns a `StepResult` (a dataclass: at least `loss`, the batch loss before the update, and
`output`, the network output z_L before the update; each rule's subclass adds what it measured).
For code written against the earlier dict results, `result["loss"]` reads the attribute too.

No host synchronisation per step: `step` returns the loss as a detached 0-d tensor on the
network's device (`float(result.loss)` reads it, a sync on an accelerator, where and when the
caller chooses). The batch's value checks (finite inputs and targets, labels in range) cost one
pass per tensor on the CPU and are deferred to a device-side flag on accelerators
(`bioprop.batches`); inside `bioprop.batches.prechecked()`, the trainer's entry, they are
skipped (the trainer checked its data once).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar

import torch

from ..errors import BioPropError
from ..losses import Loss, get_loss
from ..network import Network

Tensor = torch.Tensor


@dataclass
class StepResult:
    """What one training step reports. `trace` (per inference step: the rule's state) is None
    unless the step was asked for one with trace=True.

    `loss`: the batch loss before the update, a detached 0-d tensor on the network's device
    (computing it syncs nothing; `float(result.loss)` reads it). Other figures a result reports
    (residuals, per-level tensors) are tensors too unless documented."""

    loss: Tensor
    output: Tensor
    trace: list | None = None

    # read access by key, for code written against the earlier dict results
    def __getitem__(self, key: str) -> Any:
        if key in self.keys():
            return getattr(self, key)
        raise KeyError(f"{type(self).__name__} has no field {key!r}; it has {self.keys()}")

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    # figures formed when first read: a step reports them without paying for them
    def defer(self, **makers: Callable[[], Any]) -> "StepResult":
        """Let the named fields be computed by `makers` when first read (their passes cost the
        step nothing if nobody reads them). Fields so named must have no class-level default
        (a default_factory), so that reading them reaches __getattr__."""
        deferred = self.__dict__.setdefault("_deferred", {})
        for name, make in makers.items():
            self.__dict__.pop(name, None)
            deferred[name] = make
        return self

    def __getattr__(self, name: str) -> Any:  # only reached where an attribute is missing
        deferred = self.__dict__.get("_deferred")
        if deferred and name in deferred:
            value = deferred.pop(name)()
            setattr(self, name, value)
            return value
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def resolve(self) -> "StepResult":
        """Form every deferred field now (pickling does it first: a maker is a closure)."""
        for name in list(self.__dict__.get("_deferred", {})):
            getattr(self, name)
        return self

    def __getstate__(self) -> dict:
        self.resolve()
        state = dict(self.__dict__)
        state.pop("_deferred", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class LearningRule:
    """Base class. Subclasses set `name`, `claims_exactness` and implement `_step`."""

    name: str = "rule"
    #: Where the rule comes from, for `bioprop rules`.
    paper: ClassVar[str] = ""
    #: What each keyword of __init__ means, one line each; a subclass lists the options it adds
    #: or whose meaning it changes (bioprop.rules_listing merges them along the class's MRO).
    #: `bioprop rules`, `bioprop train --help` and the tests read it.
    option_help: ClassVar[dict[str, str]] = {
        "lr": "learning rate: every update is lr times the rule's batch-mean estimate of -dLoss/dparameter",
        "loss": "loss on the linear output, batch mean: 'mse' (0.5 ||z_L - y||^2 per sample) or 'ce' (softmax cross-entropy)",
    }
    #: True when the SPEC claims the rule's update equals BP's SGD update exactly.
    claims_exactness: bool = False
    #: Negative controls for `bioprop verify`: (label, options) pairs, each breaking one of the
    #: exactness conditions, so each must make the rule diverge from BP; options may be a
    #: function of the number of levels L giving them.
    negative_controls: ClassVar[tuple] = ()
    #: Cases `bioprop benchmark` times: label -> options (the rule's defaults first).
    benchmark_cases: ClassVar[dict[str, dict]] = {}

    def step_cut_columns(self, n_levels: int) -> dict | None:
        """Rules with settling dynamics: column -> (k -> options cutting settling to k steps,
        the smallest k derived to be exact) for verify's timescale-cut table; None elsewhere."""
        return None

    def __init__(self, lr: float = 0.01, loss: str | Loss = "mse"):
        self.lr = check_positive("lr", lr)
        self.loss = get_loss(loss)

    def step(self, net: Network, x: Tensor, y: Tensor, trace: bool = False) -> StepResult:
        """One training step on the batch (x, y); updates `net`'s parameters in place.

        x: a batch in the network's input shape ((B, n_0) for an MLP, (B, C, H, W) for a 2-d conv
        net, (B, T, n_in) for an ElmanRNN). y: (B, n_out) targets (one-hot or real-valued), or
        (B,) integer labels (turned into one-hot). With trace=True the result's `trace` lists the
        rule's inference states (per step: value and error nodes of every level).
        """
        x, y = check_batch(net, x, y)
        with torch.no_grad():
            return self._step(net, x, y, trace)

    def _step(self, net: Network, x: Tensor, y: Tensor, trace: bool) -> StepResult:
        raise NotImplementedError

    def prepare(self, net: Network, x: Tensor | None = None) -> None:
        """Create now what the rule draws lazily for `net` on its first step (feedback matrices, a
        downstream pathway; `x`, a batch, where the shapes depend on the input); nothing for rules
        without such state."""

    def plastic_tensors(self) -> list[Tensor]:
        """The tensors besides the network's parameters that a step changes (KP's feedback, the
        circuit's downstream pathway), as they are now; data-parallel training combines their
        changes too. A rule may rebind them (a new list each step): the caller asks again."""
        return []

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


def check_batch(net: Network, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a batch against the network and bring it to the net's dtype and device."""
    if not isinstance(net, Network):
        hint = " (wrap a torch nn.Sequential with bioprop.wrap(model))" if isinstance(net, torch.nn.Module) else ""
        raise BioPropError(f"net: expected a bioprop.Network, got {type(net).__name__}{hint}")
    return net.check_batch(x, y)


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
