"""`FitResult`: the one record that every side of a cross-check fills."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Side = Literal["python", "r", "glmmtmb"]


@dataclass
class FitResult:
    """One fit (or one refusal, with `error` set) of one side.

    Field names and meanings follow docs/architecture.md: `theta` is a list in lme4 order (names in
    `theta_names`), `minus2loglik` is on the absolute scale (full binomial/Poisson constants, also
    for nAGQ > 1), `objective` is lme4's raw deviance-function value. Side-specific data without a
    common field (R's derivatives, X, Zt, RX-based standard errors, ...) stay in `extra`.
    """

    side: Side
    error: str | None = None
    fixef: dict[str, float] = field(default_factory=dict)
    theta: list[float] = field(default_factory=list)
    theta_names: list[str] = field(default_factory=list)
    minus2loglik: float | None = None
    objective: float | None = None
    deviance: float | None = None
    se: dict[str, float] = field(default_factory=dict)
    vcov: np.ndarray | None = None
    ranef: dict[str, Any] | None = None
    fitted: np.ndarray | None = None
    converged: bool = False
    messages: list[str] = field(default_factory=list)
    ldL2: float | None = None
    ussq: float | None = None
    drsum: float | None = None
    wrss: float | None = None
    feval: int | None = None
    optimizer: str | None = None
    nAGQ: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_r(cls, record: dict[str, Any], side: Side = "r") -> FitResult:
        """From the record of `cc_glmer_fit` / `cc_glmmtmb_fit` (as converted by the bridge).

        A failed record becomes a refusal whose messages are the warnings and messages R gave
        before the error.
        """
        if not record["ok"]:
            return cls(side=side, error=record["error"],
                       messages=[*record["messages"], *record["warnings"]])
        value = dict(record["value"])
        theta = value.pop("theta")
        common = {name: value.pop(name) for name in _COMMON_FIELDS if name in value}
        return cls(side=side, theta=list(theta.values()), theta_names=list(theta), **common,
                   extra=value)


_COMMON_FIELDS = tuple(
    name for name in FitResult.__dataclass_fields__
    if name not in ("side", "error", "theta", "theta_names", "extra"))
