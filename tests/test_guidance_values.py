"""NaN, infinite and absurd guidance values (issue 28, item 6): refused where a GuidanceConfig is built,
with the field named; before, they gave a black image with status 200 or exit 0."""

import math

import pytest

from unimedvl.errors import ConfigError
from unimedvl.guidance import EDITING, GuidanceConfig, check_guidance_values

BAD = [math.nan, math.inf, -math.inf, 1e308]


@pytest.mark.parametrize("field", ["cfg_text_scale", "cfg_img_scale", "cfg_renorm_min", "timestep_shift"])
@pytest.mark.parametrize("value", BAD + [-1.0, "4"])
def test_each_numeric_field_refuses_non_finite_and_absurd_values(field, value):
    with pytest.raises(ConfigError, match=f"^{field}=") as err:
        GuidanceConfig(**{field: value})
    assert "must be a finite number in [" in str(err.value) and len(str(err.value)) < 200


@pytest.mark.parametrize("value", [0, 1, 10**9, 2.5, True, math.nan])
def test_num_timesteps_is_an_integer_in_range(value):
    with pytest.raises(ConfigError, match="^num_timesteps="):
        GuidanceConfig(num_timesteps=value)


@pytest.mark.parametrize("interval", [(math.nan, 1.0), (0.0, math.inf), (0.5, 0.4), (-1.0, 1.0), (0.0, 2.0), (0.1,)])
def test_cfg_interval_is_two_numbers_in_the_unit_interval(interval):
    with pytest.raises(ConfigError, match="^cfg_interval="):
        GuidanceConfig(cfg_interval=interval)


def test_the_presets_and_ordinary_values_pass_and_replace_checks_again():
    import dataclasses

    for good in (
        GuidanceConfig(),
        EDITING,
        GuidanceConfig(cfg_text_scale=7.5, timestep_shift=1.0, num_timesteps=2, cfg_interval=[0, 1], cfg_renorm_min=1),
    ):
        check_guidance_values(good)
    with pytest.raises(ConfigError, match="timestep_shift"):
        dataclasses.replace(EDITING, timestep_shift=math.nan)  # the API builds its config this way


def test_cli_refuses_nan_guidance_in_one_line_before_loading(tmp_path, capsys):
    from unimedvl.checkpoint.create import init_checkpoint
    from unimedvl.cli import main

    ckpt = init_checkpoint("debug", tmp_path / "debug", seed=0)
    status = main(
        [
            "generate",
            "--model",
            str(ckpt),
            "--prompt",
            "x-ray",
            "--out",
            str(tmp_path / "o.png"),
            "--cfg-text-scale",
            "nan",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("error: ") and "cfg_text_scale" in err and "\n" not in err
