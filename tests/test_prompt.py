"""Tests of imagine.prompt: Midjourney's prompt language (see shared/reference/midjourney.md)."""

from __future__ import annotations

import time

import pytest

from imagine.constants import MAX_JOBS_PER_PROMPT, MAX_PROMPT_CHARS, NO_WEIGHT
from imagine.errors import InvalidLink, InvalidParameter, InvalidPrompt, TooManyImages, UserError
from imagine.prompt import PARAMETERS, count_jobs, parse
from imagine.request import AspectRatio, ImagineRequest, Params, SubPrompt


def one(text: str, **kw) -> ImagineRequest:
    requests = parse(text, **kw)
    assert len(requests) == 1
    return requests[0]


def parts(text: str) -> list[tuple[str, float]]:
    return [(p.text, p.weight) for p in one(text).parts]


def refused(text: str, cls: type[UserError], *fragments: str, **kw) -> UserError:
    """Assert ``parse(text)`` raises ``cls`` whose message quotes every fragment."""
    with pytest.raises(cls) as info:
        parse(text, **kw)
    err = info.value
    assert type(err) is cls
    titles = {InvalidPrompt: "Invalid prompt", InvalidParameter: "Invalid parameter", InvalidLink: "Invalid link"}
    assert err.title == titles[cls]
    for fragment in fragments:
        assert f"`{fragment}`" in err.message, (fragment, err.message)
    assert err.to_dict()["title"] == err.title
    return err


# ---------------------------------------------------------------------------------------
# The basics
# ---------------------------------------------------------------------------------------


def test_plain_prompt_gets_defaults():
    r = one("a fox in the snow")
    assert r.text == "a fox in the snow"
    assert r.parts == (SubPrompt(text="a fox in the snow", weight=1.0),)
    assert r.params == Params()
    assert r.image_urls == ()
    assert r.total_weight == 1


def test_typical_prompt():
    r = one("a fox in snow::2 forest --ar 16:9 --no people --seed 42")
    assert r.text == "a fox in snow::2 forest"
    assert parts("a fox in snow::2 forest --ar 16:9 --no people --seed 42") == [
        ("a fox in snow", 2.0),
        ("forest", 1.0),
        ("people", NO_WEIGHT),
    ]
    assert r.params.aspect == AspectRatio(width=16, height=9)
    assert r.params.seed == 42
    assert r.params.no == ("people",)


def test_whitespace_is_collapsed_in_text():
    assert one("  a \t fox\n\nin   snow  --tile ").text == "a fox in snow"


def test_count_jobs():
    assert count_jobs(parse("{a, b, c} --repeat 4")) == 12
    assert count_jobs([]) == 0


# ---------------------------------------------------------------------------------------
# Multi-prompts
# ---------------------------------------------------------------------------------------


def test_hot_dog():
    assert parts("hot::2 dog") == [("hot", 2.0), ("dog", 1.0)]
    assert parts("hot:: dog") == [("hot", 1.0), ("dog", 1.0)]
    assert parts("hot dog") == [("hot dog", 1.0)]


def test_weights_are_normalized():
    assert one("cup::2 cake").positives == one("cup::4 cake::2").positives
    assert [p.weight for p in one("cup::2 cake").positives] == pytest.approx([2 / 3, 1 / 3])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a::-0.5 b", [("a", -0.5), ("b", 1.0)]),
        ("a::1.5 b", [("a", 1.5), ("b", 1.0)]),
        ("a::.5 b", [("a", 0.5), ("b", 1.0)]),
        ("a::2", [("a", 2.0)]),
        ("a::", [("a", 1.0)]),
        ("a::b", [("a", 1.0), ("b", 1.0)]),
        ("a::2::b::3", [("a", 2.0), ("b", 3.0)]),
        ("a:: ::3 b", [("a", 1.0), ("b", 1.0)]),  # an empty part (and its weight) is dropped
        ("space ship::3 rocket::-1", [("space ship", 3.0), ("rocket", -1.0)]),
    ],
)
def test_weights(text, expected):
    assert parts(text) == expected


def test_weight_text_keeps_notation():
    assert one("a::.5   b --ar 2:3").text == "a::.5 b"


@pytest.mark.parametrize("weight", ["1.2.3", "-", "--2", ".", "2x", "1e3"])
def test_malformed_weight(weight):
    err = refused(f"a::{weight} b", InvalidPrompt, f"::{weight}")
    assert "Malformed weight" in err.message


def test_huge_weight_refused():
    refused("a::5000 b", InvalidPrompt, "::5000")


def test_no_equals_minus_half():
    assert one("still life painting --no fruit").parts == one("still life painting:: fruit::-.5").parts
    r = one("a garden::2 --no people, cars")
    assert r.parts == one("a garden::2 people::-.5 cars::-.5").parts
    assert r.params.no == ("people", "cars")
    assert r.negatives == (SubPrompt(text="people", weight=-0.5), SubPrompt(text="cars", weight=-0.5))
    assert r.positive_text == "a garden"


def test_no_items_are_stripped_and_empty_ones_ignored():
    assert one("a::3 --no  red  cars , , trees,").params.no == ("red cars", "trees")


def test_no_items_do_not_count_toward_the_total_weight():
    # 1 - 0.5 - 0.5 would be 0: a plain prompt must still take any number of --no items
    r = one("a garden --no people, cars, text, watermark")
    assert r.positives == (SubPrompt(text="a garden", weight=1.0),)
    assert [p.weight for p in r.negatives] == [-0.5] * 4
    assert r.total_weight == 1


def test_total_weight_is_the_sum_of_the_weights_as_written_without_no_items():
    assert one("a::2 b --no clouds").total_weight == 3
    assert one("a::2 b::-0.5 --no clouds, rain").total_weight == 1.5  # a written ::-0.5 counts


@pytest.mark.parametrize(
    "text, shown",
    [
        ("a::-1", "a::-1"),
        ("a::1 b::-1", "a::1 b::-1"),  # a total of 0 is not positive either
        ("a::0.5 b::-1 --no c", "a::0.5 b::-1"),
    ],
)
def test_negative_total_weight_refused(text, shown):
    err = refused(text, InvalidPrompt, shown)
    assert "Prompts with a negative total weight are not allowed" in err.message


def test_negative_total_shows_weights():
    err = refused("a::-2 b", InvalidPrompt)
    assert "-2 + 1 = -1" in err.message


@pytest.mark.parametrize(
    "text, where",
    [
        ("a fox \udcff in snow", "character 7 (after `a fox`) is the byte 0xFF"),
        ("\udcc3\udca9t\u00e9", "character 1 (at the start) is the byte 0xC3"),
        ("caf\udce9 --ar 16:9", "character 4 (after `caf`) is the byte 0xE9"),
        ("half \ud83d of an emoji", "character 6 (after `half`) is half of a surrogate pair"),
    ],
)
def test_text_that_is_not_utf8_is_refused_saying_where(text, where):
    err = refused(text, InvalidPrompt)
    assert err.message.startswith("The prompt is not valid UTF-8 text: ") and where in err.message
    assert "\\udc" not in err.message
    err.message.encode("utf-8")  # the message itself can be printed, sent and stored


def test_weights_without_text_refused():
    refused("::2", InvalidPrompt, "::2")
    refused(":: ::", InvalidPrompt)


# ---------------------------------------------------------------------------------------
# Permutations
# ---------------------------------------------------------------------------------------


def texts(text: str) -> list[str]:
    return [r.text for r in parse(text)]


def test_permutation():
    assert texts("a {red, green} bird") == ["a red bird", "a green bird"]


def test_cartesian_order_left_slowest():
    assert texts("{a, b} {1, 2}") == ["a 1", "a 2", "b 1", "b 2"]


def test_nested_permutations():
    assert texts("{a {b, c}, d}") == ["a b", "a c", "d"]


def test_escaped_comma_and_braces():
    assert texts("{salt\\, pepper, sugar} shaker") == ["salt, pepper shaker", "sugar shaker"]
    assert texts("a \\{literal\\} brace") == ["a {literal} brace"]


def test_empty_option():
    assert texts("a {big,} dog") == ["a big dog", "a dog"]


def test_permutations_in_parameters():
    requests = parse("a bird --ar {3:2, 1:1}")
    assert [r.params.aspect for r in requests] == [AspectRatio(width=3, height=2), AspectRatio(width=1, height=1)]
    assert [r.params.chaos for r in parse("x --chaos {0, 50}")] == [0, 50]


def test_permutations_in_weights():
    assert [[p.weight for p in r.parts] for r in parse("a::{1, 2} b")] == [[1.0, 1.0], [2.0, 1.0]]


def test_permutation_of_parameters_themselves():
    requests = parse("a bird {--tile, --fast}")
    assert [(r.params.tile, r.params.speed) for r in requests] == [(True, None), (False, "fast")]


def test_forty_jobs_allowed_and_more_refused():
    assert len(parse("{a,b,c,d,e,f,g,h} {1,2,3,4,5}")) == 40
    err = refused("{a,b,c,d,e,f,g,h,i} {1,2,3,4,5}", InvalidPrompt)
    assert "45" in err.message and str(MAX_JOBS_PER_PROMPT) in err.message


def test_repeat_counts_towards_the_limit():
    assert count_jobs(parse("{a, b} --repeat 20")) == 40
    err = refused("{a, b, c} --repeat 20", InvalidPrompt)
    assert "60" in err.message and "40" in err.message
    assert count_jobs(parse("x --r {1, 39}")) == 40
    refused("x --r {2, 39}", InvalidPrompt)


def test_huge_permutations_fail_fast():
    text = " ".join("{" + ",".join(str(i) for i in range(10)) + "}" for _ in range(10))
    start = time.perf_counter()
    err = refused(text, InvalidPrompt)
    assert time.perf_counter() - start < 0.1
    assert "10,000,000,000" in err.message


@pytest.mark.parametrize("text, fragment", [("a {red, green bird", "a {red, green bird"),
                                            ("a red} bird", "a red} bird")])
def test_unbalanced_braces(text, fragment):
    err = refused(text, InvalidPrompt, fragment)
    assert "Unbalanced braces" in err.message


def test_deep_nesting_refused_not_crashing():
    refused("{" * 3000 + "}" * 3000, InvalidPrompt)
    assert texts("{{{a}}}") == ["a"]


# ---------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_prompt(text):
    refused(text, InvalidPrompt)


def test_six_thousand_characters():
    ok = "a" * (MAX_PROMPT_CHARS - 2) + " b"
    assert one(ok).text == ok
    err = refused(ok + "c", InvalidPrompt)
    assert "6,001" in err.message and "6,000" in err.message


def test_text_is_required_unless_images_are_given():
    refused("--ar 1:1", InvalidPrompt)
    alone = one("https://example.com/a.png --iw 2")  # images alone, as Midjourney allows
    assert alone.image_urls == ("https://example.com/a.png",) and alone.positive_text == ""
    assert alone.params.iw == 2 and alone.total_weight > 0


def test_local_files_and_plain_http_links_are_image_prompts_whose_origin_is_checked_later():
    r = one("file:///tmp/ref.png ./b.jpg ~/c.webp http://127.0.0.1:9/d.gif a shape")
    assert r.image_urls == ("file:///tmp/ref.png", "./b.jpg", "~/c.webp", "http://127.0.0.1:9/d.gif")
    assert r.text == "a shape"
    assert one("/r/ memes are fun").image_urls == ()  # a path that names no image is text


def test_more_than_five_image_prompts_are_refused():
    links = " ".join(f"https://e.com/{i}.png" for i in range(6))
    with pytest.raises(TooManyImages, match="6 image prompts were given; at most 5"):
        parse(f"{links} a cat")
    with pytest.raises(TooManyImages, match="6 `--sref` images"):
        parse(f"a cat --sref {links}")


def test_sref_takes_links_and_sw_a_weight():
    r = one("a cat --sref https://e.com/a.png <https://e.com/b.png> --sw 250")
    assert r.params.sref == ("https://e.com/a.png", "https://e.com/b.png") and r.params.sw == 250
    refused("a cat --sref", InvalidParameter, "--sref")
    refused("a cat --sref https://e.com/a.pdf", InvalidLink, "https://e.com/a.pdf")
    refused("a cat --sref https://e.com/a.png --sw 1001", InvalidParameter, "--sw 1001")


@pytest.mark.parametrize("text", ["\x00", "a\x00b", "\x00 --ar 1:1", "a\x1b[31m red", "\x7f\x01\x02 --\x00"])
def test_control_characters_do_not_crash(text):
    try:
        parse(text)
    except UserError:
        pass


@pytest.mark.parametrize(
    "text",
    [
        "x --seed " + "0" * 5000 + "1",  # int() refuses strings over 4,300 digits
        "x --seed " + "9" * 5000,
        "x --ar " + "0" * 3000 + "16:" + "0" * 2000 + "9",
        "x --ar " + "9" * 5000 + ":1",
        "a::" + "9" * 5000 + " b",
        "a::" * 2000,
        "{a,b}" * 1200,
        "{" * 3000,
        "x --" + "a" * 5990,
        "https://" + "a" * 5990,
        "—" * 6000,
    ],
)
def test_pathological_inputs_are_refused_or_parsed_quickly(text):
    start = time.perf_counter()
    try:
        parse(text)
    except UserError:
        pass
    assert time.perf_counter() - start < 0.5


def test_non_string_input():
    refused(None, InvalidPrompt)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Image links
# ---------------------------------------------------------------------------------------


def test_image_links():
    r = one("https://example.com/a.png https://cdn.discordapp.com/x/b.JPG?ex=1&is=2 a cat --iw 2")
    assert r.image_urls == ("https://example.com/a.png", "https://cdn.discordapp.com/x/b.JPG?ex=1&is=2")
    assert r.text == "a cat"
    assert r.params.iw == 2.0
    for ext in ("png", "jpg", "jpeg", "webp", "gif", "WEBP"):
        assert one(f"https://e.com/i.{ext} x").image_urls == (f"https://e.com/i.{ext}",)


def test_discord_angle_brackets_are_stripped():
    assert one("<https://e.com/a.png> x").image_urls == ("https://e.com/a.png",)


def test_link_after_text_is_text():
    assert one("a cat https://e.com/a.png").image_urls == ()


@pytest.mark.parametrize(
    "url",
    ["www.e.com/a.png", "https://e.com/a.pdf", "https://e.com/", "ftp://e.com/a.png", "https://", "https://[::1/a.png"],
)
def test_invalid_links(url):
    err = refused(f"{url} a cat", InvalidLink, url)
    assert "https://" in err.message and ".png" in err.message  # http:// is the origin rule's (image_inputs)


# ---------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------


def test_every_parameter():
    r = one(
        "x --ar 2:3 --chaos 10 --quality .5 --repeat 2 --seed 4294967295 --stop 50 --stylize 250 "
        "--style raw --tile --weird 3000 --iw 0.5 --no y --v sdxl --relax"
    )
    assert r.params == Params(
        aspect=AspectRatio(width=2, height=3),
        chaos=10,
        quality=0.5,
        repeat=2,
        seed=4294967295,
        stop=50,
        stylize=250,
        style="raw",
        tile=True,
        weird=3000,
        iw=0.5,
        no=("y",),
        model="sdxl",
        speed="relax",
    )


@pytest.mark.parametrize(
    "alias, field, value",
    [
        ("--aspect 3:2", "aspect", AspectRatio(width=3, height=2)),
        ("--c 5", "chaos", 5),
        ("--q 2", "quality", 2.0),
        ("--r 3", "repeat", 3),
        ("--s 0", "stylize", 0),
        ("--w 7", "weird", 7),
        ("--version 6", "model", "6"),
        ("--model sdxl", "model", "sdxl"),
        ("--fast", "speed", "fast"),
        ("--AR 3:2", "aspect", AspectRatio(width=3, height=2)),
        ("--Tile", "tile", True),
    ],
)
def test_aliases_and_case(alias, field, value):
    assert getattr(one(f"x {alias}").params, field) == value


@pytest.mark.parametrize("dash", ["—", "–"])
def test_em_and_en_dash(dash):
    r = one(f"a fox {dash}ar 16:9 {dash}tile")
    assert r.params.aspect == AspectRatio(width=16, height=9) and r.params.tile
    assert r.text == "a fox"


def test_dashes_inside_text_are_text():
    assert one("a well--known cat — sleeping -- quietly").text == "a well--known cat — sleeping -- quietly"


def test_aspect_reduction_and_range():
    assert one("x --ar 32:18").params.aspect == AspectRatio(width=16, height=9)
    assert one("x --ar 1:4").params.aspect == AspectRatio(width=1, height=4)
    assert one("x --ar 8:2").params.aspect == AspectRatio(width=4, height=1)
    err = refused("x --ar 5:1", InvalidParameter, "--ar 5:1")
    assert "our models support 1:4 to 4:1" in err.message
    refused("x --ar 1:5", InvalidParameter, "--ar 1:5")


@pytest.mark.parametrize("value", ["16x9", "1.5:1", "0:1", "16:", ":9", "a:b", "-1:1"])
def test_malformed_aspect(value):
    refused(f"x --ar {value}", InvalidParameter, f"--ar {value}")


@pytest.mark.parametrize(
    "value, expected", [("0.25", 0.25), (".25", 0.25), (".5", 0.5), ("1", 1.0), ("1.0", 1.0), ("2", 2.0), ("2.", 2.0)]
)
def test_quality_values(value, expected):
    assert one(f"x --q {value}").params.quality == expected


@pytest.mark.parametrize(
    "value, expected",
    [("3", 2.0), ("5", 2.0), ("1.5", 2.0), ("0.75", 1.0), (".3", 0.25), (".1", 0.25), ("99999999999999999999", 2.0)],
)
def test_quality_we_do_not_offer_is_rounded_to_the_nearest_and_noted(value, expected):
    r = one(f"x --q {value}")
    assert r.params.quality == expected
    assert r.notes == (f"--quality {value} was rounded to {expected:g}, the nearest we offer.",)
    assert one("x --quality 2").notes == () and one("x --q .50").notes == ()  # offered: no note


@pytest.mark.parametrize("value, why", [("0", "not above 0"), ("-1", "not above 0"), ("high", "not a number")])
def test_quality_that_is_not_a_positive_number_is_refused(value, why):
    err = refused(f"x --q {value}", InvalidParameter, f"--q {value}")
    assert why in err.message and ".25, .5, 1 or 2" in err.message


@pytest.mark.parametrize(
    "param, ok, bad",
    [
        ("--seed", ["0", "4294967295"], ["-1", "4294967296", "99999999999999999999999999"]),
        ("--chaos", ["0", "100"], ["101", "-1"]),
        ("--stylize", ["0", "1000"], ["1001"]),
        ("--stop", ["10", "100"], ["9", "101"]),
        ("--repeat", ["1", "40"], ["0", "41"]),
        ("--weird", ["0", "3000"], ["3001"]),
        ("--iw", ["0", "3", "1.5", ".5"], ["3.01", "-0.5"]),
    ],
)
def test_ranges(param, ok, bad):
    spec = next(s for s in PARAMETERS if param[2:] in s.names)
    for value in ok:
        assert getattr(one(f"x {param} {value}").params, spec.field) == float(value)
    for value in bad:
        err = refused(f"x {param} {value}", InvalidParameter, f"{param} {value}")
        assert "out of range" in err.message
        lo, hi = (int(x) if float(x).is_integer() else x for x in (spec.lo, spec.hi))
        assert f"from {lo} to {hi}" in err.message


def test_integer_parameter_refuses_decimal():
    err = refused("x --chaos 2.5", InvalidParameter, "--chaos 2.5")
    assert "whole number" in err.message and "0 to 100" in err.message


@pytest.mark.parametrize("value", ["abc", "1e3", "٣"])
def test_malformed_numbers(value):
    refused(f"x --seed {value}", InvalidParameter, f"--seed {value}")
    refused(f"x --iw {value}", InvalidParameter, f"--iw {value}")


def test_style_only_raw():
    assert one("x --style RAW").params.style == "raw"
    err = refused("x --style cute", InvalidParameter, "--style cute")
    assert "`raw`" in err.message


def test_unknown_parameter_suggests_nearest():
    err = refused("x --aspct 16:9", InvalidParameter, "--aspct")
    assert err.message == "Unknown parameter `--aspct`; did you mean `--aspect`?"
    err = refused("x --chaso 5", InvalidParameter, "--chaso", "--chaos")
    err = refused("x --turbo", InvalidParameter, "--turbo")
    assert "--ar" in err.message and "--seed" in err.message  # no close match: the list


def test_glued_value_is_explained():
    err = refused("x --ar=16:9", InvalidParameter, "--ar=16:9", "--ar 16:9")
    err = refused("x --v6", InvalidParameter, "--v6", "--v 6")
    assert "space" in err.message


@pytest.mark.parametrize(
    "text, first, second",
    [
        ("x --ar 1:1 --aspect 2:3", "--ar 1:1", "--aspect 2:3"),
        ("x --seed 1 --seed 2", "--seed 1", "--seed 2"),
        ("x --c 1 --chaos 2", "--c 1", "--chaos 2"),
        ("x --tile --TILE", "--tile", "--TILE"),
        ("x --no a --no b", "--no a", "--no b"),
        ("x --v a --model b", "--v a", "--model b"),
    ],
)
def test_repeated_parameter(text, first, second):
    err = refused(text, InvalidParameter, first, second)
    assert "once" in err.message


def test_fast_and_relax_together():
    err = refused("x --fast --relax", InvalidParameter, "--fast", "--relax")
    assert "pick one" in err.message


@pytest.mark.parametrize("param", ["--ar", "--seed", "--chaos", "--q", "--iw", "--style", "--v", "--no"])
def test_missing_value(param):
    err = refused(f"x {param}", InvalidParameter, param)
    assert "missing" in err.message


@pytest.mark.parametrize("param", ["--tile", "--fast", "--relax"])
def test_value_given_to_flag(param):
    err = refused(f"a cat {param} in the snow", InvalidParameter, "in the snow")
    assert "takes no value" in err.message


def test_text_after_parameters_is_not_prompt_text():
    err = refused("a cat --ar 16:9 in the snow", InvalidParameter, "--ar 16:9 in the snow")
    assert "more than one value" in err.message
    # --no takes everything up to the next parameter
    assert one("a cat --no dogs in hats --tile").params.no == ("dogs in hats",)


def test_models():
    models = ["sdxl", "Flux-Dev"]
    assert one("x --v flux-dev", models=models).params.model == "Flux-Dev"
    assert one("x", models=models).params.model is None
    err = refused("x --v 6", InvalidParameter, "--v 6", "sdxl", "Flux-Dev", models=models)
    assert "one of our models" in err.message
    assert one("x --v anything").params.model == "anything"
    refused("x --v sdxl", InvalidParameter, "--v sdxl", models=[])


# ---------------------------------------------------------------------------------------
# The parameter table
# ---------------------------------------------------------------------------------------


def test_parameter_table_matches_params():
    names = [n for spec in PARAMETERS for n in spec.names]
    assert len(names) == len(set(names))
    for spec in PARAMETERS:
        assert spec.field in Params.model_fields
        assert spec.default == getattr(Params(), spec.field)
        assert spec.allowed and spec.usage.startswith("--")
    assert {s.field for s in PARAMETERS} == set(Params.model_fields)


def test_parse_is_fast():
    text = "a fox in snow::2 forest --ar 16:9 --no people --seed 42"
    parse(text)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        parse(text)
    per_parse = (time.perf_counter() - start) / n
    assert per_parse < 0.0005  # typically ~25 µs; generous for slow CI
