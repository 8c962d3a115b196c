"""Building a model directory once under the model cache, safely across processes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

UNTRAINED_MARKER = "imagine-untrained.json"
"""A file the builders of the tiny test models write into their directory: the model is
untrained (seeded textures), so the diagnostics score it with the tiny CLIP (``worker.clip_score``)."""


def mark_untrained(path: Path, builder: str, version: int) -> None:
    """Write ``UNTRAINED_MARKER`` into a tiny model's directory ``path``."""
    marker = {"builder": builder, "version": version, "weights": "random, untrained"}
    (path / UNTRAINED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def is_untrained(source: str) -> bool:
    """Whether ``source`` is a local model directory one of our tiny-model builders made."""
    return (Path(source) / UNTRAINED_MARKER).is_file()


def build_once(target: Path, marker: str, build: Callable[[Path], object]) -> Path:
    """``target``, built by ``build(dir)`` first if its ``marker`` file is missing.

    The build goes to a temporary sibling directory that is renamed into place, so a reader
    never sees half a model and two processes racing to build both end with a complete one.
    """
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-build-", dir=target.parent))
    try:
        build(staging)
        os.rename(staging, target)
    except OSError:
        if not (target / marker).is_file():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
