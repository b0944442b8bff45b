"""`bioprop.wrap(model)`: a user's `nn.Sequential` as a bioprop Network that shares its parameters.

The Sequential (nested ones flattened) is cut into levels: each parameterised module (Linear,
Conv1d, Conv2d) starts a level, and the parameter-free modules up to the next one (activations,
pooling, flatten, identity) form that level's rate function g_l. Parameter-free modules before the
first parameterised one form the input map g_0 (r_0 = g_0(x)). The output is the last
parameterised module's output z_L, which must be a Linear (only Identity may follow it): losses and
the predictive-coding teacher act on z_L, so a trailing Softmax belongs in the loss (loss="ce").

The user's module stays the source of truth: rules write its parameters in place, so after a step
`model(x)`, `model.state_dict()` and `torch.save(model)` see the new weights, and `net(x)` is
`model(x)` (the BP oracle differentiates the user's own forward).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import BioPropError
from .levels import SUPPORTED_MODULES, Level, RateFunction, RateOp, level_of, rate_op_of
from .network import Network

Tensor = torch.Tensor

_PARAMETERISED = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass
class _LevelPlan:
    module: nn.Module
    ops: list[RateOp]
    where: str


def _flatten(module: nn.Sequential, prefix: str = "") -> list[tuple[str, nn.Module]]:
    entries = []
    # _modules, not named_children(): a module used twice (one nn.ReLU() object at several
    # places) is listed at every place it runs, as Sequential.forward runs it
    for name, child in module._modules.items():
        if isinstance(child, nn.Sequential):
            entries.extend(_flatten(child, f"{prefix}{name}."))
        else:
            entries.append((f"{prefix}{name}", child))
    return entries


class WrappedNetwork(Network):
    """A wrapped nn.Sequential; `module` is the user's model (a submodule, so
    `net.state_dict()` holds its parameters under "module.")."""

    def __init__(self, module: nn.Sequential):
        super().__init__()
        if not isinstance(module, nn.Sequential):
            raise BioPropError(
                f"model: bioprop.wrap takes an nn.Sequential, got {type(module).__name__}; build the model as "
                f"nn.Sequential(...) of {', '.join(SUPPORTED_MODULES)} (or use bioprop.ElmanRNN for a recurrent net)"
            )
        self.module = module
        entries = _flatten(module)
        input_ops: list[RateOp] = []
        plans: list[_LevelPlan] = []
        seen_parameterised: dict[int, str] = {}
        for index, (name, child) in enumerate(entries):
            where = f"model[{name}] ({type(child).__name__}, entry {index})"
            if isinstance(child, _PARAMETERISED) and id(child) in seen_parameterised:
                raise BioPropError(
                    f"{where}: the same {type(child).__name__} object also stands at model[{seen_parameterised[id(child)]}]; "
                    "weights shared between layers of a Sequential are not supported (give each layer its own module)"
                )
            if isinstance(child, _PARAMETERISED):
                seen_parameterised[id(child)] = name
                plans.append(_LevelPlan(child, [], where))
                continue
            if any(True for _ in child.parameters(recurse=True)):
                level_of(child, RateFunction(), where)  # raises: parameters, but not Linear/Conv
            op = rate_op_of(child, where)
            if op is None:
                continue
            (plans[-1].ops if plans else input_ops).append(op)
        if not plans:
            raise BioPropError("model: the Sequential has no Linear, Conv1d or Conv2d module; there is nothing to train")
        last = plans[-1]
        if not isinstance(last.module, nn.Linear):
            raise BioPropError(f"{last.where}: the last parameterised module must be an nn.Linear (the output layer)")
        if last.ops:
            raise BioPropError(
                f"model: {type(last.ops[0]).__name__} after the output Linear is not supported; the output is the last "
                "Linear's z_L, so put a softmax into the loss (loss='ce') and drop trailing maps"
            )
        for plan in plans:  # validate conv settings now, not at the first step
            level_of(plan.module, RateFunction(plan.ops), plan.where)
        self._input_map = RateFunction(input_ops)
        self._plans = plans
        # parameters_list reads the planned modules' own parameters (a walk over every submodule
        # costs a step more than the list), where that is what module.parameters() gives
        self._plans_hold_all = [p for p in self._planned_parameters()] == list(module.parameters())
        self._levels: tuple | None = None  # (the parameter tensors they were built for, levels)

    def describe(self) -> str:
        kinds = "-".join(type(p.module).__name__ for p in self._plans)
        return f"a wrapped Sequential ({kinds})"

    @property
    def output_size(self) -> int:
        return self._plans[-1].module.out_features

    @property
    def n_layers(self) -> int:
        return len(self._plans)

    def levels_for(self, x: Tensor | None = None) -> list[Level]:
        # built from the modules, again whenever a module holds other tensors than they were built
        # for (a replaced weight), so a level always reads the module's current parameters
        tensors = tuple(id(p) for plan in self._plans for p in plan.module._parameters.values())
        if self._levels is None or self._levels[0] != tensors:
            self._levels = (tensors, [level_of(plan.module, RateFunction(plan.ops), plan.where) for plan in self._plans])
        return list(self._levels[1])

    def _planned_parameters(self) -> list[Tensor]:
        return [p for plan in self._plans for p in plan.module._parameters.values() if p is not None]

    def input_rates(self, x: Tensor) -> Tensor:
        return self._input_map(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    def parameters_list(self) -> list[Tensor]:
        return self._planned_parameters() if self._plans_hold_all else list(self.module.parameters())

    def export_state_dict(self) -> dict[str, Tensor]:
        return self.module.state_dict()

    def import_state_dict(self, state: dict[str, Tensor]) -> None:
        self.module.load_state_dict(state)

    def parameter_names(self) -> list[str]:
        return [name for name, _ in self.module.named_parameters()]

    def check_input(self, x: Tensor) -> Tensor:
        first = self._plans[0].module
        flattens = any(type(op).__name__ == "FlattenOp" for op in self._input_map.ops)
        if isinstance(first, nn.Linear):
            if not flattens and (x.ndim != 2 or x.shape[1] != first.in_features):
                raise BioPropError(f"x: expected shape (batch, {first.in_features}) for {self.describe()}, got {tuple(x.shape)}")
        else:
            dims = 2 if isinstance(first, nn.Conv2d) else 1
            if x.ndim != dims + 2 or x.shape[1] != first.in_channels:
                shape = "(batch, %d, H, W)" % first.in_channels if dims == 2 else "(batch, %d, length)" % first.in_channels
                raise BioPropError(f"x: expected shape {shape} for {self.describe()}, got {tuple(x.shape)}")
        return x


def wrap(model: nn.Module) -> Network:
    """The user's model as a bioprop Network sharing its parameters (see the module docstring).

    A bioprop Network (an MLP, an ElmanRNN, an already wrapped model) is returned as it is."""
    if isinstance(model, Network):
        return model
    return WrappedNetwork(model)


__all__ = ["WrappedNetwork", "wrap"]
