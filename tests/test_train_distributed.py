"""Multi-process and crash tests: torchrun + gloo vs one process, and SIGKILL + auto_resume."""

import json
import os
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

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@pytest.fixture(scope="module")
def debug_ckpt(tmp_path_factory):
    return ts.debug_checkpoint(tmp_path_factory.mktemp("ckpt") / "debug")


def _env():
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def _run_config(tmp_path, ckpt, **overrides):
    values = dict(
        dataset_config_file=ts.write_mix(tmp_path / "mix.yaml", kinds=["und", "gen", "edit"]),
        model_path=str(ckpt),
        loader=ts.LOADER,
        total_steps=3,
        save_every=1000,
        warmup_steps=0,
        lr=1e-3,
        attn_backend="sdpa",
        gradient_checkpointing=True,
        log_every=1,
        progress_bar=False,
        tensorboard=False,
        ema=0.9,
        sharding_strategy="FULL_SHARD",
    )
    values.update(overrides)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _check(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]


def _one_vs_two(tmp_path, ckpt, strategy):
    config = _run_config(tmp_path, ckpt, sharding_strategy=strategy)
    one, two = tmp_path / "one", tmp_path / "two"
    _check(
        subprocess.run(
            [
                PYTHON,
                "-m",
                "unimedvl.train",
                "--config",
                str(config),
                "--checkpoint_dir",
                str(one),
                "--gradient_accumulation_steps",
                "2",
            ],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    torchrun = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    _check(
        subprocess.run(
            [*torchrun, "-m", "unimedvl.train", "--config", str(config), "--checkpoint_dir", str(two)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    m1, m2 = _metrics(one), _metrics(two)
    assert [m["step"] for m in m1] == [m["step"] for m in m2] == [1, 2, 3]
    for a, b in zip(m1, m2):
        for key in ("loss", "ce", "mse", "grad_norm", "ce_tokens", "mse_tokens"):
            assert abs(a[key] - b[key]) < 1e-4, (key, a, b)
    for name in ("model.safetensors", "ema.safetensors"):
        w1, w2 = load_file(str(one / "step_0000003" / name)), load_file(str(two / "step_0000003" / name))
        for key in w1:
            if key.startswith("vit_model.") and key.endswith("k_proj.bias"):
                # Softmax ignores a shift shared by all keys, so without RoPE this gradient is 0 up to
                # rounding noise, which Adam (eps 1e-15) turns into full-size steps.
                continue
            torch.testing.assert_close(w1[key], w2[key], rtol=0, atol=1e-5)


def test_two_gloo_processes_match_one_process(tmp_path, debug_ckpt):
    _one_vs_two(tmp_path, debug_ckpt, "FULL_SHARD")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["HYBRID_SHARD", "SHARD_GRAD_OP", "NO_SHARD"])
def test_other_strategies_match_one_process(tmp_path, debug_ckpt, strategy):
    _one_vs_two(tmp_path, debug_ckpt, strategy)


def test_sigkill_then_auto_resume_ends_with_the_same_weights(tmp_path, debug_ckpt):
    mix = ts.write_mix(tmp_path / "slow_mix.yaml", kinds=["und", "gen", "edit"], delay=0.25)
    config = _run_config(
        tmp_path,
        debug_ckpt,
        dataset_config_file=mix,
        total_steps=6,
        save_every=2,
        keep_last=0,
        gradient_checkpointing=False,
    )
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    cmd = [PYTHON, "-m", "unimedvl.train", "--config", str(config), "--checkpoint_dir"]
    _check(subprocess.run([*cmd, str(reference)], env=_env(), capture_output=True, text=True, timeout=300))

    proc = subprocess.Popen([*cmd, str(crashed)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (crashed / "step_0000002" / "checkpoint.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (crashed / "step_0000006").exists(), "killed too late: the run had already finished"

    resumed = subprocess.run(
        [*cmd, str(crashed), "--auto_resume", "True"], env=_env(), capture_output=True, text=True, timeout=300
    )
    _check(resumed)
    assert "resumed from" in resumed.stderr
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(reference / "step_0000006" / name)), load_file(str(crashed / "step_0000006" / name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    last = {m["step"]: m["loss"] for m in _metrics(crashed)}
    assert last[6] == {m["step"]: m["loss"] for m in _metrics(reference)}[6]
