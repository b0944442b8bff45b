"""Backpropagation: plain SGD on the batch-mean loss, gradients from PyTorch autograd.

    W_l <- W_l - lr * dLoss/dW_l,     b_l <- b_l - lr * dLoss/db_l

This rule is the oracle every other rule is held to: it shares nothing with them but the
network's forward pass (for a wrapped module, the user's own `model(x)`), and its gradients
come from autograd, not from our own deltas. It runs on any bioprop.Network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import Loss, get_loss
from .base import LearningRule, StepResult


class BackpropRule(LearningRule):
    name = "bp"
    paper = "autograd SGD (the oracle)"
    option_help: dict[str, str] = {}
    benchmark_cases = {"bp": {}}
    claims_exactness = True

    def _step(self, net, x, y, trace):
        parameters = net.parameters_list()
        with torch.enable_grad():
            output = net(x)
            loss = autograd_loss(self.loss, output, y)
            gradients = torch.autograd.grad(loss, parameters)
        with torch.no_grad():
            torch._foreach_add_(parameters, gradients, alpha=-self.lr)
        return StepResult(loss=loss.detach(), output=output.detach(), trace=[] if trace else None)


def autograd_loss(loss: Loss, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The batch-mean loss through torch's fused loss functions where bioprop's loss is one of
    them (its value to round-off; fewer autograd nodes than the per-sample formula): mse,
    0.5 ||z - y||^2 per sample, is F.mse_loss's sum times 0.5 / B; ce with (B, n) targets is
    F.cross_entropy with probability targets. Other losses go through their own formula."""
    if loss is _MSE:
        return F.mse_loss(output, target, reduction="sum") * (0.5 / output.shape[0])
    if loss is _CE:
        return F.cross_entropy(output, target)
    return loss(output, target)


_MSE, _CE = get_loss("mse"), get_loss("ce")
