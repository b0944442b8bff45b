"""IL's inference steps as a `Relaxation` give the plain loop's numbers bit for bit; compile=True
gives them to round-off.

The oracle is the loop of `advance` (every prediction recomputed each step, new buffers each
step), on MLPs (sigmoid and tanh, whose kernels the Relaxation writes into buffers; relu, which
goes through the level interface), wrapped conv nets, a wrapped MLP without biases and an Elman
RNN, in float64 and float32, with MSE, the moving and the fixed cross-entropy teacher, and noisy
starts. The negative control moves gamma by one ulp: the bitwise comparison sees it.

The compiled loop is not bit for bit (inductor's fused kernels evaluate sigmoid and tanh with
their own vectorised exp): it is held to 1e-12 relative in float64. Its tests compile (33-36 s
per network on our 2 shared cores with inductor's on-disk cache cold, 3-9 s warm: more than a
unit test may take), so they run only with BIOPROP_COMPILE_TESTS=1.
"""
import math
import os

import pytest
import torch
from torch import nn

import bioprop
from bioprop.errors import BioPropError
from bioprop.rules import predictive_coding
from bioprop.rules.predictive_coding import (
    Plasticity, Relaxation, ValueClamp, advance, clamp_output, feedforward_state, make_teacher, noisy_start,
    write_schedule,
)

pytestmark = pytest.mark.usefixtures("one_thread")

compile_tests = pytest.mark.skipif(os.environ.get("BIOPROP_COMPILE_TESTS") != "1",
                                   reason="torch.compile takes 30-40 s per network here (cold cache): BIOPROP_COMPILE_TESTS=1")


def plain_loop(net, x, targets, loss, *, gamma, n_steps, lr, init_noise=0.0, seed=0, fixed_error=False):
    """IL's presentation as the plain loop of `advance`: T inference steps, the update at t_c = T."""
    state = feedforward_state(net, x)
    teacher = make_teacher(loss, targets, state.value_nodes[-1], fixed_error=fixed_error)
    plasticity = Plasticity(net, state.levels, lr / x.shape[0], write_schedule(net, state.levels, "pooled", True))
    state = noisy_start(state, init_noise, torch.Generator().manual_seed(seed))
    if isinstance(teacher, ValueClamp):
        state = clamp_output(state, teacher)
    gate = lambda t, errors, predictions: [1.0 if t == n_steps else None] * len(errors)  # noqa: E731
    for t in range(n_steps + 1):
        state, _, _ = advance(state, teacher, plasticity, t=t, gamma=gamma, gate=gate, output_free=False,
                              infer=t < n_steps)
    plasticity.finish()


def targets_for(rule, net, y, dtype):
    return nn.functional.one_hot(y, net.output_size).to(dtype) if y.dtype == torch.long else y


def run_both(net, x, y, *, dtype, presentations=3, **options):
    """The rule's step (the Relaxation) and the plain loop on a twin; both nets afterwards."""
    twin = net.clone()
    options = {"lr": 0.1, "gamma": 0.2, "n_steps": 6, **options}
    rule = bioprop.make_rule("il", **options)
    with torch.no_grad():
        for _ in range(presentations):
            rule.step(net, x, y)
            plain_loop(twin, x, targets_for(rule, net, y, dtype), rule.loss, gamma=rule.gamma, n_steps=rule.n_steps,
                       lr=rule.lr, init_noise=rule.init_noise, seed=rule.seed, fixed_error=rule.ce_teacher == "fixed")
            if rule.init_noise:  # the oracle draws afresh from the seed: keep the rule's draws in step
                rule._noise.manual_seed(rule.seed)
    return net, twin


def same_bits(net, twin):
    return all(torch.equal(a, b) for a, b in zip(net.parameters_list(), twin.parameters_list()))


def mlp_batch(activation, dtype, loss="mse", batch=9):
    # widths that exercise the vector kernels and their scalar tails
    net = bioprop.MLP([40, 33, 17, 10], activation=activation, dtype=dtype, seed=0)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 40, generator=generator, dtype=dtype)
    y = torch.randint(0, 10, (batch,), generator=generator)
    return net, x, y


def conv_net(dtype):
    torch.manual_seed(0)
    return bioprop.wrap(nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.Flatten(),
        nn.Linear(16, 7), nn.Tanh(), nn.Linear(7, 3),
    ).to(dtype))


def unbiased_mlp(dtype):
    torch.manual_seed(0)
    return bioprop.wrap(nn.Sequential(
        nn.Linear(12, 9, bias=False), nn.Sigmoid(), nn.Linear(9, 8), nn.Tanh(), nn.Linear(8, 5, bias=False),
        nn.ReLU(), nn.Linear(5, 3, bias=False),
    ).to(dtype))


DTYPES = [torch.float64, torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("activation, loss, teacher", [
    ("sigmoid", "mse", "moving"), ("sigmoid", "ce", "moving"), ("sigmoid", "ce", "fixed"), ("tanh", "mse", "moving"),
    ("relu", "ce", "moving"),
])
def test_mlp_relaxation_is_the_plain_loop_bit_for_bit(dtype, activation, loss, teacher):
    net, x, y = mlp_batch(activation, dtype)
    assert same_bits(*run_both(net, x, y, dtype=dtype, loss=loss, ce_teacher=teacher))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_noisy_start_relaxation_is_the_plain_loop_bit_for_bit(dtype):
    # init_noise moves the t = 0 state off the forward pass: the first step computes its predictions
    net, x, y = mlp_batch("sigmoid", dtype)
    assert same_bits(*run_both(net, x, y, dtype=dtype, init_noise=0.3, seed=4))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("make, shape", [(conv_net, (2, 8, 8)), (unbiased_mlp, (12,))], ids=["conv", "unbiased"])
def test_wrapped_relaxation_is_the_plain_loop_bit_for_bit(dtype, make, shape):
    net = make(dtype)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(5, *shape, generator=generator, dtype=dtype)
    targets = torch.randn(5, 3, generator=generator, dtype=dtype)
    for loss, y in [("mse", targets), ("ce", torch.tensor([0, 2, 1, 1, 0]))]:
        assert same_bits(*run_both(net, x, y, dtype=dtype, loss=loss))


def test_rnn_relaxation_is_the_plain_loop_bit_for_bit():
    net = bioprop.ElmanRNN(3, 4, 3, activation="tanh", dtype=torch.float64, seed=0)
    x = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert same_bits(*run_both(net, x, torch.tensor([0, 1, 2, 1]), dtype=torch.float64, loss="ce"))


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_one_level_and_one_hidden_level_nets_are_the_plain_loop_bit_for_bit(loss):
    generator = torch.Generator().manual_seed(5)
    x, y = torch.rand(6, 7, generator=generator, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    for sizes in ([7, 3], [7, 4, 3]):
        net = bioprop.MLP(sizes, activation="sigmoid", dtype=torch.float64, seed=0)
        assert same_bits(*run_both(net, x, y, dtype=torch.float64, loss=loss))


def test_a_gamma_one_ulp_away_is_seen():
    # negative control: the bitwise comparison is sharp enough to see one ulp of gamma
    net, x, y = mlp_batch("sigmoid", torch.float64)
    twin = net.clone()
    with torch.no_grad():
        bioprop.make_rule("il", lr=0.1, gamma=math.nextafter(0.2, 1.0), n_steps=6).step(net, x, y)
        plain_loop(twin, x, nn.functional.one_hot(y, 10).double(), bioprop.make_rule("il").loss, gamma=0.2,
                   n_steps=6, lr=0.1)
    assert not same_bits(net, twin)


def test_step_runs_the_relaxation_with_buffered_kernels_on_an_mlp(monkeypatch):
    # the comparisons above would hold vacuously if step() still ran the plain loop
    built = []
    original = Relaxation.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Relaxation, "__init__", recording)
    net, x, y = mlp_batch("sigmoid", torch.float64)
    bioprop.make_rule("il", n_steps=4).step(net, x, y)
    assert len(built) == 1
    relaxation = built[0]
    # sigmoid rates and Linear predictions live in buffers made once (no level allocates per step)
    assert all(isinstance(rate, torch.Tensor) for rate in relaxation.rates)
    assert all(isinstance(mu, torch.Tensor) for mu in relaxation.predictions)
    # a trace keeps every state: then the plain loop runs
    bioprop.make_rule("il", n_steps=4).step(net, x, y, trace=True)
    assert len(built) == 1


def test_compile_option_is_checked_and_a_failing_backend_is_named(monkeypatch):
    with pytest.raises(BioPropError, match="compile='yes': give True or False"):
        bioprop.make_rule("il", compile="yes")

    def no_compiler(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(predictive_coding, "_compiled_held_steps", no_compiler)
    net, x, y = mlp_batch("sigmoid", torch.float64)
    with pytest.raises(BioPropError, match="compile=True: torch.compile failed.*No working C.. compiler.*=False"):
        bioprop.make_rule("il", compile=True).step(net, x, y)


@compile_tests
@pytest.mark.parametrize("make, shape", [(lambda dtype: bioprop.MLP([12, 9, 8, 3], activation="sigmoid", dtype=dtype,
                                                                   seed=0), (12,)),
                                         (conv_net, (2, 8, 8))], ids=["mlp", "conv"])
def test_compiled_loop_equals_eager_to_round_off(make, shape):
    net = make(torch.float64)
    eager = net.clone()
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(5, *shape, generator=generator, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 1, 0])
    compiled_rule = bioprop.make_rule("il", lr=0.1, gamma=0.2, n_steps=6, loss="ce", compile=True)
    eager_rule = bioprop.make_rule("il", lr=0.1, gamma=0.2, n_steps=6, loss="ce")
    for _ in range(2):
        compiled_rule.step(net, x, y)
        eager_rule.step(eager, x, y)
    moved = max(float((a - b).detach().norm() / b.detach().norm())
                for a, b in zip(eager.parameters_list(), make(torch.float64).parameters_list()))
    gap = max(float((a - b).detach().norm() / b.detach().norm())
              for a, b in zip(net.parameters_list(), eager.parameters_list()))
    assert moved > 1e-4  # the weights did move: the check compares two trainings, not two copies
    assert gap <= 1e-12
