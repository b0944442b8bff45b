"""bioprop.diagnostics.measure and `bioprop train --diagnostics-every`.

Oracles: the same run without diagnostics (measuring must not change training), an
uninterrupted run (--resume keeps the rule's state and the diagnostics), the rule's own first
step (measure sees the matrices the rule will draw), and eigenvalues of H = F Fᵀ from an
eigensolver (closed form) for the spectrum figures.
"""
import json

import pytest
import torch

import bioprop
from bioprop.diagnostics import bp_gradients, cosine, gram_spectrum_figures, measure, spectrum_figures
from bioprop.train import train
from bioprop.verify import make_batch

SETTINGS = {"dataset": "digits", "hidden": [16, 16], "activation": "relu", "batch_size": 32, "lr": 0.05, "seed": 3,
            "quiet": True}


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _metrics(run_dir):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in _lines(run_dir / "metrics.jsonl")]


@pytest.mark.parametrize("rule", ["circuit", "credit"])
def test_diagnostics_leave_the_run_alone_and_survive_resume(tmp_path, rule):
    settings = {**SETTINGS, "rule": rule}
    train({**settings, "epochs": 2, "diagnostics_every": 10, "out": str(tmp_path / "measured")})
    train({**settings, "epochs": 2, "out": str(tmp_path / "plain")})
    train({**settings, "epochs": 1, "diagnostics_every": 10, "out": str(tmp_path / "parts")})
    train({"resume": str(tmp_path / "parts"), "epochs": 2, "quiet": True})

    measured, plain, parts = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)
                              for name in ("measured", "plain", "parts"))
    for other in (plain, parts):  # oracles: the run without diagnostics; the uninterrupted run
        assert all(torch.equal(measured["learner"]["net"][k], other["learner"]["net"][k]) for k in measured["learner"]["net"])
        for key, value in measured["learner"]["rule"].items():
            saved = other["learner"]["rule"][key]
            assert all(torch.equal(a, b) for a, b in zip(value, saved)) if isinstance(value, list) and value and \
                isinstance(value[0], torch.Tensor) else value == saved
    assert _metrics(tmp_path / "measured") == _metrics(tmp_path / "plain") == _metrics(tmp_path / "parts")

    records = _lines(tmp_path / "measured" / "diagnostics.jsonl")
    assert records == _lines(tmp_path / "parts" / "diagnostics.jsonl")
    steps = sorted({r["step"] for r in records})
    assert steps == list(range(0, 86, 10))  # 1347 digits / batch 32 = 43 steps per epoch
    assert [r["layer"] for r in records[:3]] == [1, 2, 3] and len(records) == 3 * len(steps)
    if rule == "circuit":
        assert all(r["theorem1_error"] > 0 and -1 <= r["cos_update"] <= 1 for r in records if r["layer"] < 3)


@pytest.mark.parametrize("rule_name,options", [("circuit", {"ratio": 2}), ("fa", {}), ("sign", {"magnitude": "random"})])
def test_measure_of_an_unseeded_rule_sees_its_draw_and_keeps_the_global_generator(rule_name, options):
    net = bioprop.MLP([6, 5, 4, 3], activation="tanh", dtype=torch.float64, seed=0)
    x, y = make_batch(net.sizes, "mse", 8, 0)
    rule = bioprop.make_rule(rule_name, lr=0.1, seed=None, **options)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    records = measure(rule, net, x, y)
    assert torch.equal(torch.get_rng_state(), before)
    # oracle: the rule's own first step, which draws from the same global state
    info = rule.step(net.clone(), x, y)
    gradients, _ = bp_gradients(net, rule.loss, x, y)
    for record, estimate, gradient in zip(records, info["gradient_estimates"], gradients):
        assert record["cos_update"] == cosine(estimate, gradient)
    # negative control: drawing does move the global generator, so the first check can fail
    torch.set_rng_state(before)
    bioprop.make_rule(rule_name, seed=None, **options).initialize(net)
    assert not torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("shape", [(6, 10), (6, 6), (6, 3)])
def test_gram_spectrum_figures_equal_the_eigenvalues_of_h(shape):
    # closed form: eigenvalues of H = F Fᵀ from eigvalsh against the singular values of F
    factor = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    from_factor, from_h = gram_spectrum_figures(factor), spectrum_figures(factor @ factor.T)
    assert from_factor["h_effective_rank"] == pytest.approx(from_h["h_effective_rank"], rel=1e-10)
    if shape[1] < shape[0]:  # rank-deficient H: singular
        assert from_factor["h_condition"] == float("inf")
    else:
        assert from_factor["h_condition"] == pytest.approx(from_h["h_condition"], rel=1e-8)
