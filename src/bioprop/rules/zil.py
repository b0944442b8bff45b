"""Zero-divergence inference learning (Z-IL), Song, Lukasiewicz, Xu & Bogacz, NeurIPS 2020.

IL (see `il.py`) under three conditions:

- C1: inference starts at the prediction fixpoint: x_l(0) = z_l (the feed-forward pass), so
  every hidden error node is 0 at t = 0 and the output error is eps_L(0) = -e = -dLoss/dz_L.
- C2: the weights predicting the layer at distance k from the output, W_{L-k} (and b_{L-k}),
  are updated exactly at inference step t = k: W_L at t = 0, W_{L-1} at t = 1, ...
- C3: gamma = 1.

**Exactness** (paper's Theorems 3.1-3.2, tested against autograd in float64): under C1 and
C3 the error node of layer L-k is still 0 before t = k and equals BP's -d_{L-k} at t = k:

    eps_{L-k}(k) = gamma * f'(z_{L-k}) * (W_{L-k+1}^T eps_{L-k+1}(k-1)),

so with C2 each update  alpha * <eps_l f(x_{l-1})^T>  is BP's SGD step  -lr * dLoss/dW_l.
(With gamma != 1 the same recursion gives BP with the layer at distance k scaled by gamma^k;
the paper's remark under C3.)

Two equivalent ways to run it:

- dynamics="front": the cost-of-BP implementation. Under C1 and C2 only the layer at
  distance k does work at step k (every other node is either still at rest or has already
  been used), so one training step is one forward pass, L - 1 feedback products and L outer
  products, exactly like BP. The error node is formed as the value-node increment above
  (x_l(k) - mu_l(k) with mu_l(k) = z_l), which is the same number without the round-off of
  subtracting two nearly equal values.
- dynamics="full": every node of every layer evolves at every step (the PCN as simulated by
  `predictive_coding.simulate`); used for traces and whenever a condition is broken.
  "auto" picks "front" when C1 and C2 hold and no trace is asked for.

Ablations (paper Fig. 3): init_noise = sigma breaks C1; update_at = an integer t updates all
layers at that one step (IL with t_c = t) and breaks C2; gamma != 1 breaks C3.
"""
from __future__ import annotations

import torch

from ..errors import BioPropError
from .base import LearningRule, check_int, check_positive, hebbian_change
from .predictive_coding import apply_changes, present


class ZeroDivergenceIL(LearningRule):
    name = "zil"
    paper = "Song et al. 2020"
    option_help = {
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
    benchmark_cases = {"zil": {}, "zil (full dynamics)": {"dynamics": "full"}}

    def __init__(self, lr=0.01, loss="mse", gamma=1.0, update_at="layer", init_noise=0.0, dynamics="auto", seed=0):
        super().__init__(lr, loss)
        self.gamma = check_positive("gamma", gamma)
        if update_at != "layer":
            update_at = check_int("update_at", update_at, 0)
        self.update_at = update_at
        self.init_noise = check_positive("init_noise", init_noise, allow_zero=True)
        if dynamics not in ("auto", "front", "full"):
            raise BioPropError(f"dynamics={dynamics!r}: choose 'auto', 'front' or 'full'")
        if dynamics == "front" and not self._front_valid:
            raise BioPropError("dynamics='front' needs C1 and C2 (init_noise=0, update_at='layer'); use 'full' or 'auto'")
        self.dynamics = dynamics
        self.seed = seed
        self._noise = torch.Generator().manual_seed(seed)

    @property
    def _front_valid(self) -> bool:
        return self.update_at == "layer" and self.init_noise == 0

    @property
    def conditions_hold(self) -> bool:
        """C1, C2 and C3 all hold: the rule is exactly BP."""
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
        }

    def _step(self, net, x, y, trace):
        use_front = self.dynamics == "front" or (self.dynamics == "auto" and self._front_valid and not trace)
        if use_front:
            return self._front_step(net, x, y)
        return self._full_step(net, x, y, trace)

    def _front_step(self, net, x, y):
        sweep = net.forward_pass(x)
        output = sweep.output
        weights = net.weights
        f_prime = net.activation.derivative
        errors = [-self.loss.output_error(output, y)]  # eps_L(0)
        for layer in range(net.n_layers - 1, 0, -1):  # layer L-k at step k = 1 .. L-1
            feedback = errors[0] @ weights[layer]  # W_{layer+1}^T eps_{layer+1}, pre-update weights
            errors.insert(0, self.gamma * f_prime(sweep.preactivations[layer - 1]) * feedback)
        apply_changes(net, [hebbian_change(self.lr, eps, rates) for eps, rates in zip(errors, sweep.rates)])
        return {
            "loss": float(self.loss(output, y)),
            "output": output,
            "dynamics": "front",
            "n_inference_steps": net.n_layers - 1,
        }

    def _full_step(self, net, x, y, trace):
        n_layers = net.n_layers
        if self.update_at == "layer":
            update_time = [n_layers - layer for layer in range(1, n_layers + 1)]  # C2: t = k for layer L-k
        else:
            update_time = [self.update_at] * n_layers

        def scheduled(t, errors, predictions):
            return [1.0 if t == when else None for when in update_time]

        info = present(
            net, x, y, self.loss, gamma=self.gamma, n_steps=max(update_time) + 1, lr=self.lr, gate=scheduled,
            init_noise=self.init_noise, noise=self._noise, record=trace,
        )
        return {**info, "dynamics": "full", "n_inference_steps": max(update_time)}
