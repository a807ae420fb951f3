"""The measurements behind docs/findings-mixedlm.md's analysis, rerun with

    .venv/bin/python docs/findings-mixedlm/probes.py

(needs R, lme4 and mixedlm: `make setup`). Each probe prints what mixedlm returns, what glmer
returns and what the exact Laplace objective (the reference's exact mode) says, on a generated
case of the census (`gen:thorough:<i>`, drawn here again from its seed and index)."""
import warnings

import numpy as np

from crosscheck.generate import draw_case
from crosscheck.mixedlm_impl import MixedLM, _theta_order
from crosscheck.sides import PythonSide, RSide


def case(i):
    return draw_case("thorough", i, max_groups=200).to_case((1,))


def scale_family_objective(i=8):
    """Gamma: mixedlm minimizes ldL2 + ‖u‖² + Σ devResid, not the Laplace likelihood."""
    impl, c = MixedLM(), case(i)
    fit, exact = impl.fit(c, 1), PythonSide("exact").fit(c, 1)
    data, formula, family, design = impl._problem(c)
    parsed = impl.mixedlm.glFormula(formula, data, family=family, weights=data["crosscheck_w"].to_numpy())
    f = impl.mixedlm.mkGlmerDevfun(parsed, nAGQ=1)
    order = _theta_order(parsed.matrices.random_structures, design)
    print(f"gen:thorough:{i}: {c.formula}, {c.family}({c.link}), {len(c.data)} rows, nAGQ 1")
    for label, p in (("mixedlm's optimum", fit.pars), ("the exact optimum", exact.pars)):
        q = np.array(p)
        q[order] = q[:len(order)].copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = f(q)
        (ev,) = PythonSide("exact").evaluate(c, 1, [p], None)
        print(f"  at {label} (θ {np.round(p[:len(fit.theta)], 6).tolist()}): mixedlm's deviance function "
              f"{value:.12g}; ldL2 + ‖u‖² + Σ devResid {ev.ldL2 + ev.ussq + ev.drsum:.12g}; "
              f"the Laplace objective (−2 log L) {ev.value:.12g}")


def pirls_gives_up(i=27):
    """binomial: mixedlm's deviance function is +inf where the Laplace objective is finite."""
    impl, c = MixedLM(), case(i)
    fit, r = impl.fit(c, 1), RSide().fit(c, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = impl.evaluate(c, 1, [r.pars, fit.pars], None)
    ex = PythonSide("exact").evaluate(c, 1, [r.pars, fit.pars], None)
    print(f"gen:thorough:{i}: {c.formula}, {c.family}({c.link}), {len(c.data)} rows, nAGQ 1")
    print(f"  mixedlm: −2 log L {fit.minus2loglik:.10g} at θ {np.round(fit.theta, 6).tolist()}; glmer: "
          f"{r.minus2loglik:.10g} at θ {np.round(r.theta, 6).tolist()}")
    print(f"  mixedlm's deviance function at glmer's optimum {ml[0].value}, at its own {ml[1].value:.10g}; "
          f"the exact objective there {ex[0].value:.10g}, {ex[1].value:.10g}")


if __name__ == "__main__":
    scale_family_objective()
    pirls_gives_up()
    pirls_gives_up(19)
