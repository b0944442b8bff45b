"""H = V̄V̄ᵀ and WWᵀ before and after training, and the weight spectra (Liao et al. 2024, Fig. 3).

The paper trains a network with 8 hidden layers on SVHN and shows, before and after training,
the matrices V̄V̄ᵀ (= H, Theorem 1's matrix learning rate) and WWᵀ of a layer as heat maps:
neurons of a layer become correlated. It also finds the spectra of both pathways' weight
matrices effectively low rank after training. We train the circuit (rule defaults) on an
8-hidden-layer ReLU MLP and record, per hidden level l (all n_l x n_l matrices, seen from
upstream level l):

    H_l = V̄_l V̄_lᵀ             teaching synapses (downstream l -> upstream l)
    W_l W_lᵀ                     upstream synapses into level l
    W̄_{l+1} W̄_{l+1}ᵀ           downstream synapses onto level l's error compartment

their effective rank exp(entropy of the normalised eigenvalues), cond(H_l), and how correlated
the neurons are: the mean |C_ij| over i != j of C = M / sqrt(diag(M) diag(M)ᵀ).

Quick: digits, 64-(64 x 8)-10, 60 epochs, seed 0 (well under a minute). --full: SVHN,
3072-(200 x 8)-10 (the caption gives no width; 200 is our choice), 10 epochs, seed 0.
Writes spectra.csv/.json/.md, heatmaps.png (chosen levels) and spectra.png (singular values of
W_l, V̄_l and W̄_{l+1}, divided by the largest, log scale; dashed: before training).
"""
from __future__ import annotations

import torch

from ..diagnostics import spectrum_figures
from ..errors import BioPropError
from . import liao2024 as common
from . import outputs

NAME = "liao2024-spectra"
QUICK = dict(dataset="digits", hidden=[64] * 8, epochs=60, seeds=[0], batch=50, lr=None)
FULL = dict(dataset="svhn", hidden=[200] * 8, epochs=10, seeds=[0], batch=50, lr=None)

COLUMNS = [
    ("seed", "seed", "d"), ("layer", "level l", "d"), ("n", "n_l", "d"), ("m", "m_l", "d"),
    ("h_rank_init", "eff. rank H init", ".1f"), ("h_rank", "eff. rank H trained", ".1f"),
    ("h_condition_init", "cond H init", ".3g"), ("h_condition", "cond H trained", ".3g"),
    ("wwt_rank_init", "eff. rank WWᵀ init", ".1f"), ("wwt_rank", "eff. rank WWᵀ trained", ".1f"),
    ("wbar_rank_init", "eff. rank W̄W̄ᵀ init", ".1f"), ("wbar_rank", "eff. rank W̄W̄ᵀ trained", ".1f"),
    ("h_corr_init", "mean abs corr H init", ".3f"), ("h_corr", "mean abs corr H trained", ".3f"),
    ("wwt_corr_init", "mean abs corr WWᵀ init", ".3f"), ("wwt_corr", "mean abs corr WWᵀ trained", ".3f"),
]


def snapshot(net, rule) -> dict[str, list[torch.Tensor]]:
    """Copies of the three families of n_l x n_l matrices, and the factors whose spectra we plot."""
    upstream = [w.detach().double().clone() for w in net.weights[:-1]]
    teaching = [v.double().clone() for v in rule.to_teaching]
    onto = [m.double().clone() for m in rule.feedback]  # W̄_{l+1} for l = 1..L-1 (W̄_L last)
    return {
        "H": [v @ v.T for v in teaching],
        "WWt": [w @ w.T for w in upstream],
        "WbarWbart": [m @ m.T for m in onto],
        "W": upstream, "Vbar": teaching, "Wbar": onto,
    }


def mean_abs_correlation(matrix: torch.Tensor) -> float:
    """mean |C_ij| over i != j, C = M / sqrt(diag diagᵀ): how correlated a layer's neurons are."""
    scale = matrix.diagonal().clamp(min=1e-300).sqrt()
    correlation = matrix / scale[:, None] / scale[None, :]
    n = matrix.shape[0]
    if n < 2:
        return 0.0
    off_diagonal = correlation.abs().sum() - correlation.diagonal().abs().sum()
    return float(off_diagonal / (n * (n - 1)))


def level_rows(seed, before, after, widths) -> list[dict]:
    rows = []
    for level, (h0, h1, w0, w1, b0, b1, m) in enumerate(zip(before["H"], after["H"], before["WWt"], after["WWt"],
                                                           before["WbarWbart"], after["WbarWbart"], widths), start=1):
        h_init, h_trained = spectrum_figures(h0), spectrum_figures(h1)
        rows.append({
            "seed": seed, "layer": level, "n": h0.shape[0], "m": m,
            "h_rank_init": h_init["h_effective_rank"], "h_rank": h_trained["h_effective_rank"],
            "h_condition_init": h_init["h_condition"], "h_condition": h_trained["h_condition"],
            "wwt_rank_init": spectrum_figures(w0)["h_effective_rank"], "wwt_rank": spectrum_figures(w1)["h_effective_rank"],
            "wbar_rank_init": spectrum_figures(b0)["h_effective_rank"], "wbar_rank": spectrum_figures(b1)["h_effective_rank"],
            "h_corr_init": mean_abs_correlation(h0), "h_corr": mean_abs_correlation(h1),
            "wwt_corr_init": mean_abs_correlation(w0), "wwt_corr": mean_abs_correlation(w1),
        })
    return rows


def plot_heatmaps(before, after, levels, path) -> None:
    plt = outputs.pyplot()
    panels = [("H = V̄V̄ᵀ, before", before["H"]), ("H = V̄V̄ᵀ, after", after["H"]),
              ("WWᵀ, before", before["WWt"]), ("WWᵀ, after", after["WWt"])]
    figure, axes = plt.subplots(len(panels), len(levels), figsize=(3.0 * len(levels) + 0.6, 11.5), squeeze=False)
    for row, (title, matrices) in enumerate(panels):
        for column, level in enumerate(levels):
            matrix = matrices[level - 1]
            scale = float(matrix.abs().max()) or 1.0
            image = axes[row][column].imshow((matrix / scale).numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
            axes[row][column].set_title(f"{title}, level {level}", fontsize=8)
            axes[row][column].set_xticks([])
            axes[row][column].set_yticks([])
    figure.colorbar(image, ax=axes, shrink=0.6, label="entry / max |entry|")
    outputs.save_figure(figure, path)


def plot_spectra(before, after, path) -> None:
    plt = outputs.pyplot()
    families = [("W", "upstream W_l"), ("Vbar", "teaching V̄_l (H = V̄V̄ᵀ)"), ("Wbar", "downstream W̄_{l+1}")]
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.0))
    levels = len(after["W"])
    colors = plt.get_cmap("viridis")
    for axis, (key, title) in zip(axes, families):
        for level in range(levels):
            color = colors(level / max(1, levels - 1))
            for matrices, style in ((before[key], "--"), (after[key], "-")):
                values = torch.linalg.svdvals(matrices[level])
                axis.plot(range(1, values.numel() + 1), (values / values[0]).numpy(), linestyle=style, color=color,
                          linewidth=1.0, label=f"level {level + 1}" if style == "-" else None)
        axis.set_yscale("log")
        axis.set_title(f"singular values of {title}", fontsize=9)
        axis.set_xlabel("index")
        axis.set_ylabel("σ_i / σ_1 (dashed: before training)")
    axes[-1].legend(fontsize=7, ncol=2)
    figure.tight_layout()
    outputs.save_figure(figure, path)


def configure_parser(parser) -> None:
    common.add_common_arguments(parser, QUICK, FULL)
    parser.add_argument("--show-layers", type=int, nargs="+", default=None, metavar="L",
                        help="hidden levels drawn as heat maps (default: the first, a middle and the last)")
    outputs.add_output_arguments(parser, NAME)


def run(args) -> int:
    settings = common.resolve_settings(args, QUICK, FULL)
    depth = len(settings["hidden"])
    levels = args.show_layers or sorted({1, (depth + 1) // 2, depth})
    if any(not 1 <= level <= depth for level in levels):
        raise BioPropError(f"--show-layers {' '.join(map(str, levels))}: give hidden levels between 1 and {depth}")
    data = common.load(settings["dataset"], args)
    out = outputs.start(args, NAME)
    settings["show_layers"] = levels
    outputs.say(f"{NAME}: {settings}")
    rows, accuracies, figures = [], [], None
    for seed in settings["seeds"]:
        net, rule = common.build(data, "circuit", settings["hidden"], seed, settings["lr"])
        before = snapshot(net, rule)
        history = common.run_all([(f"circuit seed {seed}", lambda: common.fit(net, rule, data, settings["epochs"], settings["batch"], seed))])[0]
        after = snapshot(net, rule)
        rows += level_rows(seed, before, after, rule.downstream_widths(net.sizes))
        accuracies.append({"seed": seed, "test_acc": history.final, "diverged": history.diverged})
        figures = figures or (before, after)
    markdown = outputs.markdown_table(rows, COLUMNS)
    notes = "Test accuracy after training: " + ", ".join(
        f"seed {a['seed']}: {a['test_acc']:.4f}" + (" (diverged)" if a["diverged"] else "") for a in accuracies)
    print(markdown)
    print(notes)
    out.tables("spectra", "Effective rank and correlation of H, WWᵀ, W̄W̄ᵀ per hidden level", rows, settings,
               markdown, notes, extra={"accuracy": accuracies, "rule_options": common.rule_options("circuit", settings["lr"])})
    plot_heatmaps(*figures, levels, out.path("heatmaps.png"))
    plot_spectra(*figures, out.path("spectra.png"))
    out.report()
    return 0
