"""`bioprop reproduce NAME`: the papers' experiments, each with a quick default and --full."""
from __future__ import annotations

import importlib

#: experiment -> (module, one-line help)
EXPERIMENTS = {
    "song2020-ablation": ("bioprop.experiments.song2020_ablation", "Z-IL with one condition broken at a time (Fig. 3)"),
    "song2020-dynamics": ("bioprop.experiments.song2020_dynamics", "error nodes over inference steps for IL, Z-IL, Fa-Z-IL (Fig. 2)"),
    "song2020-detection": ("bioprop.experiments.fazil_detection", "Fa-Z-IL detection success against t_d (Table 3)"),
}


def configure_parser(parser) -> None:
    experiments = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name, (module_name, help_text) in EXPERIMENTS.items():
        sub = experiments.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.configure_parser(sub)
        sub.set_defaults(_experiment=module.run)


def run(args) -> int:
    return args._experiment(args)
