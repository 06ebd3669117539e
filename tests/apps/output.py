"""Lines the test apps print for the tests to read.

Several worker processes of one supervisor share one stdout pipe, and with
``PYTHONUNBUFFERED`` set ``print`` writes the text and its newline in two writes, which
another process's line can land between. One write of the whole line (shorter than
``PIPE_BUF``) cannot be split."""

from __future__ import annotations

import sys


def print_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
