"""Learning rates of the circuit on a four-layer MLP (Liao et al. 2024, Fig. 5).

The paper varies the learning rates of a four-layer MLP and finds the best performance when
eta_V is the smallest of them. We train the circuit on a grid of eta_V (rows) against one other
rate (columns): eta_V̄ by default (--against eta_vbar; eta_W stays at --lr), or eta_W
(--against lr; eta_V̄ stays at the rule's default). Every other option is the rule's default.
The notes under the table name the best cell and say whether eta_V is the smallest of
(eta_V, eta_V̄, eta_W) there. Our reconstruction's assembly argument predicts a limit
a_l -> c H_l d_l with c = eta_V / eta_V̄, so along a row of the eta_V̄ grid the hidden layers'
effective step size scales like eta_V / eta_V̄.

Quick: digits, 64-32-32-32-10 (four weight layers), eta_V and eta_V̄ in {0.01, 0.03, 0.1, 0.3, 1},
20 epochs, seeds 0 1 2 (about a minute). --full: Fashion-MNIST (the caption does not name the
data set; our choice), 784-200-200-200-10, 10 epochs, seeds 0 1 2.
Writes lr_grid.csv/.json/.md and lr_grid.png (heat map of mean test accuracy; "× k/n": k of n seeds
diverged, said in the figure).
"""
from __future__ import annotations

import math

from ..errors import BioPropError
from . import liao2024 as common
from . import outputs

NAME = "liao2024-lr-grid"
GRID = [0.01, 0.03, 0.1, 0.3, 1.0]
AGAINST = {"eta_vbar": ("eta_V̄", GRID), "lr": ("eta_W", [0.01, 0.03, 0.1, 0.3])}
QUICK = dict(dataset="digits", hidden=[32, 32, 32], epochs=20, seeds=[0, 1, 2], batch=50, lr=None)
FULL = dict(dataset="fashion-mnist", hidden=[200, 200, 200], epochs=10, seeds=[0, 1, 2], batch=50, lr=None)


def grid_table(data, hidden, epochs, seeds, batch, lr, eta_v_values, against, against_values) -> list[dict]:
    """One row per (eta_V, other rate) cell with the three rates it used."""
    rows = []
    eta_vbar_default = common.circuit_default("eta_vbar")
    progress = outputs.Progress(len(eta_v_values) * len(against_values) * len(seeds), "runs")
    for eta_v in eta_v_values:
        for other in against_values:
            eta_w, options = (other, {"eta_v": eta_v}) if against == "lr" else (lr, {"eta_v": eta_v, "eta_vbar": other})
            histories = common.run_all([
                (f"eta_V={eta_v:g} {AGAINST[against][0]}={other:g} seed {seed}",
                 lambda seed=seed, eta_w=eta_w, options=options: common.train_run(data, "circuit", hidden, seed, epochs, batch, eta_w, options)[2])
                for seed in seeds
            ], progress)
            spread = outputs.spread([h.final for h in histories])
            rows.append({
                "eta_v": eta_v, "eta_vbar": options.get("eta_vbar", eta_vbar_default), "eta_w": eta_w,
                "acc_mean": spread["mean"], "acc_std": spread["std"], "acc_min": spread["min"], "acc_max": spread["max"],
                "n": spread["n"], "seeds": len(histories), "diverged": sum(h.diverged for h in histories),
            })
    progress.close()
    return rows


def findings(rows: list[dict], against: str) -> str:
    """Where the best cell is, whether eta_V is the smallest rate there, and the best per eta_V."""
    best = max(rows, key=lambda r: r["acc_mean"])
    others = {"eta_V̄": best["eta_vbar"], "eta_W": best["eta_w"]}
    if all(best["eta_v"] < value for value in others.values()):
        verdict = "eta_V is the smallest of the three rates there."
    elif all(best["eta_v"] <= value for value in others.values()):
        tied = [k for k, v in others.items() if v == best["eta_v"]]
        verdict = f"eta_V is tied with {' and '.join(tied)} for the smallest of the three rates there, not strictly the smallest."
    else:
        verdict = "eta_V is not the smallest of the three rates there (" + ", ".join(f"{k} = {v:g}" for k, v in others.items()) + ")."
    lines = [
        f"Best cell: eta_V = {best['eta_v']:g}, eta_V̄ = {best['eta_vbar']:g}, eta_W = {best['eta_w']:g}: "
        f"test accuracy {best['acc_mean']:.4f} ± {best['acc_std']:.4f}.",
        verdict,
        "Best accuracy per eta_V (over the " + AGAINST[against][0] + " axis): " + "; ".join(
            f"eta_V = {eta_v:g}: {max(r['acc_mean'] for r in rows if r['eta_v'] == eta_v):.4f}"
            for eta_v in dict.fromkeys(r["eta_v"] for r in rows)) + ".",
    ]
    return "\n".join(lines)


def plot(rows: list[dict], against: str, path, title: str) -> None:
    plt = outputs.pyplot()
    key = "eta_vbar" if against == "eta_vbar" else "eta_w"
    eta_vs = list(dict.fromkeys(r["eta_v"] for r in rows))
    others = list(dict.fromkeys(r[key] for r in rows))
    table = {(r["eta_v"], r[key]): r for r in rows}
    values = [[table[(v, o)]["acc_mean"] for o in others] for v in eta_vs]
    figure, axis = plt.subplots(figsize=(1.2 * len(others) + 2.5, 1.0 * len(eta_vs) + 1.8))
    image = axis.imshow(values, cmap="viridis", vmin=0, vmax=1, origin="lower")
    best = max(rows, key=lambda r: r["acc_mean"])
    for i, v in enumerate(eta_vs):
        for j, o in enumerate(others):
            cell = table[(v, o)]
            text = f"{cell['acc_mean']:.3f}" + (f"\n× {cell['diverged']}/{cell['seeds']}" if cell["diverged"] else "")
            weight = "bold" if cell is best else "normal"
            axis.text(j, i, text, ha="center", va="center", fontsize=8, weight=weight,
                      color="white" if cell["acc_mean"] < 0.6 else "black")
    axis.set_xticks(range(len(others)), [f"{o:g}" for o in others])
    axis.set_yticks(range(len(eta_vs)), [f"{v:g}" for v in eta_vs])
    axis.set_xlabel(AGAINST[against][0])
    axis.set_ylabel("eta_V")
    axis.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axis, label="test accuracy (mean over seeds)")
    seeds = max(r["seeds"] for r in rows)
    figure.text(0.01, 0.01, f"× k/{seeds}: k of the {seeds} seeds diverged (non-finite loss or weights; such a run "
                f"scores its last network, ≈ chance).  Bold: the best cell.", fontsize=7, ha="left", va="bottom", wrap=True)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    outputs.save_figure(figure, path)


def configure_parser(parser) -> None:
    common.add_common_arguments(parser, QUICK, FULL)
    parser.add_argument("--eta-v", type=float, nargs="+", default=None, metavar="RATE",
                        help=f"eta_V values, the rows (default: {' '.join(f'{g:g}' for g in GRID)})")
    parser.add_argument("--against", choices=sorted(AGAINST), default="eta_vbar",
                        help="the rate on the columns: eta_vbar (eta_V̄, default) or lr (eta_W)")
    parser.add_argument("--against-values", type=float, nargs="+", default=None, metavar="RATE",
                        help="the column rates (default: 0.01 0.03 0.1 0.3 1 for eta_vbar, 0.01 0.03 0.1 0.3 for lr)")
    outputs.add_output_arguments(parser, NAME)


def run(args) -> int:
    settings = common.resolve_settings(args, QUICK, FULL)
    eta_v_values = args.eta_v or GRID
    against_values = args.against_values or AGAINST[args.against][1]
    for name, values in (("--eta-v", eta_v_values), ("--against-values", against_values)):
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise BioPropError(f"{name} {' '.join(map(str, values))}: give rates > 0")
    data = common.load(settings["dataset"], args)
    out = outputs.start(args, NAME)
    settings.update(eta_v=eta_v_values, against=args.against, against_values=against_values)
    outputs.say(f"{NAME}: {settings}")
    rows = grid_table(data, settings["hidden"], settings["epochs"], settings["seeds"], settings["batch"], settings["lr"],
                      eta_v_values, args.against, against_values)
    columns = [("eta_v", "eta_V", "g"), ("eta_vbar", "eta_V̄", "g"), ("eta_w", "eta_W", "g"), ("acc_mean", "test acc (mean)", ".4f"),
               ("acc_std", "std", ".4f"), ("acc_min", "min", ".4f"), ("acc_max", "max", ".4f"), ("diverged", "diverged", "d")]
    markdown = outputs.markdown_table(rows, columns)
    notes = findings(rows, args.against)
    print(markdown)
    print(notes)
    sizes = "-".join(map(str, [data.n_features, *settings["hidden"], data.n_classes]))
    title = f"Circuit learning rates, {settings['dataset']} {sizes}"
    out.tables("lr_grid", title, rows, settings, markdown, notes, extra={"rule_options": common.rule_options("circuit", settings["lr"])})
    plot(rows, args.against, out.path("lr_grid.png"), title)
    out.report()
    return 0
