"""Feedback alignment (fa): Lillicrap, Cownden, Tweed & Akerman, Nature Communications 2016.

The output error travels down through fixed random matrices instead of the transposed
forward weights (batch mean <.>; e = dLoss/dz_L per sample; f' at the pre-activations):

    delta_L = e,      delta_{l-1} = f'(z_{l-1}) * (B_l delta_l),      l = L..2,
    W_l <- W_l - lr * <delta_l h_{l-1}^T>,      b_l <- b_l - lr * <delta_l>,

B_l of W_l^T's shape (n_{l-1}, n_l), drawn once (U(-a, a), a = gain(f) sqrt(6/(n_{l-1}+n_l))
* feedback_scale, the law of W_l^T at initialisation; see `feedback.py`) and never changed. The
forward weights come to align with B (W_l^T ~ B_l in direction), which `feedback_alignment(net)`
measures as cos(B_l, W_l^T) per layer.

On any chain of levels (SPEC.md 1b; `feedback.py`): delta_{l-1} = g'_{l-1}^T [A_l^T delta_l] with
B_l in place of the forward weight in the input VJP, B_l in the level's feedback layout (W^T's
shape for a Linear or Elman level, the kernel's own shape for a conv level, where the transposed
convolution uses B_l as its kernel), and every parameter's update the parameter VJP with these
deltas. An ElmanRNN's time steps share one B for W_hh.

Notation map: the paper's e = y* - y is our -e (its updates carry a + sign); its B is our B_l;
it treats one hidden layer, we apply the same sweep to every layer. With B_l = W_l^T (B = W for a
conv kernel) the rule is BP (tested against autograd on MLPs, conv nets and the RNN).

Options: feedback_scale (1.0, multiplies the draw), seed (0, seeds the draw; the trainer passes
its --seed).
"""
from __future__ import annotations

from .feedback import FeedbackRule


class FeedbackAlignment(FeedbackRule):
    name = "fa"
    paper = "Lillicrap et al. 2016"
    benchmark_cases = {"fa": {}}

    def __init__(self, lr=0.01, loss="mse", feedback_scale=1.0, seed=0):
        super().__init__(lr, loss, feedback_scale, seed)
