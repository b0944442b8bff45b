"""Zero-divergence inference learning (Z-IL), Song, Lukasiewicz, Xu & Bogacz, NeurIPS 2020,
on any chain of levels (Salvatori et al. 2021: conv and recurrent nets; SPEC.md 1b).

IL (see `il.py`; the PCN and its notation map are in `predictive_coding.py`) under three
conditions, with distances counted in levels (level L - k is at distance k from the output):

- C1: inference starts at the prediction fixpoint: x_l(0) = z_l (the feed-forward pass), so
  every hidden error node is 0 at t = 0 and the output error is eps_L(0) = -e = -dLoss/dz_L.
- C2: the parameters of the level at distance k, theta_{L-k}, are updated exactly at
  inference step t = k: the output level at t = 0, level L-1 at t = 1, ...
- C3: gamma = 1.

**Exactness** (paper's Theorems 3.1-3.2; Salvatori et al. for conv and recurrent nets; tested
against autograd in float64 on MLPs, wrapped conv nets and Elman RNNs): under C1 and C3 the
error node of level L-k is still 0 before t = k and equals BP's -d_{L-k} at t = k:

    eps_{L-k}(k) = gamma * G_{L-k}^T [ A_{L-k+1}^T eps_{L-k+1}(k-1) ]
                 (MLP: gamma * f'(z_{L-k}) * (W_{L-k+1}^T eps_{L-k+1}(k-1))),

where every Jacobian (a max-pool's argmax included) is the feed-forward one, because level
L-k is still at its feed-forward value at t = k - 1. So with C2 each update
alpha / B * parameter_vjp(eps_l, r_{l-1}, u_l) is BP's SGD step -lr * dLoss/dtheta_l. (With
gamma != 1 the same recursion gives BP with the level at distance k scaled by gamma^k; the
paper's remark under C3.)

Shared parameters (an unrolled RNN: W_ih, W_hh, b read by every time step). Each level's
change is local (eps_t u_t^T, eps_t r_{t-1}^T); with shared_updates="pooled" (default) they are
summed over the presentation and written at its end, which is BPTT's SGD update; with
"immediate" each is written at its level's step, so the levels still to learn predict and feed
back through changed weights: not exact (the negative control). On nets without shared
parameters both are the same. See `predictive_coding.py` for why.

Two equivalent ways to run it:

- dynamics="front": the cost-of-BP implementation. Under C1 and C2 only the level at
  distance k does work at step k (every other node is either still at rest or has already
  been used), so one training step is one forward pass and one backward sweep of input and
  parameter VJPs (`sweeps.backward_sweep(forward, -e, scale=gamma)`), pooled per parameter
  (`sweeps.pool`) and written once (`sweeps.write`). The error node is formed as the value-node increment above
  (x_l(k) - mu_l(k) with mu_l(k) = z_l), which is the same number without the round-off of
  subtracting two nearly equal values (the full dynamics holds x_l as z_l + offset for the same
  reason, and gives the front's updates to round-off: the activations' backward kernels may round
  an entry's last bit by memory layout).
- dynamics="full": every node of every level evolves at every step (the PCN as simulated by
  `predictive_coding.simulate`); used for traces, whenever a condition is broken, and for
  shared_updates="immediate" on a net that shares parameters. "auto" picks "front" when C1
  and C2 hold, no trace is asked for, and the shared updates are pooled (or nothing is shared).

Ablations (paper Fig. 3): init_noise = sigma breaks C1; update_at = an integer t updates all
levels at that one step (IL with t_c = t) and breaks C2; gamma != 1 breaks C3. The init-noise
generator is in state_dict().
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BioPropError
from ..sweeps import backward_sweep, pool, write
from .base import LearningRule, StepResult, check_int, check_positive
from .predictive_coding import check_shared_updates, load_noise_state, noise_state, present


@dataclass
class ZILResult(StepResult):
    """Z-IL's step: loss and output before the update, which dynamics ran ("front" or "full"),
    and how many inference steps the presentation took (L - 1 under C2)."""

    dynamics: str = "front"
    n_inference_steps: int = 0


class ZeroDivergenceIL(LearningRule):
    name = "zil"
    paper = "Song et al. 2020"
    option_help = {
        "shared_updates": "parameters shared by several levels (an unrolled RNN): 'pooled' sums their changes over the "
                          "presentation and writes them at its end (exact BPTT); 'immediate' writes each at its own step "
                          "(not exact: the negative control)",
        "gamma": "inference step size; 1 is condition C3 (exact), other values scale the layer at distance k by gamma^k",
        "update_at": "'layer' (condition C2: the weights at distance k from the output update at step t = k) or an "
                     "integer t: every layer updates at step t (breaks C2)",
        "init_noise": "std of Gaussian noise on the hidden value nodes at t = 0; 0 is condition C1 (start at the feed-forward pass)",
        "dynamics": "'front' (only the layer the feedback front reaches works: BP's cost; needs C1 and C2), 'full' "
                    "(every node every step) or 'auto' (front when C1 and C2 hold and no trace is asked for)",
        "seed": "seeds the init_noise draws",
    }
    negative_controls = (
        ("C3 broken: gamma=0.99999", {"gamma": 0.99999}),
        ("C2 broken: all layers updated at t=1", {"update_at": 1}),
        ("C1 broken: noisy start, sigma=1e-3", {"init_noise": 1e-3}),
    )
    #: run by `bioprop verify` as well when the net shares parameters between levels (an RNN)
    shared_parameter_controls = (("shared updates written at once", {"shared_updates": "immediate"}),)
    benchmark_cases = {"zil": {}, "zil (full dynamics)": {"dynamics": "full"}}

    def __init__(self, lr=0.01, loss="mse", gamma=1.0, update_at="layer", init_noise=0.0, dynamics="auto", seed=0,
                 shared_updates="pooled"):
        super().__init__(lr, loss)
        self.gamma = check_positive("gamma", gamma)
        if update_at != "layer":
            update_at = check_int("update_at", update_at, 0)
        self.update_at = update_at
        self.init_noise = check_positive("init_noise", init_noise, allow_zero=True)
        self.shared_updates = check_shared_updates(shared_updates)
        if dynamics not in ("auto", "front", "full"):
            raise BioPropError(f"dynamics={dynamics!r}: choose 'auto', 'front' or 'full'")
        if dynamics == "front" and not self._front_valid:
            raise BioPropError("dynamics='front' needs C1 and C2 (init_noise=0, update_at='layer'); use 'full' or 'auto'")
        if dynamics == "front" and self.shared_updates == "immediate":
            raise BioPropError("dynamics='front' pools every change; shared_updates='immediate' needs dynamics='full' or 'auto'")
        self.dynamics = dynamics
        self.seed = seed
        self._noise = torch.Generator().manual_seed(seed)

    @property
    def _front_valid(self) -> bool:
        return self.update_at == "layer" and self.init_noise == 0

    @property
    def conditions_hold(self) -> bool:
        """C1, C2 and C3 all hold: the rule is exactly BP (with shared parameters: when pooled)."""
        return self._front_valid and self.gamma == 1.0

    @property
    def claims_exactness(self) -> bool:  # type: ignore[override]
        return self.conditions_hold

    def options(self):
        return {
            **super().options(),
            "gamma": self.gamma,
            "update_at": self.update_at,
            "init_noise": self.init_noise,
            "dynamics": self.dynamics,
            "seed": self.seed,
            "shared_updates": self.shared_updates,
        }

    def state_dict(self):
        return noise_state(self._noise)

    def load_state_dict(self, state):
        load_noise_state(self._noise, state)

    def _step(self, net, x, y, trace):
        if self.dynamics == "front" or (self.dynamics == "auto" and self._front_valid and not trace):
            forward = net.forward_pass(x)
            if self.shared_updates == "pooled" or not net.shares_parameters(net.parameter_slots(forward.levels)):
                return self._front_step(net, x, y, forward)
        return self._full_step(net, x, y, trace)

    def _front_step(self, net, x, y, forward):
        output = forward.output
        _, changes = backward_sweep(forward, -self.loss.output_error(output, y), scale=self.gamma)  # eps_L(0) = -e
        write(net, pool(net, forward.levels, changes), self.lr / x.shape[0])
        return ZILResult(self.loss(output, y).detach(), output, None, dynamics="front",
                         n_inference_steps=len(forward.levels) - 1)

    def _full_step(self, net, x, y, trace):
        update_at = self.update_at

        def scheduled(t, errors, predictions):
            n_levels = len(errors)
            if update_at == "layer":  # C2: t = k for the level at distance k, L - l
                return [1.0 if t == n_levels - level else None for level in range(1, n_levels + 1)]
            return [1.0 if t == update_at else None] * n_levels

        n_levels = len(net.levels_for(x))
        last_update = n_levels - 1 if update_at == "layer" else update_at
        presented = present(
            net, x, y, self.loss, gamma=self.gamma, n_steps=last_update + 1, lr=self.lr, gate=scheduled,
            shared_updates=self.shared_updates, init_noise=self.init_noise, noise=self._noise, record=trace,
        )
        return ZILResult(presented.loss, presented.output, presented.trace, dynamics="full",
                         n_inference_steps=last_update)
