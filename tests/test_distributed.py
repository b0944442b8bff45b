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


# -- bioprop train under torchrun ------------------------------------------------------------------
def _train_args(out, epochs):
    return ["--rule", "zil", "--dataset", "digits", "--hidden", "16", "--epochs", str(epochs), "--batch-size", "64",
            "--dtype", "float64", "--quiet", "--out", str(out)]


def test_two_process_train_writes_one_run_equal_to_one_process_and_resumes(tmp_path):
    # oracle: the same `bioprop train` in one process; then --resume of the 2-process run under
    # torchrun continues it like the 1-process run continued alone
    from bioprop import cli

    single, double = tmp_path / "single", tmp_path / "double"
    assert cli.main(["train", *_train_args(single, 1)]) == 0
    finished = _torchrun(["-m", "bioprop", "train", *_train_args(double, 1)])
    assert finished.returncode == 0, finished.stdout + finished.stderr
    names = sorted(p.name for p in double.iterdir())
    assert names == sorted(p.name for p in single.iterdir()), names  # one folder, no per-rank leftovers
    config = (double / "config.yaml").read_text()
    assert "processes: 2" in config

    def weights(folder):
        return torch.load(folder / "model.pt", weights_only=True)

    a, b = weights(single), weights(double)
    assert a.keys() == b.keys()
    assert max(relative_difference(b[k], a[k]) for k in a) <= 1e-10
    metrics_a = [line for line in (single / "metrics.jsonl").read_text().splitlines()]
    metrics_b = [line for line in (double / "metrics.jsonl").read_text().splitlines()]
    import json
    ra, rb = json.loads(metrics_a[0]), json.loads(metrics_b[0])
    assert ra["test_acc"] == rb["test_acc"] and ra["train_acc"] == rb["train_acc"]
    assert abs(ra["train_loss"] - rb["train_loss"]) <= 1e-10 * abs(ra["train_loss"])

    assert cli.main(["train", "--resume", str(single), "--epochs", "2", "--quiet"]) == 0
    resumed = _torchrun(["-m", "bioprop", "train", "--resume", str(double), "--epochs", "2", "--quiet"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a, b = weights(single), weights(double)
    assert max(relative_difference(b[k], a[k]) for k in a) <= 1e-10
    # the loaded run is the trained network
    run = bioprop.load_run(double)
    assert run.epoch == 2 and all(torch.equal(p, b[k]) for k, p in run.net.state_dict().items() if k in b)


def test_a_failing_rank_ends_the_whole_run_with_an_error(tmp_path):
    # one rank fails on its input (a model factory that raises on LOCAL_RANK 1): the run must exit
    # non-zero with the rank's message, within the timeout, not hang
    factory = tmp_path / "flaky.py"
    factory.write_text(
        "import os\nfrom torch import nn\n\n"
        "def build(image_shape, n_classes):\n"
        "    if os.environ.get('LOCAL_RANK') == '1':\n"
        "        raise ValueError('rank 1 cannot build this model')\n"
        "    c, h, w = image_shape\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, n_classes))\n"
    )
    failed = _torchrun(["-m", "bioprop", "train", "--rule", "bp", "--dataset", "digits", "--model", f"{factory}:build",
                        "--epochs", "1", "--out", str(tmp_path / "run")], timeout=180)
    assert failed.returncode != 0
    assert "rank 1 cannot build this model" in failed.stdout + failed.stderr
    assert not (tmp_path / "run" / "model.pt").exists()


def test_batches_that_leave_a_process_without_rows_are_refused():
    # every rank computes the same verdict from the sizes alone, so all refuse and none hangs
    from bioprop.distributed import Cluster
    from bioprop.train import TrainConfig, _check_shards

    _check_shards(TrainConfig(rule="bp", batch_size=64), 1347, 2)  # last batch of 3 rows: fine
    with pytest.raises(bioprop.BioPropError, match="batch of 1 rows"):
        _check_shards(TrainConfig(rule="bp", batch_size=1), 1347, 2)
    with pytest.raises(bioprop.BioPropError, match="last batch of 1"):
        _check_shards(TrainConfig(rule="bp", batch_size=2), 1347, 2)
    cluster = Cluster(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    net = make_net("mlp")
    with pytest.raises(bioprop.BioPropError, match="without rows"):
        cluster.step(bioprop.make_rule("bp"), net, torch.randn(1, 12, dtype=torch.float64), torch.tensor([0]))
