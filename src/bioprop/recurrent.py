"""`bioprop.ElmanRNN`: a many-to-one Elman recurrent network, unrolled into levels (SPEC.md 1b).

    z_t = W_ih u_t + b_ih + W_hh r_{t-1} + b_hh,    r_t = f(z_t),    r_0 = 0,    t = 1..T
    output = W_o r_T + b_o

`rnn` is a torch.nn.RNN (batch_first=True, one layer) and `readout` a torch.nn.Linear, so
`net(x) = readout(rnn(x)[0][:, -1])` for x of shape (B, T, input_size). Unrolled over the T tokens
of a batch, the levels are z_1 .. z_T (ElmanLevel, sharing W_ih, W_hh and the biases, each reading
its token u_t as a side input) and z_out (the readout's Linear level): z_T is at distance 1 from
the output and z_1 at distance T. Every level's change to a shared parameter goes to the same
tensor; rules that claim exactness pool them over the presentation (SPEC.md 1b).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .activations import get_activation
from .errors import BioPropError
from .levels import ActivationOp, ElmanLevel, Level, LinearLevel, RateFunction
from .network import Network

Tensor = torch.Tensor


class ElmanRNN(Network):
    """Many-to-one Elman RNN (see the module docstring).

    input_size, hidden_size, output_size: widths of u_t, r_t and the output.
    activation: "tanh" or "relu" (torch.nn.RNN's nonlinearities).
    bias: biases b_ih, b_hh and b_o.
    dtype, device, seed: as for bioprop.MLP; the initial values follow torch.nn.RNN's and
        nn.Linear's law, U(-1/sqrt(hidden), 1/sqrt(hidden)) and U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        drawn in float64 on the CPU from `seed` (None: torch's global generator).
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, activation: str = "tanh",
                 bias: bool = True, dtype: torch.dtype = torch.float32, device=None, seed: int | None = None):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("output_size", output_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BioPropError(f"{name}={value!r}: give a positive integer")
        if activation not in ("tanh", "relu"):
            raise BioPropError(f"activation={activation!r}: an ElmanRNN takes 'tanh' or 'relu' (torch.nn.RNN's nonlinearities)")
        if not dtype.is_floating_point:
            raise BioPropError(f"dtype={dtype}: give a floating-point dtype such as torch.float64")
        self.activation = get_activation(activation)
        self.has_bias = bool(bias)
        self.rnn = nn.RNN(input_size, hidden_size, num_layers=1, nonlinearity=activation, bias=bias,
                          batch_first=True, dtype=dtype, device=device)
        self.readout = nn.Linear(hidden_size, output_size, bias=bias, dtype=dtype, device=device)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for module, bound in ((self.rnn, 1 / math.sqrt(hidden_size)), (self.readout, 1 / math.sqrt(hidden_size))):
                for parameter in module.parameters():
                    draw = torch.rand(parameter.shape, generator=generator, dtype=torch.float64) * 2 - 1
                    parameter.copy_(draw * bound)

    def describe(self) -> str:
        return (f"an ElmanRNN ({self.rnn.input_size} -> {self.rnn.hidden_size} -> {self.readout.out_features}, "
                f"{self.activation.name})")

    @property
    def output_size(self) -> int:
        return self.readout.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.rnn(x)[0][:, -1])

    def levels_for(self, x: Tensor | None) -> list[Level]:
        """z_1 .. z_T and z_out for a batch x of T tokens; x=None: one time step, the structure
        (which parameters each kind of level reads) for rules that draw per parameter."""
        steps = 1 if x is None else x.shape[1]
        rnn = self.rnn
        rate = RateFunction([ActivationOp(self.activation)])
        bias_ih = rnn.bias_ih_l0 if self.has_bias else None
        bias_hh = rnn.bias_hh_l0 if self.has_bias else None
        levels: list[Level] = [
            ElmanLevel(rnn.weight_ih_l0, rnn.weight_hh_l0, bias_ih, bias_hh, rate, first=t == 0) for t in range(steps)
        ]
        levels.append(LinearLevel(self.readout.weight, self.readout.bias, RateFunction()))
        return levels

    def input_rates(self, x: Tensor) -> Tensor:
        """r_0 = 0 (the hidden state before the first token)."""
        return x.new_zeros(x.shape[0], self.rnn.hidden_size)

    def side_inputs(self, x: Tensor, levels) -> list[Tensor | None]:
        return [x[:, t] for t in range(x.shape[1])] + [None]

    def parameters_list(self) -> list[Tensor]:
        return list(self.rnn.parameters()) + list(self.readout.parameters())

    def parameter_names(self) -> list[str]:
        return [f"rnn.{n}" for n, _ in self.rnn.named_parameters()] + [f"readout.{n}" for n, _ in self.readout.named_parameters()]

    def check_input(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[2] != self.rnn.input_size or x.shape[1] < 1:
            raise BioPropError(
                f"x: expected shape (batch, time, {self.rnn.input_size}) for {self.describe()}, got {tuple(x.shape)}"
            )
        return x


__all__ = ["ElmanRNN"]
