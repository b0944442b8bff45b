"""Fa-Z-IL's detection success rate against t_d (Song et al. 2020, Table 3).

A stream of training pairs from a data set is presented to a fresh network, one pair at a
time (or several independent streams side by side): input until the prediction phase is
stationary (plus hold_steps), then the teacher for L steps, with Fa-Z-IL's inference,
plasticity and gate phi running throughout (`FullyAutonomousZIL.stream`). Every (pair, neuron)
is one detection: success when phi fired exactly at its layer's step and nowhere else. We
also train BP on the same pairs in the same order and report the largest weight difference:
with perfect detection the stream is BP, to round-off.

Paper (MNIST, sigmoid): 93.4%, 92.4%, 99.6%, then 100% from t_d = 4.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

from ..data import load_dataset
from ..errors import BioPropError
from ..network import MLP
from ..rules import make_rule
from ..files import write_csv, write_json

DEFAULT_T_D = (1, 2, 3, 4, 5, 6, 7, 8, 16)
PAPER_RATES = {1: 0.934, 2: 0.924, 3: 0.996, 4: 1.0, 5: 1.0, 6: 1.0, 7: 1.0, 8: 1.0, 16: 1.0}


def detection_table(
    t_d_values=DEFAULT_T_D,
    dataset="digits",
    data_dir=None,
    hidden=(32, 32),
    activation="sigmoid",
    loss="mse",
    pairs=200,
    streams=1,
    lr=0.05,
    seeds=(0,),
    hold_steps=16,
    learning_steps=None,
    max_prediction_steps=300,
) -> list[dict]:
    """One row per t_d: success rates (mean and spread over seeds) and distance to BP."""
    data = load_dataset(dataset, data_dir=data_dir)
    inputs = data.train_x[:pairs].double()
    labels = data.train_y[:pairs]
    if inputs.shape[0] < pairs:
        raise BioPropError(f"--pairs {pairs}: the {dataset} training set has only {inputs.shape[0]}")
    sizes = [data.n_features, *hidden, data.n_classes]
    rows = []
    for t_d in t_d_values:
        per_seed = []
        for seed in seeds:
            net = MLP(sizes, activation=activation, dtype=torch.float64, seed=seed)
            oracle_net = net.clone()
            rule = make_rule("fazil", lr=lr, loss=loss, t_d=t_d)
            started = time.perf_counter()
            result = rule.stream(
                net, inputs, labels, batch_size=streams, hold_steps=hold_steps, learning_steps=learning_steps,
                max_prediction_steps=max_prediction_steps,
            )
            seconds = time.perf_counter() - started
            oracle = make_rule("bp", lr=lr, loss=loss)
            used = result["pairs"]
            for start in range(0, used, streams):
                oracle.step(oracle_net, inputs[start : start + streams], labels[start : start + streams])
            distance = max(
                float((a.detach() - b.detach()).abs().max()) for a, b in zip(net.parameters_list(), oracle_net.parameters_list())
            )
            per_seed.append({**result["detection"], "distance_to_bp": distance, "seconds": seconds,
                             "unconverged": result["unconverged_prediction_phases"]})
        rates = [r["success_rate"] for r in per_seed]
        rows.append(
            {
                "t_d": t_d,
                "success_rate": statistics.fmean(rates),
                "success_rate_sd": statistics.stdev(rates) if len(rates) > 1 else 0.0,
                "strict_success_rate": statistics.fmean(r["strict_success_rate"] for r in per_seed),
                "success": sum(r["success"] for r in per_seed),
                "missed": sum(r["missed"] for r in per_seed),
                "spurious": sum(r["spurious"] for r in per_seed),
                "harmless_miss": sum(r["harmless_miss"] for r in per_seed),
                "max_weight_distance_to_bp": max(r["distance_to_bp"] for r in per_seed),
                "unconverged_prediction_phases": sum(r["unconverged"] for r in per_seed),
                "paper_success_rate": PAPER_RATES.get(t_d),
                "seconds": sum(r["seconds"] for r in per_seed),
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    header = f"{'t_d':>4} {'success':>9} {'(sd)':>8} {'strict':>8} {'missed':>7} {'spurious':>9} {'harmless':>9} {'max|W-W_bp|':>12} {'unconv.':>8} {'paper':>7}"
    lines = [header]
    for r in rows:
        paper = f"{r['paper_success_rate']:.1%}" if r["paper_success_rate"] is not None else "-"
        lines.append(
            f"{r['t_d']:>4} {r['success_rate']:>9.2%} {r['success_rate_sd']:>8.2%} {r['strict_success_rate']:>8.2%} "
            f"{r['missed']:>7} {r['spurious']:>9} {r['harmless_miss']:>9} {r['max_weight_distance_to_bp']:>12.2e} "
            f"{r['unconverged_prediction_phases']:>8} {paper:>7}"
        )
    return "\n".join(lines)


def configure_parser(parser) -> None:
    parser.add_argument("--full", action="store_true", help="the paper's data: MNIST, 1000 pairs, 3 seeds")
    parser.add_argument("--t-d", type=int, nargs="+", default=list(DEFAULT_T_D), help="values of t_d to measure")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 32])
    parser.add_argument("--activation", default="sigmoid")
    parser.add_argument("--loss", default="mse", choices=["mse", "ce"])
    parser.add_argument("--pairs", type=int, default=200, help="training pairs streamed per seed")
    parser.add_argument("--streams", type=int, default=1, help="independent streams side by side (1 = the paper's setting)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--hold-steps", type=int, default=16, help="steps the input is held after the prediction phase is stationary")
    parser.add_argument("--max-prediction-steps", type=int, default=300,
                        help="the teacher comes after this many steps even if the prediction phase has not settled")
    parser.add_argument("--out", default=None, help="write the table as CSV (and .json beside it)")


def run(args) -> int:
    if args.full:
        args.dataset, args.pairs, args.seeds = "mnist", 1000, [0, 1, 2]
    if any(t < 1 for t in args.t_d) or args.pairs < 1 or args.streams < 1:
        raise BioPropError("--t-d values, --pairs and --streams must be >= 1")
    if args.out:
        folder = Path(args.out).resolve().parent
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise BioPropError(f"--out {args.out}: cannot write into {folder}")
    print(
        f"Fa-Z-IL detection on {args.dataset}: {args.pairs} pairs x {len(args.seeds)} seed(s), hidden {args.hidden}, "
        f"{args.activation}, {args.streams} stream(s)",
        file=sys.stderr,
    )
    rows = detection_table(
        args.t_d, args.dataset, args.data_dir, args.hidden, args.activation, args.loss, args.pairs, args.streams, args.lr,
        args.seeds, args.hold_steps, max_prediction_steps=args.max_prediction_steps,
    )
    print(format_table(rows))
    if args.out:
        out = Path(args.out)
        write_csv(out, rows)
        write_json(out.with_suffix(".json"), rows)
        print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0
