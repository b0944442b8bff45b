"""Ablation of Z-IL's three conditions (Song et al. 2020, section 5.1 and Fig. 3).

Break one condition at a time, train from BP's initial weights on BP's batches in BP's order
(bioprop.training's loop: the batches of `bioprop train --seed SEED`), and measure how far training drifts from BP's:

- C1: hidden value nodes start at the feed-forward pass plus N(0, sigma^2) noise,
      sigma in {0, 1e-4, 1e-3, 1e-2, 0.1, 1, 10, 100};
- C2: every layer updated at one fixed inference step t in {0, 1, 2, 3, 4, 16, 64}
      (IL with t_c = t and gamma = 1) instead of t = k for the layer at distance k;
- C3: gamma in {0.01, 0.1, 0.5, 1, 5, 10} with C1 and C2 kept.

Divergence (the paper's two measures): the mean over epochs of |test error - BP's test error|
in percentage points, and the sum over layers of ||W_l - W_l^BP||_F after the last epoch.
Zero divergence is expected exactly where all three conditions hold (sigma = 0, t = k,
gamma = 1). Paper setup (--full): alpha = 0.001, batch 20, sigmoid, 1-3 hidden layers of 32,
64 epochs, 3 seeds, on MNIST. The quick default runs on digits with alpha = 0.1, 8 epochs,
1 and 2 hidden layers, one seed: about half a minute on 2 cores.
"""
from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import torch

from ..data import load_dataset
from ..errors import BioPropError
from ..network import MLP
from ..rules import make_rule
from ..files import write_atomic, write_csv, write_json
from ..training import Learner, shuffle_generator, train_epochs

SIGMAS = (0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)
FIXED_STEPS = (0, 1, 2, 3, 4, 16, 64)
GAMMAS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0)

QUICK = dict(dataset="digits", depths=(1, 2), width=32, epochs=8, lr=0.1, batch=20, seeds=(0,))
FULL = dict(dataset="mnist", depths=(1, 2, 3), width=32, epochs=64, lr=0.001, batch=20, seeds=(1482555873, 698841058, 2283198659))


def variants():
    """(condition, setting label, zil options) for every ablated variant and the intact Z-IL."""
    yield "none", "Z-IL (C1-C3 hold)", {}
    for sigma in SIGMAS[1:]:
        yield "C1", f"sigma={sigma:g}", {"init_noise": sigma}
    for t in FIXED_STEPS:
        yield "C2", f"t={t}", {"update_at": t}
    for gamma in GAMMAS:
        if gamma != 1.0:
            yield "C3", f"gamma={gamma:g}", {"gamma": gamma}


def train_curve(net, rule, train_x, train_y, test_x, test_y, seed, batch, epochs):
    """Test error (%) after every epoch, trained with bioprop.training's loop on the batches of
    `seed` (those of `bioprop train --seed SEED`); from the epoch where the loss or the weights
    stop being finite on, inf."""
    errors = []
    for result in train_epochs([Learner(net, rule)], train_x, train_y, epochs=epochs, batch_size=batch,
                               shuffle=shuffle_generator(seed), test=(test_x, test_y)):
        if result.diverged:
            return errors + [math.inf] * (epochs - result.epoch + 1)
        errors.append(100.0 * (1.0 - result.metrics[0].test_acc))
    return errors


def ablation_table(dataset, depths, width, epochs, lr, batch, seeds, data_dir=None, activation="sigmoid", progress=True) -> list[dict]:
    data = load_dataset(dataset, data_dir=data_dir)
    train_x, test_x = data.train_x.double(), data.test_x.double()
    split = (train_x, data.train_y, test_x, data.test_y)
    rows = {}
    for depth in depths:
        sizes = [data.n_features] + [width] * depth + [data.n_classes]
        for seed in seeds:
            initial = MLP(sizes, activation=activation, dtype=torch.float64, seed=seed)
            reference = initial.clone()
            reference_curve = train_curve(reference, make_rule("bp", lr=lr, loss="mse"), *split, seed, batch, epochs)
            for condition, setting, options in variants():
                if progress:
                    print(f"  depth {depth} seed {seed}: {setting}", file=sys.stderr, flush=True)
                net = initial.clone()
                curve = train_curve(net, make_rule("zil", lr=lr, loss="mse", seed=seed, **options), *split, seed, batch, epochs)
                curve_gap = statistics.fmean(abs(a - b) for a, b in zip(curve, reference_curve))
                weight_gap = sum(
                    float((w.detach() - v.detach()).norm()) for w, v in zip(net.weights, reference.weights)
                ) if math.isfinite(curve_gap) else math.inf
                row = rows.setdefault((depth, condition, setting), {"hidden_layers": depth, "condition": condition,
                                                                    "setting": setting, "curve": [], "weights": [], "final": []})
                row["curve"].append(curve_gap)
                row["weights"].append(weight_gap)
                row["final"].append(curve[-1])
    table = []
    for row in rows.values():
        table.append({
            "hidden_layers": row["hidden_layers"],
            "condition": row["condition"],
            "setting": row["setting"],
            "test_error_divergence_pts": statistics.fmean(row["curve"]),
            "final_weight_divergence": statistics.fmean(row["weights"]),
            "final_test_error_pct": statistics.fmean(row["final"]),
        })
    return table


def format_table(table: list[dict]) -> str:
    lines = [f"{'hidden':>6} {'breaks':>6} {'setting':<20} {'test-error div. (pts)':>22} {'weight div.':>12} {'final err %':>12}"]
    for r in table:
        lines.append(
            f"{r['hidden_layers']:>6} {r['condition']:>6} {r['setting']:<20} {r['test_error_divergence_pts']:>22.4g} "
            f"{r['final_weight_divergence']:>12.4g} {r['final_test_error_pct']:>12.2f}"
        )
    return "\n".join(lines)


def configure_parser(parser) -> None:
    parser.add_argument("--full", action="store_true", help="the paper's setup: MNIST, alpha 0.001, 64 epochs, 1-3 hidden, 3 seeds")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--depths", type=int, nargs="+", default=None, help="numbers of hidden layers")
    parser.add_argument("--out", default=None, help="folder for ablation.csv, ablation.json and ablation.md")


def run(args) -> int:
    settings = dict(FULL if args.full else QUICK)
    for key in ("dataset", "epochs", "seeds", "depths"):
        if getattr(args, key) is not None:
            settings[key] = tuple(getattr(args, key)) if key in ("seeds", "depths") else getattr(args, key)
    if settings["epochs"] < 1 or any(d < 1 for d in settings["depths"]):
        raise BioPropError("--epochs and --depths must be >= 1")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)  # fail now, not after the run
    print(f"Z-IL ablation: {settings}", file=sys.stderr)
    table = ablation_table(data_dir=args.data_dir, **settings)
    text = format_table(table)
    print(text)
    if args.out:
        out = Path(args.out)
        write_csv(out / "ablation.csv", table)
        write_json(out / "ablation.json", {"settings": settings, "rows": table})
        write_atomic(out / "ablation.md", lambda handle: handle.write(f"settings: {settings}\n\n```\n{text}\n```\n"))
        print(f"wrote {out}/ablation.csv, .json, .md", file=sys.stderr)
    return 0
