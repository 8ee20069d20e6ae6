"""A doorbell on Redis pub/sub: writers ring it after changing the graph; live subscribers wake and read.

The graph keeps the ordered history (Event vertices written in the same request
as each transition); Redis only says "something changed", so a lost message
costs latency (subscribers also poll), never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.retry import Retry

from controlplane.redis_urls import async_client, sync_client

CHANNEL = "controlplane:events"
log = logging.getLogger(__name__)


class RedisNotifier:
    def __init__(self, url: str) -> None:
        self._redis = sync_client(url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))

    def notify(self) -> None:
        try:
            self._redis.publish(CHANNEL, b"1")
        except redis.RedisError as exc:  # subscribers poll as well
            log.debug("event doorbell unavailable: %s", exc)


class Doorbell:
    """Async waiter for subscriptions: returns when rung or after `timeout` seconds."""

    def __init__(self, url: str) -> None:
        self._url = url

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[_Waiter]:
        client = async_client(self._url)
        pubsub: PubSub | None = client.pubsub()
        try:
            await pubsub.subscribe(CHANNEL)  # type: ignore[union-attr]
        except redis.RedisError:
            pubsub = None
        try:
            yield _Waiter(pubsub)
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()


class _Waiter:
    def __init__(self, pubsub: PubSub | None) -> None:
        self._pubsub = pubsub

    async def wait(self, timeout: float) -> None:
        if self._pubsub is None:
            await asyncio.sleep(timeout)
            return
        try:
            await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        except redis.RedisError:
            await asyncio.sleep(timeout)
