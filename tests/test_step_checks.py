"""rule.step's contract without host synchronisation: the loss a detached 0-d tensor, and the
batch's value checks (finite x and y, labels in range) still refusing bad input by name, at once
on the CPU and through the deferred device-side flag on accelerators (simulated here on the CPU
by marking the CPU as a deferring device)."""
import math

import pytest
import torch

import bioprop
from bioprop import batches
from bioprop.batches import DeviceChecks, prechecked
from bioprop.errors import BioPropError

RULES = ["bp", "zil", "fa", "kp", "sign", "dfa", "credit"]


def _net():
    return bioprop.MLP([4, 5, 3], dtype=torch.float64, seed=0)


def _batch():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(6, 4, generator=generator, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0, 2])


@pytest.mark.parametrize("name", RULES)
def test_the_loss_is_a_detached_0d_tensor_equal_to_the_batch_loss(name):
    net = _net()
    x, y = _batch()
    with torch.no_grad():
        expected = float(bioprop.losses.get_loss("mse")(net(x), torch.nn.functional.one_hot(y, 3).double()))
    loss = bioprop.make_rule(name, lr=0.1).step(net, x, y).loss
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and not loss.requires_grad
    assert loss.dtype == net.dtype and loss.device == net.device
    assert math.isclose(float(loss), expected, rel_tol=1e-12)


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("bad,named", [
    ("x_nan", "x: contains NaN"), ("x_inf", "x: contains NaN"), ("y_inf", "y: contains NaN"),
    ("label_high", r"y: integer labels must lie in \[0, 3\)"), ("label_negative", r"y: integer labels must lie in \[0, 3\)"),
])
def test_bad_batches_are_refused_by_name_before_any_write(name, bad, named):
    net = _net()
    before = [p.detach().clone() for p in net.parameters_list()]
    x, y = _batch()
    if bad == "x_nan":
        x[2, 1] = math.nan
    elif bad == "x_inf":
        x[0, 0] = -math.inf
    elif bad == "y_inf":
        y = torch.nn.functional.one_hot(y, 3).double()
        y[4, 2] = math.inf
    elif bad == "label_high":
        y[3] = 3
    else:
        y[5] = -1
    with pytest.raises(BioPropError, match=named):
        bioprop.make_rule(name, lr=0.1).step(net, x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters_list()))


def test_a_finite_batch_whose_sum_overflows_is_accepted():
    # the CPU check reads sum(x); finite entries that overflow it are checked one by one
    net = bioprop.MLP([4, 3], dtype=torch.float32, seed=0)
    x = torch.full((2, 4), 3e38)
    assert not math.isfinite(float(x.sum()))
    bioprop.make_rule("fa", lr=1e-40).step(net, x, torch.tensor([0, 1]))
    control = x.clone()
    control[1, 3] = math.inf  # the negative control: a true infinity among them is refused
    with pytest.raises(BioPropError, match="x: contains NaN"):
        bioprop.make_rule("fa", lr=1e-40).step(net, control, torch.tensor([0, 1]))


def test_prechecked_steps_skip_the_value_checks():
    net = _net()
    x, y = _batch()
    x[0, 0] = math.nan
    with prechecked():
        loss = bioprop.make_rule("bp", lr=0.1).step(net, x, y).loss
    assert math.isnan(float(loss))


@pytest.fixture
def deferring(monkeypatch):
    """The CPU treated as an accelerator: batches flagged on the device, the flag read at the
    first step and then every 4 steps."""
    checks = DeviceChecks()
    monkeypatch.setattr(DeviceChecks, "deferring", staticmethod(lambda device: True))
    monkeypatch.setattr(batches, "DEVICE_CHECKS", checks)
    monkeypatch.setattr(batches, "CHECK_INTERVAL", 4)
    return checks


@pytest.mark.parametrize("name", ["bp", "fa", "credit"])
def test_deferred_checks_raise_at_the_first_step_on_a_device(deferring, name):
    x, y = _batch()
    x[1, 1] = math.inf
    with pytest.raises(BioPropError, match=r"x: contains NaN or infinite values.*this step's batch"):
        bioprop.make_rule(name, lr=0.1).step(_net(), x, y)


def test_deferred_checks_name_the_input_at_the_next_read(deferring):
    net, rule = _net(), bioprop.make_rule("fa", lr=0.1)
    x, y = _batch()
    rule.step(net, x, y)  # the first step: read, clean
    bad = x.clone()
    bad[0, 3] = math.nan
    rule.step(net, x, y)
    rule.step(net, bad, y)  # flagged on the device, not read yet
    rule.step(net, x, y)
    with pytest.raises(BioPropError, match=r"x: contains NaN or infinite values.*one of the last 4 batches"):
        rule.step(net, x, y)  # the 4th unread batch: the flag is read
    rule.step(net, x, y)  # read again from a clean flag
    for _ in range(3):
        rule.step(net, x, y)


def test_deferred_checks_clamp_and_report_labels_out_of_range(deferring):
    net, rule = _net(), bioprop.make_rule("bp", lr=0.1)
    x, y = _batch()
    rule.step(net, x, y)
    y_bad = y.clone()
    y_bad[2] = 7  # a one-hot of 7 among 3 classes would be a device assert on an accelerator
    for _ in range(3):
        rule.step(net, x, y_bad)
    with pytest.raises(BioPropError, match=r"y: integer labels must lie in \[0, 3\).*last 4 batches"):
        rule.step(net, x, y)


def test_deferred_checks_accept_a_finite_batch_whose_sum_overflows(deferring):
    net = bioprop.MLP([4, 3], dtype=torch.float32, seed=0)
    x = torch.full((2, 4), 3e38)
    rule = bioprop.make_rule("fa", lr=1e-40)
    for _ in range(5):  # read at the first step and at the 4th after it
        rule.step(net, x, torch.tensor([0, 1]))


def test_check_pending_reads_the_flag_now(deferring):
    net, rule = _net(), bioprop.make_rule("bp", lr=0.1)
    x, y = _batch()
    rule.step(net, x, y)
    targets = torch.nn.functional.one_hot(y, 3).double()
    targets[0, 0] = math.nan
    rule.step(net, x, targets)
    with pytest.raises(BioPropError, match="y: contains NaN"):
        batches.check_pending(net.device)
    batches.check_pending(net.device)  # read and cleared


# -- what a step caches between steps stays true to the network ------------------------------------
def test_a_wrapped_net_follows_a_replaced_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    net, rule = bioprop.wrap(model), bioprop.make_rule("fa", lr=0.1)
    x, y = _batch()
    rule.step(net, x, y)
    model[2].weight = torch.nn.Parameter(torch.zeros(3, 5, dtype=torch.float64))
    assert net.parameters_list()[2] is model[2].weight
    assert net.levels_for(x)[1].weight is model[2].weight
    rule.step(net, x, y)
    assert model[2].weight.abs().sum() > 0  # the step wrote the new tensor
    assert all(a is b for a, b in zip(net.parameters_list(), model.parameters()))


def test_the_mlp_forward_is_the_forward_pass_bit_for_bit():
    for input_map in ("identity", "activation"):
        net = bioprop.MLP([4, 6, 5, 3], activation="tanh", input_map=input_map, dtype=torch.float64, seed=1)
        x, _ = _batch()
        assert torch.equal(net(x), net.forward_pass(x).output)


@pytest.mark.parametrize("magnitude", ["unit", "random"])
def test_sign_step_feedback_equals_its_definition_and_is_not_shared(magnitude):
    net, rule = _net(), bioprop.make_rule("sign", lr=0.1, magnitude=magnitude)
    x, y = _batch()
    rule.step(net, x, y)
    levels = net.levels_for(x)
    keyed = rule.keyed_levels(net, levels, None)
    expected = rule.feedback_from(net, levels, keyed)
    assert all(torch.equal(a, b) for a, b in zip(rule.step_feedback(net, levels, keyed), expected))
    public = rule.feedback(net)
    rule.step(net, x, y)  # reuses its buffers; what feedback() returned is the caller's
    assert all(torch.equal(a, b) for a, b in zip(public, expected))


def test_stacked_parameter_vjps_of_shared_levels_equal_the_per_level_sum():
    from bioprop.sweeps import backward_sweep, pool, stacked_groups

    rnn = bioprop.ElmanRNN(input_size=3, hidden_size=5, output_size=4, activation="tanh", bias=True,
                           dtype=torch.float64, seed=0)
    x = torch.rand(6, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        forward = rnn.forward_pass(x)
        error = torch.rand(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        assert stacked_groups(forward.levels) == [list(range(7))]  # the time steps; not the readout
        deltas, per_level = backward_sweep(forward, error)
        stacked_deltas, stacked = backward_sweep(forward, error, stack_shared=True)
        expected = pool(rnn, forward.levels, per_level)
        totals = pool(rnn, forward.levels, stacked)
        assert all(torch.equal(a, b) for a, b in zip(deltas, stacked_deltas))
        for a, b in zip(totals, expected):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
        # the negative control: a time step left out of the sum is seen
        short = pool(rnn, forward.levels, [[] if index == 3 else changes for index, changes in enumerate(per_level)])
        assert not torch.allclose(short[1], expected[1], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["mse", "ce"])
def test_the_oracles_fused_loss_is_the_loss_and_its_gradient(name):
    from bioprop.losses import get_loss
    from bioprop.rules.bp import autograd_loss

    generator = torch.Generator().manual_seed(4)
    output = torch.randn(9, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    target = torch.softmax(torch.randn(9, 5, dtype=torch.float64, generator=generator), dim=-1)
    loss = get_loss(name)
    fused = autograd_loss(loss, output, target)
    (gradient,) = torch.autograd.grad(fused, output)
    assert math.isclose(float(fused.detach()), float(loss(output, target).detach()), rel_tol=1e-14)
    expected = loss.output_error(output.detach(), target) / output.shape[0]  # dLoss/dz_L of the batch mean
    assert torch.allclose(gradient, expected, rtol=1e-12, atol=1e-15)
    # the negative control: torch's own mean reduction of the squared error is another loss
    (other,) = torch.autograd.grad(torch.nn.functional.mse_loss(output, target), output)
    assert not torch.allclose(other, expected, rtol=1e-3, atol=0)


def test_flags_still_unread_at_exit_are_reported(deferring, capsys):
    net, rule = _net(), bioprop.make_rule("bp", lr=0.1)
    x, y = _batch()
    rule.step(net, x, y)  # the first step: read, clean
    bad = x.clone()
    bad[0, 0] = math.nan
    rule.step(net, bad, y)  # flagged, and the program would end before the next read
    batches._unread_at_exit()
    assert "x: contains NaN or infinite values" in capsys.readouterr().err
    batches._unread_at_exit()  # read and cleared: nothing more to say
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", ["fa", "kp", "sign", "credit"])
def test_an_rnn_steps_two_bias_estimates_are_two_tensors(name):
    # an Elman step's bias VJP serves b_ih and b_hh: the pooled totals must not be one object
    net = bioprop.ElmanRNN(3, 4, 3, dtype=torch.float64, seed=2)
    x = torch.randn(5, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1])
    estimates = bioprop.make_rule(name, lr=0.1).step(net, x, y).gradient_estimates
    named = dict(zip(net.parameter_names(), estimates))
    bias_ih, bias_hh = named["rnn.bias_ih_l0"], named["rnn.bias_hh_l0"]
    assert bias_ih is not bias_hh and torch.equal(bias_ih, bias_hh)
    bias_ih.mul_(0)
    assert bias_hh.abs().sum() > 0


@pytest.mark.parametrize("name", ["fa", "dfa", "credit"])
def test_a_result_with_fields_not_yet_read_pickles(name, tmp_path):
    net = bioprop.MLP([4, 5, 3], dtype=torch.float64, seed=0)
    x, y = torch.rand(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    result = bioprop.make_rule(name, lr=0.1).step(net, x, y)
    torch.save(result, tmp_path / "result.pt")  # before any deferred field was read
    loaded = torch.load(tmp_path / "result.pt", weights_only=False)
    assert all(torch.equal(a, b) for a, b in zip(loaded.deltas, result.deltas))


def test_scalars_keep_the_python_number_in_half_precisions():
    from bioprop.sweeps import scalar

    values = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        operand = values.to(dtype)
        assert torch.equal(operand * scalar(0.00015625, operand), operand * 0.00015625)
