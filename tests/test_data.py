"""Tests of bioprop.data. Oracle: fixture files written here, in each data set's published format,
by code independent of the loaders (struct for IDX headers, pickle/tarfile for CIFAR-10,
scipy.io.savemat for SVHN); every loader must read back exactly the pixels and labels written.
No test touches the network or ~/.cache: downloads are served from file:// URLs or refused
by 127.0.0.1:9, and every cache folder is under tmp_path."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bioprop.data import Dataset, dataset_names, load_dataset
from bioprop.data import download, mnist
from bioprop.data.idx import parse_idx
from bioprop.errors import BioPropError, DataUnavailableError

IDX_FILE_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
IMAGE_MAGIC = 2051  # 00 00 08 03: uint8, 3 dimensions
LABEL_MAGIC = 2049  # 00 00 08 01: uint8, 1 dimension


# ---------------------------------------------------------------- fixture writers (the oracle)


def idx_images_bytes(images: np.ndarray) -> bytes:
    count, rows, columns = images.shape
    return struct.pack(">IIII", IMAGE_MAGIC, count, rows, columns) + images.astype(np.uint8).tobytes()


def idx_labels_bytes(labels: np.ndarray) -> bytes:
    return struct.pack(">II", LABEL_MAGIC, len(labels)) + labels.astype(np.uint8).tobytes()


def write_idx_data_set(folder: Path, seed: int, compress: bool = True, n_train: int = 6, n_test: int = 4) -> dict:
    """Random 28x28 images and labels in the four official files; returns what was written."""
    rng = np.random.default_rng(seed)
    written = {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    contents = {
        "train-images-idx3-ubyte.gz": idx_images_bytes(written["train_images"]),
        "train-labels-idx1-ubyte.gz": idx_labels_bytes(written["train_labels"]),
        "t10k-images-idx3-ubyte.gz": idx_images_bytes(written["test_images"]),
        "t10k-labels-idx1-ubyte.gz": idx_labels_bytes(written["test_labels"]),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, content in contents.items():
        if compress:
            (folder / file_name).write_bytes(gzip.compress(content))
        else:
            (folder / file_name.removesuffix(".gz")).write_bytes(content)
    return written


def assert_matches_idx(ds: Dataset, written: dict) -> None:
    for split in ("train", "test"):
        images, labels = written[f"{split}_images"], written[f"{split}_labels"]
        expected_x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255)
        assert torch.equal(getattr(ds, f"{split}_x"), expected_x)
        assert torch.equal(getattr(ds, f"{split}_y"), torch.from_numpy(labels.astype(np.int64)))
    assert ds.n_features == 784 and ds.n_classes == 10


def python2_style_pickle(batch: dict) -> bytes:
    """A protocol-2 pickle naming numpy.core.multiarray, as the official (Python 2) batches do."""
    return pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_batches(seed: int, per_batch: int = 3) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    return {
        name: (rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8), rng.integers(0, 10, per_batch).tolist())
        for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
    }


def add_to_tar(archive: tarfile.TarFile, member_name: str, content: bytes) -> None:
    info = tarfile.TarInfo(member_name)
    info.size = len(content)
    archive.addfile(info, io.BytesIO(content))


def write_cifar_archive(path: Path, batches: dict, extra_members: dict[str, bytes] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        add_to_tar(archive, "cifar-10-batches-py/readme.html", b"<html></html>")
        add_to_tar(archive, "cifar-10-batches-py/batches.meta", python2_style_pickle({b"label_names": [b"airplane"]}))
        for name, (images, labels) in batches.items():
            content = python2_style_pickle({b"batch_label": name.encode(), b"labels": labels, b"data": images})
            add_to_tar(archive, f"cifar-10-batches-py/{name}", content)
        for member_name, content in (extra_members or {}).items():
            add_to_tar(archive, member_name, content)


def write_svhn_mat(path: Path, images_nchw: np.ndarray, labels_1_to_10: np.ndarray) -> None:
    """SVHN's real layout: X (32, 32, 3, N) = (row, column, channel, sample), y (N, 1)."""
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": images_nchw.transpose(2, 3, 1, 0), "y": labels_1_to_10.reshape(-1, 1)})


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


@pytest.fixture
def no_debian_fashion(monkeypatch, tmp_path):
    """Hide Debian's /usr/share/datasets/fashion-mnist so tests see only their own files."""
    source = dataclasses.replace(mnist.SOURCES["fashion-mnist"], system_folders=(tmp_path / "no-debian",))
    monkeypatch.setitem(mnist.SOURCES, "fashion-mnist", source)


# ---------------------------------------------------------------- registry and digits


def test_dataset_names_lists_every_data_set():
    assert dataset_names() == ["digits", "fashion-mnist", "mnist", "cifar10", "svhn"]


def test_unknown_name_lists_the_choices():
    with pytest.raises(BioPropError, match="not known.*digits.*fashion-mnist.*svhn"):
        load_dataset("imagenet")


def test_digits_shapes_range_and_fixed_split():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.train_x.shape == (1347, 64) and ds.test_x.shape == (450, 64)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.n_features == 64 and ds.n_classes == 10 and "scikit-learn" in ds.source
    assert 0.0 <= float(ds.train_x.min()) and float(ds.train_x.max()) <= 1.0
    assert float(ds.train_x.max()) == 1.0
    # Oracle: the split is a partition of scikit-learn's digits, with pixels / 16.
    images, labels = load_digits(return_X_y=True)
    together = torch.cat([ds.train_x, ds.test_x]) * 16
    assert torch.equal(together, together.round())
    rows_written = sorted(map(tuple, np.c_[images, labels].tolist()))
    rows_loaded = sorted(map(tuple, np.c_[together.double().numpy(), torch.cat([ds.train_y, ds.test_y]).numpy()].tolist()))
    assert rows_loaded == rows_written
    # Stratified: every class keeps about a quarter of its samples in the test split.
    assert torch.all((ds.test_y.bincount(minlength=10) - 0.25 * torch.from_numpy(np.bincount(labels))).abs() <= 1)

    again = load_dataset("digits")
    assert torch.equal(ds.train_x, again.train_x) and torch.equal(ds.test_y, again.test_y)


# ---------------------------------------------------------------- IDX: MNIST and Fashion-MNIST


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("compress", [True, False], ids=["gz", "uncompressed"])
def test_idx_files_read_back_exactly(tmp_path, no_debian_fashion, name, compress):
    written = write_idx_data_set(tmp_path / "data" / name, seed=1, compress=compress)
    ds = load_dataset(name, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert ds.name == name and ds.source == str(tmp_path / "data" / name)
    assert_matches_idx(ds, written)


def test_mnist_and_fashion_mnist_come_from_their_own_subfolders(tmp_path, no_debian_fashion):
    """Identical file names: data_dir/NAME/ is searched before data_dir itself."""
    data_dir = tmp_path / "data"
    top_level = write_idx_data_set(data_dir, seed=1)
    fashion = write_idx_data_set(data_dir / "fashion-mnist", seed=2)
    assert_matches_idx(load_dataset("fashion-mnist", data_dir=data_dir, cache_dir=tmp_path / "c"), fashion)
    assert_matches_idx(load_dataset("mnist", data_dir=data_dir, cache_dir=tmp_path / "c"), top_level)


def test_torchvision_raw_layout_is_found(tmp_path):
    written = write_idx_data_set(tmp_path / "data" / "MNIST" / "raw", seed=3, compress=False)
    assert_matches_idx(load_dataset("mnist", data_dir=tmp_path / "data", cache_dir=tmp_path / "c"), written)


def test_cache_folder_comes_from_argument_then_environment(tmp_path, monkeypatch):
    from_env = write_idx_data_set(tmp_path / "env-root" / "mnist", seed=4)
    from_argument = write_idx_data_set(tmp_path / "arg-root" / "mnist", seed=5)
    monkeypatch.setenv("BIOPROP_DATA_DIR", str(tmp_path / "env-root"))
    assert_matches_idx(load_dataset("mnist"), from_env)
    assert_matches_idx(load_dataset("mnist", cache_dir=tmp_path / "arg-root"), from_argument)


def test_idx_parser_reads_big_endian_types_of_any_rank():
    values = np.arange(-6, 6, dtype=np.int32).reshape(2, 3, 2) * 1000
    content = struct.pack(">BBBB", 0, 0, 0x0C, 3) + struct.pack(">III", 2, 3, 2) + values.astype(">i4").tobytes()
    assert np.array_equal(parse_idx(content), values)
    floats = np.array([0.5, -2.25], dtype=np.float32)
    content = struct.pack(">BBBBI", 0, 0, 0x0D, 1, 2) + floats.astype(">f4").tobytes()
    assert np.array_equal(parse_idx(content), floats)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: b"\x12\x34" + raw[2:], "not an IDX file"),
        (lambda raw: raw[:-10], "truncated"),
        (lambda raw: raw + b"\x00", "trailing bytes"),
        (lambda raw: gzip.compress(raw)[:-20], "gzip stream is truncated or corrupt"),
        (lambda raw: raw[:6], "truncated IDX header"),
    ],
    ids=["bad-magic", "truncated", "trailing", "truncated-gzip", "truncated-header"],
)
def test_corrupt_idx_file_names_the_file(tmp_path, damage, message):
    folder = tmp_path / "mnist"
    write_idx_data_set(folder, seed=6, compress=False)
    damaged = folder / "train-images-idx3-ubyte"
    damaged.write_bytes(damage(damaged.read_bytes()))
    with pytest.raises(BioPropError, match=message) as raised:
        load_dataset("mnist", data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert str(damaged) in str(raised.value)


def test_labels_file_in_place_of_images_is_reported(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_data_set(folder, seed=7)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(BioPropError, match="t10k-images-idx3-ubyte.gz: expected IDX uint8 images"):
        load_dataset("mnist", data_dir=tmp_path, cache_dir=tmp_path / "c")


# ---------------------------------------------------------------- missing files and downloads


def test_missing_files_error_names_files_folders_and_fixes(tmp_path, no_debian_fashion):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(DataUnavailableError) as raised:
        load_dataset("fashion-mnist", data_dir=data_dir, cache_dir=tmp_path / "cache")
    message = str(raised.value)
    for file_name in IDX_FILE_NAMES:
        assert file_name in message
    for folder in (data_dir, data_dir / "fashion-mnist", tmp_path / "no-debian", tmp_path / "cache" / "fashion-mnist"):
        assert str(folder) in message
    assert "--download" in message and "--data-dir" in message and "apt-get install dataset-fashion-mnist" in message


def test_incomplete_folder_is_not_used_and_is_explained(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_data_set(folder, seed=8)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataUnavailableError, match="lacks t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_unreachable_mirror_raises_and_leaves_no_file(tmp_path, monkeypatch):
    unreachable = dataclasses.replace(mnist.SOURCES["mnist"], mirrors=("http://127.0.0.1:9/",))
    monkeypatch.setitem(mnist.SOURCES, "mnist", unreachable)
    cache_root = tmp_path / "cache"
    with pytest.raises(DataUnavailableError) as raised:
        load_dataset("mnist", download=True, cache_dir=cache_root)
    message = str(raised.value)
    assert "download of train-images-idx3-ubyte.gz failed" in message
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in message
    assert all(file_name in message for file_name in IDX_FILE_NAMES)
    assert str(cache_root / "mnist") in message
    assert files_under(cache_root) == []


def serve_from_folder(monkeypatch, tmp_path, name: str, written_seed: int, md5: dict | None = None) -> tuple[Path, dict]:
    """Put the four files behind a file:// "mirror" and point `name` at it."""
    server = tmp_path / "server"
    written = write_idx_data_set(server, seed=written_seed)
    actual_md5 = {file_name: hashlib.md5((server / file_name).read_bytes()).hexdigest() for file_name in IDX_FILE_NAMES}
    source = dataclasses.replace(mnist.SOURCES[name], mirrors=(server.as_uri() + "/",), md5=md5 or actual_md5)
    monkeypatch.setitem(mnist.SOURCES, name, source)
    return server, written


def test_download_verifies_and_then_loads_from_the_cache(tmp_path, monkeypatch):
    _, written = serve_from_folder(monkeypatch, tmp_path, "mnist", written_seed=9)
    cache_root = tmp_path / "cache"
    ds = load_dataset("mnist", download=True, cache_dir=cache_root)
    assert_matches_idx(ds, written)
    assert ds.source == str(cache_root / "mnist")
    assert sorted(path.name for path in files_under(cache_root)) == sorted(IDX_FILE_NAMES)

    def no_network(url, timeout):
        raise AssertionError(f"downloaded {url} although the files were in the cache")

    monkeypatch.setattr(download, "open_url", no_network)
    assert_matches_idx(load_dataset("mnist", download=True, cache_dir=cache_root), written)


def test_checksum_mismatch_raises_and_removes_the_temporary_file(tmp_path, monkeypatch):
    wrong_md5 = dict.fromkeys(IDX_FILE_NAMES, "0" * 32)
    serve_from_folder(monkeypatch, tmp_path, "mnist", written_seed=10, md5=wrong_md5)
    cache_root = tmp_path / "cache"
    with pytest.raises(DataUnavailableError, match="checksum mismatch: received MD5 [0-9a-f]{32}, expected 0{32}"):
        load_dataset("mnist", download=True, cache_dir=cache_root)
    assert files_under(cache_root) == []


def test_bad_mirror_is_skipped_for_the_next_one(tmp_path, monkeypatch):
    server, written = serve_from_folder(monkeypatch, tmp_path, "mnist", written_seed=11)
    corrupt_server = tmp_path / "corrupt-server"
    corrupt_server.mkdir()
    for file_name in IDX_FILE_NAMES:
        (corrupt_server / file_name).write_bytes(b"not the official file")
    source = dataclasses.replace(mnist.SOURCES["mnist"], mirrors=(corrupt_server.as_uri() + "/", server.as_uri() + "/"))
    monkeypatch.setitem(mnist.SOURCES, "mnist", source)
    assert_matches_idx(load_dataset("mnist", download=True, cache_dir=tmp_path / "cache"), written)


def test_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch):
    class DroppedConnection(io.BytesIO):
        headers = {"Content-Length": "1000000"}

        def read(self, size=-1):
            if self.tell() > 0:
                raise KeyboardInterrupt  # the user gives up mid-file
            return super().read(10)

    remote = download.RemoteFile("file.bin", "0" * 32, ("http://example.invalid/file.bin",))
    monkeypatch.setattr(download, "open_url", lambda url, timeout: DroppedConnection(b"x" * 100))
    with pytest.raises(KeyboardInterrupt):
        download.download_verified(remote, tmp_path / "cache")
    assert files_under(tmp_path / "cache") == []


# ---------------------------------------------------------------- CIFAR-10


def expected_cifar(batches: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    train_x = np.concatenate([batches[name][0] for name in train_names]).astype(np.float32) / 255
    train_y = np.concatenate([batches[name][1] for name in train_names])
    test_x = batches["test_batch"][0].astype(np.float32) / 255
    return (torch.from_numpy(train_x), torch.tensor(train_y), torch.from_numpy(test_x), torch.tensor(batches["test_batch"][1]))


def test_cifar10_archive_read_back_exactly(tmp_path):
    batches = cifar_batches(seed=12)
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    write_cifar_archive(archive, batches)
    ds = load_dataset("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "c")
    train_x, train_y, test_x, test_y = expected_cifar(batches)
    assert torch.equal(ds.train_x, train_x) and torch.equal(ds.train_y, train_y)
    assert torch.equal(ds.test_x, test_x) and torch.equal(ds.test_y, test_y)
    assert ds.n_features == 3072 and ds.n_classes == 10 and ds.source == str(archive)
    assert files_under(tmp_path / "data") == [archive]  # read in place, nothing extracted


def test_cifar10_extracted_folder_read_back_exactly(tmp_path):
    batches = cifar_batches(seed=13)
    folder = tmp_path / "data" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, (images, labels) in batches.items():
        (folder / name).write_bytes(python2_style_pickle({b"labels": labels, b"data": images}))
    ds = load_dataset("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "c")
    train_x, train_y, test_x, test_y = expected_cifar(batches)
    assert torch.equal(ds.train_x, train_x) and torch.equal(ds.test_y, test_y)
    assert ds.source == str(folder)


class RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize(
    "replace_test_batch, message",
    [
        (lambda: pickle.dumps({b"data": RunsCode()}, protocol=2), "refusing to load (__builtin__|builtins).print"),
        (lambda: python2_style_pickle({b"labels": [1], b"data": np.zeros((1, 12), np.uint8)}), r"\(N, 3072\)"),
        (lambda: python2_style_pickle({b"labels": [10], b"data": np.zeros((1, 3072), np.uint8)}), "labels must lie in 0..9"),
        (lambda: b"\x80\x02}q\x00(", "not a readable CIFAR-10 batch"),
    ],
    ids=["code-in-pickle", "wrong-width", "label-out-of-range", "truncated-pickle"],
)
def test_bad_cifar_batch_names_the_member(tmp_path, capsys, replace_test_batch, message):
    batches = cifar_batches(seed=14)
    batches.pop("test_batch")
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_archive(archive, batches, {"cifar-10-batches-py/test_batch": replace_test_batch()})
    with pytest.raises(BioPropError, match=message) as raised:
        load_dataset("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert f"{archive} member cifar-10-batches-py/test_batch" in str(raised.value)
    assert "must never run" not in capsys.readouterr().out


def test_cifar_archive_paths_outside_the_folder_are_never_written(tmp_path):
    batches = cifar_batches(seed=15)
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    write_cifar_archive(archive, batches, {"../escaped": b"x", "/tmp/absolute-escape-bioprop-test": b"x"})
    load_dataset("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "c")
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/absolute-escape-bioprop-test").exists()


def test_truncated_cifar_archive_names_the_file(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_archive(archive, cifar_batches(seed=16))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BioPropError, match="truncated or corrupt") as raised:
        load_dataset("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert str(archive) in str(raised.value)


def test_cifar_missing_names_archive_and_folder(tmp_path):
    with pytest.raises(DataUnavailableError, match="cifar-10-python.tar.gz, or the folder cifar-10-batches-py/"):
        load_dataset("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "c")


# ---------------------------------------------------------------- SVHN


def test_svhn_read_back_with_label_10_as_0(tmp_path):
    rng = np.random.default_rng(17)
    train_images = rng.integers(0, 256, size=(5, 3, 32, 32), dtype=np.uint8)  # (N, channel, row, column)
    test_images = rng.integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)
    train_labels = np.array([10, 1, 5, 10, 9], dtype=np.uint8)
    test_labels = np.array([3, 10, 2], dtype=np.uint8)
    write_svhn_mat(tmp_path / "svhn" / "train_32x32.mat", train_images, train_labels)
    write_svhn_mat(tmp_path / "svhn" / "test_32x32.mat", test_images, test_labels)
    ds = load_dataset("svhn", data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert torch.equal(ds.train_y, torch.tensor([0, 1, 5, 0, 9])) and torch.equal(ds.test_y, torch.tensor([3, 0, 2]))
    assert torch.equal(ds.train_x, torch.from_numpy(train_images.reshape(5, -1).astype(np.float32) / 255))
    assert torch.equal(ds.test_x, torch.from_numpy(test_images.reshape(3, -1).astype(np.float32) / 255))
    assert ds.n_features == 3072 and ds.source == str(tmp_path / "svhn")


def test_svhn_and_cifar_share_one_pixel_layout(tmp_path):
    """The same picture stored in each format's native layout gives the same feature vector."""
    rng = np.random.default_rng(18)
    picture = rng.integers(0, 256, size=(1, 3, 32, 32), dtype=np.uint8)  # (1, channel, row, column)
    picture[0, 0, 0, :] = 255  # a red top row: asymmetric in channel, row and column
    # CIFAR's native row: red plane then green then blue, each row-major.
    cifar_row = np.concatenate([picture[0, channel].reshape(-1) for channel in range(3)])[None]
    write_cifar_archive(tmp_path / "cifar10" / "cifar-10-python.tar.gz", {**cifar_batches(seed=19), "test_batch": (cifar_row, [0])})
    # SVHN's native array: X[row, column, channel, sample].
    import scipy.io

    svhn_x = np.zeros((32, 32, 3, 1), dtype=np.uint8)
    for row in range(32):
        for column in range(32):
            for channel in range(3):
                svhn_x[row, column, channel, 0] = picture[0, channel, row, column]
    (tmp_path / "svhn").mkdir()
    for split in ("train", "test"):
        scipy.io.savemat(tmp_path / "svhn" / f"{split}_32x32.mat", {"X": svhn_x, "y": np.array([[10]], dtype=np.uint8)})
    cifar_ds = load_dataset("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "c")
    svhn_ds = load_dataset("svhn", data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert torch.equal(cifar_ds.test_x, svhn_ds.test_x)
    assert torch.all(svhn_ds.test_x[0, :32] == 1.0)  # feature 0..31 = red channel, top row


def test_corrupt_svhn_file_names_the_file(tmp_path):
    write_svhn_mat(tmp_path / "train_32x32.mat", np.zeros((2, 3, 32, 32), np.uint8), np.array([1, 2]))
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, but cut short")
    with pytest.raises(BioPropError, match="not a readable SVHN .mat file") as raised:
        load_dataset("svhn", data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert str(tmp_path / "test_32x32.mat") in str(raised.value)


def test_svhn_missing_names_both_files(tmp_path):
    with pytest.raises(DataUnavailableError, match="train_32x32.mat and test_32x32.mat"):
        load_dataset("svhn", data_dir=tmp_path, cache_dir=tmp_path / "c")


# ---------------------------------------------------------------- the real thing, where installed


@pytest.mark.skipif(
    not mnist.DEBIAN_FASHION_MNIST_FOLDER.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)
def test_debian_fashion_mnist_package_loads(tmp_path):
    ds = load_dataset("fashion-mnist", cache_dir=tmp_path)
    assert ds.source == str(mnist.DEBIAN_FASHION_MNIST_FOLDER)
    assert ds.train_x.shape == (60000, 784) and ds.test_x.shape == (10000, 784)
    assert float(ds.train_x.min()) == 0.0 and float(ds.train_x.max()) == 1.0
    # Fashion-MNIST's test split is balanced: 1000 images of each of the 10 classes.
    assert torch.equal(ds.test_y.bincount(), torch.full((10,), 1000))
