"""The temporal dynamics of one training step (in the spirit of Song et al. 2020, Fig. 2).

One batch of digits, one sigmoid network, three rules from the same weights: IL (T = 20,
gamma = 0.1, one update at t_c = T), Z-IL (gamma = 1, each layer updated at its own step) and
Fa-Z-IL (the same updates, triggered by the neurons' own gate). For each rule and layer we
plot the size of the error nodes, ||eps_l(t)|| (batch mean of per-sample norms), against the
inference step t, and mark the steps at which that layer's weights changed. Z-IL's plot shows
the error front: layer L-k is silent until t = k, takes BP's delta then, and learns at once.
Writes dynamics.png and dynamics.csv.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..data import load_dataset
from ..files import write_csv
from ..network import MLP
from ..rules import make_rule
from .outputs import pyplot, save_figure

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


def configure_parser(parser) -> None:
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 32, 32])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="figures/song2020-dynamics", help="folder for dynamics.png and dynamics.csv")


def run(args) -> int:
    curves = dynamics(tuple(args.hidden), args.batch, args.seed)  # bad arguments fail here, before the folder exists
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "dynamics.csv", [{"rule": label, **r} for label, rows in curves.items() for r in rows])
    plot(curves, out / "dynamics.png")
    for label, rows in curves.items():
        times = {r["layer"]: r["t"] for r in rows if r["updated"]}
        print(f"{label:<24} weight updates at t = " + ", ".join(f"layer {l}: {t}" for l, t in sorted(times.items())))
    print(f"wrote {out}/dynamics.png and dynamics.csv", file=sys.stderr)
    return 0
