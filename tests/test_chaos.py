"""A short chaos run (bench/chaos.py) as a test: 30 /imagine from 3 users, 2 workers of the tiny
model, the bot as its own process against the Discord stand-in, one fault of each kind (kill -9
of a worker, of the bot, of redis-server, a worker paused past its heartbeat TTL, a host crash
cutting back the AOF). Whatever happens, no accepted job may vanish or reach its user twice, and
every failure says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The figures of one short run, shared by the tests below (it takes about two minutes)."""
    report = tmp_path_factory.mktemp("chaos") / "report.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--jobs", "30", "--users", "3", "--workers", "2",
         "--faults", "5", "--seed", "3", "--duration", "60", "--deadline", "60", "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert report.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    figures: dict[str, Any] = json.loads(report.read_text())
    figures["output"] = run.stdout
    return figures


def test_every_accepted_job_is_accounted_for_and_shown_at_most_once(chaos: dict[str, Any]) -> None:
    assert [f["kind"] for f in chaos["faults"]] and {f["kind"] for f in chaos["faults"]} == {
        "kill-worker", "kill-bot", "kill-redis", "pause-worker", "truncate-aof"}, chaos["output"]
    assert chaos["accepted"] >= 20, chaos["output"]  # some are refused ("Queue unavailable") while Redis is down
    assert chaos["missing"] == [], chaos["output"]
    assert chaos["delivered_twice"] == [], chaos["output"]
    assert chaos["failed_without_reason"] == [], chaos["output"]
    assert chaos["done"] >= 1, chaos["output"]


def test_nothing_is_stuck_after_the_faults(chaos: dict[str, Any]) -> None:
    """0 stuck: every accepted job (but those a host crash lost by design) ended and was shown."""
    assert chaos["stuck"] == [], chaos["output"]
    assert chaos["ended_unseen"] == [], chaos["output"]
