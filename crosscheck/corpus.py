"""Failure classes of a stored run, and reproducers for them saved as case files (a corpus).

A failure class is (verdict, mode, nAGQ), a Python crash (`internal error`) apart from other
refusals of the reference. Its worst case — the largest |Δ|/bound for mismatches, the fewest rows
for refusals — is shrunk with hypothesis (`generate.shrink`: a smaller draw that still gives the
same verdict for the same family and link at that nAGQ and mode) when it was generated, or saved
as it is when it came from a data set or a case file. The files
are what `crosscheck compare --case`, `crosscheck repro --case` and the gate take.
"""
from __future__ import annotations

import json
from pathlib import Path
from .case import Case
from .store import Store, case_digest

_KIND = "CASE WHEN f.python_error LIKE 'internal error%' THEN 'crash' ELSE '' END"
_WORST = ("(SELECT max(d.excess) FROM diffs d WHERE d.fit_id = f.fit_id AND d.gating AND NOT d.ok)")
CLASSES = f"""
SELECT f.verdict, f.mode, f.nagq, {_KIND} AS kind, count(*) AS n,
       group_concat(DISTINCT c.family || '(' || c.link || ')') AS families,
       max(coalesce({_WORST}, 0)) AS worst
FROM fits f JOIN cases c USING (case_id)
WHERE c.run_id = ? AND NOT f.passed
GROUP BY 1, 2, 3, 4
ORDER BY f.verdict IN ('r-refused', 'python-refused', 'both-refused'), worst DESC, n DESC
"""
REPRESENTATIVE = f"""
SELECT c.case_key, c.case_json, c.nrow, c.family, c.link, {_WORST} AS worst
FROM fits f JOIN cases c USING (case_id)
WHERE c.run_id = ? AND f.verdict = ? AND f.mode = ? AND f.nagq = ? AND {_KIND} = ?
ORDER BY worst DESC, c.nrow ASC LIMIT 1
"""


def failure_classes(store: Store, run_id: str) -> list[dict]:
    return [dict(r) for r in store.query(CLASSES, run_id)]


def class_name(cls: dict) -> str:
    crash = "-crash" if cls["kind"] else ""
    return f"{cls['verdict']}{crash}-{cls['mode']}-nagq{cls['nagq']}"


def signature(case: Case, nagq: int, mode: str) -> tuple[str, bool, str]:
    """(verdict, passed, "crash" or "") of one comparison, as the classes are keyed."""
    from .compare import compare_case
    from .sides import RSide

    (c,) = compare_case(case.with_nagq((nagq,)), (mode,), r_side=RSide(timeout=60), noise="failing").results
    return c.verdict, c.passed, "crash" if c.python.extra.get("crash") else ""


def reproducer(store: Store, run_id: str, cls: dict, budget_s: float) -> tuple[dict, str]:
    """The case file reproducing `cls` (shrunk when generated) and how it was obtained."""
    row = store.query(REPRESENTATIVE, run_id, cls["verdict"], cls["mode"], cls["nagq"], cls["kind"])[0]
    doc = json.loads(row["case_json"])
    doc["nagq"] = [cls["nagq"]]
    how = f"{row['case_key']} of run {run_id}, as found ({row['nrow']} rows)"
    family_link = (row["family"], row["link"])
    if row["case_key"].startswith("gen:"):
        from .generate import shrink
        from .sources import document

        _, seed, index = row["case_key"].rsplit(":", 2)
        strategy = {"max_groups": store.run(run_id)["config"]["max_groups"]}
        wanted = (cls["verdict"], False, cls["kind"])
        same = lambda g: ((g.family, g.link) == family_link                        # noqa: E731
                          and (g.scalar or cls["nagq"] <= 1)      # nAGQ > 1 needs a scalar term
                          and signature(g.to_case((cls["nagq"],)), cls["nagq"], cls["mode"]) == wanted)
        small, tried = shrink(seed, int(index), same, budget_s, **strategy)
        if small is not None:
            doc = document(small.to_case((cls["nagq"],)))
            how = (f"{row['case_key']} of run {run_id} ({row['nrow']} rows) shrunk by hypothesis to "
                   f"{len(small.data)} rows ({tried} candidates)")
    return doc, how


def save_reproducers(store: Store, run_id: str, corpus: Path, k: int,
                     budget_s: float) -> list[tuple[dict, Path, str]]:
    """Shrink and save the worst case of each of the first `k` failure classes: (class, case
    file, how it was obtained) each."""
    out = []
    for cls in failure_classes(store, run_id)[:k]:
        doc, how = reproducer(store, run_id, cls, budget_s)
        name = f"{class_name(cls)}-{case_digest(doc)[:8]}"
        doc.update(name=name, source=how)
        path = corpus / f"{name}.json"
        corpus.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        out.append((cls, path, how))
    return out
