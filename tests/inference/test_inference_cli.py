"""``unimedvl ask | edit | generate | chat`` run in-process against the debug checkpoint."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from inference_support import SMALL, STEPS, random_image
from PIL import Image

from unimedvl import cli
from unimedvl.inference.inferencer import Request

SIZES = [
    "--vae-min-size",
    str(SMALL["vae_min_size"]),
    "--vae-max-size",
    str(SMALL["vae_max_size"]),
    "--vit-min-size",
    str(SMALL["vit_min_size"]),
]


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ask_cli_api_and_batch_give_the_same_greedy_answer(api, checkpoint, tmp_path, capsys):
    png = tmp_path / "cxr.png"
    random_image(48, 40, 20).save(png)
    question = "What imaging modality is this?"
    expected = api.ask(png, question, max_new_tokens=6)
    code, out, _ = _main(
        capsys,
        "ask",
        "--model",
        checkpoint,
        "--image",
        png,
        "--question",
        question,
        "--max-new-tokens",
        6,
        "--json",
        *SIZES,
    )
    assert code == 0 and json.loads(out) == {"answer": expected, "thinking": None}
    mixed = api.run(
        [
            Request(["Generate a chest X-ray."], "generate", height=32, width=32, seed=0),
            Request([Path(png), question], max_new_tokens=6),
            Request([random_image(32, 32, 21), "Is there a lesion?"], max_new_tokens=3),
        ]
    )
    assert mixed[1].text == expected
    code, out, _ = _main(
        capsys, "ask", "--model", checkpoint, "--image", png, "--question", question, "--max-new-tokens", 6, *SIZES
    )
    assert code == 0 and out == expected + "\n"


def test_edit_cli_maps_every_guidance_flag(api, checkpoint, tmp_path, capsys):
    src, out_png = tmp_path / "ct.png", tmp_path / "out" / "clean.png"
    random_image(32, 48, 22).save(src)
    code, out, err = _main(
        capsys,
        "edit",
        "--model",
        checkpoint,
        "--image",
        src,
        "--instruction",
        "Remove the noise.",
        "--out",
        out_png,
        "--cfg-text-scale",
        3.0,
        "--cfg-img-scale",
        1.5,
        "--cfg-interval",
        0.1,
        1.0,
        "--cfg-renorm-type",
        "channel",
        "--cfg-renorm-min",
        0.2,
        "--timestep-shift",
        2.0,
        "--num-timesteps",
        STEPS,
        "--seed",
        5,
        "--json",
        *SIZES,
    )
    assert code == 0
    info = json.loads(out)
    assert info["out"] == str(out_png) and (info["width"], info["height"]) == (48, 32) and info["seed"] == 5
    assert "denoising" in err and f"{STEPS - 1}/{STEPS - 1}" in err  # the tqdm bar, on stderr
    expected = api.edit(
        src,
        "Remove the noise.",
        seed=5,
        cfg_text_scale=3.0,
        cfg_img_scale=1.5,
        cfg_interval=(0.1, 1.0),
        cfg_renorm_type="channel",
        cfg_renorm_min=0.2,
        timestep_shift=2.0,
        num_timesteps=STEPS,
    )
    np.testing.assert_array_equal(np.asarray(Image.open(out_png)), np.asarray(expected))


def test_generate_cli_size_and_think(checkpoint, tmp_path, capsys):
    out_png = tmp_path / "gen.png"
    code, out, _ = _main(
        capsys,
        "generate",
        "--model",
        checkpoint,
        "--prompt",
        "A chest X-ray.",
        "--out",
        out_png,
        "--height",
        32,
        "--width",
        48,
        "--num-timesteps",
        STEPS,
        "--think",
        "--max-new-tokens",
        4,
        "--no-progress",
        "--json",
        *SIZES,
    )
    assert code == 0
    info = json.loads(out)
    assert Image.open(out_png).size == (48, 32) and isinstance(info["thinking"], str)


def test_chat_reads_piped_stdin(api, checkpoint, tmp_path, capsys, monkeypatch):
    png = tmp_path / "mri.png"
    random_image(40, 40, 23).save(png)
    script = "\n".join(
        [
            f"/image {png}",
            "What is this?",
            "/think on",
            "Is it normal?",
            "/think maybe",
            "/image /no/such.png",
            "/think off",
            "/reset",
            "Is there a lesion in this scan?",
            "/quit",
            "never read",
        ]
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(script + "\n"))
    code, out, err = _main(capsys, "chat", "--model", checkpoint, "--max-new-tokens", 4, "--json", *SIZES)
    assert code == 0
    turns = [json.loads(line) for line in out.splitlines()]
    assert [t["question"] for t in turns] == ["What is this?", "Is it normal?", "Is there a lesion in this scan?"]
    assert turns[0]["answer"] == api.ask(png, "What is this?", max_new_tokens=4)
    assert turns[0]["thinking"] is None and isinstance(turns[1]["thinking"], str)
    with pytest.warns(UserWarning, match="images= in the API"):
        alone = api.ask(None, "Is there a lesion in this scan?", max_new_tokens=4)
    assert turns[2] == {
        "question": "Is there a lesion in this scan?",
        "thinking": None,  # after /reset: no image
        "answer": alone,
    }
    assert "error: /think takes on or off" in err and "error: /no/such.png: file not found" in err
    # The no-image warning tells a chat user the chat's command, not the API's argument.
    assert "attach one (/image PATH)" in err and "images=" not in err


def test_ask_think_labels_an_empty_reasoning_and_answer(checkpoint, tmp_path, capsys, monkeypatch):
    from unimedvl.commands import ask as ask_command
    from unimedvl.inference.api import Answer

    class Silent:  # a model that writes nothing (the demo model often closes its reasoning at once)
        def ask(self, *args, **kwargs):
            return Answer("", "")

    monkeypatch.setattr(ask_command, "load_model", lambda args: Silent())
    code, out, _ = _main(capsys, "ask", "--model", checkpoint, "--question", "What is this?", "--think")
    assert code == 0 and out.startswith("Thinking: (none: the model wrote no reasoning") and "\nAnswer: (empty" in out


def test_cli_user_errors_exit_2_with_one_line(checkpoint, tmp_path, capsys):
    code, out, err = _main(
        capsys, "ask", "--model", checkpoint, "--image", tmp_path / "missing.png", "--question", "What is this?", *SIZES
    )
    assert code == 2 and out == "" and err.strip().splitlines()[-1].startswith("error: ")
    assert "missing.png: file not found" in err
    code, _, err = _main(
        capsys, "generate", "--model", checkpoint, "--prompt", "x", "--out", tmp_path / "x.png", "--height", 40, *SIZES
    )
    assert code == 2 and "multiple of 16" in err
