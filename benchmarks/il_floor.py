"""IL's step against its floor: the matrix products it cannot avoid, timed alone.

Interleaved in one process, per network: a plain PyTorch SGD step (nn.Sequential, MSE,
loss.backward(), SGD.step()), our `bp` rule, our `il` (T = 20; eager, and with --compile the
torch.compile'd loop), and the floors: exactly the products each needs, into buffers made once
(IL: the forward pass, at each of the T steps A_l(r_{l-1}) and A_l^T eps_l for levels 2..L, at
t_c one weight VJP per level; BP: the forward pass, the feedback for levels 2..L, one weight
VJP per level; docs/rules.md, "IL's cost floor"). Medians of the blocks, ms per step.

Usage: PYTHONPATH=src python benchmarks/il_floor.py [--threads 2] [--repeats 15] [--compile]
"""
import argparse
import statistics
import time

import torch
from torch import nn

import bioprop
from bioprop.batches import prechecked

CASES = {
    "784-128-128-10, batch 128": ([784, 128, 128, 10], 128),
    "784-256-256-256-10, batch 64": ([784, 256, 256, 256, 10], 64),
}


def product_floor(sizes, batch, n_steps):
    """Closures running only the products of IL's presentation and of BP's step."""
    weights = [torch.randn(n_out, n_in) * 0.1 for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    biases = [torch.zeros(n) for n in sizes[1:]]
    rates = [torch.rand(batch, n) for n in sizes[:-1]]
    errors = [torch.randn(batch, n) for n in sizes[1:]]
    outputs = [torch.empty(batch, n) for n in sizes[1:]]
    feedback = [torch.empty(batch, n) for n in sizes[:-1]]
    grads = [torch.empty_like(w) for w in weights]
    levels = range(len(weights))

    def forward():
        for l in levels:
            torch.addmm(biases[l], rates[l], weights[l].t(), out=outputs[l])

    def weight_vjps():
        for l in levels:
            torch.mm(errors[l].t(), rates[l], out=grads[l])

    def il():
        forward()
        for _ in range(n_steps):
            for l in levels[1:]:
                torch.addmm(biases[l], rates[l], weights[l].t(), out=outputs[l])
                torch.mm(errors[l], weights[l], out=feedback[l])
        weight_vjps()

    def bp():
        forward()
        for l in levels[1:]:
            torch.mm(errors[l], weights[l], out=feedback[l])
        weight_vjps()

    return il, bp


def plain_step(sizes, batch):
    layers = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(n_in, n_out), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(batch, sizes[0]), torch.rand(batch, sizes[-1])

    def step():
        optimiser.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimiser.step()

    return step


def rule_step(name, sizes, batch, **options):
    net = bioprop.MLP(sizes, activation="sigmoid", seed=0)
    rule = bioprop.make_rule(name, lr=0.01, loss="mse", **options)
    x, y = torch.rand(batch, sizes[0]), torch.randint(0, sizes[-1], (batch,))
    return lambda: rule.step(net, x, y)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps-per-block", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time il with compile=True (compiles first)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, float32, sigmoid, IL T = 20, MSE; "
          f"load {open('/proc/loadavg').read().split()[0]}")
    for title, (sizes, batch) in CASES.items():
        il_floor, bp_floor = product_floor(sizes, batch, 20)
        sides = {"plain": plain_step(sizes, batch), "bp": rule_step("bp", sizes, batch),
                 "il": rule_step("il", sizes, batch, n_steps=20)}
        if args.compile:
            sides["il compiled"] = rule_step("il", sizes, batch, n_steps=20, compile=True)
        sides.update({"IL products": il_floor, "BP products": bp_floor})
        times = {name: [] for name in sides}
        with prechecked(), torch.no_grad():
            for name, step in sides.items():
                with torch.enable_grad() if name == "plain" else torch.no_grad():
                    for _ in range(3):
                        step()
            for _ in range(args.repeats):
                for name, step in sides.items():
                    with torch.enable_grad() if name == "plain" else torch.no_grad():
                        start = time.perf_counter()
                        for _ in range(args.steps_per_block):
                            step()
                        times[name].append((time.perf_counter() - start) / args.steps_per_block * 1e3)
        ms = {name: statistics.median(values) for name, values in times.items()}
        print(f"\n{title} (ms per step, median of {args.repeats} blocks; load "
              f"{open('/proc/loadavg').read().split()[0]})")
        for name, value in ms.items():
            print(f"  {name:<12} {value:7.2f}   x plain {value / ms['plain']:5.2f}")
        print(f"  IL products / BP products: {ms['IL products'] / ms['BP products']:.2f} (counted: "
              f"{'3.7' if sizes[1] == 128 else '7.5'});  il / IL products: {ms['il'] / ms['IL products']:.2f}"
              + (f";  il compiled / IL products: {ms['il compiled'] / ms['IL products']:.2f}" if args.compile else ""))


if __name__ == "__main__":
    main()
