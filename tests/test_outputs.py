"""The output helpers every reproduce command shares (bioprop.experiments.outputs). Closed forms."""
import io
import json
import math

import pytest

from bioprop.errors import BioPropError
from bioprop.experiments import outputs


def test_spread_counts_only_finite_values():
    assert outputs.spread([1.0, 3.0, math.nan]) == {"mean": 2.0, "std": math.sqrt(2.0), "min": 1.0, "max": 3.0, "n": 2}
    assert outputs.spread([0.5]) == {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5, "n": 1}
    empty = outputs.spread([math.inf])
    assert empty["n"] == 0 and all(math.isnan(empty[key]) for key in ("mean", "std", "min", "max"))


def test_write_tables_writes_strict_json_csv_and_markdown(tmp_path):
    rows = [{"r": 0.1, "q": math.nan, "label": "a"}, {"r": 1.0, "q": 0.25, "label": None}]
    markdown = outputs.markdown_table(rows, [("r", "r", "g"), ("q", "Q", ".2f"), ("label", "label", "")])
    assert markdown.splitlines() == ["| r | Q | label |", "|---|---|---|", "| 0.1 | nan | a |", "| 1 | 0.25 | - |"]
    outputs.write_tables(tmp_path, "table", "Title", rows, {"seeds": (0, 1)}, markdown, notes="a note", extra={"best": math.inf})

    def refuse(constant):
        raise AssertionError(f"{constant} is not strict JSON")

    data = json.loads((tmp_path / "table.json").read_text(), parse_constant=refuse)
    assert data == {"settings": {"seeds": [0, 1]}, "rows": [{"r": 0.1, "q": None, "label": "a"}, {"r": 1.0, "q": 0.25, "label": None}],
                    "best": None}
    assert (tmp_path / "table.csv").read_text().splitlines()[0] == "r,q,label"
    assert (tmp_path / "table.md").read_text() == f"## Title\n\nSettings: seeds=(0, 1)\n\n{markdown}\n\na note\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv", "table.json", "table.md"]  # no temporary files left


@pytest.mark.parametrize("check,message", [
    (lambda: outputs.check_number("--lr", 0.0, 0.0, inclusive=False), "--lr 0.0: give a finite number > 0"),
    (lambda: outputs.check_number("--prune", 1.0, 0.0, maximum=1.0), "--prune 1.0: give a finite number >= 0 and < 1"),
    (lambda: outputs.check_count("--epochs", True), "--epochs True: give an integer >= 1"),
])
def test_checks_name_the_flag(check, message):
    with pytest.raises(BioPropError, match=message.replace("(", r"\(")):
        check()


# -- one layout for every experiment ---------------------------------------------------------------
import csv
import sys

from bioprop import __version__
from bioprop.cli import main
from bioprop.experiments.reproduce import EXPERIMENTS

#: experiment -> (command words at its smallest setting, {table stem: columns it must have}, figures)
SMALLEST = {
    "song2020-ablation": (["reproduce", "song2020-ablation", "--epochs", "1", "--depths", "1", "--width", "4", "--batch", "400"],
                          {"ablation": {"hidden_layers", "condition", "setting", "test_error_divergence_pts",
                                        "final_weight_divergence", "final_test_error_pct"}}, {"ablation.png"}),
    "song2020-dynamics": (["reproduce", "song2020-dynamics", "--hidden", "4", "4", "--batch", "4"],
                          {"summary": {"rule", "layer", "updated_at", "error_at_update", "error_final"}}, {"dynamics.png"}),
    "song2020-runtime": (["reproduce", "song2020-runtime", "--networks", "mlp", "--batches", "2", "--repeats", "1",
                          "--block-time", "0.0005", "--time-budget", "0.1", "--threads", "1"],
                         {"runtime": {"network", "batch", "rule", "ms", "paper_ms", "ratio_to_bp", "paper_ratio"}}, {"runtime.png"}),
    "song2020-detection": (["reproduce", "song2020-detection", "--t-d", "1", "4", "--pairs", "4", "--hidden", "4"],
                           {"detection": {"t_d", "success_rate", "spurious", "paper_success_rate"}}, {"detection.png"}),
    "liao2024-accuracy": (["reproduce", "liao2024-accuracy", "--dataset", "digits", "--rules", "bp", "circuit", "--hidden", "6",
                           "--epochs", "1", "--seeds", "0", "--batch", "300"],
                          {"accuracy": {"dataset", "rule", "acc_mean", "acc_std", "diverged"}}, {"accuracy.png"}),
    "liao2024-width": (["reproduce", "liao2024-width", "--hidden", "6", "--epochs", "1", "--seeds", "0", "--batch", "300",
                        "--ratios", "1", "--activations", "identity"],
                       {"width": {"activation", "ratio", "acc_mean", "h_condition"}}, {"width.png"}),
    "liao2024-spectra": (["reproduce", "liao2024-spectra", "--hidden", "6", "6", "--epochs", "1", "--batch", "300"],
                         {"spectra": {"layer", "h_rank", "h_condition", "wwt_rank"}}, {"spectra.png", "heatmaps.png"}),
    "liao2024-ablation": (["reproduce", "liao2024-ablation", "--hidden", "6", "--epochs", "1", "--seeds", "0", "--batch", "300"],
                          {"ablation": {"variant", "plastic", "acc_mean", "diverged"}}, {"ablation.png"}),
    "liao2024-lr-grid": (["reproduce", "liao2024-lr-grid", "--hidden", "6", "--epochs", "1", "--seeds", "0", "--batch", "300",
                          "--eta-v", "0.1", "--against-values", "1"],
                         {"lr_grid": {"eta_v", "eta_vbar", "eta_w", "acc_mean", "diverged"}}, {"lr_grid.png"}),
    "liao2024-theorem1": (["reproduce", "liao2024-theorem1", "--hidden", "6", "--epochs", "1", "--batch", "300", "--every", "2",
                           "--rules", "fa"],
                          {"theorem1": {"step", "layer", "theorem1_error", "cos_update"}}, {"theorem1.png", "alignment.png"}),
    "fan2024-communities": (["reproduce", "fan2024-communities", "--n", "20", "--iterations", "20", "--prune", "0.01",
                             "--seeds", "0", "--lrs", "0", "0.1"],
                            {"communities": {"lr", "q_mean", "share_mean", "q_shuffled"}}, {"communities.png", "heatmaps.png"}),
    "fan2024-predictions": (["reproduce", "fan2024-predictions", "--hidden", "6", "--epochs", "1", "--pairs", "2", "--bins", "2"],
                            {"signal": {"state", "bin", "amplitude_median"}, "ratio": {"case", "slope", "r2"}},
                            {"signal.png", "ratio.png"}),
    "fan2024-dynamics": (["reproduce", "fan2024-dynamics", "--plasticity-steps", "3"],
                         {"dynamics": {"t", "phase", "loss", "weight_distance"}}, {"dynamics.png"}),
    "fazil-detection": (["fazil-detection", "--t-d", "2", "--pairs", "3", "--hidden", "4"],
                        {"detection": {"t_d", "success_rate", "strict_success_rate", "max_weight_distance_to_bp"}},
                        {"detection.png"}),
}
#: where an experiment's files go without --out (fazil-detection is song2020-detection's experiment)
FOLDER = {"fazil-detection": "song2020-detection"}


def test_every_experiment_is_covered():
    assert set(SMALLEST) == set(EXPERIMENTS) | {"fazil-detection"}


@pytest.mark.parametrize("experiment", sorted(SMALLEST))
def test_experiment_writes_its_tables_and_figures_into_results(experiment, tmp_path, monkeypatch, capsys):
    # closed form of the layout: results/<experiment>/ holds stem.csv, .json, .md per table and the figures, nothing else
    words, tables, figures = SMALLEST[experiment]
    monkeypatch.chdir(tmp_path)
    assert main([*words, "--quiet"]) == 0
    folder = tmp_path / "results" / FOLDER.get(experiment, experiment)
    expected = {f"{stem}.{ext}" for stem in tables for ext in ("csv", "json", "md")} | figures
    present = {p.name for p in folder.iterdir()}
    assert expected <= present and not [name for name in present if name.startswith(".")]  # no temporary files left
    for stem, columns in tables.items():
        with open(folder / f"{stem}.csv", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
        assert columns <= set(reader.fieldnames) and rows
        markdown = (folder / f"{stem}.md").read_text()
        command = " ".join(["bioprop", *words[:2]]) if words[0] == "reproduce" else "bioprop fazil-detection"
        assert markdown.rstrip().splitlines()[-1].startswith(f"made by `{command} ")
        assert markdown.rstrip().endswith(f", bioprop {__version__}")
        assert json.loads((folder / f"{stem}.json").read_text())["provenance"] == markdown.rstrip().splitlines()[-1]
    for figure in figures:
        assert (folder / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    assert f"wrote results/{FOLDER.get(experiment, experiment)}/" in captured.err  # says where
    assert "[1/" not in captured.err  # --quiet: no progress


def test_provenance_names_the_command_and_its_flags():
    from bioprop.cli import build_parser

    parser = build_parser()
    quick = parser.parse_args(["reproduce", "liao2024-theorem1", "--out", "x", "--quiet"])
    assert outputs.provenance(quick) == f"made by `bioprop reproduce liao2024-theorem1` (quick default), bioprop {__version__}"
    full = parser.parse_args(["reproduce", "liao2024-width", "--full"])
    assert outputs.provenance(full) == f"made by `bioprop reproduce liao2024-width --full` (--full), bioprop {__version__}"
    flags = parser.parse_args(["reproduce", "liao2024-lr-grid", "--against", "lr", "--seeds", "0", "1"])
    assert outputs.provenance(flags) == f"made by `bioprop reproduce liao2024-lr-grid --seeds 0 1 --against lr`, bioprop {__version__}"
    top = parser.parse_args(["fazil-detection", "--seeds", "0", "1", "2"])
    assert outputs.provenance(top) == f"made by `bioprop fazil-detection --seeds 0 1 2`, bioprop {__version__}"
    via_reproduce = parser.parse_args(["reproduce", "song2020-detection"])
    assert outputs.provenance(via_reproduce).startswith("made by `bioprop reproduce song2020-detection` (quick default)")


# -- progress ----------------------------------------------------------------------------------------
def test_progress_prints_one_line_per_unit_when_not_a_terminal_and_nothing_when_quiet(capsys):
    outputs.set_quiet(False)
    with outputs.Progress(2, "runs") as progress:
        progress.done("first")
        progress.done("second")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("  (")[0] for line in lines] == ["  [1/2] first", "  [2/2] second"]
    outputs.set_quiet(True)
    try:
        with outputs.Progress(2, "runs") as progress:
            progress.done("first")
        outputs.say("hidden")
    finally:
        outputs.set_quiet(False)
    assert capsys.readouterr().err == ""


def test_progress_is_a_tqdm_bar_on_a_terminal(monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    outputs.set_quiet(False)
    with outputs.Progress(3, "runs") as progress:
        assert progress.bar is not None
        progress.done("one")
    assert "1/3" in terminal.getvalue() and "[1/3] one" not in terminal.getvalue()
