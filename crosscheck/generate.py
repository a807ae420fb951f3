"""Reproducible draws from `strategies.cases`, and shrinking a failing draw with hypothesis.

Case `index` of a sweep seeded `seed` is the second example of a hypothesis run of
`cases(**strategy)` under `@seed(f"{seed}:{index}")`, with no example database and the generate
phase only (hypothesis always tries the simplest example first; the second is the first random
one). That makes it a pure function of (seed, index, strategy arguments, hypothesis version):
workers draw their cases in parallel, a resumed run draws the same ones, and the strategies stay
the one definition of a case (`strategy.example()` is neither reproducible nor meant for library
code). One piece of hypothesis's internals is set aside for it (`_no_local_constants`): its habit
of drawing literals found in the project's own source.

Shrinking re-runs the same seeded search with the shrink phase on and a predicate that raises
when a case still fails the same way: hypothesis meets the failing draw again as its second
example and shrinks it. The predicate's answers are cached by case digest (hypothesis replays the
minimal example at the end) and, past the time budget, new candidates count as passing, which
ends the shrink with the smallest failing case found so far.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from typing import Callable

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning, HypothesisException

from .store import case_digest
from .strategies import GeneratedCase, built, case_choices, cases

_SETTINGS = dict(database=None, deadline=None, derandomize=False, max_examples=2,
                 suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                 verbosity=Verbosity.quiet, print_blob=False)


class _StillFails(Exception):
    """Raised inside the shrink search: this candidate reproduces the failure."""


@contextmanager
def _no_local_constants():
    """hypothesis (since 6.131) draws, now and then, a literal constant found in the source of the
    loaded modules outside site-packages ("local constants", `providers._get_local_constants`).
    A case would then depend on every number written anywhere in crosscheck, reference_impl or
    the tests, and on which of those modules the drawing process has imported (pytest, a Dask
    worker and the CLI import different ones): a new constant in an unrelated file redrew
    gen:gate:5. Within this block hypothesis sees none, and its cache of permitted constants,
    which holds the local ones, is emptied on the way in and out. A hypothesis without the hook
    has no local constants to set aside."""
    from hypothesis.internal.conjecture import providers
    local = getattr(providers, "_get_local_constants", None)
    if local is None:
        yield
        return
    providers.CONSTANTS_CACHE.cache.clear()
    providers._get_local_constants = providers.Constants          # an empty set of each type
    try:
        yield
    finally:
        providers._get_local_constants = local
        providers.CONSTANTS_CACHE.cache.clear()


def _search(run_seed: str, index: int, strategy: dict, phases, body, build: bool = True) -> None:
    """`body` on each example of draw `index`: built cases, or with `build` False their choices
    (the same draws, no data made)."""
    # hypothesis makes its first random example differ from the simplest one at the first
    # choice, so that choice would never take its first value: an unused leading draw takes it
    @seed(f"{run_seed}:{index}")
    @settings(phases=phases, **_SETTINGS)
    @given(st.integers(0, 2**32 - 1), (cases if build else case_choices)(**strategy))
    def search(_, case):
        body(case)

    # hypothesis blames a strategy for any change of the global `random` during a draw; in a Dask
    # worker the event-loop thread draws from it meanwhile (dask's `sizeof` samples). `cases()`
    # does not use it: its values come from hypothesis's draws alone.
    with warnings.catch_warnings(), _no_local_constants():
        warnings.filterwarnings("ignore", "Do not use the `random` module inside strategies",
                                HypothesisDeprecationWarning)
        search()


def draw_case(run_seed: str, index: int, **strategy) -> GeneratedCase:
    """Case `index` of the sweep seeded `run_seed` (strategy: `cases()`'s keyword arguments)."""
    drawn: list[dict] = []
    _search(run_seed, index, strategy, [Phase.generate], drawn.append, build=False)
    return built(drawn[-1])          # the data of the last example only (hypothesis runs two)


def digest(case: GeneratedCase) -> str:
    return case_digest(case.to_case(nagq=(0,)).to_json())


def shrink(run_seed: str, index: int, fails: Callable[[GeneratedCase], bool],
           budget_s: float = 60.0, **strategy) -> tuple[GeneratedCase | None, int]:
    """The case with the fewest rows among those that still `fail` on hypothesis's way from draw
    `index` to its minimal example, and the number of distinct candidates tried; None when the
    draw itself does not fail (a different hypothesis version draws different cases)."""
    answers: dict[str, bool] = {}
    failing: list[GeneratedCase] = []
    start = time.monotonic()

    def body(case: GeneratedCase) -> None:
        key = digest(case)
        if key not in answers:
            answers[key] = time.monotonic() - start < budget_s and fails(case)
        if answers[key]:
            failing.append(case)
            raise _StillFails

    try:
        _search(run_seed, index, strategy, [Phase.generate, Phase.shrink], body)
    except (_StillFails, HypothesisException):
        pass
    smallest = min(failing, key=lambda c: (len(c.data), c.data.shape[1]), default=None)
    return smallest, len(answers)
