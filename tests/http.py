"""FastAPI's TestClient, imported once without starlette's notice that it prefers httpx2 (the httpx client works the same)."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient

__all__ = ["TestClient"]
