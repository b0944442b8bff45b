"""The Fan & Mysore 2024 reproduction commands at tiny settings: they run through the CLI,
write their files, and their numbers obey what the model says.

Oracles: closed forms. Pruning: a pruned synapse is exactly 0 and stays 0 under the masked
plasticity (control: the unmasked change regrows it). Prediction (b): dw_ij / g_ji = r x_j / w_ij
for one pair per update (control: a batch-mean update is off the line). Dynamics: credit is
exactly 0 until firing has settled within its tolerance.
"""
import csv
import json
import math
import sys

import pytest
import torch

from bioprop.cli import main
from bioprop.experiments import fan2024_communities as communities
from bioprop.rate_network import RateNetwork, weight_change

TINY_COMMUNITIES = ["--n", "30", "--iterations", "60", "--prune", "0.01", "--seeds", "0"]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# -- fan2024-communities ---------------------------------------------------------------------------
def test_communities_command_writes_one_row_per_r(tmp_path, capsys):
    out = tmp_path / "communities"
    lrs = ["0", "0.01", "0.3"]
    assert main(["reproduce", "fan2024-communities", *TINY_COMMUNITIES, "--lrs", *lrs, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"communities.csv", "communities.json", "communities.md", "communities.png",
                                              "heatmaps.png"}
    rows = read_csv(out / "communities.csv")
    assert [float(r["lr"]) for r in rows] == [float(r) for r in lrs]
    for row in rows:
        q, share = float(row["q_mean"]), float(row["share_mean"])
        assert math.isfinite(q) and -0.5 <= q <= 1
        assert 0 <= share <= 1
        assert -0.5 <= float(row["q_shuffled"]) <= 1
    assert (out / "heatmaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "within share" in capsys.readouterr().out


def modularity(A, together):
    two_m, degree = A.sum(), A.sum(axis=1)
    return float(((A - degree[:, None] * degree[None, :] / two_m) * together).sum() / two_m)


def test_leiden_recovers_planted_blocks_with_the_weighted_modularity():
    # closed form: Q = sum_ij (A_ij - k_i k_j / 2m) [c_i = c_j] / 2m on A_ij = |w_ij| + |w_ji|
    blocks = torch.arange(24) // 8
    generator = torch.Generator().manual_seed(0)
    same = blocks[:, None] == blocks[None, :]
    W = torch.where(same, 1.0, 0.1) * torch.randn(24, 24, generator=generator, dtype=torch.float64).sign()
    W.fill_diagonal_(0)
    membership, q = communities.communities(W, seed=0)
    assert len(set(membership.tolist())) == 3
    assert all(len(set(membership[blocks.numpy() == b].tolist())) == 1 for b in range(3))
    A = (W.abs() + W.abs().T).numpy()
    together = membership[:, None] == membership[None, :]
    assert abs(q - modularity(A, together)) < 1e-12
    # negative control: the same partition's unweighted modularity (all 24 x 23 edges exist) is far off
    assert abs(q - modularity((A > 0).astype(float), together)) > 0.1
    assert communities.within_share(W, membership) == pytest.approx(float(W.abs()[same].sum() / W.abs().sum()), abs=1e-12)


def test_pruning_keeps_pruned_synapses_at_exactly_zero():
    # closed form: pruned entries are 0, the removed ones are the smallest, and masked plasticity never regrows them
    net = RateNetwork(20, mask=~torch.eye(20, dtype=torch.bool), dtype=torch.float64, seed=0)
    before = net.W.detach().abs().clone()
    existing = int(net.mask.sum())
    removed = communities.prune_smallest_(net, 0.25)
    assert removed == round(0.25 * existing) and int(net.mask.sum()) == existing - removed
    pruned = ~net.mask & ~torch.eye(20, dtype=torch.bool)
    assert bool((net.W.detach()[~net.mask] == 0).all())
    assert float(before[pruned].max()) <= float(before[net.mask].min())

    generator = torch.Generator().manual_seed(1)
    rates, credit, gain = (torch.randn(4, 20, generator=generator, dtype=torch.float64) for _ in range(3))
    masked_change, _ = weight_change(credit, gain, rates, 0.5, net.mask)
    assert bool((masked_change[pruned] == 0).all())
    unmasked_change, _ = weight_change(credit, gain, rates, 0.5)  # negative control: would regrow them
    assert bool((unmasked_change[pruned] != 0).any())


def test_simulation_prunes_and_keeps_the_mask():
    settings = dict(communities.QUICK, n=30, iterations=40, prune=0.02)
    net, info = communities.simulate(settings, lr=0.3, seed=0)
    assert not info["diverged"]
    assert bool((net.W.detach()[~net.mask] == 0).all())
    assert bool((net.W.detach().diagonal() == 0).all())
    density = float(net.mask.float().mean())
    expected = (1 - 0.02) ** 40 * (29 / 30)
    assert abs(density - expected) < 0.02
    again, _ = communities.simulate(settings, lr=0.3, seed=0)
    assert torch.equal(net.W.detach(), again.W.detach())  # seeded: identical reruns


def test_communities_without_leiden_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "leidenalg", None)  # `import leidenalg` now raises ImportError
    out = tmp_path / "never"
    assert main(["reproduce", "fan2024-communities", *TINY_COMMUNITIES, "--lrs", "0", "--out", str(out)]) == 2
    assert "pip install leidenalg igraph" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flag,value,named", [("--prune", "1.5", "--prune"), ("--lrs", "-1", "--lrs"),
                                              ("--source-fraction", "0.001", "--source-fraction"),
                                              ("--activation", "cosine", "cosine")])
def test_communities_refuses_bad_arguments_before_writing(tmp_path, capsys, flag, value, named):
    out = tmp_path / "never"
    assert main(["reproduce", "fan2024-communities", *TINY_COMMUNITIES, flag, value, "--out", str(out)]) == 2
    assert named in capsys.readouterr().err
    assert not out.exists()


# -- fan2024-predictions ----------------------------------------------------------------------------
def test_predictions_slope_of_dw_over_g_is_the_learning_rate(tmp_path):
    out = tmp_path / "predictions"
    lr = 0.037
    assert main(["reproduce", "fan2024-predictions", "--hidden", "8", "--epochs", "1", "--pairs", "3", "--bins", "4",
                 "--ratio-lr", str(lr), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {f"{stem}.{ext}" for stem in ("signal", "ratio") for ext in ("csv", "json", "md", "png")}
    single, control = json.loads((out / "ratio.json").read_text())["rows"]
    # closed form dw_ij / g_ji = r x_j / w_ij, one pair per update
    assert abs(single["slope"] - lr) <= 1e-8 * lr
    assert abs(single["slope_origin"] - lr) <= 1e-8 * lr
    assert single["max_relative_deviation"] < 1e-6
    # negative control: a batch-mean update is not on the line
    assert control["r2"] < 0.99 and control["max_relative_deviation"] > 1e-2
    summary = json.loads((out / "signal.json").read_text())["summary"]
    for state in summary:  # the gated signal falls with the distance from balance
        assert state["rho_amplitude"] < 0 and state["amplitude_ratio"] > 1


def test_predictions_refuses_bad_arguments(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["reproduce", "fan2024-predictions", "--ratio-lr", "0", "--out", str(out)]) == 2
    assert "--ratio-lr" in capsys.readouterr().err
    assert not out.exists()


# -- fan2024-dynamics -------------------------------------------------------------------------------
def test_dynamics_firing_settles_before_credit_moves(tmp_path):
    out = tmp_path / "dynamics"
    assert main(["reproduce", "fan2024-dynamics", "--plasticity-steps", "30", "--lr", "0.01", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"dynamics.csv", "dynamics.json", "dynamics.md", "dynamics.png"}
    record = json.loads((out / "dynamics.json").read_text())
    rows, summary, tol = record["rows"], record["summary"], record["settings"]["tol"]
    n = summary["neurons"]["n"]
    firing_end, credit_end = summary["firing_settled_at"], summary["credit_settled_at"]
    assert 1 < firing_end < credit_end < rows[-1]["t"]
    rate = lambda row: max(abs(row[f"rate_{i}"]) for i in range(n))
    credit = lambda row: max(abs(row[f"credit_{i}"]) for i in range(n))
    # firing moves, then settles within its tolerance while every credit is still exactly 0
    assert rows[1]["rate_change"] > 0
    assert rows[firing_end]["rate_change"] <= tol * rate(rows[firing_end])
    assert all(credit(row) == 0 for row in rows[:firing_end + 1])
    assert credit(rows[firing_end + 1]) > 0
    # weights are still until credit has settled, then move; the loss falls
    assert all(row["weight_change"] == 0 for row in rows[:credit_end + 1])
    assert all(row["weight_change"] > 0 for row in rows[credit_end + 1:])
    assert rows[credit_end]["credit_change"] <= tol * credit(rows[credit_end])
    assert summary["loss_after"] < summary["loss_before"]


# -- the docs quote what the command prints ----------------------------------------------------------
def test_docs_dynamics_table_is_what_the_command_prints(tmp_path, capsys):
    # docs/credit.md section 3 quotes `bioprop reproduce fan2024-dynamics` (defaults): every row of its
    # table must be a row the command prints now, and the provenance line under it names that command
    from pathlib import Path

    from bioprop import __version__

    docs = (Path(__file__).resolve().parents[1] / "docs" / "credit.md").read_text()
    section = docs[docs.index("## 3. The three timescales"):docs.index("## What matches the paper")]
    quoted = [line for line in section.splitlines() if line.startswith(("| firing |", "| credit |", "| plasticity |"))]
    assert len(quoted) == 3
    assert f"made by `bioprop reproduce fan2024-dynamics` (quick default), bioprop {__version__}" in section
    assert main(["reproduce", "fan2024-dynamics", "--quiet", "--out", str(tmp_path / "dynamics")]) == 0
    printed = capsys.readouterr().out.splitlines()
    for line in quoted:
        assert line in printed, f"docs/credit.md quotes {line!r}; the command prints {printed}"
