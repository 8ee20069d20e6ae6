"""FastAPI's TestClient, imported once without starlette's notice that it prefers httpx2 (the httpx client works the same)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient

__all__ = ["TestClient", "serving"]


@contextmanager
def serving(app: Any, *, port: int | None = None) -> Iterator[str]:
    """The app on a real socket (uvicorn in a thread), for callers that speak plain HTTP (the CLI); its address."""
    import threading
    import time

    import uvicorn

    from graph_schema.falkordb_server import find_free_port

    port = port or find_free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the API did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
