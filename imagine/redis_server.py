"""A private redis-server for `imagine run` without REDIS_URL, and for the tests.

It listens on a free port of 127.0.0.1, keeps its files in a temp dir, saves nothing to
disk and is stopped with the process that started it: it never touches anyone's Redis.
(``appendonly=True`` keeps an append-only file in ``directory``, as the compose file's Redis
does, so that a test can restart it on the same port and find its data again; ``appendfsync``
is its fsync policy: ``always`` here by default, ``everysec`` in the compose file.)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from imagine.errors import RedisServerMissing, RedisUnavailable

INSTALL_HINT = (
    "redis-server is not installed: install it (`sudo apt-get install -y redis-server`, "
    "or `brew install redis`) or set REDIS_URL to a running Redis."
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``with RedisServer() as r: r.url``: a private redis-server child process."""

    def __init__(self, directory: Path | None = None, *, port: int | None = None, appendonly: bool = False,
                 appendfsync: str = "always") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerMissing(INSTALL_HINT)
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="imagine-redis-")
        workdir = directory or Path(self._tmp.name)  # type: ignore[union-attr]
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(workdir),
             "--save", "", "--appendonly", "yes" if appendonly else "no", "--appendfsync", appendfsync,
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis(port=self.port)
        for _ in range(250):
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"The private redis-server did not start on port {self.port}.")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
