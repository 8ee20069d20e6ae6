"""What /healthz answers: `failing` (503) when the graph or the broker cannot answer, `degraded` (200) with reasons.

Degraded: no node is ready, a component of the stack is down, or a dependency
answered slower than it should. Never `ok` while every node is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

CHECK_TIMEOUT_S = 5.0
SLOW_S = 1.0

#: a check raises when its dependency cannot answer; a probe returns the reasons the service is degraded
Check = Callable[[], None]
Probe = Callable[[], list[str]]


class Health:
    def __init__(self, checks: Mapping[str, Check], probes: Mapping[str, Probe] | None = None, *, slow_s: float = SLOW_S) -> None:
        self.checks = dict(checks)
        self.probes = dict(probes or {})
        self.slow_s = slow_s

    async def report(self) -> tuple[int, dict[str, Any]]:
        results = await asyncio.gather(*(_timed(c) for c in self.checks.values()))
        checks = {name: answer for name, (answer, _) in zip(self.checks, results, strict=True)}
        if any(answer != "ok" for answer in checks.values()):
            return 503, {"status": "failing", "checks": checks, "reasons": []}
        reasons = [f"{name} answered in {took:.1f} s" for name, (_, took) in zip(self.checks, results, strict=True)
                   if took > self.slow_s]
        for probe in self.probes.values():
            try:
                reasons += await asyncio.wait_for(asyncio.to_thread(probe), CHECK_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a probe that cannot tell is a reason too
                reasons.append(f"could not tell: {type(exc).__name__}: {exc}")
        return 200, {"status": "degraded" if reasons else "ok", "checks": checks, "reasons": reasons}


async def _timed(check: Check) -> tuple[str, float]:
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.to_thread(check), CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s", time.monotonic() - started
    except Exception as exc:  # noqa: BLE001 - a failing check is an answer, not an error of ours
        return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), time.monotonic() - started
    return "ok", time.monotonic() - started


def nodes_probe(list_statuses: Callable[[], list[str]]) -> Probe:
    """Degraded when no node is ready: how many there are and in which state."""

    def probe() -> list[str]:
        statuses = list_statuses()
        if "ready" in statuses:
            return []
        if not statuses:
            return ["no node is registered: start a node agent (controlplane worker --node NAME)"]
        counts: dict[str, int] = {}
        for s in statuses:
            counts[s] = counts.get(s, 0) + 1
        return ["no node is ready (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"]

    return probe
