"""The four-synapse circuit's step against its floor: the products it cannot avoid, timed alone.

Interleaved in one process on 784-256-256-256-10 sigmoid, batch 64, float32: a plain PyTorch SGD
step (nn.Sequential, MSE, loss.backward(), SGD.step()), our `circuit` rule (r = 4), and the floor
of docs/circuit.md ("Cost"): exactly the products one circuit step needs, into buffers made once
(the forward pass; the feedback W̄_L e and, per hidden level, V_l eps_l, V̄_l hb_l and W̄_l hb_l
for l > 1; the plasticity G_l per level, W̄_l's Hebbian h_{l-1} hb_lᵀ for l > 1, X_l = hb_lᵀ P_l
once per hidden level), and BP's products (forward, feedback, weight VJPs) for scale.
Medians of the blocks, ms per step.

Usage: PYTHONPATH=src python benchmarks/circuit_floor.py [--threads 2] [--repeats 15]
"""
import argparse
import statistics
import time

import torch

import bioprop
from bioprop.batches import prechecked

from il_floor import plain_step  # noqa: E402 -- the same plain PyTorch reference as IL's floor

SIZES, BATCH, RATIO = [784, 256, 256, 256, 10], 64, 4


def product_floors(sizes, batch, ratio):
    """Closures running only the products of one circuit step and of one BP step."""
    n_hidden = len(sizes) - 2
    weights = [torch.randn(n_out, n_in) * 0.05 for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    biases = [torch.zeros(n) for n in sizes[1:]]
    rates = [torch.rand(batch, n) for n in sizes[:-1]]  # h_0 .. h_{L-1}
    outputs = [torch.empty(batch, n) for n in sizes[1:]]
    errors = [torch.randn(batch, n) for n in sizes[1:]]  # eps_1 .. eps_{L-1}, e
    grads = [torch.empty_like(w) for w in weights]
    widths = [ratio * n for n in sizes[1:-1]]  # m_1 .. m_{L-1}
    to_downstream = [torch.randn(m, n) * 0.05 for m, n in zip(widths, sizes[1:-1])]  # V_l: m x n
    to_teaching = [torch.randn(m, n) * 0.05 for m, n in zip(widths, sizes[1:-1])]  # V̄_lᵀ, stored m x n
    feedback = [torch.randn(m, n) * 0.05 for m, n in zip(widths[1:], sizes[1:-2])]  # W̄_lᵀ, l > 1
    top_feedback = torch.randn(sizes[-1], sizes[-2]) * 0.05  # W̄_Lᵀ
    downstream = [torch.empty(batch, m) for m in widths]
    teaching = [torch.empty(batch, n) for n in sizes[1:-1]]
    eps_below = [torch.empty(batch, n) for n in sizes[1:-2]]
    top_eps = torch.empty(batch, sizes[-2])
    hebbian = [torch.empty(n, m) for m, n in zip(widths[1:], sizes[1:-2])]
    cross = [torch.empty(m, n) for m, n in zip(widths, sizes[1:-1])]
    bp_feedback = [torch.empty(batch, n) for n in sizes[1:-1]]

    def forward():
        for l, weight in enumerate(weights):
            torch.addmm(biases[l], rates[l], weight.t(), out=outputs[l])

    def weight_vjps():
        for l, grad in enumerate(grads):
            torch.mm(errors[l].t(), rates[l], out=grad)

    def circuit():
        forward()
        torch.mm(errors[-1], top_feedback, out=top_eps)
        for l in range(n_hidden):
            torch.mm(errors[l], to_downstream[l].t(), out=downstream[l])
            torch.mm(downstream[l], to_teaching[l], out=teaching[l])
            if l > 0:
                torch.mm(downstream[l], feedback[l - 1], out=eps_below[l - 1])
                torch.mm(rates[l].t(), downstream[l], out=hebbian[l - 1])
            torch.mm(downstream[l].t(), errors[l], out=cross[l])
        weight_vjps()

    def bp():
        forward()
        for l in range(1, len(weights)):
            torch.mm(errors[l], weights[l], out=bp_feedback[l - 1])
        weight_vjps()

    return circuit, bp


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps-per-block", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = lambda: open("/proc/loadavg").read().split()[0]  # noqa: E731
    print(f"torch {torch.__version__}, {args.threads} threads, float32, sigmoid, "
          f"{'-'.join(map(str, SIZES))}, batch {BATCH}, r = {RATIO}; load {load()}")
    circuit_floor, bp_floor = product_floors(SIZES, BATCH, RATIO)
    net = bioprop.MLP(SIZES, activation="sigmoid", seed=0)
    rule = bioprop.make_rule("circuit", lr=0.01, loss="mse", ratio=RATIO)
    x, y = torch.rand(BATCH, SIZES[0]), torch.randint(0, SIZES[-1], (BATCH,))
    sides = {"plain": plain_step(SIZES, BATCH), "circuit": lambda: rule.step(net, x, y),
             "circuit products": circuit_floor, "BP products": bp_floor}
    times = {name: [] for name in sides}
    with prechecked():
        for round_ in range(args.repeats + 1):  # round 0 warms up
            for name, step in sides.items():
                with torch.enable_grad() if name == "plain" else torch.no_grad():
                    start = time.perf_counter()
                    for _ in range(args.steps_per_block):
                        step()
                    if round_:
                        times[name].append((time.perf_counter() - start) / args.steps_per_block * 1e3)
    ms = {name: statistics.median(values) for name, values in times.items()}
    print(f"ms per step, median of {args.repeats} blocks; load {load()}")
    for name, value in ms.items():
        print(f"  {name:<17} {value:7.2f}   x plain {value / ms['plain']:5.2f}")
    print(f"  circuit products / BP products: {ms['circuit products'] / ms['BP products']:.2f} (counted: 5.08);  "
          f"circuit / circuit products: {ms['circuit'] / ms['circuit products']:.2f}")


if __name__ == "__main__":
    main()
