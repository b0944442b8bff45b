"""Checking a training batch before a rule touches a network (any network: an MLP's layers or a
RateNetwork's input and output neurons).

A batch is brought to the network's dtype. When that changes a floating dtype (a float32 batch
for a float64 network, which is how exactness checks quietly lose their 1e-10, or the reverse,
which drops precision) a DtypeWarning says so, once per network and dtype pair: networks are
told apart by their description (`network`, e.g. "a net with sizes [4, 3, 2]"), so that a rule's
every step does not repeat it. Integer labels, integer inputs and batches already in the
network's dtype never warn.

The value checks (finite inputs and targets, labels in range) must not synchronise the host with
an accelerator at every step. Where they run:

- inside `prechecked()` (the trainer, which checks its data once with `check_data`): not at all
  (the shape, dtype and device handling stays);
- on the CPU: at every batch, as one pass per tensor, its sum (finite exactly when every entry is,
  unless the sum overflows: then the entries are checked one by one), read back at no cost (there
  is no device to wait for); out-of-range labels are caught before the one-hot is made;
- on an accelerator: without a sync per batch. Each batch ORs its verdict into a flag on the device
  (`DeviceChecks`); the host reads the flag at the first step on the device and then every
  `CHECK_INTERVAL` steps, and raises the same BioPropError, naming the input and how many steps
  back the bad batch may lie (the parameters may already hold its NaNs). Labels out of range are
  clamped into range for the one-hot (so no device assert fires) and flagged.
  `check_pending(device)` reads the flag now; a flag still unread when the program exits is read
  then and reported on stderr (an exception at exit would be lost).
"""
from __future__ import annotations

import atexit
import contextlib
import contextvars
import math
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
    """Steps inside read batches of data checked once (`check_data`): no per-batch value checks."""
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
    device = torch.device(device)
    deferred = checking and DEVICE_CHECKS.deferring(device)
    flagged = device_key(device) if deferred else None
    labels = y.ndim == 1 and not y.dtype.is_floating_point
    if labels:
        y = y.to(device=device)
        if deferred and y.numel():
            DEVICE_CHECKS.flag_labels(flagged, y, n_out)
            y = y.clamp(0, n_out - 1)  # the flag reports it; a one-hot out of range would be a device assert
        elif checking and y.numel():
            low, high = torch.aminmax(y)
            if int(low) < 0 or int(high) >= n_out:
                raise BioPropError(f"y: integer labels must lie in [0, {n_out}), got range [{int(low)}, {int(high)}]")
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
    if deferred:
        DEVICE_CHECKS.flag_values(flagged, x, None if labels else y)
        DEVICE_CHECKS.count_step(flagged)
        return x, y
    if not math.isfinite(_sum_of(x, None if labels else y)):
        # a sum is finite when every entry is, and otherwise NaN or infinite, unless finite
        # entries overflowed it: check one by one, naming the input
        if not all_finite(x):
            raise BioPropError(X_NOT_FINITE)
        if not all_finite(y):
            raise BioPropError(Y_NOT_FINITE)
    return x, y


X_NOT_FINITE = "x: contains NaN or infinite values; clean the input data"
Y_NOT_FINITE = "y: contains NaN or infinite values; clean the targets"
LABELS_OUT_OF_RANGE = "y: integer labels must lie in [0, {n_out})"


def _sum_of(x: Tensor, y: Tensor | None) -> float:
    """sum(x) + sum(y), read on the host: one pass per tensor."""
    total = x.sum()
    if y is not None:
        total = total + y.sum()
    return float(total)


#: a flag read every this many steps on an accelerator (the first step on a device is read too)
CHECK_INTERVAL = 64

#: the flag's bits
_X_BIT, _Y_BIT, _LABEL_BIT = 1, 2, 4


class DeviceChecks:
    """The deferred value checks of batches on accelerators (see the module docstring): per device,
    a 0-d int64 flag on the device (bits: x not finite, y not finite, a label out of range) and
    the steps since the host last read it."""

    def __init__(self) -> None:
        self._flags: dict[torch.device, Tensor] = {}
        self._unread: dict[torch.device, int] = {}
        self._classes: dict[torch.device, int] = {}

    @staticmethod
    def deferring(device: torch.device) -> bool:
        """Whether batches on `device` are checked through the flag: every device but the CPU,
        where reading a number back costs nothing."""
        return torch.device(device).type != "cpu"

    def _or(self, device: torch.device, bits: Tensor) -> None:
        flag = self._flags.get(device)
        self._flags[device] = bits if flag is None else torch.bitwise_or(flag, bits)

    def flag_labels(self, device: torch.device, labels: Tensor, n_out: int) -> None:
        self._classes[device] = n_out
        self._or(device, ((labels < 0) | (labels >= n_out)).any().to(torch.int64) * _LABEL_BIT)

    def flag_values(self, device: torch.device, x: Tensor, y: Tensor | None) -> None:
        # entry by entry (a device pass costs little; what costs is reading it back), so that a
        # finite batch whose sum overflows is not flagged
        bits = (~torch.isfinite(x)).any().to(torch.int64) * _X_BIT
        if y is not None:
            bits = bits + (~torch.isfinite(y)).any().to(torch.int64) * _Y_BIT
        self._or(device, bits)

    def count_step(self, device: torch.device) -> None:
        """One more batch flagged on `device`; read the flag at the device's first batch and then
        every CHECK_INTERVAL batches."""
        first = device not in self._unread
        self._unread[device] = self._unread.get(device, 0) + 1
        if first or self._unread[device] >= CHECK_INTERVAL:
            self.check(device)

    def check(self, device) -> None:
        """Read the flag of `device` (one sync) and raise the BioPropError of what it holds."""
        device = device_key(device)
        flag = self._flags.pop(device, None)
        unread = self._unread.get(device, 0)
        self._unread[device] = 0
        bits = 0 if flag is None else int(flag)
        if not bits:
            return
        where = ("in this step's batch" if unread <= 1 else
                 f"in one of the last {unread} batches on {device}: the flag is read every {CHECK_INTERVAL} "
                 "steps, so the parameters may already hold its values")
        if bits & _X_BIT:
            raise BioPropError(f"{X_NOT_FINITE} (found {where})")
        if bits & _Y_BIT:
            raise BioPropError(f"{Y_NOT_FINITE} (found {where})")
        raise BioPropError(f"{LABELS_OUT_OF_RANGE.format(n_out=self._classes.get(device))} (a label outside, {where})")


DEVICE_CHECKS = DeviceChecks()


def _unread_at_exit() -> None:
    """Batches flagged after the last read would otherwise go unreported when a program ends
    within CHECK_INTERVAL steps of it: read every device's flag once at exit and warn."""
    for device in list(DEVICE_CHECKS._flags):
        try:
            DEVICE_CHECKS.check(device)
        except BioPropError as error:
            print(f"bioprop: warning: {error}", file=sys.stderr)
        except Exception:  # noqa: BLE001 -- the device may be gone at exit; nothing left to report then
            pass


atexit.register(_unread_at_exit)


def device_key(device) -> torch.device:
    """The device as the flags are kept per device: "cuda" is the current CUDA device."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def check_pending(device) -> None:
    """Read the deferred value checks of `device` now and raise what they found (see the module
    docstring); nothing on the CPU, whose batches are checked at once."""
    DEVICE_CHECKS.check(device)


def all_finite(tensor: Tensor) -> bool:
    """Every entry finite: one min/max pass (NaN propagates into both, an infinity is one of them)
    instead of a boolean tensor of the batch's size; one host sync."""
    if tensor.numel() == 0:
        return True
    return bool(torch.isfinite(torch.stack(torch.aminmax(tensor))).all())
