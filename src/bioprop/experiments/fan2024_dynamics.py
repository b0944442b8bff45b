"""Firing, credit and weights over time for one training pair (in the spirit of Fan & Mysore
2024, Fig. 2A): the three processes on their three timescales.

The network: a RateNetwork with 4 input neurons, 12 recurrently connected tanh hidden neurons
(every ordered pair except self-synapses, plus every input onto every hidden neuron) and 3
linear output neurons that listen to every hidden neuron and send nothing back (so the
paper's output clamp is exact). Initial w_ij ~ N(0, 0.9^2 / fan_in), so the hidden recurrence
makes firing and credit settle geometrically over tens of steps rather than in L steps as in
a layered network. One training pair: a stimulus drawn from N(0, 1) and a target from
U(-1, 1), MSE on the outputs' rates.

Time t counts iterations of the plain functions of `bioprop.rate_network`, one process after
the other as the paper's timescale separation has it:

1. t = 1 .. F: firing from rest (`settle_firing`, one `firing_step` per t) until the largest
   change of a rate is within the tolerance; credit is at rest (0) and the weights are fixed.
2. t = F+1 .. F+C: credit from rest, the outputs' credit clamped to -dLoss/dx_out = y - x_out
   (`settle_credit`, one `credit_step` per t) until it settles; firing stays at its fixpoint.
3. t = F+C+1 .. F+C+P: plasticity. Every t runs one firing step, one credit step (the clamp
   follows the current outputs) and one weight step `weight_change(c, g(s), x, r)`. The
   weights move slowly (r small per step), so firing and credit, being fast, track them
   adiabatically, and the loss falls.

Writes dynamics.csv (per t: phase, loss, the largest change of a rate, a credit and a weight,
||W(t) - W(0)||, and every neuron's rate and credit), dynamics.md/.json (the summary) and
dynamics.png (three stacked panels sharing the time axis).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BioPropError
from ..losses import get_loss
from ..rate_network import RateNetwork, credit_step, fire, net_input, settle_credit, weight_change
from . import outputs

NAME = "fan2024-dynamics"
LOSS = "mse"

DEFAULTS = dict(inputs=4, hidden=12, outputs=3, init_scale=0.9, lr=0.002, plasticity_steps=400, tol=1e-8, seed=0)

SUMMARY_COLUMNS = [
    ("process", "process", ""), ("starts", "first step t", "d"), ("settled", "settled at t", ""), ("steps", "steps", "d"),
    ("note", "during it", ""),
]


def recurrent_network(inputs: int, hidden: int, outputs: int, init_scale: float, seed: int) -> RateNetwork:
    """inputs -> hidden (recurrent, no self-synapses) -> outputs (sinks), neurons numbered in that order."""
    n = inputs + hidden + outputs
    hidden_slice, output_slice = slice(inputs, inputs + hidden), slice(inputs + hidden, n)
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[hidden_slice, :inputs + hidden] = True
    mask[hidden_slice, hidden_slice] &= ~torch.eye(hidden, dtype=torch.bool)
    mask[output_slice, hidden_slice] = True
    return RateNetwork(n, inputs=range(inputs), outputs=range(inputs + hidden, n), activation="tanh",
                       output_activation="linear", mask=mask, init_scale=init_scale, dtype=torch.float64, seed=seed)


def training_pair(net: RateNetwork, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    draw = torch.Generator().manual_seed(seed + 7919)
    stimulus = torch.randn(1, net.n_inputs, generator=draw, dtype=torch.float64)
    target = 2 * torch.rand(1, net.n_outputs, generator=draw, dtype=torch.float64) - 1
    return stimulus, target


def dynamics(settings: dict) -> tuple[list[dict], dict]:
    """(one record per t, summary). Records hold t, phase, loss, the state and its changes."""
    with torch.no_grad():
        return _dynamics(settings)


def _dynamics(settings: dict) -> tuple[list[dict], dict]:
    net = recurrent_network(settings["inputs"], settings["hidden"], settings["outputs"], settings["init_scale"], settings["seed"])
    loss = get_loss(LOSS)
    stimulus, target = training_pair(net, settings["seed"])
    W = net.W.detach()
    initial_weights = W.clone()
    credit_rest = torch.zeros(1, net.n, dtype=torch.float64)

    def clamp_value(rates):
        return -loss.output_error(rates.index_select(1, net.outputs), target)

    def loss_of(rates):
        return float(loss(rates.index_select(1, net.outputs), target))

    records = [{"t": 0, "phase": "rest", "rates": net.rest(stimulus), "credit": credit_rest, "weights": W.clone()}]

    firing_states: list = []
    rates, s, firing = net.settle_firing(stimulus, tol=settings["tol"], max_steps=10_000, record=firing_states)
    for state in firing_states:
        records.append({"t": len(records), "phase": "firing", "rates": state, "credit": credit_rest, "weights": W.clone()})

    gain = net.gain(s)
    credit_states: list = []
    credit, credit_settling = settle_credit(W, gain, clamped=net.outputs, clamp_value=clamp_value(rates),
                                            tol=settings["tol"], max_steps=10_000, record=credit_states)
    for state in credit_states:
        records.append({"t": len(records), "phase": "credit", "rates": rates, "credit": state, "weights": W.clone()})
    if not (firing.converged and credit_settling.converged):
        raise BioPropError(f"{NAME}: firing or credit did not settle in 10000 steps; lower --init-scale (the recurrence is too strong)")

    for _ in range(settings["plasticity_steps"]):
        s = net_input(W, rates)
        rates = fire(s, net.inputs, stimulus, net.rate)
        gain = net.gain(s)
        credit = credit_step(W, credit, gain, clamped=net.outputs, clamp_value=clamp_value(rates))
        weight_step, _ = weight_change(credit, gain, rates, settings["lr"], net.mask)
        W += weight_step
        records.append({"t": len(records), "phase": "plasticity", "rates": rates, "credit": credit, "weights": W.clone()})

    rows = []
    for previous, record in zip([records[0]] + records[:-1], records):
        rows.append({
            "t": record["t"], "phase": record["phase"], "loss": loss_of(record["rates"]),
            "rate_change": float((record["rates"] - previous["rates"]).abs().max()),
            "credit_change": float((record["credit"] - previous["credit"]).abs().max()),
            "weight_change": float((record["weights"] - previous["weights"]).abs().max()),
            "weight_distance": float((record["weights"] - initial_weights).norm()),
            **{f"rate_{i}": float(v) for i, v in enumerate(record["rates"][0])},
            **{f"credit_{i}": float(v) for i, v in enumerate(record["credit"][0])},
        })
    firing_end, credit_end = firing.steps, firing.steps + credit_settling.steps
    summary = {
        "firing_steps": firing.steps, "credit_steps": credit_settling.steps, "plasticity_steps": settings["plasticity_steps"],
        "firing_settled_at": firing_end, "credit_first_moves_at": credit_end - credit_settling.steps + 1,
        "credit_settled_at": credit_end, "loss_before": rows[firing_end]["loss"], "loss_after": rows[-1]["loss"],
        "weight_distance": rows[-1]["weight_distance"],
        "neurons": {"inputs": net.inputs.tolist(), "outputs": net.outputs.tolist(), "n": net.n},
    }
    return rows, summary


def summary_rows(summary: dict) -> list[dict]:
    F, C, P = summary["firing_steps"], summary["credit_steps"], summary["plasticity_steps"]
    return [
        {"process": "firing", "starts": 1, "settled": str(F), "steps": F, "note": "credit at rest, weights fixed"},
        {"process": "credit", "starts": F + 1, "settled": str(F + C), "steps": C, "note": "firing at its fixpoint"},
        {"process": "plasticity", "starts": F + C + 1, "settled": "-", "steps": P,
         "note": f"loss {summary['loss_before']:.4g} -> {summary['loss_after']:.4g}, ||W - W0|| = {summary['weight_distance']:.3g}"},
    ]


def plot(rows: list[dict], summary: dict, path: Path, lr: float) -> None:
    plt = outputs.pyplot()
    figure, axes = plt.subplots(3, 1, figsize=(9, 8.2), sharex=True)
    t = [r["t"] for r in rows]
    n = summary["neurons"]["n"]
    input_neurons, output_neurons = set(summary["neurons"]["inputs"]), set(summary["neurons"]["outputs"])
    for neuron in range(n):
        if neuron in input_neurons:
            continue
        kind = dict(color="tab:red", linewidth=1.6) if neuron in output_neurons else dict(color="tab:blue", linewidth=0.8, alpha=0.7)
        axes[0].plot(t, [r[f"rate_{neuron}"] for r in rows], **kind)
        axes[1].plot(t, [r[f"credit_{neuron}"] for r in rows], **kind)
    axes[0].plot([], [], color="tab:blue", label="hidden neurons")
    axes[0].plot([], [], color="tab:red", label="output neurons")
    axes[0].legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("firing rate x_i")
    axes[1].set_ylabel("credit c_i")
    axes[2].plot(t, [r["weight_distance"] for r in rows], color="tab:green")
    axes[2].set_ylabel("||W(t) - W(0)||", color="tab:green")
    loss_axis = axes[2].twinx()
    loss_axis.plot(t, [r["loss"] for r in rows], color="black", linestyle="--", linewidth=1)
    loss_axis.set_ylabel("loss (dashed)")
    firing_end, credit_end = summary["firing_settled_at"], summary["credit_settled_at"]
    for axis in axes:
        axis.axvspan(0, firing_end, color="tab:orange", alpha=0.08)
        axis.axvspan(firing_end, credit_end, color="tab:purple", alpha=0.08)
        axis.axvline(firing_end, color="gray", linestyle=":", linewidth=1)
        axis.axvline(credit_end, color="gray", linestyle=":", linewidth=1)
    top = axes[0]
    for x, label in ((firing_end / 2, "1. firing"), ((firing_end + credit_end) / 2, "2. credit"),
                     ((credit_end + t[-1]) / 2, f"3. plasticity (r = {lr:g} per step; firing and credit track)")):
        top.text(x, 1.02, label, transform=top.get_xaxis_transform(), ha="center", fontsize=8)
    axes[2].set_xlabel("iteration t (one step of a process)")
    figure.tight_layout()
    outputs.save_figure(figure, path)


def configure_parser(parser) -> None:
    for key, kind, text in (("inputs", int, "input neurons"), ("hidden", int, "recurrent hidden neurons"),
                            ("outputs", int, "output neurons"), ("init_scale", float, "initial weight scale"),
                            ("lr", float, "plasticity rate r per step"), ("plasticity_steps", int, "plasticity steps P"),
                            ("tol", float, "settling tolerance (largest change of a rate or a credit, relative)"),
                            ("seed", int, "seed of the weights and the training pair")):
        parser.add_argument("--" + key.replace("_", "-"), type=kind, default=DEFAULTS[key], help=f"{text} (default {DEFAULTS[key]})")
    outputs.add_output_arguments(parser, NAME)


def resolve_settings(args) -> dict:
    settings = {key: getattr(args, key) for key in DEFAULTS}
    for key in ("inputs", "hidden", "outputs", "plasticity_steps"):
        settings[key] = outputs.check_count("--" + key.replace("_", "-"), settings[key], 1)
    settings["seed"] = outputs.check_count("--seed", settings["seed"], 0)
    settings["init_scale"] = outputs.check_number("--init-scale", settings["init_scale"], 0.0, inclusive=False)
    settings["lr"] = outputs.check_number("--lr", settings["lr"], 0.0, inclusive=False)
    settings["tol"] = outputs.check_number("--tol", settings["tol"], 0.0, inclusive=False)
    return settings


def run(args) -> int:
    settings = resolve_settings(args)
    outputs.set_quiet(args.quiet)
    outputs.say(f"{NAME}: {settings}")
    rows, summary = dynamics(settings)
    out = outputs.start(args, NAME)
    table = outputs.markdown_table(summary_rows(summary), SUMMARY_COLUMNS)
    print(table)
    out.tables("dynamics", "Three timescales for one training pair", rows, settings, table,
               notes="dynamics.csv holds one row per iteration t (every neuron's rate and credit).", extra={"summary": summary})
    plot(rows, summary, out.path("dynamics.png"), settings["lr"])
    out.report()
    return 0
