"""Generated cases are valid for every family/link/structure: they build into a `Case`, the
reference builds them or refuses them with a ModelError naming the problem, and glmer, given the
same case, fits it on the same design (stage 0) or refuses it with a reason. They look like real
GLMMs: every true mean is inside the family's support with room to spare, pairs are drawn by use,
each edge stratum is at least 5 % of `thorough` cases, and the stratum reaches the results store."""
from __future__ import annotations

import collections
import sys
import random
import sqlite3
import threading
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning

import reference_impl as ri
from crosscheck import sources
from crosscheck.diagnose import PASSING, VERDICT_OF_STAGE
from crosscheck.generate import draw_case
from crosscheck.store import SCHEMA, Store
from crosscheck.strategies import (EDGES, FAMILY_LINKS, PROFILES, STRATA, STRUCTURES, ZERO_PAIRS,
                                   ZERO_STRATA, cases)
from reference_impl.families import LINKS
from reference_impl.model import make_model

VERDICTS = {*PASSING, *VERDICT_OF_STAGE.values(), "r-refused", "python-refused", "both-refused"}
# the true mean's range, the family's support with room to spare
SUPPORT = {"binomial": (1e-3, 1 - 1e-3), "poisson": (0.1, 100.0), "Gamma": (0.1, 100.0),
           "inverse.gaussian": (0.1, 100.0), "gaussian": (0.1, 100.0)}


@given(case=cases(max_groups=30))
def test_generated_cases_build_or_are_refused_cleanly(case):
    try:
        model = make_model(case.formula, case.data, case.family, case.link, case.weights, case.offset)
    except ri.ModelError as err:
        assert str(err)
        return
    assert model.N == len(case.data)
    assert model.q == sum(t.nl * t.nc for t in model.design.reterms)
    assert model.scalar_single == case.scalar
    assert case.truth["stratum"] in STRATA


@pytest.mark.parametrize("family, link", FAMILY_LINKS)
def test_every_true_mean_is_inside_the_support(family, link):
    """μ = linkinv(η) of every row is inside the family's support with room to spare, and η is
    inside the link's domain (the link maps μ back to it)."""
    mean_inside_support(family, link)


@settings(max_examples=15, deadline=None)
@given(st.data())
def mean_inside_support(family, link, data):
    case = data.draw(cases(max_groups=40, family_link=(family, link)))
    lo, hi = SUPPORT[family]
    mu = LINKS[link].linkinv(case.eta)
    assert case.eta.shape == (len(case.data),)
    assert np.all((lo < mu) & (mu < hi)), (mu.min(), mu.max())
    np.testing.assert_allclose(LINKS[link].linkfun(mu), case.eta, rtol=1e-9, atol=1e-12)


def test_thorough_draws_every_pair_and_each_edge_stratum_at_least_5_percent():
    """400 `thorough` draws: each edge stratum ≥ 5 %, "none" the largest share, binomial logit and
    poisson log the commonest pairs and every pair drawn; up to 200 groups, most cases small."""
    n = 400
    drawn = [draw_case("strata", i, max_groups=PROFILES["thorough"]["sweep"]["max_groups"])
             for i in range(n)]
    strata = collections.Counter(c.truth["stratum"] for c in drawn)
    assert all(strata[s] >= 0.05 * n for s in EDGES), strata
    assert strata.most_common(1)[0][0] == "none"
    pairs = collections.Counter((c.family, c.link) for c in drawn)
    assert set(pairs) == set(FAMILY_LINKS)
    assert {p for p, _ in pairs.most_common(2)} == {("binomial", "logit"), ("poisson", "log")}
    assert all((c.family, c.link) in ZERO_PAIRS for c in drawn if c.truth["stratum"] in ZERO_STRATA)
    groups = [c.data["g"].nunique() for c in drawn]
    assert max(groups) > 100 and np.median(groups) <= 40
    collinear = [c.truth["cond_x"] for c in drawn if c.truth["stratum"] == "near-collinear"]
    assert min(collinear) > 100 > np.median([c.truth["cond_x"] for c in drawn
                                              if c.truth["stratum"] == "none"])


def test_the_stratum_and_conditioning_reach_the_store(tmp_path):
    """A generated case's stratum and cond(X) are columns of its stored row; a store written before
    them keeps its `edge` column's value as the stratum."""
    drawn = draw_case("store", 0, max_groups=10, edge="near-collinear")
    case = drawn.to_case((0,), name="gen:store:0")
    store = Store(tmp_path / "r.sqlite")
    run_id = store.new_run({})
    store.add(run_id, {"key": "gen:store:0", "status": "error", "error": "not fitted",
                       "case": sources.document(case), "seconds": 0.0})
    (row,) = store.cases(run_id)
    assert row["stratum"] == "near-collinear" and row["cond_x"] == pytest.approx(drawn.truth["cond_x"])
    store.close()

    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as con:
        con.executescript(SCHEMA.replace("stratum TEXT", "edge TEXT").replace("cond_x REAL,", ""))
        con.execute("INSERT INTO runs VALUES ('r', 'now', NULL, 'finished', '{}')")
        con.execute("INSERT INTO cases (run_id, case_key, status, edge, finished) "
                    "VALUES ('r', 'gen:old:0', 'done', 'near-singular', 'now')")
    (row,) = Store(old).cases("r")
    assert row["stratum"] == "near-singular" and row["cond_x"] is None


@pytest.mark.parametrize("family, link", FAMILY_LINKS)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_every_family_link_structure_builds_a_case(family, link, structure):
    """Every pair × structure: a valid `Case` whose design the reference builds (or refuses by name)."""
    build(family, link, structure)


@settings(max_examples=1, deadline=None)
@given(st.data())
def build(family, link, structure, data):
    drawn = data.draw(cases(max_groups=6, min_groups=4, family_link=(family, link), structure=structure))
    assert (drawn.family, drawn.link, drawn.structure) == (family, link, structure)
    case = drawn.to_case((0, 1, 9))
    assert case.nagq == ((0, 1, 9) if structure == "scalar" else (0, 1))
    try:
        make_model(case.formula, case.data, case.family, case.link, case.weights, case.offset)
    except ri.ModelError as err:
        assert str(err)


@pytest.mark.parametrize("family, link, structure",
                         [(f, l, STRUCTURES[i % len(STRUCTURES)]) for i, (f, l) in enumerate(FAMILY_LINKS)]
                         + [(*FAMILY_LINKS[0], s) for s in STRUCTURES[1:]])
def test_generated_cases_are_valid_for_both_sides(family, link, structure, compare_case):
    """Every pair and every structure, compared with glmer in lme4 mode (nAGQ 1): the same design
    (stage 0) whenever both fit, and a reason whenever a side refuses."""
    check(family, link, structure, compare_case)


@settings(max_examples=1, deadline=None)
@given(st.data())
def check(family, link, structure, compare_case, data):
    drawn = data.draw(cases(max_groups=6, min_groups=4, family_link=(family, link), structure=structure))
    (c,) = compare_case(drawn.to_case((1,)), noise="none").results      # stage 0 is asserted: no band
    assert c.verdict in VERDICTS
    assert c.diagnosis.stage_failed != 0, [d for d in c.diffs if not d.ok]
    for side in (c.python, c.r):
        assert side.ok or side.error


def test_draws_do_not_warn_when_another_thread_uses_random():
    """A Dask worker's event loop draws from the global `random` while a task draws a case; that is
    not the strategy's use of `random` and must not bring hypothesis's deprecation warning."""
    stop = threading.Event()

    def use_random():
        while not stop.is_set():
            random.random()

    thread = threading.Thread(target=use_random, daemon=True)
    thread.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", HypothesisDeprecationWarning)
            for index in range(3):
                draw_case("s", index, max_groups=6)
    finally:
        stop.set()
        thread.join()


def test_a_draw_builds_the_case_that_cases_gives():
    """draw_case builds only the last of hypothesis's examples from its choices
    (`case_choices`); the case is the one `cases()` itself draws there."""
    from crosscheck.generate import _search, digest
    from hypothesis import Phase

    for seed, i, strategy in [("s", 3, {"max_groups": 20}), ("t", 7, {"max_groups": 200}),
                              ("e", 1, {"edge": "near-collinear"}), ("e", 2, {"edge": "unbalanced"})]:
        whole = []
        _search(seed, i, strategy, [Phase.generate], whole.append)
        assert digest(draw_case(seed, i, **strategy)) == digest(whole[-1])


def test_seeded_draws_are_reproducible_and_vary_with_the_index():
    a, b, other = draw_case("s", 3, max_groups=20), draw_case("s", 3, max_groups=20), draw_case("s", 4, max_groups=20)
    assert a.formula == b.formula and a.data.equals(b.data) and a.truth == b.truth
    assert not (other.formula == a.formula and other.data.equals(a.data))


def test_draws_do_not_depend_on_the_constants_in_the_projects_source(tmp_path, monkeypatch):
    """hypothesis draws, now and then, literals found in the loaded modules outside site-packages:
    a module imported between two draws of the same keys, its source full of constants, must not
    change a case (gen:gate:5 changed with two new constants in sides.py)."""
    from crosscheck.generate import digest
    keys = [("gate", i) for i in range(6)] + [("thorough", i) for i in range(10)]
    before = [digest(draw_case(seed, i, max_groups=12)) for seed, i in keys]
    (tmp_path / "constants_elsewhere.py").write_text("VALUES = [" + ", ".join(
        [*map(str, range(-40, 400, 7)), *(f"{k / 7:.6f}" for k in range(1, 90)), *(f"'g{k:03d}'" for k in range(60))])
        + "]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("constants_elsewhere")
    try:
        after = [digest(draw_case(seed, i, max_groups=12)) for seed, i in keys]
    finally:
        del sys.modules["constants_elsewhere"]
    assert after == before
