"""One run per output folder (issue 28, item 1): a second `train` / `eval` / `train-autoencoder` /
`convert` / `demo` into a folder another live process writes stops at once, naming the holder's PID;
a SIGKILLed holder leaves no stale lock."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import train_support as ts  # noqa: E402
from unimedvl.cli import main as cli_main  # noqa: E402
from unimedvl.run_lock import FolderInUse, RunLock, run_lock  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
HOLD = (
    "import sys, time\nfrom unimedvl.run_lock import RunLock\n"
    "lock = RunLock(sys.argv[1], sys.argv[2], *sys.argv[3:]).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n"
)


class Holder:
    """Another process holding a folder's lock, as a live run would."""

    def __init__(self, folder: Path, command: str = "train", name: str | None = None):
        env = {**os.environ, "PYTHONPATH": SRC}
        args = [sys.executable, "-c", HOLD, str(folder), command] + ([name] if name else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout.readline().strip() == "held"
        self.pid = self.proc.pid

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def holder():
    held: list[Holder] = []

    def start(folder, command="train", name=None):
        held.append(Holder(folder, command, name))
        return held[-1]

    yield start
    for h in held:
        if h.proc.poll() is None:
            h.kill()


def test_second_run_is_refused_naming_the_pid_and_a_sigkill_leaves_no_stale_lock(tmp_path, holder):
    run = tmp_path / "run"
    h = holder(run, "train")
    with pytest.raises(FolderInUse) as err:
        RunLock(run, "eval").acquire()
    message = str(err.value)
    assert f"PID {h.pid}" in message and str(run) in message and "`train`" in message and "\n" not in message
    assert (run / ".unimedvl.lock").read_text().split() == [str(h.pid), "train"]  # the refusal changed nothing
    h.kill()  # SIGKILL: no cleanup code runs, the kernel drops the lock
    with run_lock(run, "train"):
        assert (run / ".unimedvl.lock").read_text().split() == [str(os.getpid()), "train"]
        with pytest.raises(FolderInUse, match=f"PID {os.getpid()}"):
            RunLock(run, "train").acquire()  # held by this very process: still refused
    with run_lock(run, "train"):  # released at the end of the block
        pass


def test_a_file_lock_leaves_the_rest_of_the_folder_free(tmp_path, holder):
    h = holder(tmp_path, "convert", ".vqa_rad.jsonl.lock")
    with RunLock.for_file(tmp_path / "slake.jsonl", "convert"):
        pass
    with pytest.raises(FolderInUse, match=f"PID {h.pid}"):
        RunLock.for_file(tmp_path / "vqa_rad.jsonl", "convert").acquire()


def test_train_refuses_before_touching_the_folder(tmp_path, holder):
    from test_train_run import make_cfg
    from unimedvl.train.trainer import Trainer

    cfg = make_cfg(tmp_path, ts.debug_checkpoint(tmp_path / "ckpt"))
    run = Path(cfg.checkpoint_dir)
    partial = run / ".tmp-step_0000004"  # the live run's save in progress: a second run must not remove it
    partial.mkdir(parents=True)
    h = holder(run, "train")
    with pytest.raises(FolderInUse, match=f"PID {h.pid}"):
        Trainer(cfg, loader_factory=ts.build_loader).train()
    assert partial.is_dir() and sorted(p.name for p in run.iterdir()) == [".tmp-step_0000004", ".unimedvl.lock"]
    h.kill()
    trainer = Trainer(cfg, loader_factory=ts.build_loader)
    trainer.train()
    assert (run / "step_0000002").is_dir() and not partial.exists()
    assert not trainer._lock.held  # released at the end of train()


@pytest.mark.parametrize("command", ["train-autoencoder", "convert", "demo"])
def test_cli_commands_refuse_a_folder_in_use(tmp_path, holder, capsys, command):
    out = tmp_path / "out"
    if command == "train-autoencoder":
        h = holder(out, command, ".ae.safetensors.lock")
        argv = ["train-autoencoder", "--images", str(tmp_path / "none"), "--out", str(out / "ae.safetensors")]
    elif command == "convert":
        h = holder(out, command, ".vqa_rad.jsonl.lock")
        argv = ["convert", "--benchmark", "vqa-rad", str(tmp_path / "none"), "--out", str(out / "vqa_rad.jsonl")]
    else:
        h = holder(out, command)
        (out / "stage.txt").write_text("the live demo's file")
        argv = ["demo", "--quick", "--fresh", "--out", str(out)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and f"PID {h.pid}" in err and "\n" not in err
    if command == "demo":
        assert (out / "stage.txt").is_file()  # --fresh did not empty the folder of the live demo


def test_eval_refuses_a_run_folder_in_use(tmp_path, holder):
    from unimedvl.checkpoint.create import init_checkpoint
    from unimedvl.commands.eval import parse_args, run
    from unimedvl.medsynth.generator import generate_medsynth

    ckpt = init_checkpoint("debug", tmp_path / "debug", seed=0)
    generate_medsynth(tmp_path / "data", n_train=0, n_test=2, image_size=64)
    out = tmp_path / "out"
    h = holder(out / "debug" / "test", "eval")
    args = parse_args(
        [
            "--model",
            str(ckpt),
            "--data",
            str(tmp_path / "data" / "test.jsonl"),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    with pytest.raises(FolderInUse, match=f"PID {h.pid}"):
        run(args)
    assert sorted(p.name for p in (out / "debug" / "test").iterdir()) == [".unimedvl.lock"]
