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
- "layered", for any layered bioprop.Network (an MLP, a wrapped nn.Sequential with Linear and
  conv levels, an ElmanRNN unrolled over its tokens): the levels of SPEC.md 1b at BP's cost.
  Neurons are the entries of each level's rates r_l; a level's synapses are its affine map A_l
  (a conv kernel's shared synapses, an RNN's W_hh shared by all time steps), the net input of
  level l's neurons is z_l, and the balance function takes the place of the activation's
  derivative in the rate VJP (`RateFunction.vjp(..., derivative=balance)`; a pooling's routing
  is kept). Credit lives on the rates, c_l in r_l's shape, and passes down as

      c_{l-1} = A_l^T [ g_l'(z_l)^T c_l ]   (for an MLP: W_l^T (g(z_l) * c_l)),

  the input VJP of the drive c_l g(z_l); the top level's drive is c_L * g(z_L) (g := 1 there when
  g = sigma': a linear output), and every parameter's change is lr times the parameter VJP of its
  levels' drives, batch mean, summed over the levels that share it (BPTT's sum over time steps).
  To the fixpoint, firing is the forward pass and credit one backward sweep
  (`bioprop.sweeps.backward_sweep` with derivative=balance), since a layered network settles in
  one pass. With a cut, all levels are updated synchronously from rest for k sweeps, exactly as
  the dense network would (tested equal on an MLP). `converged` is then known from the depth:
  k >= L for firing, k >= L - 1 (clamp) or L (inject) for credit, with L the number of levels
  (an ElmanRNN's T time steps plus its readout).
- "dense", for a bioprop.RateNetwork (and, on request, an MLP embedded with
  RateNetwork.from_mlp): the (n, n) circuit iterated until an iteration changes the state by
  at most `tol` relative (default 1024 ulp) or `max_steps` iterations have run. A process that
  does not settle is reported (a RuntimeWarning and *_converged False in the result) and the
  update is still applied, from the unsettled state.
"auto" picks "layered" for a Network (an MLP included) and "dense" for a RateNetwork.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from ..balance import Balance, get_balance
from ..errors import BioPropError
from ..network import MLP, ForwardPass, Network
from ..sweeps import backward_sweep, descend, pool
from ..rate_network import (
    RateNetwork,
    Settling,
    check_rate_batch,
    default_tolerance,
    settle_credit,
    weight_change,
)
from .base import LearningRule, StepResult, check_batch, check_int, check_positive, sgd_write

Tensor = torch.Tensor

OUTPUT_MODES = ("clamp", "inject")
DYNAMICS = ("auto", "layered", "dense")


@dataclass
class CreditStepResult(StepResult):
    """One step of the credit rule.

    credit:               layered: c_1 .. c_L, each in its level's rates' shape; dense: c (B, n)
    deltas:               layered: delta_l = -c_l g(z_l) of the hidden levels (BP's d_l at the
                          fixpoint with g = sigma'); None for the dense circuit
    gradient_estimates:   layered: per entry of net.parameters_list(), -<drive (dz/dtheta)>, the
                          update being -lr times it; None for the dense circuit
    rates, net_input:     dense: the settled firing x and net input s; None when layered
    firing_/credit_ steps, converged, residual: see Settling; converged: both converged (the
                          layered form's residuals after cut sweeps are 0-d tensors: no read per step)
    """

    credit: list | Tensor | None = field(default_factory=lambda: None)  # no class default: may be deferred
    deltas: list | None = field(default_factory=lambda: None)
    gradient_estimates: list | None = None
    rates: Tensor | None = None
    net_input: Tensor | None = None
    firing_steps: int = 0
    firing_converged: bool = True
    firing_residual: float | Tensor = 0.0
    credit_steps: int = 0
    credit_converged: bool = True
    credit_residual: float | Tensor = 0.0
    converged: bool = True


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
        """One training step; `net` is a bioprop.Network (an MLP, a wrapped nn.Sequential, an
        ElmanRNN) or a bioprop.RateNetwork.

        Network: x in its input shape, y (B, n_L) or (B,) labels, as for every rule. RateNetwork:
        x (B, n_inputs) is the stimulus of the input neurons and y (B, n_outputs) or (B,) labels
        the targets of the output neurons. The CreditStepResult holds loss and output (before the
        update), credit, firing_/credit_ steps, converged and residual (see Settling), converged
        (both), and with trace=True the trace: per iteration {"phase", "step", state}.
        """
        if isinstance(net, RateNetwork):
            if self.dynamics == "layered":
                raise BioPropError("dynamics='layered' is the block form of a layered bioprop.Network; a RateNetwork runs 'dense' (or 'auto')")
            x, y = check_rate_batch(net, x, y)
            with torch.no_grad():
                return self._dense_step(net, x, y, trace)
        if not isinstance(net, Network):
            raise BioPropError(
                f"net: expected a network (bioprop.wrap(model), a bioprop.ElmanRNN, a bioprop.MLP or a "
                f"bioprop.RateNetwork), got {type(net).__name__}"
            )
        if self.dynamics == "dense" and not isinstance(net, MLP):
            raise BioPropError(
                f"dynamics='dense' embeds a bioprop.MLP in the n x n circuit (RateNetwork.from_mlp); {net.describe()} "
                "runs dynamics='layered' (or 'auto')"
            )
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
        return CreditStepResult(
            self.loss(output, y).detach(), output, _trace(firing_record, credit_record) if trace else None,
            credit=credit, rates=rates, net_input=s, **_settling_info(firing, credit_settling),
        )

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

    # -- the layered form ---------------------------------------------------------------------
    def _layered_step(self, net: Network, x: Tensor, y: Tensor, trace: bool):
        n_levels = len(net.levels_for(x)) if not isinstance(net, MLP) else net.n_layers
        needed_firing, needed_credit = settling_steps_needed(n_levels, self.output_mode)
        firing_cut = self.firing_steps if self.firing_steps is not None else (needed_firing if trace else None)
        credit_cut = self.credit_steps if self.credit_steps is not None else (needed_credit if trace else None)
        firing_record = [] if trace else None
        credit_record = [] if trace else None

        forward, residual = _layered_firing(net, x, firing_cut, firing_record)
        firing = Settling(needed_firing if firing_cut is None else firing_cut,
                          firing_cut is None or firing_cut >= needed_firing, residual)
        output = forward.output
        output_error = self.loss.output_error(output, y)  # e = dLoss/dz_L; the clamped credit is -e
        derivative = None if self._balance.is_derivative else self._balance
        output_gain = None if derivative is None else self._balance(output)
        levels = forward.levels
        batch = output.shape[0]
        # every map below is linear in the error: sweeping e / batch makes the parameter VJPs the
        # batch means <c g (dz/dtheta)> themselves (no pass over every weight-sized total)
        if credit_cut is None:
            # the fixpoint: one sweep, delta_l = -c_l g(z_l), c_{l-1} = -A_l^T delta_l
            passed_down: list = [None] * len(levels)
            top = output_error if output_gain is None else output_error * output_gain
            scaled, per_level = backward_sweep(forward, top / batch, derivative=derivative, input_grads=passed_down,
                                               stack_shared=True)
            # the reported deltas and credit are formed when read (passes the size of every level)
            deltas = lambda: [delta * batch for delta in scaled[:-1]] + [top]  # noqa: E731
            credit = lambda: [-grad * batch for grad in passed_down[:-1]] + [-output_error]  # noqa: E731
            residual = 0.0
        else:
            credit, residual = _layered_credit(forward, -output_error, derivative, output_gain, self.output_mode,
                                               credit_cut, credit_record)
            deltas = [-_drive(forward, index, c, derivative, output_gain) for index, c in enumerate(credit)]
            per_level = [level.parameter_vjp(delta / batch, rates, side)
                         for level, delta, rates, side in zip(levels, deltas, forward.rates, forward.sides)]
        credit_settling = Settling(needed_credit if credit_cut is None else credit_cut,
                                   credit_cut is None or credit_cut >= needed_credit, residual)

        # G = -<c g (dz/dtheta)>, BP's sign convention for bioprop.diagnostics; the change is -lr G
        estimates = pool(net, levels, per_level)
        descend(net.parameters_list(), estimates, self.lr)
        result = CreditStepResult(
            self.loss(output, y).detach(), output, _trace(firing_record, credit_record) if trace else None,
            gradient_estimates=estimates, **_settling_info(firing, credit_settling),
        )
        if callable(deltas):
            return result.defer(credit=credit, deltas=lambda: deltas()[:-1])
        result.credit, result.deltas = credit, deltas[:-1]
        return result


def _drive(forward: ForwardPass, index: int, credit: Tensor, derivative, output_gain: Tensor | None) -> Tensor:
    """c_l g(z_l) at level `index`: the rate VJP of c_l with the balance in place of f' (times
    g(z_L) at the top, where the rate function is the identity)."""
    drive = forward.levels[index].rate.vjp(credit, forward.contexts[index], derivative)
    if index == len(forward.levels) - 1 and output_gain is not None:
        drive = drive * output_gain
    return drive


def _layered_firing(net: Network, x: Tensor, steps: int | None, record: list | None) -> tuple[ForwardPass, float]:
    """The forward pass after `steps` synchronous sweeps from rest (None: the fixpoint, i.e. the
    forward pass): every level's z_l from the rates of the sweep before, and the rates r_l after
    the last sweep; and the last sweep's relative change."""
    settled = net.forward_pass(x)
    if steps is None:
        return settled, 0.0
    levels, sides = settled.levels, settled.sides
    input_rates = settled.rates[0]
    state = [torch.zeros_like(r) for r in settled.rates[1:]] + [torch.zeros_like(settled.output)]  # rates r_1..r_L
    residual = math.inf
    preactivations: list[Tensor] = []
    contexts: list = []
    for t in range(1, steps + 1):
        presynaptic = [input_rates] + state[:-1]
        preactivations = [level.forward(r, side) for level, r, side in zip(levels, presynaptic, sides)]
        fired = [level.rate.forward(z) for level, z in zip(levels, preactivations)]
        new = [r for r, _ in fired]
        contexts = [context for _, context in fired]
        previous, state = state, new
        if record is not None:
            record.append([input_rates] + state)
    if steps >= 1:  # only the last sweep's change is reported: read once, and kept a tensor
        residual = _relative_change(state, previous)
    return ForwardPass([input_rates] + state[:-1], preactivations, levels, sides, contexts), residual


def _layered_credit(forward: ForwardPass, error: Tensor, derivative, output_gain, mode: str, steps: int,
                    record: list | None):
    """Credit c_1..c_L after `steps` synchronous sweeps from rest, and the last sweep's relative
    change. The outputs send no synapses, so their credit is the clamped error, or in inject mode
    0 + the injected error from the first sweep on."""
    levels = forward.levels
    state = [torch.zeros_like(r) for r in forward.rates[1:]]
    state.append(error if mode == "clamp" else torch.zeros_like(error))
    residual = math.inf
    for t in range(1, steps + 1):
        new = [
            levels[index + 1].input_vjp(_drive(forward, index + 1, state[index + 1], derivative, output_gain),
                                        forward.rates[index + 1])
            for index in range(len(levels) - 1)
        ] + [error]
        previous, state = state, new
        if record is not None:
            record.append(list(state))
    if steps >= 1:
        residual = _relative_change(state, previous)
    return state, residual


def _relative_change(new: list[Tensor], old: list[Tensor]) -> Tensor | float:
    """max |new - old| / max |new| over the levels (0 for no change, inf for a change from 0), as a
    0-d tensor: computed without reading anything back to the host."""
    pairs = [(a, b) for a, b in zip(new, old) if a.numel()]
    if not pairs:
        return 0.0
    change = torch.stack([(a - b).abs().max() for a, b in pairs]).max()
    size = torch.stack([a.abs().max() for a, _ in pairs]).max()
    ratio = change / torch.where(size > 0, size, torch.ones_like(size))
    return torch.where(size > 0, ratio, torch.where(change == 0, torch.zeros_like(change), torch.full_like(change, math.inf)))


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


__all__ = ["CreditRule", "CreditStepResult", "SettlingWarning", "settling_steps_needed"]
