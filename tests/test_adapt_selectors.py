"""Adaptation selectors and NEq (edgeprune.adapt.selectors, edgeprune.adapt.neq): selections never exceed
either budget, too-small budgets are refused with the smallest workable one, determinism per seed, and
the similarity / velocity arithmetic by hand."""

from __future__ import annotations

import numpy as np
import pytest
from test_adapt_budget import MODELS, TINY, make_model

from edgeprune.adapt import region as R
from edgeprune.adapt.budget import CostModel
from edgeprune.adapt.neq import NEqTracker, cosine, probe_indices, quantize_history
from edgeprune.adapt.selectors import INITS, SELECTORS, USES_NEQ, Selector
from edgeprune.errors import UsageError

WIDE = [("conv", 8, 3, 1, "SAME", "RELU"), ("conv", 8, 3, 1, "SAME", "RELU"), ("mean",), ("fc", 6, "NONE")]


@pytest.fixture(scope="module")
def regions():
    out = {name: R.region_from_tflite(make_model(spec, in_shape=(6, 6, 2), seed=5)) for name, spec in MODELS.items()}
    out["tiny"] = R.region_from_tflite(make_model(TINY, in_shape=(4, 4, 1)))
    return out


def _cm(region, selector, momentum=False):
    return CostModel(region, momentum=momentum, neq=selector in USES_NEQ, probe_samples=6)


def test_selection_never_exceeds_budgets(regions):
    """Property: over random models, budgets, selectors, inits and velocities, every selection fits both budgets."""
    rng = np.random.default_rng(11)
    checked = refused = 0
    for case in range(150):
        name = sorted(regions)[case % len(regions)]
        region = regions[name]
        selector = SELECTORS[case % len(SELECTORS)]
        init = INITS[(case // len(SELECTORS)) % len(INITS)]
        cm = _cm(region, selector, momentum=bool(case % 3 == 0))
        full = cm.full_cost()
        budget_ram = int(rng.uniform(0.02, 1.2) * full.ram)
        budget_macs = None if case % 2 else int(rng.uniform(0.02, 1.2) * full.macs) + 1
        try:
            sel = Selector(selector, cm, budget_ram, budget_macs, seed=case, init=init)
        except UsageError as e:
            assert "smallest workable budget" in str(e), f"case {case} ({name}, {selector}): {e}"
            refused += 1
            continue
        n = len(cm.neurons())
        for epoch in range(5):
            velocities = None if epoch < 2 else rng.normal(size=n) * rng.choice([1e-4, 1e-2, 1.0])
            try:
                chosen = sel.select(epoch, velocities)
            except UsageError as e:  # RAM-cheapest and MAC-cheapest neurons differ and none fits both
                assert "budget" in str(e), f"case {case}"
                refused += 1
                break
            cost = cm.cost(chosen)
            where = f"case {case} ({name}, {selector}, init {init}, epoch {epoch}, budgets {budget_ram} B / {budget_macs})"
            assert not chosen.is_empty(), where
            if selector == "full":
                assert chosen.counts(region.layer_names) == {lay.name: lay.channels for lay in region.layers}, where
                continue
            assert cost.ram <= budget_ram, where
            assert budget_macs is None or cost.macs <= budget_macs, where
            checked += 1
    assert checked > 200 and refused > 0


def test_too_small_budget_names_smallest(regions):
    region = regions["tiny"]
    cm = _cm(region, "random")
    # tiny: the cheapest whole neuron is fc2 channel 0, 44 B (tests/test_adapt_budget.py)
    with pytest.raises(UsageError, match=r"smallest workable budget is 44 B \(one neuron of fc2\)"):
        Selector("random", cm, 43, None)
    Selector("random", cm, 44, None)
    # neq also keeps its state: 5 floats per candidate neuron and a pre-epoch copy of the trained
    # parameters. At the smallest budget only fc2's 2 neurons are candidates (conv1's path alone is over
    # 400 B): 44 + 2 * 20 + 3 * 4 = 96 B
    with pytest.raises(UsageError, match="smallest workable budget is 96 B"):
        Selector("neq", _cm(region, "neq"), 95, None)
    cm = _cm(region, "neq")
    sel = Selector("neq", cm, 96, None)
    assert cm.first_candidate == 1 and sel.neurons == [(1, 0), (1, 1)] and sel.offset == 3
    assert cm.neq_bytes() == 40
    # with room for conv1 (its cheapest neuron with all 5 neurons' state: 412 + 8 + 100 + 2 * 4 + ... fits in 700 B)
    cm = _cm(region, "neq")
    Selector("neq", cm, 700, None)
    assert cm.first_candidate == 0 and cm.neq_bytes() == 100
    # su may train a bias alone: fc2's bias, 8 B + errors 8 B = 16 B
    with pytest.raises(UsageError, match=r"smallest workable budget is 16 B \(one neuron's bias of fc2\)"):
        Selector("su", _cm(region, "su"), 15, None)


def test_neq_ranks_by_velocity_over_cost(regions):
    region = regions["conv_mean_fc"]
    cm = _cm(region, "neq")
    neurons = cm.neurons()
    last = [k for k, (i, _) in enumerate(neurons) if i == len(region.layers) - 1]
    target = last[-1]
    cm.first_candidate = len(region.layers) - 1  # NEq state for the last layer only, as the selector will find
    budget = cm.cost(_one(cm, neurons[target])).ram  # room for exactly that neuron, and no second one
    sel = Selector("neq", cm, budget, None)
    assert cm.first_candidate == len(region.layers) - 1
    nu = np.full(len(neurons), 1e-6)
    nu[target] = 0.5
    chosen = sel.select(2, nu)
    i, c = neurons[target]
    assert chosen.weights[i] == {c} and sum(map(len, chosen.weights)) == 1
    # the same call again selects the same (deterministic); neq-shuffled permutes the velocities
    assert sel.select(2, nu).as_lists() == chosen.as_lists()

    wide = R.region_from_tflite(make_model(WIDE, in_shape=(6, 6, 2), seed=6))
    cm = _cm(wide, "neq")
    budget = int(0.9 * cm.full_cost().ram)  # the path down to conv1 alone is over half of full's RAM here
    nu = np.random.default_rng(0).random(len(cm.neurons()))
    neq, shuffled = Selector("neq", cm, budget, None, seed=3), Selector("neq-shuffled", cm, budget, None, seed=3)
    assert len({str(neq.select(e, nu).as_lists()) for e in range(2, 8)}) == 1
    assert len({str(shuffled.select(e, nu).as_lists()) for e in range(2, 8)}) > 1


def _one(cm, neuron):
    from edgeprune.adapt.budget import Selection

    s = Selection.empty(len(cm.region.layers))
    s.weights[neuron[0]].add(neuron[1])
    return s


def test_warmup_su_random_cheapest(regions):
    region = regions["conv_mean_fc"]
    budget = int(0.3 * _cm(region, "su").full_cost().ram)
    su = Selector("su", _cm(region, "su"), budget, None)
    assert su.select(0).as_lists() == su.select(7).as_lists()  # static
    assert su.select(0).biases[-1] == set(range(region.layers[-1].channels))  # at least the last layer's biases
    wide = R.region_from_tflite(make_model(WIDE, in_shape=(6, 6, 2), seed=6))
    rbudget = int(0.9 * _cm(wide, "random").full_cost().ram)
    rnd = Selector("random", _cm(wide, "random"), rbudget, None, seed=4)
    assert rnd.select(3).as_lists() == Selector("random", _cm(wide, "random"), rbudget, None, seed=4).select(3).as_lists()
    assert len({str(rnd.select(e).as_lists()) for e in range(6)}) > 1  # re-drawn each epoch
    ch = Selector("cheapest", _cm(region, "cheapest"), budget, None, init="full-last-layer")
    last = len(region.layers) - 1
    warm = ch.select(0, None)
    assert all(not w for w in warm.weights[:last]) and warm.weights[last]
    after = ch.select(2, np.zeros(len(ch.neurons)))
    # cheapest: the first neuron of the cost ranking is always in
    first = ch.neurons[int(np.argmin(ch.cost))]
    assert first[1] in after.weights[first[0]]


def test_cosine_and_velocity_by_hand(regions):
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, -1.0], [0.0, 0.0], [3.0, 0.0]])
    assert np.allclose(cosine(a, b), [1.0, 0.0, 1.0, 0.0])  # scale-invariant, orthogonal, both zero, one zero
    assert np.array_equal(quantize_history(np.array([0.5, -0.5, 1.49, 1e9, -1e9]), 1.0), [1, -1, 1, 127, -127])

    region = regions["tiny"]  # 3 + 2 neurons; conv1 has 16 positions
    tr = NEqTracker(region, mu=0.5, eps=1e-3)
    base = [np.ones((2, 4, 4, 3)), np.ones((2, 2))]
    tr.observe(base)
    assert tr.velocities is None
    # epoch 1: conv1 channel 0 flips the sign of half its outputs: v = 0; the rest unchanged: v = 1
    o1 = [base[0].copy(), base[1].copy()]
    o1[0][0, :, :, 0] = -1
    tr.observe(o1)
    assert tr.velocities is None and np.allclose(tr.v_prev, [0, 1, 1, 1, 1])
    # epoch 2: back to all ones: v = cos(ones, o1) = 0 for channel 0 (dv = 0); fc2 channel 1 doubles (v = 1)
    o2 = [base[0].copy(), base[1].copy()]
    o2[1][:, 1] = 2
    tr.observe(o2)
    assert np.allclose(tr.velocities, [0, 0, 0, 0, 0])
    # epoch 3: channel 0 unchanged (v = 1, dv = 1, nu = 1 + 0.5 * 0); fc2 channel 0 orthogonal (v = 0, dv = -1)
    o3 = [o2[0].copy(), o2[1].copy()]
    o3[1][0, 0], o3[1][1, 0] = 1, -1
    tr.observe(o3)
    assert np.allclose(tr.velocities, [1, 0, 0, -1, 0])
    # epoch 4: everything unchanged: v = 1 everywhere; dv = [0, 0, 0, 1, 0]; nu = dv + 0.5 * nu
    tr.observe(o3)
    assert np.allclose(tr.velocities, [0.5, 0, 0, 0.5, 0])
    assert tr.at_equilibrium() == 3


def test_probe_indices():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    p = probe_indices(y, 2, seed=0)
    assert list(y[p]) == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(p, probe_indices(y, 2, seed=0))
    assert len({tuple(probe_indices(y, 2, seed=s)) for s in range(10)}) > 1
    assert list(probe_indices(np.array([0, 1, 1]), 2, 0)) == [0, 1, 2]  # a class with fewer samples gives what it has
