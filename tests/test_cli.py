"""The `imagine` command as a user runs it: parse and schema in-process; queue, run, worker and
their refusals as processes, with what they print in a pipe or a log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from PIL import Image

from cli.main import main
from imagine.queue import REDIS_DOWN
from imagine.redis_server import RedisServer, free_port
from imagine.settings import get_settings


def test_parse_json_prints_one_object_per_job_with_every_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", "a {red, green} fox::2 forest --ar 32:18 --no people", "--json"]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert [j["text"] for j in jobs] == ["a red fox::2 forest", "a green fox::2 forest"]
    first = jobs[0]
    assert first["parts"] == [
        {"text": "a red fox", "weight": 2.0},
        {"text": "forest", "weight": 1.0},
        {"text": "people", "weight": -0.5},
    ]
    assert first["positives"] == [
        {"text": "a red fox", "weight": pytest.approx(2 / 3)},
        {"text": "forest", "weight": pytest.approx(1 / 3)},
    ]
    assert first["negatives"] == [{"text": "people", "weight": -0.5}]
    assert first["params"]["aspect"] == "16:9"
    assert set(first["params"]) >= {"seed", "chaos", "stylize", "quality", "stop", "tile", "repeat",
                                    "no", "weird", "iw", "style", "model", "speed"}


def test_parse_error_exits_2_with_the_users_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", "a cat --aspct 2:3", "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["error"] == {
        "type": "InvalidParameter",
        "title": "Invalid parameter",
        "message": "Unknown parameter `--aspct`; did you mean `--aspect`?",
    }
    assert "Invalid parameter" in err and "Traceback" not in err


def test_schema_is_versioned(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["version"] == 1
    assert "requester" in schema["job"]["properties"] and "error" in schema["result"]["properties"]


# The commands as processes: what a person sees in a terminal, a pipe or a log --------------------------------

ROOT = Path(__file__).resolve().parents[1]


def imagine(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``imagine ARGS`` as a process, stdout and stderr piped (not a terminal), with none of our
    settings from the developer's shell and no COLUMNS (rich then assumes 80 columns)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("IMAGINE_") and k not in ("DISCORD_TOKEN", "REDIS_URL", "COLUMNS")}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**clean, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **env})


def refusal(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command printed (exit 2, nothing on stdout, no traceback)."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and done.stdout == "", done.stderr[-3000:]
    return lines[0]


def test_an_error_stays_on_one_line_in_a_pipe(tmp_path: Path) -> None:
    long_name = "--" + "a" * 70  # quoted whole (a fragment is cut at 80 characters)
    line = refusal(imagine("parse", f"a cat {long_name} 2", cwd=tmp_path))
    assert line.startswith(f"Invalid parameter: Unknown parameter `{long_name}`")
    assert len(line) > 80 and line.endswith("--fast, --relax.")


def test_queue_with_redis_down_says_so_in_the_same_line_as_run(tmp_path: Path) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    queue = refusal(imagine("queue", cwd=tmp_path, REDIS_URL=down))
    run = refusal(imagine("run", "a red circle", cwd=tmp_path, REDIS_URL=down))
    assert queue == run == f"Queue unavailable: {REDIS_DOWN}"


def test_a_model_whose_weights_are_not_downloaded_is_refused_in_one_line(redis_server, tmp_path: Path) -> None:
    empty_cache = tmp_path / "hf"
    worker = refusal(imagine("worker", "--models", "sd-turbo", cwd=tmp_path, timeout=300,
                             REDIS_URL=redis_server.url, HF_HOME=str(empty_cache)))
    run = refusal(imagine("run", "a fox", "--model", "sd-turbo", cwd=tmp_path, timeout=300,
                          HF_HOME=str(empty_cache)))
    assert worker == run
    assert worker.startswith("Model not downloaded: The weights of model `sd-turbo` (stabilityai/sd-turbo) "
                             f"are not in the Hugging Face cache ({empty_cache / 'hub'})")
    assert "unset HF_HUB_OFFLINE and run once with network" in worker and "`hf-cache` volume" in worker
    assert not (empty_cache / "hub").exists() or not any((empty_cache / "hub").iterdir())  # nothing downloaded
    assert not (tmp_path / "out").exists()


def test_the_worker_says_once_that_it_is_ready_and_never_the_redis_password(tmp_path: Path, model_cache: Path) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    try:
        redis.Redis(port=server.port).config_set("requirepass", "s3cret-pw")
        done = imagine("worker", "--models", "tiny", "--queues", "fast,relax", "--burst", cwd=tmp_path, timeout=300,
                       REDIS_URL=f"redis://:s3cret-pw@127.0.0.1:{server.port}/3",
                       IMAGINE_MODEL_CACHE_DIR=str(model_cache), IMAGINE_DIAGNOSTICS="false",
                       IMAGINE_TORCH_THREADS="1")
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    [ready] = [line for line in done.stderr.splitlines() if " ready: " in line]
    assert ready.startswith("Worker ") and ready.endswith(
        "ready: models tiny; queues imagine:fast:tiny, imagine:relax:tiny; device cpu (1 threads); "
        f"Redis 127.0.0.1:{server.port}/3")
    assert "s3cret-pw" not in done.stderr + done.stdout


def test_run_refuses_an_out_directory_holding_other_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = refusal(imagine("run", "a red circle", "--out", "out", cwd=tmp_path))
    assert line == ("Invalid parameter: --out `out` holds files that `imagine run` did not write (`notes.txt`); "
                    "give a new or empty directory.")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_run_replaces_an_earlier_runs_files_and_says_so(tmp_path: Path, model_cache: Path) -> None:
    out = tmp_path / "out"
    earlier = out / "02-0123abcd"  # an earlier run of two jobs
    earlier.mkdir(parents=True)
    for name in ("grid.png", "image_1.png", "result.json"):
        (earlier / name).write_text("earlier")
    (out / "01-4567cdef").mkdir()
    (out / "01-4567cdef" / "result.json").write_text("earlier")
    done = imagine("run", "a red circle --seed 3 --weird 5", "--model", "tiny", "--out", "out", cwd=tmp_path,
                   timeout=300, IMAGINE_MODEL_CACHE_DIR=str(model_cache), IMAGINE_DIAGNOSTICS="false",
                   IMAGINE_TORCH_THREADS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Replaced the files of an earlier run in out/." in done.stderr.splitlines()
    assert "Note: --weird 5 was ignored: tiny does not use it yet." in done.stderr.splitlines()  # as under a grid
    assert sorted(p.name for p in out.iterdir()) == [
        "grid.png", "image_1.png", "image_2.png", "image_3.png", "image_4.png", "result.json"]
    assert json.loads((out / "result.json").read_text())["job"]["seed"] == 3


def test_embed_with_clip_refuses_a_model_without_a_clip_text_encoder(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGINE_MODEL_CACHE_DIR", str(model_cache))
    get_settings.cache_clear()
    try:
        assert main(["embed", "a red fox", "--encoder", "clip", "--model", "shapes"]) == 2
    finally:
        get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == ("Invalid parameter: Model `shapes` has no CLIP text encoder (its text encoder is a "
                           "BertModel); use `--encoder minilm`, or `--encoder clip --model NAME` with a Stable "
                           "Diffusion model or `tiny`.")


def test_parse_json_total_weight_counts_the_written_weights_not_the_no_items(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["parse", "a::2 b --no clouds", "--json"]) == 0
    [job] = json.loads(capsys.readouterr().out)
    assert job["total_weight"] == 3  # 2 + 1; the --no item (-0.5) is not counted, as the README says


@pytest.mark.parametrize("command", ["parse", "run"])
def test_text_that_is_not_utf8_is_refused_before_anything_runs(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `imagine run "$(printf 'a fox \xff')"`: Python turns the undecodable byte into "\udcff"
    assert main([command, "a fox \udcff in snow"]) == 2
    out, err = capsys.readouterr()
    assert "Invalid prompt" in err and "not valid UTF-8 text" in err and "0xFF" in err
    assert "Traceback" not in err and "\\udc" not in err


def test_a_gated_model_not_downloaded_says_its_licence_must_be_accepted(tmp_path: Path) -> None:
    empty_cache = tmp_path / "hf"
    run = refusal(imagine("run", "a fox", "--model", "flux-dev", cwd=tmp_path, timeout=300, HF_HOME=str(empty_cache)))
    assert run.startswith("Model not downloaded: The weights of model `flux-dev` (black-forest-labs/FLUX.1-dev)")
    assert "It is gated: accept its licence on https://huggingface.co/black-forest-labs/FLUX.1-dev" in run


def test_run_takes_a_local_file_as_an_image_prompt(tmp_path: Path, model_cache: Path) -> None:
    Image.new("RGB", (64, 64), (220, 40, 40)).save(tmp_path / "ref.png")
    done = imagine("run", f"file://{tmp_path}/ref.png a shape on a plain background --iw 2 --seed 4",
                   "--model", "tiny", "--out", "out", cwd=tmp_path, timeout=300,
                   IMAGINE_MODEL_CACHE_DIR=str(model_cache), IMAGINE_DIAGNOSTICS="false", IMAGINE_TORCH_THREADS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["result"]["image_prompt"] == {"images": 1, "style_images": 0, "iw": 2.0, "path": "img2img",
                                                "strength": 0.5}
    assert "Note: 1 image prompt started the denoising at strength 0.5 (--iw 2)." in done.stderr.splitlines()


@pytest.mark.parametrize(("prompt", "says"), [
    ("./missing.png a cat", "Invalid link: `./missing.png` cannot be read: there is no such file."),
    ("./page.png a cat", "Invalid image: `./page.png` is not an image;"),
    ("https://cdn.discordapp.com/a/b.png a cat", "Invalid link: `https://cdn.discordapp.com/a/b.png` is a link;"),
    ("a cat --sref ./page.png", "Invalid parameter: --sref needs an IP-Adapter"),
])
def test_run_refuses_image_prompts_it_cannot_use_in_one_line(tmp_path: Path, prompt: str, says: str) -> None:
    (tmp_path / "page.png").write_text("<html>not an image</html>")
    assert refusal(imagine("run", prompt, "--out", "out", cwd=tmp_path)).startswith(says)
    assert not (tmp_path / "out").exists()
