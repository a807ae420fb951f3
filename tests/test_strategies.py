"""Generated cases are valid for every family/link/structure: they build into a `Case`, the
reference builds them or refuses them with a ModelError naming the problem, and glmer, given the
same case, fits it on the same design (stage 0) or refuses it with a reason."""
from __future__ import annotations

import random
import threading
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning

import reference_impl as ri
from crosscheck.diagnose import PASSING, VERDICT_OF_STAGE
from crosscheck.generate import draw_case
from crosscheck.strategies import EDGES, FAMILY_LINKS, STRUCTURES, cases
from reference_impl.model import make_model

VERDICTS = {*PASSING, *VERDICT_OF_STAGE.values(), "r-refused", "python-refused", "both-refused"}


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
    assert case.truth["edge"] in EDGES


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
    (c,) = compare_case(drawn.to_case((1,))).results
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


def test_seeded_draws_are_reproducible_and_vary_with_the_index():
    a, b, other = draw_case("s", 3, max_groups=20), draw_case("s", 3, max_groups=20), draw_case("s", 4, max_groups=20)
    assert a.formula == b.formula and a.data.equals(b.data) and a.truth == b.truth
    assert not (other.formula == a.formula and other.data.equals(a.data))
