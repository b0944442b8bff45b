"""Fa-Z-IL's pooled step: the front, then only the cone behind it that can reach a firing.

Oracles: the dense simulation (simulation="dense", every node of every level at every step),
bit for bit (torch.equal) on weights, detection counts, loss and output; for the planner, a
brute-force closure of the dynamics' dependency graph. Each equality test checks that the
pooled path ran (events+reflections) and that the dense reference fired behind the front where
the case is about late firings, so it is not vacuous. Negative controls: the same step with the
planner told that silent neurons cannot fire, or that t_d is longer than it is, misses the
dense simulation's late firings.
"""
import pytest
import torch
from torch import nn

import bioprop
from bioprop.models import build_model
from bioprop.rules import fazil
from bioprop.rules.fazil import plan_region


pytestmark = pytest.mark.usefixtures("one_thread")


def batch_for(net, input_shape, loss, batch, dtype, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *input_shape, generator=generator, dtype=torch.float64).to(dtype)
    if loss == "ce":
        y = torch.randint(0, net.output_size, (batch,), generator=generator)
    else:
        y = torch.randn(batch, net.output_size, generator=generator, dtype=torch.float64).to(dtype)
    return x, y


def run(make, input_shape, simulation, loss, batch, dtype, steps=2, **options):
    net = make()
    x, y = batch_for(net, input_shape, loss, batch, dtype)
    rule = bioprop.make_rule("fazil", lr=0.1, loss=loss, simulation=simulation, **options)
    return net, [rule.step(net, x, y) for _ in range(steps)]


def compare(make, input_shape, loss, batch, dtype, **options):
    """(equal to dense bit for bit, the paths auto took, the dense spurious counts per step)."""
    dense_net, dense = run(make, input_shape, "dense", loss, batch, dtype, **options)
    event_net, events = run(make, input_shape, "auto", loss, batch, dtype, **options)
    equal = all(torch.equal(a, b) for a, b in zip(event_net.parameters_list(), dense_net.parameters_list()))
    for mine, reference in zip(events, dense):
        equal &= torch.equal(mine.detection_counts, reference.detection_counts)
        equal &= float(mine.loss) == reference.loss and torch.equal(mine.output, reference.output)
    assert all(result.detection.success > 0 for result in dense)
    return equal, [r.simulation for r in events], [r.detection.spurious for r in dense]


def mlp(sizes, activation="sigmoid", dtype=torch.float64):
    return lambda: bioprop.MLP(list(sizes), activation=activation, dtype=dtype, seed=0)


# -- the planner against a brute-force closure of the dependency graph ------------------------
def closure(n_levels, n_steps, tested):
    """Errors eps_l(s) behind the front that the tested (level, step) pairs depend on, from the
    dynamics written out: eps_l(s) reads x_l(s) and, through mu_l(s), x_{l-1}(s); x_l(s) reads
    x_l(s-1), eps_l(s-1) and eps_{l+1}(s-1) (the output's value node does not move; a level's
    value node and error are constant ahead of its front, and its front values are given)."""
    front = [n_levels - 1 - level for level in range(n_levels)]
    needed, stack = set(), list(tested)
    seen_values = set()

    def need_value(level, s):  # x_level(s)
        if level < 0 or level == n_levels - 1 or s <= front[level] or (level, s) in seen_values:
            return
        seen_values.add((level, s))
        need_value(level, s - 1)
        stack.extend([(level, s - 1), (level + 1, s - 1)])

    while stack:
        level, s = stack.pop()
        if not 0 <= level < n_levels or s <= front[level] or (level, s) in needed:
            continue  # ahead of the front or at it: nothing to compute
        needed.add((level, s))
        need_value(level, s)
        need_value(level - 1, s)
    return needed


@pytest.mark.parametrize("n_levels,n_steps,t_d", [(4, 4, 4), (5, 5, 4), (3, 7, 2), (7, 7, 4), (6, 9, 3), (4, 6, 1)])
def test_planner_computes_exactly_the_dependency_closure_of_the_tests(n_levels, n_steps, t_d):
    for pattern in range(2 ** n_levels):
        silent = [bool(pattern >> level & 1) for level in range(n_levels)]
        plan = plan_region(n_levels, n_steps, t_d, silent, any_step=False)
        tested = set()
        for level in range(n_levels):
            k = n_levels - 1 - level
            if k >= n_steps - 1:
                assert not plan.tracked[level]
                continue
            # phi can fire after the front: a silent neuron at once, a changed one t_d steps later
            first = k + 1 if silent[level] else k + t_d
            assert plan.first_gate[level] == (first if first <= n_steps - 1 else None)
            if first <= n_steps - 1:
                tested.update((level, s) for s in range(k + 1, n_steps))
        computed = {(level, s) for s, levels in enumerate(plan.errors) for level in levels}
        assert computed == closure(n_levels, n_steps, tested)


def test_planner_skips_work_on_the_benchmark_shapes():
    # 784-256-256-256-10 in float32: levels 2 and 3 kept silent neurons, the output none; the
    # output's error at the last step feeds nothing that is tested
    plan = plan_region(4, 4, 4, [True, True, True, False], any_step=False)
    assert plan.errors == ((), (3,), (2, 3), (1, 2))
    # LeNet-5 in float64 (L = 5 > t_d): only the output can fire again, at the last step
    plan = plan_region(5, 5, 4, [False] * 5, any_step=False)
    assert plan.tracked == (False, False, False, False, True)
    assert plan.errors == ((), (4,), (3, 4), (3, 4), (4,))
    assert plan_region(4, 4, 4, [False] * 4, any_step=False).empty  # the front alone


def test_cached_plans_answer_each_question_as_a_fresh_plan():
    # plan_region is cached per (n_levels, n_steps, t_d, silent, any_step): a cached answer must
    # be the fresh one for its own question, never another's (a list and a tuple ask the same)
    compute = fazil._plan_region.__wrapped__
    for any_step in (False, True):
        for pattern in range(2 ** 5):
            silent = [bool(pattern >> level & 1) for level in range(5)]
            for n_steps, t_d in ((5, 4), (7, 2)):
                asked = plan_region(5, n_steps, t_d, silent, any_step=any_step)
                assert asked == compute(5, n_steps, t_d, tuple(silent), any_step)
                assert plan_region(5, n_steps, t_d, tuple(silent), any_step) is asked
    # control: two different questions get different plans (the cache key tells them apart)
    assert plan_region(4, 4, 4, [False, True, True, False], False) != plan_region(4, 4, 4, [False] * 4, False)
    assert plan_region(4, 4, 4, [False] * 4, True) != plan_region(4, 4, 4, [False] * 4, False)


# -- bit for bit against the dense simulation, where the skips apply --------------------------
def test_float32_mlp_with_late_firings_and_a_skipped_output():
    equal, ran, spurious = compare(mlp((20, 30, 30, 30, 30, 5), dtype=torch.float32), (20,), "mse", 16, torch.float32)
    assert equal and ran == ["events+reflections"] * 2 and sum(spurious) > 0


def test_float32_mlp_whose_changed_neurons_may_fire_again():
    # t_d = 2 < L: the history of every neuron is kept (last change), not only the silent ones
    make = mlp((30, 40, 40, 40, 5), dtype=torch.float32)
    equal, ran, spurious = compare(make, (30,), "mse", 16, torch.float32, t_d=2)
    assert equal and ran == ["events+reflections"] * 2 and sum(spurious) > 0


def test_float64_late_firings_of_neurons_that_changed_at_their_front():
    # t_d = 1, n_steps > L: level 1's prediction never moves, so its neurons fire again
    equal, ran, spurious = compare(mlp((6, 5, 5, 4)), (6,), "mse", 3, torch.float64, n_steps=5, t_d=1)
    assert equal and ran == ["events+reflections"] * 2 and sum(spurious) > 0


def test_float64_deep_mlp_tests_only_the_output_after_its_front():
    equal, ran, _ = compare(mlp((6, 5, 5, 5, 5, 4)), (6,), "mse", 4, torch.float64)
    assert equal and ran == ["events+reflections"] * 2


def test_relu_dead_units_pooled():
    equal, ran, _ = compare(mlp((7, 6, 5, 6, 5, 4), activation="relu"), (7,), "mse", 32, torch.float64, t_d=5)
    assert equal and ran == ["events+reflections"] * 2


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_float32_lenet_style_conv_net(loss):
    make = lambda: build_model("lenet5", (1, 8, 8), 10, dtype=torch.float32, seed=0)  # noqa: E731
    equal, ran, spurious = compare(make, (1, 8, 8), loss, 8, torch.float32)
    assert equal and ran == ["events+reflections"] * 2
    if loss == "ce":
        assert sum(spurious) > 0


def test_float32_rnn_with_late_firings():
    make = lambda: bioprop.ElmanRNN(3, 8, 3, dtype=torch.float32, seed=0)  # noqa: E731
    equal, ran, spurious = compare(make, (10, 3), "ce", 8, torch.float32)
    assert equal and ran == ["events+reflections"] * 2 and sum(spurious) > 0


def test_wrapped_conv_net_with_a_maxpool_float32():
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 2),
                              nn.Sigmoid(), nn.Flatten(), nn.Linear(36, 6), nn.Sigmoid(), nn.Linear(6, 3))
        return bioprop.wrap(model)

    equal, ran, _ = compare(make, (2, 8, 8), "ce", 6, torch.float32)
    assert equal and "events+reflections" in ran


# -- negative controls: the planner told less than holds --------------------------------------
def with_plan(monkeypatch, replace):
    original = fazil.plan_region
    monkeypatch.setattr(fazil, "plan_region", lambda n_levels, n_steps, t_d, silent, any_step:
                        original(n_levels, n_steps, *replace(t_d, silent), any_step))


def test_ignoring_silent_neurons_misses_the_late_firings(monkeypatch):
    with_plan(monkeypatch, lambda t_d, silent: (t_d, [False] * len(silent)))
    equal, ran, spurious = compare(mlp((20, 30, 30, 30, 30, 5), dtype=torch.float32), (20,), "mse", 16, torch.float32)
    assert sum(spurious) > 0 and not equal


def test_a_longer_t_d_in_the_plan_misses_the_late_firings(monkeypatch):
    with_plan(monkeypatch, lambda t_d, silent: (t_d + 10, silent))
    equal, _, spurious = compare(mlp((6, 5, 5, 4)), (6,), "mse", 3, torch.float64, n_steps=5, t_d=1)
    assert sum(spurious) > 0 and not equal
