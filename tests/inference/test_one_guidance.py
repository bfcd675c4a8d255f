"""One checkpoint with its own presets samples the same way through every front end.

A debug checkpoint whose ``inference_config.json`` carries custom presets (steps, strength, guidance
scales, shift, and a fast variant) edits one image through ``edit`` (the CLI), the Python API,
``api`` (the HTTP server), ``serve`` (the web app, driven through gradio_client) and ``eval``; each
time the guidance the sampler starts with is recorded. The front ends that take a seed give the same
image; ``eval`` (which derives each sample's seed and prompt itself) samples with the same guidance.
"""

import base64
import dataclasses
import io
import json
import socket

import numpy as np
import pytest
from inference_support import SMALL, make_checkpoint, random_image
from PIL import Image

from unimedvl import cli
from unimedvl.checkpoint.inference_config import InferenceConfig, evaluated_presets
from unimedvl.errors import ConfigError
from unimedvl.guidance import TEXT_TO_IMAGE, GuidanceConfig, resolve_guidance, task_preset_names
from unimedvl.inference.api import UniMedVL
from unimedvl.inference.inferencer import Inferencer

INSTRUCTION = "Remove the noise from this image."
# What the checkpoint says: not the release's values anywhere a user would notice.
CUSTOM = dataclasses.replace(
    evaluated_presets(strength=0.5, num_timesteps=5)["editing"],
    cfg_text_scale=3.0,
    cfg_img_scale=1.5,
    timestep_shift=2.0,
)
FAST = {
    "solver": "dpm++2m",
    "num_timesteps": 4,
    "cache": "taylorseer",
    "cache_interval": 2,
    "cache_order": 2,
    "strength": 0.5,
}


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    """(checkpoint dir, input image path): presets and image sizes in the checkpoint, so no front end needs a flag."""
    path = make_checkpoint(tmp_path_factory.mktemp("custom") / "ckpt")
    config = InferenceConfig.load(path).with_sizes(**SMALL)
    presets = {
        "editing": CUSTOM,
        "restoration": CUSTOM,
        "text_to_image": dataclasses.replace(TEXT_TO_IMAGE, num_timesteps=5),
    }
    config = dataclasses.replace(config, guidance=presets)
    config.save(path)
    obj = json.loads((path / "inference_config.json").read_text())
    obj["guidance"]["editing_fast"] = FAST
    (path / "inference_config.json").write_text(json.dumps(obj))
    image = path.parent / "scan.png"
    random_image(48, 64, 3).save(image)
    return path, image


@pytest.fixture
def sampled(monkeypatch):
    """(task, guidance, strength) of every image the sampler starts, in order."""
    calls = []
    original = Inferencer.initial_latents

    def recording(self, job, grid, device):
        calls.append((job.request.task, job.guidance, job.strength))
        return original(self, job, grid, device)

    monkeypatch.setattr(Inferencer, "initial_latents", recording)
    return calls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pixels(path_or_image) -> np.ndarray:
    with Image.open(path_or_image) if not isinstance(path_or_image, Image.Image) else path_or_image as image:
        return np.asarray(image.convert("RGB"))


def _cli_edit(custom, tmp_path, capsys, *flags):
    ckpt, image = custom
    out = tmp_path / f"cli{len(flags)}.png"
    code = cli.main(
        [
            "edit",
            "--model",
            str(ckpt),
            "--image",
            str(image),
            "--instruction",
            INSTRUCTION,
            "--out",
            str(out),
            "--seed",
            "0",
            "--no-progress",
            *flags,
        ]
    )
    capsys.readouterr()
    assert code == 0
    return _pixels(out)


def _http_edit(model, image, **fields):
    from starlette.testclient import TestClient

    from unimedvl.api.server import create_app
    from unimedvl.api.settings import ServerSettings

    app = create_app(model.inferencer, ServerSettings(port=0))
    with TestClient(app) as client:
        presets = client.get("/v1/models").json()["data"][0]["unimedvl"]["presets"]
        response = client.post(
            "/v1/images/edits",
            files={"image": ("scan.png", image.read_bytes(), "image/png")},
            data={"prompt": INSTRUCTION, "seed": "0", **fields},
        )
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["data"][0]["b64_json"])
    return presets, _pixels(io.BytesIO(data))


def test_custom_presets_give_the_same_edit_through_every_front_end(custom, sampled, tmp_path, capsys):
    ckpt, image = custom
    cli_pixels = _cli_edit(custom, tmp_path, capsys)
    model = UniMedVL.from_pretrained(ckpt, device="cpu", dtype="fp32")
    api_pixels = _pixels(model.edit(image, INSTRUCTION, seed=0))
    presets, http_pixels = _http_edit(model, image)
    assert presets["edit"] == ["editing", "editing_fast"] and presets["generate"] == ["text_to_image"]

    pytest.importorskip("gradio")
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file

    from unimedvl.app.presets import AppSettings
    from unimedvl.app.ui import build_app, launch

    settings = AppSettings(port=_free_port(), examples=False)
    demo = build_app(model, settings)
    _, url, _ = launch(demo, settings, prevent_thread_lock=True)
    try:
        client = Client(url, verbose=False)
        _, app_png, _, info = client.predict(
            image=handle_file(str(image)), instruction=INSTRUCTION, seed=0, api_name="/edit"
        )
        app_pixels = _pixels(app_png)
        assert "5 timesteps" in info and "strength 0.5" in info and "cfg text 3, image 1.5" in info
        # The checkpoint's fast preset, picked by name in the app (the dropdown fills the Advanced panel with
        # panel_values, which an edit sends), the CLI, the Python API and the HTTP API.
        panel = demo.unimedvl_backend.panel_values("edit", "editing_fast")
        assert (panel["solver"], panel["num_timesteps"], panel["strength"]) == ("dpm++2m", 4, 0.5)
        _, fast_png, _, fast_info = client.predict(
            image=handle_file(str(image)),
            instruction=INSTRUCTION,
            seed=0,
            guidance_preset="editing_fast",
            **panel,
            api_name="/edit",
        )
        assert "dpm++2m solver" in fast_info and "taylorseer cache" in fast_info
    finally:
        demo.close()
    fast_cli = _cli_edit(custom, tmp_path, capsys, "--preset", "editing_fast")
    fast_api = _pixels(model.edit(image, INSTRUCTION, seed=0, preset="editing_fast"))
    _, fast_http = _http_edit(model, image, preset="editing_fast")

    # eval: a one-record restoration set; the checkpoint's restoration preset is its editing one here.
    data = tmp_path / "set.jsonl"
    record = {
        "main_task_type": "denoising",
        "sample_id": "s0",
        "input_img": [{"path": str(image), "height": 48, "width": 64}],
        "output_img": [{"path": str(image), "height": 48, "width": 64}],
        "message": [
            {"from": "human", "value": "<image>\n" + INSTRUCTION},
            {"from": "gpt", "value": "Denoised. <image>"},
        ],
    }
    data.write_text(json.dumps(record) + "\n")
    assert (
        cli.main(
            [
                "eval",
                "--model",
                str(ckpt),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "eval"),
                "--max-new-tokens",
                "2",
            ]
        )
        == 0
    )
    capsys.readouterr()

    edits = [(g, s) for task, g, s in sampled if task == "edit"]
    assert len(edits) == 9  # CLI, Python API, HTTP API, app, then the fast preset in app, CLI, API, HTTP; eval
    reference = edits[:4] + [edits[-1]]
    assert all(g == CUSTOM and s == 0.5 for g, s in reference), reference
    for pixels in (api_pixels, http_pixels, app_pixels):
        np.testing.assert_array_equal(pixels, cli_pixels)

    fast = InferenceConfig.load(ckpt).preset("edit_fast")
    assert (fast.cache_order, fast.num_timesteps, fast.cfg_img_scale) == (2, 4, 2.0)  # the release's editing values
    assert all(g == fast and s == 0.5 for g, s in edits[4:8]), edits[4:8]
    for pixels in (fast_api, fast_http, _pixels(fast_png)):
        np.testing.assert_array_equal(pixels, fast_cli)
    assert not np.array_equal(fast_cli, cli_pixels)


def test_the_merge_takes_the_named_preset_and_refuses_unknown_settings():
    presets = {"editing": CUSTOM, "editing_fast": dataclasses.replace(CUSTOM, solver="heun")}
    assert resolve_guidance("edit", presets) == CUSTOM
    assert resolve_guidance("edit", presets, {"num_timesteps": 9, "cfg_text_scale": None}).num_timesteps == 9
    assert resolve_guidance("edit", presets, preset="editing_fast").solver == "heun"
    assert resolve_guidance("edit", presets, preset="edit_fast") == presets["editing_fast"]
    assert resolve_guidance("generate", presets) == TEXT_TO_IMAGE  # missing from the table: the release's
    assert resolve_guidance("edit", None, {"cfg_interval": [0.1, 0.9]}).cfg_interval == (0.1, 0.9)
    assert task_preset_names("edit", presets) == ["editing", "editing_fast"] and task_preset_names("edit") == [
        "editing"
    ]
    with pytest.raises(ConfigError, match="unknown guidance setting.*cfg_scale"):
        resolve_guidance("edit", presets, {"cfg_scale": 3})
    with pytest.raises(ConfigError, match="no fast preset 'text_to_image_fast'"):
        resolve_guidance("generate", presets, preset="text_to_image_fast")
    with pytest.raises(ConfigError, match="no guidance preset 'fastest'"):
        resolve_guidance("edit", presets, preset="fastest")


def test_the_http_fields_are_the_guidance_fields():
    from unimedvl.api.schemas import ImageRequest

    names = [f.name for f in dataclasses.fields(GuidanceConfig)]
    assert all(name in ImageRequest.model_fields for name in names)
    body = ImageRequest.model_validate(
        {"prompt": "x", "cfg_interval": "0.2,1", "strength": "0.5", "cache_order": "2", "preset": "editing_fast"}
    )
    assert body.guidance_overrides() == {"cfg_interval": (0.2, 1.0), "strength": 0.5, "cache_order": 2}
    assert body.preset == "editing_fast"


def test_a_misspelt_preset_is_refused_before_the_model_loads(tmp_path, capsys):
    for command, extra in (("edit", ["--image", "a.png", "--instruction", "x"]), ("generate", ["--prompt", "x"])):
        code = cli.main(
            [command, "--model", str(tmp_path / "nowhere"), *extra, "--out", "o.png", "--preset", "fastest"]
        )
        assert code == 2 and "no guidance preset 'fastest'" in capsys.readouterr().err
