"""Discord's rate limits, as the stand-in (``FakeDiscord(rate_limits=True)``) enforces them.

What Discord documents and sends (developer docs, "Rate Limits"):

- Every route has a bucket, shared by the requests with the same route and *major parameter*
  (a channel id, or a webhook / interaction token): here 5 requests per 5 s for message routes
  (posts and edits in a channel, followups and edits through an interaction token, the
  interaction callback). A bucket's window starts at its first request and resets after ``per_s``.
- Every answer carries ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` (epoch seconds),
  ``-Reset-After`` (seconds), ``-Bucket`` (the bucket's hash).
- Over the limit: 429, the body ``{"message", "retry_after", "global"}`` and the headers above
  plus ``Retry-After`` and ``X-RateLimit-Scope: user``.
- In all, a bot may make 50 requests per second with its token (``X-RateLimit-Global: true``,
  ``X-RateLimit-Scope: global`` and ``"global": true`` when exceeded); requests made with an
  interaction token (the callback, followups, edits of its messages) are not bound by it.

Discord answers through Cloudflare, which adds ``Via``: discord.py reads a 429 without it as a
ban and gives up instead of waiting, so every answer here carries it too.

``RateLimits.check`` counts the 429s per bucket (``limited``), so a test can bound them.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field

GLOBAL_LIMIT = 50
"""Requests per second a bot may make with its token (interaction-token routes excepted)."""

VIA = {"Via": "1.1 google"}
"""What Discord's edge adds to every answer (discord.py trusts no 429 without it)."""


@dataclass(frozen=True)
class Limit:
    """One route's bucket: ``limit`` requests per ``per_s`` seconds per major parameter."""

    bucket: str  # the X-RateLimit-Bucket hash (one per route here)
    limit: int
    per_s: float
    counts_globally: bool  # made with the bot token (False: an interaction token)


ROUTES: tuple[tuple[str, re.Pattern[str], Limit], ...] = (
    ("POST", re.compile(r"/interactions/(?P<major>\d+/[^/]+)/callback"),
     Limit("interaction-callback", 5, 5.0, counts_globally=False)),
    ("POST", re.compile(r"/webhooks/\d+/(?P<major>[^/]+)"),
     Limit("webhook-followup", 5, 5.0, counts_globally=False)),
    ("*", re.compile(r"/webhooks/\d+/(?P<major>[^/]+)/messages/(?:@original|\d+)"),
     Limit("webhook-message", 5, 5.0, counts_globally=False)),
    ("POST", re.compile(r"/channels/(?P<major>\d+)/messages"),
     Limit("channel-post", 5, 5.0, counts_globally=True)),
    ("*", re.compile(r"/channels/(?P<major>\d+)/messages/\d+"),
     Limit("channel-message", 5, 5.0, counts_globally=True)),
)
"""The message routes' buckets; any other route has a generous bucket of its own (``OTHER``)."""

OTHER = (50, 1.0)
"""Requests per second of the routes the burst does not stress (commands, users, gateway)."""


def route_of(method: str, path: str) -> tuple[Limit, str]:
    """The bucket of a request and its major parameter."""
    for route_method, pattern, limit in ROUTES:
        if route_method in ("*", method) and (m := pattern.fullmatch(path)):
            return limit, m["major"]
    template = re.sub(r"/\d+", "/{id}", path)
    return Limit(f"{method} {template}", *OTHER, counts_globally=True), ""


@dataclass
class _Window:
    used: int = 0
    resets_at: float = 0.0  # time.monotonic()


@dataclass(frozen=True)
class Verdict:
    """What the stand-in answers about limits: the status (200 or 429), the headers, the body of a 429."""

    allowed: bool
    headers: dict[str, str]
    body: dict[str, object] | None = None


@dataclass
class RateLimits:
    """The buckets and the global window of one bot; ``check`` admits a request or refuses it."""

    global_limit: int = GLOBAL_LIMIT
    limited: Counter[str] = field(default_factory=Counter)  # 429s per bucket ("global" for the global one)
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)
    _global: _Window = field(default_factory=_Window)

    def check(self, method: str, path: str) -> Verdict:
        now = time.monotonic()
        limit, major = route_of(method, path)
        if limit.counts_globally:
            window = self._current(self._global, now, 1.0)
            if window.used >= self.global_limit:
                self.limited["global"] += 1
                return _refused(window.resets_at - now, scope="global")
        window = self._windows.setdefault((limit.bucket, major), _Window())
        self._current(window, now, limit.per_s)
        if window.used >= limit.limit:
            self.limited[limit.bucket] += 1
            return _refused(window.resets_at - now, scope="user", limit=limit)
        window.used += 1
        if limit.counts_globally:
            self._global.used += 1
        return Verdict(True, {**VIA, **_bucket_headers(limit, limit.limit - window.used, window.resets_at - now)})

    @staticmethod
    def _current(window: _Window, now: float, per_s: float) -> _Window:
        """``window``, started anew when its time is up."""
        if now >= window.resets_at:
            window.used, window.resets_at = 0, now + per_s
        return window


def _bucket_headers(limit: Limit, remaining: int, reset_after: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit.limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": limit.bucket,
    }


def _refused(retry_after: float, *, scope: str, limit: Limit | None = None) -> Verdict:
    retry_after = max(retry_after, 0.001)
    headers = {**VIA, "Retry-After": str(math.ceil(retry_after)), "X-RateLimit-Scope": scope}
    if limit is not None:
        headers.update(_bucket_headers(limit, 0, retry_after))
    else:
        headers["X-RateLimit-Global"] = "true"
    body = {"message": "You are being rate limited.", "retry_after": round(retry_after, 3),
            "global": scope == "global"}
    return Verdict(False, headers, body)
