"""Which training checkpoints survive pruning: the newest ``keep_last`` plus every ``keep_every``-th step."""

import json
import logging

import torch

from unimedvl.train.checkpointing import prune_checkpoints, step_dir_name
from unimedvl.train.config import TrainConfig
from unimedvl.train.trainer import _warn_about_settings


def _fake_checkpoints(root, steps):
    for step in steps:
        folder = root / step_dir_name(step)
        (folder / "train_state").mkdir(parents=True)
        (folder / "train_state" / ".metadata").write_bytes(b"")
        (folder / "checkpoint.json").write_text(json.dumps({"step": step}))


def _left(root):
    return sorted(int(p.name.split("_")[1]) for p in root.glob("step_*"))


def test_keep_every_keeps_multiples_beyond_keep_last(tmp_path):
    _fake_checkpoints(tmp_path, [100, 200, 300, 400, 500, 600, 650])
    removed = prune_checkpoints(tmp_path, keep_last=2, keep_every=200)
    assert _left(tmp_path) == [200, 400, 600, 650]
    assert sorted(p.name for p in removed) == ["step_0000100", "step_0000300", "step_0000500"]


def test_keep_every_zero_is_the_old_rule_and_keep_last_zero_keeps_all(tmp_path):
    _fake_checkpoints(tmp_path, [1, 2, 3, 4])
    assert prune_checkpoints(tmp_path, keep_last=0, keep_every=3) == []
    assert _left(tmp_path) == [1, 2, 3, 4]
    prune_checkpoints(tmp_path, keep_last=1)
    assert _left(tmp_path) == [4]


def test_keep_every_off_the_save_grid_warns(caplog):
    cfg = TrainConfig(model_path="x", save_every=100, keep_every=150, total_steps=1000, warmup_steps=10)
    with caplog.at_level(logging.WARNING, logger="unimedvl.train"):
        _warn_about_settings(cfg, torch.device("cpu"))
    assert "keep_every 150 is not a multiple of save_every 100" in caplog.text and "--keep_every 200" in caplog.text
