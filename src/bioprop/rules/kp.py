"""Kolen-Pollack (kp): Kolen & Pollack 1994, as used by Akrout, Wilson, Humphreys, Lillicrap &
Tweed, NeurIPS 2019.

Feedback alignment (see `fa.py`) whose feedback B_l (of W_l^T's shape) learns too: it receives
the transpose of W_l's update, and both decay at the same rate (batch mean <.>):

    delta_L = e,      delta_{l-1} = f'(z_{l-1}) * (B_l delta_l),      G_l = <delta_l h_{l-1}^T>,
    W_l <- W_l - lr * G_l   - lr * decay * W_l,      b_l <- b_l - lr * <delta_l>,
    B_l <- B_l - lr * G_l^T - lr * decay * B_l,

all from the values before the step. Subtracting, B_l - W_l^T <- (1 - lr * decay)(B_l - W_l^T):
the random start is forgotten geometrically and B_l converges to W_l^T (BP's feedback), using
only quantities local to each synapse (h_{l-1} and delta_l meet at both W_l and B_l).

On any chain of levels (`feedback.py`): B_l is in the level's feedback layout and receives W_l's
update in that layout, B_l <- B_l - lr * to_feedback_layout(G_l) - lr * decay * B_l (a conv
kernel's feedback receives the kernel's own update; a Linear level's the transpose), G_l W_l's
gradient estimate pooled over the levels that share it (an ElmanRNN's W_hh: summed over its time
steps). B_l - layout(W_l) then shrinks by (1 - lr * decay) per step on every net.

Notation map: Akrout et al. write the updates as dW = -eta delta h^T - lambda W and
dB = -eta h delta^T - lambda B; our lr is eta and lr * decay is lambda (decay scales with lr so
it keeps its meaning when lr changes). Biases do not decay (every parameter of two or more
dimensions is a weight and decays; vectors are biases).

Options: decay (default 1e-4), feedback_scale (1.0, the initial draw), seed (0; the trainer
passes its --seed). decay = 0 keeps B_l - W_l^T at its initial value; alignment then grows
only as the shared updates outgrow it. decay is also weight decay on W, so it trades accuracy
for alignment: on Fashion-MNIST 784-200-200-200-10 relu, ce, lr 0.05, batch 50, 10 epochs
(seeds 0-2; BP 87.99%) kp reaches 87.97% with decay 1e-4 and 87.56% with 1e-3; 3e-3 and 1e-2
cost 1.5 and 5 points (seed 0) while aligning B_l further (cos 1.0 at 1e-2, 0.3-0.7 at 1e-3).
1e-4 is the default because it keeps kp within 0.5 points of BP with a margin (docs/rules.md).
"""
from __future__ import annotations

import torch

from ..sweeps import scalar
from .base import check_positive
from .feedback import FeedbackRule


class KolenPollack(FeedbackRule):
    name = "kp"
    paper = "Kolen & Pollack 1994; Akrout et al. 2019"
    option_help = {
        "decay": "decay of W and of its feedback B per step, times lr: B - W^T shrinks by (1 - lr decay) each step "
                 "(also weight decay on W)",
    }
    benchmark_cases = {"kp": {}}

    def __init__(self, lr=0.01, loss="mse", decay=1e-4, feedback_scale=1.0, seed=0):
        super().__init__(lr, loss, feedback_scale, seed)
        self.decay = check_positive("decay", decay, allow_zero=True)

    def options(self):
        return {**super().options(), "decay": self.decay}

    def plastic_tensors(self):
        """The learnt feedback B (written in place by every step)."""
        return list(self._drawn or [])

    def _write(self, parameters, levels, keyed, estimates):
        # B_l's update reads only B_l and G_l (computed before any write), so order is free. Every
        # tensor written is decayed (tensor <- (1 - lr decay) tensor) and descended (- lr G) in
        # one foreach call each, mul_ then add_ with alpha, as a per-tensor loop would; B is stored
        # laid out like W (FeedbackRule._store_weight_major), so layout(G) = G^T adds in order.
        weights = [p.data for p, estimate in zip(parameters, estimates) if estimate is not None and p.dim() > 1]
        feedback = [matrix for matrix, (slot, _) in zip(self._drawn, keyed) if estimates[slot] is not None]
        decaying = weights + feedback if self.decay else []
        if decaying:
            torch._foreach_mul_(decaying, scalar(1.0 - self.lr * self.decay, decaying[0]))
        written = [(p.data, estimate) for p, estimate in zip(parameters, estimates) if estimate is not None]
        written += [(matrix, levels[uses[0]].to_feedback_layout(estimates[slot]))
                    for matrix, (slot, uses) in zip(self._drawn, keyed) if estimates[slot] is not None]
        if written:
            torch._foreach_add_([t for t, _ in written], [change for _, change in written], alpha=-self.lr)
