"""An allocation's output through GraphQL: where an incarnation's log is, and its last bytes.

The bytes come from the log file when the API runs on the machine of that node's agent (embedded mode: the API is
given that machine's runs directory, and reads only files it names itself, see controlplane.logs), else from what
the graph kept once the incarnation ended (`output_tail`).
"""

from __future__ import annotations

from pathlib import Path

import strawberry

from controlplane import logs
from controlplane.domain.errors import InvalidInput
from controlplane.domain.records import LogLocation

MAX_TAIL_BYTES = 1024 * 1024
DEFAULT_TAIL_BYTES = 4096


@strawberry.type(description="An incarnation's output (stdout and stderr): where its log is, and its last bytes.")
class AllocationOutput:
    incarnation: int
    node_id: strawberry.ID = strawberry.field(description="The node whose agent ran it: its log is on that machine.")
    path: str | None = strawberry.field(
        description="The log file on that node (`<data_dir>/runs/<node>/<id>.<incarnation>.log`; older parts of a "
        "rotated log beside it as `.1`, `.2`, ...); null when not known."
    )
    text: str | None = strawberry.field(
        description="Its last `tailBytes` bytes (UTF-8, undecodable bytes replaced); null when there is none to read."
    )
    source: str = strawberry.field(
        description="Where `text` comes from: `log` (the file itself, read on this machine, live while it runs), "
        "`graph` (the last 4096 bytes kept once it ended) or `none`."
    )
    live: bool = strawberry.field(description="It may still write: the current incarnation, not ended.")


def read_output(loc: LogLocation, runs_dir: Path | None, tail_bytes: int) -> AllocationOutput:
    """`tail_bytes` of the incarnation's output from its file under `runs_dir` if it is there, else the stored tail."""
    if not 1 <= tail_bytes <= MAX_TAIL_BYTES:
        raise InvalidInput(f"must be between 1 and {MAX_TAIL_BYTES}", field="tailBytes")
    local = logs.log_file(runs_dir, loc.node_id, loc.allocation_id, loc.incarnation) if runs_dir is not None else None
    text: str | None = None
    source = "none"
    if local is not None and logs.exists(local):
        text, source = logs.tail(local, tail_bytes).decode("utf-8", "replace"), "log"
    elif loc.output_tail is not None:
        text, source = loc.output_tail.encode()[-tail_bytes:].decode("utf-8", "replace"), "graph"
    return AllocationOutput(incarnation=loc.incarnation, node_id=strawberry.ID(loc.node_id), path=loc.path or (str(local) if local else None),
                  text=text, source=source, live=loc.live)
