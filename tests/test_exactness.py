"""Exactness claims of SPEC section 1, each against an independent oracle.

Oracle: PyTorch autograd SGD on the same weights and batch (rule "bp"), float64, tolerance
1e-10 relative; the oracle itself is checked against central finite differences. Every
claim has a negative control that breaks one condition and must fail the same check.
"""
import itertools
import math

import pytest
import torch

import bioprop
from bioprop.rules.predictive_coding import feedforward_state
from bioprop.verify import compare_updates, make_batch, verify_rule

from conftest import relative_difference

TOLERANCE = 1e-10
ACTIVATIONS = ["sigmoid", "tanh", "relu", "linear"]


def train_side_by_side(rule_name, options, sizes, activation, bias, loss, batch, steps=10, lr=0.02, input_map="identity"):
    """Max relative difference between the rule's and BP's total weight changes
    (bioprop.verify.compare_updates: both from one initialisation, same batch, `steps` steps).

    The first seed from 0 whose BP update is non-zero in every parameter is used, so no
    comparison is vacuous (small ReLU nets can start with a dead layer).
    """
    for seed in range(50):
        comparison = compare_updates(
            rule_name, options, sizes, activation=activation, bias=bias, loss=loss, batch=batch, seed=seed,
            steps=steps, lr=lr, input_map=input_map,
        )
        if all(layer.bp_norm > 0 for layer in comparison.layers):
            break
    assert all(math.isfinite(layer.bp_norm) for layer in comparison.layers), "the oracle diverged: lower lr"
    assert all(layer.bp_norm > 0 for layer in comparison.layers), "every BP update is non-zero: the check is not vacuous"
    return comparison.max_rel  # NaN (a rule that blew up) counts as infinite


def sizes_for(hidden_layers):
    return [7] + [6, 5, 6, 5][:hidden_layers] + [4]


GRID = list(itertools.product(ACTIVATIONS, [True, False], ["mse", "ce"], [1, 2, 3, 4], [1, 32]))


@pytest.mark.parametrize("rule_name", ["zil", "fazil"])
@pytest.mark.parametrize("activation,bias,loss,hidden_layers,batch", GRID)
def test_exact_to_bp_after_ten_steps(rule_name, activation, bias, loss, hidden_layers, batch):
    # oracle: autograd SGD from the same weights, on the same batch, 10 steps
    difference = train_side_by_side(rule_name, {}, sizes_for(hidden_layers), activation, bias, loss, batch)
    assert difference <= TOLERANCE


@pytest.mark.parametrize("rule_name", ["zil", "fazil"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_exact_with_input_passed_through_f(rule_name, activation):
    # the paper's input map (x_0 = f(input)); the oracle's forward pass uses the same map
    difference = train_side_by_side(rule_name, {}, [7, 6, 5, 4], activation, True, "mse", 8, input_map="activation")
    assert difference <= TOLERANCE


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_zil_full_dynamics_is_exact_too(activation):
    # the same rule simulated node by node at every step (no shortcut) is also BP
    for loss in ("mse", "ce"):
        assert train_side_by_side("zil", {"dynamics": "full"}, [7, 6, 5, 6, 4], activation, True, loss, 8) <= TOLERANCE


@pytest.mark.parametrize(
    "rule_name,broken",
    [
        ("zil", {"gamma": 0.99999}),  # C3
        ("zil", {"update_at": 0}),  # C2: everything at t = 0
        ("zil", {"update_at": 3}),  # C2: everything at t = L
        ("zil", {"init_noise": 1e-4}),  # C1
        ("fazil", {"gamma": 0.99999}),
        ("fazil", {"init_noise": 1e-4}),
        ("il", {}),  # IL with its defaults is an approximation
    ],
)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_negative_controls_diverge(rule_name, broken, activation):
    difference = train_side_by_side(rule_name, broken, [7, 6, 5, 4], activation, True, "mse", 8)
    assert difference > 1e3 * TOLERANCE


def test_oracle_matches_finite_differences():
    # the oracle itself, against central differences of the batch-mean loss
    for loss_name, activation in [("mse", "sigmoid"), ("ce", "tanh")]:
        net = bioprop.MLP([5, 4, 3], activation=activation, dtype=torch.float64, seed=3)
        x, y = make_batch([5, 4, 3], loss_name, 6, 3)
        loss = bioprop.get_loss(loss_name)
        before = [p.detach().clone() for p in net.parameters_list()]
        bioprop.make_rule("bp", lr=1.0, loss=loss_name).step(net.clone(), x, y)  # exercise the path
        twin = net.clone()
        bioprop.make_rule("bp", lr=1.0, loss=loss_name).step(twin, x, y)
        for index, parameter in enumerate(net.parameters_list()):
            autograd_gradient = before[index] - twin.parameters_list()[index].detach()
            numeric = torch.zeros_like(parameter)
            h = 1e-6
            flat = parameter.data.view(-1)
            for i in range(flat.numel()):
                original = flat[i].item()
                flat[i] = original + h
                up = float(loss(net(x), y).detach())
                flat[i] = original - h
                down = float(loss(net(x), y).detach())
                flat[i] = original
                numeric.view(-1)[i] = (up - down) / (2 * h)
            assert relative_difference(autograd_gradient, numeric) < 1e-7


def test_error_nodes_equal_bp_deltas_at_their_step():
    # Theorem 3.1: eps of layer L-k at t = k equals -dLoss/dz_{L-k} (autograd)
    sizes = [6, 5, 5, 4, 3]
    net = bioprop.MLP(sizes, activation="tanh", dtype=torch.float64, seed=2)
    x, y = make_batch(sizes, "mse", 5, 2)
    loss = bioprop.get_loss("mse")
    with torch.enable_grad():
        sweep = net.forward_pass(x)
        for z in sweep.preactivations:
            z.retain_grad()
        loss(sweep.output, y).backward()
    deltas = [z.grad * x.shape[0] for z in sweep.preactivations]  # per-sample deltas (the loss is a batch mean)
    info = bioprop.make_rule("zil", lr=0.0 + 1e-3, loss="mse").step(net.clone(), x, y, trace=True)
    n_layers = len(sizes) - 1
    for layer in range(1, n_layers + 1):
        k = n_layers - layer
        error = info["trace"][k]["error_nodes"][layer - 1]
        assert relative_difference(error, -deltas[layer - 1]) <= TOLERANCE
        for earlier in range(k):  # still at rest before its step
            if layer < n_layers:
                assert torch.all(info["trace"][earlier]["error_nodes"][layer - 1] == 0)


def test_gamma_scales_layer_at_distance_k_by_gamma_to_the_k():
    # SPEC remark under C3: with C1 and C2 kept, gamma != 1 gives BP with layer L-k scaled by gamma^k
    sizes, gamma = [6, 5, 5, 4, 3], 0.5
    net = bioprop.MLP(sizes, activation="sigmoid", dtype=torch.float64, seed=4)
    oracle_net, x_y = net.clone(), make_batch(sizes, "mse", 4, 4)
    start = [w.detach().clone() for w in net.weights]
    bioprop.make_rule("zil", lr=0.1, gamma=gamma, dynamics="full").step(net, *x_y)
    bioprop.make_rule("bp", lr=0.1).step(oracle_net, *x_y)
    n_layers = len(sizes) - 1
    for layer in range(1, n_layers + 1):
        k = n_layers - layer
        change = net.weights[layer - 1].detach() - start[layer - 1]
        expected = (gamma**k) * (oracle_net.weights[layer - 1].detach() - start[layer - 1])
        assert relative_difference(change, expected) <= TOLERANCE


def test_front_and_full_dynamics_agree_step_by_step():
    sizes = [8, 7, 6, 5, 4, 3]
    x, y = make_batch(sizes, "ce", 16, 5)
    front = bioprop.MLP(sizes, activation="relu", dtype=torch.float64, seed=5)
    full = front.clone()
    start = [p.detach().clone() for p in front.parameters_list()]
    for _ in range(5):
        bioprop.make_rule("zil", lr=0.2, loss="ce", dynamics="front").step(front, x, y)
        bioprop.make_rule("zil", lr=0.2, loss="ce", dynamics="full").step(full, x, y)
    for a, b, p0 in zip(front.parameters_list(), full.parameters_list(), start):
        assert (b - p0).norm() > 0
        assert relative_difference(a - p0, b - p0) <= TOLERANCE


def test_verify_report_passes_for_exact_rules_and_reports_il():
    for rule in ("zil", "fazil"):
        report = verify_rule(rule, steps=3)
        assert report.exact and report.passed
        assert report.controls and all(c["diverges"] for c in report.controls)
        float32 = next(c for c in report.comparisons if c.dtype == "float32")
        assert float32.max_rel < 1e-3  # round-off only
    il = verify_rule("il")
    assert not il.claims_exactness and il.passed
    assert 0.9 < il.comparisons[0].min_cos < 1.0 and il.comparisons[0].max_rel > 1e-3


def test_feedforward_state_is_the_prediction_fixpoint():
    # C1: at the feed-forward pass every hidden error node is exactly 0
    net = bioprop.MLP([6, 5, 4, 3], activation="sigmoid", dtype=torch.float64, seed=0)
    x, _ = make_batch([6, 5, 4, 3], "mse", 4, 0)
    from bioprop.rules.predictive_coding import errors_of, predictions_of, rates_of, FreeOutput

    state = feedforward_state(net, x)
    errors = errors_of(state, predictions_of(net, rates_of(net, state)), FreeOutput())
    assert all(torch.all(e == 0) for e in errors)
