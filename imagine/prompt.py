"""Parse Midjourney's prompt language into frozen :class:`~imagine.request.ImagineRequest` s.

Grammar (what ``/imagine prompt:`` accepts), applied in this order::

    prompt      := permutation-expanded text, then for each expansion:
    expansion   := image_url* text parameter*
    image_url   := a leading token containing "://", starting with "www.", or a local path
                   ("/", "./", "../", "~/"): an https://, http:// or file:// link or a path
                   ending in .png .jpg .jpeg .webp .gif (a query allowed); at most 5.
                   Where it may come from is not the parser's business: the bot fetches
                   only from the allowed origins, `imagine run` reads local files too
                   (``imagine.image_inputs``)
    text        := part ("::" weight? part)*        -- at least one non-empty part
    weight      := [+-]? (digits ["." digits] | "." digits), right after "::",
                   followed by whitespace, "::" or the end; absent = 1
    parameter   := ("--" | "—" | "–") name value*   -- at start or after whitespace,
                   and the name starts with a letter
    permutation := "{" option ("," option)* "}"     -- anywhere, nested, options stripped;
                   "\\," "\\{" "\\}" are a literal comma and braces

1. **Limits.** The raw input must be valid UTF-8 text (bytes a pipe could not decode arrive
   as lone surrogates, ``\\udcff``: refused, saying where), non-blank and at most
   ``MAX_PROMPT_CHARS`` long.
2. **Permutations** are expanded first, on the raw text, so they also work inside
   parameters (``--ar {1:1, 16:9}``) and weights (``a::{1,2} b``). The number of expansions
   is computed from the brace tree before anything is built, so ``{a,b}`` x 30 fails fast.
   Expansions come in cartesian order, the leftmost group varying slowest.
3. **Parameters.** Everything from the first parameter on is parameters: the tokens after
   a parameter name, up to the next one, are its value. Text after a parameter is never
   prompt text. Names are case-insensitive; each parameter (counting aliases) at most once.
   The table :data:`imagine.params.PARAMETERS` is the single source of names, aliases,
   ranges, defaults and help. A ``--quality`` we do not offer is rounded to the nearest one
   (``--q 3`` -> 2, ``--q .75`` -> 1: halfway rounds up), and the request's ``notes`` say so;
   a quality that is not a number above 0 is refused.
4. **Image links** are the leading URL-looking tokens; text after them is optional (a prompt
   of images alone is encoded as the empty text). ``--sref`` takes links the same way.
5. **Multi-prompts.** ``::`` splits the text into weighted parts (``hot::2 dog`` -> ``hot``
   at 2, ``dog`` at 1). Empty parts are dropped. Each ``--no`` item is appended as a part
   at ``NO_WEIGHT`` (-0.5). A total of the ``::`` weights that is not above 0 is refused
   (``--no`` items are not counted, so any number of them can follow a plain prompt): that
   total is :attr:`ImagineRequest.total_weight <imagine.request.ImagineRequest.total_weight>`.

Every refusal is an :class:`~imagine.errors.UserError` subclass whose message quotes the
offending fragment and says what is allowed; nothing else escapes :func:`parse`.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Collection, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationError

from imagine.constants import MAX_ASPECT, MAX_JOBS_PER_PROMPT, MAX_PROMPT_CHARS, NO_WEIGHT
from imagine.errors import InvalidLink, InvalidParameter, InvalidPrompt, quote
from imagine.image_inputs import MAX_IMAGE_PROMPTS, check_count, is_local_path
from imagine.model_specs import configured_name
from imagine.params import PARAMETERS, AspectRatio, Parameter, or_list
from imagine.params import fmt as _fmt
from imagine.request import ImagineRequest, Params, SubPrompt

__all__ = ["PARAMETERS", "MAX_WEIGHT", "MAX_BRACE_DEPTH", "count_jobs", "parse"]

MAX_WEIGHT = 1000.0
"""Largest magnitude of a ``::`` weight (keeps sums and normalization finite)."""

MAX_BRACE_DEPTH = 20
"""Deepest permutation nesting accepted (``{a {b {c}}}`` is depth 3)."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")

_Number = TypeVar("_Number", int, float)

_BY_NAME: dict[str, Parameter] = {n: spec for spec in PARAMETERS for n in spec.names}

# --------------------------------------------------------------------------------------
# Regular expressions (compiled once)
# --------------------------------------------------------------------------------------

# A parameter: two dashes (or an em/en dash) at the start or after whitespace, then a
# name that starts with a letter. The name runs to the next whitespace so that glued
# values (`--ar=3:2`, `--v6`) are reported rather than silently read as text.
_PARAM_RE = re.compile(r"(?:^|(?<=\s))(?:--|[—–])([^\W\d_]\S*)")
_NAME_PREFIX_RE = re.compile(r"[^\W\d_]+")
_GLUED_VALUE_START = frozenset("=:.0123456789")  # `--ar=3:2`, `--v6`: a value glued to a name
_INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
_RATIO_RE = re.compile(r"(\d+):(\d+)", re.ASCII)
# What follows "::" when it starts like a number: up to whitespace, "::" or the end.
_WEIGHT_TOKEN_RE = re.compile(r"\S*?(?=\s|::|\Z)")
_NUMBER_START = frozenset("+-.0123456789")
# Brace syntax: escapes, the three special characters, or a run of anything else.
_BRACE_TOKEN_RE = re.compile(r"\\[,{}]|[{},]|[^\\{},]+|\\")
_BRACE_CHARS_RE = re.compile(r"[{}\\]")

# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def parse(text: str, *, models: Collection[str] | None = None) -> list[ImagineRequest]:
    """Parse one ``/imagine`` prompt into one request per permutation (cartesian order).

    ``models`` are the deployment's model names; when given, ``--v``/``--model``/``--version``
    must name one of them (case-insensitive). Raises only ``imagine.errors.UserError``
    subclasses: ``InvalidPrompt``, ``InvalidParameter``, ``InvalidLink``.
    """
    if not isinstance(text, str):
        raise InvalidPrompt("The prompt must be text, like `a fox in the snow`.")
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidPrompt(
            f"The prompt is {len(text):,} characters long; the limit is {MAX_PROMPT_CHARS:,} characters."
        )
    _check_utf8(text)
    if not text.strip():
        raise InvalidPrompt("The prompt is empty; write what you want to see, like `a fox in the snow`.")

    expansions = _expand_permutations(text)
    requests = [_parse_one(expansion, models) for expansion in expansions]
    jobs = count_jobs(requests)
    if jobs > MAX_JOBS_PER_PROMPT:
        raise InvalidPrompt(
            f"This prompt makes {jobs} jobs ({len(requests)} prompt(s), each run `--repeat` times); "
            f"the limit is {MAX_JOBS_PER_PROMPT} jobs per prompt."
        )
    return requests


def count_jobs(requests: Iterable[ImagineRequest]) -> int:
    """How many jobs these requests start: each one counts ``--repeat`` times."""
    return sum(int(r.params.repeat) for r in requests)


def _check_utf8(text: str) -> None:
    """Refuse text that is not valid UTF-8: bytes that a pipe or a terminal could not decode
    arrive as lone surrogates (``\\udcff``), which nothing downstream can store or encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        what = f"the byte 0x{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else "half of a surrogate pair"
        before = text[max(0, exc.start - 30) : exc.start].strip()
        where = f"after {quote(before)}" if before else "at the start"
        raise InvalidPrompt(
            f"The prompt is not valid UTF-8 text: character {exc.start + 1} ({where}) is {what}, "
            "which is not a character; send the prompt as UTF-8 text."
        ) from None


# --------------------------------------------------------------------------------------
# Permutations: {a, b} groups
# --------------------------------------------------------------------------------------


class _Group:
    """A ``{...}`` group: a list of options, each a sequence of strings and groups."""

    __slots__ = ("options",)

    def __init__(self) -> None:
        self.options: list[list[str | _Group]] = []


def _expand_permutations(text: str) -> list[str]:
    """Expand every ``{a, b}`` group; refuse more than ``MAX_JOBS_PER_PROMPT`` results."""
    if _BRACE_CHARS_RE.search(text) is None:
        return [text]
    seq = _parse_braces(text)
    n = _count(seq)
    if n > MAX_JOBS_PER_PROMPT:
        shown = f"{n:,}" if n < 10**12 else "more than 1,000,000,000,000"
        raise InvalidPrompt(
            f"The permutations in this prompt make {shown} jobs; the limit is {MAX_JOBS_PER_PROMPT} jobs per prompt."
        )
    return _expand(seq)


def _parse_braces(text: str) -> list[str | _Group]:
    """Build the brace tree; unbalanced or too deeply nested braces are refused."""
    top: list[str | _Group] = []
    current = top
    stack: list[tuple[_Group, list[str | _Group], int]] = []  # (group, parent seq, "{" position)
    for m in _BRACE_TOKEN_RE.finditer(text):
        tok = m.group()
        if tok == "{":
            if len(stack) >= MAX_BRACE_DEPTH:
                raise InvalidPrompt(
                    f"Permutation braces are nested too deeply at {quote(_around(text, m.start()))}; "
                    f"at most {MAX_BRACE_DEPTH} levels are allowed."
                )
            group = _Group()
            stack.append((group, current, m.start()))
            current = []
        elif tok == "}":
            if not stack:
                raise InvalidPrompt(
                    f"Unbalanced braces: the `}}` in {quote(_around(text, m.start()))} has no opening `{{`; "
                    "add one or write `\\}` for a literal brace."
                )
            group, parent, _ = stack.pop()
            group.options.append(current)
            parent.append(group)
            current = parent
        elif tok == "," and stack:
            stack[-1][0].options.append(current)
            current = []
        else:
            literal = tok[1] if len(tok) == 2 and tok[0] == "\\" else tok
            if current and isinstance(current[-1], str):
                current[-1] += literal
            else:
                current.append(literal)
    if stack:
        pos = stack[0][2]
        raise InvalidPrompt(
            f"Unbalanced braces: the `{{` in {quote(_around(text, pos))} is never closed; "
            "add a `}` or write `\\{` for a literal brace."
        )
    return top


def _count(seq: list[str | _Group]) -> int:
    """Number of expansions of a sequence, without building them."""
    n = 1
    for item in seq:
        if isinstance(item, _Group):
            n *= sum(_count(option) for option in item.options)
    return n


def _expand(seq: list[str | _Group]) -> list[str]:
    """All expansions of a sequence, leftmost group varying slowest."""
    choices: list[list[str]] = []
    for item in seq:
        if isinstance(item, _Group):
            choices.append([s.strip() for option in item.options for s in _expand(option)])
        else:
            choices.append([item])
    return ["".join(combo) for combo in itertools.product(*choices)]


def _around(text: str, pos: int, width: int = 30) -> str:
    """The fragment of ``text`` around ``pos`` (for quoting in errors)."""
    start = max(0, pos - width)
    end = min(len(text), pos + width)
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


# --------------------------------------------------------------------------------------
# One expansion
# --------------------------------------------------------------------------------------


def _parse_one(text: str, models: Collection[str] | None) -> ImagineRequest:
    """Parse one permutation-free prompt."""
    first = _PARAM_RE.search(text)
    head = text if first is None else text[: first.start()]
    notes: list[str] = []
    values = {} if first is None else _parse_params(text, first.start(), models, notes)

    tokens = head.split()
    urls: list[str] = []
    while tokens and _looks_like_url(tokens[0]):
        urls.append(_check_url(tokens.pop(0)))
    check_count(len(urls))
    if not tokens and not urls:
        raise InvalidPrompt(
            "The prompt has no text before its parameters; write what you want to see first, "
            "like `a fox in the snow --ar 16:9`."
        )
    prompt_text = " ".join(tokens)
    parts = _split_weights(prompt_text) if tokens else [("", 1.0)]  # images alone: the empty text
    parts.extend((item, NO_WEIGHT) for item in values.get("no", ()))

    try:
        request = ImagineRequest(
            text=prompt_text,
            image_urls=tuple(urls),
            parts=tuple(SubPrompt(text=t, weight=w) for t, w in parts),
            params=Params(**values) if values else Params(),
            notes=tuple(notes),
        )
    except ValidationError as exc:  # our own checks should make this unreachable
        raise InvalidParameter(
            f"The prompt {quote(text.strip())} has a value our models cannot use ({exc.error_count()} problem(s))."
        ) from None
    # The rule is on the weights the user wrote with `::`. `--no` items (each -0.5) are not
    # counted: otherwise `a garden --no people, cars` (1 - 0.5 - 0.5 = 0) would be refused.
    if not request.total_weight > 0:
        shown = " + ".join(_fmt(p.weight) for p in request.written_parts)
        raise InvalidPrompt(
            f"Prompts with a negative total weight are not allowed: the weights of {quote(prompt_text)} "
            f"add up to {shown} = {_fmt(request.total_weight)}, and the total must be above 0."
        )
    return request


# --------------------------------------------------------------------------------------
# Image links
# --------------------------------------------------------------------------------------


def _looks_like_url(token: str) -> bool:
    path = token.strip("<>")  # a local path only when it names an image: `/r/ memes` stays text
    local = is_local_path(path) and path.lower().endswith(IMAGE_EXTENSIONS)
    return "://" in token or token[:4].lower() == "www." or local


def _check_url(token: str) -> str:
    """Return the image link (or local path), or raise ``InvalidLink``."""
    url = token[1:-1] if token.startswith("<") and token.endswith(">") and len(token) > 2 else token
    allowed = ("image links must be https:// links (or, for `imagine run`, files) ending in "
               ".png, .jpg, .jpeg, .webp or .gif")
    if is_local_path(url) or url[:7].lower() == "file://":
        if not url.lower().endswith(IMAGE_EXTENSIONS):
            raise InvalidLink(f"{quote(token)} does not point to an image file; {allowed}.")
        return url
    if url[:8].lower() != "https://" and url[:7].lower() != "http://":
        raise InvalidLink(f"{quote(token)} is not an https:// link; {allowed}.")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or not host:
        raise InvalidLink(f"{quote(token)} is not a valid link; {allowed}.")
    if not parts.path.lower().endswith(IMAGE_EXTENSIONS):
        raise InvalidLink(f"{quote(token)} does not point to an image file; {allowed}.")
    return url


# --------------------------------------------------------------------------------------
# Multi-prompts: text::weight
# --------------------------------------------------------------------------------------


def _split_weights(text: str) -> list[tuple[str, float]]:
    """Split ``a::2 b`` into ``[("a", 2.0), ("b", 1.0)]``; empty parts are dropped."""
    if "::" not in text:
        return [(text, 1.0)]
    parts: list[tuple[str, float]] = []
    pos, n = 0, len(text)
    while True:
        i = text.find("::", pos)
        if i < 0:
            _add_part(parts, text[pos:], 1.0)
            break
        j = i + 2
        weight = 1.0
        if j < n and text[j] in _NUMBER_START:
            raw = _WEIGHT_TOKEN_RE.match(text, j).group()  # type: ignore[union-attr]
            weight = _parse_weight(raw)
            j += len(raw)
        _add_part(parts, text[pos:i], weight)
        pos = j
    if not parts:
        raise InvalidPrompt(
            f"The prompt {quote(text)} has weights but no text; write text before each `::`, like `hot::2 dog`."
        )
    return parts


def _add_part(parts: list[tuple[str, float]], text: str, weight: float) -> None:
    text = text.strip()
    if text:
        parts.append((text, weight))


def _parse_weight(raw: str) -> float:
    if _NUMBER_RE.fullmatch(raw) is None:
        raise InvalidPrompt(
            f"Malformed weight {quote('::' + raw)}; "
            "a weight is a number right after `::`, like `::2`, `::-0.5` or `::.5`."
        )
    weight = float(raw)
    if not abs(weight) <= MAX_WEIGHT:
        raise InvalidPrompt(
            f"The weight {quote('::' + raw)} is out of range; "
            f"weights go from {_fmt(-MAX_WEIGHT)} to {_fmt(MAX_WEIGHT)}."
        )
    return weight


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------


def _parse_params(text: str, start: int, models: Collection[str] | None, notes: list[str]) -> dict[str, Any]:
    """Read every ``--name value...`` from ``start`` on into ``Params`` keyword arguments;
    what was changed on the way (a rounded ``--quality``) is added to ``notes``."""
    values: dict[str, Any] = {}
    seen: dict[str, str] = {}  # spec name -> the fragment as written
    setters: dict[str, str] = {}  # Params field -> the fragment that set it
    matches = list(_PARAM_RE.finditer(text, start))
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        name = m.group(1)
        tokens = text[m.end() : end].split()
        written = " ".join([text[m.start() : m.end()], *tokens])
        spec = _lookup(name)
        if spec.name in seen:
            raise InvalidParameter(
                f"{quote(written)} repeats {quote(seen[spec.name])}; give each parameter once."
            )
        if spec.field in setters:
            raise InvalidParameter(
                f"{quote(written)} cannot be used together with {quote(setters[spec.field])}; pick one."
            )
        seen[spec.name] = setters[spec.field] = written
        values[spec.field] = _parse_value(spec, name, tokens, written, models)
        if spec.kind == "quality" and float(tokens[0]) != values[spec.field]:
            notes.append(f"--quality {tokens[0]} was rounded to {_fmt(values[spec.field])}, the nearest we offer.")
    return values


def _lookup(name: str) -> Parameter:
    """The spec for ``name`` (case-insensitive), or ``InvalidParameter`` with a suggestion."""
    spec = _BY_NAME.get(name.lower())
    if spec is not None:
        return spec
    prefix = _NAME_PREFIX_RE.match(name)
    rest = name[prefix.end() :] if prefix else ""
    if prefix and prefix.group().lower() in _BY_NAME and rest[:1] in _GLUED_VALUE_START:
        known = prefix.group()
        raise InvalidParameter(
            f"Malformed parameter {quote('--' + name)}; put a space between {quote('--' + known)} "
            f"and its value, like `--{known.lower()} {rest.lstrip('=:')}`."
        )
    close = difflib.get_close_matches(name.lower()[:40], list(_BY_NAME), n=1, cutoff=0.6)
    if close:
        raise InvalidParameter(f"Unknown parameter {quote('--' + name)}; did you mean `--{close[0]}`?")
    names = ", ".join(f"--{spec.name}" for spec in PARAMETERS)
    raise InvalidParameter(f"Unknown parameter {quote('--' + name)}; the parameters are {names}.")


def _parse_value(
    spec: Parameter, name: str, tokens: list[str], written: str, models: Collection[str] | None
) -> Any:
    """Check and convert one parameter's value tokens."""
    flag = f"`--{name}`"
    if spec.kind == "flag":
        if tokens:
            raise InvalidParameter(
                f"{flag} takes no value, but {quote(' '.join(tokens))} follows it; "
                "parameters go at the end of the prompt, after the text."
            )
        return spec.flag_value
    if spec.kind == "links":
        if not tokens:
            raise InvalidParameter(f"{quote(written)} is missing its value; {flag} takes {spec.allowed}.")
        links = tuple(_check_url(token) for token in tokens)
        check_count(len(links), f"{flag} images", MAX_IMAGE_PROMPTS)
        return links
    if spec.kind == "list":
        items = tuple(item.strip() for item in " ".join(tokens).split(","))
        items = tuple(item for item in items if item)
        if not items:
            raise InvalidParameter(f"{quote(written)} is missing its value; {flag} takes {spec.allowed}.")
        return items
    if not tokens:
        raise InvalidParameter(f"{quote(written)} is missing its value; {flag} takes {spec.allowed}.")
    if len(tokens) > 1:
        raise InvalidParameter(
            f"{quote(written)} has more than one value; {flag} takes {spec.allowed}, "
            "and text goes before the parameters."
        )
    raw = tokens[0]
    parser = _VALUE_PARSERS[spec.kind]
    return parser(spec, raw, written, flag, models)


def _int_value(spec: Parameter, raw: str, written: str, flag: str, models: Any) -> int:
    if _INT_RE.fullmatch(raw) is None:
        raise InvalidParameter(f"{quote(written)} is not a whole number; {flag} takes {spec.allowed}.")
    digits = raw.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 18:  # far out of every range (and int() refuses > 4,300 digits)
        value = -1 if raw[0] == "-" else 10**18
    else:
        value = -int(digits) if raw[0] == "-" else int(digits)
    return _in_range(spec, value, written, flag)


def _number_value(spec: Parameter, raw: str, written: str, flag: str, models: Any) -> float:
    if _NUMBER_RE.fullmatch(raw) is None:
        raise InvalidParameter(f"{quote(written)} is not a number; {flag} takes {spec.allowed}.")
    return _in_range(spec, float(raw), written, flag)


def _in_range(spec: Parameter, value: _Number, written: str, flag: str) -> _Number:
    assert spec.lo is not None and spec.hi is not None
    if not spec.lo <= value <= spec.hi:
        raise InvalidParameter(f"{quote(written)} is out of range; {flag} takes {spec.allowed}.")
    return value


def _quality_value(spec: Parameter, raw: str, written: str, flag: str, models: Any) -> float:
    """The nearest quality we offer (halfway rounds up; above the highest: the highest), as
    Midjourney rounds a quality it does not offer."""
    if _NUMBER_RE.fullmatch(raw) is None:
        raise InvalidParameter(f"{quote(written)} is not a number; {flag} takes {spec.allowed}.")
    value = float(raw)
    if not value > 0:
        raise InvalidParameter(f"{quote(written)} is not above 0; {flag} takes {spec.allowed}.")
    return float(min(spec.choices, key=lambda q: (abs(q - value), -q)))


def _ratio_value(spec: Parameter, raw: str, written: str, flag: str, models: Any) -> AspectRatio:
    m = _RATIO_RE.fullmatch(raw)
    sides = [side.lstrip("0") or "0" for side in m.groups()] if m else []
    if not sides or any(len(side) > 9 for side in sides):
        raise InvalidParameter(f"{quote(written)} is not an aspect ratio; {flag} takes {spec.allowed}.")
    w, h = int(sides[0]), int(sides[1])
    if w == 0 or h == 0:
        raise InvalidParameter(f"{quote(written)} has a zero side; {flag} takes {spec.allowed}.")
    g = math.gcd(w, h)
    w, h = w // g, h // g
    if w > MAX_ASPECT * h or h > MAX_ASPECT * w:
        raise InvalidParameter(
            f"{quote(written)} is out of range; our models support 1:{MAX_ASPECT} to {MAX_ASPECT}:1."
        )
    return AspectRatio(width=w, height=h)


def _choice_value(spec: Parameter, raw: str, written: str, flag: str, models: Any) -> str:
    value = raw.lower()
    if value not in spec.choices:
        raise InvalidParameter(f"{quote(written)} is not a style we offer; {flag} takes {spec.allowed}.")
    return value


def _model_value(spec: Parameter, raw: str, written: str, flag: str, models: Collection[str] | None) -> str:
    if models is None:
        return raw
    model = configured_name(raw, models)
    if model is not None:
        return model
    if not models:
        raise InvalidParameter(f"{quote(written)} cannot be used: no models are configured to choose from.")
    allowed = or_list([f"`{m}`" for m in sorted(models)])
    raise InvalidParameter(f"{quote(written)} is not one of our models; {flag} takes {allowed}.")


_VALUE_PARSERS = {
    "int": _int_value,
    "number": _number_value,
    "quality": _quality_value,
    "ratio": _ratio_value,
    "choice": _choice_value,
    "model": _model_value,
}
