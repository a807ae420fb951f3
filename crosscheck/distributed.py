"""Sweeps on Dask distributed: one process and one thread per worker, R started once per worker.

`DaskRunner(workers=N)` starts a `LocalCluster` (processes, `threads_per_worker=1`: R is single
threaded and one embedded R lives in each worker process); `DaskRunner(scheduler="tcp://…")`
joins an existing cluster. `imap_unordered(fn, items)` yields `(item, result, error)` as cases
finish, so the caller can store each result at once.

Faults cost one case, never the sweep: a worker that dies mid-case (SIGKILL, a crash inside R) is
not retried with the same case (`allowed-failures` = 0) and the case comes back with an error; a
case still running `timeout` seconds after it started ends its own worker process (a watchdog
thread in the worker; the nanny starts a fresh process, and R with it) and comes back with an
error that says so. Everything else keeps running.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

WORKER_DIED = "worker died while running this case (a crash, a kill, or its time limit of {} s)"
DEATH_TIMEOUT = 5.0        # seconds a worker outlives a scheduler it cannot reach (a killed sweep)


class StartR:
    """Worker plugin: start the embedded R (and source r_scripts/) when the worker starts, so the
    first case does not pay for it and a broken R installation fails the worker, not a case."""

    name = "crosscheck-start-r"

    def setup(self, worker) -> None:
        from .rbridge import RSession

        RSession.get()


def _with_deadline(fn: Callable[[Any], Any], item: Any, timeout: float | None):
    """Run `fn(item)` in a worker; past `timeout` seconds the worker process ends itself."""
    if timeout is None:
        return fn(item)
    watchdog = threading.Timer(timeout, os.kill, (os.getpid(), signal.SIGKILL))
    watchdog.daemon = True
    watchdog.start()
    try:
        return fn(item)
    finally:
        watchdog.cancel()


class DaskRunner:
    """A Dask cluster for `imap_unordered`; use as a context manager."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None,
                 timeout: float | None = None):
        if (workers is None) == (scheduler is None):
            raise ValueError("give exactly one of workers (a local cluster) and scheduler")
        self.workers, self.scheduler, self.timeout = workers, scheduler, timeout
        self.client = self.cluster = None

    def __enter__(self) -> DaskRunner:
        import dask
        from distributed import Client, LocalCluster
        from distributed.diagnostics.plugin import WorkerPlugin

        dask.config.set({"distributed.scheduler.allowed-failures": 0})   # no retry of a killer
        if self.scheduler is None:
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                        processes=True, dashboard_address=None,
                                        worker_dashboard_address=None, host="127.0.0.1", silence_logs=50,
                                        death_timeout=DEATH_TIMEOUT)
            self.client = Client(self.cluster)
        else:
            self.client = Client(self.scheduler)
        self.client.register_plugin(type("StartRPlugin", (StartR, WorkerPlugin), {})())
        return self

    def __exit__(self, *exc) -> None:
        """Close the cluster once its nannies have restarted any killed worker: closing a nanny
        mid-restart fails inside distributed (`assert self.status in …`), after every result was
        already delivered. Workers that survive a failed close exit by DEATH_TIMEOUT. Interrupted
        (KeyboardInterrupt: Ctrl-C, SIGTERM), the workers are killed first."""
        interrupted = exc[0] is not None and not issubclass(exc[0], Exception)
        if self.cluster is not None:
            if interrupted:             # a nanny asks a busy worker to stop and waits 4 s
                self._kill_workers()
            else:
                try:
                    self.client.wait_for_workers(self.workers, timeout=30)
                except TimeoutError:
                    pass
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            try:
                self.cluster.close()
            except (AssertionError, RuntimeError, TimeoutError):
                pass

    def _kill_workers(self) -> None:
        """SIGKILL the local cluster's worker processes, their nannies told not to restart them
        (their finished cases are stored; the running ones are lost, as on SIGKILL)."""
        for nanny in self.cluster.workers.values():
            nanny.close_gracefully(reason="crosscheck interrupted")
            if nanny.pid:
                os.kill(nanny.pid, signal.SIGKILL)

    def imap_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]
                       ) -> Iterator[tuple[Any, Any, str | None]]:
        """`fn(item)` for every item on the cluster; `(item, result, None)` or `(item, None,
        error)` in the order they finish. `fn` must be importable (a module-level function)."""
        from distributed import as_completed

        pending = iter(items)
        item_of = {}

        def submit_next(running: as_completed) -> None:
            item = next(pending, None)
            if item is not None:
                future = self.client.submit(_with_deadline, fn, item, self.timeout, pure=False)
                item_of[future] = item
                running.add(future)

        # As many cases in flight as the cluster has threads: a worker never holds a case queued
        # behind its running one, so a worker that dies takes only the running case with it
        # (the scheduler counts every task assigned to a dead worker as a suspect).
        running = as_completed([])
        for _ in range(max(1, sum(self.client.nthreads().values()))):
            submit_next(running)
        for future in running:
            yield item_of.pop(future), *self._outcome(future)
            submit_next(running)

    def _outcome(self, future) -> tuple[Any, str | None]:
        from distributed import KilledWorker

        try:
            return future.result(), None
        except KilledWorker:
            return None, WORKER_DIED.format(self.timeout)
        except Exception as e:                      # noqa: BLE001 — the case's own failure
            return None, f"{type(e).__name__}: {e}"


class DaskExecutor:
    """A sweep executor (crosscheck.executors: jobs in, `run_job` results out as they finish) on
    a Dask cluster: `DaskExecutor(workers=N)` local, `DaskExecutor(scheduler=ADDRESS)` existing.
    A case whose worker died or ran out of time is a `crash` result; the sweep goes on."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None,
                 timeout: float | None = None):
        self.runner = DaskRunner(workers, scheduler, timeout)

    def __call__(self, jobs) -> Iterator[dict[str, Any]]:
        from .executors import run_job

        started = time.monotonic()
        with self.runner as runner:
            for job, result, error in runner.imap_unordered(run_job, jobs):
                yield result if error is None else {
                    "key": job.key, "status": "crash", "error": error,
                    "seconds": time.monotonic() - started}
