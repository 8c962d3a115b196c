"""All settings, typed, from the environment (and a .env file) in one object.

Every field reads ``IMAGINE_<NAME>`` except the few that carry well-known names
(``REDIS_URL``, ``DISCORD_TOKEN``). .env.example lists each with its default.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagine import constants as c


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IMAGINE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Redis: unset means "embedded" for `imagine run` (a redis-server it starts itself).
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "IMAGINE_REDIS_URL")
    )
    discord_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DISCORD_TOKEN", "IMAGINE_DISCORD_TOKEN")
    )

    # Models
    models_config: Path | None = None
    """TOML file naming the deployment's models; without it only the built-ins exist."""
    default_model: str = "shapes"
    """The embedded trained model (models/shapes): offline, follows prompts about simple shapes."""
    model_cache_dir: Path = Path.home() / ".cache" / "imagine" / "models"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    torch_threads: int = Field(default=0, ge=0)
    """Threads for torch on CPU; 0 means the number of cores available to this process."""
    compile: bool = False
    """torch.compile the UNet/VAE on GPU (warms the served sizes at start)."""
    warm_aspects: list[str] = ["1:1"]
    """Aspect ratios compiled at worker start when ``compile`` is on (JSON list in the env)."""

    diagnostics: bool = True
    """Workers compute embedding diagnostics (MiniLM + CLIP); off saves memory and time."""
    clip_model: str = ""
    """CLIP model for CLIP scores; empty: per model (openai/clip-vit-large-patch14, tiny CLIP for tiny)."""
    output_filter_model: str = ""
    """Image safety classifier run before delivery (e.g. CompVis/stable-diffusion-safety-checker); empty: off."""

    # Limits
    running_limit: int = Field(default=c.DEFAULT_RUNNING_LIMIT, ge=1)
    waiting_limit: int = Field(default=c.DEFAULT_WAITING_LIMIT, ge=0)
    job_timeout_s: int = Field(default=c.JOB_TIMEOUT_S, ge=10)
    result_ttl_s: int = Field(default=c.RESULT_TTL_S, ge=60)
    unserved_wait_s: float = Field(default=c.UNSERVED_WAIT_S, gt=0)
    """A job whose model no live worker serves fails after waiting this long (``imagine.unserved``)."""

    # Artifacts: unset means "in Redis with result_ttl_s"
    artifact_dir: Path | None = None

    # Monitoring
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Serve Prometheus metrics on this port (0: off)."""

    # Worker
    gpu: str = ""
    """"auto": claim a free GPU of this host in Redis; a number: that GPU; empty: as CUDA_VISIBLE_DEVICES says."""
    host_id: str = Field(default_factory=socket.gethostname)
    """Names the physical host for GPU claims and in the worker list."""
    worker_heartbeat_s: float = Field(default=c.WORKER_HEARTBEAT_S, gt=0)
    worker_ttl_s: float = Field(default=c.WORKER_TTL_S, gt=0)

    # Discord bot (`imagine bot`)
    dev_guild_id: int | None = None
    """Guild (server) the slash commands are synced to at start, for development."""
    sync_global: bool = False
    """Sync the slash commands globally at start (they take a while to appear everywhere)."""
    discord_api_base: str = "https://discord.com/api/v10"
    """Discord's REST API; a rate-limit proxy (nirn-proxy) or a local stand-in in tests."""
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    """Discord's gateway (websocket) for the first connection."""
    progress_interval_s: float = Field(default=2.0, gt=0)
    """The bot edits a job's progress message at most this often."""
    attachment_origins: list[str] = []
    """Origins (``scheme://host[:port]``) images may come from besides Discord's own CDN
    (https://cdn.discordapp.com, https://media.discordapp.net); JSON list in the env."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
