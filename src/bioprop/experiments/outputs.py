"""What every `bioprop reproduce` command shares around its outputs.

A command checks its arguments first (`check_number`, `check_count`: a BioPropError naming the
flag), creates its `--out` folder only then (`output_folder`), and writes every table and figure
atomically through bioprop.files, so that a bad argument or a crash never leaves a half-written
file behind:

- `write_tables`: one table as stem.csv (the rows), stem.json (settings, rows and extras; strict
  JSON, non-finite numbers as null) and stem.md (title, settings, the markdown table, notes);
- `save_figure`: a matplotlib figure as a PNG (Agg backend, no display needed; `pyplot`).
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
from ..files import json_safe, write_atomic, write_csv


def say(text: str) -> None:
    """Progress for the person running the command, on stderr (stdout carries the tables)."""
    print(text, file=sys.stderr, flush=True)


# -- arguments -----------------------------------------------------------------------------------
def flag_settings(args, quick: dict, full: dict) -> dict[str, Any]:
    """QUICK (FULL with --full) with every setting given as a flag (not None) in its place."""
    settings = dict(full if args.full else quick)
    for key in quick:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = list(value) if isinstance(value, list) else value
    return settings


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
    """An integer >= minimum, or a BioPropError naming the flag."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BioPropError(f"{flag} {value!r}: give an integer >= {minimum}")
    return value


def output_folder(out: str | None, name: str) -> Path:
    """The --out folder (default results/NAME), created now: call once the arguments are checked
    and the data are loaded."""
    folder = Path(out) if out else Path("results") / name
    if folder.exists() and not folder.is_dir():
        raise BioPropError(f"--out {folder}: exists and is not a folder; choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- tables ----------------------------------------------------------------------------------------
def spread(values: Sequence[float]) -> dict[str, float]:
    """mean, std (sample; 0 for one value), min and max of the finite values, and n, how many
    there are; the four statistics are NaN when none is finite."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "mean": statistics.fmean(finite),
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "min": min(finite),
        "max": max(finite),
        "n": len(finite),
    }


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A GitHub markdown table; columns: (key, header, format spec; "" formats with str()).
    A missing or None value shows as "-", a non-finite float as nan/inf."""
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


def write_strict_json(path: Path, data: Any) -> None:
    """Strict JSON (non-finite numbers as null, tuples as lists; see bioprop.files.json_safe), atomically."""
    text = json.dumps(json_safe(data), indent=2) + "\n"
    write_atomic(Path(path), lambda handle: handle.write(text))


def write_tables(out: Path, stem: str, title: str, rows: list[dict], settings: dict, markdown: str,
                 notes: str = "", extra: dict | None = None) -> None:
    """stem.csv (rows), stem.json (settings, rows and `extra`), stem.md (title, settings, table, notes)."""
    write_csv(out / f"{stem}.csv", rows)
    write_strict_json(out / f"{stem}.json", {"settings": settings, "rows": rows, **(extra or {})})
    shown = ", ".join(f"{key}={value}" for key, value in settings.items())
    text = f"## {title}\n\nSettings: {shown}\n\n{markdown}\n" + (f"\n{notes}\n" if notes else "")
    write_atomic(out / f"{stem}.md", lambda handle: handle.write(text))


# -- figures ---------------------------------------------------------------------------------------
def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> None:
    """The figure as a PNG at 110 dpi, written atomically; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    pyplot().close(figure)
    write_atomic(Path(path), lambda handle: handle.write(buffer.getvalue()), binary=True)
