"""Which cross and feedback synapses must be plastic (Liao et al. 2024, Fig. 4).

The paper freezes subsets of {V̄, W̄, V} (W always learns) on CIFAR-10 and compares them with a
linear network trained by SGD as the floor: plastic V̄ matters most, and everything plastic is
best. We train the circuit with `plastic` set to each of the 8 subsets (frozen matrices stay at
their random initial draw; every other option is the rule's default) and, from the same initial
weights and batches, the floor: the same layer widths with linear hidden units, trained by bp.

Quick: digits, 64-64-64-10, 20 epochs, seeds 0 1 2 (about half a minute). On digits a linear
model is already strong, so the floor is high; `--dataset fashion-mnist --epochs 2 --hidden
100 100` is a minute more. --full: CIFAR-10, 3072-200-200-200-10 (the caption gives no
architecture; our choice), 10 epochs, seeds 0 1 2.
Writes ablation.csv/.json/.md and ablation.png (bars with std error bars).
"""
from __future__ import annotations

from itertools import combinations

from . import liao2024 as common
from . import outputs

NAME = "liao2024-ablation"
CROSS = ("Vbar", "Wbar", "V")
QUICK = dict(dataset="digits", hidden=[64, 64], epochs=20, seeds=[0, 1, 2], batch=50, lr=None)
FULL = dict(dataset="cifar10", hidden=[200, 200, 200], epochs=10, seeds=[0, 1, 2], batch=50, lr=None)
LINEAR = "linear network (SGD)"

COLUMNS = [
    ("variant", "plastic", ""), ("acc_mean", "test acc (mean)", ".4f"), ("acc_std", "std", ".4f"),
    ("acc_min", "min", ".4f"), ("acc_max", "max", ".4f"), ("diverged", "diverged", "d"),
]


def subsets() -> list[tuple[str, ...]]:
    """The 8 subsets of {V̄, W̄, V}, smallest first."""
    return [subset for size in range(len(CROSS) + 1) for subset in combinations(CROSS, size)]


def label(subset: tuple[str, ...]) -> str:
    names = {"W": "W", "Vbar": "V̄", "Wbar": "W̄", "V": "V"}
    return ", ".join(names[t] for t in ("W", *subset))


def ablation_table(data, hidden, epochs, seeds, batch, lr) -> list[dict]:
    """One row per subset (plastic = "W,..."), then the linear floor."""
    rows = []
    variants = [(label(s), "circuit", {"plastic": ",".join(("W", *s))}, "relu") for s in subsets()]
    variants.append((LINEAR, "bp", {}, "linear"))
    progress = outputs.Progress(len(variants) * len(seeds), "runs")
    for name, rule, options, activation in variants:
        histories = common.run_all([
            (f"{name} seed {seed}", lambda seed=seed: common.train_run(data, rule, hidden, seed, epochs, batch, lr, options, activation)[2])
            for seed in seeds
        ], progress)
        spread = outputs.spread([h.final for h in histories])
        rows.append({
            "variant": name, "plastic": options.get("plastic", "all (bp)"), "acc_mean": spread["mean"], "acc_std": spread["std"],
            "acc_min": spread["min"], "acc_max": spread["max"], "n": spread["n"], "diverged": sum(h.diverged for h in histories),
        })
    progress.close()
    return rows


def plot(rows: list[dict], path, title: str) -> None:
    plt = outputs.pyplot()
    figure, axis = plt.subplots(figsize=(9, 4.2))
    colors = ["tab:gray" if r["variant"] == LINEAR else ("tab:red" if "V̄" in r["variant"] else "tab:blue") for r in rows]
    positions = range(len(rows))
    axis.bar(positions, [r["acc_mean"] for r in rows], yerr=[r["acc_std"] for r in rows], capsize=3, color=colors)
    axis.vlines(positions, [r["acc_min"] for r in rows], [r["acc_max"] for r in rows], colors="black", linewidth=0.8)
    for position, row in zip(positions, rows):
        if row["diverged"]:
            axis.text(position, row["acc_mean"] + 0.03, f"diverged\n{row['diverged']}/{row['n']}", ha="center", fontsize=7)
    axis.set_xticks(positions, [r["variant"] for r in rows], rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("test accuracy")
    axis.set_title(f"{title}\n(plastic synapse types; red: V̄ plastic; grey: linear floor)", fontsize=10)
    axis.set_ylim(0, 1)
    figure.tight_layout()
    outputs.save_figure(figure, path)


def configure_parser(parser) -> None:
    common.add_common_arguments(parser, QUICK, FULL)
    outputs.add_output_arguments(parser, NAME)


def run(args) -> int:
    settings = common.resolve_settings(args, QUICK, FULL)
    data = common.load(settings["dataset"], args)
    out = outputs.start(args, NAME)
    outputs.say(f"{NAME}: {settings}")
    rows = ablation_table(data, settings["hidden"], settings["epochs"], settings["seeds"], settings["batch"], settings["lr"])
    markdown = outputs.markdown_table(rows, COLUMNS)
    print(markdown)
    title = f"Ablation of plastic synapse types ({settings['dataset']})"
    out.tables("ablation", title, rows, settings, markdown, extra={"rule_options": common.rule_options("circuit", settings["lr"])})
    plot(rows, out.path("ablation.png"), title)
    out.report()
    return 0
