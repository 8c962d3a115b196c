"""Delivery: post every finished job's result in Discord, exactly once, even across restarts.

Workers never hold the Discord token. ``JobQueue.finish`` appends one entry per finished job
to the stream ``imagine:deliveries``; the bot reads it in the consumer group ``bot``:

1. At start, entries left pending by an earlier run of the bot (any consumer) are claimed
   (XAUTOCLAIM) and delivered first, then new ones are read (XREADGROUP ``>``).
2. Delivering edits the job's message into the result (the grid with its buttons, a
   /shorten's word analysis with buttons 1-5, a /describe's prompts with buttons 1-4, or the
   error, or "cancelled"); if the message is unknown or was deleted, a new one is posted in
   the channel with the bot token.
3. Only after Discord accepted it: ``delivered_message_id`` is written on the job and the
   entry acknowledged (XACK), in one transaction. An entry whose job already carries that
   marker is acknowledged without posting: a bot that stopped between the post and the
   acknowledgement never posts twice.
4. Between Discord accepting a post and step 3 there is a gap (the bot killed, Redis away).
   A result posted but not recorded by this process is remembered in memory and only
   recorded on the next try. An entry tried before by another run of the bot (claimed, or
   pending after a failure) is checked against Discord first: when the job's message already
   shows the result (its text and its grid's file name), it is recorded without posting again.
5. A delivered grid is never replaced by a reconciler's verdict. A host crash can cut off the
   last second of Redis's file after the bot posted a grid: the job is "running" again, and a
   reconciler fails it "Lost in a queue crash". Before such a verdict is posted, the message is
   read back; when it already shows this job's grid, it stays, and the verdict is only recorded.

A transient failure (Discord 5xx or 429, network, Redis) leaves the entry pending: it is tried
again every ``retry_s``. A channel the bot may no longer post in (403/404) is logged and the
entry acknowledged; the result stays available through /show. A result whose files expired
before it was posted is shown as failed (``ResultExpired``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import aiohttp
import discord
import redis

from bot import render, render_analysis, store
from bot.images import Upload, fit_upload_off_loop, run_cpu_bound
from bot.messages import JobMessage, JobMessages, Post, send_to_channel
from bot.progress import ProgressFollower
from imagine.aqueue import AsyncJobQueue
from imagine.artifacts import AsyncArtifactStore
from imagine.chart import render_chart
from imagine.describe import DescribeResult
from imagine.diagnostics import Diagnostics, ShortenResult
from imagine.errors import JobNotFound, ResultExpired, RetryableError
from imagine.jobs import Job, JobKind, JobResult, JobStatus
from imagine.queue import RECONCILER_VERDICTS, JobState

log = logging.getLogger(__name__)

TRANSIENT = (aiohttp.ClientError, asyncio.TimeoutError, RetryableError, redis.exceptions.RedisError,
             discord.DiscordServerError)
"""Failures that may pass: the entry stays pending and is delivered later."""

MESSAGE_WAIT_S = 10.0
"""How long a result waits for its job's message to be posted (a job faster than its post)."""


def _is_verdict(state: JobState) -> bool:
    """A failure the reconciler recorded on a job it gave up on (``imagine.reconcile``)."""
    error = state.result.error if state.result else None
    return state.status is JobStatus.FAILED and error is not None and error.type in RECONCILER_VERDICTS


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Delivery:
    """Reads ``imagine:deliveries`` as a member of the group ``bot`` and posts each result."""

    def __init__(
        self, client: discord.Client, queue: AsyncJobQueue, artifacts: AsyncArtifactStore, messages: JobMessages,
        progress: ProgressFollower, consumer: str, *, block_ms: int = 1000, concurrency: int = 8,
        retry_s: float = 30.0,
    ) -> None:
        self.client = client  # posts and edits with the bot's token
        self.queue = queue
        self.redis = queue.redis
        self.artifacts = artifacts
        self.messages = messages  # the messages this process posted
        self.progress = progress
        self.consumer = consumer
        self.block_ms = block_ms
        self.retry_s = retry_s
        self.delivered = 0  # results posted by this process (for tests and the benchmark)
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: set[bytes] = set()
        self._posted: dict[str, int | None] = {}  # job id -> message: posted, not yet recorded (step 4)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = True  # until stop()

    async def run(self) -> None:
        await self.create_group()
        await self._claim_pending()
        await self._deliver_pending()
        last_retry = time.monotonic()
        while self._running:
            for entry_id, fields in await store.read_deliveries(
                    self.redis, self.consumer, ">", count=32, block_ms=self.block_ms):
                await self._start(entry_id, fields, fresh=True)
            if time.monotonic() - last_retry >= self.retry_s:
                await self._deliver_pending()
                last_retry = time.monotonic()

    def stop(self) -> None:
        """End ``run`` after its current read (at most ``block_ms``)."""
        self._running = False

    async def create_group(self) -> None:
        """The group starts at the stream's end: every job the bot starts is submitted after it
        exists (``setup_hook`` creates it before the bot can receive a command)."""
        await store.create_group(self.redis)

    async def _claim_pending(self) -> None:
        """Take over what earlier runs of the bot read but never acknowledged."""
        if claimed := await store.claim_pending(self.redis, self.consumer):
            log.info("claimed %d undelivered results of an earlier run", claimed)

    async def _deliver_pending(self) -> None:
        """Deliver this consumer's pending entries (read but not acknowledged), oldest first."""
        after: bytes | str = "0"
        while True:
            entries = await store.read_deliveries(self.redis, self.consumer, after, count=100)
            if not entries:
                return
            for entry_id, fields in entries:
                after = entry_id
                if entry_id not in self._in_flight:
                    await self._start(entry_id, fields, fresh=False)

    async def _start(self, entry_id: bytes, fields: dict[bytes, bytes], *, fresh: bool) -> None:
        """Deliver one entry in the background, at most ``concurrency`` at once. ``fresh``: read
        for the first time (no run of the bot can have posted it yet)."""
        await self._slots.acquire()
        self._in_flight.add(entry_id)
        task = asyncio.create_task(self._deliver_entry(entry_id, fields, fresh), name=f"deliver-{entry_id!r}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_entry(self, entry_id: bytes, fields: dict[bytes, bytes], fresh: bool) -> None:
        try:
            job_id = fields.get(b"job_id", b"").decode()
            if not job_id:  # trimmed from the stream while pending
                await store.mark_delivered(self.redis, "", None, entry_id)
                return
            if fields.get(b"update") == b"diagnostics":
                await self.add_diagnostics(job_id, entry_id)
            else:
                await self.deliver(job_id, entry_id, fresh=fresh)
        except TRANSIENT as exc:
            log.warning("delivery entry %s: %s; it stays pending and is tried again", entry_id.decode(), exc)
        except Exception:  # a bug: logged with its traceback; the entry stays pending
            log.exception("delivery entry %s crashed", entry_id.decode())
        finally:
            self._in_flight.discard(entry_id)
            self._slots.release()

    async def deliver(self, job_id: str, entry_id: bytes, *, fresh: bool = True) -> None:
        """Post one job's result (unless already posted), then mark it and acknowledge the entry.
        ``fresh``: no earlier try can have posted it, so Discord is not asked first (step 4)."""
        if job_id in self._posted:  # posted by this process; recording it failed
            await self._record(job_id, self._posted[job_id], entry_id, None)
            return
        if (posted := await store.delivered_message(self.redis, job_id)) is not None:
            log.info("job %s: already delivered as message %s; acknowledging", job_id, posted)
            await store.mark_delivered(self.redis, job_id, None, entry_id)
            return
        try:
            state = await self.queue.state(job_id)
        except JobNotFound:
            log.warning("job %s: finished but expired before delivery; nothing to post", job_id)
            await store.mark_delivered(self.redis, job_id, None, entry_id)
            return
        if state.job.requester.channel_id is None:  # not started from Discord (imagine run)
            await store.mark_delivered(self.redis, job_id, None, entry_id)
            return
        message = await self._message_of(state)
        if _is_verdict(state) and await self._shows_grid(message, state.job):
            log.warning("job %s: given up as lost after its grid was posted; message %s keeps the grid",
                        job_id, message.message_id)
            self.progress.unfollow(job_id)
            self.messages.forget(job_id)
            await self._record(job_id, message.message_id, entry_id, None)
            return
        post = await self._final_post(state, message.filesize_limit)
        if not fresh and await self._already_shows(message, post):
            log.info("job %s: message %s already shows the result (posted by an earlier try); recording it",
                     job_id, message.message_id)
            self.progress.unfollow(job_id)
            self.messages.forget(job_id)
            await self._record(job_id, message.message_id, entry_id, state)
            return
        message_id = await self._post(message, post)
        self._posted[job_id] = message_id
        self.progress.unfollow(job_id)
        self.messages.forget(job_id)
        await self._record(job_id, message_id, entry_id, state)
        if message_id is not None:
            self.delivered += 1
            log.info("job %s: %s result delivered as message %s in channel %s",
                     job_id, state.status.value, message_id, message.channel_id)

    async def _record(self, job_id: str, message_id: int | None, entry_id: bytes, state: JobState | None) -> None:
        """Step 3: the posted message on the job and the entry acknowledged (usage counted once,
        by the try that posted)."""
        gpu_s = state.result.timings.get("total") if state and state.result else None
        user_id = state.job.requester.user_id if state else None
        await store.mark_delivered(self.redis, job_id, message_id, entry_id, gpu_s=gpu_s, user_id=user_id)
        self._posted.pop(job_id, None)

    async def _already_shows(self, message: JobMessage, post: Post) -> bool:
        """Whether the job's message, as Discord has it now, shows ``post`` (its text, and its
        upload's file name when it has one). Any doubt (no message, Discord unreachable): False."""
        shown = await self._read_back(message)
        if shown is None:
            return False
        files = {attachment.filename for attachment in shown.attachments}
        return shown.content == post.content and (post.upload is None or post.upload.filename in files)

    async def _shows_grid(self, message: JobMessage, job: Job) -> bool:
        """Whether the job's message shows its finished pictures (step 5)."""
        shown = await self._read_back(message)
        if shown is None:
            return False
        return shown.content == render.done_line(job) and any(
            job.id in attachment.filename for attachment in shown.attachments)

    async def _read_back(self, message: JobMessage) -> discord.Message | None:
        """The job's message as Discord has it now; None when there is none or Discord cannot say."""
        if message.message_id is None:
            return None
        try:
            return await self.client.get_partial_messageable(message.channel_id).fetch_message(message.message_id)
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.info("job %s: could not read message %s back (%s)", message.job_id, message.message_id, exc)
            return None

    async def add_diagnostics(self, job_id: str, entry_id: bytes) -> None:
        """Edit a delivered result to show the diagnostics the worker made after it (one more edit).

        The worker stores the diagnostics before it adds this entry, so the state read here has
        them. The result's own entry comes first in the stream but may still be in flight: wait for
        it. When it is not posted in time, that delivery will read the diagnostics itself."""
        try:
            state = await self.queue.state(job_id)
        except JobNotFound:
            await store.acknowledge(self.redis, entry_id)
            return
        if state.job.requester.channel_id is None:  # not started from Discord (imagine run)
            await store.acknowledge(self.redis, entry_id)
            return
        deadline = time.monotonic() + MESSAGE_WAIT_S
        while (posted := await store.delivered_message(self.redis, job_id)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if posted is None:
            log.info("job %s: diagnostics arrived before its result was posted; that post will carry them", job_id)
            await store.acknowledge(self.redis, entry_id)
            return
        message = await self._stored_message(state.job, posted)
        post = await self._final_post(state, message.filesize_limit)
        shown = await self._read_back(message)
        grid = [a for a in shown.attachments if job_id in a.filename] if shown is not None else []
        if grid and post.upload is not None:  # the grid is on the message: add only the new files
            post = post.keeping(grid)
        await self._post(message, post)
        await store.acknowledge(self.redis, entry_id)
        log.info("job %s: diagnostics added to message %s", job_id, posted)

    async def _message_of(self, state: JobState) -> JobMessage:
        """The job's message: in memory when this process posted it, else as Redis remembers it."""
        job = state.job
        message = self.messages.get(job.id)
        if message is not None:
            try:
                await asyncio.wait_for(message.ready.wait(), MESSAGE_WAIT_S)
            except TimeoutError:
                log.warning("job %s: its message was never posted; posting the result anew", job.id)
            return message
        return await self._stored_message(job)

    async def _stored_message(self, job: Job, message_id: int | None = None) -> JobMessage:
        """The job's message as Redis remembers it; ``message_id``: the one its result was posted as."""
        channel_id, stored_id = await store.message_location(self.redis, job.id)
        return JobMessage(job.id, channel_id or int(job.requester.channel_id or 0), message_id=message_id or stored_id)

    async def _final_post(self, state: JobState, limit: int) -> Post:
        """``result_post``, or the job shown as failed when what it shows expired."""
        try:
            return await self.result_post(state, limit)
        except ResultExpired as exc:
            return Post(render.ended_line(state.job, "failed"), embeds=[render.error_embed(exc.title, exc.message)])

    async def result_post(self, state: JobState, limit: int) -> Post:
        """What a finished job's message shows (also /show's answer), its files under ``limit`` bytes;
        ResultExpired when the artifact store no longer has them."""
        job, result = state.job, state.result
        if state.status is JobStatus.DONE and result is not None:
            if job.kind is JobKind.SHORTEN:
                return await self._shorten_post(job, result)
            if job.kind is JobKind.DESCRIBE:
                return await self._describe_post(job, result, limit)
            key = result.grid or (result.images[0] if result.images else None)
            try:
                if key is None:
                    raise KeyError(f"job {job.id} has no image")
                png = await self.artifacts.get(key)
            except KeyError:
                log.warning("job %s: its images are missing from the artifact store", job.id)
                raise ResultExpired(
                    "Images expired", "The images of this job are no longer stored; please run it again.") from None
            embeds, extra = await self._diagnostics(result)
            limit -= sum(len(u.data) for u in extra)
            upload = await fit_upload_off_loop(png, render.upload_stem(job.id, result, key), limit)
            return Post(render.done_line(job), embeds=[*render.notes_embeds(result.notes), *embeds], upload=upload,
                        buttons=render.result_buttons(result), extra_uploads=extra)
        if state.status is JobStatus.CANCELLED:
            return Post(render.ended_line(job, "cancelled"))
        error = result.error if result else None
        title, text = (error.title, error.message) if error else ("Job failed", "The job failed; please try again.")
        return Post(render.ended_line(job, "failed"), embeds=[render.error_embed(title, text)])

    async def _shorten_post(self, job: Job, result: JobResult) -> Post:
        """A /shorten's word analysis (shorten.json) with buttons 1-5, one per shorter prompt."""
        try:
            if result.shorten is None:
                raise KeyError(f"job {job.id} has no analysis")
            shortened = ShortenResult.model_validate_json(await self.artifacts.get(result.shorten))
        except KeyError:
            log.warning("job %s: its analysis is missing from the artifact store", job.id)
            raise ResultExpired(
                "Analysis expired", "The analysis of this prompt is no longer stored; please run /shorten again."
            ) from None
        return Post(render.done_line(job), embeds=[render_analysis.shorten_embed(shortened)],
                    buttons=render.shorten_buttons(job.id, len(shortened.proposals)))

    async def _describe_post(self, job: Job, result: JobResult, limit: int) -> Post:
        """A /describe's image and 1️⃣-4️⃣ (describe.json) with buttons 1-4, one per prompt."""
        try:
            if result.describe is None:
                raise KeyError(f"job {job.id} has no prompts")
            described = DescribeResult.model_validate_json(await self.artifacts.get(result.describe))
            image = await self.artifacts.get(described.image) if described.image else None
        except KeyError:
            log.warning("job %s: its prompts are missing from the artifact store", job.id)
            raise ResultExpired(
                "Prompts expired", "The prompts for this image are no longer stored; please run /describe again."
            ) from None
        upload = await fit_upload_off_loop(image, f"{job.id}_image", limit) if image is not None else None
        embed = render_analysis.describe_embed(described, f"attachment://{upload.filename}" if upload else None)
        return Post(render.done_line(job), embeds=[embed], upload=upload,
                    buttons=render.describe_buttons(job.id, len(described.suggestions)))

    async def _diagnostics(self, result: JobResult) -> tuple[list[render.Embed], list[Upload]]:
        """The diagnostics summary embed and its chart, and the attention maps (attention.png, in an
        embed of their own) when the worker made them."""
        if not result.diagnostics:
            return [], []
        try:
            diag = Diagnostics.model_validate_json(await self.artifacts.get(result.diagnostics))
        except KeyError:
            log.warning("job %s: its diagnostics are missing from the artifact store", result.job_id)
            return [], []
        chart = await run_cpu_bound(render_chart, diag)  # drawn here, not on the GPU worker
        embed = dict(render_analysis.diagnostics_embed(diag), image={"url": "attachment://chart.png"})
        embeds, uploads = [embed], [Upload("chart.png", chart)]
        if diag.attention is not None and diag.attention.image:
            try:
                attention = await self.artifacts.get(diag.attention.image)
            except KeyError:
                log.warning("job %s: its attention maps are missing from the artifact store", result.job_id)
            else:
                embeds.append(render_analysis.attention_embed(diag, "attachment://attention.png"))
                uploads.append(Upload("attention.png", attention))
        return embeds, uploads

    async def _post(self, message: JobMessage, post: Post) -> int | None:
        """Turn the job's message into the result, or post it anew; None if Discord refuses for good."""
        async with message.lock:
            message.closed = True
            try:
                if message.message_id is not None:
                    try:
                        await message.edit(self.client, post)
                        return message.message_id
                    except discord.NotFound:
                        log.info("job %s: its message %s is gone; posting the result anew",
                                 message.job_id, message.message_id)
                sent = await send_to_channel(self.client, message.channel_id, post)
                return sent.id
            except (discord.Forbidden, discord.NotFound) as exc:
                log.warning("job %s: cannot post in channel %s (%s); the result stays available through /show",
                            message.job_id, message.channel_id, exc)
                return None
            except discord.HTTPException as exc:
                if exc.status >= 500:
                    raise
                if exc.status == 429:  # still rate limited after discord.py's own retries: later
                    raise RetryableError(f"Discord rate limited the result ({exc})") from exc
                log.error("job %s: Discord refused the result (%s %s); giving up", message.job_id, exc.status, exc)
                return None

    async def drain(self, timeout: float) -> None:
        """Wait for the deliveries in progress; cancel what is left after ``timeout`` seconds
        (their entries stay pending and are delivered at the next start)."""
        if not self._tasks:
            return
        _done, late = await asyncio.wait(list(self._tasks), timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

