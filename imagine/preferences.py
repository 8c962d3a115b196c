"""/prefer: named bundles of parameters (``--NAME`` in any prompt) and a suffix for every prompt.

As Midjourney's /prefer option and /prefer suffix. A user's options and suffix are stored with
their /settings (``imagine.user_settings``: fields ``options`` and ``suffix``, one Redis read
on /imagine's path) and applied by the job factory (``JobFactory.expand``) to the prompt text
*before* it is parsed, so what the job records and the message shows is the expanded prompt,
and every limit (prompt length, parameters, permutations) applies to it:

- each ``--NAME`` (``—NAME``, at the start or after a space, case-insensitive) naming one of the
  user's options is replaced by the option's value; a value may name other options, expanded
  in turn; a name the user has no option for is left for the parser (which explains it);
- the suffix, when set, is appended: ``prompt + " " + suffix``.

Rules checked when an option is set (``check_option``): a name is 1-32 letters, digits, ``-``
or ``_``, starting with a letter, and is not one of the parameters' names or aliases (an option
cannot shadow ``--ar``); a value is at most ``MAX_VALUE`` characters; a user has at most
``MAX_OPTIONS`` options; and an option cannot contain itself, directly or through others
(``--a`` -> ``--b`` -> ``--a`` is refused, naming the circle).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from imagine.constants import MAX_PROMPT_CHARS
from imagine.errors import InvalidPreference, InvalidPrompt, quote
from imagine.params import PARAMETERS

MAX_OPTIONS = 20
MAX_VALUE = 400
"""Characters in one option's value, and in the suffix."""

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_OPTION_RE = re.compile(r"(?:^|(?<=\s))(?:--|[—–])([A-Za-z][A-Za-z0-9_-]{0,31})(?=\s|$)")

RESERVED = frozenset(name for row in PARAMETERS for name in row.names)
"""The parameters' names and aliases: no option may take one."""


def check_option(name: str, value: str, options: Mapping[str, str]) -> str:
    """The option's name as stored (lower case), when ``name`` = ``value`` may join ``options``;
    else ``InvalidPreference`` saying what is wrong and what is allowed."""
    key = name.strip().removeprefix("--").lower()
    if not NAME_RE.fullmatch(key):
        raise InvalidPreference(f"The option name {quote(name)} is not allowed: use 1-32 letters, digits, `-` or "
                                "`_`, starting with a letter, like `cinematic`.")
    if key in RESERVED:
        raise InvalidPreference(f"{quote('--' + key)} is a parameter: an option cannot take its name. "
                                "Choose another name, like `my-" + key + "`.")
    value = value.strip()
    if not value:
        raise InvalidPreference(f"The option {quote('--' + key)} needs a value, like `--ar 16:9 --s 250`.")
    if len(value) > MAX_VALUE:
        raise InvalidPreference(f"The value of {quote('--' + key)} has {len(value)} characters; at most "
                                f"{MAX_VALUE} are allowed.")
    if key not in options and len(options) >= MAX_OPTIONS:
        raise InvalidPreference(f"You have {len(options)} options, the most allowed; delete one with "
                                "`/prefer option delete` first.")
    circle = _circle(key, {**options, key: value})
    if circle:
        raise InvalidPreference(f"The option {quote('--' + key)} would contain itself: "
                                f"{quote(' -> '.join('--' + n for n in circle))}. An option cannot name itself.")
    return key


def check_suffix(suffix: str) -> str:
    """The suffix as stored ("" clears it)."""
    suffix = suffix.strip()
    if len(suffix) > MAX_VALUE:
        raise InvalidPreference(f"The suffix has {len(suffix)} characters; at most {MAX_VALUE} are allowed.")
    return suffix


def expand(prompt: str, options: Mapping[str, str], suffix: str | None = None) -> str:
    """``prompt`` with the user's options expanded and their suffix appended (module docstring).

    Each option is expanded once (options naming options several times over could otherwise
    grow without bound), and an expansion past ``MAX_PROMPT_CHARS`` is refused as soon as it is
    seen, with the parser's own message for a prompt that long."""
    done: dict[str, str] = {}

    def expanded(text: str, inside: tuple[str, ...]) -> str:
        def replace(match: re.Match[str]) -> str:
            key = match.group(1).lower()
            if key not in options or key in inside:  # not an option (the parser's to judge), or a circle
                return match.group(0)
            if key not in done:
                done[key] = expanded(options[key], (*inside, key))
            return done[key]

        out = _OPTION_RE.sub(replace, text)
        if len(out) > MAX_PROMPT_CHARS:
            raise InvalidPrompt(f"With your /prefer options expanded, the prompt is {len(out):,} characters "
                                f"long; the limit is {MAX_PROMPT_CHARS:,} characters.")
        return out

    whole = expanded(prompt, ())
    return f"{whole} {suffix}" if suffix else whole


def _circle(start: str, options: Mapping[str, str]) -> list[str]:
    """The path by which option ``start`` reaches itself, or []."""
    def walk(name: str, path: list[str]) -> list[str]:
        for match in _OPTION_RE.finditer(options.get(name, "")):
            key = match.group(1).lower()
            if key == start:
                return [*path, key]
            if key in options and key not in path:
                found = walk(key, [*path, key])
                if found:
                    return found
        return []

    return walk(start, [start])
