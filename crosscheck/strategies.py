"""Hypothesis strategies that draw a whole GLMM case: structure first, then values (issue 4).

`cases()` composes `designs()` (2–200 groups of 1.. rows, balanced or not, a crossed or nested
second factor, continuous, categorical and near-collinear covariates), `family_links()` (every
pair both sides support), `parameters()` (θ including 0 and large values, β) and an edge case on
purpose (`EDGES`: an all-zero group, quasi-separation, a near-singular fit), then simulates the
response from the model, with prior weights, offsets and binomial trials. Simplest alternatives
come first in every `sampled_from`, so failures shrink to small cases. `GeneratedCase.to_case`
gives the `crosscheck.case.Case` that every comparison takes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from .case import Case

# every (family, link) pair both sides support, simplest first
FAMILY_LINKS = [
    ("binomial", "logit"), ("poisson", "log"), ("binomial", "probit"), ("binomial", "cloglog"),
    ("binomial", "cauchit"), ("binomial", "log"), ("poisson", "sqrt"), ("poisson", "identity"),
    ("Gamma", "log"), ("Gamma", "inverse"), ("Gamma", "identity"),
    ("inverse.gaussian", "1/mu^2"), ("inverse.gaussian", "log"), ("inverse.gaussian", "inverse"),
    ("inverse.gaussian", "identity"), ("gaussian", "log"), ("gaussian", "inverse"),
]
STRUCTURES = ["scalar", "crossed", "nested", "slope", "uncorrelated-slope"]
EDGES = ["none", "all-zero-group", "quasi-separation", "near-singular"]
# hypothesis settings and `crosscheck run` sizes per profile: dev (quick local runs), ci
# (derandomized, within the CI budget), thorough (the wide search behind docs/findings.md)
PROFILES = {
    "dev": {"settings": {"max_examples": 20}, "sweep": {"cases": 30, "max_groups": 15}},
    "ci": {"settings": {"max_examples": 20, "derandomize": True, "print_blob": True},
           "sweep": {"cases": 8, "max_groups": 15, "seed": "ci"}},
    "thorough": {"settings": {"max_examples": 2000},
                 "sweep": {"cases": 2000, "max_groups": 8, "seed": "thorough",
                           "datasets": ("cbpp", "grouseticks", "VerbAgg", "Arabidopsis")}},
}


def register_profiles() -> None:
    for name, profile in PROFILES.items():
        settings.register_profile(name, deadline=None, **profile["settings"],
                                  suppress_health_check=[HealthCheck.too_slow,
                                                         HealthCheck.filter_too_much,
                                                         HealthCheck.data_too_large])


_RE = {
    "scalar": "(1 | g)",
    "crossed": "(1 | g) + (1 | h)",
    "nested": "(1 | g/h)",
    "slope": "(1 + x | g)",
    "uncorrelated-slope": "(1 + x || g)",
}
# where η is centred for each link so that the mean is inside the family's range
_ETA_CENTRE = {"log": 0.5, "sqrt": 2.0, "identity": 4.0, "inverse": 0.6, "1/mu^2": 0.5}


def _eta_centre(family: str, link: str) -> float:
    return -1.5 if (family, link) == ("binomial", "log") else _ETA_CENTRE.get(link, 0.0)


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
    offset: str | None = None

    @property
    def scalar(self) -> bool:
        """A single scalar term: the models lme4 allows nAGQ > 1 for."""
        return self.structure == "scalar"

    def to_case(self, nagq=(0, 1), name: str = "", source: str = "hypothesis") -> Case:
        return Case.make(self.data, self.formula, self.family, self.link, self.weights,
                         self.offset, applicable_nagq(nagq, self.scalar), name=name,
                         source=source, truth=self.truth, structure=self.structure)


def applicable_nagq(nagq, scalar: bool) -> tuple[int, ...]:
    """The nAGQ values that apply: > 1 only for a single scalar term (lme4 refuses others)."""
    return tuple(k for k in nagq if k <= 1 or scalar)


@st.composite
def designs(draw, max_groups: int = 200, structure: str | None = None, min_groups: int = 2):
    """Grouping structure and covariates: min_groups..max_groups groups of 1.. rows, balanced
    (the simplest, drawn first) or not; returns (structure, data, fixed-effects terms, seed)."""
    structure = structure or draw(st.sampled_from(STRUCTURES))
    n_g = draw(st.integers(min_groups, max_groups))
    if draw(st.booleans()):
        sizes = np.array(draw(st.lists(st.integers(1, 12), min_size=n_g, max_size=n_g)))
    else:
        sizes = np.full(n_g, draw(st.integers(1, 10)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_g), sizes)
    N = g.size
    n_h = draw(st.integers(2, 8))
    data = pd.DataFrame({
        "g": pd.Categorical([f"g{i:03d}" for i in g]),
        "h": pd.Categorical([f"h{i}" for i in rng.integers(0, n_h, N)]),
        "x": rng.normal(size=N),
    })
    terms = ["x"]
    if draw(st.booleans()):                                   # categorical covariate
        data["f"] = pd.Categorical(rng.choice(["a", "b", "c"], N), categories=["a", "b", "c"])
        terms.append("f")
    if draw(st.booleans()):                                   # near-collinear covariate
        data["x2"] = data["x"] + draw(st.sampled_from([1e-1, 1e-3, 1e-6])) * rng.normal(size=N)
        terms.append("x2")
    return structure, data, terms, seed


@st.composite
def parameters(draw, structure: str, terms: list[str]):
    """True θ (0 and large values included), the slope's SD and fixed effects, one per term
    (a factor's levels share one draw)."""
    theta = draw(st.one_of(st.just(0.5), st.just(0.0), st.floats(0.0, 3.0), st.just(8.0)))
    slope_sd = draw(st.floats(0.0, 1.0)) if "slope" in structure else 0.0
    beta = draw(st.lists(st.floats(-1.5, 1.5), min_size=len(terms) + 1, max_size=len(terms) + 1))
    return {"theta": theta, "slope_sd": slope_sd, "beta": beta}


def family_links():
    return st.sampled_from(FAMILY_LINKS)


@st.composite
def cases(draw, max_groups: int = 200, family_link: tuple[str, str] | None = None,
          structure: str | None = None, min_groups: int = 2, edge: str | None = None):
    """A whole case; `family_link`, `structure` and `edge` pin those draws."""
    structure, data, terms, seed = draw(designs(max_groups, structure, min_groups))
    family, link = family_link or draw(family_links())
    edge = edge or draw(st.sampled_from(EDGES))
    truth = draw(parameters(structure, terms))
    if edge == "near-singular":
        truth.update(theta=0.0, slope_sd=0.0)
    rng = np.random.default_rng(seed + 1)
    offset_kind = draw(st.sampled_from([None, "column", "formula"]))
    weight_kind = draw(st.sampled_from([None, "prior"]))
    centre = _eta_centre(family, link)
    eta = _linear_predictor(data, structure, terms, truth, rng) + centre
    offset = None
    if offset_kind:
        data["expo"] = rng.uniform(0.5, 2.0, len(data))
        eta = eta + np.log(data["expo"].to_numpy())
        offset = "off" if offset_kind == "column" else None
        if offset:
            data["off"] = np.log(data["expo"])
    response, weights = _simulate(draw, data, family, link, eta, edge, weight_kind, rng)
    rhs = " + ".join([*terms, *(["offset(log(expo))"] if offset_kind == "formula" else []),
                      _RE[structure]])
    if family not in ("binomial", "poisson") and edge in ("all-zero-group", "quasi-separation"):
        edge = "none"                           # a positive response has no zeros to arrange
    truth.update(edge=edge, eta_centre=centre)
    return GeneratedCase(data, f"{response} ~ {rhs}", family, link, weights, structure, truth,
                         offset)


def _linear_predictor(data: pd.DataFrame, structure: str, terms: list[str], truth: dict,
                      rng: np.random.Generator) -> np.ndarray:
    g = data["g"].cat.codes.to_numpy()
    n_g = int(g.max()) + 1
    x = data["x"].to_numpy()
    beta = truth["beta"]
    eta = beta[0] + truth["theta"] * rng.normal(size=n_g)[g]
    eta = eta + truth["slope_sd"] * rng.normal(size=n_g)[g] * x
    for b, term in zip(beta[1:], terms):
        eta = eta + b * (data[term].cat.codes.to_numpy() if term == "f" else data[term].to_numpy())
    if structure in ("crossed", "nested"):
        h = data["h"].cat.codes.to_numpy()
        eta = eta + truth["theta"] * rng.normal(size=int(h.max()) + 1)[h]
    return eta


def _simulate(draw, data: pd.DataFrame, family: str, link: str, eta: np.ndarray, edge: str,
              weight_kind: str | None, rng: np.random.Generator) -> tuple[str, str | None]:
    """Response columns drawn from the family at mean linkinv(η) (clamped into its range), the
    edge case applied; returns the formula's left-hand side and the weights column."""
    mu = _inverse_link(link, eta)
    N = eta.size
    zero_group = data["g"].cat.codes.to_numpy() == 0
    separated = data["x"].to_numpy() > 0
    weights = None
    if family == "binomial":
        mu = np.clip(mu, 1e-6, 1 - 1e-6)
        kind = draw(st.sampled_from(["binary", "cbind", "proportion"]))
        trials = np.ones(N) if kind == "binary" else rng.integers(1, draw(st.sampled_from([5, 20])) + 1, N).astype(float)
        succ = rng.binomial(trials.astype(int), mu).astype(float)
        if edge == "all-zero-group":
            succ[zero_group] = 0
        elif edge == "quasi-separation":
            succ = np.where(separated, trials, 0.0)
            succ[0] = trials[0] - succ[0]                     # one observation on the wrong side
        if kind == "binary":
            data["y"] = succ
            response = "y"
        elif kind == "cbind":
            data["succ"], data["trials"] = succ, trials
            response = "cbind(succ, trials - succ)"
        else:
            data["prop"], data["trials"] = succ / trials, trials
            return "prop", "trials"
    else:
        y = _draw_response(family, np.clip(mu, 1e-3, 1e6), rng)
        if edge == "all-zero-group" and family == "poisson":
            y[zero_group] = 0
        elif edge == "quasi-separation" and family == "poisson":
            y[~separated] = 0
        data["y"] = y
        response = "y"
    if weight_kind == "prior":
        data["w"] = rng.integers(1, 5, N).astype(float)
        weights = "w"
    return response, weights


def _draw_response(family: str, mu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if family == "poisson":
        return rng.poisson(mu).astype(float)
    if family == "Gamma":
        return rng.gamma(shape=2.0, scale=mu / 2.0)
    if family == "inverse.gaussian":
        return rng.wald(mu, 4.0)
    return np.abs(mu + 0.3 * rng.normal(size=mu.size)) + 1e-3       # gaussian, positive


def _inverse_link(link: str, eta: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return {
        "logit": lambda: 1 / (1 + np.exp(-eta)),
        "probit": lambda: ndtr(eta),
        "cloglog": lambda: -np.expm1(-np.exp(np.minimum(eta, 5))),
        "cauchit": lambda: 0.5 + np.arctan(eta) / np.pi,
        "log": lambda: np.exp(np.clip(eta, -10, 10)),
        "sqrt": lambda: np.maximum(eta, 0.1) ** 2,
        "identity": lambda: np.maximum(eta, 0.1),
        "inverse": lambda: 1.0 / np.maximum(eta, 0.05),
        "1/mu^2": lambda: 1.0 / np.sqrt(np.maximum(eta, 0.05)),
    }[link]()
