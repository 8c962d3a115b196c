"""Where images and diagnostics live: Redis keys with a TTL, or a configured directory.

An artifact key is ``{job_id}/{name}`` (``3f2a.../grid.png``). Results carry keys, never
bytes: RQ's return values and job hashes stay small.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Protocol

import redis
import redis.asyncio as aioredis

from imagine.constants import KEY_PREFIX, RESULT_TTL_S

_SAFE_KEY = re.compile(r"^[0-9a-f]{32}/[A-Za-z0-9_.-]+$")


def artifact_key(job_id: str, name: str) -> str:
    key = f"{job_id}/{name}"
    if not _SAFE_KEY.match(key):
        raise ValueError(f"not an artifact key: {key!r}")
    return key


class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes) -> str: ...
    def get(self, key: str) -> bytes: ...


class AsyncArtifactStore(Protocol):
    """``ArtifactStore`` for asyncio callers (the bot)."""

    async def put(self, key: str, data: bytes) -> str: ...
    async def get(self, key: str) -> bytes: ...


def redis_key(key: str) -> str:
    """The Redis string that holds an artifact."""
    return f"{KEY_PREFIX}:artifact:{key}"


def missing(key: str) -> KeyError:
    return KeyError(f"artifact {key} is missing or expired")


class RedisArtifacts:
    """Artifacts as Redis strings that expire with the job's results."""

    def __init__(self, connection: redis.Redis, ttl_s: int = RESULT_TTL_S) -> None:
        self.redis = connection
        self.ttl_s = ttl_s

    def put(self, key: str, data: bytes) -> str:
        self.redis.set(redis_key(key), data, ex=self.ttl_s)
        return key

    def get(self, key: str) -> bytes:
        data = self.redis.get(redis_key(key))
        if data is None:
            raise missing(key)
        if not isinstance(data, bytes):  # a connection that decodes replies would mangle images
            raise TypeError("artifacts need a Redis connection with decode_responses=False")
        return data


class AsyncRedisArtifacts:
    """``RedisArtifacts`` on an asyncio client."""

    def __init__(self, connection: aioredis.Redis, ttl_s: int = RESULT_TTL_S) -> None:
        self.redis = connection
        self.ttl_s = ttl_s

    async def put(self, key: str, data: bytes) -> str:
        await self.redis.set(redis_key(key), data, ex=self.ttl_s)
        return key

    async def get(self, key: str) -> bytes:
        data = await self.redis.get(redis_key(key))
        if data is None:
            raise missing(key)
        return data if isinstance(data, bytes) else data.encode()


class DirArtifacts:
    """Artifacts as files under a directory shared by bot and workers (a volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, data: bytes) -> str:
        path = self.root / artifact_key(*key.split("/", 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return key

    def get(self, key: str) -> bytes:
        path = self.root / artifact_key(*key.split("/", 1))
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyError(f"artifact {key} is missing") from None


class AsyncDirArtifacts:
    """``DirArtifacts`` for asyncio callers: the file is read or written in a thread (disk I/O)."""

    def __init__(self, root: Path) -> None:
        self.files = DirArtifacts(root)

    async def put(self, key: str, data: bytes) -> str:
        return await asyncio.to_thread(self.files.put, key, data)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self.files.get, key)


def artifact_store(connection: redis.Redis, directory: Path | None, ttl_s: int) -> ArtifactStore:
    return DirArtifacts(directory) if directory else RedisArtifacts(connection, ttl_s)


def async_artifact_store(connection: aioredis.Redis, directory: Path | None, ttl_s: int) -> AsyncArtifactStore:
    return AsyncDirArtifacts(directory) if directory else AsyncRedisArtifacts(connection, ttl_s)
