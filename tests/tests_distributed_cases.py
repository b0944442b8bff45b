"""Shared by tests/test_distributed.py and tests/distributed_worker.py: the rules, nets and batches."""
import torch

import bioprop

#: label -> (rule, options, model)
CASES = {
    "bp": ("bp", {}, "mlp"),
    "zil": ("zil", {}, "mlp"),
    "credit": ("credit", {}, "mlp"),
}


def make_net(model: str):
    return bioprop.MLP([12, 10, 8, 4], activation="tanh", dtype=torch.float64, seed=3)


def batches(model: str, steps: int = 3, batch: int = 64):
    generator = torch.Generator().manual_seed(11)
    return [(torch.randn(batch, 12, generator=generator, dtype=torch.float64),
             torch.randint(0, 4, (batch,), generator=generator)) for _ in range(steps)]
