"""Sign symmetry (sign): Liao, Leibo & Poggio, AAAI 2016; Xiao, Chen, Liao & Poggio 2018.

Feedback alignment (see `fa.py`) whose feedback shares only the signs of the forward weights,
recomputed from the current W_l at every step:

    B_l = sign(W_l)^T * M_l,      delta_L = e,      delta_{l-1} = f'(z_{l-1}) * (B_l delta_l),
    W_l <- W_l - lr * <delta_l h_{l-1}^T>,      b_l <- b_l - lr * <delta_l>,

with magnitudes M_l of W_l^T's shape (n_{l-1}, n_l), fixed:

- magnitude="unit" (default): every entry equal, M_l = s_l = gain(f) sqrt(2/(n_{l-1}+n_l)) *
  feedback_scale. Liao et al.'s "uniform sign-concordant feedback" (uSF) with magnitude 1 made
  scale-free by their batch normalisation; our MLP has none, and magnitude 1 multiplies each
  delta by ~ sqrt(n/2) per layer relative to BP (relu, 200 units: ~10x per layer, ~10^3x at
  layer 1 of a 3-hidden-layer net), which makes SGD at a usual lr diverge. s_l is the RMS of
  fa's draw for that shape, so B_l has the Frobenius norm fa's feedback has on average.
  Set feedback_scale to rescale it.
- magnitude="random": M_l = |R_l|, R_l drawn once like fa's B_l (see `feedback.py`);
  Xiao et al.'s sign-concordant feedback with random magnitudes.

sign(0) = 0: a synapse that is exactly zero sends no feedback. On any chain of levels
(`feedback.py`): B_l = to_feedback_layout(sign(W_l)) * M_l, M_l in the level's feedback layout
(a conv level's feedback is the kernel's signs times M_l, used in the transposed convolution),
and s_l = gain(f) sqrt(2/(fan_in+fan_out)) * feedback_scale with the level's feedback fans (for a
Linear level its (n_in, n_out), as above). Notation map: the papers' V (or B) is our B_l, their
W our W_l.

Options: magnitude ("unit" or "random"), feedback_scale (1.0), seed (0; draws the random
magnitudes; the trainer passes its --seed).
"""
from __future__ import annotations

import math

import torch

from ..errors import BioPropError
from ..network import _xavier_gain
from ..sweeps import scalar
from .feedback import FeedbackRule, activation_name

MAGNITUDES = ("unit", "random")


class SignSymmetry(FeedbackRule):
    name = "sign"
    paper = "Liao, Leibo & Poggio 2016; Xiao et al. 2018"
    option_help = {
        "magnitude": "'unit' (feedback sign(W)^T times one scale per layer, fa's RMS) or 'random' "
                     "(sign(W)^T times fixed random magnitudes drawn like fa's feedback)",
        "feedback_scale": "factor on the feedback magnitudes (either kind)",
        "seed": "seeds the draw of the random magnitudes (magnitude 'random'); train passes its --seed",
    }
    benchmark_cases = {"sign": {}}
    drawn_name = "magnitudes"

    def __init__(self, lr=0.01, loss="mse", magnitude="unit", feedback_scale=1.0, seed=0):
        super().__init__(lr, loss, feedback_scale, seed)
        if magnitude not in MAGNITUDES:
            raise BioPropError(f"magnitude={magnitude!r}: choose one of {MAGNITUDES}")
        self.magnitude = magnitude
        self._buffers: list | None = None  # step_feedback's buffers, one per key
        self._uniform: list = []  # _uniform_magnitudes's answer, for the drawn state _uniform_for
        self._uniform_for: list | None = None

    def options(self):
        return {**super().options(), "magnitude": self.magnitude}

    def _draw(self, net, levels, forward):
        if self.magnitude == "random":
            return [draw.abs() for draw in super()._draw(net, levels, forward)]
        magnitudes = []
        for _, uses in self.keyed_levels(net, levels, forward):
            level = levels[uses[0]]
            below = levels[uses[0] - 1].rate if uses[0] > 0 else level.rate
            rms = _xavier_gain(activation_name(below)) * math.sqrt(2.0 / sum(level.feedback_fans())) * self.feedback_scale
            magnitudes.append(torch.full(self.drawn_shape(net, levels, uses[0], forward), rms, dtype=torch.float64))
        return magnitudes

    def feedback_from(self, net, levels, keyed):
        """B_l = to_feedback_layout(sign(W_l)) * M_l from the current forward weights."""
        return [
            levels[uses[0]].to_feedback_layout(torch.sign(levels[uses[0]].forward_weight)) * magnitude
            for (_, uses), magnitude in zip(keyed, self._drawn)
        ]

    def step_feedback(self, net, levels, keyed):
        """feedback_from's values, made in place in one buffer per key (laid out like W_l, so B_l
        is its transposed view for a Linear level): sign(W_l) written into it, then multiplied by
        M_l in W_l's layout, or by the one number s_l where every magnitude is s_l (the unit
        magnitudes: the same products, +-s_l or 0, without reading M_l)."""
        weights = [levels[uses[0]].forward_weight.detach() for _, uses in keyed]
        buffers = self._buffers
        if buffers is None or len(buffers) != len(weights) or any(
                b.shape != w.shape or b.dtype != w.dtype or b.device != w.device for b, w in zip(buffers, weights)):
            buffers = self._buffers = [torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights]
        scales = self._uniform_magnitudes()
        feedback = []
        for (_, uses), weight, buffer, magnitude, scale in zip(keyed, weights, buffers, self._drawn, scales):
            level = levels[uses[0]]
            torch.sign(weight, out=buffer)
            # level.to_feedback_layout is its own inverse (a transpose or the identity)
            buffer.mul_(level.to_feedback_layout(magnitude) if scale is None else scalar(scale, buffer))
            feedback.append(level.to_feedback_layout(buffer))
        return feedback

    def _uniform_magnitudes(self) -> list:
        """Per drawn magnitude tensor, its one value where all its entries are equal, else None;
        read once per drawn state (a host read), not per step."""
        if self._uniform_for is not self._drawn:
            self._uniform = [float(m.reshape(-1)[0]) if m.numel() and bool((m == m.reshape(-1)[0]).all()) else None
                             for m in self._drawn]
            self._uniform_for = self._drawn
        return self._uniform
