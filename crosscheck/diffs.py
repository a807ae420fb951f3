"""`Diff`: one compared quantity, and the functions that make them from the two sides' values.

Named small vectors (θ, β, SEs) give one diff per element (`theta[herd.(Intercept)]`); long
vectors and matrices (fitted values, conditional modes, X) give one diff for the element that is
furthest outside its tolerance, with the index in the quantity's name (`fitted[17 of 56]`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from .tolerances import Tolerance


@dataclass
class Diff:
    quantity: str
    python: Any
    r: Any
    abs: float | None
    rel: float | None
    tol: dict[str, float] | str
    ok: bool
    stage: int
    gating: bool = True        # False: reported, but never fails its stage (informational)
    noise: float | None = None         # the noise band of this quantity (`noise.py`); None: not measured
    within_noise: bool = False         # outside its tolerance, but within rounding's spread

    def to_json(self) -> dict[str, Any]:
        """Its fields and `noise_units` as plain JSON (`plain` copies every container; `asdict`'s deep
        copy before it took 3 times as long, a few thousand diffs a sweep of 40 cases)."""
        return {**{k: plain(v) for k, v in vars(self).items()}, "noise_units": plain(self.noise_units)}

    @classmethod
    def from_json(cls, doc: dict[str, Any], **changes) -> Diff:
        """A diff from its JSON (derived fields such as `noise_units` dropped)."""
        return cls(**{k: v for k, v in {**doc, **changes}.items() if k in cls.__dataclass_fields__})

    @property
    def noise_units(self) -> float | None:
        """|Δ| in units of the noise band (None where either is unknown)."""
        if self.noise is None or self.abs is None:
            return None
        size = abs(self.abs)
        return size / self.noise if self.noise > 0 else (0.0 if size == 0 else math.inf)

    @property
    def excess(self) -> float:
        """How far outside its tolerance (|Δ| / bound; > 1 fails), for ranking the worst."""
        if self.abs is None or self.r is None or not isinstance(self.tol, dict):   # r None: empty array
            return 0.0 if self.ok else math.inf
        bound = self.tol["abs"] + self.tol["rel"] * abs(self.r)
        return self.abs / bound if bound > 0 else (0.0 if self.abs == 0 else math.inf)


def plain(v):
    """Numbers, numpy values, dicts, lists and arrays of them as plain JSON values (non-finite
    floats as text: JSON has no inf/nan)."""
    t = type(v)
    if t is str or t is int or t is bool or v is None:          # the common cases first
        return v
    if t is float:
        return v if math.isfinite(v) else str(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return plain(v.tolist())
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else str(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def scalar(quantity: str, python: float, r: float, tol: Tolerance, stage: int) -> Diff:
    """|python − r| against `tol`; NaN on either side fails unless both are NaN; equal values
    (the same infinity included) differ by 0."""
    python, r = float(python), float(r)
    if python == r:
        return Diff(quantity, python, r, 0.0, 0.0, tol.to_json(), True, stage)
    if math.isnan(python) or math.isnan(r):
        ok = math.isnan(python) and math.isnan(r)
        return Diff(quantity, python, r, None, None, tol.to_json(), ok, stage)
    d = abs(python - r)
    rel = d / abs(r) if r != 0 else (0.0 if d == 0 else math.inf)
    return Diff(quantity, python, r, d, rel, tol.to_json(), d <= tol.bound(r), stage)


def at_most(quantity: str, python: float, r: float, tol: Tolerance, stage: int) -> Diff:
    """One-sided: `python − r ≤ tol` (python may be any amount below r). An r that is NaN or +inf
    (no finite value there: glmer's optimum outside the exact objective's domain) is above any
    finite python."""
    python, r = float(python), float(r)
    if math.isfinite(python) and not (r < math.inf):
        return Diff(quantity, python, r, -math.inf, -math.inf, tol.to_json(), True, stage)
    d = python - r
    return Diff(quantity, python, r, d, d / abs(r) if r else math.inf, tol.to_json(),
                d <= tol.bound(r), stage)


def equal(quantity: str, python: Any, r: Any, stage: int) -> Diff:
    """Names and layouts: equal or not."""
    return Diff(quantity, python, r, None, None, "equal", python == r, stage)


def named(quantity: str, python: dict[str, float], r: dict[str, float], tol: Tolerance,
          stage: int, scale: dict[str, float] | None = None) -> list[Diff]:
    """One diff per name (names must agree: otherwise one failing `equal` diff). With `scale`,
    differences are in units of scale[name] (β in SE units)."""
    if list(python) != list(r):
        return [equal(f"{quantity} names", list(python), list(r), stage)]
    out = []
    for name in r:
        s = 1.0 if scale is None else scale[name]
        out.append(scalar(f"{quantity}[{name}]", python[name] / s, r[name] / s, tol, stage))
    return out


def array(quantity: str, python, r, tol: Tolerance, stage: int) -> Diff:
    """Element-wise; the diff of the element furthest outside `tol` (shape mismatch fails)."""
    a, b = _dense(python), _dense(r)
    if a.shape != b.shape:
        return equal(f"{quantity} shape", list(a.shape), list(b.shape), stage)
    if a.size == 0:
        return Diff(quantity, None, None, 0.0, 0.0, tol.to_json(), True, stage)
    d = np.abs(a - b)
    both_nan = np.isnan(a) & np.isnan(b)
    d = np.where(both_nan, 0.0, np.where(np.isnan(d), np.inf, d))
    bound = tol.abs + tol.rel * np.abs(np.nan_to_num(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(bound > 0, d / bound, np.where(d == 0, 0.0, np.inf))
    k = int(np.argmax(excess))
    idx = np.unravel_index(k, a.shape)
    where = ",".join(str(i) for i in idx)
    di, bi = float(d.flat[k]), float(b.flat[k])
    return Diff(f"{quantity}[{where} of {'x'.join(map(str, a.shape))}]", float(a.flat[k]), bi,
                di, di / abs(bi) if bi else (0.0 if di == 0 else math.inf), tol.to_json(),
                bool(np.all(excess <= 1.0)), stage)


def sparse_pattern(quantity: str, python: sp.spmatrix, r: sp.spmatrix, stage: int) -> Diff:
    """Same sparsity pattern (the positions of the structural non-zeros)."""
    a, b = sp.csc_matrix(python), sp.csc_matrix(r)
    a.sort_indices()
    b.sort_indices()
    same = (a.shape == b.shape and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices))
    return Diff(f"{quantity} pattern", f"{a.shape} nnz {a.nnz}", f"{b.shape} nnz {b.nnz}", None,
                None, "equal", bool(same), stage)


def _dense(x) -> np.ndarray:
    if sp.issparse(x):
        return x.toarray().astype(float)
    return np.asarray(x, dtype=float)


def worst(diffs: Sequence[Diff]) -> Diff | None:
    return max(diffs, key=lambda d: d.excess, default=None)
