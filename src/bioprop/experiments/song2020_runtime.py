"""Milliseconds per weight update (Song et al. 2020, Table 4).

The paper times one weight update of BP, IL (t_c = 20), Z-IL and Fa-Z-IL on an ImageNet-scale
network, on a CPU and a GPU (ms): CPU 3.1, 19.2, 3.6, 3.6; GPU 3.7, 56.3, 4.1, 4.2, i.e. IL
6.2x BP, Z-IL and Fa-Z-IL 1.16x on the CPU (15.2x, 1.11x, 1.14x on the GPU). We time the same
four rules on three networks instead of ImageNet's:

    mlp        784-256-256-256-10, sigmoid, mse            (bioprop.benchmark's "mlp")
    lenet5     LeNet-5 on 1x28x28, tanh, cross-entropy     (bioprop.benchmark's "lenet5")
    cnn-small  the VGG-style build_model("cnn-small", (3, 32, 32), 10), tanh, cross-entropy

Every step is timed by bioprop.benchmark: per case a fresh network and a plain-PyTorch copy with
the same weights, then interleaved blocks (ABBA) of the reference step (`torch.optim.SGD`:
zero_grad, loss, backward, step) and the rule's step, `torch.utils.benchmark.Timer.timeit`
per block, median over blocks. Rows: "BP (torch.optim.SGD)", the step a user would write (its
ms: the median over the network's cases of each case's reference median); our `bp` rule;
`il (T=20)` (our IL updates once at t_c = T = 20); `zil` (the event-front implementation) and
`zil (full dynamics)` (every node simulated at every step), both beside the paper's Z-IL;
`fazil`. Ratios: "x torch" = rule median / plain PyTorch's median from the same interleaved run,
"x bp" = that ratio over our bp rule's ratio; the paper's ratio is its rule's ms over its BP's.
A rule whose step fails on a network gives a "not supported: <reason>" row.

Quick (default): batch 32, 5 rounds of ~10 ms blocks, 60 s of timing shared among the cases
(a minute or two on 2 cores with --threads 1). --full: batches 16, 64 and 256, 21 rounds of ~20 ms
blocks, 600 s of timing (16 minutes of wall-clock time on 2 loaded cores: the slow cases still run
3 rounds).
Writes runtime.csv/.json/.md and runtime.png (ratios to BP, ours beside the paper's) into --out
(default results/song2020-runtime), atomically, and prints a provenance line (command, bioprop
and torch versions, machine, threads).
"""
from __future__ import annotations

import math
import platform

import torch

from .. import benchmark
from . import outputs

DEVICES = ("cpu", "cuda")
NETWORKS = ("mlp", "lenet5", "cnn-small")
TORCH_ROW = "BP (torch.optim.SGD)"
#: case label -> (rule, options, the paper's rule it stands beside, or None)
CASES = {
    "bp": ("bp", {}, "BP"),
    "il (T=20)": ("il", {"n_steps": 20}, "IL"),
    "zil": ("zil", {}, "Z-IL"),
    "zil (full dynamics)": ("zil", {"dynamics": "full"}, "Z-IL"),
    "fazil": ("fazil", {}, "Fa-Z-IL"),
}
#: Song et al. 2020, Table 4: ms per weight update, device type -> paper's rule -> ms
PAPER_MS = {
    "cpu": {"BP": 3.1, "IL": 19.2, "Z-IL": 3.6, "Fa-Z-IL": 3.6},
    "cuda": {"BP": 3.7, "IL": 56.3, "Z-IL": 4.1, "Fa-Z-IL": 4.2},
}
QUICK = dict(networks=list(NETWORKS), batches=[32], repeats=5, block_time=0.01, time_budget=60.0, dtype="float32")
FULL = dict(networks=list(NETWORKS), batches=[16, 64, 256], repeats=21, block_time=0.02, time_budget=600.0, dtype="float32")

COLUMNS = [
    ("network", "network", ""), ("batch", "batch", "d"), ("rule", "rule", ""), ("paper_rule", "paper", ""),
    ("ms", "ms (median)", ".3f"), ("ms_min", "min", ".3f"), ("ms_max", "max", ".3f"), ("paper_ms", "paper ms", ".1f"),
    ("ratio_to_torch", "x torch", ".2f"), ("ratio_to_bp", "x bp", ".2f"), ("paper_ratio", "paper x BP", ".2f"),
    ("paired_ratio_to_torch", "paired x torch", ".2f"), ("blocks", "blocks", "d"), ("note", "note", ""),
]


def network_spec(name: str) -> benchmark.NetworkSpec:
    if name == "cnn-small":
        return benchmark.NetworkSpec("cnn-small", "VGG-style cnn-small on 3x32x32 (tanh, max pool)", "ce", (3, 32, 32),
                                     model="cnn-small")
    return benchmark.network_spec(name)


def paper_ratio(device_type: str, paper_rule: str) -> float:
    table = PAPER_MS[device_type]
    return table[paper_rule] / table["BP"]


def runtime_rows(specs, batches, device: torch.device, dtype: torch.dtype, settings: benchmark.Settings,
                 cases: dict = CASES, report=None) -> list[dict]:
    """One row per (network, batch, case), after a plain-PyTorch row per (network, batch);
    `report(spec, batch, case_row)` sees each case as soon as it is timed."""
    paper = PAPER_MS[device.type]
    timed = {label: (rule, options) for label, (rule, options, _) in cases.items()}
    budget = benchmark.Budget(settings.time_budget, len(specs) * len(batches) * len(cases))
    rows = []
    for spec in specs:
        for batch in batches:
            shown = (lambda row, spec=spec, batch=batch: report(spec, batch, row)) if report else None
            result = benchmark.benchmark(spec, timed, batch, dtype, device, settings, budget, shown)
            bp = next((row for row in result.rows if row.rule == "bp" and row.ratio is not None), None)
            reference_ms = result.reference_median_ms()
            base = {"device": device.type, "network": spec.name, "batch": batch}
            rows.append({**base, "rule": TORCH_ROW, "paper_rule": "BP", "supported": reference_ms is not None,
                         "ms": reference_ms, "ms_min": None, "ms_max": None, "paper_ms": paper["BP"],
                         "ratio_to_torch": 1.0 if reference_ms is not None else None,
                         "ratio_to_bp": 1.0 / bp.ratio if bp else None, "paper_ratio": 1.0,
                         "paired_ratio_to_torch": None, "blocks": None, "steps_per_block": None,
                         "note": "median over the cases' reference timings"})
            for row in result.rows:
                paper_rule = cases[row.case][2]
                ms = row.rule_timing.ms() if row.rule_timing else {}
                rows.append({**base, "rule": row.case, "paper_rule": paper_rule, "supported": row.supported,
                             "ms": ms.get("median"), "ms_min": ms.get("min"), "ms_max": ms.get("max"),
                             "paper_ms": paper.get(paper_rule), "ratio_to_torch": row.ratio, "ratio_to_bp": row.ratio_to_bp,
                             "paper_ratio": paper_ratio(device.type, paper_rule) if paper_rule in paper else None,
                             "paired_ratio_to_torch": row.paired_ratio,
                             "blocks": row.rule_timing.blocks if row.rule_timing else None,
                             "steps_per_block": row.rule_timing.steps_per_block if row.rule_timing else None,
                             "note": "" if row.supported else f"not supported: {row.reason}"})
    return rows


def plot(rows: list[dict], path, device_type: str) -> None:
    """A panel per (batch, network): per paper rule, the paper's ratio to BP beside ours (to plain
    PyTorch and to our bp rule), log scale."""
    plt = outputs.pyplot()
    from matplotlib import ticker

    panels = list(dict.fromkeys((r["batch"], r["network"]) for r in rows))
    batches = list(dict.fromkeys(b for b, _ in panels))
    networks = list(dict.fromkeys(n for _, n in panels))
    figure, axes = plt.subplots(len(batches), len(networks), figsize=(4.6 * len(networks), 3.6 * len(batches)),
                                squeeze=False)
    labels = [label for label in dict.fromkeys(r["rule"] for r in rows) if label != TORCH_ROW]
    width = 0.27
    for i, batch in enumerate(batches):
        for j, network in enumerate(networks):
            axis = axes[i][j]
            mine = {r["rule"]: r for r in rows if r["batch"] == batch and r["network"] == network}
            positions = range(len(labels))
            for offset, (key, name) in enumerate((("paper_ratio", "paper (x its BP)"), ("ratio_to_torch", "ours x torch SGD"),
                                                  ("ratio_to_bp", "ours x our bp"))):
                values = [_bar(mine.get(label, {}).get(key)) for label in labels]
                axis.bar([p + (offset - 1) * width for p in positions], values, width, label=name)
            for p, label in zip(positions, labels):
                if label in mine and not mine[label]["supported"]:
                    axis.text(p, 1.0, "not supported", rotation=90, ha="center", va="bottom", fontsize=7)
            axis.axhline(1.0, color="black", linewidth=0.8)
            axis.set_yscale("log")
            axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}x"))
            axis.yaxis.set_minor_formatter(ticker.NullFormatter())
            axis.set_xticks(list(positions))
            axis.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
            axis.set_title(f"{network}, batch {batch}", fontsize=10)
            axis.set_ylabel("time per update / BP's")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"ms per weight update as a ratio to BP ({device_type}); paper: Song et al. 2020 Table 4", fontsize=10)
    figure.tight_layout()
    outputs.save_figure(figure, path)


def _progress(spec, batch, row) -> None:
    if row.supported:
        outputs.say(f"  {spec.name} batch {batch} {row.case}: {row.rule_timing.median * 1e3:.3f} ms, "
                    f"{row.ratio:.2f}x torch ({row.rule_timing.blocks} blocks)")
    else:
        outputs.say(f"  {spec.name} batch {batch} {row.case}: not supported: {row.reason}")


def _bar(value) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else math.nan


def machine_line(device: torch.device, dtype: torch.dtype, threads: int) -> str:
    """Where the figures were measured (beside the provenance line of every experiment)."""
    env = benchmark.environment(device, dtype, 0, threads)
    machine = env["cpu"] + (f", GPU {env['gpu']}" if env["gpu"] else "")
    return (f"bioprop {env['bioprop']}; torch {env['torch']}; machine: {machine} "
            f"({platform.platform()}, {_cores()} cores); threads {threads}; device {device}; {env['dtype']}")


def _cores() -> str:
    import os

    return str(os.cpu_count() or "?")


def configure_parser(parser) -> None:
    parser.add_argument("--full", action="store_true", help="batches 16 64 256, 21 rounds of ~20 ms blocks, 600 s budget")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=None, help=f"default: {' '.join(NETWORKS)}")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 32; --full 16 64 256)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of interleaved blocks per case (default 5; --full 21)")
    parser.add_argument("--block-time", type=float, default=None, help="seconds a timed block should last (default 0.01; --full 0.02)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds of timing shared among the cases; each case runs at least 3 rounds (default 60; --full 600)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while timing (default: torch's)")
    outputs.add_output_arguments(parser, "song2020-runtime")


def run(args) -> int:
    settings = outputs.flag_settings(args, QUICK, FULL)
    threads = outputs.check_count("--threads", args.threads if args.threads is not None else torch.get_num_threads())
    for batch in settings["batches"]:
        outputs.check_count("--batches", batch)
    outputs.check_count("--repeats", settings["repeats"])
    outputs.check_number("--block-time", settings["block_time"], 0.0, inclusive=False)
    outputs.check_number("--time-budget", settings["time_budget"], 0.0, inclusive=False)
    timing = benchmark.Settings(repeats=settings["repeats"], warmup=3 if args.full else 1, block_time=settings["block_time"],
                                threads=threads, time_budget=settings["time_budget"], min_repeats=min(3, settings["repeats"]))
    device, dtype = args.device, getattr(torch, settings["dtype"])
    specs = [network_spec(name) for name in settings["networks"]]
    out = outputs.start(args, "song2020-runtime")
    line = machine_line(device, dtype, threads)
    outputs.say(f"song2020-runtime: {settings}\n{line}")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)  # building and probing too, not only the timed blocks
    try:
        rows = runtime_rows(specs, settings["batches"], device, dtype, timing, CASES, report=_progress)
    finally:
        torch.set_num_threads(threads_before)
    markdown = outputs.markdown_table(rows, COLUMNS)
    print(markdown)
    print(f"{out.provenance}; {line}")
    notes = (f"{line}\n\nx torch: rule's median ms / plain PyTorch's (torch.optim.SGD, same network, weights and batch, "
             "interleaved blocks); x bp: that over our bp rule's; paper x BP: the paper's rule ms over its BP ms "
             f"(Table 4, {'GPU' if device.type == 'cuda' else 'CPU'}, ImageNet-scale network, not these networks).")
    out.tables("runtime", "ms per weight update (Song et al. 2020, Table 4)", rows,
               {**settings, "threads": threads, "device": str(device)}, markdown, notes,
               extra={"machine": line, "paper_ms": PAPER_MS,
                                "method": "bioprop.benchmark.benchmark: per case a fresh network and plain-PyTorch copy, "
                                          "interleaved ABBA blocks timed by torch.utils.benchmark.Timer.timeit"})
    plot(rows, out.path("runtime.png"), device.type)
    out.report()
    return 0
