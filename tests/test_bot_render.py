"""The bot's Discord-free parts: lines, markdown escaping, embeds, buttons, custom_ids, the throttle, upload sizes."""

from __future__ import annotations

import io
import os
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image

from bot import custom_ids, render
from bot.images import fit_upload
from bot.progress import Throttle
from imagine.jobs import JobKind, JobResult, JobStatus
from imagine.prompt import parse
from tests.helpers import make_job

JOB_ID = "0123456789abcdef0123456789abcdef"


def test_every_custom_id_matches_its_template_and_fits_discord() -> None:
    made = [
        custom_ids.PICK(job=JOB_ID, n=4), custom_ids.VARIATION(job=JOB_ID, n=1), custom_ids.REROLL(job=JOB_ID),
        custom_ids.CANCEL(job=JOB_ID), custom_ids.VARY(job=JOB_ID, n=2, strength="subtle"),
        custom_ids.UPSCALE(job=JOB_ID, n=3), custom_ids.SHORTER(job=JOB_ID, n=5),
        custom_ids.SHORTEN_DETAILS(job=JOB_ID), custom_ids.DESCRIBED(job=JOB_ID, n=4),
    ]
    for spec, custom_id in zip(custom_ids.ALL, made, strict=True):
        match = re.fullmatch(spec.template, custom_id)
        assert match and match["job"] == JOB_ID and len(custom_id) <= 100
    assert len(set(made)) == len(made)
    # no template accepts another's ids: a press reaches exactly one handler
    assert all(sum(bool(re.fullmatch(s.template, c)) for s in custom_ids.ALL) == 1 for c in made)
    with pytest.raises(ValueError):
        custom_ids.PICK(job=JOB_ID, n=5)


def test_lines_read_as_midjourney_s() -> None:
    job = make_job("a fox in snow", user="123", aspect={"width": 16, "height": 9})
    assert render.waiting_line(job) == "**a fox in snow --ar 16:9** - <@123> (Waiting to start)"
    assert render.waiting_line(job, 3, 42) == (
        "**a fox in snow --ar 16:9** - <@123> (Waiting to start) - #3 in line, about 42 s")
    assert render.progress_line(job, 37) == "**a fox in snow --ar 16:9** - <@123> (37%) (fast)"
    assert render.done_line(job) == "**a fox in snow --ar 16:9** - <@123> (fast)"
    assert render.image_line(job, 2) == "**a fox in snow --ar 16:9** - Image #2 <@123>"
    variation = job.model_copy(update={"kind": JobKind.VARIATION, "strength": "subtle"})
    assert render.done_line(variation) == "**a fox in snow --ar 16:9** - Variations (Subtle) by <@123> (fast)"
    relaxed = job.model_copy(update={"speed": "relax"})
    assert render.progress_line(relaxed, 5).endswith("(5%) (relaxed)")


def test_the_prompt_shows_its_non_default_parameters() -> None:
    [request] = parse("https://example.com/a.png a cat::2 dog --no people, cars --q .5 --seed 7 --tile --style raw")
    text = render.prompt_text(request)
    assert text.startswith("<https://example.com/a.png> ")
    assert "--q 0.5" in text and "--seed 7" in text and "--no people, cars" in text and "--tile" in text
    assert "--style raw" in text and "--ar" not in text and "--chaos" not in text


def test_a_6000_character_prompt_fits_in_2000_and_cannot_break_the_bold() -> None:
    job = make_job("**x** " * 1000)
    for content in (render.waiting_line(job, 10, 100), render.progress_line(job, 50), render.done_line(job),
                    render.image_line(job, 1), render.ended_line(job, "failed")):
        assert len(content) <= render.MAX_CONTENT
        assert content.startswith("**\\*\\*x\\*\\*") and "…**" in content


# --- markdown as Discord reads it -----------------------------------------------------------------

_AUTOLINK = re.compile(r"<([^: >]+:/[^ >]+)>")
_URL = re.compile(r"https?://[^\s<]+[^<.,:;\"')\]\s]")
_ESCAPED = re.compile(r"\\([^0-9A-Za-z\s])")
_BLOCK = re.compile(r"[ \t]*([-#>]|\d+\.)")


def discord_reads(markdown: str) -> tuple[str, list[str], list[str]]:
    """What Discord shows of ``markdown``, the links it makes, and the markdown it would act on.

    A model of Discord's markdown (simple-markdown's rules) for what escaping must handle: a
    link, ``<link>`` or bare, is taken whole, first; a backslash before any ASCII punctuation shows
    that character; ``*_~`|<[`` and the escape character act anywhere, ``- # > 1.`` at a line's start."""
    shown: list[str] = []
    links: list[str] = []
    active = [m[1] for line in markdown.split("\n") if (m := _BLOCK.match(line))]
    i = 0
    while i < len(markdown):
        if (m := _AUTOLINK.match(markdown, i)) or (m := _URL.match(markdown, i)):
            link = m[1] if m.re is _AUTOLINK else m[0]
            shown.append(link)
            links.append(link)
        elif m := _ESCAPED.match(markdown, i):
            shown.append(m[1])
        else:
            m = re.compile(r".", re.S).match(markdown, i)
            assert m is not None
            shown.append(m[0])
            if m[0] in "\\*_~`|<[":
                active.append(m[0])
        i = m.end()
    return "".join(shown), links, active


LINKS = st.builds(lambda path, end: f"https://cdn.discordapp.com/attachments/1/2/{path}{end}",
                  st.text("ab_*~|-#>[]()\\.", min_size=1, max_size=12), st.sampled_from([".png", "", "_", "*"]))
TEXT = st.text(st.sampled_from("ab 1.\n\t*_~`|<>#-[]()@:\\é✨/"), max_size=20)


@given(st.lists(st.one_of(TEXT, LINKS), max_size=8), st.sampled_from(["", " ", "\n"]))
def test_escaping_keeps_links_and_shows_everything_else_as_written(pieces: list[str], between: str) -> None:
    text = between.join(pieces)
    assume("<http" not in text)  # a <link> shows without its brackets: the test below
    assume(not re.search(r"https?://\S*>\S*<", text))  # the one case escape() leaves alone (its docstring)
    shown, links, active = discord_reads(render.escape(text))
    assert shown == text
    assert links == _URL.findall(text)  # every link Discord finds in the text, exactly as written
    assert active == []


def test_an_echoed_prompt_shows_its_image_link_as_a_link() -> None:
    url = "https://cdn.discordapp.com/attachments/1/2/a_b*c.png"
    job = make_job(user="123").model_copy(update={"request": parse(f"{url} a_cat *in* a hat")[0]})
    assert render.done_line(job) == f"**<{url}> a\\_cat \\*in\\* a hat** - <@123> (fast)"
    shown, links, active = discord_reads(render.done_line(job))
    assert links == [url] and shown == f"**{url} a_cat *in* a hat** - <@123> (fast)"
    assert active == ["*", "*", "*", "*", "<"]  # only the line's own bold and mention


def test_a_masked_link_shows_where_it_goes() -> None:
    shown, links, _ = discord_reads(render.escape("[a cute cat](https://evil.example/x_y) <@1> <#2> @everyone"))
    assert shown == "[a cute cat](https://evil.example/x_y) <@1> <#2> @everyone"
    assert links == ["https://evil.example/x_y"]


def test_error_and_notice_embeds() -> None:
    embed = render.error_embed("Invalid parameter", "Unknown parameter `--aspct`; did you mean `--aspect`?")
    assert embed == {"title": "Invalid parameter", "color": 16711680,
                     "description": "Unknown parameter `--aspct`; did you mean `--aspect`?"}
    held = render.held_embed()
    assert held["title"] == "Job queued" and held["color"] == 16776960
    assert "this job will start as soon as another one finishes" in held["description"]


def test_embeds_are_cut_to_discord_limits() -> None:
    huge = render.clip_embed({"title": "t" * 999, "description": "d" * 9999,
                              "fields": [{"name": "n" * 999, "value": "v" * 9999}] * 40,
                              "footer": {"text": "f" * 9999}})
    assert len(huge["title"]) <= 256 and len(huge["footer"]["text"]) <= 2048
    assert len(huge.get("fields", [])) <= 25
    assert all(len(f["name"]) <= 256 and len(f["value"]) <= 1024 for f in huge.get("fields", []))
    assert len(huge["description"]) <= 4096 and render.embed_length(huge) <= 6000
    many = render.clip_embed({"title": "x", "fields": [{"name": "n", "value": "v"}] * 40})
    assert len(many["fields"]) == 25


def test_info_embed_lists_jobs_and_usage_within_limits() -> None:
    jobs = [render.JobSummary(f"{i:032x}", "a long prompt " * 20, "queued", position=i) for i in range(100)]
    running = [render.JobSummary(JOB_ID, "a fox", "running", percent=40)]
    embed = render.info_embed(render.InfoData(running=running, queued=jobs,
                                              usage={"imagine": 5, "variation": 2, "gpu_s": 90}))
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Usage"] == "5 imagine, 2 variation\nGPU time: 1.5 min"
    assert fields["Running jobs (1)"] == f"`{JOB_ID}` a fox (40%)"
    assert "#1 in line" in fields["Queued jobs (100)"] and "more" in fields["Queued jobs (100)"]
    assert render.embed_length(embed) <= 6000 and all(len(v) <= 1024 for v in fields.values())


def test_buttons_of_a_grid_a_single_image_and_a_running_job() -> None:
    grid = render.grid_buttons(JOB_ID)
    assert [b.label or b.emoji for b in grid] == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
    assert [b.row for b in grid] == [0] * 5 + [1] * 4
    assert [b.label for b in render.image_buttons(JOB_ID, 2)] == ["Vary (Strong)", "Vary (Subtle)", "Upscale"]
    [cancel] = render.running_buttons(JOB_ID)
    assert cancel.label == "Cancel Job" and cancel.style == "danger"
    upscaled = JobResult(job_id=JOB_ID, status=JobStatus.DONE, images=(f"{JOB_ID}/image_1.png",))
    assert render.result_buttons(upscaled) == render.image_buttons(JOB_ID, 1)


def test_throttle_allows_one_edit_per_interval_on_a_fake_clock() -> None:
    tenths = [0]
    throttle = Throttle(2.0, clock=lambda: tenths[0] / 10)
    assert throttle.wait_s("a") == 0
    throttle.mark("a")
    edits = 1
    for _ in range(100):  # 10 s of progress events every 0.1 s
        tenths[0] += 1
        if throttle.wait_s("a") == 0:
            throttle.mark("a")
            edits += 1
    assert edits == 6  # at 0, 2, 4, 6, 8, 10 s
    assert throttle.wait_s("b") == 0  # jobs are throttled independently


def test_throttle_leaves_the_result_a_free_request_in_every_rate_limit_window() -> None:
    """Progress every 0.2 s for 12 s on one interaction token: at most 3 edits in any 5.5 s
    (Discord allows 5 per 5 s: one is kept for the result, one so that it does not spend the window)."""
    tenths = [0]
    throttle = Throttle(0.2, clock=lambda: tenths[0] / 10)
    sent = []
    for _ in range(120):
        for job in ("a", "b"):  # two jobs of one interaction share its token's budget
            if throttle.wait_s(job, "token:t") == 0:
                throttle.mark(job, "token:t")
                sent.append(tenths[0] / 10)
        tenths[0] += 1
    assert sent == [0.0, 0.0, 0.2, 5.5, 5.5, 5.7, 11.0, 11.0, 11.2]
    assert throttle.wait_s("c", "token:other") == 0  # another token has its own budget


def _noise_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_stay_png_when_they_fit_and_shrink_when_they_do_not() -> None:
    small = _noise_png(32)
    assert fit_upload(small, "grid").filename == "grid.png"
    big = _noise_png(256)  # about 200 KB of incompressible pixels
    fitted = fit_upload(big, "grid", limit=60_000)
    assert fitted.filename.rsplit(".", 1)[1] in ("webp", "jpg") and len(fitted.data) <= 60_000
    tiny = fit_upload(big, "grid", limit=2_000)  # only a smaller picture fits: never a failed post
    assert len(tiny.data) <= 2_000 and Image.open(io.BytesIO(tiny.data)).width < 256
