"""The fault and bad-input drills (``make drill``): what an attacker and an unlucky user do to the commands.

Every drill runs the real commands in subprocesses, as a user would, and checks what the issue
asks: one clear line naming the file and what to do, no traceback, nothing lost, nothing repeated.

* bad inputs: a 389 KB PNG that declares 20000 x 20000 pixels and a 10 MB question, through
  validate-data, ask, eval and train; a 12000 x 12000 image through ask (allowed, decoded reduced);
* SIGKILL: training killed at 5 points (one inside a checkpoint save) and resumed each time ends
  with the weights of an uninterrupted run, bit for bit, each step logged once; evaluation
  killed at 5 points ends with the same results.jsonl and images;
* a full disk on a real filesystem (a tmpfs; needs root, skipped otherwise) while training and
  while evaluating: one line, the partial write removed, and after freeing space the rerun ends
  where an uninterrupted run does;
* round two (issue 28): two runs into one folder, SIGTERM under torchrun, a killed
  train-autoencoder, a YAML bomb, an absurd config, shards outside the checkpoint, NaN guidance, a
  DICOM without decoder, a symlink loop, convert on a full disk, an idle connection to the API.

docs/RELIABILITY.md lists the drills and their last results.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import drill_support as ds  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.drill]
ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
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
    "--batch-size",
    "1",
]  # a resumed run compared bit for bit: the same batching (not auto)
TIMING = ("inference_time", "understanding_time", "generation_time")


def _env():
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )


def _cli(*args, timeout=600):
    return subprocess.run(
        [PYTHON, "-m", "unimedvl.cli", *map(str, args)], env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _one_line_error(done, *needles):
    """The command failed with exit 2 and one ``error:`` line holding every needle, and no traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), done.stderr[-3000:]
    for needle in needles:
        assert needle in last, last
    return last


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from unimedvl.checkpoint.create import init_checkpoint

    return init_checkpoint("debug", tmp_path_factory.mktemp("ckpt") / "debug", seed=0)


@pytest.fixture(scope="module")
def medsynth(tmp_path_factory):
    from unimedvl.medsynth.generator import generate_medsynth

    out = tmp_path_factory.mktemp("medsynth")
    return generate_medsynth(out, n_train=16, n_test=12, image_size=64)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A folder with the real 389 KB bomb, a 12000 x 12000 image, a small image and a 10 MB question."""
    folder = tmp_path_factory.mktemp("hostile")
    bomb = ds.png_bomb(folder / "bomb.png", 20000, 20000)
    assert bomb.stat().st_size < 400_000
    ds.png_bomb(folder / "large.png", 12000, 12000)
    Image.new("RGB", (64, 64), (80, 80, 80)).save(folder / "ok.png")
    (folder / "question.txt").write_text(ds.huge_text(10))
    return folder


def _record(sample_id, image, question):
    return {
        "main_task_type": "image_understanding",
        "sample_id": sample_id,
        "input_img": [{"path": image}],
        "message": [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": "CT"}],
    }


# --------------------------------------------------------------------------------------------- bad inputs


def test_drill_bomb_and_huge_text_through_validate_ask_and_eval(ckpt, hostile, tmp_path):
    question = (hostile / "question.txt").read_text()
    data = hostile / "hostile.jsonl"
    data.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in (
                _record("fine", "ok.png", "What modality is this?"),
                _record("bomb", "bomb.png", "What modality is this?"),
                _record("long", "ok.png", question),
            )
        )
    )
    checked = _cli("validate-data", data, "--model", ckpt)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert "hostile.jsonl:2: input image 1 (bomb.png)" in checked.stdout and "20000x20000" in checked.stdout
    assert "hostile.jsonl:3: the record's text alone is at least" in checked.stdout

    _one_line_error(
        _cli("ask", "--model", ckpt, "--image", hostile / "bomb.png", "--question", "What?", *FAST[:6]),
        "bomb.png",
        "20000x20000",
        "--max-image-pixels",
    )
    # One command-line argument holds at most 128 KiB (Linux MAX_ARG_STRLEN): ask gets 120 KB, chat the 10 MB.
    _one_line_error(
        _cli("ask", "--model", ckpt, "--image", hostile / "ok.png", "--question", question[:120_000], *FAST[:6]),
        "tokens, more than this model's context",
    )
    start = time.monotonic()
    chat = subprocess.run(
        [PYTHON, "-m", "unimedvl.cli", "chat", "--model", str(ckpt), *FAST[:6], "--max-new-tokens", "4"],
        input=f"/image {hostile / 'ok.png'}\n{question}\nWhat?\n",
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    refused_s = time.monotonic() - start
    assert chat.returncode == 0 and "Traceback" not in chat.stderr, chat.stderr[-3000:]
    assert "error: an input text is at least" in chat.stderr and len(chat.stdout.strip().splitlines()) == 1
    large = _cli(
        "ask",
        "--model",
        ckpt,
        "--image",
        hostile / "large.png",
        "--question",
        "What?",
        "--json",
        "--max-new-tokens",
        "4",
        *FAST[:6],
    )
    assert large.returncode == 0, large.stderr[-3000:]
    assert "answer" in json.loads(large.stdout)

    for _attempt in range(2):  # the rerun resumes; neither run crashes at the bad samples
        done = _cli("eval", "--model", ckpt, "--data", data, "--out", tmp_path / "eval", *FAST)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = {
        json.loads(l)["sample_id"]: json.loads(l)
        for l in (tmp_path / "eval" / "debug" / "hostile" / "results.jsonl").read_text().splitlines()
    }
    assert lines["fine"]["error"] is None and "20000x20000" in lines["bomb"]["error"]
    assert "more than this model's context" in lines["long"]["error"]
    strict = _cli("eval", "--model", ckpt, "--data", data, "--out", tmp_path / "eval", "--strict", *FAST)
    assert strict.returncode == 1 and "2 sample(s) failed" in strict.stderr
    print(f"drill: chat refused a 10 MB question and answered the next in {refused_s:.1f} s (process start included)")


def _train_args(tmp_path, ckpt, mix, info, run, steps, **extra):
    values = dict(
        model_path=str(ckpt),
        dataset_config_file=str(mix),
        dataset_info_file=str(info),
        checkpoint_dir=str(run),
        total_steps=steps,
        save_every=2,
        keep_last=0,
        warmup_steps=0,
        lr=1e-3,
        attn_backend="sdpa",
        gradient_checkpointing=False,
        progress_bar=False,
        tensorboard=True,
        log_every=1,
        ema=0.9,
        expected_num_tokens=256,
        max_num_tokens=512,
        max_num_tokens_per_sample=512,
        num_workers=1,
        seed=0,
    )
    values.update(extra)
    config = tmp_path / f"{Path(run).name}.yaml"
    config.write_text(yaml.safe_dump(values))
    return [PYTHON, "-m", "unimedvl.train", "--config", str(config)]


def test_drill_bomb_and_huge_text_in_training_data(ckpt, medsynth, hostile, tmp_path):
    question = (hostile / "question.txt").read_text()
    train = Path(medsynth["jsonl"]["train"])
    good = [json.loads(line) for line in train.read_text().splitlines()]
    vqa = [r for r in good if r["main_task_type"] == "image_understanding"]
    images = Path(medsynth["out_dir"])
    hostile_records = [
        _record("bomb", str(hostile / "bomb.png"), "What?"),
        {
            **vqa[0],
            "sample_id": "long",
            "message": [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": "CT"}],
        },
    ]
    jsonl = tmp_path / "hostile_train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in hostile_records + vqa))
    info = tmp_path / "info.yaml"
    info.write_text(yaml.safe_dump({"vlm_sft": {"hostile": {"jsonl_path": str(jsonl), "data_dir": str(images)}}}))
    mix = tmp_path / "mix.yaml"
    mix.write_text(
        yaml.safe_dump(
            {
                "vlm_sft": {
                    "dataset_names": ["hostile"],
                    "num_used_data": [0],
                    "shuffle_lines": False,
                    "vit_image_transform_args": {"image_stride": 14, "max_image_size": 70, "min_image_size": 56},
                }
            }
        )
    )
    failed = subprocess.run(
        _train_args(tmp_path, ckpt, mix, info, tmp_path / "fail", 2, visual_gen=False, num_workers=0),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    _one_line_error(failed, "hostile_train.jsonl:1", "20000x20000", "bad_record_policy='skip'")
    skipped = subprocess.run(
        _train_args(tmp_path, ckpt, mix, info, tmp_path / "skip", 2, visual_gen=False, bad_record_policy="skip"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert skipped.stderr.count("tokens skipped (max_num_tokens_per_sample=512)") == 1  # said once, then counted
    assert "hostile_train.jsonl:2: sample of at least" in skipped.stderr
    # issue 28, item 7: from the loader's worker process to train.log, metrics.jsonl and the last line
    train_log = (tmp_path / "skip" / "train.log").read_text()
    assert train_log.count("skipped " + str(jsonl) + ":1: ") == 1 and "record(s) skipped in this run" in train_log
    last = json.loads((tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped_bad_records"] >= 1 and last["skipped_too_long"] >= 1


# --------------------------------------------------------------------------------------------- SIGKILL


def _kill_when(cmd, condition, timeout=300):
    """Start ``cmd``, SIGKILL it as soon as ``condition()`` holds; the run must not have ended first."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stderr.read()[-2000:]!r}"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _written_by_this_run(path: Path, condition):
    """``condition``, once ``path`` has been written after now (a kill point of the run about to start)."""
    started = time.time()
    return lambda: path.is_file() and path.stat().st_mtime > started and condition()


def _in_a_new_save(run: Path):
    """A condition that holds once a save of this process is under way (not a partial one left before it)."""
    stale = {p.name for p in run.glob(".tmp-step_*")}

    def condition() -> bool:
        present = {p.name for p in run.glob(".tmp-step_*")}
        if stale:
            stale.intersection_update(present)  # the new process removes them at startup
            return False
        return bool(present)

    return condition


def _metrics(run: Path) -> list[dict]:
    from unimedvl.fileio import read_json_lines

    return read_json_lines(run / "metrics.jsonl", require="step")[0]


def _weights(step_dir: Path) -> dict:
    return {name: load_file(str(step_dir / name)) for name in ("model.safetensors", "ema.safetensors")}


def test_drill_sigkill_training_at_five_points(ckpt, medsynth, tmp_path):
    import torch

    steps = 10
    reference = tmp_path / "reference"
    done = subprocess.run(
        _train_args(tmp_path, ckpt, medsynth["mix"], medsynth["dataset_info"], reference, steps),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    crashed = tmp_path / "crashed"
    cmd = _train_args(tmp_path, ckpt, medsynth["mix"], medsynth["dataset_info"], crashed, steps, auto_resume=True)
    rng = random.Random(17)
    # Steps ascending, so that each point lies ahead of the last one's resume; the save point at a random place.
    points = [(f"after step {k}", k) for k in sorted(rng.sample(range(2, 10), 4))]
    points.insert(rng.randrange(len(points) + 1), ("inside a save", None))
    killed = []
    for name, step in points:
        condition = (
            _in_a_new_save(crashed)
            if step is None
            else _written_by_this_run(crashed / "metrics.jsonl", lambda k=step: len(_metrics(crashed)) >= k)
        )
        _kill_when(cmd, condition)
        killed.append((name, len(_metrics(crashed)), sorted(p.name for p in crashed.glob(".tmp-step_*"))))
    finished = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert not list(crashed.glob(".tmp-*")), "a partial save survived the restarts"
    assert any(name == "inside a save" and tmp for name, _, tmp in killed), killed  # the kill did land in a save
    a, b = _weights(reference / "step_0000010"), _weights(crashed / "step_0000010")
    for name in a:
        assert a[name].keys() == b[name].keys()
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    ref_loss = {m["step"]: m["loss"] for m in _metrics(reference)}
    got = _metrics(crashed)
    assert [m["step"] for m in got] == list(range(1, steps + 1))  # each step once
    assert {m["step"]: m["loss"] for m in got} == ref_loss
    print(f"drill: training killed at {killed}; final weights equal the uninterrupted run's")


def _results(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in (run_dir / "results.jsonl").read_text().splitlines()
    ]


def _images(run_dir: Path) -> dict:
    return {p.name: np.asarray(Image.open(p)) for p in sorted((run_dir / "images").glob("*.png"))}


def test_drill_sigkill_eval_at_five_points(ckpt, medsynth, tmp_path):
    data = medsynth["jsonl"]["test"]
    reference = tmp_path / "reference"
    done = _cli("eval", "--model", ckpt, "--data", data, "--out", reference, *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "killed"
    results = out / "debug" / "test" / "results.jsonl"
    count = lambda: results.read_bytes().count(b"\n") if results.is_file() else 0  # noqa: E731
    rng = random.Random(23)
    points = sorted(rng.sample(range(1, 12), 5))
    cmd = [PYTHON, "-m", "unimedvl.cli", "eval", "--model", str(ckpt), "--data", str(data), "--out", str(out), *FAST]
    for n in points:
        _kill_when(cmd, _written_by_this_run(results, lambda n=n: count() >= n))
    finished = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert _results(out / "debug" / "test") == _results(reference / "debug" / "test")
    a, b = _images(reference / "debug" / "test"), _images(out / "debug" / "test")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    print(f"drill: eval killed after {points} result lines; results and images equal the uninterrupted run's")


# --------------------------------------------------------------------------------------------- full disk


def test_drill_disk_full_while_training(ckpt, medsynth, tmp_path):
    import torch

    mix, info = medsynth["mix"], medsynth["dataset_info"]
    reference = tmp_path / "reference"
    done = subprocess.run(
        _train_args(tmp_path, ckpt, mix, info, reference, 4), env=_env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with ds.small_filesystem(tmp_path / "small", 40 * 1024) as disk:
        run = disk / "run"
        first = subprocess.run(
            _train_args(tmp_path, ckpt, mix, info, run, 2), env=_env(), capture_output=True, text=True, timeout=900
        )
        assert first.returncode == 0, first.stderr[-3000:]
        save_size = sum(f.stat().st_size for f in (run / "step_0000002").rglob("*") if f.is_file())
        ballast = ds.fill(disk, leave_bytes=save_size // 3)
        cmd = _train_args(tmp_path, ckpt, mix, info, run, 4, auto_resume=True)
        full = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
        line = _one_line_error(full, "disk full while saving step 4 in", "step 2 is intact", "free space and rerun")
        assert not list(run.glob(".tmp-*")), "the partial save was left behind"
        ballast.unlink()
        resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        a, b = _weights(reference / "step_0000004"), _weights(run / "step_0000004")
        for name in a:
            assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
        assert [m["step"] for m in _metrics(run)] == [1, 2, 3, 4]
    print(f"drill: {line}")


def test_drill_disk_full_while_evaluating(ckpt, medsynth, tmp_path):
    data = medsynth["jsonl"]["test"]
    reference = tmp_path / "reference"
    assert _cli("eval", "--model", ckpt, "--data", data, "--out", reference, *FAST).returncode == 0
    with ds.small_filesystem(tmp_path / "small", 4 * 1024) as disk:
        ballast = ds.fill(disk, leave_bytes=48 * 1024)  # room for a few samples' images and lines
        full = _cli("eval", "--model", ckpt, "--data", data, "--out", disk / "out", *FAST)
        line = _one_line_error(full, "disk full while", "free space and rerun")
        run_dir = disk / "out" / "debug" / "test"
        text = (run_dir / "results.jsonl").read_text() if (run_dir / "results.jsonl").is_file() else ""
        assert text == "" or text.endswith("\n"), "a partial result line was left"
        assert not list(run_dir.rglob("*.tmp"))
        ballast.unlink()
        again = _cli("eval", "--model", ckpt, "--data", data, "--out", disk / "out", *FAST)
        assert again.returncode == 0, again.stderr[-3000:]
        assert _results(run_dir) == _results(reference / "debug" / "test")
    print(f"drill: {line}")


# --------------------------------------------------------------------------------------------- round two (issue 28)


def _wait(condition, proc, what, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-2000:]!r}"
        assert time.monotonic() < deadline, f"{what} never came"
        time.sleep(0.01)


def _slow_run_config(tmp_path, ckpt, steps, **extra):
    """A run of the stand-in loader (tests/train_support.py) that takes 0.3 s per batch: long enough to act on."""
    sys.path.insert(0, str(ROOT / "tests"))
    import train_support as ts

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
    values.update(extra)
    config = tmp_path / "slow_run.yaml"
    config.write_text(yaml.safe_dump(values))
    return config


def test_drill_two_runs_one_folder(ckpt, medsynth, tmp_path):
    """Item 1: a second train / eval into a folder a live run writes is refused naming its PID."""
    run = tmp_path / "run"
    cmd = [
        PYTHON,
        "-m",
        "unimedvl.train",
        "--config",
        str(_slow_run_config(tmp_path, ckpt, 30, save_every=10)),
        "--checkpoint_dir",
        str(run),
    ]
    first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait(lambda: (run / "metrics.jsonl").is_file(), first, "step 1")
    second = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert first.poll() is None, "the first run ended before the second one started: the drill proves nothing"
    line = _one_line_error(second, f"PID {first.pid}", str(run), "in use")
    assert first.wait(timeout=900) == 0, first.stderr.read()[-3000:]
    assert [m["step"] for m in _metrics(run)] == list(range(1, 31))  # each step once, nothing interleaved
    assert all((run / f"step_{k:07d}" / "checkpoint.json").is_file() for k in (10, 20, 30))

    data, out = medsynth["jsonl"]["test"], tmp_path / "eval"
    results = out / "debug" / "test" / "results.jsonl"
    eval_cmd = [
        PYTHON,
        "-m",
        "unimedvl.cli",
        "eval",
        "--model",
        str(ckpt),
        "--data",
        str(data),
        "--out",
        str(out),
        *FAST,
        "--num-timesteps",
        "200",
        "--batch-size",
        "1",
    ]  # slow enough to start a second one meanwhile
    first = subprocess.Popen(eval_cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait(lambda: results.is_file() and results.stat().st_size > 0, first, "the first result line")
    second = subprocess.run(eval_cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert first.poll() is None, "the first eval ended before the second one started: the drill proves nothing"
    _one_line_error(second, f"PID {first.pid}")
    assert first.wait(timeout=600) == 0
    provenance = json.loads((out / "debug" / "test" / "run_info.json").read_text())
    assert provenance and len(results.read_text().splitlines()) == 12
    print(f"drill: {line}")


def test_drill_sigterm_under_torchrun_and_autoencoder_kill(ckpt, medsynth, tmp_path):
    """Item 2: SIGTERM to torchrun's agent: every rank finishes the step, saves, and the rerun ends with
    the uninterrupted weights; train-autoencoder SIGKILLed after a periodic save resumes bit for bit."""
    import torch

    config = _slow_run_config(tmp_path, ckpt, 6, sharding_strategy="FULL_SHARD")
    torchrun = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "unimedvl.train",
        "--config",
        str(config),
        "--checkpoint_dir",
    ]
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    done = subprocess.run([*torchrun, str(reference)], env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    agent = subprocess.Popen(
        [*torchrun, str(stopped)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _wait(lambda: (stopped / "metrics.jsonl").is_file() and len(_metrics(stopped)) >= 2, agent, "step 2")
    agent.send_signal(signal.SIGTERM)  # as SLURM / Kubernetes do; torchrun forwards it to every rank
    err = agent.communicate(timeout=300)[1]
    k = len(_metrics(stopped))
    assert 2 <= k < 6 and f"stopped by SIGTERM after step {k} of 6" in err, err[-3000:]
    assert (stopped / f"step_{k:07d}" / "checkpoint.json").is_file()
    resumed = subprocess.run(
        [*torchrun, str(stopped), "--auto_resume", "True"], env=_env(), capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _weights(reference / "step_0000006"), _weights(stopped / "step_0000006")
    for name in a:
        assert all(torch.equal(a[name][key], b[name][key]) for key in a[name]), name
    assert [m["step"] for m in _metrics(stopped)] == list(range(1, 7))

    images = Path(medsynth["out_dir"]) / "images"
    ae = [
        "train-autoencoder",
        "--images",
        str(images),
        "--steps",
        "8",
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
    ]
    assert _cli(*ae, "--out", tmp_path / "ae_ref" / "ae.safetensors").returncode == 0
    out = tmp_path / "ae" / "ae.safetensors"
    state = out.with_name("ae.safetensors.train-state.pt")
    proc = subprocess.Popen(
        [PYTHON, "-m", "unimedvl.cli", *ae, "--out", str(out)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait(state.is_file, proc, "the first saved state")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists()
    _one_line_error(_cli(*ae, "--out", out), "holds an interrupted run", "--resume")
    assert _cli(*ae, "--out", out, "--resume").returncode == 0
    a, b = load_file(str(tmp_path / "ae_ref" / "ae.safetensors")), load_file(str(out))
    assert all(torch.equal(a[key], b[key]) for key in a) and not state.exists()
    _one_line_error(_cli(*ae, "--out", out), "exists (a finished autoencoder)", "--overwrite")
    print(f"drill: torchrun stopped by SIGTERM after step {k}, resumed to equal weights; the autoencoder too")


def test_drill_hostile_inputs_round_two(ckpt, medsynth, tmp_path):
    """Items 3-6 and 8 through the real commands: YAML bomb, absurd config, shards outside, NaN guidance,
    a DICOM without decoder, a symlink loop."""
    import shutil

    from unimedvl.config import load_yaml

    bomb = tmp_path / "bomb_mix.yaml"
    lines = ['l0: &l0 ["lol"]'] + [f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 10) + "]" for k in range(1, 10)]
    bomb.write_text("\n".join(lines) + "\nvlm_sft:\n  dataset_names: *l9\n  weight: *l9\n  shuffle_seed: *l9\n")
    start = time.monotonic()
    refused = subprocess.run(
        _train_args(tmp_path, ckpt, bomb, medsynth["dataset_info"], tmp_path / "r", 2),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    bomb_s = time.monotonic() - start
    # A mix's problems are listed one per line under one "error:" line (the mix checker's format).
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert "error: 1 problem(s) in the data mix" in refused.stderr
    assert "bomb_mix.yaml: its aliases (*name) expand to more than" in refused.stderr

    huge = tmp_path / "huge"
    shutil.copytree(ckpt, huge)
    cfg = load_yaml(huge / "unimedvl_config.yaml")
    cfg["llm"].update(hidden_size=10**7, head_dim=2_500_000)
    (huge / "unimedvl_config.yaml").write_text(yaml.safe_dump(cfg))
    image = Path(medsynth["out_dir"]) / "images"
    some_image = sorted(image.rglob("*.png"))[0]
    _one_line_error(
        _cli("ask", "--model", huge, "--image", some_image, "--question", "What?", *FAST[:6]),
        "has shape",
        "the config implies",
    )

    outside = tmp_path / "outside"
    shutil.copytree(ckpt, outside)
    (outside / "ema.safetensors").unlink()
    from safetensors import safe_open

    with safe_open(str(ckpt / "ema.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    (outside / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: "/etc/passwd" for k in keys}}))
    _one_line_error(
        _cli("ask", "--model", outside, "--image", some_image, "--question", "What?", *FAST[:6]),
        "model.safetensors.index.json",
        "inside",
    )

    _one_line_error(
        _cli(
            "generate",
            "--model",
            ckpt,
            "--prompt",
            "x-ray",
            "--out",
            tmp_path / "g.png",
            "--cfg-text-scale",
            "nan",
            *FAST[:2],
        ),
        "cfg_text_scale",
    )
    _one_line_error(
        _cli(
            "generate",
            "--model",
            ckpt,
            "--prompt",
            "x-ray",
            "--out",
            tmp_path / "g.png",
            "--timestep-shift",
            "1e308",
            *FAST[:2],
        ),
        "timestep_shift",
    )

    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    _one_line_error(
        _cli("ask", "--model", ckpt, "--image", tmp_path / "a.png", "--question", "What?", *FAST[:6]), "symlink loop"
    )

    pydicom = pytest.importorskip("pydicom")
    jpeg_ls = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files" / "JPEGLSNearLossless_08.dcm"
    (tmp_path / "dicom").mkdir()
    shutil.copy(jpeg_ls, tmp_path / "dicom" / "scan.dcm")
    (tmp_path / "dicom" / "test.jsonl").write_text(json.dumps(_record("a", "scan.dcm", "What?")) + "\n")
    checked = _cli("validate-data", tmp_path / "dicom" / "test.jsonl")
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert "needs a pixel decoder that is not installed" in checked.stdout or "decoder" in checked.stdout
    print(f"drill: YAML bomb refused in {bomb_s:.1f} s (process start included)")


def test_drill_convert_on_a_full_disk(tmp_path):
    """Item 8: convert onto a full filesystem: one line, like eval's."""
    import benchmark_fixtures as bf

    source = bf.vqa_rad_release(tmp_path / "src")
    with ds.small_filesystem(tmp_path / "small", 1024) as disk:
        ballast = ds.fill(disk, leave_bytes=2 * 1024)
        full = _cli("convert", "--benchmark", "vqa-rad", source, "--out", disk / "data" / "vqa_rad.jsonl")
        line = _one_line_error(full, "disk full while converting", "free space and rerun")
        ballast.unlink()
        again = _cli("convert", "--benchmark", "vqa-rad", source, "--out", disk / "data" / "vqa_rad.jsonl")
        assert again.returncode in (0, 1) and "Traceback" not in again.stderr, again.stderr[-3000:]
        assert (disk / "data" / "vqa_rad.jsonl").is_file()
    print(f"drill: {line}")


def test_drill_idle_connection_to_the_api_is_closed(ckpt):
    """Item 8: `unimedvl api` closes a socket that never sends a request (before: open forever)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [PYTHON, "-m", "unimedvl.cli", "api", "--model", str(ckpt), "--device", "cpu", "--port", str(port)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        _wait(listening, server, "the API listening", timeout=300)
        idle = socket.create_connection(("127.0.0.1", port), timeout=60)
        start = time.monotonic()
        assert idle.recv(1) == b""  # the server closed it
        waited = time.monotonic() - start
        assert waited < 40
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    print(f"drill: the API closed an idle connection after {waited:.1f} s")
