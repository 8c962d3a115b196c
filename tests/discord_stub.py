"""A local stand-in for Discord: a REST server that records every request, a minimal gateway,
and builders of the gateway's INTERACTION_CREATE payloads.

The real discord.py talks to it (``discord.http.Route.BASE`` / the bot's base-URL settings),
so tests assert on what the library actually sends. It answers as Discord documents:
bodies as exactly ``application/json``, the interaction callback as
``{"interaction": ..., "resource": {"type", "message"}}``, messages with ids, attachments
and components; errors as ``{"message", "code"}``. ``fail()`` makes chosen calls fail
(401 code 50027 for an expired interaction token, 403, 404, 5xx).
``FakeDiscord(rate_limits=True)`` also enforces Discord's rate limits (``tests.discord_ratelimits``):
per-route buckets, the global 50 requests/s, 429s as Discord sends them, counted in ``limited``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.discord_ratelimits import RateLimits

APP_ID = 900000000000000001
BOT_ID = 900000000000000002
GUILD_ID = 700000000000000001
CHANNEL_ID = 700000000000000002
USER_ID = 111111111111111111
OTHER_USER_ID = 222222222222222222
TOKEN = "fake-bot-token"

BOT_USER = {"id": str(BOT_ID), "username": "imagine", "discriminator": "0", "global_name": None,
            "avatar": None, "bot": True, "flags": 0}
MANAGE_GUILD = 1 << 5
_ids = itertools.count()
DISCORD_EPOCH_MS = 1420070400000


def snowflake() -> int:
    """A unique id that, as Discord's, carries its creation time (discord.py reads it)."""
    return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(_ids) % (1 << 22))


@dataclass
class Upload:
    field: str
    filename: str
    data: bytes
    content_type: str | None


@dataclass
class Call:
    """One request discord.py sent."""

    method: str
    path: str  # after /api/v10
    query: dict[str, str]
    json: Any
    files: list[Upload]
    at: float  # time.monotonic()
    status: int = 200
    answer: Any = None  # what the fake answered

    def __repr__(self) -> str:
        files = f" +{len(self.files)} files" if self.files else ""
        return f"<{self.method} {self.path} {self.status}{files}>"


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: int
    times: int


@dataclass
class FakeDiscord:
    """``async with FakeDiscord() as d:`` then ``d.base_url`` is the REST API's base."""

    rate_limits: bool = False  # enforce Discord's rate limits (off: every request is answered)
    limits: RateLimits = field(default_factory=RateLimits)
    calls: list[Call] = field(default_factory=list)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    _tokens: dict[str, dict[str, Any]] = field(default_factory=dict)  # interaction token -> info
    _failures: list[_Failure] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._handle)
        self._runner, self.port = await serve(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    # --- test controls ------------------------------------------------------------------------

    def fail(self, method: str, path_regex: str, status: int, code: int = 0, times: int = 1) -> None:
        """The next ``times`` matching calls answer ``status`` with Discord's error body."""
        self._failures.append(_Failure(method, re.compile(path_regex), status, code, times))

    def find(self, method: str | None = None, path_regex: str = "") -> list[Call]:
        rx = re.compile(path_regex)
        return [c for c in self.calls if (method is None or c.method == method) and rx.search(c.path)]

    async def wait_for(self, method: str, path_regex: str, count: int = 1, timeout: float = 10) -> list[Call]:
        """Wait until at least ``count`` matching calls were answered."""
        deadline = time.monotonic() + timeout
        while len(found := self.find(method, path_regex)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} x {method} {path_regex}; calls: {self.calls}")
            await asyncio.sleep(0.01)
        return found

    # --- interaction payloads (the gateway's INTERACTION_CREATE) ------------------------------

    def slash(self, name: str, user_id: int = USER_ID, permissions: int = 0, **options: str) -> dict[str, Any]:
        """A type 2 application command interaction."""
        data = {"id": str(snowflake()), "name": name, "type": 1,
                "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()]}
        return self._interaction(2, data, user_id, permissions)

    def press(self, custom_id: str, message: dict[str, Any], user_id: int = USER_ID,
              permissions: int = 0) -> dict[str, Any]:
        """A type 3 component interaction: a press of the button ``custom_id`` on ``message``."""
        return self._component({"custom_id": custom_id, "component_type": 2}, message, user_id, permissions)

    def choose(self, custom_id: str, values: list[str], message: dict[str, Any], user_id: int = USER_ID,
               permissions: int = 0) -> dict[str, Any]:
        """A type 3 component interaction: ``values`` picked in the string select ``custom_id`` on ``message``."""
        data = {"custom_id": custom_id, "component_type": 3, "values": values}
        return self._component(data, message, user_id, permissions)

    def _component(self, data: dict[str, Any], message: dict[str, Any], user_id: int,
                   permissions: int) -> dict[str, Any]:
        payload = self._interaction(3, data, user_id, permissions)
        payload["message"] = message
        self._tokens[payload["token"]]["pressed_message"] = int(message["id"])
        return payload

    def _interaction(self, kind: int, data: dict[str, Any], user_id: int, permissions: int) -> dict[str, Any]:
        interaction_id = snowflake()
        token = f"itoken-{interaction_id}"
        self._tokens[token] = {"channel_id": CHANNEL_ID, "original": None}
        return {
            "id": str(interaction_id), "application_id": str(APP_ID), "type": kind, "token": token,
            "version": 1, "guild_id": str(GUILD_ID), "channel_id": str(CHANNEL_ID),
            "channel": {"id": str(CHANNEL_ID), "type": 0, "guild_id": str(GUILD_ID), "name": "general",
                        "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None},
            "member": {"user": {"id": str(user_id), "username": f"user{user_id}", "discriminator": "0",
                                "global_name": None, "avatar": None},
                       "roles": [], "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False, "mute": False,
                       "flags": 0, "permissions": str(permissions)},
            "app_permissions": str((1 << 46) - 1), "locale": "en-US", "guild_locale": "en-US",
            "entitlements": [], "authorizing_integration_owners": {"0": str(GUILD_ID)}, "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024, "data": data,
        }

    def message_of(self, message_id: int) -> dict[str, Any]:
        return self.messages[message_id]

    # --- the REST API -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body, files = await _read_body(request)
        call = Call(request.method, path, dict(request.query), body, files, time.monotonic())
        self.calls.append(call)
        headers: dict[str, str] = {}
        if self.rate_limits:
            verdict = self.limits.check(request.method, path)
            if not verdict.allowed:
                call.status = 429
                return _json(verdict.body, 429, verdict.headers)
            headers = verdict.headers
        for failure in self._failures:
            if failure.times > 0 and failure.method == request.method and failure.pattern.search(path):
                failure.times -= 1
                call.status = failure.status
                return _json({"message": "failure requested by the test", "code": failure.code}, failure.status)
        answer = call.answer = self._answer(request.method, path, body or {}, files)
        if answer is None:
            call.status = 404
            return _json({"message": "Unknown route or message", "code": 10008}, 404)
        return _json(answer, headers=headers) if answer != 204 else web.Response(status=204, headers=headers)

    def _answer(self, method: str, path: str, body: dict[str, Any], files: list[Upload]) -> Any:
        if method == "GET" and path == "/users/@me":
            return BOT_USER
        if method == "GET" and path == "/oauth2/applications/@me":
            return {"id": str(APP_ID), "name": "imagine", "icon": None, "description": "", "bot_public": True,
                    "bot_require_code_grant": False, "owner": BOT_USER, "verify_key": "00", "flags": 0,
                    "team": None, "summary": "", "rpc_origins": []}
        if method == "GET" and path in ("/gateway", "/gateway/bot"):
            return {"url": "ws://127.0.0.1/", "shards": 1,
                    "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0,
                                            "max_concurrency": 1}}
        if m := re.fullmatch(r"/applications/\d+(?:/guilds/(\d+))?/commands", path):
            if method == "PUT":
                return [{**cmd, "id": str(snowflake()), "application_id": str(APP_ID), "version": "1",
                         "type": cmd.get("type", 1), **({"guild_id": m[1]} if m[1] else {})} for cmd in body]
        if m := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", path):
            return self._callback(int(m[1]), m[2], body, files)
        if m := re.fullmatch(r"/webhooks/\d+/([^/]+)", path):
            if method == "POST":
                return self._new_message(self._token(m[1])["channel_id"], body, files)
        if m := re.fullmatch(r"/webhooks/\d+/([^/]+)/messages/(@original|\d+)", path):
            info = self._tokens.get(m[1], {})
            message_id = info.get("original") if m[2] == "@original" else int(m[2])
            return self._existing(method, message_id, body, files)
        if m := re.fullmatch(r"/channels/(\d+)/messages", path):
            if method == "POST":
                return self._new_message(int(m[1]), body, files)
        if m := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", path):
            return self._existing(method, int(m[2]), body, files)
        return None

    def _token(self, token: str) -> dict[str, Any]:
        """What the fake knows of an interaction token (one it did not build: the default channel)."""
        return self._tokens.setdefault(token, {"channel_id": CHANNEL_ID, "original": None})

    def _callback(self, interaction_id: int, token: str, body: dict[str, Any], files: list[Upload]) -> Any:
        kind = body["type"]
        info = self._token(token)
        data = body.get("data") or {}
        interaction = {"id": str(interaction_id), "type": 2, "response_message_loading": kind == 5,
                       "response_message_ephemeral": bool(data.get("flags", 0) & 64)}
        if kind in (4, 5):
            message = self._new_message(info["channel_id"], data if kind == 4 else {"content": "", "flags": 128},
                                        files)
            info["original"] = int(message["id"])
        elif kind == 7:
            message = self._existing("PATCH", info.get("pressed_message"), data, files)
        else:  # 6: deferred update, nothing to show
            return {"interaction": interaction}
        interaction["response_message_id"] = message["id"]
        return {"interaction": interaction, "resource": {"type": kind, "message": message}}

    def _new_message(self, channel_id: int, body: dict[str, Any], files: list[Upload]) -> dict[str, Any]:
        message_id = snowflake()
        message = {
            "id": str(message_id), "channel_id": str(channel_id), "type": 0, "author": BOT_USER,
            "content": "", "embeds": [], "components": [], "attachments": [], "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "pinned": False,
            "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": None, "flags": 0,
        }
        self.messages[message_id] = message
        return self._apply(message, body, files)

    def _existing(self, method: str, message_id: int | None, body: dict[str, Any], files: list[Upload]) -> Any:
        message = self.messages.get(message_id) if message_id is not None else None
        if message is None:
            return None
        if method == "DELETE":
            del self.messages[message_id]  # type: ignore[arg-type]
            return 204
        if method == "PATCH":
            self._apply(message, body, files)
            message["edited_timestamp"] = "2024-01-01T00:00:01+00:00"
        return message

    @staticmethod
    def _apply(message: dict[str, Any], body: dict[str, Any], files: list[Upload]) -> dict[str, Any]:
        for key in ("content", "embeds", "components", "flags"):
            if key in body:
                message[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        if "attachments" in body or files:
            existing = {a["id"]: a for a in message.get("attachments", [])}
            kept = [existing[str(a["id"])] for a in body.get("attachments") or [] if str(a.get("id")) in existing]
            message["attachments"] = kept + [
                {"id": str(snowflake()), "filename": f.filename, "size": len(f.data),
                 "url": f"https://cdn.example/{f.filename}", "proxy_url": f"https://cdn.example/{f.filename}"}
                for f in files
            ]
        return message


async def _read_body(request: web.Request) -> tuple[Any, list[Upload]]:
    if request.content_type.startswith("multipart/"):
        body: Any = None
        files: list[Upload] = []
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                body = json.loads(await part.text())
            else:
                files.append(Upload(part.name or "", part.filename or "", bytes(await part.read()),
                                    part.headers.get("Content-Type")))
        return body, files
    raw = await request.read()
    return (json.loads(raw) if raw else None), []


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on a free local port; returns its runner (to clean up) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@asynccontextmanager
async def local_origin(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """``handler`` answering every GET on a free local port (a stand-in for Discord's CDN);
    yields the server's origin, ``http://127.0.0.1:port``."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner, port = await serve(app)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Exactly ``application/json`` (discord.py decodes nothing else)."""
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={**(headers or {}), "Content-Type": "application/json"})


# --- a minimal gateway ----------------------------------------------------------------------------

class FakeGateway:
    """HELLO, READY after IDENTIFY, heartbeat ACKs; ``dispatch()`` sends an event to the bot."""

    def __init__(self) -> None:
        self.identified = asyncio.Event()
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> FakeGateway:
        app = web.Application()
        app.router.add_get("/", self._socket)
        self._runner, self.port = await serve(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self._ws is not None, "no bot connected"
        self._seq += 1
        await self._ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            if frame["op"] == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif frame["op"] == 2:
                self._seq += 1
                await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._seq, "d": {
                    "v": 10, "user": BOT_USER, "guilds": [], "session_id": "fake-session",
                    "resume_gateway_url": self.url, "application": {"id": str(APP_ID), "flags": 0},
                }}))
                self.identified.set()
        return ws
