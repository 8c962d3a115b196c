"""What the bot says, as plain data: message lines, embeds (Discord's JSON) and button specs.

Nothing here imports discord: tests call these functions directly, and the cogs turn the
results into discord.py objects (``bot.messages``). Here too are what every message of the bot
is built with (the analyses' embeds in ``bot.render_analysis`` as well): its colours, Discord's
limits (content 2,000 characters, embed title 256, description 4,096, 25 fields of 256/1,024,
footer 2,048, author 256, 6,000 characters in all), ``escape`` for user text (markdown shown
as written, links kept as links), ``truncate`` and ``clip_embed`` to fit them.

The lines mirror Midjourney's::

    **a fox in snow --ar 16:9** - <@123> (Waiting to start) - #2 in line, about 40 s
    **a fox in snow --ar 16:9** - <@123> (37%) (fast)
    **a fox in snow --ar 16:9** - <@123> (fast)
    **a fox in snow --ar 16:9** - Variations (Strong) by <@123> (fast)
    **a fox in snow --ar 16:9** - Image #2 <@123>
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bot import custom_ids
from imagine.describe import SUGGESTIONS
from imagine.diagnostics import MAX_PROPOSALS
from imagine.guilds import GuildConfig
from imagine.jobs import Job, JobKind, JobResult
from imagine.monitor import Overview, Percentiles
from imagine.params import params_text
from imagine.request import ImagineRequest

# --- the bot's colours -------------------------------------------------------------------------

RED = 16711680
"""Errors ("Invalid parameter", "Invalid prompt", ...), as Midjourney's."""
YELLOW = 16776960
"""Warnings and notices ("Job queued", diagnostics with a warning)."""
BLURPLE = 0x5865F2
"""Neutral information (/info, /settings, the analyses)."""

# --- Discord's limits (developer docs: Message resource, "Embed Limits" and "Create Message") -----

MAX_CONTENT = 2000
"""Characters of a message's content."""
MAX_EMBEDS = 10
"""Embeds in one message."""
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_FIELDS = 25
"""Fields in one embed."""
FIELD_NAME = 256
FIELD_VALUE = 1024
EMBED_FOOTER = 2048
EMBED_AUTHOR = 256
"""Characters of the author's name."""
EMBED_TOTAL = 6000
"""Characters of a message's embeds together: titles, descriptions, field names and values,
footers and author names (``embed_length``)."""

SPEED_WORDS = {"fast": "fast", "relax": "relaxed"}

Embed = dict[str, Any]
"""An embed as Discord's JSON (``discord.Embed.from_dict`` reads it)."""


# --- text helpers -----------------------------------------------------------------------------

def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


LINK = re.compile(r"<https?://[^\s>]+>|https?://[^\s<]+[^<.,:;\"')\]\s]")
"""A link as Discord's markdown finds one: ``<https://...>`` (shown without a preview), or a bare
``https://...`` up to a space or ``<``, trailing punctuation left out (Discord's own pattern)."""

_INLINE = re.compile(r"([\\*_~`|<\[])")
"""What Discord's markdown acts on anywhere in a line: emphasis, strike, code, spoilers, mentions
``<@id>``, masked links ``[text](url)`` (a ``]`` alone does nothing), the escape character itself."""

_BLOCK = re.compile(r"(?m)^([ \t]*)([-#>]|\d+\.)")
"""What it acts on at a line's start: lists (``- ``, ``1. ``), headings, subtext (``-#``), quotes."""


def escape(text: str) -> str:
    """``text`` shown as written in Discord: markdown characters outside links backslash-escaped
    (so a prompt cannot break out of its bold, mention anyone or mask a link), links kept exactly
    as written so they stay links. The start of ``text`` counts as a line's start.

    A bare link right before a ``<`` is shown as ``<link>``: the backslash of ``\\<`` would join
    it. Unless it holds a ``>`` itself (no ``<link>`` can): then, and only then, the link shown
    ends in that backslash."""
    out: list[str] = []
    start = 0
    for link in LINK.finditer(text):
        shown = link.group()
        if text[link.end():link.end() + 1] == "<" and ">" not in shown:
            shown = f"<{shown}>"  # bare, it would take the backslash of the escaped "<" into the link
        out += (_INLINE.sub(r"\\\1", text[start:link.start()]), shown)
        start = link.end()
    out.append(_INLINE.sub(r"\\\1", text[start:]))
    # a link never starts a line with these, nor an escape: what this adds is never escaped again
    return _BLOCK.sub(lambda m: m[1] + (f"\\{m[2]}" if len(m[2]) == 1 else f"{m[2][:-1]}\\."), "".join(out))


def duration(seconds: float) -> str:
    """A rough, friendly duration: ``about 40 s``, ``about 3 min``, ``about 2 h``."""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.0f} h"


# --- the prompt as the user wrote it -----------------------------------------------------------

def prompt_text(request: ImagineRequest) -> str:
    """Image links, the text and the non-default parameters: the prompt as it is shown."""
    links = [f"<{url}>" for url in request.image_urls]
    return " ".join(part for part in (*links, request.text, params_text(request.params)) if part)


# --- message lines ----------------------------------------------------------------------------

_WHO = {
    JobKind.IMAGINE: "{user}",
    JobKind.REROLL: "{user}",
    JobKind.UPSCALE: "Upscaled by {user}",
    JobKind.SHORTEN: "Shorten by {user}",
    JobKind.DESCRIBE: "Describe by {user}",
}


def _who(job: Job) -> str:
    user = f"<@{job.requester.user_id}>"
    if job.kind is JobKind.VARIATION:
        return f"Variations ({(job.strength or 'strong').title()}) by {user}"
    return _WHO.get(job.kind, "{user}").format(user=user)


def line(job: Job, *statuses: str, tail: str = "") -> str:
    """``**<prompt>** - <who> (status) (status)<tail>``, the prompt cut to fit 2,000 characters."""
    after = f" - {_who(job)}" + "".join(f" ({s})" for s in statuses) + tail
    room = MAX_CONTENT - len(after) - 4  # the four asterisks
    return f"**{truncate(escape(prompt_text(job.request)), room)}**{after}"


def speed_word(job: Job) -> str:
    return SPEED_WORDS.get(job.speed, job.speed)


def waiting_line(job: Job, position: int | None = None, wait_s: float | None = None, *, served: bool = True) -> str:
    """The job's message before it starts, with its place in line and wait when known; "Starting"
    when a worker took it at once (``position`` 0); and when no live worker serves its model
    (``served`` False), that it waits for one."""
    known = []
    if position:
        known.append(f"#{position} in line")
    if wait_s is not None:
        known.append(duration(wait_s))
    if not served:
        known.append(f"no worker serves {job.model} right now: the job waits")
    return line(job, "Starting" if position == 0 else "Waiting to start",
                tail=(" - " + ", ".join(known)) if known else "")


def progress_line(job: Job, percent: int) -> str:
    return line(job, f"{max(0, min(100, int(percent)))}%", speed_word(job))


def done_line(job: Job) -> str:
    return line(job, speed_word(job))


def ended_line(job: Job, status: str) -> str:
    """The job's message once it failed or was cancelled (``(failed)``, ``(cancelled)``)."""
    return line(job, status)


def image_line(job: Job, n: int) -> str:
    """U1-U4: ``**<prompt>** - Image #n <@user>``."""
    prompt = escape(prompt_text(job.request))
    tail = f" - Image #{n} <@{job.requester.user_id}>"
    return f"**{truncate(prompt, MAX_CONTENT - len(tail) - 4)}**{tail}"


def confirm_text(jobs: int, free_running: int) -> str:
    """The question asked before a prompt that makes many jobs is submitted (they all fit the
    user's free slots: ``free_running`` of them could start now, the rest wait for those)."""
    now = min(jobs, free_running)
    plan = f"all {jobs} start now" if now == jobs else f"{now} start now, {jobs - now} wait for a free slot"
    return f"This prompt makes **{jobs} jobs** ({plan}). Do you want to submit them all?"


# --- embeds -----------------------------------------------------------------------------------

def error_embed(title: str, message: str) -> Embed:
    """A red error embed ("Invalid parameter", "Queue full", ...): the parser's message as is."""
    return clip_embed({"title": title, "description": message, "color": RED})


def notice_embed(title: str, message: str) -> Embed:
    """A yellow notice ("Job queued")."""
    return clip_embed({"title": title, "description": message, "color": YELLOW})


def held_embed() -> Embed:
    """Midjourney's notice for a job over the user's running limit."""
    return notice_embed(
        "Job queued",
        "You already have the most jobs running at once: this job will start as soon as another one finishes.",
    )


def notes_embeds(notes: Sequence[str]) -> list[Embed]:
    """Under a result, what the user should know about how it was made (a rounded --quality,
    a parameter the model ignored, the ratio made): one yellow embed, or none without notes."""
    if not notes:
        return []
    return [notice_embed("Note" if len(notes) == 1 else "Notes", "\n".join(f"- {escape(n)}" for n in notes))]


def clip_embed(embed: Embed) -> Embed:
    """The embed cut to Discord's limits: each part, then 6,000 characters in all
    (title, author, footer and description first; fields while they fit)."""
    out = dict(embed)
    if "title" in out:
        out["title"] = truncate(out["title"], EMBED_TITLE)
    if "author" in out:
        out["author"] = {**out["author"], "name": truncate(out["author"]["name"], EMBED_AUTHOR)}
    if "footer" in out:
        out["footer"] = {**out["footer"], "text": truncate(out["footer"]["text"], EMBED_FOOTER)}
    budget = EMBED_TOTAL - embed_length({k: v for k, v in out.items() if k in ("title", "author", "footer")})
    if "description" in out:
        out["description"] = truncate(out["description"], min(EMBED_DESCRIPTION, budget))
        budget -= len(out["description"])
    fields = []
    for f in out.pop("fields", [])[:EMBED_FIELDS]:
        name, value = truncate(f["name"], FIELD_NAME) or "-", truncate(f["value"], FIELD_VALUE) or "-"
        if len(name) + 2 > budget:
            break
        value = truncate(value, budget - len(name))
        budget -= len(name) + len(value)
        fields.append({**f, "name": name, "value": value})
    if fields:
        out["fields"] = fields
    return out


def embed_length(embed: Embed) -> int:
    """Characters Discord counts toward the 6,000 of a message's embeds: title, description,
    field names and values, footer, author name."""
    fields = embed.get("fields", [])
    return (len(embed.get("title", "")) + len(embed.get("description", ""))
            + len(embed.get("footer", {}).get("text", "")) + len(embed.get("author", {}).get("name", ""))
            + sum(len(f["name"]) + len(f["value"]) for f in fields))


# --- /info --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobSummary:
    """One of the user's unfinished jobs, as /info lists it."""

    job_id: str
    prompt: str
    status: str  # "running" | "queued" | "held"
    position: int | None = None
    percent: int | None = None


@dataclass(frozen=True)
class InfoData:
    running: Sequence[JobSummary] = ()
    queued: Sequence[JobSummary] = ()
    usage: dict[str, float] = field(default_factory=dict)  # jobs per kind, "gpu_s"


def _job_item(s: JobSummary) -> str:
    where = f"{s.percent}%" if s.percent is not None else s.status
    if s.position is not None:
        where += f", #{s.position} in line" if s.status == "queued" else f", #{s.position} waiting"
    return f"`{s.job_id}` {escape(truncate(s.prompt, 60))} ({where})"


def fit_lines(items: Sequence[str], limit: int = FIELD_VALUE) -> str:
    """As many whole lines as fit, then how many more there are."""
    out: list[str] = []
    for i, item in enumerate(items):
        more = f"\n… and {len(items) - i} more"
        if len("\n".join([*out, item])) + len(more) > limit:
            return "\n".join(out) + more
        out.append(item)
    return "\n".join(out) or "None"


def info_embed(data: InfoData) -> Embed:
    usage = data.usage
    kinds = [(k, int(usage[k])) for k in ("imagine", "variation", "upscale", "reroll") if usage.get(k)]
    used = ", ".join(f"{n} {k}" for k, n in kinds) or "no jobs yet"
    gpu = usage.get("gpu_s", 0.0)
    return clip_embed({
        "title": "Your info",
        "color": BLURPLE,
        "fields": [
            {"name": "Usage", "value": f"{used}\nGPU time: {gpu / 60:.1f} min", "inline": False},
            {"name": f"Running jobs ({len(data.running)})", "value": fit_lines([_job_item(s) for s in data.running]),
             "inline": False},
            {"name": f"Queued jobs ({len(data.queued)})", "value": fit_lines([_job_item(s) for s in data.queued]),
             "inline": False},
        ],
    })


# --- buttons ------------------------------------------------------------------------------------

Style = Literal["primary", "secondary", "success", "danger"]


@dataclass(frozen=True)
class ButtonSpec:
    """One button: what it says and the custom_id its press carries back."""

    custom_id: str
    label: str | None = None
    emoji: str | None = None
    style: Style = "secondary"
    row: int = 0


def grid_buttons(job_id: str) -> list[ButtonSpec]:
    """U1-U4 and 🔄 on the first row, V1-V4 on the second, as Midjourney lays them out."""
    return [
        *(ButtonSpec(custom_ids.PICK(job=job_id, n=n), f"U{n}") for n in range(1, 5)),
        ButtonSpec(custom_ids.REROLL(job=job_id), emoji="🔄"),
        *(ButtonSpec(custom_ids.VARIATION(job=job_id, n=n), f"V{n}", row=1) for n in range(1, 5)),
    ]


def image_buttons(job_id: str, n: int) -> list[ButtonSpec]:
    """Under a single image: Vary (Strong), Vary (Subtle), Upscale."""
    return [
        ButtonSpec(custom_ids.VARY(job=job_id, n=n, strength="strong"), "Vary (Strong)", emoji="🪄"),
        ButtonSpec(custom_ids.VARY(job=job_id, n=n, strength="subtle"), "Vary (Subtle)", emoji="🪄"),
        ButtonSpec(custom_ids.UPSCALE(job=job_id, n=n), "Upscale", emoji="🔍"),
    ]


def running_buttons(job_id: str) -> list[ButtonSpec]:
    return [ButtonSpec(custom_ids.CANCEL(job=job_id), "Cancel Job", style="danger")]


def result_buttons(result: JobResult) -> list[ButtonSpec]:
    """A grid gets U/V/🔄; a single image (an upscale) gets the single-image buttons."""
    if result.grid is not None:
        return grid_buttons(result.job_id)
    if len(result.images) == 1:
        return image_buttons(result.job_id, 1)
    return []


def shorten_buttons(job_id: str, proposals: int) -> list[ButtonSpec]:
    """Under a /shorten: 1-5, one per shorter prompt (each imagines it), then Show Details."""
    return [
        *(ButtonSpec(custom_ids.SHORTER(job=job_id, n=n), str(n)) for n in range(1, min(proposals, MAX_PROPOSALS) + 1)),
        ButtonSpec(custom_ids.SHORTEN_DETAILS(job=job_id), "Show Details", row=1),
    ]


def describe_buttons(job_id: str, suggestions: int) -> list[ButtonSpec]:
    """Under a /describe: 1-4, one per suggested prompt (each imagines it)."""
    return [ButtonSpec(custom_ids.DESCRIBED(job=job_id, n=n), str(n))
            for n in range(1, min(suggestions, SUGGESTIONS) + 1)]


def upload_stem(job_id: str, result: JobResult, key: str) -> str:
    """The file name (without extension) an artifact is posted under; ``SPOILER_`` first, as
    Discord marks spoilers, when the output filter flagged what it shows (the guild's
    spoiler policy: a grid with any flagged image, or the flagged image itself)."""
    name = key.split("/", 1)[1].rsplit(".", 1)[0]
    if key == result.grid:
        flagged = any(result.flagged)
    else:
        flagged = key in result.images and result.images.index(key) < len(result.flagged) and result.flagged[
            result.images.index(key)]
    return f"{'SPOILER_' if flagged else ''}{job_id}_{name}"


def queue_embed(ov: Overview) -> Embed:
    """/queue for admins: depths, running jobs, workers, the last hour's failures and times."""
    def ago(seconds: float) -> str:
        return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"

    depths = "\n".join(f"`{name}`: {n}" for name, n in ov.queues.items()) or "no queues yet"
    running = "\n".join(
        f"`{j.job_id[:8]}` <@{j.user_id}> {j.model} {j.percent}% {ago(j.elapsed_s)} - {escape(j.prompt[:40])}"
        for j in ov.running[:10]) or "none"
    workers = "\n".join(
        f"`{w['name']}` {w.get('host', '?')} [{','.join(w.get('models', []))}] {w.get('gpu') or w.get('device', '?')}"
        f" - {'busy' if w.get('busy') else 'idle'}, seen {ago(ov.at - w.get('last_seen', ov.at))} ago"
        for w in ov.workers[:10]) or "no worker is alive"
    failed = "\n".join(
        f"`{f.job_id[:8]}` <@{f.user_id}> {f.title}: {escape(f.message)}" for f in ov.failed[:5]) or "none"

    def pct(label: str, p: Percentiles | None) -> str:
        return f"{label}: -" if p is None else f"{label}: p50 {p.p50:.1f}s, p95 {p.p95:.1f}s ({p.count})"

    fields = [
        {"name": "Queues", "value": f"{depths}\nheld: {ov.held}", "inline": False},
        {"name": f"Running ({len(ov.running)})", "value": running, "inline": False},
        {"name": f"Workers ({len(ov.workers)})", "value": workers, "inline": False},
        {"name": f"Failed in the last hour ({len(ov.failed)})", "value": failed, "inline": False},
        {"name": "Last hour", "value": f"{pct('wait', ov.wait)}\n{pct('run', ov.run)}", "inline": False},
    ]
    return clip_embed({"title": "Queue", "color": YELLOW, "fields": fields})


def config_embed(config: GuildConfig, banned_words: int, banned_users: int, default_model: str | None) -> Embed:
    """/admin config: this server's settings as they are now (``default_model``: the stored one
    when it is still configured, else None)."""
    channels = ", ".join(f"<#{c}>" for c in config.allowed_channels) or "every channel"
    model = default_model or "the deployment default"
    if config.default_model and default_model is None:
        model += f" (`{config.default_model}` is no longer configured)"
    lines = [
        f"channels: {channels}",
        f"default model: {model}",
        f"limits per user: {config.running_limit or 'default'} running, {config.waiting_limit or 'default'} waiting",
        f"speed: {config.speed_policy}",
        f"diagnostics: {'on' if config.diagnostics else 'off'}",
        f"output filter: {config.output_filter}",
        f"a job no worker serves: {'is refused' if config.unserved == 'refuse' else 'waits'}",
        f"banned words: {banned_words}, banned users: {banned_users}",
    ]
    return clip_embed({"title": "Server settings", "description": "\n".join(lines), "color": YELLOW})
