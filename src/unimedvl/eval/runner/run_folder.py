"""A run folder's identity (``run_info.json``): what a resume must match, and when a folder may be replaced.

``run_info.json`` holds the model path and fingerprint (sha256 of its config files, size and mtime of
its weight files), the data path, sha256 and data_dir, and the settings. A later run into the same
folder must match it: then it resumes; otherwise it stops with an error unless ``overwrite`` allows
replacing the old results (:func:`check_run_dir`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unimedvl.errors import ConfigError, UserError
from unimedvl.eval.runner.result_files import RESULTS
from unimedvl.fileio import atomic_write_text, disk_full_reported

RUN_INFO = "run_info.json"
STATS = "statistics.json"
_CONFIG_FILES = ("llm_config.json", "vit_config.json", "unimedvl_config.yaml", "config.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_fingerprint(path: Path) -> dict[str, Any]:
    """sha256 of the config files, (size, mtime) of the weight files: changes when the weights do."""
    configs = {name: _sha256(path / name) for name in _CONFIG_FILES if (path / name).is_file()}
    weights = {
        f.name: {"size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns}
        for f in sorted(path.iterdir())
        if f.is_file() and (f.name.endswith(".safetensors") or f.name.endswith(".safetensors.index.json"))
    }
    return {"configs_sha256": configs, "weights": weights}


def model_ids(paths: Sequence[Path]) -> list[str]:
    """The folder name of each checkpoint; repeated names get their parent's name, then a number."""
    resolved = [p.resolve() for p in paths]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise ConfigError(f"--model {paths[i]} is given twice; list each checkpoint once")
    names = [p.name for p in resolved]
    ids = [f"{p.parent.name}-{p.name}" if names.count(p.name) > 1 else p.name for p in resolved]
    out: list[str] = []
    for name in ids:
        candidate, k = name, 2
        while candidate in out:
            candidate, k = f"{name}_{k}", k + 1
        out.append(candidate)
    return out


def run_identity(model_path: Path, data: Path, data_dir: Path, settings) -> dict[str, Any]:
    """What a resume must match: the model, the data and the settings."""
    return {
        "model": {"path": str(model_path.resolve()), "fingerprint": checkpoint_fingerprint(model_path)},
        "data": {"path": str(data.resolve()), "sha256": _sha256(data), "data_dir": str(data_dir.resolve())},
        "settings": settings.to_json(),
    }


def _differences(old: dict, new: dict) -> list[str]:
    """Keys that differ (the paths themselves may move: the fingerprints decide)."""
    from unimedvl.eval.runner.batch import EvalSettings

    diffs = []
    if old.get("model", {}).get("fingerprint") != new["model"]["fingerprint"]:
        diffs.append(f"model ({old.get('model', {}).get('path')} -> {new['model']['path']}: weights or config differ)")
    for key in ("sha256", "data_dir"):
        if old.get("data", {}).get(key) != new["data"][key]:
            diffs.append(f"data.{key}")
    # Settings added later (e.g. weights) are compared at their default, which older runs used.
    old_settings = {**EvalSettings().to_json(), **old.get("settings", {})}
    diffs += [f"{k} ({old_settings.get(k)!r} -> {v!r})" for k, v in new["settings"].items() if old_settings.get(k) != v]
    return diffs


def check_run_dir(run_dir: Path, identity: dict, overwrite: bool) -> bool:
    """True when ``run_dir`` holds another run that --overwrite allows us to replace; UserError when
    it holds one without --overwrite; False when it is new or holds this run (resume)."""
    info = run_dir / RUN_INFO
    ours = [run_dir / RESULTS, run_dir / STATS, *run_dir.glob("results.rank*.jsonl")]
    if not info.is_file():
        if not any(p.is_file() and p.stat().st_size for p in ours):  # empty files hold no results
            return False
        why = f"{run_dir} holds results but no {RUN_INFO}, so they cannot be matched to this run"
    else:
        try:
            old = json.loads(info.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            old, why = None, f"{info} is unreadable ({err})"
        if old is not None:
            diffs = _differences(old, identity)
            if not diffs:
                return False
            why = f"{run_dir} holds results of another run; differs in: {'; '.join(diffs)}"
    if overwrite:
        return True
    raise UserError(f"{why}. Use a new --out, or pass --overwrite to replace those results")


def clear_run_dir(run_dir: Path) -> None:
    """Remove what a run left in ``run_dir`` (results, statistics, run_info.json, images)."""
    for path in [run_dir / RESULTS, run_dir / STATS, run_dir / RUN_INFO, *run_dir.glob("results.rank*.jsonl")]:
        path.unlink(missing_ok=True)
    shutil.rmtree(run_dir / "images", ignore_errors=True)


def write_run_info(run_dir: Path, identity: dict, model_id: str, world_size: int, device: str) -> None:
    """run_info.json, unless the folder has it (a resumed run keeps its creation record)."""
    if (run_dir / RUN_INFO).is_file():
        return
    info = {
        **identity,
        "model_id": model_id,
        "world_size": world_size,
        "device": device,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    with disk_full_reported("writing run_info.json", run_dir, "free space and rerun the same command"):
        atomic_write_text(run_dir / RUN_INFO, json.dumps(info, indent=2) + "\n")
