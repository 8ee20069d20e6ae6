"""The wall clock the control plane stamps events and heartbeats with.

Rounded to 0.1 ms: FalkorDB replies with doubles printed to 15 significant
digits, so a timestamp read back must equal the one written for `since`
cursors to be exact.
"""

from __future__ import annotations

import time


def wall_clock() -> float:
    return round(time.time(), 4)
