"""bioprop.training: the one loop. One seed gives the same batches in every command that trains;
divergence stops at the first non-finite step; test evaluation follows eval_every.

Oracle for the batch order: the convention restated here independently (numpy's SeedSequence
for the order seed, torch.randperm per epoch, consecutive batches), recorded from each command.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bioprop import training
from bioprop.data import load_dataset
from bioprop.network import MLP
from bioprop.rules import make_rule
from bioprop.rules.bp import BackpropRule
from bioprop.train import train
from bioprop.training import Learner, train_epochs

SEED, BATCH, EPOCHS = 4, 32, 2


def _documented_order(n: int, seed: int, epochs: int) -> list[torch.Tensor]:
    order_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1, dtype=np.uint64)[0] >> 1)
    generator = torch.Generator().manual_seed(order_seed)
    return [torch.randperm(n, generator=generator) for _ in range(epochs)]


@pytest.fixture
def recorded_orders(monkeypatch):
    """Every epoch's batches as drawn by the loop: (batch sizes, the concatenated order)."""
    seen: list[tuple[list[int], torch.Tensor]] = []
    draw = training.epoch_batches

    def recording(n, batch_size, shuffle, device=None):
        batches = draw(n, batch_size, shuffle, device)
        seen.append(([len(b) for b in batches], torch.cat(batches)))
        return batches

    monkeypatch.setattr(training, "epoch_batches", recording)
    return seen


def test_one_seed_gives_the_same_batches_in_every_command(tmp_path, recorded_orders):
    from bioprop.experiments import fan2024_predictions, liao2024, song2020_ablation

    data = load_dataset("digits")
    runs = {}

    def record(label, job):
        recorded_orders.clear()
        job()
        runs[label] = list(recorded_orders)

    record("bioprop train", lambda: train({"rule": "bp", "hidden": [8], "epochs": EPOCHS, "batch_size": BATCH,
                                           "seed": SEED, "quiet": True, "out": str(tmp_path / "run")}))
    record("liao2024", lambda: liao2024.train_run(data, "bp", [8], SEED, EPOCHS, BATCH, 0.05))
    net = MLP([64, 8, 10], activation="sigmoid", dtype=torch.float64, seed=SEED)
    record("song2020 ablation", lambda: song2020_ablation.train_curve(
        net, make_rule("bp", lr=0.1), data.train_x.double(), data.train_y, data.test_x.double(), data.test_y,
        SEED, BATCH, EPOCHS))
    settings = {**fan2024_predictions.QUICK, "hidden": [8], "epochs": EPOCHS, "batch": BATCH, "seed": SEED}
    record("fan2024 predictions", lambda: fan2024_predictions.train_network(settings, data))

    expected = _documented_order(data.train_x.shape[0], SEED, EPOCHS)
    sizes = [BATCH] * (data.train_x.shape[0] // BATCH) + [data.train_x.shape[0] % BATCH]
    for label, epochs in runs.items():
        assert len(epochs) == EPOCHS, label
        for (batch_sizes, order), documented in zip(epochs, expected):
            assert batch_sizes == sizes, label
            assert torch.equal(order, documented), label
    # negative control: another seed gives another order
    assert not torch.equal(_documented_order(data.train_x.shape[0], SEED + 1, 1)[0], expected[0])


class _BlowsUpAt(BackpropRule):
    """BP whose first weight matrix becomes `value` just before its `at`-th step."""

    def __init__(self, at: int, value: float, **options):
        super().__init__(**options)
        self.at, self.value, self.calls = at, value, 0

    def step(self, net, x, y, trace=False):
        self.calls += 1
        if self.calls == self.at:
            with torch.no_grad():
                net.parameters_list()[0].fill_(self.value)
        return super().step(net, x, y, trace)


def _toy_data(n: int = 40):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 4, generator=generator, dtype=torch.float64)
    return x, (x.sum(dim=1) > 2).long()


def test_divergence_stops_at_the_first_non_finite_step_and_is_the_last_epoch():
    x, y = _toy_data()
    rule = _BlowsUpAt(at=7, value=math.nan, lr=0.1, loss="ce")  # 4 steps per epoch: step 3 of epoch 2
    learners = [Learner(MLP([4, 3, 2], dtype=torch.float64, seed=0), rule, name="toy")]
    results = list(train_epochs(learners, x, y, epochs=5, batch_size=10, shuffle=torch.Generator().manual_seed(0),
                                test=(x, y)))
    assert [r.epoch for r in results] == [1, 2]
    assert not results[0].diverged and results[0].steps == 4
    assert results[1].diverged and results[1].steps == 3 and rule.calls == 7
    assert results[1].divergence.startswith("the training loss of toy became") and "at step 3" in results[1].divergence
    assert results[1].metrics[0].test_loss is not None  # evaluated on divergence, though not due
    # control: the same run without the blow-up trains all 5 epochs
    healthy = list(train_epochs([Learner(MLP([4, 3, 2], dtype=torch.float64, seed=0), make_rule("bp", lr=0.1, loss="ce"))],
                                x, y, epochs=5, batch_size=10, shuffle=torch.Generator().manual_seed(0), test=(x, y)))
    assert [r.epoch for r in healthy] == [1, 2, 3, 4, 5] and not any(r.diverged for r in healthy)


def test_non_finite_weights_under_a_finite_loss_end_the_epoch_as_diverged():
    # inf weights into saturating sigmoids keep the loss finite; the end-of-epoch check sees them
    x, y = _toy_data()
    rule = _BlowsUpAt(at=6, value=math.inf, lr=0.1, loss="ce")
    learners = [Learner(MLP([4, 3, 2], dtype=torch.float64, seed=0), rule, name="toy")]
    results = list(train_epochs(learners, x, y, epochs=5, batch_size=10, shuffle=torch.Generator().manual_seed(0)))
    assert [r.epoch for r in results] == [1, 2] and results[1].steps == 4
    assert results[1].divergence == "a parameter of toy became non-finite"


def test_test_set_is_evaluated_every_eval_every_epochs_and_after_the_last():
    x, y = _toy_data()
    learners = [Learner(MLP([4, 3, 2], dtype=torch.float64, seed=0), make_rule("bp", lr=0.1, loss="ce"))]
    results = list(train_epochs(learners, x, y, epochs=5, batch_size=16, shuffle=torch.Generator().manual_seed(1),
                                test=(x, y), eval_every=2))
    assert [r.metrics[0].test_acc is not None for r in results] == [False, True, False, True, True]
    assert all(r.steps == 3 for r in results)  # 16 + 16 + 8: the partial batch is kept


def test_learners_take_their_steps_on_the_same_batches():
    x, y = _toy_data()
    net = MLP([4, 3, 2], dtype=torch.float64, seed=0)
    learners = [Learner(net, make_rule("bp", lr=0.1, loss="ce")), Learner(net.clone(), make_rule("bp", lr=0.1, loss="ce"))]
    for result in train_epochs(learners, x, y, epochs=2, batch_size=8, shuffle=torch.Generator().manual_seed(2)):
        assert result.metrics[0] == result.metrics[1]
    assert training.weight_difference(learners[0].net, learners[1].net) == (0.0, 0.0)
    # control: a twin with another learning rate drifts
    other = Learner(MLP([4, 3, 2], dtype=torch.float64, seed=0), make_rule("bp", lr=0.2, loss="ce"))
    list(train_epochs([other], x, y, epochs=2, batch_size=8, shuffle=torch.Generator().manual_seed(2)))
    assert training.weight_difference(learners[0].net, other.net)[0] > 1e-6
