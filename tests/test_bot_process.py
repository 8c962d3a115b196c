"""`imagine bot` as a process: no torch, a clear line without a token, and a whole job end to end
against the fake Discord REST API and a minimal fake gateway (through the base-URL settings)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.bot_harness import FakeWorker, wait_until
from tests.discord_stub import GUILD_ID, TOKEN, FakeDiscord, FakeGateway

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any of our settings (they could come from the developer's shell)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("IMAGINE_") and k not in ("DISCORD_TOKEN", "REDIS_URL")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_the_bot_never_imports_torch() -> None:
    code = ("import sys, bot.app, bot.cogs.imagine, bot.cogs.buttons, bot.cogs.info, cli.main; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'worker' not in sys.modules, 'worker imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=clean_env())


def test_without_a_token_it_says_what_to_set_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cli", "bot"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISCORD_TOKEN" in lines[0] and '"Creating the Discord application"' in lines[0]


async def test_imagine_bot_process_runs_a_job_end_to_end(redis_server, redis_conn, tmp_path: Path) -> None:
    async with FakeDiscord() as fake, FakeGateway() as gateway:
        env = clean_env(
            DISCORD_TOKEN=TOKEN, REDIS_URL=redis_server.url, IMAGINE_DEV_GUILD_ID=str(GUILD_ID),
            IMAGINE_DISCORD_API_BASE=fake.base_url, IMAGINE_DISCORD_GATEWAY_URL=gateway.url,
            IMAGINE_PROGRESS_INTERVAL_S="0.1",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", "bot", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await asyncio.wait_for(gateway.identified.wait(), 30)
            await fake.wait_for("PUT", rf"/guilds/{GUILD_ID}/commands$")
            await gateway.dispatch("INTERACTION_CREATE", fake.slash("imagine", prompt="a whole job"))
            [callback] = await fake.wait_for("POST", r"/callback$")
            assert "(Waiting to start)" in callback.json["data"]["content"]
            worker = FakeWorker(redis_conn)
            [job_id] = worker.open_jobs()
            await wait_until(lambda: redis_conn.hexists(f"imagine:job:{job_id}", "message_id"))
            worker.run(job_id)
            await fake.wait_for("PATCH", r"/messages/@original$", count=2)
            await wait_until(lambda: redis_conn.hexists(f"imagine:job:{job_id}", "delivered_message_id"))
            final = fake.find("PATCH", r"/messages/@original$")[-1]
            assert final.files and final.files[0].filename == f"{job_id}_grid.png"
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            output = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
        assert proc.returncode == 0, output
        assert f"job {job_id}: done result delivered" in output
        assert TOKEN not in output  # the token is never logged
