"""Plain measures of how alike two tensors are, shared by rules, diagnostics and verification
(its own module so that rules and diagnostics need not import each other)."""
from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def cosine(a: Tensor, b: Tensor) -> float:
    """<a, b> / (||a|| ||b||) over all entries; NaN when either is zero."""
    a, b = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
    norms = a.norm() * b.norm()
    return float((a @ b) / norms) if norms > 0 else math.nan


def relative(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b|| (NaN when b = 0)."""
    a, b = a.detach().double(), b.detach().double()
    scale = b.norm()
    return float((a - b).norm() / scale) if scale > 0 else math.nan


__all__ = ["cosine", "relative"]
