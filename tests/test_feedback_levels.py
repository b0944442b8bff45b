"""fa, kp, sign, dfa, the credit rule, the circuit and the diagnostics on conv nets and the RNN.

Oracles, float64:
- closed form: each rule's equations written out here with torch's own operations, independent
  of bioprop.levels: the input delta through a Linear level is delta @ B^T, through a conv level
  the transposed convolution with kernel B (F.conv_transpose1d/2d), through the rate maps
  autograd on the user's modules; weight updates from unfolded patches (F.unfold), biases from
  sums; the RNN's deltas from nn.RNN's own hidden states;
- autograd BP (BPTT for the RNN) on the same module and batch: fa with its feedback set to the
  forward weights (B = W for a kernel, W^T for Linear), kp started there, the credit rule with
  balance = f';
- the MLP: the circuit on a wrapped Linear Sequential against the circuit on the MLP.
Negative controls: random feedback, a Gaussian balance, a cut one sweep short must all fail.
"""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bioprop
from bioprop.diagnostics import measure
from bioprop.errors import BioPropError
from bioprop.rules.base import StepResult

from conftest import relative_difference


pytestmark = pytest.mark.usefixtures("one_thread")


TOLERANCE = 1e-10
LR = 0.1


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def conv2d_model(bias=True):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=bias), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, stride=2, padding=2, dilation=2, bias=bias), nn.ReLU(), nn.Flatten(),
        nn.Linear(16, 5, bias=bias), nn.Sigmoid(), nn.Linear(5, 3, bias=bias),
    ).double()


def conv1d_model(bias=True):
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=1, bias=bias), nn.LeakyReLU(0.1), nn.AvgPool1d(2),
        nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=2, bias=bias), nn.Tanh(), nn.Flatten(),
        nn.Linear(8, 3, bias=bias),
    ).double()


def linear_model():
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()


MODELS = {"conv2d": (conv2d_model, (6, 2, 8, 8)), "conv1d": (conv1d_model, (6, 2, 12)), "linear": (linear_model, (6, 6))}


def batch(shape, seed=3):
    return _randn(*shape, seed=seed), _randn(shape[0], 3, seed=seed + 1)


def rnn_net():
    return bioprop.ElmanRNN(3, 4, 3, dtype=torch.float64, seed=0)


def rnn_batch(seed=3):
    return _randn(5, 4, 3, seed=seed), _randn(5, 3, seed=seed + 1)


# -- the closed form, independent of bioprop.levels ---------------------------------------------------------
def _stages(model):
    """[(parameterised module, [rate modules after it])] of a Sequential."""
    stages = []
    for module in model:
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            stages.append((module, []))
        else:
            stages[-1][1].append(module)
    return stages


def _rate_vjp(modules, z, grad):
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        out = nn.Sequential(*modules)(z) if modules else z
        (result,) = torch.autograd.grad(out, z, grad)
    return result


def _as_2d(module, tensor):
    return tensor.unsqueeze(2) if isinstance(module, nn.Conv1d) else tensor


def _conv_geometry(module):
    if isinstance(module, nn.Conv1d):
        return (1, *module.kernel_size), (1, *module.stride), (0, *module.padding), (1, *module.dilation)
    return module.kernel_size, module.stride, module.padding, module.dilation


def _transposed(module, feedback, delta, input_shape):
    """The input delta through a level with weight `feedback` in the feedback layout."""
    if isinstance(module, nn.Linear):
        return delta @ feedback.T
    kernel, stride, padding, dilation = _conv_geometry(module)
    out = _as_2d(module, delta)
    spatial = input_shape[2:] if isinstance(module, nn.Conv2d) else (1, input_shape[2])
    output_padding = [size - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
                      for size, o, s, p, d, k in zip(spatial, out.shape[2:], stride, padding, dilation, kernel)]
    result = F.conv_transpose2d(out, _as_2d(module, feedback), stride=stride, padding=padding,
                                output_padding=output_padding, dilation=dilation)
    return result.squeeze(2) if isinstance(module, nn.Conv1d) else result


def _parameter_updates(module, delta, r):
    """Batch-summed (dz/dW)^T delta and (dz/db)^T delta."""
    if isinstance(module, nn.Linear):
        return [delta.T @ r] + ([delta.sum(0)] if module.bias is not None else [])
    kernel, stride, padding, dilation = _conv_geometry(module)
    patches = F.unfold(_as_2d(module, r), kernel, dilation=dilation, padding=padding, stride=stride)
    out = _as_2d(module, delta).flatten(2)
    weight = torch.einsum("bop,bkp->ok", out, patches).reshape(module.weight.shape)
    bias = [out.sum((0, 2))] if module.bias is not None else []
    return [weight] + bias


def _output_error(loss, output, y):
    output = output.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss(output, y), output)
    return grad * output.shape[0]


def closed_form(model, x, y, feedback, direct=False, loss="mse"):
    """(hidden deltas, per-parameter gradient estimates) of the rule's equations; feedback[l] is
    level l+1's B (chain, l = 1..L-1) or level l's projection (direct, l = 0..L-2)."""
    stages = _stages(model)
    rates, preactivations = [x], []
    with torch.no_grad():
        for module, after in stages:
            preactivations.append(module(rates[-1]))
            rates.append(nn.Sequential(*after)(preactivations[-1]) if after else preactivations[-1])
    e = _output_error(bioprop.get_loss(loss), preactivations[-1], y)
    n = len(stages)
    deltas = [None] * n
    deltas[-1] = e
    if direct:
        for l in range(n - 1):
            deltas[l] = _rate_vjp(stages[l][1], preactivations[l], (e @ feedback[l].T).reshape(rates[l + 1].shape))
    else:
        for l in range(n - 1, 0, -1):
            grad_r = _transposed(stages[l][0], feedback[l - 1], deltas[l], rates[l].shape)
            deltas[l - 1] = _rate_vjp(stages[l - 1][1], preactivations[l - 1], grad_r)
    estimates = []
    for (module, _), delta, r in zip(stages, deltas, rates[:-1]):
        estimates += [update / x.shape[0] for update in _parameter_updates(module, delta, r)]
    return deltas[:-1], estimates


def _forward_weights(model):
    """Each level's forward weight in the feedback layout, levels 2..L: BP's feedback."""
    return [m.weight.detach().T if isinstance(m, nn.Linear) else m.weight.detach() for m, _ in _stages(model)[1:]]


def _used_feedback(rule_name, rule, model):
    state = rule.state_dict()
    if rule_name == "sign":
        return [(torch.sign(w.T) if w.dim() == 2 and isinstance(m, nn.Linear) else torch.sign(w)) * magnitude
                for (m, _), w, magnitude in zip(_stages(model)[1:], [m.weight.detach() for m, _ in _stages(model)[1:]],
                                                 state["magnitudes"])]
    return state["feedback"]


FEEDBACK_CASES = [("fa", {}), ("kp", {"decay": 0.3}), ("sign", {}), ("sign", {"magnitude": "random"}), ("dfa", {})]


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("rule_name,options", FEEDBACK_CASES)
def test_feedback_rules_on_levels_equal_their_closed_form(model_name, rule_name, options):
    factory, shape = MODELS[model_name]
    model = factory()
    net = bioprop.wrap(model)
    x, y = batch(shape)
    rule = bioprop.make_rule(rule_name, lr=LR, seed=4, **options)
    rule.initialize(net, x=x)
    feedback = [b.clone() for b in _used_feedback(rule_name, rule, model)]
    deltas, estimates = closed_form(model, x, y, feedback, direct=rule_name == "dfa")
    before = [p.detach().clone() for p in net.parameters_list()]
    info = rule.step(net, x, y)
    assert isinstance(info, StepResult) and info["deltas"] is info.deltas
    decay = options.get("decay", 0.0)
    for p, p0, estimate in zip(net.parameters_list(), before, estimates):
        expected = -LR * estimate - (LR * decay * p0 if p0.dim() > 1 else 0)
        assert float(expected.norm()) > 1e-8
        assert relative_difference(p.detach() - p0, expected) <= TOLERANCE
    assert len(info.deltas) == len(deltas)
    for ours, expected in zip(info.deltas, deltas):
        assert relative_difference(ours, expected) <= TOLERANCE
    for ours, expected in zip(info.gradient_estimates, estimates):
        assert relative_difference(ours, expected) <= TOLERANCE
    if rule_name == "kp":  # B <- B - lr layout(G) - lr decay B, G the forward weight's estimate
        weight_estimates = [e for e, p in zip(estimates, before) if p.dim() > 1][1:]
        stages = _stages(model)[1:]
        for after, start, estimate, (module, _) in zip(rule.state_dict()["feedback"], feedback, weight_estimates, stages):
            layout = estimate.T if isinstance(module, nn.Linear) else estimate
            assert relative_difference(after - start, -LR * layout - LR * decay * start) <= TOLERANCE


def test_the_closed_form_check_sees_a_wrong_feedback():
    # negative control: the closed form computed with BP's feedback must not match fa's step
    model = conv2d_model()
    net = bioprop.wrap(model)
    x, y = batch(MODELS["conv2d"][1])
    rule = bioprop.make_rule("fa", lr=LR, seed=4)
    rule.initialize(net)
    _, estimates = closed_form(model, x, y, _forward_weights(model))
    before = [p.detach().clone() for p in net.parameters_list()]
    rule.step(net, x, y)
    assert relative_difference(net.parameters_list()[0].detach() - before[0], -LR * estimates[0]) > 1e-3


def _rnn_closed_form(net, x, y, feedback, direct=False):
    """The RNN's deltas and estimates from nn.RNN's own hidden states; feedback = [B_hh, B_o]
    (chain) or [B] (direct, shared by the time steps)."""
    rnn = net.rnn
    with torch.no_grad():
        hidden = rnn(x)[0]  # h_1 .. h_T
        output = net.readout(hidden[:, -1])
    e = _output_error(bioprop.get_loss("mse"), output, y)
    steps = x.shape[1]
    derivative = 1 - hidden**2  # tanh'
    deltas = [None] * steps
    if direct:
        for t in range(steps):
            deltas[t] = derivative[:, t] * (e @ feedback[0].T)
    else:
        deltas[-1] = derivative[:, -1] * (e @ feedback[1].T)
        for t in range(steps - 1, 0, -1):
            deltas[t - 1] = derivative[:, t - 1] * (deltas[t] @ feedback[0].T)
    previous = torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, :-1]], dim=1)
    w_ih = sum(deltas[t].T @ x[:, t] for t in range(steps))
    w_hh = sum(deltas[t].T @ previous[:, t] for t in range(steps))
    b = sum(deltas[t].sum(0) for t in range(steps))
    batch_size = x.shape[0]
    estimates = [w_ih, w_hh, b, b, e.T @ hidden[:, -1], e.sum(0)]
    return deltas, [estimate / batch_size for estimate in estimates]


@pytest.mark.parametrize("rule_name,options", FEEDBACK_CASES)
def test_feedback_rules_on_the_rnn_equal_their_closed_form(rule_name, options):
    net = rnn_net()
    x, y = rnn_batch()
    rule = bioprop.make_rule(rule_name, lr=LR, seed=4, **options)
    rule.initialize(net)  # the RNN's keys need no batch: W_hh (shared by the time steps), the readout
    state = rule.state_dict()
    weights = [net.rnn.weight_hh_l0.detach(), net.readout.weight.detach()]
    if rule_name == "sign":
        feedback = [torch.sign(w).T * m for w, m in zip(weights, state["magnitudes"])]
    else:
        feedback = [b.clone() for b in state["feedback"]]
    assert [tuple(b.shape) for b in feedback] == ([(4, 3)] if rule_name == "dfa" else [(4, 4), (4, 3)])
    deltas, estimates = _rnn_closed_form(net, x, y, feedback, direct=rule_name == "dfa")
    before = [p.detach().clone() for p in net.parameters_list()]
    info = rule.step(net, x, y)
    decay = options.get("decay", 0.0)
    for p, p0, estimate in zip(net.parameters_list(), before, estimates):
        expected = -LR * estimate - (LR * decay * p0 if p0.dim() > 1 else 0)
        assert relative_difference(p.detach() - p0, expected) <= TOLERANCE
    for ours, expected in zip(info.deltas, deltas):
        assert relative_difference(ours, expected) <= TOLERANCE
    if rule_name == "kp":  # W_hh's estimate pooled over the time steps reaches the one B_hh
        for after, start, estimate in zip(rule.state_dict()["feedback"], feedback, [estimates[1], estimates[4]]):
            assert relative_difference(after - start, -LR * estimate.T - LR * decay * start) <= TOLERANCE


# -- autograd BP as the oracle -------------------------------------------------------------------------------
def _difference_to_bp(net, x, y, rule, steps=1):
    oracle_net = net.clone()
    oracle = bioprop.make_rule("bp", lr=LR)
    before = [p.detach().clone() for p in net.parameters_list()]
    for _ in range(steps):
        rule.step(net, x, y)
        oracle.step(oracle_net, x, y)
    assert all(float((q.detach() - p0).norm()) > 0 for q, p0 in zip(oracle_net.parameters_list(), before))
    return max(relative_difference(p.detach() - p0, q.detach() - p0)
               for p, q, p0 in zip(net.parameters_list(), oracle_net.parameters_list(), before))


def _nets():
    for name in ("conv2d", "conv1d"):
        factory, shape = MODELS[name]
        yield name, (lambda factory=factory: bioprop.wrap(factory())), batch(shape)
    yield "rnn", rnn_net, rnn_batch()


def _bp_feedback(net):
    levels = net.levels_for(None)
    return [level.to_feedback_layout(level.forward_weight.detach()).clone() for index, level in enumerate(levels)
            if index > 0 or isinstance(level, bioprop.levels.ElmanLevel)]


@pytest.mark.parametrize("case", ["conv2d", "conv1d", "rnn"])
def test_fa_with_the_forward_weights_is_bp(case):
    name, make, (x, y) = next(item for item in _nets() if item[0] == case)
    net = make()
    exact = bioprop.make_rule("fa", lr=LR)
    exact.initialize(net, _bp_feedback(net))
    assert _difference_to_bp(net, x, y, exact) <= TOLERANCE
    assert _difference_to_bp(make(), x, y, bioprop.make_rule("fa", lr=LR, seed=1)) > 1e-3  # negative control


@pytest.mark.parametrize("case", ["conv2d", "rnn"])
def test_kp_started_at_the_forward_weights_stays_bp(case):
    name, make, (x, y) = next(item for item in _nets() if item[0] == case)
    net = make()
    rule = bioprop.make_rule("kp", lr=LR, decay=0.0)
    rule.initialize(net, _bp_feedback(net))
    assert _difference_to_bp(net, x, y, rule, steps=5) <= TOLERANCE
    assert _difference_to_bp(make(), x, y, bioprop.make_rule("kp", lr=LR, decay=0.0, seed=1), steps=5) > 1e-3


@pytest.mark.parametrize("case", ["conv2d", "conv1d", "linear", "rnn"])
def test_credit_with_balance_derivative_is_bp(case):
    if case == "rnn":
        make, (x, y) = rnn_net, rnn_batch()
    else:
        factory, shape = MODELS[case]
        make, (x, y) = (lambda: bioprop.wrap(factory())), batch(shape)
    assert _difference_to_bp(make(), x, y, bioprop.make_rule("credit", lr=LR)) <= TOLERANCE
    assert _difference_to_bp(make(), x, y, bioprop.make_rule("credit", lr=LR, balance="gaussian")) > 1e-3


@pytest.mark.parametrize("case", ["conv2d", "rnn"])
def test_credit_cuts_on_levels(case):
    # synchronous sweeps from rest over levels: exact from k = L (firing) and L - 1 (credit) on,
    # one sweep short diverges (negative controls); trace=True runs the same dynamics
    if case == "rnn":
        make, (x, y) = rnn_net, rnn_batch()
    else:
        make, (x, y) = (lambda: bioprop.wrap(conv2d_model())), batch(MODELS["conv2d"][1])
    n_levels = len(make().levels_for(x))
    exact = bioprop.make_rule("credit", lr=LR, firing_steps=n_levels, credit_steps=n_levels - 1)
    assert _difference_to_bp(make(), x, y, exact) <= TOLERANCE
    assert _difference_to_bp(make(), x, y, bioprop.make_rule("credit", lr=LR, firing_steps=n_levels - 1)) > 1e-3
    assert _difference_to_bp(make(), x, y, bioprop.make_rule("credit", lr=LR, credit_steps=n_levels - 2)) > 1e-3
    info = bioprop.make_rule("credit", lr=LR).step(make(), x, y, trace=True)
    assert info.converged and info["firing_steps"] == n_levels and len(info.trace) == 2 * n_levels - 1
    short = bioprop.make_rule("credit", lr=LR, credit_steps=1).step(make(), x, y)
    assert short.firing_converged and not short.credit_converged


def test_credit_dense_dynamics_are_for_mlps():
    with pytest.raises(BioPropError, match="dynamics='dense'.*'layered'"):
        bioprop.make_rule("credit", dynamics="dense").step(bioprop.wrap(linear_model()), *batch((4, 6)))


# -- the circuit ---------------------------------------------------------------------------------------------
def test_circuit_on_a_wrapped_linear_sequential_equals_the_mlp():
    mlp = bioprop.MLP([6, 5, 4, 3], activation="tanh", dtype=torch.float64, seed=0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        for linear, weight, bias in zip([model[0], model[2], model[4]], mlp.weights, mlp.biases):
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
    wrapped = bioprop.wrap(model)
    x, y = batch((8, 6))
    on_mlp, on_wrapped = (bioprop.make_rule("circuit", lr=LR, ratio=2, seed=5) for _ in range(2))
    for _ in range(3):
        a, b = on_mlp.step(mlp, x, y), on_wrapped.step(wrapped, x, y)
    assert relative_difference(b.output, a.output) == 0
    for linear, weight, bias in zip([model[0], model[2], model[4]], mlp.weights, mlp.biases):
        assert torch.equal(linear.weight, weight) and torch.equal(linear.bias, bias)
    for key, value in on_mlp.state_dict().items():
        other = on_wrapped.state_dict()[key]
        assert value == other if not isinstance(value, list) or not value or not isinstance(value[0], torch.Tensor) \
            else all(torch.equal(p, q) for p, q in zip(value, other))
    # negative control: another seed draws another downstream pathway, so the weights differ
    other = bioprop.make_rule("circuit", lr=LR, ratio=2, seed=6)
    twin = bioprop.wrap(copy.deepcopy(model))
    other.step(twin, x, y)
    on_wrapped.step(wrapped, x, y)
    assert not torch.equal(twin.parameters_list()[0], wrapped.parameters_list()[0])


@pytest.mark.parametrize("case", ["conv2d", "rnn"])
def test_circuit_refuses_conv_and_recurrent_nets(case):
    net, (x, y) = (rnn_net(), rnn_batch()) if case == "rnn" else (bioprop.wrap(conv2d_model()), batch(MODELS["conv2d"][1]))
    with pytest.raises(BioPropError, match="research question.*fa, kp, sign, dfa, credit"):
        bioprop.make_rule("circuit").step(net, x, y)


# -- diagnostics ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["conv2d", "rnn"])
def test_diagnostics_on_levels(case):
    name, make, (x, y) = next(item for item in _nets() if item[0] == case)
    net = make()
    exact = bioprop.make_rule("fa", lr=LR)
    exact.initialize(net, _bp_feedback(net))
    records = measure(exact, net, x, y)
    assert [r["parameter"] for r in records] == net.parameter_names()
    assert max(r["rel_update"] for r in records) <= TOLERANCE
    assert min(r["cos_delta"] for r in records if "cos_delta" in r) >= 1 - 1e-12
    assert all(abs(r["feedback_cos"] - 1) <= 1e-12 for r in records if "feedback_cos" in r)
    random = measure(bioprop.make_rule("fa", lr=LR, seed=1), net, x, y)
    assert max(r["rel_update"] for r in random) > 1e-3
    credit = measure(bioprop.make_rule("credit", lr=LR), net, x, y)
    assert max(r["rel_update"] for r in credit) <= TOLERANCE


# -- checkpoints and refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize("rule_name", ["fa", "kp", "sign", "dfa"])
def test_state_dict_round_trip_on_a_conv_net(rule_name):
    # oracle: an uninterrupted run; the state goes through torch.save / torch.load(weights_only=True)
    shape = MODELS["conv2d"][1]
    x, y = batch(shape)
    net = bioprop.wrap(conv2d_model())
    rule = bioprop.make_rule(rule_name, lr=LR, seed=7)
    for _ in range(2):
        rule.step(net, x, y)
    buffer = io.BytesIO()
    torch.save({"net": net.state_dict(), "rule": rule.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    restored_net = bioprop.wrap(conv2d_model())
    restored_net.load_state_dict(saved["net"])
    restored = bioprop.make_rule(rule_name, lr=LR, seed=123)
    restored.load_state_dict(saved["rule"])
    for _ in range(2):
        rule.step(net, x, y)
        restored.step(restored_net, x, y)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters_list(), restored_net.parameters_list()))
    # a net of other shapes is refused, naming what the matrices were drawn for
    other = bioprop.wrap(nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                                       nn.Conv2d(5, 4, 3, stride=2, padding=2, dilation=2), nn.ReLU(), nn.Flatten(),
                                       nn.Linear(16, 5), nn.Sigmoid(), nn.Linear(5, 3)).double())
    with pytest.raises(BioPropError, match=r"drew its .* for parameters .*initialize\(net\)"):
        restored.step(other, x, y)
    mlp = bioprop.MLP([6, 5, 3], dtype=torch.float64, seed=0)
    with pytest.raises(BioPropError, match=r"drew its .* for parameters .* sizes \[6, 5, 3\]"):
        restored.step(mlp, *batch((6, 6)))


def test_dfa_on_a_conv_net_fixes_its_shapes_from_the_first_batch():
    net = bioprop.wrap(conv2d_model())
    rule = bioprop.make_rule("dfa")
    with pytest.raises(BioPropError, match="x="):
        rule.initialize(net)
    x, y = batch(MODELS["conv2d"][1])
    rule.step(net, x, y)
    assert [tuple(b.shape) for b in rule.state_dict()["feedback"]] == [(48, 3), (16, 3), (5, 3)]
    other = bioprop.wrap(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                                       nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2), nn.ReLU(), nn.Flatten(),
                                       nn.Linear(16, 5), nn.Sigmoid(), nn.Linear(5, 3)).double())
    with pytest.raises(BioPropError, match=r"drew its feedback for parameters 0.weight \(48, 3\)"):
        rule.step(other, x, y)  # other rates at level 1: (2, 4, 4) per sample


def test_feedback_alignment_on_levels():
    # cos(B, W in the feedback layout) per key: 1 for BP's feedback; sign's is positive; dfa's
    # product-path figure is defined on Linear chains only (absent from the diagnostics elsewhere)
    x, y = batch(MODELS["conv2d"][1])
    net = bioprop.wrap(conv2d_model())
    fa = bioprop.make_rule("fa")
    fa.initialize(net, _bp_feedback(net))
    assert fa.feedback_alignment(net) == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    assert all(0 < c < 1 for c in bioprop.make_rule("sign").feedback_alignment(net))
    dfa = bioprop.make_rule("dfa")
    dfa.step(net, x, y)
    assert [tuple(b.shape) for b in dfa.feedback(net, x)] == [(48, 3), (16, 3), (5, 3)]
    with pytest.raises(BioPropError, match="Linear weights"):
        dfa.feedback_alignment(net, x)
    assert dfa.alignment_by_parameter(net, x) == {}
    rnn = rnn_net()
    kp = bioprop.make_rule("kp")
    kp.initialize(rnn, _bp_feedback(rnn))
    assert kp.feedback_alignment(rnn) == pytest.approx([1.0, 1.0], abs=1e-12)
