"""`crosscheck run`: a sweep killed with SIGKILL resumes and stores every case exactly once; its
outputs; bad input exits 2 with the problem named."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree as ET

from crosscheck.case import Case

CLI = [sys.executable, "-m", "crosscheck.cli"]
ENV = {**os.environ, "CI": "true"}


def run_cli(*args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, env=ENV)


def stored(db, run_id):
    with sqlite3.connect(db) as con:
        return con.execute("SELECT case_key, count(*) FROM cases WHERE run_id = ? GROUP BY 1",
                           (run_id,)).fetchall()


def test_sigkill_mid_run_then_resume_stores_every_case_once(tmp_path):
    db, out = tmp_path / "r.sqlite", tmp_path / "out"
    args = ["run", "--cases", "8", "--seed", "kill", "--max-groups", "6", "--datasets", "none",
            "--nagq", "0,1", "--mode", "lme4", "--noise", "none", "--workers", "1", "--shrink", "0",
            "--store", str(db), "--out", str(out)]
    p = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, env=ENV)
    run_id = p.stderr.readline().split()[1].rstrip(":")
    deadline = time.monotonic() + 300
    while len(stored(db, run_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = stored(db, run_id)
    assert 2 <= len(before) < 8
    resumed = run_cli(*args, "--resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    after = stored(db, run_id)
    assert sorted(after) == [(f"gen:kill:{i}", 1) for i in range(8)]
    assert f"[{len(before) + 1}/8]" in resumed.stderr            # finished cases were not redone
    with sqlite3.connect(db) as con:
        (status,) = con.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        n_fits = con.execute("SELECT count(*) FROM fits JOIN cases USING (case_id) WHERE run_id = ?",
                             (run_id,)).fetchone()[0]
        versions = con.execute("SELECT count(*) FROM cases WHERE run_id = ? AND status = 'done' "
                               "AND versions_id IS NULL", (run_id,)).fetchone()[0]
    assert status == "finished" and versions == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["key"] for x in lines) == [k for k, _ in after]
    suite = ET.parse(out / "junit.xml").getroot()
    assert len(suite.findall("testcase")) == n_fits + sum(json.loads(x)["report"] is None for x in lines)
    assert "| nAGQ | mode | cases | % passed |" in (out / "summary.md").read_text()
    assert "| 1 | lme4 |" in resumed.stdout


def test_bad_input_exits_2_naming_the_problem(tmp_path):
    db = str(tmp_path / "r.sqlite")
    p = run_cli("run", "--resume", "nosuch", "--store", db)
    assert p.returncode == 2 and "no run 'nosuch'" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "bad.json").write_text("{not json")
    p = run_cli("run", "--case", str(tmp_path / "bad.json"), "--store", db)
    assert p.returncode == 2 and "not valid JSON" in p.stderr
    p = run_cli("run", "--datasets", "cbppp", "--store", db)
    assert p.returncode == 2 and "unknown lme4 data set 'cbppp'" in p.stderr
    p = run_cli("gate", "--baseline", str(tmp_path / "none.json"), "--store", db)
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "bad.json").write_text("{not json")
    (tmp_path / "baseline.json").write_text(json.dumps({
        "format": "glmm-crosscheck-baseline", "config": {"generated": 0}, "entries": {}}))
    p = run_cli("gate", "--baseline", str(tmp_path / "baseline.json"), "--store", db)
    assert p.returncode == 2 and "bad.json: not valid JSON" in p.stderr
    (tmp_path / "baseline.json").write_text("[]")
    p = run_cli("gate", "--baseline", str(tmp_path / "baseline.json"), "--store", db)
    assert p.returncode == 2 and "not a glmm-crosscheck-baseline file" in p.stderr


def test_findings_keep_the_analysis_and_save_a_reproducer_per_failure_class(tmp_path):
    """`crosscheck findings` on a stored run: the verdict table, one section per failure class with
    its case file (a file case is saved as found), and the hand-written analysis kept.

    glmer refuses the fixture (PIRLS does not converge) on every machine; whether the reference's
    PIRLS converges on it depends on last-bit rounding (it stops too with AVX-512's exp), so the
    class is `r-refused` or, where both refuse with the same words, there is none."""
    db, out = tmp_path / "r.sqlite", tmp_path / "out"
    case = str(Path(__file__).parent / "fixtures" / "r-refused-gaussian-log.json")   # glmer: no PIRLS convergence
    p = run_cli("run", "--cases", "0", "--datasets", "none", "--case", case, "--nagq", "0",
                "--mode", "lme4", "--workers", "1", "--shrink", "0", "--store", str(db), "--out", str(out))
    assert p.returncode == 0, p.stderr
    run_id = p.stderr.split()[1].rstrip(":")
    doc, corpus = tmp_path / "findings.md", tmp_path / "repro"
    analysis = "<!-- analysis -->\n## What we found\nglmer refuses this one.\n<!-- /analysis -->\n"
    doc.write_text("# old\n" + analysis + "## stale tables\n")
    p = run_cli("findings", "--run", run_id, "--store", str(db), "--out", str(doc), "--corpus", str(corpus))
    assert p.returncode == 0, p.stderr
    text = doc.read_text()
    assert text.count(analysis) == 1 and "stale tables" not in text
    with sqlite3.connect(db) as con:
        ((verdict, passed),) = con.execute("SELECT verdict, passed FROM fits").fetchall()
    assert verdict in ("r-refused", "both-refused")
    assert f"| 0 | lme4 | 1 | {100.0 * passed:.1f} |" in text
    classes = list(corpus.glob(f"{verdict}-lme4-nagq0-*.json"))
    assert len(classes) == (not passed)
    for saved in classes:
        assert f"### {verdict}-lme4-nagq0" in text and f"(repro/{saved.name})" in text
        assert Case.load(saved).formula == Case.load(case).formula
