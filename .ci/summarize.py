"""Summarise the pytest runs in a nox log: one line per run, then the total, last.

    python .ci/summarize.py LOG

Each run is named after the nox session it ran in (``tests-3.12``,
``lowest-3.10``, ``build-3.11``). The last line adds them all up in the plain
form ``total: N passed, N failed, N skipped`` (errors count as failed), so
that a failure in any run, on any Python, shows in the line a reader looks at
first. Sessions that failed without a test summary (an install that broke, a
lint error) are listed above it.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SESSION = re.compile(r"^nox > Running session (\S+)")
OUTCOME = re.compile(r"^nox > \* (\S+): (\w+)")
# pytest's closing line: "==== 12 passed, 1 skipped in 3.21s (0:00:03) ====".
SUMMARY = re.compile(r"^=+ (?P<counts>\d+ \w+(?:, \d+ \w+)*) in (?P<seconds>[\d.]+)s\b.* =+$")
COUNT = re.compile(r"(\d+) (\w+)")
# pytest says "1 error" / "2 errors", "1 warning" / "2 warnings".
SINGULAR = {"errors": "error", "warnings": "warning"}


def main(log: Path) -> int:
    session = "pytest"
    runs: dict[str, str] = {}
    outcomes: dict[str, str] = {}
    for raw in log.read_text(errors="replace").splitlines():
        line = ANSI.sub("", raw).rstrip()
        if match := SESSION.match(line):
            session = match[1]
        elif match := OUTCOME.match(line):
            outcomes[match[1]] = match[2]
        elif match := SUMMARY.match(line):
            runs[session] = line.strip("= ")
    total: Counter[str] = Counter()
    seconds = 0.0
    for session, summary in runs.items():
        print(f"{session}: {summary}")
        match = SUMMARY.match(f"= {summary} =")
        assert match is not None
        seconds += float(match["seconds"])
        for number, word in COUNT.findall(match["counts"]):
            total[SINGULAR.get(word, word)] += int(number)
    broken = [name for name, outcome in outcomes.items() if outcome != "success"]
    if broken:
        print("sessions not successful: " + ", ".join(f"{n} ({outcomes[n]})" for n in broken))
    if not runs:
        print("no test run finished")
        return 1
    failed = total["failed"] + total["error"]
    print(f"{len(runs)} pytest runs, {seconds:.0f} s of tests in all")
    print(f"total: {total['passed']} passed, {failed} failed, {total['skipped']} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
