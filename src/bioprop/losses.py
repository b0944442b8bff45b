"""Losses on the linear output layer z_L, and their output errors e = dLoss/dz_L.

Convention everywhere in bioprop: the loss of a batch is the batch *mean* of per-sample
losses, and every rule's weight update is the batch mean of per-sample updates, so a rule
with learning rate lr is compared with SGD  W <- W - lr * dLoss/dW  on the same mean loss.

- "mse": per sample 0.5 * ||z_L - y||^2,          e = z_L - y
- "ce":  per sample -sum_k y_k log softmax(z_L)_k, e = softmax(z_L) * sum_k y_k - y
  (= softmax(z_L) - y for one-hot or probability targets)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import BioPropError

Tensor = torch.Tensor


@dataclass(frozen=True)
class Loss:
    name: str
    per_sample: Callable[[Tensor, Tensor], Tensor]
    output_error: Callable[[Tensor, Tensor], Tensor]

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        """Batch-mean loss (differentiable: the BP oracle goes through this)."""
        return self.per_sample(output, target).mean()


def _mse_per_sample(output: Tensor, target: Tensor) -> Tensor:
    return 0.5 * ((output - target) ** 2).sum(dim=-1)


def _ce_per_sample(output: Tensor, target: Tensor) -> Tensor:
    return -(target * torch.log_softmax(output, dim=-1)).sum(dim=-1)


def _ce_output_error(output: Tensor, target: Tensor) -> Tensor:
    return torch.softmax(output, dim=-1) * target.sum(dim=-1, keepdim=True) - target


_REGISTRY = {
    "mse": Loss("mse", _mse_per_sample, lambda output, target: output - target),
    "ce": Loss("ce", _ce_per_sample, _ce_output_error),
}


def get_loss(loss: str | Loss) -> Loss:
    if isinstance(loss, Loss):
        return loss
    try:
        return _REGISTRY[loss]
    except KeyError:
        raise BioPropError(f"loss={loss!r} is not known; choose one of {sorted(_REGISTRY)}") from None


def loss_names() -> list[str]:
    return sorted(_REGISTRY)
