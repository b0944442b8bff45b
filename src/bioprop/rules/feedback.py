"""What the feedback-alignment family (fa, kp, sign, dfa) shares: feedback weights per level,
the sweep that carries the output error down through them, and the SGD write.

On levels (SPEC.md 1b). A network is a chain of levels z_l = A_l(r_{l-1}, u_l; theta_l),
r_l = g_l(z_l). BP computes its deltas with each level's input VJP and rate VJP,

    d_L = e,      d_{l-1} = g'_{l-1}(z_{l-1})^T [ A_l^T d_l ],      dLoss/dtheta = sum_l <(dA_l/dtheta)^T d_l>,

(e = dLoss/dz_L per sample, <.> the batch mean, sum_l over the levels that read theta: an
unrolled RNN's time steps share W_hh, W_ih and the biases). A feedback rule replaces the forward
weight W_l inside A_l^T by a feedback weight B_l (dfa: one projection per hidden level that
takes e directly) and uses the same parameter VJP with its deltas as its gradient estimate

    G_theta = sum_l <(dA_l/dtheta)^T delta_l>   (in place of dLoss/dtheta),

written as plain SGD, theta -= lr * G_theta (kp adds its own writes). For an MLP this is
delta_{l-1} = f'(z_{l-1}) * (B_l delta_l), G_l = <delta_l h_{l-1}^T>, g_l = <delta_l>. With B_l
the forward weight (in the feedback layout below) the sweep is BP's, up to round-off (tested
against autograd on MLPs, conv nets and the RNN).

Feedback layout (`level.feedback_shape()`, `level.to_feedback_layout(W)`): what the input VJP
uses in place of W. A Linear (or Elman) level's feedback is B of W^T's shape (n_in, n_out), the
matrix that multiplies the delta in the papers' notation (Lillicrap et al.'s B, delta_below =
f' * (B delta)); a conv level's is a kernel of W's own shape, used in the transposed convolution
in place of W (the transposed convolution with kernel W is the exact input VJP, so a kernel in
W's layout is the one object that can stand in for it). Feedback is keyed by the forward
weight's identity: levels that share a forward weight share one feedback (the time steps of an
ElmanRNN all read W_hh: one B for W_hh, plus one for the readout). Which levels carry feedback
down: every level but the first (the first one's input is the clamped r_0), and the first one
too when it is a recurrent time step (its W_hh carries the feedback of the later steps, so the
feedback set does not depend on the sequence length).

Drawing. A rule draws what it needs lazily, on its first step (shapes from the net), or when
`initialize(net)` is called; the draw is uniform on [-a, a] with the xavier law of the forward
weight, a = gain(f) * sqrt(6 / (fan_in + fan_out)) * feedback_scale, fans from
`level.feedback_fans()` (a Linear level's (n_in, n_out); a conv kernel's channels times its
receptive field) and f the activation at the level's input. For an MLP B_l is thus distributed
exactly like W_l^T at initialisation: including the activation's gain (sqrt 2 for relu, 5/3
for tanh) keeps the deltas of a deep relu net at BP's scale instead of shrinking by 1/sqrt(2)
per layer. Numbers are drawn in float64 on the CPU from torch.Generator().manual_seed(seed)
(seed=None: torch's global generator), then cast to the net's dtype and device, so a seed gives
the same matrices on every device. `state_dict()` holds the drawn matrices and what they were
drawn for (an MLP's layer sizes; for other nets the parameter names and shapes); a net they do
not fit is refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..errors import BioPropError
from ..levels import ActivationOp, ElmanLevel, Level, LinearLevel, RateFunction
from ..measures import cosine
from ..network import MLP, ForwardPass, Network, _xavier_gain
from ..sweeps import backward_sweep, descend, pool
from .base import LearningRule, StepResult, check_int, check_positive

Tensor = torch.Tensor


@dataclass
class FeedbackStepResult(StepResult):
    """One step of fa, kp, sign or dfa.

    deltas:              delta_1 .. delta_{L-1}, the hidden levels' error signals (z_l's shape);
                         formed when first read (the step's sweep carries delta / batch: the
                         step itself makes no pass over them)
    gradient_estimates:  G per entry of net.parameters_list() (what the update uses in place of
                         dLoss/dtheta; the update is -lr G, before kp's decay)
    """

    deltas: list = field(default_factory=list)
    gradient_estimates: list = field(default_factory=list)


# -- the maths, as plain functions ---------------------------------------------------------------
def xavier_bound(fans: Sequence[int], activation: str, feedback_scale: float) -> float:
    """a = gain(f) * sqrt(6 / (fan_in + fan_out)) * feedback_scale. `fans` may be a matrix's shape
    (rows, cols): the law is symmetric, so it is the xavier bound of the matrix and of its transpose."""
    fan_a, fan_b = fans
    return _xavier_gain(activation) * math.sqrt(6.0 / (fan_a + fan_b)) * feedback_scale


def draw_uniform(shapes: Sequence[tuple[int, ...]], bounds: Sequence[float], seed: int | None) -> list[Tensor]:
    """One U(-a, a) float64 CPU tensor per shape, in order, from `seed` (None: torch's global generator)."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return [(torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound for shape, bound in zip(shapes, bounds)]


def activation_name(rate: RateFunction) -> str:
    """The name of the first elementwise activation of a rate function ("linear" if none): the
    xavier gain of a feedback weight that reads it."""
    for op in rate.ops:
        if isinstance(op, ActivationOp):
            return op.activation.name
    return "linear"


def carries_feedback(index: int, level: Level) -> bool:
    """Whether level `index` (0-based) sends a delta down: all but the first, and a recurrent
    first step (its W_hh is the later steps' forward weight; see the module docstring)."""
    return index > 0 or isinstance(level, ElmanLevel)


def levels_of(net: Network, x: Tensor | None) -> list[Level]:
    """net.levels_for(x); a net whose levels depend on the input (an ElmanRNN: one per token)
    needs x."""
    if x is not None:
        return net.levels_for(x)
    try:
        return net.levels_for(None)
    except (AttributeError, TypeError):
        raise BioPropError(
            f"x: {net.describe()} has levels that depend on the input (one per time step); pass an example batch, "
            "x=..., or let the rule's first step draw its feedback"
        ) from None


# -- the shared rule object ------------------------------------------------------------------------
class FeedbackRule(LearningRule):
    """Base of fa, kp, sign and dfa. Subclasses say which levels get drawn matrices and of which
    shape (`keyed_levels`, `drawn_shape`, `_draw`), which feedback a step uses (`feedback`), how
    deltas travel (`sweep`) and what else a step writes (`_write`)."""

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
        self._drawn_for: Any = None  # an MLP's sizes, or a signature (see _signature)
        self._fits: tuple | None = None  # the structure the drawn state was last found to fit (_structure)
        self._plan: tuple | None = None  # (structure, slot, keyed, level slots) of the last step's net

    def options(self) -> dict[str, Any]:
        return {**super().options(), "feedback_scale": self.feedback_scale, "seed": self.seed}

    # -- what subclasses define --
    def drawn_shapes(self, sizes: Sequence[int]) -> list[tuple[int, int]]:
        """Shapes of the drawn matrices for an MLP of these layer sizes: B_l ~ W_l^T, l = 2..L."""
        return [(n_below, n_above) for n_below, n_above in zip(sizes[1:-1], sizes[2:])]

    def keyed_levels(self, net: Network, levels: Sequence[Level], forward: ForwardPass | None,
                     slot: dict[int, int] | None = None) -> list[tuple[int, list[int]]]:
        """[(parameter slot of the key, indices of the levels using it)], in order of first use:
        the levels that carry feedback down, keyed by their forward weight. `slot`: id of each
        parameter -> its index in net.parameters_list(), if the caller has it."""
        slot = _slots(net) if slot is None else slot
        keys: dict[int, list[int]] = {}
        for index, level in enumerate(levels):
            if carries_feedback(index, level):
                keys.setdefault(slot[id(level.forward_weight)], []).append(index)
        return list(keys.items())

    def drawn_shape(self, net: Network, levels: Sequence[Level], index: int, forward: ForwardPass | None) -> tuple[int, ...]:
        """The shape of the matrix drawn for the key first used by level `index`."""
        return tuple(levels[index].feedback_shape())

    def _bound(self, net: Network, levels: Sequence[Level], index: int, forward: ForwardPass | None) -> float:
        """The xavier bound of the forward weight of level `index`, with the gain of the activation
        at its input (a recurrent first step: its own, the same f)."""
        below = levels[index - 1].rate if index > 0 else levels[index].rate
        return xavier_bound(levels[index].feedback_fans(), activation_name(below), self.feedback_scale)

    def needs_forward_to_draw(self) -> bool:
        """Whether the drawn shapes depend on a forward pass (dfa: the rates' shapes)."""
        return False

    def _draw(self, net: Network, levels: Sequence[Level], forward: ForwardPass | None) -> list[Tensor]:
        keyed = self.keyed_levels(net, levels, forward)
        shapes = [self.drawn_shape(net, levels, uses[0], forward) for _, uses in keyed]
        bounds = [self._bound(net, levels, uses[0], forward) for _, uses in keyed]
        return draw_uniform(shapes, bounds, self.seed)

    def feedback(self, net: Network, x: Tensor | None = None) -> list[Tensor]:
        """The feedback weights a step on `net` uses now, one per key (drawn first if need be)."""
        levels, forward = self._prepare(net, x)
        self.drawn(net, x, levels=levels, forward=forward)
        return self.feedback_from(net, levels, self.keyed_levels(net, levels, forward))

    def sweep(self, net: Network, forward: ForwardPass, output_error: Tensor, feedback: list[Tensor], keyed: list):
        """(deltas delta_1..delta_L, per-level parameter VJPs) with feedback weights in place of W."""
        per_level: list[Tensor | None] = [None] * len(forward.levels)
        for (_, uses), weight in zip(keyed, feedback):
            for index in uses:
                per_level[index] = weight
        return backward_sweep(forward, output_error, feedback=per_level, stack_shared=True)

    def _write(self, parameters: list[Tensor], levels: Sequence[Level], keyed: list, estimates: list[Tensor | None]) -> None:
        descend(parameters, estimates, self.lr)

    # -- drawing, checking, checkpoints --
    def _signature(self, net: Network, levels: Sequence[Level], forward: ForwardPass | None):
        """What identifies the drawn shapes: an MLP's sizes; elsewhere the keyed parameters' names
        with the shapes drawn for them."""
        if isinstance(net, MLP):
            return list(net.sizes)
        names = net.parameter_names()
        return [[names[slot], list(self.drawn_shape(net, levels, uses[0], forward))]
                for slot, uses in self.keyed_levels(net, levels, forward)]

    def _prepare(self, net: Network, x: Tensor | None) -> tuple[list[Level], ForwardPass | None]:
        if not isinstance(net, Network):
            raise BioPropError(f"net: expected a bioprop.Network (an MLP, bioprop.wrap(model), an ElmanRNN), got {type(net).__name__}")
        if x is not None and self.needs_forward_to_draw():
            with torch.no_grad():
                forward = net.forward_pass(x)
            return forward.levels, forward
        return levels_of(net, x), None

    def initialize(self, net: Network, matrices: Sequence[Tensor] | None = None, x: Tensor | None = None) -> None:
        """Draw the matrices for `net` now (from `seed`), or set them to `matrices` (copied; one
        per key in the feedback layout, e.g. B_l = W_l^T for an MLP's Linear levels, the kernel
        itself for a conv level, to make fa equal BP). x: an example batch, needed where the
        shapes depend on the input (an ElmanRNN's time steps; dfa on a conv net)."""
        if x is not None and isinstance(net, Network):
            x = net.check_input(torch.as_tensor(x)).to(dtype=net.dtype, device=net.device)
        levels, forward = self._prepare(net, x)
        signature = self._signature(net, levels, forward)
        if matrices is None:
            matrices = self._draw(net, levels, forward)
        else:
            keyed = self.keyed_levels(net, levels, forward)
            shapes = [tuple(self.drawn_shape(net, levels, uses[0], forward)) for _, uses in keyed]
            matrices = [torch.as_tensor(m).detach().clone() for m in matrices]
            given = [tuple(m.shape) for m in matrices]
            if given != shapes:
                raise BioPropError(
                    f"{self.drawn_name}: shapes {given} do not fit {net.describe()}; rule {self.name!r} needs {shapes}"
                )
        self._drawn = [m.to(dtype=net.dtype, device=net.device) for m in matrices]
        self._drawn_for, self._fits = signature, None

    def prepare(self, net: Network, x: Tensor | None = None) -> None:
        self.drawn(net, x)

    def drawn(self, net: Network, x: Tensor | None = None, levels: Sequence[Level] | None = None,
              forward: ForwardPass | None = None) -> list[Tensor]:
        """The drawn matrices, for `net` (drawn on first use, moved to its dtype and device); the
        levels (and the forward pass) of the batch at hand save computing them again."""
        if levels is None and forward is not None:
            levels = forward.levels
        if self._drawn is None:
            if levels is None:
                self.initialize(net, x=x)
            else:
                self._drawn = [m.to(dtype=net.dtype, device=net.device) for m in self._draw(net, levels, forward)]
                self._drawn_for, self._fits = self._signature(net, levels, forward), None
        else:
            self._check_fits(net, x, levels, forward)
        if self._drawn and (self._drawn[0].dtype != net.dtype or self._drawn[0].device != net.device):
            self._drawn = [m.to(dtype=net.dtype, device=net.device) for m in self._drawn]
        return self._drawn

    def _check_fits(self, net, x, levels, forward) -> None:
        structure = _structure(net, levels, forward) if levels is not None else None
        if structure is not None and structure == self._fits:
            return  # the same tensors, levels and input shape as a step already checked
        self._check_signature(net, x, levels, forward)
        self._fits = structure

    def _check_signature(self, net, x, levels, forward) -> None:
        if isinstance(net, MLP):
            if self._drawn_for != list(net.sizes):
                raise BioPropError(
                    f"net: rule {self.name!r} drew its {self.drawn_name} for {_describe_signature(self._drawn_for)}, "
                    f"this net has sizes {net.sizes}; make a new rule for this net, or call rule.initialize(net) to redraw"
                )
            return
        if levels is None:
            levels, forward = self._prepare(net, x)
        signature = self._signature(net, levels, forward)
        if signature != self._drawn_for:
            raise BioPropError(
                f"net: rule {self.name!r} drew its {self.drawn_name} for {_describe_signature(self._drawn_for)}, "
                f"{net.describe()} needs {_describe_signature(signature)}; make a new rule for this net, or call "
                "rule.initialize(net) to redraw"
            )

    def state_dict(self) -> dict[str, Any]:
        drawn = self._drawn is not None
        state: dict[str, Any] = {
            "drawn": drawn,
            "sizes": None,
            self.drawn_name: [m.detach().clone() for m in self._drawn] if drawn else None,
        }
        if drawn and _is_sizes(self._drawn_for):
            state["sizes"] = list(self._drawn_for)
        elif drawn:
            state["shapes"] = [[name, list(shape)] for name, shape in self._drawn_for]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._fits = None
        if not state or not state.get("drawn"):
            self._drawn, self._drawn_for = None, None
            return
        if self.drawn_name not in state or (state.get("sizes") is None and state.get("shapes") is None):
            raise BioPropError(
                f"state: a {self.name!r} state needs 'sizes' (or 'shapes') and '{self.drawn_name}'; give what "
                "rule.state_dict() returned"
            )
        matrices = [torch.as_tensor(m).detach().clone() for m in state[self.drawn_name]]
        given = [tuple(m.shape) for m in matrices]
        if state.get("sizes") is not None:
            sizes = [int(n) for n in state["sizes"]]
            expected = [tuple(s) for s in self.drawn_shapes(sizes)]
            if given != expected:
                raise BioPropError(
                    f"state: the {self.drawn_name} shapes {given} do not fit sizes {sizes}; "
                    f"give what rule.state_dict() returned for that net"
                )
            self._drawn, self._drawn_for = matrices, sizes
            return
        signature = [[str(name), [int(n) for n in shape]] for name, shape in state["shapes"]]
        if given != [tuple(shape) for _, shape in signature]:
            raise BioPropError(
                f"state: the {self.drawn_name} shapes {given} do not fit the recorded shapes "
                f"{[tuple(shape) for _, shape in signature]}; give what rule.state_dict() returned"
            )
        self._drawn, self._drawn_for = matrices, signature

    # -- the step --
    def _step(self, net: Network, x: Tensor, y: Tensor, trace: bool) -> FeedbackStepResult:
        forward = net.forward_pass(x)
        levels, output = forward.levels, forward.output
        loss = self.loss(output, y)
        parameters = net.parameters_list()
        keyed, level_slots = self._plan_for(net, levels, forward, parameters)
        self.drawn(net, levels=levels, forward=forward)
        self._store_weight_major(levels, keyed)
        feedback = self.step_feedback(net, levels, keyed)
        batch = output.shape[0]
        # the sweep is linear in e: started from e / batch its parameter VJPs are the batch means
        # G themselves (no pass over every weight-sized total to divide it)
        deltas, per_level = self.sweep(net, forward, self.loss.output_error(output, y) / batch, feedback, keyed)
        estimates = pool(net, levels, per_level, level_slots)
        self._write(parameters, levels, keyed, estimates)
        result = FeedbackStepResult(loss.detach(), output, [] if trace else None, gradient_estimates=estimates)
        return result.defer(deltas=lambda: [delta * batch for delta in deltas[:-1]])

    def _plan_for(self, net: Network, levels: Sequence[Level], forward: ForwardPass, parameters: list[Tensor]):
        """(keyed levels, each level's parameter slots) for these levels: worked out once per
        structure (the same parameter tensors, levels reading them and input shape), not per step."""
        structure = _structure(net, levels, forward, parameters)
        if self._plan is None or self._plan[0] != structure:
            slot = {id(p): i for i, p in enumerate(parameters)}
            keyed = self.keyed_levels(net, levels, forward, slot)
            level_slots = [[slot[id(p)] for p in level.parameters] for level in levels]
            self._plan = (structure, keyed, level_slots)
        return self._plan[1], self._plan[2]

    def feedback_from(self, net: Network, levels: Sequence[Level], keyed: list) -> list[Tensor]:
        """The feedback of the drawn state on these levels, one per key (sign recomputes it from W)."""
        return self._drawn

    def step_feedback(self, net: Network, levels: Sequence[Level], keyed: list) -> list[Tensor]:
        """feedback_from, for the step's own use only (sign writes it into buffers it reuses)."""
        return self.feedback_from(net, levels, keyed)

    #: whether the drawn matrices are in the levels' feedback layout (dfa's projections are not)
    drawn_in_feedback_layout = True

    def _store_weight_major(self, levels: Sequence[Level], keyed: list) -> None:
        """Keep each drawn matrix of a transposing feedback layout (a Linear or Elman level's B, of
        W^T's shape) as the transposed view of a tensor laid out like W: the same values, but its
        input VJP (delta @ B^T) reads memory in order and kp's write B -= lr G^T adds tensors of
        one layout (a transposed add over every entry costs several times a plain one)."""
        if not self.drawn_in_feedback_layout or not self._drawn:
            return
        for position, ((_, uses), matrix) in enumerate(zip(keyed, self._drawn)):
            if matrix.dim() == 2 and isinstance(levels[uses[0]], (LinearLevel, ElmanLevel)) and not matrix.T.is_contiguous():
                self._drawn[position] = matrix.T.contiguous().T

    def forward_weights(self, net: Network, x: Tensor | None = None) -> list[tuple[Level, Tensor]]:
        """(a level using the key, the key's forward weight in the feedback layout), one per key."""
        levels = levels_of(net, x)
        return [(levels[uses[0]], levels[uses[0]].to_feedback_layout(levels[uses[0]].forward_weight).detach())
                for _, uses in self.keyed_levels(net, levels, None)]

    def feedback_alignment(self, net: Network, x: Tensor | None = None) -> list[float]:
        """Per key (an MLP's layers l = 2..L), cos(B_l, W_l in the feedback layout), i.e. cos(B_l, W_l^T)
        for Linear levels: 1 is BP's feedback, ~0 an unrelated one."""
        with torch.no_grad():
            feedback = self.feedback(net, x)
            return [cosine(b, weight) for b, (_, weight) in zip(feedback, self.forward_weights(net, x))]

    def alignment_by_parameter(self, net: Network, x: Tensor | None = None) -> dict[int, float]:
        """feedback_alignment keyed by the parameter slot of each key (for bioprop.diagnostics)."""
        levels = levels_of(net, x)
        slots = [slot for slot, _ in self.keyed_levels(net, levels, None)]
        return dict(zip(slots, self.feedback_alignment(net, x)))


def _structure(net: Network, levels: Sequence[Level], forward: ForwardPass | None,
               parameters: Sequence[Tensor] | None = None) -> tuple:
    """What the keyed levels, the parameter slots and the drawn shapes are functions of: the net,
    its parameter tensors (identity and shape), the tensors each level reads, and the input's
    shape per sample (dfa's projections on a conv net)."""
    parameters = net.parameters_list() if parameters is None else parameters
    return (
        id(net),
        tuple((id(p), p.shape) for p in parameters),
        tuple(id(p) for level in levels for p in level.parameters),
        None if forward is None else tuple(forward.rates[0].shape[1:]),
    )


def _slots(net: Network) -> dict[int, int]:
    return {id(p): i for i, p in enumerate(net.parameters_list())}


def _is_sizes(signature) -> bool:
    return isinstance(signature, list) and all(isinstance(n, int) for n in signature)


def _describe_signature(signature) -> str:
    if _is_sizes(signature):
        return f"a net with sizes {signature}"
    return "parameters " + ", ".join(f"{name} {tuple(shape)}" for name, shape in signature)


__all__ = ["FeedbackRule", "FeedbackStepResult", "draw_uniform", "xavier_bound"]
