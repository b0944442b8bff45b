"""Data-parallel training (torch.distributed, gloo, 2 CPU processes on loopback) equals one process.

Oracle: the same rule trained in this process on the same 64-sample batches; for zil also
single-process bp. float64, <= 1e-10 relative per tensor.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bioprop

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from tests_distributed_cases import CASES, batches, make_net  # noqa: E402


def relative_difference(a, b):
    scale = b.norm()
    return float((a - b).norm() / scale) if scale > 0 else float((a - b).norm())


def _torchrun(args, timeout=240, env=None):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
                   "OMP_NUM_THREADS": "1", "BIOPROP_DIST_TIMEOUT": "60", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "weights.pt"
    finished = _torchrun([str(HERE / "distributed_worker.py"), str(out)])
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return torch.load(out, weights_only=True)


def _one_process(rule_name, options, model):
    net = make_net(model)
    rule = bioprop.make_rule(rule_name, lr=0.1, loss="ce", **options)
    for x, y in batches(model):
        rule.step(net, x, y)
    return [p.detach().clone() for p in net.parameters_list()] + [t.clone() for t in rule.plastic_tensors()]


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one(two_process_results, name):
    rule_name, options, model = CASES[name]
    expected = _one_process(rule_name, options, model)
    start = [p.detach().clone() for p in make_net(model).parameters_list()]
    got = two_process_results[name]
    assert len(got) == len(expected)
    # not vacuous: training moved every parameter
    assert all(float((e - s).norm()) > 0 for e, s in zip(expected, start))
    for a, b in zip(got, expected):
        assert relative_difference(a, b) <= 1e-10


def test_two_process_zil_equals_one_process_bp(two_process_results):
    expected = _one_process("bp", {}, "mlp")
    for a, b in zip(two_process_results["zil"], expected):
        assert relative_difference(a, b) <= 1e-10


def test_unsharded_local_steps_would_differ(two_process_results):
    # negative control: one process trained on half of every batch (what a rank computes without
    # the all-reduce) is far from the data-parallel result
    net = make_net("mlp")
    rule = bioprop.make_rule("bp", lr=0.1, loss="ce")
    for x, y in batches("mlp"):
        rule.step(net, x[:32], y[:32])
    assert max(relative_difference(p.detach(), q) for p, q in zip(net.parameters_list(), two_process_results["bp"])) > 1e-3
