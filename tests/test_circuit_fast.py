"""The circuit's fused step (in-place products, X_l once, V̄ in a transposed layout, the step
bound as tensors) against a straightforward float64 reference of the module docstring's
equations, written here in batched matrix form: every matrix and result field after each of
several steps, at <= 1e-12 relative. Negative control: the same reference with kappa changed
must miss the rule by far more than that tolerance.
"""
import copy

import pytest
import torch

import bioprop

from conftest import relative_difference

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = [7, 6, 5, 6, 3]
TOLERANCE = 1e-12

ACTIVATIONS = {
    "sigmoid": (torch.sigmoid, lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z))),
    "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
    "relu": (torch.relu, lambda z: (z > 0).double()),
}
DOWNSTREAM = {"identity": lambda v: v, "relu": torch.relu, "tanh": torch.tanh}


def user_cross_rule(hb, eps, teaching):
    """A callable cross rule: X summed over the batch, not normalised by rho."""
    return hb.T @ (0.5 * eps - teaching)


def reference_step(state, x, y, o):
    """One step of the module docstring's equations on `state` (W, b, Wbar, V, Vbar, means):
    returns the next state and what the step reports. `o`: the rule's options."""
    W, b, Wbar, V, Vbar, means = (state[k] for k in ("W", "b", "Wbar", "V", "Vbar", "means"))
    f, df = ACTIVATIONS[o["activation"]]
    g = DOWNSTREAM[o["downstream_activation"]]
    L, B = len(W), x.shape[0]
    h, z = [x], []
    for l in range(L):
        z.append(h[l] @ W[l].T + (b[l] if b[l] is not None else 0.0))
        if l < L - 1:
            h.append(f(z[l]))
    output = z[-1]
    if o["loss"] == "ce":
        e = torch.softmax(output, dim=1) - y
        loss = -(y * torch.log_softmax(output, dim=1)).sum(dim=1).mean()
    else:
        e = output - y
        loss = 0.5 * ((output - y) ** 2).sum(dim=1).mean()
    eps, hb, a = [None] * (L - 1), [None] * (L - 1), [None] * (L - 1)
    eps[L - 2] = df(z[L - 2]) * (e @ Wbar[-1].T)
    for l in range(L - 1, 0, -1):
        hb[l - 1] = g(eps[l - 1] @ V[l - 1].T)
        a[l - 1] = hb[l - 1] @ Vbar[l - 1].T
        if l > 1:
            eps[l - 2] = df(z[l - 2]) * (hb[l - 1] @ Wbar[l - 2].T)
    signals = a + [e]
    G = [signals[l].T @ h[l] / B for l in range(L)]
    G_bias = [signals[l].mean(dim=0) for l in range(L)]
    hebbian = [h[l - 1].T @ hb[l - 1] / B for l in range(2, L)] + [h[L - 1].T @ e / B]
    plastic = o["plastic"]
    s = [1.0] * L
    if o["step_bound"] > 0 and "W" in plastic:
        sizes = [float(gl.norm()) for gl in G]
        if means is None:
            means = sizes
        else:
            s = [min(1.0, o["step_bound"] * m / size) for m, size in zip(means, sizes)]
            means = [o["step_memory"] * m + (1 - o["step_memory"]) * size for m, size in zip(means, sizes)]
    X = []
    for l in range(L - 1):
        if o["cross_rule"] == "callable":
            X.append(user_cross_rule(hb[l], eps[l], a[l]) / B)
            continue
        P = {"delta": eps[l] - a[l], "delta_raw": eps[l] - a[l], "hebbian": eps[l], "anti_hebbian": -eps[l]}[o["cross_rule"]]
        increment = hb[l].T @ P / B
        if o["cross_rule"] != "delta_raw":
            power = eps[l] if o["normalizer"] == "error" else hb[l]
            rho = float((power**2).sum(dim=1).mean())
            increment = increment / rho if rho > 0 else torch.zeros_like(increment)
        X.append(increment)
    eta_w, lam, kappa = o["lr"], o["lam"], o["kappa"]
    eta_wbar = eta_w if o["eta_wbar"] is None else o["eta_wbar"]
    new = {"means": means}
    if "W" in plastic:
        new["W"] = [W[l] - eta_w * (s[l] * G[l] + lam * W[l]) for l in range(L)]
        new["b"] = [None if b[l] is None else b[l] - eta_w * s[l] * G_bias[l] for l in range(L)]
    else:
        new["W"], new["b"] = W, b
    if "Wbar" in plastic:
        new["Wbar"] = [Wbar[l - 2] - eta_wbar * s[l - 1] * hebbian[l - 2] - eta_w * lam * Wbar[l - 2] for l in range(2, L)]
        new["Wbar"].append(Wbar[-1] - eta_w * (s[L - 1] * hebbian[-1] + lam * Wbar[-1]))
    else:
        new["Wbar"] = Wbar
    new["V"] = [v + o["eta_v"] * xl - kappa * v for v, xl in zip(V, X)] if "V" in plastic else V
    new["Vbar"] = [v + o["eta_vbar"] * xl.T - kappa * v for v, xl in zip(Vbar, X)] if "Vbar" in plastic else Vbar
    estimates = [s[l] * G[l] if "W" in plastic else G[l] for l in range(L)]
    report = {"loss": loss, "output": output, "deltas": eps, "teaching": a, "downstream": hb, "estimates": estimates}
    return new, report


def network(bias, activation, seed=1):
    if bias == "mixed":  # a wrapped Sequential with biases on some layers only
        torch.manual_seed(seed)
        layers = []
        for index, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
            layers.append(torch.nn.Linear(n_in, n_out, bias=index % 2 == 0, dtype=torch.float64))
            if index < len(SIZES) - 2:
                layers.append({"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[activation]())
        model = torch.nn.Sequential(*layers)
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        return bioprop.wrap(model), [m.weight for m in linears], [m.bias for m in linears]
    net = bioprop.MLP(SIZES, activation=activation, bias=bias, dtype=torch.float64, seed=seed)
    return net, list(net.weights), list(net.biases) if bias else [None] * net.n_layers


def batches(loss, steps=3, n=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for k in range(steps):
        # batches of different scale, so the step bound is active on some steps
        x = (1 + 2 * k) * torch.randn(n, SIZES[0], generator=generator, dtype=torch.float64)
        if loss == "ce":
            y = torch.nn.functional.one_hot(torch.randint(0, SIZES[-1], (n,), generator=generator), SIZES[-1]).double()
        else:
            y = (1 + k) * torch.randn(n, SIZES[-1], generator=generator, dtype=torch.float64)
        out.append((x, y))
    return out


def snapshot(rule, weights, biases):
    means = None if rule.step_sizes is None else [float(m) for m in rule.step_sizes]
    return {
        "W": [w.detach().clone() for w in weights],
        "b": [None if v is None else v.detach().clone() for v in biases],
        "Wbar": [m.clone() for m in rule.feedback],
        "V": [m.clone() for m in rule.to_downstream],
        "Vbar": [m.clone() for m in rule.to_teaching],
        "means": means,
    }


def largest_difference(net, rule, weights, biases, info, expected, report):
    """The largest relative difference between the rule after its step and the reference."""
    got = snapshot(rule, weights, biases)
    pairs = []
    for key in ("W", "b", "Wbar", "V", "Vbar"):
        pairs += [(have, want) for have, want in zip(got[key], expected[key]) if want is not None]
    pairs += [(info.output, report["output"]), (torch.as_tensor(info.loss, dtype=torch.float64), report["loss"])]
    for key, field in (("deltas", "deltas"), ("teaching", "teaching"), ("downstream", "downstream")):
        pairs += list(zip(getattr(info, field), report[key]))
    slot = {id(p): i for i, p in enumerate(net.parameters_list())}  # estimates sit at the weights' entries
    pairs += [(info.gradient_estimates[slot[id(w)]], want) for w, want in zip(weights, report["estimates"])]
    worst = max(relative_difference(have, want) for have, want in pairs)
    if expected["means"] is not None:
        worst = max([worst] + [abs(h - w) / abs(w) for h, w in zip(got["means"], expected["means"])])
    return worst


CASES = {
    "defaults": {},
    "unbounded": {"step_bound": 0.0},
    "tight bound": {"step_bound": 0.6, "step_memory": 0.5},
    "eta_v != eta_vbar": {"eta_v": 0.7, "eta_vbar": 0.3, "kappa": 1e-2},
    "downstream normaliser, relu g": {"normalizer": "downstream", "downstream_activation": "relu", "eta_wbar": 0.02},
    "hebbian, tanh g": {"cross_rule": "hebbian", "downstream_activation": "tanh"},
    "anti-hebbian": {"cross_rule": "anti_hebbian"},
    "delta_raw": {"cross_rule": "delta_raw", "eta_v": 0.01, "eta_vbar": 0.02},
    "callable rule": {"cross_rule": "callable"},
    "V alone": {"plastic": "W,Wbar,V"},
    "Vbar alone": {"plastic": "W,Vbar", "step_bound": 0.6},
    "eta_v 0": {"eta_v": 0.0, "kappa": 1e-2},
    "kappa 0": {"kappa": 0.0, "eta_v": 0.0},
    "W frozen": {"plastic": "Wbar,V,Vbar"},
}


def rule_and_options(case, loss):
    options = dict(lr=0.05, loss=loss, ratio="2,1.5,3", scale_v=0.5, scale_vbar=0.5, seed=3)
    options.update(CASES[case])
    rule_options = dict(options)
    if options.get("cross_rule") == "callable":
        rule_options["cross_rule"] = user_cross_rule
    rule = bioprop.make_rule("circuit", **rule_options)
    o = {**rule.options(), "cross_rule": options.get("cross_rule", "delta"), "plastic": rule.plastic}
    return rule, o


def run_against_reference(case, loss, bias, activation, ordinary_layout=False, change=None):
    net, weights, biases = network(bias, activation)
    rule, o = rule_and_options(case, loss)
    o["activation"] = activation
    rule.initialize(net)
    if ordinary_layout:  # V̄ and W̄ assigned by hand, in the ordinary row-major layout: the general path
        rule.to_teaching = [m.contiguous() for m in rule.to_teaching]
        rule.feedback = [m.contiguous() for m in rule.feedback]
    reference_options = {**o, **(change or {})}
    state = snapshot(rule, weights, biases)
    worst = 0.0
    for x, y in batches(loss):
        expected, report = reference_step(state, x, y, reference_options)
        info = rule.step(net, x, y)
        worst = max(worst, largest_difference(net, rule, weights, biases, info, expected, report))
        state = expected
    return worst, rule


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("bias", [True, False])
def test_fused_step_equals_the_docstring_equations(case, bias):
    worst, _ = run_against_reference(case, "mse", bias, "sigmoid")
    assert worst <= TOLERANCE, worst


@pytest.mark.parametrize("loss, bias, activation", [("ce", "mixed", "relu"), ("ce", True, "tanh"), ("mse", "mixed", "sigmoid")])
def test_fused_step_on_other_losses_activations_and_mixed_biases(loss, bias, activation):
    for case in ("defaults", "unbounded", "tight bound"):
        worst, _ = run_against_reference(case, loss, bias, activation)
        assert worst <= TOLERANCE, (case, worst)


@pytest.mark.parametrize("case", ["defaults", "eta_v != eta_vbar", "Vbar alone", "callable rule"])
def test_ordinary_layout_gives_the_same_step(case):
    # V̄ and W̄ are drawn in a transposed layout (both cross writes in memory order); ones
    # assigned in the ordinary layout take the general path and must give the same numbers
    worst, rule = run_against_reference(case, "mse", True, "sigmoid", ordinary_layout=True)
    assert worst <= TOLERANCE, worst
    assert all(m.is_contiguous() for m in rule.to_teaching + rule.feedback)  # written in place, layout kept
    drawn = bioprop.make_rule("circuit", ratio=2, seed=0)
    drawn.initialize(network(True, "sigmoid")[0])
    assert all(m.T.is_contiguous() for m in drawn.to_teaching + drawn.feedback)
    restored = bioprop.make_rule("circuit", ratio=2)
    restored.load_state_dict({**drawn.state_dict(), "to_teaching": [m.contiguous() for m in drawn.to_teaching]})
    assert all(m.T.is_contiguous() for m in restored.to_teaching)
    assert all(torch.equal(a, b) for a, b in zip(restored.to_teaching, drawn.to_teaching))


def test_the_step_bound_is_active_in_the_bounded_cases():
    # the bounded cases above are only a check of the bound if some s_l < 1 occurs in them
    for case in ("defaults", "tight bound", "Vbar alone"):
        net, weights, biases = network(True, "sigmoid")
        rule, o = rule_and_options(case, "mse")
        o["activation"] = "sigmoid"
        rule.initialize(net)
        state, factors = snapshot(rule, weights, biases), []
        for x, y in batches("mse"):
            expected, report = reference_step(state, x, y, o)
            if state["means"] is not None:
                sizes = [float(gl.norm()) for gl in reference_step(state, x, y, {**o, "step_bound": 0.0})[1]["estimates"]]
                factors += [min(1.0, o["step_bound"] * m / size) for m, size in zip(state["means"], sizes)]
            state = expected
        assert min(factors) < 0.9, (case, factors)


@pytest.mark.parametrize("case", ["defaults", "unbounded", "eta_v != eta_vbar"])
def test_negative_control_kappa_changed_misses(case):
    # the same comparison with the reference's kappa doubled (plus 1e-3): must fail by far
    kappa = bioprop.make_rule("circuit", **{k: v for k, v in CASES[case].items()}).kappa
    worst, _ = run_against_reference(case, "mse", True, "sigmoid", change={"kappa": 2 * kappa + 1e-3})
    assert worst > 1e3 * TOLERANCE, worst


def test_negative_control_step_bound_off_misses_when_it_binds():
    worst, _ = run_against_reference("tight bound", "mse", True, "sigmoid", change={"step_bound": 0.0})
    assert worst > 1e3 * TOLERANCE, worst


def test_no_downstream_sized_allocation_per_step():
    # X_l's workspace is made once: a second step reuses the same buffers
    net, _, _ = network(True, "sigmoid")
    rule = bioprop.make_rule("circuit", ratio=2, seed=0)
    x, y = batches("mse")[0]
    rule.step(net, x, y)
    buffers = {l: t.data_ptr() for l, t in rule._workspace.items()}
    rule.step(net, x, y)
    assert buffers and buffers == {l: t.data_ptr() for l, t in rule._workspace.items()}
    twin = copy.deepcopy(rule)
    twin.step(net.clone(), x, y)  # a copy works on its own buffers
