"""Sweeps on Dask distributed: one process and one thread per worker, R started once per worker.

`DaskRunner(workers=N)` starts a `LocalCluster` (processes, `threads_per_worker=1`: R is single
threaded and one embedded R lives in each worker process); `DaskRunner(scheduler="tcp://…")`
joins an existing cluster. `imap_unordered(fn, items)` yields `(item, result, error, started)`
as cases finish, so the caller can store each result at once.

A worker gets cases once R runs in it (`_prepare`: neither R's start nor the import of `fn`
counts against a case's time limit): one per thread and AHEAD more, queued on the worker behind
the running ones, so that the next begins as one ends (handing it over only then cost a round
trip through the scheduler, ~12 ms, per case). A worker that dies takes every case assigned to
it: those that had not begun (a case of that worker was ahead of them) are handed out again,
which is no retry of a case that may have killed its worker. Work stealing is off in a local
cluster, so a case stays on the worker it was handed to (on an existing cluster a case that died
on another worker counts as begun). An item is taken from `items` the moment it is handed to
a worker. The loop wakes when a case finishes and refills the worker before the caller stores
the finished one, so workers do not wait on the store (with a fixed poll and the store first
they idled ~0.2 s per case: 28 % harness overhead, one worker, `benchmarks/sweep.py`'s cases).

Faults cost one case, never the sweep: a worker that dies mid-case (SIGKILL, a crash inside R) is
not retried with the same case (`allowed-failures` = 0) and the case comes back with an error; a
case still running `timeout` seconds after it started ends its own worker process (a watchdog
thread in the worker) and comes back with an error that says so. The nanny starts a fresh
process, which gets cases once R runs in it. Everything else keeps running; a cluster without a
worker able to take cases for RESTART_TIMEOUT seconds ends the sweep with an error.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

WORKER_DIED = "worker died while running this case (a crash, a kill, or its time limit of {} s)"
RESTART_TIMEOUT = 120.0    # seconds a worker process may take to start (the nannies' death_timeout)
POLL = 0.1                 # seconds between looks at the cases in flight and the workers
# cases handed to a worker beyond its threads, queued there behind the running ones: the next
# begins as one ends, without the ~12 ms round trip through the scheduler (benchmarks/sweep.py)
AHEAD = 1
CLOSE_TIMEOUT = 1.0        # seconds the cluster may take to close once its workers are killed
# the scheduler's HTTP server (health checks; no dashboard) on a free port: on its default, 8787,
# two sweeps at once warned "Port 8787 is already in use"
FREE_HTTP_PORT = {"dashboard_address": ":0"}
_END = object()


def _prepare(fn: Callable[[Any], Any]) -> None:
    """Start the embedded R (and source r_scripts/) in this worker process; `fn` arrives imported,
    with its module. rpy2 warns that R, started outside the main thread, cannot take Ctrl-C: a
    worker is never interrupted, only killed."""
    from .rbridge import RSession

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "R is not initialized by the main thread")
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

        # no retry of a killer; a case queued behind another stays on its worker (`_finished`);
        # no statistical profiler in a local cluster's workers: it samples the running case's stack
        # every 10 ms under the GIL, for a dashboard a sweep does not show
        dask.config.set({"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.work-stealing": False,
                         "distributed.worker.profile.enabled": False})
        if self.scheduler is None:
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                        processes=True, dashboard_address=None,
                                        worker_dashboard_address=None, host="127.0.0.1", silence_logs=50,
                                        death_timeout=RESTART_TIMEOUT, scheduler_kwargs=FREE_HTTP_PORT)
            self.cluster.shutdown_on_close = False      # closed by __exit__, not again at exit (10 s)
            self.client = Client(self.cluster)
        else:
            self.client = Client(self.scheduler)
        return self

    def __exit__(self, *exc) -> None:
        """Kill a local cluster's worker processes, then close: every result was delivered (or the
        sweep was interrupted: its finished cases are stored), and a nanny asked to close waits
        4 s for a busy worker, fails on one it is restarting and waits forever on one it failed
        to restart. Worker processes die with this process anyway (distributed's parent pipe)."""
        if self.cluster is not None:
            # the comms of the killed workers close under distributed: its logs of that (with
            # tracebacks, at INFO) are the expected end, not news
            logging.getLogger("distributed").setLevel(logging.CRITICAL)
            self._kill_workers()
        if self.client is not None:
            self.client.close(timeout=CLOSE_TIMEOUT)
        if self.cluster is not None:
            try:
                self.cluster.close(timeout=CLOSE_TIMEOUT)
            except (AssertionError, RuntimeError, TimeoutError):
                pass

    def _kill_workers(self) -> None:
        """SIGKILL the local cluster's worker processes, their nannies told not to restart them."""
        for nanny in self.cluster.workers.values():
            nanny.close_gracefully(reason="crosscheck sweep over")
            if nanny.pid:
                os.kill(nanny.pid, signal.SIGKILL)

    def imap_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]
                       ) -> Iterator[tuple[Any, Any, str | None, float]]:
        """`fn(item)` for every item on the cluster; `(item, result, None, started)` or `(item,
        None, error, started)` in the order they finish, `started` the `time.monotonic()` at which
        the item's case began, as seen from here. `fn` must be importable (a module-level function)."""
        from distributed import KilledWorker

        pending = iter(items)
        retry: deque = deque()                     # items whose worker died before they began
        exhausted = False
        cases: dict[Any, tuple[Any, str]] = {}     # future → (item, its worker's address)
        lines: dict[str, list] = {}                # address → its cases, in the order handed
        started: dict[Any, float] = {}             # future → when its case began
        starting: dict[Any, str] = {}              # future of `_prepare` → worker address
        ready: set[str] = set()                    # workers with R running
        last_ready = time.monotonic()
        while cases or retry or not exhausted:
            threads = self.client.nthreads()       # the workers alive now
            for future in [f for f in starting if f.done()]:
                address = starting.pop(future)
                if future.status == "finished":
                    ready.add(address)
                elif not isinstance(future.exception(), KilledWorker):
                    raise RuntimeError(f"Dask worker {address} cannot start R or import "
                                       f"{fn.__name__}: {future.exception()!r}")
            ready &= threads.keys()
            for address in threads.keys() - ready - set(starting.values()):
                starting[self._submit(address, _prepare, fn)] = address
            if ready:
                last_ready = time.monotonic()
            elif time.monotonic() - last_ready > RESTART_TIMEOUT:
                raise RuntimeError(f"no Dask worker able to take cases for {RESTART_TIMEOUT:g} s")
            finished = self._finished(cases, lines, started, retry)
            for address in [a for a, line in lines.items() if a not in threads and all(f.done() for f in line)]:
                del lines[address]                 # a dead worker's, all resolved
            busy = Counter(address for _, address in cases.values())
            for address in ready:             # refilled before the caller stores what finished
                while busy[address] < threads[address] + AHEAD and (retry or not exhausted):
                    item = retry.popleft() if retry else next(pending, _END)
                    exhausted = exhausted or item is _END
                    if item is _END:
                        break
                    future = self._submit(address, _with_deadline, fn, item, self.timeout)
                    cases[future] = item, address
                    line = lines.setdefault(address, [])
                    if all(f.done() for f in line):
                        started[future] = time.monotonic()
                    line.append(future)
                    busy[address] += 1
            for future, item in finished:
                yield (item, *self._outcome(future), started.pop(future))
            self._wait([*cases, *starting])

    @staticmethod
    def _finished(cases: dict, lines: dict, started: dict, retry: deque) -> list:
        """The cases done since the last look, (future, item), taken out of `cases`. A worker runs
        its cases one after another in the order handed, so a case its dying worker took with it
        while another case of that worker was ahead of it had not begun: it goes to `retry`, not
        into the list. A case done otherwise lets the next one of its worker begin."""
        from distributed import KilledWorker

        done = [f for f in cases if f.done()]
        killed = {f for f in done if f.status == "error" and isinstance(f.exception(), KilledWorker)}
        out = []
        for future in sorted(done, key=lambda f: f in killed):      # the others leave their lines first
            item, address = cases.pop(future)
            line = lines[address]
            if future in killed:
                if line.index(future) > 0 and future.exception().last_worker.address == address:
                    started.pop(future, None)
                    retry.append(item)
                    continue
                started.setdefault(future, time.monotonic())
            else:
                started.setdefault(future, time.monotonic())
                line.remove(future)
                nxt = next((f for f in line if not f.done()), None)
                if nxt is not None:
                    started.setdefault(nxt, time.monotonic())
            out.append((future, item))
        return out

    @staticmethod
    def _wait(futures: list) -> None:
        """Until the first of `futures` is done, at most POLL seconds (the workers alive may change)."""
        from distributed import wait

        if not futures:
            time.sleep(POLL)
            return
        try:
            wait(futures, timeout=POLL, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass

    def _submit(self, address: str, fn: Callable, *args):
        """`fn(*args)` on the worker at `address` (elsewhere should it die before it starts)."""
        return self.client.submit(fn, *args, workers=[address], allow_other_workers=True, pure=False)

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
    A case whose worker died or ran out of time is a `crash` result (its seconds counted from when
    it began); the sweep goes on."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None,
                 timeout: float | None = None):
        self.runner = DaskRunner(workers, scheduler, timeout)

    def __call__(self, jobs) -> Iterator[dict[str, Any]]:
        from .executors import failed, run_job

        with self.runner as runner:
            for job, result, error, started in runner.imap_unordered(run_job, jobs):
                yield result if error is None else failed(job, "crash", error, started)
