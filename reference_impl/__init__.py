"""An independent Python implementation of lme4 1.1-31's `glmer` (numpy/scipy only).

`glmer(...)` fits; `devfun(...)` returns the objective as a value (a callable over lme4's
parameter vector). `mode="lme4"` reproduces lme4's numbers, quirks included; `mode="exact"`
gives the mathematically converged answer for the same model.
"""
from .errors import FormulaError, ModelError, OptimizerError, PirlsError
from .fit import GlmerFit, devfun, glmer

__all__ = ["glmer", "devfun", "GlmerFit", "ModelError", "FormulaError", "PirlsError", "OptimizerError"]
