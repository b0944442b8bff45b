"""`bioprop reproduce NAME`: the papers' experiments, each with a quick default and --full.

Each experiment's module is imported only when it is chosen. Every experiment takes --device;
`args.device` reaches its `run` as a torch.device. A module lists the device types it places its
tensors on in `DEVICES` (default: ("cpu",)); asking for another is an error, never a silent
CPU run.

Every experiment writes its tables (CSV, JSON, markdown with a provenance line) and figures
(PNG) into results/NAME by default (--out DIR to choose) and shows its progress on stderr
(--quiet: none); see outputs.py."""
from __future__ import annotations

import argparse

from ..devices import add_device_flag, resolve_device
from ..subcommands import add_commands

#: experiment -> (module, one-line help)
EXPERIMENTS = {
    "song2020-ablation": ("bioprop.experiments.song2020_ablation", "Z-IL with one condition broken at a time (Fig. 3)"),
    "song2020-dynamics": ("bioprop.experiments.song2020_dynamics", "error nodes over inference steps for IL, Z-IL, Fa-Z-IL (Fig. 2)"),
    "song2020-detection": ("bioprop.experiments.fazil_detection", "Fa-Z-IL detection success against t_d (Table 3)"),
    "song2020-runtime": ("bioprop.experiments.song2020_runtime", "ms per weight update of BP, IL, Z-IL, Fa-Z-IL vs the paper (Table 4)"),
    "liao2024-accuracy": ("bioprop.experiments.liao2024_accuracy", "four-synapse circuit vs BP, FA, KP, sign, DFA: test accuracy"),
    "liao2024-width": ("bioprop.experiments.liao2024_width", "circuit accuracy and H's conditioning against downstream width (Fig. 2)"),
    "liao2024-spectra": ("bioprop.experiments.liao2024_spectra", "H = V̄V̄ᵀ and WWᵀ before and after training, spectra (Fig. 3)"),
    "liao2024-ablation": ("bioprop.experiments.liao2024_ablation", "which of V̄, W̄, V are plastic, against a linear floor (Fig. 4)"),
    "liao2024-lr-grid": ("bioprop.experiments.liao2024_lr_grid", "test accuracy over a grid of eta_V against eta_V̄ or eta_W (Fig. 5)"),
    "liao2024-theorem1": ("bioprop.experiments.liao2024_theorem1", "Theorem 1's error, alignments and H's spectrum over training"),
    "fan2024-communities": ("bioprop.experiments.fan2024_communities", "all-to-all credit-rule network: Leiden communities against r (Fig. 4)"),
    "fan2024-predictions": ("bioprop.experiments.fan2024_predictions", "retrograde signal vs balance; dw/g against x/w (the paper's predictions)"),
    "fan2024-dynamics": ("bioprop.experiments.fan2024_dynamics", "firing, credit and weights over time for one training pair (Fig. 2A)"),
}


def _add_device(parser, module) -> None:
    try:
        add_device_flag(parser, "cpu, cuda or auto (cuda when available and the experiment runs there)")
    except argparse.ArgumentError:  # the experiment declares its own --device
        pass
    # provenance names the command as typed ("reproduce NAME"), also for a module that is a
    # top-level command too (fazil-detection)
    parser.set_defaults(_devices=tuple(getattr(module, "DEVICES", ("cpu",))), _command=parser.prog.split(" ", 1)[-1])


def configure_parser(parser) -> None:
    add_commands(parser, EXPERIMENTS, dest="experiment", metavar="EXPERIMENT", run_key="_experiment",
                 required=True, after=_add_device)


def run(args) -> int:
    args.device = resolve_device(args.device, args._devices)
    return args._experiment(args)
