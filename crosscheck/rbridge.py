"""One embedded R per process, and the only place rpy2 objects exist.

`RSession.get()` starts R once, loads lme4 and sources every `r_scripts/*.R`. Every call into R
holds one process-wide lock (R is single threaded) and runs inside
`rpy2.robjects.conversion.localconverter` (conversion rules live in a ContextVar, so threads other
than the main one would otherwise see none). Values are converted at once, in both directions.

R → Python (`_to_python`; a call's value crosses as the four vectors of bridge.R's `cc_flat`, read
back by `_Flat` into the same values, or node by node where it has no such form):

===================================  ==============================================================
R                                    Python
===================================  ==============================================================
NULL                                 None
numeric / integer / logical vector   numpy float64 / int64 / bool array (integer or logical
                                     containing NA → float64 with nan)
character vector                     list[str] (NA → None)
unnamed vector of length 1 without   Python scalar (float, int, bool, str; NA → nan, or None for
attributes                           a string): the only place scalars appear. In R, ``I(x)``
                                     keeps a length-1 vector a vector (the R scripts do this for
                                     every vector-valued field)
named atomic vector                  dict name → scalar
list                                 dict (named) or list (unnamed), recursively
factor                               pandas.Categorical with the factor's levels, in order
matrix / array                       2-D / n-D numpy array (dimnames dropped)
data.frame                           pandas.DataFrame (character row names become the index)
Matrix package object                scipy.sparse.csc_matrix
===================================  ==============================================================

Python → R (`_to_r`): None → NULL; bool/int/float/str → length-1 vector; dict → named list; list or
tuple → atomic vector if its values share one type, else list; numpy arrays → vectors, matrices or
arrays; pandas Series/Categorical → vector/factor; DataFrame → data.frame whose factor columns
have exactly the categories (as strings) as levels, in order. Column classes follow `r_type` and are
read back from R and checked (`check_column_types`) on every transfer.

Formulas cross as strings. glmer.R refuses anything but a single two-sided `~` call, but the model
frame still evaluates the calls inside it, so `fit`, `fit_glmmtmb` and `devfun` check every formula
against ``reference_impl.formula``'s grammar first (FormulaError) and R never sees one outside it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

R_SCRIPTS = Path(__file__).resolve().parent.parent / "r_scripts"
_INT_MAX = 2**31 - 1


class RBridgeError(RuntimeError):
    """The bridge itself failed: R could not run the code, or a value could not cross."""


class RTimeout(RBridgeError):
    """An R call was interrupted because it ran past its timeout; R remains usable."""


# --------------------------------------------------------------------------------------------
# R → Python

def _attr(x, name: str):
    """Attribute `name` of an rinterface object, or None (asked directly: listing the attributes
    first took 3 times as long, 4 % of a sweep's small cases)."""
    import rpy2.rinterface as ri

    if x is ri.NULL:
        return None
    try:
        return x.do_slot(name)
    except LookupError:
        return None


def _strings(x) -> list[str | None]:
    import rpy2.rinterface as ri

    return [None if s is ri.NA_Character else str(s) for s in x]


def _buffer(x, dtype) -> np.ndarray:
    """The numbers of a numeric, integer or logical R vector (rpy2's memoryview refuses length 0:
    `fixef` of a model without fixed effects)."""
    return np.array(x.memoryview(), dtype=dtype) if len(x) else np.empty(0, dtype)


def _vector(x) -> np.ndarray | list:
    """An atomic R vector as a 1-D numpy array (list of str for character)."""
    import rpy2.rinterface as ri

    if x.typeof == ri.RTYPES.STRSXP:
        return _strings(x)
    if x.typeof == ri.RTYPES.REALSXP:
        return _buffer(x, np.float64)
    if x.typeof == ri.RTYPES.CPLXSXP:
        return np.array(list(x), dtype=np.complex128)
    if x.typeof in (ri.RTYPES.INTSXP, ri.RTYPES.LGLSXP):
        return _integers(_buffer(x, np.int64), x.typeof == ri.RTYPES.LGLSXP)
    raise RBridgeError(f"cannot convert R vector of type {x.typeof.name}")


def _integers(raw: np.ndarray, logical: bool) -> np.ndarray:
    """An integer or logical vector's numbers: int64 or bool, float64 with nan where any is NA."""
    na = raw == -(2**31)
    if na.any():
        return np.where(na, np.nan, raw.astype(np.float64))
    return raw.astype(bool) if logical else raw


def _scalar(v):
    """One element of a converted vector as a plain Python value (NA → nan, None for strings)."""
    return v if v is None or isinstance(v, str) else v.item()


def _classes(x) -> list[str]:
    cls = _attr(x, "class")
    return [] if cls is None else _strings(cls)


def _factor(x) -> pd.Categorical:
    return _categorical(_buffer(x, np.int64), _strings(_attr(x, "levels")), "ordered" in _classes(x))


def _categorical(codes: np.ndarray, levels: list, ordered: bool) -> pd.Categorical:
    """A factor from its 1-based codes (NA: -2^31) and levels."""
    return pd.Categorical.from_codes(np.where(codes == -(2**31), -1, codes - 1), categories=levels, ordered=ordered)


def _data_frame(x) -> pd.DataFrame:
    names = _strings(_attr(x, "names"))
    columns = {name: _column(col) for name, col in zip(names, x)}
    rownames = _attr(x, "row.names")
    index = None
    if rownames is not None and rownames.typeof.name == "STRSXP":
        index = _strings(rownames)
    return pd.DataFrame(columns, index=index)


def _column(x):
    """A data.frame column: always 1-D (factor, array or list of str)."""
    if "factor" in _classes(x):
        return _factor(x)
    return _vector(x)


def _sparse(x) -> sp.csc_matrix:
    parts = _call_raw("cc_sparse_parts", x)
    i, p, v, dim = (_vector(parts[k]) for k in range(4))
    return sp.csc_matrix((v, i, p), shape=tuple(int(d) for d in dim))


def _list(x):
    names = _attr(x, "names")
    return _named(None if names is None else _strings(names), [_to_python(e) for e in x])


def _named(names: list | None, items: list):
    """A list's items: a dict by name (an empty name its position, `[[k]]`), or the list itself."""
    if names is None:
        return items
    keys = [n if n else f"[[{k + 1}]]" for k, n in enumerate(names)]
    if len(set(keys)) != len(keys):
        raise RBridgeError(f"R list has duplicated names: {keys}")
    return dict(zip(keys, items))


def _atomic(x):
    dim, names = _attr(x, "dim"), _attr(x, "names")
    return _shaped(_vector(x), None if dim is None else tuple(int(d) for d in _vector(dim)),
                   None if names is None else _strings(names), lambda: bool(x.list_attrs()))


def _shaped(values, dim: tuple | None, names: list | None, attributed):
    """An atomic vector's values as the table says: an array of `dim`, a dict by `names`, a scalar
    (length 1, no attribute: `attributed()` false, asked only then), else the values."""
    if dim:
        return np.asarray(values, dtype=object if isinstance(values, list) else None).reshape(dim, order="F")
    if names is not None:
        return {n: _scalar(v) for n, v in zip(names, values)}
    if len(values) == 1 and not attributed():
        return _scalar(values[0])
    return values


def _to_python(x) -> Any:
    """Convert an rinterface object to plain Python/numpy/pandas/scipy (table in module doc)."""
    import rpy2.rinterface as ri

    if x is ri.NULL:
        return None
    classes = _classes(x)
    if x.typeof == ri.RTYPES.S4SXP:
        if _call_raw("cc_is_matrix_pkg", x)[0]:
            return _sparse(x)
        raise RBridgeError(f"cannot convert S4 object of class {classes}")
    if "factor" in classes:
        return _factor(x)
    if "data.frame" in classes:
        return _data_frame(x)
    if x.typeof in (ri.RTYPES.VECSXP, ri.RTYPES.EXPRSXP):
        return _list(x)
    if x.typeof in (ri.RTYPES.REALSXP, ri.RTYPES.INTSXP, ri.RTYPES.LGLSXP, ri.RTYPES.STRSXP,
                    ri.RTYPES.CPLXSXP):
        return _atomic(x)
    raise RBridgeError(f"cannot convert R object of type {x.typeof.name} (class {classes})")


FLAT_NULL, FLAT_LIST, FLAT_DOUBLE, FLAT_INTEGER, FLAT_LOGICAL, FLAT_CHARACTER, FLAT_FACTOR, \
    FLAT_DATA_FRAME, FLAT_SPARSE = range(9)


class _Flat:
    """A value from bridge.R's `cc_flat` (its four vectors), read back into the table's Python
    values node by node, as `_to_python` converts the value itself."""

    def __init__(self, parts):
        self.node = _buffer(parts[0], np.int64).tolist()
        self.chr = _strings(parts[1])
        self.num = _buffer(parts[2], np.float64)
        self.int = _buffer(parts[3], np.int64)
        self.at = {"node": 0, "chr": 0, "num": 0, "int": 0}

    def _take(self, part: str, k: int):
        i = self.at[part]
        self.at[part] = i + k
        return getattr(self, part)[i:i + k]

    def value(self) -> Any:
        kind = self._take("node", 1)[0]
        if kind == FLAT_NULL:
            return None
        if kind == FLAT_LIST:
            n, named = self._take("node", 2)
            names = self._take("chr", n) if named else None
            return _named(names, [self.value() for _ in range(n)])
        if kind == FLAT_FACTOR:
            return self._factor()
        if kind == FLAT_DATA_FRAME:
            ncol, nrow, named_rows = self._take("node", 3)
            names = self._take("chr", ncol)
            index = self._take("chr", nrow) if named_rows else None
            columns = {}
            for name in names:
                kind = self._take("node", 1)[0]
                columns[name] = self._factor() if kind == FLAT_FACTOR else self._atomic(kind)[0]
            return pd.DataFrame(columns, index=index)
        if kind == FLAT_SPARSE:
            nnz, ncol1, nrow, ncol = self._take("node", 4)
            i, p = self._take("int", nnz), self._take("int", ncol1)
            return sp.csc_matrix((self._take("num", nnz).copy(), i, p), shape=(nrow, ncol))
        values, names, attributes, dim = self._atomic(kind)
        return _shaped(values, dim, names, lambda: attributes)

    def _factor(self) -> pd.Categorical:
        n, nlevels, ordered = self._take("node", 3)
        return _categorical(self._take("int", n), self._take("chr", nlevels), bool(ordered))

    def _atomic(self, kind: int):
        """(values as `_vector` gives them, names or None, whether it has attributes, dim)."""
        n, named, attributes, ndim = self._take("node", 4)
        dim = tuple(self._take("node", ndim))
        names = self._take("chr", n) if named else None
        if kind == FLAT_DOUBLE:
            values = self._take("num", n).copy()
        elif kind == FLAT_CHARACTER:
            values = self._take("chr", n)
        else:
            values = _integers(self._take("int", n).copy(), kind == FLAT_LOGICAL)
        return values, names, attributes, dim


def _converted(x) -> Any:
    """`_to_python(x)`, from `cc_flat`'s four vectors where the value has that form."""
    import rpy2.rinterface as ri

    flat = _call_raw("cc_flat", x)
    return _to_python(x) if flat is ri.NULL else _Flat(flat).value()


# --------------------------------------------------------------------------------------------
# Python → R

_R_CLASS_OF_KIND = {"boolean": "logical", "integer": "integer", "floating": "numeric",
                    "mixed-integer-float": "numeric", "string": "character", "empty": "character"}


def r_type(values: pd.Series) -> tuple[str, list[str] | None]:
    """The R class ("factor", "ordered", "logical", "integer", "numeric", "character") a pandas
    column becomes, and its factor levels; RBridgeError naming the column if it has none."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        levels = [str(c) for c in values.cat.categories]
        return ("ordered" if values.cat.ordered else "factor"), levels
    kind = pd.api.types.infer_dtype(values, skipna=True)
    cls = _R_CLASS_OF_KIND.get(kind)
    if cls is None:
        raise RBridgeError(f"column {values.name!r}: values of type {kind!r} have no R equivalent")
    if cls == "integer" and values.notna().any() and values.abs().max() > _INT_MAX:
        return "numeric", None
    return cls, None


def _r_column(values: pd.Series):
    """A pandas column as an R vector or factor (classes as in `r_type`)."""
    import rpy2.rinterface as ri

    cls, levels = r_type(values)
    if levels is not None:
        codes = [ri.NA_Integer if c < 0 else int(c) + 1 for c in values.cat.codes]
        return _call_raw("cc_make_factor", ri.IntSexpVector(codes), ri.StrSexpVector(levels),
                         ri.BoolSexpVector([cls == "ordered"]))
    if cls == "numeric":
        return ri.FloatSexpVector(values.to_numpy(dtype=np.float64, na_value=np.nan))
    vector, na, cast = {"logical": (ri.BoolSexpVector, ri.NA_Logical, bool),
                        "integer": (ri.IntSexpVector, ri.NA_Integer, int),
                        "character": (ri.StrSexpVector, ri.NA_Character, str)}[cls]
    return vector([na if pd.isna(v) else cast(v) for v in values])


def check_column_types(df: pd.DataFrame, r_types: Mapping[str, Mapping]) -> None:
    """Raise RBridgeError naming the first column of `df` whose R class or factor levels, as read
    back from R by `cc_column_types`, differ from what `r_type` promises."""
    for col in df.columns:
        cls, levels = r_type(df[col])
        got = r_types.get(str(col))
        if got is None:
            raise RBridgeError(f"column {col!r} did not reach R")
        got_levels = got["levels"]
        if got["class"] != cls or got_levels != levels:
            raise RBridgeError(
                f"column {col!r} did not survive the transfer to R: expected {cls} with levels "
                f"{levels}, R has {got['class']} with levels {got_levels}")
        if levels is not None and len(set(levels)) < len(levels):
            raise RBridgeError(f"column {col!r}: distinct categories became the same R factor "
                               f"levels {levels}")


def _r_data_frame(df: pd.DataFrame):
    import rpy2.rinterface as ri

    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        raise RBridgeError(f"duplicated column names: {names}")
    cols = ri.ListSexpVector([_r_column(df[c]) for c in df.columns])
    frame = _call_raw("cc_make_data_frame", cols, ri.StrSexpVector(names),
                      ri.IntSexpVector([len(df)]))
    check_column_types(df, _converted(_call_raw("cc_column_types", frame)))
    return frame


def _r_array(value: np.ndarray):
    """A numpy array as an R vector, or a matrix/array (filled column-major) if not 1-D."""
    import rpy2.rinterface as ri

    if value.ndim == 1:
        return _r_column(pd.Series(value))
    flat = _r_column(pd.Series(value.ravel(order="F")))
    return _call_raw("cc_set_dim", flat, ri.IntSexpVector(list(value.shape)))


def _to_r(value):
    """Convert a Python value to an rinterface object (rules in the module docstring)."""
    import rpy2.rinterface as ri

    if value is None:
        return ri.NULL
    if isinstance(value, pd.DataFrame):
        return _r_data_frame(value)
    if isinstance(value, (pd.Series, pd.Categorical)):
        return _r_column(pd.Series(value))
    if isinstance(value, np.ndarray):
        return _r_array(value)
    if isinstance(value, (bool, int, float, str, np.generic)):
        return _r_column(pd.Series([value]))
    if isinstance(value, Mapping):
        items = ri.ListSexpVector([_to_r(v) for v in value.values()])
        return _call_raw("cc_set_names", items, ri.StrSexpVector([str(k) for k in value]))
    if isinstance(value, Sequence):
        homogeneous = bool(value) and pd.api.types.infer_dtype(value) in _R_CLASS_OF_KIND
        return (_r_column(pd.Series(list(value))) if homogeneous
                else ri.ListSexpVector([_to_r(v) for v in value]))
    raise RBridgeError(f"cannot send {type(value).__name__} to R")


# --------------------------------------------------------------------------------------------
# calling R

def _call_raw(fname: str, *args, **kwargs):
    """Call an R function found from the global environment, on rinterface objects."""
    import rpy2.rinterface as ri

    return ri.globalenv.find(fname)(*args, **kwargs)


class RSession:
    """The process-wide embedded R. Obtain it with `RSession.get()`."""

    _instance: ClassVar[RSession | None] = None
    _lock: ClassVar[threading.RLock] = threading.RLock()
    _versions: dict[str, str] | None = None          # R's answer to `versions()`, kept

    def __init__(self) -> None:
        raise TypeError("use RSession.get()")

    @classmethod
    def get(cls) -> RSession:
        """The one session of this process, started (and the R scripts sourced) on first use."""
        with cls._lock:
            if cls._instance is None:
                session = object.__new__(cls)
                session._start()
                cls._instance = session
            return cls._instance

    def _start(self) -> None:
        """Start R and source the scripts. rpy2 puts R's library path (with the system's
        /usr/lib/…) into LD_LIBRARY_PATH; R's libraries are loaded by then, and a Python started
        from this process with it would load the system's libpython instead of its own (Dask's
        and the sweep's workers, spawned later, failed to import ssl), so it is put back. rpy2
        sets SIGINT's handler to Python's default; the one before (`interrupt.stoppable`'s) is
        put back too. R's blank console writes (the newline it prints when an interrupt
        unwinds a computation: "R[write to console]: " lines) are dropped; every R call returns
        its messages as data."""
        saved = os.environ.get("LD_LIBRARY_PATH")
        main = threading.current_thread() is threading.main_thread()
        sigint = signal.getsignal(signal.SIGINT) if main else None
        import rpy2.rinterface as ri

        from rpy2.rinterface_lib import callbacks

        write_error = callbacks.consolewrite_warnerror
        callbacks.consolewrite_warnerror = lambda text: text.strip() and write_error(text)
        with self._converting():
            ri.initr_simple()
            if sigint is not None:
                signal.signal(signal.SIGINT, sigint)
            _poll_while_sleeping()
            for script in sorted(R_SCRIPTS.glob("*.R")):
                self._run(lambda: ri.baseenv["source"](str(script), local=ri.globalenv))
        if saved is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = saved

    # -- context ------------------------------------------------------------------------------
    def _converting(self):
        """Hold the R lock inside rpy2's localconverter (default rules)."""
        import rpy2.robjects as ro
        from rpy2.robjects.conversion import localconverter

        stack = contextlib.ExitStack()
        stack.enter_context(self._lock)
        stack.enter_context(localconverter(ro.default_converter))
        return stack

    @staticmethod
    def _parse(code: str):
        import rpy2.rinterface as ri
        from rpy2.rinterface_lib._rinterface_capi import RParsingError

        try:
            return ri.parse(code)
        except RParsingError as e:
            raise RBridgeError(f"R could not parse {code!r}: {e}") from None

    @staticmethod
    def _guarded(fname: str, *args):
        """Call one of bridge.R's `cc_guard`ed functions; an R error becomes RBridgeError."""
        value = _call_raw(fname, *args)
        if "cc_bridge_error" in _classes(value):
            raise RBridgeError(f"R error: {_strings(value[0])[0]}")
        return value

    # -- public API ---------------------------------------------------------------------------
    def eval(self, code: str) -> Any:
        """Evaluate R code in the global environment; the last value, converted (None if
        invisible, as after an assignment)."""
        with self._converting():
            exprs = self._parse(code)
            return self._run(lambda: _converted(self._guarded("cc_eval", exprs)))

    def assign(self, name: str, value: Any) -> None:
        """Bind `value` (converted to R) to `name` in R's global environment."""
        import rpy2.rinterface as ri

        with self._converting():
            ri.globalenv[name] = self._run(lambda: _to_r(value))

    def call(self, fname: str, *args, timeout: float | None = None, **kwargs) -> Any:
        """Call the R function `fname` on converted arguments; the result, converted.

        With `timeout` (seconds) R is interrupted when time is up and `RTimeout` is raised.
        """
        import rpy2.rinterface as ri

        def run():
            r_args = ri.ListSexpVector([_to_r(a) for a in (*args, *kwargs.values())])
            names = ri.StrSexpVector([""] * len(args) + list(kwargs))
            r_args = _call_raw("cc_set_names", r_args, names)
            return _converted(self._guarded("cc_call", ri.StrSexpVector([fname]), r_args))

        with self._converting():
            return self._run(run, timeout)

    # -- r_scripts/glmer.R ---------------------------------------------------------------------
    # `formula` is checked against reference_impl.formula's grammar before R sees it; weights and
    # offset name columns of `data`; `control` holds glmerControl() arguments. Each returns the
    # record list(ok, error, warnings, messages, value) as a dict (fields: glmer.R).

    def fit(self, data: pd.DataFrame, formula: str, family: str, *, link: str | None = None,
            nAGQ: int = 1, weights: str | None = None, offset: str | None = None,
            control: Mapping | None = None, timeout: float | None = None,
            keep_devfun: bool = False) -> dict:
        """glmer (`cc_glmer_fit`); with `keep_devfun`, value["devfun"] is the deviance function
        the fit optimized, registered as `devfun`'s are."""
        return self.call("cc_glmer_fit", data=data, formula=_grammatical(formula), family=family, link=link,
                         nAGQ=nAGQ, weights=weights, offset=offset, control=control,
                         keep_devfun=keep_devfun, timeout=timeout)

    def fit_glmmtmb(self, data: pd.DataFrame, formula: str, family: str, *,
                    link: str | None = None, weights: str | None = None,
                    offset: str | None = None, timeout: float | None = None) -> dict:
        """glmmTMB's Laplace fit in lme4's parametrisation (`cc_glmmtmb_fit`)."""
        return self.call("cc_glmmtmb_fit", data=data, formula=_grammatical(formula), family=family, link=link,
                         weights=weights, offset=offset, timeout=timeout)

    def devfun(self, data: pd.DataFrame, formula: str, family: str, *, link: str | None = None,
               nAGQ: int = 1, weights: str | None = None, offset: str | None = None,
               control: Mapping | None = None, timeout: float | None = None) -> dict:
        """Register glmer's deviance function (`cc_devfun`); value["id"] names it."""
        return self.call("cc_devfun", data=data, formula=_grammatical(formula), family=family, link=link,
                         nAGQ=nAGQ, weights=weights, offset=offset, control=control,
                         timeout=timeout)

    def devfun_eval(self, devfun_id: str, pars: np.ndarray, *,
                    timeout: float | None = None) -> dict:
        """Evaluate a registered deviance function at each row of `pars` (`cc_devfun_eval`)."""
        pars = np.atleast_2d(np.asarray(pars, dtype=np.float64))
        return self.call("cc_devfun_eval", id=devfun_id, pars=pars, timeout=timeout)

    def devfun_trace(self, devfun_id: str, pars: np.ndarray, *,
                     timeout: float | None = None) -> dict:
        """PIRLS of a registered deviance function at `pars`, per iteration (`cc_devfun_trace`)."""
        return self.call("cc_devfun_trace", id=devfun_id,
                         pars=np.asarray(pars, dtype=np.float64).ravel(), timeout=timeout)

    def devfun_drop(self, *devfun_ids: str) -> dict:
        """Forget registered deviance functions (in one call)."""
        return self.call("cc_devfun_drop", id=list(devfun_ids))

    def dataset(self, pkg: str, name: str) -> pd.DataFrame:
        """Data set `name` of the installed R package `pkg` (e.g. "lme4", "cbpp")."""
        return self.call("cc_dataset", pkg, name)

    def versions(self) -> dict[str, str]:
        """Versions of R, lme4, Matrix, minqa (and glmmTMB if installed), asked of R once."""
        if self._versions is None:
            self._versions = self.call("cc_versions")
        return dict(self._versions)

    def _run(self, thunk, timeout: float | None = None):
        """Run `thunk` (the lock is held), translating R failures, enforcing `timeout`, and
        raising KeyboardInterrupt where a stop was asked for (`request_stop`) while R ran."""
        from rpy2.rinterface_lib.embedded import RRuntimeError

        interrupt = _Interrupter(timeout)
        try:
            with interrupt, _in_r():
                return thunk()
        except RRuntimeError as e:
            if _STOP.is_set():
                raise KeyboardInterrupt from None
            if interrupt.fired:
                raise RTimeout(f"R call interrupted after {timeout} s") from None
            raise RBridgeError(str(e).strip()) from None


# -- stopping: crosscheck.interrupt's signal handlers ask, R is interrupted, Python raises ----------
_STOP = threading.Event()
_BUSY = threading.local()              # this thread's depth of calls into R
_R_LOCK = threading.RLock()            # R's interrupt flag and `_r_running` (re-entered by a
                                       # signal handler of the thread that holds it)
_r_running = 0                         # calls into R in progress (one thread at a time)


@contextlib.contextmanager
def _in_r():
    global _r_running
    if _STOP.is_set():
        raise KeyboardInterrupt
    depth = getattr(_BUSY, "depth", 0)
    _BUSY.depth = depth + 1
    with _R_LOCK:
        _r_running += 1
    try:
        yield
    finally:
        _BUSY.depth = depth
        with _R_LOCK:
            _r_running -= 1
            if _STOP.is_set():          # R may have finished before it polled the flag; R left
                _set_r_interrupt(0)     # with it set would stop on its next (exit) call
    if _STOP.is_set() and depth == 0:
        raise KeyboardInterrupt


def in_r() -> bool:
    """This thread is inside a call into R (or a callback from R into Python)."""
    return getattr(_BUSY, "depth", 0) > 0


def request_stop() -> None:
    """Stop: R's running call is interrupted, and each later one at once; the bridge raises
    KeyboardInterrupt when it returns. Safe from signal handlers and other threads."""
    _STOP.set()
    with _R_LOCK:
        if _r_running:
            _set_r_interrupt(1)


def _set_r_interrupt(value: int) -> None:
    from rpy2.rinterface_lib import openrlib

    openrlib.rlib.R_interrupts_pending = value


def _grammatical(formula: str) -> str:
    """`formula` itself, once it has passed the reference's grammar (FormulaError otherwise)."""
    from reference_impl.formula import parse_formula

    parse_formula(formula)
    return formula


def _poll_while_sleeping(usec: int = 50_000) -> None:
    """Make R wake up every `usec` µs while waiting (`Sys.sleep`), so a timeout can interrupt it.

    R's event loop otherwise sleeps in one `select` call and only then looks at the interrupt flag.
    """
    import ctypes

    from rpy2.rinterface_lib import openrlib

    libr = ctypes.CDLL(str(Path(openrlib.R_HOME) / "lib" / "libR.so"))
    ctypes.c_int.in_dll(libr, "R_wait_usec").value = usec


class _Interrupter:
    """Sets R's interrupt flag after `timeout` seconds unless the guarded block ended first."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.fired = False
        self._done = False
        self._guard = threading.Lock()
        self._timer = None if timeout is None else threading.Timer(timeout, self._fire)

    def _fire(self) -> None:
        from rpy2.rinterface_lib import openrlib

        with self._guard:
            if not self._done:
                self.fired = True
                openrlib.rlib.R_interrupts_pending = 1

    def __enter__(self):
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        from rpy2.rinterface_lib import openrlib

        if self._timer is None:
            return
        self._timer.cancel()
        with self._guard:
            self._done = True
            if self.fired:  # R may have finished before it polled the flag
                openrlib.rlib.R_interrupts_pending = 0
