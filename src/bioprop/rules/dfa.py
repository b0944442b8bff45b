"""Direct feedback alignment (dfa): Nokland, NeurIPS 2016.

Every hidden layer receives the output error directly through its own fixed random matrix
(batch mean <.>; e = dLoss/dz_L per sample):

    delta_L = e,      delta_l = f'(z_l) * (B_l e),      l = 1..L-1,
    W_l <- W_l - lr * <delta_l h_{l-1}^T>,      b_l <- b_l - lr * <delta_l>,

B_l of shape (n_l, n_L), drawn once with the xavier law of a matrix of that shape
(a = gain(f) sqrt(6/(n_l+n_L)) * feedback_scale; see `feedback.py`). Layers do not wait for the
ones above: all hidden deltas are formed from e at once.

Notation map: the paper's delta a_k = (B_k e) (.) f'(a_k) is our delta_l with k = l and its
a_k our z_l. With one hidden layer and B_1 = W_2^T the rule is BP (tested against autograd).

Alignment: dfa has no per-layer transpose to compare with. `feedback_alignment(net)` returns,
for l = 2..L (the positions of fa's list: the entry for l is the feedback into hidden layer
l-1), cos(B_{l-1}, (W_L W_{L-1} ... W_l)^T): the path back from the output that B_{l-1}
replaces, as BP would use it in a linear network, i.e. with the activations' derivatives
between layer l-1 and the output ignored. For l = L it is cos(B_{L-1}, W_L^T), as in fa.

Options: feedback_scale (1.0), seed (0; the trainer passes its --seed).
"""
from __future__ import annotations

from ..measures import cosine
from .feedback import FeedbackRule, direct_sweep


class DirectFeedbackAlignment(FeedbackRule):
    name = "dfa"
    paper = "Nøkland 2016"
    benchmark_cases = {"dfa": {}}

    def __init__(self, lr=0.01, loss="mse", feedback_scale=1.0, seed=0):
        super().__init__(lr, loss, feedback_scale, seed)

    def drawn_shapes(self, sizes):
        """B_l of shape (n_l, n_L), one per hidden layer l = 1..L-1."""
        return [(n_hidden, sizes[-1]) for n_hidden in sizes[1:-1]]

    def sweep(self, net, forward, output_error, feedback):
        return direct_sweep(net, forward, output_error, feedback)

    def feedback_alignment(self, net):
        """cos(B_{l-1}, (W_L ... W_l)^T) for l = 2..L (activation derivatives ignored)."""
        feedback = self.feedback(net)
        weights = [weight.detach() for weight in net.weights]
        alignment = []
        above = weights[-1]  # W_L ... W_{l+1}, shape (n_L, n_l), starting at l = L-1
        for layer in range(net.n_layers - 1, 0, -1):
            alignment.insert(0, cosine(feedback[layer - 1], above.T))
            above = above @ weights[layer - 1]
        return alignment
