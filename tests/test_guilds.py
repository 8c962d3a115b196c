"""Guild moderation on real Redis: banned words, users, channels, speed policy."""

from __future__ import annotations

import pytest
import redis
from pydantic import ValidationError

from imagine.errors import BannedPrompt, NotAllowedHere
from imagine.guilds import GuildConfig, Guilds, find_banned


@pytest.fixture
def guilds(redis_conn: redis.Redis) -> Guilds:
    return Guilds(redis_conn)


@pytest.mark.parametrize(
    "prompt, hit",
    [
        ("a GORY scene", "gory"),
        ("a góry scene", "gory"),  # accents do not hide a word
        ("gory, at dusk", "gory"),
        ("a category of cats", None),  # a banned word inside another word is fine
        ("gory2 stuff", None),
        ("blood bath in the style of", "blood bath"),  # phrases
    ],
)
def test_banned_words_match_whole_words_ignoring_case_and_accents(prompt: str, hit: str | None) -> None:
    assert find_banned(prompt, ["gory", "blood bath"]) == hit


def test_a_banned_prompt_is_refused_before_anything_is_queued(guilds: Guilds) -> None:
    guilds.ban_words("g1", "Gory", " ", "blood bath")
    assert guilds.banned_words("g1") == ["blood bath", "gory"]
    with pytest.raises(BannedPrompt) as err:
        guilds.admit("g1", "c1", "u1", "a gory fox --ar 16:9", None)
    assert err.value.title == "Banned prompt detected" and "`gory`" in err.value.message
    guilds.admit("g2", "c1", "u1", "a gory fox", None)  # another server's list
    guilds.unban_words("g1", "GORY")
    guilds.admit("g1", "c1", "u1", "a gory fox", None)


def test_banned_users_channels_and_relax_only(guilds: Guilds) -> None:
    guilds.ban_user("g1", "u9")
    with pytest.raises(NotAllowedHere):
        guilds.admit("g1", "c1", "u9", "a fox", None)
    guilds.unban_user("g1", "u9")
    guilds.set_config("g1", allowed_channels=["c2"], speed_policy="relax-only")
    with pytest.raises(NotAllowedHere, match="<#c2>"):
        guilds.admit("g1", "c1", "u9", "a fox", None)
    with pytest.raises(NotAllowedHere, match="relax mode only"):
        guilds.admit("g1", "c2", "u9", "a fox", "fast")
    assert guilds.admit("g1", "c2", "u9", "a fox", "relax").speed_policy == "relax-only"


def test_config_persists_and_is_validated(guilds: Guilds, redis_conn: redis.Redis) -> None:
    assert guilds.config("g1") == GuildConfig()
    guilds.set_config("g1", running_limit=5, output_filter="spoiler")
    assert Guilds(redis_conn).config("g1").running_limit == 5
    with pytest.raises(ValidationError):
        guilds.set_config("g1", running_limit=99)
    assert guilds.config("g1").output_filter == "spoiler"
