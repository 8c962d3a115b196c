"""What the bot says, as plain data: message lines, embeds (Discord's JSON) and button specs.

Nothing here imports discord: tests call these functions directly, and the cogs turn the
results into discord.py objects (``bot.messages``). Every function respects Discord's
limits: content 2,000 characters, embed title 256, description 4,096, 25 fields of
256/1,024, footer 2,048 and 6,000 characters in all.

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
from imagine.diagnostics import MAX_PROPOSALS, ShortenResult
from imagine.guilds import GuildConfig
from imagine.jobs import Job, JobKind, JobResult
from imagine.monitor import Overview, Percentiles
from imagine.request import ImagineRequest, Params

RED = 16711680
"""Errors ("Invalid parameter", "Invalid prompt", ...), as Midjourney's."""
YELLOW = 16776960
"""Warnings and notices ("Job queued")."""
BLURPLE = 0x5865F2
"""Neutral information (/info)."""

MAX_CONTENT = 2000
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_FIELDS = 25
FIELD_NAME = 256
FIELD_VALUE = 1024
EMBED_FOOTER = 2048
EMBED_TOTAL = 6000

SPEED_WORDS = {"fast": "fast", "relax": "relaxed"}

Embed = dict[str, Any]
"""An embed as Discord's JSON (``discord.Embed.from_dict`` reads it)."""


# --- text helpers -----------------------------------------------------------------------------

def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


_MARKDOWN = re.compile(r"([\\*_~`|>])")


def escape(text: str) -> str:
    """Markdown characters escaped, so a prompt cannot break out of its bold."""
    return _MARKDOWN.sub(r"\\\1", text)


def duration(seconds: float) -> str:
    """A rough, friendly duration: ``about 40 s``, ``about 3 min``, ``about 2 h``."""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.0f} h"


# --- the prompt as the user wrote it -----------------------------------------------------------

_PARAM_FLAGS: tuple[tuple[str, str], ...] = (
    ("aspect", "--ar"), ("chaos", "--chaos"), ("quality", "--q"), ("stylize", "--s"),
    ("stop", "--stop"), ("weird", "--weird"), ("iw", "--iw"), ("seed", "--seed"),
    ("style", "--style"), ("model", "--v"),
)


def params_text(params: Params) -> str:
    """The parameters that differ from their defaults, written as a user would (``--ar 16:9 --no x``)."""
    default = Params()
    out = []
    for name, flag in _PARAM_FLAGS:
        value = getattr(params, name)
        if value != getattr(default, name) and value is not None:
            out.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    if params.no:
        out.append("--no " + ", ".join(params.no))
    if params.tile:
        out.append("--tile")
    if params.speed == "relax":
        out.append("--relax")
    return " ".join(out)


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
    return f"**{shorten(escape(prompt_text(job.request)), room)}**{after}"


def speed_word(job: Job) -> str:
    return SPEED_WORDS.get(job.speed, job.speed)


def waiting_line(job: Job, position: int | None = None, wait_s: float | None = None) -> str:
    """The job's message before it starts, with its place in line and wait when known; "Starting"
    when a worker took it at once (``position`` 0)."""
    known = []
    if position:
        known.append(f"#{position} in line")
    if wait_s is not None:
        known.append(duration(wait_s))
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
    return f"**{shorten(prompt, MAX_CONTENT - len(tail) - 4)}**{tail}"


def confirm_text(jobs: int) -> str:
    """The question asked before a prompt that makes many jobs is submitted."""
    return f"This prompt makes **{jobs} jobs**. Do you want to submit them all?"


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


def clip_embed(embed: Embed) -> Embed:
    """The embed cut to Discord's limits: each part, then 6,000 characters in all
    (title, footer and description first; fields while they fit)."""
    out = dict(embed)
    if "title" in out:
        out["title"] = shorten(out["title"], EMBED_TITLE)
    if "footer" in out:
        out["footer"] = {**out["footer"], "text": shorten(out["footer"]["text"], EMBED_FOOTER)}
    budget = EMBED_TOTAL - len(out.get("title", "")) - len(out.get("footer", {}).get("text", ""))
    if "description" in out:
        out["description"] = shorten(out["description"], min(EMBED_DESCRIPTION, budget))
        budget -= len(out["description"])
    fields = []
    for f in out.pop("fields", [])[:EMBED_FIELDS]:
        name, value = shorten(f["name"], FIELD_NAME) or "-", shorten(f["value"], FIELD_VALUE) or "-"
        if len(name) + 2 > budget:
            break
        value = shorten(value, budget - len(name))
        budget -= len(name) + len(value)
        fields.append({**f, "name": name, "value": value})
    if fields:
        out["fields"] = fields
    return out


def embed_length(embed: Embed) -> int:
    """Characters Discord counts toward an embed's 6,000."""
    fields = embed.get("fields", [])
    return (len(embed.get("title", "")) + len(embed.get("description", ""))
            + len(embed.get("footer", {}).get("text", ""))
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
    return f"`{s.job_id}` {escape(shorten(s.prompt, 60))} ({where})"


def _lines(items: Sequence[str], limit: int = FIELD_VALUE) -> str:
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
            {"name": f"Running jobs ({len(data.running)})", "value": _lines([_job_item(s) for s in data.running]),
             "inline": False},
            {"name": f"Queued jobs ({len(data.queued)})", "value": _lines([_job_item(s) for s in data.queued]),
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


def config_embed(config: GuildConfig, banned_words: int, banned_users: int) -> Embed:
    """/admin config: this server's settings as they are now."""
    channels = ", ".join(f"<#{c}>" for c in config.allowed_channels) or "every channel"
    lines = [
        f"channels: {channels}",
        f"default model: {config.default_model or 'the deployment default'}",
        f"limits per user: {config.running_limit or 'default'} running, {config.waiting_limit or 'default'} waiting",
        f"speed: {config.speed_policy}",
        f"diagnostics: {'on' if config.diagnostics else 'off'}",
        f"output filter: {config.output_filter}",
        f"banned words: {banned_words}, banned users: {banned_users}",
    ]
    return clip_embed({"title": "Server settings", "description": "\n".join(lines), "color": YELLOW})


def shorten_details_embed(result: ShortenResult) -> Embed:
    """Show Details under a /shorten: every analyzed word's influence, in prompt order."""
    marks = {"influential": "**{}**", "removable": "~~{}~~", "neutral": "{}"}
    words = [f"`{w.influence:.4f}` {marks[w.role].format(escape(w.word))} (#{w.rank}, {w.relative:.0%})"
             for w in result.words]
    skipped = result.total_words - len(result.words)
    if skipped > 0:
        words.append(f"{skipped} more words were not analyzed.")
    legend = (f"bold: influential (from {result.influential_from:.0%} of the largest influence), "
              f"struck: removable (below {result.removable_below:.0%})")
    return clip_embed({
        "title": "Shorten: every word's influence",
        "description": _lines(words, EMBED_DESCRIPTION) if words else "No word to analyze.",
        "footer": {"text": f"{result.encoder} · 1 - cos of the text vector without the word · {legend}"},
        "color": BLURPLE,
    })
