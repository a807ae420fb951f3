"""Shared fixtures."""

import pytest

from crosscheck.rbridge import RSession


@pytest.fixture(scope="session")
def R() -> RSession:
    """The process-wide embedded R with every `r_scripts/*.R` sourced."""
    return RSession.get()
