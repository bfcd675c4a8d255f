"""Stream safetensors into a model built on the meta device, tensor by tensor, with bounded host memory.

A naive load reads a whole state dict (one copy of the checkpoint), converts it (a second) and
copies it into a model (a third). Here the model is built on the meta device and each module is
filled as its tensors are read: ``get_tensor`` on a memory-mapped file returns a view (nothing
is read until it is touched), the view is converted and copied straight to where the tensor
goes, the module's tensors are assigned, and ``Placement.finish`` may replace the module (a
quantised Linear) before the next one is read.

The pages of the file that a copy touches count as the process's memory for as long as the file
is mapped, so a file is unmapped (its handle and views dropped, then reopened) whenever
``CHUNK_BYTES`` have been read through it, and a tensor larger than that (the embedding, lm_head)
is copied in row blocks with a fresh mapping each. A quantised plan's weights are quantised
block by block too (``Placement.accumulate``), so their full-precision matrix never exists. Host
memory therefore stays at what the model keeps in it plus about one block.

Copies are always made (``copy=True``): the mmap views sit at unaligned offsets (slow matmuls)
and would keep the file mapped for the life of the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from unimedvl.errors import CheckpointError, capped

CHUNK_BYTES = 32 * 2**20  # most bytes read through one mapping of a file before it is unmapped
_GROUP = re.compile(r"^(.*?\.\d+)\.")  # the prefix up to the first numeric path component


class Accumulator(Protocol):
    """Builds a stored tensor (e.g. a quantised weight) from row blocks of the checkpoint's tensor."""

    def add(self, rows: Tensor) -> None: ...  # rows [a:b] in order, converted and on the target device

    def finish(self) -> Tensor: ...


@dataclass
class Placement:
    """Where the tensors of a model go while it loads, and what happens to each module once it is in."""

    device: torch.device  # default device of every tensor
    route: Callable[[str], torch.device | None] | None = None  # group -> its device (None: the default)
    # Called with (module name, module) once its tensors are assigned; returns its replacement (or it).
    finish: Callable[[str, nn.Module], nn.Module] | None = None
    # key -> an Accumulator that builds the stored tensor from row blocks (None: a plain copy).
    accumulate: Callable[[str, tuple[int, ...], torch.dtype, torch.device], Accumulator | None] | None = None

    def device_for(self, key: str) -> torch.device:
        routed = self.route(group_of(key)) if self.route is not None else None
        return self.device if routed is None else routed


def group_of(key: str) -> str:
    """The layer of a tensor (``a.b.3`` for ``a.b.3.c.weight``) or, outside numbered layers, its module."""
    match = _GROUP.match(key)
    return match.group(1) if match else key.rpartition(".")[0]


def open_file(path: Path):
    """A safetensors handle (mmap), or a CheckpointError naming the file."""
    if not path.is_file():
        raise CheckpointError(
            f"{path}: weight file missing; copy it again (a sharded checkpoint needs every shard its index names)"
        )
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: cannot be read as safetensors ({err}); the file is truncated or corrupted: "
            "copy it again (only .safetensors files are loaded, never pickles)"
        ) from None


def check_header_shapes(expected: dict[str, tuple[int, ...]], files: dict[str, Path], where: str) -> None:
    """Compare the shapes a config implies with the safetensors headers, before anything is allocated.

    Reads only the headers (no tensor data). A CheckpointError names the first tensor that differs:
    a config.json claiming ``hidden_size`` 10^7 over 64-wide weights is refused in one line instead
    of allocating its tables first.
    """
    handles: dict[Path, Any] = {}
    for key, shape in expected.items():
        file = files.get(key)
        if file is None:
            continue
        if file not in handles:
            handles[file] = open_file(file)
        try:
            found = tuple(handles[file].get_slice(key).get_shape())
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{file}: tensor {capped(key)} cannot be read ({capped(err)})") from None
        if found != tuple(shape):
            raise CheckpointError(
                f"{where}: tensor {capped(key)} has shape {found} in {file.name} but the config implies "
                f"{tuple(shape)}; the config does not belong to these weights (compare its sizes, e.g. "
                "hidden_size, with the weights')"
            )


class _Files:
    """Open handles, each dropped (its touched pages unmapped) once CHUNK_BYTES were read through it."""

    def __init__(self):
        self._handles: dict[Path, list] = {}  # file -> [handle, bytes read through it]

    def view(self, file: Path, key: str) -> Tensor:
        if file not in self._handles:
            self._handles[file] = [open_file(file), 0]
        try:
            return self._handles[file][0].get_tensor(key)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{file}: tensor {key} cannot be read ({err})") from None

    def consumed(self, file: Path, nbytes: int) -> None:
        entry = self._handles.get(file)
        if entry is not None:
            entry[1] += nbytes
            if entry[1] >= CHUNK_BYTES:
                del self._handles[file]


def stream_into(
    model: nn.Module, files: dict[str, Path], keys: Iterable[str], where: str, dtype: torch.dtype, placement: Placement
) -> None:
    """Assign ``keys`` (checked beforehand) from ``files`` (key -> file) into ``model``, module by module.

    Floating-point tensors become ``dtype``; integer ones keep theirs. Shapes must match the
    model's (a CheckpointError names the tensor otherwise).
    """
    expected = dict(model.state_dict(keep_vars=True))
    modules = dict(model.named_modules())
    by_module: dict[str, list[str]] = {}
    for key in keys:
        by_module.setdefault(key.rpartition(".")[0], []).append(key)
    reader = _Files()
    for owner, owner_keys in by_module.items():
        state = {}
        for key in owner_keys:
            state[key.rpartition(".")[2]] = _load(
                reader, files[key], key, tuple(expected[key].shape), where, dtype, placement
            )
        module = modules[owner] if owner else model
        module.load_state_dict(state, strict=False, assign=True)
        if placement.finish is not None:
            replacement = placement.finish(owner, module)
            if replacement is not module:
                parent, _, child = owner.rpartition(".")
                setattr(modules[parent] if parent else model, child, replacement)


def _load(
    reader: _Files, file: Path, key: str, shape: tuple[int, ...], where: str, dtype: torch.dtype, placement: Placement
) -> Tensor:
    view = reader.view(file, key)
    if tuple(view.shape) != shape:
        raise CheckpointError(
            f"{where}: tensor {key} has shape {tuple(view.shape)} but the config implies {shape}; "
            "the config does not belong to these weights"
        )
    target = dtype if view.is_floating_point() else view.dtype
    device = placement.device_for(key)
    nbytes = view.numel() * view.element_size()
    sink = placement.accumulate(key, shape, target, device) if placement.accumulate is not None else None
    if sink is None and (nbytes <= CHUNK_BYTES or view.dim() == 0):
        out = view.to(device, target, copy=True)
        del view
        reader.consumed(file, nbytes)
        return out
    out = None
    if sink is None:
        out = torch.empty(shape, dtype=target, device=device)
    rows = max(1, CHUNK_BYTES * shape[0] // max(nbytes, 1))
    for start in range(0, shape[0], rows):
        block = view[start : start + rows]
        if sink is not None:
            # The accumulator reads the mapped rows itself when they are already what it needs.
            sink.add(block if (block.dtype, block.device) == (target, device) else block.to(device, target))
        else:
            out[start : start + rows].copy_(block)
        del view, block
        reader.consumed(file, CHUNK_BYTES)  # a fresh mapping for the next block
        if start + rows < shape[0]:
            view = reader.view(file, key)  # noqa: F841 (read at the top of the next iteration)
    return sink.finish() if sink is not None else out
