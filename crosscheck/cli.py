"""`crosscheck` command line.

`run` (the main job of `make run`): until the sweep exists, the reference fits of the README
example and of cbpp, in lme4 and exact mode, side by side with glmer on the same data.
"""
from __future__ import annotations

import sys

import click
import numpy as np
import pandas as pd

import reference_impl as ri
from crosscheck.rbridge import RSession

README_FORMULA = "y ~ x1 + (1 | subject)"
CBPP_FORMULA = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def readme_data() -> pd.DataFrame:
    return pd.DataFrame({
        "y": [1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 1, 1],
        "x1": list(range(1, 6)) * 3,
        "subject": pd.Categorical(np.repeat(["s1", "s2", "s3"], 5)),
    })


@click.group()
def main():
    """Cross-check a Python reference of lme4's glmer against the real thing."""


@main.command()
@click.option("--nagq", default="0,1,9", show_default=True, help="comma-separated nAGQ values")
def run(nagq: str):
    """Reference fits of the README example and cbpp, both modes, against glmer."""
    r = RSession.get()
    cases = [("README example", README_FORMULA, readme_data()),
             ("cbpp", CBPP_FORMULA, r.dataset("lme4", "cbpp"))]
    versions = r.versions()
    click.echo("versions: " + ", ".join(f"{k} {v}" for k, v in {**ri.fit.versions(), **versions}.items()))
    worst = 0.0
    for title, formula, data in cases:
        click.echo(f"\n{title}: {formula}")
        click.echo(f"{'nAGQ':>4} {'side':<12} {'-2logLik':>18} {'deviance':>14} {'theta':>12}  fixef")
        for k in (int(v) for v in nagq.split(",")):
            rec = r.fit(data, formula, "binomial", nAGQ=k)
            if not rec["ok"]:
                click.echo(f"{k:>4} {'glmer':<12} refused: {rec['error']}")
                continue
            g = rec["value"]
            rows = [("glmer", g["minus2loglik"], g["deviance"], list(g["theta"].values()), list(g["fixef"].values()))]
            for mode in ("lme4", "exact"):
                f = ri.glmer(formula, data, family="binomial", nAGQ=k, mode=mode)
                rows.append((f"python {mode}", f.minus2loglik, f.deviance, f.theta, list(f.fixef.values())))
                if mode == "lme4":
                    worst = max(worst, abs(f.minus2loglik - g["minus2loglik"]) / abs(g["minus2loglik"]))
            for side, m2ll, dev, theta, beta in rows:
                click.echo(f"{k:>4} {side:<12} {m2ll:18.10f} {dev:14.8f} {theta[0]:12.8f}  "
                           + " ".join(f"{b:.8f}" for b in beta))
    click.echo(f"\nworst relative -2logLik difference, lme4 mode vs glmer: {worst:.2e}")
    sys.exit(0 if worst < 1e-8 else 1)
