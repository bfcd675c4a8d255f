"""`unimedvl eval`'s flags and the runner's EvalOptions describe the same run (the demo builds EvalOptions directly)."""

from dataclasses import fields
from pathlib import Path

from unimedvl.commands.eval import options_from_args, parse_args
from unimedvl.eval.runner.job import model_settings
from unimedvl.eval.runner.options import EvalOptions


def test_eval_options_defaults_are_the_flags_defaults(tmp_path):
    from_flags = options_from_args(parse_args(["--model", str(tmp_path), "--data", "t.jsonl", "--out", "o"]))
    direct = EvalOptions(models=[tmp_path], data="t.jsonl", out="o")
    for f in fields(EvalOptions):
        flag, default = getattr(from_flags, f.name), getattr(direct, f.name)
        if f.name == "sizes":  # every size flag, None when not given
            flag = {k: v for k, v in flag.items() if v is not None}
        assert flag == default, f.name


def test_flags_and_options_give_the_same_settings(tmp_path):
    argv = [
        "--model",
        str(tmp_path),
        "--data",
        "t.jsonl",
        "--out",
        "o",
        "--num-timesteps",
        "4",
        "--strength",
        "0.1",
        "--max-new-tokens",
        "8",
        "--vae-min-size",
        "64",
        "--vae-max-size",
        "64",
        "--seed",
        "3",
    ]
    from_flags = options_from_args(parse_args(argv))
    direct = EvalOptions(
        models=[Path(tmp_path)],
        data="t.jsonl",
        out="o",
        guidance={"num_timesteps": 4},
        strength=0.1,
        max_new_tokens=8,
        sizes={"vae_min_size": 64, "vae_max_size": 64},
        seed=3,
    )
    flags_settings = model_settings(from_flags, cuda=False, model_path=tmp_path)
    assert flags_settings == model_settings(direct, cuda=False, model_path=tmp_path)
    assert (flags_settings.guidance.num_timesteps, flags_settings.strength, flags_settings.vae_min_size) == (4, 0.1, 64)
    assert flags_settings.dtype == "fp32" and model_settings(direct, cuda=True, model_path=tmp_path).dtype == "bf16"
