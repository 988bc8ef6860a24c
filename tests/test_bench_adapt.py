"""bench/adapt/run.py, the adaptation study's harness, on a tiny generated model (seconds): jobs, cached
runs within budget, paired intervals, the targets check, plots, and the lean path accounting."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from test_adapt_budget import make_model

BENCH = Path(__file__).resolve().parents[1] / "bench" / "adapt"
sys.path.insert(0, str(BENCH))

import lean  # noqa: E402
import run as bench  # noqa: E402

LAYERS = [("conv", 6, 3, 1, "SAME", "RELU"), ("conv", 8, 3, 2, "SAME", "RELU"), ("mean",), ("fc", 3, "NONE")]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A deployed model folder and a 'shifted' adaptation / evaluation pair (disjoint halves of one set)."""
    d = tmp_path_factory.mktemp("bench_adapt")
    (d / "model").mkdir()
    (d / "model" / "model.tflite").write_bytes(make_model(LAYERS, in_shape=(6, 6, 1), first=4, seed=9, sparsity=0.4))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(60, 1, 6, 6)).astype(np.float32)
    y = (np.argsort(np.argsort(x[:, 0, :3].mean(axis=(1, 2)))) * 3 // len(x)).astype(np.int64)
    np.savez(d / "a.npz", x=x[:30], y=y[:30])
    np.savez(d / "e.npz", x=x[30:], y=y[30:])
    return d


def test_smoke_two_seeds_two_selectors(study):
    """2 seeds x 2 selectors (+ full) x 1 epoch: every run within its budget, cached on the second call,
    the analysis pairs seeds and the plots are written."""
    args = bench.parse_args(["--seeds", "2", "--epochs", "1", "--methods", "neq,su", "--budgets", "40", "--shifts", "severe"])
    assert args.methods == ["neq", "su", "full"]
    jobs = bench.make_jobs(args, study / "model", {"severe": (study / "a.npz", study / "e.npz")}, "test")
    assert len(jobs) == 2 * 2 + 2  # full runs once per seed, for every budget
    cache = study / "runs.jsonl"
    records = bench.run_all(jobs, cache, 1)
    assert len(cache.read_text().splitlines()) == len(jobs)
    for r in records:
        assert len(r["accuracy"]) == 1 and 0 <= r["accuracy"][0] <= 1
        if r["method"] != "full":
            assert r["budget_ram"] == int(0.4 * r["full_ram"]) and max(r["ram_used"]) <= r["budget_ram"], r
    assert bench.run_all(jobs, cache, 1) == records  # all cached: nothing recomputed
    a = bench.analyse(records, args.methods, args.budgets, args.shifts, challengers=("neq",))
    cells = {c["method"]: c for c in a["cells"]}
    assert set(cells) == {"neq", "su", "full"} and all(c["seeds"] == 2 and c["within_budget"] for c in cells.values())
    assert cells["full"]["gain_recovered"] in (None, 1.0)
    assert {p["other"] for p in a["paired"]} == {"su", "full"} and all(p["n"] == 2 for p in a["paired"])
    assert a["targets"]["neq"] == {"met": False, "checks": []}  # the targets concern budgets <= 10% only
    res = {"setup": {"shifts": args.shifts, "budgets": args.budgets, "methods": args.methods, "epochs": 1}, "analysis": a}
    paths = bench.plot(res, study, "smoke")
    assert all(Path(p).stat().st_size > 1000 for p in paths)
    json.dumps(a)  # the results are plain JSON


def test_paired_interval_matches_scipy():
    from scipy import stats

    a, b = [0.5, 0.6, 0.55, 0.7, 0.65], [0.45, 0.5, 0.56, 0.6, 0.6]
    p = bench.paired(a, b)
    t = stats.ttest_rel(a, b)
    ci = t.confidence_interval(0.95)
    assert p["n"] == 5 and p["mean"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert (p["lo"], p["hi"]) == pytest.approx((ci.low, ci.high))
    assert bench.paired([0.5, 0.6], [0.4, 0.5]) == {"mean": pytest.approx(0.1), "lo": pytest.approx(0.1), "hi": pytest.approx(0.1), "n": 2}


def test_lean_accounting_by_hand():
    """conv(6ch,4x4 via stride 2 -> 3x3) RELU, mean, fc3: the lean path to conv2 keeps conv2's float
    input, no float output (a 1-bit mask) and ping-pong errors, none below the MEAN."""
    from edgeprune.adapt import region as R
    from edgeprune.adapt.budget import CostModel

    region = R.region_from_tflite(make_model(LAYERS, in_shape=(6, 6, 1), first=4, seed=9, sparsity=0.4))
    conv2 = region.layers[1]
    assert conv2.in_shape == (6, 6, 6) and conv2.out_shape == (3, 3, 8)
    with lean.accounting("lean"):
        saved, errors, _ = CostModel(region).structure(1, frozenset([1]))
    assert saved == 4 * 6 * 6 * 6 + (3 * 3 * 8 + 7) // 8
    assert errors == 4 * (3 + 8)  # logits error and the mean's output error, one buffer each
    before = CostModel(region).structure(1, frozenset([1]))  # restored afterwards
    assert before == (4 * (6 * 6 * 6 + 3 * 3 * 8), 4 * (3 + 8 + 3 * 3 * 8), before[2])


def test_neq_explore_rotates_and_scores_stay_within_budget():
    """neq-explore: after the warm-up, neurons whose weights did not train in the previous epoch come
    first, whatever their velocity; every score's selection fits the budget, with NEq's state counted."""
    from edgeprune.adapt import region as R
    from edgeprune.adapt.budget import CostModel
    from edgeprune.adapt.scores import SCORES
    from edgeprune.adapt.selectors import SELECTORS, USES_NEQ, Selector

    assert set(SCORES) <= set(SELECTORS) and set(SCORES) <= set(USES_NEQ)
    region = R.region_from_tflite(make_model(LAYERS, in_shape=(6, 6, 1), first=4, seed=9, sparsity=0.4))
    rng = np.random.default_rng(3)
    for name in SCORES:
        for frac in (0.1, 0.2, 0.4):
            cm = CostModel(region, neq=True, probe_samples=6)
            budget = int(frac * cm.full_cost().ram)
            sel = Selector(name, cm, budget, None, seed=1, init="su")
            n = len(cm.neurons())
            prev = sel.select(1, None)  # the last warm-up epoch
            for epoch in range(2, 6):
                nu = rng.normal(size=n) * 1e-2
                chosen = sel.select(epoch, nu)
                cost = cm.cost(chosen)
                assert cost.ram <= budget and cost.breakdown["neq"] > 0, f"{name} {frac} epoch {epoch}"
                if name == "neq-explore":
                    before = {(i, c) for i, s in enumerate(prev.weights) for c in s}
                    now = {(i, c) for i, s in enumerate(chosen.weights) for c in s}
                    fresh = [k for k in sel.neurons if k not in before]
                    # A fresh neuron is left out only when it does not fit next to those chosen.
                    if fresh and now & before:
                        assert now - before, f"{frac} epoch {epoch}: trained only last epoch's neurons again"
                prev = chosen


def test_grad_scores_error_mass_state_and_ranking(study):
    """grad / grad-explore: the classifier's error mass is sum |softmax - onehot| over the epoch's samples,
    its accumulators (4 B per candidate) are in the cost, the largest mass per cost trains first, a
    neuron whose error was not computed (NaN) comes last."""
    import torch

    from edgeprune.adapt import region as R
    from edgeprune.adapt.budget import CostModel
    from edgeprune.adapt.scores import GRAD_SCORES
    from edgeprune.adapt.selectors import SELECTORS, USES_GRAD, USES_NEQ, Selector
    from edgeprune.adapt.session import AdaptOptions, ErrorMass, adapt

    assert set(GRAD_SCORES) <= set(SELECTORS) and set(GRAD_SCORES) == set(USES_GRAD) and not set(USES_GRAD) & set(USES_NEQ)
    region = R.load_region(study / "model")
    # The classifier's mass by hand, from one batch of logits.
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], requires_grad=True)
    y = torch.tensor([1, 2])
    mass = ErrorMass(region, deepest=len(region.layers) - 1)
    mass.add(logits, [None] * (len(region.layers) - 1) + [logits], y)
    p = torch.softmax(logits.detach().double(), 1).numpy()
    expected = np.abs(p - np.eye(3)[y.numpy()]).sum(0)
    assert np.allclose(mass.per_neuron()[-3:], expected, rtol=1e-6, atol=0)
    assert np.isnan(mass.per_neuron()[:-3]).all()  # below the path: not computed

    cm = CostModel(region, grad=True)
    budget = int(0.4 * cm.full_cost().ram)
    sel = Selector("grad", cm, budget, None, seed=0)
    assert sel.select(0).counts(region.layer_names) == Selector("su", CostModel(region), budget, None).select(0).counts(region.layer_names)
    last = len(region.layers) - 1
    errors = np.full(len(cm.neurons()), np.nan)
    classifier = [k for k, (i, _) in enumerate(cm.neurons()) if i == last]
    errors[classifier] = [0.0, 5.0, 1.0]
    chosen = sel.select(1, None, errors)
    cost = cm.cost(chosen)
    assert cost.ram <= budget and cost.breakdown["grad"] == 4 * len(cm.candidates())
    assert 1 in chosen.weights[last]
    ranked = sel._order(-GRAD_SCORES["grad"](sel, errors[sel.offset:]))
    assert ranked[:3] == [(last, 1), (last, 2), (last, 0)]  # largest mass first; NaN (not computed) after
    explore = Selector("grad-explore", cm, budget, None, seed=0)
    explore.last = chosen.copy()
    explore.last.weights[last] = {1}  # trained last epoch: the other observed neurons go first
    ranked = explore._order(-GRAD_SCORES["grad-explore"](explore, errors[explore.offset:]))
    assert ranked[:3] == [(last, 2), (last, 0), (last, 1)]
    assert "grad" not in CostModel(region).cost(chosen).breakdown  # no other selector pays for it

    out = adapt(AdaptOptions(dir=study / "model", data=study / "a.npz", budget_ram="40%", selector="grad-explore", epochs=2))
    assert [e["warmup"] for e in out["epochs"]] == [True, False]
    assert all(e["ram_used"] <= out["budget_ram"] and e["ram_breakdown"]["grad"] > 0 for e in out["epochs"])
    from edgeprune.adapt.device import SELECTOR_CODES

    assert set(SELECTOR_CODES) == set(SELECTORS)  # the device runs every score (device_tests/test_adapt_device.py)
