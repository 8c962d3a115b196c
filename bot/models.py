"""Which model names ``--model``/``--v`` may take, known without importing torch.

The deployment's ``models.toml`` tables, the default model, and the models that live
workers announce. (The full registry lives in ``worker.models``, which imports torch.)
"""

from __future__ import annotations

import logging
import time
import tomllib

from imagine.queue import JobQueue
from imagine.settings import Settings

log = logging.getLogger(__name__)


class ModelNames:
    """The accepted names, re-read at most every ``ttl_s`` seconds (blocking: call in a thread)."""

    def __init__(self, settings: Settings, queue: JobQueue, ttl_s: float = 30.0) -> None:
        self.settings = settings
        self.queue = queue
        self.ttl_s = ttl_s
        self._names: frozenset[str] = frozenset()
        self._read_at = float("-inf")

    def get(self) -> frozenset[str]:
        if time.monotonic() - self._read_at >= self.ttl_s:
            self._names = frozenset(self._configured() | self._served())
            self._read_at = time.monotonic()
        return self._names

    def _configured(self) -> set[str]:
        names = {self.settings.default_model}
        path = self.settings.models_config
        if path is None:
            return names
        try:
            with open(path, "rb") as f:
                names |= set(tomllib.load(f).get("models", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            log.warning("cannot read model names from %s: %s", path, exc)
        return names

    def _served(self) -> set[str]:
        return {m for w in self.queue.workers() for m in w.get("models", [])}
