"""`bioprop benchmark`: time one training step of every rule against plain PyTorch.

The reference is the step a user would write instead of a bioprop rule, on the same network
(a separate copy with the same initial weights) and the same batch:

    opt = torch.optim.SGD(model.parameters(), lr)
    opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step()

with no host synchronisation. `model` is an nn.Sequential of Linear and activation layers for
the MLP, the very nn.Sequential that `build_model("lenet5", ...)` wraps (deep-copied) for
LeNet-5, and copies of the ElmanRNN's nn.RNN and nn.Linear for the RNN. `loss_fn` is
cross-entropy on integer labels (`F.cross_entropy`) or bioprop's squared error,
`F.mse_loss(output, y, reduction="sum") / (2 B)` (the same loss bioprop's rules descend, so one
reference step equals one step of our `bp` rule; tests check that in float64).

Devices (`--device`): by default the CPU and then, when a GPU is present, CUDA, each timed as
below (rows and JSON entries carry their device); or one device (cpu, cuda, cuda:N, auto).

Networks (batch 64, float32 by default; `--networks`, or custom MLPs with `--sizes`):

    mlp     784-256-256-256-10, sigmoid hidden layers, linear output, mse
    lenet5  LeNet-5 on 1x28x28 images (tanh, average pooling), cross-entropy
    rnn     many-to-one Elman RNN reading a 28x28 image row by row (28 steps of 28 inputs),
            hidden 128, tanh, linear readout, cross-entropy

Method. For each (network, rule case) pair, a fresh network and a fresh reference copy are
built from the same seed, and the rule is tried once: if its step raises (a BioPropError, or any
error of a rule not yet ported to that network), the row says "not supported: <reason>". Then
both steps are warmed up, each step's block size k is chosen so that a block of k steps lasts
about `--block-time` seconds, and `--repeats` rounds are run, each timing one block of the
reference and one block of the rule, in the order ABBA ABBA ... so that slow drifts of a shared
machine hit both alike. The run keeps to `--time-budget` seconds: each case may use the time left
divided by the cases left, and stops early (after at least 3 rounds) when its share is spent. Blocks are timed with `torch.utils.benchmark.Timer.timeit(k)` (which
re-warms with two untimed steps, runs k steps, and synchronises CUDA only before reading the
clock, around the block, never inside a step), with the thread count fixed to `--threads`. The
blocks of one side are merged (`Measurement.merge`: block time / k is one sample per block);
we report min / median / max over the blocks, and the ratio of medians

    ratio = median(rule's seconds per step) / median(reference's seconds per step)

from the same interleaved run; `paired_ratio` (JSON, and the "paired" column) is the median over
rounds of the ratio of a round's two adjacent blocks, which a busy shared machine disturbs less.
"x BP" is the ratio of a case's ratio to our `bp` rule's ratio
(the cost relative to bioprop's own autograd step, which adds the batch checks and a
`float(loss)` host sync per step). Ratios, not seconds, are the figure to compare across
machines (Song et al. 2020, Table 4, CPU: Z-IL 1.16x, Fa-Z-IL 1.16x, IL 6.2x BP).
"""
from __future__ import annotations

import copy
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.benchmark import Measurement, Timer

from .errors import BioPropError
from .files import json_safe, write_atomic, write_json
from .models import build_model
from .network import MLP, Network
from .rules import make_rule, rule_names

Tensor = torch.Tensor

NETWORK_NAMES = ("mlp", "lenet5", "rnn")
LEARNING_RATE = 1e-3
_REFERENCE_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity}


def default_cases() -> dict[str, tuple[str, dict]]:
    """name shown -> (rule, options): every registered rule's own benchmark_cases, bp first."""
    from .rules import RULES

    cases = {label: ("bp", options) for label, options in RULES["bp"].benchmark_cases.items()}
    for name, rule in RULES.items():
        if name != "bp":
            cases.update({label: (name, options) for label, options in (rule.benchmark_cases or {name: {}}).items()})
    return cases


# -- the networks and their plain-PyTorch twins ------------------------------------------------
@dataclass(frozen=True)
class NetworkSpec:
    """A benchmarked network: `name` (mlp, lenet5, rnn, or mlp:8-6-3), the loss, the shape of
    one input sample, the MLP's widths where it is one, and the `build_model` name of a wrapped
    nn.Sequential (lenet5, cnn-small) whose reference is a deep copy of that Sequential."""

    name: str
    description: str
    loss: str
    sample_shape: tuple[int, ...]
    sizes: tuple[int, ...] | None = None
    model: str | None = None

    @property
    def n_classes(self) -> int:
        return self.sizes[-1] if self.sizes else 10


def network_spec(name: str) -> NetworkSpec:
    if name == "mlp":
        return mlp_spec([784, 256, 256, 256, 10])
    if name == "lenet5":
        return NetworkSpec("lenet5", "LeNet-5 on 1x28x28 (tanh, avg pool)", "ce", (1, 28, 28), model="lenet5")
    if name == "rnn":
        return NetworkSpec("rnn", "Elman RNN, 28 rows of 28, hidden 128 (tanh)", "ce", (28, 28))
    raise BioPropError(f"--networks {name!r}: choose from {', '.join(NETWORK_NAMES)}")


def mlp_spec(sizes) -> NetworkSpec:
    sizes = tuple(int(n) for n in sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise BioPropError(f"--sizes {list(sizes)}: give at least two positive layer widths, input first")
    widths = "-".join(map(str, sizes))
    return NetworkSpec(f"mlp {widths}", f"MLP {widths} (sigmoid)", "mse", (sizes[0],), sizes)


class RowRNN(nn.Module):
    """The plain-PyTorch RNN classifier: nn.RNN over the rows, nn.Linear on the last state."""

    def __init__(self, rnn: nn.RNN, readout: nn.Linear):
        super().__init__()
        self.rnn, self.readout = rnn, readout

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.rnn(x)[0][:, -1])


def _mlp_reference(net: MLP) -> nn.Sequential:
    layers: list[nn.Module] = []
    biases = net.biases or [None] * net.n_layers
    for index, (weight, bias) in enumerate(zip(net.weights, biases)):
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        layers.append(linear)
        if index < net.n_layers - 1:
            layers.append(_REFERENCE_ACTIVATIONS[net.activation.name]())
    return nn.Sequential(*layers)


def build_pair(spec: NetworkSpec, dtype: torch.dtype, device: torch.device, seed: int = 0) -> tuple[Network, nn.Module]:
    """The network a rule trains and its plain-PyTorch twin: a separate module holding copies of
    the same initial parameters."""
    if spec.sizes is not None:
        net = MLP(list(spec.sizes), activation="sigmoid", dtype=dtype, device=device, seed=seed)
        return net, _mlp_reference(net)
    if spec.model is not None:
        net = build_model(spec.model, spec.sample_shape, spec.n_classes, dtype=dtype, device=device, seed=seed)
        return net, copy.deepcopy(net.module)
    net = build_model("rnn", (1, *spec.sample_shape), spec.n_classes, hidden=(128,), dtype=dtype, device=device, seed=seed)
    return net, RowRNN(copy.deepcopy(net.rnn), copy.deepcopy(net.readout))


@dataclass
class Batch:
    """One fixed batch: inputs, integer labels (the reference's cross-entropy) and the same
    labels one-hot (every rule's targets, and the squared-error target)."""

    x: Tensor
    labels: Tensor
    targets: Tensor


def make_batch(spec: NetworkSpec, batch: int, dtype: torch.dtype, device: torch.device, seed: int = 1) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *spec.sample_shape, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, spec.n_classes, (batch,), generator=generator)
    targets = F.one_hot(labels, spec.n_classes).to(dtype)
    return Batch(x.to(dtype=dtype, device=device), labels.to(device), targets.to(device))


def reference_loss(spec: NetworkSpec, output: Tensor, batch: Batch) -> Tensor:
    """The reference's loss: cross-entropy on labels, or bioprop's mse (0.5 ||z - y||^2, batch mean)."""
    if spec.loss == "ce":
        return F.cross_entropy(output, batch.labels)
    return F.mse_loss(output, batch.targets, reduction="sum") / (2 * output.shape[0])


def reference_step(spec: NetworkSpec, model: nn.Module, batch: Batch, lr: float = LEARNING_RATE) -> Callable[[], None]:
    """The plain-PyTorch training step on `batch`, as a closure (no host sync inside)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def step() -> None:
        optimizer.zero_grad()
        loss = reference_loss(spec, model(batch.x), batch)
        loss.backward()
        optimizer.step()

    return step


# -- timing -----------------------------------------------------------------------------------
@dataclass
class Timing:
    """Seconds per step over the blocks of one side (each block: k steps, one sample)."""

    min: float
    median: float
    max: float
    blocks: int
    steps_per_block: int
    #: seconds per step of each block, in round order (round i of both sides ran back to back)
    samples: list[float] = field(default_factory=list, repr=False)

    def ms(self) -> dict:
        return {"min": 1e3 * self.min, "median": 1e3 * self.median, "max": 1e3 * self.max}


@dataclass
class Settings:
    repeats: int = 21
    warmup: int = 3
    block_time: float = 0.02
    threads: int = 1
    #: seconds the whole run may spend timing; shared out among the cases still to run
    time_budget: float = 240.0
    min_repeats: int = 3
    max_block: int = 1000


class Budget:
    """Shares `seconds` out among `cases`: each case may use what is left over the cases left
    (a case that is not supported, or finishes early, leaves its share to the rest)."""

    def __init__(self, seconds: float, cases: int):
        self.deadline = time.perf_counter() + seconds
        self.cases_left = max(cases, 1)

    def next_case(self) -> float:
        allowance = max(self.deadline - time.perf_counter(), 0.0) / self.cases_left
        self.cases_left = max(self.cases_left - 1, 1)
        return allowance


def _timer(step: Callable[[], None], label: str, threads: int) -> Timer:
    return Timer(stmt="step()", globals={"step": step}, label=label, num_threads=threads)


def _steps_per_block(timer: Timer, settings: Settings) -> int:
    """Warm up (Timer.timeit adds two untimed steps) and size a block to last about block_time."""
    estimate = timer.timeit(max(settings.warmup, 1)).median
    return int(min(settings.max_block, max(1, round(settings.block_time / max(estimate, 1e-9)))))


def _summary(blocks: list[Measurement], steps: int) -> Timing:
    merged = Measurement.merge(blocks)[0]
    times = merged.times
    return Timing(min(times), merged.median, max(times), len(times), steps, list(times))


def time_interleaved(reference: Callable[[], None], rule: Callable[[], None], settings: Settings,
                     allowance: float = math.inf) -> tuple[Timing, Timing]:
    """(reference, rule) seconds per step, timed in alternating blocks (ABBA ...): `repeats`
    rounds, or fewer (but at least `min_repeats`) once `allowance` seconds are spent."""
    started = time.perf_counter()
    timers = (_timer(reference, "reference", settings.threads), _timer(rule, "rule", settings.threads))
    steps = [_steps_per_block(t, settings) for t in timers]
    blocks: tuple[list[Measurement], list[Measurement]] = ([], [])
    for round_index in range(settings.repeats):
        if round_index >= settings.min_repeats and time.perf_counter() - started > allowance:
            break
        order = (0, 1) if round_index % 2 == 0 else (1, 0)
        for side in order:
            blocks[side].append(timers[side].timeit(steps[side]))
    return _summary(blocks[0], steps[0]), _summary(blocks[1], steps[1])


# -- one table --------------------------------------------------------------------------------
@dataclass
class CaseRow:
    case: str
    rule: str
    options: dict
    supported: bool
    reason: str | None = None
    rule_timing: Timing | None = None
    reference_timing: Timing | None = None
    ratio: float | None = None
    paired_ratio: float | None = None
    ratio_to_bp: float | None = None

    def as_json(self) -> dict:
        return {
            "case": self.case, "rule": self.rule, "options": self.options, "supported": self.supported,
            "reason": self.reason,
            "ms": self.rule_timing.ms() if self.rule_timing else None,
            "reference_ms": self.reference_timing.ms() if self.reference_timing else None,
            "blocks": self.rule_timing.blocks if self.rule_timing else None,
            "steps_per_block": self.rule_timing.steps_per_block if self.rule_timing else None,
            "reference_steps_per_block": self.reference_timing.steps_per_block if self.reference_timing else None,
            "samples_ms": [1e3 * t for t in self.rule_timing.samples] if self.rule_timing else None,
            "reference_samples_ms": [1e3 * t for t in self.reference_timing.samples] if self.reference_timing else None,
            "ratio": self.ratio, "paired_ratio": self.paired_ratio, "ratio_to_bp": self.ratio_to_bp,
        }


@dataclass
class NetworkResult:
    spec: NetworkSpec
    rows: list[CaseRow] = field(default_factory=list)
    device: str = "cpu"

    def reference_median_ms(self) -> float | None:
        """Median over the cases of the reference's median step (each case timed its own)."""
        medians = [row.reference_timing.median for row in self.rows if row.reference_timing]
        return 1e3 * _median(medians) if medians else None


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])


def _reason(error: Exception) -> str:
    text = str(error) if isinstance(error, BioPropError) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def benchmark_case(spec: NetworkSpec, label: str, rule_name: str, options: dict, batch_size: int, dtype: torch.dtype,
                   device: torch.device, settings: Settings, allowance: float = math.inf) -> CaseRow:
    net, model = build_pair(spec, dtype, device)
    batch = make_batch(spec, batch_size, dtype, device)
    row = CaseRow(label, rule_name, dict(options), supported=True)
    rule = make_rule(rule_name, lr=LEARNING_RATE, loss=spec.loss, **options)

    def rule_step() -> None:
        rule.step(net, batch.x, batch.targets)

    try:
        rule_step()  # a rule not ported to this network fails here, whatever it raises
        reference, timed = time_interleaved(reference_step(spec, model, batch), rule_step, settings, allowance)
    except Exception as error:  # noqa: BLE001 -- any failure of a rule's step is reported as its row
        row.supported, row.reason = False, _reason(error)
        return row
    row.reference_timing, row.rule_timing = reference, timed
    row.ratio = timed.median / reference.median
    row.paired_ratio = _median([r / q for r, q in zip(timed.samples, reference.samples)])
    return row


def benchmark(spec: NetworkSpec, cases: dict[str, tuple[str, dict]], batch_size: int, dtype: torch.dtype,
              device: torch.device, settings: Settings, budget: Budget | None = None,
              report: Callable[[CaseRow], None] | None = None) -> NetworkResult:
    """Every case on one network; `report` sees each row as soon as it is measured."""
    result = NetworkResult(spec, device=str(device))
    for label, (rule_name, options) in cases.items():
        allowance = budget.next_case() if budget else math.inf
        row = benchmark_case(spec, label, rule_name, options, batch_size, dtype, device, settings, allowance)
        result.rows.append(row)
        if report:
            report(row)
    bp = next((row for row in result.rows if row.rule == "bp" and row.ratio is not None), None)
    for row in result.rows:
        if bp is not None and row.ratio is not None:
            row.ratio_to_bp = row.ratio / bp.ratio
    return result


# -- the report -------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def environment(device: torch.device, dtype: torch.dtype, batch: int, threads: int) -> dict:
    from . import __version__

    return {
        "bioprop": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "cpu": cpu_name(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "device": str(device), "threads": threads, "dtype": str(dtype).replace("torch.", ""), "batch": batch,
    }


def _ratio_text(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def print_header(spec: NetworkSpec, device: torch.device | None = None) -> None:
    print(f"\n{spec.name}: {spec.description}, loss {spec.loss}" + (f", on {device}" if device is not None else ""))
    print(f"  {'rule':<22}{'ms/step min / median / max':>30}{'torch ms':>10}{'x torch':>9}{'paired':>8}{'blocks':>7}")


def print_row(row: CaseRow) -> None:
    if not row.supported:
        print(f"  {row.case:<22}  not supported: {row.reason}", flush=True)
        return
    ms, ref = row.rule_timing.ms(), row.reference_timing.ms()
    spread = f"{ms['min']:.3f} / {ms['median']:.3f} / {ms['max']:.3f}"
    print(f"  {row.case:<22}{spread:>30}{ref['median']:>10.3f}{_ratio_text(row.ratio):>9}"
          f"{_ratio_text(row.paired_ratio):>8}{row.rule_timing.blocks:>7}", flush=True)


def print_summary(result: NetworkResult) -> None:
    """The plain-PyTorch step, and each case against our own bp rule."""
    reference = result.reference_median_ms()
    versus_bp = ", ".join(f"{row.case} {row.ratio_to_bp:.2f}x" for row in result.rows if row.ratio_to_bp is not None)
    print(f"  plain PyTorch step: {reference if reference is not None else float('nan'):.3f} ms (median over cases)")
    if versus_bp:
        print(f"  x BP (ratio to our bp rule's ratio): {versus_bp}")


def markdown_table(results: list[NetworkResult], env: dict, command: str) -> str:
    """One table: a row per case, a column per network; cells 'ratio to plain PyTorch (median ms)'."""
    labels = list(dict.fromkeys(row.case for result in results for row in result.rows))
    several_devices = len({r.device for r in results}) > 1
    header = "| rule | " + " | ".join(f"{r.spec.name} ({r.spec.loss}" + (f", {r.device})" if several_devices else ")")
                                     for r in results) + " |"
    lines = [
        f"`{command}`: {env['cpu']}" + (f", {env['gpu']}" if env["gpu"] else "") +
        f", {', '.join(env.get('devices', [env['device']]))}, threads {env['threads']}, torch {env['torch']}, bioprop {env['bioprop']}, "
        f"batch {env['batch']}, {env['dtype']}.",
        "",
        "Cells: median time per step as a ratio to plain PyTorch's on the same network and batch "
        "(rule median / reference median, interleaved blocks), and the rule's median ms.",
        "",
        header,
        "|" + "---|" * (len(results) + 1),
        "| plain PyTorch (ms) | " + " | ".join(f"{r.reference_median_ms():.3f}" if r.reference_median_ms() else "-"
                                             for r in results) + " |",
    ]
    notes = []
    for label in labels:
        cells = []
        for result in results:
            row = next((row for row in result.rows if row.case == label), None)
            if row is None:
                cells.append("-")
            elif not row.supported:
                cells.append("not supported")
                notes.append(f"- {label} on {result.spec.name}: not supported: {row.reason}")
            else:
                cells.append(f"{row.ratio:.2f}x ({row.rule_timing.median * 1e3:.3f} ms)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def results_json(results: list[NetworkResult], env: dict, settings: Settings, command: str) -> dict:
    return json_safe({
        "command": command,
        "environment": env,
        "settings": asdict(settings),
        "learning_rate": LEARNING_RATE,
        "method": ("per case: fresh network and plain-PyTorch copy with the same weights; warm-up; then up to "
                   f"{settings.repeats} rounds (at least {settings.min_repeats}, fewer when the case's share of the "
                   f"{settings.time_budget:g} s budget is spent) of one reference block and one rule block (ABBA "
                   "order), each block k steps timed by torch.utils.benchmark.Timer.timeit(k); min/median/max over "
                   "blocks of block time / k; ratio = rule median / reference median; paired_ratio = median over "
                   "rounds of rule block / reference block; ratio_to_bp = ratio / bp's ratio"),
        "reference": "torch.optim.SGD: opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step()",
        "networks": [
            {"network": r.spec.name, "device": r.device, "description": r.spec.description, "loss": r.spec.loss,
             "sample_shape": list(r.spec.sample_shape), "reference_median_ms": r.reference_median_ms(),
             "rows": [row.as_json() for row in r.rows]}
            for r in results
        ],
    })


# -- the command ------------------------------------------------------------------------------
def configure_parser(parser) -> None:
    parser.add_argument("--networks", nargs="+", choices=NETWORK_NAMES, default=None,
                        help="networks to time (default: all three; with --sizes, only the --sizes MLPs)")
    parser.add_argument("--sizes", type=int, nargs="+", action="append",
                        help="a custom sigmoid MLP's layer widths, input first (repeat the flag for several)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="all",
                        help="all (the default: the CPU, then CUDA too when a GPU is present), cpu, cuda (or cuda:N) "
                             "or auto (cuda when available, else cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while timing (default: torch's)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of interleaved blocks per case (default 21; --quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per side (default 3; --quick 1)")
    parser.add_argument("--block-time", type=float, default=None,
                        help="seconds one timed block should last; sets steps per block (default 0.02; --quick 0.002)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds of timing for the whole run, shared among the cases; a case stops after "
                             "--repeats rounds or its share, with at least 3 rounds (default 240; --quick 30)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: few, short blocks")
    parser.add_argument("--rules", nargs="+", default=None, help=f"subset of the cases to time (rule names: {rule_names()}); bp is always timed")
    parser.add_argument("--json-out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--markdown-out", type=Path, default=None, help="write the table as markdown here")


def _devices(text: str) -> list[torch.device]:
    """--device as the devices to time, in order: 'all' is the CPU and, when present, CUDA."""
    if text == "all":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [_device(text)]


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text != "cpu" and text != "cuda" and not text.startswith("cuda:"):
        raise BioPropError(f"--device {text!r}: use all, cpu, cuda or auto")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise BioPropError("--device cuda: no CUDA device is available here; use --device cpu")
    try:
        return torch.device(text)
    except RuntimeError:
        raise BioPropError(f"--device {text!r}: not a device torch knows; use all, cpu, cuda, cuda:N or auto") from None


def _settings(args) -> Settings:
    quick = args.quick
    settings = Settings(
        repeats=args.repeats if args.repeats is not None else (3 if quick else 21),
        warmup=args.warmup if args.warmup is not None else (1 if quick else 3),
        block_time=args.block_time if args.block_time is not None else (0.002 if quick else 0.02),
        threads=args.threads if args.threads is not None else torch.get_num_threads(),
        time_budget=args.time_budget if args.time_budget is not None else (30.0 if quick else 240.0),
    )
    if settings.repeats < 1 or settings.warmup < 0 or args.batch < 1 or settings.threads < 1:
        raise BioPropError("--repeats, --batch and --threads must be >= 1 and --warmup >= 0")
    for flag, value in (("--block-time", settings.block_time), ("--time-budget", settings.time_budget)):
        if not (math.isfinite(value) and value > 0):
            raise BioPropError(f"{flag} {value}: give a positive number of seconds")
    settings.min_repeats = min(settings.min_repeats, settings.repeats)
    return settings


def _cases(selected: list[str] | None) -> dict[str, tuple[str, dict]]:
    all_cases = default_cases()
    if not selected:
        return all_cases
    known = sorted({rule for rule, _ in all_cases.values()})
    unknown = sorted(set(selected) - set(known))
    if unknown:
        raise BioPropError(f"--rules {unknown}: not benchmarked; choose from {known}")
    return {label: case for label, case in all_cases.items() if case[0] == "bp" or case[0] in selected}


def run(args) -> int:
    devices = _devices(args.device)
    settings = _settings(args)
    specs = [mlp_spec(sizes) for sizes in args.sizes or []]
    if args.networks or not specs:
        specs = [network_spec(name) for name in (args.networks or NETWORK_NAMES)] + specs
    cases = _cases(args.rules)
    dtype = getattr(torch, args.dtype)
    for path in (args.json_out, args.markdown_out):
        if path is not None and not path.parent.is_dir():
            raise BioPropError(f"{path}: folder {path.parent} does not exist; create it or choose another path")
    command = "bioprop " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] else "bioprop benchmark"
    env = environment(devices[-1], dtype, args.batch, settings.threads)
    env["devices"] = [str(device) for device in devices]
    print(f"bioprop benchmark: one training step, ratio to plain PyTorch (torch.optim.SGD) on the same network and batch\n"
          f"  {env['cpu']}" + (f", GPU {env['gpu']}" if env["gpu"] else "") +
          f"; torch {env['torch']}, bioprop {env['bioprop']}, {settings.threads} threads, "
          f"device {', '.join(env['devices'])}, "
          f"{args.dtype}, batch {args.batch}\n"
          f"  per case: {settings.warmup} warm-up steps, then {settings.repeats} rounds of interleaved blocks "
          f"(reference, rule; ABBA) of ~{settings.block_time * 1e3:g} ms, within a {settings.time_budget:g} s budget; "
          f"min / median / max over blocks; x torch = median / reference median; paired = median of the rounds' ratios")
    started = time.perf_counter()
    results = []
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)  # building and probing too, not only the timed blocks
    try:
        budget = Budget(settings.time_budget, len(devices) * len(specs) * len(cases))
        for device in devices:
            for spec in specs:
                print_header(spec, device)
                result = benchmark(spec, cases, args.batch, dtype, device, settings, budget, print_row)
                print_summary(result)
                results.append(result)
    finally:
        torch.set_num_threads(threads_before)
    print(f"\n{time.perf_counter() - started:.0f} s")
    if args.json_out is not None:
        write_json(args.json_out, results_json(results, env, settings, command))
        print(f"wrote {args.json_out}")
    if args.markdown_out is not None:
        text = markdown_table(results, env, command)
        write_atomic(args.markdown_out, lambda handle: handle.write(text))
        print(f"wrote {args.markdown_out}")
    return 0
