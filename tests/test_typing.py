"""Tasks are typed end to end: mypy accepts the right calls in tests/typing/check_tasks.py
and reports exactly the errors marked ``# E: <code>`` there, on those lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = Path(__file__).resolve().parent / "typing" / "check_tasks.py"

MARK = re.compile(r"#\s*E:\s*([\w-]+(?:\s*,\s*[\w-]+)*)\s*$")
ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[\w-]+)\]$")


def expected_errors() -> set[tuple[int, str]]:
    expected = set()
    for number, line in enumerate(CHECKED.read_text().splitlines(), start=1):
        found = MARK.search(line)
        if found:
            expected |= {(number, code.strip()) for code in found.group(1).split(",")}
    return expected


def test_mypy_reports_exactly_the_marked_errors(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-pretty",
            "--no-error-summary",
            "--show-error-codes",
            "--hide-error-context",
            "--cache-dir",
            str(tmp_path / "mypy_cache"),
            str(CHECKED.relative_to(ROOT)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = completed.stdout + completed.stderr
    reported: set[tuple[int, str]] = set()
    for line in output.splitlines():
        if ": note: " in line or not line.strip():
            continue
        match = ERROR.match(line)
        assert match is not None, f"unexpected mypy output: {line}\n{output}"
        reported.add((int(match["line"]), match["code"]))

    expected = expected_errors()
    assert len(expected) >= 8, "the marked lines were not found"
    assert reported == expected, (
        f"missing: {sorted(expected - reported)}; unexpected: {sorted(reported - expected)}\n"
        f"{output}"
    )
    assert completed.returncode == 1, output
