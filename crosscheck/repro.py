"""Standalone reproducers of a case: an R script (glmer) and a Python script (the reference, or
the implementation under test: `repro --impl`).

Neither needs glmm-crosscheck's harness: the R script needs R and lme4, the Python script the
`reference_impl` package (for another implementation: that implementation, loaded as `--impl`
names it, fitting the case as the harness does). Data are inlined when the case has at most `INLINE_ROWS` rows and
written beside the scripts as `data.csv` otherwise (factor levels are always inlined, so both
sides see the levels in the case's order).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .case import Case, CaseError

INLINE_ROWS = 200


def r_string(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    out = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in out)
    return f'"{out}"'


def label(case: Case) -> str:
    """The case's name as the scripts' file stem and in their comments: letters, digits, - and _
    (a name is data: a newline or quotes in it must not end a comment and become code)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in (case.name or "case"))


def r_name(name: str) -> str:
    if "`" in name or not name.isprintable():
        raise CaseError(f"column name {name!r} cannot be written into an R script")
    return f"`{name}`"


def _number(v: float, na: str, inf: str) -> str:
    """A float literal that round-trips (repr), with the language's words for NA and ±infinity."""
    if math.isnan(v):
        return na
    if math.isinf(v):
        return inf if v > 0 else "-" + inf
    return repr(float(v))


def _r_number(v: float) -> str:
    return _number(v, "NA", "Inf")


def _py_number(v: float) -> str:
    return _number(v, "nan", "inf")


def _r_column(s: pd.Series, inline: bool) -> str:
    """The R expression of a column (inline), or of its conversion after read.csv."""
    ref = f"data[[{r_string(str(s.name))}]]"
    if isinstance(s.dtype, pd.CategoricalDtype):
        levels = "c(" + ", ".join(r_string(str(c)) for c in s.cat.categories) + ")"
        values = ("c(" + ", ".join("NA" if pd.isna(v) else r_string(str(v)) for v in s) + ")"
                  if inline else f"as.character({ref})")
        return f"factor({values}, levels = {levels}{', ordered = TRUE' if s.cat.ordered else ''})"
    if not inline:
        return ref
    if pd.api.types.is_bool_dtype(s):
        return "c(" + ", ".join("NA" if pd.isna(v) else ("TRUE" if v else "FALSE") for v in s) + ")"
    if pd.api.types.is_numeric_dtype(s):
        return "c(" + ", ".join(_r_number(float(v)) for v in s.to_numpy(float, na_value=np.nan)) + ")"
    return "c(" + ", ".join("NA" if pd.isna(v) else r_string(str(v)) for v in s) + ")"


def _py_column(s: pd.Series, inline: bool) -> str:
    ref = f"data[{str(s.name)!r}]"
    if isinstance(s.dtype, pd.CategoricalDtype):
        values = repr([None if pd.isna(v) else str(v) for v in s]) if inline else f"{ref}.astype(str).where({ref}.notna())"
        return (f"pd.Categorical({values}, categories={[str(c) for c in s.cat.categories]!r}, "
                f"ordered={bool(s.cat.ordered)})")
    if not inline:
        return ref
    if pd.api.types.is_bool_dtype(s):
        return repr([None if pd.isna(v) else bool(v) for v in s])
    if pd.api.types.is_numeric_dtype(s):
        return "np.array([" + ", ".join(_py_number(float(v)) for v in s.to_numpy(float, na_value=np.nan)) + "])"
    return repr([None if pd.isna(v) else str(v) for v in s])


def _load(case: Case, inline: bool, column, frame, read_csv: str, assign) -> str:
    """The lines that make `data`: a literal frame of `column(s, True)` values, or reading
    data.csv and restoring each factor's levels with `assign(name, column(s, False))`."""
    if inline:
        return frame([(str(c), column(case.data[c], True)) for c in case.data.columns])
    return "\n".join([read_csv, *(assign(str(c), column(case.data[c], False))
                                  for c in case.data.columns
                                  if isinstance(case.data[c].dtype, pd.CategoricalDtype))])


def r_script(case: Case, inline: bool) -> str:
    family = f"{case.family}({'' if case.link is None else 'link = ' + r_string(case.link)})"
    extra = "".join(f", {arg} = {r_name(col)}" for arg, col in (("weights", case.weights),
                                                                ("offset", case.offset)) if col)
    load = _load(case, inline, _r_column,
                 lambda cols: "data <- data.frame(\n  " + ",\n  ".join(
                     f"{r_name(c)} = {v}" for c, v in cols) + ",\n  check.names = FALSE)",
                 'here <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1]))\n'
                 'data <- read.csv(file.path(if (is.na(here)) "." else here, "data.csv"), check.names = FALSE)',
                 lambda c, v: f"data[[{r_string(c)}]] <- {v}")
    return f"""# Reproduces glmm-crosscheck case {label(case)} with glmer.
#   Rscript {label(case)}.R
suppressPackageStartupMessages(library(lme4))
{load}
for (k in c({', '.join(f'{k}L' for k in case.nagq)})) {{
  m <- glmer({case.formula}, data = data, family = {family}{extra}, nAGQ = k)
  cat(sprintf("nAGQ %d: -2logLik(raw) %.17g  deviance %.17g\\n", k, -2 * as.numeric(logLik(m)), deviance(m)))
  cat("  theta:", sprintf("%.17g", getME(m, "theta")), "\\n")
  cat("  fixef:", sprintf("%.17g", fixef(m)), "\\n")
  cat("  se:   ", sprintf("%.17g", sqrt(diag(as.matrix(vcov(m))))), "\\n")
  for (msg in m@optinfo$conv$lme4$messages) cat("  message:", msg, "\\n")
}}
cat("lme4", as.character(packageVersion("lme4")), "R", R.version.string, "\\n")
"""


def python_script(case: Case, inline: bool, impl: str | None = None) -> str:
    load = _load(case, inline, _py_column,
                 lambda cols: "data = pd.DataFrame({\n    " + ",\n    ".join(
                     f"{c!r}: {v}" for c, v in cols) + ",\n})",
                 "data = pd.read_csv(Path(__file__).with_name('data.csv'), keep_default_na=True)",
                 lambda c, v: f"data[{c!r}] = {v}")
    if impl is not None:
        return _impl_script(case, load, impl)
    return f"""\"\"\"Reproduces glmm-crosscheck case {label(case)} with the Python reference.\"\"\"
from math import inf, nan
from pathlib import Path

import numpy as np
import pandas as pd

import reference_impl as ri

{load}
for k in {list(case.nagq)!r}:
    for mode in ("lme4", "exact"):
        fit = ri.glmer({case.formula!r}, data, family={case.family!r}, link={case.link!r}, nAGQ=k,
                       weights={case.weights!r}, offset={case.offset!r}, mode=mode)
        print(f"nAGQ {{k}} {{mode}}: -2logLik(raw) {{fit.objective!r}}  deviance {{fit.deviance!r}}")
{_printed(8)}"""


def _printed(indent: int) -> str:
    """The scripts' lines printing a fit `fit` (θ, β, SEs, messages), indented by `indent`."""
    lines = ['print("  theta:", fit.theta)', 'print("  fixef:", list(fit.fixef.values()))',
             'print("  se:   ", list(fit.se.values()))', "for msg in fit.messages:", '    print("  message:", msg)']
    return "\n".join(" " * indent + line for line in lines) + "\n"


def _impl_script(case: Case, load: str, impl: str) -> str:
    """The Python reproducer for an implementation other than the reference (`--impl impl`)."""
    return f"""\"\"\"Reproduces glmm-crosscheck case {label(case)} with the implementation {impl!r}.\"\"\"
from math import inf, nan
from pathlib import Path

import numpy as np
import pandas as pd

from crosscheck.case import Case
from crosscheck.implementations import load

{load}
impl = load({impl!r})
case = Case.make(data, {case.formula!r}, {case.family!r}, link={case.link!r}, weights={case.weights!r},
                 offset={case.offset!r}, nagq={tuple(case.nagq)!r})
print(impl.name, impl.versions())
for k in case.nagq:
    fit = impl.fit(case, k)
    if not fit.ok:
        print(f"nAGQ {{k}}: refused: {{fit.error}}")
        continue
    print(f"nAGQ {{k}}: -2logLik {{fit.minus2loglik!r}}  deviance {{fit.deviance!r}}")
{_printed(4)}"""


def write_repro(case: Case, out: str | Path, impl: str | None = None) -> list[Path]:
    """Write `<name>.R`, `<name>.py` (and `data.csv` for large data) into directory `out`; the
    Python script fits with the reference, or with the implementation `impl` (`--impl`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    inline = len(case.data) <= INLINE_ROWS
    paths = [out / f"{label(case)}.R", out / f"{label(case)}.py"]
    paths[0].write_text(r_script(case, inline))
    paths[1].write_text(python_script(case, inline, impl))
    if not inline:
        paths.append(out / "data.csv")
        case.data.to_csv(paths[-1], index=False)
    return paths
