"""Model specs shared by the reference tests; the data sets live in crosscheck.datasets."""
from __future__ import annotations

from crosscheck.datasets import readme_example, simulated  # noqa: F401 — re-exported for the tests


# (id, data name, formula, family, link, weights) — the devfun comparison grid of issue 2
DEVFUN_CASES = [
    ("cbpp-logit", "cbpp", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial", "logit", None),
    ("cbpp-probit", "cbpp", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial", "probit", None),
    ("cbpp-cloglog", "cbpp", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial", "cloglog", None),
    ("cbpp-prop-weights", "cbpp", "prop ~ period + (1 | herd)", "binomial", "logit", "size"),
    ("binary-prior-weights", "sim", "y01 ~ x + (1 | g)", "binomial", "logit", "pw"),
    ("poisson-offset", "sim", "count ~ x + offset(log(expo)) + (1 | g)", "poisson", "log", None),
    ("crossed", "sim", "cbind(succ, trials - succ) ~ x + (1 | g) + (1 | h)", "binomial", "logit", None),
    ("nested", "sim", "count ~ x + (1 | g/nest)", "poisson", "log", None),
    ("correlated-slope", "sim", "count ~ x + (1 + x | g)", "poisson", "log", None),
    ("uncorrelated-slope", "sim", "y01 ~ x + (1 + x || g)", "binomial", "logit", None),
    ("cbpp-cauchit", "cbpp", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial", "cauchit", None),
    ("poisson-sqrt", "sim", "count ~ x + (1 | g)", "poisson", "sqrt", None),
    ("gamma-log", "sim", "pos ~ x + (1 | g)", "Gamma", "log", None),
    ("gamma-inverse", "sim", "pos ~ x + (1 | g)", "Gamma", "inverse", None),
    ("gaussian-log", "sim", "pos ~ x + (1 | g)", "gaussian", "log", None),
]
