"""The level primitives (bioprop.levels) against torch.func, float64, and bioprop.wrap's contract.

Oracles: `GenericLevel` (torch.func.vjp through the torch module itself) for every closed-form
level's forward map, input VJP (with the forward weight and with a replaced weight) and
parameter VJP; a functional Elman step and torch.nn.RNN for ElmanLevel; `generic_rate_vjp`
(torch.func through the rate function's forward) and the torch modules themselves for every
RateOp. Negative controls: a perturbed kernel, a replaced weight in the wrong layout and a pooling
with other settings must fail the same checks.
"""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import bioprop
from bioprop.errors import BioPropError
from bioprop.levels import (
    ElmanLevel,
    GenericLevel,
    LinearLevel,
    RateFunction,
    generic_rate_vjp,
    level_of,
    rate_op_of,
)

from conftest import relative_difference


pytestmark = pytest.mark.usefixtures("one_thread")


TOLERANCE = 1e-12


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=_generator(seed), dtype=torch.float64)


def _check_level(module, r):
    """Every primitive of level_of(module) against GenericLevel(module); returns the worst
    relative difference (so the negative control can use the same routine)."""
    level = level_of(module, RateFunction(), "test")
    generic = GenericLevel(module, RateFunction())
    z = level.forward(r)
    grad_z = _randn(*z.shape, seed=1)
    feedback = _randn(*level.feedback_shape(), seed=2)
    # GenericLevel replaces the module's weight (W's layout); the level's feedback is in its own
    # layout, so the generic reference gets the same tensor brought back to W's layout
    feedback_in_w_layout = feedback.T if isinstance(level, LinearLevel) else feedback
    differences = [
        relative_difference(z, generic.forward(r)),
        relative_difference(level.input_vjp(grad_z, r), generic.input_vjp(grad_z, r)),
        relative_difference(level.input_vjp(grad_z, r, feedback), generic.input_vjp(grad_z, r, feedback_in_w_layout)),
    ]
    for ours, reference in zip(level.parameter_vjp(grad_z, r), generic.parameter_vjp(grad_z, r)):
        differences.append(relative_difference(ours, reference))
    grad_r, changes = level.backward(grad_z, r)  # the one-call form
    differences.append(relative_difference(grad_r, generic.input_vjp(grad_z, r)))
    for ours, reference in zip(changes, generic.parameter_vjp(grad_z, r)):
        differences.append(relative_difference(ours, reference))
    return max(differences)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_level_equals_torch_func(bias):
    module = nn.Linear(5, 4, bias=bias).double()
    assert _check_level(module, _randn(6, 5)) <= TOLERANCE


CONV_CASES = [
    # dims, in, out, kernel, stride, padding, dilation, input spatial size
    (1, 2, 3, 3, 1, 0, 1, (9,)),
    (1, 2, 3, 4, 2, 1, 1, (11,)),
    (1, 3, 2, 3, 3, 2, 2, (13,)),
    (2, 2, 3, 3, 1, 1, 1, (7, 6)),
    (2, 1, 4, (3, 2), (2, 1), (1, 0), (1, 2), (9, 8)),
    (2, 3, 2, 3, 2, 2, 2, (10, 11)),
]


@pytest.mark.parametrize("dims,c_in,c_out,kernel,stride,padding,dilation,spatial", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_level_equals_torch_func(dims, c_in, c_out, kernel, stride, padding, dilation, spatial, bias):
    conv = nn.Conv2d if dims == 2 else nn.Conv1d
    module = conv(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias).double()
    assert _check_level(module, _randn(3, c_in, *spatial)) <= TOLERANCE


def test_conv_level_check_fails_for_a_perturbed_kernel():
    # negative control: the closed form reads a kernel the reference does not have
    module = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    r = _randn(3, 2, 7, 7)
    level = level_of(module, RateFunction(), "test")
    perturbed = copy.deepcopy(module)
    with torch.no_grad():
        perturbed.weight.add_(1e-3 * _randn(*perturbed.weight.shape, seed=5))
    generic = GenericLevel(perturbed, RateFunction())
    grad_z = _randn(*level.forward(r).shape, seed=1)
    assert relative_difference(level.forward(r), generic.forward(r)) > 1e-6
    assert relative_difference(level.input_vjp(grad_z, r), generic.input_vjp(grad_z, r)) > 1e-6
    # and a replaced Linear weight given in W's layout instead of W^T's is not the same feedback
    linear = nn.Linear(4, 4).double()
    square = level_of(linear, RateFunction(), "test")
    feedback = _randn(4, 4, seed=3)
    grad = _randn(2, 4, seed=4)
    assert relative_difference(square.input_vjp(grad, None, feedback),
                               GenericLevel(linear, RateFunction()).input_vjp(grad, _randn(2, 4), feedback)) > 1e-3


def _elman_step(weight_ih, weight_hh, bias_ih, bias_hh, r, u):
    return u @ weight_ih.T + bias_ih + r @ weight_hh.T + bias_hh


@pytest.mark.parametrize("first", [False, True])
def test_elman_level_equals_torch_func_and_torch_rnn(first):
    rnn = nn.RNN(3, 4, batch_first=True).double()
    parameters = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]
    level = ElmanLevel(*parameters, RateFunction(), first=first)
    u = _randn(5, 3, seed=1)
    r = torch.zeros(5, 4, dtype=torch.float64) if first else torch.tanh(_randn(5, 4, seed=2))
    grad_z = _randn(5, 4, seed=3)
    feedback = _randn(4, 4, seed=4)  # W_hh^T's layout
    detached = [p.detach() for p in parameters]
    z, pullback = torch.func.vjp(lambda *p: _elman_step(*p[:4], p[4], u), *detached, r)
    # torch's own RNN: one step from hidden state r gives tanh(z)
    _, h = rnn(u[:, None], r[None])
    assert relative_difference(level.forward(r, u), z) <= TOLERANCE
    assert relative_difference(torch.tanh(level.forward(r, u)), h[0]) <= TOLERANCE
    *parameter_grads, input_grad = pullback(grad_z)
    assert relative_difference(level.input_vjp(grad_z, r), input_grad) <= TOLERANCE
    _, replaced = torch.func.vjp(lambda state: _elman_step(detached[0], feedback.T, *detached[2:], state, u), r)
    assert relative_difference(level.input_vjp(grad_z, r, feedback), replaced(grad_z)[0]) <= TOLERANCE
    for ours, reference in zip(level.parameter_vjp(grad_z, r, u), parameter_grads):
        assert relative_difference(ours, reference) <= TOLERANCE
    # negative control: the feedback in W_hh's own layout is another matrix
    assert relative_difference(level.input_vjp(grad_z, r, feedback.T), replaced(grad_z)[0]) > 1e-3


# -- rate functions -------------------------------------------------------------------------------
RATE_CASES = {
    "tanh": ([nn.Tanh()], (4, 6)),
    "sigmoid": ([nn.Sigmoid()], (4, 6)),
    "relu": ([nn.ReLU()], (4, 6)),
    "leaky relu 0.2": ([nn.LeakyReLU(0.2)], (4, 6)),
    "maxpool1d overlapping": ([nn.MaxPool1d(3, stride=2)], (2, 3, 11)),
    "maxpool1d ceil padding": ([nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True)], (2, 3, 10)),
    "maxpool1d dilation": ([nn.MaxPool1d(2, stride=1, dilation=2)], (2, 3, 9)),
    "maxpool2d": ([nn.MaxPool2d(2)], (2, 3, 6, 6)),
    "maxpool2d overlapping ceil padding": ([nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)], (2, 3, 8, 7)),
    "avgpool1d": ([nn.AvgPool1d(3, stride=2, padding=1)], (2, 3, 10)),
    "avgpool1d no pad count ceil": ([nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)], (2, 3, 10)),
    "avgpool2d": ([nn.AvgPool2d(2)], (2, 3, 6, 6)),
    "avgpool2d no pad count": ([nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)], (2, 3, 7, 8)),
    "avgpool2d divisor": ([nn.AvgPool2d(2, divisor_override=3)], (2, 3, 6, 6)),
    "flatten": ([nn.Flatten()], (2, 3, 4, 5)),
    "flatten middle": ([nn.Flatten(1, 2)], (2, 3, 4, 5)),
    "chain tanh maxpool flatten": ([nn.Tanh(), nn.MaxPool2d(2), nn.Flatten()], (2, 3, 6, 6)),
    "chain relu avgpool1d flatten": ([nn.ReLU(), nn.AvgPool1d(2), nn.Flatten()], (2, 3, 8)),
    "chain leaky maxpool1d sigmoid": ([nn.LeakyReLU(0.1), nn.MaxPool1d(2, stride=1), nn.Sigmoid()], (2, 3, 8)),
}


@pytest.mark.parametrize("case", sorted(RATE_CASES))
def test_rate_vjp_equals_torch_func(case):
    modules, shape = RATE_CASES[case]
    rate = RateFunction([rate_op_of(module, "test") for module in modules])
    z = _randn(*shape, seed=1)
    r, context = rate.forward(z)
    assert relative_difference(r, nn.Sequential(*modules)(z)) <= TOLERANCE
    grad = _randn(*r.shape, seed=2)
    reference = generic_rate_vjp(rate, z, grad)
    _, through_modules = torch.func.vjp(nn.Sequential(*modules), z)
    assert relative_difference(reference, through_modules(grad)[0]) <= TOLERANCE  # the reference is torch's own
    assert relative_difference(rate.vjp(grad, context), reference) <= TOLERANCE


def test_rate_vjp_check_fails_for_other_pooling_settings():
    # negative control: the same check, the closed form with another stride / padding mode
    z = _randn(2, 3, 8, 7, seed=1)
    reference_rate = RateFunction([rate_op_of(nn.MaxPool2d(3, stride=2, padding=1), "test")])
    other = RateFunction([rate_op_of(nn.MaxPool2d(3, stride=3, padding=1), "test")])
    r, _ = reference_rate.forward(z)
    _, context = other.forward(z)
    grad = _randn(*r.shape, seed=2)
    with pytest.raises(RuntimeError):  # shapes differ: aten refuses
        other.vjp(grad, context)
    averaged = RateFunction([rate_op_of(nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), "test")])
    counted = RateFunction([rate_op_of(nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True), "test")])
    _, context = counted.forward(z)
    assert relative_difference(counted.vjp(grad, context), generic_rate_vjp(averaged, z, grad)) > 1e-3


def test_rate_vjp_derivative_replaces_the_activation_derivative():
    # the credit rule's balance: derivative= replaces f' (and only f') in a chain
    z = _randn(2, 3, 6, 6, seed=1)
    rate = RateFunction([rate_op_of(m, "test") for m in (nn.Tanh(), nn.MaxPool2d(2), nn.Flatten())])
    r, context = rate.forward(z)
    grad = _randn(*r.shape, seed=2)
    balance = lambda s: torch.exp(-s * s)  # noqa: E731
    _, pool_vjp = torch.func.vjp(lambda a: nn.Flatten()(nn.MaxPool2d(2)(a)), torch.tanh(z))
    expected = balance(z) * pool_vjp(grad)[0]
    assert relative_difference(rate.vjp(grad, context, derivative=balance), expected) <= TOLERANCE
    assert relative_difference(rate.vjp(grad, context), expected) > 1e-3


# -- bioprop.wrap --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model,index,kind",
    [
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2)), 1, "BatchNorm2d"),
        (nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2)), 1, "Dropout"),
        (nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2), nn.Softmax(dim=1)), 3, "Softmax"),
    ],
)
def test_wrap_refuses_unsupported_modules_naming_index_and_type(model, index, kind):
    with pytest.raises(BioPropError) as raised:
        bioprop.wrap(model)
    message = str(raised.value)
    assert f"entry {index}" in message and kind in message
    assert "Linear" in message and "Conv2d" in message and "MaxPool2d" in message  # what is supported


def test_wrap_refuses_groups_and_a_final_conv():
    with pytest.raises(BioPropError, match="groups=2"):
        bioprop.wrap(nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(BioPropError, match="last parameterised module must be an nn.Linear"):
        bioprop.wrap(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Conv1d(1, 1, 1)))


def test_the_users_module_sees_every_step():
    # oracle: the user's own module after a step; model(x), state_dict() and torch.save agree
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8, 3)).double()
    net = bioprop.wrap(model)
    x, y = _randn(4, 1, 4, 4, seed=1), _randn(4, 3, seed=2)
    before = copy.deepcopy(model.state_dict())
    bioprop.make_rule("fa", lr=0.5).step(net, x, y)
    after = model.state_dict()
    assert all(not torch.equal(before[key], after[key]) for key in before)  # every parameter moved
    assert all(p is q for p, q in zip(net.parameters_list(), model.parameters()))
    assert torch.equal(net(x), model(x))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), after.values()))
    assert torch.equal(loaded(x), model(x))
