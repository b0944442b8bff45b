"""Fa-Z-IL's event simulation of step() against its dense simulation (the reference).

Oracle: the same rule with simulation="dense" (every node of every level at every step), on
the same net, batch and steps. "Same" is bit for bit (torch.equal): weights, loss, output and
the detection counts; each test also checks which simulation ran, so a silent fallback to the
dense path cannot make an equality test vacuous. Negative controls: the event path forced
where it is not exact (a noisy start, a ReLU batch whose dense simulation fires after the
front) differs from the dense one.
"""
import pytest
import torch
from torch import nn

import bioprop
from bioprop.errors import BioPropError


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(activation="sigmoid", bias=True, sizes=(6, 5, 5, 4), dtype=torch.float64):
    return lambda: (bioprop.MLP(list(sizes), activation=activation, bias=bias, dtype=dtype, seed=0), (sizes[0],))


def conv2d(bias=True):
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1, bias=bias), nn.Tanh(), nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(3, 4, 2, stride=2, bias=bias), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4, 3, bias=bias),
        )
        return bioprop.wrap(model.double()), (2, 8, 8)

    return make


def conv1d():
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.Sigmoid(), nn.MaxPool1d(3, stride=2),
                              nn.Conv1d(3, 4, 2, dilation=2), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3))
        return bioprop.wrap(model.double()), (2, 12)

    return make


def rnn(steps, bias=True):
    return lambda: (bioprop.ElmanRNN(3, 4, 3, bias=bias, dtype=torch.float64, seed=0), (steps, 3))


def batch_for(net, input_shape, loss, batch, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, *input_shape, generator=generator, dtype=torch.float64).to(dtype)
    if loss == "ce":
        y = torch.randint(0, net.output_size, (batch,), generator=generator)
    else:
        y = torch.randn(batch, net.output_size, generator=generator, dtype=torch.float64).to(dtype)
    return x, y


def run(make, simulation, loss, batch, steps=2, dtype=torch.float64, **options):
    net, input_shape = make()
    x, y = batch_for(net, input_shape, loss, batch, dtype)
    rule = bioprop.make_rule("fazil", lr=0.1, loss=loss, simulation=simulation, **options)
    results = [rule.step(net, x, y) for _ in range(steps)]
    return net, results


def same_as_dense(make, loss, batch, simulation="auto", steps=2, **options):
    """Bit-for-bit comparison of `simulation` with the dense reference; returns which ran."""
    dense_net, dense = run(make, "dense", loss, batch, steps, **options)
    event_net, events = run(make, simulation, loss, batch, steps, **options)
    for a, b in zip(event_net.parameters_list(), dense_net.parameters_list()):
        assert torch.equal(a, b)
    for mine, reference in zip(events, dense):
        assert reference.simulation == "dense"
        assert float(mine.loss) == reference.loss
        # the public step reports the loss as a 0-d tensor on every path (tests/test_il_floor.py)
        assert isinstance(mine.loss, torch.Tensor) and mine.loss.ndim == 0
        assert torch.equal(mine.output, reference.output)
        assert torch.equal(mine.detection_counts, reference.detection_counts)
        assert mine.detection == reference.detection and mine.n_inference_steps == reference.n_inference_steps
    # every step changed the weights: the comparison is not vacuous
    assert all(result.detection.success > 0 for result in dense)
    return [result.simulation for result in events]


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("batch,plasticity", [(1, "auto"), (1, "pooled"), (5, "pooled"), (5, "immediate")])
@pytest.mark.parametrize("activation,bias", [("sigmoid", True), ("tanh", False)])
def test_mlp_events_equal_dense(loss, batch, plasticity, activation, bias):
    ran = same_as_dense(mlp(activation, bias), loss, batch, batch_plasticity=plasticity)
    assert ran == ["events", "events"]


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("make", [conv2d(True), conv2d(False), conv1d()], ids=["conv2d", "conv2d-nobias", "conv1d"])
@pytest.mark.parametrize("batch", [1, 4])
def test_wrapped_conv_events_equal_dense(make, loss, batch):
    assert same_as_dense(make, loss, batch) == ["events", "events"]


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_rnn_events_equal_dense(loss, bias, batch):
    # 3 time steps + readout: L = 4 <= t_d; shared W_ih, W_hh, b pooled (BPTT's update)
    assert same_as_dense(rnn(3, bias), loss, batch) == ["events", "events"]


def test_long_rnn_simulates_the_reflections_unless_t_d_covers_the_presentation():
    # L = 7: with t_d = 4 a neuron could fire again before the end, so the region behind the
    # front is simulated; with t_d = 8 it cannot, and the front alone runs
    assert same_as_dense(rnn(6), "mse", 2) == ["events+reflections"] * 2
    assert same_as_dense(rnn(6), "mse", 2, t_d=8) == ["events", "events"]


def test_short_presentations_take_events():
    # n_steps < L: the front stops before level 1, which keeps its weights in both simulations
    sizes = (6, 5, 5, 5, 4)
    assert same_as_dense(mlp(sizes=sizes), "mse", 3, n_steps=2) == ["events", "events"]


def test_a_noisy_start_runs_dense():
    assert same_as_dense(mlp(), "mse", 3, init_noise=1e-3) == ["dense", "dense"]


def test_shared_parameters_written_at_once_run_dense():
    assert same_as_dense(rnn(3), "mse", 2, shared_updates="immediate") == ["dense", "dense"]


@pytest.mark.parametrize("options", [{"gamma": 0.9}, {"n_steps": 5}, {"n_steps": 7, "t_d": 2}])
def test_reflections_are_simulated_where_they_may_fire(options):
    # gamma != 1, or steps left after a level's front for it to fire again: the region behind
    # the front is simulated as the dense simulation runs it (the levels ahead are skipped)
    assert same_as_dense(mlp(), "mse", 3, **options) == ["events+reflections"] * 2


@pytest.mark.parametrize("plasticity", ["immediate", "pooled"])
def test_silent_neurons_behind_the_front_are_simulated(plasticity):
    # ReLU: dead units do not change at their front, keep their history and may fire on a
    # reflection (with immediate writes they do: test_fazil.py); the run-time check sends the
    # call to the simulation of the reflections
    ran = same_as_dense(mlp("relu", sizes=(7, 6, 5, 6, 5, 4)), "mse", 32, t_d=5, batch_plasticity=plasticity)
    assert ran == ["events+reflections"] * 2


def test_float32_late_firings_are_reproduced():
    # float32's resolution (1.2e-4 relative) leaves neurons silent at their front, some of
    # which fire on a reflection in the dense simulation: the same firings, the same weights
    make = mlp(sizes=(30, 40, 40, 40, 5), dtype=torch.float32)
    dense_net, dense = run(make, "dense", "mse", 16, 2, dtype=torch.float32)
    event_net, events = run(make, "auto", "mse", 16, 2, dtype=torch.float32)
    assert [r.simulation for r in events] == ["events+reflections"] * 2
    assert all(torch.equal(a, b) for a, b in zip(event_net.parameters_list(), dense_net.parameters_list()))
    assert all(torch.equal(a.detection_counts, b.detection_counts) for a, b in zip(events, dense))
    assert sum(r.detection.harmless_miss for r in dense) > 0 and sum(r.detection.spurious for r in dense) > 0


def test_trace_falls_back_to_dense_and_matches_it():
    make = mlp()
    traces = {}
    for simulation in ("auto", "dense"):
        net, input_shape = make()
        x, y = batch_for(net, input_shape, "mse", 3)
        traces[simulation] = bioprop.make_rule("fazil", lr=0.1, simulation=simulation).step(net, x, y, trace=True)
    assert traces["auto"].simulation == "dense"
    for mine, reference in zip(traces["auto"].trace, traces["dense"].trace):
        assert mine.t == reference.t and mine.updated_layers == reference.updated_layers
        assert all(torch.equal(a, b) for a, b in zip(mine.value_nodes, reference.value_nodes))
        assert all(torch.equal(a, b) for a, b in zip(mine.error_nodes, reference.error_nodes))
    with pytest.raises(BioPropError, match="trace"):
        net, input_shape = make()
        bioprop.make_rule("fazil", simulation="events").step(net, *batch_for(net, input_shape, "mse", 3), trace=True)


@pytest.mark.parametrize("t_d", [1, 4])
def test_stream_is_the_same_whatever_the_step_simulation(t_d):
    # stream() runs the dense dynamics (a real history); the option must not change it,
    # including t_d = 1, where phi fires on the prediction phase's reflections
    generator = torch.Generator().manual_seed(3)
    inputs = torch.rand(12, 8, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (12,), generator=generator)
    outcomes = {}
    for simulation in ("events", "dense"):
        net = bioprop.MLP([8, 6, 5, 4], activation="sigmoid", dtype=torch.float64, seed=0)
        result = bioprop.make_rule("fazil", lr=0.05, t_d=t_d, simulation=simulation).stream(net, inputs, labels)
        outcomes[simulation] = (net, result)
    (event_net, events), (dense_net, dense) = outcomes["events"], outcomes["dense"]
    assert all(torch.equal(a, b) for a, b in zip(event_net.parameters_list(), dense_net.parameters_list()))
    assert events == dense and events.detection.success > 0
    if t_d == 1:
        assert dense.detection.spurious > 0


def test_bad_simulation_option_is_rejected():
    with pytest.raises(BioPropError, match="simulation"):
        bioprop.make_rule("fazil", simulation="sparse")


# -- negative controls: the event path forced where its argument does not hold -----------------
def differs_from_dense(make, loss, batch, **options):
    dense_net, dense = run(make, "dense", loss, batch, 1, **options)
    event_net, events = run(make, "events", loss, batch, 1, **options)
    assert events[0].simulation == "events"
    weights_differ = any(not torch.equal(a, b) for a, b in zip(event_net.parameters_list(), dense_net.parameters_list()))
    counts_differ = not torch.equal(events[0].detection_counts, dense[0].detection_counts)
    return weights_differ, counts_differ


def test_forced_events_with_a_noisy_start_differ_from_dense():
    weights_differ, _ = differs_from_dense(mlp(), "mse", 3, init_noise=1e-3)
    assert weights_differ


def test_forced_events_miss_the_firings_behind_the_front():
    # the ReLU batch of test_fazil.py: with immediate writes the dense simulation fires late
    weights_differ, counts_differ = differs_from_dense(mlp("relu", sizes=(7, 6, 5, 6, 5, 4)), "mse", 32, t_d=5,
                                                       batch_plasticity="immediate")
    assert weights_differ and counts_differ
