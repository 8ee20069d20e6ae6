"""A clock the test moves by hand (`clock.now += 10`): supervision, leases and retention read time only from it."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
