"""The noise band: how far each side moves under perturbations that leave the mathematics
unchanged, so that every difference can be read against rounding.

Both sides are refitted on `ROW_ORDERS` reorderings of the same rows (`row_orders`: within
groups, across groups, reversed), and both deviance functions are rebuilt on them and evaluated at
the same parameter vectors as in stage 1 (each order's own lp0 from R, on both sides, §3.3); where
numpy has AVX-512 kernels, `compare` and `investigate` also run the reference once more with them
off (`cpu_path.py`). A quantity's *spread* on one side is its largest |perturbed − original|; its
*band* is the larger of the two sides' spreads (for a gate baseline, also of the difference's own
spread between CPU paths: `gate.py`). A difference outside its tolerance is *within noise* when
|Δ| ≤ WITHIN · band: the two implementations differ no more than either differs from itself.
WITHIN = 2 because the band is the maximum of a few draws, and the two sides' rounding errors can
lie on either side of the exact value.

Of the design (stage 0), only the saturated constant is a sum that row order can round differently;
X, Zt and θ's bounds are exact, with band 0.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from reference_impl.formula import parse_formula

from .case import Case
from .diffs import Diff

ROW_ORDERS = 3
WITHIN = 2.0


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


@dataclass
class NoiseBand:
    """Per side (`python`, `r`), per quantity element: the largest |perturbed − original|."""

    spread: dict[str, dict[str, float]] = field(default_factory=lambda: {"python": {}, "r": {}})
    orders: int = 0
    refused: dict[str, int] = field(default_factory=lambda: {"python": 0, "r": 0})
    cpu_paths: list[str] = field(default_factory=list)      # other CPU paths the reference ran on
    seconds: float = 0.0

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
        return max(values) if values else None

    def annotate(self, diffs: Iterable[Diff]) -> None:
        """Give each diff its band, and mark those outside tolerance but within WITHIN bands."""
        for d in diffs:
            d.noise = self.of(d)
            d.within_noise = bool(not d.ok and d.noise is not None and d.abs is not None
                                  and abs(d.abs) <= WITHIN * d.noise)

    def to_json(self) -> dict:
        return {"orders": self.orders, "within": WITHIN, "refused": dict(self.refused),
                "cpu_paths": list(self.cpu_paths), "seconds": self.seconds,
                "spread": {side: dict(sorted(s.items())) for side, s in self.spread.items()}}
