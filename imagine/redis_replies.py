"""Typed readers of redis-py's replies: bytes to the str and shapes the code works with.

redis-py types every reply as ``bytes | str`` (its client is not generic over
``decode_responses``, so it cannot know which), and replies whose shape depends on the
options or the protocol (ZRANGE with or without scores, XREAD in RESP2 or RESP3) as a union
of every shape. Our connections never decode (bytes in, bytes out) and speak RESP2; these
helpers say so once, so the callers read plainly and a type checker follows them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from redis.typing import XReadResponse

__all__ = ["members", "optional_text", "required_text", "stream_entries", "text", "text_hash"]


def text(value: bytes | str) -> str:
    """A reply as text (UTF-8)."""
    return value.decode() if isinstance(value, bytes) else value


def optional_text(value: bytes | str | None) -> str | None:
    """A reply that may be missing (a key or hash field that is not there) as text, or None."""
    return None if value is None else text(value)


def required_text(value: bytes | str | None, what: str) -> str:
    """A reply that must be there (our code wrote it) as text; None raises LookupError naming ``what``."""
    if value is None:
        raise LookupError(f"{what} is missing from Redis")
    return text(value)


def members(reply: Iterable[object]) -> list[str]:
    """The members of a set or of a ZRANGE reply without scores, as text."""
    out = []
    for member in reply:
        if not isinstance(member, bytes | str):
            raise TypeError(f"expected members without scores, got {member!r}")
        out.append(text(member))
    return out


def text_hash(reply: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """An HGETALL reply with its fields and values as text."""
    return {text(k): text(v) for k, v in reply.items()}


def stream_entries(reply: XReadResponse | None) -> list[tuple[str, dict[bytes, bytes]]]:
    """The entries of an XREAD reply, every stream's in turn: (entry id, fields as bytes)."""
    if isinstance(reply, dict):
        raise TypeError("XREAD answered in RESP3; our connections speak RESP2")
    entries = []
    for _stream, stream in reply or []:
        for entry_id, fields in stream:
            entries.append((text(entry_id), fields))
    return entries
