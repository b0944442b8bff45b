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

Notation map: Akrout et al. write the updates as dW = -eta delta h^T - lambda W and
dB = -eta h delta^T - lambda B; our lr is eta and lr * decay is lambda (decay scales with lr so
it keeps its meaning when lr changes). Biases do not decay.

Options: decay (1e-3 by default: on Fashion-MNIST 784-200-200-200-10 relu, lr 0.05, 10 epochs
it costs no accuracy; see docs/rules.md for the measurement), feedback_scale (1.0, the initial
draw), seed (0; the trainer passes its --seed). decay = 0 keeps B_l - W_l^T at its initial
value; alignment then only grows as the shared updates outgrow it.
"""
from __future__ import annotations

from .base import check_positive, sgd_write
from .feedback import FeedbackRule, sgd_step


class KolenPollack(FeedbackRule):
    name = "kp"

    def __init__(self, lr=0.01, loss="mse", decay=1e-3, feedback_scale=1.0, seed=0):
        super().__init__(lr, loss, feedback_scale, seed)
        self.decay = check_positive("decay", decay, allow_zero=True)

    def options(self):
        return {**super().options(), "decay": self.decay}

    def _write(self, net, weight_estimates, bias_estimates):
        # every change is computed from the values before the step, then written
        feedback = self._drawn
        feedback_changes = [
            -self.lr * (estimate.T + self.decay * matrix) if self.decay else -self.lr * estimate.T
            for estimate, matrix in zip(weight_estimates[1:], feedback)
        ]
        sgd_step(net, weight_estimates, bias_estimates, self.lr, self.decay)
        for matrix, change in zip(feedback, feedback_changes):
            sgd_write(matrix, change)
