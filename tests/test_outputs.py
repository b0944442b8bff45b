"""The output helpers every reproduce command shares (bioprop.experiments.outputs). Closed forms."""
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
