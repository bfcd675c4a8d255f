"""Writing MedSynth (and the real-image set) to disk: PNGs, JSONL and YAML with stable bytes.

Shared by :mod:`.generator` and :mod:`.real_set`; the same records and seed give byte-identical files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from unimedvl.errors import ConfigError


def save_png(path: Path, img: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="PNG", compress_level=6)  # no metadata: identical bytes per seed


def prepare_output_dir(out: Path, overwrite: bool, marker: str = "train.jsonl") -> None:
    """Create ``out``; refuse a non-empty folder unless ``overwrite`` and it holds our ``marker`` file
    or ``images/`` (then our images and JSONL files are removed first, so no stale files remain)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"{out} is not empty; choose an empty or new folder, or pass --overwrite "
                "to replace a previous MedSynth there"
            )
        if not (out / marker).exists() and not (out / "images").exists():
            raise ConfigError(
                f"{out} does not look like a folder written by unimedvl (no {marker} or images/); "
                "refusing to overwrite it, choose another --out"
            )
        shutil.rmtree(out / "images", ignore_errors=True)
        for f in out.glob("*.jsonl"):
            f.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON object per line, UTF-8, keys in insertion order (stable bytes for the same records)."""
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def write_yaml(path: Path, data: dict, header: str) -> None:
    """``data`` as block YAML (key order kept) under ``header`` written as comment lines."""
    text = "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
