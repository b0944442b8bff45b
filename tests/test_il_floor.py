"""The PCN at its cost floor gives the numbers of the plain loop, and steps do not sync.

`simulate` computes mu_1 = A_1(r_0) once per presentation (again only after a write to a
parameter level 1 reads) and moves the value nodes in place. The oracle is the loop of
`advance` as it ran before: every prediction recomputed each step, new buffers each step. A
negative control holds mu_1 fixed through Z-IL's immediate shared writes on an RNN, which the
cache must not do, and differs.
"""
import math

import pytest
import torch

import bioprop
from bioprop.batches import prechecked
from bioprop.errors import BioPropError
from bioprop.rules.predictive_coding import (
    FreeOutput, Plasticity, ValueClamp, advance, clamp_output, feedforward_state, make_teacher, write_schedule,
)
from bioprop.training import Learner, train_epochs


def reference_present(net, x, y, loss, *, gamma, n_steps, lr, gate, shared_updates, stale_input_prediction=False):
    """`present` as a plain loop of `advance`: mu_1 recomputed at every step (or, with
    stale_input_prediction, the negative control: held at its t = 0 value whatever is written)."""
    state = feedforward_state(net, x)
    teacher = make_teacher(loss, y, state.value_nodes[-1])
    plasticity = Plasticity(net, state.levels, lr / x.shape[0],
                            write_schedule(net, state.levels, shared_updates, True))
    if isinstance(teacher, ValueClamp):
        state = clamp_output(state, teacher)
    fixed = state.levels[0].forward(state.input_rates, state.sides[0]) if stale_input_prediction else None
    for t in range(n_steps):
        state, _, _ = advance(state, teacher, plasticity, t=t, gamma=gamma, gate=gate,
                              output_free=isinstance(teacher, FreeOutput), infer=t < n_steps - 1,
                              input_prediction=fixed)
    plasticity.finish()


def il_gate(t_c):
    return lambda t, errors, predictions: [1.0 if t == t_c else None] * len(errors)


def zil_gate(t, errors, predictions):
    n = len(errors)
    return [1.0 if t == n - level else None for level in range(1, n + 1)]


def rnn_batch():
    net = bioprop.ElmanRNN(3, 4, 3, activation="tanh", dtype=torch.float64, seed=0)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 5, 3, generator=generator, dtype=torch.float64)
    return net, x, torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_il_equals_the_plain_loop_bit_for_bit(loss):
    net = bioprop.MLP([6, 5, 4, 3], activation="sigmoid", dtype=torch.float64, seed=0)
    oracle = net.clone()
    x = torch.rand(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    rule = bioprop.make_rule("il", lr=0.1, loss=loss, n_steps=7, gamma=0.2)
    for _ in range(3):
        rule.step(net, x, y)
        reference_present(oracle, x, torch.nn.functional.one_hot(y, 3).double(), rule.loss, gamma=0.2, n_steps=8,
                          lr=0.1, gate=il_gate(7), shared_updates="pooled")
    assert all(torch.equal(a, b) for a, b in zip(net.parameters_list(), oracle.parameters_list()))


def test_in_place_value_nodes_equal_the_traced_run_bit_for_bit():
    # trace=True keeps every state (new buffers each step); trace=False moves them in place
    net = bioprop.MLP([6, 5, 4, 3], activation="tanh", dtype=torch.float64, seed=0)
    traced = net.clone()
    x, y = torch.rand(8, 6, dtype=torch.float64), torch.rand(8, 3, dtype=torch.float64)
    for rule_name in ["il", "zil"]:
        options = {"dynamics": "full"} if rule_name == "zil" else {"n_steps": 5}
        bioprop.make_rule(rule_name, lr=0.1, **options).step(net, x, y)
        bioprop.make_rule(rule_name, lr=0.1, **options).step(traced, x, y, trace=True)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters_list(), traced.parameters_list()))


def test_input_prediction_is_recomputed_after_immediate_shared_writes():
    net, x, y = rnn_batch()
    oracle, stale = net.clone(), net.clone()
    rule = bioprop.make_rule("zil", lr=0.5, loss="ce", dynamics="full", shared_updates="immediate")
    rule.step(net, x, y)
    n_levels = len(oracle.levels_for(x))
    targets = torch.nn.functional.one_hot(y, 3).double()
    common = dict(gamma=1.0, n_steps=n_levels, lr=0.5, gate=zil_gate, shared_updates="immediate")
    reference_present(oracle, x, targets, rule.loss, **common)
    reference_present(stale, x, targets, rule.loss, stale_input_prediction=True, **common)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters_list(), oracle.parameters_list()))
    # negative control: mu_1 held through the writes to W_ih, W_hh, b gives other weights
    gap = max(float((a - b).detach().abs().max()) for a, b in zip(stale.parameters_list(), oracle.parameters_list()))
    assert gap > 1e-6


@pytest.mark.parametrize("name", ["bp", "il", "zil", "fa", "kp", "sign", "dfa", "credit", "circuit"])
def test_prechecked_steps_report_the_loss_as_a_tensor(name):
    net = bioprop.MLP([6, 5, 3], dtype=torch.float64, seed=0)
    twin = net.clone()
    x, y = torch.rand(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    public = bioprop.make_rule(name, lr=0.1).step(net, x, y)
    with prechecked():
        inside = bioprop.make_rule(name, lr=0.1).step(twin, x, y)
    for result in (public, inside):  # a 0-d tensor on both paths (no host sync per step)
        assert isinstance(result.loss, torch.Tensor) and result.loss.ndim == 0 and not result.loss.requires_grad
    assert float(inside.loss) == float(public.loss)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters_list(), twin.parameters_list()))


def test_bad_data_is_refused_once_by_the_trainer_and_per_batch_by_step():
    net = bioprop.MLP([4, 3, 2], dtype=torch.float64, seed=0)
    x = torch.rand(20, 4, dtype=torch.float64)
    y = torch.zeros(20, dtype=torch.long)
    x[13, 2] = math.nan
    with pytest.raises(BioPropError, match="x: contains NaN"):
        bioprop.make_rule("bp").step(net, x[10:15], y[10:15])
    learner = Learner(net, bioprop.make_rule("bp"))
    with pytest.raises(BioPropError, match="x: contains NaN"):
        next(train_epochs([learner], x, y, epochs=1, batch_size=5, shuffle=torch.Generator().manual_seed(0)))
    with pytest.raises(BioPropError, match=r"y: integer labels must lie in \[0, 2\)"):
        next(train_epochs([learner], x.nan_to_num(), y + 2, epochs=1, batch_size=5,
                          shuffle=torch.Generator().manual_seed(0)))


def test_divergence_read_every_few_steps_still_names_the_first_bad_step():
    class BlowsUpAt(bioprop.rules.bp.BackpropRule):
        def __init__(self, at, **options):
            super().__init__(**options)
            self.at, self.calls = at, 0

        def step(self, net, x, y, trace=False):
            self.calls += 1
            if self.calls == self.at:
                net.parameters_list()[0].data.fill_(math.nan)
            return super().step(net, x, y, trace)

    x = torch.rand(40, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = (x.sum(dim=1) > 2).long()
    rule = BlowsUpAt(at=6, lr=0.1, loss="ce")  # 8 steps per epoch; read every 3: after steps 3 and 6
    results = list(train_epochs([Learner(bioprop.MLP([4, 3, 2], dtype=torch.float64, seed=0), rule, name="toy")],
                                x, y, epochs=2, batch_size=5, shuffle=torch.Generator().manual_seed(0),
                                divergence_check_every=3))
    assert len(results) == 1 and results[0].steps == 6 and "at step 6" in results[0].divergence
    rule = BlowsUpAt(at=5, lr=0.1, loss="ce")  # read after step 6, names step 5
    results = list(train_epochs([Learner(bioprop.MLP([4, 3, 2], dtype=torch.float64, seed=0), rule, name="toy")],
                                x, y, epochs=2, batch_size=5, shuffle=torch.Generator().manual_seed(0),
                                divergence_check_every=3))
    assert results[0].steps == 6 and "became nan at step 5" in results[0].divergence
