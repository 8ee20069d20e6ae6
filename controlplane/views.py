"""How the CLI shows records to people: allocation lines of `tree`, event lines of `events`, and `logs`.

Kept apart from cli.py (the commands and their options) so each reads short; rich markup only, no I/O but
the log files of controlplane.logs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from controlplane import logs
from controlplane.domain.records import AllocationRecord, Event, LogLocation

STATE_COLOURS = {"running": "green", "succeeded": "blue", "failed": "red", "lost": "red", "stopped": "dim"}
#: how often `logs --follow` asks the graph whether the incarnation has ended
FOLLOW_CHECK_S = 1.0


def shown_path(path: str) -> str:
    """A path as short as it is still unambiguous: relative to the working directory when it is below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def allocation_label(a: AllocationRecord) -> str:
    """One line of `tree`: name, id, state, incarnation, restarts, node, pid and log, and what it waits for."""
    colour = STATE_COLOURS.get(a.state.value, "yellow")
    code = f" exit={a.exit_code}" if a.exit_code is not None else ""
    restarts = a.extra.get("restarts") or 0
    orphan = " [magenta]orphan[/magenta]" if a.extra.get("orphan") else ""
    pid = f" pid={a.pid}" if a.pid is not None and not a.is_terminal else ""
    log_path = a.extra.get("log_path")
    log = f" log={escape(shown_path(str(log_path)))}" if log_path else ""
    waiting = f" [yellow]{escape(str(a.extra['waiting']))}[/yellow]" if a.extra.get("waiting") else ""
    return (f"{escape(a.name)} [dim]{a.id}[/dim] [{colour}]{a.state.value}[/{colour}] inc={a.incarnation} "
            f"restarts={restarts} on {a.node_id}{pid}{code}{log}{orphan}{waiting}")


def event_line(e: Event) -> str:
    """One line of `events`: when, whose, which incarnation, what happened and why, who decided."""
    stamp = time.strftime("%H:%M:%S", time.localtime(e.at)) + f".{int(e.at * 1000) % 1000:03d}"
    what, colour = _what(e)
    reason = escape(e.reason or "")
    return (f"{stamp}  {e.allocation_id}  inc={e.incarnation or '-'}  [{colour}]{escape(what):28s}[/{colour}]  {reason}"
            f"  [dim]by {escape(e.by or '-')}[/dim]")


def _what(e: Event) -> tuple[str, str]:
    if e.kind == "transition":
        return f"{e.from_state} -> {e.to_state}", STATE_COLOURS.get(e.to_state or "", "yellow")
    if e.kind == "terminated":  # death watch: the watcher hears that its target ended
        return f"Terminated({e.data.get('target', e.by)}: {e.to_state})", "magenta"
    if e.kind == "decision":
        directive = e.data.get("directive")
        return f"decision: {directive}" if directive else "decision", "cyan"
    if e.kind == "waiting":
        return "waiting", "yellow"
    return e.kind, "bold"


def print_log(loc: LogLocation, runs_dir: Path, *, follow: bool, ended: Callable[[], bool], err: Console) -> int:
    """Print (or follow) an incarnation's output when its file is on this machine, else say where it is and show
    what the graph kept of it. Returns the exit status."""
    local = logs.log_file(runs_dir, loc.node_id, loc.allocation_id, loc.incarnation)
    candidates = [Path(p) for p in (loc.path, str(local) if local else None) if p]
    here = next((p for p in candidates if logs.exists(p)), None)
    if here is None and follow and loc.live:  # not started yet: its file appears here if its agent runs here
        here = next((p for p in candidates if p.parent.is_dir()), None)
    if here is None:
        where = loc.path or (str(local) if local else "its agent's runs directory")
        if not loc.started:
            err.print(f"incarnation {loc.incarnation} of {loc.allocation_id} has not started on record: no output yet "
                      f"(its node is {loc.node_id})")
        else:
            err.print(f"the output of {loc.allocation_id} incarnation {loc.incarnation} is on node {loc.node_id} at "
                      f"{where} (not on this machine: run `controlplane logs` there)")
        if loc.output_tail:
            err.print("its last output, as kept in the graph:")
            _write(loc.output_tail.encode())
            return 0
        return 1
    if not follow:
        for chunk in logs.read_all(here):
            _write(chunk)
        return 0
    last = [0.0, False]

    def done() -> bool:  # ask the graph at most once a second
        now = time.monotonic()
        if now - last[0] >= FOLLOW_CHECK_S:
            last[0], last[1] = now, ended()
        return bool(last[1])

    for chunk in logs.follow(here, done=done):
        _write(chunk)
    return 0


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
