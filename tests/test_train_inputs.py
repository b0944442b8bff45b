"""What a new user hits in `bioprop train`: a run folder written by two runs at once, a --data-dir
that is wrong, a batch larger than the training set, a corrupt checkpoint, a config file's value
of the wrong type, a batch in another dtype than the network's.

Oracles: a second process (a real lock holder) and a process that has exited (a stale lock); the
IDX files test_data.py writes in the official format, with a complete copy in the cache folder
so that any fallback to it would show; the files a run wrote, byte for byte, before and after a
refused run; warnings.catch_warnings for what was warned.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import bioprop
from bioprop import batches, cli
from bioprop.data import load_dataset
from bioprop.errors import BioPropError, DataUnavailableError
from bioprop.runlock import LOCK_NAME, run_lock
from bioprop.train import train
from test_data import IDX_FILE_NAMES, assert_matches_idx, cifar_batches, python2_style_pickle, serve_from_folder, write_idx_data_set

SRC = Path(bioprop.__file__).resolve().parents[1]
RUN = {"rule": "bp", "dataset": "digits", "hidden": [8], "epochs": 1, "batch_size": 128, "quiet": True}


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished one-epoch run, copied fresh for each test that damages it (see `run_copy`)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train({**RUN, "out": str(out)}, progress=False)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    copy.mkdir()
    for name, content in _files(finished_run).items():
        (copy / name).write_bytes(content)
    return copy


# ---------------------------------------------------------------- 1. one run at a time per folder


@pytest.mark.parametrize("how", ["overwrite", "resume"])
def test_a_locked_run_folder_is_refused_naming_folder_and_pid(run_copy, how):
    before = _files(run_copy)
    settings = {**RUN, "out": str(run_copy), "overwrite": True} if how == "overwrite" else {"resume": str(run_copy), "epochs": 2}
    with run_lock(run_copy):
        with pytest.raises(BioPropError) as refused:
            train(settings, progress=False)
        message = str(refused.value)
        assert str(run_copy) in message and f"PID {os.getpid()}" in message and "locked" in message
        assert _files(run_copy) == {**before, LOCK_NAME: (run_copy / LOCK_NAME).read_bytes()}
    assert _files(run_copy) == before  # nothing written, and the lock file gone with its holder
    train(settings, progress=False)  # the same request succeeds once the lock is free
    assert not (run_copy / LOCK_NAME).exists()


# The holder imports bioprop.runlock without the package's __init__ (and so without torch), to start fast.
HOLDER = textwrap.dedent("""
    import sys, types
    package = types.ModuleType("bioprop")
    package.__path__ = [sys.argv[2]]
    sys.modules["bioprop"] = package
    from bioprop.runlock import run_lock
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the test closes our stdin
""")


def test_a_folder_locked_by_another_process_is_refused_until_it_ends(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out), str(SRC / "bioprop")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for settings in ({**RUN, "out": str(out)}, {**RUN, "out": str(out), "overwrite": True}):
            with pytest.raises(BioPropError, match=f"{out} is locked by PID {holder.pid} on host"):
                train(settings, progress=False)
        assert os.listdir(out) == [LOCK_NAME]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    train({**RUN, "out": str(out)}, progress=False)
    assert (out / "summary.json").is_file() and not (out / LOCK_NAME).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path, capsys):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    out = tmp_path / "run"
    out.mkdir()
    host = socket.gethostname()
    (out / LOCK_NAME).write_text(f"{dead_pid} {host}\n")  # what a killed run leaves behind
    train({**RUN, "out": str(out), "quiet": False}, progress=False)  # the leftover lock alone is no "non-empty folder"
    error = capsys.readouterr().err
    assert f"took over the lock of {out} left by PID {dead_pid} on host {host}, which no longer runs" in error
    assert (out / "summary.json").is_file() and not (out / LOCK_NAME).exists()


def test_a_lock_file_naming_a_live_process_here_is_refused_even_if_flock_lets_us_in(tmp_path):
    """For file systems whose flock does nothing: the PID in the file is checked too."""
    from bioprop import runlock

    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (tmp_path / LOCK_NAME).write_text(f"{alive.pid} {socket.gethostname()}\n")  # no flock held on it
        with pytest.raises(BioPropError, match=f"locked by PID {alive.pid} on host .*still running"):
            runlock.acquire(tmp_path)
    finally:
        alive.stdin.close()
        alive.wait(timeout=30)
    with run_lock(tmp_path):  # once it has ended, the lock is taken over
        pass


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_the_lock_is_released_on_error_and_ctrl_c(tmp_path, monkeypatch, interruption):
    from bioprop import train as train_module

    out = tmp_path / "run"
    held = []

    def interrupted(self, x, y):
        held.append((out / LOCK_NAME).read_text().split()[0])
        raise interruption("stopped mid-epoch")

    monkeypatch.setattr(train_module.Learner, "step", interrupted)
    with pytest.raises(interruption):
        train({**RUN, "out": str(out)}, progress=False)
    assert held == [str(os.getpid())]  # held while the run wrote the folder
    assert not (out / LOCK_NAME).exists()
    with run_lock(out):  # free again
        pass


def test_without_fcntl_the_lock_file_is_created_exclusively(tmp_path, monkeypatch):
    from bioprop import runlock

    monkeypatch.setattr(runlock, "fcntl", None)  # as on Windows
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(BioPropError, match=f"locked by PID {os.getpid()} on host .*delete {tmp_path / LOCK_NAME}"):
            runlock.acquire(tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()


# ---------------------------------------------------------------- 2. an explicit --data-dir is the folder read


@pytest.fixture
def cached_mnist(tmp_path, monkeypatch) -> dict:
    """A complete MNIST in the cache folder: what the loaders used to fall back to silently."""
    monkeypatch.setenv("BIOPROP_DATA_DIR", str(tmp_path / "cache"))
    return write_idx_data_set(tmp_path / "cache" / "mnist", seed=21)


def test_a_data_dir_holding_only_the_train_files_is_an_error_not_the_cached_copy(tmp_path, cached_mnist):
    data_dir = tmp_path / "data"
    write_idx_data_set(data_dir / "mnist", seed=22)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (data_dir / "mnist" / name).unlink()
    with pytest.raises(DataUnavailableError) as raised:
        load_dataset("mnist", data_dir=data_dir)
    message = str(raised.value)
    assert f"--data-dir {data_dir} does not hold its files" in message
    assert f"{data_dir / 'mnist'} (has train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz but lacks " \
           f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)" in message
    assert f"{tmp_path / 'cache' / 'mnist'} (holds a complete copy)" in message
    assert "leave out --data-dir to read the complete copy" in message
    assert_matches_idx(load_dataset("mnist"), cached_mnist)  # the copy that was not read


def test_a_partial_named_folder_is_not_skipped_for_a_complete_one_below_it(tmp_path):
    """data_dir itself holds MNIST; data_dir/fashion-mnist/ holds part of Fashion-MNIST: asking for
    Fashion-MNIST must not read MNIST's files (same names) from data_dir."""
    write_idx_data_set(tmp_path / "data", seed=23)
    write_idx_data_set(tmp_path / "data" / "fashion-mnist", seed=24)
    (tmp_path / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataUnavailableError, match="lacks t10k-labels-idx1-ubyte.gz"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")


def test_partial_cifar_batches_in_a_data_dir_are_an_error(tmp_path):
    batch_folder = tmp_path / "data" / "cifar10" / "cifar-10-batches-py"
    batch_folder.mkdir(parents=True)
    images, labels = cifar_batches(seed=25)["data_batch_1"]
    (batch_folder / "data_batch_1").write_bytes(python2_style_pickle({b"labels": labels, b"data": images}))
    with pytest.raises(DataUnavailableError, match="lacks data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch"):
        load_dataset("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")


def test_a_missing_data_dir_is_an_error_and_creates_nothing(tmp_path, cached_mnist):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DataUnavailableError) as raised:
        load_dataset("mnist", data_dir=missing)
    message = str(raised.value)
    assert f"--data-dir {missing} does not exist" in message
    assert all(name in message for name in IDX_FILE_NAMES)
    assert f"--download (download=True) to fetch them into {missing / 'mnist'}" in message
    assert not missing.exists()


def test_a_good_data_dir_is_read_and_its_files_are_named(tmp_path, cached_mnist):
    written = write_idx_data_set(tmp_path / "data" / "mnist", seed=26)
    ds = load_dataset("mnist", data_dir=tmp_path / "data")
    assert_matches_idx(ds, written)
    assert ds.files == tuple(str(tmp_path / "data" / "mnist" / name) for name in IDX_FILE_NAMES)
    assert ds.describe_source() == f"mnist (6 train, 4 test) read from {tmp_path / 'data' / 'mnist'}{os.sep}: " + ", ".join(IDX_FILE_NAMES)


def test_download_with_a_data_dir_goes_into_data_dir_name(tmp_path, monkeypatch):
    _, written = serve_from_folder(monkeypatch, tmp_path, "mnist", written_seed=27)
    data_dir = tmp_path / "new" / "data"
    ds = load_dataset("mnist", data_dir=data_dir, download=True, cache_dir=tmp_path / "cache")
    assert_matches_idx(ds, written)
    assert ds.source == str(data_dir / "mnist") and not (tmp_path / "cache").exists()


def test_the_trainer_prints_the_files_it_read_and_refuses_a_wrong_data_dir(tmp_path, cached_mnist, capsys):
    good = tmp_path / "data"
    write_idx_data_set(good / "mnist", seed=28)
    mnist_run = {**RUN, "dataset": "mnist", "batch_size": 4, "quiet": False}
    train({**mnist_run, "data_dir": str(good), "out": str(tmp_path / "run")}, progress=False)
    printed = capsys.readouterr().out
    assert f"data: mnist (6 train, 4 test) read from {good / 'mnist'}{os.sep}: {', '.join(IDX_FILE_NAMES)}" in printed
    assert printed.index("data: mnist") < printed.index("training bp on mnist")

    (good / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    out = tmp_path / "refused"
    assert cli.main(["train", "--rule", "bp", "--dataset", "mnist", "--data-dir", str(good), "--batch-size", "4", "--out", str(out)]) == 2
    assert "lacks t10k-images-idx3-ubyte.gz" in capsys.readouterr().err and not out.exists()


def test_a_data_dir_for_the_bundled_digits_is_refused(tmp_path):
    with pytest.raises(BioPropError, match="data set 'digits' is bundled with scikit-learn and reads no files"):
        train({**RUN, "data_dir": str(tmp_path), "out": str(tmp_path / "run")})
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 3. --batch-size beyond the training set


def test_a_batch_larger_than_the_training_set_is_refused_naming_its_size(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--rule", "bp", "--batch-size", "2000", "--out", str(out)]) == 2
    assert "--batch-size 2000: larger than the training set of digits (1347 samples)" in capsys.readouterr().err
    assert not out.exists()


def test_a_batch_of_the_whole_training_set_is_accepted_and_one_more_is_not(tmp_path):
    write_idx_data_set(tmp_path / "data" / "mnist", seed=29)  # 6 training pairs
    mnist_run = {**RUN, "dataset": "mnist", "data_dir": str(tmp_path / "data")}
    train({**mnist_run, "batch_size": 6, "out": str(tmp_path / "six")}, progress=False)
    with pytest.raises(BioPropError, match=r"--batch-size 7: larger than the training set of mnist \(6 samples\); give at most 6"):
        train({**mnist_run, "batch_size": 7, "out": str(tmp_path / "seven")}, progress=False)
    assert not (tmp_path / "seven").exists()


# ---------------------------------------------------------------- 4. a corrupt checkpoint


@pytest.mark.parametrize("damage", [
    lambda raw: raw[: len(raw) // 2],
    lambda raw: raw[:-7],
    lambda raw: b"",
    lambda raw: bytes(range(256)) * 4,
], ids=["half", "tail-cut", "empty", "garbage"])
def test_a_truncated_or_garbage_checkpoint_says_so_and_what_to_do(run_copy, damage):
    checkpoint = run_copy / "checkpoint.pt"
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    with pytest.raises(BioPropError) as raised:
        train({"resume": str(run_copy), "epochs": 2})
    message = str(raised.value)
    assert f"checkpoint.pt in {run_copy} is truncated or corrupt" in message
    assert f"`bioprop train --config {run_copy / 'config.yaml'} --out {run_copy} --overwrite`" in message
    assert "restore checkpoint.pt" in message


def test_a_whole_checkpoint_of_foreign_objects_is_not_called_corrupt(run_copy):
    torch.save({"model": torch.nn.Linear(2, 2)}, run_copy / "checkpoint.pt")  # a whole file, refused by weights_only
    with pytest.raises(BioPropError, match="cannot be loaded .*it was not written by `bioprop train`") as raised:
        train({"resume": str(run_copy), "epochs": 2})
    assert "corrupt" not in str(raised.value)
    # The advice works: the run's own config.yaml starts it again in place.
    train({"config": str(run_copy / "config.yaml"), "out": str(run_copy), "overwrite": True, "quiet": True}, progress=False)
    assert torch.load(run_copy / "checkpoint.pt", weights_only=True)["epoch"] == 1


# ---------------------------------------------------------------- 5. config file values are reported as the file's


@pytest.mark.parametrize("text, message", [
    ("rule: bp\nlr: fast\n", "lr: 'fast' is not a number; give a finite number > 0"),
    ("rule: bp\nbatch-size: 0\n", "batch-size: 0 is less than 1; give an integer >= 1"),
    ("rule: bp\nhidden: [8, wide]\n", "hidden: 'wide' is not an integer"),
    ("rule: bp\nbias: maybe\n", "bias: 'maybe' is not a boolean; give true or false"),
    ("rule: zil\ngamma: fast\n", "gamma: 'fast' is not a number; give a number, as --gamma takes (rules "),
])
def test_a_config_file_value_of_the_wrong_type_names_the_file_and_key(tmp_path, capsys, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(config), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"--config {config}: {message}" in error
    assert "--lr 'fast'" not in error and not out.exists()


def test_a_value_given_as_a_flag_keeps_the_flag_wording(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("rule: bp\nlr: fast\n")
    with pytest.raises(BioPropError, match=r"^--lr 'quick': give a finite number > 0$"):
        train({"lr": "quick", "out": str(tmp_path / "a")} | {"rule": "bp"})
    # The file's bad value is not checked when a flag overrides it.
    summary = train({**RUN, "config": str(config), "lr": 0.05, "out": str(tmp_path / "b")}, progress=False)
    assert summary["rule"] == "bp"


def test_a_numeric_rule_option_written_as_yaml_text_is_read_as_the_number(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("rule: il\nn_steps: 2\ngamma: 1e-1\n")  # YAML 1.1 reads 1e-1 (no dot) as text
    train({**RUN, "rule": "il", "config": str(config), "out": str(tmp_path / "run")}, progress=False)
    stored = (tmp_path / "run" / "config.yaml").read_text()
    assert "gamma: 0.1" in stored


# ---------------------------------------------------------------- 6. a batch in another dtype than the network's


@pytest.fixture
def fresh_dtype_warnings(monkeypatch):
    monkeypatch.setattr(batches, "_WARNED", set())


def test_a_float32_batch_for_a_float64_net_warns_once_at_the_callers_line(fresh_dtype_warnings):
    net = bioprop.MLP([5, 4, 3], dtype=torch.float64, seed=0)
    rule = bioprop.make_rule("bp", lr=0.1)
    x, labels = torch.rand(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            rule.step(net, x, labels)
        rule.step(net, x.half(), labels)  # another dtype pair: warned about once more
        rule.step(net, x.half(), labels)
    dtype_warnings = [w for w in caught if issubclass(w.category, bioprop.DtypeWarning)]
    assert [str(w.message).split(";")[0] for w in dtype_warnings] == [
        "x: float32 batch converted to float64 for a net with sizes [5, 4, 3]",
        "x: float16 batch converted to float64 for a net with sizes [5, 4, 3]",
    ]
    assert issubclass(bioprop.DtypeWarning, UserWarning)
    assert all(Path(w.filename) == Path(__file__) for w in dtype_warnings)  # points at the user's call


def test_float_targets_in_another_dtype_warn_too(fresh_dtype_warnings):
    net = bioprop.MLP([5, 3], dtype=torch.float32, seed=0)
    with pytest.warns(bioprop.DtypeWarning, match="y: float64 batch converted to float32"):
        bioprop.make_rule("bp", lr=0.1, loss="mse").step(net, torch.rand(4, 5), torch.rand(4, 3, dtype=torch.float64))


def test_same_dtype_batches_and_integer_labels_never_warn(fresh_dtype_warnings):
    net = bioprop.MLP([5, 4, 3], dtype=torch.float64, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", bioprop.DtypeWarning)
        bioprop.make_rule("bp", lr=0.1).step(net, torch.rand(6, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2]))
        bioprop.make_rule("bp", lr=0.1, loss="mse").step(net, torch.rand(6, 5, dtype=torch.float64), torch.rand(6, 3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_trainer_never_warns_about_dtypes(tmp_path, fresh_dtype_warnings, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error", bioprop.DtypeWarning)
        train({**RUN, "dtype": dtype, "diagnostics_every": 5, "out": str(tmp_path / "run")}, progress=False)
