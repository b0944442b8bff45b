"""`bioprop train`: train one rule on a data set, optionally beside a twin trained by another.

The network is `--model` (bioprop.models.build_model: mlp, the default, sized by --hidden;
lenet5; cnn-small; rnn, whose width is --hidden N; or a factory path/to/file.py:function
returning an nn.Sequential), sized by the data set's image shape (C, H, W). The trainer hands
each network its layout of the same samples: flattened vectors to an MLP, (B, C, H, W) images
to a conv net, (B, H, C*W) image rows to the RNN (bioprop.models.shape_batch). The epochs
themselves are bioprop.training's loop, the one the experiments train with.

One run is one folder:

    config.yaml     the fully resolved configuration (reusable with --config) and, under
                    `resolved`, what it expanded to: the model, its description and parameter
                    count, its input layout, layer sizes (MLP), every rule option, data set
                    size and source, versions of bioprop, torch, numpy and Python
    metrics.jsonl   one JSON object per epoch: epoch, train_loss, train_acc, test_loss, test_acc,
                    seconds (and compare_* / max_abs_diff / max_rel_diff with --compare)
    metrics.csv     the same table as CSV (a header, one row per epoch; empty: not evaluated)
    checkpoint.pt   written every epoch: per learner the network's state_dict and the rule's
                    state_dict (a rule keeps its feedback matrices and noise generators there),
                    the shuffling generator, metrics so far, config (and the twin with --compare)
    model.pt        written every epoch: the trained network's state_dict alone (for a wrapped
                    module, the user's module's own state_dict), loadable with
                    torch.load(path, weights_only=True); bioprop.load_run(folder) rebuilds the
                    network and the rule from the folder
    curves.png      loss and accuracy against epoch, train and test, and the twin's beside
                    them with --compare; written when the run stops (finished, diverged or
                    interrupted)
    summary.json    written at the end: final and best metrics, times, final twin differences
    .bioprop-run.lock  present while a run writes the folder, naming its PID: a second run into
                    the folder is refused meanwhile (bioprop.runlock)
    diagnostics.jsonl  with --diagnostics-every N: every N training steps, one JSON object per
                    weight layer with bioprop.diagnostics.measure's figures on that step's batch
                    (cos(ΔW, -∇W), the circuit's Theorem-1 error and alignments, ...), plus
                    epoch and step

Data-parallel (torchrun --nproc-per-node N -m bioprop train ...; bioprop.distributed,
docs/distributed.md): --batch-size is the global batch, every rank takes its shard of each batch
and the shard-weighted changes are all-reduced, so N processes train what one does; rank 0 alone
writes the folder and prints.

Every file is written to a temporary file in the run folder and moved into place with
os.replace, so a crash never leaves a half-written file; the folder itself is only created
once the configuration, the data, the network and the rules have all been checked (a rule not
yet ported to a non-MLP network is refused then, by name, after one trial step on a copy).

Stopping early. A run whose training loss, test loss or weights become non-finite stops at
that epoch with TrainingDiverged (a BioPropError: the CLI prints the message and exits with
status 2): the message names the epoch and the fix (a smaller --lr); the folder keeps the last
good epoch's checkpoint and the good epochs' metrics (the diverged epoch is written nowhere).
Ctrl-C (exit status 130) leaves the last checkpoint, and says how to continue:
`bioprop train --resume DIR`; a run interrupted before its first epoch ended (only config.yaml
in the folder) resumes from epoch 0 with the settings stored there.

Reproducibility: the network is drawn from `seed` (``MLP(sizes, seed=seed)`` rebuilds it; conv
nets and factories are built under a torch RNG seeded with it), the batch order from a
torch.Generator seeded from `seed` that is shuffled with randperm each epoch and checkpointed
(bioprop.training's convention: every command that trains draws the same batches for a seed),
and rules that take a `seed` option get `seed` unless --rule-seed is given.
A seeded CPU run is bit-for-bit reproducible and --resume continues one bit-for-bit; on an
accelerator training runs under torch.use_deterministic_algorithms(True) (restored afterwards).

--compare RULE trains a twin network, cloned from the same initial weights, with RULE on the
same batches in the same order, and reports after every epoch the largest absolute difference
between corresponding parameters (weights and biases) and the largest relative one,

    max_abs_diff = max_l max_ij |W_l - W'_l|_ij,
    max_rel_diff = max_l max_ij |W_l - W'_l|_ij / max_ij |W'_l|_ij

(relative to each twin tensor's largest magnitude, so zero-initialised biases do not divide by 0).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import platform
import sys
import time
import tomllib
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import yaml

from .activations import activation_names, get_activation
from .diagnostics import measure
from .distributed import Cluster
from .errors import BioPropError
from .files import json_safe, write_atomic, write_csv
from .losses import loss_names
from .models import MODEL_NAMES, build_model, input_layout, shape_batch
from .network import INPUT_MAPS, MLP, Network
from .rules import RULES, LearningRule, make_rule
from .runlock import LOCK_NAME, hold_run_lock, releases_run_locks
from .training import (
    Learner, TrainingDiverged, evaluate, shuffle_generator, shuffle_seed, train_epochs, weight_difference,
)

Tensor = torch.Tensor

CHECKPOINT_FORMAT = "bioprop-train-checkpoint/1"
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.csv", "checkpoint.pt", "model.pt", "summary.json",
             "diagnostics.jsonl", "curves.png")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICES = ("cpu", "cuda", "auto")
#: Settings that may differ from the stored run on --resume (they do not change the numbers).
RESUMABLE = frozenset({"epochs", "eval_every", "quiet", "data_dir", "download", "overwrite", "resume", "out"})
#: Settings that are about this invocation, not about the run; not written to config.yaml.
OPERATIONAL = ("out", "resume", "overwrite", "quiet")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Keys of config files and of `train(dict)` are
    these field names (plus rule options, flat or under `rule_options`)."""

    rule: str | None = None
    model: str = "mlp"
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    hidden: list[int] = field(default_factory=lambda: [64])
    activation: str = "tanh"
    bias: bool = True
    input_map: str = "identity"
    init: str = "xavier"
    init_scale: float = 1.0
    loss: str = "ce"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.1
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    out: str | None = None
    resume: str | None = None
    overwrite: bool = False
    quiet: bool = False
    compare: str | None = None
    eval_every: int = 1
    diagnostics_every: int = 0
    rule_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_DEFAULTS = TrainConfig()

_HELP = {
    "rule": f"learning rule to train with (one of {', '.join(sorted(RULES))})",
    "model": f"network to train: {', '.join(MODEL_NAMES)} or path/to/file.py:function (a factory "
             "function(image_shape, n_classes) returning an nn.Sequential)",
    "dataset": "data set name",
    "data_dir": "folder holding the data set's files",
    "download": "download the data set if its files are missing",
    "hidden": "hidden layer widths of the MLP, e.g. --hidden 64 64 (none: a linear model); "
              "--model rnn: its one width, e.g. --hidden 128",
    "activation": f"hidden activation f (one of {', '.join(activation_names())})",
    "bias": "give every layer a bias",
    "input_map": f"input as seen by layer 1 (one of {', '.join(INPUT_MAPS)})",
    "init": "weight initialisation: xavier or uniform",
    "init_scale": "factor on the initial weights",
    "loss": f"loss on the linear output (one of {', '.join(loss_names())})",
    "epochs": "train until this many epochs are done",
    "batch_size": "training pairs per step (the last, partial batch is kept)",
    "lr": "learning rate",
    "seed": "seeds the initial weights, the batch order and the rule's noise",
    "dtype": "float32 or float64",
    "device": "cpu, cuda or auto (cuda when available)",
    "out": "run folder (default runs/RULE[-vs-COMPARE]-DATASET-seedSEED)",
    "resume": "continue the run in this folder up to --epochs",
    "overwrite": "replace the run files in a non-empty --out",
    "quiet": "print nothing but errors",
    "compare": "also train a twin from the same initial weights with this rule on the same batches",
    "eval_every": "evaluate on the test set every N epochs (and always after the last)",
    "diagnostics_every": "every N training steps, log the rule's distance to BP and alignment figures "
                         "to diagnostics.jsonl (0: never)",
}


# -- rule options, found by introspection --------------------------------------------------------
@dataclass(frozen=True)
class RuleOption:
    """One keyword option of one or more rules, as it appears on the command line."""

    name: str  # the keyword make_rule takes
    dest: str  # the config key / argparse dest (prefixed "rule_" when it clashes with a setting)
    parse: Callable[[str], Any] | None  # None: a boolean switch
    rules: tuple[str, ...]

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")


def rule_parameters(rule: str) -> list[str]:
    """The options `make_rule(rule, ...)` accepts besides lr and loss."""
    parameters = inspect.signature(RULES[rule].__init__).parameters
    return [
        name
        for name, p in parameters.items()
        if name not in ("self", "lr", "loss") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def rule_option_specs() -> dict[str, RuleOption]:
    """Every rule option of every registered rule, by option name."""
    defaults: dict[str, list[Any]] = {}
    owners: dict[str, list[str]] = {}
    for rule in sorted(RULES):
        parameters = inspect.signature(RULES[rule].__init__).parameters
        for name in rule_parameters(rule):
            defaults.setdefault(name, []).append(parameters[name].default)
            owners.setdefault(name, []).append(rule)
    reserved = set(FIELDS) | {"config", "resolved"}
    return {
        name: RuleOption(
            name=name,
            dest=f"rule_{name}" if name in reserved else name,
            parse=_parser_for(defaults[name]),
            rules=tuple(owners[name]),
        )
        for name in sorted(defaults)
    }


def _parser_for(defaults: list[Any]) -> Callable[[str], Any] | None:
    kinds = {type(d) for d in defaults}
    if kinds == {bool}:
        return None
    if kinds == {int}:
        return int
    if kinds <= {int, float}:
        return float
    return parse_scalar


def parse_scalar(text: str) -> Any:
    """A command-line value whose type the rule decides: int if it reads as one, else float,
    else None for "none", else the string (e.g. --update-at layer, --update-at 3)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text.lower() == "none" else text


# -- command line ----------------------------------------------------------------------------
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags default to "not given" (argparse.SUPPRESS), so a config file can supply them and the
    flags that are given override it."""
    quiet = argparse.SUPPRESS

    def add(name: str, **kwargs) -> None:
        default = getattr(_DEFAULTS, name)
        help_text = _HELP[name]
        if kwargs.get("action") is argparse.BooleanOptionalAction:
            help_text += f" (default: {'on' if default else 'off'})"
        elif default is not None and default is not False:
            shown = " ".join(map(str, default)) if isinstance(default, list) else default
            help_text += f" (default: {shown})"
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=quiet, help=help_text, **kwargs)

    add("rule", metavar="RULE")
    add("model", metavar="MODEL")
    add("dataset", metavar="NAME")
    add("data_dir", metavar="DIR")
    add("download", action="store_true")
    add("hidden", nargs="*", type=int, metavar="N")
    add("activation", metavar="F")
    add("bias", action=argparse.BooleanOptionalAction)
    add("input_map", metavar="MAP")
    add("init", metavar="SCHEME")
    add("init_scale", type=float, metavar="S")
    add("loss", metavar="LOSS")
    add("epochs", type=int, metavar="N")
    add("batch_size", type=int, metavar="N")
    add("lr", type=float, metavar="LR")
    add("seed", type=int, metavar="N")
    add("dtype", metavar="DTYPE")
    add("device", metavar="DEVICE")
    add("out", metavar="DIR")
    add("resume", metavar="RUN_DIR")
    add("overwrite", action="store_true")
    add("quiet", action="store_true")
    add("compare", metavar="RULE")
    add("eval_every", type=int, metavar="N")
    add("diagnostics_every", type=int, metavar="N")
    parser.add_argument(
        "--config", metavar="FILE", default=quiet,
        help="YAML or TOML file of settings (keys: the flag names with underscores); flags given override it",
    )
    from .rules_listing import flag_help  # each rule's option_help: the meanings are declared once, on the rules

    group = parser.add_argument_group(
        "rule options", "passed to --rule only when given (a --compare twin keeps its defaults); each flag names the "
        "rules that take it and their defaults; `bioprop rules NAME` shows one rule's options"
    )
    for option in rule_option_specs().values():
        help_text = flag_help(option.name, option.rules).replace("%", "%%")
        if option.parse is None:
            group.add_argument(option.flag, dest=option.dest, action=argparse.BooleanOptionalAction, default=quiet, help=help_text)
        else:
            group.add_argument(option.flag, dest=option.dest, type=option.parse, default=quiet, metavar="VALUE", help=help_text)


def run(args: argparse.Namespace) -> int:
    given = {k: v for k, v in vars(args).items() if k not in ("command", "_run")}
    train(given, progress=True)
    return 0


# -- configuration ---------------------------------------------------------------------------
def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (.yaml, .yml) or TOML (.toml) file of settings into a dict."""
    path = Path(path)
    if not path.is_file():
        raise BioPropError(f"--config {path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        elif suffix in (".yaml", ".yml"):
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        else:
            raise BioPropError(f"--config {path}: unknown format {suffix or '(no suffix)'}; use .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BioPropError(f"--config {path}: cannot parse it ({error})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BioPropError(f"--config {path}: expected a mapping of setting: value at the top level")
    return data


def split_settings(raw: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sort flat settings (config file, train() dict or parsed flags) into TrainConfig fields and
    rule options. Keys may use dashes or underscores; rule options may be given flat under their
    flag name or as a `rule_options` mapping; a `resolved` section (config.yaml's) is ignored."""
    by_dest = {option.dest: option.name for option in rule_option_specs().values()}
    fields: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name == "resolved":
            continue
        if name == "rule_options":
            if value is None:
                continue
            if not isinstance(value, dict):
                raise BioPropError(f"{source}: rule_options must be a mapping of option: value")
            for option, option_value in value.items():
                options[str(option).replace("-", "_")] = option_value
        elif name in FIELDS:
            fields[name] = value
        elif name in by_dest:
            options[by_dest[name]] = value
        else:
            valid = sorted(set(FIELDS) | set(by_dest))
            raise BioPropError(f"{source}: unknown setting {key!r}; valid settings: {', '.join(valid)}")
    return fields, options


def _given_settings(config: dict | TrainConfig) -> dict[str, Any]:
    """The settings the caller chose: a dict as given (a `config` key naming a file is read and
    the dict overrides it), a TrainConfig's fields that differ from the defaults."""
    if isinstance(config, TrainConfig):
        return {k: v for k, v in config.to_dict().items() if v != getattr(_DEFAULTS, k)}
    if not isinstance(config, dict):
        raise BioPropError(f"config: expected a dict or TrainConfig, got {type(config).__name__}")
    given = dict(config)
    file_path = given.pop("config", None)
    if file_path is None:
        return given
    from_file = load_config_file(file_path)
    file_fields, file_options = split_settings(from_file, f"--config {file_path}")
    fields, options = split_settings(given, "settings")
    keys = {str(key).replace("-", "_"): str(key) for key in from_file}
    _check_file_values(file_path, keys, {k: v for k, v in file_fields.items() if k not in fields})
    file_options = {k: _file_option_value(file_path, keys.get(k, k), k, v) for k, v in file_options.items()}
    return {**file_fields, **fields, "rule_options": {**file_options, **options}}


def _check_file_values(path: Any, keys: dict[str, str], file_fields: dict[str, Any]) -> None:
    """Check the config file's own values (those no flag overrides) here, where the file is
    known, so that `lr: fast` is reported as the file's key and not as a --lr never passed."""
    for name, value in file_fields.items():
        check = _FIELD_CHECKS.get(name)
        if check is None:
            continue
        try:
            check(value)
        except _BadSetting as bad:
            raise bad.in_file(path, keys.get(name, name)) from None


def _file_option_value(path: Any, key: str, name: str, value: Any) -> Any:
    """A numeric rule option from a config file as a number: YAML reads `1e-3` (no dot) as text,
    and a flag's value would have gone through the same parser."""
    spec = rule_option_specs().get(name)
    if spec is None or spec.parse not in (int, float):
        return value
    kind = "an integer" if spec.parse is int else "a number"
    if isinstance(value, str):
        try:
            return spec.parse(value)
        except ValueError:
            pass
    elif not isinstance(value, bool) and isinstance(value, int if spec.parse is int else (int, float)):
        return value
    raise BioPropError(f"--config {path}: {key}: {value!r} is not {kind}; give {kind}, as {spec.flag} takes "
                       f"(rules {', '.join(spec.rules)})")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _BadSetting(BioPropError):
    """A setting whose value fails its check. The message is worded for the flag; in_file words
    it for a config file's key instead."""

    def __init__(self, name: str, value: Any, problem: str, requirement: str):
        self.name, self.value, self.problem, self.requirement = name, value, problem, requirement
        super().__init__(f"{_flag(name)} {value!r}: {requirement}")

    def in_file(self, path: Any, key: str) -> BioPropError:
        return BioPropError(f"--config {path}: {key}: {self.value!r} {self.problem}; {self.requirement}")


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadSetting(name, value, "is not an integer", f"give an integer >= {minimum}")
    if value < minimum:
        raise _BadSetting(name, value, f"is less than {minimum}", f"give an integer >= {minimum}")
    return value


def _as_float(name: str, value: Any, positive: bool) -> float:
    requirement = "give a finite number" + (" > 0" if positive else "")
    try:
        if isinstance(value, bool):
            raise TypeError("a boolean is not a number")
        number = float(value)
    except (TypeError, ValueError):
        raise _BadSetting(name, value, "is not a number", requirement) from None
    if not math.isfinite(number):
        raise _BadSetting(name, value, "is not finite", requirement)
    if positive and number <= 0:
        raise _BadSetting(name, value, "is not > 0", requirement)
    return number


def _as_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _BadSetting(name, value, "is not a boolean", "give true or false")
    return value


def _as_choice(name: str, value: Any, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _BadSetting(name, value, "is not one of the choices", f"choose one of {', '.join(sorted(choices))}")
    return value


def _as_optional_str(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise _BadSetting(name, value, "is not text", "give a path or name")


def _as_hidden(value: Any) -> list[int]:
    hidden = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(hidden, (list, tuple)):
        raise _BadSetting("hidden", value, "is not a list", "give a list of layer widths, e.g. --hidden 64 64")
    return [_as_int("hidden", n, 1) for n in hidden]


def _as_activation(value: Any) -> str:
    try:
        get_activation(value)
    except BioPropError:
        raise _BadSetting("activation", value, "is not an activation", f"choose one of {', '.join(activation_names())}") from None
    return value


def _as_dataset(value: Any) -> str:
    from .data import dataset_names

    return _as_choice("dataset", value, dataset_names())


#: The check of each setting's value on its own (validate adds the checks across settings).
_FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "rule": lambda v: v if v is None else _as_choice("rule", v, RULES),
    "compare": lambda v: v if v is None else _as_choice("compare", v, RULES),
    "dataset": _as_dataset,
    "data_dir": lambda v: _as_optional_str("data_dir", v),
    "download": lambda v: _as_bool("download", v),
    "hidden": _as_hidden,
    "activation": _as_activation,
    "bias": lambda v: _as_bool("bias", v),
    "input_map": lambda v: _as_choice("input_map", v, INPUT_MAPS),
    "init": lambda v: _as_choice("init", v, ("xavier", "uniform")),
    "init_scale": lambda v: _as_float("init_scale", v, positive=False),
    "loss": lambda v: _as_choice("loss", v, loss_names()),
    "epochs": lambda v: _as_int("epochs", v, 1),
    "batch_size": lambda v: _as_int("batch_size", v, 1),
    "lr": lambda v: _as_float("lr", v, positive=True),
    "seed": lambda v: _as_int("seed", v, 0),
    "dtype": lambda v: _as_choice("dtype", v, DTYPES),
    "device": lambda v: _as_choice("device", v, DEVICES),
    "out": lambda v: _as_optional_str("out", v),
    "resume": lambda v: _as_optional_str("resume", v),
    "overwrite": lambda v: _as_bool("overwrite", v),
    "quiet": lambda v: _as_bool("quiet", v),
    "eval_every": lambda v: _as_int("eval_every", v, 1),
    "diagnostics_every": lambda v: _as_int("diagnostics_every", v, 0),
}


def validate(config: TrainConfig) -> TrainConfig:
    """Check every setting and return the config with canonical types (raises BioPropError)."""
    c = dataclasses.replace(config)
    if c.rule is None:
        raise BioPropError(f"--rule: required; choose one of {', '.join(sorted(RULES))}")
    for name, check in _FIELD_CHECKS.items():
        setattr(c, name, check(getattr(c, name)))
    if c.device == "cuda" and not torch.cuda.is_available():
        raise BioPropError("--device cuda: CUDA is not available here; use --device cpu (or auto)")
    if c.data_dir is not None and c.dataset == "digits":
        raise BioPropError(
            f"--data-dir {c.data_dir}: data set 'digits' is bundled with scikit-learn and reads no files; "
            f"leave out --data-dir, or choose a --dataset that is read from files"
        )
    if not isinstance(c.rule_options, dict):
        raise BioPropError("rule_options: expected a mapping of option: value")
    specs = rule_option_specs()
    accepted = rule_parameters(c.rule)
    for name in c.rule_options:
        if name not in accepted:
            flag = specs[name].flag if name in specs else _flag(name)
            takes = ", ".join(specs[n].flag for n in accepted) or "no options besides --lr and --loss"
            raise BioPropError(f"{flag}: rule {c.rule!r} does not take this option; it takes {takes}")
    c.rule_options = dict(c.rule_options)
    _check_model(c)
    return c


def _check_model(c: TrainConfig) -> None:
    """--model: a built-in name or path/to/file.py:function, and the settings that size it."""
    if not isinstance(c.model, str) or (c.model not in MODEL_NAMES and ":" not in c.model):
        raise BioPropError(f"--model {c.model!r}: choose one of {', '.join(MODEL_NAMES)} or give path/to/file.py:function")
    if c.model == "rnn" and len(c.hidden) != 1:
        raise BioPropError(f"--hidden {' '.join(map(str, c.hidden))}: --model rnn takes one width (its hidden state), "
                           f"e.g. --hidden 64")
    if c.model not in ("mlp", "rnn") and c.hidden != _DEFAULTS.hidden:
        raise BioPropError(f"--hidden {' '.join(map(str, c.hidden))}: --model {c.model} has its own layer widths; "
                           f"--hidden sizes only --model mlp and rnn")


def _check_fits_data(config: TrainConfig, dataset) -> None:
    """Checks that need the data set: a batch larger than the training set would make every
    epoch one full-batch step, silently (not what --batch-size asked for)."""
    n_train = int(dataset.train_y.shape[0])
    if config.batch_size > n_train:
        raise BioPropError(
            f"--batch-size {config.batch_size}: larger than the training set of {config.dataset} "
            f"({n_train} samples); give at most {n_train} (--batch-size {n_train} trains on the whole set each step)"
        )


def _check_shards(config: TrainConfig, n_train: int, processes: int) -> None:
    """Data-parallel: every batch, the epoch's last partial one too, gives each process a row."""
    last = n_train % config.batch_size
    if config.batch_size < processes or 0 < last < processes:
        smallest = config.batch_size if config.batch_size < processes else last
        raise BioPropError(
            f"--batch-size {config.batch_size} with {processes} processes: a batch of {smallest} rows (the training set "
            f"of {n_train} leaves a last batch of {last}) would leave a process without rows; choose a batch size of "
            f"at least {processes} whose remainder on {n_train} samples is 0 or at least {processes}"
        )


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_out(config: TrainConfig) -> str:
    name = config.rule if config.compare is None else f"{config.rule}-vs-{config.compare}"
    return os.path.join("runs", f"{name}-{config.dataset}-seed{config.seed}")


def rule_keywords(config: TrainConfig, rule: str, with_options: bool = True) -> dict[str, Any]:
    """make_rule's keywords for `rule`: lr, loss, the user's options (for the main rule only: a
    --compare twin keeps its own defaults, so --gamma 0.5 never silently breaks a Z-IL twin's
    C3), and the run's seed for a rule that takes one and was not given --rule-seed."""
    accepted = rule_parameters(rule)
    options = {k: v for k, v in config.rule_options.items() if k in accepted} if with_options else {}
    if "seed" in accepted and "seed" not in options:
        options["seed"] = config.seed
    return {"lr": config.lr, "loss": config.loss, **options}


# -- files -----------------------------------------------------------------------------------
def _yaml_text(data: dict) -> str:
    return yaml.safe_dump(json_safe(data), sort_keys=False, default_flow_style=None)


def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, lambda h: h.write(json.dumps(json_safe(data), indent=2) + "\n"))


def _write_metrics(path: Path, records: list[dict]) -> None:
    write_atomic(path, lambda h: h.writelines(json.dumps(json_safe(r)) + "\n" for r in records))


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless --overwrite; check only, creates nothing."""
    if out.exists() and not out.is_dir():
        raise BioPropError(f"--out {out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(path.name != LOCK_NAME for path in out.iterdir()) and not overwrite:
        raise BioPropError(
            f"--out {out}: folder exists and is not empty; pass --overwrite to replace its run files, "
            f"--resume {out} to continue the run, or choose another --out"
        )


def _lock_run_folder(folder: Path, quiet: bool) -> None:
    """Hold `folder`'s run lock until train() returns or raises (bioprop.runlock); a folder that
    does not exist yet is left to the checks that say so."""
    if folder.is_dir():
        hold_run_lock(folder, note=None if quiet else (lambda text: print(text, file=sys.stderr, flush=True)))


def _clear_run_files(out: Path) -> None:
    """--overwrite: remove this module's files only (never the whole folder)."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for stale in out.glob(".*.tmp"):
        if any(stale.name.startswith(f".{name}.") for name in RUN_FILES):
            stale.unlink(missing_ok=True)


# -- the run ---------------------------------------------------------------------------------
@contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on accelerators, restored afterwards. CPU kernels are deterministic
    already for a fixed thread count, and switching the flag costs a second of torch._inductor
    imports, so CPU runs leave it alone (their bit-for-bit repeatability is tested)."""
    if device.type == "cpu":
        yield
        return
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    # cuBLAS needs CUBLAS_WORKSPACE_CONFIG to be deterministic; warn rather than fail without it.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


#: the batch-order seed, kept under its old name for callers of this module
_shuffle_seed = shuffle_seed


def _versions() -> dict[str, str]:
    from . import __version__

    return {"bioprop": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _load_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        what = "folder does not exist" if not run_dir.is_dir() else "no checkpoint.pt in it"
        raise BioPropError(f"--resume {run_dir}: {what}; give the folder of a run started by `bioprop train`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's own reasons ("[Errno 22] Invalid argument", EOFError) say little
        raise BioPropError(_unreadable_checkpoint(run_dir, path, error)) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise BioPropError(f"--resume {run_dir}: checkpoint.pt is not a `bioprop train` checkpoint")
    return checkpoint


def _unreadable_checkpoint(run_dir: Path, path: Path, error: Exception) -> str:
    """Why checkpoint.pt cannot be loaded, and what to do. torch.save writes a zip archive, so a
    file that is not a whole, checksum-valid zip was cut short or damaged; a whole one that torch
    refuses holds objects a `bioprop train` checkpoint never does."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if len(reason) > 120:  # torch's zip reader appends a paragraph of advice to its first sentence
        reason = reason.split(". ")[0]
    settings = f"--config {run_dir / 'config.yaml'} " if (run_dir / "config.yaml").is_file() else ""
    fixes = (f"restore checkpoint.pt from a backup, or start the run again with `bioprop train {settings}--out {run_dir} "
             f"--overwrite` (this replaces its run files)")
    try:
        with zipfile.ZipFile(path) as archive:
            whole = archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        whole = False
    if not whole:
        return (f"--resume {run_dir}: checkpoint.pt in {run_dir} is truncated or corrupt ({path.stat().st_size} bytes, "
                f"not a complete torch.save archive; torch says: {reason}), so the run cannot continue from it. "
                f"To fix: {fixes}")
    return (f"--resume {run_dir}: checkpoint.pt in {run_dir} cannot be loaded ({reason}); it was not written by "
            f"`bioprop train`. To fix: {fixes}")


def _resume_config(given: dict[str, Any], run_dir: Path, checkpoint: dict[str, Any]) -> TrainConfig:
    """The stored config with the given settings applied; only RESUMABLE ones may change."""
    stored_fields, stored_options = split_settings(checkpoint["config"], f"--resume {run_dir}")
    stored = validate(TrainConfig(**{**stored_fields, "rule_options": stored_options}))
    fields, options = split_settings(given, "settings")
    requested = validate(dataclasses.replace(stored, **fields, rule_options={**stored.rule_options, **options}))
    for name in FIELDS:
        if name not in RESUMABLE and getattr(requested, name) != getattr(stored, name):
            shown = getattr(stored, name)
            raise BioPropError(
                f"{_flag(name) if name != 'rule_options' else 'rule options'}: cannot change when resuming "
                f"(the run in {run_dir} used {shown!r}); start a new run with --out instead"
            )
    if requested.out is not None and Path(requested.out).resolve() != run_dir.resolve():
        raise BioPropError(f"--out {requested.out}: differs from --resume {run_dir}; give only --resume")
    return dataclasses.replace(requested, out=str(run_dir), resume=str(run_dir))


@releases_run_locks
def train(config: dict | TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train as configured and return the run's summary (also written to summary.json).

    `config`: a TrainConfig, or a dict of settings (TrainConfig field names; rule options flat
    by flag name or under "rule_options"; "config": a YAML/TOML file the dict overrides).
    `progress`: show a progress bar over batches (only on a terminal, never with quiet).
    Raises TrainingDiverged (a BioPropError) when the loss or the weights become non-finite.
    """
    wall_start = time.perf_counter()
    given = _given_settings(config)
    fields, options = split_settings(given, "settings")
    joined: list[Cluster] = []  # the process group _train joins, left here whatever happens
    try:
        return _train(given, fields, options, progress, wall_start, joined)
    finally:
        for cluster in joined:
            cluster.stop()


def _train(given: dict[str, Any], fields: dict[str, Any], options: dict[str, Any], progress: bool,
           wall_start: float, joined: list[Cluster]) -> dict[str, Any]:
    # the process that writes the run folder and speaks: torchrun's rank 0, or the only one
    main = not Cluster.launched() or int(os.environ.get("RANK", "0")) == 0
    if fields.get("resume") is not None:
        run_dir = Path(os.fspath(fields["resume"]))
        if main:
            _lock_run_folder(run_dir, quiet=bool(fields.get("quiet")))
        checkpoint, stored = _load_run(run_dir)
        config = _resume_config(given, run_dir, {"config": stored} if checkpoint is None else checkpoint)
        done = int(checkpoint["epoch"]) if checkpoint is not None else 0
        if config.epochs < done:
            raise BioPropError(f"--epochs {config.epochs}: the run in {run_dir} has already trained {done} epochs")
    else:
        checkpoint, done = None, 0
        config = validate(TrainConfig(**{**fields, "rule_options": options}))
        if config.out is None:
            config.out = default_out(config)
        _prepare_out(Path(config.out), config.overwrite)
    out = Path(config.out)
    say = (lambda *a: None) if (config.quiet or not main) else (lambda text: print(text, flush=True))
    cluster = None
    if Cluster.launched():  # torchrun started this process as one of several: data-parallel, on the
        cluster = Cluster.start(resolve_device(config.device))  # device of the run (a resumed one's too)
        joined.append(cluster)

    from .data import load_dataset

    dataset = load_dataset(config.dataset, data_dir=config.data_dir, download=config.download)
    say(f"data: {dataset.describe_source()}")
    _check_fits_data(config, dataset)
    if cluster is not None:
        _check_shards(config, int(dataset.train_y.shape[0]), cluster.world_size)
    device = resolve_device(config.device) if cluster is None else cluster.device
    dtype = DTYPES[config.dtype]
    image_shape = _image_shape(config, dataset)
    net = build_model(
        config.model, image_shape, int(dataset.n_classes), hidden=config.hidden, activation=config.activation,
        bias=config.bias, input_map=config.input_map, init=config.init, init_scale=config.init_scale,
        dtype=dtype, device=device, seed=config.seed,
    )
    layout = input_layout(config.model, net)
    train_x = shape_batch(dataset.train_x, layout, image_shape).to(device=device, dtype=dtype).contiguous()
    train_y = dataset.train_y.to(device=device, dtype=torch.long)
    test_x = shape_batch(dataset.test_x, layout, image_shape).to(device=device, dtype=dtype).contiguous()
    test_y = dataset.test_y.to(device=device, dtype=torch.long)
    if not isinstance(net, MLP):
        _check_rules_run(config, net, train_x[:2], train_y[:2])

    learner = Learner(net, make_rule(config.rule, **rule_keywords(config, config.rule)), name=config.rule,
                      cluster=cluster)
    twin = None
    if config.compare is not None:
        twin = Learner(net.clone(), make_rule(config.compare, **rule_keywords(config, config.compare, with_options=False)),
                       name=f"the twin ({config.compare})", cluster=cluster)
    shuffle = shuffle_generator(config.seed)
    records: list[dict[str, Any]] = []
    diagnostics: list[dict[str, Any]] = []
    if checkpoint is not None:
        learner.load_state(checkpoint["learner"])
        if twin is not None:
            twin.load_state(checkpoint["twin"])
        shuffle.set_state(checkpoint["shuffle"])
        records = list(checkpoint["metrics"])
        diagnostics = list(checkpoint.get("diagnostics", []))

    stored_config = {k: v for k, v in config.to_dict().items() if k not in OPERATIONAL}
    resolved = {
        "out": str(out),
        "model": config.model,
        "network": net.describe(),
        "parameters": sum(p.numel() for p in net.parameters_list()),
        "input_layout": layout,
        "image_shape": list(image_shape),
        "sizes": list(net.sizes) if isinstance(net, MLP) else None,
        "device": str(device),
        "processes": 1 if cluster is None else cluster.world_size,
        "rule": learner.rule.options(),
        "compare_rule": twin.rule.options() if twin is not None else None,
        "data": {"n_train": int(dataset.train_y.shape[0]), "n_test": int(dataset.test_y.shape[0]),
                 "n_features": int(dataset.n_features), "n_classes": int(dataset.n_classes),
                 "source": str(getattr(dataset, "source", ""))},
        "versions": _versions(),
    }

    if checkpoint is not None and done == config.epochs:
        if not main:
            return {}
        try:
            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # stopped between the last checkpoint and the summary
            summary = _summary(config, records, out, wall_start, learner, twin)
            _write_json(out / "summary.json", summary)
        say(f"run {out} already finished {done} of {config.epochs} epochs; nothing to do "
            f"(pass a larger --epochs to train further)")
        return summary

    config_text = _yaml_text({**stored_config, "resolved": resolved})
    if cluster is not None:
        cluster.barrier()  # every rank has passed its checks before rank 0 creates anything
    # Everything is checked: only now does the run folder appear.
    resuming = fields.get("resume") is not None  # also a run stopped before its first checkpoint
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _lock_run_folder(out, quiet=config.quiet)
        if not resuming:  # again, under the lock: another run may have written here since the first check
            _prepare_out(out, config.overwrite)
        if not resuming and config.overwrite:
            _clear_run_files(out)
        write_atomic(out / "config.yaml", lambda h: h.write(config_text))

    versus = f" (twin: {config.compare})" if twin is not None else ""
    verb = f"resuming {config.rule}{versus} at epoch {done + 1}" if done else f"training {config.rule}{versus}"
    say(f"{verb} on {config.dataset} ({train_x.shape[0]} train, {test_x.shape[0]} test), "
        f"{net.describe()}, {config.dtype} on {device}, into {out}")

    def measure_diagnostics(epoch: int, step: int, x: Tensor, y: Tensor) -> None:
        if step % config.diagnostics_every == 0:
            diagnostics.extend({"epoch": epoch, "step": step, **r} for r in measure(learner.rule, learner.net, x, y))

    learners = [learner] if twin is None else [learner, twin]
    saved = done  # the epoch checkpoint.pt holds
    try:
        with _deterministic(device):
            for result in train_epochs(
                learners, train_x, train_y, epochs=config.epochs, batch_size=config.batch_size, shuffle=shuffle,
                test=(test_x, test_y), first_epoch=done + 1, eval_every=config.eval_every,
                before_step=measure_diagnostics if config.diagnostics_every else None,
                progress=progress and not config.quiet and main,
            ):
                record = _record(result, learner, twin)
                say(_epoch_line(record, config))
                if result.diverged:
                    if main:
                        _write_curves(out / "curves.png", records, config)
                    raise TrainingDiverged(_divergence_message(result, config, out, saved))
                records.append(record)
                saved = result.epoch
                if not main:
                    continue
                state = {
                    "format": CHECKPOINT_FORMAT,
                    "epoch": result.epoch,
                    "config": json_safe(stored_config),
                    "learner": learner.state(),
                    "twin": twin.state() if twin is not None else None,
                    "shuffle": shuffle.get_state(),
                    "metrics": records,
                    "diagnostics": diagnostics,
                    "versions": json_safe(_versions()),
                }
                write_atomic(out / "checkpoint.pt", lambda h: torch.save(state, h), binary=True)
                write_atomic(out / "model.pt", lambda h: torch.save(learner.net.export_state_dict(), h), binary=True)
                _write_metrics(out / "metrics.jsonl", records)
                write_csv(out / "metrics.csv", [json_safe(r) for r in records])
                if config.diagnostics_every:
                    _write_metrics(out / "diagnostics.jsonl", diagnostics)
    except KeyboardInterrupt:
        if not main:
            raise
        _write_curves(out / "curves.png", records[:saved], config)
        kept = f"epochs 1-{saved} are saved" if saved else "no epoch has finished yet"
        print(f"bioprop train: interrupted during epoch {saved + 1}; {kept} in {out}; continue the run with: "
              f"bioprop train --resume {out}", file=sys.stderr, flush=True)
        raise

    summary = _summary(config, records, out, wall_start, learner, twin)
    if main:
        _write_curves(out / "curves.png", records, config)
        _write_json(out / "summary.json", summary)
    say(_summary_line(summary))
    return summary


@dataclass
class TrainedRun:
    """A run folder loaded back (`load_run`): the trained network and rule, ready to use."""

    net: Network
    rule: LearningRule
    config: TrainConfig
    epoch: int  # epochs trained
    metrics: list[dict[str, Any]]


def load_run(folder: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedRun:
    """The network (with model.pt's weights) and the rule (with its state from checkpoint.pt) of a
    `bioprop train` run folder, rebuilt from its config.yaml, on `device`."""
    folder = Path(folder)
    checkpoint, stored = _load_run(folder)
    if checkpoint is None:
        raise BioPropError(f"load_run({folder}): the run has not finished an epoch yet; resume it with "
                           f"`bioprop train --resume {folder}`")
    try:
        resolved = (yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}).get("resolved") or {}
    except (OSError, yaml.YAMLError) as error:
        raise BioPropError(f"load_run({folder}): cannot read config.yaml ({error})") from None
    if "image_shape" not in resolved or "data" not in resolved:
        raise BioPropError(f"load_run({folder}): config.yaml has no resolved image shape; the run was written by an "
                           "older bioprop: rebuild its network by hand and load checkpoint.pt")
    fields, options = split_settings(stored, f"load_run({folder})")
    config = validate(TrainConfig(**{**fields, "device": "cpu", "rule_options": options}))
    net = build_model(config.model, resolved["image_shape"], int(resolved["data"]["n_classes"]), hidden=config.hidden,
                      activation=config.activation, bias=config.bias, input_map=config.input_map, init=config.init,
                      init_scale=config.init_scale, dtype=DTYPES[config.dtype], device=device, seed=config.seed)
    model_file = folder / "model.pt"
    try:
        weights = torch.load(model_file, map_location=device, weights_only=True)
    except FileNotFoundError:
        weights = None
    except Exception as error:  # truncated or foreign: name the file
        raise BioPropError(f"load_run({folder}): model.pt is truncated or corrupt ({type(error).__name__}); "
                           "checkpoint.pt holds the same weights under ['learner']['net']") from None
    if weights is None:  # runs from before model.pt: the checkpoint has the network too
        net.load_state_dict(checkpoint["learner"]["net"])
    else:
        net.import_state_dict(weights)
    rule = make_rule(config.rule, **rule_keywords(config, config.rule))
    rule.load_state_dict(checkpoint["learner"]["rule"])
    return TrainedRun(net, rule, config, int(checkpoint["epoch"]), list(checkpoint["metrics"]))


def _load_run(run_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(checkpoint or None, the run's stored settings). A run stopped before its first epoch
    ended holds only config.yaml: it resumes from epoch 0 with the settings stored there."""
    if not (run_dir / "checkpoint.pt").is_file() and (run_dir / "config.yaml").is_file():
        try:
            stored = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise BioPropError(f"--resume {run_dir}: cannot read config.yaml ({error})") from None
        if not isinstance(stored, dict) or "rule" not in stored:
            raise BioPropError(f"--resume {run_dir}: config.yaml is not a `bioprop train` run's configuration")
        return None, stored
    checkpoint = _load_checkpoint(run_dir)
    return checkpoint, checkpoint["config"]


def _image_shape(config: TrainConfig, dataset) -> tuple[int, int, int]:
    """The data set's (C, H, W); a data set without one (not images) can only feed an MLP."""
    if dataset.image_shape is not None:
        return tuple(dataset.image_shape)
    if config.model != "mlp":
        raise BioPropError(f"--model {config.model}: data set {config.dataset!r} gives no image shape; use --model mlp")
    return (1, 1, int(dataset.n_features))


def _check_rules_run(config: TrainConfig, net, x: Tensor, y: Tensor) -> None:
    """Before the run folder exists: one step of each rule on a copy of the network and two
    samples, so that a rule not yet ported to this kind of network is refused by name."""
    for flag, name, with_options in (("--rule", config.rule, True), ("--compare", config.compare, False)):
        if name is None:
            continue
        rule = make_rule(name, **rule_keywords(config, name, with_options=with_options))
        try:
            rule.step(net.clone(), x, y)
        except BioPropError as error:
            raise BioPropError(f"{flag} {name} with --model {config.model}: {error}") from None
        except Exception as error:  # a rule that assumes an MLP: say so instead of a traceback
            raise BioPropError(
                f"{flag} {name}: this rule does not run on --model {config.model} ({net.describe()}) yet "
                f"({type(error).__name__}: {error}); train it with --model mlp, or this model with a rule that "
                f"supports it (bp runs on every model)"
            ) from None


def _record(result, learner: Learner, twin: Learner | None) -> dict[str, Any]:
    """One line of metrics.jsonl from the loop's EpochResult."""
    record: dict[str, Any] = {"epoch": result.epoch, **result.metrics[0].as_dict()}
    if twin is not None:
        record.update({f"compare_{k}": v for k, v in result.metrics[1].as_dict().items()})
        record["max_abs_diff"], record["max_rel_diff"] = weight_difference(learner.net, twin.net)
    record["seconds"] = result.seconds
    return record


def _divergence_message(result, config: TrainConfig, out: Path, saved: int) -> str:
    kept = (f"{out} keeps epochs 1-{saved} (metrics, and checkpoint.pt at epoch {saved})" if saved
            else f"no epoch finished, so {out} holds only config.yaml")
    return (f"epoch {result.epoch}: {result.divergence}; training stopped and {kept}. The learning rate is "
            f"probably too large: start a new run with a smaller --lr (this one used --lr {config.lr:g}; "
            f"try --lr {config.lr / 10:g})")


def _write_curves(path: Path, records: list[dict[str, Any]], config: TrainConfig) -> None:
    """curves.png: loss and accuracy against epoch, train (solid) and test (dashed, where
    evaluated), the rule and, with --compare, its twin beside it. matplotlib is imported here
    only, and draws with the Agg canvas (no display, no pyplot state)."""
    if not records:
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))  # fixed margins: a layout engine triples the drawing time
    FigureCanvasAgg(figure)
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    runs = [("", config.rule, "tab:blue")]
    if config.compare is not None:
        runs.append(("compare_", f"{config.compare} (twin)", "tab:orange"))
    epochs = [r["epoch"] for r in records]
    for prefix, label, colour in runs:
        for axis, what in ((loss_axis, "loss"), (accuracy_axis, "acc")):
            axis.plot(epochs, [r[f"{prefix}train_{what}"] for r in records], color=colour, marker=".",
                      label=f"{label} train")
            tested = [(r["epoch"], r[f"{prefix}test_{what}"]) for r in records if r[f"{prefix}test_{what}"] is not None]
            if tested:
                axis.plot(*zip(*tested), color=colour, marker="o", linestyle="--", label=f"{label} test")
    loss_axis.set(xlabel="epoch", ylabel=f"loss ({config.loss})", title="loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for axis, corner in ((loss_axis, "upper right"), (accuracy_axis, "lower right")):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc=corner)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.85, wspace=0.25)
    figure.suptitle(f"{config.rule}{' vs ' + config.compare if config.compare else ''}, --model {config.model}, "
                    f"{config.dataset}, seed {config.seed}", fontsize=10)
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=100), binary=True)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _epoch_line(r: dict[str, Any], config: TrainConfig) -> str:
    line = (f"epoch {r['epoch']}/{config.epochs}  {config.rule}: train loss {r['train_loss']:.4g} acc {r['train_acc']:.4f}"
            f"  test loss {_fmt(r['test_loss'], '.4g')} acc {_fmt(r['test_acc'], '.4f')}")
    if "max_abs_diff" in r:
        line += (f" | {config.compare}: train loss {r['compare_train_loss']:.4g} acc {r['compare_train_acc']:.4f}"
                 f"  test loss {_fmt(r['compare_test_loss'], '.4g')} acc {_fmt(r['compare_test_acc'], '.4f')}"
                 f" | max|dW| {r['max_abs_diff']:.3g} (rel {r['max_rel_diff']:.3g})")
    return line + f"  [{r['seconds']:.1f}s]"


def _best(records: list[dict], key: str) -> tuple[float | None, int | None]:
    scored = [(r[key], r["epoch"]) for r in records if r.get(key) is not None]
    if not scored:
        return None, None
    best = max(score for score, _ in scored)
    return best, next(epoch for score, epoch in scored if score == best)


def _summary(config: TrainConfig, records: list[dict], out: Path, wall_start: float,
             learner: Learner, twin: Learner | None) -> dict[str, Any]:
    final = records[-1]
    best_acc, best_epoch = _best(records, "test_acc")
    summary: dict[str, Any] = {
        "run_dir": str(out),
        "rule": config.rule,
        "dataset": config.dataset,
        "epochs": final["epoch"],
        "final": {k: final[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
        "best_test_acc": best_acc,
        "best_epoch": best_epoch,
        "train_seconds": sum(r["seconds"] for r in records),
        "wall_seconds": time.perf_counter() - wall_start,
    }
    if twin is not None:
        twin_best, twin_best_epoch = _best(records, "compare_test_acc")
        max_abs, max_rel = weight_difference(learner.net, twin.net)
        summary["compare"] = {
            "rule": config.compare,
            "final": {k: final[f"compare_{k}"] for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
            "best_test_acc": twin_best,
            "best_epoch": twin_best_epoch,
            "max_abs_diff": max_abs,
            "max_rel_diff": max_rel,
            "test_acc_equal": final["test_acc"] == final["compare_test_acc"],
        }
    return summary


def _summary_line(summary: dict[str, Any]) -> str:
    final = summary["final"]
    line = (f"done: {summary['rule']} test acc {final['test_acc']:.4f} (best {summary['best_test_acc']:.4f} "
            f"at epoch {summary['best_epoch']})")
    if "compare" in summary:
        c = summary["compare"]
        line += (f"; {c['rule']} test acc {c['final']['test_acc']:.4f}; max weight difference "
                 f"{c['max_abs_diff']:.3g} (rel {c['max_rel_diff']:.3g}); test accuracies "
                 f"{'equal' if c['test_acc_equal'] else 'differ'}")
    return line + f"; {summary['wall_seconds']:.1f}s -> {summary['run_dir']}"


__all__ = [
    "TrainConfig",
    "TrainedRun",
    "load_run",
    "TrainingDiverged",
    "configure_parser",
    "evaluate",
    "load_config_file",
    "rule_option_specs",
    "run",
    "train",
    "validate",
    "weight_difference",
]
