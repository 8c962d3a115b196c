"""One worker per GPU: a worker claims a free GPU of its host in Redis before touching CUDA.

With ``IMAGINE_GPU=auto`` each worker replica (``docker compose up --scale worker=N``) sees
every GPU of the host, claims the lowest free index with ``SET NX`` on
``imagine:gpu:{host_id}:{index}`` (expiring unless its heartbeat renews it), and restricts
itself to that GPU with ``CUDA_VISIBLE_DEVICES``. A crashed worker's claim expires, so its
replacement gets the GPU back. ``IMAGINE_GPU=3`` pins GPU 3; empty leaves CUDA_VISIBLE_DEVICES as is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import redis

from imagine.constants import KEY_PREFIX


def gpu_count() -> int:
    """GPUs on this host, from nvidia-smi (does not initialize CUDA in this process)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False).stdout
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


_RENEW = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not owner then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class GpuClaim:
    connection: redis.Redis
    host_id: str
    index: int
    owner: str
    ttl_s: float

    @property
    def key(self) -> str:
        return gpu_key(self.host_id, self.index)

    def renew(self) -> bool:
        """Extend the claim (or take it back if it expired unclaimed); False if another worker
        holds it now."""
        return bool(self.connection.eval(_RENEW, 1, self.key, self.owner, int(self.ttl_s * 1000)))

    def release(self) -> None:
        """Give the GPU back, unless another worker holds it by now."""
        self.connection.eval(_RELEASE, 1, self.key, self.owner)


def gpu_key(host_id: str, index: int) -> str:
    return f"{KEY_PREFIX}:gpu:{host_id}:{index}"


def claim_gpu(connection: redis.Redis, host_id: str, count: int, owner: str, ttl_s: float) -> GpuClaim:
    """Claim the lowest free GPU index of ``host_id`` and point CUDA at it."""
    for index in range(count):
        if connection.set(gpu_key(host_id, index), owner, nx=True, px=int(ttl_s * 1000)):
            os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
            return GpuClaim(connection, host_id, index, owner, ttl_s)
    raise SystemExit(
        f"all {count} GPU(s) of host {host_id} are claimed by other workers: "
        "start no more workers than GPUs (docker compose --scale worker=N)"
    )
