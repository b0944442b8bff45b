"""Checking a training batch before a rule touches a network (any network: an MLP's layers or a
RateNetwork's input and output neurons).

A batch is brought to the network's dtype. When that changes a floating dtype (a float32 batch
for a float64 network, which is how exactness checks quietly lose their 1e-10, or the reverse,
which drops precision) a DtypeWarning says so, once per network and dtype pair: networks are
told apart by their description (`network`, e.g. "a net with sizes [4, 3, 2]"), so that a rule's
every step does not repeat it. Integer labels, integer inputs and batches already in the
network's dtype never warn.

The value checks (finite inputs and targets, labels in range) each read a tensor back to the host:
on an accelerator that is a synchronisation per batch. A trainer checks its data once with
`check_data` and runs its steps inside `prechecked()`, where the per-batch value checks are
skipped (the shape, dtype and device handling stays); `rule.step` outside it checks every batch.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import warnings
from typing import Iterator

import torch

from .errors import BioPropError

Tensor = torch.Tensor


#: True inside `prechecked()`: batches come from data `check_data` has passed
_PRECHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar("bioprop_prechecked", default=False)


@contextlib.contextmanager
def prechecked() -> Iterator[None]:
    """Steps inside read batches of data checked once (`check_data`): no per-batch value checks,
    and rules report their loss as a 0-d tensor (`bioprop.rules.base.reported`); no host
    synchronisation per step from either."""
    token = _PRECHECKED.set(True)
    try:
        yield
    finally:
        _PRECHECKED.reset(token)


def is_prechecked() -> bool:
    """Whether the current step runs inside `prechecked()`."""
    return _PRECHECKED.get()


def check_data(x: Tensor, y: Tensor, n_out: int) -> None:
    """The value checks of `check_targets`, once for a whole data set: x finite, y finite
    targets or integer labels in [0, n_out). Raises BioPropError naming the input and the fix."""
    if x.dtype.is_floating_point and not all_finite(x):
        raise BioPropError("x: contains NaN or infinite values; clean the input data")
    if y.dtype.is_floating_point:
        if not all_finite(y):
            raise BioPropError("y: contains NaN or infinite values; clean the targets")
    elif y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_out):
        raise BioPropError(f"y: integer labels must lie in [0, {n_out}), got range [{int(y.min())}, {int(y.max())}]")


class DtypeWarning(UserWarning):
    """A floating-point batch was converted to the network's other floating dtype."""


#: (network description, batch dtype, network dtype) already warned about
_WARNED: set[tuple[str, torch.dtype, torch.dtype]] = set()
_PACKAGE_FOLDER = os.path.dirname(os.path.abspath(__file__))


def _warn_conversion(converted: list[str], found: torch.dtype, dtype: torch.dtype, network: str) -> None:
    key = (network, found, dtype)
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(
        f"{' and '.join(converted)}: {str(found).removeprefix('torch.')} batch converted to "
        f"{str(dtype).removeprefix('torch.')} for {network}; convert it yourself (e.g. x.to(torch."
        f"{str(dtype).removeprefix('torch.')})) or build the network with dtype={found} to silence this",
        DtypeWarning,
        stacklevel=_caller_level(),
    )


def _caller_level() -> int:
    """warnings.warn's stacklevel for the first frame outside bioprop, so the warning points at
    the user's line (Python 3.12's skip_file_prefixes does this; 3.11 does not have it)."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_FOLDER + os.sep):
        frame = frame.f_back
        level += 1
    return level


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
    checking = not _PRECHECKED.get()
    if y.ndim == 1 and not y.dtype.is_floating_point:
        if checking and y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_out):
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
    converted: dict[torch.dtype, list[str]] = {}
    for name, tensor in (("x", x), ("y", y)):
        if tensor.dtype.is_floating_point and tensor.dtype != dtype:
            converted.setdefault(tensor.dtype, []).append(name)
    for found, names in converted.items():
        _warn_conversion(names, found, dtype, network)
    x = x.to(dtype=dtype, device=device)
    y = y.to(dtype=dtype, device=device)
    if not checking:
        return x, y
    if not all_finite(x):
        raise BioPropError("x: contains NaN or infinite values; clean the input data")
    if not all_finite(y):
        raise BioPropError("y: contains NaN or infinite values; clean the targets")
    return x, y


def all_finite(tensor: Tensor) -> bool:
    """Every entry finite: one min/max pass (NaN propagates into both, an infinity is one of them)
    instead of a boolean tensor of the batch's size; one host sync."""
    if tensor.numel() == 0:
        return True
    return bool(torch.isfinite(torch.stack(torch.aminmax(tensor))).all())
