"""Errors raised by the reference implementation."""


class ModelError(ValueError):
    """Bad input: the message names the column, row or parameter at fault."""


class FormulaError(ModelError):
    """A formula outside the supported lme4 grammar (never evaluated)."""


# lme4's PIRLS failures, word for word (§3.2): both PIRLS loops and the factorizations raise these
NAN_VALUE = "PIRLS loop resulted in NaN value"
HALVINGS_FAILED = "(maxstephalfit) PIRLS step-halvings failed to reduce deviance in pwrssUpdate"
NOT_CONVERGED = "pwrssUpdate did not converge in (maxit) iterations"
DOWNDATE_NOT_PD = "Downdated VtV is not positive definite"


class PirlsError(RuntimeError):
    """One of lme4's PIRLS failures (spec §3.2), with lme4's message; `at`: the parameter vector
    of the deviance-function evaluation that met it, where there was one."""

    at = None


class OptimizerError(RuntimeError):
    """One of lme4's Nelder_Mead refusals (spec §5.5), with lme4's message."""
