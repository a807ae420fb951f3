"""How a sweep's jobs run. An executor is a function from an iterable of `Job`s to an iterator of
results (`run_job`'s dicts), yielded as they finish, in any order:

    Executor = Callable[[Iterable[Job]], Iterator[dict]]

`serial` runs the jobs in this process. `SubprocessPool(workers, timeout)` runs them in worker
processes (`python -m crosscheck.executors`), each with its own embedded R, one job at a time,
jobs and results as JSON lines on the worker's stdin/stdout; a worker whose case runs past
`timeout` seconds is killed and replaced, and the case is reported as `timeout`; a worker that dies
is reported as `crash`. (ProcessPoolExecutor(max_tasks_per_child=…) deadlocks on Python 3.11, and
cannot kill one task.) Another executor, e.g. Dask's, has the same shape and calls `run_job`.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from reference_impl.errors import ModelError

from . import sources
from .result import HARNESS_ERROR
from .store import dumps


@dataclass(frozen=True)
class Job:
    """One case of a sweep: where it comes from, its nAGQ values and modes, and R's timeout."""

    key: str
    source: dict[str, Any]
    nagq: tuple[int, ...]
    modes: tuple[str, ...]
    r_timeout: float | None = None
    tol: tuple[str, ...] = ()
    noise: str = "failing"             # where the noise band is measured (`diagnose.NOISE`)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Job:
        return cls(doc["key"], doc["source"], tuple(doc["nagq"]), tuple(doc["modes"]),
                   doc["r_timeout"], tuple(doc["tol"]), doc.get("noise", "failing"))


Executor = Callable[[Iterable[Job]], Iterator[dict]]


def run_job(job: Job) -> dict[str, Any]:
    """Build the case and compare it: status `done` with the case file and the report, `error`
    when the case cannot be built (message), `harness-error` when the harness failed
    (traceback)."""
    from .compare import compare_case
    from .sides import RSide
    from .tolerances import Policy

    start = time.perf_counter()
    out: dict[str, Any] = {"key": job.key}
    try:
        case = sources.build(job.source, job.nagq)
        out["case"] = sources.document(case)
        report = compare_case(case, job.modes, Policy.load("pyproject.toml", list(job.tol)),
                              RSide(timeout=job.r_timeout), noise=job.noise)
        out.update(status="done", report=report.to_json())
    except ModelError as e:
        out.update(status="error", error=str(e))
    except Exception:                                 # noqa: BLE001 — recorded, the sweep goes on
        out.update(status=HARNESS_ERROR, error=traceback.format_exc())
    out["seconds"] = time.perf_counter() - start
    return out


def serial(jobs: Iterable[Job]) -> Iterator[dict[str, Any]]:
    for job in jobs:
        yield run_job(job)


class _Worker:
    def __init__(self, log: IO | None, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crosscheck.executors"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL, text=True,
            preexec_fn=_die_with_parent, env={**os.environ, **env} if env else None)
        self.job: Job | None = None
        self.started = 0.0

    def send(self, job: Job) -> None:
        self.job, self.started = job, time.monotonic()
        self.proc.stdin.write(json.dumps(job.to_json()) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class SubprocessPool:
    """`workers` worker processes; a case gets `timeout` seconds in all before its worker is
    killed. Worker stderr (R's console, warnings) goes to `log`; `env` is added to the workers'
    environment (e.g. `machine.SIMULATED_CPU`, another CPU path)."""

    def __init__(self, workers: int = 2, timeout: float = 600.0, log: Path | None = None,
                 env: dict[str, str] | None = None):
        self.workers, self.timeout, self.log, self.env = max(1, workers), timeout, log, env

    def __call__(self, jobs: Iterable[Job]) -> Iterator[dict[str, Any]]:
        pending = iter(jobs)
        log = open(self.log, "a") if self.log else None
        pool: list[_Worker] = []
        selector = selectors.DefaultSelector()
        done: list[dict[str, Any]] = []
        try:
            while True:
                for w in [w for w in pool if w.job is None]:
                    job = next(pending, None)
                    if job is None:
                        break
                    w.send(job)
                while len(pool) < self.workers and (job := next(pending, None)) is not None:
                    w = _Worker(log, self.env)
                    selector.register(w.proc.stdout, selectors.EVENT_READ, w)
                    pool.append(w)
                    w.send(job)
                yield from done         # once the idle workers have their next case: not idle while stored
                done = []
                busy = [w for w in pool if w.job is not None]
                if not busy:
                    return
                for key, _ in selector.select(timeout=1.0):
                    w = key.data
                    line = w.proc.stdout.readline()
                    job, w.job = w.job, None
                    if line.endswith("\n"):                 # a whole result (not cut by a kill)
                        done.append(json.loads(line))
                        continue
                    code = w.proc.wait()
                    if job is not None:                     # an idle worker had nothing in hand
                        done.append(failed(job, "crash", f"worker process died (exit code {code})", w.started))
                    self._replace(pool, selector, w)
                for w in [w for w in busy if w.job is not None
                          and time.monotonic() - w.started > self.timeout]:
                    job, w.job = w.job, None
                    done.append(failed(job, "timeout", f"case ran past {self.timeout:g} s; worker killed",
                                       w.started))
                    self._replace(pool, selector, w)
        finally:
            for w in pool:
                w.kill()
            selector.close()
            if log:
                log.close()

    @staticmethod
    def _replace(pool: list[_Worker], selector, w: _Worker) -> None:
        """Kill `w`; the next round starts a fresh worker in its place when there is work."""
        selector.unregister(w.proc.stdout)
        w.kill()
        pool.remove(w)


def failed(job: Job, status: str, error: str, started: float) -> dict[str, Any]:
    """The result of a case whose worker died or ran out of time (`started`: when it began,
    `time.monotonic()`), its case drawn again here where it is a generated one."""
    return {"key": job.key, "status": status, "error": error, "case": sources.document_of(job.source, job.nagq),
            "seconds": time.monotonic() - started}


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the sweep process dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)    # PR_SET_PDEATHSIG
    except OSError:
        pass


def worker_main() -> None:
    """Read jobs (JSON lines) on stdin, write one result line each on the original stdout; anything
    else written to stdout (R's console, print) goes to stderr."""
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        results.write(dumps(run_job(Job.from_json(json.loads(line)))) + "\n")
        results.flush()


if __name__ == "__main__":
    worker_main()
