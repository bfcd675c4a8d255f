"""A full disk (injected ENOSPC), restarts and failed samples: one line, nothing lost, nothing repeated.

The same cases on a real, small filesystem (tmpfs) and with real SIGKILLs are the drills of
tests/test_drills.py (``make drill``).
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import drill_support as ds  # noqa: E402
import train_support as ts  # noqa: E402
from unimedvl import fileio  # noqa: E402
from unimedvl.cli import main as cli_main  # noqa: E402
from unimedvl.commands import eval as eval_command  # noqa: E402
from unimedvl.errors import CheckpointError, DiskFullError  # noqa: E402
from unimedvl.eval.runner import job as eval_job  # noqa: E402
from unimedvl.eval.runner.result_files import ResultWriter  # noqa: E402
from unimedvl.fileio import is_disk_full  # noqa: E402
from unimedvl.train import trainer as trainer_module  # noqa: E402
from unimedvl.train.config import TrainConfig  # noqa: E402
from unimedvl.train.metrics_log import RunLogger  # noqa: E402
from unimedvl.train.trainer import Trainer  # noqa: E402

ENOSPC = OSError(errno.ENOSPC, "No space left on device")
FAST = [
    "--vae-min-size",
    "64",
    "--vae-max-size",
    "64",
    "--vit-min-size",
    "56",
    "--vit-max-size",
    "70",
    "--num-timesteps",
    "3",
    "--max-new-tokens",
    "8",
    "--device",
    "cpu",
    "--no-progress",
]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def debug_ckpt(tmp_path_factory):
    return ts.debug_checkpoint(tmp_path_factory.mktemp("ckpt") / "debug")


def _cfg(tmp_path, ckpt, **overrides):
    values = dict(
        dataset_config_file=ts.write_mix(tmp_path / "mix.yaml", kinds=["und", "gen"]),
        model_path=str(ckpt),
        checkpoint_dir=str(tmp_path / "run"),
        total_steps=2,
        save_every=1,
        warmup_steps=0,
        lr=1e-3,
        attn_backend="sdpa",
        gradient_checkpointing=False,
        progress_bar=False,
        tensorboard=False,
        log_every=1,
        ema=0.9,
        keep_last=0,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------- recognition


def test_a_full_disk_is_recognised_in_the_forms_libraries_raise(tmp_path, monkeypatch):
    from torch.distributed.checkpoint.api import CheckpointException

    assert is_disk_full(ENOSPC) and is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"))
    short_write = CheckpointException("write", {0: (RuntimeError("unexpected pos 704 vs 598"), [])})
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 4096)
    assert is_disk_full(short_write, tmp_path)
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 10 * 2**30)  # plenty of space: some other fault
    assert not is_disk_full(short_write, tmp_path)
    assert not is_disk_full(RuntimeError("shape mismatch")) and not is_disk_full(OSError(errno.EACCES, "denied"))


# --------------------------------------------------------------------------------------------- training


def test_a_full_disk_while_saving_is_one_line_and_the_rerun_continues(tmp_path, debug_ckpt, monkeypatch):
    real_save = trainer_module.save_model
    calls = []

    def save_then_fill(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # step 2's save finds the disk full half way through
            (Path(args[1]) / "model.safetensors").write_bytes(b"partial")
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_model", save_then_fill)
    cfg = _cfg(tmp_path, debug_ckpt, total_steps=3)
    with pytest.raises(DiskFullError) as err:
        Trainer(cfg, loader_factory=ts.build_loader).train()
    run = Path(cfg.checkpoint_dir)
    assert str(err.value) == (
        f"disk full while saving step 2 in {run}; step 1 is intact (step_0000001); free "
        "space and rerun with --auto_resume True"
    )
    assert not list(run.glob(".tmp-*")) and sorted(p.name for p in run.glob("step_*")) == ["step_0000001"]
    monkeypatch.setattr(trainer_module, "save_model", real_save)
    cfg.auto_resume = True
    Trainer(cfg, loader_factory=ts.build_loader).train()
    assert _steps(run) == [1, 2, 3]  # step 2 was logged before the failed save, then redone: once each


def test_a_full_disk_in_torch_distributed_checkpoint_and_the_cli_prints_one_line(
    tmp_path, debug_ckpt, monkeypatch, capsys
):
    from torch.distributed.checkpoint.api import CheckpointException

    def fails(path, *args):
        (path / "train_state").mkdir()
        raise CheckpointException(
            "write", {0: (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), [])}
        )

    monkeypatch.setattr(trainer_module.ckpt, "save_train_state", fails)
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 0)
    cfg = _cfg(tmp_path, debug_ckpt, total_steps=1)
    args = [
        "train",
        "--model_path",
        cfg.model_path,
        "--dataset_config_file",
        cfg.dataset_config_file,
        "--checkpoint_dir",
        cfg.checkpoint_dir,
        "--loader",
        ts.LOADER,
        "--total_steps",
        "1",
        "--warmup_steps",
        "0",
        "--gradient_checkpointing",
        "False",
        "--attn_backend",
        "sdpa",
        "--progress_bar",
        "False",
        "--tensorboard",
        "False",
        "--ema",
        "0",
    ]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last == (
        f"error: disk full while saving step 1 in {cfg.checkpoint_dir}; no earlier checkpoint exists, "
        "so the rerun starts from step 0; free space and rerun with --auto_resume True"
    )
    assert "Traceback" not in err and not list(Path(cfg.checkpoint_dir).glob(".tmp-*"))


def test_another_failure_while_saving_keeps_its_traceback(tmp_path, debug_ckpt, monkeypatch):
    monkeypatch.setattr(trainer_module, "save_model", lambda *a, **k: (_ for _ in ()).throw(KeyError("bug")))
    with pytest.raises(KeyError, match="bug"):
        Trainer(_cfg(tmp_path, debug_ckpt, total_steps=1), loader_factory=ts.build_loader).train()
    assert not list((tmp_path / "run").glob(".tmp-*"))


def test_partial_saves_are_removed_before_anything_is_written(tmp_path, debug_ckpt):
    run = tmp_path / "run"
    (run / ".tmp-step_0000004" / "train_state").mkdir(parents=True)
    (run / ".tmp-step_0000004" / "train_state" / "__0_0.distcp").write_bytes(b"\0" * 1000)
    (run / "rank_00000.json.tmp").write_text("{")
    trainer = Trainer(_cfg(tmp_path, debug_ckpt, tensorboard=True), loader_factory=ts.build_loader).setup()
    assert not list(run.glob(".tmp-*")) and not list(run.glob("*.tmp"))
    trainer.logger.close()


def test_a_restart_logs_each_step_once_in_metrics_csv_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = RunLogger(tmp_path, True, 6, 0, tensorboard=True, progress_bar=False)
    for step in range(1, 6):
        logger.step(step, {"loss": float(step)}, True)
        if step % 2 == 0:
            logger.validation(step, {"val_loss": float(step)})
    logger.close()
    with (tmp_path / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 6, "lo')  # a kill in the middle of a write
    logger = RunLogger(tmp_path, True, 6, 3, tensorboard=True, progress_bar=False)  # resumed at step 3
    for step in range(4, 7):
        logger.step(step, {"loss": 10.0 * step}, True)
        if step % 2 == 0:
            logger.validation(step, {"val_loss": 10.0 * step})
    logger.close()
    assert _steps(tmp_path) == [1, 2, 3, 4, 5, 6]
    rows = (tmp_path / "validation_metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6"]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [s.step for s in scalars] == [1, 2, 3, 4, 5, 6]
    assert [s.value for s in scalars][3:] == [40.0, 50.0, 60.0]


def test_a_loader_worker_dies_with_its_parent(tmp_path):
    """A child that asked for PR_SET_PDEATHSIG is killed when its parent is: it would otherwise sleep 60 s."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing, os, sys, time\n"
        "from unimedvl.data.loader import _die_with_parent\n"
        "def child():\n    _die_with_parent()\n    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    p = multiprocessing.get_context('fork').Process(target=child)\n    p.start()\n"
        "    print(p.pid, flush=True)\n    time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    child = int(parent.stdout.readline())
    time.sleep(0.5)  # the child has made its request
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the worker outlived its parent"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


# --------------------------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """Three understanding records: a fine one, a decompression bomb, a 10 MB question."""
    folder = tmp_path_factory.mktemp("bad_data")
    Image.new("RGB", (64, 64), (90, 90, 90)).save(folder / "ok.png")
    ds.png_bomb(folder / "bomb.png", 20000, 20000, rows=2)
    records = [
        {
            "main_task_type": "image_understanding",
            "sample_id": sid,
            "input_img": [{"path": image}],
            "message": [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": "CT"}],
        }
        for sid, image, question in (
            ("fine", "ok.png", "What modality is this?"),
            ("bomb", "bomb.png", "What modality is this?"),
            ("long", "ok.png", ds.huge_text(10)),
        )
    ]
    path = folder / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _eval(ckpt, data, out, *extra):
    return eval_command.run(
        eval_command.parse_args(["--model", str(ckpt), "--data", str(data), "--out", str(out), *FAST, *extra])
    )


def test_bad_samples_fail_alone_and_strict_says_so(debug_ckpt, bad_data, tmp_path, capsys):
    assert _eval(debug_ckpt, bad_data, tmp_path) == 0
    lines = {
        json.loads(line)["sample_id"]: json.loads(line)
        for line in (tmp_path / "debug" / "bad" / "results.jsonl").read_text().splitlines()
    }
    assert lines["fine"]["error"] is None
    assert "20000x20000" in lines["bomb"]["error"] and "--max-image-pixels" in lines["bomb"]["error"]
    assert "tokens, more than this model's context" in lines["long"]["error"]
    err = capsys.readouterr().err
    assert "Traceback" not in err and "1 ok, 2 failed" in err
    assert _eval(debug_ckpt, bad_data, tmp_path, "--strict") == 1  # resumed: nothing runs again
    assert "2 sample(s) failed" in capsys.readouterr().err
    # The report's terminal summary says so too, not only statistics.json.
    assert cli_main(["stats", str(tmp_path), "-o", str(tmp_path / "summary.csv")]) == 0
    assert "failed samples: debug/bad: 2 of 3 (image_understanding 2)" in capsys.readouterr().out


def test_a_failed_model_load_leaves_nothing_that_blocks_the_rerun(debug_ckpt, bad_data, tmp_path, monkeypatch):
    real = eval_job._load_model
    monkeypatch.setattr(eval_job, "_load_model", lambda *a: (_ for _ in ()).throw(CheckpointError("corrupt")))
    with pytest.raises(CheckpointError):
        _eval(debug_ckpt, bad_data, tmp_path)
    run_dir = tmp_path / "debug" / "bad"
    assert not (run_dir / "run_info.json").exists() and not (run_dir / "results.jsonl").exists()
    monkeypatch.setattr(eval_job, "_load_model", real)
    (run_dir / "statistics.json.tmp").write_text("{")  # left by a kill inside an atomic write
    assert _eval(debug_ckpt, bad_data, tmp_path) == 0
    assert (run_dir / "run_info.json").is_file() and not (run_dir / "statistics.json.tmp").exists()


def test_a_full_disk_while_writing_results_cuts_the_partial_line(tmp_path, monkeypatch):
    writer = ResultWriter(tmp_path / "results.jsonl")
    writer.write({"sample_id": "a"})
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(ENOSPC))
    with pytest.raises(
        DiskFullError,
        match=r"disk full while writing results in .*; 1 result line\(s\) of this "
        "process are saved and intact; free space and rerun",
    ):
        writer.write({"sample_id": "b", "answer": "x" * 5000})
    monkeypatch.setattr(os, "fsync", real_fsync)
    writer.close()
    assert (tmp_path / "results.jsonl").read_text() == '{"sample_id": "a"}\n'


def test_a_full_disk_during_eval_stops_with_one_line_and_the_rerun_completes(
    debug_ckpt, bad_data, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(ENOSPC))
    args = ["eval", "--model", str(debug_ckpt), "--data", str(bad_data), "--out", str(tmp_path), *FAST]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: disk full while writing")
    monkeypatch.undo()
    assert cli_main(args) == 0
    assert len((tmp_path / "debug" / "bad" / "results.jsonl").read_text().splitlines()) == 3
