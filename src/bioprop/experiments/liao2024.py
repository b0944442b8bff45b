"""Shared pieces of the Liao et al. 2024 reproduction commands (`bioprop reproduce liao2024-*`).

The paper (Liao, Ziyin, Gan, Cheung, Harnett & Poggio, "Self-assembly of a biologically
plausible learning circuit", arXiv 2412.20018) reaches us only as a summary with figure
captions; the circuit we train is the reconstruction in SPEC-circuit.md (rules/circuit.py), and
docs/circuit.md says which parts are the paper's and which are ours.

Every command here trains networks the same way, so that rules are compared under control:

- the network is bioprop.MLP([n_features, *hidden, n_classes]) with ReLU hidden units (the
  paper's upstream pathway is a ReLU network), biases, Xavier init, float32, drawn from `seed`;
- every rule gets the same initial weights and the same batch order for a seed (bioprop.training's
  loop, the one `bioprop train` runs: the same batches as `bioprop train --seed SEED`), and a rule
  with a `seed` option gets the seed too (its random feedback or downstream pathway);
- softmax cross-entropy loss, plain SGD on batch means, one learning rate for every rule
  (the circuit's eta_W; by default the circuit rule's own default lr, read from its signature,
  so the lead's tuning of the circuit carries over without touching this file);
- every other option is the rule's own default unless an experiment sweeps it.

A run that blows up (a non-finite loss or weight) stops and is reported as diverged, with the
test accuracy its last network scores. Tables and figures are written with `outputs.py`, which
every reproduce command shares.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from contextlib import nullcontext
from typing import Any, Callable, Iterable, Sequence

import torch

from ..data import Dataset, load_dataset
from ..diagnostics import measure
from ..errors import BioPropError
from ..network import MLP
from ..rules import RULES, make_rule
from ..training import Learner, shuffle_generator, train_epochs
from .outputs import Progress, check_count, check_number

#: the baselines of the accuracy comparison, in the order tables list them
BASELINES = ("bp", "fa", "kp", "sign", "dfa")


def circuit_default(option: str) -> Any:
    """The circuit rule's own default for `option` (e.g. "lr" = eta_W), read from its signature."""
    return inspect.signature(RULES["circuit"].__init__).parameters[option].default


# -- command-line settings ------------------------------------------------------------------
def add_common_arguments(parser, quick: dict, full: dict, datasets_help: str | None = None) -> None:
    """--full, --dataset, --data-dir, --download, --epochs, --seeds, --lr, --batch, --hidden
    (each command adds --out and --quiet with outputs.add_output_arguments)."""
    def shown(key: str) -> str:
        q, f = quick.get(key), full.get(key)
        text = lambda v: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        return f" (quick: {text(q)}; --full: {text(f)})"

    parser.add_argument("--full", action="store_true", help="the paper's setup (hours on a CPU); default: a quick setting")
    if datasets_help is None:
        parser.add_argument("--dataset", default=None, metavar="NAME", help="data set" + shown("dataset"))
    else:
        parser.add_argument("--dataset", nargs="+", default=None, metavar="NAME", help=datasets_help)
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="folder holding the data set files")
    parser.add_argument("--download", action="store_true", help="download missing data set files")
    parser.add_argument("--epochs", type=int, default=None, metavar="N", help="training epochs" + shown("epochs"))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N", help="seeds" + shown("seeds"))
    parser.add_argument("--lr", type=float, default=None, metavar="LR",
                        help="learning rate of every rule (the circuit's eta_W; default: the circuit rule's default lr)")
    parser.add_argument("--batch", type=int, default=None, metavar="N", help="batch size" + shown("batch"))
    parser.add_argument("--hidden", type=int, nargs="+", default=None, metavar="N", help="hidden widths" + shown("hidden"))


def resolve_settings(args, quick: dict, full: dict, keys: Iterable[str] = ()) -> dict[str, Any]:
    """QUICK or FULL, overridden by the flags given; checked. `keys`: extra flags to copy."""
    settings = dict(full if args.full else quick)
    for key in ("dataset", "epochs", "seeds", "lr", "batch", "hidden", *keys):
        value = getattr(args, key, None)
        if value is None:
            continue
        if key in ("epochs", "batch"):
            check_count(f"--{key}", value, 1)
        if key == "hidden" and (not value or min(value) < 1):
            raise BioPropError(f"--hidden {' '.join(map(str, value))}: give one or more widths >= 1")
        if key == "seeds" and (not value or min(value) < 0):
            raise BioPropError("--seeds: give one or more seeds >= 0")
        if key == "lr":
            check_number("--lr", value, 0.0, inclusive=False)
        settings[key] = list(value) if isinstance(value, (list, tuple)) else value
    if settings.get("lr") is None:
        settings["lr"] = circuit_default("lr")
    return settings


def load(name: str, args) -> Dataset:
    """A data set by name; a missing one raises the loader's DataUnavailableError (naming the fix)."""
    return load_dataset(name, data_dir=args.data_dir, download=args.download)


# -- one training run ------------------------------------------------------------------------
def build(data: Dataset, rule_name: str, hidden: Sequence[int], seed: int, lr: float,
          options: dict | None = None, activation: str = "relu", loss: str = "ce"):
    """(net, rule) for one run; the rule's random pathway (if any) is drawn now, from `seed`."""
    net = MLP([data.n_features, *hidden, data.n_classes], activation=activation, seed=seed)
    keywords = dict(options or {})
    if "seed" in inspect.signature(RULES[rule_name].__init__).parameters:
        keywords.setdefault("seed", seed)
    rule = make_rule(rule_name, lr=lr, loss=loss, **keywords)
    if hasattr(rule, "initialize"):
        rule.initialize(net)
    return net, rule


def rule_options(rule_name: str, lr: float, options: dict | None = None) -> dict[str, Any]:
    """Every option a run of `rule_name` uses (the rule's defaults plus `options`), for the record."""
    keywords = dict(options or {})
    return make_rule(rule_name, lr=lr, loss="ce", **keywords).options()


@dataclass
class History:
    """What one run measured: test accuracy after every epoch, the last train loss, diagnostics."""

    test_acc: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    diverged: bool = False
    diagnostics: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final(self) -> float:
        return self.test_acc[-1]


def fit(net: MLP, rule, data: Dataset, epochs: int, batch: int, seed: int, diagnostics_every: int = 0) -> History:
    """Train `net` with `rule` in place with bioprop.training's loop (the batch order of
    `bioprop train --seed SEED`), test accuracy every epoch; a non-finite loss or weight stops it.

    diagnostics_every N > 0: every N steps, bioprop.diagnostics.measure on that step's batch
    (before the step), one record per weight layer with "epoch" and "step" added.
    """
    start = time.perf_counter()
    history = History()

    def diagnose(epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        if step % diagnostics_every == 0:
            history.diagnostics.extend({"epoch": epoch, "step": step, **r} for r in measure(rule, net, x, y))

    test = (data.test_x.to(net.dtype), data.test_y)
    for result in train_epochs([Learner(net, rule)], data.train_x.to(net.dtype), data.train_y, epochs=epochs,
                               batch_size=batch, shuffle=shuffle_generator(seed), test=test,
                               before_step=diagnose if diagnostics_every else None):
        history.train_loss.append(result.metrics[0].train_loss)
        history.test_acc.append(result.metrics[0].test_acc)
        history.diverged = result.diverged
    history.seconds = time.perf_counter() - start
    return history


def train_run(data: Dataset, rule_name: str, hidden: Sequence[int], seed: int, epochs: int, batch: int, lr: float,
              options: dict | None = None, activation: str = "relu", diagnostics_every: int = 0):
    """build + fit: (net, rule, history)."""
    net, rule = build(data, rule_name, hidden, seed, lr, options, activation)
    return net, rule, fit(net, rule, data, epochs, batch, seed, diagnostics_every)


def run_all(jobs: Sequence[tuple[str, Callable[[], Any]]], progress: Progress | None = None) -> list[Any]:
    """Run labelled jobs one after another; each finished job is a unit of `progress` (the
    command's whole run, if given; else a bar or lines over these jobs alone)."""
    results = []
    with (Progress(len(jobs), "runs") if progress is None else nullcontext(progress)) as shown:
        for label, job in jobs:
            results.append(job())
            shown.done(label)
    return results
