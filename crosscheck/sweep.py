"""`crosscheck run`: N generated cases plus lme4's data sets (and case files) × nAGQ × modes,
each stored in the results store the moment it finishes; `resume` finishes an interrupted run
without redoing stored cases (generated cases are redrawn from the run's seed: `generate.py`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from typing import Any

from . import sources
from .executors import Executor, Job
from .progress import Progress
from .store import Store, StoreError


@dataclass(frozen=True)
class SweepConfig:
    cases: int = 30                                  # generated cases
    seed: str = "default"
    max_groups: int = 30                             # strategies.cases(max_groups=…)
    datasets: tuple[str, ...] = ("cbpp", "grouseticks", "VerbAgg")
    files: tuple[str, ...] = ()                      # case files
    nagq: tuple[int, ...] = (0, 1, 9)
    modes: tuple[str, ...] = ("lme4", "exact")
    r_timeout: float | None = 120.0                  # seconds per R call
    tol: tuple[str, ...] = ()
    noise: str = "failing"                           # the noise band only where a comparison fails
    hypothesis: str = field(default_factory=lambda: metadata.version("hypothesis"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SweepConfig:
        return cls(**{f.name: tuple(doc[f.name]) if isinstance(doc[f.name], list) else doc[f.name]
                      for f in fields(cls) if f.name in doc})

    def jobs(self) -> list[Job]:
        """Data sets and case files first (the known cases), then the generated ones."""
        srcs = [*(sources.dataset(d) for d in self.datasets),
                *(sources.case_file(p) for p in self.files),
                *(sources.generated(self.seed, i, {"max_groups": self.max_groups})
                  for i in range(self.cases))]
        return [Job(sources.key(s), s, self.nagq, self.modes, self.r_timeout, self.tol, self.noise)
                for s in srcs]


def start(store: Store, config: SweepConfig) -> str:
    return store.new_run(config.to_json())


def resume_config(store: Store, run_id: str) -> SweepConfig:
    """The configuration of a stored run; refused when its cases would be drawn differently."""
    config = SweepConfig.from_json(store.run(run_id)["config"])
    installed = metadata.version("hypothesis")
    if config.cases and config.hypothesis != installed:
        raise StoreError(f"run {run_id} drew its cases with hypothesis {config.hypothesis}; "
                         f"{installed} is installed and would draw different ones")
    return config


def sweep(store: Store, run_id: str, config: SweepConfig, executor: Executor,
          progress: Progress | None = None) -> int:
    """Run every job of `config` not yet stored for `run_id`; returns how many ran."""
    jobs = config.jobs()
    done = store.done_keys(run_id)
    todo = [j for j in jobs if j.key not in done]
    progress = progress or Progress(len(jobs), len(jobs) - len(todo))
    store.set_status(run_id, "running")
    ran = 0
    try:
        for result in executor(todo):
            store.add(run_id, result)
            progress.update(result)
            ran += 1
    except BaseException:
        store.set_status(run_id, "interrupted")
        raise
    finally:
        progress.close()
    store.set_status(run_id, "finished")
    return ran
