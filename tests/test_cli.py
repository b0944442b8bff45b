"""The command line and the README tell the truth, and start without the heavy imports.

- Every ```python block of README.md and docs/*.md runs as written, each in a fresh namespace in
  a temporary working folder. A block that is not meant to run starts with the line
  `# not run: <reason>` (use sparingly; none does today).
- Every `bioprop ...` command in a ```bash block of README.md names a real subcommand and its
  flags parse (argparse only; nothing runs).
- examples/run.yaml trains.
- `bioprop --version` and `bioprop --help` import neither torch nor any plotting, graph or
  learning library (sys.modules in a fresh interpreter), and `train --help` no experiment.
- Every option of every rule has a help text, and every help text names a real option.
- --device on verify and on every reproduce experiment: it parses, and cuda where CUDA is
  missing gives train's message.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import bioprop
from bioprop import cli
from bioprop.devices import NO_CUDA, resolve_device
from bioprop.errors import BioPropError
from bioprop.experiments.reproduce import EXPERIMENTS
from bioprop.rules import RULES
from bioprop.rules_listing import flag_help, option_help, rule_keywords

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
NOT_RUN = "# not run:"
HEAVY = ("torch", "numpy", "matplotlib", "sklearn", "scipy", "igraph", "leidenalg")


# -- documentation -------------------------------------------------------------------------------
def fenced_blocks(path: Path, language: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```language block of a Markdown file."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if current is None and stripped == f"```{language}":
            current, start = [], number + 1
        elif current is not None and stripped.startswith("```"):
            blocks.append((start, "\n".join(current) + "\n"))
            current = None
        elif current is not None:
            current.append(line)
    assert current is None, f"{path}: unclosed ``` block from line {start}"
    return blocks


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_BLOCKS = [
    pytest.param(path, line, code, id=f"{path.name}:{line}")
    for path in DOCS for line, code in fenced_blocks(path, "python")
]


def test_the_docs_have_python_blocks_to_check():
    assert len(PYTHON_BLOCKS) >= 2  # the README's API snippets: the extraction found them


@pytest.mark.parametrize("path, line, code", PYTHON_BLOCKS)
def test_python_snippet_runs_as_written(path, line, code, tmp_path, monkeypatch):
    first = code.lstrip().splitlines()[0] if code.strip() else ""
    if first.startswith(NOT_RUN):
        reason = first[len(NOT_RUN):].strip()
        assert reason, f"{path.name}:{line}: `{NOT_RUN}` needs a reason"
        pytest.skip(reason)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{path.name}:{line}", "exec"), {"__name__": "__snippet__"})


def bioprop_commands(path: Path) -> list[tuple[int, list[str]]]:
    """(line, argv after `bioprop`) of every bioprop command in the file's ```bash blocks."""
    commands = []
    for start, code in fenced_blocks(path, "bash"):
        for offset, line in enumerate(code.splitlines()):
            for part in re.split(r"&&|\|\||;|\|", line):
                words = shlex.split(part, comments=True)
                if words and words[0] == "bioprop":
                    commands.append((start + offset, words[1:]))
    return commands


README_COMMANDS = bioprop_commands(ROOT / "README.md")


def test_readme_shows_every_subcommand():
    shown = {argv[0] for _, argv in README_COMMANDS}
    assert set(cli.COMMANDS) <= shown, f"not in the README's commands: {set(cli.COMMANDS) - shown}"


@pytest.mark.parametrize("line, argv", README_COMMANDS, ids=[f"README:{n}" for n, _ in README_COMMANDS])
def test_readme_command_parses(line, argv):
    assert argv and argv[0] in cli.COMMANDS, f"README.md:{line}: `bioprop {' '.join(argv)}`: no such subcommand"
    try:
        args = cli.build_parser().parse_args(argv)
    except SystemExit as stop:
        pytest.fail(f"README.md:{line}: `bioprop {' '.join(argv)}` does not parse (exit {stop.code})")
    assert callable(args._run)


def test_example_config_trains(tmp_path):
    """examples/run.yaml as the README shows it, with fewer, larger steps: Z-IL and its BP twin end
    with equal test accuracy and weights within round-off (the config's own claim)."""
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(ROOT / "examples" / "run.yaml"), "--epochs", "1", "--batch-size", "128",
                     "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rule"] == "zil" and summary["dataset"] == "digits" and summary["epochs"] == 1
    assert summary["compare"]["rule"] == "bp" and summary["compare"]["test_acc_equal"]
    assert summary["compare"]["max_rel_diff"] < 1e-12
    assert summary["final"]["test_acc"] > 0.3  # it learnt something in 11 steps (chance: 0.1)


# -- start-up cost -------------------------------------------------------------------------------
def imported_after(argv: list[str]) -> set[str]:
    """Top-level module names in sys.modules after `bioprop ARGV` in a fresh interpreter."""
    script = (
        "import sys\nfrom bioprop.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("MODULES "))
    return set(line.split()[1:])


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["reproduce", "--help"]])
def test_version_and_help_import_nothing_heavy(argv):
    modules = imported_after(argv)
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"bioprop {' '.join(argv)} imported {heavy[:5]}"
    assert not any(m.startswith("bioprop.experiments.") and m != "bioprop.experiments.reproduce" for m in modules)


def test_train_help_imports_no_experiment_and_no_plotting():
    modules = imported_after(["train", "--help"])
    assert "bioprop.train" in modules  # the check sees imports at all
    assert not any(m.startswith("bioprop.experiments") for m in modules)
    assert not {"matplotlib", "sklearn", "scipy", "igraph", "leidenalg"} & {m.split(".")[0] for m in modules}


def test_public_names_load_on_first_use():
    script = (
        "import types, bioprop, bioprop.models\n"
        "assert callable(bioprop.wrap) and not isinstance(bioprop.wrap, types.ModuleType)\n"
        "from bioprop import *\n"
        "assert MLP is bioprop.MLP and make_rule is bioprop.make_rule and ElmanRNN is bioprop.ElmanRNN\n"
        "assert callable(bioprop.diagnostics.measure) and bioprop.StepResult.__name__ == 'StepResult'\n"
        "assert set(bioprop.__all__) <= set(dir(bioprop))\n"
        "try:\n    bioprop.no_such_name\nexcept AttributeError:\n    print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# -- rules and their options ---------------------------------------------------------------------
@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_option_has_a_help_text(rule):
    keywords = rule_keywords(rule)
    meanings = option_help(rule)
    undocumented = [name for name in keywords if not meanings.get(name, "").strip()]
    assert not undocumented, f"rule {rule!r}: add option_help entries for {undocumented}"
    stale = sorted(set(meanings) - set(keywords))
    assert not stale, f"rule {rule!r}: option_help names options its __init__ does not take: {stale}"
    assert RULES[rule].paper, f"rule {rule!r}: set its `paper`"


def test_the_option_check_fails_on_an_undocumented_option():
    class Documented(RULES["fa"]):
        def __init__(self, lr=0.01, loss="mse", feedback_scale=1.0, seed=0, undocumented=1):
            super().__init__(lr, loss, feedback_scale, seed)

    RULES["_probe"] = Documented
    try:
        with pytest.raises(AssertionError, match="undocumented"):
            test_every_rule_option_has_a_help_text("_probe")
    finally:
        del RULES["_probe"]


def test_train_help_gives_each_option_its_meaning_and_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "condition C3" in text and "il 0.1" in text and "zil 1.0" in text  # --gamma
    assert "rules: " not in text  # the old bare list of rule names is gone
    assert flag_help("t_d", ["fazil"]).endswith("(default: fazil 4)")


def test_verify_documents_every_flag():
    from bioprop import verify

    parser = argparse.ArgumentParser()
    verify.configure_parser(parser)
    bare = [action.option_strings for action in parser._actions if not action.help]
    assert not bare, f"verify flags without help: {bare}"


def test_rules_lists_every_rule_and_shows_one(capsys):
    assert cli.main(["rules"]) == 0
    listing = capsys.readouterr().out
    for name, cls in RULES.items():
        assert re.search(rf"^{name}\s+{re.escape(cls.paper)}", listing, re.M), name
    assert re.search(r"^il\s.*approximate$", listing, re.M) and re.search(r"^fazil\s.*exact$", listing, re.M)
    assert cli.main(["rules", "kp"]) == 0
    shown = capsys.readouterr().out
    for name, default in rule_keywords("kp").items():
        assert re.search(rf"^  {name}\s.*{re.escape(repr(default) if isinstance(default, str) else str(default))}\s",
                         shown, re.M), name
    assert option_help("kp")["decay"] in shown and option_help("kp")["feedback_scale"] in shown  # inherited
    assert cli.main(["rules", "nope"]) == 2


# -- --device --------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", "cuda", "auto"])
def test_device_parses_on_verify_and_every_experiment(device):
    parser = cli.build_parser()
    assert parser.parse_args(["verify", "--rule", "zil", "--device", device]).device == device
    for name in EXPERIMENTS:
        assert cli.build_parser().parse_args(["reproduce", name, "--device", device]).device == device, name
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["verify", "--rule", "zil", "--device", "tpu"])


def test_cuda_missing_is_the_same_error_everywhere(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    commands = [["train", "--rule", "bp", "--out", str(tmp_path / "x")], ["verify", "--rule", "zil"]]
    commands += [["reproduce", name] for name in EXPERIMENTS]
    for argv in commands:
        assert cli.main([*argv, "--device", "cuda"]) == 2, argv
        assert capsys.readouterr().err.strip().endswith(f"error: {NO_CUDA}"), argv
    assert not (tmp_path / "x").exists()


def test_device_resolution(monkeypatch):
    assert resolve_device("auto", ("cpu",)) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", ("cpu", "cuda")) == torch.device("cuda")
    assert resolve_device("auto", ("cpu",)) == torch.device("cpu")  # an experiment that runs on the CPU only
    with pytest.raises(BioPropError, match="cpu only"):
        resolve_device("cuda", ("cpu",))


def test_verify_runs_with_device_auto(capsys):
    assert cli.main(["verify", "--rule", "zil", "--sizes", "5", "4", "3", "--batch", "4", "--device", "auto", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exact"] and report["setup"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


# -- packaging ------------------------------------------------------------------------------------
def test_license_is_an_spdx_string_without_deprecation_warnings():
    setuptools = pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert not [w for w in caught if "license" in str(w.message).lower()]
    assert dist.metadata.license_expression == "MIT"
    import tomllib

    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    minimum = next(int(r.split(">=")[1].split(".")[0]) for r in requires if r.startswith("setuptools>="))
    assert minimum >= 77  # the first setuptools that reads an SPDX `license` string (PEP 639)
    assert int(setuptools.__version__.split(".")[0]) >= minimum
