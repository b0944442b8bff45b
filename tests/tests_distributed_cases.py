"""Shared by tests/test_distributed.py and tests/distributed_worker.py: the rules, nets and batches."""
import torch

import bioprop

#: label -> (rule, options, model)
CASES = {
    "bp": ("bp", {}, "mlp"),
    "zil": ("zil", {}, "mlp"),
    "credit": ("credit", {}, "mlp"),
    "kp": ("kp", {"decay": 1e-2}, "mlp"),
    "il-noisy": ("il", {"init_noise": 0.1, "n_steps": 5}, "mlp"),  # batch noise drawn globally, sliced
    "fa": ("fa", {}, "mlp"),
    "sign": ("sign", {}, "mlp"),
    "dfa": ("dfa", {}, "mlp"),
    "fa-lenet5": ("fa", {}, "lenet5"),
    "zil-lenet5": ("zil", {}, "lenet5"),
    "fazil-rnn": ("fazil", {}, "rnn"),
}


SHAPES = {"mlp": (12,), "lenet5": (1, 8, 8), "rnn": (5, 6)}


def make_net(model: str):
    if model == "mlp":
        return bioprop.MLP([12, 10, 8, 4], activation="tanh", dtype=torch.float64, seed=3)
    if model == "rnn":
        return bioprop.ElmanRNN(6, 7, 4, dtype=torch.float64, seed=3)
    from bioprop.models import build_model

    return build_model(model, SHAPES[model], 4, dtype=torch.float64, seed=3)


def batches(model: str, steps: int = 3, batch: int = 64):
    generator = torch.Generator().manual_seed(11)
    return [(torch.randn(batch, *SHAPES[model], generator=generator, dtype=torch.float64),
             torch.randint(0, 4, (batch,), generator=generator)) for _ in range(steps)]
