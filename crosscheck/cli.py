"""`crosscheck` command line.

Exit codes of every command: 0 all comparisons passed, 1 any mismatch, 2 harness or input error
(the message names the problem; no traceback).
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from reference_impl.errors import ModelError

from .case import Case, read_table, r_dataset_name
from .rbridge import RBridgeError

EXIT_MATCH, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2
MODES = {"lme4": ("lme4",), "exact": ("exact",), "both": ("lme4", "exact")}


def fails_cleanly(command):
    """Input and harness errors end the command with their message and exit code 2."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ModelError, RBridgeError, OSError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_ERROR)
    return wrapper


def load_data(spec: str):
    """`--data`: a CSV/Parquet path, or `R:pkg::name` for a data set of an installed R package."""
    pkg_name = r_dataset_name(spec)
    if pkg_name is not None:
        from .rbridge import RSession
        return RSession.get().dataset(*pkg_name)
    if spec.startswith("R:"):
        raise ModelError(f"--data {spec!r}: expected R:<package>::<dataset>, e.g. R:lme4::cbpp")
    return read_table(spec)


def case_options(command):
    """The options that name a case: --case FILE, or --data/--formula/--family/…"""
    options = [
        click.option("--case", "case_file", type=click.Path(dir_okay=False),
                     help="a case file (JSON); replaces --data/--formula/--family/…"),
        click.option("--data", help="CSV or Parquet file, or R:pkg::name (e.g. R:lme4::cbpp)"),
        click.option("--formula", help="lme4 model formula, e.g. 'y ~ x + (1 | g)'"),
        click.option("--family", help="binomial, poisson, Gamma, inverse.gaussian, gaussian"),
        click.option("--link", default=None, help="link function (default: the family's)"),
        click.option("--weights", default=None, help="column of prior weights"),
        click.option("--offset", default=None, help="column of offsets"),
        click.option("--nagq", default=None, help="comma-separated nAGQ values [default: 0,1]"),
        click.option("--name", default="", help="a name for the case in reports"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def build_case(case_file, data, formula, family, link, weights, offset, nagq, name) -> Case:
    if case_file:
        given = [flag for flag, v in (("--data", data), ("--formula", formula), ("--family", family),
                                      ("--link", link), ("--weights", weights), ("--offset", offset))
                 if v is not None]
        if given:
            raise ModelError(f"--case replaces {', '.join(given)}: give one or the other")
        case = Case.load(case_file)
        return case.with_nagq(nagq) if nagq else case
    missing = [flag for flag, v in (("--data", data), ("--formula", formula), ("--family", family))
               if not v]
    if missing:
        raise ModelError(f"missing {', '.join(missing)} (or give --case FILE)")
    return Case.make(load_data(data), formula, family, link, weights, offset, nagq or "0,1",
                     name=name or Path(data).stem if not data.startswith("R:") else name or data[2:],
                     source=data)


@click.group()
def main():
    """Cross-check a Python reference of lme4's glmer against the real thing."""


@main.command()
@case_options
@click.option("--mode", type=click.Choice(list(MODES)), default="lme4", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--tol", multiple=True, metavar="KEY=VALUE",
              help="tolerance override, e.g. lme4.theta=1e-4 or exact.agq.objective=1e-6:1e-9")
@click.option("--referee/--no-referee", default=False, help="also fit glmmTMB (Laplace) as referee")
@click.option("--timeout", type=float, default=None, help="seconds per R call")
@click.option("--verbose", is_flag=True, help="text: show every compared quantity")
@click.option("--save-case", type=click.Path(dir_okay=False), help="write the case file")
@fails_cleanly
def compare(case_file, data, formula, family, link, weights, offset, nagq, name, mode, fmt, tol,
            referee, timeout, verbose, save_case):
    """Fit a case with glmer and the reference; diagnose each nAGQ in stages; give verdicts."""
    from .compare import compare_case
    from .render import render_text
    from .sides import RSide
    from .tolerances import Policy

    case = build_case(case_file, data, formula, family, link, weights, offset, nagq, name)
    policy = Policy.load("pyproject.toml", list(tol))
    if save_case:
        case.save(save_case)
    report = compare_case(case, MODES[mode], policy, RSide(timeout=timeout), referee=referee)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=1, allow_nan=False))
    else:
        click.echo(render_text(report, verbose))
    sys.exit(EXIT_MATCH if report.passed else EXIT_MISMATCH)


@main.command()
@case_options
@click.option("--out", type=click.Path(file_okay=False), default="repro", show_default=True,
              help="directory for the scripts (and data.csv when the data are large)")
@fails_cleanly
def repro(case_file, data, formula, family, link, weights, offset, nagq, name, out):
    """Write a standalone R script (glmer) and Python script (reference) reproducing a case."""
    from .repro import write_repro

    case = build_case(case_file, data, formula, family, link, weights, offset, nagq, name)
    for path in write_repro(case, out):
        click.echo(str(path))


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="write the Markdown table here (default: print it)")
@fails_cleanly
def calibrate(out):
    """Measure the worst differences per mode, nAGQ class and quantity on the calibration cases
    and set them beside the default tolerances (docs/tolerances.md is this command's output)."""
    from .calibrate import calibration_table

    text = calibration_table()
    if out:
        Path(out).write_text(text)
    click.echo(text)


@main.command()
@click.option("--nagq", default="0,1,9", show_default=True, help="comma-separated nAGQ values")
@fails_cleanly
def run(nagq: str):
    """The README example and cbpp, both modes, compared with glmer."""
    from .compare import compare_case
    from .render import render_text
    from .rbridge import RSession
    from .sides import RSide

    import pandas as pd
    readme = pd.DataFrame({"y": [1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 1, 1],
                           "x1": list(range(1, 6)) * 3,
                           "subject": pd.Categorical(["s1"] * 5 + ["s2"] * 5 + ["s3"] * 5)})
    cases = [Case.make(readme, "y ~ x1 + (1 | subject)", "binomial", nagq=nagq, name="readme"),
             Case.make(RSession.get().dataset("lme4", "cbpp"),
                       "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial",
                       nagq=nagq, name="cbpp")]
    passed = True
    for case in cases:
        report = compare_case(case, ("lme4", "exact"), r_side=RSide())
        click.echo(render_text(report) + "\n")
        passed &= report.passed
    sys.exit(EXIT_MATCH if passed else EXIT_MISMATCH)


if __name__ == "__main__":
    main()
