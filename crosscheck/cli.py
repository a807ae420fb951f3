"""`crosscheck` command line.

Exit codes of every command: 0 all comparisons passed, 1 any mismatch, 2 harness or input error
(the message names the problem; no traceback), or a comparison without a verdict (a harness
failure or a side past its time limit), 130 interrupted (SIGINT, Ctrl-C, or SIGTERM: within a
moment, whichever side computes; `crosscheck/interrupt.py`).
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from reference_impl.errors import ModelError, PirlsError

from .case import Case, read_table, r_dataset_name
from .interrupt import exit_now, stoppable
from .rbridge import RBridgeError
from .validate import check_case

EXIT_MATCH, EXIT_MISMATCH, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
MODES = {"lme4": ("lme4",), "exact": ("exact",), "both": ("lme4", "exact")}
TIMEOUT = 600.0                 # compare, investigate: seconds per R call and per reference fit


def fails_cleanly(command):
    """Input and harness errors end the command with their message and exit code 2; SIGINT and
    SIGTERM, whichever side computes, with "interrupted" and exit code 130."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with stoppable():
                return command(*args, **kwargs)
        except (ModelError, RBridgeError, OSError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            exit_now(EXIT_INTERRUPTED)
        except Exception as e:                  # noqa: BLE001 — the harness's own failure, named
            click.echo(f"harness error: {type(e).__name__}: {e}", err=True)
            sys.exit(EXIT_ERROR)
    return wrapper


IMPL_HELP = ("the implementation under test beside glmer: 'reference' (its modes by --mode), a built-in "
             "(lme4, exact, glmmtmb, mixedlm), an entry point of glmm_crosscheck.implementations, "
             "module:attr or path/to/file.py:attr")


def impl_modes(impl: str, mode: str) -> tuple[str, ...]:
    """What `--impl` and `--mode` compare: the reference's modes, or the one implementation named
    (loaded here, so that a bad name fails before R starts)."""
    if impl == "reference":
        return MODES[mode]
    from .implementations import load
    load(impl)
    return (impl,)


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
    """The case the options name, its values checked up front (`validate.check_case`)."""
    if case_file:
        given = [flag for flag, v in (("--data", data), ("--formula", formula), ("--family", family),
                                      ("--link", link), ("--weights", weights), ("--offset", offset))
                 if v is not None]
        if given:
            raise ModelError(f"--case replaces {', '.join(given)}: give one or the other")
        case = Case.load(case_file)
        return check_case(case.with_nagq(nagq) if nagq else case)
    missing = [flag for flag, v in (("--data", data), ("--formula", formula), ("--family", family))
               if not v]
    if missing:
        raise ModelError(f"missing {', '.join(missing)} (or give --case FILE)")
    return check_case(Case.make(
        load_data(data), formula, family, link, weights, offset, nagq or "0,1",
        name=name or Path(data).stem if not data.startswith("R:") else name or data[2:], source=data))


@click.group()
def main():
    """Cross-check a Python reference of lme4's glmer against the real thing."""


@main.command()
@case_options
@click.option("--mode", type=click.Choice(list(MODES)), default="lme4", show_default=True)
@click.option("--impl", default="reference", show_default=True, help=IMPL_HELP)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--tol", multiple=True, metavar="KEY=VALUE",
              help="tolerance override, e.g. lme4.theta=1e-4 or exact.agq.objective=1e-6:1e-9")
@click.option("--referee/--no-referee", default=False, help="also fit glmmTMB (Laplace) as referee")
@click.option("--timeout", type=float, default=TIMEOUT, show_default=True,
              help="seconds per R call and per fit of the reference; a side past it: verdict timeout")
@click.option("--verbose", is_flag=True, help="text: show every compared quantity")
@click.option("--save-case", type=click.Path(dir_okay=False), help="write the case file")
@click.option("--noise", type=click.Choice(["all", "failing", "none"]), default="all", show_default=True,
              help="measure the noise band for every comparison, only where one would otherwise fail, or never")
@fails_cleanly
def compare(case_file, data, formula, family, link, weights, offset, nagq, name, mode, impl, fmt, tol,
            referee, timeout, verbose, save_case, noise):
    """Fit a case with glmer and the reference (or --impl); diagnose each nAGQ in stages; give verdicts."""
    from .compare import compare_case
    from .render import render_text
    from .sides import RSide
    from .tolerances import Policy

    case = build_case(case_file, data, formula, family, link, weights, offset, nagq, name)
    policy = Policy.load("pyproject.toml", list(tol))
    if save_case:
        case.save(save_case)
    report = compare_case(case, impl_modes(impl, mode), policy, RSide(timeout=timeout), referee=referee,
                          noise=noise, python_timeout=timeout)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=1, allow_nan=False))
    else:
        click.echo(render_text(report, verbose))
    sys.exit(EXIT_ERROR if report.undecided else EXIT_MATCH if report.passed else EXIT_MISMATCH)


@main.command()
@case_options
@click.option("--out", type=click.Path(file_okay=False), default="repro", show_default=True,
              help="directory for the scripts (and data.csv when the data are large)")
@click.option("--impl", default="reference", show_default=True, help=IMPL_HELP)
@fails_cleanly
def repro(case_file, data, formula, family, link, weights, offset, nagq, name, out, impl):
    """Write a standalone R script (glmer) and Python script (reference, or --impl) reproducing a case."""
    from .repro import write_repro

    case = build_case(case_file, data, formula, family, link, weights, offset, nagq, name)
    if impl != "reference":
        impl_modes(impl, "both")                    # a bad name fails here
    for path in write_repro(case, out, None if impl == "reference" else impl):
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


def _run_options(command):
    """`crosscheck run`'s options; None means: the profile's value (strategies.PROFILES)."""
    options = [
        click.option("--profile", type=click.Choice(["dev", "ci", "thorough"]), default="dev",
                     show_default=True, help="sizes of the sweep (strategies.PROFILES)"),
        click.option("--cases", type=click.IntRange(0), default=None, help="generated cases"),
        click.option("--seed", default=None, help="seed of the generated cases"),
        click.option("--max-groups", type=click.IntRange(2, 200), default=None,
                     help="most groups of a generated case"),
        click.option("--datasets", default=None,
                     help="comma-separated lme4 data sets, or 'none' [default: cbpp,grouseticks,VerbAgg]"),
        click.option("--case", "case_files", multiple=True, type=click.Path(dir_okay=False),
                     help="a case file to add (repeatable)"),
        click.option("--nagq", default="0,1,9", show_default=True,
                     help="nAGQ values (> 1 only for single scalar-term models)"),
        click.option("--mode", type=click.Choice(list(MODES)), default="both", show_default=True),
        click.option("--impl", default="reference", show_default=True, help=IMPL_HELP),
        click.option("--noise", type=click.Choice(["failing", "all", "none"]), default="failing", show_default=True,
                     help="measure the noise band only where a comparison would otherwise fail, always, or never"),
        click.option("--tol", multiple=True, metavar="KEY=VALUE", help="tolerance override"),
        click.option("--workers", type=click.IntRange(0), default=2, show_default=True,
                     help="worker processes (0: run in this process, no case timeout)"),
        click.option("--executor", type=click.Choice(["dask", "processes"]), default="dask",
                     show_default=True, help="dask: a Dask LocalCluster, one thread and one R per "
                     "worker; processes: plain worker subprocesses"),
        click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
                     help="run on an existing Dask cluster (instead of --workers)"),
        click.option("--timeout", type=float, default=120.0, show_default=True,
                     help="seconds per R call"),
        click.option("--case-timeout", type=float, default=600.0, show_default=True,
                     help="seconds per case before its worker is killed"),
        click.option("--store", "store_path", type=click.Path(dir_okay=False),
                     default=".crosscheck/results.sqlite", show_default=True),
        click.option("--out", type=click.Path(file_okay=False), default=None,
                     help="output directory [default: .crosscheck/runs/RUN_ID]"),
        click.option("--resume", default=None, metavar="RUN_ID",
                     help="finish an interrupted run (its own configuration is used)"),
        click.option("--shrink", type=click.IntRange(0), default=2, show_default=True,
                     help="failure classes whose worst case is shrunk into the corpus"),
        click.option("--shrink-budget", type=float, default=30.0, show_default=True,
                     help="seconds of shrinking per failure class"),
        click.option("--corpus", type=click.Path(file_okay=False), default=".crosscheck/corpus",
                     show_default=True, help="where shrunk reproducers are saved"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@_run_options
@fails_cleanly
def run(profile, cases, seed, max_groups, datasets, case_files, nagq, mode, impl, noise, tol, workers, executor,
        scheduler, timeout, case_timeout, store_path, out, resume, shrink, shrink_budget, corpus):
    """A sweep: generated cases plus lme4's data sets × nAGQ × modes, stored in SQLite, with a
    summary per nAGQ, JSONL, JUnit XML and Markdown; the worst failures shrunk into the corpus.
    Exit 0 when every case was run (mismatches are findings, listed), 2 on bad input."""
    from .case import parse_nagq
    from .executors import SubprocessPool, serial
    from .outputs import summary, write_all
    from .store import Store
    from .strategies import PROFILES
    from .sweep import SweepConfig, resume_config, start, sweep

    store = Store(store_path)
    if resume:
        run_id = resume
        config = resume_config(store, run_id)
    else:
        sizes = {**PROFILES[profile]["sweep"],
                 **{k: v for k, v in (("cases", cases), ("seed", seed), ("max_groups", max_groups))
                    if v is not None}}
        if datasets is not None:
            sizes["datasets"] = () if datasets == "none" else tuple(
                d.strip() for d in datasets.split(",") if d.strip())
        config = SweepConfig(**sizes, files=tuple(case_files), nagq=parse_nagq(nagq),
                             modes=impl_modes(impl, mode), r_timeout=timeout, tol=tuple(tol), noise=noise)
        config.jobs()                                  # unknown data sets fail here, before R starts
        for path in case_files:                        # the checks of `compare --case`
            check_case(Case.load(path))
        run_id = start(store, config)
    out = Path(out or f".crosscheck/runs/{run_id}")
    out.mkdir(parents=True, exist_ok=True)
    click.echo(f"run {run_id}: store {store_path}, outputs {out}", err=True)
    if scheduler or (workers and executor == "dask"):
        from .distributed import DaskExecutor

        runner = DaskExecutor(workers=None if scheduler else workers, scheduler=scheduler,
                              timeout=case_timeout)
    else:
        runner = SubprocessPool(workers, case_timeout, out / "workers.log") if workers else serial
    sweep(store, run_id, config, runner)
    write_all(store, run_id, out)
    click.echo(summary(store, run_id))
    if shrink:
        from .corpus import class_name, save_reproducers

        for cls, path, how in save_reproducers(store, run_id, Path(corpus), shrink, shrink_budget):
            click.echo(f"{class_name(cls)} ({cls['n']} fits): {path} ({how})")
    sys.exit(EXIT_MATCH)


@main.command()
@case_options
@click.option("--mode", type=click.Choice(["lme4", "exact"]), default="lme4", show_default=True)
@click.option("--impl", default="reference", show_default=True, help=IMPL_HELP)
@click.option("--at", "at", default=None, metavar="PARS",
              help="comma-separated parameter vector for the PIRLS trace [default: glmer's optimum]")
@click.option("--attribution/--no-attribution", default=True, show_default=True,
              help="error attribution against the exact likelihood (single-term binomial/Poisson)")
@click.option("--html", type=click.Path(dir_okay=False), default=None,
              help="write the self-contained HTML report here")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--timeout", type=float, default=TIMEOUT, show_default=True,
              help="seconds per R call and per fit of the reference")
@fails_cleanly
def investigate(case_file, data, formula, family, link, weights, offset, nagq, name, mode, impl, at,
                attribution, html, fmt, timeout):
    """Why do the reference and glmer part? Profiles, PIRLS traces, components, diagnostics and
    the error attribution, per nAGQ (default 1)."""
    from .attribution import attribute, not_attributable
    from .investigate import investigate as run_investigation
    from .render import render_attribution, render_investigation
    from .sides import RSide
    from .tolerances import Policy

    case = build_case(case_file, data, formula, family, link, weights, offset, nagq or "1", name)
    if at is not None and len(case.nagq) > 1:
        raise ModelError("--at needs a single --nagq (the parameter vector's length depends on it)")
    r_side = RSide(timeout=timeout)
    (mode,) = impl_modes(impl, mode)
    invs = [run_investigation(case, k, mode, at, Policy.load("pyproject.toml"), r_side, python_timeout=timeout)
            for k in case.nagq]
    reason = not_attributable(case) if attribution else "not asked for (--no-attribution)"
    att = None
    if reason is None:
        try:
            att = attribute(case, r_side)
        except (ModelError, PirlsError) as e:       # e.g. no converged truth: the rest stands
            reason = f"failed: {e}"
    if html:
        from .report import investigation_html

        Path(html).write_text(investigation_html(invs, att))
    if fmt == "json":
        click.echo(json.dumps({"investigations": [i.to_json() for i in invs],
                               "attribution": att.to_json() if att else None,
                               "attribution_skipped": reason}, indent=1, allow_nan=False))
    else:
        click.echo("\n\n".join([*(render_investigation(i) for i in invs),
                                render_attribution(att) if att else f"error attribution: {reason}"]))
    sys.exit(EXIT_ERROR if any(i.undecided for i in invs) else EXIT_MATCH if all(i.passed for i in invs)
             else EXIT_MISMATCH)


@main.command()
@click.option("--run", "run_id", default=None, help="a run of the results store")
@click.option("--store", "store_path", type=click.Path(dir_okay=False),
              default=".crosscheck/results.sqlite", show_default=True)
@click.option("--jsonl", type=click.Path(dir_okay=False), default=None,
              help="per-case report JSON, one per line (a run's results.jsonl)")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="the HTML file to write")
@fails_cleanly
def report(run_id, store_path, jsonl, out):
    """The HTML report of a sweep: verdicts, difference distributions per nAGQ, worst cases with
    their case files, differences against data-set features."""
    from .report import run_html

    if (run_id is None) == (jsonl is None):
        raise ModelError("give one of --run RUN_ID and --jsonl FILE")
    if jsonl:
        from .outputs import read_jsonl

        records = read_jsonl(Path(jsonl))
        title = f"crosscheck report: {Path(jsonl).name}"
    else:
        from .outputs import store_records
        from .store import Store

        records = store_records(Store(store_path), run_id)
        title = f"crosscheck run {run_id}"
    Path(out).write_text(run_html(records, title))
    click.echo(out)


@main.command()
@click.option("--baseline", required=True, type=click.Path(dir_okay=False),
              help="the baseline file (e.g. tests/corpus/baseline.json); case files beside it in cases/")
@click.option("--update-baseline", is_flag=True, help="rewrite the baseline from this run")
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True,
              help="worker processes (0: in this process)")
@click.option("--case-timeout", type=float, default=600.0, show_default=True)
@click.option("--store", "store_path", type=click.Path(dir_okay=False),
              default=".crosscheck/results.sqlite", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=".crosscheck/gate", show_default=True,
              help="where gate.md and junit.xml go")
@click.option("--simulate-cpu", is_flag=True,
              help="run the cases in workers with numpy's AVX-512 kernels off (another CPU path)")
@click.option("--impl", default=None,
              help="the implementation gated (as compare's --impl; default: the baseline's, the reference's modes)")
@fails_cleanly
def gate(baseline, update_baseline, workers, case_timeout, store_path, out, simulate_cpu, impl):
    """CI gate: re-run the pinned corpus and compare with the baseline. Exit 1 when a passing
    comparison fails or a difference grows past the policy's factor (crosscheck/gate.py).
    --update-baseline measures every comparison's noise band, here and on a simulated other CPU."""
    from .executors import SubprocessPool, serial
    from .gate import run_gate
    from .machine import SIMULATED_CPU
    from .store import Store

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    simulated = SubprocessPool(workers, case_timeout, out / "workers.log", env=SIMULATED_CPU)
    executor = (simulated if simulate_cpu else SubprocessPool(workers, case_timeout, out / "workers.log")
                if workers else serial)
    found, run_id, text = run_gate(Path(baseline), Store(store_path), executor, out, update_baseline,
                                   simulated, None if impl is None else impl_modes(impl, "both"))
    click.echo(text)
    if update_baseline:
        click.echo(f"baseline {baseline} rewritten from run {run_id}")
        sys.exit(EXIT_MATCH)
    sys.exit(EXIT_MISMATCH if any(c.failing for c in found) else EXIT_MATCH)


@main.command()
@click.option("--run", "run_id", required=True, help="a run id of the store")
@click.option("--store", "store_path", type=click.Path(dir_okay=False),
              default=".crosscheck/results.sqlite", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="docs/findings.md", show_default=True)
@click.option("--corpus", type=click.Path(file_okay=False), default="docs/findings", show_default=True,
              help="where each failure class's reproducer (a case file) goes")
@click.option("--shrink-budget", type=float, default=45.0, show_default=True,
              help="seconds of shrinking per failure class")
@fails_cleanly
def findings(run_id, store_path, out, corpus, shrink_budget):
    """docs/findings.md from a stored sweep: verdicts, distribution of differences per nAGQ, mode
    and quantity, and every failure class with its shrunk reproducer."""
    from .findings import findings as write_findings
    from .store import Store

    store = Store(store_path)
    store.run(run_id)                                  # an unknown run fails before any work
    write_findings(store, run_id, Path(out), Path(corpus), shrink_budget)
    click.echo(f"wrote {out} and the reproducers in {corpus}/")


if __name__ == "__main__":
    main()
