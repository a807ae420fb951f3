"""Shared fixtures. `r_session`, `compare_case` and the nAGQ and corpus markers come from the
crosscheck pytest plugin (crosscheck/pytest_plugin.py); this project loads its hypothesis profile
here (dev, ci when CI is set, or HYPOTHESIS_PROFILE: strategies.PROFILES)."""

import os

import pytest
from hypothesis import settings

from crosscheck.rbridge import RSession
from crosscheck.strategies import register_profiles

register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def R(r_session) -> RSession:
    """The process-wide embedded R with every `r_scripts/*.R` sourced (the plugin's `r_session`)."""
    return r_session

# docs/reliability.md: the reliability tests' record and the hooks that write it (issue 7)
from reliability import (MODULES, pytest_collection_finish, pytest_deselected,  # noqa: E402,F401
                         pytest_runtest_logreport, pytest_sessionfinish, readme_csv, reliability)


@pytest.hookimpl(tryfirst=True)                  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(items):
    """`make test` runs the suite on both cores (pytest-xdist, `--dist loadgroup`): a module goes
    to one worker whole, so its module-scoped fixtures (glmer fits, sweeps) are computed once, and
    the reliability modules go together, so that one worker sees all of them pass and rewrites
    docs/reliability.md."""
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("reliability" if name in MODULES else name))
