"""The shared network substrate: a multilayer perceptron that every rule trains.

Forward indexing (SPEC conventions): h_0 = input_map(x), and for l = 1..L

    z_l = W_l h_{l-1} + b_l,      h_l = f(z_l)  (l < L),      output = z_L (linear)

W_l has shape (n_l, n_{l-1}); a batch is stored row-wise, so in code z_l = h_{l-1} @ W_l.T + b_l.
`input_map` is "identity" (h_0 = x, the usual ANN) or "activation" (h_0 = f(x), as in Song et
al. 2020, where the input value nodes are passed through f like every other layer).

The MLP is a torch.nn.Module whose parameters are plain leaf tensors: the BP oracle
differentiates `net(x)` with autograd, while the biologically plausible rules read
`net.weights` / `net.biases` and write their updates in place.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .activations import Activation, get_activation
from .errors import BioPropError

Tensor = torch.Tensor

INPUT_MAPS = ("identity", "activation")


@dataclass
class ForwardPass:
    """Everything a rule needs from one feed-forward sweep.

    rates[l]:          presynaptic rates feeding layer l+1, i.e. h_0 .. h_{L-1}
    preactivations[l]: z_{l+1}, i.e. z_1 .. z_L (the last one is the output)
    """

    rates: list[Tensor]
    preactivations: list[Tensor]

    @property
    def output(self) -> Tensor:
        return self.preactivations[-1]


class MLP(nn.Module):
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
        return list(self._weights)

    @property
    def biases(self) -> list[Tensor] | None:
        """b_1 .. b_L, or None for a network without biases."""
        return list(self._biases) if self._biases is not None else None

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

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, activation={self.activation.name}, bias={self.has_bias}, input_map={self.input_map}"

    # -- forward -----------------------------------------------------------------------------
    def input_rates(self, x: Tensor) -> Tensor:
        """h_0: the input as seen by the first layer."""
        return self.activation(x) if self.input_map == "activation" else x

    def layer_input(self, layer: int, rates: Tensor) -> Tensor:
        """z_layer = rates @ W_layer^T + b_layer, for layer = 1..L."""
        z = rates @ self._weights[layer - 1].T
        if self._biases is not None:
            z = z + self._biases[layer - 1]
        return z

    def forward_pass(self, x: Tensor) -> ForwardPass:
        rates = [self.input_rates(x)]
        preactivations = []
        for layer in range(1, self.n_layers + 1):
            z = self.layer_input(layer, rates[-1])
            preactivations.append(z)
            if layer < self.n_layers:
                rates.append(self.activation(z))
        return ForwardPass(rates, preactivations)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_pass(x).output

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


def _xavier_gain(activation: str) -> float:
    gains = {"sigmoid": 1.0, "tanh": 5.0 / 3.0, "relu": math.sqrt(2.0), "leaky_relu": math.sqrt(2.0), "linear": 1.0}
    return gains.get(activation, 1.0)
