"""Case files and formula strings are data (issue 7): R code handed to the harness through the
formula, column names, factor levels, family and link names, the weights/offset/nAGQ/control
arguments or a case's name is refused (naming the problem) or carried as data — never run.

Each attempt asks R (or a generated script) to create a marker file; every test asserts it does not
exist afterwards. Entry points: reference_impl.glmer, Case.make, RSession.fit (and glmer.R called
directly, and as a script), case files, the command line and the repro scripts. Every attempt is
recorded for docs/reliability.md (tests/reliability.py).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import reference_impl as ri
from crosscheck.case import Case
from crosscheck.compare import compare_case
from crosscheck.datasets import readme_example
from crosscheck.rbridge import R_SCRIPTS
from crosscheck.validate import check_case
from reference_impl import FormulaError, ModelError
from reliability import refused_cleanly, run_cli

F = "y ~ x1 + (1 | subject)"


@pytest.fixture
def marker(tmp_path):
    """The file every attempt tries to create; asserted absent after the test."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "injected R code ran"


def touch(marker) -> str:
    return f'system("touch {marker}")'


# (vector, formula with {code} for the R code, what the grammar says)
FORMULAS = [
    ("a call in a term", "y ~ x1 + {code} + (1 | subject)", "function 'system' at position 9"),
    ("eval(parse())", "y ~ x1 + (1 | subject) + eval(parse(text = '{code}'))", "function 'eval' at position 25"),
    ("backticks", "y ~ x1 + `system`('touch') + (1 | subject)",
     "`system` at position 9 is a column name in backticks; it cannot be called"),
    ("a second statement after ;", "y ~ x1 + (1 | subject); {code}", "function 'system' at position 24"),
    ("; without a call", "y ~ x1 + (1 | subject); y", "character ';' at position 22"),
    ("a second line", "y ~ x1 + (1 | subject)\n{code}", "function 'system' at position 23"),
    ("a second line without a call", "y ~ x1 + (1 | subject)\ny", "unexpected 'y' at position 23"),
    ("pkg::function", "y ~ x1 + base::{code} + (1 | subject)", "function 'system' at position 15"),
    ("pkg::name", "y ~ x1 + base::pi + (1 | subject)", "unexpected ':' at position 14"),
    ("an assignment", "y ~ x1 + (1 | subject) + (z <- 1)", "character '<' at position 28"),
    ("a string constant", "y ~ x1 + 'pwned' + (1 | subject)", "character \"'\" at position 9"),
    ("braces", "y ~ {{{code}}} + (1 | subject)", "function 'system' at position 5"),
    ("inside offset()", "y ~ x1 + offset({code}) + (1 | subject)", "function 'system' at position 16"),
    ("inside I()", "y ~ I({code}) + (1 | subject)", "function 'system' at position 6"),
    ("as the grouping factor", "y ~ x1 + (1 | {code})", "function 'system' at position 14"),
    ("in the response", "{code} ~ x1 + (1 | subject)", "function 'system' at position 0"),
    ("a comment hiding the rest", "y ~ x1 + (1 | subject) # {code}", "function 'system' at position 25"),
    ("$ to reach an object", "y ~ x1 + .GlobalEnv$x + (1 | subject)", "character '$' at position 19"),
]


def formula_of(template: str, marker) -> str:
    return template.format(code=touch(marker))


@pytest.mark.parametrize("vector, template, says", FORMULAS, ids=[v for v, *_ in FORMULAS])
def test_r_code_in_the_formula_is_refused_everywhere(vector, template, says, marker, R, reliability):
    """The grammar refuses it before Python or R evaluates anything: the reference, Case.make,
    the bridge (fit, devfun, glmmTMB); glmer.R's own check when called directly."""
    formula, data = formula_of(template, marker), readme_example()
    for entry, attempt in (
            ("reference_impl.glmer", lambda: ri.glmer(formula, data, "binomial")),
            ("Case.make", lambda: Case.make(data, formula, "binomial")),
            ("RSession.fit", lambda: R.fit(data, formula, "binomial")),
            ("RSession.devfun", lambda: R.devfun(data, formula, "binomial")),
            ("RSession.fit_glmmtmb", lambda: R.fit_glmmtmb(data, formula, "binomial"))):
        with pytest.raises(FormulaError) as refused:
            attempt()
        assert says in str(refused.value)
        reliability.add("injection", f"formula: {vector}", entry, "FormulaError", str(refused.value))
    record = R.call("cc_glmer_fit", data=data, formula=formula, family="binomial")
    if record["ok"]:                                # R's parser dropped a comment; nothing ran
        assert "#" in formula
    else:
        assert any(s in record["error"] for s in ("is not allowed in a formula", "unexpected",
                                                  "parsing result not of length one"))
    reliability.add("injection", f"formula: {vector}", "glmer.R cc_glmer_fit (no Python grammar)",
                    "error record" if not record["ok"] else "fits: R drops the comment unrun",
                    record["error"] or "")


ON_THE_COMMAND_LINE = [f for f in FORMULAS if f[0] in ("a call in a term", "eval(parse())",
                                                          "a second statement after ;", "a second line")]


@pytest.mark.parametrize("vector, template, says", ON_THE_COMMAND_LINE, ids=[v for v, *_ in ON_THE_COMMAND_LINE])
def test_r_code_in_the_formula_on_the_command_line_and_in_case_files(vector, template, says, marker,
                                                                      readme_csv, tmp_path, reliability):
    formula = formula_of(template, marker)
    said = refused_cleanly(run_cli("compare", "--data", str(readme_csv), "--family", "binomial",
                                   "--formula", formula), says)
    reliability.add("injection", f"formula: {vector}", "CLI compare", "exit 2", said)
    doc = Case.make(readme_example(), F, "binomial").to_json()
    (tmp_path / "evil.json").write_text(json.dumps({**doc, "formula": formula}))
    said = refused_cleanly(run_cli("repro", "--case", str(tmp_path / "evil.json"), "--out",
                                   str(tmp_path / "out")), says)
    assert not (tmp_path / "out").exists()
    reliability.add("injection", f"formula: {vector}", "CLI repro --case", "exit 2", said)


def test_the_r_script_refuses_r_code_on_its_own_command_line(marker, reliability):
    p = subprocess.run(["Rscript", str(R_SCRIPTS / "glmer.R"), "lme4", "cbpp",
                        f"incidence ~ period + {touch(marker)} + (1 | herd)", "binomial"],
                       capture_output=True, text=True, timeout=120)
    assert "function 'system' is not allowed in a formula" in p.stdout + p.stderr
    reliability.add("injection", "formula: a call in a term", "Rscript r_scripts/glmer.R", "error record",
                    "function 'system' is not allowed in a formula")


def test_a_backticked_name_is_only_a_column_name(marker, reliability, tmp_path):
    """Non-syntactic column names in backticks, as lme4 takes them (`x y`), here one that reads as
    R code: both sides fit the column of that name, named as lme4 names it; nothing runs."""
    name = touch(marker)
    data = readme_example().rename(columns={"x1": name})
    case = check_case(Case.make(data, f"y ~ `{name}` + (1 | subject)", "binomial", nagq=(0, 1)))
    report = compare_case(case, noise="failing")
    assert [c.verdict for c in report.results] == ["match", "match"]
    assert list(report.results[1].r.fixef) == list(report.results[1].python.fixef) == ["(Intercept)", f"`{name}`"]
    reliability.add("injection", "R code as a column name in backticks", "compare_case",
                    "match: a column like any other", f"fixef `{name}`")
    data.rename(columns={name: "x one"}).to_csv(tmp_path / "spaced.csv", index=False)
    p = run_cli("compare", "--data", str(tmp_path / "spaced.csv"), "--family", "binomial", "--formula",
                "y ~ `x one` + (1 | `subject`)", "--nagq", "1", "--noise", "none", "--format", "json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert list(json.loads(p.stdout)["results"][0]["r"]["fixef"]) == ["(Intercept)", "`x one`"]
    reliability.add("injection", "a column name with a space, in backticks", "CLI compare", "exit 0, match")


def code_named(marker) -> str:
    return f'`; {touch(marker)}; `'


def test_column_names_and_levels_holding_r_code_are_data(marker, R, reliability):
    """Columns and factor levels named like R code reach glmer by name (weights, offset) or as
    values and are fitted like any other; the names come back unchanged."""
    weights, offset = code_named(marker), f"{touch(marker)})"
    data = readme_example().assign(**{weights: 1.0, offset: 0.0, touch(marker): 1.0})
    data["subject"] = data["subject"].cat.rename_categories([f'"); {touch(marker)}; ("', "s2", "s3"])
    case = check_case(Case.make(data, F, "binomial", weights=weights, offset=offset, nagq=(1,)))
    (c,) = compare_case(case, noise="failing").results
    assert c.verdict == "match"
    assert list(c.r.ranef["subject"]["levels"]) == list(data["subject"].cat.categories)
    reliability.add("injection", "column names and factor levels holding R code (weights, offset, "
                    "an unused column, a level)", "compare_case", "match: fitted as data")


# (vector, Case.make arguments, what Case.make says, what the reference says, what glmer says)
ARGUMENTS = [
    ("family name", dict(family="binomial(); {code}"), "unknown family 'binomial(); system(",
     "unknown family 'binomial(); system(", "unsupported family: binomial(); system("),
    ("family with a link call", dict(family="binomial(link = {code})"), "unknown family",
     "unknown family", "unsupported family"),
    ("link name", dict(link='logit"); {code}; ("'), "unknown link 'logit\"); system(",
     "link 'logit\"); system(", "link not recognised"),
    ("link as a call", dict(link="{code}"), "unknown link 'system(", "link 'system(",
     "link not recognised"),
    ("weights naming R code, not a column", dict(weights="{code}"),
     "weights column 'system(\"touch", "column 'system(\"touch", "weights column 'system(\"touch"),
    ("offset naming R code, not a column", dict(offset="log(x1); {code}"),
     "offset column 'log(x1); system(", "column 'log(x1); system(", "offset column 'log(x1); system("),
    ("nAGQ as R code", dict(nagq="1; {code}"), "nAGQ must be comma-separated whole numbers",
     "nAGQ must be a whole number >= 0", None),
    ("control value as R code", dict(control={"tolPwrss": "{code}"}),
     "control.tolPwrss: expected a positive float", "control setting 'tolPwrss' must be a number", None),
    ("control name as R code", dict(control={"{code}": 1}), "unsupported setting",
     "unsupported control setting 'system(", "unused argument"),
]


def filled(value, marker):
    if isinstance(value, dict):
        return {filled(k, marker): filled(v, marker) for k, v in value.items()}
    return value.format(code=touch(marker)) if isinstance(value, str) else value


@pytest.mark.parametrize("vector, arguments, case_says, reference_says, r_says", ARGUMENTS,
                         ids=[v for v, *_ in ARGUMENTS])
def test_r_code_in_the_other_arguments(vector, arguments, case_says, reference_says, r_says, marker,
                                       R, reliability):
    """Names are compared with the lists of families, links, columns and settings; glmer receives
    them as strings (never parsed) and refuses them, or compares them as values."""
    a = {"formula": F, "family": "binomial", **filled(arguments, marker)}
    data = readme_example()
    with pytest.raises(ModelError) as refused:
        Case.make(data, **a)
    assert case_says in str(refused.value)
    reliability.add("injection", vector, "Case.make", "CaseError", str(refused.value))
    with pytest.raises(ModelError) as refused:
        ri.glmer(a["formula"], data, a["family"], link=a.get("link"), weights=a.get("weights"),
                 offset=a.get("offset"), nAGQ=a.get("nagq", 1), control=a.get("control"))
    assert reference_says in str(refused.value)
    reliability.add("injection", vector, "reference_impl.glmer", "ModelError", str(refused.value))
    record = R.fit(data, a["formula"], a["family"], link=a.get("link"), weights=a.get("weights"),
                   offset=a.get("offset"), nAGQ=a.get("nagq", 1), control=a.get("control"))
    assert r_says is None or r_says in record["error"]
    reliability.add("injection", vector, "RSession.fit", "error record" if not record["ok"] else "fits",
                    record["error"] or "a string compared as a value, never parsed")


@pytest.mark.parametrize("flags", [("--family", "binomial(); {code}"), ("--link", "{code}"),
                                   ("--weights", "{code}"), ("--nagq", "1; {code}"),
                                   ("--data", "R:lme4::cbpp; {code}")],
                         ids=lambda f: f[0])
def test_r_code_in_command_line_options(flags, marker, readme_csv, reliability):
    options = {"--data": str(readme_csv), "--family": "binomial", "--formula": F,
               flags[0]: flags[1].format(code=touch(marker))}
    said = refused_cleanly(run_cli("compare", *[x for kv in options.items() for x in kv]), "system(")
    reliability.add("injection", f"command line {flags[0]}", "CLI compare", "exit 2", said)


NAMES = [("a newline ending the R script's comment", 'x\n{code}\n#'),
         ("triple quotes ending the Python script's docstring",
          '"""\nimport os; os.system("touch {marker}")\n"""')]


@pytest.mark.parametrize("kind, name", NAMES, ids=[k for k, _ in NAMES])
def test_a_case_name_cannot_become_code_in_repro_scripts(kind, name, marker, tmp_path, reliability):
    """`crosscheck repro` writes the case's name into the scripts it generates; both run."""
    case = Case.make(readme_example(), F, "binomial", nagq=(0,),
                     name=name.format(code=touch(marker), marker=marker))
    p = run_cli("repro", "--case", str(case.save(tmp_path / "case.json")), "--out", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    scripts = sorted((tmp_path / "out").iterdir())
    assert [s.suffix for s in scripts] == [".R", ".py"]
    for script in scripts:
        runner = {".R": "Rscript", ".py": sys.executable}[script.suffix]
        run = subprocess.run([runner, str(script)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
    reliability.add("injection", f"case name: {kind}", "CLI repro, both scripts run",
                    "the name is a label of letters, digits, - and _", "")


def test_r_data_set_names_are_checked_before_r_looks_them_up(marker, R, reliability):
    with pytest.raises(Exception, match="not a package/data set name"):
        R.dataset("base", touch(marker))
    reliability.add("injection", "R data set name", "RSession.dataset", "R error (cc_dataset)",
                    "not a package/data set name")


def test_numbers_in_data_are_never_parsed(marker, R, reliability):
    """Text that looks like R in a numeric column of a CSV makes it a text column: refused as a
    response, a factor as a covariate — never evaluated."""
    data = readme_example().assign(y=[touch(marker)] + ["1"] * 7 + ["0"] * 7)
    with pytest.raises(ModelError, match="holds text"):
        check_case(Case.make(data, F, "binomial"))
    (c,) = compare_case(Case.make(data, F, "binomial"), noise="failing").results
    assert c.verdict == "both-refused" and c.diagnosis.refusal.agree
    reliability.add("injection", "R code as a response value", "compare_case", "both-refused, reasons agree",
                    c.r.error)
