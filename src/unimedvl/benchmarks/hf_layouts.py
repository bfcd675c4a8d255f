"""Where a Hugging Face dataset's table files are, in the layouts researchers' downloads arrive in.

Read with pyarrow alone (the ``datasets`` package is not needed). Layouts (the ``datasets`` and
``huggingface_hub`` documentation: "Cache management", "Manage huggingface_hub cache-system",
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``):

* a parquet snapshot (``data/<split>-NNNNN-of-NNNNN-<hash>.parquet``, ``<split>.parquet``, the
  ``refs/convert/parquet`` branch's ``<config>/<split>/NNNN.parquet``);
* the hub cache of ``snapshot_download`` / ``load_dataset`` downloads: ``datasets--<org>--<name>/``
  with ``refs/main`` naming the snapshot under ``snapshots/<commit>/`` (its files are links into
  ``blobs/``); the snapshot ``refs/main`` names is read, else the newest;
* the ``datasets`` Arrow cache that ``load_dataset`` builds (``cache_dir``, as MultiMedEval,
  MedEvalKit and lmms-eval pass it): ``<org>___<name>/<config>/<version>/<hash>/<name>-<split>.arrow``
  (large splits: ``<name>-<split>-NNNNN-of-NNNNN.arrow``), Arrow IPC streams; the newest hash folder
  of a config is read;
* ``save_to_disk`` folders: ``dataset_dict.json`` with ``<split>/data-NNNNN-of-NNNNN.arrow`` (a
  DatasetDict), or ``data-*.arrow`` with ``state.json`` (one Dataset; its split is the ``_split`` in
  state.json, else the folder name).

Any of these may be the folder given or lie up to three levels below it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unimedvl.errors import UserError

_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_.]+?)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?\.parquet$")
_ARROW_SHARD = re.compile(r"-\d{5}-of-\d{5}$")
_MAX_DEPTH = 7  # below the folder given: datasets--o--n/snapshots/<sha>/data/x.parquet, o___n/cfg/ver/hash/x.arrow


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("reading a Hugging Face download needs pyarrow: pip install pyarrow") from None
    return pa, pq


def _hub_snapshot(repo: Path) -> Path | None:
    """The snapshot folder of a ``datasets--org--name`` hub-cache folder (refs/main's, else the newest)."""
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    found = sorted((p for p in snapshots.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _walk(root: Path, depth: int = 0) -> Iterator[Path]:
    """Table files under ``root``: a hub cache folder is read through its snapshot, ``blobs/`` never;
    of several Arrow-cache hash folders of one config, the newest."""
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return
    if root.name.startswith("datasets--") and (root / "snapshots").is_dir():
        snapshot = _hub_snapshot(root)
        if snapshot is not None:
            yield from _walk(snapshot, depth + 1)
        return
    files = [p for p in entries if p.suffix in (".parquet", ".arrow") and p.is_file()]
    yield from files
    if depth >= _MAX_DEPTH:
        return
    folders = [
        p for p in entries if p.is_dir() and p.name not in ("blobs", ".git", "refs") and not p.name.startswith(".")
    ]
    hashed = [
        p
        for p in folders
        if any(p.glob("*.arrow")) and (p / "dataset_info.json").is_file() and not (p / "state.json").is_file()
    ]  # load_dataset's <hash>/ folders (save_to_disk has state.json)
    if len(hashed) > 1:
        newest = max(hashed, key=lambda p: p.stat().st_mtime)
        folders = [p for p in folders if p not in hashed or p == newest]
    for folder in folders:
        yield from _walk(folder, depth + 1)


def table_files(root: Path) -> list[Path]:
    """Every parquet / Arrow file of a Hugging Face download under ``root`` (a file: itself)."""
    if root.is_file():
        return [root] if root.suffix in (".parquet", ".arrow") else []
    return list(_walk(root))


def split_of(path: Path) -> str:
    """The split a table file belongs to (see the module docstring)."""
    if path.suffix == ".parquet":
        match = _SHARD.match(path.name)
        if match:
            return match.group("split")
        if re.fullmatch(r"\d+", path.stem):  # refs/convert/parquet: <config>/<split>/0000.parquet
            return path.parent.name
        return path.stem
    stem = _ARROW_SHARD.sub("", path.stem)
    if stem == "data" or stem.startswith("data-"):  # save_to_disk: <split>/data-NNNNN-of-NNNNN.arrow
        state = path.parent / "state.json"
        try:
            split = json.loads(state.read_text(encoding="utf-8")).get("_split") if state.is_file() else None
        except (OSError, ValueError):
            split = None
        return str(split) if split else path.parent.name
    return stem.rsplit("-", 1)[-1]  # load_dataset cache: <name>-<split>.arrow


def splits(root: Path) -> list[str]:
    """The splits present, in name order."""
    return sorted({split_of(p) for p in table_files(root)})


def columns(path: Path) -> list[str]:
    """The column names of a table file (ValueError when it is not a readable parquet / Arrow file)."""
    pa, pq = _pyarrow()
    try:
        if path.suffix == ".parquet":
            return list(pq.ParquetFile(path).schema_arrow.names)
        return list(_open_arrow(pa, path).schema.names)
    except Exception as err:  # noqa: BLE001 - pyarrow raises its own error types for broken files
        raise ValueError(f"{type(err).__name__}: {err}") from None


def _open_arrow(pa, path: Path):
    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_stream(source)  # what datasets writes
    except pa.ArrowInvalid:
        return pa.ipc.open_file(pa.memory_map(str(path)))


def rows(path: Path, wanted: list[str], batch_rows: int = 64) -> Iterator[dict[str, Any]]:
    """The rows of a table file as dicts of the ``wanted`` columns present, a batch at a time."""
    pa, pq = _pyarrow()
    if path.suffix == ".parquet":
        handle = pq.ParquetFile(path)
        present = [c for c in wanted if c in handle.schema_arrow.names]
        for batch in handle.iter_batches(batch_size=batch_rows, columns=present):
            yield from batch.to_pylist()
        return
    reader = _open_arrow(pa, path)
    present = [c for c in wanted if c in reader.schema.names]
    batches = (
        reader
        if hasattr(reader, "read_next_batch")
        else (reader.get_batch(i) for i in range(reader.num_record_batches))
    )
    for batch in batches:
        yield from batch.select(present).to_pylist()


def is_save_to_disk(path: Path) -> bool:
    """A ``save_to_disk`` folder (or a folder holding only a load_dataset cache's metadata JSONs)."""
    return path.is_dir() and (
        (path / "dataset_dict.json").is_file()
        or (path / "state.json").is_file()
        or (path / "dataset_info.json").is_file()
    )
