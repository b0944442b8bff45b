"""An example model factory: `bioprop train --rule bp --model examples/my_model.py:build`.

bioprop calls `build(image_shape, n_classes)` with the data set's image shape (C, H, W) and its
number of classes, under a torch RNG seeded from --seed, and wraps the nn.Sequential it returns
with bioprop.wrap. The output must be a Linear layer (the softmax belongs to the loss, --loss ce).
"""
from torch import nn


def build(image_shape, n_classes):
    channels, height, width = image_shape
    return nn.Sequential(
        nn.Conv2d(channels, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * (height // 2) * (width // 2), 32), nn.Tanh(),
        nn.Linear(32, n_classes),
    )
