"""Every exception the product raises on purpose.

    ImagineError
     ├── UserError            shown to the Discord user (ephemeral, red embed); never retried
     │    ├── InvalidPrompt       "Invalid prompt"    empty, too long, bad weights, too many jobs
     │    ├── InvalidParameter    "Invalid parameter" unknown/repeated/out-of-range --param
     │    ├── InvalidLink         "Invalid link"      image URL that is not https or not an image
     │    ├── InvalidImage        "Invalid image"     an image too large, too many pixels, or no PNG/JPEG/WebP/GIF
     │    ├── QueueFull           "Queue full"        the user's waiting limit is reached
     │    ├── JobNotFound         "Job not found"     unknown or expired job id
     │    └── NotJobOwner         "Not your job"      someone else's job
     ├── RetryableError       a failure of ours that may pass: try again later
     │    ├── RedisUnavailable    Redis cannot be reached
     │    ├── OutOfMemory         the GPU ran out of memory even at a smaller batch
     │    └── WorkerLost          the worker died while running the job
     └── JobCancelled         the job's owner cancelled it; not a failure

Anything else that escapes is a bug: it is logged with its traceback and the
user sees a generic "Something went wrong" with the job id.
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
    """The user's input is wrong. The message says what, quoted, and what is allowed."""

    title = "Invalid request"


class InvalidPrompt(UserError):
    title = "Invalid prompt"


class InvalidParameter(UserError):
    title = "Invalid parameter"


class InvalidLink(UserError):
    title = "Invalid link"


class InvalidImage(UserError):
    title = "Invalid image"


class QueueFull(UserError):
    title = "Queue full"


class JobNotFound(UserError):
    title = "Job not found"


class NotJobOwner(UserError):
    title = "Not your job"


class RetryableError(ImagineError):
    """Our side failed in a way that may pass; the user may simply try again."""

    title = "Temporary failure"


class RedisUnavailable(RetryableError):
    title = "Queue unavailable"


class OutOfMemory(RetryableError):
    title = "Out of GPU memory"


class WorkerLost(RetryableError):
    title = "Worker lost"


class JobCancelled(ImagineError):
    """Raised inside a worker when the job's cancel flag is seen."""

    title = "Job cancelled"


def quote(fragment: str, limit: int = 80) -> str:
    """Quote a user's fragment for an error message, shortened to ``limit`` characters."""
    fragment = fragment.replace("`", "'").replace("\n", " ")
    if len(fragment) > limit:
        fragment = fragment[: limit - 1] + "…"
    return f"`{fragment}`"
