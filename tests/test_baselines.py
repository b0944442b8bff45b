"""The feedback-alignment family (fa, kp, sign, dfa), each claim against a named oracle.

- closed form: every parameter's update (and kp's feedback update) equals the rule's equations
  written out independently here, layer by layer, with f' and e taken from autograd, float64,
  to 1e-12 relative;
- autograd BP: fa with B_l = W_l^T, kp with B_l = W_l^T and no decay, dfa with one hidden layer
  and B_1 = W_2^T make exactly BP's update; the negative control (the rule's own random
  feedback) must fail the same check;
- measured behaviour: kp's feedback aligns with W^T; seeds; checkpoints; bad input.
"""
from __future__ import annotations

import io
import json

import pytest
import torch
import yaml

import bioprop
from bioprop.errors import BioPropError
from bioprop.train import train
from bioprop.verify import compare_updates, make_batch

from conftest import relative_difference

TOLERANCE = 1e-12
ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu", "linear"]
SMALL_SIZES = [6, 5, 4, 3]
#: (rule, options) cases of the closed-form check
CASES = [
    ("fa", {}),
    ("kp", {"decay": 0.3}),
    ("kp", {"decay": 0.0}),
    ("sign", {"magnitude": "unit"}),
    ("sign", {"magnitude": "random"}),
    ("dfa", {}),
]


def _derivative(activation, z):
    """f'(z) by autograd on f itself (independent of the Activation's hand-written derivative)."""
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(activation(z).sum(), z)
    return grad


def _output_error(loss, output, y):
    """e = dLoss_sample/dz_L per sample: autograd on the batch-mean loss, times the batch size."""
    output = output.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss(output, y), output)
    return grad * output.shape[0]


def _expected_step(rule_name, options, net, x, y, loss, lr, feedback):
    """The rule's equations, layer by layer: (deltas, gradient estimates, changes of W, b, B)."""
    weights = [w.detach().clone() for w in net.weights]
    biases = [b.detach().clone() for b in net.biases] if net.has_bias else None
    f, n_layers, batch = net.activation, net.n_layers, x.shape[0]
    rates, preactivations = [x], []
    for l in range(n_layers):
        z = rates[-1] @ weights[l].T + (biases[l] if biases else 0)
        preactivations.append(z)
        rates.append(f(z))
    e = _output_error(loss, preactivations[-1], y)
    deltas = [None] * n_layers
    deltas[-1] = e
    if rule_name == "dfa":
        for l in range(n_layers - 1):
            deltas[l] = _derivative(f, preactivations[l]) * (feedback[l] @ e.T).T
    else:
        for l in range(n_layers - 1, 0, -1):  # 0-based: feedback[l - 1] is the paper's B_{l+1}
            deltas[l - 1] = _derivative(f, preactivations[l - 1]) * (feedback[l - 1] @ deltas[l].T).T
    estimates = [sum(torch.outer(deltas[l][s], rates[l][s]) for s in range(batch)) / batch for l in range(n_layers)]
    decay = options.get("decay", 0.0) if rule_name == "kp" else 0.0
    weight_changes = [-lr * estimates[l] - lr * decay * weights[l] for l in range(n_layers)]
    bias_changes = [-lr * deltas[l].mean(dim=0) for l in range(n_layers)]
    feedback_changes = [-lr * estimates[l + 1].T - lr * decay * feedback[l] for l in range(n_layers - 1)] if rule_name == "kp" else []
    return deltas, estimates, weight_changes, bias_changes, feedback_changes


def _feedback_used(rule_name, rule, net):
    state = rule.state_dict()
    if rule_name == "sign":
        return [torch.sign(w.detach()).T * m for w, m in zip(net.weights[1:], state["magnitudes"])]
    return state["feedback"]


@pytest.mark.parametrize("rule_name,options", CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_update_equals_closed_form(rule_name, options, activation, bias, loss):
    # oracle: closed form (the docstring's equations, computed here independently)
    lr = 0.1
    # the first seed whose every weight update is non-zero, so that no comparison is vacuous
    # (a dead relu layer; with sign="unit" and ce, a unit whose outgoing weights share one sign
    # gets sign(W)^T e = s * sum(e) = 0)
    for seed in range(1, 30):
        net = bioprop.MLP(SMALL_SIZES, activation=activation, bias=bias, dtype=torch.float64, seed=seed)
        x, y = make_batch(SMALL_SIZES, loss, batch=16, seed=seed)
        rule = bioprop.make_rule(rule_name, lr=lr, loss=loss, seed=seed, **options)
        rule.initialize(net)
        feedback = [b.clone() for b in _feedback_used(rule_name, rule, net)]
        deltas, estimates, weight_changes, bias_changes, feedback_changes = _expected_step(
            rule_name, options, net, x, y, bioprop.get_loss(loss), lr, feedback
        )
        if all(float(change.norm()) > 1e-6 for change in weight_changes):
            break
    assert all(float(change.norm()) > 1e-6 for change in weight_changes), "no update is vacuous"
    before = [p.detach().clone() for p in net.parameters_list()]
    info = rule.step(net, x, y)

    changes = [p.detach() - p0 for p, p0 in zip(net.parameters_list(), before)]
    for actual, expected in zip(changes, weight_changes + (bias_changes if bias else [])):
        assert relative_difference(actual, expected) <= TOLERANCE
    assert len(info["deltas"]) == net.n_layers - 1
    for actual, expected in zip(info["deltas"], deltas[:-1]):
        assert relative_difference(actual, expected) <= TOLERANCE
    for actual, expected in zip(info["gradient_estimates"], estimates):
        assert relative_difference(actual, expected) <= TOLERANCE
    if rule_name == "kp":
        for after, start, expected in zip(rule.state_dict()["feedback"], feedback, feedback_changes):
            assert relative_difference(after - start, expected) <= TOLERANCE
    if rule_name == "sign":
        # the feedback follows the current W: after the step it is sign(W_new)^T * M
        assert all(torch.equal(a, b) for a, b in zip(rule.feedback(net), _feedback_used("sign", rule, net)))


def test_closed_form_check_sees_a_wrong_feedback():
    # negative control: the same closed form computed with BP's feedback W^T must not match
    lr, loss = 0.1, "mse"
    net = bioprop.MLP(SMALL_SIZES, activation="tanh", dtype=torch.float64, seed=1)
    x, y = make_batch(SMALL_SIZES, loss, batch=6, seed=1)
    rule = bioprop.make_rule("fa", lr=lr, loss=loss, seed=2)
    rule.initialize(net)
    bp_feedback = [w.detach().T for w in net.weights[1:]]
    _, _, weight_changes, _, _ = _expected_step("fa", {}, net, x, y, bioprop.get_loss(loss), lr, bp_feedback)
    before = [w.detach().clone() for w in net.weights]
    rule.step(net, x, y)
    for layer in range(net.n_layers - 1):
        assert relative_difference(net.weights[layer].detach() - before[layer], weight_changes[layer]) > 1e-3


# -- autograd BP as the oracle -------------------------------------------------------------------
def _difference_to_bp(rule_name, options, sizes, activation, loss, transpose_feedback, steps=1, seed=0):
    """Largest relative difference between the rule's and autograd BP's total parameter changes
    after `steps` steps from one initialisation on one batch; with transpose_feedback the rule's
    feedback is BP's (B_l = W_l^T; for dfa with one hidden layer B_1 = W_2^T)."""
    net = bioprop.MLP(sizes, activation=activation, dtype=torch.float64, seed=seed)
    oracle_net = net.clone()
    x, y = make_batch(sizes, loss, batch=8, seed=seed)
    rule = bioprop.make_rule(rule_name, lr=0.05, loss=loss, **options)
    oracle = bioprop.make_rule("bp", lr=0.05, loss=loss)
    if transpose_feedback:
        rule.initialize(net, [w.detach().T for w in net.weights[1:]])
    before = [p.detach().clone() for p in net.parameters_list()]
    for _ in range(steps):
        rule.step(net, x, y)
        oracle.step(oracle_net, x, y)
    norms = [float((q.detach() - p0).norm()) for q, p0 in zip(oracle_net.parameters_list(), before)]
    assert all(n > 0 for n in norms), "every BP update is non-zero: the comparison is not vacuous"
    return max(
        relative_difference(p.detach() - p0, q.detach() - p0)
        for p, q, p0 in zip(net.parameters_list(), oracle_net.parameters_list(), before)
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_fa_with_transposed_weights_is_bp(activation, loss):
    # oracle: autograd SGD; negative control: fa's own random feedback
    sizes = [7, 6, 5, 4]
    assert _difference_to_bp("fa", {}, sizes, activation, loss, transpose_feedback=True) <= TOLERANCE
    assert _difference_to_bp("fa", {}, sizes, activation, loss, transpose_feedback=False) > 1e-3


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kp_started_at_transposed_weights_stays_bp(activation):
    # oracle: autograd SGD over 10 steps; B_l and W_l^T receive the same updates, so they stay
    # equal. Negative controls: a random start; decay (which BP does not have)
    sizes = [7, 6, 5, 4]
    assert _difference_to_bp("kp", {"decay": 0.0}, sizes, activation, "ce", True, steps=10) <= TOLERANCE
    assert _difference_to_bp("kp", {"decay": 0.0}, sizes, activation, "ce", False, steps=10) > 1e-3
    assert _difference_to_bp("kp", {"decay": 0.1}, sizes, activation, "ce", True, steps=10) > 1e-5


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_dfa_with_one_hidden_layer_and_transposed_weights_is_bp(activation, loss):
    # oracle: autograd SGD; negative control: dfa's own random feedback
    sizes = [7, 6, 4]
    assert _difference_to_bp("dfa", {}, sizes, activation, loss, transpose_feedback=True) <= TOLERANCE
    assert _difference_to_bp("dfa", {}, sizes, activation, loss, transpose_feedback=False) > 1e-3


def test_verify_reports_approximate_figures():
    # bioprop.verify (the same autograd comparison) runs the baselines without an exactness claim
    for rule_name, options in (("fa", {}), ("kp", {"decay": 0.0}), ("sign", {}), ("dfa", {})):
        comparison = compare_updates(rule_name, options, [8, 6, 5, 4], activation="tanh", loss="ce", batch=8)
        assert all(0 < layer.rel < 10 for layer in comparison.layers[:2])
        assert comparison.layers[2].rel <= TOLERANCE  # W_L sees e itself in every rule


# -- alignment -----------------------------------------------------------------------------------
def _train_on_one_batch(rule_name, options, steps):
    net = bioprop.MLP([10, 8, 8, 4], activation="tanh", dtype=torch.float64, seed=0)
    x, y = make_batch(net.sizes, "ce", batch=16, seed=0)
    rule = bioprop.make_rule(rule_name, lr=0.1, loss="ce", seed=1, **options)
    rule.initialize(net)
    start = rule.feedback_alignment(net)
    for _ in range(steps):
        rule.step(net, x, y)
    return start, rule.feedback_alignment(net)


def test_kp_feedback_aligns_with_the_forward_weights():
    # measured: B_l - W_l^T shrinks by (1 - lr*decay) per step, so cos(B_l, W_l^T) -> 1;
    # negative control: fa's fixed feedback on the same batch stays far from W^T
    start, end = _train_on_one_batch("kp", {"decay": 0.1}, 1000)
    assert max(abs(c) for c in start) < 0.5
    assert min(end) > 0.99
    _, fa_end = _train_on_one_batch("fa", {}, 1000)
    assert max(fa_end) < 0.9


def test_alignment_is_one_for_bp_feedback():
    net = bioprop.MLP([6, 5, 4, 3], dtype=torch.float64, seed=0)
    fa = bioprop.make_rule("fa")
    fa.initialize(net, [w.detach().T for w in net.weights[1:]])
    assert fa.feedback_alignment(net) == pytest.approx([1.0, 1.0], abs=1e-12)
    dfa = bioprop.make_rule("dfa")
    dfa.initialize(net, [(net.weights[2] @ net.weights[1]).detach().T, net.weights[2].detach().T])
    assert dfa.feedback_alignment(net) == pytest.approx([1.0, 1.0], abs=1e-12)
    sign = bioprop.make_rule("sign")
    assert all(0.5 < c < 1 for c in sign.feedback_alignment(net))


# -- drawing, seeds, checkpoints -----------------------------------------------------------------
@pytest.mark.parametrize("rule_name", ["fa", "kp", "dfa", "sign"])
def test_same_seed_same_feedback_other_seed_other_feedback(rule_name):
    options = {"magnitude": "random"} if rule_name == "sign" else {}
    net = bioprop.MLP([6, 5, 4, 3], dtype=torch.float64, seed=0)
    net32 = bioprop.MLP([6, 5, 4, 3], dtype=torch.float32, seed=0)

    def drawn(seed, on=net):
        rule = bioprop.make_rule(rule_name, seed=seed, **options)
        rule.initialize(on)
        return next(v for k, v in rule.state_dict().items() if k in ("feedback", "magnitudes"))

    assert all(torch.equal(a, b) for a, b in zip(drawn(3), drawn(3)))
    assert all(not torch.equal(a, b) for a, b in zip(drawn(3), drawn(4)))
    # the draw is made in float64 on the CPU, then cast: a float32 net gets the same numbers
    assert all(torch.equal(a.float(), b) for a, b in zip(drawn(3), drawn(3, net32)))


def test_draw_follows_the_xavier_law_of_the_weights():
    net = bioprop.MLP([300, 200, 100], activation="relu", dtype=torch.float64, seed=0)
    rule = bioprop.make_rule("fa", feedback_scale=2.0)
    rule.initialize(net)
    (feedback,) = rule.state_dict()["feedback"]
    bound = 2.0 * 2**0.5 * (6 / 300) ** 0.5
    assert feedback.shape == (200, 100)
    assert feedback.abs().max() <= bound and feedback.abs().max() > 0.99 * bound
    assert float(feedback.std()) == pytest.approx(2.0 * float(net.weights[1].detach().std()), rel=0.05)


def test_first_step_draws_lazily_like_initialize():
    net = bioprop.MLP([6, 5, 4, 3], dtype=torch.float64, seed=0)
    x, y = make_batch(net.sizes, "mse", 4, 0)
    lazy, eager = bioprop.make_rule("fa", seed=5), bioprop.make_rule("fa", seed=5)
    assert lazy.state_dict()["drawn"] is False
    eager.initialize(net)
    lazy.step(net.clone(), x, y)
    assert all(torch.equal(a, b) for a, b in zip(lazy.state_dict()["feedback"], eager.state_dict()["feedback"]))


@pytest.mark.parametrize("rule_name", ["fa", "kp", "sign", "dfa"])
def test_state_dict_round_trip_continues_identically(rule_name):
    # oracle: an uninterrupted run; the state goes through torch.save / torch.load(weights_only=True)
    options = {"magnitude": "random"} if rule_name == "sign" else {}
    net = bioprop.MLP([6, 5, 4, 3], activation="relu", dtype=torch.float64, seed=0)
    x, y = make_batch(net.sizes, "ce", 8, 0)
    rule = bioprop.make_rule(rule_name, lr=0.1, loss="ce", seed=7, **options)
    for _ in range(3):
        rule.step(net, x, y)
    buffer = io.BytesIO()
    torch.save({"net": net.state_dict(), "rule": rule.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    restored_net = bioprop.MLP([6, 5, 4, 3], activation="relu", dtype=torch.float64, seed=99)
    restored_net.load_state_dict(saved["net"])
    restored = bioprop.make_rule(rule_name, lr=0.1, loss="ce", seed=123, **options)  # the seed must not matter
    restored.load_state_dict(saved["rule"])
    for _ in range(3):
        rule.step(net, x, y)
        restored.step(restored_net, x, y)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters_list(), restored_net.parameters_list()))
    key = "magnitudes" if rule_name == "sign" else "feedback"
    assert all(torch.equal(a, b) for a, b in zip(rule.state_dict()[key], restored.state_dict()[key]))


def _metrics(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def test_train_resume_restores_kp_feedback(tmp_path):
    # oracle: an uninterrupted `bioprop train` run; the trainer hands its seed to the rule
    settings = {"rule": "kp", "dataset": "digits", "hidden": [16, 16], "activation": "relu", "batch_size": 32,
                "lr": 0.05, "seed": 3, "quiet": True}
    train({**settings, "epochs": 2, "out": str(tmp_path / "whole")})
    train({**settings, "epochs": 1, "out": str(tmp_path / "parts")})
    train({"resume": str(tmp_path / "parts"), "epochs": 2, "quiet": True})
    whole, parts = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True) for name in ("whole", "parts"))
    assert whole["learner"]["rule"]["sizes"] == [64, 16, 16, 10]
    assert all(torch.equal(a, b) for a, b in zip(whole["learner"]["rule"]["feedback"], parts["learner"]["rule"]["feedback"]))
    assert all(torch.equal(whole["learner"]["net"][k], parts["learner"]["net"][k]) for k in whole["learner"]["net"])
    assert _metrics(tmp_path / "whole") == _metrics(tmp_path / "parts")
    resolved = yaml.safe_load((tmp_path / "whole" / "config.yaml").read_text())["resolved"]
    assert resolved["rule"]["seed"] == 3


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call,named",
    [
        (lambda: bioprop.make_rule("sign", magnitude="gaussian"), "magnitude"),
        (lambda: bioprop.make_rule("kp", decay=-1e-3), "decay"),
        (lambda: bioprop.make_rule("fa", feedback_scale=0.0), "feedback_scale"),
        (lambda: bioprop.make_rule("dfa", seed=-1), "seed"),
        (lambda: bioprop.make_rule("fa", seed="zero"), "seed"),
    ],
)
def test_bad_options_are_named(call, named):
    with pytest.raises(BioPropError, match=named):
        call()


@pytest.mark.parametrize("rule_name", ["fa", "kp", "sign", "dfa"])
def test_a_net_of_other_sizes_is_refused(rule_name):
    rule = bioprop.make_rule(rule_name)
    net = bioprop.MLP([6, 5, 4, 3], seed=0)
    rule.step(net, torch.rand(2, 6), torch.tensor([0, 1]))
    other = bioprop.MLP([6, 7, 4, 3], seed=0)
    with pytest.raises(BioPropError, match=r"sizes \[6, 5, 4, 3\].*initialize\(net\)"):
        rule.step(other, torch.rand(2, 6), torch.tensor([0, 1]))
    with pytest.raises(BioPropError, match="do not fit"):
        rule.initialize(other, [torch.zeros(1, 1)])
    with pytest.raises(BioPropError, match="do not fit"):
        rule.load_state_dict({**rule.state_dict(), "sizes": [6, 7, 4, 3]})
