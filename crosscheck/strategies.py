"""Hypothesis strategies that draw a whole GLMM case: structure first, then values (issue 4).

`cases()` composes `designs()` (groups, sizes, crossed/nested factors, covariates),
`family_links()` and `parameters()`, then simulates the response from the model. Simplest
alternatives come first in every `one_of`/`sampled_from`, so failures shrink to small cases.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from hypothesis import strategies as st

# every (family, link) pair both sides support, simplest first
FAMILY_LINKS = [
    ("binomial", "logit"), ("poisson", "log"), ("binomial", "probit"), ("binomial", "cloglog"),
    ("binomial", "cauchit"), ("poisson", "sqrt"), ("Gamma", "log"), ("Gamma", "inverse"),
    ("gaussian", "log"),
]
STRUCTURES = ["scalar", "crossed", "nested", "slope", "uncorrelated-slope"]


@dataclass(frozen=True)
class GeneratedCase:
    """Data plus spec, and the parameters the response was simulated from."""

    data: pd.DataFrame
    formula: str
    family: str
    link: str
    weights: str | None = None
    structure: str = "scalar"
    truth: dict = field(default_factory=dict)

    @property
    def scalar(self) -> bool:
        """A single scalar term: the models lme4 allows nAGQ > 1 for."""
        return self.structure == "scalar"


@st.composite
def designs(draw, max_groups: int = 200, structure: str | None = None, min_groups: int = 2):
    """Grouping structure and covariates: min_groups..max_groups groups of 1.. rows, balanced
    (the simplest, drawn first) or not."""
    structure = structure or draw(st.sampled_from(STRUCTURES))
    n_g = draw(st.integers(min_groups, max_groups))
    balanced = not draw(st.booleans())
    if balanced:
        sizes = np.full(n_g, draw(st.integers(4, 10)))
    else:
        sizes = np.array(draw(st.lists(st.integers(1, 12), min_size=n_g, max_size=n_g)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_g), sizes)
    N = g.size
    data = pd.DataFrame({
        "g": pd.Categorical([f"g{i:03d}" for i in g]),
        "x": rng.normal(size=N),
        "f": pd.Categorical(rng.choice(["a", "b", "c"], N)),
    })
    if draw(st.booleans()):                                   # near-collinear covariate
        data["x2"] = data["x"] + draw(st.sampled_from([1e-1, 1e-3, 1e-6])) * rng.normal(size=N)
    n_h = draw(st.integers(2, 6))
    data["h"] = pd.Categorical([f"h{i}" for i in rng.integers(0, n_h, N)])
    return structure, data, seed


@st.composite
def parameters(draw, structure: str):
    """True theta (0 and large values included) and fixed effects."""
    theta = draw(st.one_of(st.just(0.5), st.just(0.0), st.floats(0.0, 3.0)))
    slope_sd = draw(st.floats(0.0, 1.0))
    beta = draw(st.lists(st.floats(-1.5, 1.5), min_size=2, max_size=2))
    return {"theta": theta, "slope_sd": slope_sd if "slope" in structure else 0.0, "beta": beta}


def family_links():
    return st.sampled_from(FAMILY_LINKS)


_RE = {
    "scalar": "(1 | g)",
    "crossed": "(1 | g) + (1 | h)",
    "nested": "(1 | g/h)",
    "slope": "(1 + x | g)",
    "uncorrelated-slope": "(1 + x || g)",
}


@st.composite
def cases(draw, max_groups: int = 200, family_link: tuple[str, str] | None = None,
          structure: str | None = None, min_groups: int = 2):
    """A whole case; `family_link` and `structure` pin those draws."""
    structure, data, seed = draw(designs(max_groups, structure, min_groups))
    family, link = family_link or draw(family_links())
    truth = draw(parameters(structure))
    rng = np.random.default_rng(seed + 1)
    g = data["g"].cat.codes.to_numpy()
    n_g = int(g.max()) + 1
    b = truth["theta"] * rng.normal(size=n_g)
    s = truth["slope_sd"] * rng.normal(size=n_g)
    x = data["x"].to_numpy()
    b0, b1 = truth["beta"]
    eta = b0 + b1 * x + b[g] + s[g] * x
    if structure in ("crossed", "nested"):
        h = data["h"].cat.codes.to_numpy()
        eta = eta + truth["theta"] * rng.normal(size=int(h.max()) + 1)[h]
    mu, weights = _inverse_link(family, link, eta), None
    if family == "binomial":
        trials = draw(st.sampled_from([1, 5, 20]))
        if trials == 1:
            data["y"] = (rng.uniform(size=eta.size) < mu).astype(float)
        else:
            data["succ"] = rng.binomial(trials, mu).astype(float)
            data["trials"] = float(trials)
    elif family == "poisson":
        data["y"] = rng.poisson(np.minimum(mu, 1e6)).astype(float)
    elif family == "Gamma":
        data["y"] = rng.gamma(shape=2.0, scale=mu / 2.0)
    else:
        data["y"] = np.abs(mu + 0.3 * rng.normal(size=eta.size)) + 1e-3
    response = "cbind(succ, trials - succ)" if "succ" in data else "y"
    formula = f"{response} ~ x + {_RE[structure]}"
    return GeneratedCase(data, formula, family, link, weights, structure, truth)


def _inverse_link(family: str, link: str, eta: np.ndarray) -> np.ndarray:
    if link == "logit":
        return 1 / (1 + np.exp(-eta))
    if link == "probit":
        from scipy.special import ndtr
        return ndtr(eta)
    if link == "cloglog":
        return -np.expm1(-np.exp(np.minimum(eta, 5)))
    if link == "cauchit":
        return 0.5 + np.arctan(eta) / np.pi
    if link == "sqrt":
        return (1.0 + np.abs(eta)) ** 2
    if link == "inverse":
        return 1.0 / (2.0 + np.abs(eta))
    return np.exp(np.clip(eta, -10, 10))
