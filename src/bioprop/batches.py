"""Checking a training batch before a rule touches a network (any network: an MLP's layers or a
RateNetwork's input and output neurons)."""
from __future__ import annotations

import torch

from .errors import BioPropError

Tensor = torch.Tensor


def check_examples(x, y, n_in: int, n_out: int, network: str, dtype: torch.dtype,
                   device: torch.device) -> tuple[Tensor, Tensor]:
    """x (B, n_in) inputs and y (B, n_out) targets or (B,) integer labels (made one-hot), checked
    and brought to `dtype` and `device`. `network` names the network in the messages, e.g.
    "a net with sizes [4, 3, 2]"."""
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if x.ndim != 2 or x.shape[1] != n_in:
        raise BioPropError(f"x: expected shape (batch, {n_in}) for {network}, got {tuple(x.shape)}")
    return check_targets(x, y, n_out, network, dtype, device)


def check_targets(x: Tensor, y, n_out: int, network: str, dtype: torch.dtype,
                  device: torch.device) -> tuple[Tensor, Tensor]:
    """y (B, n_out) targets or (B,) integer labels (made one-hot) for the inputs x (B, ...),
    both checked for finiteness and brought to `dtype` and `device`."""
    y = torch.as_tensor(y)
    if y.ndim == 1 and not y.dtype.is_floating_point:
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_out):
            raise BioPropError(f"y: integer labels must lie in [0, {n_out}), got range [{int(y.min())}, {int(y.max())}]")
        y = torch.nn.functional.one_hot(y.long(), n_out)
    if y.ndim != 2 or y.shape[1] != n_out:
        raise BioPropError(
            f"y: expected shape (batch, {n_out}) targets or (batch,) integer labels for {network}, got {tuple(y.shape)}"
        )
    if x.shape[0] != y.shape[0]:
        raise BioPropError(f"x and y: batch sizes differ ({x.shape[0]} inputs, {y.shape[0]} targets)")
    if x.shape[0] == 0:
        raise BioPropError("x: the batch is empty")
    x = x.to(dtype=dtype, device=device)
    y = y.to(dtype=dtype, device=device)
    if not torch.isfinite(x).all():
        raise BioPropError("x: contains NaN or infinite values; clean the input data")
    if not torch.isfinite(y).all():
        raise BioPropError("y: contains NaN or infinite values; clean the targets")
    return x, y
