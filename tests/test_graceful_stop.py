"""SIGTERM (issue 28, item 2): `train` finishes the step, saves a resumable checkpoint and exits 143
saying so; a second SIGTERM or a Ctrl-C ends at once; under torchrun the ranks agree.
`train-autoencoder`: resumable state, `--resume`, no silent overwrite of a finished ae.safetensors."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import train_support as ts  # noqa: E402
from unimedvl.errors import ConfigError  # noqa: E402
from unimedvl.train.stop_request import EXIT_STATUS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _env():
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


SECOND = """
import os, signal, sys, time
from unimedvl.train.stop_request import StopRequest
stop = StopRequest("the test").install()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.2)
print("requested", stop.requested, flush=True)
os.kill(os.getpid(), getattr(signal, sys.argv[1]))
time.sleep(10)
print("still running", flush=True)
"""


@pytest.mark.parametrize("second", ["SIGTERM", "SIGINT"])
def test_first_sigterm_asks_and_a_second_signal_ends_at_once(second):
    proc = subprocess.run([PYTHON, "-c", SECOND, second], env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.stdout.split("\n")[0] == "requested True" and "still running" not in proc.stdout
    assert proc.returncode == -getattr(signal, second)  # ended by the signal itself, at once
    assert "SIGTERM received" in proc.stderr and "Traceback" not in proc.stderr


AGREE = """
import os, signal
from unimedvl.distributed import start_distributed, stop_distributed
from unimedvl.train.stop_request import StopRequest
info = start_distributed("cpu")
stop = StopRequest("the test").install()
before = stop.should_stop(info)
if info.rank == 1:
    os.kill(os.getpid(), signal.SIGTERM)  # only rank 1 is told
os.write(1, f"rank {info.rank}: {before} {stop.should_stop(info)}\\n".encode())  # one write: ranks share the pipe
stop_distributed()
"""


@pytest.mark.distributed
def test_torchrun_ranks_agree_when_only_one_got_the_signal(tmp_path):
    script = tmp_path / "agree.py"
    script.write_text(AGREE)
    proc = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(re.findall(r"rank \d: \w+ \w+", proc.stdout)) == ["rank 0: False True", "rank 1: False True"]


# -- train: SIGTERM, save, resume --------------------------------------------------------------


@pytest.fixture(scope="module")
def debug_ckpt(tmp_path_factory):
    return ts.debug_checkpoint(tmp_path_factory.mktemp("ckpt") / "debug")


def _config(tmp_path, ckpt, steps):
    mix = ts.write_mix(tmp_path / "slow_mix.yaml", kinds=["und", "gen", "edit"], delay=0.3)
    values = dict(
        dataset_config_file=mix,
        model_path=str(ckpt),
        loader=ts.LOADER,
        total_steps=steps,
        save_every=1000,
        warmup_steps=0,
        lr=1e-3,
        attn_backend="sdpa",
        gradient_checkpointing=False,
        log_every=1,
        progress_bar=False,
        tensorboard=False,
        ema=0.9,
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_sigterm_saves_the_step_and_the_rerun_ends_with_the_uninterrupted_weights(tmp_path, debug_ckpt):
    steps = 5
    cmd = [PYTHON, "-m", "unimedvl.train", "--config", str(_config(tmp_path, debug_ckpt, steps)), "--checkpoint_dir"]
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    done = subprocess.run([*cmd, str(reference)], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(
        [*cmd, str(stopped)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while _steps_logged(stopped) < 2:
        assert proc.poll() is None and time.time() < deadline, "the run ended before step 2"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == EXIT_STATUS, err[-3000:]
    assert "Traceback" not in err
    k = _steps_logged(stopped)
    assert 2 <= k < steps, "stopped too late: the run had already finished"
    assert f"stopped by SIGTERM after step {k} of {steps}" in err and "--auto_resume True" in err
    assert (stopped / f"step_{k:07d}" / "checkpoint.json").is_file()  # complete, resumable

    resumed = subprocess.run(
        [*cmd, str(stopped), "--auto_resume", "True"], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {k}" in resumed.stderr
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(reference / f"step_{steps:07d}" / name))
        b = load_file(str(stopped / f"step_{steps:07d}" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name
    logged = [json.loads(line)["step"] for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1))


# -- train-autoencoder ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from unimedvl.medsynth.generator import generate_medsynth

    out = tmp_path_factory.mktemp("medsynth")
    generate_medsynth(out, n_train=8, n_test=0, seed=0, image_size=64, tasks=["vqa"])
    return out / "images"


def _ae_cli(images, out, *extra):
    from unimedvl.cli import main

    return main(
        [
            "train-autoencoder",
            "--images",
            str(images),
            "--out",
            str(out),
            "--steps",
            "6",
            "--batch-size",
            "2",
            "--image-size",
            "32",
            "--ch",
            "32",
            "--ch-mult",
            "1,1,1,1",
            "--log-every",
            "0",
            "--no-progress",
            "--save-every",
            "2",
            *extra,
        ]
    )


def test_autoencoder_sigterm_resume_and_no_silent_overwrite(images, tmp_path, capsys, monkeypatch):
    import unimedvl.train.autoencoder as ae

    reference, out = tmp_path / "ref" / "ae.safetensors", tmp_path / "run" / "ae.safetensors"
    assert _ae_cli(images, reference) == 0
    assert not (reference.parent / "ae.safetensors.train-state.pt").exists()  # finished: no state left

    losses, calls = ae._losses, []

    def terminated_at_step_3(*args):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would, in the middle of step 3
        return losses(*args)

    monkeypatch.setattr(ae, "_losses", terminated_at_step_3)
    capsys.readouterr()
    assert _ae_cli(images, out) == EXIT_STATUS
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after step 3 of 6" in err and "--resume" in err and not out.exists()
    monkeypatch.setattr(ae, "_losses", losses)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the run

    assert _ae_cli(images, out) == 2  # an interrupted run is neither resumed nor replaced silently
    assert "pass --resume" in capsys.readouterr().err
    assert _ae_cli(images, out, "--resume", "--seed", "1") == 2
    assert "other settings (seed)" in capsys.readouterr().err
    assert _ae_cli(images, out, "--resume") == 0
    a, b = load_file(str(reference)), load_file(str(out))
    assert all(torch.equal(a[key], b[key]) for key in a)  # bit for bit the uninterrupted run

    assert _ae_cli(images, out) == 2  # finished: refused without --overwrite
    assert "exists (a finished autoencoder); pass --overwrite" in capsys.readouterr().err
    assert _ae_cli(images, out, "--resume") == 2
    before = out.stat().st_mtime_ns
    assert _ae_cli(images, out, "--overwrite", "--steps", "2") == 0
    assert out.stat().st_mtime_ns != before


def test_autoencoder_state_from_another_program_is_refused_in_one_line(images, tmp_path):
    from unimedvl.train.autoencoder_config import AutoencoderTrainConfig
    from unimedvl.train.autoencoder_state import load_state, state_path

    cfg = AutoencoderTrainConfig(
        images=(str(images),), out=str(tmp_path / "ae.safetensors"), resume=True, image_size=32
    )
    state_path(cfg.out).write_bytes(b"not a torch file")
    with pytest.raises(Exception, match="not a readable train state") as err:
        load_state(state_path(cfg.out), cfg)
    assert not isinstance(err.value, ConfigError) or "\n" not in str(err.value)
