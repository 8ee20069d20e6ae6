"""Resource arithmetic for placement: cpu in millicores, memory in MiB, GPUs by model.

Integers only, so that sums and differences computed here and inside a graph
statement agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_CPU_MILLI = 4096 * 1000  # 4,096 cores: more than any single machine offers
MAX_MEMORY_MIB = 64 * 1024 * 1024  # 64 TiB
MAX_GPUS = 64


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_milli: int = 0
    memory_mib: int = 0
    gpus: int = 0
    gpu_model: str | None = None

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_milli + other.cpu_milli, self.memory_mib + other.memory_mib, self.gpus + other.gpus)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_milli - other.cpu_milli, self.memory_mib - other.memory_mib, self.gpus - other.gpus)

    def is_non_negative(self) -> bool:
        return self.cpu_milli >= 0 and self.memory_mib >= 0 and self.gpus >= 0


@dataclass(frozen=True, slots=True)
class FreeGpu:
    id: str
    model: str


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """What placement needs to know about a node: a snapshot, re-checked atomically at commit."""

    node_id: str
    status: str
    labels: tuple[str, ...]
    cpu_free: int
    memory_free: int
    free_gpus: tuple[FreeGpu, ...] = ()

    def gpus_of(self, model: str | None) -> list[FreeGpu]:
        return [g for g in self.free_gpus if model is None or g.model == model]

    def fits(self, demand: Resources) -> bool:
        return (
            self.status == "ready"
            and self.cpu_free >= demand.cpu_milli
            and self.memory_free >= demand.memory_mib
            and len(self.gpus_of(demand.gpu_model)) >= demand.gpus
        )

    def take(self, demand: Resources) -> tuple[NodeCapacity, tuple[str, ...]]:
        """The node after `demand` is reserved, and the ids of the GPUs it takes."""
        taken = self.gpus_of(demand.gpu_model)[: demand.gpus]
        taken_ids = {g.id for g in taken}
        return (
            NodeCapacity(
                node_id=self.node_id,
                status=self.status,
                labels=self.labels,
                cpu_free=self.cpu_free - demand.cpu_milli,
                memory_free=self.memory_free - demand.memory_mib,
                free_gpus=tuple(g for g in self.free_gpus if g.id not in taken_ids),
            ),
            tuple(g.id for g in taken),
        )
