"""Activation functions f and their derivatives f', by name.

Every rule needs f' explicitly (predictive coding's value-node update, the credit rule's
balance function), so an activation is a pair (f, f') rather than a bare callable. The
derivative of relu at 0 is taken as 0, matching autograd, so rules and the BP oracle agree
bit for bit on where a unit is "on".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import BioPropError

Tensor = torch.Tensor


@dataclass(frozen=True)
class Activation:
    name: str
    f: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor], Tensor]
    #: grad * f'(z) computed from the output r = f(z) (tanh, sigmoid, relu: f' is a function of f) by
    #: autograd's backward kernel, without evaluating f again; None: the rules use derivative(z) * grad
    backward_from_output: Callable[[Tensor, Tensor], Tensor] | None = None

    def __call__(self, z: Tensor) -> Tensor:
        return self.f(z)


def _sigmoid_derivative(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s)


def _tanh_derivative(z: Tensor) -> Tensor:
    t = torch.tanh(z)
    return 1 - t * t


def _relu_derivative(z: Tensor) -> Tensor:
    return (z > 0).to(z.dtype)


def _leaky_relu(z: Tensor) -> Tensor:
    return torch.nn.functional.leaky_relu(z, 0.01)


def _leaky_relu_derivative(z: Tensor) -> Tensor:
    return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, 0.01))


_REGISTRY: dict[str, Activation] = {
    # autograd's own backward kernels: one pass over the tensor (their vectorised and scalar paths may
    # round the last bit differently, so results agree with derivative(z) * grad to round-off)
    "sigmoid": Activation("sigmoid", torch.sigmoid, _sigmoid_derivative,
                          lambda grad, out: torch.ops.aten.sigmoid_backward(grad, out)),
    "tanh": Activation("tanh", torch.tanh, _tanh_derivative, lambda grad, out: torch.ops.aten.tanh_backward(grad, out)),
    "relu": Activation("relu", torch.relu, _relu_derivative,  # out > 0 exactly where z > 0
                       lambda grad, out: torch.ops.aten.threshold_backward(grad, out, 0)),
    "leaky_relu": Activation("leaky_relu", _leaky_relu, _leaky_relu_derivative),
    "linear": Activation("linear", lambda z: z, torch.ones_like),
}


def register_activation(name: str, f: Callable[[Tensor], Tensor], derivative: Callable[[Tensor], Tensor]) -> Activation:
    """Add a user activation. `derivative` must be f' as a function of the pre-activation."""
    activation = Activation(name, f, derivative)
    _REGISTRY[name] = activation
    return activation


def get_activation(activation: str | Activation) -> Activation:
    if isinstance(activation, Activation):
        return activation
    try:
        return _REGISTRY[activation]
    except KeyError:
        raise BioPropError(
            f"activation={activation!r} is not known; choose one of {sorted(_REGISTRY)} "
            "or add one with bioprop.register_activation(name, f, derivative)"
        ) from None


def leaky_relu_activation(negative_slope: float = 0.01) -> Activation:
    """Leaky relu with this slope (the registered "leaky_relu" for torch's default 0.01)."""
    if negative_slope == 0.01:
        return _REGISTRY["leaky_relu"]

    def f(z: Tensor) -> Tensor:
        return torch.nn.functional.leaky_relu(z, negative_slope)

    def derivative(z: Tensor) -> Tensor:
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, negative_slope))

    return Activation(f"leaky_relu({negative_slope:g})", f, derivative)


def activation_names() -> list[str]:
    return sorted(_REGISTRY)
