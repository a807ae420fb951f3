"""Small data sets the harness ships: the README's worked example and a seeded simulation.

Used by `crosscheck run`, `crosscheck calibrate` and the test suite (generated here, so no file
has to be read and every number is reproducible from the seed).
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def readme_example() -> pd.DataFrame:
    """The README's worked example: 15 rows, three subjects."""
    return pd.DataFrame({
        "y": [1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 1, 1],
        "x1": list(range(1, 6)) * 3,
        "subject": pd.Categorical(np.repeat(["s1", "s2", "s3"], 5)),
    })


def simulated(seed: int = 1, n_g: int = 12, n_per: int = 8) -> pd.DataFrame:
    """Binary, binomial-count and Poisson responses over crossed and nested factors."""
    rng = np.random.default_rng(seed)
    N = n_g * n_per
    g = np.repeat(np.arange(n_g), n_per)
    h = rng.integers(0, 5, N)                      # crossed with g
    nest = np.tile(np.arange(2), N // 2)           # nested within g: g:nest
    x = rng.normal(size=N)
    expo = rng.uniform(0.5, 2.0, N)
    b_g = rng.normal(scale=0.8, size=n_g)
    b_x = rng.normal(scale=0.4, size=n_g)
    b_h = rng.normal(scale=0.5, size=5)
    eta = -0.3 + 0.7 * x + b_g[g] + b_x[g] * x + b_h[h]
    trials = rng.integers(1, 9, N)
    return pd.DataFrame({
        "x": x,
        "g": pd.Categorical([f"g{i:02d}" for i in g]),
        "h": pd.Categorical([f"h{i}" for i in h]),
        "nest": pd.Categorical([f"n{i}" for i in nest]),
        "expo": expo,
        "y01": (rng.uniform(size=N) < 1 / (1 + np.exp(-eta))).astype(float),
        "succ": rng.binomial(trials, 1 / (1 + np.exp(-eta))).astype(float),
        "trials": trials.astype(float),
        "count": rng.poisson(np.exp(0.2 + 0.4 * x + b_g[g] + b_h[h]) * expo).astype(float),
        "pw": rng.integers(1, 4, N).astype(float),
        "pos": np.exp(0.3 + 0.2 * x + b_g[g] * 0.3 + rng.normal(scale=0.3, size=N)),
    })
