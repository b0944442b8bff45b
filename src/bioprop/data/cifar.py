"""CIFAR-10 from the official "python version" (Krizhevsky, 2009).

The archive cifar-10-python.tar.gz holds a folder cifar-10-batches-py/ with five training
batches data_batch_1..data_batch_5 and one test_batch, 10000 images each. Every batch is a
Python 2 pickle of a dict with
    b"data":   uint8 array (10000, 3072), a row = 1024 red, then 1024 green, then 1024 blue
               values, each 32x32 plane row-major -- i.e. an image in (channel, row, column) order
    b"labels": list of 10000 ints in 0..9
We accept the archive itself (read in one sequential pass, nothing extracted to disk) or the
extracted folder. Pixels are divided by 255 and kept in that (3, 32, 32) order: 3072 features.

Pickles can run arbitrary code when loaded, so batches are read with an unpickler that only
builds dicts, lists, numbers, bytes and numpy arrays.

MD5 of the official archive: as published with torchvision's CIFAR10 class.
"""
from __future__ import annotations

import codecs
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import BioPropError
from .dataset import Dataset
from .download import RemoteFile
from .locate import NotHere, PathLike, locate_or_download, plan_search

NAME = "cifar10"
N_CLASSES = 10
N_FEATURES = 3 * 32 * 32
ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCH_FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
TEST_BATCH = "test_batch"
ALL_BATCHES = (*TRAIN_BATCHES, TEST_BATCH)

ARCHIVE = RemoteFile(
    ARCHIVE_NAME,
    "c58f30108f718f92721af3b95e74349a",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
)


@dataclass(frozen=True)
class BatchFolder:
    path: Path


@dataclass(frozen=True)
class Archive:
    path: Path


def load_cifar10(
    data_dir: PathLike | None = None,
    download: bool = False,
    cache_dir: PathLike | None = None,
) -> Dataset:
    location, _ = locate_or_download(
        NAME,
        search=plan_search(NAME, data_dir, cache_dir),
        resolve=resolve_cifar_files,
        needed=(
            f"{ARCHIVE_NAME}, or the folder {BATCH_FOLDER_NAME}/ extracted from it "
            f"(holding {', '.join(ALL_BATCHES)})"
        ),
        remote_files=[ARCHIVE],
        download=download,
    )
    batches = read_batch_folder(location.path) if isinstance(location, BatchFolder) else read_archive(location.path)
    train_x, train_y = _join([batches[name] for name in TRAIN_BATCHES])
    test_x, test_y = batches[TEST_BATCH]
    if isinstance(location, BatchFolder):
        files = tuple(str(location.path / name) for name in ALL_BATCHES)
    else:
        files = (str(location.path),)
    return Dataset.from_pixels(NAME, (train_x, train_y), (test_x, test_y), N_CLASSES, str(location.path), files=files,
                              image_shape=(3, 32, 32))  # each row: red plane, green, blue, row-major


def resolve_cifar_files(folder: Path) -> BatchFolder | Archive | NotHere:
    """The extracted batches (preferred: no decompression) or the archive in `folder`."""
    for batch_folder in (folder / BATCH_FOLDER_NAME, folder):
        present = [name for name in ALL_BATCHES if (batch_folder / name).is_file()]
        if len(present) == len(ALL_BATCHES):
            return BatchFolder(batch_folder)
        if present:
            missing = [name for name in ALL_BATCHES if name not in present]
            partial_note = f"{batch_folder} lacks {', '.join(missing)}"
            break
    else:
        partial_note = ""
    if (folder / ARCHIVE_NAME).is_file():
        return Archive(folder / ARCHIVE_NAME)
    return NotHere(partial_note, partial=bool(partial_note))


def read_batch_folder(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    batches = {}
    for name in ALL_BATCHES:
        path = folder / name
        try:
            with open(path, "rb") as stream:
                batches[name] = parse_batch(stream, origin=str(path))
        except OSError as error:
            raise BioPropError(f"{path}: cannot be read ({error})") from None
    return batches


def read_archive(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the six batches straight out of the .tar.gz.

    One pass in archive order: looking members up by name would make tarfile seek backwards in
    the gzip stream and decompress the 170 MB archive again for every batch.
    """
    wanted = {f"{BATCH_FOLDER_NAME}/{name}": name for name in ALL_BATCHES}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for member in archive:
                batch_name = wanted.get(member.name.removeprefix("./"))
                if batch_name is None or not member.isfile():
                    continue  # other members (readme.html, batches.meta) and anything odd are skipped
                stream = archive.extractfile(member)
                batches[batch_name] = parse_batch(stream, origin=f"{path} member {member.name}")
    except BioPropError:
        raise
    except Exception as error:  # tarfile.ReadError, EOFError, zlib.error, OSError ...
        raise BioPropError(
            f"{path}: not a readable {ARCHIVE_NAME} ({type(error).__name__}: {error}); it is truncated "
            f"or corrupt -- delete it and download it again"
        ) from None
    missing = [name for name in ALL_BATCHES if name not in batches]
    if missing:
        raise BioPropError(
            f"{path}: archive lacks {', '.join(f'{BATCH_FOLDER_NAME}/{name}' for name in missing)}; "
            f"it is not the CIFAR-10 python version (expected {ARCHIVE_NAME})"
        )
    return batches


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle asks for a function or class outside the allow-list."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except those needed to rebuild numpy arrays (and Python 3's
    encoding of bytes in protocol-2 pickles), so a malicious file cannot run code."""

    _reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    _scalar = np.int64(0).__reduce__()[0]
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.multiarray", "scalar"): _scalar,
        ("numpy._core.multiarray", "scalar"): _scalar,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def parse_batch(stream: IO[bytes], origin: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch pickle -> (uint8 images (N, 3072), labels (N,))."""
    try:
        # encoding="bytes": the batches are Python 2 pickles whose str keys and array buffers
        # must come back as bytes, not be decoded as text.
        batch = _ArraysOnlyUnpickler(stream, encoding="bytes").load()
    except _RefusedGlobal as refused:
        raise BioPropError(
            f"{origin}: refusing to load {refused}: an official CIFAR-10 batch holds only arrays, so this "
            f"pickle is not one and may run code; replace the file with the official {ARCHIVE_NAME}"
        ) from None
    except Exception as error:
        raise BioPropError(
            f"{origin}: not a readable CIFAR-10 batch ({type(error).__name__}: {error}); the file is "
            f"truncated or corrupt -- delete it and download {ARCHIVE_NAME} again"
        ) from None
    if not isinstance(batch, dict):
        raise BioPropError(f"{origin}: expected a pickled dict with b'data' and b'labels', got {type(batch).__name__}")
    # Python 2 pickles give bytes keys; a batch re-saved by Python 3 may have str keys.
    images = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != N_FEATURES:
        description = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise BioPropError(f"{origin}: b'data' must be a uint8 array (N, {N_FEATURES}), got {description}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise BioPropError(f"{origin}: b'labels' must be a list of integers, got {type(labels).__name__}") from None
    if labels.shape[0] != images.shape[0]:
        raise BioPropError(f"{origin}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise BioPropError(f"{origin}: labels must lie in 0..{N_CLASSES - 1}, found {labels.min()}..{labels.max()}")
    return images, labels


def _join(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([images for images, _ in batches]), np.concatenate([labels for _, labels in batches])
