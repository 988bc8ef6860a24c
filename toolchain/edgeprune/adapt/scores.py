"""Alternative selection scores (bench/adapt measures them against `neq`; bench/README.md has the numbers).

An NEq score (SCORES) maps (selector, |nu| of its candidate neurons) to one value per candidate; the greedy of
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

Gradient-signal scores (GRAD_SCORES; not NEq: no velocities, so none of NEq's state). The signal is
each candidate's error mass over the previous epoch's training samples, m_n = sum over samples and
output positions of |d loss_sample / d o_n| (o_n: n's output before the activation). For a classifier
neuron c that is sum_s |softmax_c(s) - onehot_c(s)|. The backward pass already computes that error
for every channel of every layer it crosses (the logits down to the deepest selected layer: the
error buffers budget.py counts), so on the device the mass is one |x| and one add per error element
into a float32 accumulator per candidate neuron: 4 B per candidate, counted by
budget.CostModel(grad=True), no extra backward work. The accumulators are read once to build the
next epoch's selection and then zeroed; a candidate in a layer below the path holds a marker (-1,
a mass is never negative) meaning "not computed". Epoch 0 has no mass yet and trains the --init
warm-up. The sim (session.py) gets the same numbers from autograd (ErrorMass).
- grad: m_n / cost_n, largest first, where cost_n is the neuron's own share of the budgets (as for
  `neq`) plus the share of the whole backward path down to its layer (saved activations, error
  buffers, input-gradient MACs; budget.CostModel.structure). Candidates whose error was not computed
  come after every candidate whose error was. Why: a neuron's weight gradient is its error times its
  inputs, so the largest error mass is roughly the largest gradient, and it moves as training fixes
  a class (a built-in rotation). The path is charged in full because a conv neuron's mass sums over
  all its output positions and its own cost is small: with the own cost alone (first tried, seed 0
  at 40%) `grad` spends the budget on conv1's path, which bench/README.md shows is the worst use of
  it. A deeper neuron must carry about path / own times a classifier neuron's mass to go first.
- grad-explore: grad with neq-explore's rotation: observed candidates whose weights did not train in
  the previous epoch rank first (by m_n / cost), then the others. State: the previous selection,
  which the device holds anyway (as for neq-explore).
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


# ---------------------------------------------------------------------------------------------
# Gradient-signal scores (firmware/adapt.c's grad_scores is the device's copy of these).

def _path_cost(selector) -> np.ndarray:
    """Per candidate: its own share of the budgets plus the whole backward path down to its layer."""
    cm, paths = selector.cm, {}
    for i, _ in selector.neurons:
        if i not in paths:
            saved, errors, in_macs = cm.structure(i, frozenset([i]))
            paths[i] = (saved + errors) / selector.budget_ram + (in_macs / selector.budget_macs if selector.budget_macs else 0.0)
    return selector.cost + np.array([paths[i] for i, _ in selector.neurons])


def _grad_base(selector, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mass / path-inclusive cost, observed): NaN marks a candidate whose error the last epoch did not compute."""
    observed = ~np.isnan(mass)
    return np.where(observed, mass, 0.0) / _path_cost(selector), observed


def _grad(selector, mass: np.ndarray) -> np.ndarray:
    base, observed = _grad_base(selector, mass)
    return np.where(observed, base, -1.0)  # unobserved candidates after every observed one


def _grad_explore(selector, mass: np.ndarray) -> np.ndarray:
    base, observed = _grad_base(selector, mass)
    last = _trained(selector.last)
    fresh = observed & np.array([n not in last for n in selector.neurons])
    score = base + fresh * (float(base.max(initial=0.0)) + 1.0)
    return np.where(observed, score, -1.0)


GRAD_SCORES = {"grad": _grad, "grad-explore": _grad_explore}
