"""Run under torchrun by tests/test_distributed.py: train each rule data-parallel and save the weights.

Not a test module itself (no test_ prefix): `python -m torch.distributed.run --nproc-per-node 2
tests/distributed_worker.py OUT.pt` writes {rule: [parameters after the steps]} from rank 0.
"""
import sys

import torch

import bioprop
from bioprop.distributed import Cluster
from tests_distributed_cases import CASES, batches, make_net  # noqa: E402  (beside this file)


def main(out: str) -> None:
    cluster = Cluster.start(torch.device("cpu"))
    results = {}
    for name, (rule_name, options, model) in CASES.items():
        net = make_net(model)
        rule = bioprop.make_rule(rule_name, lr=0.1, loss="ce", **options)
        for x, y in batches(model):
            cluster.step(rule, net, x, y)
        results[name] = [p.detach().clone() for p in net.parameters_list()] + [t.clone() for t in rule.plastic_tensors()]
    if cluster.is_main:
        torch.save(results, out)
    cluster.barrier()
    cluster.stop()


if __name__ == "__main__":
    main(sys.argv[1])
