"""Model specs (torch-free): the built-in families and a [models.NAME] table that gives only a
local directory's ``source``, its family read from the directory's JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagine.model_specs import BUILTIN_SPECS, FAMILIES, FAMILY_DEFAULT, ModelSpec, load_model_specs, model_names
from imagine.params import ignored_notes
from imagine.prompt import parse
from imagine.request import Params


def diffusers_dir(root: Path, class_name: str, **configs: dict[str, object]) -> Path:
    """A directory with the JSON files of a diffusers layout (no weights): model_index.json
    naming ``class_name`` and ``<component>/config.json`` for each of ``configs``."""
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    for component, config in configs.items():
        (root / component).mkdir()
        (root / component / "config.json").write_text(json.dumps(config))
    return root


def specs_of(tmp_path: Path, toml: str) -> dict[str, ModelSpec]:
    config = tmp_path / "models.toml"
    config.write_text(toml)
    return load_model_specs(config)


def test_every_family_has_a_builtin_to_start_from() -> None:
    assert set(FAMILY_DEFAULT) == set(FAMILIES)
    assert all(BUILTIN_SPECS[name].family == family for family, name in FAMILY_DEFAULT.items())
    assert {"sdxl", "sdxl-turbo", "flux-schnell", "flux-dev", "sd3.5-medium", "sd3.5-large"} <= set(BUILTIN_SPECS)


def test_guidance_kinds_of_the_builtins() -> None:
    kinds = {name: spec.guidance_kind for name, spec in BUILTIN_SPECS.items()}
    assert kinds["sdxl"] == kinds["sd3.5-large"] == "cfg"
    assert kinds["sdxl-turbo"] == kinds["flux-schnell"] == "none"
    assert kinds["flux-dev"] == "distilled" and BUILTIN_SPECS["flux-dev"].guidance_scale > 1
    assert BUILTIN_SPECS["flux-dev"].gated and not BUILTIN_SPECS["flux-schnell"].gated
    assert BUILTIN_SPECS["sd3.5-medium"].gated and not BUILTIN_SPECS["sdxl"].gated
    assert all(spec.licence for spec in BUILTIN_SPECS.values() if spec.gated)  # what to accept is named
    with pytest.raises(ValueError, match="licence"):
        ModelSpec.model_validate({**BUILTIN_SPECS["sdxl"].model_dump(), "gated": True})


def test_distilled_guidance_is_not_cfg() -> None:
    with pytest.raises(ValueError, match="distilled"):
        BUILTIN_SPECS["flux-dev"].model_validate({**BUILTIN_SPECS["flux-dev"].model_dump(), "supports_cfg": True})
    with pytest.raises(ValueError, match="distilled"):
        BUILTIN_SPECS["flux-dev"].model_validate({**BUILTIN_SPECS["flux-dev"].model_dump(), "guidance_scale": 0})


def test_stylize_acts_on_distilled_guidance_and_is_noted_without_any() -> None:
    params = Params(stylize=500)
    assert ignored_notes(params, BUILTIN_SPECS["flux-dev"]) == []
    assert ignored_notes(params, BUILTIN_SPECS["sdxl"]) == []
    assert ignored_notes(params, BUILTIN_SPECS["flux-schnell"]) == [
        "--stylize 500 was ignored: flux-schnell runs without guidance."]


def test_tile_is_noted_as_ignored_on_families_without_a_unet() -> None:
    params = Params(tile=True)
    assert ignored_notes(params, BUILTIN_SPECS["sdxl"]) == []
    assert ignored_notes(params, BUILTIN_SPECS["flux-schnell"]) == [
        "--tile was ignored: flux-schnell does not use it yet."]


def test_the_bot_accepts_v_naming_an_sdxl_model() -> None:
    [request] = parse("a red fox --v SDXL", models=model_names(None))
    assert request.params.model == "sdxl"


def test_a_local_sdxl_directory_needs_only_its_source(tmp_path: Path) -> None:
    base = diffusers_dir(tmp_path / "sdxl", "StableDiffusionXLPipeline",
                         unet={"sample_size": 128}, vae={"block_out_channels": [128, 256, 512, 512]})
    turbo = diffusers_dir(tmp_path / "turbo", "StableDiffusionXLPipeline",
                          unet={"sample_size": 64}, vae={"block_out_channels": [128, 256, 512, 512]})
    specs = specs_of(tmp_path, f'[models.mine]\nsource = "{base}"\n\n[models.fast]\nsource = "{turbo}"\n'
                                'based_on = "sdxl-turbo"\n')
    mine, fast = specs["mine"], specs["fast"]
    assert (mine.name, mine.family, mine.source, mine.base_size) == ("mine", "sdxl", str(base), 1024)
    assert (mine.default_steps, mine.guidance_scale) == (BUILTIN_SPECS["sdxl"].default_steps, 5.0)
    assert (fast.family, fast.guidance_kind, fast.max_steps) == ("sdxl", "none", BUILTIN_SPECS["sdxl-turbo"].max_steps)


def test_the_base_size_comes_from_the_unet_unless_given(tmp_path: Path) -> None:
    sd = diffusers_dir(tmp_path / "sd2", "StableDiffusionPipeline",
                       unet={"sample_size": 96}, vae={"block_out_channels": [128, 256, 512, 512]})
    specs = specs_of(tmp_path, f'[models.a]\nsource = "{sd}"\n\n[models.b]\nsource = "{sd}"\nbase_size = 512\n')
    assert (specs["a"].family, specs["a"].base_size, specs["b"].base_size) == ("sd15", 768, 512)


def test_a_flux_directory_with_a_guidance_embedding_is_dev(tmp_path: Path) -> None:
    dev = diffusers_dir(tmp_path / "dev", "FluxPipeline", transformer={"guidance_embeds": True})
    schnell = diffusers_dir(tmp_path / "schnell", "FluxPipeline", transformer={"guidance_embeds": False})
    sd3 = diffusers_dir(tmp_path / "sd3", "StableDiffusion3Pipeline")
    specs = specs_of(tmp_path, f'[models.d]\nsource = "{dev}"\n[models.s]\nsource = "{schnell}"\n'
                               f'[models.t]\nsource = "{sd3}"\n')
    assert (specs["d"].family, specs["d"].guidance_kind, specs["d"].gated) == ("flux", "distilled", False)  # on disk
    assert (specs["s"].family, specs["s"].guidance_kind, specs["s"].default_steps) == ("flux", "none", 4)
    assert specs["t"].family == "sd3" and specs["t"].guidance_kind == "cfg"


def test_a_table_whose_family_cannot_be_read_is_refused_with_the_families(tmp_path: Path) -> None:
    families = ", ".join(FAMILIES)
    with pytest.raises(ValueError, match=f"not a local directory.*add family = one of {families}"):
        specs_of(tmp_path, '[models.mystery]\nsource = "someone/some-model"\n')
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no model_index.json"):
        specs_of(tmp_path, f'[models.mystery]\nsource = "{tmp_path / "empty"}"\n')
    other = diffusers_dir(tmp_path / "kandinsky", "KandinskyV22Pipeline")
    with pytest.raises(ValueError, match="'KandinskyV22Pipeline', which is not served"):
        specs_of(tmp_path, f'[models.mystery]\nsource = "{other}"\n')
    with pytest.raises(ValueError, match="not a built-in model"):
        specs_of(tmp_path, '[models.mystery]\nsource = "x/y"\nbased_on = "sdxl-lightning"\n')
    with pytest.raises(ValueError, match="family 'sdxxl' is not one of"):
        specs_of(tmp_path, '[models.mystery]\nsource = "x/y"\nfamily = "sdxxl"\n')


def test_a_hub_id_with_a_family_starts_from_that_familys_builtin(tmp_path: Path) -> None:
    spec = specs_of(tmp_path, '[models.juggernaut]\nsource = "RunDiffusion/Juggernaut-XL-v9"\nfamily = "sdxl"\n')
    juggernaut = spec["juggernaut"]
    assert (juggernaut.family, juggernaut.base_size, juggernaut.size_multiple) == ("sdxl", 1024, 16)
    assert juggernaut.description == "Based on sdxl."
