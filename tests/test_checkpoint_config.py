"""Self-describing checkpoints: inference_config.json, the model card, and commands that need no size flags."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unimedvl import cli
from unimedvl.checkpoint.create import init_checkpoint
from unimedvl.checkpoint.inference_config import INFERENCE_CONFIG_FILE, InferenceConfig, for_model
from unimedvl.config import ModelConfig, from_dict
from unimedvl.errors import ConfigError
from unimedvl.imaging.transforms import ImageTransform, to_pil
from unimedvl.medsynth.generator import generate_medsynth
from unimedvl.train.config import TrainConfig
from unimedvl.train.trainer import Trainer

STEPS = "3"  # denoising steps in these tests


@pytest.fixture(scope="module")
def trained_64px(tmp_path_factory):
    """A debug model trained 2 steps on a 64 px MedSynth mix: its checkpoint must say "feed me 64 px"."""
    root = tmp_path_factory.mktemp("ckpt64")
    synth = generate_medsynth(root / "synth", 8, 4, seed=0, image_size=64)
    base = init_checkpoint("debug", root / "base", seed=0)
    cfg = TrainConfig(
        dataset_config_file=synth["mix"],
        dataset_info_file=synth["dataset_info"],
        model_path=str(base),
        checkpoint_dir=str(root / "run"),
        total_steps=2,
        save_every=1000,
        warmup_steps=0,
        lr=1e-3,
        attn_backend="sdpa",
        ema=0.0,
        gradient_checkpointing=False,
        progress_bar=False,
        tensorboard=False,
        expected_num_tokens=256,
        max_num_tokens=512,
        max_num_tokens_per_sample=512,
    )
    Trainer(cfg).train()
    return root / "run" / "step_0000002", synth


class _Sizes:
    """Records the output size of every ImageTransform.resize call (what the model was actually fed)."""

    def __init__(self, monkeypatch):
        self.seen: list[tuple[int, int, int]] = []  # (stride, width, height)
        original = ImageTransform.resize

        def resize(transform, image):
            out = original(transform, image)
            self.seen.append((transform.image_stride, *out.size))
            return out

        monkeypatch.setattr(ImageTransform, "resize", resize)

    def vae(self):
        return {(w, h) for s, w, h in self.seen if s == 16}

    def vit(self):
        return {(w, h) for s, w, h in self.seen if s == 14}


def _image(path: Path, side: int = 200) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def test_the_trainer_writes_the_training_sizes_and_a_model_card(trained_64px):
    step_dir, _ = trained_64px
    config = InferenceConfig.load(step_dir)
    assert config.source == str(step_dir / INFERENCE_CONFIG_FILE)
    assert (config.vae_transform.min_image_size, config.vae_transform.max_image_size) == (64, 64)
    assert config.vit_transform.max_image_size == 70 and config.vit_transform.image_stride == 14
    card = (step_dir / "README.md").read_text()
    assert "Not for clinical use" in card and "after 2 training steps" in card and "mix.yaml" in card
    assert "long edge <= 64 px" in card and "| restoration | 4 | 2 |" in card
    assert f"\n# {step_dir.name}\n" in card and ".tmp-" not in card  # titled by the final folder's name


def test_ask_edit_eval_and_serve_feed_64px_without_size_flags(trained_64px, tmp_path, monkeypatch, capsys):
    step_dir, synth = trained_64px
    png = _image(tmp_path / "scan.png")
    sizes = _Sizes(monkeypatch)
    assert (
        cli.main(
            [
                "ask",
                "--model",
                str(step_dir),
                "--image",
                str(png),
                "--question",
                "What is this?",
                "--max-new-tokens",
                "2",
            ]
        )
        == 0
    )
    assert sizes.vae() == {(64, 64)} and max(max(s) for s in sizes.vit()) <= 70
    sizes.seen.clear()
    assert (
        cli.main(
            [
                "edit",
                "--model",
                str(step_dir),
                "--image",
                str(png),
                "--instruction",
                "Denoise.",
                "--out",
                str(tmp_path / "out.png"),
                "--num-timesteps",
                STEPS,
                "--no-progress",
            ]
        )
        == 0
    )
    assert sizes.vae() == {(64, 64)} and Image.open(tmp_path / "out.png").size == (64, 64)
    # An explicit flag overrides the checkpoint's value.
    sizes.seen.clear()
    assert (
        cli.main(
            [
                "edit",
                "--model",
                str(step_dir),
                "--image",
                str(png),
                "--instruction",
                "Denoise.",
                "--out",
                str(tmp_path / "out2.png"),
                "--num-timesteps",
                STEPS,
                "--no-progress",
                "--vae-min-size",
                "32",
                "--vae-max-size",
                "32",
            ]
        )
        == 0
    )
    assert sizes.vae() == {(32, 32)}
    # eval: no size flags; run_info records the checkpoint's sizes.
    sizes.seen.clear()
    out = tmp_path / "eval"
    assert (
        cli.main(
            [
                "eval",
                "--model",
                str(step_dir),
                "--data",
                synth["jsonl"]["test"],
                "--out",
                str(out),
                "--num-timesteps",
                STEPS,
                "--max-new-tokens",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    settings = json.loads((out / step_dir.name / "test" / "run_info.json").read_text())["settings"]
    assert (settings["vae_min_size"], settings["vae_max_size"], settings["vit_max_size"]) == (64, 64, 70)
    assert sizes.vae() == {(64, 64)}
    # serve: the app loads through the same options; the Generate tab defaults to the model's own size.
    from unimedvl.commands.inference import load_model
    from unimedvl.commands.serve import register as register_serve

    args = _parse(register_serve, ["serve", "--model", str(step_dir)])
    model = load_model(args)
    assert model.inferencer.vae_transform.max_image_size == 64 and model.inferencer.default_size == 64
    capsys.readouterr()


def _parse(register, argv):
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_old_spellings_still_work_and_warn(trained_64px, tmp_path, monkeypatch, capsys):
    step_dir, _ = trained_64px
    png = _image(tmp_path / "scan.png")
    sizes = _Sizes(monkeypatch)
    capsys.readouterr()
    assert (
        cli.main(
            [
                "ask",
                "--model",
                str(step_dir),
                "--image",
                str(png),
                "--question",
                "What is this?",
                "--max-new-tokens",
                "2",
                "--min-image-size",
                "48",
                "--max-image-size",
                "48",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "warning: --min-image-size is deprecated; use --vae-min-size" in err
    assert sizes.vae() == {(48, 48)}
    from unimedvl.inference.api import UniMedVL

    with pytest.warns(FutureWarning, match=r"min_image_size=\.\.\.\) is deprecated; use vae_min_size"):
        model = UniMedVL.from_pretrained(step_dir, min_image_size=32, max_image_size=32)
    assert model.inferencer.vae_transform.max_image_size == 32


def test_a_release_directory_without_the_file_gets_the_release_defaults(tmp_path):
    config = InferenceConfig.load(tmp_path)
    assert (config.vae_transform.min_image_size, config.vae_transform.max_image_size) == (512, 1024)
    # The reference's inference entry points cap both transforms at 14*14*9*1024 pixels (their class default).
    assert (config.vit_transform.min_image_size, config.vit_transform.max_pixels) == (378, 1_806_336)
    assert config.vae_transform.max_pixels == 1_806_336
    assert config.preset("edit").timestep_shift == 3.0 and config.preset("eval").timestep_shift == 1.0
    assert config.preset("generate").cfg_interval == (0.4, 1.0) and "release defaults" in config.source


def test_very_elongated_images_get_the_release_sizes_and_a_checkpoint_keeps_its_own_caps(tmp_path):
    # 21 x 882 at VAE min 512: the release feeds 16 x 1024 (the pixel cap decides), no cap would give 32 x 1024.
    release = InferenceConfig.load(tmp_path)
    assert release.vae_transform.target_size(21, 882) == (16, 1024)
    assert release.vit_transform.target_size(16, 758) == (14, 980)  # 28 x 980 under the mixes' 2,007,040
    path = tmp_path / INFERENCE_CONFIG_FILE
    release.save(tmp_path)
    assert json.loads(path.read_text())["vae_transform"]["max_pixels"] == 1_806_336  # recorded in the file
    own = {"image_stride": 16, "max_image_size": 1024, "min_image_size": 512}
    path.write_text(
        json.dumps(
            {
                "vae_transform": {**own, "max_pixels": None},
                "vit_transform": {
                    "image_stride": 14,
                    "max_image_size": 980,
                    "min_image_size": 378,
                    "max_pixels": 2_007_040,
                },
            }
        )
    )
    kept = InferenceConfig.load(tmp_path)
    assert kept.vae_transform.max_pixels is None and kept.vae_transform.target_size(21, 882) == (32, 1024)
    assert kept.vit_transform.max_pixels == 2_007_040
    path.write_text(json.dumps({"vae_transform": own}))  # no max_pixels key: the release's cap
    assert InferenceConfig.load(tmp_path).vae_transform.max_pixels == 1_806_336


def test_inference_config_round_trip_partial_files_and_errors(tmp_path):
    small = for_model(from_dict(ModelConfig, {"max_latent_size": 8}))
    assert small.vae_transform.max_image_size == 128  # fitted to the 8 x 16 px latent table
    small.save(tmp_path)
    assert InferenceConfig.load(tmp_path).to_json() == small.to_json()
    (tmp_path / INFERENCE_CONFIG_FILE).write_text(json.dumps({"guidance": {"editing": {"num_timesteps": 7}}}))
    partial = InferenceConfig.load(tmp_path)
    assert partial.preset("edit").num_timesteps == 7 and partial.preset("edit").cfg_img_scale == 2.0
    assert partial.vae_transform.max_image_size == 1024
    (tmp_path / INFERENCE_CONFIG_FILE).write_text(json.dumps({"vae_transfrom": {}}))
    with pytest.raises(ConfigError, match=r"vae_transfrom \(did you mean vae_transform\?\)"):
        InferenceConfig.load(tmp_path)
    (tmp_path / INFERENCE_CONFIG_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=r"inference_config.json:1: invalid JSON"):
        InferenceConfig.load(tmp_path)


def test_info_prints_sizes_parameters_and_step(trained_64px, capsys):
    step_dir, _ = trained_64px
    assert cli.main(["info", "--model", str(step_dir)]) == 0
    out = capsys.readouterr().out
    assert "trained:      step 2" in out and "VAE transform: stride 16, min 64, max 64" in out
    assert "parameters:" in out and "total" in out and "guidance restoration" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the defaults of a machine without a GPU")
def test_info_memory_of_a_checkpoint_assumes_this_host_and_its_image_size(trained_64px, capsys):
    step_dir, _ = trained_64px
    assert cli.main(["info", "--memory", "--model", str(step_dir)]) == 0
    out = capsys.readouterr().out
    assert "weights in fp32, on host RAM (CPU)" in out and "a 64 px image" in out  # not bf16, GPU, 512 px


def test_validate_data_accepts_a_checkpoint_directory(trained_64px, capsys):
    step_dir, synth = trained_64px
    assert cli.main(["validate-data", synth["jsonl"]["test"], "--model", str(step_dir)]) == 0
    assert cli.main(["validate-data", synth["jsonl"]["test"], "--model", "debug"]) == 0
    capsys.readouterr()


def test_ask_without_an_image_on_an_image_question_warns_once(trained_64px, capsys):
    step_dir, _ = trained_64px
    capsys.readouterr()
    assert (
        cli.main(
            ["ask", "--model", str(step_dir), "--question", "Is there a lesion in this scan?", "--max-new-tokens", "2"]
        )
        == 0
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [line for line in err if "no image was given" in line] == [err[-1]] and err[-1].startswith("warning: ")
    assert cli.main(["ask", "--model", str(step_dir), "--question", "What is a CT scan?", "--max-new-tokens", "2"]) == 0
    assert "no image was given" not in capsys.readouterr().err


def test_train_accepts_model_and_warns_about_settings_that_cannot_be_meant(tmp_path, caplog):
    from unimedvl.train.config import parse_train_args

    cfg = parse_train_args(["--model", "ckpt", "--dataset_config_file", "mix.yaml"])
    assert cfg.model_path == "ckpt"
    from unimedvl.train.trainer import _warn_about_settings

    with caplog.at_level(logging.WARNING, logger="unimedvl.train"):
        _warn_about_settings(TrainConfig(total_steps=10, warmup_steps=100), torch.device("cpu"))
    messages = [r.getMessage() for r in caplog.records]
    assert any("warmup_steps 100 >= total_steps 10" in m and "--warmup_steps 1" in m for m in messages)
    assert any("expected_num_tokens 32768 is a GPU budget" in m and "--expected_num_tokens 1024" in m for m in messages)


def test_decoded_images_are_quantised_like_the_release():
    x = torch.tensor([-1.0, -0.99, 0.0, 0.333, 0.999, 1.0, 1.5]).view(1, 1, -1).expand(3, 1, -1)
    released = ((x * 0.5 + 0.5).clamp(0, 1) * 255).to(torch.uint8)  # the reference's expression
    ours = np.asarray(to_pil(x, rounding="truncate")).transpose(2, 0, 1)
    assert np.array_equal(ours, released.numpy()) and ours[0, 0, 2] == 127  # truncated, not rounded to 128
    assert np.asarray(to_pil(x))[0, 2, 0] == 128  # inputs keep exact round trips


def test_the_python_api_warns_about_a_missing_image(trained_64px):
    from unimedvl.inference.api import UniMedVL

    model = UniMedVL.from_pretrained(trained_64px[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.ask(None, "Describe the image shown.", max_new_tokens=2)
    assert [str(w.message) for w in caught if "no image was given" in str(w.message)]
