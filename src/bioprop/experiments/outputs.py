"""What every `bioprop reproduce` command shares around its outputs.

A command checks its arguments first (`check_number`, `check_count`: a BioPropError naming the
flag), creates its `--out` folder only then (`output_folder`), and writes every table and figure
atomically through bioprop.files, so that a bad argument or a crash never leaves a half-written
file behind:

- `write_tables`: one table as stem.csv (the rows), stem.json (settings, rows and extras; strict
  JSON, non-finite numbers as null) and stem.md (title, settings, the markdown table, notes,
  and the provenance line: which command and bioprop version made it);
- `save_figure`: a matplotlib figure as a PNG (Agg backend, no display needed; `pyplot`).

One layout for every experiment (every `bioprop reproduce` subcommand and `bioprop
fazil-detection`): its tables and figures go into one folder, `results/<experiment>/` by
default, `--out DIR` to choose (`add_output_arguments`). `start(args, name)` creates it and
returns an `Output`, which writes each file atomically, stamps the provenance line into every
markdown table and finally says where everything went (`Output.report`).

Progress of long work goes to stderr (stdout carries the tables): `Progress` is a tqdm bar when
stderr is a terminal and one line per finished unit otherwise (a log file still shows how far a
run got); `--quiet` silences both, and `say`.
"""
from __future__ import annotations

import io
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import BioPropError
from ..files import json_safe, write_atomic, write_csv

#: --quiet of the command now running: no progress bars or lines, no `say`
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = bool(quiet)


def say(text: str) -> None:
    """Progress for the person running the command, on stderr (stdout carries the tables)."""
    if not _quiet:
        print(text, file=sys.stderr, flush=True)


class Progress:
    """Progress over `total` units of long work (runs, seeds, variants), on stderr.

    A tqdm bar when stderr is a terminal; otherwise one line per finished unit,
    "  [k/total] label  (seconds)"; nothing with --quiet. Use as a context manager and call
    `done(label)` when a unit has finished."""

    def __init__(self, total: int, description: str):
        self.total, self.count = total, 0
        self.last = time.perf_counter()
        self.bar = None
        if not _quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=description, file=sys.stderr, unit="run", dynamic_ncols=True)

    def done(self, label: str) -> None:
        self.count += 1
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update(1)
        elif not _quiet:
            print(f"  [{self.count}/{self.total}] {label}  ({now - self.last:.1f}s)", file=sys.stderr, flush=True)
        self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- where the files go, and who made them -------------------------------------------------------
#: flags that choose where output goes or what is printed, not what is computed
_NOT_IN_PROVENANCE = {"out", "quiet", "data_dir", "download", "help"}


def add_output_arguments(parser, name: str, command: str | None = None) -> None:
    """--out DIR (default results/NAME) and --quiet; remembers the parser and the command
    ("reproduce NAME" unless given) for the provenance line."""
    parser.add_argument("--out", default=None, metavar="DIR", help=f"output folder (default results/{name})")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(_parser=parser, _command=command or f"reproduce {name}")


def given_flags(args) -> list[str]:
    """The flags of `args` that differ from their parser's defaults, as command-line words
    (--out, --quiet, --data-dir and --download left out: they do not change the numbers)."""
    parser = getattr(args, "_parser", None)
    if parser is None:
        return []
    words = []
    for action in parser._actions:
        if not action.option_strings or action.dest in _NOT_IN_PROVENANCE or action.dest.startswith("_"):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default or str(value) == str(action.default):  # e.g. --device: "cpu" resolved to a torch.device
            continue
        flag = max(action.option_strings, key=len)
        if value is True and action.nargs == 0:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words.append(" ".join([flag, *map(str, value)]))
        else:
            words.append(f"{flag} {value}")
    return words


def provenance(args) -> str:
    """"made by `bioprop COMMAND [FLAGS]` (quick default), bioprop VERSION": the line every
    markdown table ends with, and the docs quote under each table and figure."""
    from .. import __version__

    command = getattr(args, "_command", None) or getattr(args, "command", "?")
    flags = given_flags(args)
    shown = " ".join(["bioprop", command, *flags])
    kind = " (quick default)" if not flags else (" (--full)" if flags == ["--full"] else "")
    return f"made by `{shown}`{kind}, bioprop {__version__}"


@dataclass
class Output:
    """One experiment's output folder: every file written atomically, every markdown table
    stamped with the provenance line, and `report` says where they went."""

    folder: Path
    provenance: str
    written: list[str] = field(default_factory=list)

    def tables(self, stem: str, title: str, rows: list[dict], settings: dict, markdown: str,
               notes: str = "", extra: dict | None = None) -> None:
        write_tables(self.folder, stem, title, rows, settings, markdown, notes, extra, provenance=self.provenance)
        self.written += [f"{stem}.csv", f"{stem}.json", f"{stem}.md"]

    def csv(self, name: str, rows: list[dict]) -> None:
        write_csv(self.folder / name, rows)
        self.written.append(name)

    def json(self, name: str, data: Any) -> None:
        write_strict_json(self.folder / name, data)
        self.written.append(name)

    def markdown(self, name: str, text: str) -> None:
        """A markdown file of the caller's own layout, with the provenance line appended."""
        body = text.rstrip("\n") + f"\n\n{self.provenance}\n"
        write_atomic(self.folder / name, lambda handle: handle.write(body))
        self.written.append(name)

    def figure(self, figure, name: str) -> None:
        save_figure(figure, self.folder / name)
        self.written.append(name)

    def path(self, name: str) -> Path:
        """Where a file written by other code goes (listed in the report)."""
        self.written.append(name)
        return self.folder / name

    def report(self) -> None:
        """Where the files went, on stderr (also with --quiet: it is the command's result)."""
        print(f"wrote {self.folder}/: {', '.join(self.written)}", file=sys.stderr, flush=True)


def start(args, name: str) -> Output:
    """The experiment's Output: call once its arguments are checked and its data loaded.
    Sets --quiet for `say` and `Progress`, creates the --out folder (default results/NAME)."""
    set_quiet(getattr(args, "quiet", False))
    return Output(output_folder(getattr(args, "out", None), name), provenance(args))


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
    A missing or None value shows as "-", a non-finite float as nan/inf; a "|" inside a cell is
    escaped ("\\|") so that it does not split the cell."""
    def cell(value, spec):
        if value is None:
            return "-"
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return (format(value, spec) if spec else str(value)).replace("|", "\\|")

    lines = ["| " + " | ".join(header.replace("|", "\\|") for _, header, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(key), spec) for key, _, spec in columns) + " |")
    return "\n".join(lines)


def write_strict_json(path: Path, data: Any) -> None:
    """Strict JSON (non-finite numbers as null, tuples as lists; see bioprop.files.json_safe), atomically."""
    text = json.dumps(json_safe(data), indent=2) + "\n"
    write_atomic(Path(path), lambda handle: handle.write(text))


def write_tables(out: Path, stem: str, title: str, rows: list[dict], settings: dict, markdown: str,
                 notes: str = "", extra: dict | None = None, provenance: str = "") -> None:
    """stem.csv (rows), stem.json (settings, rows, `extra` and the provenance), stem.md (title,
    settings, table, notes, provenance line)."""
    write_csv(out / f"{stem}.csv", rows)
    record = {"settings": settings, "rows": rows, **(extra or {})}
    if provenance:
        record["provenance"] = provenance
    write_strict_json(out / f"{stem}.json", record)
    shown = ", ".join(f"{key}={value}" for key, value in settings.items())
    text = f"## {title}\n\nSettings: {shown}\n\n{markdown}\n" + (f"\n{notes}\n" if notes else "")
    text += f"\n{provenance}\n" if provenance else ""
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
