"""Alternative NEq selection scores (bench/adapt measures them against `neq`; bench/README.md has the numbers).

A score maps (selector, |nu| of its candidate neurons) to one value per candidate; the greedy of
budget.py adds neurons in decreasing score while both budgets hold, exactly as for `neq` (the path
cost is always in the feasibility test). Scores use only what `neq` already keeps on the device (the
velocities and the static costs), so their state and its accounting are `neq`'s (they are in
selectors.USES_NEQ): no extra RAM; the extra work is a few operations per candidate neuron per epoch.

- neq-norm: velocity and cost normalised per layer, path cost amortised.
      score_n = (|nu_n| / mean_L |nu|) / ((own_n + path_L / channels_L) / mean_L own)
  where L is n's layer, own_n its own RAM (master, gradient, pre-epoch copy), path_L the RAM of the
  backward path down to L (saved activations and error buffers, budget.CostModel.structure) and the
  means are over L's candidates. Why: raw |nu| is not comparable across layers (a classifier
  neuron's cosine over 20 probe outputs moves far more than a conv neuron's over 320), so `neq`'s
  ranking is mostly "which layer"; per layer it becomes "how far from equilibrium relative to its
  layer", and amortising the path makes a deeper layer pay its share of the path up front.
- neq-explore: `neq`'s |nu| / cost, but every neuron whose weights did not train in the previous
  epoch ranks before every neuron whose weights did. Why: under a budget most neurons do not train;
  an untrained neuron whose inputs are frozen has exactly the same outputs next epoch (v = 1,
  dv = 0), so its velocity only decays and plain `neq` keeps it "at equilibrium" for ever, training
  the same few neurons every epoch (bench/adapt: at 5% of full's RAM `random`, re-drawn each epoch,
  beats it). Here an untrained neuron's velocity counts as unknown, not as zero: the budget rotates
  through the candidates, and among the neurons it can afford the velocity still decides. State: the
  previous epoch's selection, which the device holds anyway until it builds the new one (a bitmap
  of the candidates; budget.py counts no selector's selection).
"""

from __future__ import annotations

import numpy as np


def _neq_norm(selector, nu: np.ndarray) -> np.ndarray:
    cm = selector.cm
    layer = np.array([i for i, _ in selector.neurons])
    own = np.array([cm.neuron_bytes(i, c) for i, c in selector.neurons], np.float64)
    score = np.zeros(len(nu))
    for i in np.unique(layer):
        at = layer == i
        path = sum(cm.structure(int(i), frozenset([int(i)]))[:2])
        v = nu[at] / max(float(nu[at].mean()), 1e-12)
        c = (own[at] + path / int(at.sum())) / max(float(own[at].mean()), 1.0)
        score[at] = v / c
    return score


def _trained(sel) -> set:
    return {(i, c) for i, s in enumerate(sel.weights) for c in s}


def _neq_explore(selector, nu: np.ndarray) -> np.ndarray:
    last = getattr(selector, "_explore_last", None)
    if last is None:  # the first scored epoch follows the warm-up's last epoch (1)
        last = _trained(selector._warmup(1))
    base = nu / selector.cost
    fresh = np.array([n not in last for n in selector.neurons])
    score = base + fresh * (float(base.max(initial=0.0)) + 1.0)
    # What the greedy will pick from this score (deterministic: the same call selectors.py makes next).
    selector._explore_last = _trained(selector.greedy.run(selector._order(-score)))
    return score


SCORES = {"neq-norm": _neq_norm, "neq-explore": _neq_explore}
