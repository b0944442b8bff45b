"""Inference learning (IL): Whittington & Bogacz 2017; Algorithm 1 of Song et al. 2020.

On levels (SPEC.md 1b; the PCN, its notation map and the time-step ordering are in
`predictive_coding.py`). With the input clamped and the network at its prediction (the
feed-forward pass), the teacher clamps the output; inference then runs for T steps with a
small step gamma,

    x_l <- x_l + gamma * ( -eps_l + G_l^T [ A_{l+1}^T eps_{l+1} ] ),   eps_l = x_l - mu_l,

(for an MLP: f'(x_l) * (W_{l+1}^T eps_{l+1})), and at t = t_c = T (an external trigger) every
parameter takes one local Hebbian step, a batch mean,

    theta_l <- theta_l + alpha / B * parameter_vjp_l(eps_l, r_{l-1}, u_l)
               (Linear: W_l += alpha <eps_l f(x_{l-1})^T>, b_l += alpha <eps_l>).

At the inference equilibrium eps_l approximates -d_l (BP's delta), so IL approximates BP; it
is not exact (see `bioprop verify --rule il` for the measured distance). IL updates every
level at the same step, so a parameter shared by several levels (an unrolled RNN) gets all its
changes at once either way; shared_updates ("pooled" or "immediate") is there for symmetry with
Z-IL and Fa-Z-IL and gives the same numbers.

The cost floor. Per presentation IL needs: the forward pass (one product per level: mu_l(0)
= z_l, and mu_1 = A_1(r_0) for the whole presentation, r_0 being clamped); at each of the T
inference steps two products per level above the input, A_l(r_{l-1}) for mu_l and A_l^T eps_l
for the feedback (levels 2..L); and at t_c one parameter VJP per level. On 784-128-128-10
(per sample, in multiply-adds) that is 118,016 + 20 x 35,328 + 118,016 = 942,592 against BP's
118,016 + 17,664 + 118,016 = 253,696: IL's floor is 3.7x BP's products per batch (the
input level's 100,352, most of the work, enters twice, not T times). `predictive_coding.simulate`
runs at that floor: no product is computed twice. The T inference steps before t_c, where no
level learns, run as a `predictive_coding.Relaxation`: buffers made once per presentation, the
products and the sigmoid/tanh kernels written into them (out=), one flat list of small closures
per step; the same numbers as the plain loop, bit for bit (tests/test_il_floor.py,
tests/test_il_fast.py). compile=True runs them through torch.compile instead (one graph for the
T steps; equal to round-off). docs/rules.md, "IL's cost floor", has the measured ms per step
and seconds per epoch against PCX.

Options: gamma (0.1), n_steps = T (20), init_noise (std of Gaussian noise added to the hidden
value nodes at t = 0; 0 = start at the prediction fixpoint), seed (for that noise; its
generator is in state_dict()), ce_teacher ("moving": eps_L = y - softmax(mu_L) follows the
prediction, our default; "fixed": eps_L held at its feed-forward value, the SPEC's letter, whose
energy is unbounded below; see docs/rules.md), shared_updates, compile (False: the eager
Relaxation; True: torch.compile, which needs a C++ compiler: a failing backend is a BioPropError
naming compile=False, not a silent fallback; each batch shape compiles once, about 30-40 s here).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BioPropError
from .base import LearningRule, StepResult, check_int, check_positive
from .predictive_coding import check_shared_updates, load_noise_state, noise_state, present


@dataclass
class ILResult(StepResult):
    """IL's step: loss and output before the update, and T, the inference steps run."""

    n_inference_steps: int = 0


class InferenceLearning(LearningRule):
    name = "il"
    paper = "Whittington & Bogacz 2017; Song et al. 2020, Alg. 1"
    option_help = {
        "shared_updates": "parameters shared by several levels (an unrolled RNN): 'pooled' sums their changes over the "
                          "presentation and writes them at its end (exact BPTT); 'immediate' writes each at its own step",
        "gamma": "inference step size of the value nodes (small, e.g. 0.1, for IL to settle near BP)",
        "n_steps": "T: inference steps before the one weight update at t_c = T",
        "init_noise": "std of Gaussian noise on the hidden value nodes at t = 0 (0: start at the prediction fixpoint)",
        "ce_teacher": "with loss ce: 'moving' (eps_L = y - softmax(mu_L) follows the prediction) or 'fixed' "
                      "(eps_L held at its feed-forward value, the SPEC's letter)",
        "seed": "seeds the init_noise draws",
        "compile": "True: the T inference steps through torch.compile (inductor; needs a C++ compiler; equal to "
                   "round-off, not bit for bit; the first batch of each shape pays the compile); False: the eager "
                   "loop (default)",
    }
    benchmark_cases = {"il (T=20)": {"n_steps": 20}}

    def __init__(self, lr=0.01, loss="mse", gamma=0.1, n_steps=20, init_noise=0.0, ce_teacher="moving", seed=0,
                 shared_updates="pooled", compile=False):
        super().__init__(lr, loss)
        if ce_teacher not in ("moving", "fixed"):
            raise BioPropError(f"ce_teacher={ce_teacher!r}: choose 'moving' or 'fixed'")
        self.ce_teacher = ce_teacher
        self.gamma = check_positive("gamma", gamma)
        self.n_steps = check_int("n_steps", n_steps, 0)
        self.init_noise = check_positive("init_noise", init_noise, allow_zero=True)
        self.shared_updates = check_shared_updates(shared_updates)
        self.seed = seed
        if not isinstance(compile, bool):
            raise BioPropError(f"compile={compile!r}: give True or False")
        self.compile = compile
        self._noise = torch.Generator().manual_seed(seed)

    def options(self):
        return {**super().options(), "gamma": self.gamma, "n_steps": self.n_steps, "init_noise": self.init_noise,
                "ce_teacher": self.ce_teacher, "seed": self.seed, "shared_updates": self.shared_updates,
                "compile": self.compile}

    def state_dict(self):
        return noise_state(self._noise)

    def load_state_dict(self, state):
        load_noise_state(self._noise, state)

    def _step(self, net, x, y, trace):
        t_c = self.n_steps

        def update_at_t_c(t, errors, predictions):
            return [1.0 if t == t_c else None] * len(errors)

        presented = present(
            net, x, y, self.loss, gamma=self.gamma, n_steps=t_c + 1, lr=self.lr, gate=update_at_t_c,
            shared_updates=self.shared_updates, init_noise=self.init_noise, noise=self._noise, record=trace,
            fixed_error=self.ce_teacher == "fixed", held_until=t_c, compile=self.compile,
        )
        return ILResult(presented.loss, presented.output, presented.trace, n_inference_steps=t_c)
