"""`bioprop reproduce NAME`: the papers' experiments, each with a quick default and --full.

Every experiment writes its tables (CSV, JSON, markdown with a provenance line) and figures
(PNG) into results/NAME by default (--out DIR to choose) and shows its progress on stderr
(--quiet: none); see outputs.py."""
from __future__ import annotations

import importlib

#: experiment -> (module, one-line help)
EXPERIMENTS = {
    "song2020-ablation": ("bioprop.experiments.song2020_ablation", "Z-IL with one condition broken at a time (Fig. 3)"),
    "song2020-dynamics": ("bioprop.experiments.song2020_dynamics", "error nodes over inference steps for IL, Z-IL, Fa-Z-IL (Fig. 2)"),
    "song2020-detection": ("bioprop.experiments.fazil_detection", "Fa-Z-IL detection success against t_d (Table 3)"),
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


def configure_parser(parser) -> None:
    experiments = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name, (module_name, help_text) in EXPERIMENTS.items():
        sub = experiments.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.configure_parser(sub)
        sub.set_defaults(_experiment=module.run, _command=f"reproduce {name}")


def run(args) -> int:
    return args._experiment(args)
