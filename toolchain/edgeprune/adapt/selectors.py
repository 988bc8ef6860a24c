"""Which neurons train each epoch, within the RAM and MAC budgets.

Every selector returns a budget.Selection whose exact cost (budget.CostModel, path included) fits
both budgets, except `full`, which has none. All randomness comes from numpy generators seeded with
(seed, epoch, purpose), so the device, given the same seed, draws the same neurons.

- neq: after the warm-up, neurons ranked by |nu| / cost, most non-equilibrium first, added greedily
  (a neuron that does not fit is skipped). cost = own RAM / RAM budget + own MACs / MAC budget (the
  second term only with a MAC budget): a neuron's own share of each budget, so both budgets weigh
  alike. The path cost is not in the score but always in the feasibility test.
- neq-shuffled: the same with the velocities permuted among neurons each epoch (control: does the
  velocity signal matter?).
- cheapest: the same warm-up, then neurons by cost ascending (control: does dividing by cost alone
  explain the gain?).
- random: neurons in a random order, re-drawn each epoch, added greedily.
- su: static, chosen once offline (Lin et al. 2022's sparse update, simplified): the biases of the
  last k layers plus the weights of a fraction r (1, 1/2, 1/4, 1/8) of the channels of the last m <= k
  layers (the channels with the largest weight norm); of all (k, m, r) within budget, the one training
  the most parameters (ties: fewer layers crossed, then larger r).
- full: every neuron, no budget (the upper bound).
- grad, grad-explore (scores.GRAD_SCORES; the device runs them too, firmware/adapt.c): after a
  one-epoch warm-up, neurons ranked by the previous epoch's error mass (select's `errors`).
Warm-up (`init`, the first two epochs of neq, neq-shuffled and cheapest): `su`, `random`, or
`full-last-layer` (the last layer's neurons in order, as many as fit).
"""

from __future__ import annotations

import numpy as np

from edgeprune.adapt.budget import CostModel, Greedy, Selection, too_small_message
from edgeprune.adapt.scores import GRAD_SCORES, SCORES  # alternative scores (scores.py)
from edgeprune.errors import UsageError

SELECTORS = ("neq", "su", "random", "full", "cheapest", "neq-shuffled") + tuple(SCORES) + tuple(GRAD_SCORES)
INITS = ("su", "random", "full-last-layer")
USES_NEQ = ("neq", "neq-shuffled") + tuple(SCORES)
USES_GRAD = tuple(GRAD_SCORES)  # keep an error-mass accumulator per candidate (budget.CostModel(grad=True))
NO_WARMUP = ("full", "su", "random")  # every other selector starts with the --init warm-up
SU_FRACTIONS = (1.0, 0.5, 0.25, 0.125)
_RANDOM, _SHUFFLE = 1, 2  # purposes in the seeds


def warmup_epochs(name: str) -> int:
    """Epochs selector `name` trains its --init warm-up: until velocities exist (two), or the error mass (one)."""
    return 0 if name in NO_WARMUP else (1 if name in USES_GRAD else 2)


class Selector:
    def __init__(self, name: str, cm: CostModel, budget_ram: int | None, budget_macs: int | None, seed: int = 0,
                 init: str = "su"):
        if name not in SELECTORS:
            raise UsageError(f"unknown selector '{name}'; choose one of {', '.join(SELECTORS)}")
        if init not in INITS:
            raise UsageError(f"unknown --init '{init}'; choose one of {', '.join(INITS)}")
        self.name, self.cm, self.seed, self.init = name, cm, int(seed), init
        self.neurons = cm.neurons()
        self.budget_ram, self.budget_macs = budget_ram, budget_macs
        self._su: Selection | None = None
        self.last: Selection | None = None  # the previous epoch's selection (grad-explore reads it)
        self.offset = 0  # velocities cover cm.neurons(); the candidates are its suffix from here
        if name != "full":
            if budget_ram is None:
                raise UsageError(f"selector {name} needs --budget-ram")
            # su may train a bias alone; the others train whole neurons after their warm-up.
            msg = too_small_message(cm, budget_ram, budget_macs, bias_only=(name == "su"))
            if msg:
                raise UsageError(msg)
            cm.fit_candidates(budget_ram, budget_macs)
            self.neurons = cm.candidates()
            self.offset = len(cm.neurons()) - len(self.neurons)
            self.greedy = Greedy(cm, budget_ram, budget_macs)
            own_ram = np.array([cm.neuron_bytes(i, c) for i, c in self.neurons], np.float64)
            own_macs = np.array([cm.neuron_macs(i, c) for i, c in self.neurons], np.float64)
            self.cost = own_ram / budget_ram + (own_macs / budget_macs if budget_macs else 0.0)

    def select(self, epoch: int, velocities: np.ndarray | None = None, errors: np.ndarray | None = None) -> Selection:
        """The selection for `epoch` (0-based); velocities: nu per neuron of cm.neurons(), None during the warm-up;
        errors: the previous epoch's error mass per neuron of cm.neurons() (NaN: not computed), for GRAD_SCORES."""
        name = self.name
        if name == "full":
            return self.cm.full_selection()
        if name == "su":
            sel = self.su()
        elif name == "random":
            sel = self._random(epoch)
        elif name in GRAD_SCORES:
            if errors is None:
                sel = self._warmup(epoch)
            else:
                mass = np.asarray(errors, np.float64)[self.offset:]
                sel = self.greedy.run(self._order(-GRAD_SCORES[name](self, mass)))
        elif velocities is None:
            sel = self._warmup(epoch)
        elif name == "cheapest":
            sel = self.greedy.run(self._order(self.cost))
        else:
            nu = np.abs(np.asarray(velocities, np.float64))[self.offset:]
            if name == "neq-shuffled":
                nu = nu[np.random.default_rng([self.seed, epoch, _SHUFFLE]).permutation(len(nu))]
            sel = self.greedy.run(self._order(-(SCORES[name](self, nu) if name in SCORES else nu / self.cost)))
        if sel.is_empty():
            raise UsageError(too_small_message(self.cm, self.budget_ram, self.budget_macs, bias_only=(name == "su"))
                             or f"no neuron fits both budgets at once ({self.budget_ram:,} B, {self.budget_macs:,} MACs); raise --budget-ram or --budget-macs")
        self.last = sel
        return sel

    def _order(self, key: np.ndarray) -> list[tuple[int, int]]:
        return [self.neurons[k] for k in np.argsort(key, kind="stable")]

    def _random(self, epoch: int) -> Selection:
        perm = np.random.default_rng([self.seed, epoch, _RANDOM]).permutation(len(self.neurons))
        return self.greedy.run([self.neurons[k] for k in perm])

    def _warmup(self, epoch: int) -> Selection:
        if self.init == "su":
            return self.su()
        if self.init == "random":
            return self._random(epoch)
        last = len(self.cm.region.layers) - 1
        return self.greedy.run([(i, c) for i, c in self.neurons if i == last])

    def su(self) -> Selection:
        if self._su is None:
            self._su = su_selection(self.cm, self.greedy)
        return self._su.copy()


def su_selection(cm: CostModel, greedy: Greedy) -> Selection:
    layers = cm.region.layers
    n = len(layers)
    norms = [np.linalg.norm(lay.weight.reshape(-1, lay.channels) if lay.kind == "DEPTHWISE_CONV_2D"
                            else lay.weight.reshape(lay.channels, -1).T, axis=0) for lay in layers]
    best, best_key = None, None
    for k in range(1, n + 1):
        for m in range(0, k + 1):
            for r in SU_FRACTIONS if m else (1.0,):
                sel = Selection.empty(n)
                for i in range(n - k, n):
                    sel.biases[i] = set(range(layers[i].channels))
                for i in range(n - m, n):
                    take = max(1, int(np.ceil(r * layers[i].channels)))
                    sel.weights[i] = set(np.argsort(-norms[i], kind="stable")[:take].tolist())
                if not greedy.fits(cm.cost(sel)):
                    continue
                params = sum(cm.neuron_params(i, c) for i, s in enumerate(sel.weights) for c in s)
                params += sum(cm.neuron_params(i, c, True) for i, s in enumerate(sel.biases) for c in s - sel.weights[i])
                key = (params, -k, r)
                if best_key is None or key > best_key:
                    best, best_key = sel, key
    if best is None:
        # Not even the last layer's biases fit: as many of them as fit.
        best = greedy.run([(n - 1, c) for c in range(layers[-1].channels)], bias_only=True)
    return best
