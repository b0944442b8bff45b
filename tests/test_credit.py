"""The credit / E-I balance rule (SPEC section 2) and its RateNetwork substrate.

Oracles, by test:
- autograd SGD on a cloned MLP (rule "bp", via bioprop.verify.compare_updates or directly):
  layered networks through the MLP block form and through the dense embedding (from_mlp);
- autograd through an explicit neuron-by-neuron feed-forward computation written in this file:
  DAGs with skip connections and permuted, masked all-to-all embeddings;
- central finite differences of the loss at the firing fixpoint: recurrent networks (inject);
- closed forms: the pure process functions, and the settling counts derived in rate_network.py.
float64, tolerance 1e-10 relative (1e-6 against finite differences). Every exactness claim has
a negative control that must fail the same check: Gaussian balance, settling cut one step
short, clamp mode with outputs that feed back, plasticity on absent synapses.
"""
import itertools
import math
import warnings

import pytest
import torch

import bioprop
from bioprop import cli
from bioprop.balance import register_balance
from bioprop.errors import BioPropError
from bioprop.rate_network import (
    RateNetwork,
    credit_step,
    firing_step,
    layered_mask,
    settle_credit,
    settle_firing,
    weight_change,
)
from bioprop.rules.credit import SettlingWarning, settling_steps_needed
from bioprop.verify import compare_updates, make_batch, verify_rule

from conftest import relative_difference

TOLERANCE = 1e-10
FD_TOLERANCE = 1e-6
DTYPE = torch.float64


def non_vacuous_comparison(options, sizes, activation, bias, loss, steps=3, batch=8):
    """compare_updates (rule vs autograd BP, same weights and batch) at the first seed whose BP
    update is non-zero in every parameter (small ReLU nets can start with a dead layer)."""
    for seed in range(50):
        comparison = compare_updates("credit", options, sizes, activation=activation, bias=bias, loss=loss,
                                     batch=batch, seed=seed, steps=steps, lr=0.05)
        if all(layer.bp_norm > 0 for layer in comparison.layers):
            return comparison
    raise AssertionError("no seed gives a non-vacuous comparison")


def bp_after(mlp, x, y, loss, lr, steps):
    oracle = mlp.clone()
    rule = bioprop.make_rule("bp", lr=lr, loss=loss)
    for _ in range(steps):
        rule.step(oracle, x, y)
    return oracle.parameters_list()


def relative_update_difference(start, rule_after, oracle_after):
    """max over parameters of ||dW_rule - dW_bp|| / ||dW_bp||."""
    return max(relative_difference(r - s, o - s) for s, r, o in zip(start, rule_after, oracle_after))


# -- layered networks: MLP block form and dense embedding, against autograd BP ------------------
LAYERED = list(itertools.product(["sigmoid", "tanh", "relu", "leaky_relu"], [True, False], ["mse", "ce"]))


@pytest.mark.parametrize("activation,bias,loss", LAYERED)
@pytest.mark.parametrize("output_mode", ["clamp", "inject"])
def test_mlp_block_form_equals_bp(activation, bias, loss, output_mode):
    # oracle: autograd SGD on a clone, 3 steps on one batch, 1 and 3 hidden layers
    for sizes in ([7, 6, 4], [7, 6, 5, 6, 4]):
        comparison = non_vacuous_comparison({"output_mode": output_mode}, sizes, activation, bias, loss)
        assert comparison.max_rel <= TOLERANCE


@pytest.mark.parametrize("activation,bias,loss", LAYERED)
def test_dense_embedding_equals_bp(activation, bias, loss):
    # oracle: autograd SGD on the MLP; the rule runs the dense n x n circuit of from_mlp(mlp)
    sizes = [6, 5, 4, 3]
    mlp = bioprop.MLP(sizes, activation=activation, bias=bias, dtype=DTYPE, seed=1)
    x, y = make_batch(sizes, loss, 8, 1)
    for output_mode in ("clamp", "inject"):
        net = RateNetwork.from_mlp(mlp)
        rule = bioprop.make_rule("credit", lr=0.05, loss=loss, output_mode=output_mode)
        for _ in range(3):
            info = rule.step(net, x, y)
            assert info["converged"]
        assert torch.equal(net.W.detach()[~net.mask], torch.zeros(int((~net.mask).sum()), dtype=DTYPE))
        difference = relative_update_difference(mlp.parameters_list(), net.to_mlp().parameters_list(),
                                                bp_after(mlp, x, y, loss, 0.05, 3))
        assert difference <= TOLERANCE


def test_from_mlp_round_trip_and_forward():
    # closed form: embedding then read-out returns the same parameters; the fixpoint output is the MLP's
    mlp = bioprop.MLP([5, 4, 3, 2], activation="sigmoid", dtype=DTYPE, seed=0)
    with torch.no_grad():
        for b in mlp.biases:
            b.uniform_(-1, 1)
    net = RateNetwork.from_mlp(mlp)
    assert net.mask.equal(layered_mask([5, 4, 3, 2])) and net.layer_sizes == [5, 4, 3, 2]
    for a, b in zip(mlp.parameters_list(), net.to_mlp().parameters_list()):
        assert torch.equal(a, b)
    x = torch.randn(6, 5, dtype=DTYPE)
    assert relative_difference(net(x), mlp(x)) < 1e-15


# -- settling counts (derived in rate_network.py) and the timescale cut --------------------------
@pytest.mark.parametrize("sizes", [[5, 3], [5, 4, 3], [5, 4, 4, 3], [5, 4, 3, 4, 3]])
@pytest.mark.parametrize("output_mode", ["clamp", "inject"])
def test_cut_is_exact_from_the_derived_step_count(sizes, output_mode):
    # oracle: autograd BP; a cut one step short of the derived count is the negative control
    n_layers = len(sizes) - 1
    firing, credit = settling_steps_needed(n_layers, output_mode)
    assert (firing, credit) == (n_layers, n_layers - (output_mode == "clamp"))
    for option, needed in (("firing_steps", firing), ("credit_steps", credit)):
        for k in range(max(needed - 1, 1 if option == "firing_steps" else 0), needed + 2):
            options = {"output_mode": output_mode, option: k}
            comparison = non_vacuous_comparison(options, sizes, "tanh", True, "mse", steps=1)
            assert (comparison.max_rel <= TOLERANCE) == (k >= needed), (option, k)


def _credit_update(mlp, x, y, **options):
    net = mlp.clone()
    bioprop.make_rule("credit", lr=0.1, **options).step(net, x, y)
    return [p.detach() - p0.detach() for p, p0 in zip(net.parameters_list(), mlp.parameters_list())]


@pytest.mark.parametrize("output_mode", ["clamp", "inject"])
def test_block_cut_equals_dense_cut(output_mode):
    # oracle: the dense n x n circuit (from_mlp) stepped k times; the MLP block form must give the
    # same update of every parameter for the same k (1e-12 relative). Negative control: the dense
    # circuit one step further (k + 1) gives another update wherever k is short of the fixpoint.
    sizes = [6, 5, 4, 3]
    mlp = bioprop.MLP(sizes, activation="tanh", dtype=DTYPE, seed=2)
    x, y = make_batch(sizes, "mse", 5, 2)
    exact = _credit_update(mlp, x, y, output_mode=output_mode)
    for firing_steps, credit_steps in [(1, None), (2, None), (None, 0), (None, 1), (2, 1), (4, 4)]:
        options = {"output_mode": output_mode, "firing_steps": firing_steps, "credit_steps": credit_steps}
        block = _credit_update(mlp, x, y, **options)
        dense = _credit_update(mlp, x, y, dynamics="dense", **options)
        # not vacuous: the cut still changes something (except inject with no credit step, where
        # the error has reached no neuron yet and nothing may learn)
        assert any(float(change.norm()) > 0 for change in block) == (output_mode == "clamp" or credit_steps != 0)
        for a, b in zip(block, dense):
            assert relative_difference(a, b) <= 1e-12
        later = {key: (None if k is None else k + 1) for key, k in (("firing_steps", firing_steps), ("credit_steps", credit_steps))}
        further = _credit_update(mlp, x, y, dynamics="dense", output_mode=output_mode, **later)
        short = max(relative_difference(a, b) for a, b in zip(block, exact)) > 1e-10
        assert (max(relative_difference(a, b) for a, b in zip(block, further)) > 1e-10) == short


def test_dense_fixpoint_detection_costs_one_step_more():
    # closed form: firing arrives in L steps (+1 to see it), clamped credit of every neuron,
    # inputs included, in L (+1), injected credit one later
    sizes = [6, 5, 4, 3]
    mlp = bioprop.MLP(sizes, activation="tanh", dtype=DTYPE, seed=0)
    x, y = make_batch(sizes, "mse", 4, 0)
    clamp = bioprop.make_rule("credit", output_mode="clamp").step(RateNetwork.from_mlp(mlp), x, y)
    inject = bioprop.make_rule("credit", output_mode="inject").step(RateNetwork.from_mlp(mlp), x, y)
    assert (clamp["firing_steps"], clamp["credit_steps"], inject["credit_steps"]) == (4, 4, 5)
    layered = bioprop.make_rule("credit").step(mlp.clone(), x, y, trace=True)
    assert (layered["firing_steps"], layered["credit_steps"]) == (3, 2)
    assert [(t["phase"], t["step"]) for t in layered["trace"]] == [
        ("firing", 1), ("firing", 2), ("firing", 3), ("credit", 1), ("credit", 2)]


def test_trace_does_not_change_the_update():
    sizes = [6, 5, 4, 3]
    mlp = bioprop.MLP(sizes, activation="sigmoid", dtype=DTYPE, seed=0)
    x, y = make_batch(sizes, "ce", 4, 0)
    a, b = mlp.clone(), mlp.clone()
    bioprop.make_rule("credit", loss="ce").step(a, x, y)
    bioprop.make_rule("credit", loss="ce").step(b, x, y, trace=True)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters_list(), b.parameters_list()))


# -- balance: sigma' is BP, anything else is not ---------------------------------------------------
@pytest.mark.parametrize("dynamics", ["layered", "dense"])
def test_gaussian_balance_diverges(dynamics):
    # negative control of the layered claim: same check, balance != sigma'
    for activation in ("sigmoid", "tanh"):
        exact = compare_updates("credit", {"dynamics": dynamics}, [6, 5, 4, 3], activation=activation)
        broken = compare_updates("credit", {"dynamics": dynamics, "balance": "gaussian", "width": 1.0},
                                 [6, 5, 4, 3], activation=activation)
        assert exact.max_rel <= TOLERANCE < 1e3 * TOLERANCE < broken.max_rel


def test_user_balance_callable_and_registered_name():
    # closed form: a user g equal to sigma' everywhere (all-tanh network) is the built-in derivative
    def tanh_slope(s):
        return 1 - torch.tanh(s) ** 2

    register_balance("test_tanh_slope", tanh_slope)
    net = RateNetwork(9, inputs=range(3), outputs=[7, 8], activation="tanh", mask=_dag_mask(9, 3, [7, 8], 0),
                      dtype=DTYPE, seed=0)
    x, y = torch.randn(4, 3, dtype=DTYPE), torch.randn(4, 2, dtype=DTYPE)
    updates = []
    for balance in ("derivative", tanh_slope, "test_tanh_slope"):
        twin = net.clone()
        bioprop.make_rule("credit", balance=balance).step(twin, x, y)
        updates.append(twin.W.detach() - net.W.detach())
    assert relative_difference(updates[1], updates[0]) < 1e-14
    assert torch.equal(updates[1], updates[2])


# -- DAGs with skip connections and masked all-to-all embeddings ---------------------------------
def _dag_mask(n, n_inputs, outputs, seed, density=0.6, outputs_feed_on=False):
    """Random DAG in index order: j -> i only for j < i; nothing onto inputs; outputs are sinks
    unless outputs_feed_on."""
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, n, generator=generator) < density).tril(-1)
    mask[:n_inputs] = False
    if not outputs_feed_on:
        mask[:, outputs] = False
    return mask


def _unrolled_loss(W, bias, x, net, y, loss):
    """Oracle forward: neurons one at a time in index order (a DAG in index order), each
    x_i = sigma_i(sum_j W_ij x_j + b_i), input neurons take the stimulus."""
    inputs, outputs = net.inputs.tolist(), net.outputs.tolist()
    rates = []
    for i in range(net.n):
        if i in inputs:
            rates.append(x[:, inputs.index(i)])
            continue
        s = sum(W[i, j] * rates[j] for j in range(i)) + (bias[i] if bias is not None else 0.0)
        activation = net.output_activation if i in outputs else net.activation
        rates.append(activation(s))
    return bioprop.get_loss(loss)(torch.stack([rates[i] for i in outputs], dim=1), y)


def _autograd_update(net, x, y, loss, lr):
    W = net.W.detach().clone().requires_grad_(True)
    bias = net.bias.detach().clone().requires_grad_(True) if net.bias is not None else None
    parameters = [W] + ([bias] if bias is not None else [])
    gradients = torch.autograd.grad(_unrolled_loss(W, bias, x, net, y, loss), parameters)
    dW = -lr * gradients[0] * net.mask  # only existing synapses are parameters
    return dW, (-lr * gradients[1] if bias is not None else None)


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("output_mode", ["clamp", "inject"])
def test_dag_with_skip_connections_equals_autograd(loss, output_mode):
    n, outputs = 12, [10, 11]
    for seed in range(3):
        net = RateNetwork(n, inputs=range(3), outputs=outputs, activation="tanh", output_activation="linear",
                          mask=_dag_mask(n, 3, outputs, seed), bias=True, init_scale=1.0, dtype=DTYPE, seed=seed)
        with torch.no_grad():
            net.bias.uniform_(-0.5, 0.5)
        x, y = torch.randn(5, 3, dtype=DTYPE), torch.randn(5, 2, dtype=DTYPE)
        if loss == "ce":
            y = torch.softmax(y, dim=1)
        expected_W, expected_b = _autograd_update(net, x, y, loss, 0.1)
        before_W, before_b = net.W.detach().clone(), net.bias.detach().clone()
        bioprop.make_rule("credit", lr=0.1, loss=loss, output_mode=output_mode).step(net, x, y)
        assert relative_difference(net.W.detach() - before_W, expected_W) <= TOLERANCE
        assert relative_difference(net.bias.detach() - before_b, expected_b) <= TOLERANCE


def test_dag_outputs_that_feed_on_bias_clamp_but_not_inject():
    # negative control: an output neuron projecting onward breaks the clamp (its credit should
    # include what it contributes downstream); injection keeps the exact gradient
    n, outputs = 10, [7, 9]
    mask = _dag_mask(n, 3, outputs, 0, outputs_feed_on=True)
    mask[8, 7] = mask[9, 7] = True  # output 7 drives hidden 8 and output 9
    net = RateNetwork(n, inputs=range(3), outputs=outputs, activation="tanh", output_activation="linear",
                      mask=mask, init_scale=1.0, dtype=DTYPE, seed=0)
    x, y = torch.randn(5, 3, dtype=DTYPE), torch.randn(5, 2, dtype=DTYPE)
    expected, _ = _autograd_update(net, x, y, "mse", 0.1)
    differences = {}
    for output_mode in ("clamp", "inject"):
        twin = net.clone()
        bioprop.make_rule("credit", lr=0.1, output_mode=output_mode).step(twin, x, y)
        differences[output_mode] = relative_difference(twin.W.detach() - net.W.detach(), expected)
    assert differences["inject"] <= TOLERANCE
    assert differences["clamp"] > 1e-3


@pytest.mark.parametrize("activation,loss", [("sigmoid", "mse"), ("relu", "ce"), ("tanh", "mse")])
def test_permuted_all_to_all_embedding_updates_only_existing_synapses(activation, loss):
    # an MLP hidden in an all-to-all matrix: neurons shuffled, inputs and outputs scattered,
    # absent synapses masked. Oracle: autograd BP on the MLP; masked entries stay exactly 0.
    sizes = [4, 5, 4, 3]
    mlp = bioprop.MLP(sizes, activation=activation, dtype=DTYPE, seed=3)
    layered = RateNetwork.from_mlp(mlp)
    order = torch.randperm(layered.n, generator=torch.Generator().manual_seed(0))  # new index -> old index
    position = torch.argsort(order)  # old index -> new index
    x, y = make_batch(sizes, loss, 6, 3)

    def scattered(mask):
        net = RateNetwork(layered.n, inputs=position[layered.inputs].tolist(), outputs=position[layered.outputs].tolist(),
                          activation=activation, output_activation="linear", mask=mask, bias=True, dtype=DTYPE)
        with torch.no_grad():
            net.W.copy_(layered.W[order][:, order])
            net.bias.copy_(layered.bias[order])
        return net

    def read_out(net):
        unshuffled = RateNetwork.from_mlp(mlp)
        with torch.no_grad():
            unshuffled.W.copy_(net.W[position][:, position])
            unshuffled.bias.copy_(net.bias[position])
        return unshuffled

    oracle = bp_after(mlp, x, y, loss, 0.1, 2)
    net = scattered(layered.mask[order][:, order])
    rule = bioprop.make_rule("credit", lr=0.1, loss=loss)
    for _ in range(2):
        rule.step(net, x, y)
    assert int((net.W.detach()[~net.mask] != 0).sum()) == 0
    assert relative_update_difference(mlp.parameters_list(), read_out(net).to_mlp().parameters_list(), oracle) <= TOLERANCE

    # negative control: every synapse exists (zero-weighted where the MLP has none); plasticity
    # grows lateral and backward synapses, the second step is no longer BP's
    everything = scattered(torch.ones(layered.n, layered.n, dtype=torch.bool))
    for _ in range(2):
        rule.step(everything, x, y)
    grown = everything.W.detach()[~net.mask]
    assert int((grown != 0).sum()) > 0
    unmasked = RateNetwork.from_mlp(mlp)
    with torch.no_grad():
        unmasked.W.copy_(everything.W[position][:, position] * layered.mask)
        unmasked.bias.copy_(everything.bias[position])
    assert relative_update_difference(mlp.parameters_list(), unmasked.to_mlp().parameters_list(), oracle) > 1e-6


# -- recurrent networks: inject is the gradient at the fixpoint; clamp is biased ----------------
def _recurrent_net(seed):
    """10 neurons, random recurrent connectivity in which the outputs feed back onto hidden
    neurons; small weights (init_scale 0.6) so the firing fixpoint is stable."""
    generator = torch.Generator().manual_seed(100 + seed)
    mask = torch.rand(10, 10, generator=generator) < 0.6
    mask[:3] = False  # nothing onto the clamped inputs
    mask[3:8, 8:] = True  # outputs 8, 9 feed back
    net = RateNetwork(10, inputs=range(3), outputs=[8, 9], activation="tanh", mask=mask, bias=True,
                      init_scale=0.6, dtype=DTYPE, seed=seed)
    with torch.no_grad():
        net.bias.uniform_(-0.3, 0.3, generator=generator)
    return net


def _fixpoint_loss(net, x, y, loss):
    rates, _, settling = net.settle_firing(x, tol=0.0, max_steps=400)
    assert settling.residual < 1e-14
    return float(bioprop.get_loss(loss)(rates[:, net.outputs], y))


def _finite_difference_gradient(net, x, y, loss, h=1e-6):
    """Central differences of the fixpoint loss in every existing synapse and every bias."""
    grads = []
    for parameter, entries in ((net.W, net.mask.nonzero().tolist()), (net.bias, [[i] for i in range(3, net.n)])):
        gradient = torch.zeros_like(parameter)
        for index in entries:
            index = tuple(index)
            original = float(parameter.detach()[index])
            with torch.no_grad():
                parameter[index] = original + h
                up = _fixpoint_loss(net, x, y, loss)
                parameter[index] = original - h
                down = _fixpoint_loss(net, x, y, loss)
                parameter[index] = original
            gradient[index] = (up - down) / (2 * h)
        grads.append(gradient)
    return grads


def _rule_gradient(net, x, y, loss, output_mode, lr=1.0):
    twin = net.clone()
    info = bioprop.make_rule("credit", lr=lr, loss=loss, output_mode=output_mode, tol=1e-15, max_steps=400).step(twin, x, y)
    return [(net.W.detach() - twin.W.detach()) / lr, (net.bias.detach() - twin.bias.detach()) / lr], info


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_inject_is_the_fixpoint_gradient_and_clamp_is_biased(loss):
    # oracle: central finite differences of the loss at the firing fixpoint (Almeida-Pineda)
    net = _recurrent_net(0)
    x, y = torch.randn(4, 3, dtype=DTYPE), torch.randn(4, 2, dtype=DTYPE)
    if loss == "ce":
        y = torch.softmax(2 * y, dim=1)
    numeric = _finite_difference_gradient(net, x, y, loss)
    inject, info = _rule_gradient(net, x, y, loss, "inject")
    clamp, _ = _rule_gradient(net, x, y, loss, "clamp")
    assert info["firing_residual"] < 1e-14 and info["credit_residual"] < 1e-14
    for rule_gradient, fd_gradient in zip(inject, numeric):
        assert relative_difference(rule_gradient, fd_gradient) <= FD_TOLERANCE
    # negative control: the paper's clamp drops the outputs' own downstream credit
    assert relative_difference(clamp[0], numeric[0]) > 1e-2


def test_clamp_equals_inject_when_outputs_are_sinks():
    # in a recurrent net whose outputs send no synapses, the clamp is the fixpoint gradient too
    net = _recurrent_net(1)
    with torch.no_grad():
        net.mask[:, 8:] = False
        net.apply_mask_()
    x, y = torch.randn(4, 3, dtype=DTYPE), torch.randn(4, 2, dtype=DTYPE)
    clamp, _ = _rule_gradient(net, x, y, "mse", "clamp")
    inject, _ = _rule_gradient(net, x, y, "mse", "inject")
    assert relative_difference(clamp[0], inject[0]) < 1e-12


# -- non-convergence ------------------------------------------------------------------------------
def test_unsettled_processes_warn_and_flag():
    net = _recurrent_net(0)
    x, y = torch.randn(4, 3, dtype=DTYPE), torch.randn(4, 2, dtype=DTYPE)
    with pytest.warns(SettlingWarning) as caught:
        info = bioprop.make_rule("credit", max_steps=3).step(net, x, y)
    messages = " ".join(str(w.message) for w in caught)
    assert "firing did not settle" in messages and "credit did not settle" in messages
    assert not info["firing_converged"] and not info["credit_converged"] and not info["converged"]
    assert info["firing_steps"] == 3 and info["firing_residual"] > 0
    # a deliberate cut is reported but not warned about
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettlingWarning)
        info = bioprop.make_rule("credit", firing_steps=3, credit_steps=3).step(net.clone(), x, y)
    assert not info["converged"]
    # and a settled run is neither
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettlingWarning)
        assert bioprop.make_rule("credit").step(net.clone(), x, y)["converged"]


# -- the pure process functions (closed forms) -------------------------------------------------------
def test_process_functions_closed_form():
    generator = torch.Generator().manual_seed(0)
    n, batch = 6, 3
    W = torch.randn(n, n, generator=generator, dtype=DTYPE)
    rates = torch.rand(batch, n, generator=generator, dtype=DTYPE)
    stimulus = torch.rand(batch, 2, generator=generator, dtype=DTYPE)
    inputs = torch.tensor([0, 4])
    new = firing_step(W, rates, inputs, stimulus, torch.tanh)
    expected = torch.tanh(rates @ W.T)
    expected[:, [0, 4]] = stimulus
    assert torch.equal(new, expected)

    credit = torch.randn(batch, n, generator=generator, dtype=DTYPE)
    gain = torch.rand(batch, n, generator=generator, dtype=DTYPE)
    kept = torch.tensor([1, 2])
    stepped = credit_step(W, credit, gain, clamped=kept)  # kept neurons keep their own credit
    for b in range(batch):
        for j in range(n):
            value = credit[b, j] if j in (1, 2) else sum(W[i, j] * gain[b, i] * credit[b, i] for i in range(n))
            assert abs(float(stepped[b, j] - value)) < 1e-12
    injected = credit_step(W, credit, gain, injection=torch.ones(batch, n, dtype=DTYPE))
    assert torch.allclose(injected, (gain * credit) @ W + 1, rtol=0, atol=1e-15)

    mask = torch.rand(n, n, generator=generator) < 0.5
    dW, db = weight_change(credit, gain, rates, 0.1, mask)
    for i, j in itertools.product(range(n), range(n)):
        value = 0.1 * sum(credit[b, i] * gain[b, i] * rates[b, j] for b in range(batch)) / batch if mask[i, j] else 0.0
        assert abs(float(dW[i, j]) - float(value)) < 1e-14
    assert torch.equal(dW[~mask], torch.zeros(int((~mask).sum()), dtype=DTYPE))
    assert torch.allclose(db, 0.1 * (credit * gain).mean(dim=0), rtol=0, atol=1e-15)


def test_settle_functions_stop_at_the_fixpoint_and_record():
    net = _recurrent_net(2)
    x = torch.randn(3, 3, dtype=DTYPE)
    record = []
    rates, s, settling = settle_firing(net.W, x, net.inputs, net.rate, net.bias, record=record)
    assert settling.converged and settling.steps == len(record) and torch.equal(record[-1], rates)
    assert torch.allclose(rates, net.rate(s).index_copy(1, net.inputs, x), rtol=0, atol=1e-15)
    gain = net.gain(s)
    assert torch.equal(gain[:, :3], torch.zeros(3, 3, dtype=DTYPE))  # g := 0 on clamped inputs
    credit, settled = settle_credit(net.W, gain, clamped=net.outputs, clamp_value=torch.ones(3, 2, dtype=DTYPE))
    assert settled.converged and torch.equal(credit[:, 8:], torch.ones(3, 2, dtype=DTYPE))
    assert relative_difference(credit_step(net.W, credit, gain, clamped=net.outputs), credit) < 1e-12


# -- training and the verify command -------------------------------------------------------------
def test_training_on_digits_keeps_bp_weights(tmp_path):
    # oracle: a BP twin trained on the same batches (bioprop train --compare bp), float64, 1 epoch
    from bioprop.train import train

    summary = train({"rule": "credit", "compare": "bp", "dataset": "digits", "hidden": [16], "epochs": 1,
                     "batch_size": 8, "dtype": "float64", "quiet": True, "out": str(tmp_path / "run")})
    assert summary["compare"]["max_abs_diff"] <= 1e-8
    assert summary["final"]["test_acc"] == summary["compare"]["final"]["test_acc"] > 0.8


def test_verify_command_passes_with_controls_and_k_table(capsys):
    assert cli.main(["verify", "--rule", "credit", "--sizes", "8", "6", "5", "4"]) == 0
    out = capsys.readouterr().out
    assert "verdict: EXACT" in out and "timescale cut" in out and "the table agrees" in out
    assert "DOES NOT DIVERGE" not in out
    report = verify_rule("credit", {"output_mode": "inject"}, sizes=[8, 6, 5, 4], activation="tanh", loss="ce")
    assert report.passed and all(control["diverges"] for control in report.controls)
    assert report.step_cuts["needed"] == {"firing": 3, "credit": 3, "both": 3}
    assert [row["k"] for row in report.step_cuts["rows"]] == [1, 2, 3, 4]


# -- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: RateNetwork(5, inputs=[0, 1], outputs=[1, 4]), "overlap"),
        (lambda: RateNetwork(5, inputs=[0, 7], outputs=[4]), "inputs: indices must lie in [0, 5)"),
        (lambda: RateNetwork(5, inputs=[0, 0], outputs=[4]), "repeated"),
        (lambda: RateNetwork(5, inputs=[0], outputs=[4], mask=torch.ones(4, 5, dtype=torch.bool)), "mask: expected shape (5, 5)"),
        (lambda: RateNetwork(5, inputs=[0], outputs=[4], mask=torch.full((5, 5), 2)), "mask: give a bool tensor"),
        (lambda: RateNetwork(0), "n=0"),
        (lambda: RateNetwork(5, activation="nope"), "activation='nope'"),
        (lambda: bioprop.make_rule("credit", balance="nope"), "balance='nope' is not known"),
        (lambda: bioprop.make_rule("credit", balance="gaussian", width=0.0), "width=0.0"),
        (lambda: bioprop.make_rule("credit", balance=["gaussian"]), "balance=['gaussian']: give a name"),
        (lambda: RateNetwork.from_mlp(RateNetwork(3)), "from_mlp: expected a bioprop.MLP"),
        (lambda: RateNetwork(3, mask="all"), "mask='all'"),
        (lambda: bioprop.make_rule("credit", output_mode="nope"), "output_mode='nope'"),
        (lambda: bioprop.make_rule("credit", firing_steps=0), "firing_steps=0"),
        (lambda: bioprop.make_rule("credit", dynamics="nope"), "dynamics='nope'"),
        (lambda: RateNetwork.from_mlp(bioprop.MLP([3, 2], input_map="activation")), "input_map='activation'"),
        (lambda: RateNetwork(5, inputs=[0], outputs=[4]).to_mlp(), "not built by from_mlp"),
    ],
)
def test_bad_construction_raises(build, message):
    with pytest.raises(BioPropError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        build()


def test_bad_batches_raise():
    net = RateNetwork(6, inputs=[0, 1], outputs=[4, 5], dtype=DTYPE, seed=0)
    rule = bioprop.make_rule("credit")
    cases = [
        ((torch.zeros(3, 3), torch.zeros(3, 2)), r"x: expected shape \(batch, 2\)"),
        ((torch.zeros(3, 2), torch.zeros(3, 3)), r"y: expected shape \(batch, 2\)"),
        ((torch.zeros(3, 2), torch.tensor([0, 1, 2])), r"y: integer labels must lie in \[0, 2\)"),
        ((torch.zeros(3, 2), torch.zeros(4, 2)), "batch sizes differ"),
        ((torch.full((3, 2), math.nan), torch.zeros(3, 2)), "NaN"),
    ]
    for (x, y), message in cases:
        with pytest.raises(BioPropError, match=message):
            rule.step(net, x, y)
    with pytest.raises(BioPropError, match="no output neurons"):
        rule.step(RateNetwork(4, inputs=[0]), torch.zeros(2, 1), torch.zeros(2, 0))
    with pytest.raises(BioPropError, match="dynamics='layered'"):
        bioprop.make_rule("credit", dynamics="layered").step(net, torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(BioPropError, match="bioprop.MLP or a bioprop.RateNetwork"):
        rule.step(object(), torch.zeros(3, 2), torch.zeros(3, 2))
    info = rule.step(net, torch.zeros(3, 2), torch.tensor([0, 1, 1]))  # integer labels become one-hot targets
    assert info["output"].shape == (3, 2)
    # a user balance that does not keep the net input's shape is named, on both paths
    summed = bioprop.make_rule("credit", balance=lambda s: s.sum(dim=1))
    with pytest.raises(BioPropError, match=r"balance='<lambda>': returned \(3,\) for a net input of shape \(3, 6\)"):
        summed.step(net, torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(BioPropError, match="balance='<lambda>': returned"):
        summed.step(bioprop.MLP([2, 4, 2], dtype=DTYPE), torch.zeros(3, 2), torch.zeros(3, 2))


def test_verify_fails_when_the_k_table_disagrees_with_the_derivation(monkeypatch):
    # negative control of the table check: claim one step fewer than derived
    import bioprop.rules.credit

    # the rule derives its own step counts (CreditRule.step_cut_columns)
    monkeypatch.setattr(bioprop.rules.credit, "settling_steps_needed", lambda n_layers, mode: (n_layers - 1, n_layers - 2))
    report = verify_rule("credit", sizes=[8, 6, 5, 4])
    assert report.exact and not report.step_cuts["as_derived"] and not report.passed


def test_diagnostics_see_the_credit_rule_as_bp_and_a_gaussian_balance_as_not():
    # oracle: autograd's gradient, through bioprop.diagnostics.measure (the path train
    # --diagnostics-every logs); negative control: a Gaussian balance
    from bioprop.diagnostics import measure

    net = bioprop.MLP([6, 5, 4, 3], activation="tanh", dtype=torch.float64, seed=0)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(8, 6, generator=generator, dtype=torch.float64)
    y = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    exact = measure(bioprop.make_rule("credit", lr=0.1), net, x, y)
    assert max(r["rel_update"] for r in exact) <= 1e-12
    assert min(r["cos_delta"] for r in exact[:-1]) >= 1 - 1e-12
    broken = measure(bioprop.make_rule("credit", lr=0.1, balance="gaussian"), net, x, y)
    assert max(r["rel_update"] for r in broken) > 1e-3
