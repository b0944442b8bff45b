"""Levels: the one substrate every rule runs on (SPEC.md section 1b).

A network is a chain of levels l = 1..L. Level l is an affine map followed by a parameter-free
rate function,

    z_l = A_l(r_{l-1}, u_l; theta_l)          (Linear, Conv1d, Conv2d, one Elman time step)
    r_l = g_l(z_l)                             (activation, pooling, flatten; identity at the top)

with r_0 = g_0(input) the clamped input and u_l an optional side input clamped into level l
(the token u_t of an unrolled recurrent net; None elsewhere). Every learning rule needs only
three primitives per level, which each level kind gives in closed form:

    forward(r, u)                     z = A(r, u; theta)
    input_vjp(grad_z, r, feedback)    (dz/dr)^T grad_z, the transposed feedback; `feedback`
                                      replaces the level's forward weight by a feedback weight in
                                      the level's feedback layout (FA, KP, sign symmetry)
    parameter_vjp(grad_z, r, u)       (dz/dtheta)^T grad_z, one tensor per parameter, summed
                                      over the batch: the local Hebbian update (eps r^T for a
                                      Linear level; the correlation of eps with r, summed over
                                      positions, for a conv kernel)

and the rate function gives r = g(z) with what its VJP needs (`RateFunction.forward`) and
`RateFunction.vjp(grad_r, context)`, (dr/dz)^T grad_r, with the elementwise activation's
derivative optionally replaced (the credit rule's balance function).

Feedback layout: a Linear level's feedback is B of W^T's shape (n_in, n_out), the matrix that
multiplies the delta in the papers' notation (Lillicrap et al.'s B); a conv level's is a kernel
of W's own shape, used in the transposed convolution in place of W.

`GenericLevel` computes the same primitives for any module through torch.func.vjp; the tests
hold every closed form to it in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .activations import Activation
from .errors import BioPropError

Tensor = torch.Tensor


# -- rate functions: parameter-free maps between levels ---------------------------------------
class RateOp:
    """One parameter-free map of a rate function. `forward` returns (output, what vjp needs)."""

    def forward(self, z: Tensor) -> tuple[Tensor, object]:
        raise NotImplementedError

    def vjp(self, grad: Tensor, z: Tensor, saved: object) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class ActivationOp(RateOp):
    """An elementwise activation; its forward keeps its output r = f(z), from which tanh, sigmoid
    and relu form f'(z) * grad with autograd's own backward kernel, without evaluating f again
    (`Activation.backward_from_output`); other activations use f'(z) * grad."""

    activation: Activation

    def forward(self, z):
        out = self.activation(z)
        return out, out

    def vjp(self, grad, z, saved, derivative: Callable[[Tensor], Tensor] | None = None):
        if derivative is None and saved is not None and self.activation.backward_from_output is not None:
            return self.activation.backward_from_output(grad, saved)
        return (derivative or self.activation.derivative)(z) * grad


@dataclass(frozen=True)
class FlattenOp(RateOp):
    start_dim: int = 1
    end_dim: int = -1

    def forward(self, z):
        return torch.flatten(z, self.start_dim, self.end_dim), None

    def vjp(self, grad, z, saved):
        return grad.reshape(z.shape)


@dataclass(frozen=True)
class MaxPoolOp(RateOp):
    """MaxPool1d/2d; the VJP routes each gradient to its window's argmax (accumulating where
    windows overlap), as autograd does."""

    dims: int
    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    ceil_mode: bool

    def forward(self, z):
        pool = F.max_pool2d if self.dims == 2 else F.max_pool1d
        return pool(z, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, return_indices=True)

    def vjp(self, grad, z, indices):
        if self.dims == 1:  # aten has the 2-d backward; a 1-d pool is a 2-d pool of height 1
            out = torch.ops.aten.max_pool2d_with_indices_backward(
                grad.unsqueeze(-2), z.unsqueeze(-2), (1, *self.kernel_size), (1, *self.stride), (0, *self.padding),
                (1, *self.dilation), self.ceil_mode, indices.unsqueeze(-2),
            )
            return out.squeeze(-2)
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, z, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, indices
        )


@dataclass(frozen=True)
class AvgPoolOp(RateOp):
    dims: int
    kernel_size: tuple
    stride: tuple
    padding: tuple
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None = None

    def forward(self, z):
        if self.dims == 2:
            return F.avg_pool2d(z, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                self.count_include_pad, self.divisor_override), None
        return F.avg_pool1d(z, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad), None

    def vjp(self, grad, z, saved):
        if self.dims == 1:
            out = torch.ops.aten.avg_pool2d_backward(
                grad.unsqueeze(-2), z.unsqueeze(-2), (1, *self.kernel_size), (1, *self.stride), (0, *self.padding),
                self.ceil_mode, self.count_include_pad, None,
            )
            return out.squeeze(-2)
        return torch.ops.aten.avg_pool2d_backward(
            grad, z, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
            self.divisor_override,
        )


@dataclass
class RateContext:
    """What a rate function's VJP needs from its forward: each op's input and saved values."""

    inputs: list[Tensor]
    saved: list[object]


class RateFunction:
    """g_l = op_k o ... o op_1, a chain of parameter-free maps (empty: the identity)."""

    def __init__(self, ops: Sequence[RateOp] = ()):
        self.ops = list(ops)

    @property
    def is_identity(self) -> bool:
        return not self.ops

    @property
    def activation(self) -> Activation | None:
        """The elementwise activation when g is exactly one (an MLP layer's f), else None."""
        if len(self.ops) == 1 and isinstance(self.ops[0], ActivationOp):
            return self.ops[0].activation
        return None

    @property
    def is_elementwise(self) -> bool:
        return all(isinstance(op, ActivationOp) for op in self.ops)

    def __call__(self, z: Tensor) -> Tensor:
        for op in self.ops:
            z = op.forward(z)[0]
        return z

    def forward(self, z: Tensor) -> tuple[Tensor, RateContext]:
        inputs, saved = [], []
        for op in self.ops:
            inputs.append(z)
            z, keep = op.forward(z)
            saved.append(keep)
        return z, RateContext(inputs, saved)

    def vjp(self, grad: Tensor, context: RateContext, derivative: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """(dr/dz)^T grad at the z the context was made at; `derivative` replaces the
        activation's f' (the credit rule's balance function)."""
        for op, z, keep in zip(reversed(self.ops), reversed(context.inputs), reversed(context.saved)):
            if isinstance(op, ActivationOp):
                grad = op.vjp(grad, z, keep, derivative)
            else:
                grad = op.vjp(grad, z, keep)
        return grad

    def __repr__(self) -> str:
        return f"RateFunction({self.ops})"


# -- levels: the affine maps ----------------------------------------------------------------------
class Level:
    """The affine map of one level; `rate` is the rate function applied to its output."""

    #: the tensors the map reads (shared between levels of an unrolled recurrent net)
    parameters: list[Tensor]
    rate: RateFunction
    name: str = "level"
    #: whether parameter_vjp sums over the rows of 2-d (B, n) inputs with nothing but the
    #: parameters besides, so that levels sharing them may stack their rows (sweeps.stacked_groups)
    stacks_over_batch: bool = False

    def forward(self, r: Tensor, side: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def input_vjp(self, grad_z: Tensor, r: Tensor, feedback: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def parameter_vjp(self, grad_z: Tensor, r: Tensor, side: Tensor | None = None) -> list[Tensor]:
        raise NotImplementedError

    def backward(self, grad_z: Tensor, r: Tensor, side: Tensor | None = None, input_needed: bool = True,
                 feedback: Tensor | None = None) -> tuple[Tensor | None, list[Tensor]]:
        """(input VJP or None, parameter VJPs) in one go (a conv level makes one aten call)."""
        grad_r = self.input_vjp(grad_z, r, feedback) if input_needed else None
        return grad_r, self.parameter_vjp(grad_z, r, side)

    # feedback weights (the FA family): which parameter the input VJP reads, in which layout
    @property
    def forward_weight(self) -> Tensor:
        """The parameter whose transpose carries feedback down from this level."""
        raise NotImplementedError

    def feedback_shape(self) -> tuple[int, ...]:
        return tuple(self.forward_weight.shape)

    def to_feedback_layout(self, weight_like: Tensor) -> Tensor:
        """A tensor of the forward weight's shape in the feedback layout (Linear: transposed)."""
        return weight_like

    def feedback_fans(self) -> tuple[int, int]:
        """(fan_in, fan_out) of the forward weight, for the xavier law of a drawn feedback."""
        weight = self.forward_weight
        receptive = weight[0][0].numel() if weight.dim() > 2 else 1
        return weight.shape[1] * receptive, weight.shape[0] * receptive


class LinearLevel(Level):
    """z = r W^T + b, W of shape (n_out, n_in); r of shape (B, n_in)."""

    name = "Linear"

    def __init__(self, weight: Tensor, bias: Tensor | None, rate: RateFunction):
        self.weight, self.bias, self.rate = weight, bias, rate
        self.parameters = [weight] if bias is None else [weight, bias]

    def forward(self, r, side=None):
        return F.linear(r, self.weight, self.bias)

    def input_vjp(self, grad_z, r, feedback=None):
        if feedback is None:
            return grad_z @ self.weight
        return grad_z @ feedback.T  # B of W^T's shape: the delta's feedback is B delta

    def parameter_vjp(self, grad_z, r, side=None):
        if grad_z.dim() > 2:  # nn.Linear maps the last dimension: leading ones are summed over
            grad_z, r = grad_z.reshape(-1, grad_z.shape[-1]), r.reshape(-1, r.shape[-1])
        changes = [grad_z.T @ r]
        if self.bias is not None:
            changes.append(grad_z.sum(dim=0))
        return changes

    @property
    def forward_weight(self):
        return self.weight

    def feedback_shape(self):
        return tuple(self.weight.shape[::-1])

    def to_feedback_layout(self, weight_like):
        return weight_like.T


class ConvLevel(Level):
    """Conv1d / Conv2d with zero padding, any stride and dilation, groups 1."""

    def __init__(self, weight: Tensor, bias: Tensor | None, dims: int, stride: tuple, padding: tuple,
                 dilation: tuple, rate: RateFunction):
        self.weight, self.bias, self.dims, self.rate = weight, bias, dims, rate
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.parameters = [weight] if bias is None else [weight, bias]
        self.name = f"Conv{dims}d"
        self._convolve = F.conv2d if dims == 2 else F.conv1d

    def forward(self, r, side=None):
        return self._convolve(r, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def _aten_backward(self, grad_z, r, weight, mask):
        bias_sizes = [weight.shape[0]] if (self.bias is not None and mask[2]) else None
        return torch.ops.aten.convolution_backward(
            grad_z, r, weight, bias_sizes, self.stride, self.padding, self.dilation, False, [0] * self.dims, 1, mask
        )

    def input_vjp(self, grad_z, r, feedback=None):
        weight = self.weight if feedback is None else feedback
        return self._aten_backward(grad_z, r, weight, (True, False, False))[0]

    def parameter_vjp(self, grad_z, r, side=None):
        _, grad_w, grad_b = self._aten_backward(grad_z, r, self.weight, (False, True, self.bias is not None))
        return [grad_w] if self.bias is None else [grad_w, grad_b]

    def backward(self, grad_z, r, side=None, input_needed=True, feedback=None):
        if not input_needed:
            return None, self.parameter_vjp(grad_z, r, side)
        # one aten call: the kernel's and bias's gradients read only grad_z and r, so a feedback
        # kernel in W's place changes the input VJP alone
        weight = self.weight if feedback is None else feedback
        grad_r, grad_w, grad_b = self._aten_backward(grad_z, r, weight, (True, True, self.bias is not None))
        return grad_r, [grad_w] if self.bias is None else [grad_w, grad_b]

    @property
    def forward_weight(self):
        return self.weight


class ElmanLevel(Level):
    """One time step of an Elman RNN: z_t = u_t W_ih^T + b_ih + r_{t-1} W_hh^T + b_hh.

    W_ih, W_hh and the biases are shared by every time step of the unrolled net; the side input
    u_t is the sequence's t-th token (clamped)."""

    name = "ElmanStep"
    stacks_over_batch = True  # `first` changes the forward only: r_0 = 0 adds nothing to grad_z^T r

    def __init__(self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None,
                 rate: RateFunction, first: bool):
        self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh = weight_ih, weight_hh, bias_ih, bias_hh
        self.rate, self.first = rate, first
        self.parameters = [weight_ih, weight_hh] + ([bias_ih, bias_hh] if bias_ih is not None else [])

    def forward(self, r, side=None):
        z = F.linear(side, self.weight_ih, self.bias_ih)
        if self.first:  # r_0 = 0: W_hh r_0 vanishes; only the bias remains
            return z if self.bias_hh is None else z + self.bias_hh
        return z + F.linear(r, self.weight_hh, self.bias_hh)

    def input_vjp(self, grad_z, r, feedback=None):
        return grad_z @ (self.weight_hh if feedback is None else feedback.T)

    def parameter_vjp(self, grad_z, r, side=None):
        changes = [grad_z.T @ side, grad_z.T @ r]
        if self.bias_ih is not None:
            summed = grad_z.sum(dim=0)
            changes += [summed, summed]
        return changes

    @property
    def forward_weight(self):
        return self.weight_hh

    def feedback_shape(self):
        return tuple(self.weight_hh.shape[::-1])

    def to_feedback_layout(self, weight_like):
        return weight_like.T


class GenericLevel(Level):
    """Any module, through torch.func: the reference the closed forms are tested against.

    `module` maps r to z; its parameters (in `named_parameters` order) are the level's."""

    def __init__(self, module: nn.Module, rate: RateFunction):
        self.module, self.rate = module, rate
        self.names = [name for name, _ in module.named_parameters()]
        self.parameters = [p for _, p in module.named_parameters()]
        self.name = f"Generic({type(module).__name__})"

    def _call(self, params, r):
        return torch.func.functional_call(self.module, dict(zip(self.names, params)), (r,))

    def forward(self, r, side=None):
        return self.module(r)

    def input_vjp(self, grad_z, r, feedback=None):
        params = list(self.parameters)
        if feedback is not None:
            params[0] = feedback  # the first parameter is the module's weight
        _, pullback = torch.func.vjp(lambda inp: self._call(params, inp), r)
        return pullback(grad_z)[0]

    def parameter_vjp(self, grad_z, r, side=None):
        _, pullback = torch.func.vjp(lambda *params: self._call(params, r), *self.parameters)
        return list(pullback(grad_z))

    @property
    def forward_weight(self):
        return self.parameters[0]


def generic_rate_vjp(rate: RateFunction, z: Tensor, grad: Tensor) -> Tensor:
    """(dg/dz)^T grad through torch.func: the reference for RateFunction.vjp."""
    _, pullback = torch.func.vjp(rate, z)
    return pullback(grad)[0]


# -- building levels from torch modules ---------------------------------------------------------------
SUPPORTED_MODULES = (
    "Linear", "Conv1d", "Conv2d", "AvgPool1d", "AvgPool2d", "MaxPool1d", "MaxPool2d", "Flatten", "Identity",
    "Tanh", "Sigmoid", "ReLU", "LeakyReLU",
)


def _pair(value, dims: int) -> tuple:
    if isinstance(value, int):
        return (value,) * dims
    return tuple(value)


def rate_op_of(module: nn.Module, where: str) -> RateOp | None:
    """The RateOp of a parameter-free module (None for Identity); BioPropError if unsupported."""
    from .activations import get_activation, leaky_relu_activation

    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, nn.Tanh):
        return ActivationOp(get_activation("tanh"))
    if isinstance(module, nn.Sigmoid):
        return ActivationOp(get_activation("sigmoid"))
    if isinstance(module, nn.ReLU):
        return ActivationOp(get_activation("relu"))
    if isinstance(module, nn.LeakyReLU):
        return ActivationOp(leaky_relu_activation(module.negative_slope))
    if isinstance(module, nn.Flatten):
        return FlattenOp(module.start_dim, module.end_dim)
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
        dims = 2 if isinstance(module, nn.MaxPool2d) else 1
        stride = module.stride if module.stride is not None else module.kernel_size
        if getattr(module, "return_indices", False):
            raise BioPropError(f"{where}: MaxPool with return_indices=True is not supported; use return_indices=False")
        return MaxPoolOp(dims, _pair(module.kernel_size, dims), _pair(stride, dims), _pair(module.padding, dims),
                         _pair(module.dilation, dims), bool(module.ceil_mode))
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d)):
        dims = 2 if isinstance(module, nn.AvgPool2d) else 1
        stride = module.stride if module.stride is not None else module.kernel_size
        divisor = getattr(module, "divisor_override", None)
        return AvgPoolOp(dims, _pair(module.kernel_size, dims), _pair(stride or module.kernel_size, dims),
                         _pair(module.padding, dims), bool(module.ceil_mode), bool(module.count_include_pad), divisor)
    raise BioPropError(
        f"{where}: {type(module).__name__} is not supported; bioprop.wrap takes an nn.Sequential of "
        f"{', '.join(SUPPORTED_MODULES)}"
    )


def level_of(module: nn.Module, rate: RateFunction, where: str) -> Level:
    """The Level of a parameterised module (Linear, Conv1d, Conv2d)."""
    if isinstance(module, nn.Linear):
        return LinearLevel(module.weight, module.bias, rate)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        dims = 2 if isinstance(module, nn.Conv2d) else 1
        if module.groups != 1:
            raise BioPropError(f"{where}: {type(module).__name__} with groups={module.groups}: only groups=1 is supported")
        if module.padding_mode != "zeros":
            raise BioPropError(f"{where}: {type(module).__name__} with padding_mode={module.padding_mode!r}: only 'zeros' is supported")
        padding = module.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0,) * dims
            else:  # "same": symmetric only when every effective kernel size is odd
                effective = [d * (k - 1) for k, d in zip(module.kernel_size, module.dilation)]
                if any(e % 2 for e in effective):
                    raise BioPropError(f"{where}: {type(module).__name__} with padding='same' and an even kernel "
                                       "pads asymmetrically, which is not supported; give integer padding")
                padding = tuple(e // 2 for e in effective)
        return ConvLevel(module.weight, module.bias, dims, module.stride, padding, module.dilation, rate)
    raise BioPropError(
        f"{where}: {type(module).__name__} has parameters but is not Linear, Conv1d or Conv2d; "
        f"bioprop.wrap takes an nn.Sequential of {', '.join(SUPPORTED_MODULES)}"
    )


__all__ = [
    "ActivationOp", "AvgPoolOp", "ConvLevel", "ElmanLevel", "FlattenOp", "GenericLevel", "Level", "LinearLevel",
    "MaxPoolOp", "RateContext", "RateFunction", "RateOp", "SUPPORTED_MODULES", "generic_rate_vjp", "level_of",
    "rate_op_of",
]
