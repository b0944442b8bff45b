"""`bioprop train`: reproducibility, resume, the BP twin comparison, config files, bad input.

Oracles: a second identical run (bit-for-bit reproducibility), an uninterrupted run (resume),
autograd BP trained beside Z-IL on the same batches (exactness, with gamma = 0.5 as the
negative control that must show a difference), and the files' own parsers (YAML, JSON, torch).
All runs use scikit-learn's bundled digits, small networks and 1-3 epochs.
"""
from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

import bioprop
from bioprop import cli
from bioprop.errors import BioPropError
from bioprop.train import TrainConfig, rule_option_specs, train

SMALL = {"dataset": "digits", "hidden": [16], "epochs": 1, "batch_size": 32, "quiet": True}


@pytest.fixture
def bioprop_main():
    return cli.main


def _metrics(run_dir) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def _checkpoint(run_dir) -> dict:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_same_seed_twice_is_bit_for_bit(tmp_path):
    settings = {**SMALL, "rule": "zil", "epochs": 2, "seed": 3}
    train({**settings, "out": str(tmp_path / "a")})
    train({**settings, "out": str(tmp_path / "b")})
    assert (tmp_path / "a/metrics.jsonl").read_text().count("\n") == 2
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    _assert_same_state(_checkpoint(tmp_path / "a")["learner"]["net"], _checkpoint(tmp_path / "b")["learner"]["net"])


def test_different_seed_gives_a_different_run(tmp_path):
    train({**SMALL, "rule": "bp", "seed": 0, "out": str(tmp_path / "a")})
    train({**SMALL, "rule": "bp", "seed": 1, "out": str(tmp_path / "b")})
    assert _metrics(tmp_path / "a") != _metrics(tmp_path / "b")


def _rule_keeps_its_generator(name: str) -> bool:
    """Feature probe: does the rule's state_dict carry its noise generator? (The pc branch moves
    IL/Z-IL/Fa-Z-IL's generators there; the trainer no longer fishes them out of the rule.)"""
    from bioprop.rules import make_rule

    return any(isinstance(v, torch.Tensor) and v.dtype == torch.uint8
               for v in make_rule(name, init_noise=0.01, seed=0).state_dict().values())


def _resume_matches_whole_run(tmp_path, settings: dict) -> None:
    train({**settings, "epochs": 3, "out": str(tmp_path / "whole")})
    train({**settings, "epochs": 2, "out": str(tmp_path / "parts")})
    summary = train({"resume": str(tmp_path / "parts"), "epochs": 3, "quiet": True})
    assert summary["epochs"] == 3
    assert _metrics(tmp_path / "parts") == _metrics(tmp_path / "whole")
    whole, parts = _checkpoint(tmp_path / "whole"), _checkpoint(tmp_path / "parts")
    for learner in ("learner", "twin"):
        assert set(whole[learner]) == {"net", "rule"}  # the network's and the rule's state_dict, nothing else
        _assert_same_state(whole[learner]["net"], parts[learner]["net"])
        assert whole[learner]["rule"].keys() == parts[learner]["rule"].keys()
        for key, value in whole[learner]["rule"].items():
            assert torch.equal(value, parts[learner]["rule"][key]) if isinstance(value, torch.Tensor) else True
    assert torch.equal(whole["shuffle"], parts["shuffle"])
    assert yaml.safe_load((tmp_path / "parts/config.yaml").read_text())["epochs"] == 3


def test_resume_equals_uninterrupted_run(tmp_path):
    # fa keeps its random feedback matrices in its state_dict; the twin is BP
    _resume_matches_whole_run(tmp_path, {**SMALL, "rule": "fa", "compare": "bp", "dtype": "float64"})


@pytest.mark.skipif(not _rule_keeps_its_generator("zil"),
                    reason="Z-IL's state_dict does not carry its noise generator yet (pc branch)")
def test_resume_of_a_noisy_rule_equals_uninterrupted_run(tmp_path):
    # init_noise > 0 makes Z-IL draw from its own generator, which its state_dict must carry.
    _resume_matches_whole_run(tmp_path, {**SMALL, "rule": "zil", "compare": "bp", "init_noise": 0.01, "dtype": "float64"})


def test_old_checkpoints_rule_generators_are_still_read():
    from bioprop.rules import make_rule
    from bioprop.network import MLP
    from bioprop.training import Learner

    rule = make_rule("zil", init_noise=0.01, seed=0)
    drawn = torch.Generator().manual_seed(123)
    torch.rand(5, generator=drawn)
    net = MLP([4, 3, 2], seed=0)
    old_state = {"net": net.state_dict(), "rule": {}, "rule_generators": {"_noise": drawn.get_state()}}
    Learner(net, rule).load_state(old_state)
    assert torch.equal(rule._noise.get_state(), drawn.get_state())
    # negative control: without the entry the rule keeps its own fresh generator
    fresh = make_rule("zil", init_noise=0.01, seed=0)
    Learner(MLP([4, 3, 2], seed=0), fresh).load_state({"net": net.state_dict(), "rule": {}})
    assert not torch.equal(fresh._noise.get_state(), drawn.get_state())


def test_resume_finished_run_says_so(tmp_path, bioprop_main, capsys):
    out = tmp_path / "run"
    assert bioprop_main(["train", "--rule", "bp", "--hidden", "8", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    assert bioprop_main(["train", "--resume", str(out), "--epochs", "1"]) == 0
    assert "already finished 1 of 1 epochs" in capsys.readouterr().out
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_refuses_changed_settings_and_fewer_epochs(tmp_path, bioprop_main, capsys):
    out = tmp_path / "run"
    assert bioprop_main(["train", "--rule", "bp", "--hidden", "8", "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert bioprop_main(["train", "--resume", str(out), "--epochs", "3", "--lr", "0.5"]) == 2
    assert "--lr: cannot change when resuming" in capsys.readouterr().err
    assert bioprop_main(["train", "--resume", str(out), "--epochs", "1"]) == 2
    assert "--epochs 1" in capsys.readouterr().err
    assert len(_metrics(out)) == 2


def test_zil_twin_of_bp_stays_equal_in_float64(tmp_path):
    settings = {**SMALL, "rule": "zil", "compare": "bp", "hidden": [16, 16], "epochs": 2, "dtype": "float64"}
    exact = train({**settings, "out": str(tmp_path / "exact")})["compare"]
    assert exact["max_abs_diff"] < 1e-10
    assert exact["test_acc_equal"]
    assert all(r["max_abs_diff"] < 1e-10 and r["test_acc"] == r["compare_test_acc"] for r in _metrics(tmp_path / "exact"))
    # Negative control: gamma = 0.5 breaks Z-IL's condition C3, and the check must see it.
    broken = train({**settings, "gamma": 0.5, "out": str(tmp_path / "broken")})["compare"]
    assert broken["max_abs_diff"] > 1e-4


@pytest.mark.parametrize("kind", ["yaml", "toml"])
def test_config_file_with_flags_overriding(tmp_path, bioprop_main, kind):
    text = {
        "yaml": "rule: zil\nhidden: [8, 8]\nlr: 0.05\nepochs: 3\nbatch_size: 64\ngamma: 1.0\nquiet: true\n",
        "toml": 'rule = "zil"\nhidden = [8, 8]\nlr = 0.05\nepochs = 3\nbatch_size = 64\ngamma = 1.0\nquiet = true\n',
    }[kind]
    config_file = tmp_path / f"settings.{kind}"
    config_file.write_text(text)
    out = tmp_path / "run"
    assert bioprop_main(["train", "--config", str(config_file), "--epochs", "1", "--lr", "0.2", "--out", str(out)]) == 0
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert (stored["rule"], stored["hidden"], stored["batch_size"]) == ("zil", [8, 8], 64)
    assert (stored["epochs"], stored["lr"]) == (1, 0.2)
    assert stored["rule_options"] == {"gamma": 1.0}
    assert stored["resolved"]["sizes"] == [64, 8, 8, 10]
    assert len(_metrics(out)) == 1


def test_config_yaml_of_a_run_reproduces_it(tmp_path, bioprop_main):
    first = tmp_path / "first"
    assert bioprop_main(["train", "--rule", "zil", "--hidden", "8", "--epochs", "1", "--seed", "5", "--quiet",
                         "--update-at", "layer", "--out", str(first)]) == 0
    second = tmp_path / "second"
    assert bioprop_main(["train", "--config", str(first / "config.yaml"), "--quiet", "--out", str(second)]) == 0
    assert _metrics(first) == _metrics(second)


def test_run_folder_files_exist_and_parse(tmp_path, bioprop_main, capsys):
    out = tmp_path / "run"
    args = ["train", "--rule", "zil", "--compare", "bp", "--hidden", "8", "--epochs", "2", "--eval-every", "2",
            "--dtype", "float64", "--out", str(out)]
    assert bioprop_main(args) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/2" in printed and "epoch 2/2" in printed and "max|dW|" in printed
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.yaml", "curves.png", "metrics.csv",
                                                     "metrics.jsonl", "model.pt", "summary.json"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # model.pt: the trained network's state_dict alone, loadable without unpickling code
    weights = torch.load(out / "model.pt", weights_only=True)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert weights.keys() == checkpoint["learner"]["net"].keys()
    assert all(torch.equal(weights[k], checkpoint["learner"]["net"][k]) for k in weights)
    loaded = bioprop.load_run(out)
    assert loaded.epoch == 2 and all(torch.equal(p, weights[k]) for k, p in loaded.net.state_dict().items())
    with open(out / "metrics.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    from_jsonl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row.keys() for row in table] == [record.keys() for record in from_jsonl]
    for row, record in zip(table, from_jsonl):
        for key, value in record.items():
            assert (row[key] == "") if value is None else (float(row[key]) == float(value)), key

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["rule"] == "zil" and config["compare"] == "bp" and config["dtype"] == "float64"
    assert config["resolved"]["rule"]["gamma"] == 1.0
    assert set(config["resolved"]["versions"]) >= {"bioprop", "torch"}

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "seconds", "compare_test_acc", "max_abs_diff",
                "max_rel_diff"):
        assert key in records[0]
    assert records[0]["test_acc"] is None and records[1]["test_acc"] is not None  # --eval-every 2

    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["test_acc"] == records[-1]["test_acc"] == summary["best_test_acc"]
    assert summary["compare"]["rule"] == "bp" and "test_acc_equal" in summary["compare"]
    assert summary["wall_seconds"] > 0

    checkpoint = _checkpoint(out)
    assert checkpoint["epoch"] == 2 and checkpoint["twin"] is not None
    assert checkpoint["config"]["hidden"] == [8]


def test_default_run_folder_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = train(TrainConfig(rule="bp", hidden=[8], epochs=1, seed=7, quiet=True))
    assert summary["run_dir"] == "runs/bp-digits-seed7"
    assert (tmp_path / "runs/bp-digits-seed7/summary.json").is_file()


def test_non_empty_out_is_refused_unless_overwrite(tmp_path, bioprop_main, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = ["train", "--rule", "bp", "--hidden", "8", "--epochs", "1", "--quiet", "--out", str(out)]
    assert bioprop_main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert bioprop_main([*args, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "summary.json").is_file()


BAD_INPUTS = [
    (["--rule", "nope"], "--rule 'nope'"),
    (["--rule", "bp", "--compare", "nope"], "--compare 'nope'"),
    (["--rule", "bp", "--dataset", "nope"], "--dataset 'nope'"),
    (["--rule", "bp", "--activation", "nope"], "--activation 'nope'"),
    (["--rule", "bp", "--loss", "nope"], "--loss 'nope'"),
    (["--rule", "bp", "--dtype", "float16"], "--dtype 'float16'"),
    (["--rule", "bp", "--epochs", "0"], "--epochs 0"),
    (["--rule", "bp", "--batch-size", "0"], "--batch-size 0"),
    (["--rule", "bp", "--lr", "0"], "--lr 0.0"),
    (["--rule", "bp", "--lr", "-0.1"], "--lr -0.1"),
    (["--rule", "bp", "--hidden", "0"], "--hidden 0"),
    (["--rule", "bp", "--gamma", "0.5"], "--gamma: rule 'bp' does not take this option"),
    (["--rule", "il", "--update-at", "3"], "--update-at: rule 'il' does not take this option"),
    (["--rule", "zil", "--gamma", "-1"], "gamma"),
    (["--hidden", "8"], "--rule: required"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS)
def test_bad_input_exits_2_naming_the_argument_and_leaves_no_folder(tmp_path, bioprop_main, capsys, args, message):
    out = tmp_path / "run"
    assert bioprop_main(["train", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cuda_without_cuda_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BioPropError, match="--device cuda"):
        train({**SMALL, "rule": "bp", "device": "cuda", "out": str(tmp_path / "run")})
    assert not (tmp_path / "run").exists()


def test_resume_without_checkpoint_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BioPropError, match="no checkpoint.pt"):
        train({"resume": str(tmp_path / "empty")})
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("missing.yaml", None, "file not found"),
        ("broken.yaml", "rule: [bp\n", "cannot parse"),
        ("broken.toml", "rule = \n", "cannot parse"),
        ("unknown.yaml", "rule: bp\nlearning_rate: 0.1\n", "unknown setting 'learning_rate'"),
        ("list.yaml", "- rule\n", "expected a mapping"),
        ("settings.json", "{}", "use .yaml, .yml or .toml"),
    ],
)
def test_bad_config_file(tmp_path, bioprop_main, capsys, name, text, message):
    config_file = tmp_path / name
    if text is not None:
        config_file.write_text(text)
    out = tmp_path / "run"
    assert bioprop_main(["train", "--config", str(config_file), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "--config" in error and message in error
    assert not out.exists()


def test_rule_option_flags_come_from_the_rules_signatures():
    specs = rule_option_specs()
    assert {"gamma", "n_steps", "init_noise", "update_at", "dynamics", "t_d", "change_tol"} <= set(specs)
    assert "lr" not in specs and "loss" not in specs
    assert specs["seed"].flag == "--rule-seed"  # clashes with the run's --seed
    assert specs["update_at"].parse("3") == 3 and specs["update_at"].parse("layer") == "layer"
    assert specs["gamma"].parse("1") == 1.0 and isinstance(specs["gamma"].parse("1"), float)
    assert set(specs["gamma"].rules) >= {"il", "zil", "fazil"}
