"""`bioprop rules [NAME]`: the learning rules, and what each rule's options mean.

Where the meanings live: each rule class declares `option_help`, a dict {keyword: one-line
meaning} for the keywords its __init__ adds or whose meaning it changes, beside `paper` (where
the rule comes from). A subclass inherits its bases' entries (fa, kp, sign and dfa share
FeedbackRule's; every rule shares LearningRule's lr and loss), so each meaning is written once.
Defaults are read from the __init__ signature, never restated. `bioprop rules`, the rule-option
flags of `bioprop train --help` and tests/test_cli.py (which fails when an option has no help
text, or a help text names no option) all read it through `option_help` below.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from .errors import BioPropError
from .rules import RULES, make_rule


@dataclass(frozen=True)
class RuleOptionDoc:
    """One keyword of one rule: its default and what it means."""

    name: str
    default: Any
    help: str


def option_help(rule: str) -> dict[str, str]:
    """{keyword: meaning} of `rule`, merged along its class's MRO (the subclass's entry wins)."""
    merged: dict[str, str] = {}
    for klass in reversed(RULES[rule].__mro__):
        merged.update(vars(klass).get("option_help", {}))
    return merged


def rule_keywords(rule: str) -> dict[str, Any]:
    """{keyword: default} of make_rule(rule, ...), in the order of the signature."""
    parameters = inspect.signature(RULES[rule].__init__).parameters
    return {
        name: p.default
        for name, p in parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def option_docs(rule: str) -> list[RuleOptionDoc]:
    """Every keyword of `rule` with its default and meaning ("" where none is declared)."""
    meanings = option_help(rule)
    return [RuleOptionDoc(name, default, meanings.get(name, "")) for name, default in rule_keywords(rule).items()]


def flag_help(option: str, rules: list[str] | tuple[str, ...]) -> str:
    """The help of a train flag shared by `rules`: the meaning (per rule where meanings differ),
    then each rule's default."""
    meanings: dict[str, list[str]] = {}
    for rule in rules:
        meanings.setdefault(option_help(rule).get(option, ""), []).append(rule)
    if len(meanings) == 1:
        text = next(iter(meanings))
    else:
        text = "; ".join(f"{', '.join(owners)}: {meaning}" for meaning, owners in meanings.items())
    defaults = ", ".join(f"{rule} {_shown(rule_keywords(rule)[option])}" for rule in rules)
    return f"{text} (default: {defaults})"


def relation(rule: str) -> str:
    """'the oracle', 'exact', 'exact at its defaults' (options can break it) or 'approximate'."""
    cls = RULES[rule]
    if rule == "bp":
        return "the oracle"
    exact = bool(make_rule(rule).claims_exactness)
    conditional = isinstance(inspect.getattr_static(cls, "claims_exactness"), property)
    if exact:
        return "exact at its defaults (some options break it)" if conditional else "exact"
    return "approximate"


def listing() -> str:
    rows = [(name, RULES[name].paper or "-", relation(name)) for name in sorted(RULES)]
    width = [max(len(row[i]) for row in rows + [("rule", "paper", "relation to BP")]) for i in range(2)]
    lines = [f"{'rule':<{width[0]}}  {'paper':<{width[1]}}  relation to BP"]
    lines += [f"{name:<{width[0]}}  {paper:<{width[1]}}  {rel}" for name, paper, rel in rows]
    lines.append("")
    lines.append("`bioprop rules NAME` shows a rule's options, their defaults and what each means.")
    return "\n".join(lines)


def describe(rule: str) -> str:
    from .train import rule_option_specs  # the train flags' names (a few clash with run settings)

    if rule not in RULES:
        raise BioPropError(f"rules {rule!r}: not a rule; choose one of {', '.join(sorted(RULES))}")
    specs = rule_option_specs()
    docs = option_docs(rule)
    lines = [f"{rule}: {RULES[rule].paper or '-'}; {relation(rule)}", "",
             "options (keywords of make_rule; train flag; default; meaning):"]
    for doc in docs:
        flag = specs[doc.name].flag if doc.name in specs else f"--{doc.name}"
        lines.append(f"  {doc.name:<22} {flag:<24} {_shown(doc.default):<10} {doc.help}")
    lines += ["", "bioprop train sets lr and loss from --lr and --loss (their own defaults); "
              "bioprop verify takes the others as --option NAME=VALUE."]
    return "\n".join(lines)


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def configure_parser(parser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help=f"a rule ({', '.join(sorted(RULES))}): show its options, defaults and their meaning")


def run(args) -> int:
    print(describe(args.name) if args.name else listing())
    return 0


__all__ = ["RuleOptionDoc", "describe", "flag_help", "listing", "option_docs", "option_help", "relation", "rule_keywords"]
