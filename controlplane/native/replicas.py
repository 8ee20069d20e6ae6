"""`replicas`: keeps N copies of a template allocation, like a ReplicaSet.

config: {"count": N, "template": <allocation spec>}. The copies are its
children (restart type from the template, `permanent` keeps a service up);
the supervisor restarts them per policy. When every copy has ended and none is
restarting, the replicas allocation ends: succeeded if all succeeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controlplane.domain.errors import InvalidInput
from controlplane.domain.lifecycle import State
from controlplane.domain.records import AllocationRecord
from controlplane.domain.specs import AllocationSpec, parse
from controlplane.ports.native import NativeContext

MAX_REPLICAS = 10_000


class ReplicasExecutor:
    def validate(self, config: dict[str, Any]) -> None:
        count = config.get("count")
        if not isinstance(count, int) or not 0 <= count <= MAX_REPLICAS:
            raise InvalidInput(f"must be an integer between 0 and {MAX_REPLICAS}", field="config.count")
        parse(AllocationSpec, config.get("template"), field="config.template")

    def on_start(self, ctx: NativeContext) -> None:
        config = ctx.config
        template = dict(config["template"])
        count = int(config["count"])
        base = template.get("name", ctx.allocation.name)
        specs = [{**template, "name": f"{base}-{i}"} for i in range(count)]
        if specs:
            ctx.spawn(specs, request_id=f"replicas:{ctx.allocation.incarnation}")
        else:
            ctx.succeed("no replicas to keep")

    def on_children_ended(self, ctx: NativeContext, children: Sequence[AllocationRecord]) -> None:
        kids = ctx.children()
        if any(not k.is_terminal or k.extra.get("restart_at") for k in kids):
            return
        failed = [k for k in kids if k.state is not State.SUCCEEDED]
        if failed:
            ctx.fail(f"{len(failed)} of {len(kids)} replicas ended without success")
        else:
            ctx.succeed(f"all {len(kids)} replicas succeeded")

    def on_terminated(self, ctx: NativeContext, target: AllocationRecord) -> None:
        return None
