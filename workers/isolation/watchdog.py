"""The agent's dead man's switch: the moment its node agent dies (kill -9 included), every allocation it ran dies too.

One small process per agent with cgroups, started by the agent and holding the read end of a pipe whose write
end only the agent has. When the agent exits for any reason the pipe closes, and this kills every allocation
cgroup of the agent's instance (`cgroup.kill`, or freeze-and-kill on v1) and exits. So the whole process tree
of each allocation ends with its agent, as when a machine is lost, not only the main process that PDEATHSIG
would reach; and allocations need no `setpriv --pdeathsig` in front of them. A new agent of the node also
sweeps at start, in case this process was killed as well.

    python -m workers.isolation.watchdog INSTANCE [CGROUP_PARENT]   (stdin: the agent's pipe)
"""

from __future__ import annotations

import os
import signal
import sys

from workers.isolation.discovery import sweep


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the agent's end closing ends it
    instance, parent = argv[0], (argv[1] if len(argv) > 1 and argv[1] else None)
    while True:
        try:
            if not os.read(0, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    killed = sweep(instance=instance, parent=parent)  # and the agent's base directories, when empty
    if killed:
        print(f"controlplane watchdog: node agent {instance} ended; killed {killed} allocation cgroups", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
