"""Inference learning (IL): Whittington & Bogacz 2017; Algorithm 1 of Song et al. 2020.

With the input clamped and the network at its prediction (the feed-forward pass), the teacher
clamps the output; inference then runs for T steps with a small step gamma,

    x_l <- x_l + gamma * ( -eps_l + f'(x_l) * (W_{l+1}^T eps_{l+1}) ),   eps_l = x_l - mu_l,

and at t = t_c = T (an external trigger) every weight takes one local Hebbian step

    W_l <- W_l + alpha * <eps_l f(x_{l-1})^T>,     b_l <- b_l + alpha * <eps_l>      (batch mean).

At the inference equilibrium eps_l approximates -d_l (BP's delta), so IL approximates BP; it
is not exact (see `bioprop verify --rule il` for the measured distance). The PCN itself, the
teacher and the time-step ordering are in `predictive_coding.py`.

Options: gamma (0.1), n_steps = T (20), init_noise (std of Gaussian noise added to the hidden
value nodes at t = 0; 0 = start at the prediction fixpoint), seed (for that noise),
ce_teacher ("moving": eps_L = y - softmax(mu_L) follows the prediction, our default; "fixed":
eps_L held at its feed-forward value, the SPEC's letter, whose energy is unbounded below; see
docs/rules.md).
"""
from __future__ import annotations

import torch

from ..errors import BioPropError
from .base import LearningRule, check_int, check_positive
from .predictive_coding import present


class InferenceLearning(LearningRule):
    name = "il"
    paper = "Whittington & Bogacz 2017; Song et al. 2020, Alg. 1"
    option_help = {
        "gamma": "inference step size of the value nodes (small, e.g. 0.1, for IL to settle near BP)",
        "n_steps": "T: inference steps before the one weight update at t_c = T",
        "init_noise": "std of Gaussian noise on the hidden value nodes at t = 0 (0: start at the prediction fixpoint)",
        "ce_teacher": "with loss ce: 'moving' (eps_L = y - softmax(mu_L) follows the prediction) or 'fixed' "
                      "(eps_L held at its feed-forward value, the SPEC's letter)",
        "seed": "seeds the init_noise draws",
    }
    benchmark_cases = {"il (T=20)": {"n_steps": 20}}

    def __init__(self, lr=0.01, loss="mse", gamma=0.1, n_steps=20, init_noise=0.0, ce_teacher="moving", seed=0):
        super().__init__(lr, loss)
        if ce_teacher not in ("moving", "fixed"):
            raise BioPropError(f"ce_teacher={ce_teacher!r}: choose 'moving' or 'fixed'")
        self.ce_teacher = ce_teacher
        self.gamma = check_positive("gamma", gamma)
        self.n_steps = check_int("n_steps", n_steps, 0)
        self.init_noise = check_positive("init_noise", init_noise, allow_zero=True)
        self.seed = seed
        self._noise = torch.Generator().manual_seed(seed)

    def options(self):
        return {**super().options(), "gamma": self.gamma, "n_steps": self.n_steps, "init_noise": self.init_noise,
                "ce_teacher": self.ce_teacher, "seed": self.seed}

    def _step(self, net, x, y, trace):
        t_c, n_layers = self.n_steps, net.n_layers

        def update_at_t_c(t, errors, predictions):
            return [1.0 if t == t_c else None] * n_layers

        info = present(
            net, x, y, self.loss, gamma=self.gamma, n_steps=t_c + 1, lr=self.lr, gate=update_at_t_c,
            init_noise=self.init_noise, noise=self._noise, record=trace, fixed_error=self.ce_teacher == "fixed",
        )
        return {**info, "n_inference_steps": t_c}
