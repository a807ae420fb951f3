"""Sweeps on Dask distributed (issue 5): the same results with 2 workers as with 1; a worker killed
mid-case, or a case past its deadline, costs only that case, also when several are, and the sweep
still stops within 2 s of SIGTERM; an existing scheduler can be used; a local cluster's workers run
without the statistical profiler.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest

from crosscheck import sources
from crosscheck.case import Case
from crosscheck.datasets import readme_example
from crosscheck.distributed import FREE_HTTP_PORT, WORKER_DIED, DaskExecutor, DaskRunner
from crosscheck.executors import failed
from crosscheck.store import Store, case_digest
from crosscheck.sweep import SweepConfig, start, sweep
from reliability import interrupted_cleanly

# A sweep past its case limit: six quick generated cases (0.1–0.5 s each on an idle machine without
# the noise band's refits) and two case files that hang by construction — FIFOs written once, for
# the check `run --case` makes before the sweep starts, and never again, so their workers block
# opening them. LIMIT is 20× the quick cases' time: who is killed does not depend on the machine's
# speed or load. The sweeps run numpy's PIRLS: the compiled kernels compile (or load from numba's
# cache) in each new worker's first case, seconds that would count against its limit.
LIMIT = 10.0
HUNG = ("hung0", "hung1")
QUICK = [f"gen:dask:{i}" for i in range(6)]
NUMPY_PIRLS = {**os.environ, "GLMM_REFERENCE_KERNELS": "numpy"}


def past_limit(tmp_path: Path) -> list[str]:
    """`crosscheck run`'s arguments for that sweep; each hung case file is fed once, from a thread."""
    doc = Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial", nagq=(0,)).to_json()
    files = []
    for name in HUNG:
        fifo = tmp_path / f"{name}.json"
        os.mkfifo(fifo)
        threading.Thread(target=fifo.write_text, args=(json.dumps(doc),), daemon=True).start()
        files += ["--case", str(fifo)]
    return ["run", "--cases", str(len(QUICK)), "--seed", "dask", "--max-groups", "6", "--datasets", "none",
            *files, "--nagq", "0", "--mode", "lme4", "--noise", "none", "--case-timeout", str(LIMIT),
            "--workers", "2", "--shrink", "0", "--store", str(tmp_path / "s.sqlite"),
            "--out", str(tmp_path / "out")]


# No noise band: glmer's results move with the R process (below), so on a Hessian that is noise
# (SEs of 1e3) one worker's row-order refits could cover the reference and another's not.
CONFIG = SweepConfig(cases=4, seed="dask", max_groups=6, datasets=("cbpp",), nagq=(0, 1),
                     modes=("lme4", "exact"), noise="none")


def fits(db: Path, run_id: str) -> dict[tuple, tuple]:
    """(case, nAGQ, mode) → (verdict of the stage where the fits part, python −2logLik, R −2logLik)."""
    out = {}
    with sqlite3.connect(db) as con:
        for key, report in con.execute("SELECT case_key, report_json FROM cases WHERE run_id = ?", (run_id,)):
            for r in json.loads(report)["results"]:
                out[key, r["nAGQ"], r["mode"]] = (r["verdict"], r["python"].get("minus2loglik"),
                                                  r["r"].get("minus2loglik"))
    return out


def holder_of(path: Path) -> int:
    """The process other than this one that has `path` open (a Dask worker: a grandchild)."""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if int(fd_dir.parent.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd) == str(path) for fd in fd_dir.iterdir()):
                return int(fd_dir.parent.name)
        except OSError:
            continue
    raise AssertionError(f"nobody has {path} open")


@pytest.mark.slow
def test_two_workers_give_the_same_results_as_one(tmp_path):
    results = []
    for workers in (1, 2):
        db = tmp_path / f"w{workers}.sqlite"
        run_id = start(Store(db), CONFIG)
        assert sweep(Store(db), run_id, CONFIG, DaskExecutor(workers=workers)) == 5
        results.append(fits(db, run_id))
    # The reference is bit-for-bit the same in any process; lme4 is not quite (R's −2logLik moved by
    # 1e-14 relative between two worker processes on the same case: spec §5.7's context effect).
    assert len(results[0]) >= 18 and results[0].keys() == results[1].keys()
    for key, (verdict, py, r) in results[0].items():
        assert results[1][key][:2] == (verdict, py), key
        assert results[1][key][2] == pytest.approx(r, rel=1e-9, nan_ok=True), key


@pytest.mark.slow
def test_a_worker_killed_mid_case_costs_only_that_case(tmp_path):
    """One case file is a FIFO, so its worker blocks reading it; SIGKILL that worker: the case is
    stored once as a crash (not retried), every other case once as done, and the sweep ends."""
    quick = Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial", nagq=(0,))
    files = [str(quick.save(tmp_path / f"quick{k}.json")) for k in range(3)]
    held = tmp_path / "held.json"
    os.mkfifo(held)
    config = SweepConfig(cases=0, datasets=(), files=(str(held), *files), nagq=(0,), modes=("lme4",))
    db = tmp_path / "store.sqlite"
    run_id = start(Store(db), config)
    errors = []

    def run():
        try:
            sweep(Store(db), run_id, config, DaskExecutor(workers=2, timeout=300))
        except BaseException:                                       # noqa: BLE001 — asserted below
            errors.append(traceback.format_exc())

    thread = threading.Thread(target=run)
    thread.start()
    writer = os.open(held, os.O_WRONLY)                              # its worker has opened it
    os.kill(holder_of(held), signal.SIGKILL)
    thread.join(300)
    os.close(writer)
    assert not thread.is_alive() and not errors, errors
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT case_key, status, error FROM cases WHERE run_id = ?",
                           (run_id,)).fetchall()
    by_key = {k: (s, e) for k, s, e in rows}
    assert len(rows) == 4 == len(by_key)
    assert by_key["file:held"][0] == "crash" and "worker died" in by_key["file:held"][1]
    assert all(by_key[f"file:quick{k}"] == ("done", None) for k in range(3))


@pytest.mark.slow
def test_a_case_past_its_deadline_ends_its_worker_and_the_sweep_goes_on(tmp_path):
    """One worker: the quick case waits on it behind the hung one (`AHEAD`), dies with it without
    having begun, and is handed out again to the restarted worker: done, not a crash."""
    quick = Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial", nagq=(0,))
    held = tmp_path / "hung.json"
    os.mkfifo(held)                                                  # nobody writes: it hangs
    config = SweepConfig(cases=0, datasets=(), files=(str(held), str(quick.save(tmp_path / "q.json"))),
                         nagq=(0,), modes=("lme4",))
    db = tmp_path / "store.sqlite"
    run_id = start(Store(db), config)
    t0 = time.monotonic()
    assert sweep(Store(db), run_id, config, DaskExecutor(workers=1, timeout=8)) == 2
    assert time.monotonic() - t0 < 120
    with sqlite3.connect(db) as con:
        rows = dict(con.execute("SELECT case_key, status FROM cases WHERE run_id = ?", (run_id,)))
    assert rows == {"file:hung": "crash", "file:q": "done"}


@pytest.mark.slow
def test_a_local_clusters_workers_run_without_the_profiler():
    """distributed's statistical profiler samples the running case's stack every 10 ms under the
    GIL, for a dashboard a sweep never shows: a local cluster's workers have it off."""
    import dask

    with DaskRunner(workers=1) as runner:
        enabled = runner.client.run(lambda: dask.config.get("distributed.worker.profile.enabled"))
    assert list(enabled.values()) == [False]


@pytest.mark.slow
def test_run_on_an_existing_scheduler(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1", scheduler_kwargs=FREE_HTTP_PORT) as cluster:
        p = subprocess.run([sys.executable, "-m", "crosscheck.cli", "run", "--scheduler",
                            cluster.scheduler_address, "--cases", "1", "--seed", "sched",
                            "--max-groups", "5", "--datasets", "none", "--nagq", "0",
                            "--mode", "lme4", "--shrink", "0", "--store", str(tmp_path / "s.sqlite"),
                            "--out", str(tmp_path / "out")],
                           capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    with sqlite3.connect(tmp_path / "s.sqlite") as con:
        assert con.execute("SELECT count(*), min(status) FROM cases").fetchone() == (1, "done")


def cases(db: Path) -> dict[str, tuple[str, str | None, float]]:
    """case key → (status, error, seconds) of the store's one run."""
    with sqlite3.connect(db, timeout=60) as con:
        return {k: (s, e, t) for k, s, e, t in
                con.execute("SELECT case_key, status, error, seconds FROM cases")}


@pytest.mark.slow
def test_cases_past_their_limit_are_killed_and_the_rest_run_on_restarted_workers(tmp_path):
    """Each case past its limit kills its worker and is stored as a crash within a few seconds of
    its limit; the nannies restart the workers, the other cases run, the run finishes. Before, a
    restarted worker started R (a worker plugin) within its nanny's 5 s (death_timeout): under load
    it did not, the nannies gave up, and the sweep waited forever for workers."""
    p = subprocess.run([sys.executable, "-m", "crosscheck.cli", *past_limit(tmp_path)],
                       capture_output=True, text=True, timeout=240, env=NUMPY_PIRLS)
    assert p.returncode == 0, p.stderr
    stored = cases(tmp_path / "s.sqlite")
    assert stored.keys() == {*QUICK, *(f"file:{name}" for name in HUNG)}
    for name in HUNG:
        status, error, seconds = stored[f"file:{name}"]
        assert status == "crash" and f"time limit of {LIMIT} s" in error, stored
        assert LIMIT <= seconds < LIMIT + 3, stored
    assert all(stored[k][:2] == ("done", None) for k in QUICK), stored


def test_a_generated_case_whose_worker_died_is_stored_as_drawn(tmp_path):
    """A killed generated case is drawn again in the sweep's process: its row has the name, digest
    and data the worker would have stored."""
    job = SweepConfig(cases=1, seed="dask", max_groups=6, datasets=(), nagq=(0,)).jobs()[0]
    store = Store(tmp_path / "s.sqlite")
    run_id = start(store, SweepConfig())
    store.add(run_id, failed(job, "crash", WORKER_DIED.format(LIMIT), time.monotonic()))
    drawn = sources.document(sources.build(job.source, job.nagq))
    with sqlite3.connect(tmp_path / "s.sqlite") as con:
        row = con.execute("SELECT case_key, name, digest, case_json FROM cases").fetchone()
    assert row[:3] == (job.key, job.key, case_digest(drawn)) and json.loads(row[3]) == drawn, row[:3]


@pytest.mark.slow
def test_sigterm_while_a_killed_worker_restarts(tmp_path):
    """SIGTERM once a case past its limit is stored (its worker restarting): exit 130 within 2 s,
    the stored cases kept, the run `interrupted`."""
    db = tmp_path / "s.sqlite"
    p = subprocess.Popen([sys.executable, "-m", "crosscheck.cli", *past_limit(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=NUMPY_PIRLS)
    assert p.stderr.readline().startswith("run ")                   # the run is in the store
    deadline = time.monotonic() + 120
    while "crash" not in {status for status, _, _ in cases(db).values()}:
        assert time.monotonic() < deadline and p.poll() is None, p.communicate()
        time.sleep(0.05)
    kept = cases(db)
    interrupted_cleanly(p, signal.SIGTERM)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT status FROM runs").fetchone() == ("interrupted",)
    assert cases(db).items() >= kept.items()
