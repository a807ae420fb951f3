"""`FitResult`: the one record that every side of a cross-check fills."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .diffs import plain

Side = Literal["python", "r", "glmmtmb"]
# Why a side gave no answer about the model (`FitResult.failure`): the bridge, glmer.R or the
# harness's own code failed (or the reference crashed), or the side ran past its time limit.
HARNESS_ERROR, TIMEOUT = "harness-error", "timeout"


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
    minus2loglik_raw: float | None = None
    saturated: float | None = None
    objective: float | None = None
    deviance: float | None = None
    se: dict[str, float] = field(default_factory=dict)
    se_rx: dict[str, float] = field(default_factory=dict)
    vcov: np.ndarray | None = None
    ranef: dict[str, Any] | None = None
    fitted: np.ndarray | None = None
    u: np.ndarray | None = None
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

    @property
    def failure(self) -> str | None:
        """HARNESS_ERROR or TIMEOUT when `error` is no verdict about the model; None for a fit or
        the side's own refusal of the model."""
        return self.extra.get("failure")

    @property
    def pars(self) -> np.ndarray:
        """lme4's parameter vector at the optimum: θ for nAGQ = 0, c(θ, β) otherwise (§9)."""
        beta = list(self.fixef.values()) if self.nAGQ else []
        return np.array([*self.theta, *beta], dtype=float)

    def summary(self) -> dict[str, Any]:
        """The JSON view of a side in a comparison (README: "JSON output")."""
        if not self.ok:
            return {"error": self.error, "messages": list(self.messages)}
        return plain({"fixef": dict(self.fixef), "theta": dict(zip(self.theta_names, self.theta)),
                      "minus2loglik": self.minus2loglik, "minus2loglik_raw": self.minus2loglik_raw,
                      "saturated": self.saturated, "deviance": self.deviance, "se": dict(self.se),
                      "converged": self.converged, "feval": self.feval, "optimizer": self.optimizer,
                      "messages": list(self.messages)})

    @classmethod
    def from_r(cls, record: dict[str, Any], side: Side = "r") -> FitResult:
        """From the record of `cc_glmer_fit` / `cc_glmmtmb_fit` (as converted by the bridge).

        A failed record becomes a refusal whose messages are the warnings and messages R gave
        before the error, or a harness failure where glmer.R says the error was its own.
        """
        if not record["ok"]:
            return cls(side=side, error=record["error"],
                       messages=[*record["messages"], *record["warnings"]],
                       extra={"failure": HARNESS_ERROR} if record.get("harness") else {})
        value = dict(record["value"])
        theta = value.pop("theta")
        common = {name: value.pop(name) for name in _COMMON_FIELDS if name in value}
        return cls(side=side, theta=list(theta.values()), theta_names=list(theta), **common,
                   extra=value)

    @classmethod
    def from_reference(cls, fit, design=None) -> FitResult:
        """From a `reference_impl.GlmerFit` (and the `Design` it was fitted on, for stage 0)."""
        ranef = {g: {"levels": list(frame.index), "terms": list(frame.columns),
                     "values": frame.to_numpy(), "condvar": fit.condvar.get(g)}
                 for g, frame in fit.ranef.items()}
        extra = {"optinfo": fit.optinfo, "ldRX2": fit.ldRX2, "aic_resp": fit.aic_resp}
        if design is not None:
            extra.update(X=design.X, X_names=list(design.X_names), Zt=design.Zt,
                         theta_lower=np.asarray(design.lower, float))
        return cls(side="python", fixef=dict(fit.fixef), theta=list(fit.theta),
                   theta_names=list(fit.theta_names), minus2loglik=fit.minus2loglik,
                   minus2loglik_raw=fit.objective, saturated=fit.saturated,
                   objective=fit.objective, deviance=fit.deviance, se=dict(fit.se),
                   se_rx=dict(fit.se_rx), vcov=fit.vcov, ranef=ranef, fitted=fit.fitted, u=fit.u,
                   converged=fit.converged, messages=list(fit.messages), ldL2=fit.ldL2,
                   ussq=fit.ussq, drsum=fit.drsum, wrss=fit.wrss, feval=fit.feval,
                   optimizer=fit.optimizer, nAGQ=fit.nAGQ, versions=dict(fit.versions), extra=extra)


_COMMON_FIELDS = tuple(
    name for name in FitResult.__dataclass_fields__
    if name not in ("side", "error", "theta", "theta_names", "extra"))
