"""The decisions isolation rests on, without agents: how an OOM kill is classified and matched, what a Node says it
enforces and how placement reads it, what environment an allocation gets, how logs rotate, which uids are handed out.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controlplane.domain.errors import NoCapacity, Unsatisfiable
from controlplane.domain.placement import Demand, place
from controlplane.domain.resources import NodeCapacity, Resources
from controlplane.domain.specs import AllocationSpec, NodeSpec
from controlplane.domain.supervision import DeciderRule, Directive, FailureKind, classify
from controlplane.ports.store import GraphStore
from controlplane.wiring import assemble
from workers.isolation.cgroups import IsolationError
from workers.isolation.gpus import GpuDevice
from workers.isolation.logs import RotatingLog, tail
from workers.isolation.sandbox import allocation_env, searchable_path
from workers.isolation.users import UserPolicy

OOM = "oom_killed: memory limit 32 MiB, peak 32.0 MiB (1 process killed)"


@pytest.mark.parametrize(("state", "code", "error", "kind"), [
    ("failed", -9, OOM, FailureKind.OOM_KILLED),
    ("failed", -9, "killed by signal 9", FailureKind.SIGNAL),  # a SIGKILL that was not the kernel's OOM killer
    ("failed", 137, OOM, FailureKind.OOM_KILLED),  # a shell reporting its OOM-killed child
    ("failed", 3, "exited with code 3", FailureKind.EXIT),
])
def test_an_oom_kill_is_a_failure_kind_of_its_own(state: str, code: int, error: str, kind: FailureKind) -> None:
    assert classify(state, code, error) is kind


def test_deciders_match_oom_kills_and_only_them() -> None:
    rule = DeciderRule(on="oom_killed", directive=Directive.STOP)
    assert rule.matches(FailureKind.OOM_KILLED, -9, OOM)
    assert not rule.matches(FailureKind.SIGNAL, -9, "killed by signal 9")
    assert not DeciderRule(on="signal", directive=Directive.STOP).matches(FailureKind.OOM_KILLED, -9, OOM)


def test_the_isolation_label_is_the_agents_to_set() -> None:
    claimed = NodeSpec(name="n", cpu_milli=1000, memory_mib=1024, labels={"isolation": "cgroup", "zone": "eu"}, isolation="none")
    assert claimed.label_list() == ("isolation=none", "zone=eu")
    assert NodeSpec(name="n", cpu_milli=1000, memory_mib=1024, labels={"zone": "eu"}).label_list() == ("zone=eu",)


def test_placement_that_requires_isolation_skips_nodes_without_it() -> None:
    spec = AllocationSpec(name="x", argv=["true"], node_labels={"zone": "eu"}, require_isolation=True)
    assert spec.label_list() == ("isolation=cgroup", "zone=eu")
    nodes = [NodeCapacity("bare", "ready", ("isolation=none", "zone=eu"), 4000, 4096),
             NodeCapacity("boxed", "ready", ("isolation=cgroup", "zone=eu"), 1000, 1024)]
    demand = Demand(Resources(100, 64), labels=spec.label_list())
    assert [p.node_id for p in place([demand], nodes)] == ["boxed"]
    with pytest.raises(NoCapacity):
        place([demand], nodes[:1])


def test_an_allocation_gets_no_environment_of_the_agent_and_cannot_override_its_own_identity() -> None:
    gpu = GpuDevice(1, "GPU-abc", "A100", 40960, 1)
    env = allocation_env(path="/usr/bin:/bin", home="/w/a.1", lang="C.UTF-8",
                         spec_env={"PATH": "/opt/bin", "CONTROLPLANE_ALLOCATION_ID": "forged", "CUDA_VISIBLE_DEVICES": "0,1"},
                         controlplane={"CONTROLPLANE_ALLOCATION_ID": "a"}, gpus=[gpu])
    assert env == {"PATH": "/opt/bin", "HOME": "/w/a.1", "LANG": "C.UTF-8", "CONTROLPLANE_ALLOCATION_ID": "a",
                   "CUDA_VISIBLE_DEVICES": "GPU-abc", "NVIDIA_VISIBLE_DEVICES": "GPU-abc"}
    none = allocation_env(path="/bin", home="/w", lang="C", spec_env={}, controlplane={}, gpus=[])
    assert (none["CUDA_VISIBLE_DEVICES"], none["NVIDIA_VISIBLE_DEVICES"]) == ("", "void")
    assert "CUDA_VISIBLE_DEVICES" not in allocation_env(path="/bin", home="/w", lang="C", spec_env={}, controlplane={}, gpus=None)


def test_path_keeps_only_what_another_user_can_reach(tmp_path: Path) -> None:
    private = tmp_path / "private" / "bin"
    private.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    assert searchable_path(f"{private}:/usr/bin:relative/bin:/bin") == "/usr/bin:/bin"


def test_logs_rotate_past_their_cap_and_the_tail_spans_the_rotation(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "a.1.log", max_bytes=1024, backups=2)
    for i in range(100):
        log.write(f"line {i:03d} {'x' * 40}\n".encode())
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["a.1.log", "a.1.log.1", "a.1.log.2"]
    assert all((tmp_path / f).stat().st_size <= 1024 for f in files)
    last = tail(tmp_path / "a.1.log", 2000)
    numbers = [int(line.split()[1]) for line in last.splitlines() if line.startswith("line ")]
    assert numbers == list(range(numbers[0], 100)) and len(last) > 1024  # contiguous across the rotated file


@pytest.mark.skipif(os.geteuid() != 0, reason="a user per allocation needs root")
def test_two_agents_on_one_machine_never_hand_out_the_same_uid(tmp_path: Path) -> None:
    a = UserPolicy("per-allocation", owner="alpha-1", claims_dir=tmp_path, uid_base=300_000, uid_count=8)
    b = UserPolicy("per-allocation", owner="beta-2", claims_dir=tmp_path, uid_base=300_000, uid_count=8)
    got = [a.acquire(f"x{i}") for i in range(4)] + [b.acquire(f"y{i}") for i in range(4)]
    assert len({g.uid for g in got}) == 8 and all(g.uid == g.gid and g.claimed for g in got)
    with pytest.raises(IsolationError, match="no free uid"):
        a.acquire("one too many")
    assert b.release_owned() == 4  # a new agent of beta gives back beta's claims, never alpha's
    assert sorted(p.read_text().split()[0] for p in tmp_path.iterdir()) == ["alpha-1"] * 4


def test_every_engine_keeps_what_an_agent_enforces_and_its_gpus_as_devices(store: GraphStore) -> None:
    cp = assemble(store)
    cp.nodes.register({"name": "box", "cpu_milli": 4000, "memory_mib": 4096, "labels": {"isolation": "cgroup"}, "isolation": "none",
                      "gpus": [{"model": "A100", "uuid": "GPU-aaaa", "index": 0}, {"model": "A100", "uuid": "GPU-bbbb", "index": 1}]})
    node = cp.queries.node("box")
    assert node.extra.get("isolation") == "none" and "isolation=none" in node.labels and "isolation=cgroup" not in node.labels
    assert sorted((g.id, g.uuid, g.index) for g in cp.queries.gpus("box")) == [("box/gpu0", "GPU-aaaa", 0), ("box/gpu1", "GPU-bbbb", 1)]
    # no node enforces isolation, so none ever could take it: refused naming the field, not "no room now"
    with pytest.raises(Unsatisfiable) as never:
        cp.allocations.spawn("box", [{"name": "strict", "argv": ["true"], "require_isolation": True}])
    assert never.value.field == "specs.require_isolation" and "enforces isolation" in never.value.message
