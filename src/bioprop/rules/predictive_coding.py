"""The predictive coding network (PCN) shared by IL, Z-IL and Fa-Z-IL, on any chain of levels.

Notation (forward-indexed, SPEC.md 1b; Song et al. 2020 count layers from the output instead,
so their layer l is our level L - l, and their "layer at distance k from the output" is our
level L - k). A `bioprop.Network` is a chain of levels l = 1..L, z_l = A_l(r_{l-1}, u_l; theta_l),
r_l = g_l(z_l) (see `bioprop.levels`); the PCN puts a value node and an error node on every
entry of every z_l:

    value nodes   x_0 = r_0 (clamped: the input through the net's input map), x_1 .. x_L
                  (x_l has z_l's shape: (B, n) for a Linear level, (B, C, H, W) for a conv level)
    rates         r_l = g_l(x_l) for 1 <= l < L       (`level.rate.forward(x_l)`, which also keeps
                  the context its VJP needs at the current x_l: a max-pool's argmax, f'(x_l))
    predictions   mu_l = A_l(r_{l-1}, u_l; theta_l)   (`level.forward(r_{l-1}, side_l)`)
    error nodes   eps_l = x_l - mu_l                  (unit variance)
    energy        F = sum_l 1/2 ||eps_l||^2

For an MLP A_l(r) = W_l r + b_l and g_l = f; for an unrolled Elman RNN the levels are the time
steps z_1 .. z_T (sharing W_ih, W_hh, b; u_t clamped into level t) and the readout z_out.

Inference (one rule for both phases; all levels from the same state, simultaneously):

    x_l <- x_l + gamma * ( -eps_l + G_l^T [ A_{l+1}^T eps_{l+1} ] )      for 1 <= l < L

with A^T = `level_{l+1}.input_vjp(eps_{l+1}, r_l)` and G_l^T = `level_l.rate.vjp(., context_l)`,
the VJP of x -> A_{l+1}(g_l(x)) at the current x_l (for an MLP: f'(x_l) * (W_{l+1}^T eps_{l+1})).

The output level: in the prediction phase it is free (x_L <- x_L - gamma * eps_L); in the
learning phase the teacher clamps it. For MSE the value node is clamped, x_L = y, so
eps_L = y - mu_L = -dLoss/dz at mu_L. For cross-entropy the error node carries the same
quantity, eps_L = -(dLoss/dz)(mu_L) = y - softmax(mu_L): the gradient of the energy
F = CE(y, softmax(mu_L)) + sum_{l<L} 1/2 ||eps_l||^2. At the feed-forward state both are -e.

Our decision against the SPEC's letter: the SPEC clamps the cross-entropy error at its
feed-forward value for the whole learning phase. For Z-IL and Fa-Z-IL that is the same (only
eps_L(0) is ever used), but for IL a constant output error makes the energy unbounded below
(a linear term -eps_L . mu_L): hidden nodes drift until f saturates. Measured on digits
(64-64-64-10, tanh, lr 0.1, 10 epochs): IL with T = 50 fell to 39% test accuracy with the
constant clamp; see docs/rules.md for the figure with the moving error.

Plasticity (local, Hebbian), batch mean, optionally gated per neuron (Fa-Z-IL's phi):

    theta <- theta + alpha / B * sum over the levels l reading theta of
             parameter_vjp_l(gate_l * eps_l, r_{l-1}, u_l)

(for a Linear level eps_l r_{l-1}^T and sum_b eps_l; for a conv kernel the correlation of eps_l
with r_{l-1}, summed over positions; for the Elman step eps_t u_t^T, eps_t r_{t-1}^T). Each step's
per-level changes are added up per parameter with `sweeps.pool`.

When the changes are written (the shared-parameter decision). A parameter read by one level
gets one change per presentation under Z-IL's schedule, and writing it at its step is the same
as writing it at the end: inference from t to t+1 uses the weights as they were at t, and
nothing that later moves because of the write (mu_l after t = k) reaches an update still to
come. A parameter read by several levels (an unrolled RNN's W_ih, W_hh, b) gets one change per
level, at that level's step; written at once, it changes the predictions mu and the feedback of
the levels still to learn, so their errors are no longer BP's deltas. So each rule takes
`shared_updates`: "pooled" (default; exact: a shared parameter's changes from every level are
summed over the presentation and written at its end, as BPTT's SGD step does) or "immediate"
(each level's change written at its own step: the negative control, which diverges from BPTT).
Unshared parameters are written at once in IL and Z-IL (as the paper's PCN does) and as
Fa-Z-IL's batch_plasticity says; see `write_schedule`.

Ordering within one time step t: errors are computed from the state at t; the parameter changes
of step t and the value-node changes of step t are both computed from that same state; then
both are applied. So inference from t to t+1 uses the weights as they were at t.

Steps where no level learns (IL before t_c: `simulate(..., held_until=t_c)`) change only the
value nodes, with the weights held: they run as a `Relaxation` (the same operations as the
loop of `advance`, in buffers made once per presentation: the same numbers, bit for bit), or
with compile=True as a `CompiledRelaxation` (the steps as one torch.compile graph; equal to
round-off).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import BioPropError
from ..levels import Level, LinearLevel, RateContext
from ..network import Network
from ..sweeps import pool, write
from .base import StepResult

Tensor = torch.Tensor

SHARED_UPDATES = ("pooled", "immediate")


class ReadByKey:
    """Dict-style read access for the dataclasses here (as StepResult has it)."""

    __getitem__ = StepResult.__getitem__
    keys = StepResult.keys
    __contains__ = StepResult.__contains__
    get = StepResult.get


# -- the teacher: how the target enters the output level --------------------------------------
@dataclass
class ValueClamp:
    """MSE: the output value node is clamped to the target; eps_L = y - mu_L."""

    target: Tensor

    def output_error(self, output_value: Tensor, output_prediction: Tensor) -> Tensor:
        return self.target - output_prediction


@dataclass
class LossTeacher:
    """Other losses (cross-entropy): the output error node carries -(dLoss/dz) at the current
    prediction, eps_L = -(softmax(mu_L) - y) for cross-entropy. At the feed-forward state this is
    the SPEC's clamped error -e; it moves with mu_L afterwards, as eps_L = y - mu_L does for MSE,
    so IL descends a bounded energy (see the module docstring)."""

    loss: object
    target: Tensor

    def output_error(self, output_value: Tensor, output_prediction: Tensor) -> Tensor:
        return -self.loss.output_error(output_prediction, self.target)


class FreeOutput:
    """No teacher (prediction phase): the output value node relaxes like any other."""

    def output_error(self, output_value: Tensor, output_prediction: Tensor) -> Tensor:
        return output_value - output_prediction


@dataclass
class ErrorClamp:
    """The SPEC's letter for cross-entropy: eps_L fixed at -(dLoss/dz_L) of the teacher's onset."""

    error: Tensor

    def output_error(self, output_value: Tensor, output_prediction: Tensor) -> Tensor:
        return self.error


def make_teacher(loss, target: Tensor, output: Tensor | None = None, fixed_error: bool = False):
    """The teacher for `loss`: a clamped output value node for MSE, an error node otherwise
    (moving with the prediction, or with fixed_error=True held at its value for `output`)."""
    if loss.name == "mse":
        return ValueClamp(target)
    if fixed_error:
        return ErrorClamp(-loss.output_error(output, target))
    return LossTeacher(loss, target)


# -- the state and one step of the dynamics ---------------------------------------------------
@dataclass
class PCState:
    """The PCN for one presentation: clamped input rates r_0, value nodes x_1 .. x_L, and the
    circuit they live on (the net's levels for this input and their clamped side inputs u_l).

    Each value node is held as x_l = anchor_l + offset_l, the anchor fixed (the feed-forward
    pass z_l, where the presentation starts) and the offset moved by inference. Same dynamics;
    the point is round-off: at t = k the level at distance k has mu_l = z_l to the bit, so its
    error (anchor_l - mu_l) + offset_l is the feedback that arrived, not the difference of two
    nearly equal numbers (x_l - mu_l loses |z_l| / |delta_l| ulps: 1e-11 relative on a deep
    sigmoid conv net, where Z-IL's deltas are 1e-5 of z)."""

    input_rates: Tensor  # r_0 = x_0, clamped
    anchors: list[Tensor]
    offsets: list[Tensor]
    levels: list[Level]
    sides: list[Tensor | None]

    @property
    def value_nodes(self) -> list[Tensor]:
        """x_1 .. x_L."""
        return [anchor + offset for anchor, offset in zip(self.anchors, self.offsets)]

    def copy(self) -> "PCState":
        return PCState(self.input_rates, self.anchors, [d.clone() for d in self.offsets], self.levels, self.sides)

    def with_offsets(self, offsets: list[Tensor]) -> "PCState":
        return PCState(self.input_rates, self.anchors, offsets, self.levels, self.sides)


def state_at(input_rates: Tensor, value_nodes: list[Tensor], levels: list[Level], sides: list) -> PCState:
    """A PCN state with value nodes `value_nodes` (the anchors; offsets 0)."""
    return PCState(input_rates, list(value_nodes), [torch.zeros_like(x) for x in value_nodes], levels, sides)


def feedforward_state(net: Network, x: Tensor) -> PCState:
    """The prediction-phase fixpoint (condition C1): value nodes at the feed-forward pass."""
    sweep = net.forward_pass(x)
    return state_at(sweep.rates[0], sweep.preactivations, sweep.levels, sweep.sides)


def rates_and_contexts(state: PCState) -> tuple[list[Tensor], list[RateContext]]:
    """r_0 .. r_{L-1}, and for levels 1 .. L-1 what each rate function's VJP needs at x_l."""
    rates, contexts = [state.input_rates], []
    for level, anchor, offset in zip(state.levels[:-1], state.anchors[:-1], state.offsets[:-1]):
        r, context = level.rate.forward(anchor + offset)
        rates.append(r)
        contexts.append(context)
    return rates, contexts


def rates_of(net: Network, state: PCState) -> list[Tensor]:
    """r_0 .. r_{L-1} of `state` (whose levels are `net`'s for this input)."""
    return rates_and_contexts(state)[0]


def predictions_of(net: Network, rates: list[Tensor], state: PCState | None = None) -> list[Tensor]:
    """mu_1 .. mu_L from the rates, on `state`'s levels and side inputs; without a state, on
    `net.levels_for(None)` (a net whose levels do not depend on the input, e.g. an MLP)."""
    if state is None:
        levels = net.levels_for(None)
        sides = net.side_inputs(None, levels)
    else:
        levels, sides = state.levels, state.sides
    return [level.forward(r, side) for level, r, side in zip(levels, rates, sides)]


def predictions_at(state: PCState, rates: list[Tensor], input_prediction: Tensor | None = None) -> list[Tensor]:
    """mu_1 .. mu_L of `state` from its rates; `input_prediction`: mu_1 = A_1(r_0, u_1) when the
    caller has it (r_0 is clamped, so it stands until level 1's parameters are written)."""
    first = state.levels[0].forward(rates[0], state.sides[0]) if input_prediction is None else input_prediction
    above_input = zip(state.levels[1:], rates[1:], state.sides[1:])
    return [first] + [level.forward(r, side) for level, r, side in above_input]


def errors_of(state: PCState, predictions: list[Tensor], teacher) -> list[Tensor]:
    """eps_1 .. eps_L; the output's comes from the teacher (or the free output)."""
    errors = [(anchor - mu) + offset for anchor, offset, mu in zip(state.anchors, state.offsets, predictions)]
    if not isinstance(teacher, FreeOutput):
        errors[-1] = teacher.output_error(state.anchors[-1] + state.offsets[-1], predictions[-1])
    return errors


def inference_step(state: PCState, rates: list[Tensor], contexts: list[RateContext], errors: list[Tensor],
                   gamma: float, output_free: bool, in_place: bool = False) -> PCState:
    """x(t+1) from x(t) and eps(t), with the weights as they are at t (module docstring).

    in_place=True moves `state`'s own offsets (no new buffers; the same numbers to the bit): for
    a caller that owns them and keeps no earlier state (`simulate` without a trace)."""
    levels = state.levels
    offsets = []
    for index, (offset, eps) in enumerate(zip(state.offsets[:-1], errors[:-1])):
        above = levels[index + 1]
        feedback = above.input_vjp(errors[index + 1], rates[index + 1])  # A_{l+1}^T eps_{l+1}
        # gamma * (G^T feedback - eps), rounded as gamma * (-eps + G^T feedback) is (IEEE negation and
        # addition commute exactly); the products are fresh tensors, so scaling them in place is safe
        change = (levels[index].rate.vjp(feedback, contexts[index]) - eps).mul_(gamma)
        offsets.append(offset.add_(change) if in_place else offset + change)
    output = state.offsets[-1]
    if output_free:
        output = output.sub_(gamma * errors[-1]) if in_place else output - gamma * errors[-1]
    offsets.append(output)
    return state.with_offsets(offsets)


# -- the inference loop at its floor: steps with the weights held ------------------------------
#: elementwise activations whose forward and output-form backward have aten out= variants: the
#: same kernels `ActivationOp` calls (`torch.sigmoid` and `Activation.backward_from_output`)
_OUT_KERNELS = {
    torch.sigmoid: (torch.sigmoid, torch.ops.aten.sigmoid_backward.grad_input),
    torch.tanh: (torch.tanh, torch.ops.aten.tanh_backward.grad_input),
}


def _out_kernels(level: Level):
    """(forward, backward) out= kernels for a level whose rate function is one sigmoid or tanh, else None."""
    activation = level.rate.activation
    if activation is None or activation.backward_from_output is None:
        return None
    return _OUT_KERNELS.get(activation.f)


def _linear_weight(level: Level, r: Tensor):
    """A plain Linear level on a (B, n) rate: (W, b) for addmm / mm into a buffer, else None."""
    if type(level) is LinearLevel and r.dim() == 2:
        return level.weight, level.bias
    return None


class Relaxation:
    """Inference steps t = 0 .. n-1 with the weights held (no level learns at these steps: IL
    before t_c), the same numbers as the loop of `advance` bit for bit, at the floor of
    dispatch the eager mode allows.

    Everything that does not change between steps is decided once per presentation: which
    levels are plain Linear maps on (B, n) rates (their predictions are `addmm(b, r, W^T)` and
    their feedback `mm(eps, W)`, the kernels `F.linear` and `@` dispatch to, written into
    buffers), which rate functions are one sigmoid or tanh (forward and output-form backward
    into buffers, the kernels `ActivationOp` calls), and the input level's (anchor_1 - mu_1):
    mu_1 is fixed while no weight is written, so eps_1 = (anchor_1 - mu_1) + offset_1 costs one
    addition per step. Every other level goes through the level interface (`forward`,
    `input_vjp`, `rate.forward`, `rate.vjp`), allocating as the plain loop does. The offsets
    are moved in place: the caller owns them and keeps no earlier state. Each step runs a flat
    list of small closures built here, so no list of levels is rebuilt per step."""

    def __init__(self, state: PCState, teacher, gamma: float, input_prediction: Tensor):
        self.state, self.teacher, self.gamma = state, teacher, gamma
        anchors = state.anchors
        self.n_hidden = n_hidden = len(state.levels) - 1
        self.values = [torch.empty_like(a) for a in anchors[:-1]]  # x_l = anchor_l + offset_l
        self.rates: list = [state.input_rates] + [None] * n_hidden  # r_0 .. r_{L-1}
        self.contexts: list = [None] * n_hidden
        self.predictions: list = [input_prediction] + [None] * n_hidden  # mu_1 .. mu_L
        self.errors = [torch.empty_like(a) for a in anchors]  # eps_1 .. eps_L
        self.changes = [torch.empty_like(a) for a in anchors[:-1]]
        self.input_error = anchors[0] - input_prediction  # (anchor_1 - mu_1), fixed while no weight is written
        self.steps = self._rate_closures() + self._prediction_closures() + self._error_closures() \
            + self._inference_closures()

    # each closure reads the lists at call time: a level that allocates replaces its entry
    def _rate_closures(self):
        closures = []
        state = self.state
        for i in range(self.n_hidden):
            anchor, offset, value, level = state.anchors[i], state.offsets[i], self.values[i], state.levels[i]
            kernels = _out_kernels(level)
            if kernels is not None:
                rate = torch.empty_like(anchor)
                self.rates[i + 1] = rate

                def closure(anchor=anchor, offset=offset, value=value, rate=rate, forward=kernels[0]):
                    torch.add(anchor, offset, out=value)
                    forward(value, out=rate)
            else:
                def closure(anchor=anchor, offset=offset, value=value, rate_function=level.rate, i=i):
                    torch.add(anchor, offset, out=value)
                    self.rates[i + 1], self.contexts[i] = rate_function.forward(value)
            closures.append(closure)
        return closures

    def _prediction_closures(self):
        closures = []
        state = self.state
        for i in range(1, self.n_hidden + 1):
            level, side = state.levels[i], state.sides[i]
            linear = _linear_weight(level, state.anchors[i - 1]) if _out_kernels(state.levels[i - 1]) else None
            if linear is not None:
                weight, bias = linear
                prediction = torch.empty_like(state.anchors[i])
                self.predictions[i] = prediction
                rate = self.rates[i]
                if bias is None:  # W^T: a view, made once (the weights are held)
                    def closure(rate=rate, weight_t=weight.t(), prediction=prediction):
                        torch.mm(rate, weight_t, out=prediction)
                else:
                    def closure(rate=rate, weight_t=weight.t(), bias=bias, prediction=prediction):
                        torch.addmm(bias, rate, weight_t, out=prediction)
            else:
                def closure(level=level, side=side, i=i):
                    self.predictions[i] = level.forward(self.rates[i], side)
            closures.append(closure)
        return closures

    def _error_closures(self):
        state, errors, predictions = self.state, self.errors, self.predictions
        closures = []

        def input_error(error=errors[0], constant=self.input_error, offset=state.offsets[0]):
            torch.add(constant, offset, out=error)  # (anchor_1 - mu_1) + offset_1

        closures.append(input_error)
        last = self.n_hidden
        for i in range(1, last + 1):
            if i == last and not isinstance(self.teacher, FreeOutput):
                continue
            def closure(anchor=state.anchors[i], offset=state.offsets[i], error=errors[i], i=i):
                torch.sub(anchor, predictions[i], out=error)
                error.add_(offset)
            closures.append(closure)
        teacher = self.teacher
        if isinstance(teacher, ValueClamp):
            def closure(target=teacher.target, error=errors[last]):
                torch.sub(target, predictions[last], out=error)
            closures.append(closure)
        elif not isinstance(teacher, FreeOutput):
            def closure(anchor=state.anchors[last], offset=state.offsets[last]):
                errors[last] = teacher.output_error(anchor + offset, predictions[last])
            closures.append(closure)
        return closures

    def _inference_closures(self):
        state, errors, gamma = self.state, self.errors, self.gamma
        # gamma as a 0-d CPU tensor of the nodes' dtype: the kernel reads it as the scalar it reads
        # from a Python float (rounded to the dtype once either way), without converting it per call
        gamma_scalar = torch.tensor(gamma, dtype=state.anchors[0].dtype)
        closures = []
        for i in range(self.n_hidden):
            above, offset, change = state.levels[i + 1], state.offsets[i], self.changes[i]
            kernels = _out_kernels(state.levels[i])
            linear = _linear_weight(above, state.anchors[i]) if kernels is not None else None
            if linear is not None:
                # gamma * (G^T feedback - eps), rounded as `inference_step` rounds it
                def closure(weight=linear[0], feedback=torch.empty_like(state.anchors[i]), rate=self.rates[i + 1],
                            change=change, offset=offset, i=i, backward=kernels[1]):
                    torch.mm(errors[i + 1], weight, out=feedback)  # A_{l+1}^T eps_{l+1}
                    backward(feedback, rate, grad_input=change)  # G_l^T feedback
                    change.sub_(errors[i]).mul_(gamma_scalar)
                    offset.add_(change)
            elif kernels is not None:
                def closure(above=above, rate=self.rates[i + 1], change=change, offset=offset, i=i,
                            backward=kernels[1]):
                    backward(above.input_vjp(errors[i + 1], rate), rate, grad_input=change)
                    change.sub_(errors[i]).mul_(gamma_scalar)
                    offset.add_(change)
            else:
                def closure(above=above, rate_function=state.levels[i].rate, offset=offset, i=i):
                    feedback = above.input_vjp(errors[i + 1], self.rates[i + 1])
                    offset.add_((rate_function.vjp(feedback, self.contexts[i]) - errors[i]).mul_(gamma))
            closures.append(closure)
        if isinstance(self.teacher, FreeOutput):
            def closure(offset=state.offsets[-1], error=errors[-1], change=torch.empty_like(state.anchors[-1])):
                torch.mul(error, gamma, out=change)
                offset.sub_(change)
            closures.append(closure)
        return closures

    def run(self, n_steps: int, first_predictions: list[Tensor] | None = None) -> PCState:
        """n_steps inference steps; the state after them (its offsets moved in place).
        `first_predictions`: mu_1 .. mu_L at t = 0 (the forward pass's z_l), so the first step
        computes no prediction."""
        start = 0
        if first_predictions is not None and n_steps > 0:
            saved = list(self.predictions)
            self.predictions[:] = first_predictions
            self._step_with_given_predictions()
            self.predictions[:] = saved
            start = 1
        for _ in range(start, n_steps):
            for closure in self.steps:
                closure()
        return self.state

    def _step_with_given_predictions(self):
        # the error closures read `self.predictions` by entry; the buffered predictions are
        # written by the prediction closures only, which this step skips
        n_rate = self.n_hidden
        n_prediction = self.n_hidden
        for closure in self.steps[:n_rate] + self.steps[n_rate + n_prediction:]:
            closure()


def held_step(state: PCState, teacher, input_prediction: Tensor, gamma: float, output_free: bool) -> list[Tensor]:
    """One inference step with the weights held, as a function of the state (new offsets out):
    the same operations as `advance` at a step where no level learns."""
    rates, contexts = rates_and_contexts(state)
    errors = errors_of(state, predictions_at(state, rates, input_prediction), teacher)
    return inference_step(state, rates, contexts, errors, gamma, output_free).offsets


def held_steps(state: PCState, teacher, input_prediction: Tensor, gamma: float, output_free: bool,
               n_steps: int) -> list[Tensor]:
    """n_steps of `held_step`: what torch.compile traces for CompiledRelaxation (the loop
    unrolled into one graph: one call, one guard check per presentation)."""
    offsets = state.offsets
    for _ in range(n_steps):
        offsets = held_step(state.with_offsets(offsets), teacher, input_prediction, gamma, output_free)
    return offsets


_compiled_held_steps = None


def compiled_held_steps():
    """`held_steps` through torch.compile, built on first use and kept for the process; each
    network, batch shape, dtype, gamma and number of steps compiles once."""
    global _compiled_held_steps
    if _compiled_held_steps is None:
        if not hasattr(torch, "compile"):
            raise BioPropError("compile=True: this torch has no torch.compile; use compile=False")
        _compiled_held_steps = torch.compile(held_steps, dynamic=False)
    return _compiled_held_steps


class CompiledRelaxation:
    """Relaxation's steps through torch.compile: all n steps one compiled graph (inductor fuses
    each level's elementwise chain into one kernel around the products; one call and one guard
    check per presentation, where a graph per step spent more on them than it saved). Not bit
    for bit: the fused kernels evaluate sigmoid/tanh with their own vectorised exp, equal to
    float round-off (tests/test_il_fast.py). The first presentation of each batch shape pays the
    compile."""

    def __init__(self, state: PCState, teacher, gamma: float, input_prediction: Tensor):
        self.state, self.teacher, self.gamma, self.input_prediction = state, teacher, gamma, input_prediction
        self.output_free = isinstance(teacher, FreeOutput)

    def run(self, n_steps: int, first_predictions: list[Tensor] | None = None) -> PCState:
        """n_steps inference steps; the state after them (new offsets; the t = 0 predictions
        are recomputed: the graph is the same for every step)."""
        steps = compiled_held_steps()
        try:
            offsets = steps(self.state, self.teacher, self.input_prediction, self.gamma, self.output_free, n_steps)
        except Exception as error:  # the backend failed: no C++ compiler, an operation it cannot trace
            first_line = (str(error).strip().splitlines() or [""])[0]
            raise BioPropError(
                f"compile=True: torch.compile failed on this network ({type(error).__name__}: {first_line}); "
                "use compile=False (the eager loop, the default), or install a C++ compiler for inductor"
            ) from error
        return self.state.with_offsets(offsets)


#: A plasticity gate for one time step: given (t, errors, predictions), a list with one entry
#: per level: None (no update at this step), 1.0 (ungated), or a tensor of the level's shape of
#: per-neuron gates.
PlasticityGate = Callable[[int, list[Tensor], list[Tensor]], list]


# -- writing the changes: at once or at the end of the presentation ----------------------------
def shares_slot(net: Network, levels: Sequence[Level]) -> list[bool]:
    """Per entry of net.parameters_list(): whether several of `levels` read it."""
    readers = [0] * len(net.parameters_list())
    for slots in net.parameter_slots(levels):
        for slot in set(slots):
            readers[slot] += 1
    return [count > 1 for count in readers]


def write_schedule(net: Network, levels: Sequence[Level], shared_updates: str, unshared_at_once: bool) -> list[bool]:
    """Per parameter: True = write each step's change at once, False = pool it over the
    presentation and write it at the end (module docstring: the shared-parameter decision)."""
    shared = shares_slot(net, levels)
    return [(shared_updates == "immediate") if is_shared else unshared_at_once for is_shared in shared]


class Plasticity:
    """Turns each step's gated per-level changes into parameter writes, at once or pooled.

    `scale` is alpha / B: the changes are batch sums of parameter VJPs, the update a batch mean."""

    def __init__(self, net: Network, levels: Sequence[Level], scale: float, at_once: Sequence[bool]):
        self.net, self.levels, self.scale = net, list(levels), scale
        self.at_once = list(at_once)
        self.pending: list[Tensor | None] = [None] * len(self.at_once)
        #: the parameters the first level reads: while none is written, mu_1 = A_1(r_0, u_1) stands
        self.input_slots = set(net.parameter_slots(self.levels)[0]) if self.levels else set()
        self.input_level_written = False

    def changes(self, gates: list, errors: list[Tensor], rates: list[Tensor], sides: list) -> list:
        """Per level: parameter_vjp(gate * eps_l, r_{l-1}, u_l), or None where the gate is off."""
        return [
            None if gate is None else level.parameter_vjp(eps if isinstance(gate, float) else gate * eps, r, side)
            for level, gate, eps, r, side in zip(self.levels, gates, errors, rates, sides)
        ]

    def add(self, per_level: list) -> None:
        """Write what is due now; keep the rest for `finish`."""
        if all(change is None for change in per_level):
            return
        totals = pool(self.net, self.levels, per_level)
        now = [total if at_once else None for total, at_once in zip(totals, self.at_once)]
        write(self.net, now, self.scale)
        if any(now[slot] is not None for slot in self.input_slots):
            self.input_level_written = True
        for slot, (total, at_once) in enumerate(zip(totals, self.at_once)):
            if total is not None and not at_once:
                self.pending[slot] = total if self.pending[slot] is None else self.pending[slot] + total

    def finish(self) -> None:
        write(self.net, self.pending, self.scale)
        self.pending = [None] * len(self.at_once)


def advance(
    state: PCState,
    teacher,
    plasticity: Plasticity,
    *,
    t: int,
    gamma: float,
    gate: PlasticityGate,
    output_free: bool,
    infer: bool = True,
    input_prediction: Tensor | None = None,
    in_place: bool = False,
    predictions: list[Tensor] | None = None,
) -> tuple[PCState, list[Tensor], list]:
    """One time step t: errors from the state; parameter changes where `gate` says; x(t+1).

    Returns the new state (the same one if infer=False), the errors at t and the per-level
    changes (None where the level did not learn), handed to `plasticity` after the inference
    step (so x(t+1) sees the weights of time t). `input_prediction`: mu_1 = A_1(r_0, u_1) when
    the caller has it (r_0 is clamped, so it stands until level 1's parameters are written);
    `in_place`: see `inference_step`; `predictions`: mu_1 .. mu_L when the caller has them all
    (at the feed-forward state they are the forward pass's z_l)."""
    rates, contexts = rates_and_contexts(state)
    if predictions is None:
        predictions = predictions_at(state, rates, input_prediction)
    errors = errors_of(state, predictions, teacher)
    gates = gate(t, errors, predictions)
    changes = plasticity.changes(gates, errors, rates, state.sides)
    if infer:
        state = inference_step(state, rates, contexts, errors, gamma, output_free, in_place)
    plasticity.add(changes)
    return state, errors, changes


@dataclass
class TraceEntry(ReadByKey):
    """One inference step of a trace: the state at t, its errors, and the levels (1-based) whose
    parameters changed at t."""

    t: int
    value_nodes: list[Tensor]
    error_nodes: list[Tensor]
    updated_layers: list[int]


@dataclass
class DynamicsResult:
    state: PCState
    trace: list[TraceEntry]
    errors: list[Tensor]  # eps at the last simulated step


def simulate(
    state: PCState,
    teacher,
    plasticity: Plasticity,
    *,
    gamma: float,
    n_steps: int,
    gate: PlasticityGate,
    record: bool = False,
    first_predictions: list[Tensor] | None = None,
    held_until: int = 0,
    compile: bool = False,
) -> DynamicsResult:
    """Run t = 0 .. n_steps-1 of inference with plasticity, updating the net in place.

    The teacher is on throughout (a FreeOutput teacher gives the prediction phase). No
    inference step follows the last t: nothing after it could change a weight. Pooled changes
    are written after the last step. `first_predictions`: mu_1 .. mu_L of `state` under the
    current weights, when the caller has them (`present`: the forward pass's z_l, the state
    being the feed-forward state); otherwise they are computed.

    `held_until`: the caller's promise that `gate` turns every level off, with no side effect,
    at every t < held_until (IL before t_c). Without a trace those steps run as one
    `Relaxation` (the same numbers, bit for bit, fewer operations), or with compile=True as a
    `CompiledRelaxation` (torch.compile; equal to round-off).
    """
    output_free = isinstance(teacher, FreeOutput)
    if isinstance(teacher, ValueClamp):
        state = clamp_output(state, teacher)
    trace: list[TraceEntry] = []
    errors: list[Tensor] = []
    # without a trace no earlier state is kept: the value nodes move in buffers of their own
    in_place = not record
    if in_place:
        state = state.copy()
    # mu_1 = A_1(r_0, u_1): the input is clamped, so it is computed once per presentation and
    # again only after a write to a parameter level 1 reads (Z-IL's immediate shared writes)
    input_level = state.levels[0]
    if first_predictions is None:
        input_prediction = input_level.forward(state.input_rates, state.sides[0])
    else:
        input_prediction = first_predictions[0]
    start = min(held_until, n_steps - 1) if in_place else 0
    if start > 0:
        relaxation = CompiledRelaxation if compile else Relaxation
        state = relaxation(state, teacher, gamma, input_prediction).run(start, first_predictions)
    for t in range(start, n_steps):
        before = state
        if plasticity.input_level_written:
            input_prediction = input_level.forward(state.input_rates, state.sides[0])
            plasticity.input_level_written = False
        state, errors, changes = advance(
            state, teacher, plasticity, t=t, gamma=gamma, gate=gate, output_free=output_free, infer=t < n_steps - 1,
            input_prediction=input_prediction, in_place=in_place, predictions=first_predictions if t == 0 else None,
        )
        if record:
            trace.append(trace_entry(t, before, errors, changes))
    plasticity.finish()
    return DynamicsResult(state, trace, errors)


def clamp_output(state: PCState, teacher: ValueClamp) -> PCState:
    return PCState(state.input_rates, state.anchors[:-1] + [teacher.target],
                   state.offsets[:-1] + [torch.zeros_like(teacher.target)], state.levels, state.sides)


def trace_entry(t: int, state: PCState, errors: list[Tensor], changes: list) -> TraceEntry:
    return TraceEntry(
        t,
        [x.clone() for x in state.value_nodes],
        [e.clone() for e in errors],
        [level for level, c in enumerate(changes, start=1) if c is not None],
    )


@dataclass
class Presented:
    """What every PCN rule reports of a presentation: loss (a detached 0-d tensor) and output
    before the update."""

    loss: Tensor
    output: Tensor
    trace: list[TraceEntry] | None


def present(
    net: Network,
    x: Tensor,
    y: Tensor,
    loss,
    *,
    gamma: float,
    n_steps: int,
    lr: float,
    gate: PlasticityGate,
    shared_updates: str = "pooled",
    unshared_at_once: bool = True,
    init_noise: float = 0.0,
    noise: torch.Generator | None = None,
    record: bool = False,
    fixed_error: bool = False,
    held_until: int = 0,
    compile: bool = False,
) -> Presented:
    """One training pair (batch) for a PCN rule: start at the feed-forward pass (plus noise
    when C1 is broken on purpose), put the teacher on, run `simulate`; changes are written as
    `write_schedule(net, levels, shared_updates, unshared_at_once)` says. `held_until`,
    `compile`: see `simulate`.
    """
    state = feedforward_state(net, x)
    output = state.anchors[-1] + state.offsets[-1]
    teacher = make_teacher(loss, y, output, fixed_error=fixed_error)
    at_once = write_schedule(net, state.levels, shared_updates, unshared_at_once)
    plasticity = Plasticity(net, state.levels, lr / x.shape[0], at_once)
    # at the feed-forward state mu_l = z_l, the forward pass's own numbers (the floor: no product
    # is computed twice); noise on the value nodes moves the rates, so then they are computed
    first_predictions = list(state.anchors) if init_noise == 0 else None
    state = noisy_start(state, init_noise, noise)
    result = simulate(state, teacher, plasticity, gamma=gamma, n_steps=n_steps, gate=gate, record=record,
                      first_predictions=first_predictions, held_until=held_until, compile=compile)
    # the loss stays a 0-d tensor: reading it is the caller's host synchronisation, not the step's
    return Presented(loss(output, y).detach(), output, result.trace if record else None)


def noisy_start(state: PCState, sigma: float, generator: torch.Generator | None) -> PCState:
    """Break C1: hidden value nodes start at the feed-forward pass plus N(0, sigma^2) noise."""
    from ..distributed import draw_for_batch

    if sigma == 0:
        return state
    noisy = []
    for offset in state.offsets[:-1]:
        # drawn for the global batch and sliced in a data-parallel step (bioprop.distributed)
        noise = draw_for_batch(offset.shape, generator).to(dtype=offset.dtype, device=offset.device)
        noisy.append(offset + sigma * noise)
    return state.with_offsets(noisy + [state.offsets[-1]])


# -- rule plumbing shared by IL, Z-IL and Fa-Z-IL ----------------------------------------------
def check_shared_updates(value: str) -> str:
    if value not in SHARED_UPDATES:
        raise BioPropError(f"shared_updates={value!r}: choose 'pooled' (exact) or 'immediate' (the negative control)")
    return value


def noise_state(generator: torch.Generator) -> dict:
    """A rule's state_dict entry for its init-noise generator."""
    return {"noise": generator.get_state()}


def load_noise_state(generator: torch.Generator, state: dict) -> None:
    """Restore what noise_state saved; a state without it (an older checkpoint) leaves it as is."""
    if "noise" in state:
        generator.set_state(state["noise"])


__all__ = [
    "CompiledRelaxation", "DynamicsResult", "ErrorClamp", "FreeOutput", "LossTeacher", "PCState", "Plasticity",
    "Presented", "ReadByKey", "Relaxation", "SHARED_UPDATES", "TraceEntry", "ValueClamp", "advance", "clamp_output",
    "errors_of", "feedforward_state", "held_step", "held_steps", "inference_step", "make_teacher", "noisy_start",
    "predictions_at", "predictions_of", "present", "rates_and_contexts", "rates_of", "shares_slot", "simulate", "state_at",
    "write_schedule",
]
