"""Stopping a command: SIGINT (Ctrl-C) and SIGTERM end it within a moment, whichever side is
computing, and a fit of the reference past its time limit ends as a timeout.

Python runs a signal handler only between bytecodes of the main thread, and a glmer fit keeps the
main thread inside R's C code, which looks only at its own flag (`R_interrupts_pending`). So
`stoppable()` installs a handler that raises KeyboardInterrupt while Python computes, and a
watcher thread, woken through `signal.set_wakeup_fd` the moment a signal arrives, that asks the
bridge to interrupt R (`rbridge.request_stop`); the bridge raises KeyboardInterrupt once R has
unwound. `time_limit(seconds)` raises `Timeout` in the calling thread when time is up
(PyThreadState_SetAsyncExc: any thread, between bytecodes, like a signal handler).
`exit_now(code)` ends the stopped command without the interpreter's teardown.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import sys
import threading
from typing import NoReturn

from . import rbridge

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Timeout(BaseException):
    """A computation ran past its time limit (a BaseException, like KeyboardInterrupt, so that no
    `except Exception` of the code it interrupts takes it for that code's own failure)."""


def _handler(signum, frame) -> None:
    rbridge.request_stop()
    if not rbridge.in_r():          # inside R (or R's callbacks into Python) the bridge raises it
        raise KeyboardInterrupt


def _watch(fd: int) -> None:
    while os.read(fd, 1):
        rbridge.request_stop()


@contextlib.contextmanager
def stoppable():
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, also while R computes."""
    read, write = os.pipe()
    os.set_blocking(write, False)
    previous = {s: signal.signal(s, _handler) for s in STOP_SIGNALS}
    old_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(read,), daemon=True, name="crosscheck-stop").start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, h in previous.items():
            signal.signal(s, h)
        os.close(write)             # the watcher reads end-of-file and ends


def exit_now(code: int) -> NoReturn:
    """End the process with `code` once the exit handlers have run (R's end of session, which
    removes its temporary directory; distributed's), without the interpreter's own teardown of
    the modules and objects of numpy, pandas, numba, Dask and R: after "interrupted" that took
    0.8 s of the 2 s a stop may take on a loaded machine (a Dask sweep, three busy loops beside it)."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise `Timeout` in this thread after `seconds` (None: no limit) unless the block ended."""
    if seconds is None:
        yield
        return
    tid = ctypes.c_ulong(threading.get_ident())
    guard = threading.Lock()
    state = {"done": False, "fired": False}

    def fire():
        with guard:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(tid, ctypes.py_object(Timeout))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with guard:
            state["done"] = True
            if state["fired"]:      # not yet delivered: withdrawn
                ctypes.pythonapi.PyThreadState_SetAsyncExc(tid, None)
