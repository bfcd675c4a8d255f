"""QLoRA under FSDP2: two gloo processes train like one (the nf4 base sharded, the int8 base whole per rank)."""

import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import test_train_distributed as td  # noqa: E402
import train_support as ts  # noqa: E402

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def debug_ckpt(tmp_path_factory):
    return ts.debug_checkpoint(tmp_path_factory.mktemp("ckpt") / "debug")


@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_qlora_two_gloo_processes_match_one(tmp_path, debug_ckpt, method):
    config = td._run_config(
        tmp_path,
        debug_ckpt,
        quantize_base=method,
        lora_rank=4,
        lora_alpha=8.0,
        freeze_llm=True,
        freeze_vit=True,
        lr=1e-2,
    )
    one, two = tmp_path / "one", tmp_path / "two"
    td._check(
        subprocess.run(
            [
                td.PYTHON,
                "-m",
                "unimedvl.train",
                "--config",
                str(config),
                "--checkpoint_dir",
                str(one),
                "--gradient_accumulation_steps",
                "2",
            ],
            env=td._env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    torchrun = [td.PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*torchrun, "-m", "unimedvl.train", "--config", str(config), "--checkpoint_dir", str(two)],
        env=td._env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    td._check(proc)
    m1, m2 = td._metrics(one), td._metrics(two)
    assert [m["step"] for m in m1] == [m["step"] for m in m2] == [1, 2, 3]
    for a, b in zip(m1, m2):
        for key in ("loss", "ce", "mse", "grad_norm"):
            assert abs(a[key] - b[key]) < 1e-4 * max(1.0, abs(a[key])), (key, a, b)
    w1 = load_file(str(one / "step_0000003" / "adapter.safetensors"))
    w2 = load_file(str(two / "step_0000003" / "adapter.safetensors"))
    assert w1.keys() == w2.keys() and any(k.endswith(".lora_B") for k in w1)
    for key in w1:
        assert (w1[key] - w2[key]).abs().max() < 1e-4, key
