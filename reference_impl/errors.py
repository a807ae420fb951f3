"""Errors raised by the reference implementation."""


class ModelError(ValueError):
    """Bad input: the message names the column, row or parameter at fault."""


class FormulaError(ModelError):
    """A formula outside the supported lme4 grammar (never evaluated)."""


class PirlsError(RuntimeError):
    """One of lme4's PIRLS failures (spec §3.2), with lme4's message; `at`: the parameter vector
    of the deviance-function evaluation that met it, where there was one."""

    at = None


class OptimizerError(RuntimeError):
    """One of lme4's Nelder_Mead refusals (spec §5.5), with lme4's message."""
