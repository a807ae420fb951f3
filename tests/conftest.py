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
from reliability import (pytest_collection_finish, pytest_deselected,  # noqa: E402,F401
                         pytest_runtest_logreport, pytest_sessionfinish, readme_csv, reliability)
