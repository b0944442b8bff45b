"""A rate network of n neurons with any connectivity, and its three processes as pure functions.

This is the substrate of the credit rule (Fan & Mysore 2024; `rules/credit.py` states the
rule). Notation (the paper's): `W[i, j]` = w_ij is the synapse from neuron j onto neuron i;
absent synapses (mask[i, j] False) are 0 and stay 0. A batch is stored row-wise: rates x and
credit c have shape (B, n).

    net input   s = W x + b                     (code: s = x @ W.T + b)
    firing      x_i = sigma_i(s_i) for every neuron that is not an input; input neurons'
                rates are clamped to the stimulus. sigma_i is `activation` for hidden neurons
                and `output_activation` for output neurons (e.g. "linear", which makes an MLP
                with a linear output layer embed exactly; see `RateNetwork.from_mlp`).
    balance     g_i = g(s_i), a bell-shaped function of the net input (`bioprop.balance`);
                g := 0 on firing-clamped input neurons (they do not respond to their net
                input, so they neither pass credit on nor learn).
    credit      c <- W^T (g * c)  (+ an injection)   (code: c = (g * c) @ W), with per-neuron
                clamps: a clamped neuron's credit is set to a given value (the paper's output
                clamp) or keeps its own value (its row of the credit operator is the identity)
    plasticity  dw_ij = lr * <c_i g_i x_j>  on existing synapses only,  db_i = lr * <c_i g_i>
                (<.> = batch mean)

Each process is available one iteration at a time (`firing_step`, `credit_step`,
`weight_change`), so that experiments can observe and perturb them (add noise, clamp neurons,
prune synapses), and iterated to its fixpoint (`settle_firing`, `settle_credit`) with a
tolerance, a step limit and a report of how it ended (`Settling`).

Iteration counts from rest (rates 0, credit 0; clamps applied from the start), derived for a
layered network of L weight layers (inputs h_0 .. outputs at layer L): after t firing steps the
rates of layers 1..t are exact, so firing needs L steps; with the output credit clamped, after
t credit steps the credit of layers L-t..L is exact, and plasticity uses layers 1..L, so credit
needs L - 1 steps (L with the error injected instead, which reaches the outputs one step
later). Detecting the fixpoint (a step that changes nothing) costs one step more.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .activations import Activation, get_activation
from .balance import Balance, get_balance
from .batches import check_examples
from .errors import BioPropError
from .network import MLP

Tensor = torch.Tensor

#: Default tolerance of the fixpoint iterations, in units of the dtype's machine epsilon
#: (2.3e-13 in float64, 1.2e-4 in float32): a settled recurrent network still flickers at
#: round-off level, so an exact-stillness test would never stop.
TOLERANCE_ULPS = 1024


# -- the processes, as pure functions of tensors ----------------------------------------------
def net_input(W: Tensor, rates: Tensor, bias: Tensor | None = None) -> Tensor:
    """s = W x + b for a row-wise batch of rates (B, n)."""
    s = rates @ W.T
    return s if bias is None else s + bias


def fire(s: Tensor, inputs: Tensor, stimulus: Tensor, activation: Callable[[Tensor], Tensor]) -> Tensor:
    """Rates from net input: activation(s), with the input neurons' rates clamped to the stimulus."""
    return activation(s).index_copy(1, inputs, stimulus)


def firing_step(
    W: Tensor,
    rates: Tensor,
    inputs: Tensor,
    stimulus: Tensor,
    activation: Callable[[Tensor], Tensor],
    bias: Tensor | None = None,
) -> Tensor:
    """One synchronous firing iteration: x <- sigma(W x + b), inputs clamped to the stimulus.
    `activation` maps the (B, n) net input to rates (a bioprop Activation or `RateNetwork.rate`)."""
    return fire(net_input(W, rates, bias), inputs, stimulus, activation)


def credit_step(
    W: Tensor,
    credit: Tensor,
    gain: Tensor,
    injection: Tensor | None = None,
    clamped: Tensor | None = None,
    clamp_value: Tensor | None = None,
) -> Tensor:
    """One synchronous credit iteration: c <- W^T (gain * c) + injection, then clamps.

    gain: g(s) (B, n), 0 on firing-clamped neurons. injection: None or a tensor added to every
    neuron's new credit (broadcastable to (B, n)). clamped: None or indices of neurons whose
    credit is clamped: to `clamp_value` (B, len(clamped)), or, with clamp_value None, to their
    own current credit (their row of the credit operator is the identity).
    """
    new = (gain * credit) @ W
    if injection is not None:
        new = new + injection
    if clamped is not None:
        new = new.index_copy(1, clamped, credit.index_select(1, clamped) if clamp_value is None else clamp_value)
    return new


def weight_change(
    credit: Tensor, gain: Tensor, rates: Tensor, lr: float, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Plasticity: (dW, db) with dW_ij = lr <c_i g_i x_j> where mask[i, j], else exactly 0, and
    db_i = lr <c_i g_i> (batch means)."""
    drive = credit * gain
    scale = lr / credit.shape[0]
    dW = scale * (drive.T @ rates)
    if mask is not None:
        dW = torch.where(mask, dW, torch.zeros((), dtype=dW.dtype, device=dW.device))
    return dW, scale * drive.sum(dim=0)


# -- iterating a process to its fixpoint -------------------------------------------------------
@dataclass(frozen=True)
class Settling:
    """How a fast process ended. steps: iterations taken; residual: the last iteration's change
    relative to the state, max|new - old| / max|new| (inf before any step); converged: residual
    within the tolerance."""

    steps: int
    converged: bool
    residual: float


def default_tolerance(dtype: torch.dtype) -> float:
    return TOLERANCE_ULPS * torch.finfo(dtype).eps


def _change(new: Tensor, old: Tensor, tol: float) -> tuple[float, bool]:
    new, old = new.detach(), old.detach()
    change = float((new - old).abs().max()) if new.numel() else 0.0
    size = float(new.abs().max()) if new.numel() else 0.0
    if size > 0:
        residual = change / size
    else:
        residual = 0.0 if change == 0 else math.inf
    return residual, bool(change <= tol * size)  # False for NaN


def _iterate(step, state: Tensor, steps: int | None, tol: float, max_steps: int, record: list | None):
    """Apply `step` to `state` `steps` times, or (steps=None) until the change is within tol or
    max_steps iterations have run. `step` returns (new state, anything to pass on)."""
    limit = max_steps if steps is None else steps
    residual, converged, extra, taken = math.inf, False, None, 0
    while taken < limit:
        new, extra = step(state)
        taken += 1
        residual, converged = _change(new, state, tol)
        state = new
        if record is not None:
            record.append(state)
        if steps is None and converged:
            break
    return state, extra, Settling(taken, converged, residual)


def settle_firing(
    W: Tensor,
    stimulus: Tensor,
    inputs: Tensor,
    activation: Callable[[Tensor], Tensor],
    bias: Tensor | None = None,
    rates: Tensor | None = None,
    steps: int | None = None,
    tol: float | None = None,
    max_steps: int = 1000,
    record: list | None = None,
) -> tuple[Tensor, Tensor, Settling]:
    """Iterate firing from `rates` (default: rest, 0 with the inputs clamped) for `steps`
    iterations or, with steps=None, to the fixpoint. Returns (rates, net input, Settling); the
    net input is the one that produced the returned rates (x = sigma(s) off the inputs).
    `record`, a list, receives the rates after every iteration."""
    n = W.shape[0]
    if rates is None:
        rates = torch.zeros(stimulus.shape[0], n, dtype=W.dtype, device=W.device).index_copy(1, inputs, stimulus)
    tol = default_tolerance(W.dtype) if tol is None else tol

    def step(x):
        s = net_input(W, x, bias)
        return fire(s, inputs, stimulus, activation), s

    rates, s, settling = _iterate(step, rates, steps, tol, max_steps, record)
    if s is None:  # no step taken: the net input of the starting rates
        s = net_input(W, rates, bias)
    return rates, s, settling


def settle_credit(
    W: Tensor,
    gain: Tensor,
    credit: Tensor | None = None,
    injection: Tensor | None = None,
    clamped: Tensor | None = None,
    clamp_value: Tensor | None = None,
    steps: int | None = None,
    tol: float | None = None,
    max_steps: int = 1000,
    record: list | None = None,
) -> tuple[Tensor, Settling]:
    """Iterate `credit_step` from `credit` (default: rest, 0 with the clamps applied) for `steps`
    iterations or, with steps=None, to the fixpoint. Returns (credit, Settling)."""
    if credit is None:
        credit = torch.zeros_like(gain)
        if clamped is not None and clamp_value is not None:
            credit = credit.index_copy(1, clamped, clamp_value)
    tol = default_tolerance(W.dtype) if tol is None else tol

    def step(c):
        return credit_step(W, c, gain, injection, clamped, clamp_value), None

    credit, _, settling = _iterate(step, credit, steps, tol, max_steps, record)
    return credit, settling


# -- the network ---------------------------------------------------------------------------------
def layered_mask(sizes: Sequence[int]) -> Tensor:
    """The (n, n) mask of a layered network with layers of `sizes` (input first), neurons
    numbered layer by layer: layer l-1 projects onto layer l and nothing else exists."""
    offsets = _offsets(sizes)
    mask = torch.zeros(offsets[-1], offsets[-1], dtype=torch.bool)
    for layer in range(1, len(sizes)):
        mask[offsets[layer]:offsets[layer + 1], offsets[layer - 1]:offsets[layer]] = True
    return mask


def _neuron_set(name: str, neurons: Iterable[int] | Tensor, n: int) -> Tensor:
    try:
        values = torch.as_tensor(list(neurons.tolist() if isinstance(neurons, Tensor) else neurons))
    except (TypeError, ValueError):
        raise BioPropError(f"{name}={neurons!r}: give neuron indices, e.g. range(0, 4)") from None
    if values.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if values.ndim != 1 or values.dtype.is_floating_point or values.dtype == torch.bool:
        raise BioPropError(f"{name}={neurons!r}: give a flat list of integer neuron indices")
    if int(values.min()) < 0 or int(values.max()) >= n:
        raise BioPropError(f"{name}: indices must lie in [0, {n}) for n={n}, got range [{int(values.min())}, {int(values.max())}]")
    if torch.unique(values).numel() != values.numel():
        raise BioPropError(f"{name}: an index is repeated; name each neuron once")
    return values.long()


class RateNetwork(nn.Module):
    """n rate neurons with any connectivity; `W[i, j]` is the synapse from j onto i.

    Parameters
    ----------
    n: number of neurons.
    inputs: indices of the input neurons (rates clamped to the stimulus, x of shape (B, len)).
    outputs: indices of the output neurons (the loss is on their rates); disjoint from inputs.
    activation: sigma of the non-input neurons (name or Activation).
    output_activation: sigma of the output neurons; None = `activation`.
    mask: (n, n) bool, True where a synapse exists; None = all-to-all (every ordered pair,
        self-synapses included). Absent synapses are 0 and stay 0 under the credit rule.
    bias: whether non-input neurons have a learnt bias b_i (initialised to 0).
    init_scale: initial W_ij ~ N(0, init_scale^2 / fan_in_i) on existing synapses, so the
        spectral radius of a random recurrent W is about init_scale; the default 0.5 keeps the
        firing dynamics contracting for activations with |sigma'| <= 1.
    dtype, device, seed: as for bioprop.MLP (weights drawn on the CPU from `seed`).
    """

    def __init__(
        self,
        n: int,
        inputs: Iterable[int] = (),
        outputs: Iterable[int] = (),
        activation: str | Activation = "tanh",
        output_activation: str | Activation | None = None,
        mask: Tensor | None = None,
        bias: bool = False,
        init_scale: float = 0.5,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise BioPropError(f"n={n!r}: give a positive integer number of neurons")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise BioPropError(f"dtype={dtype}: give a floating-point dtype such as torch.float64")
        try:
            init_scale = float(init_scale)
        except (TypeError, ValueError):
            init_scale = math.nan
        if not math.isfinite(init_scale) or init_scale < 0:
            raise BioPropError(f"init_scale={init_scale!r}: give a finite number >= 0")
        input_index = _neuron_set("inputs", inputs, n)
        output_index = _neuron_set("outputs", outputs, n)
        overlap = sorted(set(input_index.tolist()) & set(output_index.tolist()))
        if overlap:
            raise BioPropError(
                f"inputs and outputs overlap at neurons {overlap}: an input neuron's rate is clamped to the stimulus, "
                "so it cannot also be an output; name disjoint sets"
            )
        mask = self._check_mask(mask, n)
        self.n = n
        self.activation = get_activation(activation)
        self.output_activation = self.activation if output_activation is None else get_activation(output_activation)
        self.has_bias = bool(bias)
        #: Layer widths when the network is a layered embedding (set by from_mlp), else None.
        self.layer_sizes: list[int] | None = None

        weights = torch.zeros(n, n, dtype=torch.float64)
        if init_scale > 0:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            fan_in = mask.sum(dim=1, keepdim=True).clamp(min=1).to(torch.float64)
            draw = torch.randn(n, n, generator=generator, dtype=torch.float64) * (init_scale / fan_in.sqrt())
            weights = torch.where(mask, draw, weights)
        self.W = nn.Parameter(weights.to(dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(n, dtype=dtype, device=device)) if self.has_bias else None
        self.register_buffer("mask", mask.to(device=device))
        self.register_buffer("inputs", input_index.to(device=device))
        self.register_buffer("outputs", output_index.to(device=device))
        clamped = torch.zeros(n, dtype=torch.bool)
        clamped[input_index] = True
        self.register_buffer("clamped", clamped.to(device=device))

    @staticmethod
    def _check_mask(mask, n: int) -> Tensor:
        if mask is None:
            return torch.ones(n, n, dtype=torch.bool)
        try:
            mask = torch.as_tensor(mask).cpu()
        except (TypeError, ValueError, RuntimeError):
            raise BioPropError(f"mask={mask!r}: give an ({n}, {n}) bool tensor (True where a synapse exists)") from None
        if tuple(mask.shape) != (n, n):
            raise BioPropError(f"mask: expected shape ({n}, {n}) for n={n} (mask[i, j] = synapse from j onto i), got {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise BioPropError("mask: give a bool tensor (True where a synapse exists) or one of 0s and 1s")
            mask = mask != 0
        return mask.clone()

    # -- structure ------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.W.dtype

    @property
    def device(self) -> torch.device:
        return self.W.device

    @property
    def n_inputs(self) -> int:
        return int(self.inputs.numel())

    @property
    def n_outputs(self) -> int:
        return int(self.outputs.numel())

    def extra_repr(self) -> str:
        return (f"n={self.n}, inputs={self.n_inputs}, outputs={self.n_outputs}, activation={self.activation.name}, "
                f"output_activation={self.output_activation.name}, synapses={int(self.mask.sum())}, bias={self.has_bias}")

    def _outputs_differ(self) -> bool:
        return self.output_activation is not self.activation and self.n_outputs > 0

    # -- per-neuron functions of the net input ------------------------------------------------
    def rate(self, s: Tensor) -> Tensor:
        """sigma_i(s_i) for every neuron (output neurons use the output activation)."""
        rates = self.activation(s)
        if self._outputs_differ():
            rates = rates.index_copy(1, self.outputs, self.output_activation(s.index_select(1, self.outputs)))
        return rates

    def rate_derivative(self, s: Tensor) -> Tensor:
        """sigma_i'(s_i) for every neuron."""
        slope = self.activation.derivative(s)
        if self._outputs_differ():
            slope = slope.index_copy(1, self.outputs, self.output_activation.derivative(s.index_select(1, self.outputs)))
        return slope

    def gain(self, s: Tensor, balance: str | Callable | Balance = "derivative", width: float = 1.0) -> Tensor:
        """g(s_i) for every neuron, 0 on the firing-clamped input neurons."""
        balance = get_balance(balance, width)
        g = self.rate_derivative(s) if balance.is_derivative else balance(s)
        return torch.where(self.clamped, torch.zeros((), dtype=g.dtype, device=g.device), g)

    # -- the processes on this network ---------------------------------------------------------
    def rest(self, stimulus: Tensor) -> Tensor:
        """Rates at rest: 0, with the input neurons clamped to the stimulus (B, n_inputs)."""
        rates = torch.zeros(stimulus.shape[0], self.n, dtype=self.dtype, device=self.device)
        return rates.index_copy(1, self.inputs, stimulus)

    def firing_step(self, rates: Tensor, stimulus: Tensor) -> Tensor:
        return firing_step(self.W, rates, self.inputs, stimulus, self.rate, self.bias)

    def settle_firing(self, stimulus: Tensor, rates: Tensor | None = None, steps: int | None = None,
                      tol: float | None = None, max_steps: int = 1000, record: list | None = None):
        """See `settle_firing`; returns (rates, net input, Settling)."""
        return settle_firing(self.W, stimulus, self.inputs, self.rate, self.bias, rates, steps, tol, max_steps, record)

    def forward(self, stimulus: Tensor) -> Tensor:
        """The output neurons' rates at the firing fixpoint (no warning if it is not reached:
        use `settle_firing` to see how it ended)."""
        rates, _, _ = self.settle_firing(stimulus)
        return rates.index_select(1, self.outputs)

    def apply_mask_(self) -> None:
        """Zero every weight where no synapse exists (after editing W or the mask by hand)."""
        with torch.no_grad():
            self.W.masked_fill_(~self.mask, 0)

    # -- embedding a layered network -----------------------------------------------------------
    @classmethod
    def from_mlp(cls, mlp) -> "RateNetwork":
        """The MLP as a rate network: neurons numbered layer by layer (inputs first, outputs
        last), W holding the blocks W_l, the layered mask, the MLP's activation on hidden
        neurons, a linear output activation, and the biases (0 on the inputs) when it has them.
        The stimulus is the MLP's input x (input_map "identity" only)."""
        if not isinstance(mlp, MLP):
            raise BioPropError(f"from_mlp: expected a bioprop.MLP, got {type(mlp).__name__}")
        if mlp.input_map != "identity":
            raise BioPropError(
                f"from_mlp: the MLP maps its input through f (input_map={mlp.input_map!r}); a rate network's input "
                "neurons hold the stimulus as given, so embed an MLP with input_map='identity'"
            )
        return cls._embed(mlp)

    @classmethod
    def _embed(cls, mlp) -> "RateNetwork":
        sizes = list(mlp.sizes)
        n = sum(sizes)
        net = cls(
            n, inputs=range(sizes[0]), outputs=range(n - sizes[-1], n), activation=mlp.activation,
            output_activation="linear", mask=layered_mask(sizes), bias=mlp.has_bias, init_scale=0.0,
            dtype=mlp.dtype, device=mlp.device,
        )
        net.layer_sizes = sizes
        offsets = _offsets(sizes)
        with torch.no_grad():
            for layer, weight in enumerate(mlp.weights, start=1):
                net.W[offsets[layer]:offsets[layer + 1], offsets[layer - 1]:offsets[layer]] = weight
            if mlp.has_bias:
                for layer, bias in enumerate(mlp.biases, start=1):
                    net.bias[offsets[layer]:offsets[layer + 1]] = bias
        return net

    def layer_blocks(self, sizes: Sequence[int] | None = None) -> tuple[list[Tensor], list[Tensor] | None]:
        """Read a layered network back out: ([W_1 .. W_L], [b_1 .. b_L] or None), copies.
        `sizes` defaults to the layer widths recorded by `from_mlp`. Raises if a synapse exists
        outside the layered blocks."""
        sizes = list(sizes if sizes is not None else (self.layer_sizes or []))
        if not sizes:
            raise BioPropError("layer_blocks: this network was not built by from_mlp; pass its layer sizes, input first")
        if sum(sizes) != self.n:
            raise BioPropError(f"sizes={sizes}: they add up to {sum(sizes)} neurons, the network has {self.n}")
        layered = layered_mask(sizes).to(self.device)
        stray = (self.W.detach() != 0) & ~layered
        if bool(stray.any()):
            i, j = (int(v) for v in stray.nonzero()[0])
            raise BioPropError(f"layer_blocks: W[{i}, {j}] != 0 lies outside the layered blocks of sizes {sizes}; the network is not layered")
        offsets = _offsets(sizes)
        weights, biases = [], [] if self.has_bias else None
        for layer in range(1, len(sizes)):
            rows, columns = slice(offsets[layer], offsets[layer + 1]), slice(offsets[layer - 1], offsets[layer])
            weights.append(self.W.detach()[rows, columns].clone())
            if biases is not None:
                biases.append(self.bias.detach()[rows].clone())
        return weights, biases

    def to_mlp(self, sizes: Sequence[int] | None = None):
        """The inverse of from_mlp: a bioprop.MLP with this network's layer blocks."""
        weights, biases = self.layer_blocks(sizes)
        sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
        offsets = _offsets(sizes)
        expected_inputs = list(range(sizes[0]))
        expected_outputs = list(range(offsets[-2], offsets[-1]))
        if self.inputs.tolist() != expected_inputs or self.outputs.tolist() != expected_outputs:
            raise BioPropError("to_mlp: the inputs must be the first layer's neurons and the outputs the last layer's, in order")
        if self.output_activation.name != "linear":
            raise BioPropError(f"to_mlp: an MLP's output layer is linear; this network's outputs use {self.output_activation.name!r}")
        mlp = MLP(sizes, activation=self.activation, bias=self.has_bias, dtype=self.dtype, device=self.device, seed=0)
        with torch.no_grad():
            for parameter, value in zip(mlp.parameters_list(), weights + (biases or [])):
                parameter.copy_(value)
        return mlp

    # -- state ------------------------------------------------------------------------------------
    def clone(self) -> "RateNetwork":
        return copy.deepcopy(self)

    def config(self) -> dict:
        return {
            "n": self.n,
            "inputs": self.inputs.tolist(),
            "outputs": self.outputs.tolist(),
            "activation": self.activation.name,
            "output_activation": self.output_activation.name,
            "bias": self.has_bias,
            "synapses": int(self.mask.sum()),
        }


def _offsets(sizes: Sequence[int]) -> list[int]:
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    return offsets


def check_rate_batch(net: RateNetwork, x, y) -> tuple[Tensor, Tensor]:
    """Validate a batch for a RateNetwork (x: stimulus of the inputs, y: targets of the outputs)
    and bring it to the network's dtype and device."""
    if net.n_outputs == 0:
        raise BioPropError("net: the RateNetwork has no output neurons, so there is no loss to learn from; name some outputs")
    network = f"a RateNetwork with {net.n_inputs} input and {net.n_outputs} output neurons"
    return check_examples(x, y, net.n_inputs, net.n_outputs, network, net.dtype, net.device)
