"""The in-memory form every loader returns: flattened float32 inputs in [0, 1], int64 labels, and
the image shape (C, H, W) that the flattened rows unfold into (`x.reshape(N, C, H, W)`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BioPropError


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors field by field has no single truth value
class Dataset:
    """A classification data set with a fixed train/test split.

    train_x, test_x: float32 (N, n_features), one flattened sample per row, values in [0, 1].
    train_y, test_y: int64 (N,), class indices in [0, n_classes).
    source: where the samples came from (a folder, an archive, or "scikit-learn").
    image_shape: (channels, height, width) of one sample, in the order of the flattened row:
        row.reshape(C, H, W) is the image (channel-first, then row-major). None for data that
        are not images (then only flat models such as an MLP can read them).
    files: the files read, as paths (empty for a bundled data set); describe_source() says both.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int
    source: str
    image_shape: tuple[int, int, int] | None = None
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Cheap shape and dtype checks only: every consumer (trainer, rules) relies on them, and a
        # mistake here would otherwise surface as a confusing matmul error much later.
        for split in ("train", "test"):
            inputs, labels = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if inputs.dtype != torch.float32 or inputs.dim() != 2:
                raise BioPropError(
                    f"data set {self.name!r}: {split}_x must be a float32 (N, features) tensor, "
                    f"got {inputs.dtype} with shape {tuple(inputs.shape)}"
                )
            if labels.dtype != torch.int64 or labels.dim() != 1 or labels.shape[0] != inputs.shape[0]:
                raise BioPropError(
                    f"data set {self.name!r}: {split}_y must be an int64 (N,) tensor matching "
                    f"{split}_x's {inputs.shape[0]} rows, got {labels.dtype} with shape {tuple(labels.shape)}"
                )
        if self.train_x.shape[1] != self.test_x.shape[1]:
            raise BioPropError(
                f"data set {self.name!r}: train samples have {self.train_x.shape[1]} features "
                f"but test samples have {self.test_x.shape[1]}"
            )
        if self.image_shape is not None:
            shape = tuple(int(n) for n in self.image_shape)
            if len(shape) != 3 or min(shape) < 1 or shape[0] * shape[1] * shape[2] != self.train_x.shape[1]:
                raise BioPropError(
                    f"data set {self.name!r}: image_shape {self.image_shape} must be (C, H, W) with C*H*W = "
                    f"{self.train_x.shape[1]} features"
                )
            object.__setattr__(self, "image_shape", shape)

    @classmethod
    def from_pixels(cls, name: str, train: tuple, test: tuple, n_classes: int, source: str,
                    image_shape: tuple[int, int, int] | None = None, files: tuple[str, ...] = ()) -> "Dataset":
        """From uint8 images and integer labels as read from the files: (images, labels) per split.
        `image_shape` (C, H, W): the layout of each image's flattened pixels (see the class)."""
        return cls(
            name=name,
            train_x=pixels_to_unit_float(train[0]),
            train_y=labels_to_tensor(train[1]),
            test_x=pixels_to_unit_float(test[0]),
            test_y=labels_to_tensor(test[1]),
            n_classes=n_classes,
            source=source,
            image_shape=image_shape,
            files=tuple(files),
        )

    @property
    def n_features(self) -> int:
        return int(self.train_x.shape[1])

    def describe_source(self) -> str:
        """One line naming what was read, e.g. "mnist (60000 train, 10000 test) read from
        /data/mnist/: train-images-idx3-ubyte.gz, ..." (the trainer prints it before it starts)."""
        counts = f"{self.name} ({self.train_x.shape[0]} train, {self.test_x.shape[0]} test)"
        if not self.files:
            return f"{counts} from {self.source}"
        folder = Path(self.source)
        if all(Path(path).parent == folder for path in self.files):
            return f"{counts} read from {folder}{os.sep}: {', '.join(Path(path).name for path in self.files)}"
        return f"{counts} read from {', '.join(self.files)}"

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.train_x.shape[0]}, test={self.test_x.shape[0]}, "
            f"n_features={self.n_features}, image_shape={self.image_shape}, n_classes={self.n_classes}, source={self.source!r})"
        )


def pixels_to_unit_float(pixels: np.ndarray) -> torch.Tensor:
    """uint8 images (N, ...) -> float32 (N, prod(...)) in [0, 1].

    Converts in torch, in place after one float32 copy, so a 50000 x 3072 CIFAR split never
    passes through a float64 array (that would be 1.2 GB instead of 0.6 GB).
    """
    flat = np.ascontiguousarray(pixels.reshape(pixels.shape[0], -1))
    return torch.from_numpy(flat).to(torch.float32).div_(255.0)


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1).copy())
