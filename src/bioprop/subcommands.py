"""Subcommands whose module is imported only when that subcommand is chosen.

A subcommand is registered by its module's name and a one-line help. Its module provides
`configure_parser(parser)` (adds its flags) and `run(args) -> int`. `bioprop --help` and
`bioprop reproduce --help` list the one-line helps and import nothing; `bioprop train ...` imports
bioprop.train alone, not every experiment (each of which may pull in matplotlib, scipy, igraph).
"""
from __future__ import annotations

import argparse
import importlib
from types import ModuleType
from typing import Callable, Mapping

#: name -> (module name, one-line help)
CommandTable = Mapping[str, tuple[str, str]]


class LazyCommandParser(argparse.ArgumentParser):
    """The parser of one subcommand: it imports `module` and lets it add its flags the first
    time it parses arguments or formats its help (argparse calls `parse_known_args` on the
    chosen subcommand's parser only). `run_key` names the attribute that receives module.run;
    `after(parser, module)` runs once the module has configured the parser."""

    def __init__(self, *args, module: str | None = None, run_key: str = "_run",
                 after: Callable[[argparse.ArgumentParser, ModuleType], None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._module_name = module
        self._run_key = run_key
        self._after = after

    def configure(self) -> None:
        if self._module_name is None:
            return
        module = importlib.import_module(self._module_name)
        self._module_name = None
        module.configure_parser(self)
        self.set_defaults(**{self._run_key: module.run})
        if self._after is not None:
            self._after(self, module)

    def parse_known_args(self, args=None, namespace=None):
        self.configure()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.configure()
        return super().format_usage()

    def format_help(self) -> str:
        self.configure()
        return super().format_help()


def add_commands(parser: argparse.ArgumentParser, commands: CommandTable, dest: str, metavar: str,
                 run_key: str = "_run", required: bool = False,
                 after: Callable[[argparse.ArgumentParser, ModuleType], None] | None = None) -> dict[str, LazyCommandParser]:
    """Register `commands` as subcommands of `parser`, each configured on first use."""
    subparsers = parser.add_subparsers(dest=dest, metavar=metavar, required=required, parser_class=LazyCommandParser)
    return {
        name: subparsers.add_parser(name, help=help_text, description=help_text, module=module_name,
                                    run_key=run_key, after=after)
        for name, (module_name, help_text) in commands.items()
    }
