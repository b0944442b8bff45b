"""bioprop.wrap on layouts that are easy to get wrong: one module object at several places, and a
Linear level fed rates with more than two dimensions. Oracle: the user's own module (its forward,
and autograd on it)."""
import pytest
import torch
from torch import nn

import bioprop
from bioprop.errors import BioPropError

from conftest import relative_difference


def test_an_activation_object_used_twice_runs_at_both_places():
    # one nn.ReLU() object at two places: Sequential runs it twice, so the levels must too
    torch.manual_seed(0)
    act = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 4), act, nn.Linear(4, 4), act, nn.Linear(4, 2)).double()
    net = bioprop.wrap(model)
    x = torch.randn(5, 4, dtype=torch.float64)
    assert torch.equal(net.forward_pass(x).output, model(x))
    assert [len(level.rate.ops) for level in net.levels_for(x)] == [1, 1, 0]
    # negative control: the same model without the second activation is a different function
    dropped = nn.Sequential(*list(model)[:3], model[4])
    assert not torch.allclose(dropped(x), model(x))


def test_a_linear_object_used_twice_is_refused_by_name():
    shared = nn.Linear(4, 4)
    with pytest.raises(BioPropError, match=r"model\[2\].*same Linear object.*model\[0\]"):
        bioprop.wrap(nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(4, 2)))


def test_a_linear_level_on_three_dimensional_rates_is_exact():
    # nn.Linear maps the last dimension of (B, C, L) rates: its update sums over B and C
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(start_dim=2), nn.Linear(16, 5), nn.Tanh(),
                          nn.Flatten(), nn.Linear(15, 3)).double()
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))
    rule_net, oracle_net = bioprop.wrap(model), bioprop.wrap(model).clone()
    start = [p.detach().clone() for p in rule_net.parameters_list()]
    bioprop.make_rule("zil", lr=0.1, loss="ce").step(rule_net, x, y)
    bioprop.make_rule("bp", lr=0.1, loss="ce").step(oracle_net, x, y)
    for mine, theirs, p0 in zip(rule_net.parameters_list(), oracle_net.parameters_list(), start):
        assert float((theirs.detach() - p0).norm()) > 0
        assert relative_difference(mine.detach() - p0, theirs.detach() - p0) <= 1e-10
