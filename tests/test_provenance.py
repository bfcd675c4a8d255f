"""statistics.json's provenance: what the weights hash identifies, the training step, the versions."""

import hashlib
import json

import numpy as np
import torch
from safetensors.torch import save_file

from unimedvl.eval.runner import provenance as P


def _weights(path, seed):
    torch.manual_seed(seed)
    save_file({"a.weight": torch.randn(256, 512), "b.weight": torch.randn(512)}, str(path))
    return path


def test_small_files_are_hashed_whole(tmp_path):
    f = _weights(tmp_path / "ema.safetensors", 0)
    digest = P.file_digest(f)
    assert digest == {"size": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "method": "full"}


def test_large_files_are_sampled_and_still_tell_trained_checkpoints_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "FULL_HASH_LIMIT", 1024)  # as if these were multi-GB files
    monkeypatch.setattr(P, "SAMPLE_BLOCK_BYTES", 4096)
    a, b = _weights(tmp_path / "a.safetensors", 0), _weights(tmp_path / "b.safetensors", 1)
    da, db = P.file_digest(a), P.file_digest(b)
    assert da["method"].startswith("sampled") and da["size"] == db["size"]
    assert da["sha256"] != db["sha256"]  # same names, shapes and size: the sampled bytes differ
    assert P.file_digest(a) == da  # deterministic
    # A change confined to bytes between the samples goes unnoticed (documented); one in a sample does not.
    data = bytearray(a.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    sampled = np.zeros(len(data), bool)
    stride = max(1, (len(data) - header - 4096) // (P.SAMPLE_BLOCKS - 1))
    for k in range(P.SAMPLE_BLOCKS):
        start = min(header + k * stride, len(data) - 4096)
        sampled[start : start + 4096] = True
    unsampled = int(np.flatnonzero(~sampled[header:])[0]) + header
    data[header + 10] ^= 0xFF
    a.write_bytes(bytes(data))
    assert P.file_digest(a)["sha256"] != da["sha256"]
    data[header + 10] ^= 0xFF
    data[unsampled] ^= 0xFF
    a.write_bytes(bytes(data))
    assert P.file_digest(a)["sha256"] == da["sha256"]


def test_checkpoint_provenance_reads_the_step_and_hashes_the_loaded_files(tmp_path):
    ckpt = tmp_path / "step_0000300"
    ckpt.mkdir()
    _weights(ckpt / "ema.safetensors", 0)
    _weights(ckpt / "model.safetensors", 1)
    _weights(ckpt / "ae.safetensors", 2)
    (ckpt / "checkpoint.json").write_text(json.dumps({"step": 300, "saved_at": "2025-01-01T00:00:00"}))
    ema, raw = P.checkpoint_provenance(ckpt, "ema"), P.checkpoint_provenance(ckpt, "model")
    assert ema["training_step"] == 300 and ema["saved_at"] == "2025-01-01T00:00:00"
    assert set(ema["weights_files"]) == {"ema.safetensors", "ae.safetensors"}
    assert set(raw["weights_files"]) == {"model.safetensors", "ae.safetensors"}
    assert ema["weights_sha256"] != raw["weights_sha256"] and len(ema["weights_sha256"]) == 12
    (ckpt / "checkpoint.json").unlink()
    assert P.checkpoint_provenance(ckpt, "ema")["training_step"] is None  # a release checkpoint


def test_software_and_machine():
    import unimedvl

    sw = P.software()
    assert sw["unimedvl"] == unimedvl.__version__ and sw["torch"] == torch.__version__
    m = P.machine("cpu", 1)
    assert m["device"] == "cpu" and m["gpu"] is None and m["cpu_count"] >= 1 and "node" not in m
