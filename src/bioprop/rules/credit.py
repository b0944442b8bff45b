"""The credit / E-I balance rule, Fan & Mysore, "Contribute to balance, wire in accordance:
emergence of backpropagation from a simple, bio-plausible neuroplasticity rule" (arXiv
2405.14139, 2024).

Each neuron has a firing rate x_i and an internal state, its credit c_i. Three processes run
on progressively slower timescales (network: `bioprop.RateNetwork`; the processes as pure
functions: `bioprop.rate_network`):

1. firing (fastest), to its fixpoint:  x_i = sigma_i(s_i),  s = W x + b;  input neurons'
   rates are clamped to the stimulus.
2. credit (retrograde signalling), on the converged net input s, to its fixpoint: neuron i
   sends c_i g(s_i) w_ij back to each presynaptic neuron j, so  c <- W^T (g(s) * c),  where g
   is the balance function (bell-shaped, largest at the balanced set point; `bioprop.balance`)
   and g := 0 on firing-clamped input neurons. The loss reaches the output neurons in one of
   two ways (`output_mode`):
     "clamp"  (the paper): c_out is clamped to -dLoss/dx_out;
     "inject" (Almeida-Pineda):  c <- W^T (g(s) * c) + e,  e = -dLoss/dx on the outputs, 0
              elsewhere: the error is added to the outputs' credit instead of replacing it.
3. plasticity (slowest):  dw_ij = lr * <c_i g(s_i) x_j>  (batch mean) on existing synapses
   only; biases, where the network has them, db_i = lr * <c_i g(s_i)>.

Notation map. The paper's w_ij is the synapse from j onto i, as our W[i, j]; its firing x, net
input s, credit c, balance g and learning rate r are ours; credit is a negative gradient,
c = -dLoss/dx. The loss is on the output neurons' rates, batch mean: "mse" per sample
0.5 ||x_out - y||^2, "ce" softmax cross-entropy of x_out (on a linear output neuron its rate is
its net input, so this is the usual cross-entropy on logits).

Why it is backpropagation (the paper's theorem, our indexing). In an MLP, neurons h_0 = x
(inputs), h_1 .. h_{L-1}, z_L (linear outputs), g = sigma' (the balance "derivative"; 1 on a
linear output): at the firing fixpoint s_l = z_l; the clamped output credit is c_L = -e; the
credit fixpoint gives c_{l-1} = W_l^T (f'(z_l) * c_l), which is -W_l^T d_l, so
c_l g(z_l) = -d_l and dW_l = lr <c_l g(z_l) h_{l-1}^T> = -lr <d_l h_{l-1}^T>: SGD. The same
argument holds on any feed-forward DAG whose output neurons send no synapses onward (their
credit is then only the clamped error). In a recurrent network at a stable firing fixpoint,
the inject mode's credit fixpoint solves the adjoint equation of the fixpoint,
c = -dLoss/dx + W^T (sigma'(s) * c), so the update is the exact gradient of the loss at the
fixpoint (Almeida 1987, Pineda 1987); clamp mode drops W^T (sigma' * c) at the outputs and is
biased when outputs feed back (measured: docs/rules.md).

Timescale cut (`firing_steps`, `credit_steps`; None = to the fixpoint): each process runs k
synchronous iterations from rest (rates 0 and credit 0, clamps applied from the start). In an
MLP with L weight layers firing is exact after L iterations and credit after L - 1 (clamp)
or L (inject); fewer diverge from BP (`bioprop verify --rule credit` prints the table).

Two implementations of the same dynamics (`dynamics`):
- "layered", for a bioprop.MLP: the block structure of the layered network, at BP's cost.
  To the fixpoint, firing is the forward pass layer by layer and credit one sweep
  c_{l-1} = (g_l * c_l) @ W_l down the layers, since a layered network settles in one pass.
  With a cut, all layers are updated synchronously from rest for k sweeps, exactly as the
  dense network would (tested equal). `converged` is then known from the depth: k >= L for
  firing, k >= L - 1 (clamp) or L (inject) for credit.
- "dense", for a bioprop.RateNetwork (and, on request, an MLP embedded with
  RateNetwork.from_mlp): the (n, n) circuit iterated until an iteration changes the state by
  at most `tol` relative (default 1024 ulp) or `max_steps` iterations have run. A process that
  does not settle is reported (a RuntimeWarning and *_converged False in the info dict) and the
  update is still applied, from the unsettled state.
"auto" picks "layered" for an MLP and "dense" for a RateNetwork.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from ..balance import Balance, get_balance
from ..errors import BioPropError
from ..network import MLP
from ..rate_network import (
    RateNetwork,
    Settling,
    check_rate_batch,
    default_tolerance,
    settle_credit,
    weight_change,
)
from .base import LearningRule, check_batch, check_int, check_positive, sgd_write

Tensor = torch.Tensor

OUTPUT_MODES = ("clamp", "inject")
DYNAMICS = ("auto", "layered", "dense")


class SettlingWarning(RuntimeWarning):
    """A fast process (firing or credit) did not reach its fixpoint within max_steps."""


def settling_steps_needed(n_layers: int, output_mode: str = "clamp") -> tuple[int, int]:
    """(firing, credit) iterations from rest after which a layered network with `n_layers`
    weight layers gives BP's update exactly (see the module docstring)."""
    return n_layers, n_layers - 1 if output_mode == "clamp" else n_layers


class CreditRule(LearningRule):
    name = "credit"
    paper = "Fan & Mysore 2024"
    option_help = {
        "output_mode": "how the loss reaches the outputs' credit: 'clamp' (c_out = -dLoss/dx_out, the paper) or "
                       "'inject' (added to it, Almeida-Pineda: exact at a recurrent fixpoint)",
        "balance": "balance function g: 'derivative' (sigma', the BP case) or 'gaussian' (a bell of width `width`), "
                   "or a function",
        "width": "width of the gaussian balance function",
        "firing_steps": "timescale cut: firing iterations from rest (None: to the fixpoint; fewer than L break exactness)",
        "credit_steps": "timescale cut: credit iterations from rest (None: to the fixpoint; fewer than L-1 with clamp "
                        "or L with inject break exactness)",
        "tol": "dense dynamics: a process has settled when an iteration changes it by at most tol, relative "
               "(None: 1024 ulp of the dtype)",
        "max_steps": "dense dynamics: iterations after which a process that has not settled is reported (a warning) and used as it is",
        "dynamics": "'layered' (the MLP's block form, BP's cost), 'dense' (the n x n circuit iterated) or 'auto' "
                    "(layered for an MLP, dense for a RateNetwork)",
    }
    negative_controls = (
        ("balance gaussian (width 1), not sigma'", {"balance": "gaussian"}),
        ("firing cut one step short (k = L-1)", lambda n_levels: {"firing_steps": n_levels - 1}),
        ("credit cut one step short (k = L-2)", lambda n_levels: {"credit_steps": n_levels - 2}),
    )
    benchmark_cases = {"credit": {}}

    def step_cut_columns(self, n_levels: int) -> dict:
        firing, credit = settling_steps_needed(n_levels, self.output_mode)
        return {
            "firing": (lambda k: {"firing_steps": k}, firing),
            "credit": (lambda k: {"credit_steps": k}, credit),
            "both": (lambda k: {"firing_steps": k, "credit_steps": k}, max(firing, credit)),
        }

    def __init__(
        self,
        lr=0.01,
        loss="mse",
        output_mode="clamp",
        balance="derivative",
        width=1.0,
        firing_steps=None,
        credit_steps=None,
        tol=None,
        max_steps=1000,
        dynamics="auto",
    ):
        super().__init__(lr, loss)
        if output_mode not in OUTPUT_MODES:
            raise BioPropError(f"output_mode={output_mode!r}: choose 'clamp' (the paper) or 'inject' (Almeida-Pineda)")
        self.output_mode = output_mode
        self.width = check_positive("width", width)
        self.balance = balance
        self._balance: Balance = get_balance(balance, self.width)
        self.firing_steps = None if firing_steps is None else check_int("firing_steps", firing_steps, 1)
        self.credit_steps = None if credit_steps is None else check_int("credit_steps", credit_steps, 0)
        self.tol = None if tol is None else check_positive("tol", tol, allow_zero=True)
        self.max_steps = check_int("max_steps", max_steps, 1)
        if dynamics not in DYNAMICS:
            raise BioPropError(f"dynamics={dynamics!r}: choose 'auto', 'layered' (MLP block form) or 'dense' (n x n circuit)")
        self.dynamics = dynamics

    @property
    def claims_exactness(self) -> bool:  # type: ignore[override]
        """BP exactly on layered networks: balance sigma' and both processes run to their fixpoint."""
        return self._balance.is_derivative and self.firing_steps is None and self.credit_steps is None

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "output_mode": self.output_mode,
            "balance": self.balance,
            "width": self.width,
            "firing_steps": self.firing_steps,
            "credit_steps": self.credit_steps,
            "tol": self.tol,
            "max_steps": self.max_steps,
            "dynamics": self.dynamics,
        }

    # -- one training step --------------------------------------------------------------------
    def step(self, net, x, y, trace=False):
        """One training step; `net` is a bioprop.MLP or a bioprop.RateNetwork.

        MLP: x (B, n_0), y (B, n_L) or (B,) labels, as for every rule. RateNetwork: x (B,
        n_inputs) is the stimulus of the input neurons and y (B, n_outputs) or (B,) labels the
        targets of the output neurons. The info dict holds "loss" and "output" (before the
        update), "credit", firing_/credit_ "steps", "converged" and "residual" (see Settling),
        "converged" (both), and with trace=True "trace": per iteration {"phase", "step", state}.
        """
        if isinstance(net, RateNetwork):
            if self.dynamics == "layered":
                raise BioPropError("dynamics='layered' is the block form of a bioprop.MLP; a RateNetwork runs 'dense' (or 'auto')")
            x, y = check_rate_batch(net, x, y)
            with torch.no_grad():
                return self._dense_step(net, x, y, trace)
        if not isinstance(net, MLP):
            raise BioPropError(f"net: expected a bioprop.MLP or a bioprop.RateNetwork, got {type(net).__name__}")
        x, y = check_batch(net, x, y)
        with torch.no_grad():
            if self.dynamics == "dense":
                return self._embedded_step(net, x, y, trace)
            return self._layered_step(net, x, y, trace)

    # -- the general circuit --------------------------------------------------------------------
    def _dense_step(self, net: RateNetwork, stimulus: Tensor, y: Tensor, trace: bool):
        firing_record = [] if trace else None
        credit_record = [] if trace else None
        rates, s, firing = net.settle_firing(stimulus, steps=self.firing_steps, tol=self.tol, max_steps=self.max_steps,
                                             record=firing_record)
        output = rates.index_select(1, net.outputs)
        error = -self.loss.output_error(output, y)  # -dLoss/dx_out
        gain = net.gain(s, self._balance)
        if self.output_mode == "clamp":
            clamped, clamp_value, injection = net.outputs, error, None
        else:
            clamped, clamp_value = None, None
            injection = torch.zeros_like(rates).index_copy(1, net.outputs, error)
        credit, credit_settling = settle_credit(
            net.W, gain, injection=injection, clamped=clamped, clamp_value=clamp_value, steps=self.credit_steps,
            tol=self.tol, max_steps=self.max_steps, record=credit_record,
        )
        self._warn_unsettled(firing, credit_settling, net.dtype)
        dW, db = weight_change(credit, gain, rates, self.lr, net.mask)
        sgd_write(net.W, dW)
        if net.bias is not None:
            sgd_write(net.bias, db)
        info = {
            "loss": float(self.loss(output, y)),
            "output": output,
            "rates": rates,
            "net_input": s,
            "credit": credit,
            **_settling_info(firing, credit_settling),
        }
        if trace:
            info["trace"] = _trace(firing_record, credit_record)
        return info

    def _warn_unsettled(self, firing: Settling, credit_settling: Settling, dtype) -> None:
        tol = default_tolerance(dtype) if self.tol is None else self.tol
        for process, settling, cut in (("firing", firing, self.firing_steps), ("credit", credit_settling, self.credit_steps)):
            if cut is None and not settling.converged:
                warnings.warn(
                    f"credit rule: {process} did not settle within max_steps={self.max_steps} iterations (last relative "
                    f"change {settling.residual:.2e}, tolerance {tol:.1e}); the update was applied from the unsettled "
                    "state. An unstable fixpoint needs smaller weights (init_scale); a slow one a larger max_steps or tol.",
                    SettlingWarning,
                    stacklevel=4,
                )

    def _embedded_step(self, mlp: MLP, x: Tensor, y: Tensor, trace: bool):
        """The dense circuit on an MLP: embed it, step, write the blocks back."""
        embedded = RateNetwork._embed(mlp)
        info = self._dense_step(embedded, mlp.input_rates(x), y, trace)
        weights, biases = embedded.layer_blocks()
        for parameter, value in zip(mlp.parameters_list(), weights + (biases or [])):
            parameter.copy_(value)
        return info

    # -- the layered block form ---------------------------------------------------------------
    def _layered_step(self, net: MLP, x: Tensor, y: Tensor, trace: bool):
        n_layers = net.n_layers
        needed_firing, needed_credit = settling_steps_needed(n_layers, self.output_mode)
        firing_cut = self.firing_steps if self.firing_steps is not None else (needed_firing if trace else None)
        credit_cut = self.credit_steps if self.credit_steps is not None else (needed_credit if trace else None)
        firing_record = [] if trace else None
        credit_record = [] if trace else None

        rates, preactivations, residual = _layered_firing(net, x, firing_cut, firing_record)
        firing = Settling(needed_firing if firing_cut is None else firing_cut,
                          firing_cut is None or firing_cut >= needed_firing, residual)
        output = preactivations[-1]
        error = -self.loss.output_error(output, y)
        gains = self._layered_gains(net, preactivations)
        credit, residual = _layered_credit(net, error, gains, self.output_mode, credit_cut, credit_record)
        credit_settling = Settling(needed_credit if credit_cut is None else credit_cut,
                                   credit_cut is None or credit_cut >= needed_credit, residual)

        biases = net.biases
        drives = [c if g is None else c * g for c, g in zip(credit, gains)]  # c_l g(z_l): BP's -d_l at the fixpoint
        batch = x.shape[0]
        # <c_l g(z_l) h_{l-1}ᵀ>, in BP's sign convention for bioprop.diagnostics: G_l = -<.>, and dW_l = -lr G_l
        estimates = [-(drive.T @ presynaptic) / batch for drive, presynaptic in zip(drives, rates)]
        for layer, (weight, drive, estimate) in enumerate(zip(net.weights, drives, estimates)):
            weight.data.add_(estimate, alpha=-self.lr)
            if biases is not None:
                biases[layer].data.add_(drive.mean(dim=0), alpha=self.lr)
        info = {
            "loss": float(self.loss(output, y)),
            "output": output,
            "credit": credit,
            "deltas": [-drive for drive in drives[:-1]],  # delta_l = -c_l g(z_l)
            "gradient_estimates": estimates,
            **_settling_info(firing, credit_settling),
        }
        if trace:
            info["trace"] = _trace(firing_record, credit_record)
        return info

    def _layered_gains(self, net: MLP, preactivations: list[Tensor]) -> list[Tensor | None]:
        """g(z_l) for l = 1..L; None where g is 1 (sigma' of the linear output layer)."""
        if self._balance.is_derivative:
            return [net.activation.derivative(z) for z in preactivations[:-1]] + [None]
        return [self._balance(z) for z in preactivations]


def _layered_firing(net: MLP, x: Tensor, steps: int | None, record: list | None):
    """Rates h_0..h_{L-1} and net inputs z_1..z_L after `steps` synchronous sweeps from rest
    (None: the fixpoint, i.e. the forward pass), and the last sweep's relative change."""
    if steps is None:
        sweep = net.forward_pass(x)
        return sweep.rates, sweep.preactivations, 0.0
    n_layers = net.n_layers
    input_rates = net.input_rates(x)
    batch = x.shape[0]
    state = [torch.zeros(batch, size, dtype=x.dtype, device=x.device) for size in net.sizes[1:]]  # rates of layers 1..L
    residual = math.inf
    preactivations: list[Tensor] = []
    for t in range(1, steps + 1):
        presynaptic = [input_rates] + state[:-1]
        preactivations = [net.layer_input(layer, presynaptic[layer - 1]) for layer in range(1, n_layers + 1)]
        new = [net.activation(z) for z in preactivations[:-1]] + [preactivations[-1]]  # linear output
        residual = _relative_change(new, state)
        state = new
        if record is not None:
            record.append([input_rates] + state)
    return [input_rates] + state[:-1], preactivations, residual


def _layered_credit(net: MLP, error: Tensor, gains: list, mode: str, steps: int | None, record: list | None):
    """Credit c_1..c_L after `steps` synchronous sweeps from rest (None: the fixpoint, one
    sweep down the layers), and the last sweep's relative change. The outputs send no synapses,
    so their credit is the clamped error, or in inject mode 0 + the injected error from the
    first sweep on."""
    weights = net.weights
    n_layers = net.n_layers

    def passed_down(layer: int, credit_above: Tensor) -> Tensor:
        """c_{layer-1} = W_layer^T (g_layer * c_layer), row-wise."""
        gain = gains[layer - 1]
        drive = credit_above if gain is None else credit_above * gain
        return drive @ weights[layer - 1]

    if steps is None:
        credit = [error]
        for layer in range(n_layers, 1, -1):
            credit.insert(0, passed_down(layer, credit[0]))
        return credit, 0.0
    batch = error.shape[0]
    state = [torch.zeros(batch, size, dtype=error.dtype, device=error.device) for size in net.sizes[1:-1]]
    state.append(error if mode == "clamp" else torch.zeros_like(error))
    residual = math.inf
    for t in range(1, steps + 1):
        new = [passed_down(layer + 1, state[layer]) for layer in range(1, n_layers)] + [error]
        residual = _relative_change(new, state)
        state = new
        if record is not None:
            record.append(list(state))
    return state, residual


def _relative_change(new: list[Tensor], old: list[Tensor]) -> float:
    change = max((float((a - b).abs().max()) for a, b in zip(new, old) if a.numel()), default=0.0)
    size = max((float(a.abs().max()) for a in new if a.numel()), default=0.0)
    if size > 0:
        return change / size
    return 0.0 if change == 0 else math.inf


def _settling_info(firing: Settling, credit: Settling) -> dict[str, Any]:
    return {
        "firing_steps": firing.steps,
        "firing_converged": firing.converged,
        "firing_residual": firing.residual,
        "credit_steps": credit.steps,
        "credit_converged": credit.converged,
        "credit_residual": credit.residual,
        "converged": firing.converged and credit.converged,
    }


def _trace(firing_record: list, credit_record: list) -> list[dict[str, Any]]:
    return [{"phase": "firing", "step": t, "rates": rates} for t, rates in enumerate(firing_record, start=1)] + [
        {"phase": "credit", "step": t, "credit": credit} for t, credit in enumerate(credit_record, start=1)
    ]


__all__ = ["CreditRule", "SettlingWarning", "settling_steps_needed"]
