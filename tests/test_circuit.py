"""The four-synapse circuit (SPEC-circuit.md) and its diagnostics.

Oracles: the SPEC's equations evaluated independently, one sample at a time (closed form);
autograd's gradient for Theorem 1's limit, on a circuit assembled by hand.
"""
import copy
import math

import pytest
import torch

import bioprop
from bioprop.diagnostics import bp_gradients, measure
from bioprop.errors import BioPropError

from conftest import relative_difference

SIZES = [6, 5, 4, 5, 3]


def reference_updates(net, rule, x, y):
    """SPEC-circuit.md's step, sample by sample with explicit matrix-vector products."""
    L = net.n_layers
    W = [w.detach().clone() for w in net.weights]
    b = [v.detach().clone() for v in net.biases] if net.has_bias else [torch.zeros(w.shape[0], dtype=w.dtype) for w in W]
    f, df = net.activation.f, net.activation.derivative
    g = rule.g.f
    Wbar = [m.clone() for m in rule.feedback]  # W̄_2..W̄_{L-1}, then W̄_L
    V = [m.clone() for m in rule.to_downstream]
    Vbar = [m.clone() for m in rule.to_teaching]
    batch = x.shape[0]
    dW = [torch.zeros_like(w) for w in W]
    db = [torch.zeros_like(v) for v in b]
    dWbar = [torch.zeros_like(m) for m in Wbar]
    X = [torch.zeros_like(m) for m in V]
    rho = [0.0] * (L - 1)
    for n in range(batch):
        h = [x[n]]
        z = []
        for l in range(L):
            z.append(W[l] @ h[-1] + b[l])
            h.append(f(z[-1]))
        p = torch.softmax(z[-1], 0) if rule.loss.name == "ce" else None
        e = p - y[n] if p is not None else z[-1] - y[n]
        eps = [None] * (L - 1)
        hb = [None] * (L - 1)
        a = [None] * (L - 1)
        eps[L - 2] = df(z[L - 2]) * (Wbar[-1] @ e)
        for l in range(L - 1, 0, -1):
            hb[l - 1] = g(V[l - 1] @ eps[l - 1])
            a[l - 1] = Vbar[l - 1] @ hb[l - 1]
            if l > 1:
                eps[l - 2] = df(z[l - 2]) * (Wbar[l - 2] @ hb[l - 1])
        signals = a + [e]
        for l in range(L):
            dW[l] += torch.outer(signals[l], h[l]) / batch
            db[l] += signals[l] / batch
        for l in range(2, L):
            dWbar[l - 2] += torch.outer(h[l - 1], hb[l - 1]) / batch
        dWbar[-1] += torch.outer(h[L - 1], e) / batch
        for l in range(1, L):
            X[l - 1] += torch.outer(hb[l - 1], eps[l - 1] - a[l - 1]) / batch
            power = eps[l - 1] if rule.normalizer == "error" else hb[l - 1]
            rho[l - 1] += float(power @ power) / batch
    # the step bound (module docstring): s_l = min(1, tau m_l / ||G_l||) from the running means
    # before this step, on W_l, b_l and W_l's Kolen-Pollack partner (W̄_l, or W̄_L at the top)
    if rule.step_bound > 0 and rule.step_sizes is not None:
        factors = [min(1.0, rule.step_bound * float(m) / float(d.norm())) for m, d in zip(rule.step_sizes, dW)]
        dW = [s * d for s, d in zip(factors, dW)]
        db = [s * d for s, d in zip(factors, db)]
        dWbar = [s * d for s, d in zip(factors[1:], dWbar)]
    eta_w, lam = rule.lr, rule.lam
    new_W = [w - eta_w * (d + lam * w) for w, d in zip(W, dW)]
    new_b = [v - eta_w * d for v, d in zip(b, db)]
    new_Wbar = [m - rule.learning_rate_wbar * d - eta_w * lam * m for m, d in zip(Wbar[:-1], dWbar[:-1])]
    new_Wbar.append(Wbar[-1] - eta_w * (dWbar[-1] + lam * Wbar[-1]))
    new_V = [m + rule.eta_v * x_l / r - rule.kappa * m for m, x_l, r in zip(V, X, rho)]
    new_Vbar = [m + rule.eta_vbar * x_l.T / r - rule.kappa * m for m, x_l, r in zip(Vbar, X, rho)]
    return new_W, new_b, new_Wbar, new_V, new_Vbar


def batch(sizes, loss, n=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, sizes[0], generator=generator, dtype=torch.float64)
    if loss == "ce":
        y = torch.nn.functional.one_hot(torch.randint(0, sizes[-1], (n,), generator=generator), sizes[-1]).double()
    else:
        y = torch.randn(n, sizes[-1], generator=generator, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("downstream", ["identity", "relu", "tanh"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("normalizer", ["error", "downstream"])
def test_step_equals_closed_form(activation, downstream, loss, bias, normalizer):
    net = bioprop.MLP(SIZES, activation=activation, bias=bias, dtype=torch.float64, seed=1)
    rule = bioprop.make_rule("circuit", lr=0.05, loss=loss, ratio="2,1.5,3", downstream_activation=downstream,
                             scale_v=0.5, scale_vbar=0.5, eta_wbar=0.02, normalizer=normalizer, seed=3)
    x, y = batch(SIZES, loss)
    rule.initialize(net)
    # one step first, so the second compares a circuit whose matrices have all moved
    rule.step(net, x, y)
    expected = reference_updates(net, rule, x, y)
    rule.step(net, x, y)
    got = (net.weights, net.biases or [], rule.feedback, rule.to_downstream, rule.to_teaching)
    for name, want_list, got_list in zip(("W", "b", "Wbar", "V", "Vbar"), expected, got):
        if name == "b" and not bias:
            continue
        for want, have in zip(want_list, got_list):
            assert relative_difference(have, want) <= 1e-12, name


def test_downstream_shapes_follow_the_ratio():
    net = bioprop.MLP([7, 10, 20, 4], activation="relu", seed=0)
    rule = bioprop.make_rule("circuit", ratio="1.5,3", seed=0)
    rule.initialize(net)
    assert [tuple(v.shape) for v in rule.to_downstream] == [(15, 10), (60, 20)]
    assert [tuple(v.shape) for v in rule.to_teaching] == [(10, 15), (20, 60)]
    assert [tuple(m.shape) for m in rule.feedback] == [(10, 60), (20, 4)]
    uniform = bioprop.make_rule("circuit", ratio=7.5, seed=0)
    uniform.initialize(net)
    assert [v.shape[0] for v in uniform.to_downstream] == [75, 150]


@pytest.mark.parametrize("plastic", ["W", "W,Vbar", "W,Wbar,V", "all"])
def test_only_plastic_types_change(plastic):
    net = bioprop.MLP(SIZES, activation="relu", dtype=torch.float64, seed=0)
    rule = bioprop.make_rule("circuit", plastic=plastic, seed=0)
    rule.initialize(net)
    before = copy.deepcopy(rule)
    rule.step(net, *batch(SIZES, "mse"))
    kinds = {"Wbar": "feedback", "V": "to_downstream", "Vbar": "to_teaching"}
    expected = rule.plastic
    for kind, attribute in kinds.items():
        changed = any(not torch.equal(a, b) for a, b in zip(getattr(rule, attribute), getattr(before, attribute)))
        assert changed == (kind in expected), kind


def test_same_seed_same_draw_and_independent_types():
    net = bioprop.MLP(SIZES, activation="relu", seed=0)
    first, second, other = (bioprop.make_rule("circuit", seed=s) for s in (5, 5, 6))
    for rule in (first, second, other):
        rule.initialize(net)
    assert all(torch.equal(a, b) for a, b in zip(first.to_teaching, second.to_teaching))
    assert not torch.equal(first.to_teaching[0], other.to_teaching[0])
    # V and V̄ are independent draws: no symmetric start
    assert abs(bioprop.diagnostics.cosine(first.to_downstream[0], first.to_teaching[0].T)) < 0.3


def test_state_dict_round_trip_continues_identically():
    net = bioprop.MLP(SIZES, activation="relu", dtype=torch.float64, seed=0)
    rule = bioprop.make_rule("circuit", seed=0)
    x, y = batch(SIZES, "ce")
    rule.step(net, x, y)
    state, net_state = copy.deepcopy(rule.state_dict()), copy.deepcopy(net.state_dict())
    restored = bioprop.make_rule("circuit", seed=99)
    restored.load_state_dict(state)
    twin = bioprop.MLP(SIZES, activation="relu", dtype=torch.float64, seed=1)
    twin.load_state_dict(net_state)
    rule.step(net, x, y)
    restored.step(twin, x, y)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters_list(), twin.parameters_list()))
    assert all(torch.equal(a, b) for a, b in zip(rule.to_teaching, restored.to_teaching))


def assembled_circuit(net, c=2.0, ratio=3):
    """A circuit in Theorem 1's limit by construction: V_l = c V̄_lᵀ, W̄_L = W_Lᵀ and
    W̄_l V_l = W_lᵀ (W̄_l = W_lᵀ V_l⁺, exact because V_l has full column rank)."""
    rule = bioprop.make_rule("circuit", eta_v=0.3 * c, eta_vbar=0.3, ratio=ratio, scale_vbar=1.0, seed=0)
    rule.initialize(net)
    rule.to_downstream = [c * vbar.T.clone() for vbar in rule.to_teaching]
    W = [w.detach() for w in net.weights]
    L = net.n_layers
    rule.feedback = [W[l - 1].T @ torch.linalg.pinv(rule.to_downstream[l - 1]) for l in range(2, L)] + [W[-1].T.clone()]
    return rule


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_theorem1_limit_against_autograd(loss):
    # oracle: autograd's dLoss/dW_l and deltas. In the assembled limit the circuit's eps_l is
    # BP's delta and its W_l update is c H_l dLoss/dW_l, H_l = V̄_l V̄_lᵀ, to round-off.
    net = bioprop.MLP(SIZES, activation="relu", dtype=torch.float64, seed=2)
    rule = assembled_circuit(net)
    x, y = batch(SIZES, loss, n=16, seed=4)
    records = measure(rule, net, x, y)
    hidden = records[:-1]
    assert all(r["cos_delta"] > 1 - 1e-12 for r in hidden)
    assert max(r["theorem1_error"] for r in hidden) <= 1e-10
    assert records[-1]["rel_update"] <= 1e-12  # the top layer learns from the error itself
    gradients, _ = bp_gradients(net, rule.loss, x, y)
    info = copy.deepcopy(rule).step(net.clone(), x, y)
    for l, h in enumerate(rule.preconditioners()):
        assert relative_difference(info["gradient_estimates"][l], 2.0 * h @ gradients[l]) <= 1e-10


def test_theorem1_negative_control_v_not_proportional_to_vbar():
    # break V = c V̄ᵀ: the same measurement must show a large error
    net = bioprop.MLP(SIZES, activation="relu", dtype=torch.float64, seed=2)
    rule = assembled_circuit(net)
    generator = torch.Generator().manual_seed(7)
    rule.to_downstream = [v + 0.5 * v.norm() / math.sqrt(v.numel()) * torch.randn(v.shape, generator=generator, dtype=v.dtype)
                          for v in rule.to_downstream]
    records = measure(rule, net, *batch(SIZES, "mse", n=16, seed=4))
    assert min(r["theorem1_error"] for r in records[:-1]) > 1e-3


def test_measure_leaves_rule_and_net_untouched():
    net = bioprop.MLP(SIZES, activation="relu", dtype=torch.float64, seed=0)
    rule = bioprop.make_rule("circuit", seed=0)
    before = [p.detach().clone() for p in net.parameters_list()]
    records = measure(rule, net, *batch(SIZES, "mse"))
    assert rule.sizes is None  # not even drawn
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters_list()))
    assert {"cos_update", "theorem1_error", "h_effective_rank", "h_condition", "drift_v", "one_minus_cos_v_vbar"} <= set(records[0])


def test_self_assembly_moves_the_update_towards_theorem1():
    # measured on the embedded digits set, from independent random draws and default options:
    # the update starts orthogonal to the gradient and far from Theorem 1's form c H ∇W (with
    # the best scalar c), and assembles within a few hundred steps in every hidden layer
    from bioprop.data import load_dataset

    data = load_dataset("digits")
    net = bioprop.MLP([64, 48, 48, 10], activation="relu", seed=0)
    rule = bioprop.make_rule("circuit", lr=0.05, loss="ce", seed=0)
    probe_x, probe_y = data.train_x[:300], data.train_y[:300]
    start = measure(rule, net, probe_x, probe_y)[:-1]
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):  # 8 epochs of batch 16: about 680 steps
        for index in torch.randperm(data.train_x.shape[0], generator=generator).split(16):
            rule.step(net, data.train_x[index], data.train_y[index])
    end = measure(rule, net, probe_x, probe_y)[:-1]
    for before, after in zip(start, end):
        assert abs(before["cos_update"]) < 0.2 and after["cos_update"] > 0.5
        assert after["theorem1_error_fitted"] < min(1.0, before["theorem1_error_fitted"] / 3)
        assert after["one_minus_cos_v_vbar"] < 0.5 * before["one_minus_cos_v_vbar"]


@pytest.mark.parametrize(
    "options",
    [{"ratio": 0}, {"ratio": "2,x"}, {"plastic": "W,U"}, {"downstream_activation": "softmax"}, {"kappa": 1.5},
     {"eta_v": -1}, {"cross_rule": "oja"}, {"normalizer": "weights"}],
)
def test_bad_options_are_named(options):
    name = next(iter(options))
    with pytest.raises(BioPropError, match=name):
        bioprop.make_rule("circuit", **options)


def test_a_foreign_state_is_refused():
    net = bioprop.MLP(SIZES, activation="relu", seed=0)
    rule = bioprop.make_rule("circuit", ratio=2, seed=0)
    rule.initialize(net)
    with pytest.raises(BioPropError, match="state: a circuit state needs"):
        bioprop.make_rule("circuit").load_state_dict({})
    with pytest.raises(BioPropError, match=r"state: the feedback shapes .* ratio=3"):
        bioprop.make_rule("circuit", ratio=3).load_state_dict(rule.state_dict())  # drawn for ratio 2
    with pytest.raises(BioPropError, match="plastic=3"):
        bioprop.make_rule("circuit", plastic=3)
    empty = bioprop.make_rule("circuit", ratio=2)
    empty.load_state_dict(bioprop.make_rule("circuit").state_dict())  # not drawn yet: draws on its first step
    assert empty.sizes is None and empty.to_teaching == []


def test_wrong_ratio_count_and_other_net_are_refused():
    rule = bioprop.make_rule("circuit", ratio="2,2", seed=0)
    with pytest.raises(BioPropError, match="ratio"):
        rule.initialize(bioprop.MLP([5, 4, 4, 4, 2], activation="relu"))
    rule = bioprop.make_rule("circuit", seed=0)
    rule.step(bioprop.MLP([5, 4, 2], activation="relu"), torch.zeros(1, 5), torch.zeros(1, 2))
    with pytest.raises(BioPropError, match="sizes"):
        rule.step(bioprop.MLP([5, 6, 2], activation="relu"), torch.zeros(1, 5), torch.zeros(1, 2))


# gradient_estimates has one entry per parameter (weights first, then biases): the step bound's
# tests read the weights' entries
def bounded_closed_form(rule, raw):
    """The step bound's factors and next running means, from the rule's state before the step
    and the unbounded updates G_l of the same step (module docstring)."""
    tau, beta = rule.step_bound, rule.step_memory
    sizes = [float(g.norm()) for g in raw]
    factors = [min(1.0, tau * float(m) / size) for m, size in zip(rule.step_sizes, sizes)]
    means = [beta * float(m) + (1 - beta) * size for m, size in zip(rule.step_sizes, sizes)]
    return factors, means


def test_step_bound_equals_closed_form():
    # oracle: the same step with the bound off (whose maths test_step_equals_closed_form checks)
    # times s_l = min(1, tau m_l / ||G_l||); running means m_l chosen so that the bound is
    # active on levels 1 and 3 and not on 2 and 4
    net = bioprop.MLP(SIZES, activation="relu", dtype=torch.float64, seed=1)
    rule = bioprop.make_rule("circuit", lr=0.05, loss="ce", ratio=2, step_bound=1.5, step_memory=0.9, seed=3)
    x, y = batch(SIZES, "ce")
    first = rule.step(net, x, y)["gradient_estimates"][:net.n_layers]  # the first step is unbounded and starts m_l
    assert [float(m) for m in rule.step_sizes] == [float(g.norm()) for g in first]
    unbounded = copy.deepcopy(rule)
    unbounded.step_bound = 0.0
    raw = copy.deepcopy(unbounded).step(net.clone(), x, y)["gradient_estimates"][:net.n_layers]
    rule.step_sizes = [torch.tensor(k * float(g.norm()), dtype=torch.float64) for k, g in zip((0.2, 10.0, 0.5, 10.0), raw)]
    factors, means = bounded_closed_form(rule, raw)
    assert factors[0] == pytest.approx(0.3) and factors[2] == pytest.approx(0.75) and factors[1] == factors[3] == 1.0
    expected = reference_updates(net, rule, x, y)
    free_net = net.clone()
    info = rule.step(net, x, y)
    for s, got, want in zip(factors, info["gradient_estimates"][:net.n_layers], raw):
        assert relative_difference(got, s * want) <= 1e-12
    assert [float(m) for m in rule.step_sizes] == pytest.approx(means, rel=1e-12)
    got = (net.weights, net.biases, rule.feedback)
    for name, want_list, got_list in zip(("W", "b", "Wbar"), expected, got):
        for want, have in zip(want_list, got_list):
            assert relative_difference(have, want) <= 1e-12, name
    # negative control: without the bound the same step misses the closed form on the bounded levels
    start = [w.detach().clone() for w in free_net.weights]
    unbounded.step(free_net, x, y)
    changes = [w.detach() - w0 for w, w0 in zip(free_net.weights, start)]
    expected_changes = [w - w0 for w, w0 in zip(expected[0], start)]
    assert relative_difference(changes[0], expected_changes[0]) > 0.1
    assert relative_difference(changes[2], expected_changes[2]) > 0.1
    assert relative_difference(changes[1], expected_changes[1]) <= 1e-10


def test_step_bound_keeps_theorem1_form_up_to_a_positive_scalar():
    # oracle: autograd. In the assembled circuit the bounded update is s_l c H_l dLoss/dW_l
    net = bioprop.MLP(SIZES, activation="relu", dtype=torch.float64, seed=2)
    rule = assembled_circuit(net)
    x, y = batch(SIZES, "mse", n=16, seed=4)
    raw = copy.deepcopy(rule).step(net.clone(), x, y)["gradient_estimates"][:net.n_layers]
    rule.step_sizes = [0.1 * g.norm() for g in raw]  # every level bounded: s_l = 2 * 0.1 = 0.2
    gradients = bp_gradients(net, rule.loss, x, y)[0][:net.n_layers]  # the weights' (then the biases')
    info = copy.deepcopy(rule).step(net.clone(), x, y)
    for estimate, h, gradient in zip(info["gradient_estimates"][:net.n_layers], rule.preconditioners(), gradients):
        assert relative_difference(estimate, 0.2 * 2.0 * h @ gradient) <= 1e-10
    assert relative_difference(info["gradient_estimates"][:net.n_layers][-1], 0.2 * gradients[-1]) <= 1e-10  # top: scaled SGD


def test_step_bound_keeps_kolen_pollack_pairs_matched():
    # W_L and W̄_L get the same (transposed) increments and decay, bounded or not, so their
    # difference only decays: W_L - W̄_Lᵀ after the step is (1 - lr lam) times what it was
    net = bioprop.MLP(SIZES, activation="relu", dtype=torch.float64, seed=0)
    rule = bioprop.make_rule("circuit", loss="ce", seed=0)
    x, y = batch(SIZES, "ce")
    rule.step(net, x, y)
    rule.step_sizes = [0.05 * m for m in rule.step_sizes]
    gap = net.weights[-1].detach() - rule.feedback[-1].T
    rule.step(net, x, y)
    assert relative_difference(net.weights[-1].detach() - rule.feedback[-1].T, (1 - rule.lr * rule.lam) * gap) <= 1e-10


def test_step_bound_stops_an_outlier_batch_throwing_the_net_off():
    # The instability of issue "circuit spikes at the trainer's defaults": after training on
    # batches of 16 at lr 0.1, one step on a small high-loss batch (as the trainer's last,
    # partial batch of an epoch can be) is several times a typical step and throws the held-out
    # loss up. With the default bound that step is at most tau times the running mean of its
    # level's sizes and the held-out loss barely moves; bound off (step_bound=0, the old
    # behaviour) is the negative control and must show the jump.
    from bioprop.data import load_dataset

    data = load_dataset("digits")
    x_all, y_all = data.train_x, data.train_y
    held_x, held_y = data.test_x, torch.nn.functional.one_hot(data.test_y, 10).float()
    outlier = torch.arange(800, 803)
    jumps, ratios = {}, {}
    for setting, options in (("unbounded", {"step_bound": 0.0}), ("default", {})):
        net = bioprop.MLP([64, 32, 32, 10], activation="relu", seed=0)
        rule = bioprop.make_rule("circuit", lr=0.1, loss="ce", seed=0, **options)
        generator = torch.Generator().manual_seed(0)
        sizes = []
        for _ in range(2):  # 2 epochs of 800 images, 100 steps
            for index in torch.randperm(800, generator=generator).split(16):
                raw = rule.step(net, x_all[index], y_all[index])["gradient_estimates"][:net.n_layers]
                sizes.append(torch.stack([g.norm() for g in raw]))
        typical = torch.stack(sizes[-50:]).mean(dim=0)
        means = None if rule.step_sizes is None else torch.stack(rule.step_sizes)
        with torch.no_grad():
            before = float(rule.loss(net(held_x), held_y))
            info = rule.step(net, x_all[outlier], (y_all[outlier] + 5) % 10)  # wrong labels: a high loss
            jumps[setting] = float(rule.loss(net(held_x), held_y)) - before
        step = torch.stack([g.norm() for g in info["gradient_estimates"][:net.n_layers]])
        ratios[setting] = (step / typical).tolist()
        if setting == "default":
            assert bool((step <= rule.step_bound * means * (1 + 1e-6)).all())
    assert min(ratios["unbounded"]) > 2.5  # unbounded: the outlier's step is over 2.5 typical steps (tau = 2) in every level
    assert jumps["unbounded"] > 0.4 and jumps["default"] < 0.25 * jumps["unbounded"], jumps


@pytest.mark.parametrize("options", [{"step_bound": -1}, {"step_memory": 1.0}, {"step_memory": "x"}])
def test_bad_step_bound_options_are_named(options):
    name = next(iter(options))
    with pytest.raises(BioPropError, match=name):
        bioprop.make_rule("circuit", **options)
