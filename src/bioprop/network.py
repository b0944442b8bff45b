"""The network substrate: a chain of levels (`bioprop.levels`) that every rule trains.

`Network` is what every rule's `step(net, x, y)` takes. A network gives, for a batch x, its
levels (`levels_for(x)`: the affine maps and rate functions of SPEC.md section 1b), the clamped
input r_0 = `input_rates(x)`, the side inputs u_l clamped into each level (`side_inputs(x)`:
an unrolled recurrent net's tokens; None elsewhere), and `forward_pass(x)`, every level's z_l
and r_l with what the rate functions' VJPs need. Its parameters are plain leaf tensors that the
rules write in place; the BP oracle differentiates `net(x)` with autograd.

Three networks are built in: `MLP` (below), a user's `nn.Sequential` through `bioprop.wrap`
(`bioprop.wrap.WrappedNetwork`), and `bioprop.ElmanRNN` (`bioprop.recurrent`).

MLP. Forward indexing (SPEC conventions): h_0 = input_map(x), and for l = 1..L

    z_l = W_l h_{l-1} + b_l,      h_l = f(z_l)  (l < L),      output = z_L (linear)

W_l has shape (n_l, n_{l-1}); a batch is stored row-wise, so in code z_l = h_{l-1} @ W_l.T + b_l.
`input_map` is "identity" (h_0 = x, the usual ANN) or "activation" (h_0 = f(x), as in Song et
al. 2020, where the input value nodes are passed through f like every other layer). Its levels
are its layers: a Linear map each, with rate function f below the top and the identity at it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .activations import Activation, get_activation
from .batches import check_examples, check_targets
from .errors import BioPropError
from .levels import ActivationOp, Level, LinearLevel, RateContext, RateFunction

Tensor = torch.Tensor

INPUT_MAPS = ("identity", "activation")


@dataclass
class ForwardPass:
    """Everything a rule needs from one feed-forward sweep.

    rates[l]:          presynaptic rates feeding level l+1, i.e. r_0 .. r_{L-1} (h_0 .. h_{L-1})
    preactivations[l]: z_{l+1}, i.e. z_1 .. z_L (the last one is the output)
    levels, sides:     the levels swept and their side inputs u_1 .. u_L (None where absent)
    contexts[l]:       what level l+1's rate function saved for its VJP at z_{l+1}
    """

    rates: list[Tensor]
    preactivations: list[Tensor]
    levels: list[Level] = field(default_factory=list)
    sides: list[Tensor | None] = field(default_factory=list)
    contexts: list[RateContext] = field(default_factory=list)

    @property
    def output(self) -> Tensor:
        return self.preactivations[-1]


class Network(nn.Module):
    """A chain of levels (see the module docstring). Subclasses give `levels_for`,
    `output_size`, and where the input is not a plain (B, n) batch, `input_rates`,
    `side_inputs` and `check_input`."""

    #: how messages name this network, e.g. "a net with sizes [4, 3, 2]"
    def describe(self) -> str:
        return f"a {type(self).__name__}"

    # -- structure --
    def levels_for(self, x: Tensor) -> list[Level]:
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    def input_rates(self, x: Tensor) -> Tensor:
        """r_0: the input as seen by the first level."""
        return x

    def side_inputs(self, x: Tensor, levels: Sequence[Level]) -> list[Tensor | None]:
        """u_1 .. u_L: what each level reads besides r_{l-1} (None: nothing)."""
        return [None] * len(levels)

    # -- forward --
    def forward_pass(self, x: Tensor) -> ForwardPass:
        levels = self.levels_for(x)
        sides = self.side_inputs(x, levels)
        rates = [self.input_rates(x)]
        preactivations, contexts = [], []
        last = len(levels) - 1
        for index, (level, side) in enumerate(zip(levels, sides)):
            z = level.forward(rates[-1], side)
            preactivations.append(z)
            r, context = level.rate.forward(z)
            contexts.append(context)
            if index < last:
                rates.append(r)
        return ForwardPass(rates, preactivations, levels, sides, contexts)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_pass(x).output

    # -- parameters --
    def parameters_list(self) -> list[Tensor]:
        """Every parameter once, in a fixed order (the BP oracle and comparisons use it)."""
        return list(self.parameters())

    def parameter_names(self) -> list[str]:
        """A name for each entry of parameters_list()."""
        by_id = {id(p): name for name, p in self.named_parameters()}
        return [by_id.get(id(p), f"p{i}") for i, p in enumerate(self.parameters_list())]

    def parameter_slots(self, levels: Sequence[Level]) -> list[list[int]]:
        """For each level, the index in parameters_list() of each of its parameters (levels of
        an unrolled recurrent net share slots)."""
        slot = {id(p): i for i, p in enumerate(self.parameters_list())}
        try:
            return [[slot[id(p)] for p in level.parameters] for level in levels]
        except KeyError:
            raise BioPropError(f"net: a level reads a tensor that is not one of {self.describe()}'s parameters") from None

    @staticmethod
    def shares_parameters(slots: Sequence[Sequence[int]]) -> bool:
        flat = [i for level in slots for i in level]
        return len(flat) != len(set(flat))

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.parameters())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters())).device

    def clone(self) -> "Network":
        """An independent copy with identical parameters (same dtype and device)."""
        return copy.deepcopy(self)

    def export_state_dict(self) -> dict[str, Tensor]:
        """The state_dict a user loads the trained network from (run folders' model.pt): the
        network's own; a wrapped module's is the user's module's."""
        return self.state_dict()

    def import_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load what export_state_dict() gave."""
        self.load_state_dict(state)

    # -- batches --
    def check_input(self, x: Tensor) -> Tensor:
        """Validate the inputs' shape (raises BioPropError naming the shape expected)."""
        return x

    def check_batch(self, x, y) -> tuple[Tensor, Tensor]:
        """x in the network's input shape and y (B, n_out) targets or (B,) labels (made one-hot),
        checked and brought to the network's dtype and device."""
        x = torch.as_tensor(x)
        if x.ndim < 1 or x.shape[0] == 0:
            raise BioPropError("x: the batch is empty")
        x = self.check_input(x)
        return check_targets(x, y, self.output_size, self.describe(), self.dtype, self.device)


class MLP(Network):
    """Fully connected network, hidden layers with activation f, linear output layer.

    Parameters
    ----------
    sizes: layer widths [n_0, n_1, ..., n_L] (input first).
    activation: "sigmoid", "tanh", "relu", "leaky_relu", "linear" or a registered Activation.
    bias: whether layers have biases b_l.
    input_map: "identity" or "activation" (see module docstring).
    init: "xavier" (uniform Glorot with the activation's gain; biases 0) or
          "uniform" (torch.nn.Linear's default, U(-1/sqrt(n_in), 1/sqrt(n_in)) for W and b).
    init_scale: multiplies the initial weights (and biases).
    dtype, device: of the parameters. Initial values are drawn on the CPU from `seed`, so a
          seeded network is identical on every device.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | Activation = "sigmoid",
        bias: bool = True,
        input_map: str = "identity",
        init: str = "xavier",
        init_scale: float = 1.0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
            raise BioPropError(f"sizes={sizes!r}: give at least two positive integer layer widths, input first")
        if input_map not in INPUT_MAPS:
            raise BioPropError(f"input_map={input_map!r}: choose one of {INPUT_MAPS}")
        if init not in ("xavier", "uniform"):
            raise BioPropError(f"init={init!r}: choose 'xavier' or 'uniform'")
        if not dtype.is_floating_point:
            raise BioPropError(f"dtype={dtype}: give a floating-point dtype such as torch.float64")
        self.sizes = sizes
        self.activation = get_activation(activation)
        self.input_map = input_map
        self.has_bias = bool(bias)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        weights, biases = [], []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            if init == "xavier":
                gain = _xavier_gain(self.activation.name)
                bound = gain * math.sqrt(6.0 / (n_in + n_out))
                b_bound = 0.0
            else:
                bound = b_bound = 1.0 / math.sqrt(n_in)
            w = (torch.rand(n_out, n_in, generator=generator, dtype=torch.float64) * 2 - 1) * bound * init_scale
            weights.append(nn.Parameter(w.to(dtype=dtype, device=device)))
            if self.has_bias:
                b = (torch.rand(n_out, generator=generator, dtype=torch.float64) * 2 - 1) * b_bound * init_scale
                biases.append(nn.Parameter(b.to(dtype=dtype, device=device)))
        self._weights = nn.ParameterList(weights)
        self._biases = nn.ParameterList(biases) if self.has_bias else None

    # -- structure ---------------------------------------------------------------------------
    @property
    def weights(self) -> list[Tensor]:
        """W_1 .. W_L, each of shape (n_l, n_{l-1})."""
        return _members(self._weights)

    @property
    def biases(self) -> list[Tensor] | None:
        """b_1 .. b_L, or None for a network without biases."""
        return _members(self._biases) if self._biases is not None else None

    @property
    def n_layers(self) -> int:
        """L: the number of weight layers (hidden layers + 1)."""
        return len(self.sizes) - 1

    @property
    def dtype(self) -> torch.dtype:
        return self._weights[0].dtype

    @property
    def device(self) -> torch.device:
        return self._weights[0].device

    def parameter_names(self) -> list[str]:
        names = [f"W{l}" for l in range(1, self.n_layers + 1)]
        return names + ([f"b{l}" for l in range(1, self.n_layers + 1)] if self.has_bias else [])

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, activation={self.activation.name}, bias={self.has_bias}, input_map={self.input_map}"

    # -- forward -----------------------------------------------------------------------------
    def describe(self) -> str:
        return f"a net with sizes {self.sizes}"

    @property
    def output_size(self) -> int:
        return self.sizes[-1]

    def levels_for(self, x: Tensor | None = None) -> list[Level]:
        """Its layers as levels: Linear W_l, b_l with rate f below the top, identity at it."""
        hidden = RateFunction([ActivationOp(self.activation)])
        top = RateFunction()
        biases = _members(self._biases) if self._biases is not None else [None] * self.n_layers
        last = self.n_layers - 1
        return [LinearLevel(w, b, top if l == last else hidden) for l, (w, b) in enumerate(zip(_members(self._weights), biases))]

    def input_rates(self, x: Tensor) -> Tensor:
        """h_0: the input as seen by the first layer."""
        return self.activation(x) if self.input_map == "activation" else x

    def forward(self, x: Tensor) -> Tensor:
        """z_L: forward_pass's ops (the same products, bit for bit) without building levels or
        keeping what the rate functions' VJPs need (the BP oracle differentiates this)."""
        h = self.input_rates(x)
        weights = _members(self._weights)
        biases = _members(self._biases) if self._biases is not None else [None] * len(weights)
        last = len(weights) - 1
        for index, (weight, bias) in enumerate(zip(weights, biases)):
            h = F.linear(h, weight, bias)
            if index < last:
                h = self.activation(h)
        return h

    def layer_input(self, layer: int, rates: Tensor) -> Tensor:
        """z_layer = rates @ W_layer^T + b_layer, for layer = 1..L."""
        z = rates @ self._weights[layer - 1].T
        if self._biases is not None:
            z = z + self._biases[layer - 1]
        return z

    def check_batch(self, x, y) -> tuple[Tensor, Tensor]:
        return check_examples(x, y, self.sizes[0], self.sizes[-1], self.describe(), self.dtype, self.device)

    # -- state -------------------------------------------------------------------------------
    def parameters_list(self) -> list[Tensor]:
        """Weights then biases, in a fixed order (used by the BP oracle and comparisons)."""
        return self.weights + (self.biases or [])

    def clone(self) -> "MLP":
        """An independent copy with identical parameters (same dtype and device)."""
        return copy.deepcopy(self)

    def config(self) -> dict:
        """The constructor arguments needed to rebuild this network's architecture."""
        return {
            "sizes": list(self.sizes),
            "activation": self.activation.name,
            "bias": self.has_bias,
            "input_map": self.input_map,
        }


def _members(parameters: nn.ParameterList) -> list[Tensor]:
    """A ParameterList's tensors in order. Iterating the list itself goes through its string-index
    __getitem__ per entry, which cost a tenth of a small net's training step."""
    return list(parameters._parameters.values())


def _xavier_gain(activation: str) -> float:
    gains = {"sigmoid": 1.0, "tanh": 5.0 / 3.0, "relu": math.sqrt(2.0), "leaky_relu": math.sqrt(2.0), "linear": 1.0}
    return gains.get(activation, 1.0)
