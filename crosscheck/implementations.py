"""Implementations under test: what the harness puts beside glmer (issue 14).

An implementation is any object with

    name: str                   how comparisons, reports and the store call it ("mixedlm")
    tolerances: str             the tolerance class that judges it (`tolerances.MODES`): "lme4"
                                for a replay of lme4's numerics (objectives to 1e-10, optima to
                                Nelder–Mead's stopping rule), "exact" for an independent fit of the
                                same likelihood (judged on the exact objective: never worse than
                                glmer's parameters; θ, β, SEs reported as differences)
    capabilities: Capabilities  what it claims; a (case, nAGQ) outside them is skipped, with why
    fit(case, nAGQ, saturated_C) -> FitResult   (side "python": the side under test)
    versions() -> dict[str, str]

and, where it has one, its deviance function at lme4's parameter vector (spec §9):

    evaluate(case, nAGQ, pars, lp0) -> list[Evaluation]   (NaN for parts it does not expose)

Without `evaluate` the diagnosis cannot compare objectives at identical parameters (stage 1) and
says so; it still compares designs (where the fit's `extra` carries X_names, X, Zt), optima, SEs
and fitted values, and judges the optimum on the reference's exact objective.

`load(spec)` finds one: a built-in name (`BUILTINS`), an entry point of the group
`glmm_crosscheck.implementations`, `package.module:attr` or `path/to/file.py:attr` — `attr` an
implementation, or a class or function that returns one when called without arguments.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Mapping, Protocol, runtime_checkable

from reference_impl.errors import ModelError
from reference_impl.formula import parse_formula

from .case import Case
from .result import FitResult

ENTRY_POINTS = "glmm_crosscheck.implementations"
# the implementation each built-in name makes, as `module:attr` (imported only when named)
BUILTINS = {"lme4": "crosscheck.sides:reference_lme4", "exact": "crosscheck.sides:reference_exact",
            "glmmtmb": "crosscheck.sides:GlmmTMBSide", "mixedlm": "crosscheck.mixedlm_impl:MixedLM"}
STRUCTURES = ("scalar", "vector", "several")


def structure(formula: str) -> str:
    """The random-effects structure in the terms capabilities use: one scalar term ("scalar"), one
    term of several columns ("vector"), several terms ("several"). Read from the formula alone,
    so `(0 + f | g)` with a factor f counts as scalar."""
    terms = parse_formula(formula).random
    if len(terms) != 1:
        return "several"
    return "vector" if int(terms[0].intercept) + len(terms[0].terms) > 1 else "scalar"


@dataclass(frozen=True)
class Capabilities:
    """What an implementation claims to fit. `families`: family → links (None: every pair glmer
    takes); `nagq`: the nAGQ values (None: every one glmer takes); `structures`: of `STRUCTURES`;
    `weights`, `offsets`: prior weights and offsets."""

    families: Mapping[str, tuple[str, ...]] | None = None
    nagq: tuple[int, ...] | None = None
    structures: tuple[str, ...] = STRUCTURES
    weights: bool = True
    offsets: bool = True

    def unsupported(self, case: Case, nAGQ: int) -> str | None:
        """Why `case` at `nAGQ` is outside these capabilities, or None."""
        if self.nagq is not None and nAGQ not in self.nagq:
            return f"nAGQ = {nAGQ} (it fits nAGQ {', '.join(map(str, self.nagq))})"
        if self.families is not None:
            links = self.families.get(case.family)
            if links is None:
                return f"the {case.family} family"
            if case.link is not None and case.link not in links:
                return f"the {case.link} link of {case.family}"
        shape = structure(case.formula)
        if shape not in self.structures:
            return f"a {shape} random-effects structure ({', '.join(self.structures)} only)"
        if case.weights is not None and not self.weights:
            return "prior weights"
        if case.offset is not None and not self.offsets:
            return "an offset"
        return None


class NoDevianceFunction(Exception):
    """An implementation's `evaluate` has no value comparable with lme4's for this case (why)."""


@runtime_checkable
class Implementation(Protocol):
    name: str
    tolerances: str
    capabilities: Capabilities

    def fit(self, case: Case, nAGQ: int, saturated_C: float | None = None) -> FitResult: ...

    def versions(self) -> dict[str, str]: ...


def load(spec: str | Implementation) -> Implementation:
    """The implementation `spec` names (module doc); an implementation is returned as it is."""
    if not isinstance(spec, str):
        return _checked(spec, repr(spec))
    target = BUILTINS.get(spec) or _entry_point(spec) or spec
    if ":" not in target:
        raise ModelError(f"--impl {spec!r}: not a built-in ({', '.join(BUILTINS)}), nor an entry point of "
                         f"{ENTRY_POINTS!r}, nor module:attr or path/to/file.py:attr")
    where, attr = target.rsplit(":", 1)
    module = _module(where, spec)
    if not hasattr(module, attr):
        raise ModelError(f"--impl {spec!r}: {where} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, Implementation)):
        obj = obj()
    return _checked(obj, spec)


def _entry_point(name: str) -> str | None:
    for ep in metadata.entry_points(group=ENTRY_POINTS):
        if ep.name == name:
            return ep.value
    return None


def _module(where: str, spec: str):
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ModelError(f"--impl {spec!r}: no file {where}")
        name = "crosscheck_impl_" + re.sub(r"\W", "_", str(path.resolve()))
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(where)
    except ImportError as e:
        raise ModelError(f"--impl {spec!r}: cannot import {where} ({e})") from None


def _checked(obj, spec: str) -> Implementation:
    """`obj` if it has what an implementation must have; else a ModelError naming what is missing."""
    missing = [a for a in ("name", "tolerances", "capabilities", "fit", "versions") if not hasattr(obj, a)]
    if missing:
        raise ModelError(f"--impl {spec!r}: {type(obj).__name__} is not an implementation "
                         f"(missing {', '.join(missing)}; see crosscheck/implementations.py)")
    from .tolerances import MODES
    if obj.tolerances not in MODES:
        raise ModelError(f"--impl {spec!r}: tolerances must be one of {MODES}, not {obj.tolerances!r}")
    return obj
