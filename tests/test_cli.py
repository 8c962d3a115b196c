"""`imagine parse` and `imagine schema` as a user runs them."""

from __future__ import annotations

import json

import pytest

from imagine.cli import main


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
