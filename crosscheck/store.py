"""The results store: one SQLite file (`.crosscheck/results.sqlite`) for every sweep.

Tables (docs/architecture.md has the columns):

- `runs` — one per `crosscheck run`: its configuration (JSON) and status;
- `versions` — each distinct set of versions (Python, numpy, scipy, rpy2, R, lme4, Matrix, …);
- `cases` — one per (run, case key), unique: the case file, the full `CaseReport` JSON, status
  (`done`, `error`, `harness-error`, `timeout`, `crash`), seconds, the versions it ran with;
- `fits` — one per (case, nAGQ, mode): verdict, passed, stage failed, both sides' −2 log L and errors;
- `diffs` — one per compared quantity of a fit: |Δ|, relative Δ, tolerance, |Δ| / bound.

A case's rows are written in one transaction as it finishes, so a killed sweep loses only the
cases in flight, and (run, case key) being unique makes a resumed run store each case once.
"""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from reference_impl.errors import ModelError

from .calibrate import base_quantity
from .diffs import Diff

DEFAULT_PATH = Path(".crosscheck/results.sqlite")
VERSION_KEYS = ("python", "numpy", "scipy", "pandas", "rpy2", "hypothesis", "R", "R:lme4",
                "R:Matrix")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created TEXT NOT NULL, finished TEXT,
    status TEXT NOT NULL,                 -- running | finished | interrupted
    config TEXT NOT NULL                  -- JSON: the sweep's configuration
);
CREATE TABLE IF NOT EXISTS versions (
    versions_id INTEGER PRIMARY KEY, digest TEXT UNIQUE NOT NULL,
    python TEXT, numpy TEXT, scipy TEXT, pandas TEXT, rpy2 TEXT, hypothesis TEXT,
    r TEXT, lme4 TEXT, matrix TEXT,
    json TEXT NOT NULL                    -- every version reported
);
CREATE TABLE IF NOT EXISTS cases (
    case_id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    case_key TEXT NOT NULL,               -- gen:<seed>:<index>, lme4:<dataset>, file:<path>
    status TEXT NOT NULL,                 -- done | error | harness-error | timeout | crash
    error TEXT, name TEXT, family TEXT, link TEXT, structure TEXT,
    stratum TEXT,                         -- a generated case's: strategies.STRATA
    cond_x REAL,                          -- a generated case's cond(X): its realized conditioning
    formula TEXT, nrow INTEGER, digest TEXT, seconds REAL, finished TEXT NOT NULL,
    versions_id INTEGER REFERENCES versions(versions_id),
    case_json TEXT,                       -- the case file (data + spec)
    report_json TEXT,                     -- CaseReport.to_json()
    UNIQUE (run_id, case_key)
);
CREATE TABLE IF NOT EXISTS fits (
    fit_id INTEGER PRIMARY KEY,
    case_id INTEGER NOT NULL REFERENCES cases(case_id) ON DELETE CASCADE,
    nagq INTEGER NOT NULL, mode TEXT NOT NULL, verdict TEXT NOT NULL, passed INTEGER NOT NULL,
    stage_failed TEXT, python_error TEXT, r_error TEXT,
    python_m2ll REAL, r_m2ll REAL, r_converged INTEGER, python_seconds REAL, r_seconds REAL,
    UNIQUE (case_id, nagq, mode)
);
CREATE TABLE IF NOT EXISTS diffs (
    fit_id INTEGER NOT NULL REFERENCES fits(fit_id) ON DELETE CASCADE,
    quantity TEXT NOT NULL,               -- as reported: theta[herd.(Intercept)]
    base TEXT NOT NULL,                   -- theta, fixef, objective, …
    stage INTEGER, abs REAL, rel REAL, tol_rel REAL, tol_abs REAL,
    ok INTEGER NOT NULL, gating INTEGER NOT NULL,
    excess REAL,                          -- |Δ| / (tol_abs + tol_rel·|r|): > 1 fails
    noise REAL,                           -- the noise band (crosscheck/noise.py); NULL: not measured
    within_noise INTEGER                  -- outside tolerance, within WITHIN noise bands
);
CREATE INDEX IF NOT EXISTS fits_by_case ON fits(case_id);
CREATE INDEX IF NOT EXISTS diffs_by_fit ON diffs(fit_id);
"""


class StoreError(ModelError):
    """An unknown run, or a store that cannot be used; names the file or run."""


def jsonable(v: Any) -> Any:
    """Plain JSON: non-finite floats as "Inf"/"-Inf"/"NaN" strings (JSON has none)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Inf" if v > 0 else "-Inf")
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def dumps(v: Any) -> str:
    return json.dumps(jsonable(v), allow_nan=False, sort_keys=True)


def case_digest(case_json: dict) -> str:
    """Equal data and spec, equal digest (the case's name and source are left out)."""
    body = {k: v for k, v in case_json.items() if k not in ("name", "source")}
    return hashlib.sha256(dumps(body).encode()).hexdigest()[:16]


def _float(v) -> float | None:
    if v is None or isinstance(v, (dict, list, bool)):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class Store:
    def __init__(self, path: str | Path = DEFAULT_PATH):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"results store {self.path}: {e}") from None

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        """Stores written before the noise band or the strata lack their columns; they are added,
        empty, except a stratum, which an older store has as its `edge` column."""
        for table, columns in (("diffs", (("noise", "REAL"), ("within_noise", "INTEGER"))),
                               ("cases", (("stratum", "TEXT"), ("cond_x", "REAL")))):
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            for column, kind in columns:
                if column not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                    if column == "stratum" and "edge" in have:
                        self.db.execute("UPDATE cases SET stratum = edge")

    # -- runs ----------------------------------------------------------------------------------------
    def new_run(self, config: dict) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
        self.db.execute("INSERT INTO runs VALUES (?, ?, NULL, 'running', ?)",
                        (run_id, _now(), dumps(config)))
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        row = self.db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            known = [r[0] for r in self.db.execute(
                "SELECT run_id FROM runs ORDER BY created DESC LIMIT 5")]
            raise StoreError(f"no run {run_id!r} in {self.path}"
                             + (f" (latest: {', '.join(known)})" if known else " (it has no runs)"))
        return {**dict(row), "config": json.loads(row["config"])}

    def set_status(self, run_id: str, status: str) -> None:
        self.db.execute("UPDATE runs SET status = ?, finished = ? WHERE run_id = ?",
                        (status, _now() if status == "finished" else None, run_id))

    def done_keys(self, run_id: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT case_key FROM cases WHERE run_id = ?", (run_id,))}

    # -- one finished case, in one transaction --------------------------------------------------------
    def add(self, run_id: str, result: dict[str, Any]) -> bool:
        """Store one job result (`executors.run_job`); False when the key was already stored."""
        case, report = result.get("case"), result.get("report")
        spec = case or {}
        extra = spec.get("truth") or {}
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            versions_id = self._versions(report["versions"]) if report else None
            cur = db.execute(
                "INSERT OR IGNORE INTO cases (run_id, case_key, status, error, name, family, link, "
                "structure, stratum, cond_x, formula, nrow, digest, seconds, finished, versions_id, "
                "case_json, report_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, result["key"], result["status"], result.get("error"), spec.get("name"),
                 spec.get("family"), spec.get("link"), spec.get("structure"), extra.get("stratum"),
                 _float(extra.get("cond_x")), spec.get("formula"), (spec.get("data") or {}).get("nrow"),
                 case_digest(case) if case else None, result.get("seconds"), _now(), versions_id,
                 dumps(case) if case else None, dumps(report) if report else None))
            if cur.rowcount and report:
                self._fits(cur.lastrowid, report["results"])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:       # an interrupt may land after COMMIT: nothing to undo then
                db.execute("ROLLBACK")
            raise
        return bool(cur.rowcount)

    def _versions(self, versions: dict[str, str]) -> int:
        text = dumps(versions)
        digest = hashlib.sha256(text.encode()).hexdigest()
        self.db.execute(
            "INSERT OR IGNORE INTO versions (digest, python, numpy, scipy, pandas, rpy2, hypothesis, "
            "r, lme4, matrix, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (digest, *(versions.get(k) for k in VERSION_KEYS), text))
        return self.db.execute("SELECT versions_id FROM versions WHERE digest = ?",
                               (digest,)).fetchone()[0]

    def _fits(self, case_id: int, results: list[dict]) -> None:
        for c in results:
            py, r, t = c["python"], c["r"], c.get("timings", {})
            fit_id = self.db.execute(
                "INSERT INTO fits (case_id, nagq, mode, verdict, passed, stage_failed, python_error, "
                "r_error, python_m2ll, r_m2ll, r_converged, python_seconds, r_seconds) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (case_id, c["nAGQ"], c["mode"], c["verdict"], int(c["passed"]), c["stage_failed"],
                 py.get("error"), r.get("error"), _float(py.get("minus2loglik")),
                 _float(r.get("minus2loglik")), None if "converged" not in r else int(r["converged"]),
                 t.get("python_fit"), t.get("r_fit"))).lastrowid
            self.db.executemany(
                "INSERT INTO diffs (fit_id, quantity, base, stage, abs, rel, tol_rel, tol_abs, ok, gating, "
                "excess, noise, within_noise) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(fit_id, d["quantity"], base_quantity(d["quantity"]), d["stage"], _float(d["abs"]),
                  _float(d["rel"]), *_tol(d["tol"]), int(d["ok"]), int(d.get("gating", True)),
                  _excess(d), _float(d.get("noise")), int(d.get("within_noise", False)))
                 for d in c["diffs"]])

    # -- reading ----------------------------------------------------------------------------------------
    def query(self, sql: str, *params) -> list[sqlite3.Row]:
        return self.db.execute(sql, params).fetchall()

    def cases(self, run_id: str) -> Iterator[sqlite3.Row]:
        yield from self.db.execute("SELECT * FROM cases WHERE run_id = ? ORDER BY case_id", (run_id,))

    def documents(self, row: sqlite3.Row) -> tuple[dict | None, dict | None]:
        """A stored case's case file and report, parsed; StoreError naming the row when either is
        damaged."""
        out = []
        for column in ("case_json", "report_json"):
            try:
                out.append(json.loads(row[column]) if row[column] else None)
            except json.JSONDecodeError as e:
                raise StoreError(f"results store {self.path}, run {row['run_id']}, case {row['case_key']}: "
                                 f"{column} is damaged ({e.msg} at character {e.pos})") from None
        return out[0], out[1]


def _tol(tol) -> tuple[float | None, float | None]:
    return (tol["rel"], tol["abs"]) if isinstance(tol, dict) else (None, None)


def _excess(d: dict) -> float | None:
    """`Diff.excess` of a diff's JSON; None for equality checks and missing values."""
    delta = _float(d["abs"])
    if delta is None or not isinstance(d["tol"], dict):
        return None
    return Diff.from_json(d, abs=delta, r=_float(d["r"]) or 0.0).excess
