"""Threads on a shared machine: free cores less the load, passive OpenMP waiting, --threads."""

import subprocess
import sys

import pytest

from unimedvl import threads
from unimedvl.cli import build_parser
from unimedvl.errors import UserError


def test_threads_come_from_the_free_cores_unless_asked(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.choose_threads(cores=2, load=0.1) == 2  # idle: every core this process may use
    assert threads.choose_threads(cores=2, load=1.2) == 1  # another job holds a core
    assert threads.choose_threads(cores=2, load=9.0) == 1  # never below one
    assert threads.choose_threads(cores=16, load=4.0) == 12
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(cores=2, load=0.0) == 3  # the user's setting wins over the guess
    assert threads.choose_threads(4, cores=2, load=0.0) == 4  # and --threads over both
    with pytest.raises(UserError, match="--threads 0"):
        threads.choose_threads(0)
    assert 1 <= threads.available_cores()


def test_the_flag_is_read_before_anything_loads():
    assert threads.requested_threads(["train", "--threads", "3", "--lr", "1"]) == 3
    assert threads.requested_threads(["eval", "--threads=2"]) == 2
    assert threads.requested_threads(["eval", "--model", "x"]) is None


@pytest.mark.parametrize("command", threads.HEAVY_COMMANDS)
def test_heavy_commands_take_threads(command):
    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    assert any("--threads" in action.option_strings for action in sub._actions)


def test_a_fresh_process_waits_passively_with_the_threads_chosen():
    code = (
        "import os; from unimedvl import threads; threads.prepare(1); import torch; "
        "print(os.environ['OMP_WAIT_POLICY'], os.environ['KMP_BLOCKTIME'], torch.get_num_threads())"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["PASSIVE", "0", "1"]


def test_train_accepts_threads():
    from unimedvl.train.config import config_from_args

    parser = build_parser(only="train")
    args = parser.parse_args(["train", "--threads", "1", "--model_path", "m", "--dataset_config_file", "x.yaml"])
    assert args.threads == 1 and config_from_args(args).model_path == "m"
