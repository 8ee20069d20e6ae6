"""This machine's NVIDIA GPUs as devices: index, UUID, model, memory, and the device minor behind /dev/nvidiaN.

A claim in the graph names a Gpu vertex (`<node>/gpu<i>`, i being nvidia-smi's index); to give a process exactly
that GPU the agent needs its UUID (for CUDA_VISIBLE_DEVICES: CUDA numbers devices fastest-first unless told
otherwise, so an index could name another GPU) and its device minor (for the devices cgroup, which works on
device numbers). The driver tells the minor in /proc/driver/nvidia/gpus/*/information; without it (a stand-in
nvidia-smi, or no driver) the minor is taken to be the index, as the driver numbers them by default.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NVIDIA_MAJOR = 195  # /dev/nvidia<minor>; nvidiactl is 195:255
QUERY = "--query-gpu=index,uuid,name,memory.total"


@dataclass(frozen=True, slots=True)
class GpuDevice:
    index: int
    uuid: str
    model: str
    memory_mib: int
    minor: int

    @property
    def visible_id(self) -> str:
        """How CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES name it."""
        return self.uuid or str(self.index)


def _minors(root: Path = Path("/proc/driver/nvidia/gpus")) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        entries = list(root.iterdir())
    except OSError:
        return out
    for d in entries:
        fields: dict[str, str] = {}
        try:
            for line in (d / "information").read_text().splitlines():
                k, _, v = line.partition(":")
                fields[k.strip()] = v.strip()
        except OSError:
            continue
        if fields.get("GPU UUID") and fields.get("Device Minor", "").isdigit():
            out[fields["GPU UUID"]] = int(fields["Device Minor"])
    return out


def _model(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in " ._-" else "-" for ch in name)[:64]


def query_gpus() -> list[GpuDevice]:
    """The GPUs nvidia-smi reports, by index; none when it is absent or does not answer."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, QUERY, "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        minors = _minors()
        gpus = []
        for line in out.strip().splitlines():
            index, uuid, name, mem = (p.strip() for p in line.split(",", 3))
            gpus.append(GpuDevice(int(index), uuid, _model(name), int(float(mem)), minors.get(uuid, int(index))))
        return sorted(gpus, key=lambda g: g.index)
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        log.warning("nvidia-smi did not answer (%s); registering no GPUs", exc)
        return []


def devices_of(node: str, gpus: list[dict[str, object]]) -> dict[str, GpuDevice]:
    """Gpu vertex id -> device, for the GPUs as registered (`<node>/gpu<i>` in registration order)."""
    minors = _minors()
    out = {}
    for i, g in enumerate(gpus):
        index = g.get("index")
        index = index if isinstance(index, int) else i
        uuid = str(g.get("uuid") or "")
        memory = g.get("memory_mib")
        out[f"{node}/gpu{i}"] = GpuDevice(index, uuid, str(g.get("model", "")), memory if isinstance(memory, int) else 0,
                                          minors.get(uuid, index))
    return out
