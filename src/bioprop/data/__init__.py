"""Data sets as flattened float32 tensors in [0, 1] with int64 labels, offline first.

    from bioprop.data import load_dataset
    ds = load_dataset("fashion-mnist", data_dir="~/data", download=False)
    ds.train_x.shape, ds.n_features, ds.n_classes, ds.source

    name           train / test    features         files
    digits         1347 / 450      64 (8x8)         none: bundled with scikit-learn, fixed split
    mnist          60000 / 10000   784 (28x28)      {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    fashion-mnist  60000 / 10000   784 (28x28)      same names; or Debian's dataset-fashion-mnist
    cifar10        50000 / 10000   3072 (3x32x32)   cifar-10-python.tar.gz or cifar-10-batches-py/
    svhn           73257 / 26032   3072 (3x32x32)   train_32x32.mat, test_32x32.mat (needs scipy)

Given data_dir, files are looked for in data_dir/NAME/ then data_dir, and nowhere else: a named
folder without the files is an error naming what is missing there. Without it, in system folders,
then the cache folder (cache_dir, else $BIOPROP_DATA_DIR, else ~/.cache/bioprop, plus /NAME); see
`locate`. Only with download=True is anything fetched, checksum-verified, into data_dir/NAME/ or
the cache folder. When the files cannot be had, DataUnavailableError names the files, the folders
searched, and the fixes. `ds.files` lists the files read; `ds.describe_source()` says it in a line.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from ..errors import BioPropError, DataUnavailableError
from .cifar import load_cifar10
from .dataset import Dataset
from .digits import load_digits
from .locate import PathLike
from .mnist import load_idx_dataset
from .svhn import load_svhn

#: name -> loader(data_dir, download, cache_dir)
LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "fashion-mnist": partial(load_idx_dataset, "fashion-mnist"),
    "mnist": partial(load_idx_dataset, "mnist"),
    "cifar10": load_cifar10,
    "svhn": load_svhn,
}


def dataset_names() -> list[str]:
    return list(LOADERS)


def load_dataset(
    name: str,
    data_dir: PathLike | None = None,
    download: bool = False,
    cache_dir: PathLike | None = None,
) -> Dataset:
    """Load data set `name` (one of dataset_names()); see the module docstring for where from."""
    try:
        loader = LOADERS[name]
    except (KeyError, TypeError):
        raise BioPropError(f"data set {name!r} is not known; choose one of {dataset_names()}") from None
    return loader(data_dir=data_dir, download=download, cache_dir=cache_dir)


__all__ = ["Dataset", "DataUnavailableError", "dataset_names", "load_dataset"]
