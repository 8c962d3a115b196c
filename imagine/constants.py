"""Named constants of the product, each with a one-line docstring (as rq's defaults.py)."""

from __future__ import annotations

from typing import Final

MAX_PROMPT_CHARS = 6000
"""Hard limit on a prompt's length, as Midjourney's."""

MAX_JOBS_PER_PROMPT = 40
"""Most jobs one prompt may expand to (permutations times --repeat)."""

CONFIRM_JOBS_ABOVE = 5
"""A prompt that expands to more jobs than this asks for confirmation in Discord."""

NO_WEIGHT = -0.5
"""Weight of each ``--no`` item: ``--no x`` is ``x::-0.5``."""

MAX_ASPECT = 4
"""The widest aspect our models serve is 4:1, the tallest 1:4."""

IMAGES_PER_JOB = 4
"""An /imagine job makes a 2x2 grid."""

DEFAULT_RUNNING_LIMIT = 3
"""Jobs one user may have queued on the GPU queue at once."""

DEFAULT_WAITING_LIMIT = 10
"""Jobs one user may hold back waiting for a running slot; beyond it: Queue full."""

JOB_TIMEOUT_S = 600
"""Explicit RQ job timeout (SimpleWorker sends no heartbeat during a job)."""

RESULT_TTL_S = 7 * 24 * 3600
"""How long results, job state and artifacts are kept in Redis."""

UNSERVED_WAIT_S = 1800
"""A job whose model no live worker serves fails after waiting this long (30 minutes)."""

KEY_PREFIX = "imagine"
"""Prefix of every Redis key the product writes (RQ's own keys start with rq:)."""

SCHEMA_VERSION: Final = 1  # Final: type checkers read it as Literal[1], the field type of the contract
"""Version of the job/result JSON contract; bump on incompatible change."""

WORKER_HEARTBEAT_S = 5
"""How often a worker refreshes its announcement in Redis."""

WORKER_TTL_S = 20
"""A worker whose announcement is older than this is considered dead."""

PROGRESS_MIN_INTERVAL_S = 0.5
"""A worker publishes progress at most this often (the bot edits at most every ~2 s)."""

PREVIEW_EVERY_STEPS = 5
"""A low-res preview is attached to progress every this many steps (and at the end)."""

MAX_IMAGE_BYTES = 10 * 1024 * 1024
"""Largest image the bot downloads (an attachment for /describe, an image link): 10 MiB."""

MAX_IMAGE_PIXELS = 40_000_000
"""Most pixels an image may have (40 MP), read from its header before anything decodes it."""
