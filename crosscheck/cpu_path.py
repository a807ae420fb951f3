"""The reference on another CPU path, for the noise band: the same fit and the same deviance-function
evaluations in a child process whose numpy runs without its AVX-512 kernels
(`machine.SIMULATED_CPU`). Only where this machine has them: elsewhere the child would compute
the same bits.

The child is this module (`python -m crosscheck.cpu_path`), one per comparison of a case: the
parent's own objects go in and out pickled over its stdin and stdout (nothing from a case file is
unpickled: the case is already a `Case` in the parent).
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np

from .case import Case
from .machine import SIMULATED_CPU, fingerprint
from .result import FitResult


def available() -> bool:
    """Whether numpy uses AVX-512 kernels here (so that turning them off is another CPU path)."""
    return "AVX512F" in fingerprint()["numpy SIMD"].split()


class CpuPath:
    """A child process (started at the first request, ended by `close`) that fits the reference
    and evaluates its deviance function with numpy's AVX-512 kernels off."""

    def __init__(self):
        self._child: subprocess.Popen | None = None

    def refit(self, case: Case, nAGQ: int, mode: str, saturated: float | None,
              points: list[np.ndarray] | None, lp0: np.ndarray | None) -> tuple[FitResult, list]:
        """The reference's fit of `case` and its evaluations at `points` (from `lp0`)."""
        if self._child is None:
            self._child = subprocess.Popen([sys.executable, "-m", "crosscheck.cpu_path"],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           env={**os.environ, **SIMULATED_CPU})
        pickle.dump((case, nAGQ, mode, saturated, points, lp0), self._child.stdin)
        self._child.stdin.flush()
        return pickle.load(self._child.stdout)

    def close(self) -> None:
        if self._child is not None:
            self._child.stdin.close()
            self._child.wait(10)
            self._child.stdout.close()
            self._child = None


def _child() -> None:
    from .sides import PythonSide

    while True:
        try:
            case, nAGQ, mode, saturated, points, lp0 = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        side = PythonSide(mode)
        fit = side.fit(case, nAGQ, saturated)
        evaluations = side.evaluate(case, nAGQ, points, lp0) if points is not None else []
        pickle.dump((fit, evaluations), sys.stdout.buffer)
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    _child()
