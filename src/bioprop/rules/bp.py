"""Backpropagation: plain SGD on the batch-mean loss, gradients from PyTorch autograd.

    W_l <- W_l - lr * dLoss/dW_l,     b_l <- b_l - lr * dLoss/db_l

This rule is the oracle every other rule is held to: it shares nothing with them but the
network's forward pass (for a wrapped module, the user's own `model(x)`), and its gradients
come from autograd, not from our own deltas. It runs on any bioprop.Network.
"""
from __future__ import annotations

import torch

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
            loss = self.loss(output, y)
            gradients = torch.autograd.grad(loss, parameters)
        with torch.no_grad():
            torch._foreach_add_(parameters, gradients, alpha=-self.lr)
        return StepResult(loss=loss.detach(), output=output.detach(), trace=[] if trace else None)
