"""Every exception the product raises on purpose, in three groups.

    ImagineError
     ├── UserError            the request cannot be served as asked: shown to the Discord user
     │    │                   (ephemeral, red embed) or printed as one line; never retried
     │    ├── InvalidPrompt       "Invalid prompt"    empty, too long, bad weights, too many jobs
     │    ├── InvalidParameter    "Invalid parameter" unknown/repeated/out-of-range --param
     │    ├── InvalidLink         "Invalid link"      image URL that is malformed, not an image, or unreadable
     │    │    └── OriginNotAllowed    an image link from an origin the deployment does not fetch from
     │    ├── InvalidImage        "Invalid image"     an image prompt the caps refuse, one type per cap:
     │    │    ├── TooManyImages       more image prompts (or /blend images) than allowed
     │    │    ├── ImageTooLarge       more bytes than MAX_IMAGE_BYTES
     │    │    ├── TooManyPixels       more pixels than MAX_IMAGE_PIXELS
     │    │    └── NotAnImage          not a PNG, JPEG, WebP or GIF
     │    ├── QueueFull           "Queue full"        the user's waiting limit is reached
     │    ├── JobNotFound         "Job not found"     unknown or expired job id
     │    │    └── ResultExpired      "Images/Analysis/Prompts expired"  a finished job whose files are gone
     │    ├── NotJobOwner         "Not your job"      someone else's job
     │    ├── BannedPrompt        "Banned prompt detected"  a word the server banned
     │    ├── NotAllowedHere      "Not allowed here"  the server's policy: banned user, channel, relax only
     │    ├── AdminOnly           "Admins only"       an /admin command without Manage Server
     │    └── OutputFiltered      "Request cancelled due to output filters"  the images were blocked
     ├── RetryableError       a failure of ours that may pass: try again later
     │    ├── RedisUnavailable    Redis cannot be reached
     │    ├── OutOfMemory         the GPU ran out of memory even at a smaller batch
     │    ├── WorkerLost          the worker died while running the job
     │    ├── LostInCrash         a queue crash lost the job's end ("press 🔄 to run it again")
     │    └── ModelUnserved       no live worker serves the job's model (refused, or failed after a wait)
     ├── SetupError           the installation lacks something only its operator can provide; the
     │    │                   message says what to install or set (printed as one line, never retried)
     │    ├── RedisServerMissing  no redis-server to start for `imagine run` / the tests
     │    └── ModelNotCached      a model's weights are not in the cache and downloads are off
     ├── UnreadableJob        a stored job no worker can read: failed once, never run
     │    └── JobFromNewerVersion   written by a newer bot (a higher schema_version)
     └── JobCancelled         the job's owner cancelled it; not a failure

Bugs are everything else: an exception that is none of these is logged with its traceback
and the user sees a generic "Something went wrong" with the job id.
"""

from __future__ import annotations


class ImagineError(Exception):
    """Base class of the product's own exceptions."""

    title: str = "Error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        """The form stored in a job's result and shown by the bot."""
        return {"type": type(self).__name__, "title": self.title, "message": self.message}


class UserError(ImagineError):
    """The request cannot be served as asked. The message says what, quoted, and what is allowed
    (or what the user can do instead)."""

    title = "Invalid request"


class InvalidPrompt(UserError):
    title = "Invalid prompt"


class InvalidParameter(UserError):
    title = "Invalid parameter"


class InvalidPreference(UserError):
    """A /prefer option or suffix that cannot be stored (``imagine.preferences``)."""

    title = "Invalid preference"


class InvalidLink(UserError):
    title = "Invalid link"


class OriginNotAllowed(InvalidLink):
    """An image link from an origin the deployment does not fetch from (``imagine.image_inputs``)."""


class InvalidImage(UserError):
    title = "Invalid image"


class TooManyImages(InvalidImage):
    """More image prompts (or /blend images) than ``imagine.image_inputs.MAX_IMAGE_PROMPTS``."""


class ImageTooLarge(InvalidImage):
    """An image of more bytes than ``MAX_IMAGE_BYTES``."""


class TooManyPixels(InvalidImage):
    """An image of more pixels than ``MAX_IMAGE_PIXELS`` (read from its header)."""


class NotAnImage(InvalidImage):
    """A file that is not a PNG, JPEG, WebP or GIF image."""


class QueueFull(UserError):
    title = "Queue full"


class JobNotFound(UserError):
    title = "Job not found"


class ResultExpired(JobNotFound):
    """What a finished job's message shows (its images, analysis or prompts) is no longer in the
    artifact store: delivery posts the job as failed under ``title``; /show refuses with it."""

    def __init__(self, title: str, message: str) -> None:
        super().__init__(message)
        self.title = title


class NotJobOwner(UserError):
    title = "Not your job"


class BannedPrompt(UserError):
    """The prompt has a word the server banned (``imagine.guilds``)."""

    title = "Banned prompt detected"


class NotAllowedHere(UserError):
    """The server's policy refuses this user, this channel, or fast mode (``imagine.guilds``)."""

    title = "Not allowed here"


class AdminOnly(UserError):
    """An /admin command used without the Manage Server permission, or outside a server."""

    title = "Admins only"


class OutputFiltered(UserError):
    """The output filter classified the images as unsafe and the server's policy blocks them."""

    title = "Request cancelled due to output filters"


class RetryableError(ImagineError):
    """Our side failed in a way that may pass; the user may simply try again."""

    title = "Temporary failure"


class RedisUnavailable(RetryableError):
    title = "Queue unavailable"


class OutOfMemory(RetryableError):
    title = "Out of GPU memory"


class WorkerLost(RetryableError):
    title = "Worker lost"


class LostInCrash(RetryableError):
    """A job left running by a queue crash that lost its end (``imagine.reconcile``)."""

    title = "Lost in a queue crash"


class UnreadableJob(ImagineError):
    """A stored job no worker can read (not JSON, no job, not a job): failed, never run."""

    title = "Unreadable job"


class JobFromNewerVersion(UnreadableJob):
    """A job written by a newer bot (a higher ``schema_version``) than this worker reads."""

    title = "Job from a newer version"


class ModelUnserved(RetryableError):
    """No live worker serves the job's model: refused at submit (the guild's ``unserved: refuse``)
    or failed once it waited past ``IMAGINE_UNSERVED_WAIT_S`` (``imagine.unserved``)."""

    title = "No worker for this model"


class SetupError(ImagineError):
    """The installation lacks something only its operator can provide; the message says what."""

    title = "Not set up"


class RedisServerMissing(SetupError):
    title = "redis-server not installed"


class ModelNotCached(SetupError):
    title = "Model not downloaded"


class JobCancelled(ImagineError):
    """Raised inside a worker when the job's cancel flag is seen."""

    title = "Job cancelled"


def quote(fragment: str, limit: int = 80) -> str:
    """Quote a user's fragment for an error message, shortened to ``limit`` characters."""
    fragment = fragment.replace("`", "'").replace("\n", " ")
    if len(fragment) > limit:
        fragment = fragment[: limit - 1] + "…"
    return f"`{fragment}`"
