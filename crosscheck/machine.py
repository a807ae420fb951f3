"""The machine behind a result: what decides the last bits of the reference's numbers.

The same code rounds differently on another CPU path: numpy's SIMD kernels (its AVX-512 exp and
log differ from glibc's by 1 ulp in about a quarter of values), the OpenBLAS kernel numpy picks
(`OPENBLAS_CORETYPE`), glibc's libm. `fingerprint()` records them in every result's versions and in
the gate's baseline; `SIMULATED_CPU` is the environment that simulates another machine here.
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
import platform
from pathlib import Path

import numpy as np

# the environment variables that choose a CPU path, recorded where set
CPU_PATH_ENV = ("NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE")

# numpy's AVX-512 kernels off: a different CPU path on a machine that has them, a no-op elsewhere.
SIMULATED_CPU = {"NPY_DISABLE_CPU_FEATURES":
                 "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL"}


@functools.cache
def fingerprint() -> dict[str, str]:
    """CPU model, numpy's active SIMD dispatch targets, OpenBLAS's core, glibc, and whether numpy's
    exp/log round as glibc's."""
    from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return {"cpu": _cpu_model(), "numpy SIMD": " ".join(f for f in __cpu_dispatch__ if __cpu_features__.get(f)),
            "OpenBLAS core": _openblas_core(), "glibc": " ".join(platform.libc_ver()),
            "numpy exp/log": numpy_exp_log(),
            **{k: os.environ[k] for k in CPU_PATH_ENV if k in os.environ}}


def of(versions: dict[str, str]) -> dict[str, str]:
    """The machine fingerprint within a result's versions (which also name package versions)."""
    keys = {*fingerprint(), *CPU_PATH_ENV}
    return {k: v for k, v in versions.items() if k in keys}


def numpy_exp_log() -> str:
    """Whether numpy's float64 exp and log round as glibc's (R's and lme4's) do on this machine."""
    x = np.linspace(-30.0, 30.0, 2001)
    same = (np.array_equal(np.exp(x), [math.exp(v) for v in x])
            and np.array_equal(np.log(np.abs(x) + 0.5), [math.log(abs(v) + 0.5) for v in x]))
    return "as libm" if same else "SIMD, 1 ulp from libm"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _openblas_core() -> str:
    """The kernel OpenBLAS chose (numpy's bundled build), from `openblas_get_corename`."""
    np.dot(np.ones((2, 2)), np.ones((2, 2)))            # BLAS is loaded by now
    try:
        maps = Path("/proc/self/maps").read_text().split()
    except OSError:
        return "unknown"
    for path in sorted({m for m in maps if "openblas" in m.lower() and ".so" in m}):
        lib = ctypes.CDLL(path)
        for symbol in ("openblas_get_corename64_", "openblas_get_corename"):
            if hasattr(lib, symbol):
                get = getattr(lib, symbol)
                get.restype = ctypes.c_char_p
                return get().decode()
    return "unknown"
