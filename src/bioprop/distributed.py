"""Data-parallel training with torch.distributed: N processes compute what one process computes.

Started by torchrun (`torchrun --nproc-per-node N -m bioprop train ...`), each process holds the
whole network and the whole rule, and takes its shard of every global batch: the batch's rows are
split into N contiguous pieces in rank order (`torch.tensor_split`; the global order is the same
on every rank, since every rank draws it from the same seed). Each process takes its rule's step
on its shard; then the change of every tensor the step writes (the network's parameters and the
rule's own plastic tensors, `rule.plastic_tensors()`: KP's feedback, the circuit's downstream
pathway) is combined by one all-reduce,

    theta <- theta_before + sum_r (n_r / n) * (theta_r - theta_before),

the shard-size-weighted mean of the local changes. Every rule in bioprop writes the batch mean of
per-sample changes plus terms that do not depend on the batch (decay), so this is exactly the
change of one process on the whole batch, up to round-off (tested for bp, zil, kp and credit
in float64). Two exceptions are stated where they arise: the circuit normalises its V/V̄ increment
by a batch statistic (rho, the batch mean of ||eps||^2), which each process takes over its own
shard, so its downstream update differs from one process's by the spread of rho across shards;
and Fa-Z-IL pools its plasticity over the presentation whenever the global batch holds more than
one pair (its single-pair "immediate" mode has no data-parallel form).

Randomness that depends on the batch (IL's or Z-IL's init noise when C1 is broken on purpose) is
drawn for the global batch and sliced (`shard()` tells a rule which rows it holds), so every
rank consumes the same random numbers in the same order. Rule state beside the network (feedback
matrices, the circuit's pathway, generators) is drawn from the seed, hence identical on every
rank, and stays so because every rank applies the same combined change.

Backends: gloo on CPU, nccl on CUDA (each process on the GPU of its LOCAL_RANK). The process
group has a timeout (`BIOPROP_DIST_TIMEOUT`, seconds, default 300), so a rank that stops
answering ends the run with an error instead of a hang; torchrun itself ends the other ranks
when one fails.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .errors import BioPropError

Tensor = torch.Tensor

_SHARD: list["Shard"] = []


@dataclass(frozen=True)
class Shard:
    """The rows [start, start + size) of a global batch of `total` rows that this process holds."""

    start: int
    size: int
    total: int


def shard() -> Shard | None:
    """The shard of the global batch that the current data-parallel step holds (None outside one)."""
    return _SHARD[-1] if _SHARD else None


def global_batch_size(local_batch: int) -> int:
    """The global batch's size inside a data-parallel step, else `local_batch`."""
    current = shard()
    return current.total if current is not None else local_batch


def draw_for_batch(shape: Sequence[int], generator: torch.Generator | None, dtype=torch.float64) -> Tensor:
    """Standard normal noise of `shape` (batch first) drawn for the global batch and sliced to this
    process's rows, so N processes consume the random numbers one process does."""
    current = shard()
    if current is None:
        return torch.randn(tuple(shape), generator=generator, dtype=dtype)
    full = torch.randn((current.total, *shape[1:]), generator=generator, dtype=dtype)
    return full[current.start:current.start + current.size]


@contextlib.contextmanager
def _holding(current: Shard) -> Iterator[None]:
    _SHARD.append(current)
    try:
        yield
    finally:
        _SHARD.pop()


@dataclass
class Cluster:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def launched() -> bool:
        """True when torchrun (or another launcher) started this process as one of several."""
        return int(os.environ.get("WORLD_SIZE", "1")) > 1

    @classmethod
    def start(cls, device: torch.device) -> "Cluster":
        """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
        import torch.distributed as dist

        for variable in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            if variable not in os.environ:
                raise BioPropError(f"data-parallel run: ${variable} is not set; start the command with torchrun "
                                   "(torchrun --nproc-per-node N -m bioprop train ...)")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            if torch.cuda.device_count() <= local_rank:
                raise BioPropError(f"data-parallel run: LOCAL_RANK {local_rank} has no GPU ({torch.cuda.device_count()} "
                                   "visible); start at most one process per GPU")
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=float(os.environ.get("BIOPROP_DIST_TIMEOUT", "300")))
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=timeout)
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, device)

    def stop(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    # -- the pieces of a step --
    def shard_of(self, batch: int) -> Shard:
        """Contiguous rows in rank order, sizes differing by at most one (torch.tensor_split's)."""
        base, extra = divmod(batch, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return Shard(start, base + (1 if self.rank < extra else 0), batch)

    def sum(self, values: Tensor) -> Tensor:
        """The element-wise sum over ranks (in place, returned)."""
        import torch.distributed as dist

        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def step(self, rule, net, x: Tensor, y: Tensor) -> "DataParallelStep":
        """One data-parallel step of `rule` on the global batch (x, y): see the module docstring.
        The batch loss and the count of correct outputs are reduced in the same all-reduce, so
        every rank sees the global batch's figures (and takes the same decisions on them)."""
        if x.shape[0] < self.world_size:  # every rank sees the same size: all raise, none hangs
            raise BioPropError(f"data-parallel step: a batch of {x.shape[0]} rows for {self.world_size} processes leaves "
                               "a process without rows; give every batch at least one row per process")
        current = self.shard_of(x.shape[0])
        rows = slice(current.start, current.start + current.size)
        rule.prepare(net, x[rows] if current.size else x[:1])  # lazily drawn state exists before the snapshot
        parameters = list(net.parameters_list())
        before = [t.detach().clone() for t in parameters + list(rule.plastic_tensors())]
        weight = current.size / current.total
        # one buffer in the parameters' dtype (a float32 net sends float32); the loss and the correct
        # count ride along (counts are exact in float32 up to 2^24 per batch)
        figures = torch.zeros(2, dtype=parameters[0].dtype, device=x.device)
        result = None
        if current.size:
            with _holding(current):
                result = rule.step(net, x[rows], y[rows])
            labels = y[rows] if y.ndim == 1 else y[rows].argmax(dim=1)
            figures[0] = torch.as_tensor(result["loss"]).to(figures.dtype) * weight
            figures[1] = (result["output"].argmax(dim=1) == labels).sum()
        # the rule may have rebound its plastic tensors (new lists) or made new ones (a first step)
        tensors = parameters + list(rule.plastic_tensors())
        before += [torch.zeros_like(t) for t in tensors[len(before):]]
        with torch.no_grad():
            changes = torch.cat([((t.detach() - b) * weight).reshape(-1).to(figures.dtype) for t, b in zip(tensors, before)]
                                + [figures])
            self.sum(changes)
            offset = 0
            for tensor, start in zip(tensors, before):
                count = start.numel()
                tensor.copy_(start + changes[offset:offset + count].view_as(start).to(start.dtype))
                offset += count
        return DataParallelStep(result, current, changes[-2].to(torch.float64), changes[-1])


@dataclass
class DataParallelStep:
    """What one data-parallel step gives every rank: the rule's result on its own shard (None
    for an empty shard), the shard, and the global batch's loss and correct count."""

    local: object
    shard: Shard
    loss: Tensor  # 0-d, float64: read on the host only when needed (no sync per step)
    correct: Tensor


__all__ = ["Cluster", "DataParallelStep", "Shard", "draw_for_batch", "global_batch_size", "shard"]
