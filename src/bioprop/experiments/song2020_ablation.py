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
Writes ablation.csv/.json/.md and ablation.png (both divergences against each broken condition's
setting, one line per depth; the intact Z-IL at sigma = 0, t = k, gamma = 1) into
results/song2020-ablation.
"""
from __future__ import annotations

import math
import statistics

import torch

from ..data import load_dataset
from ..errors import BioPropError
from ..network import MLP
from ..rules import make_rule
from ..training import Learner, shuffle_generator, train_epochs
from . import outputs

NAME = "song2020-ablation"

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
    shown = outputs.Progress(len(depths) * len(seeds) * len(list(variants())), "variants") if progress else None
    for depth in depths:
        sizes = [data.n_features] + [width] * depth + [data.n_classes]
        for seed in seeds:
            initial = MLP(sizes, activation=activation, dtype=torch.float64, seed=seed)
            reference = initial.clone()
            reference_curve = train_curve(reference, make_rule("bp", lr=lr, loss="mse"), *split, seed, batch, epochs)
            for condition, setting, options in variants():
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
                if shown is not None:
                    shown.done(f"depth {depth} seed {seed}: {setting}")
    if shown is not None:
        shown.close()
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


COLUMNS = [("hidden_layers", "hidden", "d"), ("condition", "breaks", ""), ("setting", "setting", ""),
           ("test_error_divergence_pts", "test-error div. (pts)", ".4g"), ("final_weight_divergence", "weight div.", ".4g"),
           ("final_test_error_pct", "final err %", ".2f")]
#: (condition, x-axis label, the setting at which that condition holds)
PANELS = [("C1", "C1: start noise sigma", "sigma=0"), ("C2", "C2: every layer updated at step t", "t=k"),
          ("C3", "C3: inference rate gamma", "gamma=1")]


def plot(table: list[dict], path, title: str) -> None:
    """Per broken condition (columns): test-error divergence and weight divergence (rows) against
    its setting, one line per depth; the first point of each panel is the intact Z-IL (0 on a
    log axis: drawn at the bottom, hollow). A variant whose weights blew up (inf) is drawn at the
    top as a cross."""
    plt = outputs.pyplot()
    figure, axes = plt.subplots(2, 3, figsize=(15, 7.2))
    measures = [("test_error_divergence_pts", "test-error divergence (points)"), ("final_weight_divergence", "Σ_l ||W_l − W_l^BP||_F")]
    depths = list(dict.fromkeys(r["hidden_layers"] for r in table))
    colours = plt.get_cmap("tab10")
    for column, (condition, xlabel, intact_label) in enumerate(PANELS):
        for row_index, (key, ylabel) in enumerate(measures):
            axis = axes[row_index][column]
            finite = [r[key] for r in table if math.isfinite(r[key]) and r[key] > 0]
            floor = min(finite) / 10 if finite else 1e-16
            ceiling = max(finite) * 10 if finite else 1.0
            for k, depth in enumerate(depths):
                intact = next(r for r in table if r["hidden_layers"] == depth and r["condition"] == "none")
                broken = [r for r in table if r["hidden_layers"] == depth and r["condition"] == condition]
                labels = [intact_label] + [r["setting"] for r in broken]
                values = [intact[key]] + [r[key] for r in broken]
                shown = [v if math.isfinite(v) and v > 0 else math.nan for v in values]
                axis.plot(range(len(values)), shown, marker="o", color=colours(k), label=f"{depth} hidden")
                for x, value in enumerate(values):
                    if value == 0 or (math.isfinite(value) and value < floor):
                        axis.scatter([x], [floor], marker="o", facecolors="none", edgecolors=colours(k), zorder=3)
                    elif not math.isfinite(value):
                        axis.scatter([x], [ceiling], marker="x", color=colours(k), zorder=3)
            axis.set_yscale("log")
            axis.set_ylim(floor / 2, ceiling * 2)
            axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
            axis.set_xlabel(xlabel, fontsize=8)
            if column == 0:
                axis.set_ylabel(ylabel)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"{title}\n(first point: all three conditions hold; hollow at the bottom: 0 or below the axis; "
                    "× at the top: the weights blew up)", fontsize=10)
    figure.tight_layout()
    outputs.save_figure(figure, path)


def configure_parser(parser) -> None:
    parser.add_argument("--full", action="store_true", help="the paper's setup: MNIST, alpha 0.001, 64 epochs, 1-3 hidden, 3 seeds")
    parser.add_argument("--dataset", default=None, help=f"data set (quick: {QUICK['dataset']}; --full: {FULL['dataset']})")
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="folder holding the data set files")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs (quick: {QUICK['epochs']}; --full: {FULL['epochs']})")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (quick: 0; --full: the paper's three)")
    parser.add_argument("--depths", type=int, nargs="+", default=None, help="numbers of hidden layers (quick: 1 2; --full: 1 2 3)")
    parser.add_argument("--width", type=int, default=None, help=f"hidden width (default {QUICK['width']})")
    parser.add_argument("--batch", type=int, default=None, help=f"batch size (default {QUICK['batch']})")
    outputs.add_output_arguments(parser, NAME)


def run(args) -> int:
    settings = dict(FULL if args.full else QUICK)
    for key in ("dataset", "epochs", "seeds", "depths", "width", "batch"):
        if getattr(args, key) is not None:
            settings[key] = tuple(getattr(args, key)) if key in ("seeds", "depths") else getattr(args, key)
    if settings["epochs"] < 1 or any(d < 1 for d in settings["depths"]) or settings["width"] < 1 or settings["batch"] < 1:
        raise BioPropError("--epochs, --depths, --width and --batch must be >= 1")
    outputs.set_quiet(args.quiet)
    load_dataset(settings["dataset"], data_dir=args.data_dir)  # a missing data set fails now, before the folder exists
    out = outputs.start(args, NAME)
    outputs.say(f"{NAME}: {settings}")
    table = ablation_table(data_dir=args.data_dir, **settings)
    print(format_table(table))
    title = f"Z-IL with one condition broken at a time ({settings['dataset']}, {settings['epochs']} epochs)"
    notes = ("Test-error divergence: mean over epochs of |test error - BP's| in points; weight divergence: sum over layers "
             "of ||W_l - W_l^BP||_F after the last epoch; inf: the variant's weights blew up.")
    out.tables("ablation", title, table, settings, outputs.markdown_table(table, COLUMNS), notes)
    plot(table, out.path("ablation.png"), title)
    out.report()
    return 0
