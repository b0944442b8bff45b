"""The backward sweep over levels that BP-shaped rules share, and per-parameter bookkeeping.

On a forward pass of levels 1..L (z_l, r_l, and each rate function's VJP context),

    delta_L = e,      delta_{l-1} = scale * g'_{l-1}(z_{l-1})^T [ A_l^T delta_l ]       l = L..2,

where A_l^T is level l's input VJP (its forward weight, or a feedback weight in its place: FA,
KP, sign symmetry) and g'^T the rate function's VJP (its activation's derivative, or a balance
function in its place: the credit rule). With the weights' own transposes and f' this is BP's
delta sweep, and Z-IL's error front (scale = gamma). Each level's parameter VJP with its delta,
parameter_vjp(delta_l, r_{l-1}, u_l), summed over the batch, is the local update of its
parameters; `pool` adds up what levels that share a parameter (an unrolled RNN) contribute.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch

from .levels import Level
from .network import ForwardPass, Network

Tensor = torch.Tensor


def backward_sweep(
    forward: ForwardPass,
    output_error: Tensor,
    *,
    feedback: Sequence[Tensor | None] | None = None,
    derivative: Callable[[Tensor], Tensor] | None = None,
    scale: float = 1.0,
    parameters: bool = True,
    input_grads: list | None = None,
    stack_shared: bool = False,
) -> tuple[list[Tensor], list[list[Tensor]]]:
    """(deltas delta_1..delta_L, per-level parameter VJPs) of the sweep in the module docstring.

    feedback[l] replaces level l+1's forward weight in its input VJP (None: the weight itself);
    derivative replaces the activations' f'; with parameters=False no parameter VJP is taken;
    input_grads, a list of len(levels), receives A_l^T delta_l at index l-1 (the credit rule's
    credit, in r_{l-1}'s shape; the top entry is left alone). With stack_shared, levels that read
    the same parameters (an unrolled RNN's time steps; see `stacked_groups`) take one parameter
    VJP on their deltas, rates and side inputs stacked along the batch: their sum, as one product
    per parameter instead of one per level and a sum; it stands at the group's first level and
    the others' entries are empty (what `pool` adds up is the same, to round-off)."""
    levels = forward.levels
    n = len(levels)
    deltas: list[Tensor] = [None] * n  # type: ignore[list-item]
    changes: list[list[Tensor]] = [[] for _ in range(n)]
    deltas[-1] = output_error
    grouped = stacked_groups(levels) if (parameters and stack_shared) else []
    in_group = {index for group in grouped for index in group}
    for index in range(n - 1, -1, -1):
        level = levels[index]
        below = index - 1
        weight = None if feedback is None else feedback[index]
        needs_input = below >= 0
        if parameters and index not in in_group:
            grad_r, changes[index] = level.backward(
                deltas[index], forward.rates[index], forward.sides[index], input_needed=needs_input, feedback=weight
            )
        elif needs_input:
            grad_r = level.input_vjp(deltas[index], forward.rates[index], weight)
        if needs_input:
            if input_grads is not None:
                input_grads[below] = grad_r
            delta = levels[below].rate.vjp(grad_r, forward.contexts[below], derivative)
            deltas[below] = delta if scale == 1.0 else scale * delta
    for group in grouped:
        sides = [forward.sides[index] for index in group]
        changes[group[0]] = levels[group[0]].parameter_vjp(
            torch.cat([deltas[index] for index in group]),
            torch.cat([forward.rates[index] for index in group]),
            None if any(side is None for side in sides) else torch.cat(sides),
        )
    return deltas, changes


def stacked_groups(levels: Sequence[Level]) -> list[list[int]]:
    """Groups (two or more, indices in order) of levels whose parameter VJPs may be taken at once on
    inputs stacked along the batch: levels of one kind that stacks (`Level.stacks_over_batch`: its
    parameter VJP is a sum over rows of (B, n) inputs, with nothing but the parameters besides)
    reading the same parameter tensors."""
    groups: dict[tuple, list[int]] = {}
    for index, level in enumerate(levels):
        if level.stacks_over_batch:
            groups.setdefault((type(level), tuple(id(p) for p in level.parameters)), []).append(index)
    return [group for group in groups.values() if len(group) > 1]


def pool(net: Network, levels, per_level: Sequence[Sequence[Tensor] | None],
         slots: Sequence[Sequence[int]] | None = None) -> list[Tensor | None]:
    """Per-level parameter changes added up per parameter of `net` (None: untouched); `slots`,
    net.parameter_slots(levels) if the caller has it already."""
    if slots is None:
        slots = net.parameter_slots(levels)
    totals: list[Tensor | None] = [None] * len(net.parameters_list())
    passed_through: set[int] = set()
    for level_slots, changes in zip(slots, per_level):
        if changes is None:
            continue
        for slot, change in zip(level_slots, changes):
            if totals[slot] is None:
                # one tensor handed for two parameters (an Elman step's bias VJP serves b_ih and
                # b_hh) becomes two: a caller may change one total in place
                if id(change) in passed_through:
                    change = change.clone()
                passed_through.add(id(change))
                totals[slot] = change
            else:
                totals[slot] = totals[slot] + change
    return totals


def write(net: Network, totals: Sequence[Tensor | None], scale: float, in_place: bool = False) -> None:
    """parameter += (scale * total), in place, for every parameter with a change: the product
    rounded before the sum, as the MLP-era rules wrote it, so Z-IL's front trains an MLP bit for
    bit as it did (add_(total, alpha=scale) would fuse the two roundings). in_place=True forms
    the products in the totals themselves (the same numbers, no fresh tensor the size of each
    weight), for a caller that owns them."""
    written = [(parameter.data, total) for parameter, total in zip(net.parameters_list(), totals) if total is not None]
    if written:
        totals_written = [t for _, t in written]
        factor = scalar(scale, written[0][1])
        if in_place:
            torch._foreach_mul_(totals_written, factor)
            products = totals_written
        else:
            products = torch._foreach_mul(totals_written, factor)
        torch._foreach_add_([p for p, _ in written], products)


def descend(parameters: Sequence[Tensor], estimates: Sequence[Tensor | None], lr: float) -> None:
    """parameter -= lr * estimate, in place, for every parameter with an estimate: one fused
    multiply-add per entry (`add_(estimate, alpha=-lr)`; unlike `write`, whose product is rounded
    first), in one foreach call."""
    written = [(parameter.data, estimate) for parameter, estimate in zip(parameters, estimates) if estimate is not None]
    if written:
        torch._foreach_add_([p for p, _ in written], [estimate for _, estimate in written], alpha=-lr)


@functools.lru_cache(maxsize=64)
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def scalar(value: float, like: Tensor) -> Tensor | float:
    """`value` as a 0-d tensor of like's dtype and device (made once per value, dtype and device),
    to multiply by: in float32 and float64 the product is the one with the Python number, which
    torch first converts to that dtype, once per tensor and call (a copy each, a tenth of a small
    net's step). Other dtypes (float16, bfloat16) get the Python number itself: torch applies it
    at float32 precision there, and a 0-d half tensor would round it first."""
    if like.dtype not in (torch.float32, torch.float64):
        return float(value)
    return _scalar(float(value), like.dtype, like.device)


__all__ = ["backward_sweep", "descend", "pool", "scalar", "stacked_groups", "write"]
