"""Where a sweep's cases come from, as plain JSON that travels to worker processes: a seeded draw
of the strategies (`generated`), a data set that ships with lme4 with its textbook model
(`dataset`), or a case file (`case_file`). `build(source, nagq)` turns one into a `Case`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from reference_impl.errors import ModelError

from .case import Case, CaseError
from .strategies import applicable_nagq

# name → (formula, family, a single scalar term: nAGQ > 1 applies)
LME4_DATASETS = {
    "cbpp": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial", True),
    "grouseticks": ("TICKS ~ YEAR + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "poisson", False),
    "VerbAgg": ("r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "binomial", False),
    "Arabidopsis": ("total.fruits ~ nutrient + amd + rack + status + (1 | popu) + (1 | gen)",
                    "poisson", False),
}


def generated(seed: str, index: int, strategy: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "generated", "seed": seed, "index": index, "strategy": strategy}


def dataset(name: str) -> dict[str, Any]:
    if name not in LME4_DATASETS:
        raise CaseError(f"unknown lme4 data set {name!r} (choose from: {', '.join(LME4_DATASETS)})")
    return {"kind": "dataset", "name": name}


def case_file(path: str | Path) -> dict[str, Any]:
    return {"kind": "file", "path": str(path)}


def key(source: dict[str, Any]) -> str:
    """The case's key in the store: gen:<seed>:<index>, lme4:<name>, file:<stem>."""
    kind = source["kind"]
    if kind == "generated":
        return f"gen:{source['seed']}:{source['index']}"
    return f"lme4:{source['name']}" if kind == "dataset" else f"file:{Path(source['path']).stem}"


def build(source: dict[str, Any], nagq) -> Case:
    """The case a source names; generated cases and data sets get the nAGQ values of `nagq` that
    apply to them, case files keep their own."""
    kind, name = source["kind"], key(source)
    if kind == "generated":
        from .generate import draw_case

        drawn = draw_case(source["seed"], source["index"], **source["strategy"])
        return drawn.to_case(nagq, name=name, source="hypothesis " + name)
    if kind == "dataset":
        from .rbridge import RSession

        formula, family, scalar = LME4_DATASETS[source["name"]]
        data = RSession.get().dataset("lme4", source["name"])
        return Case.make(data, formula, family, nagq=applicable_nagq(nagq, scalar),
                         name=source["name"], source=f"R:lme4::{source['name']}")
    return Case.load(source["path"])


def document(case: Case) -> dict[str, Any]:
    """The case file of `case`, with the truth and structure of a generated case."""
    return {**case.to_json(), **{k: case.extra[k] for k in ("truth", "structure") if k in case.extra}}


def document_of(source: dict[str, Any], nagq) -> dict[str, Any] | None:
    """The case file of a generated source, drawn here (no R needed), for a case whose worker died
    or ran out of time: its store row then has the name, digest and data of any other; None for
    other sources or a case that cannot be built."""
    if source["kind"] != "generated":
        return None
    try:
        return document(build(source, nagq))
    except ModelError:
        return None
