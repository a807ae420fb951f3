"""Deviance scales: every −2 log L on the absolute scale (the full log-likelihood), raw values kept.

lme4 1.1-31 reports nAGQ ≤ 1 fits on the absolute scale (`ldL2 + ||u||² + aic`, spec §4.1–4.2) but
nAGQ > 1 fits relative to the saturated model (deviance residuals instead of `aic`, §4.3):
`−2 logLik(m) = absolute − C` with `C = −2 log L(saturated)`, a property of the data alone
(binomial `−2 Σ (pw/m) log dbinom(m y, m, y)`, Poisson `−2 Σ pw log dpois(y, y)`; cbpp: 83.9567).
`C` is computed here from the data with scipy's distributions, independently of both sides.
"""
from __future__ import annotations

import math
import re

import numpy as np
from scipy import stats

# lme4 versions whose nAGQ > 1 objective is relative to the saturated model (§4.3, §13). Only
# 1.1-31 was verified; other versions are assumed to behave like their nearest listed neighbour
# below 2.0 and the assumption is said in the result's notes.
VERIFIED_RELATIVE = ("1.1-31",)
RELATIVE_BEFORE = (2, 0)


def saturated_minus2loglik(family: str, y, n, pw) -> float:
    """−2 × the saturated log-likelihood of a binomial or Poisson response; NaN for families with
    a dispersion parameter (their saturated likelihood depends on it).

    `y` is the proportion (binomial) or count, `n` the trials, `pw` the prior weights as lme4's
    response module holds them (for cbind, `pw` = prior weight × trials; §8)."""
    y, n, pw = (np.asarray(v, float) for v in (y, n, pw))
    if family == "binomial":
        m = n if np.any(n > 1) else pw                       # §8: m = n if any n > 1, else pw
        m = np.round(m)
        c = np.divide(pw, m, out=np.zeros_like(pw), where=m > 0)
        logp = stats.binom.logpmf(np.round(m * y), m, y)
        return float(-2.0 * np.sum(np.where(c == 0, 0.0, c * logp)))
    if family == "poisson":
        return float(-2.0 * np.sum(np.where(pw == 0, 0.0, pw * stats.poisson.logpmf(y, y))))
    return math.nan


def lme4_version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def agq_is_relative(lme4_version: str | None) -> tuple[bool, str | None]:
    """Whether lme4 `lme4_version` reports nAGQ > 1 relative to the saturated model, and a note
    when that is an assumption rather than verified."""
    if lme4_version is None or lme4_version in VERIFIED_RELATIVE:
        return True, None
    relative = lme4_version_tuple(lme4_version)[:2] < RELATIVE_BEFORE
    return relative, (f"the nAGQ > 1 deviance scale of lme4 {lme4_version} is assumed "
                      f"({'relative to the saturated model' if relative else 'absolute'}); "
                      f"verified only for {', '.join(VERIFIED_RELATIVE)}")


def absolute_minus2loglik(raw: float, nAGQ: int, saturated: float,
                          lme4_version: str | None = None) -> float:
    """The absolute −2 log L from the value an implementation reports (`raw`)."""
    if nAGQ <= 1 or not agq_is_relative(lme4_version)[0]:
        return float(raw)
    return float(raw) + saturated
