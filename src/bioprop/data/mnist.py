"""MNIST and Fashion-MNIST from their official IDX files.

Both data sets ship as the same four files (60000 train and 10000 test 28x28 grayscale images,
labels 0-9), gzip-compressed, with identical names -- so they must live in separate folders:

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz

Uncompressed copies (the same names without .gz) are accepted too. Pixels are divided by 255;
each image is flattened row by row to 784 features.

Checksums are the MD5s published for the official files: for MNIST the list torchvision's
MNIST class verifies, for Fashion-MNIST the table in zalandoresearch/fashion-mnist's README
(also used by torchvision). Debian's dataset-fashion-mnist package recompresses the files, so
its .gz files have other MD5s; local files are therefore read without a checksum check, and the
IDX parser's size checks catch truncation instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BioPropError
from .dataset import Dataset
from .download import RemoteFile
from .idx import read_idx
from .locate import PathLike, locate_or_download, plan_search, resolve_file_set

N_CLASSES = 10

IMAGE_AND_LABEL_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FILE_NAMES = tuple(name for pair in IMAGE_AND_LABEL_FILES.values() for name in pair)

#: Mirrors of Yann LeCun's original files, most reliable first (the original site has refused
#: automated downloads at times, so it comes last).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

FASHION_MNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

#: Where Debian's dataset-fashion-mnist package installs the four .gz files.
DEBIAN_FASHION_MNIST_FOLDER = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class IdxDataSource:
    name: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]
    #: layouts inside --data-dir besides NAME/, e.g. where torchvision keeps its raw downloads
    data_dir_subfolders: tuple[str, ...] = ()
    system_folders: tuple[Path, ...] = ()
    other_fixes: tuple[str, ...] = ()

    def remote_files(self) -> list[RemoteFile]:
        return [
            RemoteFile(file_name, self.md5[file_name], tuple(mirror + file_name for mirror in self.mirrors))
            for file_name in FILE_NAMES
        ]


SOURCES = {
    "mnist": IdxDataSource("mnist", MNIST_MIRRORS, MNIST_MD5, data_dir_subfolders=("MNIST/raw",)),
    "fashion-mnist": IdxDataSource(
        "fashion-mnist",
        FASHION_MNIST_MIRRORS,
        FASHION_MNIST_MD5,
        data_dir_subfolders=("FashionMNIST/raw",),
        system_folders=(DEBIAN_FASHION_MNIST_FOLDER,),
        other_fixes=("or install the Debian package: apt-get install dataset-fashion-mnist",),
    ),
}


def load_idx_dataset(
    name: str,
    data_dir: PathLike | None = None,
    download: bool = False,
    cache_dir: PathLike | None = None,
) -> Dataset:
    """Load "mnist" or "fashion-mnist" (see the module docstring for files and search order)."""
    source = SOURCES[name]
    # Each file may be gzip-compressed (official name) or not (the name without .gz).
    required = [(file_name, file_name.removesuffix(".gz")) for file_name in FILE_NAMES]
    paths, folder = locate_or_download(
        name,
        search=plan_search(
            name, data_dir, cache_dir,
            data_dir_subfolders=source.data_dir_subfolders,
            system_folders=source.system_folders,
        ),
        resolve=lambda folder: resolve_file_set(folder, required),
        needed=f"{', '.join(FILE_NAMES)} (each also accepted uncompressed, without .gz), all in one folder",
        remote_files=source.remote_files(),
        download=download,
        other_fixes=source.other_fixes,
    )
    train_x, train_y = _read_split(paths, *IMAGE_AND_LABEL_FILES["train"])
    test_x, test_y = _read_split(paths, *IMAGE_AND_LABEL_FILES["test"])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise BioPropError(
            f"data set {name!r} in {folder}: train images are {train_x.shape[1:]} but test images are "
            f"{test_x.shape[1:]}; the files come from different data sets"
        )
    files = tuple(str(paths[file_name]) for file_name in FILE_NAMES)
    return Dataset.from_pixels(name, (train_x, train_y), (test_x, test_y), N_CLASSES, str(folder), files=files,
                              image_shape=(1, 28, 28))


def _read_split(paths: dict[str, Path], images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = paths[images_name], paths[labels_name]
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise BioPropError(
            f"{images_path}: expected IDX uint8 images of shape (N, rows, columns), got "
            f"{images.dtype} {images.shape}; is this a label file or another data set?"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise BioPropError(
            f"{labels_path}: expected IDX uint8 labels of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise BioPropError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} "
            f"labels; the files belong to different splits or data sets"
        )
    if labels.size and labels.max() >= N_CLASSES:
        raise BioPropError(f"{labels_path}: label {int(labels.max())} is outside 0..{N_CLASSES - 1}")
    return images, labels
