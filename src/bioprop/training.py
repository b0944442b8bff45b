"""The one training loop: `bioprop train` and every experiment that trains call `train_epochs`.

    shuffle = shuffle_generator(seed)
    learners = [Learner(net, rule), Learner(net.clone(), make_rule("bp", lr=0.1))]
    for epoch in train_epochs(learners, train_x, train_y, epochs=10, batch_size=16, shuffle=shuffle,
                              test=(test_x, test_y)):
        print(epoch.epoch, epoch.metrics[0].test_acc, epoch.divergence)

Batch order (one convention, so that one seed gives the same batches in every command): each
epoch draws `torch.randperm(N, generator=shuffle)` and cuts it into consecutive batches of
`batch_size` (the last, partial batch is kept); `shuffle` is a torch.Generator seeded with
`shuffle_seed(seed)`, a seed derived from the run's seed but independent of the weights' draw.
The generator is the caller's, so a checkpoint that saves its state resumes the same order.

One epoch: for every batch, each learner in turn takes one step of its rule on the same batch
(x, y) (`before_step(epoch, step, x, y)` runs first, e.g. to measure diagnostics); then the
epoch's metrics per learner: mean step loss (the loss before each update, averaged over
batches), training accuracy of those outputs, and, when evaluated, the test loss and accuracy
of the network after the epoch (`evaluate`). Test evaluation runs every `eval_every` epochs,
always after the last epoch, and on divergence.

Divergence: training stops inside the epoch at the first step whose loss is not finite, and an
epoch also diverges when a learner's test loss or a parameter is not finite afterwards. The
epoch's `EpochResult.divergence` says which learner and what; it is the last epoch yielded.
What to do about it is the caller's: the trainer keeps the last good checkpoint and raises
`TrainingDiverged`, the experiments record the run as diverged.

No host synchronisation per step: the data are checked once (`bioprop.batches.check_data`:
finite inputs, labels in range) and the steps run inside `bioprop.batches.prechecked()`, so the
rules skip their per-batch checks (every step reports its loss as a 0-d tensor); the losses and correct
counts are summed as tensors. The losses are read back every `divergence_check_every` steps
(default: every step on the CPU, where reading a computed tensor waits for nothing; every
DIVERGENCE_CHECK_EVERY steps on an accelerator) and at the epoch's end; the divergence message
names the first non-finite step either way, and on an accelerator up to that many - 1 steps
more may have run on the diverged weights before the epoch stops.

Inputs are given in the layout the networks read (flattened rows, (N, C, H, W) images, (N, T, n)
sequences: see `bioprop.models.shape_batch`); only the first dimension is indexed here.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .batches import check_data, prechecked
from .errors import BioPropError
from .network import Network
from .rules.base import LearningRule

Tensor = torch.Tensor

_EVAL_CHUNK = 8192
#: steps between reads of the loss on an accelerator (see the module docstring)
DIVERGENCE_CHECK_EVERY = 50


class TrainingDiverged(BioPropError):
    """A run's loss or weights became non-finite (the CLI reports it and exits with status 2)."""


def shuffle_seed(seed: int) -> int:
    """A seed for the batch order independent of the weights' seed (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1, dtype=np.uint64)[0] >> 1)


def shuffle_generator(seed: int) -> torch.Generator:
    """The batch-order generator of a run seeded with `seed` (see the module docstring)."""
    return torch.Generator().manual_seed(shuffle_seed(seed))


def epoch_batches(n: int, batch_size: int, shuffle: torch.Generator, device: torch.device | None = None) -> tuple[Tensor, ...]:
    """One epoch's batches: index tensors into the N training pairs (draws once from `shuffle`)."""
    order = torch.randperm(n, generator=shuffle)
    return (order if device is None else order.to(device)).split(batch_size)


def evaluate(net: Network, loss, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(mean loss, accuracy) of `net` on labelled data (x in the net's layout), in no_grad, in chunks."""
    n_out = net.output_size
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, x.shape[0], _EVAL_CHUNK):
            inputs, labels = x[start:start + _EVAL_CHUNK], y[start:start + _EVAL_CHUNK]
            output = net(inputs)
            targets = torch.nn.functional.one_hot(labels, n_out).to(output.dtype)
            total_loss += float(loss.per_sample(output, targets).sum())
            correct += int((output.argmax(dim=1) == labels).sum())
    return total_loss / x.shape[0], correct / x.shape[0]


def weight_difference(net: Network, twin: Network) -> tuple[float, float]:
    """(max absolute, max relative) difference between corresponding parameters:
    max_l max |P_l - P'_l|, and max_l max |P_l - P'_l| / max |P'_l| (relative to each twin
    tensor's largest magnitude, so zero-initialised biases do not divide by 0)."""
    largest_abs, largest_rel = 0.0, 0.0
    for mine, theirs in zip(net.parameters_list(), twin.parameters_list()):
        gap = float((mine.detach() - theirs.detach()).abs().max())
        scale = float(theirs.detach().abs().max())
        largest_abs = max(largest_abs, gap)
        largest_rel = max(largest_rel, gap / scale if scale > 0 else (0.0 if gap == 0 else math.inf))
    return largest_abs, largest_rel


def parameters_finite(net: Network) -> bool:
    return bool(torch.stack([torch.isfinite(p.detach()).all() for p in net.parameters_list()]).all())


@dataclass
class LearnerMetrics:
    """One learner's figures for one epoch (test figures None when the epoch was not evaluated)."""

    train_loss: float
    train_acc: float
    test_loss: float | None = None
    test_acc: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {"train_loss": self.train_loss, "train_acc": self.train_acc,
                "test_loss": self.test_loss, "test_acc": self.test_acc}


@dataclass
class EpochResult:
    """What `train_epochs` yields after each epoch."""

    epoch: int
    metrics: list[LearnerMetrics]  # one per learner, in the order given
    steps: int                     # training steps taken this epoch (per learner)
    seconds: float
    divergence: str | None = None  # why training stopped here, or None

    @property
    def diverged(self) -> bool:
        return self.divergence is not None


@dataclass
class Learner:
    """A network and the rule that trains it, with the running totals of the current epoch.

    Its checkpoint (`state()`) is the network's state_dict and the rule's state_dict: a rule
    keeps everything it needs to resume bit for bit (feedback matrices, noise generators) there."""

    net: Network
    rule: LearningRule
    name: str = ""
    #: a torch.distributed job this learner trains in (bioprop.distributed.Cluster), or None
    cluster: Any = None
    loss_sum: Tensor | float = 0.0  # float64 sum of the step losses (a tensor after the first step)
    batches: int = 0
    seen: int = 0
    correct: Tensor | int = 0

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        """One step of the rule on (x, y); returns the batch loss (data-parallel: the global
        batch's) as a 0-d float64 tensor, without reading it on the host."""
        if self.cluster is not None:
            combined = self.cluster.step(self.rule, self.net, x, y)
            loss, correct = combined.loss, combined.correct
        else:
            result = self.rule.step(self.net, x, y)
            # a 0-d tensor (no host read); float64 so the sum rounds as the Python float sum of
            # the float losses did
            loss = torch.as_tensor(result["loss"], dtype=torch.float64, device=result["output"].device)
            correct = (result["output"].argmax(dim=1) == y).sum()
        self.loss_sum = self.loss_sum + loss
        # the correct count stays a tensor until the epoch ends: no host sync per step
        self.correct = self.correct + correct
        self.seen += y.shape[0]
        self.batches += 1
        return loss

    def epoch_metrics(self) -> LearnerMetrics:
        metrics = LearnerMetrics(train_loss=float(self.loss_sum) / max(self.batches, 1),
                                 train_acc=int(self.correct) / max(self.seen, 1))
        self.loss_sum, self.correct, self.seen, self.batches = 0.0, 0, 0, 0
        return metrics

    def state(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "rule": self.rule.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.rule.load_state_dict(state["rule"])
        # checkpoints written before rules saved their generators in state_dict carry them apart
        for name, generator_state in state.get("rule_generators", {}).items():
            generator = getattr(self.rule, name, None)
            if isinstance(generator, torch.Generator):
                generator.set_state(generator_state)


def _describe(learner: Learner, index: int) -> str:
    return learner.name or getattr(learner.rule, "name", None) or f"learner {index + 1}"


def _first_non_finite(learners: Sequence[Learner], unread: list[list[Tensor]], steps: int) -> str | None:
    """Read the losses of the steps since the last read (one host read for all of them); the
    first non-finite one, per step and then per learner, as a divergence message, or None."""
    first_step = steps - len(unread[0]) + 1
    losses = torch.stack([torch.stack(per_learner) for per_learner in unread])  # (learners, steps)
    for per_learner in unread:
        per_learner.clear()
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return None
    bad_step = int((~finite).any(dim=0).nonzero()[0, 0])
    number = int((~finite[:, bad_step]).nonzero()[0, 0])
    return (f"the training loss of {_describe(learners[number], number)} became {float(losses[number, bad_step])} "
            f"at step {first_step + bad_step}")


def train_epochs(
    learners: Sequence[Learner],
    train_x: Tensor,
    train_y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    shuffle: torch.Generator,
    test: tuple[Tensor, Tensor] | None = None,
    first_epoch: int = 1,
    eval_every: int = 1,
    before_step: Callable[[int, int, Tensor, Tensor], None] | None = None,
    progress: bool = False,
    divergence_check_every: int | None = None,
) -> Iterator[EpochResult]:
    """Train every learner on the same batches for epochs first_epoch .. epochs; yield after each.

    See the module docstring for the batch order, the metrics and divergence (and
    `divergence_check_every`: None = every step on the CPU, DIVERGENCE_CHECK_EVERY elsewhere).
    `progress`: a tqdm bar over each epoch's batches on stderr (shown only on a terminal)."""
    n_train = int(train_x.shape[0])
    if learners:
        net = learners[0].net  # a Network, or a RateNetwork (the credit rule's dense circuit)
        check_data(train_x, train_y, getattr(net, "output_size", None) or getattr(net, "n_outputs"))
    if divergence_check_every is None:
        on_cpu = train_x.device.type == "cpu" and all(learner.net.device.type == "cpu" for learner in learners)
        divergence_check_every = 1 if on_cpu else DIVERGENCE_CHECK_EVERY
    for epoch in range(first_epoch, epochs + 1):
        start = time.perf_counter()
        batches = epoch_batches(n_train, batch_size, shuffle, train_x.device)
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, file=sys.stderr,
                   disable=True if not progress else None)
        divergence, steps = None, 0
        unread: list[list[Tensor]] = [[] for _ in learners]  # per learner: losses since the last read
        for batch_index, index in enumerate(bar):
            x, y = train_x[index], train_y[index]
            if before_step is not None:
                before_step(epoch, (epoch - 1) * len(batches) + batch_index, x, y)
            for losses, learner in zip(unread, learners):
                with prechecked():
                    losses.append(learner.step(x, y))
            steps += 1
            if steps % divergence_check_every == 0 or steps == len(batches):
                divergence = _first_non_finite(learners, unread, steps)
                if divergence is not None:
                    break
        bar.close()
        metrics = [learner.epoch_metrics() for learner in learners]
        if divergence is None:
            for number, learner in enumerate(learners):
                if not parameters_finite(learner.net):
                    divergence = f"a parameter of {_describe(learner, number)} became non-finite"
                    break
        if test is not None and (epoch % eval_every == 0 or epoch == epochs or divergence is not None):
            for number, (learner, figures) in enumerate(zip(learners, metrics)):
                figures.test_loss, figures.test_acc = evaluate(learner.net, learner.rule.loss, *test)
                if divergence is None and not math.isfinite(figures.test_loss):
                    divergence = f"the test loss of {_describe(learner, number)} became {figures.test_loss}"
        yield EpochResult(epoch, metrics, steps, time.perf_counter() - start, divergence)
        if divergence is not None:
            return


__all__ = ["EpochResult", "Learner", "LearnerMetrics", "TrainingDiverged", "epoch_batches", "evaluate",
           "parameters_finite", "shuffle_generator", "shuffle_seed", "train_epochs", "weight_difference"]
