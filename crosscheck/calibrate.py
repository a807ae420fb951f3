"""Measure the tolerances: the worst difference per mode × nAGQ class × quantity over a fixed set of
calibration cases, beside the default tolerance (`crosscheck calibrate`; docs/tolerances.md).
"""
from __future__ import annotations

import re
from collections import defaultdict

from .case import Case
from .compare import compare_case
from .datasets import readme_example, simulated
from .diffs import Diff
from .rbridge import RSession
from .sides import RSide
from .tolerances import Policy, nagq_class

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def calibration_cases(session: RSession) -> list[Case]:
    """Real data sets of lme4 and seeded simulations over families, links and structures."""
    cbpp = session.dataset("lme4", "cbpp")
    grouse = session.dataset("lme4", "grouseticks")
    sim = simulated()
    return [
        Case.make(cbpp, CBPP, "binomial", nagq=(0, 1, 2, 9, 25), name="cbpp"),
        Case.make(cbpp, CBPP, "binomial", "probit", nagq=(0, 1, 9), name="cbpp-probit"),
        Case.make(cbpp, CBPP, "binomial", "cloglog", nagq=(0, 1, 9), name="cbpp-cloglog"),
        Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial", nagq=(0, 1, 5, 25),
                  name="readme"),
        Case.make(grouse, "TICKS ~ YEAR + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "poisson",
                  nagq=(0, 1), name="grouseticks"),
        Case.make(sim, "y01 ~ x + (1 | g)", "binomial", weights="pw", nagq=(0, 1, 9),
                  name="sim-binary-weights"),
        Case.make(sim, "count ~ x + offset(log(expo)) + (1 | g)", "poisson", nagq=(0, 1, 9),
                  name="sim-poisson-offset"),
        Case.make(sim, "count ~ x + (1 | g)", "poisson", "sqrt", nagq=(0, 1, 9), name="sim-poisson-sqrt"),
        Case.make(sim, "cbind(succ, trials - succ) ~ x + (1 | g) + (1 | h)", "binomial",
                  nagq=(0, 1), name="sim-crossed"),
        Case.make(sim, "count ~ x + (1 | g/nest)", "poisson", nagq=(0, 1), name="sim-nested"),
        Case.make(sim, "count ~ x + (1 + x | g)", "poisson", nagq=(0, 1), name="sim-slope"),
        Case.make(sim, "y01 ~ x + (1 + x || g)", "binomial", nagq=(0, 1), name="sim-uncorrelated"),
        Case.make(sim, "pos ~ x + (1 | g)", "Gamma", "log", nagq=(0, 1), name="sim-gamma-log"),
    ]


def base_quantity(quantity: str) -> str:
    """`theta[herd.(Intercept)]` → `theta`, `objective@r` → `objective`."""
    return re.split(r"[\[@ ]", quantity, maxsplit=1)[0]


def measure(cases: list[Case], modes=("lme4", "exact")) -> tuple[dict, list[str]]:
    """Worst diff per (mode, nAGQ class, quantity) and the verdict lines of every comparison."""
    worst: dict[tuple[str, str, str], tuple[Diff, str]] = {}
    verdicts = []
    r_side = RSide()
    for case in cases:
        report = compare_case(case, modes, Policy(), r_side)
        for c in report.results:
            verdicts.append(f"{case.name} nAGQ {c.nAGQ} {c.mode}: {c.verdict}")
            for d in c.diffs:
                if d.abs is None:
                    continue
                key = (c.mode, nagq_class(c.nAGQ), base_quantity(d.quantity))
                if key not in worst or d.excess > worst[key][0].excess:
                    worst[key] = (d, case.name)
    return worst, verdicts


def calibration_table() -> str:
    cases = calibration_cases(RSession.get())
    worst, verdicts = measure(cases)
    policy = Policy()
    by_mode = defaultdict(list)
    for (mode, k, q), (d, name) in sorted(worst.items()):
        tol = policy.get(mode, {"0": 0, "1": 1, "agq": 2}[k], q)
        by_mode[mode].append(f"| {k} | {q} | {d.abs:.2e} | {d.rel:.2e} | {name} | {tol} | "
                             f"{d.excess:.2g} |")
    lines = [f"Measured by `crosscheck calibrate` on {len(cases)} cases "
             f"({', '.join(c.name for c in cases)}).", ""]
    for mode, rows in by_mode.items():
        lines += [f"### {mode} mode", "",
                  "| nAGQ | quantity | worst abs | its rel | case | default tolerance | worst / bound |",
                  "|---|---|---|---|---|---|---|", *rows, ""]
    lines += ["### Verdicts", "", *(f"- {v}" for v in verdicts), ""]
    return "\n".join(lines)
