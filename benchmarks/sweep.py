"""Sweep throughput on Dask (issue 5): harness overhead against the sum of fit times, and 2 workers
against 1, measured in one run on the same generated cases.

    .venv/bin/python benchmarks/sweep.py [--cases 24] [--seed bench]

For each worker count the same cases run through `crosscheck.sweep` on a fresh `LocalCluster`
(cluster start-up excluded: it is paid once per sweep, not per case). Per case the harness records
`r_fit` and `python_fit` (compare.py timings); their sum over all cases, divided by the worker
count, is the least wall time a perfect harness could take. The noise band (`noise` timings: the
row-order refits and perturbed evaluations of comparisons that would otherwise fail) is a
measurement of its own, reported on its own line and taken out of the wall time. Overhead =
(wall − band) / that − 1, i.e. the diagnosis (R's deviance function, the evaluations at both
optima), data transfer, Dask and the SQLite store. Throughput ratio = wall(1 worker) / wall(2
workers). A last row runs the same cases in this process, one after another (`executors.serial`):
the harness without Dask.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from crosscheck.distributed import DaskRunner  # noqa: E402
from crosscheck.executors import run_job, serial  # noqa: E402
from crosscheck.store import Store  # noqa: E402
from crosscheck.sweep import SweepConfig, start  # noqa: E402


def timed_sweep(config: SweepConfig, workers: int) -> dict[str, float]:
    """Wall time of the sweep on a started cluster of `workers` (0: in this process, one case after
    another, no Dask: `executors.serial`), and the summed fit and case times."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "results.sqlite")
        run_id = start(store, config)
        with DaskRunner(workers=workers) if workers else contextlib.nullcontext() as runner:
            jobs = config.jobs()
            if runner is None:
                run_job(jobs[0])                                                # warm: R and imports
                results = serial(jobs)
            else:
                list(runner.imap_unordered(run_job, jobs[:workers]))
                results = _results(runner.imap_unordered(run_job, jobs))
            t0 = time.perf_counter()
            fits = cases = noise = 0.0
            for result in results:
                store.add(run_id, result)
                cases += result["seconds"]
                for r in (result.get("report") or {}).get("results", []):
                    fits += r["timings"]["python_fit"]
                    noise += r["timings"].get("noise", 0.0)
                    fits += r["timings"]["r_fit"] / sum(1 for q in result["report"]["results"]
                                                        if q["nAGQ"] == r["nAGQ"])
            wall = time.perf_counter() - t0
        store.close()
    return {"workers": workers, "wall": wall, "fits": fits, "cases": cases, "noise": noise,
            "overhead": (wall * max(workers, 1) - noise) / fits - 1.0}


def _results(finished):
    for _, result, error, _ in finished:
        if error is not None:
            raise RuntimeError(error)
        yield result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--seed", default="bench")
    ap.add_argument("--max-groups", type=int, default=30)
    args = ap.parse_args()
    config = SweepConfig(cases=args.cases, seed=args.seed, max_groups=args.max_groups, datasets=(),
                         nagq=(0, 1), modes=("lme4", "exact"))
    rows = [timed_sweep(config, w) for w in (1, 2, 0)]       # this process last: R starts in it
    print(f"{args.cases} generated cases (seed {args.seed!r}, up to {args.max_groups} groups) "
          f"× nAGQ 0,1 × lme4, exact; load average {os.getloadavg()[0]:.2f}")
    print(f"{'workers':>7} {'wall s':>8} {'Σ fits s':>9} {'Σ cases s':>9} {'Σ noise band s':>14} {'overhead':>9}")
    for r in rows:
        print(f"{r['workers'] or 'serial':>7} {r['wall']:8.2f} {r['fits']:9.2f} {r['cases']:9.2f} {r['noise']:14.2f} "
              f"{100 * r['overhead']:8.1f}%")
    ratio = rows[0]["wall"] / rows[1]["wall"]
    print(f"throughput, 2 workers / 1: {ratio:.2f}x (target >= 1.8x); "
          f"overhead with 1 worker, the noise band apart: {100 * rows[0]['overhead']:.1f}% (target <= 10%); "
          f"noise band: {100 * rows[0]['noise'] / rows[0]['fits']:.1f}% of the fit time")
    print(json.dumps({"rows": rows, "ratio": ratio}))


if __name__ == "__main__":
    main()
