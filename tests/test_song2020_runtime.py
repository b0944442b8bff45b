"""`bioprop reproduce song2020-runtime` (Song et al. 2020, Table 4) at a tiny setting: the files and
their columns, the paper's figures, and "not supported" rows. No timed assertions: times are only
checked to be positive numbers."""
from __future__ import annotations

import csv
import json
import math

import pytest

from bioprop.cli import main
from bioprop.experiments import song2020_runtime

TINY = ["--batches", "2", "--repeats", "1", "--block-time", "0.0005", "--time-budget", "0.1", "--threads", "1"]
COLUMNS = {"device", "network", "batch", "rule", "paper_rule", "supported", "ms", "ms_min", "ms_max", "paper_ms",
           "ratio_to_torch", "ratio_to_bp", "paper_ratio", "paired_ratio_to_torch", "blocks", "steps_per_block", "note"}
#: Song et al. 2020, Table 4 (ms per weight update), typed in from the paper
PAPER_CPU = {"BP": 3.1, "IL": 19.2, "Z-IL": 3.6, "Fa-Z-IL": 3.6}
PAPER_GPU = {"BP": 3.7, "IL": 56.3, "Z-IL": 4.1, "Fa-Z-IL": 4.2}


def _rows(out):
    with open(out / "runtime.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_command_writes_its_files_with_the_papers_figures(tmp_path, capsys):
    out = tmp_path / "runtime"
    assert main(["reproduce", "song2020-runtime", "--networks", "mlp", *TINY, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"runtime.csv", "runtime.json", "runtime.md", "runtime.png"}
    rows = _rows(out)
    assert set(rows[0]) == COLUMNS
    assert [r["rule"] for r in rows] == ["BP (torch.optim.SGD)", "bp", "il (T=20)", "zil", "zil (full dynamics)", "fazil"]
    assert [r["paper_rule"] for r in rows] == ["BP", "BP", "IL", "Z-IL", "Z-IL", "Fa-Z-IL"]
    for row in rows:
        assert row["device"] == "cpu" and row["batch"] == "2" and row["supported"] == "True"
        assert float(row["paper_ms"]) == PAPER_CPU[row["paper_rule"]]
        assert float(row["paper_ratio"]) == pytest.approx(PAPER_CPU[row["paper_rule"]] / 3.1)
        assert math.isfinite(float(row["ms"])) and float(row["ms"]) > 0
        assert float(row["ratio_to_torch"]) > 0 and float(row["ratio_to_bp"]) > 0
    bp = next(r for r in rows if r["rule"] == "bp")
    assert float(bp["ratio_to_bp"]) == 1.0
    data = json.loads((out / "runtime.json").read_text())
    assert data["paper_ms"]["cpu"] == PAPER_CPU and data["paper_ms"]["cuda"] == PAPER_GPU
    assert data["settings"]["threads"] == 1
    markdown = (out / "runtime.md").read_text()
    assert "| network | batch | rule | paper |" in markdown and "19.2" in markdown and "6.19" in markdown
    captured = capsys.readouterr()
    printed = captured.out
    assert "made by `bioprop reproduce song2020-runtime" in printed and "torch " in printed and "threads 1" in printed
    assert f"wrote {out}/: " in captured.err and "runtime.csv" in captured.err  # the experiments' report line


def test_paper_ratios_on_both_devices():
    assert song2020_runtime.PAPER_MS == {"cpu": PAPER_CPU, "cuda": PAPER_GPU}
    assert song2020_runtime.paper_ratio("cpu", "IL") == pytest.approx(19.2 / 3.1)
    assert song2020_runtime.paper_ratio("cuda", "Fa-Z-IL") == pytest.approx(4.2 / 3.7)


def test_a_rule_that_fails_on_a_network_gives_a_not_supported_row(tmp_path, monkeypatch):
    # the four-synapse circuit runs on Linear-only networks: its step fails on LeNet-5
    monkeypatch.setattr(song2020_runtime, "CASES", {"bp": ("bp", {}, "BP"), "circuit": ("circuit", {}, None)})
    out = tmp_path / "runtime"
    assert main(["reproduce", "song2020-runtime", "--networks", "lenet5", *TINY, "--out", str(out)]) == 0
    rows = {r["rule"]: r for r in _rows(out)}
    assert set(rows) == {"BP (torch.optim.SGD)", "bp", "circuit"}
    circuit = rows["circuit"]
    assert circuit["supported"] == "False" and circuit["note"].startswith("not supported: ")
    assert circuit["ms"] == "" and circuit["paper_ms"] == "" and circuit["ratio_to_bp"] == ""
    assert rows["bp"]["supported"] == "True"
    assert "not supported" in (out / "runtime.md").read_text()


def test_bad_flags_are_refused_before_the_folder_exists(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["reproduce", "song2020-runtime", "--batches", "0", "--out", str(out)]) == 2
    assert "--batches" in capsys.readouterr().err and not out.exists()
