"""Hypothesis strategies that draw a whole GLMM case, one that looks like a model someone would
fit: stratum and family first, then structure, then values (issue 4; issue 13, item 3).

`cases()` draws a stratum (`STRATA`: "none" for half the cases, each edge case — quasi-separation,
an all-zero group, a near-singular fit, near-collinear covariates, unbalanced groups — for a
tenth), a family/link pair weighted by how often it is fitted (`FAMILY_LINKS`: binomial logit and
poisson log most, every pair still drawn), a design from `design_choices()` (2–200 groups, most of them
small, a crossed or nested second factor, continuous and categorical covariates) and true values
from `parameters()`, scaled to each pair's band of η (`_ETA`) so that μ = linkinv(η) is inside the
family's support for every row with room to spare; then it simulates the response, with prior
weights, offsets (log-scale links) and binomial trials. Simplest alternatives come first in every
`sampled_from`, so failures shrink to small cases. The stratum and cond(X) are recorded in
`truth` (and so in the results store). `GeneratedCase.to_case` gives the `crosscheck.case.Case`
that every comparison takes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from reference_impl.families import LINKS

from .case import Case

# every (family, link) pair both sides support, simplest first, with its weight in the draw:
# roughly how often it is fitted; a weight of 1 is 1 case in 35
FAMILY_LINK_WEIGHTS = {
    ("binomial", "logit"): 10, ("poisson", "log"): 7, ("binomial", "probit"): 2,
    ("binomial", "cloglog"): 2, ("binomial", "cauchit"): 1, ("binomial", "log"): 1,
    ("poisson", "sqrt"): 1, ("poisson", "identity"): 1, ("Gamma", "log"): 2,
    ("Gamma", "inverse"): 1, ("Gamma", "identity"): 1, ("inverse.gaussian", "1/mu^2"): 1,
    ("inverse.gaussian", "log"): 1, ("inverse.gaussian", "inverse"): 1,
    ("inverse.gaussian", "identity"): 1, ("gaussian", "log"): 1, ("gaussian", "inverse"): 1,
}
FAMILY_LINKS = list(FAMILY_LINK_WEIGHTS)
STRUCTURES = ["scalar", "crossed", "nested", "slope", "uncorrelated-slope"]
# the strata and their weights: "none" half the cases, each edge case a tenth
STRATA = {"none": 10, "quasi-separation": 2, "all-zero-group": 2, "near-singular": 2,
          "near-collinear": 2, "unbalanced": 2}
EDGES = [s for s in STRATA if s != "none"]
# strata that arrange zeros in the response, and the pairs they are drawn with: those whose μ may
# approach 0 (and 1) on an unbounded η
ZERO_STRATA = {"quasi-separation", "all-zero-group"}
ZERO_PAIRS = [("binomial", "logit"), ("poisson", "log"), ("binomial", "probit"),
              ("binomial", "cloglog"), ("binomial", "cauchit")]
# per pair: the band η stays in (μ inside the family's support with room to spare, as commented)
# and the range of the intercept inside it
_ETA = {
    ("binomial", "logit"): ((-4.5, 4.5), (-1.5, 1.5)),               # 0.011 ≤ μ ≤ 0.989
    ("binomial", "probit"): ((-3.0, 3.0), (-1.0, 1.0)),              # 0.0013 ≤ μ ≤ 0.9987
    ("binomial", "cloglog"): ((-4.0, 1.8), (-1.5, 0.3)),             # 0.018 ≤ μ ≤ 0.9977
    ("binomial", "cauchit"): ((-4.0, 4.0), (-1.0, 1.0)),             # 0.078 ≤ μ ≤ 0.922
    ("binomial", "log"): ((-3.5, -0.3), (-2.2, -1.5)),               # 0.030 ≤ μ ≤ 0.74
    ("poisson", "log"): ((-1.5, 4.5), (0.0, 2.5)),                   # 0.22 ≤ μ ≤ 90
    ("poisson", "sqrt"): ((0.7, 9.0), (1.5, 4.0)),                   # 0.49 ≤ μ ≤ 81
    ("poisson", "identity"): ((0.5, 60.0), (3.0, 20.0)),             # 0.5 ≤ μ ≤ 60
    ("Gamma", "log"): ((-2.0, 4.0), (-0.5, 2.0)),                    # 0.14 ≤ μ ≤ 55
    ("Gamma", "inverse"): ((0.1, 4.0), (0.5, 2.0)),                  # 0.25 ≤ μ ≤ 10
    ("Gamma", "identity"): ((0.2, 30.0), (1.0, 10.0)),               # 0.2 ≤ μ ≤ 30
    ("inverse.gaussian", "1/mu^2"): ((0.05, 4.0), (0.3, 2.0)),       # 0.5 ≤ μ ≤ 4.5
    ("inverse.gaussian", "log"): ((-2.0, 3.0), (-0.5, 1.5)),         # 0.14 ≤ μ ≤ 20
    ("inverse.gaussian", "inverse"): ((0.1, 4.0), (0.5, 2.0)),       # 0.25 ≤ μ ≤ 10
    ("inverse.gaussian", "identity"): ((0.2, 20.0), (1.0, 8.0)),     # 0.2 ≤ μ ≤ 20
    ("gaussian", "log"): ((-1.0, 4.0), (0.5, 2.5)),                  # 0.37 ≤ μ ≤ 55
    ("gaussian", "inverse"): ((0.1, 4.0), (0.5, 2.0)),               # 0.25 ≤ μ ≤ 10
}
# links on whose scale an exposure offset log(expo) belongs; every band leaves room for it
_OFFSET_LINKS = {"log", "cloglog"}
# hypothesis settings and `crosscheck run` sizes per profile: dev (quick local runs), ci
# (derandomized, within the CI budget), thorough (the wide search behind docs/findings.md)
PROFILES = {
    "dev": {"settings": {"max_examples": 20}, "sweep": {"cases": 30, "max_groups": 15}},
    "ci": {"settings": {"max_examples": 20, "derandomize": True, "print_blob": True},
           "sweep": {"cases": 8, "max_groups": 15, "seed": "ci"}},
    "thorough": {"settings": {"max_examples": 2000},
                 "sweep": {"cases": 2000, "max_groups": 200, "seed": "thorough",
                           "datasets": ("cbpp", "grouseticks", "VerbAgg", "Arabidopsis")}},
}


def register_profiles(prefix: str = "") -> None:
    """Register `PROFILES` as hypothesis profiles `{prefix}dev`, … (loading none)."""
    for name, profile in PROFILES.items():
        settings.register_profile(prefix + name, deadline=None, **profile["settings"],
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


@dataclass(frozen=True)
class GeneratedCase:
    """Data plus spec, the parameters the response was simulated from (`truth`, with the stratum
    and cond(X)) and the true linear predictor η, offset included."""

    data: pd.DataFrame
    formula: str
    family: str
    link: str
    weights: str | None = None
    structure: str = "scalar"
    truth: dict = field(default_factory=dict)
    offset: str | None = None
    eta: np.ndarray | None = field(default=None, repr=False, compare=False)

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


def _weighted(weights: dict):
    """The keys of `weights`, each drawn in proportion to its weight; the first is the simplest."""
    return st.sampled_from([k for k, w in weights.items() for _ in range(w)])


def strata(family_link: tuple[str, str] | None = None):
    """A stratum, among those that apply to `family_link` when it is given."""
    return _weighted({s: w for s, w in STRATA.items()
                      if family_link is None or s not in ZERO_STRATA or family_link in ZERO_PAIRS})


def family_links(stratum: str = "none"):
    """A family/link pair, weighted by use, among those the stratum is drawn with."""
    return _weighted({p: w for p, w in FAMILY_LINK_WEIGHTS.items()
                      if stratum not in ZERO_STRATA or p in ZERO_PAIRS})


@st.composite
def design_choices(draw, max_groups: int = 200, structure: str | None = None, min_groups: int = 2,
                   stratum: str = "none") -> dict:
    """The draws of a design (`design`): grouping structure, number of groups (min_groups..
    max_groups on a log scale, most of them small: 3 in 4 cases of 2..200 have at most 40), rows
    per group, the seed of its random values, balance, the second factor's levels, and which
    covariates."""
    structure = structure or draw(st.sampled_from(STRUCTURES))
    n_g = round(min_groups * (max_groups / min_groups) ** (draw(st.integers(0, 100)) / 100) ** 1.5)
    m = draw(st.integers(3, 10))
    seed = draw(st.integers(0, 2**32 - 1))
    unbalanced = stratum != "unbalanced" and draw(st.booleans())
    n_h = draw(st.integers(2, 8))
    factor = draw(st.booleans())
    collinear = draw(st.sampled_from([1e-2, 1e-4, 1e-6])) if stratum == "near-collinear" else None
    second = collinear is None and draw(st.booleans())
    return {"structure": structure, "n_g": n_g, "m": m, "seed": seed, "unbalanced": unbalanced,
            "n_h": n_h, "factor": factor, "collinear": collinear, "second": second, "stratum": stratum}


def _terms(c: dict) -> list[str]:
    """The fixed-effects terms of `design_choices` `c`, in the order of their columns."""
    return ["x", *(["f"] if c["factor"] else []), *(["x2"] if c["collinear"] is not None or c["second"] else [])]


def design(c: dict) -> pd.DataFrame:
    """The data of `design_choices` `c` (terms: `_terms`): groups of about m rows,
    balanced (the simplest) or mildly unbalanced, or in the "unbalanced" stratum heavy-tailed with
    a quarter singletons; a continuous covariate, maybe a categorical one and a second continuous
    one (nearly equal to the first in the "near-collinear" stratum)."""
    n_g, m = c["n_g"], c["m"]
    rng = np.random.default_rng(c["seed"])
    if c["stratum"] == "unbalanced":
        sizes = np.minimum(np.ceil(m * rng.lognormal(0.0, 1.2, n_g)), 10 * m).astype(int)
        sizes[rng.random(n_g) < 0.25] = 1
    elif c["unbalanced"]:
        sizes = rng.integers(max(2, m // 2), m + m // 2 + 1, n_g)
    else:
        sizes = np.full(n_g, m)
    g = np.repeat(np.arange(n_g), sizes)
    N = g.size
    data = pd.DataFrame({
        "g": pd.Categorical([f"g{i:03d}" for i in g]),
        "h": pd.Categorical([f"h{i}" for i in rng.integers(0, c["n_h"], N)]),
        "x": rng.normal(size=N),
    })
    if c["factor"]:                                           # categorical covariate
        data["f"] = pd.Categorical(rng.choice(["a", "b", "c"], N), categories=["a", "b", "c"])
    if c["collinear"] is not None:
        data["x2"] = data["x"] + c["collinear"] * rng.normal(size=N)
    elif c["second"]:                                         # a correlated second covariate
        data["x2"] = 0.5 * data["x"] + rng.normal(size=N)
    return data


@st.composite
def parameters(draw, structure: str, terms: list[str], stratum: str = "none"):
    """True θ (¼ to 3; 0 or nearly in the "near-singular" stratum), the slope's SD and fixed
    effects (−1.5 to 1.5, one per term; a factor's levels share one draw), on a grid of tenths,
    in units that `cases` gives them: a third of the room η has around the intercept."""
    theta = draw(st.sampled_from([0.0, 0.05] if stratum == "near-singular"
                                 else [0.5, 0.25, 1.0, 2.0, 3.0]))
    slope_sd = 0.0 if "slope" not in structure or stratum == "near-singular" else \
        draw(st.integers(0, 10)) / 10
    beta = draw(st.lists(st.integers(-15, 15), min_size=len(terms), max_size=len(terms)))
    return {"theta": theta, "slope_sd": slope_sd, "beta": [b / 10 for b in beta]}


@st.composite
def case_choices(draw, max_groups: int = 200, family_link: tuple[str, str] | None = None,
                 structure: str | None = None, min_groups: int = 2, edge: str | None = None) -> dict:
    """Every draw of a case, in the order they have always been made (so the same choices give
    the same case); `built` makes the case. `family_link`, `structure` and `edge` (the stratum,
    "none" or one of `EDGES`) pin those draws."""
    stratum = edge or draw(strata(family_link))
    family, link = family_link or draw(family_links(stratum))
    if stratum in ZERO_STRATA and (family, link) not in ZERO_PAIRS:
        raise ValueError(f"stratum {stratum!r} is drawn with {ZERO_PAIRS}, not {(family, link)}")
    d = draw(design_choices(max_groups, structure, min_groups, stratum))
    centre = draw(st.integers(0, 10))
    truth = draw(parameters(d["structure"], _terms(d), stratum))
    offset_kind = draw(st.sampled_from([None, "column", "formula"])) if link in _OFFSET_LINKS else None
    weight_kind = draw(st.sampled_from([None, "prior"]))
    kind = draw(st.sampled_from(["binary", "cbind", "proportion"])) if family == "binomial" else None
    max_trials = draw(st.sampled_from([5, 20])) if kind in ("cbind", "proportion") else None
    return {"stratum": stratum, "family": family, "link": link, "design": d, "centre": centre,
            "truth": truth, "offset_kind": offset_kind, "weight_kind": weight_kind, "kind": kind,
            "max_trials": max_trials}


def built(c: dict) -> GeneratedCase:
    """The case of `case_choices` `c`: the design's data, true values scaled to the pair's band
    of η (`_ETA`), the response simulated."""
    stratum, family, link = c["stratum"], c["family"], c["link"]
    structure = c["design"]["structure"]
    data, terms = design(c["design"]), _terms(c["design"])
    (lo, hi), (c_lo, c_hi) = _ETA[family, link]
    centre = c_lo + (c_hi - c_lo) * c["centre"] / 10
    room = min(centre - lo, hi - centre)
    truth = c["truth"]
    rng = np.random.default_rng(c["design"]["seed"] + 1)
    offset_kind = c["offset_kind"]
    off = np.zeros(len(data))
    if offset_kind:
        data["expo"] = rng.uniform(0.5, 2.0, len(data))
        off = np.log(data["expo"].to_numpy())
        if offset_kind == "column":
            data["off"] = off
    rest = _linear_predictor(data, structure, terms, truth, rng)
    # in units of room / 3, scaled down where η would leave its band (1 % inside it: rounding)
    bound, largest = 0.99 * (room - np.abs(off).max()), room / 3 * np.abs(rest).max()
    unit = room / 3 * (1.0 if largest <= bound else bound / largest)
    truth = {"theta": truth["theta"] * unit, "slope_sd": truth["slope_sd"] * unit,
             "beta": [centre, *(b * unit for b in truth["beta"])]}
    eta = centre + unit * rest + off
    assert np.all((lo <= eta) & (eta <= hi)), (family, link)
    response, weights = _simulate(data, family, LINKS[link].linkinv(eta), stratum, c["kind"],
                                  c["max_trials"], c["weight_kind"], rng)
    rhs = " + ".join([*terms, *(["offset(log(expo))"] if offset_kind == "formula" else []),
                      _RE[structure]])
    truth.update(stratum=stratum, cond_x=_cond_x(data, terms))
    return GeneratedCase(data, f"{response} ~ {rhs}", family, link, weights, structure, truth,
                         "off" if offset_kind == "column" else None, eta)


def cases(**pins):
    """A whole case (`case_choices`' keyword arguments pin draws)."""
    return case_choices(**pins).map(built)


def _linear_predictor(data: pd.DataFrame, structure: str, terms: list[str], truth: dict,
                      rng: np.random.Generator) -> np.ndarray:
    """η less its intercept and offset."""
    g = data["g"].cat.codes.to_numpy()
    n_g = int(g.max()) + 1
    x = data["x"].to_numpy()
    eta = truth["theta"] * rng.normal(size=n_g)[g]
    eta = eta + truth["slope_sd"] * rng.normal(size=n_g)[g] * x
    for b, term in zip(truth["beta"], terms):
        eta = eta + b * (data[term].cat.codes.to_numpy() if term == "f" else data[term].to_numpy())
    if structure in ("crossed", "nested"):
        h = data["h"].cat.codes.to_numpy()
        eta = eta + truth["theta"] * rng.normal(size=int(h.max()) + 1)[h]
    return eta


def _cond_x(data: pd.DataFrame, terms: list[str]) -> float:
    """cond(X), X the fixed effects' model matrix (treatment contrasts): the realized
    conditioning."""
    columns = [np.ones(len(data))]
    for term in terms:
        if term == "f":
            columns += [(data["f"] == level).to_numpy(float) for level in ("b", "c")]
        else:
            columns.append(data[term].to_numpy())
    return float(np.linalg.cond(np.column_stack(columns)))


def _simulate(data: pd.DataFrame, family: str, mu: np.ndarray, stratum: str, kind: str | None,
              max_trials: int | None, weight_kind: str | None, rng: np.random.Generator
              ) -> tuple[str, str | None]:
    """Response columns drawn from the family at mean μ, the zeros of the stratum arranged;
    returns the formula's left-hand side and the weights column."""
    N = mu.size
    zero_group = data["g"].cat.codes.to_numpy() == 0
    separated = data["x"].to_numpy() > 0
    weights = None
    if family == "binomial":
        trials = np.ones(N) if kind == "binary" else rng.integers(1, max_trials + 1, N).astype(float)
        succ = rng.binomial(trials.astype(int), mu).astype(float)
        if stratum == "all-zero-group":
            succ[zero_group] = 0
        elif stratum == "quasi-separation":
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
        y = _draw_response(family, mu, rng)
        if stratum == "all-zero-group":
            y[zero_group] = 0
        elif stratum == "quasi-separation":
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
    return np.abs(mu + 0.1 * np.median(mu) * rng.normal(size=mu.size))     # gaussian, positive
