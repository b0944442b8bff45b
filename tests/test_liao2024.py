"""The six Liao et al. 2024 reproduction commands at tiny settings (digits, 1 epoch, tiny widths).

Each runs through bioprop.cli.main, writes its files, and its numbers have the shape and range
they must have (accuracies in [0, 1], one row per variant or per layer and measurement).
These are smoke tests of the harness, not of the circuit's maths (tests/test_circuit.py).
"""
import csv
import json

import pytest

from bioprop.cli import main
from bioprop.experiments import liao2024

TINY = ["--epochs", "1", "--seeds", "0", "--batch", "100"]
PNG = b"\x89PNG\r\n\x1a\n"


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def is_png(path):
    return path.read_bytes()[:8] == PNG


def test_accuracy_compares_every_rule(tmp_path, capsys):
    out = tmp_path / "accuracy"
    assert main(["reproduce", "liao2024-accuracy", "--dataset", "digits", "--hidden", "8", *TINY, "--seeds", "0", "1",
                 "--out", str(out)]) == 0
    table = rows(out / "accuracy.csv")
    assert [r["rule"] for r in table] == ["bp", "fa", "kp", "sign", "dfa", "circuit"]
    assert all(0 <= float(r["acc_min"]) <= float(r["acc_mean"]) <= float(r["acc_max"]) <= 1 and r["n"] == "2" for r in table)
    runs = json.loads((out / "accuracy.json").read_text())["runs"]
    assert len(runs) == 12 and all(len(r["curve"]) == 1 for r in runs)
    assert is_png(out / "accuracy.png") and "| digits | circuit |" in capsys.readouterr().out


def test_accuracy_runs_are_seeded():
    data = liao2024.load_dataset("digits")
    first = liao2024.train_run(data, "circuit", [8], 3, 1, 100, 0.05)[2].final
    again = liao2024.train_run(data, "circuit", [8], 3, 1, 100, 0.05)[2].final
    assert first == again


def test_width_sweeps_ratio_and_activation(tmp_path):
    out = tmp_path / "width"
    assert main(["reproduce", "liao2024-width", "--hidden", "6", *TINY, "--ratios", "1", "2", "--activations", "identity", "tanh",
                 "--out", str(out)]) == 0
    table = rows(out / "width.csv")
    assert [(r["activation"], r["ratio"]) for r in table] == [
        ("identity", "1.0"), ("identity", "2.0"), ("tanh", "1.0"), ("tanh", "2.0"), ("BP (reference)", "")]
    assert [r["downstream_widths"] for r in table[:2]] == ["6", "12"]
    assert all(0 <= float(r["acc_mean"]) <= 1 for r in table)
    assert float(table[1]["h_condition_init"]) < float(table[0]["h_condition_init"])  # a wider V̄ conditions H better
    assert is_png(out / "width.png")


def test_spectra_has_one_row_per_hidden_level(tmp_path):
    out = tmp_path / "spectra"
    assert main(["reproduce", "liao2024-spectra", "--hidden", "6", "6", "6", *TINY, "--out", str(out)]) == 0
    table = rows(out / "spectra.csv")
    assert [int(r["layer"]) for r in table] == [1, 2, 3]
    assert all(0 < float(r["h_rank"]) <= 6 + 1e-9 and 0 < float(r["wwt_rank_init"]) <= 6 + 1e-9 for r in table)
    assert is_png(out / "heatmaps.png") and is_png(out / "spectra.png")


def test_ablation_has_eight_subsets_and_the_linear_floor(tmp_path):
    out = tmp_path / "ablation"
    assert main(["reproduce", "liao2024-ablation", "--hidden", "6", *TINY, "--out", str(out)]) == 0
    table = rows(out / "ablation.csv")
    assert len(table) == 8 + 1 and table[-1]["variant"] == "linear network (SGD)"
    assert {r["plastic"] for r in table[:-1]} == {
        "W", "W,Vbar", "W,Wbar", "W,V", "W,Vbar,Wbar", "W,Vbar,V", "W,Wbar,V", "W,Vbar,Wbar,V"}
    assert all(0 <= float(r["acc_mean"]) <= 1 for r in table)
    assert is_png(out / "ablation.png")


def test_lr_grid_names_the_best_cell(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["reproduce", "liao2024-lr-grid", "--hidden", "6", "6", "6", *TINY, "--eta-v", "0.01", "0.1",
                 "--against-values", "0.1", "0.3", "--out", str(out)]) == 0
    table = rows(out / "lr_grid.csv")
    assert [(float(r["eta_v"]), float(r["eta_vbar"])) for r in table] == [(0.01, 0.1), (0.01, 0.3), (0.1, 0.1), (0.1, 0.3)]
    assert "Best cell: eta_V = " in capsys.readouterr().out
    assert "smallest of the three rates there" in (out / "lr_grid.md").read_text()
    assert is_png(out / "lr_grid.png")


def test_theorem1_has_one_row_per_layer_per_measurement(tmp_path):
    out = tmp_path / "theorem1"
    assert main(["reproduce", "liao2024-theorem1", "--hidden", "6", "6", *TINY, "--every", "5", "--out", str(out)]) == 0
    table = rows(out / "theorem1.csv")
    steps = sorted({int(r["step"]) for r in table})
    assert steps == list(range(0, 14, 5))  # 1347 digits / batch 100 = 14 steps
    assert len(table) == len(steps) * 3 and [int(r["layer"]) for r in table[:3]] == [1, 2, 3]
    assert all(float(r["theorem1_error"]) >= 0 for r in table if r["layer"] != "3")
    alignment = rows(out / "alignment.csv")
    assert {r["rule"] for r in alignment} == {"circuit", "fa", "kp", "sign"}
    assert is_png(out / "theorem1.png") and is_png(out / "alignment.png")


def test_missing_data_set_fails_before_writing(tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["reproduce", "liao2024-ablation", "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"), *TINY,
                 "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "--download" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--epochs", "0"], ["--lr", "-1"], ["--hidden", "0"]])
def test_bad_settings_fail_clearly(tmp_path, flags, capsys):
    assert main(["reproduce", "liao2024-width", *flags, "--out", str(tmp_path / "x")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_unknown_rule_fails_before_training_or_writing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["reproduce", "liao2024-accuracy", "--dataset", "digits", "--rules", "bp", "nope", *TINY, "--out", str(out)]) == 2
    assert "rule='nope' is not known" in capsys.readouterr().err and not out.exists()
