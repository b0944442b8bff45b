"""Fully autonomous Z-IL (Fa-Z-IL), Algorithm 2 of Song, Lukasiewicz, Xu & Bogacz 2020, on any
chain of levels (SPEC.md 1b; the PCN and its notation map are in `predictive_coding.py`).

Inference and plasticity run at every step, in every level, with one rule and no schedule:

    x_l <- x_l + gamma * ( -eps_l + G_l^T [ A_{l+1}^T eps_{l+1} ] )                  (gamma = 1, C3)
    theta_l <- theta_l + alpha / B * parameter_vjp_l(phi_l(t) * eps_l, r_{l-1}, u_l)  (batch mean)

(for an MLP: f'(x_l) * (W_{l+1}^T eps_{l+1}) and W_l[i, :] += alpha * phi_{l,i} eps_{l,i} f(x_{l-1})^T).
Each neuron's learning rate is gated by phi, a function of its own error node's history
(our definition; the paper's formula was lost from our copy, see docs/rules.md). phi_l is a
tensor of level l's shape (one gate per entry of z_l: per unit of a Linear level, per channel
and position of a conv level, per hidden unit of an RNN time step):

    phi_{l,i}(t) = 1  iff   eps_{l,i}(t) != eps_{l,i}(t-1)                       (it changes now)
                      and   eps_{l,i}(t-1) = ... = eps_{l,i}(t-t_d)             (after t_d constant steps)
                      and   mu_{l,i}(t) = mu_{l,i}(t-1)                          (driven by feedback)
                   0  otherwise,

where "=" means equal to within the neuron's resolution, change_tol * (1 + |mu_{l,i}|)
(default change_tol: 1024 units in the last place of the network's dtype, 2.3e-13 in float64). A tolerance is
needed because a settled network is not bit-for-bit still: round-off keeps its nodes
flickering at ~1e-16, which an exact comparison would read as change. It costs nothing in
exactness: a neuron whose BP delta is below the resolution loses an update of that size.

The last clause is how a neuron tells feedback from feed-forward drive locally: its error
node has two inputs, its value node (moved by top-down feedback, or by the teacher at the
output) and the prediction mu from the level below. A change with an unchanged prediction came
from above. Under C1 the first change of level L-k's error is at t = k (Lemma A3 of the
paper), so Fa-Z-IL performs Z-IL's updates exactly at Z-IL's times: **exactness** against
autograd is tested in float64 (MLPs, wrapped conv nets, Elman RNNs). When BP's delta of a
neuron is exactly 0 the detection misses, which is harmless (the update would be 0).

When changes are written. Mini-batches (nothing in the paper covers them): a batch of B pairs
is B copies of the circuit sharing one set of synapses. With batch_plasticity="pooled" each
copy's gated changes are summed over the presentation and written to the shared synapses when
it ends, as mini-batch SGD does. With "immediate" (Algorithm 2 literally) a change is written
the moment phi fires, so copies see each other's changes during the presentation: with ReLU a
neuron whose BP delta is exactly 0 can then see its feedback move one step late, when another
copy's update changed the level above, and fire spuriously (measured in tests/test_fazil.py).
"auto" (default) picks "pooled" when B > 1 or when the net shares parameters between levels,
"immediate" otherwise. A parameter shared by several levels (an unrolled RNN's W_ih, W_hh, b)
follows shared_updates instead: "pooled" (default; exact: BPTT's update) or "immediate" (each
level's change written when its phi fires, so later levels predict through changed weights: the
negative control). batch_plasticity governs the parameters read by one level only; see
`predictive_coding.py` for the shared-parameter decision and why.

`step(net, x, y)` presents one batch whose prediction phase has converged (C1 holds and every
error node has been at rest for at least t_d steps) and runs n_steps steps (default L, the
time the feedback front needs to reach level 1). Because that assumed history is at rest
since long ago, t_d has no effect in step(): every value gives the same updates. t_d matters
in stream(), where the history is real (tests/test_fazil.py tests both sides of it).
`stream(net, inputs, targets)` is the autonomous mode on any Network (inputs in the net's
input shape): pairs are presented in turn, input first (prediction phase, until the network is
stationary plus `hold_steps`), then the teacher for `learning_steps` steps, with the same
dynamics and gate running throughout; it counts detection successes and failures. The
prediction phase is gradient descent on the energy with step gamma = 1; it settles (for an MLP
of small weights, in a few dozen steps) only when the level-to-level Jacobians are small enough,
and oscillates otherwise (measured: an Elman RNN 3-4-3 at its default init never settles; with
W_hh and the readout halved it settles in about 40 steps and the stream equals BPTT). A phase
that does not settle within max_prediction_steps breaks C1 for that pair: the result counts it
(unconverged_prediction_phases). The init-noise generator is in state_dict().

How step() is simulated (option `simulation`). "dense" is the reference: every node of every
level at every one of the n_steps steps, phi run on all of them (`predictive_coding.simulate`).
"events" simulates only what can reach an output of the call (the weights, the loss, phi's
firings and the detection counts); "auto" (the default) picks it where it is exact (below):

- Ahead of the front (level L-k at t < k): nothing is computed. Under C1 its error is 0
  to the bit, its prediction is z_l to the bit and its value node does not move (its inputs, the
  error above and the rates below, have not changed: Lemma A3's induction, run on the floats:
  W^T 0 = 0, f'(z) * 0 = 0, 0 + gamma * (-0 + 0) = 0, for finite weights; its own weights move
  only when it fires), so phi's change test is false and its run
  only grows: no firing, nothing to tally but "no change".
- The front (level L-k at t = k): computed exactly as the dense simulation does: its error is
  the feedback that arrived, eps_l(k) = G_l^T [A_{l+1}^T eps_{l+1}(k-1)] (the dense 0 + 1 * (-0 + v)
  is v to the bit), its prediction is still z_l, so phi's test reduces to
  |eps_l(k)| > change_tol * (1 + |z_l|) (the history is at rest and "from feedback" holds), and its
  change is parameter_vjp(phi * eps_l, r_{l-1}, u_l): one forward, one sweep down, one outer
  product per level, one elementwise test on the front level (Z-IL's front plus phi).
- Behind the front (t > k): the reflections (value nodes still moving, predictions moved by the
  rates below, weights written at once) can only reach an output through a later firing of a
  level already passed, which needs a change after t_d unchanged steps. A neuron that changed at
  its front step k has a run of 1 at k + 1 and can fire at the earliest at k + t_d: after the
  presentation when n_steps <= t_d. A neuron that did not change at its front (its delta below
  the resolution: a "harmless miss") keeps its long history and can fire on a reflection: the
  dense simulation does so in float32 (a few firings a step on 784-256-256-256-10, whose
  resolution is 1.2e-4 relative) and with ReLU dead units. So the front alone runs when
  gamma = 1, n_steps <= t_d and, checked once per call after the front (one host sync), no
  level with steps left after its front has a silent neuron. Nothing is written before that
  check: the front's changes are collected and written afterwards in the dense order; deferring
  a write meant for "at once" changes nothing, since a parameter read by one level is read
  after that level's front only by the region behind the front, which then cannot fire.
- Otherwise ("events+reflections") the region behind the front is simulated with the dense
  simulation's operations on the same numbers, so its firings are the dense ones. It needs C1
  only (any gamma, n_steps, t_d). Two forms:

  Pooled steps (nothing is written before the presentation ends: batch_plasticity pooled, or
  auto with B > 1, and shared parameters pooled; the weights then stay put during the call).
  The front runs first, for every level (Z-IL's sweep, as above); one host sync reads how many
  neurons fired at each front. phi_l can then fire after its front k only at steps t with
  k < t <= n_steps - 1 where some neuron's last change is t_d or more steps back: from k + 1 on
  if a neuron of level l was silent at its front, from k + t_d on otherwise (every neuron changed
  at k; the run argument above); with gamma != 1 (C3 broken) every step after k is tested. A
  level with such a step is "tracked": its change test runs at every step after its front (the
  history phi needs). The tested points need the errors of a cone only: eps_l(s) reads x_l(s)
  and, through mu_l(s) = A_l(g_{l-1}(x_{l-1}(s))), x_{l-1}(s); x_l(s) reads x_l(s-1), eps_l(s-1)
  and eps_{l+1}(s-1) (influence travels one level per step), so eps_l(s) is computed only where
  a tested (l', t) lies within t - s levels of it, a value node only where its own error or the
  one above it is computed, and nothing after the last computed step (`plan_region`; tested
  against a brute-force closure of this graph in tests/test_fazil_cone.py). Examples: on
  784-256-256-256-10 in float32 (levels 2 and 3 keep silent neurons, the output none) the cone
  is 5 of the region's 6 level-steps behind the front (the output's error at the last step feeds
  nothing tested); on LeNet-5 in float64 (L = 5 > t_d = 4: only the output may fire again, at
  t = 4) it is 6 of 10, and no conv level is computed behind its front. Where a changed neuron
  cannot fire before the end (k + t_d > n_steps - 1) phi's history is kept for the neurons
  silent at the front only, gathered by index (a change ends their long run for good); else
  for every neuron, as the step of its last change. A firing's change is
  parameter_vjp(phi * eps_l, r_{l-1}, u_l), the same op on the same numbers whenever it is
  computed, so the candidates' errors are kept and, after one more host sync at the end (which
  fired), the changes of those that fired are computed and pooled in the dense step order
  (Plasticity.add's sums, sweeps.write's roundings, in buffers of the step's own). Where more
  than 2L level-steps are tested (a long RNN: hundreds), holding their errors costs more than
  a sync per step, so there each step's candidates are resolved at its end. Host syncs: one
  when the front alone runs, two with the cone, one per step more in that last case.

  Steps with a change written at once (B = 1 under auto, or batch_plasticity="immediate"): the
  region, levels first .. L, is simulated step by step (for L = 4, 10 of the dense simulation's
  16 level-steps), one host sync per step asking which levels behind the front fired (the
  writes move the predictions of the later steps). A level with no silent neuron at its front
  and fewer than t_d steps left after it cannot fire again: its gate is no longer computed.

  The cost (measured, docs/rules.md). In float64 the benchmark nets have no silent neuron, so
  the MLP runs the front alone (Z-IL's products); in float32 a faithful step needs the cone's
  extra forwards and VJPs and the late firings' outer products: on 784-256-256-256-10 per sample
  Z-IL's 802,304 multiply-adds (forward 334,336, VJPs down 133,632, outer products 334,336) plus
  201,728 (cone forwards) + 70,656 (cone VJPs) + 65,536 per level-step that fires late (level 2
  fires at t = 3 in nearly every batch, level 3 at t = 2 or 3 in most): 1.34x Z-IL's without
  a late firing, 1.42-1.50x with the one to three that fire, so no faithful float32 step reaches
  Z-IL's cost there (plain PyTorch's step has Z-IL's products).

So "auto" (the default) runs the dense reference when init_noise > 0 (C1 broken), when a trace
is asked for, or when a parameter shared by several levels is written at once (a shared
parameter then moves the predictions ahead of the front); otherwise the events path as above
(result.simulation: "events", "events+reflections" or "dense"). simulation="events" forces the
front alone with neither check: where its argument does not hold (init_noise > 0, which it then
ignores; neurons that fire late) it differs from the dense reference, the negative control of
tests/test_fazil_events.py. The step's loss and detection counts are tensors (no host sync
for them; `result.detection` converts). stream() always runs the dense dynamics (its history
is real: a prediction phase that is not bit-for-bit still, so no level is exactly at rest).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import BioPropError
from ..network import Network
from ..sweeps import pool, scalar, write
from .base import LearningRule, StepResult, check_batch, check_int, check_positive
from .predictive_coding import (
    FreeOutput,
    Plasticity,
    ReadByKey,
    ValueClamp,
    advance,
    check_shared_updates,
    clamp_output,
    feedforward_state,
    load_noise_state,
    make_teacher,
    noise_state,
    present,
    state_at,
    write_schedule,
)

Tensor = torch.Tensor

#: "constant since forever": the history assumed for a network whose prediction phase converged.
_LONG_AGO = 2**30


class ChangeDetector:
    """phi for every neuron of every level, from its own error node's history (tensors of each
    level's shape).

    run[l] counts how many consecutive values of eps_l, ending at the previous step, were
    equal (within change_tol); prediction[l] is the previous step's mu_l.
    """

    def __init__(self, t_d: int, change_tol: float):
        self.t_d = t_d
        self.change_tol = change_tol
        self.previous_error: list[Tensor] | None = None
        self.previous_prediction: list[Tensor] | None = None
        self.run: list[Tensor] | None = None

    def assume_at_rest(self, errors: list[Tensor], predictions: list[Tensor]) -> None:
        """History of a converged prediction phase: errors 0 for ever, prediction unchanged."""
        self.previous_error = [torch.zeros_like(e) for e in errors]
        self.previous_prediction = [mu.clone() for mu in predictions]
        self.run = [torch.full(e.shape, _LONG_AGO, dtype=torch.long, device=e.device) for e in errors]

    def __call__(self, errors: list[Tensor], predictions: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """(phi, changed) per level, both bool of the level's shape; then the history moves on one step."""
        if self.previous_error is None:
            self.assume_at_rest(errors, predictions)
        phi, changed = [], []
        for layer, (eps, mu) in enumerate(zip(errors, predictions)):
            resolution = self.change_tol * (1 + mu.abs())
            change = (eps - self.previous_error[layer]).abs() > resolution
            from_feedback = (mu - self.previous_prediction[layer]).abs() <= resolution
            phi.append(change & from_feedback & (self.run[layer] >= self.t_d))
            changed.append(change)
            self.run[layer] = torch.where(change, torch.ones_like(self.run[layer]), self.run[layer] + 1)
            self.previous_error[layer] = eps.clone()
            self.previous_prediction[layer] = mu.clone()
        return phi, changed


@dataclass
class Detection(ReadByKey):
    """Detection outcomes of one or more presentations (DetectionTally's counts; per_layer:
    the same counts per level, output last)."""

    success: int
    missed: int
    harmless_miss: int
    spurious: int
    success_rate: float
    strict_success_rate: float
    per_layer: dict


@dataclass
class DetectionTally:
    """Per level: how each (sample, neuron) fared in each presentation of a training pair.

    success: phi fired exactly at its layer's step (t = L - l of the learning phase) and never
    elsewhere; missed: it did not fire there although its error changed there (a lost update);
    harmless: it did not fire there and its error did not change (BP's delta is 0: nothing
    lost); spurious: it fired at some other step (prediction phase or wrong learning step).
    """

    n_layers: int
    success: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    harmless: list[int] = field(default_factory=list)
    spurious: list[int] = field(default_factory=list)

    def __post_init__(self):
        for counts in (self.success, self.missed, self.harmless, self.spurious):
            counts.extend([0] * self.n_layers)
        self._reset_presentation()

    def _reset_presentation(self):
        self._fired_expected = [None] * self.n_layers
        self._changed_expected = [None] * self.n_layers
        self._fired_elsewhere = [None] * self.n_layers

    def record(self, learning_step: int | None, phi: list[Tensor], changed: list[Tensor]) -> None:
        """One step's gates; learning_step is t within the learning phase, None in prediction."""
        for index, (fired, change) in enumerate(zip(phi, changed)):
            expected = learning_step is not None and learning_step == self.n_layers - (index + 1)
            if expected:
                self._fired_expected[index] = fired.clone()
                self._changed_expected[index] = change.clone()
            else:
                previous = self._fired_elsewhere[index]
                self._fired_elsewhere[index] = fired.clone() if previous is None else previous | fired

    def close_presentation(self) -> None:
        for index in range(self.n_layers):
            fired = self._fired_expected[index]
            if fired is None:  # the learning phase ended before this layer's step
                continue
            changed = self._changed_expected[index]
            elsewhere = self._fired_elsewhere[index]
            if elsewhere is None:
                elsewhere = torch.zeros_like(fired)
            self.spurious[index] += int(elsewhere.sum())
            clean = ~elsewhere
            self.success[index] += int((fired & clean).sum())
            self.missed[index] += int((~fired & changed & clean).sum())
            self.harmless[index] += int((~fired & ~changed & clean).sum())
        self._reset_presentation()

    def summary(self) -> Detection:
        return detection_from_counts(self.success, self.missed, self.harmless, self.spurious)

    def counts(self) -> Tensor:
        """(4, L) int64: success, missed, harmless, spurious per level, output last."""
        return torch.tensor([self.success, self.missed, self.harmless, self.spurious], dtype=torch.long)


def detection_from_counts(success: list[int], missed: list[int], harmless: list[int], spurious: list[int]) -> Detection:
    """Detection from per-level counts (output last)."""
    total_success, total_missed, total_harmless, total_spurious = (sum(c) for c in (success, missed, harmless, spurious))
    total = total_success + total_missed + total_harmless + total_spurious
    decided = total_success + total_missed + total_spurious
    return Detection(
        success=total_success,
        missed=total_missed,
        harmless_miss=total_harmless,
        spurious=total_spurious,
        success_rate=total_success / decided if decided else float("nan"),
        strict_success_rate=total_success / total if total else float("nan"),
        per_layer={
            "success": list(success),
            "missed": list(missed),
            "harmless_miss": list(harmless),
            "spurious": list(spurious),
        },
    )


def front_tally(fired_at_front, changed_at_front, fired_elsewhere, device) -> Tensor:
    """DetectionTally.close_presentation's counts as a (4, L) tensor, with no host sync: per
    level, phi and the change test at its front step (None: never reached) and phi ORed over
    its other steps (None: never fired elsewhere)."""
    rows = []
    for fired, changed, elsewhere in zip(fired_at_front, changed_at_front, fired_elsewhere):
        if fired is None:
            rows.append(torch.zeros(4, dtype=torch.long, device=device))
            continue
        if elsewhere is None:
            elsewhere = torch.zeros_like(fired)
        clean = ~elsewhere
        rows.append(torch.stack([(fired & clean).sum(), (~fired & changed & clean).sum(),
                                 (~fired & ~changed & clean).sum(), elsewhere.sum()]))
    return torch.stack(rows, dim=1)


@dataclass(frozen=True)
class RegionPlan:
    """What a pooled step computes behind the front (module docstring, "the cone"), per step s:
    errors[s], the levels behind the front whose error eps_l(s) is computed; rates[s], the
    levels l whose rate g_l(x_l(s)) is recomputed (for mu_{l+1}(s) and the VJP context at x_l(s));
    offsets[s], the levels whose value node x_l(s + 1) is computed. Per level: tracked[l], whether
    its change test runs at every step after its front (it has a step at which phi may fire), and
    first_gate[l], the first step at which phi may fire (None: none)."""

    errors: tuple[tuple[int, ...], ...]
    rates: tuple[tuple[int, ...], ...]
    offsets: tuple[tuple[int, ...], ...]
    tracked: tuple[bool, ...]
    first_gate: tuple[int | None, ...]

    @property
    def empty(self) -> bool:
        return not any(self.tracked)


def plan_region(n_levels: int, n_steps: int, t_d: int, silent: Sequence[bool], any_step: bool) -> RegionPlan:
    """The cone of a pooled step (`_plan_region`), made once per shape of the question (a step
    asks it every call: pure Python, 0.4 ms for an RNN of 29 levels)."""
    return _plan_region(n_levels, n_steps, t_d, tuple(bool(flag) for flag in silent), bool(any_step))


@functools.lru_cache(maxsize=256)
def _plan_region(n_levels: int, n_steps: int, t_d: int, silent: tuple[bool, ...], any_step: bool) -> RegionPlan:
    """The cone of a pooled step (module docstring). Level l (0-based) has its front at
    k_l = L - 1 - l. phi_l may fire at t > k_l only where a neuron's last change is at least t_d
    steps back: from k_l + 1 on if a neuron was silent at the front (silent[l]), from k_l + t_d
    on otherwise (every neuron changed at k_l); any_step: from k_l + 1 on for every level (the
    conservative choice, gamma != 1). eps_l(s) is needed where a tested (l', t) lies within
    t - s levels of it; x_l(s + 1) where eps_l(s + 1) or eps_{l+1}(s + 1) is."""
    front = [n_levels - 1 - level for level in range(n_levels)]
    first_gate: list[int | None] = []
    for level in range(n_levels):
        start = front[level] + (1 if any_step or silent[level] else t_d)
        first_gate.append(start if front[level] < n_steps - 1 and start <= n_steps - 1 else None)
    tracked = tuple(start is not None for start in first_gate)
    needed: list[set[int]] = [set() for _ in range(n_steps)]
    current: set[int] = set()
    for s in reversed(range(n_steps)):
        around = {neighbour for level in current for neighbour in (level - 1, level, level + 1)}
        around.update(level for level in range(n_levels) if tracked[level] and front[level] < s)
        current = {level for level in around if 0 <= level < n_levels and front[level] <= s}
        needed[s] = current
    errors, rates, offsets = [], [], []
    for s in range(n_steps):
        behind = tuple(sorted(level for level in needed[s] if front[level] < s))
        moved = tuple(
            level for level in range(n_levels - 1)
            if front[level] <= s < n_steps - 1 and (level in needed[s + 1] or level + 1 in needed[s + 1])
        )
        errors.append(behind)
        offsets.append(moved)
        rates.append(tuple(sorted({level - 1 for level in behind if level > 0} | set(moved))))
    return RegionPlan(tuple(errors), tuple(rates), tuple(offsets), tracked, tuple(first_gate))


@dataclass
class FaZILResult(StepResult):
    """Fa-Z-IL's step: loss (a detached 0-d tensor, as every rule's) and output before the
    update, the inference steps run, which simulation ran ("events", "events+reflections" or
    "dense", module docstring), and how the gate phi
    fared: `detection` (a Detection, read from detection_counts, a (4, L) int64 tensor of
    success, missed, harmless and spurious counts per level, output last; kept as a tensor so
    the step does not wait for the device)."""

    n_inference_steps: int = 0
    simulation: str = "dense"
    detection_counts: Tensor | None = None

    @property
    def detection(self) -> Detection:
        success, missed, harmless, spurious = self.detection_counts.tolist()
        return detection_from_counts(success, missed, harmless, spurious)

    def keys(self) -> list[str]:
        return super().keys() + ["detection"]


@dataclass
class StreamResult(ReadByKey):
    """Fa-Z-IL's stream(): presentations and pairs learnt, the mean loss at the teacher's onset,
    the mean prediction-phase length, how many prediction phases did not become stationary
    (C1 broken), and the detection outcomes."""

    presentations: int
    pairs: int
    mean_loss: float
    mean_prediction_steps: float
    unconverged_prediction_phases: int
    detection: Detection


class FullyAutonomousZIL(LearningRule):
    name = "fazil"
    paper = "Song et al. 2020, Alg. 2"
    option_help = {
        "shared_updates": "parameters shared by several levels (an unrolled RNN): 'pooled' sums their changes over the "
                          "presentation and writes them at its end (exact BPTT); 'immediate' writes each at its own step",
        "t_d": "steps an error node must stay constant before a change opens its plasticity gate phi; "
               "matters in stream() only (a step() assumes a long-still prediction phase)",
        "n_steps": "learning-phase inference steps per step() (None: L, the time the feedback front needs to reach layer 1)",
        "gamma": "inference step size; 1 is condition C3 (exact)",
        "change_tol": "relative resolution within which an error node counts as unchanged (None: 1024 ulp of the dtype)",
        "init_noise": "std of Gaussian noise on the hidden value nodes at t = 0; 0 is condition C1 (exact)",
        "batch_plasticity": "'pooled' (each copy's gated changes summed and written when the presentation ends, as "
                            "mini-batch SGD), 'immediate' (written the moment phi fires: Algorithm 2 literally) or "
                            "'auto' (pooled for batches of more than one pair)",
        "seed": "seeds the init_noise draws",
        "simulation": "how step() simulates the circuit: 'events' (only the error front and what can still fire: "
                      "Z-IL's cost; forced, it skips the checks that it is exact), 'dense' (every node every step: the "
                      "reference) or 'auto' (events where provably equal to dense, else dense)",
    }
    claims_exactness = True
    negative_controls = (
        ("C3 broken: gamma=0.99999", {"gamma": 0.99999}),
        ("C1 broken: noisy start, sigma=1e-3", {"init_noise": 1e-3}),
    )
    #: run by `bioprop verify` as well when the net shares parameters between levels (an RNN)
    shared_parameter_controls = (("shared updates written at once", {"shared_updates": "immediate"}),)
    benchmark_cases = {"fazil": {}}

    def __init__(
        self,
        lr=0.01,
        loss="mse",
        t_d=4,
        n_steps=None,
        gamma=1.0,
        change_tol=None,
        init_noise=0.0,
        batch_plasticity="auto",
        seed=0,
        shared_updates="pooled",
        simulation="auto",
    ):
        super().__init__(lr, loss)
        if simulation not in ("auto", "events", "dense"):
            raise BioPropError(f"simulation={simulation!r}: choose 'auto', 'events' or 'dense'")
        self.simulation = simulation
        self.t_d = check_int("t_d", t_d, 1)
        self.n_steps = None if n_steps is None else check_int("n_steps", n_steps, 1)
        self.gamma = check_positive("gamma", gamma)
        self.change_tol = None if change_tol is None else check_positive("change_tol", change_tol, allow_zero=True)
        self.init_noise = check_positive("init_noise", init_noise, allow_zero=True)
        if batch_plasticity not in ("auto", "pooled", "immediate"):
            raise BioPropError(f"batch_plasticity={batch_plasticity!r}: choose 'auto', 'pooled' or 'immediate'")
        self.batch_plasticity = batch_plasticity
        self.shared_updates = check_shared_updates(shared_updates)
        self.seed = seed
        self._noise = torch.Generator().manual_seed(seed)
        self._reflections_needed = False  # whether the last auto step needed the region behind the front

    def _pooled(self, batch: int, shares_parameters: bool) -> bool:
        """Whether changes to parameters read by one level wait for the presentation's end (in a
        data-parallel step `batch` counts the global batch: its shards are one batch's copies)."""
        if self.batch_plasticity == "auto":
            from ..distributed import global_batch_size

            return global_batch_size(batch) > 1 or shares_parameters
        return self.batch_plasticity == "pooled"

    def _write_schedule(self, net: Network, levels, batch: int) -> list[bool]:
        shares = net.shares_parameters(net.parameter_slots(levels))
        return write_schedule(net, levels, self.shared_updates, not self._pooled(batch, shares))

    def options(self):
        return {
            **super().options(),
            "t_d": self.t_d,
            "n_steps": self.n_steps,
            "gamma": self.gamma,
            "change_tol": self.change_tol,
            "init_noise": self.init_noise,
            "batch_plasticity": self.batch_plasticity,
            "seed": self.seed,
            "shared_updates": self.shared_updates,
            "simulation": self.simulation,
        }

    def state_dict(self):
        return noise_state(self._noise)

    def load_state_dict(self, state):
        load_noise_state(self._noise, state)

    def _resolution(self, net) -> float:
        if self.change_tol is not None:
            return self.change_tol
        return 1024 * torch.finfo(net.dtype).eps

    def _gate(self, detector: ChangeDetector, tally: DetectionTally, phase_step):
        """The plasticity gate: phi as a float mask, levels where no neuron fires skipped."""

        def gate(t, errors, predictions):
            phi, changed = detector(errors, predictions)
            tally.record(phase_step(t), phi, changed)
            return [p.to(e.dtype) if bool(p.any()) else None for p, e in zip(phi, errors)]

        return gate

    def _step(self, net, x, y, trace):
        if self.simulation == "events" and trace:
            raise BioPropError("simulation='events' records no trace; use simulation='dense' or 'auto' with trace=True")
        if self.simulation == "events":
            forward = net.forward_pass(x)
            return self._front_step(net, x, y, forward, checked=False, slots=net.parameter_slots(forward.levels))
        if self.simulation == "auto" and not trace and self.init_noise == 0:
            forward = net.forward_pass(x)
            levels = forward.levels
            slots = net.parameter_slots(levels)
            if not (net.shares_parameters(slots) and self.shared_updates == "immediate"):
                if not any(self._write_schedule(net, levels, x.shape[0])):
                    return self._pooled_step(net, x, y, forward, slots)
                # the front alone when it may be exact; after a call that needed the reflections,
                # go to them directly (both give the dense result: this only saves the front's work)
                if self.gamma == 1.0 and (self.n_steps or len(levels)) <= self.t_d and not self._reflections_needed:
                    result = self._front_step(net, x, y, forward, checked=True, slots=slots)
                    if result is not None:
                        return result
                result = self._region_step(net, x, y, forward)
                self._reflections_needed = bool(result.detection_counts[2].any()) if self._reflections_needed else True
                return result
        return self._dense_step(net, x, y, trace)

    def _front_sweep(self, net, forward, teacher, n_steps: int, gamma: float):
        """The error front as the dense simulation computes it, eps_l(k) = 0 + gamma * (-0 + v), and
        phi there (changed, from feedback since mu_l = z_l, at rest long before):
        |eps_l(k)| > change_tol * (1 + |z_l|). Returns per level (None where the front does not
        reach) its error and phi at its front, and per step t the per-level changes
        parameter_vjp(phi * eps_l, r_{l-1}, u_l), as the dense simulation hands them over."""
        levels = forward.levels
        n_levels = len(levels)
        # the Python numbers as cached 0-d tensors of the net's dtype: torch converts a Python
        # number to the dtype anyway, with a copy per call (sweeps.scalar: the same products)
        one, tolerance = scalar(1.0, forward.output), scalar(self._resolution(net), forward.output)
        front_error: list[Tensor | None] = [None] * n_levels
        fired_at_front: list[Tensor | None] = [None] * n_levels
        per_step: list[list] = [[None] * n_levels for _ in range(n_steps)]
        error = teacher.output_error(forward.output, forward.output)  # eps_L(0): the teacher reads the prediction only
        for t in range(min(n_steps, n_levels)):
            index = n_levels - 1 - t  # the front: level L - t
            level = levels[index]
            front_error[index] = error
            fired = torch.gt(error.abs(), forward.preactivations[index].abs().add_(one).mul_(tolerance))
            fired_at_front[index] = fired
            per_step[t][index] = level.parameter_vjp(error * fired, forward.rates[index], forward.sides[index])
            if index > 0 and t < n_steps - 1:  # the feedback reaches level L - t - 1 at t + 1
                feedback = level.input_vjp(error, forward.rates[index])
                error = levels[index - 1].rate.vjp(feedback, forward.contexts[index - 1])
                if gamma != 1.0:
                    error = error * gamma
        return front_error, fired_at_front, per_step

    def _front_step(self, net, x, y, forward, checked: bool, slots):
        """The front alone (module docstring); None when `checked` and a neuron that did not
        change at its front could still fire (the caller then simulates the reflections too)."""
        levels = forward.levels
        n_levels = len(levels)
        n_steps = self.n_steps or n_levels
        output = forward.output
        teacher = make_teacher(self.loss, y, output)
        # forced simulation="events" runs the front as at gamma = 1 whatever gamma is (its negative control)
        _, fired_at_front, per_step = self._front_sweep(net, forward, teacher, n_steps, gamma=1.0)
        # per level (output last): neurons that fired at the front, and the silent ones (harmless
        # misses: their delta is below the resolution); 0 on levels the front did not reach
        first_reached = n_levels - min(n_steps, n_levels)
        success = torch.stack([fired_at_front[index].sum() for index in range(first_reached, n_levels)])
        sizes = [fired_at_front[index].numel() for index in range(first_reached, n_levels)]
        silent = torch.tensor(sizes, device=success.device) - success
        if first_reached:
            unreached = torch.zeros(first_reached, dtype=torch.long, device=success.device)
            success, silent = torch.cat([unreached, success]), torch.cat([unreached, silent])
        if checked:
            # levels with steps left after their front (index > L - n_steps): a neuron silent
            # there keeps its long history and could fire on a reflection
            late = silent[max(n_levels - n_steps + 1, 0):]
            if late.numel() and bool(late.any()):
                return None
        # the writes of Plasticity.add / finish, in the same order, with the slots looked up once
        readers = [0] * len(net.parameters_list())
        for level_slots in slots:
            for slot in set(level_slots):
                readers[slot] += 1
        unshared_at_once = not self._pooled(x.shape[0], any(count > 1 for count in readers))
        at_once = [(self.shared_updates == "immediate") if count > 1 else unshared_at_once for count in readers]
        parameters, scale = net.parameters_list(), self.lr / x.shape[0]
        pending: list[Tensor | None] = [None] * len(parameters)
        for changes in per_step:
            for slot, total in enumerate(pool(net, levels, changes, slots)):
                if total is None:
                    continue
                if at_once[slot]:
                    parameters[slot].data.add_(scale * total)
                else:
                    pending[slot] = total if pending[slot] is None else pending[slot] + total
        for parameter, total in zip(parameters, pending):
            if total is not None:
                parameter.data.add_(scale * total)
        nothing = torch.zeros_like(success)  # no miss, no firing elsewhere
        return FaZILResult(self.loss(output, y), output, None, n_inference_steps=n_steps - 1, simulation="events",
                           detection_counts=torch.stack([success, nothing, silent, nothing]))

    def _pooled_step(self, net, x, y, forward, slots):
        """A step whose changes all wait for the presentation's end (module docstring): the front,
        then, where a neuron may still fire, the cone behind it; the changes in the dense order."""
        levels, anchors = forward.levels, list(forward.preactivations)
        n_levels = len(levels)
        n_steps = self.n_steps or n_levels
        output = forward.output
        teacher = make_teacher(self.loss, y, output)
        if isinstance(teacher, ValueClamp):
            anchors[-1] = teacher.target
        gamma = self.gamma
        front_error, fired_at_front, per_step = self._front_sweep(net, forward, teacher, n_steps, gamma)
        first_reached = n_levels - min(n_steps, n_levels)
        # the step's first host sync: how many fired at each front (the rest are silent)
        counted = torch.stack([torch.count_nonzero(fired_at_front[i]) for i in range(first_reached, n_levels)])
        success = [0] * first_reached + counted.tolist()
        sizes = [0 if fired is None else fired.numel() for fired in fired_at_front]
        silent = [size - count for size, count in zip(sizes, success)]
        plan = plan_region(n_levels, n_steps, self.t_d, [count > 0 for count in silent], any_step=gamma != 1.0)
        spurious = [0] * n_levels
        if not plan.empty:
            late_changes, late_counts = self._simulate_cone(net, plan, forward, anchors, teacher, front_error,
                                                            fired_at_front)
            for (s, index), change in late_changes.items():
                per_step[s][index] = change
            for index, (elsewhere, also_at_front) in late_counts.items():
                # fired elsewhere: spurious; of those, the ones that fired at the front too are no success,
                # the others no harmless miss
                spurious[index] = elsewhere
                success[index] -= also_at_front
                silent[index] -= elsewhere - also_at_front
        # Plasticity.add's sums and Plasticity.finish's write, the same roundings, in buffers of
        # this step's own (every change is a fresh tensor, and pool hands a distinct one per slot)
        pending: list[Tensor | None] = [None] * len(net.parameters_list())
        for changes in per_step:
            if all(change is None for change in changes):
                continue
            for slot, total in enumerate(pool(net, levels, changes, slots)):
                if total is None:
                    continue
                if pending[slot] is None:
                    pending[slot] = total
                else:
                    pending[slot].add_(total)
        write(net, pending, self.lr / x.shape[0], in_place=True)
        counts = torch.tensor([success, [0] * n_levels, silent, spurious], dtype=torch.long, device=output.device)
        return FaZILResult(self.loss(output, y), output, None, n_inference_steps=n_steps - 1,
                           simulation="events" if plan.empty else "events+reflections", detection_counts=counts)

    def _simulate_cone(self, net, plan, forward, anchors, teacher, front_error, fired_at_front):
        """The region behind the front, restricted to `plan`: the dense simulation's operations
        on the same numbers. Returns the changes of the firings behind the front, {(step, level):
        change}, and per level that can fire there, the number of (sample, neuron) entries that
        fired after the front and of those the ones that fired at the front too."""
        levels, sides = forward.levels, forward.sides
        n_levels, n_steps = len(levels), len(plan.errors)
        tolerance, gamma, t_d = self._resolution(net), self.gamma, self.t_d
        one, tolerance = scalar(1.0, front_error[-1]), scalar(tolerance, front_error[-1])  # as in _pooled_step
        offsets: list[Tensor | None] = [None] * n_levels  # None: 0, ahead of the front
        owned = [False] * n_levels  # whether offsets[l] is this step's own buffer (moved in place)
        # phi's history after the front. A level where a neuron that changes after its front cannot
        # fire before the end (k + t_d > n_steps - 1) keeps it for the neurons silent at the front
        # only, gathered (entries[l]: their flat indices; unchanged[l]: still at rest since long
        # ago); the others keep it for every neuron, with the step of its last change (the run of
        # equal values ending at t - 1 is t - that step, ChangeDetector's run)
        entries: list[Tensor | None] = [None] * n_levels
        unchanged: list[Tensor | None] = [None] * n_levels
        last_change: list[Tensor | None] = [None] * n_levels
        previous_error: list[Tensor | None] = [None] * n_levels
        previous_prediction: list[Tensor | None] = [None] * n_levels
        fired_elsewhere: list[Tensor | None] = [None] * n_levels  # phi ORed over the steps after the front
        for index in range(n_levels):
            if not plan.tracked[index]:
                continue
            front = n_levels - 1 - index
            if front + t_d > n_steps - 1:
                silent = torch.nonzero(fired_at_front[index].reshape(-1).logical_not()).squeeze(1)
                entries[index] = silent
                previous_error[index] = front_error[index].reshape(-1).index_select(0, silent)
                previous_prediction[index] = forward.preactivations[index].reshape(-1).index_select(0, silent)
            else:
                last_change[index] = torch.full(front_error[index].shape, -_LONG_AGO, dtype=torch.int32,
                                                device=front_error[index].device)
                last_change[index].masked_fill_(fired_at_front[index], front)
                previous_error[index] = front_error[index]
                previous_prediction[index] = forward.preactivations[index]  # mu_l = z_l at the front
        candidates = []  # (step, level, error, phi, rate) where phi may fire
        changes = {}  # (step, level) -> the change of a firing behind the front
        # the candidates' changes wait for the end (one host sync) where they are few; where they
        # are many (a long RNN: hundreds of level-steps) holding their errors costs more memory
        # traffic than a sync per step (the same numbers either way: the changes are pooled)
        tested = sum(n_steps - first for first in plan.first_gate if first is not None)
        per_step_sync = tested > 2 * n_levels
        last = max((s for s in range(n_steps) if plan.errors[s] or plan.offsets[s]), default=0)
        for s in range(1, last + 1):
            front = n_levels - 1 - s
            if front >= 0:
                offsets[front] = front_error[front]  # x_l(k) = z_l + eps_l(k): the feedback that arrived
            rates, contexts = {}, {}
            for index in plan.rates[s]:
                rates[index + 1], contexts[index] = levels[index].rate.forward(anchors[index] + offsets[index])
            errors: dict[int, Tensor] = {}
            if front >= 0:
                errors[front] = front_error[front]
            for index in plan.errors[s]:
                if index == 0:  # r_0 is clamped and no weight is written before the end: mu_1 = z_1
                    prediction = forward.preactivations[0]
                else:
                    prediction = levels[index].forward(rates.get(index, forward.rates[index]), sides[index])
                if index == n_levels - 1:
                    error = teacher.output_error(anchors[index], prediction)
                else:
                    error = torch.sub(anchors[index], prediction).add_(offsets[index])  # (x - mu) as the dense one
                errors[index] = error
                if not plan.tracked[index] or (entries[index] is not None and not entries[index].numel()):
                    continue  # no test, or none of its neurons was silent at the front (gamma != 1)
                tested_error, tested_prediction = error, prediction
                if entries[index] is not None:
                    tested_error = error.reshape(-1).index_select(0, entries[index])
                    tested_prediction = prediction.reshape(-1).index_select(0, entries[index])
                # ChangeDetector's test, entry by entry the same operations
                resolution = tested_prediction.abs().add_(one).mul_(tolerance)  # change_tol * (1 + |mu|)
                change = torch.gt((tested_error - previous_error[index]).abs_(), resolution)
                previous_error[index] = tested_error
                if s >= plan.first_gate[index]:
                    moved = (tested_prediction - previous_prediction[index]).abs_()
                    if entries[index] is not None:
                        # a change ends the long run; at the first test after the front every
                        # gathered neuron is still unchanged, and after the last none is read
                        if s == n_levels - index:
                            first_change = change
                            if s < last:
                                unchanged[index] = change.logical_not()
                        else:
                            first_change = change & unchanged[index]
                            if s < last:
                                unchanged[index].logical_xor_(first_change)
                        phi = first_change & torch.le(moved, resolution)
                    else:
                        phi = change & torch.le(moved, resolution) & (last_change[index] <= s - t_d)
                    candidates.append((s, index, error, phi, rates.get(index, forward.rates[index])))
                    fired_elsewhere[index] = phi if fired_elsewhere[index] is None else fired_elsewhere[index] | phi
                previous_prediction[index] = tested_prediction
                if last_change[index] is not None:
                    last_change[index].masked_fill_(change, s)
            for index in plan.offsets[s]:
                above = index + 1
                feedback = levels[above].input_vjp(errors[above], rates.get(above, forward.rates[above]))
                step = levels[index].rate.vjp(feedback, contexts[index]) - errors[index]  # gamma * (-eps + v)
                if gamma != 1.0:
                    step.mul_(gamma)
                offsets[index] = offsets[index].add_(step) if owned[index] else offsets[index] + step
                owned[index] = True
            if per_step_sync and candidates:
                self._resolve(levels, sides, entries, candidates, changes, [])
        # the step's last host sync: which candidates fired, and how many entries fired after the front
        counted = [index for index in range(n_levels) if fired_elsewhere[index] is not None]
        asked = []
        for index in counted:
            asked.append(torch.count_nonzero(fired_elsewhere[index]))
            if entries[index] is None:  # gathered levels hold neurons silent at the front only
                asked.append(torch.count_nonzero(fired_elsewhere[index] & fired_at_front[index]))
        tail = iter(self._resolve(levels, sides, entries, candidates, changes, asked))
        counts = {index: (next(tail), 0 if entries[index] is not None else next(tail)) for index in counted}
        return changes, counts

    @staticmethod
    def _resolve(levels, sides, entries, candidates, changes, asked) -> list:
        """One host sync: which candidates fired (their changes go into `changes`), and the
        values of the 0-d tensors `asked`."""
        answers = torch.stack([phi.view(torch.uint8).max() for _, _, _, phi, _ in candidates] + asked).tolist() \
            if candidates or asked else []
        for (s, index, error, phi, rate), fired in zip(candidates, answers):
            if not fired:
                continue
            if entries[index] is not None:  # phi back in the level's shape, as the float gate error * phi casts it to
                phi = torch.zeros(error.numel(), dtype=error.dtype, device=error.device).index_put_(
                    (entries[index],), phi.to(error.dtype)).view(error.shape)
            changes[(s, index)] = levels[index].parameter_vjp(error * phi, rate, sides[index])
        candidates.clear()
        return answers[len(answers) - len(asked):]

    def _region_step(self, net, x, y, forward):
        """The front and the region behind it, step by step as the dense simulation runs them
        (the same operations on the same numbers); the levels ahead of the front are at rest
        and not computed (module docstring)."""
        levels, sides = forward.levels, forward.sides
        n_levels = len(levels)
        n_steps = self.n_steps or n_levels
        output = forward.output
        teacher = make_teacher(self.loss, y, output)
        anchors = list(forward.preactivations)
        if isinstance(teacher, ValueClamp):
            anchors[-1] = teacher.target
        offsets: list[Tensor | None] = [None] * n_levels  # None: still 0, ahead of the front
        offsets[-1] = torch.zeros_like(anchors[-1])
        plasticity = Plasticity(net, levels, self.lr / x.shape[0], self._write_schedule(net, levels, x.shape[0]))
        tolerance, gamma = self._resolution(net), self.gamma
        previous_error: list[Tensor | None] = [None] * n_levels
        previous_prediction: list[Tensor | None] = [None] * n_levels
        last_change: list[Tensor | None] = [None] * n_levels  # the step of each neuron's last change
        fired_at_front: list[Tensor | None] = [None] * n_levels
        changed_at_front: list[Tensor | None] = [None] * n_levels
        fired_elsewhere: list[Tensor | None] = [None] * n_levels
        quiet: set[int] = set()  # levels none of whose neurons can fire before the presentation ends
        for t in range(n_steps):
            front = n_levels - 1 - t  # negative once the front has passed level 1
            first = max(front, 0)  # the region: levels first .. L (0-based indices)
            rates, contexts = list(forward.rates), list(forward.contexts)
            for index in range(first, n_levels - 1):
                if offsets[index] is not None:
                    rates[index + 1], contexts[index] = levels[index].rate.forward(anchors[index] + offsets[index])
            errors: list[Tensor | None] = [None] * n_levels
            gates: list[Tensor | None] = [None] * n_levels
            for index in range(first, n_levels):
                if index == front:  # its input and weights have not moved: mu_l = z_l to the bit
                    prediction = forward.preactivations[index]
                else:
                    prediction = levels[index].forward(rates[index], sides[index])
                offset = offsets[index] if offsets[index] is not None else torch.zeros_like(anchors[index])
                if index == n_levels - 1:
                    error = teacher.output_error(anchors[index] + offset, prediction)
                else:
                    error = (anchors[index] - prediction) + offset
                errors[index] = error
                if index in quiet:
                    continue
                if previous_error[index] is None:  # the history at rest: eps = 0, mu = z_l, long still
                    previous_error[index] = torch.zeros_like(error)
                    previous_prediction[index] = forward.preactivations[index]
                    last_change[index] = torch.full(error.shape, -_LONG_AGO, dtype=torch.long, device=error.device)
                resolution = tolerance * (1 + prediction.abs())
                change = (error - previous_error[index]).abs() > resolution
                from_feedback = (prediction - previous_prediction[index]).abs() <= resolution
                # the run of equal values ending at t - 1 is t - (step of the last change): ChangeDetector's run
                phi = change & from_feedback & (last_change[index] <= t - self.t_d)
                last_change[index].masked_fill_(change, t)
                previous_error[index], previous_prediction[index] = error, prediction
                if index == front:
                    fired_at_front[index], changed_at_front[index] = phi, change
                else:
                    fired_elsewhere[index] = phi if fired_elsewhere[index] is None else fired_elsewhere[index] | phi
                gates[index] = phi
            # behind the front a level rarely fires: ask once per step which do (the dense
            # simulation asks per level); the front's change is taken unasked (0 where silent)
            # and whether the front level has a silent neuron: if not, and t + t_d > n_steps - 1,
            # none of its neurons can fire again (each changed now), and its gate is no longer run
            behind = [index for index in range(first, n_levels) if index != front and index not in quiet]
            asked = [gates[index].any() for index in behind]
            if front >= 0:
                asked.append((~changed_at_front[front]).any())
            answers = torch.stack(asked).tolist() if asked else []
            for index, fired in zip(behind, answers):
                if not fired:
                    gates[index] = None
            if front >= 0 and not answers[-1] and t + self.t_d > n_steps - 1:
                quiet.add(front)
            changes = [
                None if gate is None else levels[index].parameter_vjp(errors[index] * gate, rates[index], sides[index])
                for index, gate in enumerate(gates)
            ]
            if t < n_steps - 1:
                new_offsets = list(offsets)
                for index in range(max(first - 1, 0), n_levels - 1):
                    feedback = levels[index + 1].input_vjp(errors[index + 1], rates[index + 1])
                    offset = offsets[index] if offsets[index] is not None else torch.zeros_like(anchors[index])
                    error = errors[index] if errors[index] is not None else torch.zeros_like(anchors[index])
                    # the dense offset + gamma * (-eps + v); v - eps is -eps + v to the bit, 1.0 * u is u
                    step = levels[index].rate.vjp(feedback, contexts[index]) - error
                    new_offsets[index] = offset + (step if gamma == 1.0 else gamma * step)
                offsets = new_offsets
            plasticity.add(changes)
        plasticity.finish()
        counts = front_tally(fired_at_front, changed_at_front, fired_elsewhere, output.device)
        return FaZILResult(self.loss(output, y), output, None, n_inference_steps=n_steps - 1,
                           simulation="events+reflections", detection_counts=counts)

    def _dense_step(self, net, x, y, trace):
        levels = net.levels_for(x)
        n_levels = len(levels)
        detector = ChangeDetector(self.t_d, self._resolution(net))
        tally = DetectionTally(n_levels)
        gate = self._gate(detector, tally, phase_step=lambda t: t)
        n_steps = self.n_steps or n_levels
        presented = present(
            net, x, y, self.loss, gamma=self.gamma, n_steps=n_steps, lr=self.lr, gate=gate,
            shared_updates=self.shared_updates,
            unshared_at_once=not self._pooled(x.shape[0], net.shares_parameters(net.parameter_slots(levels))),
            init_noise=self.init_noise, noise=self._noise, record=trace,
        )
        tally.close_presentation()
        return FaZILResult(presented.loss, presented.output, presented.trace,
                           n_inference_steps=n_steps - 1, simulation="dense", detection_counts=tally.counts())

    def stream(
        self,
        net,
        inputs: Tensor,
        targets: Tensor,
        batch_size: int = 1,
        learning_steps: int | None = None,
        hold_steps: int = 16,
        max_prediction_steps: int = 1000,
    ) -> StreamResult:
        """Learn from a stream of training pairs with no external trigger, on any Network.

        inputs: (N, ...) in the net's input shape ((N, n_0) for an MLP, (N, C, H, W) for a 2-d
        conv net, (N, T, n_in) for an ElmanRNN); targets (N, n_out) or (N,) labels.
        For each pair (batch_size independent streams side by side, sharing the weights):
        the input is presented with the output free until the whole network is stationary
        (no value node moves by more than change_tol * (1 + |x|) in a step), then for
        `hold_steps` more steps (at most max_prediction_steps in all); then the teacher arrives
        for `learning_steps` steps (default L, the number of levels). Inference and plasticity
        with the gate phi run throughout, across pairs; pooled changes are written at the end of
        each pair's presentation.
        """
        inputs, targets = check_batch(net, inputs, targets)
        batch_size = check_int("batch_size", batch_size, 1)
        hold_steps = check_int("hold_steps", hold_steps, 0)
        max_prediction_steps = check_int("max_prediction_steps", max_prediction_steps, 1)
        if learning_steps is not None:
            learning_steps = check_int("learning_steps", learning_steps, 1)
        n_presentations = inputs.shape[0] // batch_size
        if n_presentations == 0:
            raise BioPropError(f"batch_size={batch_size}: larger than the {inputs.shape[0]} pairs given")
        detector = ChangeDetector(self.t_d, self._resolution(net))
        tally: DetectionTally | None = None
        phase = {"learning": False}
        free = FreeOutput()
        state = None
        losses, prediction_lengths, unconverged = [], [], 0
        scale = self.lr / batch_size
        with torch.no_grad():
            for p in range(n_presentations):
                chunk = slice(p * batch_size, (p + 1) * batch_size)
                pair_inputs = inputs[chunk]
                if state is None:  # the stream starts at rest on its first input
                    state = feedforward_state(net, pair_inputs)
                    tally = DetectionTally(len(state.levels))
                    gate = self._gate(detector, tally, phase_step=lambda t: t if phase["learning"] else None)
                else:  # the new input is clamped; the value nodes carry on from the last pair
                    levels = net.levels_for(pair_inputs)
                    state = state_at(net.input_rates(pair_inputs), state.value_nodes, levels,
                                     net.side_inputs(pair_inputs, levels))
                plasticity = Plasticity(net, state.levels, scale, self._write_schedule(net, state.levels, batch_size))
                phase["learning"] = False
                steps, stationary_for = 0, -1
                while steps < max_prediction_steps and stationary_for < hold_steps:
                    new_state, _, _ = advance(
                        state, free, plasticity, t=steps, gamma=self.gamma, gate=gate, output_free=True
                    )
                    still = all(
                        bool(((a - b).abs() <= detector.change_tol * (1 + b.abs())).all())
                        for a, b in zip(new_state.value_nodes, state.value_nodes)
                    )
                    stationary_for = stationary_for + 1 if still else -1
                    state = new_state
                    steps += 1
                if stationary_for < 0:
                    unconverged += 1
                prediction_lengths.append(steps)
                output = state.value_nodes[-1]
                losses.append(float(self.loss(output, targets[chunk])))
                teacher = make_teacher(self.loss, targets[chunk])
                if isinstance(teacher, ValueClamp):
                    state = clamp_output(state, teacher)
                phase["learning"] = True
                for t in range(learning_steps or len(state.levels)):
                    state, _, _ = advance(state, teacher, plasticity, t=t, gamma=self.gamma, gate=gate, output_free=False)
                plasticity.finish()
                tally.close_presentation()
        return StreamResult(
            presentations=n_presentations,
            pairs=n_presentations * batch_size,
            mean_loss=sum(losses) / len(losses),
            mean_prediction_steps=sum(prediction_lengths) / len(prediction_lengths),
            unconverged_prediction_phases=unconverged,
            detection=tally.summary(),
        )
