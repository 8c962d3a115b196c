"""imagine: the core shared by the Discord bot and the GPU workers.

No discord, no torch here: the prompt language (``imagine.prompt``), the request and job
contract (``imagine.request``, ``imagine.jobs``), the queue (``imagine.queue``), artifacts,
settings and errors. It imports nothing above it (``bot``, ``worker``, ``cli``), not even inside
a function: the import-linter contracts in pyproject.toml hold that.
"""

__version__ = "0.1.0"
