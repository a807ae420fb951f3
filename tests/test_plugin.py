"""The pytest plugin minds its own business: a project that did not ask keeps its own settings."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_a_project_s_own_hypothesis_profile_survives_the_plugin(tmp_path):
    """A scratch project (CI=true, where the plugin once loaded its `ci` profile over everyone's)
    loads a profile of 17 examples in its conftest; its tests see 17 examples, and still get the
    plugin's markers and its profiles under their own names."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        from hypothesis import settings
        settings.register_profile("mine", max_examples=17)
        settings.load_profile("mine")
    """))
    (tmp_path / "test_scratch.py").write_text(textwrap.dedent("""
        import pytest
        from hypothesis import settings

        def test_own_profile():
            assert settings().max_examples == 17

        def test_plugin_profiles_are_there_to_be_asked_for():
            assert settings.get_profile("crosscheck-ci").derandomize

        @pytest.mark.nagq(0, 1)
        def test_marker(nagq):
            assert nagq in (0, 1)
    """))
    env = {**os.environ, "CI": "true"}
    env.pop("HYPOTHESIS_PROFILE", None)
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_scratch.py"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "4 passed" in p.stdout, p.stdout
