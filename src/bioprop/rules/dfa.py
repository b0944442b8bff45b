"""Direct feedback alignment (dfa): Nokland, NeurIPS 2016.

Every hidden layer receives the output error directly through its own fixed random matrix
(batch mean <.>; e = dLoss/dz_L per sample):

    delta_L = e,      delta_l = f'(z_l) * (B_l e),      l = 1..L-1,
    W_l <- W_l - lr * <delta_l h_{l-1}^T>,      b_l <- b_l - lr * <delta_l>,

B_l of shape (n_l, n_L), drawn once with the xavier law of a matrix of that shape
(a = gain(f) sqrt(6/(n_l+n_L)) * feedback_scale; see `feedback.py`). Layers do not wait for the
ones above: all hidden deltas are formed from e at once.

On any chain of levels (SPEC.md 1b): per hidden level l a matrix B_l of shape (N_l, n_L), N_l
the number of level l's rates per sample (r_l = g_l(z_l): after pooling and flattening), projects
e to r_l's shape and the level's rate VJP brings it to z_l:

    delta_l = g_l'(z_l)^T [ reshape(B_l e, r_l's shape) ],

(for an MLP g_l' is f'(z_l) elementwise: the equation above); every parameter's update is its
parameter VJP with these deltas. Levels that share a forward weight share one projection (an
ElmanRNN's time steps: one B for W_hh, of shape (hidden, n_L)). On a conv net N_l depends on the
input's size, so the first batch fixes the shapes (or `initialize(net, x=example)`).

Notation map: the paper's delta a_k = (B_k e) (.) f'(a_k) is our delta_l with k = l and its
a_k our z_l. With one hidden layer and B_1 = W_2^T the rule is BP (tested against autograd).

Alignment: dfa has no per-layer transpose to compare with. `feedback_alignment(net)` returns,
for l = 2..L (the positions of fa's list: the entry for l is the feedback into hidden layer
l-1), cos(B_{l-1}, (W_L W_{L-1} ... W_l)^T): the path back from the output that B_{l-1}
replaces, as BP would use it in a linear network, i.e. with the activations' derivatives
between layer l-1 and the output ignored. For l = L it is cos(B_{L-1}, W_L^T), as in fa. It is
defined on chains of Linear levels (MLPs, wrapped Linear Sequentials) only.

Options: feedback_scale (1.0), seed (0; the trainer passes its --seed).
"""
from __future__ import annotations

from ..errors import BioPropError
from ..levels import ElmanLevel, LinearLevel
from ..measures import cosine
from .feedback import FeedbackRule, activation_name, levels_of, xavier_bound


class DirectFeedbackAlignment(FeedbackRule):
    name = "dfa"
    paper = "Nøkland 2016"
    benchmark_cases = {"dfa": {}}

    drawn_in_feedback_layout = False

    def __init__(self, lr=0.01, loss="mse", feedback_scale=1.0, seed=0):
        super().__init__(lr, loss, feedback_scale, seed)

    def drawn_shapes(self, sizes):
        """B_l of shape (n_l, n_L), one per hidden layer l = 1..L-1 of an MLP with these sizes."""
        return [(n_hidden, sizes[-1]) for n_hidden in sizes[1:-1]]

    def needs_forward_to_draw(self):
        return True

    def keyed_levels(self, net, levels, forward, slot=None):
        """The hidden levels, keyed by their forward weight."""
        slot = {id(p): i for i, p in enumerate(net.parameters_list())} if slot is None else slot
        keys: dict[int, list[int]] = {}
        for index, level in enumerate(levels[:-1]):
            keys.setdefault(slot[id(level.forward_weight)], []).append(index)
        return list(keys.items())

    def drawn_shape(self, net, levels, index, forward):
        """(N_l, n_L): level l's rates per sample by the output's width."""
        level = levels[index]
        if forward is not None:
            return (forward.rates[index + 1][0].numel(), net.output_size)
        if isinstance(level, (LinearLevel, ElmanLevel)) and level.rate.is_elementwise:
            return (level.feedback_shape()[1], net.output_size)
        raise BioPropError(
            f"x: rule 'dfa' on {net.describe()}: the projection to level {index + 1} ({level.name}) has the shape of its "
            "rates, which depends on the input; pass an example batch (initialize(net, x=...)) or let the first step draw"
        )

    def _bound(self, net, levels, index, forward):
        """The xavier bound of a (N_l, n_L) matrix, with the gain of level l's own activation."""
        return xavier_bound(self.drawn_shape(net, levels, index, forward), activation_name(levels[index].rate),
                            self.feedback_scale)

    def sweep(self, net, forward, output_error, feedback, keyed):
        levels = forward.levels
        deltas = [None] * len(levels)
        deltas[-1] = output_error
        for (_, uses), projection in zip(keyed, feedback):
            projected = output_error @ projection.T  # B_l e, one row per sample
            for index in uses:
                rates = forward.rates[index + 1]
                deltas[index] = levels[index].rate.vjp(projected.reshape(rates.shape), forward.contexts[index])
        changes = [level.parameter_vjp(delta, rates, side)
                   for level, delta, rates, side in zip(levels, deltas, forward.rates, forward.sides)]
        return deltas, changes

    def _linear_weights(self, net, x):
        levels = levels_of(net, x)
        if not all(isinstance(level, LinearLevel) for level in levels):
            raise BioPropError(
                f"net: dfa's feedback_alignment compares B_l with the product of the Linear weights above it; "
                f"{net.describe()} has other levels ({', '.join(sorted({l.name for l in levels}))})"
            )
        return levels, [level.weight.detach() for level in levels]

    def feedback_alignment(self, net, x=None):
        """cos(B_{l-1}, (W_L ... W_l)^T) for l = 2..L (activation derivatives ignored)."""
        _, weights = self._linear_weights(net, x)
        feedback = self.feedback(net, x)
        alignment = []
        above = weights[-1]  # W_L ... W_{l+1}, shape (n_L, n_l), starting at l = L-1
        for layer in range(len(weights) - 1, 0, -1):
            alignment.insert(0, cosine(feedback[layer - 1], above.T))
            above = above @ weights[layer - 1]
        return alignment

    def alignment_by_parameter(self, net, x=None):
        """The entry for l = 2..L at W_l's slot; {} where the figure is not defined (non-Linear levels)."""
        levels = levels_of(net, x)
        if not all(isinstance(level, LinearLevel) for level in levels):
            return {}
        slot = {id(p): i for i, p in enumerate(net.parameters_list())}
        return {slot[id(level.weight)]: value for level, value in zip(levels[1:], self.feedback_alignment(net, x))}
