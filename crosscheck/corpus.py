"""Failure classes of a stored run, and reproducers for them saved as case files (a corpus).

A failure class is (family, link, nAGQ, mode, verdict). Its worst case — the largest |Δ|/bound
for mismatches, the fewest rows for refusals — is shrunk with hypothesis (`generate.shrink`: a
smaller draw that still gives the same verdict for the same family and link at that nAGQ and mode)
when it was generated, or saved as it is when it came from a data set or a case file. The files
are what `crosscheck compare --case`, `crosscheck repro --case` and the gate take.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from .case import Case
from .store import Store, case_digest

CLASSES = """
SELECT c.family, c.link, f.nagq, f.mode, f.verdict, count(*) AS n,
       max(coalesce((SELECT max(d.excess) FROM diffs d WHERE d.fit_id = f.fit_id AND d.gating
                     AND NOT d.ok), 0)) AS worst
FROM fits f JOIN cases c USING (case_id)
WHERE c.run_id = ? AND NOT f.passed
GROUP BY 1, 2, 3, 4, 5
ORDER BY f.verdict IN ('r-refused', 'python-refused', 'both-refused'), worst DESC, n DESC
"""
REPRESENTATIVE = """
SELECT c.case_key, c.case_json, c.nrow,
       (SELECT max(d.excess) FROM diffs d WHERE d.fit_id = f.fit_id AND d.gating AND NOT d.ok) AS worst
FROM fits f JOIN cases c USING (case_id)
WHERE c.run_id = ? AND c.family = ? AND c.link = ? AND f.nagq = ? AND f.mode = ? AND f.verdict = ?
ORDER BY worst DESC, c.nrow ASC LIMIT 1
"""


def failure_classes(store: Store, run_id: str) -> list[dict]:
    return [dict(r) for r in store.query(CLASSES, run_id)]


def class_name(cls: dict) -> str:
    link = cls["link"].replace("/", "").replace("^", "")
    return f"{cls['family']}-{link}-nagq{cls['nagq']}-{cls['mode']}-{cls['verdict']}"


def verdict_of(case: Case, nagq: int, mode: str) -> str:
    from .compare import compare_case
    from .sides import RSide

    (c,) = compare_case(case.with_nagq((nagq,)), (mode,), r_side=RSide(timeout=60)).results
    return c.verdict


def reproducer(store: Store, run_id: str, cls: dict, budget_s: float) -> tuple[dict, str]:
    """The case file reproducing `cls` (shrunk when generated) and how it was obtained."""
    row = store.query(REPRESENTATIVE, run_id, cls["family"], cls["link"], cls["nagq"], cls["mode"],
                      cls["verdict"])[0]
    doc = json.loads(row["case_json"])
    doc["nagq"] = [cls["nagq"]]
    how = f"{row['case_key']} of run {run_id}, as found ({row['nrow']} rows)"
    if row["case_key"].startswith("gen:"):
        from .generate import shrink
        from .sources import document

        _, seed, index = row["case_key"].rsplit(":", 2)
        strategy = {"max_groups": store.run(run_id)["config"]["max_groups"]}
        same = lambda g: ((g.family, g.link) == (cls["family"], cls["link"])      # noqa: E731
                          and verdict_of(g.to_case((cls["nagq"],)), cls["nagq"], cls["mode"]) == cls["verdict"])
        small, tried = shrink(seed, int(index), same, budget_s, **strategy)
        if small is not None:
            doc = document(small.to_case((cls["nagq"],)))
            how = (f"{row['case_key']} of run {run_id} ({row['nrow']} rows) shrunk by hypothesis to "
                   f"{len(small.data)} rows ({tried} candidates)")
    return doc, how


def save_worst(store: Store, run_id: str, corpus: Path, k: int, budget_s: float) -> Iterator[str]:
    """Shrink and save the worst case of each of the first `k` failure classes; yields a line
    naming each file."""
    for cls in failure_classes(store, run_id)[:k]:
        doc, how = reproducer(store, run_id, cls, budget_s)
        name = f"{class_name(cls)}-{case_digest(doc)[:8]}"
        doc.update(name=name, source=how)
        path = corpus / f"{name}.json"
        corpus.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        yield f"{class_name(cls)} ({cls['n']} fits): {path} — {how}"
