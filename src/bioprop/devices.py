"""`--device` for the commands: cpu, cuda or auto (cuda when available), one message when CUDA is
missing. (bioprop.train checks its --device the same way in its own validate.)"""
from __future__ import annotations

import argparse

from .errors import BioPropError

DEVICES = ("cpu", "cuda", "auto")
HELP = "cpu, cuda or auto (cuda when available)"
NO_CUDA = "--device cuda: CUDA is not available here; use --device cpu (or auto)"


def add_device_flag(parser: argparse.ArgumentParser, help_text: str = HELP) -> None:
    parser.add_argument("--device", choices=DEVICES, default="cpu", help=f"{help_text} (default: cpu)")


def resolve_device(name: str, supported: tuple[str, ...] = ("cpu", "cuda")):
    """The torch.device for a --device value. `supported`: the device types the command can run
    on; auto takes cuda only when it is available and supported."""
    import torch  # here, not at the top: `bioprop --version` must not import torch

    if name not in DEVICES:
        raise BioPropError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise BioPropError(NO_CUDA)
    if name == "auto":
        name = "cuda" if "cuda" in supported and torch.cuda.is_available() else "cpu"
    if name not in supported:
        raise BioPropError(f"--device {name}: this command runs on {' or '.join(supported)} only for now; use --device cpu")
    return torch.device(name)
