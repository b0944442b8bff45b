"""`bioprop benchmark`: time one training step of each rule, as a ratio to BP's step.

All rules train the same network on the same batch on the same machine; we report the median
of `--repeats` timed steps after `--warmup` untimed ones. Ratios, not seconds, are the figure
to compare across machines (Song et al. 2020, Table 4: Z-IL 1.16x, Fa-Z-IL 1.16x, IL 6.2x BP
on CPU).
"""
from __future__ import annotations

import statistics
import time

import torch

from .errors import BioPropError
from .network import MLP
from .rules import make_rule, rule_names

def default_cases() -> dict[str, tuple[str, dict]]:
    """name shown -> (rule, options): every registered rule's own benchmark_cases, bp first."""
    from .rules import RULES

    cases = {label: ("bp", options) for label, options in RULES["bp"].benchmark_cases.items()}
    for name, rule in RULES.items():
        if name != "bp":
            cases.update({label: (name, options) for label, options in (rule.benchmark_cases or {name: {}}).items()})
    return cases


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rule(rule_name, options, sizes, batch, dtype, device, repeats, warmup, activation="sigmoid", loss="mse") -> float:
    """Median seconds per training step."""
    net = MLP(sizes, activation=activation, dtype=dtype, device=device, seed=0)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(batch, sizes[0], generator=generator, dtype=dtype).to(device)
    y = torch.nn.functional.one_hot(torch.randint(0, sizes[-1], (batch,), generator=generator), sizes[-1]).to(dtype).to(device)
    rule = make_rule(rule_name, lr=1e-3, loss=loss, **options)
    for _ in range(warmup):
        rule.step(net, x, y)
    times = []
    for _ in range(repeats):
        _synchronize(net.device)
        started = time.perf_counter()
        rule.step(net, x, y)
        _synchronize(net.device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def benchmark(sizes, batch, dtype, device, repeats, warmup, cases=None, activation="sigmoid", loss="mse") -> list[dict]:
    cases = cases or default_cases()
    rows = []
    for label, (rule_name, options) in cases.items():
        seconds = time_rule(rule_name, options, sizes, batch, dtype, device, repeats, warmup, activation, loss)
        rows.append({"rule": label, "ms_per_step": 1e3 * seconds})
    reference = next(r["ms_per_step"] for r in rows if r["rule"] == "bp")
    for row in rows:
        row["ratio_to_bp"] = row["ms_per_step"] / reference
    return rows


def configure_parser(parser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", action="append",
                        help="layer widths (repeat the flag for several networks); default: 64-64-64-10 and 784-256-256-256-10")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rules", nargs="+", default=None, help=f"subset of the cases to time (rule names: {rule_names()})")


def run(args) -> int:
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise BioPropError(f"--device {args.device!r}: use cpu or cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise BioPropError("--device cuda: no CUDA device is available here; use --device cpu")
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1:
        raise BioPropError("--repeats and --batch must be >= 1 and --warmup >= 0")
    for sizes in args.sizes or []:
        if len(sizes) < 2 or min(sizes) < 1:
            raise BioPropError(f"--sizes {sizes}: give at least two positive layer widths, input first")
    dtype = getattr(torch, args.dtype)
    all_cases = default_cases()
    cases = all_cases
    if args.rules:
        unknown = sorted(set(args.rules) - {case[0] for case in all_cases.values()})
        if unknown:
            raise BioPropError(f"--rules {unknown}: not benchmarked; choose from {sorted({c[0] for c in all_cases.values()})}")
        cases = {label: case for label, case in all_cases.items() if case[0] in args.rules}
        cases = {"bp": all_cases["bp"], **cases}
    all_sizes = args.sizes or [[64, 64, 64, 10], [784, 256, 256, 256, 10]]
    print(f"one training step, median of {args.repeats} after {args.warmup} warm-up; batch {args.batch}, {args.dtype}, "
          f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for sizes in all_sizes:
        rows = benchmark(sizes, args.batch, dtype, torch.device(args.device), args.repeats, args.warmup, cases)
        print(f"\nsizes {sizes}")
        print(f"  {'rule':<22}{'ms/step':>10}{'x BP':>8}")
        for row in rows:
            print(f"  {row['rule']:<22}{row['ms_per_step']:>10.3f}{row['ratio_to_bp']:>8.2f}")
    return 0
