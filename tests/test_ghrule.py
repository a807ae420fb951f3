"""The Gauss–Hermite rule against lme4's `GHrule` table (spec §4.3)."""
import numpy as np
import pytest

from reference_impl.errors import ModelError
from reference_impl.ghrule import ghrule


@pytest.mark.parametrize("k", [1, 2, 3, 9, 25, 50, 100])
def test_ghrule_equals_lme4_table(R, k):
    table = np.asarray(R.eval(f"unname(lme4::GHrule({k}))"), float).reshape(k, 3)
    z, w, ldnorm = ghrule(k)
    # the table (fastGHQuad) carries up to 7e-14 absolute error on nodes near ±19: relative 1e-14
    assert np.all(np.abs(z - table[:, 0]) <= 1e-14 * np.maximum(1.0, np.abs(table[:, 0])))
    assert np.all(np.abs(w - table[:, 1]) <= 1e-14)
    assert np.all(np.abs(ldnorm - table[:, 2]) <= 1e-12 * np.maximum(1.0, np.abs(table[:, 2])))


def test_ghrule_range():
    with pytest.raises(ModelError, match="1 <= nAGQ <= 100"):
        ghrule(101)
