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


# -- figures -----------------------------------------------------------------------------------------
def captured_figure(monkeypatch):
    """Replace save_figure by a recorder; returns the list the figures land in."""
    from bioprop.experiments import outputs

    figures = []
    monkeypatch.setattr(outputs, "save_figure", lambda figure, path: figures.append(figure))
    return figures


def width_row(activation, ratio, mean, std):
    return {"activation": activation, "ratio": ratio, "acc_mean": mean, "acc_std": std, "h_condition": 10.0,
            "h_condition_init": 20.0, "h_rank_fraction": 0.8, "h_rank_fraction_init": 0.7}


def test_width_figure_zooms_to_the_rows_that_learn(monkeypatch, tmp_path):
    from bioprop.experiments import liao2024_width as width

    rows = [width_row("identity", 1.0, 0.90, 0.01), width_row("identity", 5.0, 0.93, 0.01),
            width_row("relu", 1.0, 0.10, 0.0), width_row("relu", 5.0, 0.102, 0.0),
            {**width_row("BP (reference)", None, 0.95, 0.005), "h_condition": None}]
    # closed form: [0.89 - 0.1 * 0.065, 0.955 + 0.1 * 0.065]: the learning rows' mean ± std, a 10% margin
    low, high = width.accuracy_window(rows, chance=0.1)
    assert abs(low - 0.8835) < 1e-12 and abs(high - 0.9615) < 1e-12
    figures = captured_figure(monkeypatch)
    width.plot(rows, tmp_path / "width.png", "64-32-10", chance=0.1)
    accuracy = figures[0].axes[0]
    assert accuracy.get_ylim() == (low, high)
    labels = [text.get_text() for text in accuracy.get_legend().get_texts()]
    assert any("g = relu" in label and "below the window: 0.100-0.102" in label for label in labels)
    # negative control: with nothing above chance the axis is left to matplotlib
    assert width.accuracy_window([width_row("relu", 1.0, 0.10, 0.0)], chance=0.1) is None


def test_lr_grid_figure_says_what_its_crosses_mean(monkeypatch, tmp_path):
    from bioprop.experiments import liao2024_lr_grid as grid

    rows = [{"eta_v": v, "eta_vbar": 1.0, "eta_w": 0.05, "acc_mean": acc, "acc_std": 0.0, "n": 3, "seeds": 3, "diverged": d}
            for v, acc, d in ((0.1, 0.8, 0), (1.0, 0.1, 2))]
    figures = captured_figure(monkeypatch)
    grid.plot(rows, "eta_vbar", tmp_path / "lr_grid.png", "grid")
    texts = [t.get_text() for t in figures[0].texts] + [t.get_text() for axis in figures[0].axes for t in axis.texts]
    assert "0.100\n× 2/3" in texts and "0.800" in texts
    assert any(text.startswith("× k/3: k of the 3 seeds diverged") for text in texts)
