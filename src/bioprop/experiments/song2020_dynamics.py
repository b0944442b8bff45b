"""The temporal dynamics of one training step (in the spirit of Song et al. 2020, Fig. 2).

One batch of digits, one sigmoid network, three rules from the same weights: IL (T = 20,
gamma = 0.1, one update at t_c = T), Z-IL (gamma = 1, each layer updated at its own step) and
Fa-Z-IL (the same updates, triggered by the neurons' own gate). For each rule and layer we
plot the size of the error nodes, ||eps_l(t)|| (batch mean of per-sample norms), against the
inference step t, and mark the steps at which that layer's weights changed. Z-IL's plot shows
the error front: layer L-k is silent until t = k, takes BP's delta then, and learns at once.
Writes dynamics.csv (every rule, step and layer), dynamics.md/.json (per rule and layer: the
step its weights changed and ||eps_l|| there) and dynamics.png into results/song2020-dynamics.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import load_dataset
from ..errors import BioPropError
from ..network import MLP
from ..rules import make_rule
from . import outputs
from .outputs import pyplot, save_figure

NAME = "song2020-dynamics"
COLUMNS = [("rule", "rule", ""), ("layer", "layer", "d"), ("updated_at", "weights change at t", ""),
           ("error_at_update", "‖eps_l‖ there", ".3g"), ("error_final", "‖eps_l‖ at the last step", ".3g")]

RULES = {
    "IL (T=20, gamma=0.1)": ("il", {}),
    "Z-IL (full dynamics)": ("zil", {"dynamics": "full"}),
    "Fa-Z-IL (t_d=4)": ("fazil", {}),
}


def dynamics(hidden=(32, 32, 32), batch=32, seed=0, lr=0.05) -> dict[str, list[dict]]:
    """rule label -> rows (t, layer, error_norm, updated)."""
    data = load_dataset("digits")
    x, y = data.train_x[:batch].double(), data.train_y[:batch]
    initial = MLP([data.n_features, *hidden, data.n_classes], activation="sigmoid", dtype=torch.float64, seed=seed)
    curves = {}
    for label, (name, options) in RULES.items():
        info = make_rule(name, lr=lr, **options).step(initial.clone(), x, y, trace=True)
        rows = []
        for entry in info["trace"]:
            for layer, error in enumerate(entry["error_nodes"], start=1):
                rows.append({"t": entry["t"], "layer": layer, "error_norm": float(error.norm(dim=1).mean()),
                             "updated": layer in entry["updated_layers"]})
        curves[label] = rows
    return curves


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), sharey=True)
    for axis, (label, rows) in zip(axes, curves.items()):
        layers = sorted({r["layer"] for r in rows})
        for layer in layers:
            mine = [r for r in rows if r["layer"] == layer]
            line, = axis.plot([r["t"] for r in mine], [r["error_norm"] for r in mine], marker=".", label=f"layer {layer}")
            updates = [r for r in mine if r["updated"]]
            axis.scatter([r["t"] for r in updates], [r["error_norm"] for r in updates], s=90, facecolors="none",
                         edgecolors=line.get_color(), linewidths=1.5)
        axis.set_title(label, fontsize=10)
        axis.set_xlabel("inference step t")
        axis.set_yscale("symlog", linthresh=1e-4)
    axes[0].set_ylabel("||eps_l(t)||  (circles: weights of layer l change)")
    axes[-1].legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)


def summary_rows(curves: dict[str, list[dict]]) -> list[dict]:
    """Per rule and layer: the step(s) its weights changed, ||eps_l|| at the first, and at the last step."""
    rows = []
    for label, curve in curves.items():
        for layer in sorted({r["layer"] for r in curve}):
            mine = [r for r in curve if r["layer"] == layer]
            updates = [r for r in mine if r["updated"]]
            rows.append({"rule": label, "layer": layer, "updated_at": ", ".join(str(r["t"]) for r in updates) or "-",
                         "error_at_update": updates[0]["error_norm"] if updates else None,
                         "error_final": mine[-1]["error_norm"]})
    return rows


def configure_parser(parser) -> None:
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 32, 32], help="hidden widths (default 32 32 32)")
    parser.add_argument("--batch", type=int, default=32, help="samples in the one batch (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights (default 0)")
    outputs.add_output_arguments(parser, NAME)


def run(args) -> int:
    if not args.hidden or min(args.hidden) < 1:
        raise BioPropError("--hidden: give one or more widths >= 1")
    outputs.check_count("--batch", args.batch, 1)
    outputs.set_quiet(args.quiet)
    outputs.say(f"{NAME}: hidden {args.hidden}, batch {args.batch}, seed {args.seed}")
    curves = dynamics(tuple(args.hidden), args.batch, args.seed)  # bad arguments fail here, before the folder exists
    out = outputs.start(args, NAME)
    summary = summary_rows(curves)
    markdown = outputs.markdown_table(summary, COLUMNS)
    print(markdown)
    settings = {"hidden": list(args.hidden), "batch": args.batch, "seed": args.seed, "dataset": "digits", "activation": "sigmoid"}
    out.csv("dynamics.csv", [{"rule": label, **r} for label, rows in curves.items() for r in rows])
    out.tables("summary", "Error nodes over inference steps for one batch: when each layer learns", summary, settings, markdown,
               notes="dynamics.csv holds ||eps_l(t)|| (batch mean of per-sample norms) for every rule, step t and layer l.")
    plot(curves, out.path("dynamics.png"))
    out.report()
    return 0
