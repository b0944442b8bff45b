"""Community structure against the learning rate (Fan & Mysore 2024, section 4 and Fig. 4).

The paper's simulation, on the plain process functions of `bioprop.rate_network`: an
all-to-all RateNetwork of n = 300 neurons and no data set. Every iteration t runs one step of
each process, in the order of their timescales:

    firing      s_t = W x_{t-1},   x_t = sigma(s_t) + sigma_x xi_t             (`net_input`, `fire`)
    credit      c_t = W^T (g(s_t) * c_{t-1}) + sigma_c zeta_t, except that the sources, the
                first 10% of the neurons, keep their own credit (their rows of the credit
                operator are the identity)                                       (`credit_step`)
    plasticity  W += r c_t g(s_t) x_t^T on existing synapses                     (`weight_change`)
    pruning     the fraction p of the smallest |w_ij| among the existing synapses is set to 0
                and removed from the mask, so it stays 0

with xi, zeta standard Gaussian noise. After T iterations the network is a weighted graph:
undirected, edge weight A_ij = |w_ij| + |w_ji| (the total coupling of i and j in both
directions; no self-synapses exist), and the Leiden algorithm (leidenalg, modularity objective,
resolution 1, iterated until stable, seeded) partitions it into communities. We report:

- Q: the weighted modularity of that partition;
- within share: the fraction of sum |w_ij| on synapses inside a community (1 = block-diagonal);
- hub share: the fraction of sum |w_ij| received by the 10% of neurons with the largest
  in-strength sum_j |w_ij| (random wiring: about 0.13; horizontal stripes across the heat map
  push it towards 1);
- source share: the fraction of sum |w_ij| received by the sources (random wiring: 0.1), and
  sources together: the largest fraction of the sources that share one community;
- two nulls, so that Q means something: r = 0 (the same pruning of the random initial weights,
  no learning), and for every run its within-row shuffle (each neuron's incoming weights
  permuted over its possible presynaptic partners: in-degree, in-strength and the weight
  distribution kept, structure destroyed), partitioned the same way.

The paper gives none of r, p, the noise, T or sigma. Our choices (defaults below, recorded in
the tables and in docs/credit.md): sigma = tanh, g = sigma' (the BP balance), initial w_ij ~
N(0, 0.5^2 / (n - 1)), no self-synapses, rates start as sigma_x xi_0, the sources' credit is
drawn once from N(0, 1) and kept without noise, the other neurons' credit starts at 0,
sigma_x = sigma_c = 0.3, T = 2000, p = 0.00175 per iteration (so (1 - p)^T = 3% of the
synapses survive), r on a half-decade grid 1e-3 .. 1 plus r = 0, 3 seeds.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..activations import get_activation
from ..balance import get_balance
from ..errors import BioPropError
from ..rate_network import RateNetwork, credit_step, fire, net_input, weight_change
from . import outputs

NAME = "fan2024-communities"

QUICK = dict(n=300, iterations=2000, prune=0.00175, lrs=[0.0, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0], seeds=[0, 1, 2],
             firing_noise=0.3, credit_noise=0.3, source_fraction=0.1, source_credit=1.0, activation="tanh",
             balance="derivative", width=1.0, init_scale=0.5)
FULL = dict(QUICK, iterations=6000, prune=1 - 0.03 ** (1 / 6000), seeds=list(range(8)),
            lrs=[0.0] + [float(f"{10 ** (e / 4):.3g}") for e in range(-16, 1)])

LEIDEN_MISSING = (f"reproduce {NAME} needs the Leiden algorithm (python-igraph and leidenalg); "
                  "install them with `pip install leidenalg igraph`")

#: in-strength share of the top HUB_FRACTION neurons (the "hub share" column)
HUB_FRACTION = 0.1

COLUMNS = [
    ("lr", "r", "g"), ("q_mean", "Q (mean)", ".3f"), ("q_std", "std", ".3f"), ("q_min", "min", ".3f"), ("q_max", "max", ".3f"),
    ("share_mean", "within share", ".3f"), ("share_std", "std", ".3f"), ("communities", "communities", ".1f"),
    ("q_shuffled", "Q shuffled", ".3f"), ("share_shuffled", "share shuffled", ".3f"), ("hub_share", "hub share", ".3f"),
    ("source_share", "source share", ".3f"), ("source_community", "sources together", ".2f"),
    ("mean_abs_w", "mean abs w", ".3g"), ("max_abs_w", "max abs w", ".3g"), ("mean_gain", "mean g", ".3f"),
    ("density", "density", ".4f"), ("diverged", "diverged", "d"),
]


def leiden():
    """(igraph, leidenalg), or a BioPropError saying how to install them."""
    try:
        import igraph
        import leidenalg
    except ImportError:
        raise BioPropError(LEIDEN_MISSING) from None
    return igraph, leidenalg


# -- the simulation ------------------------------------------------------------------------------
def prune_smallest_(net: RateNetwork, fraction: float) -> int:
    """Remove the round(fraction * existing) existing synapses with the smallest |w| from the
    mask and zero them; returns how many were removed."""
    existing = int(net.mask.sum())
    count = min(int(round(fraction * existing)), existing)
    if count == 0:
        return 0
    magnitude = net.W.detach().abs().masked_fill(~net.mask, math.inf).flatten()
    smallest = torch.topk(magnitude, count, largest=False).indices
    net.mask.view(-1)[smallest] = False
    net.apply_mask_()
    return count


def simulate(settings: dict, lr: float, seed: int) -> tuple[RateNetwork, dict]:
    """Run the simulation for T = settings["iterations"] iterations; returns the final network
    and {"diverged", "mean_gain" (mean g over the last 10% of iterations), "seconds"}."""
    start = time.perf_counter()
    n = settings["n"]
    no_autapses = ~torch.eye(n, dtype=torch.bool)
    net = RateNetwork(n, activation=settings["activation"], mask=no_autapses, init_scale=settings["init_scale"],
                      dtype=torch.float64, seed=seed)
    balance = get_balance(settings["balance"], settings["width"])
    noise = torch.Generator().manual_seed(seed + 1_000_003)  # apart from the weights' stream
    sources = torch.arange(n_sources(settings))
    others_noisy = torch.ones(1, n, dtype=torch.float64).index_fill(1, sources, 0.0)
    no_inputs = torch.zeros(0, dtype=torch.long)
    no_stimulus = torch.zeros(1, 0, dtype=torch.float64)

    rates = settings["firing_noise"] * torch.randn(1, n, generator=noise, dtype=torch.float64)
    credit = torch.zeros(1, n, dtype=torch.float64)
    credit[:, sources] = settings["source_credit"] * torch.randn(1, len(sources), generator=noise, dtype=torch.float64)
    iterations = settings["iterations"]
    averaged_from = iterations - max(1, iterations // 10)
    gain_sum, gain_count, diverged = 0.0, 0, False
    W = net.W.data
    for t in range(iterations):
        s = net_input(W, rates)
        rates = fire(s, no_inputs, no_stimulus, net.rate)
        rates = rates + settings["firing_noise"] * torch.randn(1, n, generator=noise, dtype=torch.float64)
        gain = net.gain(s, balance)
        credit = credit_step(W, credit, gain, clamped=sources)
        credit = credit + settings["credit_noise"] * others_noisy * torch.randn(1, n, generator=noise, dtype=torch.float64)
        weight_step, _ = weight_change(credit, gain, rates, lr, net.mask)
        W += weight_step
        prune_smallest_(net, settings["prune"])
        if t >= averaged_from:
            gain_sum += float(gain.mean())
            gain_count += 1
        if t % 100 == 99 and not bool(torch.isfinite(W).all()):
            diverged = True
            break
    diverged = diverged or not bool(torch.isfinite(W).all())
    return net, {"diverged": diverged, "mean_gain": gain_sum / gain_count if gain_count else math.nan,
                 "seconds": time.perf_counter() - start}


def n_sources(settings: dict) -> int:
    return int(round(settings["source_fraction"] * settings["n"]))


# -- measuring community structure --------------------------------------------------------------
def coupling_graph(W: torch.Tensor):
    """The undirected weighted igraph with A_ij = |w_ij| + |w_ji| for i < j (zero edges left out)."""
    igraph, _ = leiden()
    magnitude = W.detach().abs().cpu().numpy()
    coupling = magnitude + magnitude.T
    rows, columns = np.triu_indices(coupling.shape[0], k=1)
    weights = coupling[rows, columns]
    present = weights > 0
    return igraph.Graph(n=coupling.shape[0], edges=np.column_stack([rows[present], columns[present]]).tolist(),
                        edge_attrs={"weight": weights[present].tolist()})


def communities(W: torch.Tensor, seed: int) -> tuple[np.ndarray, float]:
    """Leiden partition of the coupling graph (modularity, resolution 1, until stable, seeded):
    (community of every neuron, numbered by decreasing size; Q)."""
    _, leidenalg = leiden()
    graph = coupling_graph(W)
    if graph.ecount() == 0:
        return np.zeros(W.shape[0], dtype=int), 0.0
    partition = leidenalg.find_partition(graph, leidenalg.ModularityVertexPartition, weights="weight", seed=seed,
                                         n_iterations=-1)
    membership = np.asarray(partition.membership)
    q = graph.modularity(partition.membership, weights="weight")  # partition.modularity ignores the weights
    by_size = np.argsort(-np.bincount(membership), kind="stable")
    renumbered = np.empty_like(by_size)
    renumbered[by_size] = np.arange(len(by_size))
    return renumbered[membership], float(q)


def within_share(W: torch.Tensor, membership: np.ndarray) -> float:
    """sum of |w_ij| with i and j in one community, over sum of |w_ij|."""
    magnitude = W.detach().abs().cpu().numpy()
    total = magnitude.sum()
    same = membership[:, None] == membership[None, :]
    return float(magnitude[same].sum() / total) if total > 0 else math.nan


def sources_together(membership: np.ndarray, sources: int) -> float:
    """The largest fraction of the sources (neurons 0 .. sources-1) in a single community."""
    return float(np.bincount(membership[:sources]).max() / sources)


def hub_share(W: torch.Tensor, fraction: float = HUB_FRACTION) -> float:
    """The share of sum |w_ij| received by the top `fraction` of neurons by in-strength."""
    in_strength = W.detach().abs().sum(dim=1)
    total = float(in_strength.sum())
    if total == 0:
        return math.nan
    top = max(1, int(round(fraction * W.shape[0])))
    return float(torch.topk(in_strength, top).values.sum()) / total


def shuffle_within_rows(W: torch.Tensor, seed: int) -> torch.Tensor:
    """Every neuron's incoming weights (row i, j != i) permuted over j != i, independently per row."""
    n = W.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=W.device)
    incoming = W.detach()[off_diagonal].view(n, n - 1)
    order = torch.argsort(torch.rand(n, n - 1, generator=torch.Generator().manual_seed(seed)), dim=1).to(W.device)
    shuffled = torch.zeros_like(W.detach())
    shuffled[off_diagonal] = incoming.gather(1, order).flatten()
    return shuffled


def measure(net: RateNetwork, seed: int, sources: int) -> dict:
    """Q, shares and the shuffled null of one final network (NaN everywhere if it diverged)."""
    W = net.W.detach()
    if not bool(torch.isfinite(W).all()):
        return {key: math.nan for key in ("q", "share", "communities", "q_shuffled", "share_shuffled", "hub_share",
                                          "source_share", "source_community", "mean_abs_w", "max_abs_w")} | {"membership": None}
    membership, q = communities(W, seed)
    shuffled = shuffle_within_rows(W, seed + 1)
    shuffled_membership, q_shuffled = communities(shuffled, seed)
    existing = W[net.mask]
    return {
        "q": q, "share": within_share(W, membership), "communities": float(membership.max() + 1),
        "q_shuffled": q_shuffled, "share_shuffled": within_share(shuffled, shuffled_membership),
        "hub_share": hub_share(W), "source_share": float(W[:sources].abs().sum() / W.abs().sum()),
        "source_community": sources_together(membership, sources), "mean_abs_w": float(existing.abs().mean()) if existing.numel() else 0.0,
        "max_abs_w": float(W.abs().max()), "membership": membership,
    }


# -- the sweep ------------------------------------------------------------------------------------
def sweep(settings: dict, progress: bool = True) -> tuple[list[dict], list[dict], dict]:
    """Every (r, seed): (table rows, one per r; per-run records; {r: (W, membership)} of the first seed)."""
    rows, runs, examples = [], [], {}
    shown = outputs.Progress(len(settings["lrs"]) * len(settings["seeds"]), "runs") if progress else None
    for lr in settings["lrs"]:
        records = []
        for seed in settings["seeds"]:
            net, run_info = simulate(settings, lr, seed)
            figures = measure(net, seed, n_sources(settings))
            membership = figures.pop("membership")
            record = {"lr": lr, "seed": seed, **figures, "density": float(net.mask.float().mean()),
                      "mean_gain": run_info["mean_gain"], "diverged": run_info["diverged"],
                      "seconds": run_info["seconds"]}
            records.append(record)
            if seed == settings["seeds"][0] and membership is not None:
                examples[lr] = (net.W.detach().clone(), membership)
            if shown is not None:
                shown.done(f"r={lr:g} seed {seed}: Q={record['q']:.3f}")
        runs.extend(records)
        rows.append(summarise(lr, records))
    if shown is not None:
        shown.close()
    return rows, runs, examples


def summarise(lr: float, records: list[dict]) -> dict:
    q, share = outputs.spread([r["q"] for r in records]), outputs.spread([r["share"] for r in records])
    mean = lambda key: outputs.spread([r[key] for r in records])["mean"]
    return {
        "lr": lr, "q_mean": q["mean"], "q_std": q["std"], "q_min": q["min"], "q_max": q["max"],
        "share_mean": share["mean"], "share_std": share["std"], "share_min": share["min"], "share_max": share["max"],
        "communities": mean("communities"), "q_shuffled": mean("q_shuffled"),
        "q_shuffled_std": outputs.spread([r["q_shuffled"] for r in records])["std"],
        "share_shuffled": mean("share_shuffled"), "hub_share": mean("hub_share"),
        "source_share": mean("source_share"), "source_community": mean("source_community"), "mean_abs_w": mean("mean_abs_w"),
        "max_abs_w": mean("max_abs_w"), "mean_gain": mean("mean_gain"), "density": mean("density"),
        "diverged": sum(bool(r["diverged"]) for r in records), "seeds": len(records),
    }


# -- figures ----------------------------------------------------------------------------------------
def plot_sweep(rows: list[dict], path: Path, title: str) -> None:
    """Q and the within share against r (log axis; r = 0 as a horizontal reference)."""
    plt = outputs.pyplot()
    figure, axes = plt.subplots(1, 4, figsize=(18, 4.0))
    learning = [r for r in rows if r["lr"] > 0]
    baseline = next((r for r in rows if r["lr"] == 0), None)
    lrs = [r["lr"] for r in learning]
    panels = (("q_mean", "q_std", "q_shuffled", "modularity Q"), ("share_mean", "share_std", "share_shuffled",
              "within-community share of |w|"), ("hub_share", None, None, f"share of |w| onto the top {HUB_FRACTION:.0%} neurons"),
              ("mean_gain", None, None, "mean balance g(s) (last 10% of iterations)"))
    for axis, (key, spread_key, null_key, label) in zip(axes, panels):
        axis.errorbar(lrs, [r[key] for r in learning], yerr=[r[spread_key] for r in learning] if spread_key else None,
                      marker="o", capsize=3, label="credit rule (mean ± std over seeds)")
        if null_key:
            axis.plot(lrs, [r[null_key] for r in learning], marker=".", linestyle=":", color="gray",
                      label="same networks, rows shuffled")
        if baseline is not None and math.isfinite(baseline[key]):
            axis.axhline(baseline[key], color="black", linestyle="--", linewidth=1, label="r = 0 (pruning only)")
        axis.set_xscale("log")
        axis.set_xlabel("learning rate r")
        axis.set_ylabel(label)
    axes[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    outputs.save_figure(figure, path)


def heat_map_choices(rows: list[dict], examples: dict) -> list[tuple[str, float]]:
    """(label, r) of the heat maps: r = 0, the lowest and the highest r > 0, and the r of largest mean Q."""
    learning = [r for r in rows if r["lr"] > 0 and r["lr"] in examples]
    chosen = []
    if 0.0 in examples:
        chosen.append(("r = 0 (pruning only)", 0.0))
    if learning:
        peak = max(learning, key=lambda r: r["q_mean"] if math.isfinite(r["q_mean"]) else -math.inf)
        for label, row in (("lowest r", learning[0]), ("largest mean Q", peak), ("highest r", learning[-1])):
            if row["lr"] not in [r for _, r in chosen]:
                chosen.append((f"{label}: r = {row['lr']:g}", row["lr"]))
    return chosen


def plot_heat_maps(rows: list[dict], examples: dict, path: Path, seed: int) -> None:
    """W (postsynaptic rows, presynaptic columns) with the neurons reordered by community."""
    plt = outputs.pyplot()
    chosen = heat_map_choices(rows, examples)
    if not chosen:
        return
    figure, axes = plt.subplots(1, len(chosen), figsize=(4.4 * len(chosen), 4.6), squeeze=False)
    for axis, (label, lr) in zip(axes[0], chosen):
        W, membership = examples[lr]
        order = np.lexsort((np.arange(len(membership)), membership))
        reordered = W.cpu().numpy()[np.ix_(order, order)]
        nonzero = np.abs(reordered[reordered != 0])
        limit = float(np.percentile(nonzero, 98)) if nonzero.size else 1.0
        image = axis.imshow(reordered, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        for boundary in np.cumsum(np.bincount(membership))[:-1]:
            axis.axhline(boundary - 0.5, color="black", linewidth=0.6)
            axis.axvline(boundary - 0.5, color="black", linewidth=0.6)
        row = next(r for r in rows if r["lr"] == lr)
        axis.set_title(f"{label}\nQ = {row['q_mean']:.2f} (mean), within share = {row['share_mean']:.2f}", fontsize=9)
        axis.set_xlabel("presynaptic neuron j (by community)")
        axis.set_ylabel("postsynaptic neuron i (by community)")
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    figure.suptitle(f"W reordered by Leiden community (seed {seed}; colour clipped at the 98th percentile of |w|)", fontsize=10)
    figure.tight_layout()
    outputs.save_figure(figure, path)


# -- command line ------------------------------------------------------------------------------------
def configure_parser(parser) -> None:
    def shown(key):
        text = lambda v: " ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) else (
            f"{v:g}" if isinstance(v, float) else str(v))
        return f" (default {text(QUICK[key])}; --full {text(FULL[key])})"

    parser.add_argument("--full", action="store_true", help="a larger sweep: finer r grid, more seeds, more iterations")
    parser.add_argument("--lrs", type=float, nargs="+", default=None, metavar="R", help="learning rates r >= 0" + shown("lrs"))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N", help="seeds" + shown("seeds"))
    parser.add_argument("--iterations", type=int, default=None, metavar="T", help="iterations T" + shown("iterations"))
    parser.add_argument("--prune", type=float, default=None, metavar="P",
                        help="fraction of the existing synapses pruned after every weight update" + shown("prune"))
    parser.add_argument("--n", type=int, default=None, help="number of neurons" + shown("n"))
    parser.add_argument("--firing-noise", type=float, default=None, metavar="SD", help="sigma_x" + shown("firing_noise"))
    parser.add_argument("--credit-noise", type=float, default=None, metavar="SD", help="sigma_c" + shown("credit_noise"))
    parser.add_argument("--source-fraction", type=float, default=None, metavar="F",
                        help="fraction of neurons (the first ones) that keep their own credit" + shown("source_fraction"))
    parser.add_argument("--source-credit", type=float, default=None, metavar="SD",
                        help="standard deviation of the sources' credit" + shown("source_credit"))
    parser.add_argument("--activation", default=None, help="sigma" + shown("activation"))
    parser.add_argument("--balance", default=None, help="balance g (a bioprop.balance name)" + shown("balance"))
    parser.add_argument("--width", type=float, default=None, help="width of a gaussian balance" + shown("width"))
    parser.add_argument("--init-scale", type=float, default=None, help="initial w ~ N(0, scale^2/(n-1))" + shown("init_scale"))
    outputs.add_output_arguments(parser, NAME)


def resolve_settings(args) -> dict:
    """QUICK or FULL overridden by the flags given, checked (BioPropError before anything is written)."""
    settings = outputs.flag_settings(args, QUICK, FULL)
    flag = lambda key: "--" + key.replace("_", "-")
    settings["n"] = outputs.check_count("--n", settings["n"], 2)
    settings["iterations"] = outputs.check_count("--iterations", settings["iterations"], 1)
    settings["prune"] = outputs.check_number("--prune", settings["prune"], 0.0, maximum=1.0)
    for key in ("firing_noise", "credit_noise", "source_credit", "init_scale"):
        settings[key] = outputs.check_number(flag(key), settings[key], 0.0)
    settings["width"] = outputs.check_number("--width", settings["width"], 0.0, inclusive=False)
    settings["source_fraction"] = outputs.check_number("--source-fraction", settings["source_fraction"], 0.0, inclusive=False,
                                                      maximum=1.0)
    if not settings["lrs"]:
        raise BioPropError("--lrs: give one or more learning rates >= 0")
    settings["lrs"] = sorted({outputs.check_number("--lrs", lr, 0.0) for lr in settings["lrs"]})
    if not settings["seeds"] or min(settings["seeds"]) < 0:
        raise BioPropError("--seeds: give one or more seeds >= 0")
    settings["seeds"] = list(dict.fromkeys(settings["seeds"]))
    if not 1 <= n_sources(settings) < settings["n"]:
        raise BioPropError(f"--source-fraction {settings['source_fraction']:g}: with --n {settings['n']} it names "
                           f"{n_sources(settings)} source neurons; give a fraction that names at least 1 and fewer than n")
    get_activation(settings["activation"])
    get_balance(settings["balance"], settings["width"])
    return settings


def run(args) -> int:
    leiden()
    settings = resolve_settings(args)
    out = outputs.start(args, NAME)
    outputs.say(f"{NAME}: {settings}")
    rows, runs, examples = sweep(settings)
    markdown = outputs.markdown_table(rows, COLUMNS)
    print(markdown)
    survivors = (1 - settings["prune"]) ** settings["iterations"]
    notes = (f"{len(settings['seeds'])} seeds per r; Q = weighted modularity of the Leiden partition of A_ij = |w_ij| + |w_ji|; "
             f"within share = fraction of sum |w| inside communities; 'shuffled' = the same networks with every row "
             f"permuted (in-degree and in-strength kept); hub share = fraction of sum |w| received by the top "
             f"{HUB_FRACTION:.0%} neurons by in-strength; (1 - p)^T = {survivors:.3f}.")
    out.tables("communities", f"Community structure against the learning rate (n = {settings['n']})", rows,
               settings, markdown, notes, extra={"runs": runs})
    plot_sweep(rows, out.path("communities.png"),
               f"all-to-all n = {settings['n']}, T = {settings['iterations']}, p = {settings['prune']:.3g}, "
               f"noise {settings['firing_noise']:g}/{settings['credit_noise']:g}, {len(settings['seeds'])} seeds")
    plot_heat_maps(rows, examples, out.path("heatmaps.png"), settings["seeds"][0])
    out.report()
    return 0
