"""The predictive coding network (PCN) shared by IL, Z-IL and Fa-Z-IL.

Notation (forward-indexed; Song et al. 2020 count layers from the output instead, so their
layer l is our layer L - l, and their "layer at distance k from the output" is our L - k):

    value nodes   x_0 (clamped to h_0 = input_map(input)), x_1 .. x_L   (x_l plays z_l)
    rates         r_0 = x_0,  r_l = f(x_l) for 1 <= l < L
    predictions   mu_l = W_l r_{l-1} + b_l
    error nodes   eps_l = x_l - mu_l           (unit variance)
    energy        F = sum_l 1/2 ||eps_l||^2

Inference (one rule for both phases; all layers from the same state, simultaneously):

    x_l <- x_l + gamma * ( -eps_l + f'(x_l) * (W_{l+1}^T eps_{l+1}) )      for 1 <= l < L

The output layer: in the prediction phase it is free (x_L <- x_L - gamma * eps_L); in the
learning phase the teacher clamps it. For MSE the value node is clamped, x_L = y, so
eps_L = y - mu_L = -dLoss/dz at mu_L. For cross-entropy the error node carries the same
quantity, eps_L = -(dLoss/dz)(mu_L) = y - softmax(mu_L): the gradient of the energy
F = CE(y, softmax(mu_L)) + sum_{l<L} 1/2 ||eps_l||^2. At the feed-forward state both are -e.

Our decision against the SPEC's letter: the SPEC clamps the cross-entropy error at its
feed-forward value for the whole learning phase. For Z-IL and Fa-Z-IL that is the same (only
eps_L(0) is ever used), but for IL a constant output error makes the energy unbounded below
(a linear term -eps_L . mu_L): hidden nodes drift until f saturates. Measured on digits
(64-64-64-10, tanh, lr 0.1, 10 epochs): IL with T = 50 fell to 39% test accuracy with the
constant clamp; see docs/rules.md for the figure with the moving error.

Plasticity (local, Hebbian), batch mean:  W_l <- W_l + alpha * <eps_l r_{l-1}^T>,
b_l <- b_l + alpha * <eps_l>, optionally gated per neuron (Fa-Z-IL's phi).

Ordering within one time step t: errors are computed from the state at t; the weight changes
of step t and the value-node changes of step t are both computed from that same state; then
both are applied. So inference from t to t+1 uses the weights as they were at t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..network import MLP
from .base import hebbian_change

Tensor = torch.Tensor


# -- the teacher: how the target enters the output layer --------------------------------------
@dataclass
class ValueClamp:
    """MSE: the output value node is clamped to the target; eps_L = y - mu_L."""

    target: Tensor

    def output_error(self, output_value: Tensor, output_prediction: Tensor) -> Tensor:
        return self.target - output_prediction


@dataclass
class LossTeacher:
    """Other losses (cross-entropy): the output error node carries -(dLoss/dz) at the current
    prediction, eps_L = -(softmax(mu_L) - y) for cross-entropy. At the feed-forward state this is
    the SPEC's clamped error -e; it moves with mu_L afterwards, as eps_L = y - mu_L does for MSE,
    so IL descends a bounded energy (see the module docstring)."""

    loss: object
    target: Tensor

    def output_error(self, output_value: Tensor, output_prediction: Tensor) -> Tensor:
        return -self.loss.output_error(output_prediction, self.target)


class FreeOutput:
    """No teacher (prediction phase): the output value node relaxes like any other."""

    def output_error(self, output_value: Tensor, output_prediction: Tensor) -> Tensor:
        return output_value - output_prediction


@dataclass
class ErrorClamp:
    """The SPEC's letter for cross-entropy: eps_L fixed at -(dLoss/dz_L) of the teacher's onset."""

    error: Tensor

    def output_error(self, output_value: Tensor, output_prediction: Tensor) -> Tensor:
        return self.error


def make_teacher(loss, target: Tensor, output: Tensor | None = None, fixed_error: bool = False):
    """The teacher for `loss`: a clamped output value node for MSE, an error node otherwise
    (moving with the prediction, or with fixed_error=True held at its value for `output`)."""
    if loss.name == "mse":
        return ValueClamp(target)
    if fixed_error:
        return ErrorClamp(-loss.output_error(output, target))
    return LossTeacher(loss, target)


# -- the state and one step of the dynamics ---------------------------------------------------
@dataclass
class PCState:
    input_rates: Tensor  # r_0 = x_0, clamped
    value_nodes: list[Tensor]  # x_1 .. x_L

    def copy(self) -> "PCState":
        return PCState(self.input_rates, [x.clone() for x in self.value_nodes])


def feedforward_state(net: MLP, x: Tensor) -> PCState:
    """The prediction-phase fixpoint (condition C1): value nodes at the feed-forward pass."""
    sweep = net.forward_pass(x)
    return PCState(sweep.rates[0], list(sweep.preactivations))


def rates_of(net: MLP, state: PCState) -> list[Tensor]:
    """r_0 .. r_{L-1}."""
    return [state.input_rates] + [net.activation(x) for x in state.value_nodes[:-1]]


def predictions_of(net: MLP, rates: list[Tensor]) -> list[Tensor]:
    """mu_1 .. mu_L."""
    return [net.layer_input(layer, r) for layer, r in enumerate(rates, start=1)]


def errors_of(state: PCState, predictions: list[Tensor], teacher) -> list[Tensor]:
    """eps_1 .. eps_L; the output's comes from the teacher (or the free output)."""
    hidden = [x - mu for x, mu in zip(state.value_nodes[:-1], predictions[:-1])]
    return hidden + [teacher.output_error(state.value_nodes[-1], predictions[-1])]


def inference_step(net: MLP, state: PCState, errors: list[Tensor], gamma: float, output_free: bool) -> PCState:
    """x(t+1) from x(t) and eps(t), with the weights as they are at t."""
    weights = net.weights
    f_prime = net.activation.derivative
    new_values = []
    for layer, (x, eps) in enumerate(zip(state.value_nodes[:-1], errors[:-1]), start=1):
        feedback = errors[layer] @ weights[layer]  # W_{l+1}^T eps_{l+1}, batch row-wise
        new_values.append(x + gamma * (-eps + f_prime(x) * feedback))
    output = state.value_nodes[-1]
    new_values.append(output - gamma * errors[-1] if output_free else output)
    return PCState(state.input_rates, new_values)


#: A plasticity gate for one time step: given (t, errors, predictions), a list with one entry
#: per layer: None (no update at this step), or a (B, n_l) tensor of per-neuron gates, or 1.0.
PlasticityGate = Callable[[int, list[Tensor], list[Tensor]], list]


@dataclass
class DynamicsResult:
    state: PCState
    trace: list[dict]
    errors: list[Tensor]  # eps at the last simulated step


def advance(
    net: MLP,
    state: PCState,
    teacher,
    *,
    t: int,
    gamma: float,
    lr: float,
    gate: PlasticityGate,
    output_free: bool,
    infer: bool = True,
    apply: bool = True,
) -> tuple[PCState, list[Tensor], list]:
    """One time step t: errors from the state; weight changes where `gate` says; x(t+1).

    Returns the new state (the same one if infer=False), the errors at t and the per-layer
    changes (None where the layer did not learn), applied to the net unless apply=False.
    """
    rates = rates_of(net, state)
    predictions = predictions_of(net, rates)
    errors = errors_of(state, predictions, teacher)
    gates = gate(t, errors, predictions)
    changes = [
        None if g is None else hebbian_change(lr, eps, r, None if isinstance(g, float) else g)
        for g, eps, r in zip(gates, errors, rates)
    ]
    if infer:
        state = inference_step(net, state, errors, gamma, output_free)
    if apply:
        apply_changes(net, changes)
    return state, errors, changes


def apply_changes(net: MLP, changes: list) -> None:
    """Write per-layer (weight change, bias change) pairs into the net; None = no change."""
    weights, biases = net.weights, net.biases
    for layer, change in enumerate(changes):
        if change is None:
            continue
        weights[layer].add_(change[0])
        if biases is not None:
            biases[layer].add_(change[1])


def add_changes(total: list, changes: list) -> list:
    """Accumulate per-layer changes (for plasticity pooled over a presentation)."""
    return [
        b if a is None else a if b is None else (a[0] + b[0], a[1] + b[1])
        for a, b in zip(total, changes)
    ]


def simulate(
    net: MLP,
    state: PCState,
    teacher,
    *,
    gamma: float,
    n_steps: int,
    lr: float,
    gate: PlasticityGate,
    record: bool = False,
    pool_changes: bool = False,
) -> DynamicsResult:
    """Run t = 0 .. n_steps-1 of inference with plasticity, updating `net` in place.

    The teacher is on throughout (a FreeOutput teacher gives the prediction phase). No
    inference step follows the last t: nothing after it could change a weight. With
    pool_changes the weight changes are summed and written once, after the last step.
    """
    output_free = isinstance(teacher, FreeOutput)
    if isinstance(teacher, ValueClamp):
        state = clamp_output(state, teacher)
    trace: list[dict] = []
    errors: list[Tensor] = []
    pooled: list = [None] * net.n_layers
    for t in range(n_steps):
        before = state
        state, errors, changes = advance(
            net, state, teacher, t=t, gamma=gamma, lr=lr, gate=gate, output_free=output_free,
            infer=t < n_steps - 1, apply=not pool_changes,
        )
        if pool_changes:
            pooled = add_changes(pooled, changes)
        if record:
            trace.append(trace_entry(t, before, errors, changes))
    if pool_changes:
        apply_changes(net, pooled)
    return DynamicsResult(state, trace, errors)


def clamp_output(state: PCState, teacher: ValueClamp) -> PCState:
    return PCState(state.input_rates, state.value_nodes[:-1] + [teacher.target])


def trace_entry(t: int, state: PCState, errors: list[Tensor], changes: list) -> dict:
    return {
        "t": t,
        "value_nodes": [x.clone() for x in state.value_nodes],
        "error_nodes": [e.clone() for e in errors],
        "updated_layers": [layer for layer, c in enumerate(changes, start=1) if c is not None],
    }


def present(
    net: MLP,
    x: Tensor,
    y: Tensor,
    loss,
    *,
    gamma: float,
    n_steps: int,
    lr: float,
    gate: PlasticityGate,
    init_noise: float = 0.0,
    noise: torch.Generator | None = None,
    record: bool = False,
    pool_changes: bool = False,
    fixed_error: bool = False,
) -> dict:
    """One training pair (batch) for a PCN rule: start at the feed-forward pass (plus noise
    when C1 is broken on purpose), put the teacher on, run `simulate`.

    Returns the diagnostics every rule reports: "loss" and "output" before the update, and
    "trace" when record=True.
    """
    state = feedforward_state(net, x)
    output = state.value_nodes[-1]
    info = {"loss": float(loss(output, y)), "output": output}
    teacher = make_teacher(loss, y, output, fixed_error=fixed_error)
    state = noisy_start(state, init_noise, noise)
    result = simulate(
        net, state, teacher, gamma=gamma, n_steps=n_steps, lr=lr, gate=gate, record=record, pool_changes=pool_changes
    )
    if record:
        info["trace"] = result.trace
    return info


def noisy_start(state: PCState, sigma: float, generator: torch.Generator | None) -> PCState:
    """Break C1: hidden value nodes start at the feed-forward pass plus N(0, sigma^2) noise."""
    if sigma == 0:
        return state
    noisy = []
    for x in state.value_nodes[:-1]:
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
        noisy.append(x + sigma * noise)
    return PCState(state.input_rates, noisy + [state.value_nodes[-1]])


def batch_loss(loss, output: Tensor, target: Tensor) -> float:
    return float(loss(output, target))
