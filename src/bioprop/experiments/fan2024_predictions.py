"""The paper's testable predictions (Fan & Mysore 2024), as analyses of a network trained on digits.

The network: bioprop.MLP(64-32-32-10, tanh, biases, Xavier init, float64) trained with the
credit rule (block form; exactly BP's SGD) on the scikit-learn digits, softmax cross-entropy
on the linear outputs, then embedded in a RateNetwork (`RateNetwork.from_mlp`) so that firing
and credit run as the paper's processes (`settle_firing`, `settle_credit`, output credit
clamped to -dLoss/dx_out, g = sigma').

(a) The retrograde signal is largest for balanced neurons. Neuron i sends c_i g(s_i) w_ij back
    to each presynaptic j; its amplitude |c_i g(s_i)| and the per-synapse message
    |c_i g(s_i) w_ij| are measured for every hidden neuron and test sample and binned by the
    distance from the balanced set point, |s_i| (deciles). With g = tanh' the gate falls as
    1 - tanh^2(s), so the prediction holds whenever the credit c_i itself does not grow with
    |s_i|: the ungated |c_i| is reported beside it to show which factor carries the effect.
    Measured at initialisation and after training. Summary: the Spearman rank correlation of
    |s_i| with each quantity, and the ratio of the medians in the most and least balanced deciles.

(b) dw_ij / g_ji = r x_j / w_ij, with g_ji = c_i g(s_i) w_ij the retrograde message from i to
    j and dw_ij the rule's actual update (the weights after `CreditRule.step` minus before) for
    one training pair: a straight line through 0 with slope r. Fitted by least squares
    (slope and intercept, R^2, and the largest relative deviation from r x_j / w_ij) over all
    synapses with w_ij != 0 and g_ji != 0, for several pairs, each applied to the same trained
    network. The identity is algebraic (c_i g(s_i) cancels), so this checks that the
    implemented plasticity is the paper's; the control shows what it is not: one update from a
    batch of those pairs (a batch mean, as in time-averaged plasticity) against the
    batch-mean message <c_i g(s_i)> w_ij and rate <x_j> does not lie on the line.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from ..data import load_dataset
from ..errors import BioPropError
from ..losses import get_loss
from ..network import MLP
from ..rate_network import RateNetwork, settle_credit
from ..rules import make_rule
from ..training import Learner, evaluate, shuffle_generator, train_epochs
from . import outputs

NAME = "fan2024-predictions"

QUICK = dict(dataset="digits", hidden=[32, 32], activation="tanh", epochs=10, lr=0.05, batch=32, seed=0, pairs=8,
             bins=10, ratio_lr=0.05)
FULL = dict(QUICK, hidden=[64, 64], epochs=30, pairs=32, bins=20)
LOSS = "ce"

SIGNAL_COLUMNS = [
    ("state", "network", ""), ("bin", "decile of abs s", "d"), ("s_low", "abs s from", ".3f"), ("s_high", "to", ".3f"),
    ("amplitude_median", "median abs(c g)", ".3g"), ("amplitude_q25", "q25", ".3g"), ("amplitude_q75", "q75", ".3g"),
    ("message_median", "median abs(c g w)", ".3g"), ("credit_median", "median abs(c)", ".3g"), ("gain_median", "median g", ".3f"),
]
SUMMARY_COLUMNS = [
    ("state", "network", ""), ("rho_amplitude", "Spearman(abs s, abs(c g))", ".3f"),
    ("rho_message", "Spearman(abs s, abs(c g w))", ".3f"), ("rho_credit", "Spearman(abs s, abs(c))", ".3f"),
    ("amplitude_ratio", "abs(c g): most/least balanced decile", ".3g"), ("credit_ratio", "abs(c): most/least balanced", ".3g"),
    ("points", "neuron-samples", "d"),
]
RATIO_COLUMNS = [
    ("case", "case", ""), ("points", "synapses", "d"), ("slope", "fitted slope", ".12g"), ("slope_error", "slope - r", ".2e"),
    ("intercept", "intercept", ".3g"),
    ("slope_origin", "slope through 0", ".12g"), ("r2", "R^2", ".6f"), ("max_relative_deviation", "max rel. dev. from r x/w", ".3g"),
    ("lr", "r", "g"),
]


# -- the network --------------------------------------------------------------------------------
def train_network(settings: dict, data) -> tuple[MLP, MLP, float, float]:
    """(network at initialisation, trained network, test accuracy before, after): the credit
    rule's block form, SGD over shuffled batches of the training set."""
    sizes = [data.n_features, *settings["hidden"], data.n_classes]
    initial = MLP(sizes, activation=settings["activation"], bias=True, dtype=torch.float64, seed=settings["seed"])
    net = initial.clone()
    rule = make_rule("credit", lr=settings["lr"], loss=LOSS)
    # bioprop.training's loop: the batches of `bioprop train --seed SEED`
    for result in train_epochs([Learner(net, rule)], data.train_x.to(torch.float64), data.train_y,
                               epochs=settings["epochs"], batch_size=settings["batch"],
                               shuffle=shuffle_generator(settings["seed"])):
        if result.diverged:
            raise BioPropError(f"predictions: training diverged at epoch {result.epoch} ({result.divergence}); "
                               f"give a smaller --lr than {settings['lr']:g}")
    test_x = data.test_x.to(torch.float64)
    accuracy = lambda model: evaluate(model, rule.loss, test_x, data.test_y)[1]
    return initial, net, accuracy(initial), accuracy(net)


def settled_state(net: RateNetwork, x: torch.Tensor, labels: torch.Tensor) -> dict:
    """Firing and credit at their fixpoints for a batch (the paper's clamp mode, g = sigma')."""
    rates, s, firing = net.settle_firing(x)
    targets = torch.nn.functional.one_hot(labels, net.n_outputs).to(net.dtype)
    error = -get_loss(LOSS).output_error(rates.index_select(1, net.outputs), targets)
    gain = net.gain(s)
    credit, settling = settle_credit(net.W.detach(), gain, clamped=net.outputs, clamp_value=error)
    if not (firing.converged and settling.converged):
        raise BioPropError("predictions: the embedded network did not settle; this should not happen in a layered network")
    return {"rates": rates, "net_input": s, "gain": gain, "credit": credit}


def hidden_neurons(net: RateNetwork) -> torch.Tensor:
    hidden = torch.ones(net.n, dtype=torch.bool)
    hidden[net.inputs] = False
    hidden[net.outputs] = False
    return hidden.nonzero().flatten()


# -- (a) retrograde signal against balance ---------------------------------------------------------
@torch.no_grad()
def signal_against_balance(net: RateNetwork, x: torch.Tensor, labels: torch.Tensor, bins: int, state_name: str):
    """(binned rows, summary row) over every hidden neuron and sample."""
    state = settled_state(net, x, labels)
    hidden = hidden_neurons(net)
    offset = state["net_input"][:, hidden].abs()
    credit = state["credit"][:, hidden].abs()
    gain = state["gain"][:, hidden]
    amplitude = credit * gain
    incoming = net.W.detach()[hidden]                       # (hidden, n): row i holds the w_ij of i's synapses
    present = net.mask[hidden]
    # per-synapse messages |c_i g_i w_ij|, with the balance offset of their sender i
    messages = (amplitude[:, :, None] * incoming.abs()[None])[:, present]            # (B, synapses)
    message_offset = offset[:, :, None].expand(-1, -1, net.n)[:, present]

    offset_np, amplitude_np, credit_np = offset.flatten().numpy(), amplitude.flatten().numpy(), credit.flatten().numpy()
    gain_np = gain.flatten().numpy()
    edges = np.quantile(offset_np, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, offset_np, side="right") - 1, 0, bins - 1)
    message_which = np.clip(np.searchsorted(edges, message_offset.flatten().numpy(), side="right") - 1, 0, bins - 1)
    message_np = messages.flatten().numpy()
    rows = []
    for b in range(bins):
        inside = which == b
        rows.append({
            "state": state_name, "bin": b + 1, "s_low": float(edges[b]), "s_high": float(edges[b + 1]),
            "amplitude_median": float(np.median(amplitude_np[inside])),
            "amplitude_q25": float(np.quantile(amplitude_np[inside], 0.25)),
            "amplitude_q75": float(np.quantile(amplitude_np[inside], 0.75)),
            "message_median": float(np.median(message_np[message_which == b])),
            "credit_median": float(np.median(credit_np[inside])), "gain_median": float(np.median(gain_np[inside])),
            "count": int(inside.sum()),
        })
    summary = {
        "state": state_name,
        "rho_amplitude": float(stats.spearmanr(offset_np, amplitude_np).statistic),
        "rho_message": float(stats.spearmanr(message_offset.flatten().numpy(), message_np).statistic),
        "rho_credit": float(stats.spearmanr(offset_np, credit_np).statistic),
        "amplitude_ratio": rows[0]["amplitude_median"] / rows[-1]["amplitude_median"],
        "credit_ratio": rows[0]["credit_median"] / rows[-1]["credit_median"],
        "points": int(offset_np.size),
    }
    return rows, summary


# -- (b) dw / g against x / w ------------------------------------------------------------------------------
def update_and_message(net: RateNetwork, rule, x: torch.Tensor, labels: torch.Tensor) -> dict:
    """One rule step on a clone of `net`: the update dW (after - before), the batch-mean message
    <c_i g(s_i)> w_ij, the batch-mean rates <x_j>, and the synapses where both w and g are non-zero."""
    learner = net.clone()
    before = learner.W.detach().clone()
    info = rule.step(learner, x, labels)
    update = learner.W.detach() - before
    drive = info["credit"] * learner.gain(info["net_input"], rule.balance, rule.width)
    message = drive.mean(dim=0)[:, None] * before                 # g_ji stored at [i, j]
    presynaptic = info["rates"].mean(dim=0)[None, :].expand_as(before)
    usable = net.mask & (before != 0) & (message != 0)
    return {"update": update[usable], "message": message[usable], "rate": presynaptic[usable], "weight": before[usable]}


def fit_line(predictor: np.ndarray, response: np.ndarray, lr: float, case: str) -> dict:
    """Least-squares line response = slope * predictor + intercept, the slope through 0, R^2 and
    the largest relative deviation of the response from lr * predictor."""
    design = np.column_stack([predictor, np.ones_like(predictor)])
    (slope, intercept), *_ = np.linalg.lstsq(design, response, rcond=None)
    fitted = design @ np.array([slope, intercept])
    spread = float(((response - response.mean()) ** 2).sum())
    r2 = 1 - float(((response - fitted) ** 2).sum()) / spread if spread > 0 else math.nan
    expected = lr * predictor
    nonzero = expected != 0
    deviation = np.abs(response[nonzero] - expected[nonzero]) / np.abs(expected[nonzero])
    return {
        "case": case, "points": int(predictor.size), "slope": float(slope), "slope_error": float(slope) - lr,
        "intercept": float(intercept),
        "slope_origin": float((predictor @ response) / (predictor @ predictor)), "r2": r2,
        "max_relative_deviation": float(deviation.max()) if deviation.size else math.nan, "lr": lr,
    }


@torch.no_grad()
def ratio_analysis(net: RateNetwork, x: torch.Tensor, labels: torch.Tensor, lr: float):
    """(fit rows, points for the figure): single-pair updates, and the batch-of-pairs control."""
    rule = make_rule("credit", lr=lr, loss=LOSS)
    single = [update_and_message(net, rule, x[k:k + 1], labels[k:k + 1]) for k in range(x.shape[0])]
    batch = update_and_message(net, rule, x, labels)
    points = {}
    for case, parts in (("one pair per update", single), (f"control: one update from a batch of {x.shape[0]} pairs", [batch])):
        predictor = torch.cat([p["rate"] / p["weight"] for p in parts]).numpy()
        response = torch.cat([p["update"] / p["message"] for p in parts]).numpy()
        points[case] = (predictor, response)
    rows = [fit_line(predictor, response, lr, case) for case, (predictor, response) in points.items()]
    return rows, points


# -- figures ------------------------------------------------------------------------------------------
def plot_signal(rows: list[dict], path: Path, title: str) -> None:
    plt = outputs.pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for state, style in zip(dict.fromkeys(r["state"] for r in rows), ("-", "--")):
        mine = [r for r in rows if r["state"] == state]
        centres = [(r["s_low"] + r["s_high"]) / 2 for r in mine]
        line, = axes[0].plot(centres, [r["amplitude_median"] for r in mine], marker="o", linestyle=style,
                             label=f"{state}: |c_i g(s_i)| (median)")
        axes[0].fill_between(centres, [r["amplitude_q25"] for r in mine], [r["amplitude_q75"] for r in mine],
                             color=line.get_color(), alpha=0.15)
        axes[0].plot(centres, [r["credit_median"] for r in mine], marker=".", linestyle=":", color=line.get_color(),
                     label=f"{state}: ungated |c_i| (median)")
        axes[1].plot(centres, [r["message_median"] for r in mine], marker="o", linestyle=style, color=line.get_color(),
                     label=f"{state}: |c_i g(s_i) w_ij| (median)")
    for axis in axes:
        axis.set_yscale("log")
        axis.set_xlabel("distance from the balanced set point |s_i| (decile centres)")
        axis.legend(fontsize=8)
    axes[0].set_ylabel("retrograde signal amplitude of neuron i (band: quartiles)")
    axes[1].set_ylabel("per-synapse retrograde message")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    outputs.save_figure(figure, path)


def plot_ratio(fits: list[dict], points: dict, path: Path, lr: float) -> None:
    plt = outputs.pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 5.2))
    for (case, (predictor, response)), fit, colour, layer in zip(points.items(), fits, ("tab:blue", "tab:gray"), (3, 2)):
        axis.scatter(predictor, response, s=4, alpha=0.4, color=colour, zorder=layer,
                     label=f"{case}: slope {fit['slope']:.6g}, R^2 {fit['r2']:.4f}")
    everything = np.concatenate([p for p, _ in points.values()])
    line = np.linspace(everything.min(), everything.max(), 400)
    axis.plot(line, lr * line, color="black", linewidth=1, zorder=4, label=f"dw/g = r x/w, r = {lr:g}")
    threshold = float(np.quantile(np.abs(everything[everything != 0]), 0.05)) if np.any(everything != 0) else 1.0
    axis.set_xscale("symlog", linthresh=threshold)
    axis.set_yscale("symlog", linthresh=threshold * lr)
    axis.set_xlabel("x_j / w_ij")
    axis.set_ylabel("dw_ij / g_ji   (g_ji = c_i g(s_i) w_ij)")
    axis.legend(fontsize=7, loc="upper left")
    axis.set_title("prediction (b): plasticity over retrograde message", fontsize=10)
    figure.tight_layout()
    outputs.save_figure(figure, path)


# -- command line ------------------------------------------------------------------------------------
def configure_parser(parser) -> None:
    def shown(key):
        value = QUICK[key]
        text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        full = FULL[key]
        return f" (default {text}; --full {' '.join(map(str, full)) if isinstance(full, list) else full})"

    parser.add_argument("--full", action="store_true", help="a wider network, longer training, more pairs and bins")
    parser.add_argument("--hidden", type=int, nargs="+", default=None, metavar="N", help="hidden widths" + shown("hidden"))
    parser.add_argument("--activation", default=None, choices=["tanh", "sigmoid"], help="sigma" + shown("activation"))
    parser.add_argument("--epochs", type=int, default=None, help="training epochs" + shown("epochs"))
    parser.add_argument("--lr", type=float, default=None, help="training learning rate" + shown("lr"))
    parser.add_argument("--batch", type=int, default=None, help="training batch size" + shown("batch"))
    parser.add_argument("--seed", type=int, default=None, help="seed" + shown("seed"))
    parser.add_argument("--pairs", type=int, default=None, help="training pairs in analysis (b)" + shown("pairs"))
    parser.add_argument("--bins", type=int, default=None, help="quantile bins of |s| in analysis (a)" + shown("bins"))
    parser.add_argument("--ratio-lr", type=float, default=None, metavar="R", help="r of analysis (b)" + shown("ratio_lr"))
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="folder holding the data set files (digits needs none)")
    outputs.add_output_arguments(parser, NAME)


def resolve_settings(args) -> dict:
    settings = outputs.flag_settings(args, QUICK, FULL)
    if not settings["hidden"] or min(settings["hidden"]) < 1:
        raise BioPropError("--hidden: give one or more widths >= 1")
    settings["epochs"] = outputs.check_count("--epochs", settings["epochs"], 0)
    settings["batch"] = outputs.check_count("--batch", settings["batch"], 1)
    settings["pairs"] = outputs.check_count("--pairs", settings["pairs"], 1)
    settings["bins"] = outputs.check_count("--bins", settings["bins"], 2)
    settings["seed"] = outputs.check_count("--seed", settings["seed"], 0)
    settings["lr"] = outputs.check_number("--lr", settings["lr"], 0.0, inclusive=False)
    settings["ratio_lr"] = outputs.check_number("--ratio-lr", settings["ratio_lr"], 0.0, inclusive=False)
    return settings


def run(args) -> int:
    settings = resolve_settings(args)
    data = load_dataset(settings["dataset"], data_dir=args.data_dir)
    if settings["pairs"] > data.test_y.shape[0]:
        raise BioPropError(f"--pairs {settings['pairs']}: the {data.name} test set has only {data.test_y.shape[0]} samples")
    out = outputs.start(args, NAME)
    outputs.say(f"{NAME}: {settings}")
    progress = outputs.Progress(4, "stages")
    initial, trained, accuracy_before, accuracy_after = train_network(settings, data)
    progress.done(f"trained {'-'.join(map(str, trained.sizes))} with the credit rule: test accuracy "
                  f"{accuracy_before:.4f} -> {accuracy_after:.4f}")
    test_x, test_y = data.test_x.to(torch.float64), data.test_y

    signal_rows, summaries = [], []
    for state_name, mlp in (("initial", initial), ("trained", trained)):
        rows, summary = signal_against_balance(RateNetwork.from_mlp(mlp), test_x, test_y, settings["bins"], state_name)
        signal_rows += rows
        summaries.append(summary)
        progress.done(f"(a) signal against balance, {state_name} network")
    fits, points = ratio_analysis(RateNetwork.from_mlp(trained), test_x[:settings["pairs"]], test_y[:settings["pairs"]],
                                  settings["ratio_lr"])
    progress.done("(b) dw/g against x/w")
    progress.close()

    summary_table = outputs.markdown_table(summaries, SUMMARY_COLUMNS)
    signal_table = outputs.markdown_table(signal_rows, SIGNAL_COLUMNS)
    ratio_table = outputs.markdown_table(fits, RATIO_COLUMNS)
    print("(a) retrograde signal against balance\n" + summary_table + "\n\n" + signal_table)
    print("\n(b) dw/g against x/w\n" + ratio_table)
    network = (f"{'-'.join(map(str, trained.sizes))} {settings['activation']} MLP, credit rule (= BP), CE, "
               f"{settings['epochs']} epochs: test accuracy {accuracy_before:.4f} -> {accuracy_after:.4f}")
    extra = {"accuracy_initial": accuracy_before, "accuracy_trained": accuracy_after, "summary": summaries, "ratio_fits": fits}
    out.tables("signal", "(a) Retrograde signal against balance: " + network, signal_rows, settings,
               summary_table + "\n\n" + signal_table, extra=extra)
    out.tables("ratio", "(b) dw_ij / g_ji against x_j / w_ij: " + network, fits, settings, ratio_table,
               notes="g_ji = c_i g(s_i) w_ij; dw_ij = the rule's update (after - before); the control uses "
                     "batch means of the message and of x_j.", extra={"accuracy_trained": accuracy_after})
    plot_signal(signal_rows, out.path("signal.png"), "prediction (a): " + network)
    plot_ratio(fits, points, out.path("ratio.png"), settings["ratio_lr"])
    out.report()
    return 0
