"""Shared pieces of the Fan & Mysore 2024 reproduction commands (`bioprop reproduce fan2024-*`).

The paper (Fan & Mysore, "Contribute to balance, wire in accordance: emergence of
backpropagation from a simple, bio-plausible neuroplasticity rule", arXiv 2405.14139) reaches
us as its abstract and the model in SPEC.md section 2. The rule is `rules/credit.py`; its
network and the three processes as plain functions are `rate_network.py`. The commands build
on those functions and never re-implement firing, credit or plasticity.

- fan2024-communities: the all-to-all simulation of the paper's Fig. 4 and its community
  structure against the learning rate (`fan2024_communities.py`);
- fan2024-predictions: the paper's testable predictions as analyses (`fan2024_predictions.py`);
- fan2024-dynamics: firing, credit and weights over time for one training pair, in the spirit
  of the paper's Fig. 2A (`fan2024_dynamics.py`).

docs/credit.md records every choice the paper leaves open and the measured results.
"""
from __future__ import annotations

import io
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import BioPropError
from ..files import write_atomic, write_csv


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def output_folder(out: str | None, name: str) -> Path:
    """The --out folder (default results/NAME), created now: call once the arguments are checked."""
    folder = Path(out) if out else Path("results") / name
    if folder.exists() and not folder.is_dir():
        raise BioPropError(f"--out {folder}: exists and is not a folder; choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def spread(values: Sequence[float]) -> dict[str, float]:
    """mean, std (sample; 0 for one value), min and max of the finite values; NaN if none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    return {
        "mean": statistics.fmean(finite),
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "min": min(finite),
        "max": max(finite),
    }


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A GitHub markdown table; columns: (key, header, format spec; "" formats with str())."""
    def cell(value, spec):
        if value is None:
            return "-"
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return format(value, spec) if spec else str(value)

    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(key), spec) for key, _, spec in columns) + " |")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """JSON-safe: tuples to lists, non-finite floats to None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_tables(out: Path, stem: str, title: str, rows: list[dict], settings: dict, markdown: str,
                 notes: str = "", extra: dict | None = None) -> None:
    """stem.csv (rows), stem.json (settings, rows, `extra`), stem.md (title, settings, table, notes)."""
    write_csv(out / f"{stem}.csv", rows)
    payload = json.dumps(_plain({"settings": settings, "rows": rows, **(extra or {})}), indent=2) + "\n"
    write_atomic(out / f"{stem}.json", lambda handle: handle.write(payload))
    shown = ", ".join(f"{key}={value}" for key, value in settings.items())
    text = f"## {title}\n\nSettings: {shown}\n\n{markdown}\n" + (f"\n{notes}\n" if notes else "")
    write_atomic(out / f"{stem}.md", lambda handle: handle.write(text))


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    pyplot().close(figure)
    write_atomic(path, lambda handle: handle.write(buffer.getvalue()), binary=True)


def check_number(flag: str, value: float, minimum: float = 0.0, inclusive: bool = True, maximum: float | None = None) -> float:
    """A finite number >= minimum (> minimum if not inclusive) and < maximum, or a BioPropError naming the flag."""
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
    if ok and maximum is not None:
        ok = value < maximum
    if not ok:
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        if maximum is not None:
            bound += f" and < {maximum:g}"
        raise BioPropError(f"{flag} {value!r}: give a finite number {bound}")
    return float(value)


def check_count(flag: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BioPropError(f"{flag} {value!r}: give an integer >= {minimum}")
    return value
