"""Reference speed beside glmer and glmmTMB, measured in one run (issue 5); `make bench`.

For each case and nAGQ: the time of the reference's exact-mode fit (`reference_impl.glmer`), of
glmer and of glmmTMB (Laplace, nAGQ = 1 rows only) through the embedded R (the bridge call is timed,
data transfer included), and the cost of one deviance-function evaluation in lme4 mode beside
glmer's `devFunOnly` function (same lp0, same parameters; R's timed inside R). Cases: cbpp,
VerbAgg, and synthetic binary data with one factor of 5000 groups at each size. Then the log-log
slope of Python's time against N, the targets, and the peak RSS of a fresh process that builds
the largest synthetic data set and fits it.

Times are CPU seconds of this process (R is embedded in it) beside wall seconds: on a shared
machine wall time measures the neighbours. BLAS runs single-threaded on both sides, so CPU time
is work done; the ratios and the slope use CPU time.

    .venv/bin/python benchmarks/run.py                      # everything (tens of minutes)
    .venv/bin/python benchmarks/run.py --quick              # cbpp, VerbAgg, N = 10k, nAGQ = 1
    .venv/bin/python benchmarks/run.py --sizes 10000,100000 --nagq 1,25 --no-rss
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")      # before numpy and R load their BLAS

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import reference_impl as ri  # noqa: E402
from crosscheck.rbridge import RSession, RTimeout  # noqa: E402
from reference_impl.fit import versions  # noqa: E402

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
VERBAGG = "r2 ~ Anger + Gender + btype + situ + (1 | id)"
SYNTHETIC = "y ~ x + (1 | g)"
GROUPS = 5000
TARGET_RATIO_100K = 0.33           # python / glmer at N = 100k, nAGQ 1 and 25
TARGET_RATIO_VERBAGG = 1.0
TARGET_SLOPE = 1.1


def synthetic(N: int, groups: int = GROUPS, seed: int = 1) -> pd.DataFrame:
    """Binary y ~ x with a random intercept per group (sd 0.7), groups drawn uniformly."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, N)
    x = rng.normal(size=N)
    eta = -0.5 + 0.8 * x + rng.normal(scale=0.7, size=groups)[g]
    y = (rng.uniform(size=N) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical.from_codes(g, [f"g{j}" for j in range(groups)])})


@dataclass
class Case:
    name: str
    data: pd.DataFrame
    formula: str


@dataclass
class Timing:
    cpu: float
    wall: float

    def __str__(self) -> str:
        return f"{self.cpu:.2f} s ({self.wall:.2f})"


@dataclass
class Row:
    case: str
    N: int
    nAGQ: int
    python: Timing
    glmer: Timing | None           # None: timed out
    glmmtmb: Timing | None
    delta_m2ll: float | None       # python exact − glmer, −2 log L
    py_eval_ms: float              # CPU ms per lme4-mode evaluation
    r_eval_ms: float

    @property
    def ratio(self) -> float | None:
        return None if self.glmer is None else self.python.cpu / self.glmer.cpu


def clock(fn) -> tuple[Timing, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn()
    return Timing(time.process_time() - cpu, time.perf_counter() - wall), value


def fit_glmer(R: RSession, case: Case, nAGQ: int, timeout: float) -> tuple[Timing | None, dict | None]:
    try:
        t, rec = clock(lambda: R.fit(case.data, case.formula, "binomial", nAGQ=nAGQ, timeout=timeout))
    except RTimeout:
        return None, None
    if not rec["ok"]:
        raise RuntimeError(f"glmer failed on {case.name}: {rec['error']}")
    return t, rec["value"]


def fit_glmmtmb(R: RSession, case: Case, timeout: float) -> Timing | None:
    try:
        t, rec = clock(lambda: R.fit_glmmtmb(case.data, case.formula, "binomial", timeout=timeout))
    except RTimeout:
        return None
    if not rec["ok"]:
        raise RuntimeError(f"glmmTMB failed on {case.name}: {rec['error']}")
    return t


def per_evaluation(R: RSession, case: Case, nAGQ: int) -> tuple[float, float]:
    """CPU ms per deviance-function evaluation: lme4 mode here, glmer's devFunOnly in R, both
    from R's lp0 at R's stage-2 start."""
    reg = R.devfun(case.data, case.formula, "binomial", nAGQ=nAGQ)
    if not reg["ok"]:
        raise RuntimeError(f"devFunOnly failed on {case.name}: {reg['error']}")
    fid, lp0, start = reg["value"]["id"], reg["value"]["lp0"], np.asarray(reg["value"]["start"], float)
    reps = max(3, int(2e6 // len(case.data)))
    R.assign("cc_bench_pars", start)
    r_s = R.eval(f"local({{f <- cc_devfun_get('{fid}'); f(cc_bench_pars); "
                 f"sum(system.time(for (i in 1:{reps}) f(cc_bench_pars))[c('user.self', 'sys.self')])}})")
    R.devfun_drop(fid)
    f = ri.devfun(case.formula, case.data, nAGQ=nAGQ, lp0=lp0)
    f(start)
    py, _ = clock(lambda: [f(start) for _ in range(reps)])
    return 1e3 * py.cpu / reps, 1e3 * r_s / reps


def bench(R: RSession, case: Case, nAGQ: int, timeout: float, tmb: dict) -> Row:
    py, fit = clock(lambda: ri.glmer(case.formula, case.data, nAGQ=nAGQ, mode="exact"))
    glmer, rec = fit_glmer(R, case, nAGQ, timeout)
    key = (case.name, len(case.data))
    if nAGQ == 1 and key not in tmb:
        tmb[key] = fit_glmmtmb(R, case, timeout)
    py_ms, r_ms = per_evaluation(R, case, nAGQ)
    delta = None if rec is None else fit.objective - rec["minus2loglik_raw"]       # same scale (§4.3)
    row = Row(case.name, len(case.data), nAGQ, py, glmer, tmb.get(key) if nAGQ == 1 else None,
              delta, py_ms, r_ms)
    print(f"  {row.case:>10} N={row.N:<8} nAGQ={nAGQ:<3} python {py}   glmer {fmt(glmer, timeout)}   "
          f"per evaluation {py_ms:.2f} / {r_ms:.2f} ms", flush=True)
    return row


def fmt(t: Timing | None, timeout: float) -> str:
    return f"> {timeout:.0f} s wall" if t is None else str(t)


def table(rows: list[Row], timeout: float) -> str:
    out = ["| case | N | nAGQ | Python exact: CPU s (wall) | glmer: CPU s (wall) | Python / glmer (CPU) "
           "| glmmTMB: CPU s (wall) | Δ −2logLik (Python − glmer) | lme4-mode evaluation, CPU ms: Python / glmer |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}×"
        tmb = "—" if r.nAGQ != 1 else fmt(r.glmmtmb, timeout)
        delta = "—" if r.delta_m2ll is None else f"{r.delta_m2ll:.1e}"
        out.append(f"| {r.case} | {r.N:,} | {r.nAGQ} | {r.python} | {fmt(r.glmer, timeout)} | {ratio} "
                   f"| {tmb} | {delta} | {r.py_eval_ms:.2f} / {r.r_eval_ms:.2f} |")
    return "\n".join(out)


def slope(rows: list[Row], nAGQ: int) -> float | None:
    """d log(CPU time) / d log(N) of Python's synthetic fits (least squares)."""
    pts = [(r.N, r.python.cpu) for r in rows if r.case == "synthetic" and r.nAGQ == nAGQ]
    if len(pts) < 2:
        return None
    N, t = np.log(np.array(pts, float)).T
    return float(np.polyfit(N, t, 1)[0])


def targets(rows: list[Row], nagq: list[int]) -> list[str]:
    lines = []
    for r in rows:
        if r.ratio is not None and ((r.case == "synthetic" and r.N == 100_000 and r.nAGQ in (1, 25))
                                    or r.case == "VerbAgg"):
            goal = TARGET_RATIO_VERBAGG if r.case == "VerbAgg" else TARGET_RATIO_100K
            lines.append(f"{r.case} N={r.N:,} nAGQ={r.nAGQ}: {r.ratio:.2f}× glmer (target ≤ {goal}×) "
                         + ("met" if r.ratio <= goal else "MISSED"))
    for k in nagq:
        s = slope(rows, k)
        if s is not None:
            lines.append(f"log-log slope of time vs N, nAGQ={k}: {s:.2f} (target ≤ {TARGET_SLOPE}) "
                         + ("met" if s <= TARGET_SLOPE else "MISSED"))
    return lines


def peak_rss_mb(N: int, nAGQ: int) -> float:
    """Peak RSS of a fresh Python process that builds the synthetic data set and fits it.

    Linux carries the parent's high-water mark into a child's `ru_maxrss` (at fork and exec), so
    this runs before R and the data sets make this process large."""
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(N), str(nAGQ)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1]) / 1024.0


def rss_child(N: int, nAGQ: int) -> None:
    ri.glmer(SYNTHETIC, synthetic(N), nAGQ=nAGQ, mode="exact")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)          # KiB on Linux


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="cbpp, VerbAgg and N = 10k at nAGQ = 1; no RSS")
    p.add_argument("--sizes", default="10000,100000,1000000", help="synthetic N, comma-separated")
    p.add_argument("--nagq", default="1,9,25", help="nAGQ values, comma-separated")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before an R fit is abandoned")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS measurement")
    p.add_argument("--rss-child", nargs=2, type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rss_child:
        return rss_child(*a.rss_child)
    sizes = [10_000] if a.quick else [int(s) for s in a.sizes.split(",")]
    nagq = [1] if a.quick else [int(k) for k in a.nagq.split(",")]

    rss = [] if a.quick or a.no_rss else [(k, peak_rss_mb(max(sizes), k)) for k in nagq]
    R = RSession.get()
    cases = [Case("cbpp", R.dataset("lme4", "cbpp"), CBPP), Case("VerbAgg", R.dataset("lme4", "VerbAgg"), VERBAGG)]
    cases += [Case("synthetic", synthetic(N), SYNTHETIC) for N in sizes]
    R.fit(cases[0].data, CBPP, "binomial")                      # warm up both sides
    ri.glmer(CBPP, cases[0].data, mode="exact")
    print(f"versions: {R.versions()}, {versions()}; load average {os.getloadavg()}", flush=True)
    rows, tmb = [], {}
    for case in cases:
        for k in nagq:
            rows.append(bench(R, case, k, a.timeout, tmb))
    print(f"\nload average at the end: {os.getloadavg()}\n\n" + table(rows, a.timeout) + "\n")
    for line in targets(rows, nagq):
        print(line)
    for k, mb in rss:
        print(f"peak RSS, exact fit at N = {max(sizes):,}, nAGQ = {k}: {mb:.0f} MB")


if __name__ == "__main__":
    main()
