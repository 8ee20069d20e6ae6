"""`python -m tests.<x>_harness.launcher`: run one test server until Ctrl-C, for humans trying things out."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.jvm_harness.process import JvmServer


def serve(what: str, start: Callable[[Path, int], JvmServer], argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=f"Run a {what} until Ctrl-C.")
    ap.add_argument("--workdir", type=Path, help="data and log directory (default: a temp dir)")
    ap.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    args = ap.parse_args(argv)
    tmp = None if args.workdir else tempfile.mkdtemp(prefix="jvm-harness-")
    workdir = args.workdir or Path(tmp or ".")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    server = start(workdir, args.port)
    print(server.url or server.address, flush=True)
    print(f"{what} up in {server.startup_seconds:.1f}s (pid {server.pid}, log {server.log_path}); Ctrl-C to stop",
          file=sys.stderr, flush=True)
    try:
        while server.is_running():
            time.sleep(0.5)
        print(f"server exited ({server.process.returncode}):\n{server.output_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0
