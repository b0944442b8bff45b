"""The four-synapse upstream/downstream circuit (Liao et al. 2024), as reconstructed in SPEC-circuit.md.

Only the paper's summary survives (figure captions, the start of Theorem 1), so the equations
below are *our reconstruction*, not the paper's text; docs/circuit.md says which is which.

The upstream pathway is the network: a chain of Linear levels (a bioprop.MLP, or a wrapped
nn.Sequential of Linear layers each followed by one elementwise activation), weights W_l, hidden
activations f_l, D_l = f_l'(z_l). The
rule owns a downstream pathway with, per hidden level l = 1..L-1, a population of width
m_l = r_l n_l and three plastic matrices besides W_l:

    W̄_L: n_{L-1} x n_L   top feedback (error module -> error compartment of upstream L-1)
    W̄_l: n_{l-1} x m_l   downstream l -> error compartment of upstream l-1      (l = 2..L-1)
    V_l:  m_l x n_l       upstream l's error compartment -> downstream l
    V̄_l: n_l x m_l       downstream l -> teaching compartment of upstream l

All of them start as independent random draws (no symmetric start). One step on a batch:

    forward:   z_l = W_l h_{l-1} + b_l,  h_l = f(z_l) (l < L),  e = dLoss/dz_L
    feedback:  eps_{L-1} = D_{L-1} (W̄_L e)
               for l = L-1 .. 1:  hb_l  = g(V_l eps_l)          downstream activity (g: identity default)
                                  a_l   = V̄_l hb_l             teaching signal
                                  eps_{l-1} = D_{l-1} (W̄_l hb_l)   (l > 1)
    plasticity (batch means <.>, all at once, from the signals above):
      W_L  -= eta_W (<e h_{L-1}ᵀ> + lam W_L)        W_l  -= eta_W (<a_l h_{l-1}ᵀ> + lam W_l)
      W̄_L -= eta_W (<h_{L-1} eᵀ> + lam W̄_L)        W̄_l -= eta_W̄ <h_{l-1} hb_lᵀ> + eta_W lam W̄_l
      X_l   = <hb_l (eps_l - a_l)ᵀ> / rho_l,        rho_l = <||eps_l||^2>   (one scalar per level)
      V_l  += eta_V X_l - kappa V_l                 V̄_l += eta_V̄ X_lᵀ - kappa V̄_l
      b_L  -= eta_W <e>                             b_l  -= eta_W <a_l>      (when the net has biases)

Why it assembles (SPEC-circuit.md): the shared increment X_l and the common decay drive
V_l - c V̄_lᵀ -> 0 with c = eta_V / eta_V̄; the delta rule makes V̄_l V_l the identity on the
error subspace; the Kolen-Pollack pairs drive W̄_L -> W_Lᵀ and W̄_l V_l -> W_lᵀ, so eps_l tends to
BP's delta d_l and a_l -> c H_l d_l with H_l = V̄_l V̄_lᵀ. Then the W_l update is Theorem 1's
form, SGD preconditioned by the positive definite matrix c H_l: <a_l h_{l-1}ᵀ> -> c H_l dLoss/dW_l.
`bioprop.diagnostics` measures how far each of these limits has been reached.

Step bound (`step_bound` tau > 0, the default; 0 switches it off). Each level's step is held
within tau times its recent typical size, a trust region against single outlier batches:

    G_l   = <a_l h_{l-1}ᵀ> (l < L),  G_L = <e h_{L-1}ᵀ>       the update before the bound
    s_l   = min(1, tau m_l / ||G_l||_F)                        (s_l = 1 on the first step)
    m_l  <- beta m_l + (1 - beta) ||G_l||_F                    running mean of the raw size, beta = step_memory
    W_l  -= eta_W (s_l <a_l h_{l-1}ᵀ> + lam W_l),  b_l -= eta_W s_l <a_l>,  and W̄_l's Hebbian term times s_l

s_l is one positive scalar per level and step (m_l uses the sizes before this step's), so the
update of W_l is still Theorem 1's form, now s_l c H_l dLoss/dW_l: H-preconditioned SGD up to a
positive scalar. The Kolen-Pollack partner of W_l (W̄_L for the top level, W̄_l below) takes the
same factor, so the pair keeps receiving matched increments and W̄ -> Wᵀ is untouched; V and V̄
are already normalised by rho. Why (docs/circuit.md, stability): at the trainer's defaults
lambda_max(c H_l) stays near 1 -- H is not what grows --, but single small or high-loss batches
give steps several times the typical one, which with the circuit's noisier update throw the
network off (test accuracy 0.967 -> 0.893 in one step); the bound scales down those steps only.

Cost. Per sample, in multiply-adds (m_l = r n_l): the forward pass (BP's, sum n_l n_{l-1}); the
feedback W̄_L e (n_{L-1} n_L), then per hidden level V_l eps_l and V̄_l hb_l (m_l n_l each) and
W̄_l hb_l (n_{l-1} m_l, l > 1); the plasticity G_l (BP's parameter products), W̄_l's Hebbian term
(n_{l-1} m_l, l > 1; W̄_L's is G_Lᵀ, not redone) and X_l once (m_l n_l), shared by V_l and V̄_l.
On 784-256-256-256-10 at r = 4: 334,336 + 2,099,712 + 1,645,056 = 4,079,104 per sample, 5.08x
BP's 802,304 (forward 334,336, feedback 133,632, parameters 334,336); no diagnostics run in a
step. Besides the products a step makes one pass over each plastic matrix (decay and increment
together, two for W_l) and a norm of each G_l; the scalars (1 / (B rho_l), the step bound's s_l)
are 0-d tensors applied to factors of B rows, so nothing syncs with the host. V̄_l and W̄_l are
laid out as their transposes (`_transposed_storage`), X_l is written into a workspace reused
every step. Measured (docs/circuit.md, Cost; `benchmarks/circuit_floor.py`) on a quiet 2-core
machine, two threads: 3.0-3.2x a plain PyTorch SGD step (before: 4.5x; one thread 3.7x, before
6.9-8.1x on a loaded machine), below the 5.08x that reading BP's time as proportional to its
products gives, and 1.6-1.7x the floor's products timed alone (plain PyTorch: 2.4-2.9x its own).

Networks. The circuit is stated for fully connected layers: every pathway matrix has the shape of
a layer's width, and D_l is elementwise. On Linear-only networks it runs as above (`linear_levels`
checks); its form on conv levels (what the downstream population of a feature map is, whether V
and V̄ share weights over positions) and on recurrent ones is a research question, so other nets
are refused with a BioPropError naming the rules that run there.

Notation map: the paper's W, W̄, V, V̄ keep their names; the paper's downstream activities h̄ are
our hb_l; levels are indexed forward like every bioprop network (SPEC.md conventions).
Options beyond the SPEC's default (the V/V̄ rule, which synapse types are plastic, g, the
ratio per level, per-type learning rates and init scales) exist to search the design space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..activations import get_activation
from ..measures import cosine
from ..errors import BioPropError
from ..levels import LinearLevel
from ..network import Network
from .base import LearningRule, StepResult, check_positive
from .feedback import draw_uniform, xavier_bound

Tensor = torch.Tensor

SYNAPSE_TYPES = ("W", "Wbar", "V", "Vbar")
DOWNSTREAM_ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid", "leaky_relu")


@dataclass
class CircuitStepResult(StepResult):
    """One step of the circuit. deltas: eps_1 .. eps_{L-1}; gradient_estimates: per entry of
    net.parameters_list(), what W_l's update uses in place of dLoss/dW_l (<a_l h_{l-1}ᵀ>, the
    error's at the top), None for the biases; teaching a_l and downstream hb_l per hidden level."""

    deltas: list = field(default_factory=list)
    gradient_estimates: list = field(default_factory=list)
    teaching: list = field(default_factory=list)
    downstream: list = field(default_factory=list)


def _per_parameter(net: Network, weights: Sequence[Tensor], estimates: Sequence[Tensor]) -> list:
    """W_l's estimates at W_l's entries of net.parameters_list() (an MLP's: the first L), None elsewhere."""
    slot = {id(w): estimate for w, estimate in zip(weights, estimates)}
    return [slot.get(id(p)) for p in net.parameters_list()]


def _delta_target(eps: Tensor, teaching: Tensor) -> Tensor:
    """The SPEC's rule: the delta rule of V̄ (target eps, prediction a = V̄ hb), shared with V."""
    return eps - teaching


def _hebbian_target(eps: Tensor, teaching: Tensor) -> Tensor:
    return eps


def _anti_hebbian_target(eps: Tensor, teaching: Tensor) -> Tensor:
    return -eps


#: name -> (the (B, n_l) factor P(eps, a) of the increment X = hbᵀ P summed over the batch, normalised by rho?)
CROSS_RULES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], bool]] = {
    "delta": (_delta_target, True),
    "delta_raw": (_delta_target, False),
    "hebbian": (_hebbian_target, True),
    "anti_hebbian": (_anti_hebbian_target, True),
}


#: the rules that run on conv and recurrent levels, for the circuit's refusal
RULES_ON_EVERY_NETWORK = ("bp", "fa", "kp", "sign", "dfa", "credit")


def linear_levels(net: Network, x: Tensor | None = None) -> list[LinearLevel]:
    """The levels of a Linear-only network (see "Networks" in the module docstring), or a BioPropError."""
    if not isinstance(net, Network):
        raise BioPropError(f"net: expected a bioprop.Network (a bioprop.MLP or bioprop.wrap(model)), got {type(net).__name__}")
    try:
        levels = net.levels_for(x)
    except (AttributeError, TypeError):
        levels = None
    kinds = sorted({level.name for level in levels}) if levels is not None else ["recurrent time steps"]
    fits = levels is not None and all(isinstance(level, LinearLevel) for level in levels) and all(
        level.rate.activation is not None for level in levels[:-1]
    ) and levels[-1].rate.is_identity
    if not fits:
        raise BioPropError(
            f"net: the circuit runs on Linear-only networks (an MLP, or a wrapped Sequential of Linear layers each "
            f"followed by one elementwise activation); {net.describe()} has {', '.join(kinds)} levels. Its conv and "
            f"recurrent form is a research question; on this net use one of {', '.join(RULES_ON_EVERY_NETWORK)}"
        )
    return levels


def layer_sizes(levels: Sequence[LinearLevel]) -> list[int]:
    """[n_0, n_1, ..., n_L] of a chain of Linear levels."""
    return [levels[0].weight.shape[1]] + [level.weight.shape[0] for level in levels]


class FourSynapseCircuit(LearningRule):
    """The upstream/downstream circuit. `lr` is eta_W, the upstream learning rate.

    ratio: downstream width m_l = round(r n_l); one number for every level or a comma-separated
        list, one per hidden level ("4,4,2").
    downstream_activation: g, one of DOWNSTREAM_ACTIVATIONS ("identity" is the SPEC's default).
    scale_wbar, scale_v, scale_vbar: initial scale of each matrix type, as a factor on the
        uniform Glorot bound sqrt(6 / (fan_in + fan_out)) of a matrix of that shape.
    eta_wbar (None: = lr), eta_v, eta_vbar: learning rates of W̄_l (l < L), V, V̄. W̄_L learns with lr.
    lam: weight decay of the Kolen-Pollack pairs (W, W̄). kappa: decay of V and V̄ per step.
    plastic: which synapse types learn, a comma-separated subset of W,Wbar,V,Vbar ("all", "W").
    cross_rule: the V/V̄ increment: "delta" (normalised delta rule, default), "delta_raw"
        (without rho), "hebbian", "anti_hebbian", or a callable (hb, eps, a) -> X summed over
        the batch, shape (m_l, n_l); named rules other than delta_raw are divided by rho.
    normalizer: what rho_l measures: "error" (the SPEC's <||eps_l||^2>) or "downstream"
        (<||hb_l||^2>, the normalised LMS of adaptive filtering: the delta rule is then stable
        for eta_V̄ < 2 whatever the downstream width and scale of V, where "error" lets
        eta ||hb||^2 / ||eps||^2 grow with the width r and diverge).
    step_bound: tau, each level's step is at most tau times the running mean m_l of its size
        ||G_l||_F (module docstring); 0 switches the bound off (the update before this option).
    step_memory: beta, the running mean's factor per step (0.99: about 100 steps).
    seed: seeds the draw of the downstream matrices (None: torch's global generator); the
        trainer passes its --seed.

    Defaults: SPEC-circuit.md's prototype values (eta_W 0.05, r 4, lam 1e-3, kappa 1e-4) except
    eta_V = eta_V̄ = 1 and V, V̄ drawn at 0.3 of the Glorot scale (the prototype: 0.3 and 0.1),
    which the search in docs/circuit.md found closest to BP on Fashion-MNIST.
    """

    name = "circuit"
    paper = "Liao et al. 2024 (our reconstruction, docs/circuit.md)"
    option_help = {
        "lr": "eta_W, the learning rate of the upstream weights W (and of W̄_L)",
        "step_bound": "tau: each level's step is at most tau times the running mean of its size (0: unbounded, "
                      "the SPEC's rule); keeps an outlier batch from throwing the net off",
        "step_memory": "beta: the per-step factor of that running mean (0.99: about 100 steps)",
        "ratio": "downstream width / upstream width r (m_l = round(r n_l)): one number, or a comma-separated list "
                 "with one per hidden level ('4,4,2')",
        "downstream_activation": "g of the downstream neurons: identity (the SPEC's), relu, tanh, sigmoid or leaky_relu",
        "scale_wbar": "initial scale of W̄, as a factor on the Glorot bound sqrt(6 / (fan_in + fan_out)) of its shape",
        "scale_v": "initial scale of V, as a factor on the Glorot bound of its shape",
        "scale_vbar": "initial scale of V̄, as a factor on the Glorot bound of its shape",
        "eta_wbar": "learning rate of W̄_l for l < L (None: lr)",
        "eta_v": "learning rate of V",
        "eta_vbar": "learning rate of V̄",
        "lam": "weight decay of the Kolen-Pollack pairs (W, W̄)",
        "kappa": "decay of V and V̄ per step (below 1)",
        "plastic": "which synapse types learn: 'all' or a comma-separated subset of W,Wbar,V,Vbar",
        "cross_rule": "the V/V̄ increment: 'delta' (normalised delta rule), 'delta_raw' (without rho), 'hebbian', "
                      "'anti_hebbian', or a callable (hb, eps, a) -> X",
        "normalizer": "what rho_l measures: 'error' (<||eps_l||^2>, the SPEC's) or 'downstream' (<||hb_l||^2>, "
                      "normalised LMS: stable for eta_V̄ < 2 at any downstream width)",
        "seed": "seeds the draw of the downstream matrices (None: torch's global generator); train passes its --seed",
    }
    benchmark_cases = {"circuit (r=4)": {}}

    def __init__(
        self,
        lr: float = 0.05,
        loss: str = "mse",
        ratio: float | str = "4",
        downstream_activation: str = "identity",
        scale_wbar: float = 1.0,
        scale_v: float = 0.3,
        scale_vbar: float = 0.3,
        eta_wbar: float | None = None,
        eta_v: float = 1.0,
        eta_vbar: float = 1.0,
        lam: float = 1e-3,
        kappa: float = 1e-4,
        plastic: str = "all",
        cross_rule: str | Callable = "delta",
        normalizer: str = "error",
        step_bound: float = 2.0,
        step_memory: float = 0.99,
        seed: int | None = 0,
    ):
        super().__init__(lr, loss)
        self.ratios = _parse_ratios(ratio)
        self.ratio = ratio
        name = "linear" if downstream_activation == "identity" else downstream_activation
        if downstream_activation not in DOWNSTREAM_ACTIVATIONS:
            raise BioPropError(f"downstream_activation={downstream_activation!r}: choose one of {DOWNSTREAM_ACTIVATIONS}")
        self.downstream_activation = downstream_activation
        self.g = get_activation(name)
        self.scale_wbar = check_positive("scale_wbar", scale_wbar, allow_zero=True)
        self.scale_v = check_positive("scale_v", scale_v, allow_zero=True)
        self.scale_vbar = check_positive("scale_vbar", scale_vbar, allow_zero=True)
        self.eta_wbar = None if eta_wbar is None else check_positive("eta_wbar", eta_wbar, allow_zero=True)
        self.eta_v = check_positive("eta_v", eta_v, allow_zero=True)
        self.eta_vbar = check_positive("eta_vbar", eta_vbar, allow_zero=True)
        self.lam = check_positive("lam", lam, allow_zero=True)
        self.kappa = check_positive("kappa", kappa, allow_zero=True)
        if self.kappa >= 1:
            raise BioPropError(f"kappa={kappa!r}: the decay per step must be < 1 (typically 1e-4)")
        self.plastic = _parse_plastic(plastic)
        # a named rule gives the factor P of X = hbᵀ P (the step fuses X into V's and V̄'s writes);
        # a callable gives X itself
        self.cross_target, self.cross_increment = None, None
        if callable(cross_rule):
            self.cross_increment, self.normalise_cross = cross_rule, False
        elif cross_rule in CROSS_RULES:
            self.cross_target, self.normalise_cross = CROSS_RULES[cross_rule]
        else:
            raise BioPropError(f"cross_rule={cross_rule!r}: choose one of {sorted(CROSS_RULES)} or pass a callable (hb, eps, a) -> X")
        self.cross_rule = cross_rule
        if normalizer not in ("error", "downstream"):
            raise BioPropError(f"normalizer={normalizer!r}: choose 'error' (rho = <||eps||^2>, the SPEC) or 'downstream' (rho = <||hb||^2>)")
        self.normalizer = normalizer
        self.step_bound = check_positive("step_bound", step_bound, allow_zero=True)
        self.step_memory = check_positive("step_memory", step_memory, allow_zero=True)
        if self.step_memory >= 1:
            raise BioPropError(f"step_memory={step_memory!r}: the running mean's factor must be < 1 (typically 0.99)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BioPropError(f"seed={seed!r}: give an integer or None")
        self.seed = seed
        # the downstream pathway, drawn on the first step (or by initialize)
        self.feedback: list[Tensor] = []  # W̄_2 .. W̄_L (index l-2)
        self.to_downstream: list[Tensor] = []  # V_1 .. V_{L-1} (index l-1)
        self.to_teaching: list[Tensor] = []  # V̄_1 .. V̄_{L-1} (index l-1)
        self.sizes: list[int] | None = None
        self.step_sizes: list[Tensor] | None = None  # m_1 .. m_L of the step bound, after the first step
        self._workspace: dict[int, Tensor] = {}  # X_l's buffer per level, reused every step

    # -- the downstream pathway ------------------------------------------------------------------
    @property
    def learning_rate_wbar(self) -> float:
        return self.lr if self.eta_wbar is None else self.eta_wbar

    @property
    def theorem_scale(self) -> float:
        """c = eta_V / eta_V̄, the factor of Theorem 1's limit a_l -> c H_l d_l (NaN if undefined)."""
        return self.eta_v / self.eta_vbar if self.eta_vbar > 0 and self.eta_v > 0 else math.nan

    def downstream_widths(self, sizes: Sequence[int]) -> list[int]:
        hidden = list(sizes[1:-1])
        ratios = self.ratios if len(self.ratios) > 1 else self.ratios * len(hidden)
        if len(ratios) != len(hidden):
            raise BioPropError(
                f"ratio={self.ratio!r}: gives {len(ratios)} ratios for a net with {len(hidden)} hidden levels; "
                "give one number or one per hidden level"
            )
        return [max(1, round(r * n)) for r, n in zip(ratios, hidden)]

    def initialize(self, net: Network) -> None:
        """Draw W̄, V, V̄ for `net` as independent uniform Glorot draws times their scales."""
        sizes = layer_sizes(linear_levels(net))
        shapes = self.pathway_shapes(sizes)
        scales = {"to_downstream": self.scale_v, "to_teaching": self.scale_vbar, "feedback": self.scale_wbar}
        order = ("to_downstream", "to_teaching", "feedback")  # the draw order fixes what a seed gives
        drawn = iter(draw_uniform(
            [shape for key in order for shape in shapes[key]],
            [xavier_bound(shape, "linear", scales[key]) for key in order for shape in shapes[key]],
            self.seed,
        ))
        for key in order:
            setattr(self, key, [next(drawn).to(dtype=net.dtype, device=net.device) for _ in shapes[key]])
        # V̄ and W̄ laid out as their transposes (values unchanged), see _transposed_storage
        self.to_teaching = [_transposed_storage(m) for m in self.to_teaching]
        self.feedback = [_transposed_storage(m) for m in self.feedback]
        self.sizes = sizes
        self.step_sizes = None  # a new pathway starts the step bound's running means afresh

    def prepare(self, net: Network, x: Tensor | None = None) -> None:
        if self.sizes is None:
            self.initialize(net)

    def plastic_tensors(self) -> list[Tensor]:
        """W̄, V, V̄ (written in place) and the step bound's running means (rebound each step)."""
        return [*self.feedback, *self.to_downstream, *self.to_teaching, *(self.step_sizes or [])]

    def _ensure_initialized(self, net: Network, sizes: list[int]) -> None:
        if self.sizes is None:
            self.initialize(net)
        elif self.sizes != sizes:
            raise BioPropError(
                f"net: sizes {sizes} differ from the {self.sizes} this circuit's downstream pathway was drawn for; "
                "use a new rule (or call rule.initialize(net)) for a different network"
            )
        if self.to_downstream and (self.to_downstream[0].dtype != net.dtype or self.to_downstream[0].device != net.device):
            self._to(net.dtype, net.device)

    def _to(self, dtype, device) -> None:
        self.feedback = [_transposed_storage(m.to(dtype=dtype, device=device)) for m in self.feedback]
        self.to_downstream = [m.to(dtype=dtype, device=device) for m in self.to_downstream]
        self.to_teaching = [_transposed_storage(m.to(dtype=dtype, device=device)) for m in self.to_teaching]
        if self.step_sizes is not None:
            self.step_sizes = [m.to(dtype=dtype, device=device) for m in self.step_sizes]

    def preconditioners(self) -> list[Tensor]:
        """H_l = V̄_l V̄_lᵀ for l = 1..L-1 (Theorem 1's matrix learning rate, up to c)."""
        return [vbar @ vbar.T for vbar in self.to_teaching]

    def alignment(self, net: Network) -> dict[str, list[float]]:
        """How far self-assembly has gone, per level (see diagnostics for the definitions)."""
        if self.sizes is None:
            return {}
        weights = [level.weight for level in linear_levels(net)]
        L = len(weights)
        kp = [cosine(self.feedback[l - 2] @ self.to_downstream[l - 1], weights[l - 1].T) for l in range(2, L)]
        if L > 1:
            kp.append(cosine(self.feedback[-1], weights[-1].T))
        return {
            "one_minus_cos_v_vbar": [1.0 - cosine(v, vbar.T) for v, vbar in zip(self.to_downstream, self.to_teaching)],
            "cos_feedback_wT": kp,  # levels 2..L: cos(W̄_l V_l, W_lᵀ), and cos(W̄_L, W_Lᵀ) last
        }

    # -- one step ------------------------------------------------------------------------------------
    def feedback_sweep(self, net: Network, rates: list[Tensor], preactivations: list[Tensor], error: Tensor):
        """The downstream signals of one batch: (eps_1..eps_{L-1}, hb_1..hb_{L-1}, a_1..a_{L-1}).
        `rates`: h_0 .. h_{L-1} of the forward pass, `preactivations`: z_1 .. z_L."""
        return self._sweep(linear_levels(net), rates, preactivations, error)

    def _sweep(self, levels: Sequence[LinearLevel], rates: list[Tensor], preactivations: list[Tensor], error: Tensor):
        L = len(levels)
        eps: list[Tensor] = [None] * (L - 1)  # type: ignore[list-item]
        downstream: list[Tensor] = [None] * (L - 1)  # type: ignore[list-item]
        teaching: list[Tensor] = [None] * (L - 1)  # type: ignore[list-item]
        if L == 1:
            return eps, downstream, teaching

        def times_derivative(index: int, drive: Tensor) -> Tensor:
            """D_l ⊙ drive for level l = index + 1, from h_l in one kernel where the activation has
            one (sigmoid, tanh, relu), else f'(z_l) ⊙ drive; the drive is a fresh product."""
            activation = levels[index].rate.activation
            if activation.backward_from_output is not None and index + 1 < len(rates):
                return activation.backward_from_output(drive, rates[index + 1])
            return drive.mul_(activation.derivative(preactivations[index]))

        eps[L - 2] = times_derivative(L - 2, torch.mm(error, self.feedback[-1].T))
        for l in range(L - 1, 0, -1):
            downstream[l - 1] = self.g(torch.mm(eps[l - 1], self.to_downstream[l - 1].T))
            teaching[l - 1] = torch.mm(downstream[l - 1], self.to_teaching[l - 1].T)
            if l > 1:
                eps[l - 2] = times_derivative(l - 2, torch.mm(downstream[l - 1], self.feedback[l - 2].T))
        return eps, downstream, teaching

    def _step(self, net: Network, x: Tensor, y: Tensor, trace: bool) -> CircuitStepResult:
        levels = linear_levels(net)
        self._ensure_initialized(net, layer_sizes(levels))
        weights = [level.weight for level in levels]
        forward = net.forward_pass(x)
        output = forward.output
        error = self.loss.output_error(output, y)
        rates = forward.rates
        eps, downstream, teaching = self._sweep(levels, rates, forward.preactivations, error)
        L = len(levels)
        batch = x.shape[0]
        # Every write below reads only this step's signals (and, for its own decay, the matrix it
        # writes), so writing one matrix at a time is the SPEC's "all at once". W̄_l takes its
        # product in place (addmm_, its decay as beta), V_l and V̄_l share X_l (_write_cross),
        # W_l takes the reported estimate G_l: no temporary the size of a downstream matrix.
        signals = [*teaching, error]  # what each W_l's update uses in place of dLoss/dz_l
        estimates = [torch.mm((signal / batch).T, rate) for signal, rate in zip(signals, rates)]  # G_l, 1/B on the small factor
        factors = None
        if self.step_bound > 0 and "W" in self.plastic:
            bound = self.bound_steps(estimates)
            if bound is not None:
                factors = bound.unbind()
                for estimate, s in zip(estimates, factors):
                    estimate.mul_(s)

        if "W" in self.plastic:
            decay = 1 - self.lr * self.lam
            for index, (level, estimate, signal) in enumerate(zip(levels, estimates, signals)):
                level.weight.data.mul_(decay).add_(estimate, alpha=-self.lr)
                if level.bias is not None:
                    step = signal.mean(dim=0)
                    level.bias.data.add_(step if factors is None else step.mul_(factors[index]), alpha=-self.lr)
        if L > 1 and "Wbar" in self.plastic:
            decay = 1 - self.lr * self.lam
            for l in range(2, L):  # W̄_l -= eta_W̄ s_l <h_{l-1} hb_lᵀ> + eta_W lam W̄_l, one product
                presynaptic = rates[l - 1] if factors is None else rates[l - 1] * factors[l - 1]
                self.feedback[l - 2].addmm_(presynaptic.T, downstream[l - 1], beta=decay,
                                            alpha=-self.learning_rate_wbar / batch)
            # W̄_L's Hebbian term <h_{L-1} eᵀ> is G_Lᵀ (bounded alike): the same product, not redone
            self.feedback[-1].mul_(decay).add_(estimates[-1].T, alpha=-self.lr)
        if "V" in self.plastic or "Vbar" in self.plastic:
            for l in range(1, L):
                self._write_cross(l, eps[l - 1], downstream[l - 1], teaching[l - 1], batch)

        return CircuitStepResult(self.loss(output, y).detach(), output, [] if trace else None, deltas=eps,
                                 gradient_estimates=_per_parameter(net, weights, estimates), teaching=teaching,
                                 downstream=downstream)

    def _write_cross(self, l: int, eps: Tensor, hb: Tensor, teaching: Tensor, batch: int) -> None:
        """V_l += eta_V X_l - kappa V_l and V̄_l += eta_V̄ X_lᵀ - kappa V̄_l, X_l = <hb_l Pᵀ> / rho_l.

        X_l is one product, into a workspace kept between steps, with its scale eta_V / (B rho_l)
        (rho a 0-d tensor: no host sync) applied to the small factor P (B x n_l) first. V̄_l is
        stored as the transpose of an m_l x n_l block (`_transposed_storage`), so X_lᵀ is in V̄_l's
        own layout, and each matrix takes its decay and increment in one pass, out = eta X +
        (1 - kappa) M (one more pass for V̄ when eta_V̄ != eta_V). With only one of V, V̄ learning
        the product goes straight into it (addmm_, the decay as beta)."""
        V, Vbar = self.to_downstream[l - 1], self.to_teaching[l - 1]
        keep = 1 - self.kappa
        eta_v = self.eta_v if "V" in self.plastic else None
        eta_vbar = self.eta_vbar if "Vbar" in self.plastic else None
        if self.cross_target is None:  # a user's callable gives X summed over the batch
            increment = self.cross_increment(hb, eps, teaching)
            if eta_v is not None:
                V.mul_(keep).add_(increment, alpha=eta_v / batch)
            if eta_vbar is not None:
                Vbar.mul_(keep).add_(increment.T, alpha=eta_vbar / batch)
            return
        target = self.cross_target(eps, teaching)
        if self.normalise_cross:
            # rho normalises the delta rule's step: without it the cross pair explodes
            normalising = (eps if self.normalizer == "error" else hb).reshape(-1)
            # 1 / (B rho_l) is the reciprocal of the batch's sum of squares; 0 where that is 0 (or
            # NaN): no cross step on a batch without error
            scale = torch.dot(normalising, normalising).reciprocal_().nan_to_num_(nan=0.0, posinf=0.0)
        else:
            scale = 1.0 / batch
        if eta_v and eta_vbar:
            increment = torch.mm(hb.T, target * (scale * eta_v), out=self._workspace_for(l, V))  # eta_V X_l
            torch.add(increment, V, alpha=keep, out=V)
            if eta_vbar == eta_v:
                torch.add(increment.T, Vbar, alpha=keep, out=Vbar)
            else:
                torch.add(increment.T, Vbar, alpha=keep * eta_v / eta_vbar, out=Vbar).mul_(eta_vbar / eta_v)
            return
        for matrix, eta in ((V, eta_v), (Vbar.T, eta_vbar)):  # at most one of them learns from X
            if eta:
                matrix.addmm_(hb.T, target * scale, beta=keep, alpha=eta)
            elif eta is not None:
                matrix.mul_(keep)  # eta 0: the decay alone

    def _workspace_for(self, l: int, like: Tensor) -> Tensor:
        """The m_l x n_l buffer X_l is written into (made once, remade if V_l's shape, dtype or device change)."""
        workspace = self.__dict__.setdefault("_workspace", {})  # also on a rule unpickled from before it existed
        buffer = workspace.get(l)
        if buffer is None or buffer.shape != like.shape or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = workspace[l] = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        return buffer

    def bound_steps(self, estimates: list[Tensor]) -> Tensor | None:
        """The step bound's factors s_l = min(1, tau m_l / ||G_l||), one (L,) tensor (no host sync;
        None on the first step, where s_l = 1), and the running means m_l moved on to include this
        step's raw sizes."""
        sizes = torch.stack([torch.linalg.vector_norm(estimate) for estimate in estimates])
        if self.step_sizes is None or len(self.step_sizes) != len(estimates):
            self.step_sizes = list(sizes.unbind())
            return None
        means = torch.stack(self.step_sizes).to(sizes.dtype)
        limits = self.step_bound * means
        factors = torch.where(sizes > limits, limits / sizes, torch.ones_like(sizes))
        self.step_sizes = list((self.step_memory * means).add_(sizes, alpha=1 - self.step_memory).unbind())
        return factors

    # -- bookkeeping ------------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "ratio": self.ratio,
            "downstream_activation": self.downstream_activation,
            "scale_wbar": self.scale_wbar,
            "scale_v": self.scale_v,
            "scale_vbar": self.scale_vbar,
            "eta_wbar": self.eta_wbar,
            "eta_v": self.eta_v,
            "eta_vbar": self.eta_vbar,
            "lam": self.lam,
            "kappa": self.kappa,
            "plastic": ",".join(t for t in SYNAPSE_TYPES if t in self.plastic),
            "cross_rule": self.cross_rule if isinstance(self.cross_rule, str) else getattr(self.cross_rule, "__name__", "callable"),
            "normalizer": self.normalizer,
            "step_bound": self.step_bound,
            "step_memory": self.step_memory,
            "seed": self.seed,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "sizes": self.sizes,
            "feedback": [m.clone() for m in self.feedback],
            "to_downstream": [m.clone() for m in self.to_downstream],
            "to_teaching": [m.clone() for m in self.to_teaching],
            "step_sizes": None if self.step_sizes is None else [m.clone() for m in self.step_sizes],
        }

    def pathway_shapes(self, sizes: Sequence[int]) -> dict[str, list[tuple[int, int]]]:
        """The shapes of W̄ (feedback), V (to_downstream) and V̄ (to_teaching) for a net of these sizes."""
        widths = self.downstream_widths(sizes)
        hidden = list(sizes[1:-1])
        feedback = [(sizes[l - 1], widths[l - 1]) for l in range(2, len(sizes) - 1)]
        if len(sizes) > 2:
            feedback.append((sizes[-2], sizes[-1]))
        return {
            "feedback": feedback,
            "to_downstream": [(m, n) for m, n in zip(widths, hidden)],
            "to_teaching": [(n, m) for m, n in zip(widths, hidden)],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (a circuit with the same ratio)."""
        keys = ("feedback", "to_downstream", "to_teaching")
        if not isinstance(state, dict) or "sizes" not in state or any(key not in state for key in keys):
            raise BioPropError(f"state: a circuit state needs 'sizes', {', '.join(map(repr, keys))}; give what rule.state_dict() returned")
        saved_steps = state.get("step_sizes")  # absent in states saved before the step bound
        step_sizes = None if saved_steps is None else [torch.as_tensor(m).detach().clone() for m in saved_steps]
        if state["sizes"] is None:
            self.sizes, self.feedback, self.to_downstream, self.to_teaching = None, [], [], []
            self.step_sizes = step_sizes
            return
        sizes = [int(n) for n in state["sizes"]]
        matrices = {key: [torch.as_tensor(m).detach().clone() for m in state[key]] for key in keys}
        expected = self.pathway_shapes(sizes)
        for key in keys:
            if [tuple(m.shape) for m in matrices[key]] != expected[key]:
                raise BioPropError(
                    f"state: the {key} shapes {[tuple(m.shape) for m in matrices[key]]} do not fit sizes {sizes} with "
                    f"ratio={self.ratio!r} (expected {expected[key]}); load the state into a circuit made with the saved one's ratio"
                )
        self.sizes = sizes
        self.feedback, self.to_downstream, self.to_teaching = (matrices[key] for key in keys)
        self.to_teaching = [_transposed_storage(m) for m in self.to_teaching]
        self.feedback = [_transposed_storage(m) for m in self.feedback]
        self.step_sizes = step_sizes


def _transposed_storage(matrix: Tensor) -> Tensor:
    """The same matrix laid out as the transpose of a contiguous block. For V̄_l (n_l x m_l over
    an m_l x n_l block, V_l's layout) V̄_l += eta X_lᵀ then runs in memory order (`_write_cross`);
    for V̄_l and W̄_l the feedback products hb V̄ᵀ, hb W̄ᵀ read a contiguous right factor, which
    CPU GEMMs run faster at these shapes (up to 1.3x measured); W̄_L += G_Lᵀ runs in memory order.
    Matrices assigned in another layout are used as they are (the same numbers, more slowly)."""
    return matrix if matrix.T.is_contiguous() else matrix.T.contiguous().T


def _parse_ratios(ratio: float | str | Sequence[float]) -> list[float]:
    if isinstance(ratio, str):
        parts = [p for p in ratio.replace(" ", "").split(",") if p]
    elif isinstance(ratio, (int, float)) and not isinstance(ratio, bool):
        parts = [ratio]
    elif isinstance(ratio, Sequence):
        parts = list(ratio)
    else:
        parts = []
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise BioPropError(f"ratio={ratio!r}: give a positive number (downstream width / upstream width) or one per hidden level, e.g. '4,4,2'")
    return values


def _parse_plastic(plastic: str | Sequence[str]) -> frozenset[str]:
    if isinstance(plastic, str):
        if plastic.strip().lower() == "all":
            return frozenset(SYNAPSE_TYPES)
        names = [p for p in plastic.replace(" ", "").split(",") if p]
    else:
        try:
            names = list(plastic)
        except TypeError:
            raise BioPropError(f"plastic={plastic!r}: give a comma-separated subset of {','.join(SYNAPSE_TYPES)} or 'all'") from None
    unknown = sorted(set(names) - set(SYNAPSE_TYPES), key=str)
    if unknown:
        raise BioPropError(f"plastic={plastic!r}: unknown synapse type(s) {unknown}; give a comma-separated subset of {','.join(SYNAPSE_TYPES)} or 'all'")
    return frozenset(names)
