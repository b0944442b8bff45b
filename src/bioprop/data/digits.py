"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes): the offline data set.

It ships inside scikit-learn, so it needs no files and no network. Pixel values 0..16 are
divided by 16. There is no official test split, so we fix one: stratified, 25 % test,
random_state 0 -- every call, every machine, the same 1347 train / 450 test samples, so results
from different runs and rules are comparable.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as sklearn_load_digits
from sklearn.model_selection import train_test_split

from .dataset import Dataset, labels_to_tensor

NAME = "digits"
TEST_FRACTION = 0.25
SPLIT_SEED = 0
MAX_PIXEL_VALUE = 16.0


def load_digits(data_dir=None, download: bool = False, cache_dir=None) -> Dataset:
    """The arguments are accepted for a uniform loader signature and ignored: nothing to find."""
    images, labels = sklearn_load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return Dataset(
        name=NAME,
        train_x=torch.from_numpy((train_x / MAX_PIXEL_VALUE).astype(np.float32)),
        train_y=labels_to_tensor(train_y),
        test_x=torch.from_numpy((test_x / MAX_PIXEL_VALUE).astype(np.float32)),
        test_y=labels_to_tensor(test_y),
        n_classes=10,
        source="scikit-learn (sklearn.datasets.load_digits, bundled with the package)",
        image_shape=(1, 8, 8),  # load_digits' 64 columns are the 8x8 image, row-major
    )
