"""How close an approximate rule's update is to backprop's, and how far a circuit has self-assembled.

`measure(rule, net, x, y)` takes one step of the rule on *copies* of the rule and the network
(nothing the caller holds changes) and compares it with BP on the same weights and batch, on any
bioprop.Network (an MLP, a wrapped nn.Sequential, an ElmanRNN). The oracle: autograd's gradient
of the batch-mean loss with respect to every parameter, through the network's own forward
`net(x)` (for a wrapped model, the user's module; for an ElmanRNN, torch's nn.RNN), and BP's
deltas d_l = dLoss/dz_l at every level's pre-activation, through `net.forward_pass(x)`.

Records. On an MLP, one per weight layer l = 1..L ({"layer": l, ...}, as before levels existed);
on any other network, one per parameter ({"parameter": its name in net.parameter_names(),
"level": the first level l = 1..L that reads it, ...}). Figures a rule cannot provide are absent:

    cos_update     cos(G, dLoss/dtheta)  where G is what the rule uses in place of the gradient
                   (its update is -lr G, before decay), i.e. cos(Δtheta, -∇theta)
    rel_update     ||G - ∇theta|| / ||∇theta||
    cos_delta      cos(eps_l, d_l): the rule's hidden error signal against BP's delta dLoss/dz_l,
                   flattened over the batch (hidden levels; a parameter shared by several levels,
                   an RNN's W_hh: over all of them together)
    feedback_cos   cos of a rule's feedback with the forward weight in the feedback layout, W_lᵀ
                   for a Linear level (fa, kp, sign; dfa on Linear chains; the circuit's W̄_l V_l)

and for the four-synapse circuit, per hidden level (Theorem 1, H_l = V̄_l V̄_lᵀ, c = eta_V/eta_V̄),
at its weight's record:

    theorem1_error         ||G_l - c H_l ∇W_l|| / ||c H_l ∇W_l||
    theorem1_error_fitted  the same with the best scalar c (least squares), when c is undefined
                           (eta_V = 0) or to separate the matrix's shape from its scale
    one_minus_cos_v_vbar   1 - cos(V_l, V̄_lᵀ)
    drift_v, drift_vbar    ||ΔV_l|| / ||V_l|| of this step (Theorem 1 assumes O(eps))
    h_effective_rank       exp(entropy of the normalised eigenvalues of H_l) (Roy & Vetterli 2007)
    h_condition            lambda_max / lambda_min of H_l (inf when H_l is singular, m_l < n_l)
"""
from __future__ import annotations

import copy
import inspect
import math
from typing import Any

import torch

from .measures import cosine, relative
from .network import MLP, Network

Tensor = torch.Tensor


def bp_gradients(net: Network, loss, x: Tensor, y: Tensor) -> tuple[list[Tensor | None], list[Tensor]]:
    """Autograd's dLoss/dtheta per entry of net.parameters_list() (through net(x); an MLP's weights
    W_1..W_L first) and BP's deltas dLoss/dz_l at the hidden levels l = 1..L-1 (through
    net.forward_pass(x)), on this batch."""
    parameters = net.parameters_list()
    with torch.enable_grad():
        gradients = torch.autograd.grad(loss(net(x), y), parameters, allow_unused=True)
        forward = net.forward_pass(x)
        hidden = forward.preactivations[:-1]
        deltas = torch.autograd.grad(loss(forward.output, y), hidden) if hidden else ()
    return list(gradients), list(deltas)


def measure(rule, net: Network, x: Tensor, y: Tensor) -> list[dict[str, Any]]:
    """The records of the module docstring; the caller's rule and net are untouched."""
    from .rules.base import check_batch

    x, y = check_batch(net, x, y)
    gradients, deltas = bp_gradients(net, rule.loss, x, y)
    rule = copy.deepcopy(rule)
    if _not_drawn_yet(rule):
        # draw as the rule's own first step will: once (so the stepped copy and the alignment
        # figures see the same matrices), and, for seed=None, from a fork of torch's global
        # generator, so that measuring neither consumes the caller's random numbers nor
        # measures other matrices than the rule will draw
        with torch.random.fork_rng(devices=[]):
            _initialize(rule, net, x)
    rule_copy, net_copy = copy.deepcopy(rule), net.clone()
    with torch.no_grad():
        info = rule_copy.step(net_copy, x, y)
        return _records(rule, rule_copy, net, x, info, gradients, deltas)


def _not_drawn_yet(rule) -> bool:
    """A rule whose random matrices are drawn lazily on its first step (circuit; fa, kp, sign, dfa)."""
    if not hasattr(rule, "initialize"):
        return False
    state = rule.state_dict()
    if "drawn" in state:
        return not state["drawn"]
    return "sizes" in state and state["sizes"] is None  # the sizes the matrices were drawn for


def _initialize(rule, net: Network, x: Tensor) -> None:
    """rule.initialize(net), with the batch where the rule takes one (its shapes may depend on it)."""
    if "x" in inspect.signature(rule.initialize).parameters:
        rule.initialize(net, x=x)
    else:
        rule.initialize(net)


def _records(rule, rule_copy, net: Network, x: Tensor, info, gradients: list, deltas: list[Tensor]) -> list[dict[str, Any]]:
    estimates = info.get("gradient_estimates")
    rule_deltas = info.get("deltas")
    levels = net.levels_for(x)
    names = net.parameter_names()
    slots = net.parameter_slots(levels)
    readers: list[list[int]] = [[] for _ in names]  # parameter slot -> the levels (0-based) that read it
    for index, level_slots in enumerate(slots):
        for slot in dict.fromkeys(level_slots):
            readers[slot].append(index)
    records: list[dict[str, Any]] = [{"parameter": name, "level": (uses[0] + 1) if uses else None}
                                     for name, uses in zip(names, readers)]
    if estimates is not None:
        for record, estimate, gradient in zip(records, estimates, gradients):
            if estimate is not None and gradient is not None:
                record["cos_update"] = cosine(estimate, gradient)
                record["rel_update"] = relative(estimate, gradient)
    if rule_deltas is not None:
        for record, uses in zip(records, readers):
            hidden = [index for index in uses if index < len(rule_deltas) and rule_deltas[index] is not None]
            if hidden and len(hidden) == len([index for index in uses if index < len(levels) - 1]):
                if len(hidden) == 1:
                    record["cos_delta"] = cosine(rule_deltas[hidden[0]], deltas[hidden[0]])
                else:
                    record["cos_delta"] = cosine(torch.cat([rule_deltas[i].reshape(-1) for i in hidden]),
                                                 torch.cat([deltas[i].reshape(-1) for i in hidden]))
    circuit = hasattr(rule, "preconditioners") and getattr(rule, "sizes", None) is not None
    alignment = rule.alignment(net) if circuit else {}
    weight_slots = [level_slots[0] for level_slots in slots]  # each level's weight (a Linear chain's W_l)
    if circuit:
        feedback_cos = dict(zip(weight_slots[1:], alignment.get("cos_feedback_wT", [])))  # levels 2..L
    elif hasattr(rule, "alignment_by_parameter"):
        feedback_cos = rule.alignment_by_parameter(net, x)
    else:
        feedback_cos = {}
    for slot, value in feedback_cos.items():
        records[slot]["feedback_cos"] = value
    if circuit:
        _circuit_figures(rule, rule_copy, alignment, [records[slot] for slot in weight_slots],
                         [gradients[slot] for slot in weight_slots], [estimates[slot] for slot in weight_slots])
    if isinstance(net, MLP):  # one record per weight layer, as before levels existed
        return [{"layer": l, **{k: v for k, v in records[slot].items() if k not in ("parameter", "level")}}
                for l, slot in enumerate(weight_slots, start=1)]
    return records


def _circuit_figures(rule, stepped, alignment: dict, records, gradients, estimates) -> None:
    """Theorem 1's figures per hidden level; records, gradients and estimates are per level's W_l."""
    c = rule.theorem_scale
    for level, h in enumerate(rule.preconditioners(), start=1):
        record = records[level - 1]
        target = h @ gradients[level - 1]
        estimate = estimates[level - 1]
        record["theorem1_error"] = relative(estimate, c * target) if math.isfinite(c) else math.nan
        scale = float((estimate * target).sum() / (target * target).sum()) if float(target.norm()) > 0 else math.nan
        record["theorem1_error_fitted"] = relative(estimate, scale * target) if math.isfinite(scale) else math.nan
        record["theorem1_fitted_c"] = scale
        record["one_minus_cos_v_vbar"] = alignment["one_minus_cos_v_vbar"][level - 1]
        record["drift_v"] = relative(stepped.to_downstream[level - 1], rule.to_downstream[level - 1])
        record["drift_vbar"] = relative(stepped.to_teaching[level - 1], rule.to_teaching[level - 1])
        record.update(gram_spectrum_figures(rule.to_teaching[level - 1]))


def spectrum_figures(matrix: Tensor) -> dict[str, float]:
    """Effective rank and condition number of a symmetric positive semi-definite matrix."""
    if not bool(torch.isfinite(matrix).all()):
        return {"h_effective_rank": math.nan, "h_condition": math.nan}
    return _figures_from_eigenvalues(torch.linalg.eigvalsh(matrix.double()).clamp(min=0))


def gram_spectrum_figures(factor: Tensor) -> dict[str, float]:
    """spectrum_figures of H = F Fᵀ, from the singular values of F (the eigenvalues of H are
    their squares); more robust than an eigensolver on an ill-conditioned H."""
    if not bool(torch.isfinite(factor).all()):
        return {"h_effective_rank": math.nan, "h_condition": math.nan}
    eigenvalues = torch.zeros(factor.shape[0], dtype=torch.float64)
    singular = torch.linalg.svdvals(factor.double()).cpu()
    eigenvalues[: singular.numel()] = singular**2
    return _figures_from_eigenvalues(eigenvalues)


def _figures_from_eigenvalues(eigenvalues: Tensor) -> dict[str, float]:
    total = float(eigenvalues.sum())
    if total <= 0:
        return {"h_effective_rank": 0.0, "h_condition": math.inf}
    p = eigenvalues / total
    p = p[p > 0]
    entropy = float(-(p * p.log()).sum())
    smallest, largest = float(eigenvalues.min()), float(eigenvalues.max())
    return {"h_effective_rank": math.exp(entropy), "h_condition": largest / smallest if smallest > 0 else math.inf}
