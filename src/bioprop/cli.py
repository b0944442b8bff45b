"""The `bioprop` command. Each subcommand lives in its own module, which provides
`configure_parser(parser)` and `run(args) -> int` (the exit status); a module is imported only
when its subcommand is chosen (bioprop.subcommands), so `bioprop --version` and `bioprop --help`
start without torch."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import BioPropError
from .subcommands import add_commands

#: subcommand -> (module, one-line help)
COMMANDS = {
    "train": ("bioprop.train", "train and evaluate a rule on a data set"),
    "verify": ("bioprop.verify", "compare a rule's weight updates with autograd BP, layer by layer"),
    "rules": ("bioprop.rules_listing", "list the learning rules, or show one rule's options and defaults"),
    "fazil-detection": ("bioprop.experiments.fazil_detection", "Fa-Z-IL's detection success rate against t_d (paper Table 3)"),
    "benchmark": ("bioprop.benchmark", "time one training step of each rule against plain PyTorch (MLP, LeNet-5, RNN)"),
    "reproduce": ("bioprop.experiments.reproduce", "rerun a paper's experiment (quick default; --full for the paper's setup)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The `bioprop` parser; a subcommand's flags are added when that subcommand is parsed."""
    parser = argparse.ArgumentParser(prog="bioprop", description="Biologically plausible learning circuits that compute backpropagation.")
    parser.add_argument("--version", action="version", version=f"bioprop {__version__}")
    add_commands(parser, COMMANDS, dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except BioPropError as error:
        print(f"bioprop {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"bioprop {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bioprop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
