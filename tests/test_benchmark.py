"""`bioprop benchmark`: the command's outputs and its plain-PyTorch reference (no timed assertions)."""
from __future__ import annotations

import json

import pytest
import torch

from bioprop import BioPropError, make_rule
from bioprop.benchmark import (
    build_pair, cpu_name, default_cases, make_batch, mlp_spec, network_spec, reference_loss, reference_step,
)
from bioprop.cli import main
from bioprop.network import MLP
from bioprop.rules.base import LearningRule

SPECS = ["mlp", "lenet5", "rnn"]


def _spec(name):
    return network_spec(name)


def _paired_parameters(spec, net, model):
    """(rule network's parameter, reference's parameter) pairs, matched by role."""
    if isinstance(net, MLP):
        linears = [module for module in model if isinstance(module, torch.nn.Linear)]
        pairs = [(w, linear.weight) for w, linear in zip(net.weights, linears)]
        return pairs + [(b, linear.bias) for b, linear in zip(net.biases, linears)]
    if spec.name == "lenet5":
        return list(zip(net.module.parameters(), model.parameters()))
    return list(zip(net.rnn.parameters(), model.rnn.parameters())) + list(zip(net.readout.parameters(), model.readout.parameters()))


@pytest.mark.parametrize("name", SPECS)
def test_reference_starts_from_the_rules_weights_and_trains(name):
    spec = _spec(name)
    net, model = build_pair(spec, torch.float32, torch.device("cpu"))
    pairs = _paired_parameters(spec, net, model)
    assert len(pairs) == len(net.parameters_list()) == len(list(model.parameters()))
    for ours, theirs in pairs:
        assert torch.equal(ours, theirs)
        assert ours.data_ptr() != theirs.data_ptr()  # a separate copy, not shared storage
    before = [p.detach().clone() for p in net.parameters_list()]
    batch = make_batch(spec, 16, torch.float32, torch.device("cpu"))
    step = reference_step(spec, model, batch, lr=0.01 if spec.loss == "mse" else 0.1)
    losses = []
    for _ in range(4):
        with torch.no_grad():
            losses.append(float(reference_loss(spec, model(batch.x), batch)))
        step()
    with torch.no_grad():
        losses.append(float(reference_loss(spec, model(batch.x), batch)))
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    # training the reference leaves the rule's network alone
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters_list()))


@pytest.mark.parametrize("name", SPECS)
def test_one_reference_step_is_one_step_of_our_bp_rule(name):
    # same network, batch, loss and lr: plain PyTorch's SGD step equals our autograd BP step
    spec = _spec(name)
    cpu = torch.device("cpu")
    batch = make_batch(spec, 8, torch.float64, cpu)

    def gap(reference_seed):
        net, _ = build_pair(spec, torch.float64, cpu, seed=0)
        _, model = build_pair(spec, torch.float64, cpu, seed=reference_seed)
        reference_step(spec, model, batch, lr=0.05)()
        make_rule("bp", lr=0.05, loss=spec.loss).step(net, batch.x, batch.targets)
        return max(float((ours - theirs).detach().norm() / theirs.detach().norm()) for ours, theirs in _paired_parameters(spec, net, model))

    assert gap(reference_seed=0) <= 1e-10
    assert gap(reference_seed=1) > 1e-3  # negative control: a reference from other weights must fail the check


def test_quick_command_writes_json_and_markdown(tmp_path, capsys):
    json_out, markdown_out = tmp_path / "bench.json", tmp_path / "bench.md"
    # one thread: a busy shared machine slows multi-threaded steps by orders of magnitude
    argv = ["benchmark", "--quick", "--threads", "1", "--sizes", "8", "6", "3", "--batch", "8",
            "--json-out", str(json_out), "--markdown-out", str(markdown_out)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "x torch" in out and "threads" in out and "torch " + torch.__version__ in out
    data = json.loads(json_out.read_text())
    env = data["environment"]
    assert env["cpu"] == cpu_name() and env["torch"] == torch.__version__ and env["gpu"] is None
    assert env["threads"] == 1 and env["dtype"] == "float32" and env["batch"] == 8
    assert env["device"] == "cpu" and env["bioprop"]
    assert data["settings"]["repeats"] == 3 and "ABBA" in data["method"]
    (network,) = data["networks"]
    assert network["network"] == "mlp 8-6-3" and network["loss"] == "mse"
    rows = network["rows"]
    assert [row["case"] for row in rows] == list(default_cases())
    for row in rows:
        assert row["supported"], row
        ms, reference = row["ms"], row["reference_ms"]
        assert 0 < ms["min"] <= ms["median"] <= ms["max"]
        assert 0 < reference["min"] <= reference["median"] <= reference["max"]
        assert row["blocks"] == 3 and len(row["samples_ms"]) == len(row["reference_samples_ms"]) == 3
        assert row["ratio"] == pytest.approx(ms["median"] / reference["median"])
        assert row["paired_ratio"] > 0
    bp = next(row for row in rows if row["case"] == "bp")
    assert bp["ratio_to_bp"] == pytest.approx(1.0)
    table = markdown_out.read_text()
    assert "| rule | mlp 8-6-3 (mse) |" in table and "| plain PyTorch (ms) |" in table
    for label in default_cases():
        assert f"| {label} | " in table
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


class _NotOnThisNet(LearningRule):
    name = "notyet"
    benchmark_cases = {"notyet": {}}

    def _step(self, net, x, y, trace):
        raise BioPropError(f"net: {net.describe()} is not supported by this rule yet")


class _NotPorted(LearningRule):
    name = "unported"
    benchmark_cases = {"unported": {}}

    def _step(self, net, x, y, trace):
        return net.weights  # a rule written for MLPs only: AttributeError elsewhere


def test_unsupported_rules_get_a_row_not_a_crash(tmp_path, capsys, monkeypatch):
    from bioprop import rules

    monkeypatch.setitem(rules.RULES, "notyet", _NotOnThisNet)
    monkeypatch.setitem(rules.RULES, "unported", _NotPorted)
    json_out, markdown_out = tmp_path / "b.json", tmp_path / "b.md"
    argv = ["benchmark", "--quick", "--threads", "1", "--networks", "rnn", "--rules", "notyet", "unported", "--batch", "4",
            "--device", "auto", "--json-out", str(json_out), "--markdown-out", str(markdown_out)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "not supported: net: an ElmanRNN" in out
    (network,) = json.loads(json_out.read_text())["networks"]
    rows = {row["case"]: row for row in network["rows"]}
    assert list(rows) == ["bp", "notyet", "unported"] and rows["bp"]["supported"]
    for case in ("notyet", "unported"):
        assert not rows[case]["supported"] and rows[case]["ratio"] is None and rows[case]["ms"] is None
    assert "is not supported by this rule yet" in rows["notyet"]["reason"]
    assert rows["unported"]["reason"].startswith("AttributeError")
    table = markdown_out.read_text()
    assert "| notyet | not supported |" in table and "- unported on rnn: not supported: AttributeError" in table


def test_lenet5_runs_through_the_command(tmp_path):
    json_out = tmp_path / "b.json"
    assert main(["benchmark", "--quick", "--threads", "1", "--networks", "lenet5", "--rules", "bp", "--batch", "4",
                 "--json-out", str(json_out)]) == 0
    (network,) = json.loads(json_out.read_text())["networks"]
    assert network["network"] == "lenet5" and network["loss"] == "ce" and network["rows"][0]["supported"]


@pytest.mark.parametrize(
    "argv",
    [
        ["benchmark", "--block-time", "0"],
        ["benchmark", "--threads", "0"],
        ["benchmark", "--device", "cuda:x"],
        ["benchmark", "--sizes", "8", "0", "--quick"],
        ["benchmark", "--quick", "--sizes", "4", "3", "--json-out", "/nonexistent-folder/b.json"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_mlp_spec_names_the_widths():
    assert mlp_spec([8, 6, 3]).name == "mlp 8-6-3"
    assert network_spec("mlp").sizes == (784, 256, 256, 256, 10)


def test_a_case_stops_at_its_share_of_the_time_budget_after_the_minimum_rounds():
    from bioprop.benchmark import Budget, Settings, time_interleaved

    settings = Settings(repeats=6, warmup=0, block_time=1e-4, threads=1, min_repeats=3)
    reference, rule = time_interleaved(lambda: None, lambda: None, settings, allowance=0.0)
    assert reference.blocks == rule.blocks == 3
    reference, rule = time_interleaved(lambda: None, lambda: None, settings)
    assert reference.blocks == rule.blocks == 6 and len(rule.samples) == 6
    budget = Budget(0.0, cases=4)
    assert budget.next_case() == 0.0 and budget.cases_left == 3


def test_the_default_devices_are_the_cpu_and_cuda_when_present(monkeypatch):
    from bioprop import benchmark

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert benchmark._devices("all") == [torch.device("cpu")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert benchmark._devices("all") == [torch.device("cpu"), torch.device("cuda")]
    assert benchmark._devices("cpu") == [torch.device("cpu")]


def test_json_rows_carry_their_device(tmp_path):
    json_out, markdown_out = tmp_path / "b.json", tmp_path / "b.md"
    assert main(["benchmark", "--quick", "--threads", "1", "--sizes", "6", "4", "3", "--rules", "fa", "--batch", "4",
                 "--json-out", str(json_out), "--markdown-out", str(markdown_out)]) == 0
    report = json.loads(json_out.read_text())
    assert report["environment"]["devices"] == (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    assert {network["device"] for network in report["networks"]} == set(report["environment"]["devices"])
    assert "| fa |" in markdown_out.read_text()
