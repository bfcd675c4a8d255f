"""The ``provenance`` block of statistics.json: what was evaluated, on what, how, with what, where.

::

    "provenance": {
      "checkpoint": {"path", "model_id", "training_step", "saved_at", "weights": "ema",
                     "weights_sha256": "3f2a9c0d1b7e", "weights_files": {name: {size, sha256, method}}},
      "data": {"path", "sha256", "data_dir", "n_records", "n_selected", "n_results", "selection"},
      "settings": {... EvalSettings: dtype, sizes, guidance, seed, metric mode ...},
      "software": {"unimedvl", "source_commit", "torch", "numpy", "python"},
      "machine": {"platform", "cpu", "cpu_count", "device", "gpu", "world_size"}
    }

``training_step`` is the trainer's ``checkpoint.json`` step (None for a release checkpoint).
``weights_sha256`` (12 hex digits) identifies the weight files that were loaded (the unified model's
``ema``/``model`` file or shards, and ``ae.safetensors``): the sha256 of their per-file digests. A
file up to 256 MiB is hashed whole (``method: full``); a larger one by its size, its safetensors header
and 64 blocks of 1 MiB at evenly spaced offsets (``method: sampled``), which reads 64 MiB of a 29 GB
checkpoint instead of all of it. Training changes every tensor, so two checkpoints of a run always
differ in the sampled blocks; a sampled digest does not notice an edit confined to bytes it does not
read. The host name is not recorded (reports are meant to be shared).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FULL_HASH_LIMIT = 256 * 2**20  # files up to this size are hashed whole
SAMPLE_BLOCKS = 64
SAMPLE_BLOCK_BYTES = 2**20


def file_digest(path: Path) -> dict[str, Any]:
    """``{size, sha256, method}`` of one weights file (module docstring: full or sampled)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            return {"size": size, "sha256": digest.hexdigest(), "method": "full"}
        digest.update(str(size).encode())
        head = handle.read(8)
        header_len = int.from_bytes(head, "little") if len(head) == 8 else 0
        digest.update(head + handle.read(min(header_len, 100 * 2**20)))  # the safetensors header: names, shapes
        start = handle.tell()
        stride = max(1, (size - start - SAMPLE_BLOCK_BYTES) // max(1, SAMPLE_BLOCKS - 1))
        for k in range(SAMPLE_BLOCKS):
            handle.seek(min(start + k * stride, max(start, size - SAMPLE_BLOCK_BYTES)))
            digest.update(handle.read(SAMPLE_BLOCK_BYTES))
    return {"size": size, "sha256": digest.hexdigest(), "method": f"sampled ({SAMPLE_BLOCKS} x 1 MiB + header)"}


def loaded_weight_files(path: Path, prefer: str) -> list[Path]:
    """The weight files an evaluation with ``prefer`` (ema | model) reads, VAE included."""
    from unimedvl.checkpoint.release import find_weights

    files = sorted(set(find_weights(path, prefer).files.values()))
    if (path / "ae.safetensors").is_file():
        files.append(path / "ae.safetensors")
    return files


def checkpoint_provenance(path: Path, prefer: str) -> dict[str, Any]:
    """The checkpoint's part: path, training step, the short hash of its loaded weights."""
    files = {f.name: file_digest(f) for f in loaded_weight_files(path, prefer)}
    combined = hashlib.sha256("".join(f"{n}:{d['sha256']}\n" for n, d in sorted(files.items())).encode())
    manifest: dict[str, Any] = {}
    if (path / "checkpoint.json").is_file():
        try:
            manifest = json.loads((path / "checkpoint.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = {}
    step = manifest.get("step")
    return {
        "path": str(path.resolve()),
        "training_step": step if isinstance(step, int) else None,
        "saved_at": manifest.get("saved_at"),
        "weights": prefer,
        "weights_sha256": combined.hexdigest()[:12],
        "weights_files": files,
    }


def _source_commit() -> str | None:
    """The git commit of the unimedvl source tree when it runs from a checkout (``-dirty``: with local edits)."""
    here = Path(__file__).resolve().parent
    try:
        proc = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def software() -> dict[str, Any]:
    """Versions of the code that produced the numbers."""
    import numpy
    import torch

    import unimedvl

    return {
        "unimedvl": unimedvl.__version__,
        "source_commit": _source_commit(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str, world_size: int) -> dict[str, Any]:
    """Where the numbers were produced (no host name)."""
    import torch

    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    return {
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "gpu": gpu,
        "world_size": world_size,
    }


def run_provenance(
    model_path: Path,
    model_id: str,
    identity: Mapping[str, Any],
    settings,
    counts: Mapping[str, Any],
    device: str,
    world_size: int,
) -> dict[str, Any]:
    """The whole block (module docstring). ``identity``: the run's run_info identity (data path and sha256);
    ``counts``: n_records, n_selected, n_results and the selection flags."""
    data = identity["data"]
    return {
        "checkpoint": {**checkpoint_provenance(model_path, settings.weights), "model_id": model_id},
        "data": {"path": data["path"], "sha256": data["sha256"], "data_dir": data["data_dir"], **counts},
        "settings": settings.to_json(),
        "software": software(),
        "machine": machine(device, world_size),
    }


__all__ = ["checkpoint_provenance", "file_digest", "loaded_weight_files", "machine", "run_provenance", "software"]
