"""`bioprop verify`: hold a rule to the autograd BP oracle, layer by layer.

Both start from the same weights and take the same training steps on the same batch (or
sequence of batches); we compare the total weight change of each parameter,

    abs  = max_ij |dW_rule - dW_bp|,   rel = ||dW_rule - dW_bp||_F / ||dW_bp||_F,
    cos  = <dW_rule, dW_bp> / (||dW_rule|| ||dW_bp||),

in float64 and in float32 (if float64 shrinks the difference, float32's was round-off). A
rule that claims exactness passes when every float64 rel <= tolerance (1e-10). Negative
controls break one of its conditions on purpose and must *fail* the same check; a control
that passes means the check cannot see a broken rule, and verify fails. Approximate rules
(IL) get the figures (cos, rel) without a verdict. Each rule names its own negative controls
(`negative_controls`; rules whose exactness needs shared parameters pooled also name
`shared_parameter_controls`, run when the net shares parameters between levels, e.g. an RNN).
Rules with settling dynamics (`step_cut_columns`: credit) also get the divergence against the number of settling iterations k, which must be
exact from the derived count on and not before.

Networks (`--model`): mlp (default; the MLP of `--sizes`), or one of `bioprop.models`' nets
built by `build_model(name, image_shape, n_classes)` for small images (`--image-shape`, default
1 8 8) with n_classes = the last of `--sizes` and hidden = the middle ones (the RNN's width is
the first): lenet5 and cnn-small read (B, C, H, W) images, rnn reads the H rows of an image as a
sequence of C*W inputs (T = H time-step levels sharing W_ih, W_hh, b, then the readout). Inputs are
seeded Gaussian draws in the net's input shape (`make_batch`), targets as for the MLP. The
shared-parameter control (shared updates written at once, not pooled) is declared by the rule
rather than set up here, so every model and every caller of verify_rule gets it where it applies.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch

from .devices import DEVICES, HELP as DEVICE_HELP, resolve_device
from .errors import BioPropError
from .models import MODEL_NAMES, build_model, input_layout
from .network import MLP, Network
from .rules import make_rule

EXACT_TOLERANCE = 1e-10

@dataclass
class LayerComparison:
    parameter: str
    max_abs: float
    rel: float
    cos: float
    bp_norm: float


@dataclass
class Comparison:
    dtype: str
    layers: list[LayerComparison]

    @property
    def max_rel(self) -> float:
        """Largest relative difference; NaN (a rule that produced NaN) counts as infinite."""
        return max(math.inf if math.isnan(layer.rel) else layer.rel for layer in self.layers)

    @property
    def min_cos(self) -> float:
        return min(layer.cos for layer in self.layers)


@dataclass
class VerifyReport:
    rule: str
    options: dict
    setup: dict
    claims_exactness: bool
    comparisons: list[Comparison]
    controls: list[dict] = field(default_factory=list)
    #: divergence from BP against the number of settling iterations k (rules with step_cut_columns)
    step_cuts: dict = field(default_factory=dict)

    @property
    def vacuous(self) -> list[str]:
        """Parameters whose BP update is zero: nothing was compared there."""
        return [layer.parameter for layer in self.comparisons[0].layers if layer.bp_norm == 0]

    @property
    def exact(self) -> bool:
        float64 = [c for c in self.comparisons if c.dtype == "float64"]
        return bool(float64) and all(c.max_rel <= EXACT_TOLERANCE for c in float64)

    @property
    def passed(self) -> bool:
        if not self.claims_exactness:
            return True
        cuts_as_derived = not self.step_cuts or self.step_cuts["as_derived"]
        return self.exact and all(control["diverges"] for control in self.controls) and cuts_as_derived

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(exact=self.exact, passed=self.passed)
        return data


def _parameter_names(net: MLP) -> list[str]:
    names = [f"W{l}" for l in range(1, net.n_layers + 1)]
    if net.has_bias:
        names += [f"b{l}" for l in range(1, net.n_layers + 1)]
    return names


def make_batch(sizes, loss: str, batch: int, seed: int, dtype=torch.float64, input_shape=None):
    """A reproducible random batch: Gaussian inputs of shape (batch, *input_shape) (default
    (batch, sizes[0])); Gaussian targets (mse) or one-hot labels (ce) for sizes[-1] outputs."""
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, *(input_shape or (sizes[0],)), generator=generator, dtype=torch.float64)
    if loss == "ce":
        labels = torch.randint(0, sizes[-1], (batch,), generator=generator)
        y = torch.nn.functional.one_hot(labels, sizes[-1]).to(torch.float64)
    else:
        y = torch.randn(batch, sizes[-1], generator=generator, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def build_net(sizes, activation="sigmoid", bias=True, input_map="identity", seed=0, model="mlp",
              image_shape=(1, 8, 8), dtype=torch.float64, device="cpu") -> tuple[Network, tuple]:
    """verify's network and the shape of one input: the MLP of `sizes`, or `model` built for
    images of `image_shape` with sizes[-1] classes and hidden widths sizes[1:-1]."""
    if model == "mlp":
        return MLP(sizes, activation=activation, bias=bias, input_map=input_map, dtype=dtype, device=device,
                   seed=seed), (sizes[0],)
    if model not in MODEL_NAMES:
        raise BioPropError(f"--model {model!r}: verify takes one of {', '.join(MODEL_NAMES)}")
    hidden = list(sizes[1:-1]) or [64]
    net = build_model(model, image_shape, sizes[-1], hidden=hidden, activation=activation, bias=bias,
                      input_map=input_map, dtype=dtype, device=device, seed=seed)
    channels, height, width = image_shape
    layout = input_layout(model, net)
    shape = {"flat": (channels * height * width,), "image": tuple(image_shape), "rows": (height, channels * width)}[layout]
    return net, shape


def compare_updates(
    rule_name: str,
    rule_options: dict,
    sizes,
    activation="sigmoid",
    bias=True,
    loss="mse",
    batch=32,
    seed=0,
    steps=1,
    lr=0.1,
    input_map="identity",
    dtype=torch.float64,
    model="mlp",
    image_shape=(1, 8, 8),
    device="cpu",
) -> Comparison:
    """Train a rule and BP side by side from one initialisation; compare their weight changes."""
    net, input_shape = build_net(sizes, activation, bias, input_map, seed, model, image_shape, dtype, device)
    oracle_net = net.clone()
    x, y = make_batch(sizes, loss, batch, seed, dtype, input_shape)
    rule = make_rule(rule_name, lr=lr, loss=loss, **rule_options)
    oracle = make_rule("bp", lr=lr, loss=loss)
    start = [p.detach().clone() for p in net.parameters_list()]
    for _ in range(steps):
        rule.step(net, x, y)
        oracle.step(oracle_net, x, y)
    layers = []
    names = _parameter_names(net) if model == "mlp" else net.parameter_names()
    for name, p0, p_rule, p_bp in zip(names, start, net.parameters_list(), oracle_net.parameters_list()):
        d_rule = (p_rule.detach() - p0).double()
        d_bp = (p_bp.detach() - p0).double()
        diff = d_rule - d_bp
        norm_bp, norm_rule = d_bp.norm(), d_rule.norm()
        rel = float(diff.norm() / norm_bp) if norm_bp > 0 else (0.0 if diff.norm() == 0 else math.inf)
        cos = float((d_rule * d_bp).sum() / (norm_rule * norm_bp)) if norm_rule > 0 and norm_bp > 0 else float(norm_rule == norm_bp)
        layers.append(LayerComparison(name, float(diff.abs().max()), rel, cos, float(norm_bp)))
    return Comparison(str(dtype).replace("torch.", ""), layers)


def verify_rule(
    rule_name: str,
    rule_options: dict | None = None,
    sizes=(20, 16, 12, 10),
    activation=None,
    bias=True,
    loss="mse",
    batch=32,
    seed=0,
    steps=1,
    lr=0.1,
    input_map="identity",
    controls=True,
    model="mlp",
    image_shape=(1, 8, 8),
    device="cpu",
) -> VerifyReport:
    """Compare `rule_name` with BP in float64 and float32 on `model` (see the module
    docstring); run its negative controls (and its shared-parameter controls where the net
    shares parameters between levels)."""
    if rule_name == "bp":
        raise BioPropError("--rule bp: bp is the oracle itself; verify a rule against it, e.g. --rule zil")
    rule_options = dict(rule_options or {})
    sizes = list(sizes)
    if activation is None:
        activation = "tanh" if model == "rnn" else "sigmoid"
    probe = make_rule(rule_name, lr=lr, loss=loss, **rule_options)  # validates the options
    setup = dict(sizes=sizes, activation=activation, bias=bias, loss=loss, batch=batch, seed=seed, steps=steps, lr=lr, input_map=input_map,
                 device=str(device))
    if model != "mlp":
        setup.update(model=model, image_shape=tuple(int(n) for n in image_shape))
    net, input_shape = build_net(sizes, activation, bias, input_map, seed, model, setup.get("image_shape", image_shape))
    levels = net.levels_for(torch.zeros(1, *input_shape, dtype=net.dtype))
    n_levels = len(levels)
    if model != "mlp":
        setup.update(levels=n_levels, network=net.describe())
    comparisons = [compare_updates(rule_name, rule_options, dtype=dtype, **_run_setup(setup)) for dtype in (torch.float64, torch.float32)]
    report = VerifyReport(rule_name, probe.options(), setup, bool(probe.claims_exactness), comparisons)
    if controls and report.claims_exactness and n_levels > 1:
        # a control breaks one condition; the shortcut dynamics refuses broken conditions, so drop it
        base_options = {k: v for k, v in rule_options.items() if k != "dynamics"}
        negative_controls = tuple(probe.negative_controls)
        if net.shares_parameters(net.parameter_slots(levels)):
            negative_controls += tuple(getattr(probe, "shared_parameter_controls", ()))
        for label, broken in negative_controls:
            broken = broken(n_levels) if callable(broken) else broken
            result = compare_updates(rule_name, {**base_options, **broken}, dtype=torch.float64, **_run_setup(setup))
            report.controls.append(
                {"control": label, "options": broken, "max_rel": result.max_rel, "diverges": result.max_rel > EXACT_TOLERANCE}
            )
        columns = probe.step_cut_columns(n_levels)
        if columns:
            report.step_cuts = step_cut_table(columns, rule_name, base_options, setup, n_levels)
    return report


def _run_setup(setup: dict) -> dict:
    """The setup's entries that compare_updates takes (the rest describe the net for the report)."""
    return {key: value for key, value in setup.items() if key not in ("levels", "network")}


def step_cut_table(columns: dict, rule_name: str, rule_options: dict, setup: dict, n_levels: int | None = None) -> dict:
    """float64 max rel against BP with settling limited to k = 1 .. L+1 iterations, per column;
    as_derived: every cell is exact exactly when k reaches the column's derived count."""
    n_layers = len(setup["sizes"]) - 1 if n_levels is None else n_levels
    rows, as_derived = [], True
    for k in range(1, n_layers + 2):
        row = {"k": k}
        for column, (cut, needed) in columns.items():
            result = compare_updates(rule_name, {**rule_options, **cut(k)}, dtype=torch.float64, **_run_setup(setup))
            row[column] = result.max_rel
            as_derived &= (result.max_rel <= EXACT_TOLERANCE) == (k >= needed)
        rows.append(row)
    return {"needed": {column: needed for column, (_, needed) in columns.items()}, "rows": rows, "as_derived": as_derived}


def format_report(report: VerifyReport) -> str:
    s = report.setup
    if "model" in s:
        network = (f"  model {s['model']} for images {tuple(s['image_shape'])}: {s['network']}, {s['levels']} levels, "
                   f"{s['activation']}, loss={s['loss']}, batch {s['batch']}, {s['steps']} step(s), lr {s['lr']}, seed {s['seed']}")
    else:
        network = (f"  sizes {s['sizes']}, {s['activation']}, bias={s['bias']}, loss={s['loss']}, batch {s['batch']}, "
                   f"{s['steps']} step(s), lr {s['lr']}, seed {s['seed']}, input_map={s['input_map']}")
    width = max([6] + [len(layer.parameter) for layer in report.comparisons[0].layers])
    lines = [
        f"rule {report.rule} vs bp (autograd SGD), same initial weights and batch",
        network,
        f"  options: {report.options}",
        "",
        f"  {'param':<{width}}" + "".join(f"{c.dtype + ' max|d|':>18}{'rel':>11}{'cos':>12}" for c in report.comparisons),
    ]
    for index, name in enumerate(c.parameter for c in report.comparisons[0].layers):
        row = f"  {name:<{width}}"
        for comparison in report.comparisons:
            layer = comparison.layers[index]
            row += f"{layer.max_abs:>18.3e}{layer.rel:>11.2e}{layer.cos:>12.8f}"
        lines.append(row)
    lines.append("")
    float64 = next(c for c in report.comparisons if c.dtype == "float64")
    if report.vacuous:
        lines.append(f"  note: BP's update of {', '.join(report.vacuous)} is exactly 0 (e.g. dead ReLUs): those rows compare nothing")
    if report.claims_exactness and "model" not in report.setup and len(report.setup["sizes"]) == 2:
        lines.append("  note: no hidden layer, so the negative controls (which break inference conditions) do not apply")
    if report.claims_exactness:
        verdict = "EXACT" if report.exact else "NOT EXACT"
        lines.append(f"  verdict: {verdict} (float64 max rel {float64.max_rel:.2e}, tolerance {EXACT_TOLERANCE:.0e})")
        if report.controls:
            lines.append("  negative controls (each must diverge):")
            for control in report.controls:
                mark = "diverges" if control["diverges"] else "DOES NOT DIVERGE: the check is blind"
                lines.append(f"    {control['control']:<42} max rel {control['max_rel']:.2e}  {mark}")
        if report.step_cuts:
            lines.extend(_format_step_cuts(report.step_cuts))
    else:
        lines.append(
            f"  approximate rule (no exactness claim): float64 max rel {float64.max_rel:.3e}, min cos {float64.min_cos:.6f}"
        )
    lines.append(f"  result: {'PASS' if report.passed else 'FAIL'}")
    return "\n".join(lines)


def _format_step_cuts(table: dict) -> list[str]:
    columns = list(table["needed"])
    needed = ", ".join(f"{column} from k = {k}" for column, k in table["needed"].items())
    lines = [
        "  timescale cut: float64 max rel vs BP, settling limited to k iterations from rest ('*' = exact)",
        f"    derived: exact for {needed}; "
        + ("the table agrees" if table["as_derived"] else "THE TABLE DISAGREES WITH THE DERIVATION"),
        "    " + f"{'k':>3}" + "".join(f"{column + ' = k':>16}" for column in columns),
    ]
    for row in table["rows"]:
        cells = "".join(f"{row[c]:>15.2e}{'*' if row[c] <= EXACT_TOLERANCE else ' '}" for c in columns)
        lines.append("    " + f"{row['k']:>3}" + cells)
    return lines


# -- command line -----------------------------------------------------------------------------
def parse_rule_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise BioPropError(f"--option {pair!r}: write it as NAME=VALUE, e.g. --option gamma=0.5")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return options


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def configure_parser(parser) -> None:
    parser.add_argument("--rule", required=True, metavar="RULE",
                        help="rule to hold to autograd BP (e.g. zil, fazil, credit, il; `bioprop rules` lists them)")
    parser.add_argument("--model", default="mlp", choices=list(MODEL_NAMES),
                        help="network: mlp (of --sizes), or lenet5 / cnn-small / rnn for --image-shape images (default mlp)")
    parser.add_argument("--image-shape", type=int, nargs=3, default=[1, 8, 8], metavar=("C", "H", "W"),
                        help="images for --model lenet5, cnn-small, rnn (rnn: H steps of C*W inputs); default 1 8 8")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 16, 12, 10], metavar="N",
                        help="layer widths, input first (default: 20 16 12 10; other models: the last is the number of "
                             "classes, the middle the hidden widths)")
    parser.add_argument("--activation", default=None, metavar="F",
                        help="hidden activation f (default: sigmoid; tanh for --model rnn)")
    parser.add_argument("--no-bias", dest="bias", action="store_false", help="layers without biases")
    parser.add_argument("--loss", default="mse", choices=["mse", "ce"],
                        help="mse on Gaussian targets or ce (softmax cross-entropy) on random labels (default: mse)")
    parser.add_argument("--batch", type=int, default=32, metavar="N", help="pairs in the random batch (default: 32)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seeds the initial weights and the batch (default: 0)")
    parser.add_argument("--steps", type=int, default=1, metavar="N",
                        help="training steps taken by both on the batch before comparing (default: 1)")
    parser.add_argument("--lr", type=float, default=0.1, metavar="LR", help="learning rate of the rule and of BP (default: 0.1)")
    parser.add_argument("--input-map", default="identity", choices=["identity", "activation"],
                        help="input as seen by layer 1: as given, or through f first (Song et al.) (default: identity)")
    parser.add_argument("--option", action="append", metavar="NAME=VALUE",
                        help="a rule option (repeatable), e.g. --option gamma=0.5; `bioprop rules RULE` lists them")
    parser.add_argument("--no-controls", dest="controls", action="store_false", help="skip the negative controls")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help=f"where the rule, BP and their networks run: {DEVICE_HELP} (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    if args.batch < 1 or args.steps < 1:
        raise BioPropError("--batch and --steps must be >= 1")
    report = verify_rule(
        args.rule,
        parse_rule_options(args.option),
        sizes=args.sizes,
        activation=args.activation,
        bias=args.bias,
        loss=args.loss,
        batch=args.batch,
        seed=args.seed,
        steps=args.steps,
        lr=args.lr,
        input_map=args.input_map,
        controls=args.controls,
        model=args.model,
        image_shape=tuple(args.image_shape),
        device=resolve_device(args.device),
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0 if report.passed else 1
