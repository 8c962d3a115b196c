"""/shorten at the wire: the real discord.py against the fake Discord, a real Redis, and the real
worker (a SimpleWorker in burst mode with the tiny model and the pretrained MiniLM) computing
the word analysis that the bot then shows with its buttons 1-5.
"""

from __future__ import annotations

import re
from typing import Any

from bot import render, render_analysis
from imagine.constants import KEY_PREFIX
from imagine.diagnostics import MAX_INFLUENCE_WORDS, ShortenResult, WordInfluence
from imagine.jobs import JobKind, JobStatus
from imagine.user_settings import UserSettingsStore
from tests.bot_harness import (
    FakeWorker,
    artifacts_of,
    custom_ids_of,
    feed,
    labels_of,
    queue_of,
    refusals,
    run_to_delivery,
    running_bot,
    wait_until,
)
from tests.discord_stub import MANAGE_GUILD, OTHER_USER_ID, USER_ID, FakeDiscord
from tests.worker_fixtures import RunWorker

PROMPT = ("a cozy wooden cabin beside a frozen mountain lake under bright northern lights with pine trees, "
          "snow, stars and a warm glowing window")
"""Long enough for the 5 shorter prompts of Midjourney's /shorten."""

NAME = re.compile(r"^[-_\w]{1,32}$")


async def shortened(bot: Any, fake: FakeDiscord, run_worker: RunWorker,
                    prompt: str = f"{PROMPT} --ar 16:9") -> tuple[str, dict[str, Any], ShortenResult]:
    """/shorten to its delivered analysis: the job id, the result message and the analysis."""
    job_id, message = await run_to_delivery(bot, fake, fake.slash("shorten", prompt=prompt), lambda _: run_worker())
    result = queue_of(bot).state(job_id).result
    analysis = ShortenResult.model_validate_json(artifacts_of(bot).get(result.shorten))
    return job_id, message, analysis


async def test_shorten_is_registered_with_a_valid_prompt_option(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake):
        [put] = fake.find("PUT", r"/applications/\d+/guilds/\d+/commands$")
        shorten = {c["name"]: c for c in put.json}["shorten"]
        assert NAME.match(shorten["name"]) and 1 <= len(shorten["description"]) <= 100
        [prompt] = shorten["options"]
        assert (prompt["name"], prompt["type"], prompt["required"], prompt["max_length"]) == ("prompt", 3, True, 6000)
        assert 1 <= len(prompt["description"]) <= 100
        assert shorten.get("default_member_permissions") is None  # every member may use it


async def test_an_invalid_prompt_gets_an_ephemeral_red_error(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        cases = {"a cat --aspct 2:3": "Invalid parameter", "a::-2 b": "Invalid prompt",
                 "a {red, green} bird": "Invalid prompt", "hot:: dog": "Invalid prompt",
                 "https://example.com/a.png a cat": "Invalid link"}  # its buttons would imagine the link
        _, _, permutations, multi, link = await refusals(bot, fake, "shorten", cases)
        assert "makes 2 with its permutations" in permutations and "multi-prompt (`::`)" in multi
        assert "example.com" in link
        assert FakeWorker(redis_conn).open_jobs() == []


async def test_shorten_waits_then_shows_the_analysis_with_five_buttons(redis_server, redis_conn, run_worker) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        feed(bot, fake.slash("shorten", prompt=f"{PROMPT} --ar 16:9"))
        [callback] = await fake.wait_for("POST", r"/callback$")
        waiting = callback.json["data"]
        assert callback.json["type"] == 4 and not waiting.get("flags")  # the job's one public message
        assert waiting["content"] == f"**{PROMPT} --ar 16:9** - Shorten by <@{USER_ID}> (Waiting to start) - #1 in line"
        [job_id] = FakeWorker(redis_conn).open_jobs()
        assert custom_ids_of(waiting) == [f"imagine:X:{job_id}"]
        assert queue_of(bot).state(job_id).job.kind is JobKind.SHORTEN

        run_worker()
        [final] = await fake.wait_for("PATCH", r"/messages/@original$")
        await wait_until(lambda: bot.delivery.delivered == 1)
        state = queue_of(bot).state(job_id)
        assert state.status is JobStatus.DONE and state.result.images == ()
        analysis = ShortenResult.model_validate_json(artifacts_of(bot).get(state.result.shorten))
        assert analysis.text == PROMPT and len(analysis.proposals) == 5

        assert final.json["content"] == f"**{PROMPT} --ar 16:9** - Shorten by <@{USER_ID}> (fast)"
        assert final.json["attachments"] == [] and not final.files
        [embed] = final.json["embeds"]
        assert embed["title"] == "Shorten: which words matter"
        marks = {"influential": "**{}**", "removable": "~~{}~~", "neutral": "{}"}  # bold, struck, as is
        marked = " ".join(marks[w.role].format(render.escape(w.word)) for w in analysis.words)
        assert embed["description"].startswith(marked + "\n\n") and "~~a~~" in marked and "**cabin**" in marked
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert [line.rsplit(" (", 1)[0] for line in fields["Shorter prompts"].splitlines()] == [
            f"{n}. {render.escape(p.text)}" for n, p in enumerate(analysis.proposals, 1)]
        assert custom_ids_of(final.json) == [
            *(f"imagine:S:{job_id}:{n}" for n in range(1, 6)), f"imagine:S:{job_id}:details"]
        assert labels_of(final.json) == ["1", "2", "3", "4", "5", "Show Details"]
        assert len(final.json["components"]) == 2  # 1-5 on one row, Show Details below


async def test_pressing_2_imagines_the_second_shorter_prompt_with_the_prompt_s_parameters(
    redis_server, redis_conn, run_worker
) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, message, analysis = await shortened(bot, fake, run_worker, f"{PROMPT} --ar 16:9 --no people")
        feed(bot, fake.press(f"imagine:S:{job_id}:2", message))
        await wait_until(lambda: len(FakeWorker(redis_conn).open_jobs()) == 1)
        [new_id] = FakeWorker(redis_conn).open_jobs()
        job, parent = queue_of(bot).state(new_id).job, queue_of(bot).state(job_id).job
        second = analysis.proposals[1].text
        assert job.kind is JobKind.IMAGINE and job.request.text == second
        assert job.request.positive_text == second and job.request.params == parent.request.params
        assert [p.text for p in job.request.negatives] == ["people"]
        assert job.requester.user_id == str(USER_ID) and job.id != job_id
        [*_, answer] = await fake.wait_for("POST", r"/callback$", count=2)
        assert answer.json["type"] == 4 and not answer.json["data"].get("flags")
        assert answer.json["data"]["content"] == (
            f"**{second} --ar 16:9 --no people** - <@{USER_ID}> (Waiting to start) - #1 in line")

        feed(bot, fake.press(f"imagine:S:{job_id}:details", message))
        [*_, details] = await fake.wait_for("POST", r"/callback$", count=3)
        assert details.json["data"]["flags"] == 64
        [embed] = details.json["data"]["embeds"]
        assert embed["title"] == "Shorten: every word's influence"
        assert len(embed["description"].splitlines()) == len(analysis.words)
        assert len(FakeWorker(redis_conn).open_jobs()) == 1  # details start no job


async def test_the_user_s_settings_apply_to_shorten_and_its_shorter_prompts(
    redis_server, redis_conn, run_worker
) -> None:
    """/settings fill what the prompt did not say, as for /imagine; a parameter in the prompt wins."""
    UserSettingsStore(redis_conn).set(str(USER_ID), aspect="2:3", stylize=750, speed="relax", diagnostics=False)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, message, analysis = await shortened(bot, fake, run_worker, f"{PROMPT} --s 50")
        parent = queue_of(bot).state(job_id).job
        assert (str(parent.request.params.aspect), parent.request.params.stylize) == ("2:3", 50)
        assert (parent.speed, parent.diagnostics) == ("relax", False)
        feed(bot, fake.press(f"imagine:S:{job_id}:1", message))
        await wait_until(lambda: len(FakeWorker(redis_conn).open_jobs()) == 1)
        [new_id] = FakeWorker(redis_conn).open_jobs()
        job = queue_of(bot).state(new_id).job
        assert job.request.text == analysis.proposals[0].text
        assert (str(job.request.params.aspect), job.request.params.stylize) == ("2:3", 50)
        assert (job.speed, job.diagnostics) == ("relax", False)


async def test_only_the_owner_or_a_server_manager_may_press(redis_server, redis_conn, run_worker) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, message, analysis = await shortened(bot, fake, run_worker)
        feed(bot, fake.press(f"imagine:S:{job_id}:1", message, user_id=OTHER_USER_ID))
        [*_, refusal] = await fake.wait_for("POST", r"/callback$", count=2)
        assert refusal.json["data"]["flags"] == 64
        assert refusal.json["data"]["embeds"][0]["title"] == "Not your job"
        assert FakeWorker(redis_conn).open_jobs() == []

        feed(bot, fake.press(f"imagine:S:{job_id}:1", message, user_id=OTHER_USER_ID, permissions=MANAGE_GUILD))
        await wait_until(lambda: len(FakeWorker(redis_conn).open_jobs()) == 1)
        job = queue_of(bot).state(FakeWorker(redis_conn).open_jobs()[0]).job
        assert job.request.text == analysis.proposals[0].text and job.requester.user_id == str(OTHER_USER_ID)


async def test_show_reposts_the_analysis_with_its_buttons(redis_server, redis_conn, run_worker) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, message, _ = await shortened(bot, fake, run_worker)
        feed(bot, fake.slash("show", job_id=job_id))
        [*_, show] = await fake.wait_for("POST", r"/callback$", count=2)
        assert show.json["data"]["embeds"] == message["embeds"]
        assert custom_ids_of(show.json["data"]) == custom_ids_of(message)


async def test_a_press_on_an_expired_job_or_analysis_says_so(redis_server, redis_conn, run_worker) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, message, _analysis = await shortened(bot, fake, run_worker)
        gone = "f" * 32  # a job Redis no longer knows, under an old message of the bot
        old = {**message, "components": [{"type": 1, "components": [
            {"type": 2, "style": 2, "label": "3", "custom_id": f"imagine:S:{gone}:3"}]}]}
        feed(bot, fake.press(f"imagine:S:{gone}:3", old))
        [*_, unknown] = await fake.wait_for("POST", r"/callback$", count=2)
        embed = unknown.json["data"]["embeds"][0]
        assert unknown.json["data"]["flags"] == 64
        assert embed["title"] == "Job not found" and gone in embed["description"]

        key = queue_of(bot).state(job_id).result.shorten
        assert redis_conn.delete(f"{KEY_PREFIX}:artifact:{key}") == 1  # the analysis expired before the job
        feed(bot, fake.press(f"imagine:S:{job_id}:3", message))
        [*_, expired] = await fake.wait_for("POST", r"/callback$", count=3)
        embed = expired.json["data"]["embeds"][0]
        assert embed["title"] == "Job not found" and "no longer stored" in embed["description"]
        assert FakeWorker(redis_conn).open_jobs() == []


def test_show_details_fits_discord_for_the_longest_analysis() -> None:
    """60 analyzed words of 100 characters, 5 more not analyzed: cut to Discord's limits, never refused."""
    words = [WordInfluence(word=f"{i}" + "*" * 99, index=i, influence=0.5, relative=1.0, rank=i + 1,
                           role="influential") for i in range(MAX_INFLUENCE_WORDS)]
    analysis = ShortenResult(text=" ".join(w.word for w in words), encoder="all-MiniLM-L6-v2",
                             total_words=MAX_INFLUENCE_WORDS + 5, words=words, proposals=[])
    embed = render_analysis.shorten_details_embed(analysis)
    assert len(embed["description"]) <= render.EMBED_DESCRIPTION and render.embed_length(embed) <= render.EMBED_TOTAL
    assert embed["description"].startswith("`0.5000` **0\\*\\*") and "more" in embed["description"].splitlines()[-1]
    assert render.shorten_buttons("0" * 32, 0) == [render.ButtonSpec(f"imagine:S:{'0' * 32}:details", "Show Details",
                                                                     row=1)]
