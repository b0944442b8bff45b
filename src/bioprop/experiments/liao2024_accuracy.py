"""Test accuracy of the four-synapse circuit against BP and the feedback-alignment family.

Liao et al. 2024 claim the circuit "works as well as backpropagation". For every data set and
seed, bp, fa, kp, sign, dfa and circuit train from the same initial weights on the same batches
(liao2024.py: ReLU MLP, cross-entropy, one learning rate for all, every other option the
rule's default); the table gives the final test accuracy's mean, std, min and max over seeds.

Data sets: digits and Fashion-MNIST always (a missing one fails with the loader's message
before anything is written); with --full also MNIST, CIFAR-10 and SVHN where their files are
present (looked up without downloading; --dataset names an explicit list, all required).
Quick: hidden 100-100, digits 30 epochs, Fashion-MNIST 2 epochs, seeds 0 1 (about 2-3 min on
2 cores). --full: hidden 200-200-200, 10 epochs (digits 50), seeds 0 1 2.
Writes accuracy.csv/.json/.md and accuracy.png (bars: mean; error bars: std; ticks: min-max).
"""
from __future__ import annotations

from ..errors import DataUnavailableError
from . import liao2024 as common
from . import outputs

NAME = "liao2024-accuracy"
RULES = (*common.BASELINES, "circuit")
REQUIRED = ("digits", "fashion-mnist")
OPTIONAL = ("mnist", "cifar10", "svhn")
#: epochs per data set when --epochs is not given (digits is small: it needs more passes)
QUICK = dict(dataset=None, hidden=[100, 100], epochs={"digits": 30, "other": 2}, seeds=[0, 1], batch=50, lr=None)
FULL = dict(dataset=None, hidden=[200, 200, 200], epochs={"digits": 50, "other": 10}, seeds=[0, 1, 2], batch=50, lr=None)

COLUMNS = [
    ("dataset", "data set", ""), ("rule", "rule", ""), ("epochs", "epochs", "d"), ("n", "seeds", "d"),
    ("acc_mean", "test acc (mean)", ".4f"), ("acc_std", "std", ".4f"), ("acc_min", "min", ".4f"),
    ("acc_max", "max", ".4f"), ("diverged", "diverged", "d"), ("seconds", "s/run", ".1f"),
]


def datasets(args) -> dict:
    """name -> Dataset: the explicit --dataset list, else the required ones plus (--full) the
    optional ones whose files are present."""
    if args.dataset:
        return {name: common.load(name, args) for name in args.dataset}
    found = {name: common.load(name, args) for name in REQUIRED}
    if args.full:
        for name in OPTIONAL:
            try:
                found[name] = common.load_dataset(name, data_dir=args.data_dir, download=False)
            except DataUnavailableError:
                outputs.say(f"{name}: files not present, skipped (give --dataset {name} --download to include it)")
    return found


def accuracy_table(data_sets: dict, rules, hidden, epochs, seeds, batch, lr) -> tuple[list[dict], list[dict]]:
    """(one row per data set and rule with the spread over seeds, one row per run)."""
    rows, runs = [], []
    progress = outputs.Progress(len(data_sets) * len(rules) * len(seeds), "runs")
    for name, data in data_sets.items():
        n_epochs = epochs if isinstance(epochs, int) else epochs.get(name, epochs["other"])
        for rule in rules:
            jobs = [(f"{name} {rule} seed {seed}", lambda rule=rule, seed=seed: common.train_run(
                data, rule, hidden, seed, n_epochs, batch, lr)[2]) for seed in seeds]
            histories = common.run_all(jobs, progress)
            for seed, history in zip(seeds, histories):
                runs.append({"dataset": name, "rule": rule, "seed": seed, "test_acc": history.final,
                             "diverged": history.diverged, "curve": history.test_acc, "seconds": history.seconds})
            spread = outputs.spread([h.final for h in histories])
            rows.append({
                "dataset": name, "rule": rule, "epochs": n_epochs, "n": spread["n"],
                "acc_mean": spread["mean"], "acc_std": spread["std"], "acc_min": spread["min"], "acc_max": spread["max"],
                "diverged": sum(h.diverged for h in histories),
                "seconds": sum(h.seconds for h in histories) / len(histories),
            })
    progress.close()
    return rows, runs


def plot(rows: list[dict], path) -> None:
    plt = outputs.pyplot()
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    width = 0.8 / len(rules)
    figure, axis = plt.subplots(figsize=(max(6.0, 2.2 * len(names) + 2), 4.0))
    for k, rule in enumerate(rules):
        mine = [next(r for r in rows if r["dataset"] == n and r["rule"] == rule) for n in names]
        xs = [i + (k - (len(rules) - 1) / 2) * width for i in range(len(names))]
        means = [r["acc_mean"] for r in mine]
        axis.bar(xs, means, width, yerr=[r["acc_std"] for r in mine], capsize=3, label=rule)
        axis.vlines(xs, [r["acc_min"] for r in mine], [r["acc_max"] for r in mine], colors="black", linewidth=0.8)
    axis.set_xticks(range(len(names)), names)
    lowest = min(r["acc_min"] for r in rows)
    axis.set_ylim(max(0.0, lowest - 0.1), 1.0)
    axis.set_ylabel("test accuracy")
    axis.set_title("circuit vs BP and feedback-alignment baselines\n(bars: mean over seeds; error bars: std; lines: min-max)", fontsize=10)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    outputs.save_figure(figure, path)


def configure_parser(parser) -> None:
    common.add_common_arguments(
        parser, QUICK, FULL,
        datasets_help="data sets, all required (default: digits and fashion-mnist; --full adds mnist, cifar10, svhn where present)",
    )
    parser.add_argument("--rules", nargs="+", default=list(RULES), metavar="RULE", help=f"rules to compare (default: {' '.join(RULES)})")
    outputs.add_output_arguments(parser, NAME)


def run(args) -> int:
    settings = common.resolve_settings(args, QUICK, FULL)
    for rule in args.rules:
        common.rule_options(rule, settings["lr"])  # an unknown rule fails now, before anything is written
    data_sets = datasets(args)
    out = outputs.start(args, NAME)
    settings.update(dataset=list(data_sets), rules=list(args.rules))
    outputs.say(f"{NAME}: {settings}")
    rows, runs = accuracy_table(data_sets, args.rules, settings["hidden"], settings["epochs"], settings["seeds"],
                                settings["batch"], settings["lr"])
    markdown = outputs.markdown_table(rows, COLUMNS)
    print(markdown)
    options = {rule: common.rule_options(rule, settings["lr"]) for rule in args.rules}
    out.tables("accuracy", "Test accuracy: circuit vs BP and baselines", rows, settings, markdown,
               extra={"rule_options": options, "runs": runs})
    plot(rows, out.path("accuracy.png"))
    out.report()
    return 0
