"""The public API's contract and its errors for bad input."""
import math

import pytest
import torch

import bioprop
from bioprop.cli import main
from bioprop.errors import BioPropError


def test_mlp_contract():
    net = bioprop.MLP([64, 32, 32, 10], activation="sigmoid", bias=True, dtype=torch.float64, seed=0)
    assert [tuple(w.shape) for w in net.weights] == [(32, 64), (32, 32), (10, 32)]
    assert [tuple(b.shape) for b in net.biases] == [(32,), (32,), (10,)]
    assert net(torch.zeros(5, 64, dtype=torch.float64)).shape == (5, 10)
    assert bioprop.MLP([4, 3], bias=False).biases is None
    again = bioprop.MLP([64, 32, 32, 10], activation="sigmoid", dtype=torch.float64, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.weights, again.weights))


@pytest.mark.parametrize("name", ["bp", "il", "zil", "fazil"])
def test_step_updates_in_place_and_reports(name):
    net = bioprop.MLP([6, 5, 3], dtype=torch.float64, seed=0)
    before = [w.detach().clone() for w in net.weights]
    info = bioprop.make_rule(name, lr=0.1).step(net, torch.rand(4, 6), torch.tensor([0, 1, 2, 1]), trace=True)
    # the contract: the loss is a detached 0-d tensor (no host sync per step); float() reads it
    loss = info["loss"]
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and not loss.requires_grad
    assert math.isfinite(float(loss)) and info["output"].shape == (4, 3)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.weights))
    if name != "bp":
        entry = info["trace"][0]
        assert len(entry["value_nodes"]) == 2 and len(entry["error_nodes"]) == 2


def test_trace_shows_the_feedback_front():
    net = bioprop.MLP([6, 5, 5, 3], dtype=torch.float64, seed=0)
    trace = bioprop.make_rule("zil", lr=0.1).step(net, torch.rand(2, 6), torch.rand(2, 3), trace=True)["trace"]
    assert [entry["updated_layers"] for entry in trace] == [[3], [2], [1]]


@pytest.mark.parametrize(
    "call,named",
    [
        (lambda: bioprop.make_rule("nope"), "rule"),
        (lambda: bioprop.make_rule("zil", gamma=-1), "gamma"),
        (lambda: bioprop.make_rule("zil", bogus=1), "bogus"),
        (lambda: bioprop.make_rule("zil", loss="hinge"), "loss"),
        (lambda: bioprop.MLP([4]), "sizes"),
        (lambda: bioprop.MLP([4, 3], activation="swish"), "activation"),
    ],
)
def test_bad_arguments_are_named(call, named):
    with pytest.raises(BioPropError, match=named):
        call()


@pytest.mark.parametrize(
    "x,y,named",
    [
        (torch.rand(4, 5), torch.rand(4, 3), "x"),
        (torch.rand(4, 6), torch.rand(4, 2), "y"),
        (torch.rand(4, 6), torch.rand(3, 3), "batch sizes"),
        (torch.full((4, 6), float("nan")), torch.rand(4, 3), "NaN"),
        (torch.rand(4, 6), torch.tensor([0, 1, 2, 3]), "labels"),
    ],
)
def test_bad_batches_are_named(x, y, named):
    net = bioprop.MLP([6, 5, 3], seed=0)
    with pytest.raises(BioPropError, match=named):
        bioprop.make_rule("zil").step(net, x, y)


def test_verify_command_exit_codes(capsys, monkeypatch):
    assert main(["verify", "--rule", "zil", "--steps", "2"]) == 0
    assert "EXACT" in capsys.readouterr().out
    # a rule that claims exactness but is not exact must make verify fail
    from bioprop import rules
    from bioprop.rules.il import InferenceLearning

    class PretendExact(InferenceLearning):
        claims_exactness = True

    monkeypatch.setitem(rules.RULES, "pretend", PretendExact)
    assert main(["verify", "--rule", "pretend"]) == 1
    assert "NOT EXACT" in capsys.readouterr().out
    assert main(["verify", "--rule", "nope"]) == 2
    assert main(["verify", "--rule", "bp"]) == 2  # the oracle is not verified against itself
    assert main(["verify", "--rule", "zil", "--option", "dynamics=front"]) == 0  # controls still run


@pytest.mark.parametrize(
    "argv",
    [
        ["benchmark", "--repeats", "0"],
        ["benchmark", "--device", "foo"],
        ["benchmark", "--rules", "nope"],
        ["benchmark", "--sizes", "4"],
        ["fazil-detection", "--pairs", "0"],
        ["reproduce", "song2020-ablation", "--dataset", "nope"],
    ],
)
def test_bad_command_lines_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_il_fixed_cross_entropy_clamp_is_available():
    # the SPEC's letter (error held at its feed-forward value) differs from our moving teacher
    x, y = torch.rand(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    nets = {}
    for teacher in ("moving", "fixed"):
        nets[teacher] = bioprop.MLP([6, 5, 5, 3], activation="tanh", dtype=torch.float64, seed=0)
        bioprop.make_rule("il", lr=0.1, loss="ce", ce_teacher=teacher).step(nets[teacher], x, y)
    assert not torch.equal(nets["moving"].weights[0], nets["fixed"].weights[0])


def test_benchmark_command_prints_ratios(capsys):
    assert main(["benchmark", "--sizes", "8", "6", "3", "--repeats", "2", "--warmup", "1", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "x BP" in out and "zil" in out
