"""How close an approximate rule's update is to backprop's, and how far a circuit has self-assembled.

`measure(rule, net, x, y)` takes one step of the rule on *copies* of the rule and the network
(nothing the caller holds changes) and compares it with autograd's gradient on the same
weights and batch. Per weight layer l = 1..L (figures a rule cannot provide are absent):

    cos_update     cos(G_l, dLoss/dW_l)  where G_l is what the rule uses in place of the gradient
                   (its update is -lr G_l, before decay), i.e. cos(ΔW_l, -∇W_l)
    rel_update     ||G_l - ∇W_l|| / ||∇W_l||
    cos_delta      cos(eps_l, d_l): the rule's hidden error signal against BP's delta dLoss/dz_l,
                   flattened over the batch (hidden layers)
    feedback_cos   cos of a rule's feedback with W_lᵀ (fa, kp, sign; the circuit's W̄_l V_l)

and for the four-synapse circuit, per hidden level (Theorem 1, H_l = V̄_l V̄_lᵀ, c = eta_V/eta_V̄):

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
import math
from typing import Any

import torch

from .measures import cosine, relative
from .network import MLP

Tensor = torch.Tensor


def bp_gradients(net: MLP, loss, x: Tensor, y: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Autograd's dLoss/dW_l (l = 1..L) and BP's deltas dLoss/dz_l (l = 1..L-1) on this batch."""
    with torch.enable_grad():
        forward = net.forward_pass(x)
        value = loss(forward.output, y)
        gradients = torch.autograd.grad(value, net.weights + forward.preactivations[:-1])
    L = net.n_layers
    return list(gradients[:L]), list(gradients[L:])


def measure(rule, net: MLP, x: Tensor, y: Tensor) -> list[dict[str, Any]]:
    """One record per weight layer (see the module docstring); the caller's rule and net are untouched."""
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
            rule.initialize(net)
    rule_copy, net_copy = copy.deepcopy(rule), net.clone()
    with torch.no_grad():
        info = rule_copy.step(net_copy, x, y)
        return _records(rule, rule_copy, net, info, gradients, deltas)


def _not_drawn_yet(rule) -> bool:
    """A rule whose random matrices are drawn lazily on its first step (circuit; fa, kp, sign, dfa)."""
    if not hasattr(rule, "initialize"):
        return False
    state = rule.state_dict()
    return "sizes" in state and state["sizes"] is None  # the sizes the matrices were drawn for


def _records(rule, rule_copy, net: MLP, info: dict, gradients: list[Tensor], deltas: list[Tensor]) -> list[dict[str, Any]]:
    estimates = info.get("gradient_estimates")
    rule_deltas = info.get("deltas")
    L = net.n_layers
    records: list[dict[str, Any]] = [{"layer": l} for l in range(1, L + 1)]
    if estimates is not None:
        for record, estimate, gradient in zip(records, estimates, gradients):
            record["cos_update"] = cosine(estimate, gradient)
            record["rel_update"] = relative(estimate, gradient)
    if rule_deltas is not None:
        for record, eps, delta in zip(records, rule_deltas, deltas):
            record["cos_delta"] = cosine(eps, delta)
    circuit = hasattr(rule, "preconditioners") and getattr(rule, "sizes", None) is not None
    alignment = rule.alignment(net) if circuit else {}
    if circuit:
        feedback_cos = alignment.get("cos_feedback_wT", [])
    elif hasattr(rule, "feedback_alignment"):
        feedback_cos = rule.feedback_alignment(net)
    else:
        feedback_cos = []
    for l, value in zip(range(2, L + 1), feedback_cos):  # feedback of layers 2..L
        records[l - 1]["feedback_cos"] = value
    if circuit:
        _circuit_figures(rule, rule_copy, alignment, records, estimates, gradients)
    return records


def _circuit_figures(rule, stepped, alignment: dict, records, estimates, gradients) -> None:
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
