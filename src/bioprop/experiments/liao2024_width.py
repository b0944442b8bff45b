"""Downstream width against accuracy (Liao et al. 2024, Fig. 2).

The paper keeps the upstream width at 200 and widens the downstream pathway, m_l = r n_l, for
several downstream activation functions g, and finds accuracy improving up to r = 7.5. We train
the circuit for every r in {1, 1.5, 2, 3, 5, 7.5} and every g in {identity, relu, tanh}, every
other option at the rule's default, with BP on the same initial weights and batches as the
reference line. Theorem 1 makes H_l = V̄_l V̄_lᵀ the matrix learning rate, so beside accuracy we
report H's conditioning at initialisation and after training, averaged over hidden levels and
seeds: the condition number lambda_max / lambda_min (geometric mean) and the effective rank
exp(entropy of the normalised eigenvalues) as a fraction of n_l.

Quick: digits, upstream 64-32-32-10 (width 32, not the paper's 200), 20 epochs, seeds 0 1 2
(about a minute on one core). --full: Fashion-MNIST (the caption does not name the data set; our
choice), 784-200-200-200-10, 10 epochs, seeds 0 1 2.
Writes width.csv/.json/.md and width.png (accuracy, condition number and effective rank vs r).
"""
from __future__ import annotations

import math
import statistics

from ..diagnostics import spectrum_figures
from . import liao2024 as common
from . import outputs

NAME = "liao2024-width"
RATIOS = [1.0, 1.5, 2.0, 3.0, 5.0, 7.5]
ACTIVATIONS = ["identity", "relu", "tanh"]
QUICK = dict(dataset="digits", hidden=[32, 32], epochs=20, seeds=[0, 1, 2], batch=50, lr=None, ratios=RATIOS, activations=ACTIVATIONS)
FULL = dict(dataset="fashion-mnist", hidden=[200, 200, 200], epochs=10, seeds=[0, 1, 2], batch=50, lr=None,
            ratios=RATIOS, activations=ACTIVATIONS)

COLUMNS = [
    ("activation", "downstream g", ""), ("ratio", "r", "g"), ("downstream_widths", "m_l", ""),
    ("acc_mean", "test acc (mean)", ".4f"), ("acc_std", "std", ".4f"), ("acc_min", "min", ".4f"), ("acc_max", "max", ".4f"),
    ("diverged", "diverged", "d"), ("h_condition_init", "cond(H) init", ".3g"), ("h_condition", "cond(H) trained", ".3g"),
    ("h_rank_fraction_init", "eff. rank/n init", ".3f"), ("h_rank_fraction", "eff. rank/n trained", ".3f"),
]


def conditioning(rule, hidden) -> tuple[float, float]:
    """(geometric mean over levels of cond(H_l), mean over levels of effective rank(H_l) / n_l)."""
    figures = [spectrum_figures(h) for h in rule.preconditioners()]
    fractions = [f["h_effective_rank"] / n for f, n in zip(figures, hidden)]
    return _geometric_mean(f["h_condition"] for f in figures), statistics.fmean(fractions)


def width_table(data, hidden, epochs, seeds, batch, lr, ratios, activations) -> list[dict]:
    """One row per (activation, ratio), then one BP reference row."""
    rows = []
    progress = outputs.Progress((len(activations) * len(ratios) + 1) * len(seeds), "runs")
    for activation in activations:
        for ratio in ratios:
            options = {"ratio": str(ratio), "downstream_activation": activation}

            def job(seed, options=options):
                net, rule = common.build(data, "circuit", hidden, seed, lr, options)
                before = conditioning(rule, hidden)
                history = common.fit(net, rule, data, epochs, batch, seed)
                return history, before, conditioning(rule, hidden), rule.downstream_widths(net.sizes)

            results = common.run_all([(f"g={activation} r={ratio:g} seed {seed}", lambda seed=seed: job(seed)) for seed in seeds],
                                     progress)
            spread = outputs.spread([history.final for history, *_ in results])
            rows.append({
                "activation": activation, "ratio": ratio, "downstream_widths": "-".join(map(str, results[0][3])),
                "acc_mean": spread["mean"], "acc_std": spread["std"], "acc_min": spread["min"], "acc_max": spread["max"],
                "n": spread["n"], "diverged": sum(history.diverged for history, *_ in results),
                "h_condition_init": _geometric_mean([before[0] for _, before, _, _ in results]),
                "h_condition": _geometric_mean([after[0] for _, _, after, _ in results]),
                "h_rank_fraction_init": statistics.fmean(before[1] for _, before, _, _ in results),
                "h_rank_fraction": statistics.fmean(after[1] for _, _, after, _ in results),
            })
    bp = common.run_all([(f"bp seed {seed}", lambda seed=seed: common.train_run(data, "bp", hidden, seed, epochs, batch, lr)[2])
                         for seed in seeds], progress)
    progress.close()
    spread = outputs.spread([h.final for h in bp])
    rows.append({"activation": "BP (reference)", "ratio": None, "downstream_widths": "-",
                 "acc_mean": spread["mean"], "acc_std": spread["std"], "acc_min": spread["min"], "acc_max": spread["max"],
                 "n": spread["n"], "diverged": sum(h.diverged for h in bp), "h_condition_init": None, "h_condition": None,
                 "h_rank_fraction_init": None, "h_rank_fraction": None})
    return rows


def _geometric_mean(values) -> float:
    values = list(values)
    if not all(0 < v < math.inf for v in values):
        return math.inf
    return math.exp(statistics.fmean(math.log(v) for v in values))


def accuracy_window(rows: list[dict], chance: float) -> tuple[float, float] | None:
    """The accuracy axis: the range of mean ± std of the rows that learn (mean above 1.5 x
    chance, BP included) with a margin of 10% of that range; None when no row learns."""
    learning = [r for r in rows if r["acc_mean"] > 1.5 * chance and math.isfinite(r["acc_mean"])]
    if not learning:
        return None
    std = lambda r: r["acc_std"] if math.isfinite(r["acc_std"]) else 0.0
    low = min(r["acc_mean"] - std(r) for r in learning)
    high = max(r["acc_mean"] + std(r) for r in learning)
    margin = 0.1 * max(high - low, 0.01)
    return max(0.0, low - margin), min(1.0, high + margin)


def plot(rows: list[dict], path, upstream: str, chance: float = 0.1) -> None:
    """Accuracy (zoomed to the rows that learn; a curve below the window is named in the
    legend with its mean), cond(H) and effective rank of H against r."""
    plt = outputs.pyplot()
    window = accuracy_window(rows, chance)
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.0))
    circuit = [r for r in rows if r["ratio"] is not None]
    reference = next(r for r in rows if r["ratio"] is None)
    for activation in dict.fromkeys(r["activation"] for r in circuit):
        mine = [r for r in circuit if r["activation"] == activation]
        ratios = [r["ratio"] for r in mine]
        below = window is not None and all(r["acc_mean"] < window[0] for r in mine)
        label = f"circuit, g = {activation}" + (
            f" (below the window: {min(r['acc_mean'] for r in mine):.3f}-{max(r['acc_mean'] for r in mine):.3f})" if below else "")
        line = axes[0].errorbar(ratios, [r["acc_mean"] for r in mine], yerr=[r["acc_std"] for r in mine],
                                marker="o", capsize=3, label=label)
        color = line[0].get_color()
        axes[1].plot(ratios, [r["h_condition"] for r in mine], marker="o", color=color, label=f"g = {activation}, trained")
        axes[1].plot(ratios, [r["h_condition_init"] for r in mine], marker=".", linestyle=":", color=color)
        axes[2].plot(ratios, [r["h_rank_fraction"] for r in mine], marker="o", color=color, label=f"g = {activation}, trained")
        axes[2].plot(ratios, [r["h_rank_fraction_init"] for r in mine], marker=".", linestyle=":", color=color)
    axes[0].axhline(reference["acc_mean"], color="black", linestyle="--", label="BP")
    axes[0].axhspan(reference["acc_mean"] - reference["acc_std"], reference["acc_mean"] + reference["acc_std"], color="black", alpha=0.1)
    axes[0].set_ylabel("test accuracy (mean ± std over seeds)")
    if window is not None:
        axes[0].set_ylim(*window)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("cond(H) = λmax/λmin (dotted: at init)")
    axes[2].set_ylabel("effective rank(H) / n (dotted: at init)")
    for axis in axes:
        axis.set_xlabel("downstream width ratio r = m / n")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    figure.suptitle(f"Downstream width (upstream {upstream}), paper Fig. 2", fontsize=10)
    figure.tight_layout()
    outputs.save_figure(figure, path)


def configure_parser(parser) -> None:
    common.add_common_arguments(parser, QUICK, FULL)
    outputs.add_output_arguments(parser, NAME)
    parser.add_argument("--ratios", type=float, nargs="+", default=None, metavar="R",
                        help=f"downstream width ratios (default: {' '.join(f'{r:g}' for r in RATIOS)})")
    parser.add_argument("--activations", nargs="+", default=None, metavar="G",
                        help=f"downstream activations g (default: {' '.join(ACTIVATIONS)})")


def run(args) -> int:
    settings = common.resolve_settings(args, QUICK, FULL, keys=("ratios", "activations"))
    for activation in settings["activations"]:
        common.rule_options("circuit", settings["lr"], {"downstream_activation": activation})  # refuse a bad g now
    for ratio in settings["ratios"]:
        common.rule_options("circuit", settings["lr"], {"ratio": str(ratio)})
    data = common.load(settings["dataset"], args)
    out = outputs.start(args, NAME)
    outputs.say(f"{NAME}: {settings}")
    rows = width_table(data, settings["hidden"], settings["epochs"], settings["seeds"], settings["batch"], settings["lr"],
                       settings["ratios"], settings["activations"])
    markdown = outputs.markdown_table(rows, COLUMNS)
    print(markdown)
    upstream = "-".join(map(str, [data.n_features, *settings["hidden"], data.n_classes]))
    out.tables("width", f"Downstream width ratio (upstream {upstream})", rows, settings, markdown,
               extra={"rule_options": common.rule_options("circuit", settings["lr"])})
    plot(rows, out.path("width.png"), upstream, chance=1 / data.n_classes)
    out.report()
    return 0
