"""Ready-made networks by name, sized by the data: `build_model("lenet5", image_shape, n_classes)`.

    name        network                                                       input it reads
    mlp         bioprop.MLP([C*H*W, *hidden, n_classes])                      flattened (B, C*H*W)
    lenet5      LeNet-5: conv 6 - pool - conv 16 - pool - 120 - 84 - classes  images (B, C, H, W)
                (5x5 kernels for 28x28 and larger inputs, 3x3 with padding for 8x8 digits)
    cnn-small   a small VGG-style net: [conv 16, conv 16, max pool] [conv 32, conv 32, max pool],
                64 - classes, 3x3 kernels with padding                       images (B, C, H, W)
    rnn         bioprop.ElmanRNN reading an image row by row: input_size C*W,
                hidden_size hidden[0] (default 64), T = H steps               rows (B, H, C*W)

A user's own network comes from a factory `function(image_shape, n_classes)` returning an
nn.Sequential (wrapped with bioprop.wrap) or a bioprop.Network; `load_factory("file.py:function")`
imports it. Conv nets are built under a forked torch RNG seeded from `seed`, so a seed gives the
same network on every run; their layers use torch's default initialisation.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .errors import BioPropError
from .network import MLP, Network
from .recurrent import ElmanRNN
from .wrap import wrap

Tensor = torch.Tensor

MODEL_NAMES = ("mlp", "lenet5", "cnn-small", "rnn")
#: how each model reads a sample: flattened vector, image, or image rows as a sequence
INPUT_LAYOUTS = {"mlp": "flat", "lenet5": "image", "cnn-small": "image", "rnn": "rows"}

_ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}


def _activation_module(name: str, model: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise BioPropError(f"--activation {name!r}: --model {model} takes one of {', '.join(_ACTIVATIONS)}") from None


def _flat_size(features: nn.Sequential, image_shape: Sequence[int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *image_shape)).numel())


def lenet5(image_shape: Sequence[int], n_classes: int, activation: str = "tanh") -> nn.Sequential:
    """LeNet-5 (LeCun et al. 1998) with average pooling, sized for the image."""
    channels, height, width = image_shape
    if min(height, width) >= 28:
        kernel, padding = 5, 2 if min(height, width) < 32 else 0
        second_padding = 0
    elif min(height, width) >= 8:
        kernel, padding, second_padding = 3, 1, 1
    else:
        raise BioPropError(f"--model lenet5: images of {height}x{width} are too small; it needs at least 8x8")
    act = lambda: _activation_module(activation, "lenet5")  # noqa: E731
    features = nn.Sequential(
        nn.Conv2d(channels, 6, kernel, padding=padding), act(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, kernel, padding=second_padding), act(), nn.AvgPool2d(2), nn.Flatten(),
    )
    flat = _flat_size(features, image_shape)
    return nn.Sequential(*features, nn.Linear(flat, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, n_classes))


def cnn_small(image_shape: Sequence[int], n_classes: int, activation: str = "relu") -> nn.Sequential:
    """A small VGG-style net: two blocks of two 3x3 convs and a 2x2 max pool, then 64 - classes."""
    channels, height, width = image_shape
    if min(height, width) < 4:
        raise BioPropError(f"--model cnn-small: images of {height}x{width} are too small; it needs at least 4x4")
    act = lambda: _activation_module(activation, "cnn-small")  # noqa: E731
    features = nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), act(), nn.Conv2d(16, 16, 3, padding=1), act(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), act(), nn.Conv2d(32, 32, 3, padding=1), act(), nn.MaxPool2d(2), nn.Flatten(),
    )
    flat = _flat_size(features, image_shape)
    return nn.Sequential(*features, nn.Linear(flat, 64), act(), nn.Linear(64, n_classes))


def load_factory(spec: str) -> Callable[[Sequence[int], int], nn.Module]:
    """`path/to/file.py:function` -> the function (imported from the file)."""
    path_text, _, function = spec.rpartition(":")
    if not path_text or not function:
        raise BioPropError(f"--model {spec!r}: give one of {', '.join(MODEL_NAMES)} or path/to/file.py:function")
    path = Path(path_text)
    if not path.is_file():
        raise BioPropError(f"--model {spec!r}: file {path} not found")
    module_spec = importlib.util.spec_from_file_location(f"bioprop_user_model_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise BioPropError(f"--model {spec!r}: cannot import {path} (is it a .py file?)")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # the user's file: report it, naming the file
        raise BioPropError(f"--model {spec!r}: importing {path} failed: {type(error).__name__}: {error}") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise BioPropError(f"--model {spec!r}: {path} has no function {function!r}")
    return factory


def build_model(name: str, image_shape: Sequence[int], n_classes: int, *, hidden: Sequence[int] = (64,),
                activation: str = "tanh", bias: bool = True, input_map: str = "identity", init: str = "xavier",
                init_scale: float = 1.0, dtype: torch.dtype = torch.float32, device=None,
                seed: int | None = 0) -> Network:
    """The network `name` (MODEL_NAMES, or path/to/file.py:function) for images of `image_shape`
    (C, H, W) and `n_classes` classes. `hidden`, `init`, `init_scale` and `input_map` shape the MLP;
    `hidden[0]` is the RNN's width; `bias` applies to the MLP and the RNN."""
    image_shape = tuple(int(n) for n in image_shape)
    if len(image_shape) != 3:
        raise BioPropError(f"image_shape={image_shape}: give (channels, height, width)")
    channels, height, width = image_shape
    if name == "mlp":
        return MLP([channels * height * width, *hidden, n_classes], activation=activation, bias=bias,
                   input_map=input_map, init=init, init_scale=init_scale, dtype=dtype, device=device, seed=seed)
    if name == "rnn":
        size = int(hidden[0]) if len(hidden) else 64
        return ElmanRNN(channels * width, size, n_classes, activation=activation, bias=bias, dtype=dtype,
                        device=device, seed=seed)
    if name in ("lenet5", "cnn-small"):
        builder: Callable = lenet5 if name == "lenet5" else cnn_small
        factory = lambda shape, classes: builder(shape, classes, activation)  # noqa: E731
    else:
        factory = load_factory(name)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = factory(image_shape, n_classes)
        except BioPropError:
            raise
        except Exception as error:
            raise BioPropError(f"--model {name!r}: the factory failed for images {image_shape} and {n_classes} classes: "
                               f"{type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise BioPropError(f"--model {name!r}: the factory returned {type(model).__name__}, not an nn.Module")
    return wrap(model).to(dtype=dtype, device=device)


def input_layout(name: str, net: Network | None = None) -> str:
    """How `name`'s network reads a sample: "flat", "image" or "rows" (a user factory's: from its net)."""
    if name in INPUT_LAYOUTS:
        return INPUT_LAYOUTS[name]
    if isinstance(net, ElmanRNN):
        return "rows"
    if isinstance(net, MLP):
        return "flat"
    first = getattr(net, "_plans", None)
    if first and isinstance(first[0].module, nn.Linear):
        return "flat"
    return "image"


def shape_batch(x: Tensor, layout: str, image_shape: Sequence[int]) -> Tensor:
    """Flattened samples (B, C*H*W) in the layout a model reads: as they are, (B, C, H, W) images,
    or (B, H, C*W) rows (channels of a row side by side)."""
    channels, height, width = image_shape
    if layout == "flat":
        return x
    images = x.reshape(x.shape[0], channels, height, width)
    if layout == "image":
        return images
    return images.permute(0, 2, 1, 3).reshape(x.shape[0], height, channels * width)


__all__ = ["INPUT_LAYOUTS", "MODEL_NAMES", "build_model", "cnn_small", "input_layout", "lenet5", "load_factory",
           "shape_batch"]
