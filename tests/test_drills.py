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
  where an uninterrupted run does.

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
FAST = ["--vae-min-size", "64", "--vae-max-size", "64", "--vit-min-size", "56", "--vit-max-size", "70",
        "--num-timesteps", "3", "--max-new-tokens", "8", "--device", "cpu", "--no-progress",
        "--batch-size", "1"]  # fmt: skip  # a resumed run compared bit for bit: the same batching (not auto)
TIMING = ("inference_time", "understanding_time", "generation_time")


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]), OMP_NUM_THREADS="1",
                HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _cli(*args, timeout=600):
    return subprocess.run([PYTHON, "-m", "unimedvl.cli", *map(str, args)], env=_env(), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


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
    from unimedvl.init_checkpoint import init_checkpoint

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
    return {"main_task_type": "image_understanding", "sample_id": sample_id, "input_img": [{"path": image}],
            "message": [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": "CT"}]}


# --------------------------------------------------------------------------------------------- bad inputs


def test_drill_bomb_and_huge_text_through_validate_ask_and_eval(ckpt, hostile, tmp_path):
    question = (hostile / "question.txt").read_text()
    data = hostile / "hostile.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (
        _record("fine", "ok.png", "What modality is this?"), _record("bomb", "bomb.png", "What modality is this?"),
        _record("long", "ok.png", question))))  # fmt: skip
    checked = _cli("validate-data", data, "--model", ckpt)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert "hostile.jsonl:2: input image 1 (bomb.png)" in checked.stdout and "20000x20000" in checked.stdout
    assert "hostile.jsonl:3: the record's text alone is at least" in checked.stdout

    _one_line_error(_cli("ask", "--model", ckpt, "--image", hostile / "bomb.png", "--question", "What?", *FAST[:6]),
                    "bomb.png", "20000x20000", "--max-image-pixels")
    # One command-line argument holds at most 128 KiB (Linux MAX_ARG_STRLEN): ask gets 120 KB, chat the 10 MB.
    _one_line_error(_cli("ask", "--model", ckpt, "--image", hostile / "ok.png", "--question", question[:120_000],
                         *FAST[:6]), "tokens, more than this model's context")  # fmt: skip
    start = time.monotonic()
    chat = subprocess.run([PYTHON, "-m", "unimedvl.cli", "chat", "--model", str(ckpt), *FAST[:6],
                           "--max-new-tokens", "4"], input=f"/image {hostile / 'ok.png'}\n{question}\nWhat?\n",
                          env=_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    refused_s = time.monotonic() - start
    assert chat.returncode == 0 and "Traceback" not in chat.stderr, chat.stderr[-3000:]
    assert "error: an input text is at least" in chat.stderr and len(chat.stdout.strip().splitlines()) == 1
    large = _cli("ask", "--model", ckpt, "--image", hostile / "large.png", "--question", "What?", "--json",
                 "--max-new-tokens", "4", *FAST[:6])  # fmt: skip
    assert large.returncode == 0, large.stderr[-3000:]
    assert "answer" in json.loads(large.stdout)

    for attempt in range(2):  # the rerun resumes; neither run crashes at the bad samples
        done = _cli("eval", "--model", ckpt, "--data", data, "--out", tmp_path / "eval", *FAST)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = {json.loads(l)["sample_id"]: json.loads(l)
             for l in (tmp_path / "eval" / "debug" / "hostile" / "results.jsonl").read_text().splitlines()}
    assert lines["fine"]["error"] is None and "20000x20000" in lines["bomb"]["error"]
    assert "more than this model's context" in lines["long"]["error"]
    strict = _cli("eval", "--model", ckpt, "--data", data, "--out", tmp_path / "eval", "--strict", *FAST)
    assert strict.returncode == 1 and "2 sample(s) failed" in strict.stderr
    print(f"drill: chat refused a 10 MB question and answered the next in {refused_s:.1f} s (process start "
          "included)")


def _train_args(tmp_path, ckpt, mix, info, run, steps, **extra):
    values = dict(model_path=str(ckpt), dataset_config_file=str(mix), dataset_info_file=str(info),
                  checkpoint_dir=str(run), total_steps=steps, save_every=2, keep_last=0, warmup_steps=0, lr=1e-3,
                  attn_backend="sdpa", gradient_checkpointing=False, progress_bar=False, tensorboard=True,
                  log_every=1, ema=0.9, expected_num_tokens=256, max_num_tokens=512, max_num_tokens_per_sample=512,
                  num_workers=1, seed=0)  # fmt: skip
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
    hostile_records = [_record("bomb", str(hostile / "bomb.png"), "What?"),
                       {**vqa[0], "sample_id": "long", "message": [{"from": "human", "value": "<image>\n" + question},
                                                                   {"from": "gpt", "value": "CT"}]}]  # fmt: skip
    jsonl = tmp_path / "hostile_train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in hostile_records + vqa))
    info = tmp_path / "info.yaml"
    info.write_text(yaml.safe_dump({"vlm_sft": {"hostile": {"jsonl_path": str(jsonl), "data_dir": str(images)}}}))
    mix = tmp_path / "mix.yaml"
    mix.write_text(yaml.safe_dump({"vlm_sft": {"dataset_names": ["hostile"], "num_used_data": [0],
                                               "shuffle_lines": False, "vit_image_transform_args": {
                                                   "image_stride": 14, "max_image_size": 70, "min_image_size": 56}}}))
    failed = subprocess.run(_train_args(tmp_path, ckpt, mix, info, tmp_path / "fail", 2, visual_gen=False,
                                        num_workers=0), env=_env(), capture_output=True, text=True, timeout=600)
    _one_line_error(failed, "hostile_train.jsonl:1", "20000x20000", "bad_record_policy='skip'")
    skipped = subprocess.run(_train_args(tmp_path, ckpt, mix, info, tmp_path / "skip", 2, visual_gen=False,
                                         bad_record_policy="skip"), env=_env(), capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert skipped.stderr.count("tokens skipped (max_num_tokens_per_sample=512)") == 1  # said once, then counted
    assert "hostile_train.jsonl:2: sample of at least" in skipped.stderr


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
    done = subprocess.run(_train_args(tmp_path, ckpt, medsynth["mix"], medsynth["dataset_info"], reference, steps),
                          env=_env(), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    crashed = tmp_path / "crashed"
    cmd = _train_args(tmp_path, ckpt, medsynth["mix"], medsynth["dataset_info"], crashed, steps, auto_resume=True)
    rng = random.Random(17)
    # Steps ascending, so that each point lies ahead of the last one's resume; the save point at a random place.
    points = [(f"after step {k}", k) for k in sorted(rng.sample(range(2, 10), 4))]
    points.insert(rng.randrange(len(points) + 1), ("inside a save", None))
    killed = []
    for name, step in points:
        condition = _in_a_new_save(crashed) if step is None else _written_by_this_run(
            crashed / "metrics.jsonl", lambda k=step: len(_metrics(crashed)) >= k)
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
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run_dir / "results.jsonl").read_text().splitlines()]


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
    done = subprocess.run(_train_args(tmp_path, ckpt, mix, info, reference, 4), env=_env(), capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with ds.small_filesystem(tmp_path / "small", 40 * 1024) as disk:
        run = disk / "run"
        first = subprocess.run(_train_args(tmp_path, ckpt, mix, info, run, 2), env=_env(), capture_output=True,
                               text=True, timeout=900)  # fmt: skip
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
