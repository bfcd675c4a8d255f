"""Small things a first-time user meets (issue "the first hour, again"): each as the user sees it."""

from __future__ import annotations

import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from unimedvl import cli
from unimedvl.commands import preflight

ROOT = Path(__file__).resolve().parents[1]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_request_is_exported_and_a_path_string_in_it_is_flagged(tmp_path):
    import unimedvl
    from unimedvl.inference.inferencer import Request

    assert unimedvl.Request is Request and unimedvl.Result.__name__ == "Result"
    png = tmp_path / "cxr.png"
    Image.new("RGB", (8, 8)).save(png)
    with pytest.warns(UserWarning, match=r"is read as a text .* pass Path\("):
        Request([str(png), "What is this?"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Request([png, "What is in cxr.png?"])  # a Path is an image; a text mentioning a file name stays a text


@pytest.mark.parametrize("command", ["api", "serve"])
def test_a_busy_port_is_one_line_before_the_model_loads(command, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # The model path does not exist: the port is checked first, so this is the error seen.
        assert cli.main([command, "--model", str(tmp_path / "not-loaded"), "--port", str(port)]) == 2
    line = _one_line_error(capsys)
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port N" in line and "GRADIO" not in line


def test_a_missing_extra_names_the_pip_command(tmp_path, capsys, monkeypatch):
    real = preflight.importlib.util.find_spec
    monkeypatch.setattr(
        preflight.importlib.util, "find_spec", lambda name: None if name in ("gradio", "uvicorn") else real(name)
    )
    assert cli.main(["serve", "--model", str(tmp_path)]) == 2
    assert "pip install -e '.[app]'" in _one_line_error(capsys)
    assert cli.main(["api", "--model", str(tmp_path)]) == 2
    line = _one_line_error(capsys)
    assert "needs uvicorn" in line and "pip install -e '.[api]'" in line


def test_init_checkpoint_help_lists_every_size(capsys):
    with pytest.raises(SystemExit):
        cli.main(["init-checkpoint", "--help"])
    assert "debug | demo | small | bagel-7b-mot" in capsys.readouterr().out


def test_info_does_not_import_gradio_or_transformers():
    code = (
        "import sys; from unimedvl.cli import main; main(['info']); "
        "print(sorted(m for m in ('gradio', 'transformers', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"  # versions come from the package metadata
    assert "gradio" in out  # still listed with its version


def test_the_cpu_recipe_writes_only_ignored_folders():
    try:
        subprocess.run(["git", "-C", str(ROOT), "rev-parse"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    # README "Fine-tuning on a CPU" and configs/train/cpu_finetune.yaml write these into the clone.
    for path in ("data/medsynth/mix.yaml", "checkpoints/demo/model.safetensors", "results/cpu_finetune/x"):
        ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path])
        assert ignored.returncode == 0, f"{path} is not ignored by .gitignore"


def test_train_autoencoder_warns_when_the_warmup_outlasts_the_run(tmp_path, capsys, monkeypatch):
    from unimedvl.train import autoencoder

    report = {
        "heldout_psnr": 30.0,
        "heldout_psnr_initial": 10.0,
        "heldout_psnr_blur_baseline": 25.0,
        "shift_factor": 0.0,
        "scale_factor": 1.0,
    }
    monkeypatch.setattr(autoencoder, "train_autoencoder", lambda cfg, progress: SimpleNamespace(report=report))
    assert (
        cli.main(
            ["train-autoencoder", "--images", str(tmp_path), "--out", str(tmp_path / "ae.safetensors"), "--steps", "10"]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "warning: warmup_steps 20 >= steps 10" in err and "--warmup-steps 1" in err
    assert (
        cli.main(
            [
                "train-autoencoder",
                "--images",
                str(tmp_path),
                "--out",
                str(tmp_path / "ae.safetensors"),
                "--steps",
                "10",
                "--warmup-steps",
                "2",
            ]
        )
        == 0
    )
    assert "warning" not in capsys.readouterr().err
