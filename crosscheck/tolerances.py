"""The tolerance policy: how close each quantity must be, per mode and per nAGQ.

A tolerance allows `|python − r| ≤ abs + rel·|r|`, element by element. Keys name a quantity,
optionally prefixed by the mode and the nAGQ class, most specific first:
`lme4.1.theta`, `lme4.theta`, `1.theta`, `theta` (nAGQ class: `0`, `1` or `agq` for nAGQ > 1;
`*` matches any mode or class). Defaults are in `DEFAULTS`; they are justified by the
measurements in docs/tolerances.md. Overrides come from pyproject.toml

    [tool.crosscheck.tolerances]
    "lme4.agq.theta" = 1e-4                      # a number sets rel (abs 0)
    "exact.minus2loglik" = {rel = 1e-6, abs = 1e-9}

and from the command line (`--tol lme4.theta=1e-4`), the command line last.
"""
from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from reference_impl.errors import ModelError

MODES = ("lme4", "exact")


@dataclass(frozen=True)
class Tolerance:
    rel: float = 0.0
    abs: float = 0.0

    def bound(self, reference: float) -> float:
        return self.abs + self.rel * abs(reference)

    def to_json(self) -> dict[str, float]:
        return {"rel": self.rel, "abs": self.abs}

    def __str__(self) -> str:
        parts = [f"rel {self.rel:.0e}" if self.rel else "", f"abs {self.abs:.0e}" if self.abs else ""]
        return " + ".join(p for p in parts if p) or "exact"


T = Tolerance
EQUAL = Tolerance()

# Stage 0 (design) quantities are compared for equality of names and to rounding for values;
# they do not depend on mode or nAGQ.
_DESIGN = {"X_names": EQUAL, "theta_names": EQUAL, "X": T(1e-12, 1e-12), "Zt": T(1e-12, 1e-12),
           "theta_lower": EQUAL, "saturated": T(1e-10, 1e-10)}

# lme4 mode replays lme4's evaluation sequence: objectives at identical parameters and lp0 agree to
# 1e-11…1e-14 (spec §5.7, docs/tolerances.md); optima agree to the optimizer's stopping rule:
# Nelder–Mead stops when the simplex is smaller than xt = 1e-5 in θ and 1e-4·SE in β (§5.5),
# so a path that forks in its last steps moves the optimum by that much.
_LME4 = {
    "objective": T(1e-10, 1e-12), "ldL2": T(1e-9, 1e-9), "ussq": T(1e-9, 1e-9),
    "drsum": T(1e-9, 1e-9), "u": T(1e-6, 1e-7),
    "minus2loglik": T(1e-8, 1e-9), "deviance": T(1e-6, 1e-8),
    "theta": T(1e-6, 2e-5), "fixef": T(1e-4, 1e-6), "fixef_se_units": T(0.0, 1e-3),
    "se": T(1e-5, 1e-8), "se_rx": T(1e-6, 1e-8), "ranef": T(1e-4, 1e-5), "fitted": T(1e-5, 1e-6),
}
# exact mode differs from glmer by what lme4's PIRLS leaves unconverged (relative tolerance 1e-7
# on the penalized deviance, and the factor of the penultimate weights, §3.2, §5.7): objectives by
# up to ~1e-5 relative, optima by ~1e-3 in θ. The optimum is judged on the exact objective: exact
# must never be worse than glmer's parameters (minus2loglik_excess ≤ 1e-9 relative, one-sided);
# how far glmer's parameters lie from the exact optimum in −2 log L units (optimum_gap, 1e-3: far
# below any likelihood-ratio scale) is glmer's numerical error, reported against this bound but not
# gating, as are θ, β and the deviance.
_EXACT = {
    "objective": T(2e-5, 1e-6), "ldL2": T(1e-3, 1e-4), "ussq": T(1e-3, 1e-4),
    "drsum": T(1e-4, 1e-5), "u": T(1e-3, 1e-3),
    "minus2loglik": T(2e-5, 1e-6), "minus2loglik_excess": T(1e-9, 1e-9), "optimum_gap": T(0.0, 1e-3),
    "deviance": T(1e-4, 1e-5),
    "theta": T(1e-3, 2e-3), "fixef": T(1e-3, 1e-4), "fixef_se_units": T(0.0, 2e-2),
    "se": T(5e-2, 1e-6), "se_rx": T(1e-2, 1e-6), "ranef": T(1e-2, 2e-3), "fitted": T(2e-3, 5e-4),
}
# Hessian-based SEs: lme4 takes second differences (δ = 1e-4, §6.1) of an objective that jumps by
# ~1e-4 where PIRLS's iteration count changes (§5.7); exact mode's objective is smooth. On cbpp
# (nAGQ = 1) glmer's SEs are 0.5–1.3 % below exact mode's: lme4's error, not the reference's.
DEFAULTS: dict[str, Tolerance] = {
    **_DESIGN,
    **{f"lme4.{k}": v for k, v in _LME4.items()},
    **{f"exact.{k}": v for k, v in _EXACT.items()},
    # nAGQ = 0: BOBYQA on θ alone (rhoend 2e-7·…, §5.4) and β from PIRLS: tighter optima
    "lme4.0.fixef": T(1e-6, 1e-8), "lme4.0.se": T(1e-6, 1e-9),
}


def nagq_class(nAGQ: int) -> str:
    return "0" if nAGQ == 0 else "1" if nAGQ == 1 else "agq"


class Policy:
    """Resolves the tolerance of (mode, nAGQ, quantity); `Policy.load()` adds pyproject overrides."""

    def __init__(self, table: Mapping[str, Tolerance] | None = None):
        self.table = dict(DEFAULTS if table is None else table)

    def get(self, mode: str, nAGQ: int, quantity: str) -> Tolerance:
        k = nagq_class(nAGQ)
        for key in (f"{mode}.{k}.{quantity}", f"{mode}.*.{quantity}", f"*.{k}.{quantity}",
                    f"{mode}.{quantity}", f"{k}.{quantity}", f"*.{quantity}", quantity):
            if key in self.table:
                return self.table[key]
        raise ModelError(f"no tolerance for quantity {quantity!r} (mode {mode}, nAGQ {nAGQ})")

    def with_overrides(self, overrides: Mapping[str, Any], where: str = "override") -> Policy:
        table = dict(self.table)
        for key, value in overrides.items():
            table[_check_key(key, where)] = _tolerance(value, f"{where} {key!r}")
        return Policy(table)

    def with_cli(self, items: list[str]) -> Policy:
        """`KEY=VALUE` strings; VALUE is a relative tolerance or `rel:abs`."""
        parsed = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                raise ModelError(f"--tol {item!r}: expected KEY=VALUE, e.g. lme4.theta=1e-4")
            rel, _, abs_ = value.partition(":")
            try:
                parsed[key.strip()] = {"rel": float(rel), "abs": float(abs_ or 0.0)}
            except ValueError:
                raise ModelError(f"--tol {item!r}: {value!r} is not a number (or rel:abs)") from None
        return self.with_overrides(parsed, "--tol")

    @classmethod
    def load(cls, pyproject: str | Path | None = "pyproject.toml", cli: list[str] = ()) -> Policy:
        policy = cls()
        path = Path(pyproject) if pyproject else None
        if path is not None and path.is_file():
            section = _pyproject_section(str(path), path.stat().st_mtime_ns)
            policy = policy.with_overrides(section, f"{path} [tool.crosscheck.tolerances]")
        return policy.with_cli(list(cli)) if cli else policy

    def to_json(self) -> dict[str, dict[str, float]]:
        return {k: v.to_json() for k, v in sorted(self.table.items())}


@functools.lru_cache(maxsize=8)
def _pyproject_section(path: str, mtime_ns: int) -> dict[str, Any]:
    """[tool.crosscheck.tolerances] of `path`, parsed once per version of the file (a sweep's
    worker loads the policy for every case)."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"{path}: not valid TOML ({e})") from None
    return doc.get("tool", {}).get("crosscheck", {}).get("tolerances", {})


def _quantities() -> set[str]:
    return {k.rsplit(".", 1)[-1] for k in DEFAULTS}


def _check_key(key: str, where: str) -> str:
    parts = key.split(".")
    quantity, prefix = parts[-1], parts[:-1]
    if quantity not in _quantities():
        raise ModelError(f"{where}: unknown quantity {quantity!r} in {key!r} "
                         f"(known: {', '.join(sorted(_quantities()))})")
    ok = ((len(prefix) == 0)
          or (len(prefix) == 1 and prefix[0] in (*MODES, "0", "1", "agq", "*"))
          or (len(prefix) == 2 and prefix[0] in (*MODES, "*") and prefix[1] in ("0", "1", "agq", "*")))
    if not ok:
        raise ModelError(f"{where}: key {key!r} is not [mode.][nagq.]quantity "
                         f"(mode: lme4, exact or *; nagq: 0, 1, agq or *)")
    return key


def _tolerance(value: Any, where: str) -> Tolerance:
    if isinstance(value, bool):
        raise ModelError(f"{where}: expected a number or {{rel, abs}}, got {value!r}")
    if isinstance(value, (int, float)):
        value = {"rel": value}
    if not isinstance(value, Mapping) or not set(value) <= {"rel", "abs"}:
        raise ModelError(f"{where}: expected a number or {{rel = …, abs = …}}, got {value!r}")
    tol = replace(Tolerance(), **{k: float(v) for k, v in value.items()})
    if not all(math.isfinite(x) and x >= 0 for x in (tol.rel, tol.abs)):
        raise ModelError(f"{where}: tolerances must be finite and >= 0, got {value!r}")
    return tol
