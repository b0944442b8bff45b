"""Theorem 1 over training: how far the circuit has self-assembled, per layer (Liao et al. 2024).

Theorem 1 says that once V_l and V̄_l are full rank and have stopped moving (updates O(eps)),
the update of W_l is the SGD update times H_l = V̄_l V̄_lᵀ. We train the circuit (rule
defaults) and, every N steps, measure on that step's batch (bioprop.diagnostics.measure, before
the step), per weight layer l:

    theorem1_error        ||G_l - c H_l ∇W_l|| / ||c H_l ∇W_l||, c = eta_V / eta_V̄
    theorem1_error_fitted the same with the least-squares scalar in place of c
    cos_update            cos(ΔW_l, -∇W_l)         cos_delta   cos(eps_l, BP's delta d_l)
    one_minus_cos_v_vbar  1 - cos(V_l, V̄_lᵀ)       feedback_cos cos(W̄_l V_l, W_lᵀ) (cos(W̄_L, W_Lᵀ) on top)
    drift_v, drift_vbar   ||ΔV_l|| / ||V_l||, ||ΔV̄_l|| / ||V̄_l|| of the step
    h_effective_rank, h_condition  of H_l

and, for feedback alignment, Kolen-Pollack and sign symmetry trained from the same weights on the
same batches, their cos_update, cos_delta and feedback_cos (cos(B_l, W_lᵀ)) on the same axes.

Quick: digits, 64-64-64-64-10, 60 epochs, every 40 steps, seed 0 (under a minute). --full:
Fashion-MNIST, 784-200-200-200-10, 12 epochs, every 200 steps, seed 0 (SPEC-circuit.md's
prototype setting).
Writes theorem1.csv (circuit: one row per weight layer per measurement), alignment.csv (every
rule), theorem1.json/.md (start -> end per layer, test accuracies), theorem1.png, alignment.png.
"""
from __future__ import annotations

import math

from ..errors import BioPropError
from . import liao2024 as common
from . import outputs

NAME = "liao2024-theorem1"
BASELINES = ("fa", "kp", "sign")
QUICK = dict(dataset="digits", hidden=[64, 64, 64], epochs=60, seeds=[0], batch=50, lr=None, every=40)
FULL = dict(dataset="fashion-mnist", hidden=[200, 200, 200], epochs=12, seeds=[0], batch=50, lr=None, every=200)

CIRCUIT_FIELDS = ("theorem1_error", "theorem1_error_fitted", "theorem1_fitted_c", "cos_update", "rel_update", "cos_delta",
                  "one_minus_cos_v_vbar", "feedback_cos", "drift_v", "drift_vbar", "h_effective_rank", "h_condition")
ALIGNMENT_FIELDS = ("cos_update", "rel_update", "cos_delta", "feedback_cos")
#: (field, label) of the summary table, in order
SUMMARY = [
    ("theorem1_error", "‖ΔW − cH∇W‖/‖cH∇W‖"), ("theorem1_error_fitted", "same, fitted c"),
    ("cos_update", "cos(ΔW, −∇W)"), ("cos_delta", "cos(eps, delta)"), ("one_minus_cos_v_vbar", "1 − cos(V, V̄ᵀ)"),
    ("feedback_cos", "cos(W̄V, Wᵀ)"), ("drift_v", "‖ΔV‖/‖V‖"), ("drift_vbar", "‖ΔV̄‖/‖V̄‖"),
    ("h_effective_rank", "eff. rank H"), ("h_condition", "cond H"),
]


def measurements(data, rules, hidden, epochs, batch, lr, seed, every) -> dict[str, tuple]:
    """rule -> (diagnostic records, history)."""
    results = common.run_all([
        (f"{rule} seed {seed}", lambda rule=rule: common.train_run(data, rule, hidden, seed, epochs, batch, lr, diagnostics_every=every)[2])
        for rule in rules
    ])
    return {rule: (history.diagnostics, history) for rule, history in zip(rules, results)}


def rows_for(records: list[dict], fields) -> list[dict]:
    return [{"epoch": r["epoch"], "step": r["step"], "layer": r["layer"], **{f: r.get(f, math.nan) for f in fields}} for r in records]


def summary_table(results: dict, layers: int) -> list[dict]:
    """Rows: (rule, quantity); columns: layer 1..L as "start -> end"."""
    rows = []
    for rule, (records, _) in results.items():
        fields = SUMMARY if rule == "circuit" else [
            (f, "cos(B, Wᵀ)" if f == "feedback_cos" else label) for f, label in SUMMARY if f in ALIGNMENT_FIELDS]
        for field, label in fields:
            row = {"rule": rule, "quantity": label}
            for layer in range(1, layers + 1):
                series = [r[field] for r in records if r["layer"] == layer and _finite(r.get(field))]
                row[f"layer {layer}"] = f"{_short(series[0])} → {_short(series[-1])}" if series else None
            if any(row[f"layer {l}"] for l in range(1, layers + 1)):
                rows.append(row)
    return rows


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _short(value: float) -> str:
    return f"{value:.3g}"


def _series(records, layer, field):
    points = [(r["step"], r.get(field)) for r in records if r["layer"] == layer]
    points = [(s, v) for s, v in points if _finite(v)]
    return [s for s, _ in points], [v for _, v in points]


def plot_theorem1(records: list[dict], histories: dict, layers: int, path, title: str) -> None:
    plt = outputs.pyplot()
    panels = [
        ("Theorem-1 relative error (dashed: fitted c)", ("theorem1_error", "theorem1_error_fitted"), "log"),
        ("cos(ΔW, −∇W)", ("cos_update",), "linear"),
        ("cos(eps, delta): hidden error vs BP's", ("cos_delta",), "linear"),
        ("1 − cos(V, V̄ᵀ)", ("one_minus_cos_v_vbar",), "log"),
        ("cos(W̄V, Wᵀ)  (top layer: cos(W̄_L, W_Lᵀ))", ("feedback_cos",), "linear"),
        ("drift ‖ΔV‖/‖V‖ (dashed: V̄)", ("drift_v", "drift_vbar"), "log"),
        ("effective rank of H", ("h_effective_rank",), "linear"),
        ("condition number of H", ("h_condition",), "log"),
    ]
    figure, axes = plt.subplots(3, 3, figsize=(14, 11))
    axes = axes.ravel()
    colors = plt.get_cmap("tab10")
    for axis, (name, fields, scale) in zip(axes, panels):
        for layer in range(1, layers + 1):
            for field, style in zip(fields, ("-", "--")):
                steps, values = _series(records, layer, field)
                if steps:
                    axis.plot(steps, values, linestyle=style, color=colors(layer - 1), label=f"layer {layer}" if style == "-" else None)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("training step")
        if scale == "log" and any(_finite(r.get(f)) and r.get(f) > 0 for r in records for f in fields):
            axis.set_yscale("log")
        if axis.lines:
            axis.legend(fontsize=7)
    accuracy = axes[-1]
    for rule, history in histories.items():
        accuracy.plot(range(1, len(history.test_acc) + 1), history.test_acc, marker=".", label=rule)
    accuracy.set_title("test accuracy", fontsize=9)
    accuracy.set_xlabel("epoch")
    accuracy.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    outputs.save_figure(figure, path)


def plot_alignment(results: dict, layers: int, path, title: str) -> None:
    plt = outputs.pyplot()
    panels = [("cos(ΔW, −∇W)", "cos_update"), ("cos(eps, delta)", "cos_delta"), ("cos(feedback, Wᵀ)", "feedback_cos")]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    colors = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-.", (0, (1, 3)), (0, (5, 1))]
    for axis, (name, field) in zip(axes, panels):
        for k, (rule, (records, _)) in enumerate(results.items()):
            for layer in range(1, layers + 1):
                steps, values = _series(records, layer, field)
                if steps:
                    axis.plot(steps, values, color=colors(k), linestyle=styles[(layer - 1) % len(styles)], linewidth=1.0,
                              label=f"{rule} layer {layer}")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("training step")
        axis.set_ylim(-0.2, 1.05)
    axes[0].legend(fontsize=6, ncol=2)
    figure.suptitle(title + "  (colour: rule; line style: layer; feedback: W̄V for the circuit, B for the others)", fontsize=10)
    figure.tight_layout()
    outputs.save_figure(figure, path)


def configure_parser(parser) -> None:
    common.add_common_arguments(parser, QUICK, FULL)
    parser.add_argument("--every", type=int, default=None, metavar="N",
                        help=f"measure every N training steps (quick: {QUICK['every']}; --full: {FULL['every']})")
    parser.add_argument("--rules", nargs="*", default=list(BASELINES), metavar="RULE",
                        help=f"baselines measured beside the circuit (default: {' '.join(BASELINES)})")
    outputs.add_output_arguments(parser, NAME)


def run(args) -> int:
    settings = common.resolve_settings(args, QUICK, FULL, keys=("every",))
    if settings["every"] < 1:
        raise BioPropError(f"--every {settings['every']}: give an integer >= 1")
    if len(settings["seeds"]) != 1:
        raise BioPropError(f"--seeds {' '.join(map(str, settings['seeds']))}: this command follows one run per rule; give one seed")
    rules = ["circuit", *[r for r in args.rules if r != "circuit"]]
    for rule in rules:
        common.rule_options(rule, settings["lr"])  # an unknown rule fails now, before anything is written
    data = common.load(settings["dataset"], args)
    out = outputs.start(args, NAME)
    settings["rules"] = rules
    outputs.say(f"{NAME}: {settings}")
    results = measurements(data, rules, settings["hidden"], settings["epochs"], settings["batch"], settings["lr"],
                           settings["seeds"][0], settings["every"])
    layers = len(settings["hidden"]) + 1
    circuit_records = results["circuit"][0]
    out.csv("theorem1.csv", rows_for(circuit_records, CIRCUIT_FIELDS))
    out.csv("alignment.csv", [{"rule": rule, **row} for rule, (records, _) in results.items()
                              for row in rows_for(records, ALIGNMENT_FIELDS)])
    summary = summary_table(results, layers)
    columns = [("rule", "rule", ""), ("quantity", "quantity (start → end)", "")] + [
        (f"layer {l}", f"layer {l}", "") for l in range(1, layers + 1)]
    markdown = outputs.markdown_table(summary, columns)
    histories = {rule: history for rule, (_, history) in results.items()}
    notes = "Final test accuracy: " + ", ".join(
        f"{rule} {h.final:.4f}" + (" (diverged)" if h.diverged else "") for rule, h in histories.items())
    print(markdown)
    print(notes)
    sizes = "-".join(map(str, [data.n_features, *settings["hidden"], data.n_classes]))
    title = f"Theorem 1 over training, {settings['dataset']} {sizes}"
    out.markdown("theorem1.md", f"## {title}\n\nSettings: {', '.join(f'{k}={v}' for k, v in settings.items())}\n\n"
                                f"{markdown}\n\n{notes}\n")
    out.json("theorem1.json", {"settings": settings, "summary": summary, "test_acc": {r: h.test_acc for r, h in histories.items()},
                               "rule_options": {r: common.rule_options(r, settings["lr"]) for r in rules},
                               "provenance": out.provenance})
    plot_theorem1(circuit_records, histories, layers, out.path("theorem1.png"), title)
    plot_alignment(results, layers, out.path("alignment.png"), title)
    out.report()
    return 0
