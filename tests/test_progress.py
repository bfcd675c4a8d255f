"""Progress in logs (not a terminal): plain "step N/total, elapsed, ETA" lines, a few seconds apart at most often."""

import io

from unimedvl.progress import Progress, clock_text
from unimedvl.train.metrics_log import RunLogger


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_plain_lines_every_few_seconds_with_elapsed_and_eta():
    out, clock = io.StringIO(), Clock()
    progress = Progress(10, "train", file=out, interval_s=5.0, clock=clock)
    assert progress.bar is None  # a StringIO is no terminal
    for _ in range(4):
        clock.now += 2.0  # 2 s per step
        progress.update(1, {"loss": 2.3456789})
    lines = out.getvalue().splitlines()
    assert lines == ["train: step 3/10 (30%), elapsed 0:00:06, ETA 0:00:14, loss=2.346"]  # not one per step
    for _ in range(6):
        clock.now += 2.0
        progress.update(1)
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("train: step 10/10 (100%), elapsed 0:00:20, ETA 0:00:00")  # the end is always said
    assert len(lines) == 4  # at 6, 12 and 18 s, and at the end


def test_a_resumed_run_counts_its_own_rate():
    out, clock = io.StringIO(), Clock()
    progress = Progress(1000, "train", initial=900, file=out, interval_s=0.0, clock=clock)
    clock.now += 10.0
    progress.update(10)
    assert "step 910/1000 (91%), elapsed 0:00:10, ETA 0:01:30" in out.getvalue()  # 1 step/s, 90 left
    assert clock_text(3725) == "1:02:05"


def test_the_trainer_log_says_steps_and_eta_when_stderr_is_not_a_terminal(tmp_path, capsys):
    logger = RunLogger(tmp_path, enabled=True, total_steps=2, start_step=0, tensorboard=False, progress_bar=True)
    try:
        logger.step(1, {"loss": 1.5}, log_now=False)
        logger.step(2, {"loss": 1.25}, log_now=False)
    finally:
        logger.close()
    err = capsys.readouterr().err
    assert "train: step 2/2 (100%), elapsed " in err and "ETA 0:00:00, loss=1.25" in err and "\r" not in err
