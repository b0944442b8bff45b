"""What the feedback-alignment family (fa, kp, sign, dfa) shares: feedback matrices, the sweep
that carries the output error down through them, and the SGD write.

BP computes its hidden deltas with the transposes of the forward weights,

    d_L = e,      d_{l-1} = f'(z_{l-1}) * (W_l^T d_l),      dLoss/dW_l = <d_l h_{l-1}^T>,

(e = dLoss/dz_L per sample, <.> the batch mean). A feedback rule replaces each W_l^T by a
feedback matrix B_l of the same shape (n_{l-1}, n_l) (dfa: one matrix per hidden layer that
takes e directly) and uses the same outer product as its gradient estimate

    G_l = <delta_l h_{l-1}^T>,      g_l = <delta_l>       (in place of dLoss/dW_l, dLoss/db_l),

written as plain SGD, W_l -= lr * G_l, b_l -= lr * g_l (kp adds its own writes). With
B_l = W_l^T the sweep is BP's, bit for bit up to round-off (tested against autograd).

Drawing. A rule draws what it needs lazily, on its first step (shapes from the net), or when
`initialize(net)` is called; the draw is uniform on [-a, a] with the MLP's xavier law for a
matrix of that shape, a = gain(f) * sqrt(6 / (rows + cols)) * feedback_scale. The law is
symmetric in rows and cols, so B_l is distributed exactly like W_l^T at initialisation:
including the activation's gain (sqrt 2 for relu, 5/3 for tanh) keeps the deltas of a deep
relu net at BP's scale instead of shrinking by 1/sqrt(2) per layer. Numbers are drawn in
float64 on the CPU from torch.Generator().manual_seed(seed) (seed=None: torch's global
generator), then cast to the net's dtype and device, so a seed gives the same matrices on every
device. `state_dict()` holds the drawn matrices and the layer sizes they were drawn for;
a net of other sizes is refused.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..measures import cosine
from ..errors import BioPropError
from ..network import MLP, ForwardPass, _xavier_gain
from .base import LearningRule, check_int, check_positive

Tensor = torch.Tensor


# -- the maths, as plain functions ---------------------------------------------------------------
def xavier_bound(shape: Sequence[int], activation: str, feedback_scale: float) -> float:
    """a = gain(f) * sqrt(6 / (rows + cols)) * feedback_scale: the MLP's xavier bound for this shape."""
    rows, cols = shape
    return _xavier_gain(activation) * math.sqrt(6.0 / (rows + cols)) * feedback_scale


def draw_uniform(shapes: Sequence[tuple[int, int]], bounds: Sequence[float], seed: int | None) -> list[Tensor]:
    """One U(-a, a) float64 CPU matrix per shape, in order, from `seed` (None: torch's global generator)."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return [(torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound for shape, bound in zip(shapes, bounds)]


def backward_sweep(net: MLP, forward: ForwardPass, output_error: Tensor, feedback: Sequence[Tensor]) -> list[Tensor]:
    """delta_L = e, delta_{l-1} = f'(z_{l-1}) * (B_l delta_l) for l = L..2; returns [delta_1 .. delta_L].

    feedback[l-2] is B_l, shape (n_{l-1}, n_l); rows of a delta are samples, so B_l delta_l is
    delta_l @ B_l^T.
    """
    deltas = [output_error]
    for layer in range(net.n_layers, 1, -1):
        below = forward.preactivations[layer - 2]  # z_{layer-1}
        deltas.insert(0, net.activation.derivative(below) * (deltas[0] @ feedback[layer - 2].T))
    return deltas


def direct_sweep(net: MLP, forward: ForwardPass, output_error: Tensor, feedback: Sequence[Tensor]) -> list[Tensor]:
    """delta_l = f'(z_l) * (B_l e) for every hidden layer l, delta_L = e; returns [delta_1 .. delta_L].

    feedback[l-1] is B_l, shape (n_l, n_L).
    """
    hidden = [
        net.activation.derivative(z) * (output_error @ projection.T)
        for z, projection in zip(forward.preactivations[:-1], feedback)
    ]
    return hidden + [output_error]


def gradient_estimates(deltas: Sequence[Tensor], rates: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """G_l = <delta_l h_{l-1}^T> (n_l, n_{l-1}) and g_l = <delta_l> (n_l,), batch means, l = 1..L."""
    batch = deltas[0].shape[0]
    weights = [(delta.T / batch) @ rate for delta, rate in zip(deltas, rates)]
    biases = [delta.mean(dim=0) for delta in deltas]
    return weights, biases


def sgd_step(net: MLP, weight_estimates: Sequence[Tensor], bias_estimates: Sequence[Tensor], lr: float,
             decay: float = 0.0) -> None:
    """W_l -= lr * (G_l + decay * W_l),  b_l -= lr * g_l   (decay on the weights only)."""
    for weight, estimate in zip(net.weights, weight_estimates):
        decay_and_descend(weight.data, estimate, lr, decay)
    for bias, estimate in zip(net.biases or [], bias_estimates):
        bias.data.add_(estimate, alpha=-lr)


def decay_and_descend(tensor: Tensor, estimate: Tensor, lr: float, decay: float) -> None:
    """tensor <- (1 - lr * decay) * tensor - lr * estimate, in place (no full-size temporaries)."""
    if decay:
        tensor.mul_(1.0 - lr * decay)
    tensor.add_(estimate, alpha=-lr)


# -- the shared rule object ------------------------------------------------------------------------
class FeedbackRule(LearningRule):
    """Base of fa, kp, sign and dfa. Subclasses say which matrices they draw (`drawn_shapes`,
    `_draw`), which feedback a step uses (`feedback`), how deltas travel (`sweep`) and how
    the update is written (`_write`)."""

    #: the name of the drawn matrices in state_dict ("feedback", or "magnitudes" for sign)
    drawn_name = "feedback"
    option_help = {
        "feedback_scale": "factor on the feedback matrices' initial draw (uniform, with the forward weights' xavier bound)",
        "seed": "seeds the draw of the feedback matrices (None: torch's global generator); train passes its --seed",
    }

    def __init__(self, lr=0.01, loss="mse", feedback_scale=1.0, seed=0):
        super().__init__(lr, loss)
        self.feedback_scale = check_positive("feedback_scale", feedback_scale)
        self.seed = None if seed is None else check_int("seed", seed, 0)
        self._drawn: list[Tensor] | None = None
        self._drawn_for: list[int] | None = None

    def options(self) -> dict[str, Any]:
        return {**super().options(), "feedback_scale": self.feedback_scale, "seed": self.seed}

    # -- what subclasses define --
    def drawn_shapes(self, sizes: Sequence[int]) -> list[tuple[int, int]]:
        """Shapes of the drawn matrices for a net of these layer sizes: B_l ~ W_l^T, l = 2..L."""
        return [(n_below, n_above) for n_below, n_above in zip(sizes[1:-1], sizes[2:])]

    def _draw(self, net: MLP) -> list[Tensor]:
        shapes = self.drawn_shapes(net.sizes)
        bounds = [xavier_bound(shape, net.activation.name, self.feedback_scale) for shape in shapes]
        return draw_uniform(shapes, bounds, self.seed)

    def feedback(self, net: MLP) -> list[Tensor]:
        """The feedback matrices a step on `net` uses now (drawn first if need be)."""
        return self.drawn(net)

    def sweep(self, net: MLP, forward: ForwardPass, output_error: Tensor, feedback: list[Tensor]) -> list[Tensor]:
        return backward_sweep(net, forward, output_error, feedback)

    def _write(self, net: MLP, weight_estimates: list[Tensor], bias_estimates: list[Tensor]) -> None:
        sgd_step(net, weight_estimates, bias_estimates, self.lr)

    # -- drawing, checking, checkpoints --
    def initialize(self, net: MLP, matrices: Sequence[Tensor] | None = None) -> None:
        """Draw the matrices for `net` now (from `seed`), or set them to `matrices` (copied;
        shapes must be `drawn_shapes(net.sizes)`), e.g. B_l = W_l^T to make fa equal BP."""
        if not isinstance(net, MLP):
            raise BioPropError(f"net: expected a bioprop.MLP, got {type(net).__name__}")
        shapes = self.drawn_shapes(net.sizes)
        if matrices is None:
            matrices = self._draw(net)
        else:
            matrices = [torch.as_tensor(m).detach().clone() for m in matrices]
            given = [tuple(m.shape) for m in matrices]
            if given != [tuple(s) for s in shapes]:
                raise BioPropError(
                    f"{self.drawn_name}: shapes {given} do not fit a net with sizes {net.sizes}; "
                    f"rule {self.name!r} needs {shapes}"
                )
        self._drawn = [m.to(dtype=net.dtype, device=net.device) for m in matrices]
        self._drawn_for = list(net.sizes)

    def drawn(self, net: MLP) -> list[Tensor]:
        """The drawn matrices, for `net` (drawn on first use, moved to its dtype and device)."""
        if self._drawn is None:
            self.initialize(net)
        elif self._drawn_for != list(net.sizes):
            raise BioPropError(
                f"net: rule {self.name!r} drew its {self.drawn_name} for a net with sizes {self._drawn_for}, "
                f"this net has sizes {net.sizes}; make a new rule for this net, or call rule.initialize(net) to redraw"
            )
        if self._drawn and (self._drawn[0].dtype != net.dtype or self._drawn[0].device != net.device):
            self._drawn = [m.to(dtype=net.dtype, device=net.device) for m in self._drawn]
        return self._drawn

    def state_dict(self) -> dict[str, Any]:
        drawn = self._drawn is not None
        return {
            "drawn": drawn,
            "sizes": list(self._drawn_for) if drawn else None,
            self.drawn_name: [m.detach().clone() for m in self._drawn] if drawn else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or not state.get("drawn"):
            self._drawn, self._drawn_for = None, None
            return
        if self.drawn_name not in state or state.get("sizes") is None:
            raise BioPropError(
                f"state: a {self.name!r} state needs 'sizes' and '{self.drawn_name}'; give what rule.state_dict() returned"
            )
        sizes = [int(n) for n in state["sizes"]]
        matrices = [torch.as_tensor(m).detach().clone() for m in state[self.drawn_name]]
        expected = self.drawn_shapes(sizes)
        if [tuple(m.shape) for m in matrices] != [tuple(s) for s in expected]:
            raise BioPropError(
                f"state: the {self.drawn_name} shapes {[tuple(m.shape) for m in matrices]} do not fit sizes {sizes}; "
                f"give what rule.state_dict() returned for that net"
            )
        self._drawn, self._drawn_for = matrices, sizes

    # -- the step --
    def _step(self, net: MLP, x: Tensor, y: Tensor, trace: bool) -> dict[str, Any]:
        forward = net.forward_pass(x)
        output = forward.output
        loss = self.loss(output, y)
        deltas = self.sweep(net, forward, self.loss.output_error(output, y), self.feedback(net))
        weight_estimates, bias_estimates = gradient_estimates(deltas, forward.rates)
        self._write(net, weight_estimates, bias_estimates)
        info = {"loss": float(loss), "output": output, "deltas": deltas[:-1], "gradient_estimates": weight_estimates}
        if trace:
            info["trace"] = []  # no inference dynamics: the sweep is the whole computation
        return info

    def feedback_alignment(self, net: MLP) -> list[float]:
        """Per layer l = 2..L, cos(B_l, W_l^T): 1 is BP's feedback, ~0 an unrelated one."""
        with torch.no_grad():
            return [cosine(feedback, weight.T) for feedback, weight in zip(self.feedback(net), net.weights[1:])]
