"""The papers' experiments at tiny sizes: they run, and their numbers say what the paper says.

Oracle for the ablation: BP trained from the same weights on the same batches; only the
intact Z-IL may show zero divergence.
"""
import math

from bioprop.cli import main
from bioprop.experiments.song2020_ablation import ablation_table


def test_ablation_only_intact_zil_has_zero_divergence():
    table = ablation_table("digits", depths=(1,), width=8, epochs=1, lr=0.1, batch=50, seeds=(0,), progress=False)
    intact = [r for r in table if r["condition"] == "none"]
    broken = [r for r in table if r["condition"] != "none"]
    assert len(intact) == 1 and len(broken) == 7 + 7 + 5
    assert intact[0]["final_weight_divergence"] < 1e-10 and intact[0]["test_error_divergence_pts"] == 0
    for row in broken:
        divergence = row["final_weight_divergence"]
        assert math.isinf(divergence) or divergence > 1e-6, row


def test_reproduce_command_writes_its_tables(tmp_path, capsys):
    out = tmp_path / "ablation"
    assert main(["reproduce", "song2020-ablation", "--epochs", "1", "--depths", "1", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"ablation.csv", "ablation.json", "ablation.md", "ablation.png"}
    assert "Z-IL (C1-C3 hold)" in capsys.readouterr().out


def test_dynamics_shows_the_error_front(tmp_path):
    from bioprop.experiments.song2020_dynamics import dynamics, plot

    curves = dynamics(hidden=(8, 8), batch=4)
    for label in ("Z-IL (full dynamics)", "Fa-Z-IL (t_d=4)"):
        updates = {r["layer"]: r["t"] for r in curves[label] if r["updated"]}
        assert updates == {3: 0, 2: 1, 1: 2}  # layer L-k learns at t = k
        silent = [r for r in curves[label] if r["layer"] < 3 and r["t"] < 3 - r["layer"]]
        assert silent and all(r["error_norm"] == 0 for r in silent)
    assert {r["t"] for r in curves["IL (T=20, gamma=0.1)"] if r["updated"]} == {20}
    plot(curves, tmp_path / "dynamics.png")
    assert (tmp_path / "dynamics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_docs_quote_the_dynamics_table_the_command_prints():
    # docs/results.md quotes `bioprop reproduce song2020-dynamics` (defaults): its table rows must be
    # the rows the command's summary prints now (IL's layer 1 at 0.0133 against BP's delta 0.0453, ...)
    from pathlib import Path

    from bioprop.experiments import outputs
    from bioprop.experiments.song2020_dynamics import COLUMNS, dynamics, summary_rows

    docs = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    section = docs[docs.index("## One training step, inside"):docs.index("## Training on digits")]
    quoted = [line for line in section.splitlines() if line.startswith(("| IL ", "| Z-IL ", "| Fa-Z-IL "))]
    assert len(quoted) == 12
    assert "made by `bioprop reproduce song2020-dynamics` (quick default)" in section
    printed = outputs.markdown_table(summary_rows(dynamics()), COLUMNS).splitlines()
    assert quoted == printed[2:]
