"""A case: data plus model specification, the unit every comparison, sweep and gate works on.

A case file is data (JSON, `glmm-crosscheck-case` version 1); nothing in it is evaluated:

```json
{"format": "glmm-crosscheck-case", "version": 1, "name": "readme",
 "formula": "y ~ x1 + (1 | subject)", "family": "binomial", "link": null,
 "weights": null, "offset": null, "nagq": [0, 1],
 "data": {"nrow": 15, "columns": [
    {"name": "y", "type": "numeric", "values": [1, 1, 0, null, "Inf"]},
    {"name": "subject", "type": "factor", "levels": ["s1", "s2"], "codes": [0, 0, 1, 1, -1]}]}}
```

`type` is one of numeric, integer, logical, character, factor, ordered; numeric values are numbers,
null (NA) or one of "Inf", "-Inf", "NaN"; factor codes are 0-based, -1 for NA. Instead of `data`,
`data_file` may name a CSV or Parquet file beside the case file. Formulas are checked against the
reference's formula grammar (`reference_impl.formula`) before anything else sees them.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reference_impl.errors import ModelError
from reference_impl.formula import parse_formula

FORMAT, VERSION = "glmm-crosscheck-case", 1
FAMILIES = ("binomial", "poisson", "Gamma", "inverse.gaussian", "gaussian")
LINKS = ("logit", "probit", "cauchit", "cloglog", "log", "identity", "sqrt", "inverse", "1/mu^2")
MAX_NAGQ = 100                       # GHrule's limit (spec §4.3)
_R_DATASET = re.compile(r"^R:([A-Za-z][A-Za-z0-9.]*)::([A-Za-z.][A-Za-z0-9._]*)$")
_NUMERIC_WORDS = {"Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}


class CaseError(ModelError):
    """A case that cannot be run: names the file, field, column or value at fault."""


@dataclass(frozen=True)
class Case:
    """Data and model specification; `formula` has passed the reference's grammar.

    The formula is kept as written (not re-rendered), so R names terms and levels exactly as it
    would for the user's own call; passing the grammar is what makes it safe to hand to R.
    """

    data: pd.DataFrame
    formula: str
    family: str
    link: str | None = None
    weights: str | None = None
    offset: str | None = None
    nagq: tuple[int, ...] = (1,)
    control: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def make(cls, data: pd.DataFrame, formula: str, family: str, link: str | None = None,
             weights: str | None = None, offset: str | None = None, nagq=(1,), name: str = "",
             source: str = "", control: dict | None = None, **extra) -> Case:
        """Validate everything a fit would otherwise find late (or evaluate): the formula grammar,
        family and link names, nAGQ values, and that every column named exists."""
        if not isinstance(data, pd.DataFrame):
            raise CaseError(f"data must be a data frame, not {type(data).__name__}")
        if not isinstance(formula, str):
            raise CaseError(f"formula must be a string, not {type(formula).__name__}")
        twice = sorted(set(map(str, data.columns[data.columns.duplicated()])))
        if twice:
            raise CaseError(f"column name(s) {', '.join(map(repr, twice))} appear more than once in the data")
        parsed = parse_formula(formula)
        if family not in FAMILIES:
            raise CaseError(f"unknown family {family!r} (choose one of: {', '.join(FAMILIES)})")
        if link is not None and link not in LINKS:
            raise CaseError(f"unknown link {link!r} (choose one of: {', '.join(LINKS)})")
        for role, column in (("weights", weights), ("offset", offset)):
            if column is not None and (not isinstance(column, str) or column not in data.columns):
                raise CaseError(f"{role} column {column!r} is not in the data "
                                f"(columns: {', '.join(map(str, data.columns))})")
        missing = sorted(parsed.columns() - set(map(str, data.columns)))
        if missing:
            raise CaseError(f"column(s) {', '.join(map(repr, missing))} of the formula are not in "
                            f"the data (columns: {', '.join(map(str, data.columns))})")
        return cls(data, formula.strip(), family, link, weights, offset, parse_nagq(nagq),
                   parse_control(control), name, source, extra)

    def with_nagq(self, nagq) -> Case:
        return replace(self, nagq=parse_nagq(nagq))

    def with_rows(self, order: np.ndarray) -> Case:
        """The same model with the data's rows in `order` (factor levels unchanged)."""
        return replace(self, data=self.data.iloc[order].reset_index(drop=True))

    def spec(self) -> dict[str, Any]:
        """Everything but the data, as plain JSON values."""
        return {"name": self.name, "formula": self.formula, "family": self.family,
                "link": self.link, "weights": self.weights, "offset": self.offset,
                "nagq": list(self.nagq), "control": dict(self.control), "source": self.source,
                "nrow": len(self.data)}

    # -- case files -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        doc = {"format": FORMAT, "version": VERSION, **self.spec(), "data": encode_data(self.data)}
        del doc["nrow"]
        return doc

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        return path

    @classmethod
    def from_json(cls, doc: Any, where: str = "case", base: Path | None = None) -> Case:
        """A case from a parsed case file; CaseError names the field at fault."""
        if not isinstance(doc, dict):
            raise CaseError(f"{where}: expected a JSON object, got {_json_type(doc)}")
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise CaseError(f"{where}: not a {FORMAT} version {VERSION} file "
                            f"(format={doc.get('format')!r}, version={doc.get('version')!r})")
        known = {"format", "version", "name", "formula", "family", "link", "weights", "offset",
                 "nagq", "control", "source", "data", "data_file", "truth", "structure"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise CaseError(f"{where}: unknown field(s) {', '.join(unknown)}")
        get = _Fields(doc, where)
        if ("data" in doc) == ("data_file" in doc):
            raise CaseError(f"{where}: give exactly one of 'data' and 'data_file'")
        if "data" in doc:
            data = decode_data(doc["data"], f"{where}: data")
        else:
            name = get.string("data_file")
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise CaseError(f"{where}: data_file must be a file beside the case file, not {name!r}")
            data = read_table((base or Path(".")) / name)
        nagq = doc.get("nagq", [1])
        if not isinstance(nagq, list):
            raise CaseError(f"{where}: nagq must be a list of whole numbers, got {_json_type(nagq)}")
        extra = {k: doc[k] for k in ("truth", "structure") if k in doc}
        return cls.make(data, get.string("formula"), get.string("family"),
                        get.string("link", True), get.string("weights", True),
                        get.string("offset", True), nagq, get.string("name", True) or "",
                        get.string("source", True) or "", doc.get("control"), **extra)

    @classmethod
    def load(cls, path: str | Path) -> Case:
        """The case in a case file; every error (CaseError, FormulaError) names the file."""
        path = Path(path)
        where = f"case file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise CaseError(f"{where}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise CaseError(f"{where}: not UTF-8 text (byte {e.start})") from None
        try:
            return cls.from_json(json.loads(text, parse_constant=_refuse_constant), where, path.parent)
        except json.JSONDecodeError as e:
            raise CaseError(f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
        except RecursionError:
            raise CaseError(f"{where}: JSON nested too deeply") from None
        except ModelError as e:
            if str(e).startswith(where):
                raise
            raise type(e)(f"{where}: {e}") from None


def parse_nagq(values) -> tuple[int, ...]:
    """nAGQ values as a tuple of distinct whole numbers in 0..100; "0,1,9" is accepted."""
    if isinstance(values, str):
        parts = [v.strip() for v in values.split(",") if v.strip()]
        try:
            values = [int(v) for v in parts]
        except ValueError:
            raise CaseError(f"nAGQ must be comma-separated whole numbers, not {','.join(parts)!r}") from None
    if not isinstance(values, (list, tuple, np.ndarray)):
        values = [values]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise CaseError(f"nAGQ must be a whole number, not {v!r}")
        if not 0 <= v <= MAX_NAGQ:
            raise CaseError(f"nAGQ = {v} is outside 0..{MAX_NAGQ} (lme4's Gauss-Hermite rules)")
        if int(v) not in out:
            out.append(int(v))
    if not out:
        raise CaseError("no nAGQ value given")
    return tuple(out)


# glmerControl() settings a case may carry (both sides honour them), with their value checks
CONTROL = {"tolPwrss": float, "calc.derivs": bool, "boundary.tol": float}
OPT_CONTROL = {"maxfun": int}


def parse_control(control: Any) -> dict[str, Any]:
    """A case's glmerControl settings: `tolPwrss`, `calc.derivs`, `boundary.tol` and
    `optCtrl = {maxfun}`; anything else is refused by name."""
    if control is None:
        return {}
    if not isinstance(control, dict):
        raise CaseError(f"control must be an object of glmerControl settings, got {_json_type(control)}")
    out = {}
    for key, value in control.items():
        if key == "optCtrl":
            if not isinstance(value, dict):
                raise CaseError(f"control.optCtrl must be an object, got {_json_type(value)}")
            out[key] = {k: _control_value(f"control.optCtrl.{k}", OPT_CONTROL, k, v) for k, v in value.items()}
        else:
            out[key] = _control_value(f"control.{key}", CONTROL, key, value)
    return out


def _control_value(where: str, allowed: dict, key: str, value: Any):
    if key not in allowed:
        raise CaseError(f"{where}: unsupported setting (supported: {', '.join([*CONTROL, 'optCtrl'])}; "
                        f"optCtrl: {', '.join(OPT_CONTROL)})")
    kind = allowed[key]
    ok = (isinstance(value, bool) if kind is bool
          else isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and value > 0 and (kind is float or value == int(value)))
    if not ok:
        raise CaseError(f"{where}: expected a {'true/false' if kind is bool else 'positive ' + kind.__name__}, "
                        f"got {value!r}")
    return kind(value)


# -- data --------------------------------------------------------------------------------------------
def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet file as a data frame; text columns become factors with sorted levels (both
    sides then see the same levels, whatever R's locale would sort them as)."""
    path = Path(path)
    if not path.is_file():
        raise CaseError(f"data file {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            data = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".txt"):
            data = pd.read_csv(path)
        else:
            raise CaseError(f"data file {path}: unknown format (use .csv or .parquet)")
    except (ValueError, OSError, ImportError, pd.errors.ParserError) as e:
        if isinstance(e, CaseError):
            raise
        raise CaseError(f"data file {path}: cannot be read ({str(e).splitlines()[0]})") from None
    for col in data.columns:
        if data[col].dtype == object:
            values = data[col].dropna().astype(str)
            data[col] = pd.Categorical(data[col].where(data[col].isna(), data[col].astype(str)),
                                       categories=sorted(values.unique()))
    return data


def r_dataset_name(spec: str) -> tuple[str, str] | None:
    """("lme4", "cbpp") for "R:lme4::cbpp", None for anything else."""
    m = _R_DATASET.match(spec)
    return (m.group(1), m.group(2)) if m else None


def encode_data(data: pd.DataFrame) -> dict[str, Any]:
    columns = []
    for name in data.columns:
        s = data[name]
        if isinstance(s.dtype, pd.CategoricalDtype):
            columns.append({"name": str(name), "type": "ordered" if s.cat.ordered else "factor",
                            "levels": [str(c) for c in s.cat.categories],
                            "codes": [int(c) for c in s.cat.codes]})
        elif pd.api.types.is_bool_dtype(s):
            columns.append({"name": str(name), "type": "logical",
                            "values": [None if pd.isna(v) else bool(v) for v in s]})
        elif pd.api.types.is_integer_dtype(s):
            columns.append({"name": str(name), "type": "integer",
                            "values": [None if pd.isna(v) else int(v) for v in s]})
        elif pd.api.types.is_float_dtype(s):
            columns.append({"name": str(name), "type": "numeric",
                            "values": [_encode_float(v) for v in s.to_numpy(float)]})
        else:
            columns.append({"name": str(name), "type": "character",
                            "values": [None if pd.isna(v) else str(v) for v in s]})
    return {"nrow": len(data), "columns": columns}


def decode_data(doc: Any, where: str) -> pd.DataFrame:
    if not isinstance(doc, dict):
        raise CaseError(f"{where}: expected an object with 'nrow' and 'columns', got {_json_type(doc)}")
    nrow, columns = doc.get("nrow"), doc.get("columns")
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 0:
        raise CaseError(f"{where}.nrow: expected a whole number >= 0, got {nrow!r}")
    if not isinstance(columns, list):
        raise CaseError(f"{where}.columns: expected a list, got {_json_type(columns)}")
    out = {}
    for k, col in enumerate(columns):
        at = f"{where}.columns[{k}]"
        if not isinstance(col, dict):
            raise CaseError(f"{at}: expected an object, got {_json_type(col)}")
        name = col.get("name")
        if not isinstance(name, str) or not name:
            raise CaseError(f"{at}.name: expected a non-empty string, got {name!r}")
        if name in out:
            raise CaseError(f"{at}: column {name!r} appears twice")
        out[name] = _decode_column(col, nrow, f"{at} ({name!r})")
    return pd.DataFrame(out, index=pd.RangeIndex(nrow))


def _decode_column(col: dict, nrow: int, at: str):
    kind = col.get("type")
    key = "codes" if kind in ("factor", "ordered") else "values"
    values = col.get(key)
    if not isinstance(values, list):
        raise CaseError(f"{at}.{key}: expected a list, got {_json_type(values)}")
    if len(values) != nrow:
        raise CaseError(f"{at}.{key}: has {len(values)} entries, nrow is {nrow}")
    if kind in ("factor", "ordered"):
        levels = col.get("levels")
        if not isinstance(levels, list) or not all(isinstance(v, str) for v in levels):
            raise CaseError(f"{at}.levels: expected a list of strings")
        if len(set(levels)) != len(levels):
            raise CaseError(f"{at}.levels: duplicated levels")
        for i, c in enumerate(values):
            if isinstance(c, bool) or not isinstance(c, int) or not -1 <= c < len(levels):
                raise CaseError(f"{at}.codes[{i}]: expected -1 or a level index below {len(levels)}, got {c!r}")
        return pd.Categorical.from_codes(values, categories=levels, ordered=kind == "ordered")
    checks = {"numeric": (lambda v: _decode_float(v), "a number, null, 'Inf', '-Inf' or 'NaN'"),
              "integer": (lambda v: None if v is None else (v if isinstance(v, int) and not isinstance(v, bool) else ...), "a whole number or null"),
              "logical": (lambda v: None if v is None else (v if isinstance(v, bool) else ...), "true, false or null"),
              "character": (lambda v: None if v is None else (v if isinstance(v, str) else ...), "a string or null")}
    if kind not in checks:
        raise CaseError(f"{at}.type: expected one of {', '.join([*checks, 'factor', 'ordered'])}, got {kind!r}")
    convert, expected = checks[kind]
    decoded = []
    for i, v in enumerate(values):
        d = convert(v)
        if d is ...:
            raise CaseError(f"{at}.values[{i}]: expected {expected}, got {v!r}")
        decoded.append(d)
    if kind == "numeric":
        return np.array(decoded, dtype=float)
    if kind == "integer":
        return pd.array(decoded, dtype="Int64") if None in decoded else np.array(decoded, dtype=np.int64)
    if kind == "logical":
        return pd.array(decoded, dtype="boolean") if None in decoded else np.array(decoded, dtype=bool)
    return pd.Series(decoded, dtype=object).to_numpy()


def _encode_float(v: float):
    if math.isnan(v):
        return None
    return {math.inf: "Inf", -math.inf: "-Inf"}.get(v, v)


def _decode_float(v):
    if v is None:
        return math.nan
    if isinstance(v, str):
        return _NUMERIC_WORDS.get(v, ...)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return ...


def _refuse_constant(name: str):
    raise CaseError(f"{name} is not JSON; write numeric specials as the strings 'Inf', '-Inf', 'NaN'")


def _json_type(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


class _Fields:
    """Typed access to a case file's top-level fields, with errors naming the field."""

    def __init__(self, doc: dict, where: str):
        self.doc, self.where = doc, where

    def string(self, key: str, optional: bool = False) -> str | None:
        v = self.doc.get(key)
        if v is None and optional:
            return None
        if not isinstance(v, str):
            raise CaseError(f"{self.where}: field {key!r} must be a string, got {_json_type(v)}")
        return v
