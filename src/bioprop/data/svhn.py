"""SVHN, the cropped-digits format (Netzer et al., 2011): train_32x32.mat and test_32x32.mat.

Each file is a MATLAB (v5) file with
    X: uint8 (32, 32, 3, N) -- row, column, channel, sample
    y: (N, 1) labels 1..10, where 10 stands for the digit 0
We map label 10 to 0 and reorder each image to (channel, row, column) before flattening, the
same order as CIFAR-10's rows, so one model or figure code serves both: 3072 features, /255.
(The "extra" split, extra_32x32.mat, is not used.)

MD5s of the official files: as published with torchvision's SVHN class.
Reading .mat files needs scipy (imported only when SVHN is loaded).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BioPropError
from .dataset import Dataset
from .download import RemoteFile
from .locate import PathLike, locate_or_download, plan_search, resolve_file_set

NAME = "svhn"
N_CLASSES = 10
SPLIT_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
REMOTE_FILES = (
    RemoteFile(
        "train_32x32.mat",
        "e26dedcc434d2e4c54c9b2d4a06d8373",
        ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
    ),
    RemoteFile(
        "test_32x32.mat",
        "eb5a983be6a315427106f1b164d9cef3",
        ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
    ),
)


def load_svhn(
    data_dir: PathLike | None = None,
    download: bool = False,
    cache_dir: PathLike | None = None,
) -> Dataset:
    paths, folder = locate_or_download(
        NAME,
        search=plan_search(NAME, data_dir, cache_dir),
        resolve=lambda folder: resolve_file_set(folder, [(file_name,) for file_name in SPLIT_FILES.values()]),
        needed=f"{' and '.join(SPLIT_FILES.values())} (the cropped-digits format), in one folder",
        remote_files=REMOTE_FILES,
        download=download,
    )
    train_x, train_y = read_svhn_mat(paths[SPLIT_FILES["train"]])
    test_x, test_y = read_svhn_mat(paths[SPLIT_FILES["test"]])
    files = tuple(str(paths[file_name]) for file_name in SPLIT_FILES.values())
    return Dataset.from_pixels(NAME, (train_x, train_y), (test_x, test_y), N_CLASSES, str(folder), files=files,
                              image_shape=(3, 32, 32))  # reordered to channel, row, column below


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One cropped-digits .mat file -> (uint8 images (N, 3, 32, 32), int64 labels (N,) in 0..9)."""
    try:
        import scipy.io
    except ImportError:
        raise BioPropError("data set 'svhn': reading its .mat files needs scipy; run: pip install scipy") from None
    try:
        contents = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as error:  # scipy raises ValueError, MatReadError, OSError ... on damaged files
        raise BioPropError(
            f"{path}: not a readable SVHN .mat file ({type(error).__name__}: {error}); it is truncated "
            f"or corrupt -- delete it and download it again"
        ) from None
    images, labels = contents.get("X"), contents.get("y")
    if images is None or labels is None:
        raise BioPropError(f"{path}: lacks the variables X and y of the SVHN cropped-digits format")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[2] != 3:
        raise BioPropError(f"{path}: X must be uint8 (32, 32, 3, N), got {images.dtype} {images.shape}")
    labels = labels.reshape(-1)
    if labels.shape[0] != images.shape[3]:
        raise BioPropError(f"{path}: X holds {images.shape[3]} images but y holds {labels.shape[0]} labels")
    if labels.size and (labels.min() < 1 or labels.max() > 10 or not np.all(labels == np.round(labels))):
        raise BioPropError(f"{path}: labels must be integers 1..10 (10 = digit 0), found {labels.min()}..{labels.max()}")
    # (row, column, channel, sample) -> (sample, channel, row, column): CIFAR-10's order.
    images = np.ascontiguousarray(images.transpose(3, 2, 0, 1))
    return images, labels.astype(np.int64) % 10
