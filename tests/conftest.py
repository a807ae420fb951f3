"""Shared fixtures."""

import os

import pytest
from hypothesis import HealthCheck, settings

# dev: quick local runs; ci: derandomized and small enough for the CI budget; thorough: sweeps
settings.register_profile("dev", max_examples=20, deadline=None)
settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

from crosscheck.rbridge import RSession


@pytest.fixture(scope="session")
def R() -> RSession:
    """The process-wide embedded R with every `r_scripts/*.R` sourced."""
    return RSession.get()
