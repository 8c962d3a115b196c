"""Property tests of imagine.prompt: no input crashes it, valid prompts give sane requests.

Example counts: the arbitrary-text test runs 10,000 examples (about 8 s on a 2-core box);
the grammar tests run 2,000 by default and 10,000 with ``HYPOTHESIS_PROFILE=ci-long``.
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagine.constants import MAX_ASPECT, MAX_JOBS_PER_PROMPT, MAX_PROMPT_CHARS
from imagine.errors import UserError
from imagine.params import Parameter
from imagine.prompt import MAX_WEIGHT, PARAMETERS, count_jobs, parse
from imagine.request import ImagineRequest

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "ci-long"
GRAMMAR_EXAMPLES = 10_000 if LONG else 2_000
COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def check(text: str, **kw) -> list[ImagineRequest] | None:
    """parse() returns a non-empty list of requests or raises a UserError; nothing else."""
    try:
        requests = parse(text, **kw)
    except UserError as err:
        assert err.message and err.title in {"Invalid prompt", "Invalid parameter", "Invalid link", "Invalid image"}
        return None
    assert isinstance(requests, list) and requests
    assert all(isinstance(r, ImagineRequest) for r in requests)
    assert count_jobs(requests) <= MAX_JOBS_PER_PROMPT
    for r in requests:
        assert_sane(r)
    return requests


def assert_sane(r: ImagineRequest) -> None:
    """Every accepted request: text present (or image prompts alone, the empty text their one part),
    total weight > 0, every field in its range."""
    if r.image_urls and not r.text:
        assert [p.text for p in r.written_parts] == [""]
    else:
        assert r.text.strip()
        assert r.parts and all(p.text.strip() for p in r.parts)
    written = r.parts[: len(r.parts) - len(r.params.no)]  # --no items (-0.5 each) are not counted
    assert r.total_weight == math.fsum(p.weight for p in written) > 0
    assert all(abs(p.weight) <= MAX_WEIGHT for p in r.parts)
    for spec in PARAMETERS:
        assert_in_range(spec, getattr(r.params, spec.field))
    assert r.positives


def assert_in_range(spec: Parameter, value) -> None:
    if spec.kind in ("int", "number"):
        if value is None:  # seed: chosen at submission
            assert spec.field == "seed"
        else:
            assert spec.lo <= value <= spec.hi, (spec.name, value)
    elif spec.kind in ("quality", "choice"):
        assert value is None or value in spec.choices
    elif spec.kind == "ratio":
        assert 1 / MAX_ASPECT <= value.ratio <= MAX_ASPECT
    elif spec.kind == "list":
        assert all(item.strip() == item and item for item in value)
    elif spec.kind == "links":
        assert len(value) <= 5 and all("://" in link or link[:1] in "/.~" for link in value)


# ---------------------------------------------------------------------------------------
# Arbitrary text
# ---------------------------------------------------------------------------------------


@settings(max_examples=10_000, **COMMON)
@given(st.text())
def test_arbitrary_text_never_crashes(text):
    check(text)


@settings(max_examples=1_000, **COMMON)
@given(st.text(), st.text(), st.integers(0xD800, 0xDFFF))
def test_text_with_a_lone_surrogate_is_refused_as_not_utf8(before, after, code):
    text = before + chr(code) + after
    try:
        parse(text)
    except UserError as err:
        assert "not valid UTF-8" in err.message or len(text) > MAX_PROMPT_CHARS, err.message
        err.message.encode("utf-8")
    else:
        raise AssertionError(f"accepted {text!r}")


@settings(max_examples=GRAMMAR_EXAMPLES, **COMMON)
@given(st.text(alphabet=st.sampled_from(list(" \t\n\x00:{},\\-—–.0123456789abcsrvw=/<>")), max_size=80))
def test_syntax_heavy_text_never_crashes(text):
    check(text)


# ---------------------------------------------------------------------------------------
# Grammar-ish mixes
# ---------------------------------------------------------------------------------------

words = st.sampled_from(["cat", "fox", "snow", "Red", "a", "forest", "ñandú", "猫", "x\x00y", "--", "—", "::x"])
numbers = st.one_of(
    st.integers(-5000, 5000).map(str),
    st.floats(-10, 10, allow_nan=False).map(lambda f: f"{f:.3g}"),
    st.sampled_from(["", ".", "-", ".5", "1.", "1.2.3", "--2", "+1", "1e3", "9" * 400]),
)
param_names = st.sampled_from([n for spec in PARAMETERS for n in spec.names] + ["aspct", "turbo", "niji"])
param_values = st.one_of(
    numbers,
    st.builds(lambda a, b: f"{a}:{b}", st.integers(0, 40), st.integers(0, 40)),
    st.sampled_from(["raw", "RAW", "cute", "a, b", ",", "sdxl", "", "16:9 and more"]),
)
dashes = st.sampled_from(["--", "—", "–", "-", "---"])
params = st.builds(lambda d, n, v: f"{d}{n} {v}", dashes, param_names, param_values)
urls = st.sampled_from(
    [
        "https://e.com/a.png",
        "https://cdn.e.com/x/b.JPG?ex=1",
        "http://e.com/a.png",
        "www.e.com/a.gif",
        "https://e.com/a.txt",
        "https://[::1/a.png",
        "<https://e.com/a.webp>",
        "https://",
    ]
)
weights = st.builds(lambda n: f"::{n}", numbers)
braces = st.sampled_from(["{", "}", ",", "\\,", "\\{", "\\}", "{a, b}", "{x,}", "{1:1, 16:9}", "{1,2}"])
pieces = st.one_of(words, weights, st.just("::"), params, braces, urls, numbers)
separators = st.sampled_from([" ", " ", " ", "", "  ", "\n"])


@st.composite
def grammar_prompts(draw) -> str:
    items = draw(st.lists(st.tuples(pieces, separators), max_size=14))
    return "".join(piece + sep for piece, sep in items)


@settings(max_examples=GRAMMAR_EXAMPLES, **COMMON)
@given(grammar_prompts())
def test_grammar_mix_never_crashes(text):
    check(text)


@settings(max_examples=GRAMMAR_EXAMPLES // 2, **COMMON)
@given(grammar_prompts(), st.lists(st.sampled_from(["sdxl", "flux", "6"]), max_size=3))
def test_grammar_mix_with_models_never_crashes(text, models):
    requests = check(text, models=models)
    if requests:
        assert all(r.params.model is None or r.params.model in models for r in requests)


# ---------------------------------------------------------------------------------------
# Valid prompts
# ---------------------------------------------------------------------------------------


def valid_value(spec: Parameter) -> st.SearchStrategy[str]:
    if spec.kind == "int":
        return st.integers(int(spec.lo), int(spec.hi)).map(str)
    if spec.kind == "number":
        return st.integers(int(spec.lo * 100), int(spec.hi * 100)).map(lambda n: f"{n / 100:g}")
    if spec.kind == "quality":
        return st.sampled_from(["0.25", ".25", ".5", "1", "1.0", "2"])
    if spec.kind == "ratio":
        return st.integers(1, 50).flatmap(
            lambda h: st.integers(-(-h // MAX_ASPECT), MAX_ASPECT * h).map(lambda w: f"{w}:{h}")
        )
    if spec.kind == "choice":
        return st.sampled_from(spec.choices)
    if spec.kind == "list":
        return st.lists(st.sampled_from(["people", "red cars", "text"]), min_size=1, max_size=2).map(", ".join)
    if spec.kind == "model":
        return st.sampled_from(["sdxl", "flux"])
    if spec.kind == "links":
        links = st.sampled_from(["https://cdn.discordapp.com/a/1.png", "<https://e.com/b.jpg>"])
        return st.lists(links, min_size=1, max_size=3).map(" ".join)
    return st.just("")


@st.composite
def valid_prompts(draw) -> str:
    n_parts = draw(st.integers(1, 4))
    text_parts = []
    total = 0.0
    for k in range(n_parts):
        words = st.sampled_from(["cat", "fox", "snow", "{red, blue}", "ñandú"])
        text = " ".join(draw(st.lists(words, min_size=1, max_size=3)))
        # a part without "::" runs on into the next one, so only the last may omit it
        last = [""] if k == n_parts - 1 else []
        weight = draw(st.sampled_from([*last, "::", "::2", "::.5", "::1.5", "::3 ", "::-0.25"]))
        total += float(weight[2:] or 1)
        text_parts.append(text + weight)
    if total <= 0:
        text_parts.append("sun::2")
        total += 2
    prompt = " ".join(text_parts)
    while prompt.count("{") > 2:  # at most 4 permutations, times --repeat 5 at most: <= 40 jobs
        prompt = prompt.replace("{red, blue}", "bird", 1)
    chosen = draw(st.lists(st.sampled_from([s for s in PARAMETERS if s.name != "relax"]), unique_by=lambda s: s.field))
    for spec in chosen:
        if spec.name == "repeat":
            value = draw(st.integers(1, 5)).__str__()
        elif spec.name == "no":  # keep the total above 0: each item weighs -0.5
            most = math.ceil(2 * total) - 1
            if most < 1:
                continue
            value = ", ".join(["people", "cars", "text"][: draw(st.integers(1, min(3, most)))])
        else:
            value = draw(valid_value(spec))
        name = draw(st.sampled_from(spec.names))
        dash = draw(st.sampled_from(["--", "—", "–"]))
        prompt += f" {dash}{name} {value}".rstrip()
    links = draw(st.lists(st.sampled_from(["https://e.com/a.png", "https://e.com/b.jpeg?x=1"]), max_size=2))
    return " ".join([*links, prompt])


@settings(max_examples=GRAMMAR_EXAMPLES, **COMMON)
@given(valid_prompts())
def test_valid_prompts_parse_within_ranges(text):
    requests = check(text, models=["sdxl", "flux"])
    assert requests is not None, text
    for r in requests:  # assert_sane (in check) covered the weights
        assert "--" not in r.text and "—" not in r.text and "{" not in r.text
