"""Sweep progress on stderr: a progress bar on a terminal, plain lines otherwise (CI=true, pipes)."""
from __future__ import annotations

import os
import sys
from typing import IO, Any


def verdict_line(result: dict[str, Any]) -> str:
    """`nAGQ/mode verdict` of each comparison of a finished case, or its status and error."""
    report = result.get("report")
    if result["status"] != "done" or report is None:
        lines = (result.get("error") or "").strip().splitlines() or [""]
        return f"{result['status']}: {lines[-1]}"
    return " ".join(f"{c['nAGQ']}/{c['mode']}:{c['verdict']}" for c in report["results"])


class Progress:
    def __init__(self, total: int, done: int = 0, stream: IO = sys.stderr, bar: bool | None = None):
        self.total, self.done, self.stream, self.failed = total, done, stream, 0
        if bar is None:
            bar = stream.isatty() and not os.environ.get("CI")
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, file=stream, unit="case", dynamic_ncols=True)

    def update(self, result: dict[str, Any]) -> None:
        self.done += 1
        report = result.get("report")
        self.failed += result["status"] != "done" or not all(c["passed"] for c in report["results"])
        if self.bar is not None:
            self.bar.set_postfix_str(f"not passed {self.failed}", refresh=False)
            self.bar.update(1)
        else:
            print(f"[{self.done}/{self.total}] {result['key']} ({result.get('seconds', 0):.1f} s) "
                  f"{verdict_line(result)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
