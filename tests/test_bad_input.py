"""Bad input through every entry point (issue 7), against the real glmer.

Each kind is refused with a message naming the column, row or parameter: `ModelError` from
`reference_impl.glmer`, `CaseError` from `Case.make`, `check_case` and `Case.load`, exit code 2
without a traceback from the command line. `compare_case` (the Python API, no up-front checks)
shows what each side did: `both-refused` passes when the reasons agree. Inputs lme4 accepts with a
message are fitted alike by both sides and the report shows the message. Every trial is recorded
for docs/reliability.md (tests/reliability.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

import reference_impl as ri
from crosscheck.case import Case, CaseError
from crosscheck.compare import compare_case
from crosscheck.datasets import readme_example, simulated
from crosscheck.validate import check_case
from reference_impl import FormulaError, ModelError
from reliability import refused_cleanly, run_cli

F = "y ~ x1 + (1 | subject)"


def verdict_of(c) -> str:
    if c.verdict == "both-refused":
        return f"both-refused, reasons {'agree' if c.diagnosis.refusal.agree else 'differ'}"
    return c.verdict


def readme(**columns) -> pd.DataFrame:
    return readme_example().assign(**columns)


def with_value(column: str, row: int, value) -> pd.DataFrame:
    """The README example with `value` at (`row`, `column`); a float column unless a factor."""
    data = readme_example()
    if not isinstance(data[column].dtype, pd.CategoricalDtype):
        data[column] = data[column].astype(float)
    data.loc[row, column] = value
    return data


ZEROS = np.r_[0.0, np.ones(14)]
OBS_LEVELS = pd.Categorical([f"l{i:02d}" for i in range(15)])


@dataclass(frozen=True)
class Bad:
    """Bad data for a well-formed case: `check` is in check_case's CaseError, `reference` in
    reference_impl.glmer's ModelError, `verdict` is compare_case's against glmer."""

    kind: str
    spec: dict
    check: str
    reference: str
    verdict: str
    cli: bool = False


def spec(data=None, formula=F, family="binomial", **kw) -> dict:
    return dict(data=readme_example() if data is None else data, formula=formula, family=family,
                nagq=kw.pop("nagq", (1,)), **kw)


BAD_DATA = [
    Bad("NaN in the response", spec(with_value("y", 3, np.nan)),
        "column 'y' has 1 missing or infinite value(s), the first at row 3",
        "column 'y' has a missing or infinite value at row 3", "python-refused", cli=True),
    Bad("Inf in a covariate", spec(with_value("x1", 3, np.inf)),
        "column 'x1' has 1 missing or infinite value(s), the first at row 3 (inf)",
        "column 'x1' has a missing or infinite value at row 3", "both-refused, reasons agree"),
    Bad("NA in a grouping factor", spec(with_value("subject", 2, None)),
        "column 'subject' has 1 missing or infinite value(s), the first at row 2",
        "column 'subject' has a missing or infinite value at row 2", "python-refused"),
    Bad("NaN in the weights", spec(readme(w=np.r_[np.nan, np.ones(14)]), weights="w"),
        "column 'w' has 1 missing or infinite value(s), the first at row 0",
        "column 'w' has a missing or infinite value at row 0", "python-refused"),
    Bad("Inf in the offset", spec(readme(o=np.r_[np.inf, np.zeros(14)]), offset="o"),
        "column 'o' has 1 missing or infinite value(s), the first at row 0",
        "column 'o' has a missing or infinite value at row 0", "both-refused, reasons differ", cli=True),
    Bad("a transformed term infinite (log 0)", spec(readme(z=ZEROS), "y ~ log(z) + (1 | subject)"),
        "log(z) is NaN or infinite at row 0 (-inf)", "log(z) is NaN or infinite at row 0",
        "both-refused, reasons agree"),
    Bad("text used in arithmetic", spec(formula="y ~ log(subject) + (1 | subject)"),
        "column 'subject' is not numeric but is used in arithmetic",
        "column 'subject' is not numeric but is used in arithmetic", "both-refused, reasons differ"),
    Bad("constant response", spec(readme(y=1)), "the response y is constant (every row: 1)",
        "Response is constant", "both-refused, reasons agree", cli=True),
    Bad("binomial response outside [0, 1]", spec(readme(y=readme_example().y * 2)),
        "response 'y' must be in [0, 1] (0/1 or a proportion) for family 'binomial': row 0 has 2",
        "binomial response must be in [0, 1]", "both-refused, reasons agree"),
    Bad("text response", spec(readme(y=readme_example().y.map({0: "no", 1: "yes"}))),
        "response 'y' holds text", "response 'y' holds text", "both-refused, reasons agree", cli=True),
    Bad("factor response for poisson",
        spec(readme(y=pd.Categorical(readme_example().y.map({0: "no", 1: "yes"}))), family="poisson"),
        "response 'y' is a factor; family 'poisson' needs a numeric response",
        "a factor response is only for the binomial family", "both-refused, reasons agree"),
    Bad("negative counts", spec(readme(y=-readme_example().y), family="poisson"),
        "response 'y' must be a whole number >= 0 for family 'poisson': row 0 has -1",
        "negative values not allowed for the 'Poisson' family: row 0", "both-refused, reasons agree"),
    Bad("non-integer counts", spec(readme(y=readme_example().y + 0.5), family="poisson"),
        "response 'y' must be a whole number >= 0 for family 'poisson': row 0 has 1.5",
        "Poisson counts must be whole numbers: row 0 has y = 1.5", "python-refused", cli=True),
    Bad("Gamma response not positive", spec(family="Gamma"),
        "response 'y' must be > 0 for family 'Gamma': row 5 has 0",
        "non-positive values not allowed for the 'Gamma' family: row 5", "both-refused, reasons agree"),
    Bad("cbind response for poisson",
        spec(readme(s=readme_example().y, n=2), "cbind(s, n - s) ~ x1 + (1 | subject)", "poisson"),
        "a cbind(successes, failures) response is for family 'binomial' only, not 'poisson'",
        "a cbind(successes, failures) response is only for the binomial family",
        "both-refused, reasons differ"),
    Bad("trials < successes", spec(readme(s=readme_example().y + 1, n=readme_example().y),
                                   "cbind(s, n - s) ~ x1 + (1 | subject)"),
        "cbind() failures n - s is negative at row 0 (-1); are there fewer trials than successes?",
        "binomial cbind() failures must be >= 0: row 0 has -1", "both-refused, reasons differ", cli=True),
    Bad("negative weights", spec(readme(w=np.r_[-1.0, np.ones(14)]), weights="w"),
        "weights column 'w' is negative at row 0 (-1)", "negative weights not allowed: weights row 0 is -1",
        "both-refused, reasons agree", cli=True),
    Bad("text weights", spec(readme(w=pd.Categorical(["a"] * 15)), weights="w"),
        "weights column 'w' is not numeric", "weights column 'w' is not numeric",
        "both-refused, reasons differ"),
    Bad("empty data", spec(readme_example().iloc[:0]), "the data have no rows",
        "the data frame has no rows", "both-refused, reasons agree", cli=True),
    Bad("grouping factor with one level", spec(readme(subject=pd.Categorical(["s1"] * 15))),
        "grouping factor 'subject' has 1 level; glmer needs at least 2",
        "grouping factor 'subject' has only 1 level", "both-refused, reasons agree", cli=True),
    Bad("grouping factor with as many levels as rows, and a slope",
        spec(readme(g=OBS_LEVELS), "y ~ 1 + (1 + x1 | g)"),
        "term (1 + x1 | g) has 15 levels × 2 column(s) = 30 random effects for 15 rows",
        "number of observations (=15) < number of random effects (=30) for term (1 + x1 | g)",
        "both-refused, reasons agree", cli=True),
    Bad("no random-effects term", spec(formula="y ~ x1"), "the formula has no random-effects term",
        "no random effects terms specified in formula", "both-refused, reasons agree"),
    Bad("link not available for the family", spec(family="poisson", link="logit"),
        "link 'logit' is not available for family 'poisson'",
        "link 'logit' is not available for family 'poisson'", "both-refused, reasons differ", cli=True),
    Bad("gaussian with the identity link (an LMM)", spec(readme(y=readme_example().x1 * 1.5), family="gaussian"),
        "family 'gaussian' with the identity link is a linear mixed model",
        "family 'gaussian' with the identity link is a linear mixed model", "both-refused, reasons differ"),
    Bad("nAGQ > 1 with a vector random-effects term", spec(simulated(), "count ~ x + (1 + x | g)", "poisson", nagq=(5,)),
        "nAGQ = 5 needs a single random-effects term with one column, like (1 | g); this formula has (1 + x | g)",
        "nAGQ > 1 is only available for models with a single, scalar random-effects term",
        "both-refused, reasons agree", cli=True),
    Bad("nAGQ > 1 with two random-effects terms",
        spec(simulated(), "count ~ x + (1 | g) + (1 | h)", "poisson", nagq=(5,)),
        "nAGQ = 5 needs a single random-effects term with one column, like (1 | g); this formula has (1 | g), (1 | h)",
        "nAGQ > 1 is only available for models with a single, scalar random-effects term",
        "both-refused, reasons agree"),
]


def fit_reference(case: Case, nAGQ: int):
    return ri.glmer(case.formula, case.data, family=case.family, link=case.link, nAGQ=nAGQ,
                    weights=case.weights, offset=case.offset, control=case.control)


@pytest.fixture(scope="module", autouse=True)
def versions(R, reliability):
    reliability.versions.update({"R": R.versions()["R"], "lme4": R.versions()["lme4"]})


@pytest.mark.parametrize("bad", BAD_DATA, ids=lambda b: b.kind)
def test_bad_data_through_the_api(bad, reliability, tmp_path):
    """check_case (and a saved case file) refuses; the reference refuses; compare_case runs both
    sides against glmer and gives the documented verdict."""
    case = Case.make(**bad.spec)
    for entry, source in (("check_case", case), ("case file: Case.load + check_case",
                                                  Case.load(case.save(tmp_path / "case.json")))):
        with pytest.raises(CaseError) as refused:
            check_case(source)
        assert bad.check in str(refused.value)
        reliability.add("bad input", bad.kind, entry, "CaseError", str(refused.value))
    up_front = str(refused.value)
    with pytest.raises(ModelError) as refused:
        fit_reference(case, max(case.nagq))
    assert bad.reference in str(refused.value)
    reliability.add("bad input", bad.kind, "reference_impl.glmer", "ModelError", str(refused.value))
    (c,) = compare_case(case, noise="failing").results
    assert verdict_of(c) == bad.verdict, (c.python.error, c.r.error)
    assert c.passed == (bad.verdict == "both-refused, reasons agree")
    lme4 = c.r.error or (f"fits {len(c.r.fitted)} of {len(case.data)} rows, -2 log L = "
                         f"{c.r.minus2loglik:.6g}, {len(c.r.messages)} warning(s)")
    reliability.add("bad input", bad.kind, "compare_case", verdict_of(c), f"lme4: {lme4}")
    if not c.passed:
        reliability.difference(bad.kind, lme4, c.python.error, f"refused up front: {up_front}")


@pytest.mark.parametrize("bad", [b for b in BAD_DATA if b.cli], ids=lambda b: b.kind)
def test_bad_data_through_the_cli(bad, reliability, tmp_path):
    """`compare --case` and `run --case` refuse the case file up front, with the same message."""
    path = Case.make(**bad.spec).save(tmp_path / "case.json")
    message = refused_cleanly(run_cli("compare", "--case", str(path)), bad.check)
    reliability.add("bad input", bad.kind, "CLI compare --case", "exit 2", message)
    message = refused_cleanly(run_cli("run", "--case", str(path), "--cases", "0", "--datasets", "none",
                                      "--workers", "0", "--store", str(tmp_path / "s.sqlite"),
                                      "--out", str(tmp_path / "out")), bad.check)
    assert not (tmp_path / "out").exists()
    reliability.add("bad input", bad.kind, "CLI run --case", "exit 2, before any fit", message)


HUGE = [("a covariate × 1e300", dict(data=readme(x1=readme_example().x1 * 1e300))),
        ("a huge finite prior weight (1e300)", dict(data=readme(w=np.r_[1e300, np.ones(14)]), weights="w"))]


@pytest.mark.parametrize("kind, changes", HUGE, ids=[k for k, _ in HUGE])
def test_huge_finite_values_are_refused_with_lme4s_message(kind, changes, reliability):
    """Finite, so no up-front check refuses them; PIRLS overflows to NaN, and the reference
    refuses with lme4's message in both modes (it crashed before issue 16)."""
    case = check_case(Case.make(**spec(nagq=(0, 1), **changes)))
    for k in case.nagq:
        with pytest.raises(ri.PirlsError, match=r"^PIRLS loop resulted in NaN value$") as refused:
            fit_reference(case, k)
    reliability.add("bad input", kind, "reference_impl.glmer", "PirlsError", str(refused.value))
    report = compare_case(case, modes=("lme4", "exact"), noise="failing")
    assert [verdict_of(c) for c in report.results] == ["both-refused, reasons agree"] * 4
    assert {c.r.error for c in report.results} == {"PIRLS loop resulted in NaN value"}
    reliability.add("bad input", kind, "compare_case", "both-refused, reasons agree (lme4 and exact mode)",
                    f"lme4: {report.results[0].r.error}")


@dataclass(frozen=True)
class BadSpec:
    """A malformed specification: `case` is in Case.make's CaseError, `reference` in
    reference_impl.glmer's ModelError; `r` is what glmer (RSession.fit) says: part of its error,
    "fits" (lme4 accepts it) or "grammar" (the bridge refuses the formula before R sees it).
    `cli` holds the flags that give it on the command line, `cli_says` the message if not `case`."""

    kind: str
    args: dict
    case: str
    reference: str
    r: str
    cli: tuple[str, ...] = ()
    cli_says: str = ""


def args(formula=F, family="binomial", **kw) -> dict:
    return dict(formula=formula, family=family, **kw)


BAD_SPECS = [
    BadSpec("unknown family", args(family="binomal"), "unknown family 'binomal'",
            "unknown family 'binomal'", "unsupported family: binomal", ("--family", "binomal")),
    BadSpec("unknown link", args(link="logitt"), "unknown link 'logitt'",
            "link 'logitt' is not available for family 'binomial'", "link not recognised",
            ("--family", "binomial", "--link", "logitt")),
    BadSpec("formula column not in the data", args("y ~ x9 + (1 | subject)"),
            "column(s) 'x9' of the formula are not in the data", "column 'x9' is not in the data",
            "object 'x9' not found", ("--formula", "y ~ x9 + (1 | subject)")),
    BadSpec("weights column not in the data", args(weights="w"), "weights column 'w' is not in the data",
            "column 'w' is not in the data", "weights column 'w' is not in the data", ("--weights", "w")),
    BadSpec("offset column not in the data", args(offset="o"), "offset column 'o' is not in the data",
            "column 'o' is not in the data", "offset column 'o' is not in the data"),
    BadSpec("negative nAGQ", args(nagq=-1), "nAGQ = -1 is outside 0..100",
            "nAGQ must be a whole number >= 0, not -1", "fits", ("--nagq", "-1")),
    BadSpec("fractional nAGQ", args(nagq=1.5), "nAGQ must be a whole number, not 1.5",
            "nAGQ must be a whole number >= 0, not 1.5", "fits", ("--nagq", "1.5"),
            "nAGQ must be comma-separated whole numbers, not '1.5'"),
    BadSpec("huge nAGQ", args(nagq=1000), "nAGQ = 1000 is outside 0..100",
            "nAGQ = 1000 is out of range", "ord < 101L is not TRUE", ("--nagq", "1000")),
    BadSpec("unbalanced parentheses", args("y ~ x1 + (1 | subject"), "expected ')' at position 21",
            "expected ')' at position 21", "grammar", ("--formula", "y ~ x1 + (1 | subject")),
    BadSpec("a closing parenthesis too many", args("y ~ x1 + (1 | subject))"),
            "unexpected ')' at position 22", "unexpected ')' at position 22", "grammar"),
    BadSpec("unknown function in the formula", args("y ~ foo(x1) + (1 | subject)"),
            "function 'foo' at position 4 is not allowed", "function 'foo' at position 4 is not allowed",
            "grammar", ("--formula", "y ~ foo(x1) + (1 | subject)")),
    BadSpec("formula without a response", args("~ x1 + (1 | subject)"), "unexpected '~' at position 0",
            "unexpected '~' at position 0", "grammar"),
    BadSpec("not a formula", args("y + x1"), "the formula needs a response",
            "the formula needs a response", "grammar"),
    BadSpec("empty formula", args(" "), "the formula must be a non-empty string",
            "the formula must be a non-empty string", "grammar", ("--formula", " ")),
    BadSpec("a number as a term", args("y ~ 2 + (1 | subject)"), "a number (2) is only allowed as 0 or 1",
            "a number (2) is only allowed as 0 or 1", "grammar"),
    BadSpec("unsupported control setting", args(control={"optimizer": "Nelder_Mead"}),
            "control.optimizer: unsupported setting", "unsupported control setting 'optimizer'",
            "fits"),
    BadSpec("control setting of the wrong type", args(control={"tolPwrss": "small"}),
            "control.tolPwrss: expected a positive float, got 'small'",
            "control setting 'tolPwrss' must be a number, not 'small'",
            "pwrssUpdate did not converge in (maxit) iterations"),
]


def r_fit(R, data, a: dict) -> dict | str:
    """glmer through the bridge on the arguments of a BadSpec: its record, or "grammar"."""
    try:
        return R.fit(data, a["formula"], a["family"], link=a.get("link"), weights=a.get("weights"),
                     offset=a.get("offset"), nAGQ=a.get("nagq", 1), control=a.get("control"))
    except FormulaError:
        return "grammar"


@pytest.mark.parametrize("bad", BAD_SPECS, ids=lambda b: b.kind)
def test_bad_specs_through_the_api(bad, R, reliability):
    """Case.make and the reference refuse, naming the problem; glmer through the bridge refuses
    (as data, an error record), is never reached (the formula grammar), or accepts."""
    a, data = bad.args, readme_example()
    with pytest.raises(ModelError) as refused:                  # CaseError, FormulaError
        Case.make(data, **a)
    assert bad.case in str(refused.value)
    reliability.add("bad input", bad.kind, "Case.make", type(refused.value).__name__, str(refused.value))
    with pytest.raises(ModelError) as refused:
        ri.glmer(a["formula"], data, family=a["family"], link=a.get("link"), nAGQ=a.get("nagq", 1),
                 weights=a.get("weights"), offset=a.get("offset"), control=a.get("control"))
    assert bad.reference in str(refused.value)
    reliability.add("bad input", bad.kind, "reference_impl.glmer", type(refused.value).__name__,
                    str(refused.value))
    record = r_fit(R, data, a)
    if record == "grammar":
        assert bad.r == "grammar"
        reliability.add("bad input", bad.kind, "RSession.fit", "FormulaError before R", "")
    elif record["ok"]:
        assert bad.r == "fits"
        reliability.add("bad input", bad.kind, "RSession.fit", "lme4 fits",
                        f"nAGQ recorded by lme4: {record['value']['nAGQ']}")
        reliability.difference(bad.kind, "fits", str(refused.value), "Case.make refuses it")
    else:
        assert bad.r in record["error"]
        reliability.add("bad input", bad.kind, "RSession.fit", "error record", record["error"])


@pytest.mark.parametrize("bad", [b for b in BAD_SPECS if b.cli], ids=lambda b: b.kind)
def test_bad_specs_through_the_cli(bad, readme_csv, reliability):
    given = dict(zip(bad.cli[::2], bad.cli[1::2]))
    flags = {"--data": str(readme_csv), "--formula": F, "--family": "binomial", **given}
    message = refused_cleanly(run_cli("compare", *[x for kv in flags.items() for x in kv]),
                              bad.cli_says or bad.case)
    reliability.add("bad input", bad.kind, "CLI compare", "exit 2", message)


def readme_doc() -> dict:
    return Case.make(readme_example(), F, "binomial").to_json()


def edited(edit) -> str:
    doc = readme_doc()
    edit(doc)
    return json.dumps(doc)


def column(doc: dict, name: str) -> dict:
    return next(c for c in doc["data"]["columns"] if c["name"] == name)


# (kind, file content, the message Case.load gives)
BAD_FILES = [
    ("truncated JSON", json.dumps(readme_doc())[:200], "not valid JSON (Unterminated string"),
    ("empty file", "", "not valid JSON (Expecting value at line 1, column 1)"),
    ("binary garbage", "\udcff\udcfe\x00\x01", "not UTF-8 text (byte 0)"),
    ("JSON nested 100000 deep", "[" * 100_000, "JSON nested too deeply"),
    ("a list, not an object", "[1, 2]", "expected a JSON object, got a list"),
    ("another format", edited(lambda d: d.update(format="something-else")),
     "not a glmm-crosscheck-case version 1 file (format='something-else'"),
    ("a newer version", edited(lambda d: d.update(version=2)), "version=2)"),
    ("formula of the wrong JSON type", edited(lambda d: d.update(formula=42)),
     "field 'formula' must be a string, got a number"),
    ("nagq of the wrong JSON type", edited(lambda d: d.update(nagq="1")),
     "nagq must be a list of whole numbers, got a string"),
    ("nrow of the wrong JSON type", edited(lambda d: d["data"].update(nrow="15")),
     "data.nrow: expected a whole number >= 0, got '15'"),
    ("columns not a list", edited(lambda d: d["data"].update(columns={})),
     "data.columns: expected a list, got an object"),
    ("a column shorter than nrow", edited(lambda d: column(d, "x1")["values"].pop()),
     "columns[1] ('x1').values: has 14 entries, nrow is 15"),
    ("a factor code out of range", edited(lambda d: column(d, "subject")["codes"].__setitem__(4, 7)),
     "columns[2] ('subject').codes[4]: expected -1 or a level index below 3, got 7"),
    ("a boolean in a numeric column", edited(lambda d: column(d, "y").update(type="numeric", values=[True] * 15)),
     "columns[0] ('y').values[0]: expected a number, null, 'Inf', '-Inf' or 'NaN', got True"),
    ("a bare NaN (not JSON)", json.dumps(readme_doc()).replace('"values": [1,', '"values": [NaN,', 1),
     "NaN is not JSON; write numeric specials as the strings"),
    ("an unknown column type", edited(lambda d: column(d, "x1").update(type="complex")),
     "columns[1] ('x1').type: expected one of numeric, integer, logical, character, factor, ordered, got 'complex'"),
    ("a column name twice", edited(lambda d: d["data"]["columns"].append(dict(column(d, "x1")))),
     "columns[3]: column 'x1' appears twice"),
    ("an unknown field", edited(lambda d: d.update(command="rm -rf /")), "unknown field(s) command"),
    ("data_file outside the case's folder", edited(lambda d: (d.pop("data"), d.update(data_file="../../etc/passwd"))),
     "data_file must be a file beside the case file, not '../../etc/passwd'"),
    ("data_file that does not exist", edited(lambda d: (d.pop("data"), d.update(data_file="nowhere.csv"))),
     "nowhere.csv does not exist"),
    ("both data and data_file", edited(lambda d: d.update(data_file="x.csv")),
     "give exactly one of 'data' and 'data_file'"),
    ("control of the wrong JSON type", edited(lambda d: d.update(control=[1])),
     "control must be an object of glmerControl settings, got a list"),
]
CLI_FILES = ("truncated JSON", "binary garbage", "JSON nested 100000 deep", "a factor code out of range",
             "data_file outside the case's folder", "an unknown field")


@pytest.mark.parametrize("kind, content, message", BAD_FILES, ids=[k for k, *_ in BAD_FILES])
def test_malformed_case_files(kind, content, message, tmp_path, reliability):
    path = tmp_path / "case.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(CaseError) as refused:
        Case.load(path)
    assert message in str(refused.value) and str(path) in str(refused.value)
    reliability.add("bad input", f"case file: {kind}", "Case.load", "CaseError", str(refused.value))
    if kind in CLI_FILES:
        said = refused_cleanly(run_cli("compare", "--case", str(path)), message)
        reliability.add("bad input", f"case file: {kind}", "CLI compare --case", "exit 2", said)


def test_missing_case_file(tmp_path, reliability):
    path = tmp_path / "absent.json"
    with pytest.raises(CaseError, match="No such file or directory"):
        Case.load(path)
    said = refused_cleanly(run_cli("repro", "--case", str(path)), "No such file or directory")
    reliability.add("bad input", "case file: missing", "CLI repro --case", "exit 2", said)


@pytest.fixture(scope="module")
def garbage_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "garbage.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    return path


# (kind, arguments after `compare`, the message); {csv} and {garbage} are data files
BAD_COMMAND_LINES = [
    ("no --family", ("--data", "{csv}", "--formula", F), "missing --family (or give --case FILE)"),
    ("--case together with --formula", ("--case", "{csv}", "--formula", F), "--case replaces --formula"),
    ("a malformed R data set name", ("--data", "R:lme4", "--formula", F, "--family", "binomial"),
     "expected R:<package>::<dataset>"),
    ("a data file that does not exist", ("--data", "{csv}.missing", "--formula", F, "--family", "binomial"),
     "does not exist"),
    ("a data file of an unknown format", ("--data", "{garbage}.xlsx", "--formula", F, "--family", "binomial"),
     "does not exist"),
    ("a CSV file that is binary garbage", ("--data", "{garbage}", "--formula", F, "--family", "binomial"),
     "cannot be read"),
    ("nAGQ that are not numbers", ("--data", "{csv}", "--formula", F, "--family", "binomial", "--nagq", "a,b"),
     "nAGQ must be comma-separated whole numbers, not 'a,b'"),
    ("an unknown tolerance", ("--data", "{csv}", "--formula", F, "--family", "binomial", "--tol", "lme4.beta=1"),
     "unknown quantity 'beta'"),
    ("an unknown mode", ("--data", "{csv}", "--formula", F, "--family", "binomial", "--mode", "fast"),
     "Invalid value for '--mode'"),
    ("an R data set that does not exist", ("--data", "R:lme4::nosuch", "--formula", F, "--family", "binomial"),
     "no data set lme4::nosuch"),
]


@pytest.mark.parametrize("kind, argv, message", BAD_COMMAND_LINES, ids=[k for k, *_ in BAD_COMMAND_LINES])
def test_bad_command_lines(kind, argv, message, readme_csv, garbage_csv, reliability):
    argv = [a.format(csv=readme_csv, garbage=garbage_csv) for a in argv]
    said = refused_cleanly(run_cli("compare", *argv), message)
    reliability.add("bad input", f"command line: {kind}", "CLI compare", "exit 2", said)


# (kind, case arguments, the message both sides give, the note the report adds)
ACCEPTED = [
    ("rank-deficient X (a column twice over)",
     spec(readme(x2=readme_example().x1 * 2), "y ~ x1 + x2 + (1 | subject)"),
     "fixed-effect model matrix is rank deficient so dropping 1 column / coefficient", ""),
    ("rows with zero prior weight", spec(readme(w=np.r_[0.0, 0.0, np.ones(13)]), weights="w"),
     "", "2 row(s) have zero prior weight ('w'): both sides keep them, and they contribute nothing"),
    ("a three-level factor response (binomial: y != first level)",
     spec(readme(y=pd.Categorical(list("abcab") * 3))), "", ""),
    ("a grouping factor with more levels than rows (unused levels dropped)",
     spec(readme(g=pd.Categorical(OBS_LEVELS, categories=[f"l{i:02d}" for i in range(20)])),
          "y ~ x1 + (1 | g)"), "", ""),
    ("a logical response for poisson", spec(readme(y=readme_example().y.astype(bool)), family="poisson"),
     "", ""),
    ("a text covariate (a factor on both sides)",
     spec(readme(f=["lo", "hi", "mid"] * 5), "y ~ f + (1 | subject)"), "", ""),
]


@pytest.mark.parametrize("kind, arguments, message, note", ACCEPTED, ids=[k for k, *_ in ACCEPTED])
def test_accepted_like_lme4(kind, arguments, message, note, reliability):
    """Inputs lme4 accepts (some with a message): the up-front checks let them through, both
    sides fit them alike, and the report carries the message or a note."""
    case = check_case(Case.make(**arguments))
    report = compare_case(case, noise="failing")
    (c,) = report.results
    assert c.verdict == "match", c.diffs
    result = report.to_json()["results"][0]
    if message:
        assert message in c.python.messages and message in c.r.messages
        assert message in result["r_warnings"] and message in result["python"]["messages"]
    if note:
        assert any(note in n for n in result["notes"])
    reliability.add("bad input", f"accepted: {kind}", "compare_case", "match",
                    message or note or "; ".join(result["r_warnings"]) or "no message")


def test_accepted_input_shows_lme4s_message_on_the_command_line(tmp_path, reliability):
    kind, arguments, message, _ = ACCEPTED[0]
    path = Case.make(**arguments).save(tmp_path / "case.json")
    p = run_cli("compare", "--case", str(path), "--format", "json", "--noise", "failing")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    (result,) = json.loads(p.stdout)["results"]
    assert message in result["r_warnings"] and message in result["python"]["messages"]
    reliability.add("bad input", f"accepted: {kind}", "CLI compare --case", "exit 0, match", message)
