"""Writing output files so that a crash or a bad argument never leaves half a file behind."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write a file via a temporary file in the same folder and os.replace (mode as for open())."""
    handle = tempfile.NamedTemporaryFile(
        mode="wb" if binary else "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False,
        **({} if binary else {"encoding": "utf-8"}),
    )
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o666 & ~_UMASK)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows (dicts with the same keys) as a CSV file with a header, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(Path(path), lambda handle: handle.write(buffer.getvalue()))


def json_safe(value: Any) -> Any:
    """Plain Python that strict JSON and yaml.safe_dump accept: tuples as lists, tensors as
    (nested) lists, non-finite floats as None (a figure that does not exist is null), exact
    builtin int/float/str (safe_dump refuses subclasses such as TorchVersion), anything else as str."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return json_safe(value.tolist())
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return str(value)


def write_json(path: Path, data: Any) -> None:
    write_atomic(Path(path), lambda handle: handle.write(json.dumps(data, indent=2) + "\n"))
