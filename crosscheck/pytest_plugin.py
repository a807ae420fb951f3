"""pytest plugin (entry point `pytest11`: `crosscheck`): cross-checks as tests.

- hypothesis profiles `crosscheck-dev`, `crosscheck-ci` (derandomized) and `crosscheck-thorough`
  (`strategies.PROFILES`), registered under their own names and loaded only by a project that asks
  (`settings.load_profile("crosscheck-ci")`): the plugin changes no setting of anyone else's;
- fixtures `r_session` (the process's embedded R) and `compare_case` (`compare_case(case,
  modes=None, **kw) -> CaseReport`; `modes` name implementations, as `--impl` does:
  `("mixedlm",)`, `("path/to/file.py:attr",)` or an implementation object; None: the option
  `--crosscheck-impl` (the plugin's `--impl`, namespaced so that it cannot collide with another
  plugin's option), else `("lme4",)`); `assert_passes(report)` fails with the text report;
- `@pytest.mark.nagq(0, 1, 9)` parametrizes a test's `nagq` argument;
- `@pytest.mark.corpus(directory)` parametrizes `corpus_case` over the case files of a directory
  (default: the ini option `crosscheck_corpus`, `tests/corpus/cases`);
- `@corpus_examples(directory)` adds each case file as a hypothesis `@example(case=…)` to a
  `@given` test: the pinned regressions run before anything generated;
- `target_objective(report)`: hypothesis `target()` on log10 of the worst objective difference,
  one label per nAGQ, to steer generation towards discrepancies.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import example, target

from .case import Case

DEFAULT_CORPUS = "tests/corpus/cases"


def pytest_addoption(parser):
    parser.addini("crosscheck_corpus", "directory of pinned case files", default=DEFAULT_CORPUS)
    parser.addoption("--crosscheck-impl", default=None, metavar="IMPL",
                     help="the implementation the compare_case fixture puts beside glmer by default "
                          "(as crosscheck compare --impl: lme4, exact, mixedlm, module:attr, file.py:attr)")


def pytest_configure(config):
    from .strategies import register_profiles

    register_profiles(prefix="crosscheck-")
    config.addinivalue_line("markers", "nagq(*values): parametrize the test's `nagq` argument")
    config.addinivalue_line("markers", "corpus(directory=None): parametrize `corpus_case` over the "
                                       "case files of a directory")


def corpus_files(directory: str | Path = DEFAULT_CORPUS) -> list[Path]:
    return sorted(Path(directory).glob("*.json"))


def pytest_generate_tests(metafunc):
    nagq = metafunc.definition.get_closest_marker("nagq")
    if nagq is not None and "nagq" in metafunc.fixturenames:
        metafunc.parametrize("nagq", nagq.args, ids=[f"nAGQ={k}" for k in nagq.args])
    corpus = metafunc.definition.get_closest_marker("corpus")
    if corpus is not None and "corpus_case" in metafunc.fixturenames:
        directory = Path(corpus.args[0] if corpus.args else metafunc.config.getini("crosscheck_corpus"))
        files = corpus_files(directory if directory.is_absolute() else metafunc.config.rootpath / directory)
        metafunc.parametrize("corpus_case", files, ids=[f.stem for f in files], indirect=True)


@pytest.fixture
def corpus_case(request) -> Case:
    """A pinned case (parametrized by `@pytest.mark.corpus`)."""
    return Case.load(request.param)


@pytest.fixture(scope="session")
def r_session():
    """The process-wide embedded R with every `r_scripts/*.R` sourced."""
    from .rbridge import RSession

    return RSession.get()


@pytest.fixture(scope="session")
def compare_case(r_session, pytestconfig):
    """`compare_case(case, modes=None, policy=None, timeout=120, referee=False, noise="failing")`:
    `modes` None is `--crosscheck-impl`'s implementation, or lme4 mode; as a regression test, the
    noise band is measured where a comparison would otherwise fail (as in sweeps; `noise="all"`
    measures it for every comparison, as `compare`)."""
    from .compare import compare_case as compare
    from .sides import RSide

    impl = pytestconfig.getoption("crosscheck_impl")
    default = (impl,) if impl else ("lme4",)

    def run(case: Case, modes=None, policy=None, timeout: float | None = 120, referee=False,
            noise: str = "failing"):
        return compare(case, modes or default, policy, RSide(r_session, timeout), referee, noise)

    return run


def assert_passes(report) -> None:
    """Fail with the text report unless every comparison of `report` passed."""
    from .render import render_text

    if not report.passed:
        pytest.fail(render_text(report), pytrace=False)


def corpus_examples(directory: str | Path = DEFAULT_CORPUS, argname: str = "case"):
    """Each case file of `directory` as a hypothesis `@example(**{argname: case})`."""
    def decorate(test):
        for path in reversed(corpus_files(directory)):
            test = example(**{argname: Case.load(path)})(test)
        return test
    return decorate


def target_objective(report) -> None:
    """`target(log10 |Δ objective|)` per nAGQ over the report's comparisons (worst mode)."""
    worst: dict[int, float] = {}
    for c in report.results:
        for d in c.diffs:
            if d.quantity.startswith("objective@") and d.abs is not None and math.isfinite(d.abs):
                worst[c.nAGQ] = max(worst.get(c.nAGQ, -20.0), math.log10(max(d.abs, 1e-20)))
    for k, v in worst.items():
        target(v, label=f"log10 objective diff, nAGQ={k}")
