"""Distribution for training: process group, device mesh, FSDP2 sharding, mixed precision, model build.

One code path for three setups: one process (CPU or one GPU; no process group, no sharding,
mixed precision by autocast), several gloo processes on CPU, and N GPUs with NCCL. The
environment that torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) is read here and
nowhere else.

Sharding strategies (the reference's names) on FSDP2 ``fully_shard``:

- ``FULL_SHARD``: 1-D mesh over all ranks; parameters resharded after forward.
- ``SHARD_GRAD_OP``: the same mesh, ``reshard_after_forward=False`` (parameters stay gathered
  between forward and backward).
- ``HYBRID_SHARD``: 2-D mesh (replicate, shard), ``num_replicate x num_shard = world``; by default
  one shard group per node (``num_shard`` = processes per node).
- ``NO_SHARD``: 2-D mesh (world, 1): every rank holds all weights, gradients are all-reduced
  (data parallel through the same FSDP2 code path; torch's ``replicate`` would be a second one).

``fully_shard`` goes on every decoder layer, every vision layer and the root. The frozen VAE is
NOT sharded (``ignored_params``): it is small (84M parameters) and the pixel losses decode a
data-dependent number of images per rank, which must not involve collectives.

Building: the model is constructed on the meta device, sharded, materialised with ``to_empty``,
then every rank reads the safetensors files itself (memory-mapped, one tensor at a time) and
keeps only its shard (``distribute_tensor(..., src_data_rank=None)``: no communication). Peak
host memory per rank is one tensor, not one model, and no rank waits for a broadcast.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from unimedvl.checkpoint.release import RECOMPUTED_KEYS, VAE_PREFIX, _open, find_weights, parse_dtype
from unimedvl.config import ModelConfig
from unimedvl.distributed import DistInfo, dist_env, start_distributed, stop_distributed  # noqa: F401
from unimedvl.errors import CheckpointError, ConfigError

log = logging.getLogger("unimedvl.train")

# Parameters of these prefixes exist only when the matching path is built.
UND_PREFIXES = ("vit_model.", "connector.", "vit_pos_embed.")
GEN_PREFIXES = ("time_embedder.", "vae2llm.", "llm2vae.", "latent_pos_embed.", "vae.")


def barrier(info: DistInfo) -> None:
    """Wait for all ranks; nothing to wait for in a one-process run."""
    if info.distributed:
        dist.barrier()


def all_reduce_sum(values: Tensor, info: DistInfo) -> Tensor:
    """Sum a small tensor over all ranks (a no-op in one process). Returns a new tensor."""
    out = values.detach().clone().to(info.device)
    if info.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


# ---------------------------------------------------------------------------------------------
# Mesh.


def mesh_shape(
    strategy: str, world_size: int, local_world_size: int = 1, num_replicate: int = 0, num_shard: int = 0
) -> tuple[int, int]:
    """(replicate, shard) sizes of the mesh for ``strategy``; raises ConfigError when they do not fit the world."""
    if strategy in ("FULL_SHARD", "SHARD_GRAD_OP"):
        if (num_replicate or num_shard) and (num_replicate or 1) * (num_shard or world_size) != world_size:
            raise ConfigError(
                f"sharding_strategy={strategy} shards over all {world_size} ranks; num_replicate/num_shard "
                f"({num_replicate}/{num_shard}) apply to HYBRID_SHARD only: drop them or use HYBRID_SHARD"
            )
        return 1, world_size
    if strategy == "NO_SHARD":
        return world_size, 1
    if strategy != "HYBRID_SHARD":
        raise ConfigError(f"sharding_strategy={strategy!r}; choose FULL_SHARD, HYBRID_SHARD, SHARD_GRAD_OP or NO_SHARD")
    given_r, given_s = num_replicate, num_shard
    if num_shard == 0 and num_replicate == 0:
        num_shard = local_world_size if world_size % max(local_world_size, 1) == 0 else world_size
    if num_shard == 0:
        num_shard = world_size // num_replicate if num_replicate and world_size % num_replicate == 0 else 0
    if num_replicate == 0:
        num_replicate = world_size // num_shard if num_shard and world_size % num_shard == 0 else 0
    if num_replicate * num_shard != world_size or num_replicate < 1 or num_shard < 1:
        given = " x ".join(f"{k}={v}" for k, v in (("num_replicate", given_r), ("num_shard", given_s)) if v)
        raise ConfigError(
            f"sharding_strategy=HYBRID_SHARD needs num_replicate x num_shard = world size {world_size}, got "
            f"{given or 'sizes that do not divide it'}: pick sizes whose product is "
            f"{world_size} (e.g. --num_replicate {max(world_size // max(local_world_size, 1), 1)} "
            f"--num_shard {min(local_world_size, world_size)})"
        )
    return num_replicate, num_shard


def build_mesh(strategy: str, info: DistInfo, num_replicate: int = 0, num_shard: int = 0):
    """The data-parallel DeviceMesh for ``strategy`` (None in one process: nothing is sharded)."""
    replicate, shard = mesh_shape(strategy, info.world_size, info.local_world_size, num_replicate, num_shard)
    if not info.distributed:
        return None
    from torch.distributed.device_mesh import init_device_mesh

    if strategy in ("FULL_SHARD", "SHARD_GRAD_OP"):
        return init_device_mesh(info.device.type, (shard,), mesh_dim_names=("shard",))
    return init_device_mesh(info.device.type, (replicate, shard), mesh_dim_names=("replicate", "shard"))


# ---------------------------------------------------------------------------------------------
# Sharding, activation checkpointing, mixed precision.


def sharded_blocks(model: nn.Module) -> list[nn.Module]:
    """The per-layer units: decoder layers, then vision layers."""
    blocks = list(model.language_model.model.layers)
    if getattr(model.config, "visual_und", False) and hasattr(model, "vit_model"):
        blocks += list(model.vit_model.vision_model.encoder.layers)
    return blocks


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute every decoder and vision layer in backward (composable API: names unchanged)."""
    from torch.distributed._composable import checkpoint

    for block in sharded_blocks(model):
        checkpoint(block)


def apply_fsdp(model: nn.Module, mesh, strategy: str, param_dtype: torch.dtype, ignored: set | None = None) -> None:
    """``fully_shard`` per layer and at the root; the VAE (and ``ignored`` parameters) stay whole on every rank."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    reshard = strategy != "SHARD_GRAD_OP"
    ignored = set(ignored or ())
    for block in sharded_blocks(model):
        fully_shard(
            block,
            mesh=mesh,
            reshard_after_forward=reshard,
            mp_policy=mp,
            ignored_params={p for p in block.parameters() if p in ignored} or None,
        )
    if hasattr(model, "vae"):
        ignored |= set(model.vae.parameters())
    fully_shard(model, mesh=mesh, reshard_after_forward=False, mp_policy=mp, ignored_params=ignored or None)
    # Losses are already divided by the global token counts: gradients must be summed over ranks
    # (plain SUM collectives: gloo has no PREMUL_SUM, and NCCL is zero-copy with SUM).
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)


def autocast(info: DistInfo, dtype: torch.dtype, sharded: bool):
    """Mixed precision for the unsharded (one process) case; FSDP2 casts by its policy instead."""
    if sharded or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(info.device.type, dtype=dtype)


def compute_dtype(name: str, info: DistInfo) -> torch.dtype:
    """The training dtype for ``name``: ``auto`` is bf16 on CUDA and fp32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if info.device.type == "cuda" else torch.float32
    return parse_dtype(name)


# ---------------------------------------------------------------------------------------------
# Loading weights into a (possibly sharded) model.


def local_tensor(t: Tensor) -> Tensor:
    """The rank-local part of a DTensor (the tensor itself otherwise)."""
    return t.to_local() if hasattr(t, "to_local") else t


def _copy_into(target: Tensor, value: Tensor) -> None:
    with torch.no_grad():
        if hasattr(target, "device_mesh"):
            from torch.distributed.tensor import distribute_tensor

            value = value.to(device=target.device, dtype=target.dtype)
            target.copy_(distribute_tensor(value, target.device_mesh, target.placements, src_data_rank=None))
        else:
            target.copy_(value.to(device=target.device, dtype=target.dtype))


def _disabled_prefixes(cfg: ModelConfig) -> tuple[str, ...]:
    out: tuple[str, ...] = ()
    if not cfg.visual_und:
        out += UND_PREFIXES
    if not cfg.visual_gen:
        out += GEN_PREFIXES
    return out


def load_weights(model: nn.Module, path: str | Path, prefer: str = "ema", skip: tuple[str, ...] = ()) -> None:
    """Copy a release-layout checkpoint into ``model`` (plain or sharded), one tensor at a time.

    Keys of a disabled path (e.g. ViT weights when visual_und is off) are ignored; keys named in
    ``skip`` (prefixes, e.g. LoRA adapters) may be missing; anything else missing or extra is a
    CheckpointError naming the keys.
    """
    path = Path(path)
    source = find_weights(path, prefer)
    files = dict(source.files)
    if hasattr(model, "vae"):
        ae = path / "ae.safetensors"
        if not ae.is_file():
            raise CheckpointError(f"{path}: visual_gen is on but ae.safetensors is missing")
        with _open(ae) as f:
            files.update({VAE_PREFIX + k: ae for k in f.keys()})
    targets = model.state_dict()
    disabled = _disabled_prefixes(model.config)
    missing = sorted(
        k for k in targets if k not in files and k not in RECOMPUTED_KEYS and not any(s in k for s in skip)
    )
    unexpected = sorted(k for k in files if k not in targets and not k.startswith(disabled))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(
                f"unexpected {len(unexpected)} key(s): {', '.join(unexpected[:5])}"
                f"{' ...' if len(unexpected) > 5 else ''}"
            )
        raise CheckpointError(f"{path}: weights do not match the model ({'; '.join(parts)})")
    by_file: dict[Path, list[str]] = {}
    for key in targets:
        if key in files:
            by_file.setdefault(files[key], []).append(key)
    for file, keys in by_file.items():
        with _open(file) as f:
            names = set(f.keys())
            for key in keys:
                stored = key[len(VAE_PREFIX) :] if key.startswith(VAE_PREFIX) and key not in names else key
                value = f.get_tensor(stored)
                target = targets[key]
                if tuple(value.shape) != tuple(target.shape):
                    if key in RECOMPUTED_KEYS:
                        continue  # another table size: keep the recomputed one
                    raise CheckpointError(
                        f"{file}: tensor {key} has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}"
                    )
                _copy_into(target, value)


def reset_recomputed(model: nn.Module) -> None:
    """Recompute the sin-cos position tables (buffers) after ``to_empty``."""
    from unimedvl.models.embeddings import PositionEmbedding

    for module in model.modules():
        if isinstance(module, PositionEmbedding):
            module.reset_parameters()
