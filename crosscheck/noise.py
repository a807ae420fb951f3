"""The noise band: how far each side moves under perturbations that leave the mathematics
unchanged, so that every difference can be read against rounding.

The perturbations (`Diagnoser.band`):
- row order: both sides refitted on `ROW_ORDERS` reorderings of the same rows (`row_orders`:
  within groups, across groups, reversed), and both deviance functions rebuilt on them and
  evaluated at stage 1's parameter vectors (each order's own lp0 from R, on both sides, §3.3);
  `MORE_ORDERS` more where a difference stands just beyond the band (`borderline`); the refits
  move the optimum and what follows from it (stages 2–3), the evaluations stage 1's quantities,
  so where only stage 1 needs a band the refits are left out (`NoiseBand.refitted`), and a sweep
  refits one order at a time until its differences are within noise (`Diagnoser.refits_into`);
- the optimizer's rounding: both deviance functions at those vectors moved by a few ulps (`ulp_moved`);
- lme4 mode: the reference's deviance function with PIRLS's stopping test moved by its own
  rounding (`stopping_rounded`);
- where numpy has AVX-512 kernels, in `compare` and `investigate`: the reference once more with
  them off (`cpu_path.py`);
- exact mode, which evaluates a different function than glmer's (converged PIRLS): how far the
  reference's lme4 mode is from it at the same points — lme4's PIRLS error, which glmer's objective
  carries by design (gen:thorough:5: 2.3e-5 relative where lme4 stops PIRLS after 2 iterations).
A quantity's *spread* on one side is its largest |perturbed − original|; its *band* is the larger
of the two sides' spreads (for a gate baseline, also of the difference's own spread between CPU
paths: `gate.py`). A difference outside its tolerance is *within noise* when |Δ| ≤ WITHIN · band:
the two implementations differ no more than either differs from itself. WITHIN = 2 because the
band is the maximum of a few draws, and the two sides' rounding errors can lie on either side of
the exact value. Where the objective cannot tell the two optima apart (`NoiseBand.flat`), the
optimum's location is itself noise.

Of the design (stage 0), only the saturated constant is a sum that row order can round differently;
X, Zt and θ's bounds are exact, with band 0.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np

from reference_impl.formula import parse_formula
from reference_impl.pirls import TOL_PWRSS

from .case import Case
from .diffs import Diff, plain

ROW_ORDERS = 3
WITHIN = 2.0
# A difference outside its tolerance and beyond WITHIN but within BORDERLINE bands is measured
# against MORE_ORDERS further row orders before the verdict (the band, a maximum of 3 draws, is
# rough on rough objectives: gen:thorough:190 at 2.4 bands, gen:thorough:49 at 3.4).
BORDERLINE = 6.0
MORE_ORDERS = 5

# lme4's PIRLS stops when |Δpdev / pdev| < tolPwrss (§3.2): a difference of two sums divided by one
# of them, so a rounding of 1e-12 relative in the penalized deviance (a sum over the rows) moves the
# test by 1e-12 / tolPwrss = 1e-5 of itself. Where the test lands that close to its threshold, one
# PIRLS iteration more or fewer — and with it lme4's lagged factor, ldL2 and the objective — is
# rounding's choice as much as the decision taken (gen:thorough:52: 1.0000e-7 against 1e-7, 0.088
# apart in the objective).
STOPPING_ROUNDING = 1e-5

# An optimizer's answer is itself rounded: the deviance functions are also evaluated at stage 1's
# points moved by ULPS units in the last place (alternating signs, θ's zeros kept), which shows an
# objective's own rounding where row order does not change it (a perfect fit's 1e-15, gen:thorough:83).
ULPS = 4


def row_orders(case: Case, k: int = ROW_ORDERS) -> list[np.ndarray]:
    """`k` reorderings of the case's rows: (0) each group of the first grouping factor shuffled
    among its own positions, (1) a permutation across groups, (2) the rows reversed; further
    orders are more permutations across groups. Fixed seeds: the same case, the same orders."""
    n = len(case.data)
    groups = [g for t in parse_formula(case.formula).random for g in t.group][:1]
    orders = []
    for j in range(k):
        rng = np.random.default_rng(j)
        if j == 0 and groups:
            order = np.arange(n)
            codes = case.data[groups[0]].astype("category").cat.codes.to_numpy()
            for level in np.unique(codes):
                where = np.flatnonzero(codes == level)
                order[where] = rng.permutation(where)
        elif j == 2:
            order = np.arange(n)[::-1]
        else:
            order = rng.permutation(n)
        orders.append(order)
    return orders


def stopping_rounded(case: Case) -> list[Case]:
    """The case with tolPwrss moved by ± its rounding (`STOPPING_ROUNDING`), the model unchanged."""
    tol = float(case.control.get("tolPwrss", TOL_PWRSS))
    return [replace(case, control={**case.control, "tolPwrss": tol * (1 + s * STOPPING_ROUNDING)})
            for s in (-1, 1)]


def ulp_moved(points: list[np.ndarray]) -> list[list[np.ndarray]]:
    """`points` with each component moved by ± ULPS ulps, signs alternating, twice (both patterns)."""
    out = []
    for s in (1, -1):
        moved = []
        for p in points:
            p = np.asarray(p, float)
            signs = s * (-1.0) ** np.arange(p.size)
            moved.append(np.where(p == 0.0, 0.0, p + signs * ULPS * np.spacing(p)))
        out.append(moved)
    return out


def element(quantity: str) -> str:
    """The key a quantity's band is kept under: `fitted[7 of 20]` → `fitted` (an array's worst
    element is a different element in each order), `theta[g.x]` unchanged."""
    return re.sub(r"\[[^\]]* of [^\]]*\]$", "", quantity)


# Quantities whose elements share one source of noise — every SE comes from the same Hessian (deriv12's
# second differences, §6.1) or the same RX — pool their spread relative to each element's size, so
# that an element that happened to move little over a few orders borrows its siblings' spread.
POOLED = ("se", "se_rx")

# Quantities whose band is another's: exact mode's optimum checks are differences of the exact
# objective at the two optima, which moves as −2 log L and the objective at glmer's optimum do.
ALIASES = {"minus2loglik_excess": ("minus2loglik", "objective@r"),
           "optimum_gap": ("minus2loglik", "objective@r")}


def _base(key: str) -> str:
    return key.split("[", 1)[0]


def objective_floor(n_terms: int, value: float) -> float:
    """The rounding below which an objective summed from `n_terms` terms (Σ devResid over the rows,
    ldL2 over the random effects) of size about 1 + |value| cannot be resolved: (n − 1)·eps·Σ|x_i|,
    the bound of a sum's rounding."""
    return n_terms * np.finfo(float).eps * (1.0 + abs(value))


def borderline(diffs: Iterable[Diff]) -> bool:
    """Some difference outside its tolerance stands beyond WITHIN but within BORDERLINE bands."""
    return any(not d.ok and not d.within_noise and d.noise_units is not None
               and WITHIN < d.noise_units <= BORDERLINE for d in diffs)


@dataclass
class NoiseBand:
    """Per side (`python`, `r`), per quantity element: the largest |perturbed − original|."""

    spread: dict[str, dict[str, float]] = field(default_factory=lambda: {"python": {}, "r": {}})
    orders: int = 0                     # row orders measured (at stage 1's points)
    refitted: int = 0                   # …of which refitted on both sides (the first ones)
    refused: dict[str, int] = field(default_factory=lambda: {"python": 0, "r": 0})     # refits refused
    unfinished: dict[str, int] = field(default_factory=lambda: {"python": 0, "r": 0})  # timed out, failed
    cpu_paths: list[str] = field(default_factory=list)      # other CPU paths the reference ran on
    stopping: float | None = None       # PIRLS's stopping test moved by this much of itself (lme4 mode)
    lme4_pirls: bool = False            # exact mode: lme4's PIRLS error at stage 1's points included
    flat_gap: float | None = None       # largest |f(θ_py) − f(θ_r)| of the two deviance functions
    floor: float = 0.0                  # the objective's rounding floor (`objective_floor`)
    apart: bool = False                 # the two optima differ beyond θ's or β's tolerance
    seconds: float = 0.0

    @property
    def flat(self) -> bool:
        """The objective cannot tell the two optima apart (lme4 mode): each deviance function rates
        them equal within WITHIN bands of its own value. The set of equally good optima then spans at least
        both, and the parameters (stage 2) move by as much between them: their band is at least
        their difference; so is that of what follows from them (stage 3) where the two optima lie
        apart (`apart`) — at one optimum, an SE difference stays the SEs' own (gen:thorough:83, a
        perfect fit whose deviance is 1e-15 at θ = 0.79 and at θ = 0)."""
        band = max((s[k] for s in self.spread.values() for k in ("objective@r", "objective@python") if k in s),
                   default=None)
        return (self.flat_gap is not None and band is not None
                and self.flat_gap <= WITHIN * max(band, self.floor))

    def add(self, side: str, diffs: Iterable[Diff]) -> None:
        """Widen `side`'s spread by the differences between a perturbed and the original result."""
        spread = self.spread[side]
        for d in diffs:
            if d.abs is not None:
                key = element(d.quantity)
                spread[key] = max(spread.get(key, 0.0), abs(float(d.abs)))
                base = _base(key)
                if base in POOLED and d.rel is not None:
                    spread[base + "/rel"] = max(spread.get(base + "/rel", 0.0), float(d.rel))

    def of(self, diff: Diff) -> float | None:
        """The band of `diff`'s quantity (0 for the design's exact parts and for what is compared
        for equality: names, layouts, errors), None where nothing was measured."""
        if diff.tol == "equal" or (diff.stage == 0 and element(diff.quantity) != "saturated"):
            return 0.0
        keys = ALIASES.get(element(diff.quantity), (element(diff.quantity),))
        values = [s[k] for s in self.spread.values() for k in keys if k in s]
        pooled = _base(element(diff.quantity)) + "/rel"
        if isinstance(diff.r, (int, float)):
            values += [s[pooled] * abs(diff.r) for s in self.spread.values() if pooled in s]
        located = diff.stage == 2 or (diff.stage == 3 and self.apart)
        if located and self.flat and element(diff.quantity) not in ALIASES and diff.abs is not None:
            values.append(abs(float(diff.abs)))
        return max(values) if values else None

    def annotate(self, diffs: Iterable[Diff]) -> None:
        """Give each diff its band, and mark those outside tolerance but within WITHIN bands."""
        for d in diffs:
            d.noise = self.of(d)
            d.within_noise = bool(not d.ok and d.noise is not None and d.abs is not None
                                  and abs(d.abs) <= WITHIN * d.noise)

    def to_json(self) -> dict:
        return plain({"orders": self.orders, "refitted": self.refitted, "within": WITHIN,
                      "refused": dict(self.refused), "unfinished": dict(self.unfinished),
                      "cpu_paths": list(self.cpu_paths), "stopping": self.stopping, "ulps": ULPS,
                      "lme4_pirls": self.lme4_pirls,
                      "flat": self.flat, "flat_gap": self.flat_gap, "floor": self.floor,
                      "apart": self.apart, "seconds": self.seconds,
                      "spread": {side: dict(sorted(s.items())) for side, s in self.spread.items()}})
