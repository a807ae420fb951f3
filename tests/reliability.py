"""The record behind docs/reliability.md (issue 7).

The reliability tests (`MODULES`) record every input they try — its kind, the entry point, what
happened, the message — through the session fixture `reliability`; when a session has run every
one of their tests and all passed, `pytest_sessionfinish` rewrites docs/reliability.md from the
record. Rows are sorted and carry no timestamps, so an unchanged suite rewrites the same file.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
CLI = [sys.executable, "-m", "crosscheck.cli"]
MODULES = ("test_bad_input.py", "test_injection.py", "test_faults.py")
SECTIONS = {"bad input": "Bad input", "injection": "Code injection", "fault": "Faults"}
_TMP = re.compile(r"\S*pytest-of-[^/\s]+/pytest-\d+/(popen-gw\d+/)?[^/\s]+")   # xdist: a level per worker
_RUN_ID = re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{4}\b")              # store.new_run's ids


@dataclass(frozen=True, order=True)
class Trial:
    section: str        # a key of SECTIONS
    kind: str
    entry: str          # reference_impl.glmer, check_case, compare_case, RSession.fit, Case.load, CLI, …
    outcome: str        # what happened, e.g. "CaseError", "exit 2", "both-refused (reasons agree)"
    message: str = ""


@dataclass
class Record:
    trials: set[Trial] = field(default_factory=set)
    differences: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    expected: set[str] = field(default_factory=set)
    passed: set[str] = field(default_factory=set)
    partial: bool = False

    def add(self, section: str, kind: str, entry: str, outcome: str, message: str = "") -> None:
        assert section in SECTIONS, section
        self.trials.add(Trial(section, kind, entry, outcome, _clean(message)))

    def difference(self, kind: str, lme4: str, reference: str, harness: str) -> None:
        """An input on which lme4 1.1-31 and the reference knowingly part."""
        self.differences[kind] = (_clean(lme4), _clean(reference), _clean(harness))

    @property
    def complete(self) -> bool:
        modules = {nodeid.split("::")[0].rsplit("/", 1)[-1] for nodeid in self.expected}
        return not self.partial and modules == set(MODULES) and self.passed == self.expected


RECORD = Record()


def run_cli(*args, env=None) -> subprocess.CompletedProcess:
    """`crosscheck ARGS` in a fresh process (its own embedded R)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, env=env)


def interrupted_cleanly(p: subprocess.Popen, sig: int) -> str:
    """Send `sig` to the running command `p`: it exits 130 within 2 s, no traceback, its last
    words "interrupted"; its stderr."""
    sent = time.monotonic()
    p.send_signal(sig)
    err = p.communicate(timeout=60)[1]
    took = time.monotonic() - sent
    assert p.returncode == 130 and took < 2.0, (p.returncode, took, err)
    assert "Traceback" not in err and "Exception ignored" not in err and err.strip().endswith("interrupted"), err
    return err


def refused_cleanly(p: subprocess.CompletedProcess, *fragments: str) -> str:
    """A command's refusal: exit code 2, no traceback, every fragment in the message; the message."""
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and all(f in p.stderr for f in fragments), p.stderr
    return p.stderr.strip().splitlines()[-1].removeprefix("error: ")


def _clean(text: str) -> str:
    """One line, no temporary paths or run ids, at most 220 characters."""
    text = " ".join(_RUN_ID.sub("<run>", _TMP.sub("<tmp>", str(text))).split())
    return text if len(text) <= 220 else text[:217] + "..."


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or " "


@pytest.fixture(scope="session")
def reliability() -> Record:
    """Where the reliability tests note what they tried and what happened."""
    return RECORD


@pytest.fixture(scope="session")
def readme_csv(tmp_path_factory) -> Path:
    """The README example as a CSV file, for the command line (no R needed to read it)."""
    from crosscheck.datasets import readme_example

    path = tmp_path_factory.mktemp("data") / "readme.csv"
    readme_example().to_csv(path, index=False)
    return path


def render(record: Record) -> str:
    """docs/reliability.md: counts per section and entry point, then one row per kind tried."""
    by_section = defaultdict(list)
    for t in sorted(record.trials):
        by_section[t.section].append(t)
    entries = sorted({t.entry for t in record.trials})
    versions = ", ".join(f"{k} {v}" for k, v in sorted(record.versions.items()))
    out = ["# Reliability: bad input, code injection, faults", "",
           "Produced by the test suite (`tests/test_bad_input.py`, `tests/test_injection.py`, "
           "`tests/test_faults.py`, recorded through `tests/reliability.py`); rewritten by every "
           "session that runs all of them and sees them pass. Do not edit by hand.", "",
           f"Versions: {versions}.", "",
           "Exit code 2 is `crosscheck`'s for bad input; `check_case` is the up-front validation "
           "of the command line and case files (`crosscheck/validate.py`); `compare_case` is the "
           "Python API, where both sides' refusals are compared (verdicts `both-refused`, "
           "`r-refused`, `python-refused`; lme4's message follows `lme4:`). Injection attempts ask R "
           "to create a file; none did.", "", "## What was tried", "",
           "| entry point | " + " | ".join(SECTIONS.values()) + " |", "|---" * (len(SECTIONS) + 1) + "|"]
    for entry in entries:
        counts = [sum(t.entry == entry for t in by_section[key]) for key in SECTIONS]
        out.append(f"| {_cell(entry)} | " + " | ".join(map(str, counts)) + " |")
    out.append("| **trials** | " + " | ".join(str(len(by_section[k])) for k in SECTIONS) + " |")
    out.append("| **kinds** | " + " | ".join(str(len({t.kind for t in by_section[k]})) for k in SECTIONS) + " |")
    for key, title in SECTIONS.items():
        out += ["", f"## {title}", "", "| kind | entry point: what happened | messages |", "|---|---|---|"]
        kinds = defaultdict(list)
        for t in by_section[key]:
            kinds[t.kind].append(t)
        for kind, trials in kinds.items():
            happened = "<br>".join(_cell(f"{t.entry}: {t.outcome}") for t in trials)
            messages = "<br>".join(_cell(m) for m in dict.fromkeys(t.message for t in trials if t.message))
            out.append(f"| {_cell(kind)} | {happened} | {messages or ' '} |")
    out += ["", "## Where lme4 1.1-31 and the reference differ", "",
            "The inputs on which the two sides part, from the runs above. Rows with NA in a used "
            "column: lme4 drops them (`na.action = na.omit`) and fits the rest; the reference refuses "
            "them naming the column and row, and the command line refuses them up front, so that "
            "both sides always fit the same rows.", "",
            "| input | lme4 1.1-31 | reference | harness |", "|---|---|---|---|"]
    out += [f"| {_cell(kind)} | {' | '.join(map(_cell, cells))} |"
            for kind, cells in sorted(record.differences.items())]
    return "\n".join(out) + "\n"


# -- hooks (imported by conftest.py) -----------------------------------------------------------------
def pytest_collection_finish(session):
    RECORD.expected = {item.nodeid for item in session.items if item.path.name in MODULES}
    RECORD.partial |= any("::" in str(arg) for arg in session.config.args)


def pytest_deselected(items):
    RECORD.partial |= any(item.path.name in MODULES for item in items)


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and report.nodeid in RECORD.expected:
        RECORD.passed.add(report.nodeid)


def pytest_sessionfinish(session):
    if RECORD.complete and RECORD.trials:
        DOC.write_text(render(RECORD))
