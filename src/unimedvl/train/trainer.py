"""Trainer: build (checks first), ``forward_backward_step``, ``train_step``, ``train``, ``validate``, ``save``.

Loss normalisation (spec section 4): before the micro-batches of one optimizer step run, every
rank counts its CE token weights, flow-loss tokens and noised images; one all-reduce gives the
totals of the whole step on all ranks, and each micro-batch's loss is its *sum* divided by those
totals. Gradients are then summed over ranks (FSDP2's divide factor is 1), so the update equals
one big batch of the same tokens whatever the world size or accumulation split.

Flow noise and timesteps come from a generator seeded by (seed, global micro-batch index), so a
resumed run draws exactly what an uninterrupted one would, and 1 process x 2 accumulation steps
draws what 2 processes x 1 step do.

Collectives must match across ranks: a rank whose batch has no ViT image still runs the (sharded)
vision layers on one dummy patch with a zero-weighted loss; the VAE is not sharded, so pixel
losses may decode different numbers of images per rank.
"""

from __future__ import annotations

import logging
import math
import resource
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from unimedvl.checkpoint.adapters import base_fingerprint, gather_trainable, write_adapter
from unimedvl.checkpoint.inference_config import InferenceConfig, with_pixel_cap
from unimedvl.checkpoint.model_card import ModelCard
from unimedvl.checkpoint.release import check_weight_shapes, find_weights, parse_dtype, read_model_config, save_model
from unimedvl.config import ModelConfig, save_yaml
from unimedvl.errors import CheckpointError, ConfigError, DiskFullError
from unimedvl.fileio import disk_full_reported
from unimedvl.host_memory import keep_large_blocks_mapped
from unimedvl.models.latent_cache import LatentCache
from unimedvl.models.packed_batch import PackedBatch
from unimedvl.run_lock import RunLock
from unimedvl.tokenizer import Tokenizer
from unimedvl.train import checkpointing as ckpt
from unimedvl.train.config import TrainConfig, config_dict
from unimedvl.train.ema import EMA
from unimedvl.train.lora import inject_lora_parts, lora_enabled, lora_scales, merge_lora_state, reset_lora
from unimedvl.train.losses import PixelLossConfig, ce_weight_sum, count_mse_tokens, count_noised_images, pixel_losses
from unimedvl.train.metrics_log import RunLogger, peak_flops, step_flops
from unimedvl.train.parallel import (
    DistInfo,
    all_reduce_sum,
    apply_activation_checkpointing,
    apply_fsdp,
    autocast,
    build_mesh,
    compute_dtype,
    load_weights,
    mesh_shape,
    reset_recomputed,
    start_distributed,
)
from unimedvl.train.params import apply_freezing, build_optimizer, hold_frozen_in, lr_at, set_lr
from unimedvl.train.qlora import check_qlora_setup, check_quantize_base
from unimedvl.train.setup_checks import LoaderFactory, _check_file, _warn_about_settings, resolve_loader_factory
from unimedvl.train.skip_log import SkipLog
from unimedvl.train.stop_request import StopRequest

log = logging.getLogger("unimedvl.train")

DEFAULT_LOADER = "unimedvl.data.loader:build_loader"


class Trainer:
    """One training run of the unified model (see module docstring)."""

    def __init__(self, cfg: TrainConfig, loader_factory: LoaderFactory | None = None):
        self.cfg = cfg
        self.loader_factory = loader_factory
        self.step = 0
        self.info: DistInfo | None = None
        self.logger: RunLogger | None = None
        self.ema: EMA | None = None
        self.latent_cache: LatentCache | None = None
        self._lock = RunLock(cfg.checkpoint_dir, "train")  # taken in setup (rank 0), dropped at the end of train
        self.stopped = False  # True when a SIGTERM ended the run before total_steps

    # -- build --------------------------------------------------------------------------------

    def setup(self) -> Trainer:
        """Everything that can fail before step 1, cheapest checks first."""
        cfg = self.cfg
        keep_large_blocks_mapped()  # freed activations leave the resident set (host_memory.py)
        cfg.require_inputs()
        for flag in ("dataset_config_file", "val_dataset_config_file", "dataset_info_file"):
            _check_file(getattr(cfg, flag), flag)
        from unimedvl.train.parallel import dist_env

        env = dist_env()
        mesh_shape(cfg.sharding_strategy, env.world_size, env.local_world_size, cfg.num_replicate, cfg.num_shard)
        self.model_cfg, self.weights_dir, self.prefer = self._model_source()
        if cfg.max_memory:  # choose the training plan (or refuse) before anything is loaded or written
            from unimedvl.checkpoint.train_memory import apply_max_memory

            log.info(
                apply_max_memory(
                    cfg,
                    self.model_cfg,
                    env.world_size,
                    cuda=cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()),
                )
            )
        check_quantize_base(cfg.quantize_base)  # the library can run: refused before the folder exists
        # Before anything reads or cleans the folder: a second run would remove this one's partial save.
        if env.rank == 0:
            self._lock.acquire()
        self.tokenizer = self._tokenizer()
        if self.loader_factory is None:
            self.loader_factory = resolve_loader_factory(cfg.loader)

        self.info = info = start_distributed(cfg.device)
        if info.is_main:
            self._remove_partial_saves()
        self.dtype = compute_dtype(cfg.dtype, info)
        _warn_about_settings(cfg, info.device)
        self.mesh = build_mesh(cfg.sharding_strategy, info, cfg.num_replicate, cfg.num_shard)
        self.resume_dir = self._resume_dir()
        check_qlora_setup(cfg, self.resume_dir, ckpt.read_manifest(self.resume_dir) if self.resume_dir else None)
        # LoRA checkpoints hold adapters and name their base by a fingerprint (checkpoint/adapters.py).
        self.adapter_base = base_fingerprint(self.weights_dir, self.prefer) if lora_enabled(cfg) else None

        rank_state = None
        if self.resume_dir:
            saved_world = ckpt.read_manifest(self.resume_dir).get("world_size", info.world_size)
            if saved_world == info.world_size:
                rank_state = ckpt.read_rank_state(self.resume_dir, info.rank)
            if rank_state is None:
                log.warning(
                    "%s was written by %d process(es), this run has %d: weights and optimizer are restored "
                    "but the data streams restart from the beginning",
                    self.resume_dir,
                    saved_world,
                    info.world_size,
                )
        self.loader = self.loader_factory(
            cfg.data_config(),
            self.model_cfg,
            self.tokenizer,
            rank=info.rank,
            world_size=info.world_size,
            state=rank_state["data"] if rank_state else None,
        )
        self.val_loader = None
        if cfg.val_dataset_config_file:
            self.val_loader = self.loader_factory(
                cfg.data_config(cfg.val_dataset_config_file, conditional_dropout=False),
                self.model_cfg,
                self.tokenizer,
                rank=info.rank,
                world_size=info.world_size,
                state=None,
            )
            self._val_start = self.val_loader.state_dict()
        self.inference_config = self._inference_config()
        if cfg.visual_gen and not self.loader.has_generation_data():
            raise ConfigError(
                f"visual_gen is True but the data mix {cfg.dataset_config_file} has no generation data (no image "
                "carries a flow loss): add a generation dataset or pass --visual_gen False"
            )
        if cfg.visual_und and not (self.loader.has_understanding_data() or self.loader.has_generation_data()):
            log.warning("the data mix has no understanding data")

        self.model = self._build_model()
        self.latent_cache = LatentCache(cfg.latent_cache_mb << 20) if cfg.cache_latents and cfg.visual_gen else None
        self.optimizer = build_optimizer(self.model, cfg)
        self.ema = EMA(self.model, cfg.ema) if cfg.ema > 0 else None
        if self.ema is not None and cfg.ema**cfg.total_steps > 0.1:
            # Evaluation and inference read ema.safetensors by default: warn before it surprises.
            log.warning(
                "ema %g over total_steps %d keeps %.0f%% of the starting weights in ema.safetensors; "
                "use a smaller --ema (e.g. %g; 0 disables it) or evaluate with --weights model",
                cfg.ema,
                cfg.total_steps,
                100 * cfg.ema**cfg.total_steps,
                max(0.0, round(1 - 5 / cfg.total_steps, 4)),
            )
        self.pixel_cfg = PixelLossConfig(
            cfg.pixel_loss_weight,
            cfg.pixel_loss_type,
            cfg.pixel_loss_max_t,
            cfg.ssim_loss_weight,
            cfg.ssim_loss_max_t,
            cfg.ssim_grad_scale,
            cfg.pixel_decode_chunk,
        )
        if self.resume_dir:
            self._resume(self.resume_dir, rank_state)
        self.data_iter: Iterator[PackedBatch] = iter(self.loader)
        self.skips = SkipLog(self.loader, info)  # skipped records: logged once, counted (skip_log.py)
        self.peak = peak_flops(info.device)
        out = Path(cfg.checkpoint_dir)
        with disk_full_reported("starting the run", out, "free space and rerun"):
            if info.is_main:
                out.mkdir(parents=True, exist_ok=True)
                save_yaml(config_dict(cfg), out / "train_config.yaml")
            self.logger = RunLogger(out, info.is_main, cfg.total_steps, self.step, cfg.tensorboard, cfg.progress_bar)
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in self.model.parameters())
        log.info(
            "model %s: %.1fM parameters, %.1fM trainable; world %d (%s), device %s, dtype %s; start step %d",
            self.weights_dir,
            n_all / 1e6,
            n_train / 1e6,
            info.world_size,
            cfg.sharding_strategy,
            info.device,
            str(self.dtype).replace("torch.", ""),
            self.step,
        )
        return self

    def _model_source(self) -> tuple[ModelConfig, Path, str]:
        cfg = self.cfg
        prefer = "ema" if cfg.finetune_from_ema else "model"
        weights_dir = Path(cfg.resume_from) if cfg.resume_model_only else Path(cfg.model_path)
        config_dir = Path(cfg.model_path)
        if not config_dir.is_dir():
            raise CheckpointError(f"--model_path {config_dir}: directory not found")
        mcfg = read_model_config(config_dir)  # names the missing files
        if not weights_dir.is_dir():
            raise CheckpointError(f"--resume_from {weights_dir}: directory not found")
        find_weights(weights_dir, prefer)  # raises when no weights file is there
        if cfg.visual_gen and not mcfg.visual_gen:
            raise CheckpointError(f"--model_path {config_dir}: no VAE (ae.safetensors); pass --visual_gen False")
        if cfg.visual_und and not mcfg.visual_und:
            raise CheckpointError(
                f"--model_path {config_dir}: no vision encoder (vit_config.json); pass --visual_und False"
            )
        if cfg.visual_gen and not (weights_dir / "ae.safetensors").is_file():
            raise CheckpointError(f"{weights_dir}: ae.safetensors is missing (needed with visual_gen True)")
        mcfg.visual_gen, mcfg.visual_und = cfg.visual_gen, cfg.visual_und
        mcfg.attn_backend, mcfg.timestep_shift = cfg.attn_backend, cfg.timestep_shift
        return mcfg, weights_dir, prefer

    def _inference_config(self) -> InferenceConfig:
        """What the checkpoints will say about feeding and sampling: the data's transforms, else the
        starting checkpoint's (the release defaults for a directory without inference_config.json)."""
        base = InferenceConfig.load(self.cfg.model_path)
        vae, vit = (
            with_pixel_cap(t, b)
            for t, b in zip(self.loader.image_transforms(), (base.vae_transform, base.vit_transform))
        )
        return replace(base, vae_transform=vae, vit_transform=vit)

    def _model_card(self) -> ModelCard:
        cfg = self.cfg
        training = {
            "steps": f"{self.step} of {cfg.total_steps}",
            "data mix": cfg.dataset_config_file,
            "started from": cfg.resume_from if cfg.resume_model_only else cfg.model_path,
            "learning rate": f"{cfg.lr:g} ({cfg.lr_scheduler}, warmup {cfg.warmup_steps})",
            "losses": f"ce {cfg.ce_weight:g}, mse {cfg.mse_weight:g}, pixel {cfg.pixel_loss_weight:g}, "
            f"ssim {cfg.ssim_loss_weight:g}",
            "paths trained": ", ".join(
                p for p, on in (("understanding", cfg.visual_und), ("generation", cfg.visual_gen)) if on
            ),
            "seed": cfg.seed,
        }
        groups = getattr(getattr(self.loader, "mix", None), "groups", None)
        if groups:
            training["datasets"] = {g.key: f"{g.num_records} records, weight {g.weight:g}" for g in groups}
        return ModelCard(
            summary=f"A UniMedVL checkpoint after {self.step} training steps.",
            training=training,
            notes=[
                "Weights: `ema.safetensors` (EMA) and `model.safetensors` (raw)."
                if self.ema
                else "Weights: `ema.safetensors` (the trained weights; no EMA was kept)."
            ],
        )

    def _tokenizer(self) -> Tokenizer:
        for where in (Path(self.cfg.model_path), self.weights_dir):
            if (where / "tokenizer.json").is_file() or (where / "vocab.json").is_file():
                return Tokenizer.from_dir(where)
        raise CheckpointError(
            f"--model_path {self.cfg.model_path}: no tokenizer files (tokenizer.json or vocab.json + merges.txt)"
        )

    def _resume_dir(self) -> Path | None:
        cfg = self.cfg
        if cfg.auto_resume:
            latest = ckpt.latest_checkpoint(cfg.checkpoint_dir)
            if latest is not None:
                return latest
        if cfg.resume_from and not cfg.resume_model_only:
            path = Path(cfg.resume_from)
            if not ckpt.is_complete(path):
                raise CheckpointError(
                    f"--resume_from {path}: not a complete training checkpoint (no {ckpt.MANIFEST} and "
                    f"{ckpt.STATE_DIR}/); to start from its weights only pass --resume_model_only True"
                )
            return path
        return None

    def _build_model(self):
        from unimedvl.models.unified import UnifiedModel

        cfg, info = self.cfg, self.info
        train_vae = not cfg.freeze_vae and cfg.pixel_losses and self.model_cfg.visual_gen
        if not cfg.freeze_vae and not train_vae:
            log.warning("freeze_vae False ignored: the VAE only trains through a pixel/SSIM loss")
        self.train_vae = train_vae
        with torch.device("meta"):
            model = UnifiedModel(self.model_cfg)
        check_weight_shapes(model, find_weights(self.weights_dir, self.prefer), str(self.weights_dir))  # allocates none
        apply_freezing(model, cfg.freeze_llm, cfg.freeze_vit, train_vae)
        if lora_enabled(cfg):
            for part, names in inject_lora_parts(model, cfg).items():
                log.info("LoRA in %s: %d linear layers", part, len(names))
        self.sharded = self.mesh is not None
        if cfg.quantize_base != "none":
            from unimedvl.train.qlora_build import build_quantized

            build_quantized(
                model,
                self.weights_dir,
                self.prefer,
                cfg.quantize_base,
                info.device,
                self.dtype,
                cfg.seed,
                cfg.gradient_checkpointing,
                self.mesh,
                cfg.sharding_strategy,
            )
        else:
            if cfg.gradient_checkpointing:
                apply_activation_checkpointing(model)
            if self.sharded:
                apply_fsdp(model, self.mesh, cfg.sharding_strategy, self.dtype)
            model.to_empty(device=info.device)
            reset_recomputed(model)
            load_weights(model, self.weights_dir, self.prefer, skip=(".lora_A", ".lora_B"))
            reset_lora(model, cfg.seed)
            if lora_enabled(cfg) and not self.sharded:
                hold_frozen_in(model, self.dtype)  # LoRA on a bf16 base: the frozen weights in the compute dtype
        if hasattr(model, "vae") and not train_vae and self.dtype != torch.float32:
            model.vae.to(self.dtype)  # frozen and replicated: keep it in the compute dtype
        return model

    def _resume(self, path: Path, rank_state: dict | None) -> None:
        cfg = self.cfg
        manifest = ckpt.read_manifest(path)
        has_ema = "ema" in manifest.get("contents", [])
        ckpt.load_train_state(
            path,
            self.model,
            self.optimizer,
            self.ema.state if self.ema and has_ema else None,
            with_optimizer=cfg.resume_model_optimizer,
        )
        if self.ema is not None and not has_ema:
            self.ema.copy_from_model()  # the checkpoint had no EMA: start it from the restored weights
        self.step = int(manifest["step"])
        if rank_state is not None:
            ckpt.set_rng_state(rank_state["rng"])
        log.info("resumed from %s at step %d", path, self.step)

    # -- steps --------------------------------------------------------------------------------

    def _generator(self, micro: int) -> torch.Generator:
        accum, world = self.cfg.gradient_accumulation_steps, self.info.world_size
        index = (self.step * accum + micro) * world + self.info.rank
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + index)

    def _dummy_vit(self, batch: PackedBatch) -> Tensor | None:
        """Run the sharded vision layers on one patch when the batch has no ViT image (collectives must match)."""
        if not (self.sharded and self.model_cfg.visual_und) or batch.vit_indexes.numel():
            return None
        vit = self.model.vit_model
        dim = self.model_cfg.vit.patch_size**2 * 3
        dtype = self.model.dtype
        patch = torch.zeros(1, dim, device=self.info.device, dtype=dtype)
        out = vit(patch, torch.zeros(1, dtype=torch.long, device=self.info.device), [1])
        return out.float().sum() * 0.0

    def _normalizers(self, batches: list[PackedBatch]) -> tuple[float, float, float]:
        local = torch.tensor(
            [[ce_weight_sum(b), count_mse_tokens(b), count_noised_images(b)] for b in batches], dtype=torch.float64
        ).sum(0)
        total = all_reduce_sum(local, self.info).cpu()
        return float(total[0]), float(total[1]), float(total[2])

    def forward_backward_step(
        self, batch: PackedBatch, micro: int, norms: tuple[float, float, float], backward: bool = True
    ) -> dict[str, float]:
        """Forward one micro-batch with the step's global normalisers, backward its weighted loss; returns sums."""
        cfg = self.cfg
        ce_norm, mse_norm, img_norm = (max(n, 1.0) for n in norms)
        batch = batch.to(self.info.device)
        with autocast(self.info, self.dtype, self.sharded):
            out = self.model(
                batch,
                generator=self._generator(micro),
                ce_normalizer=ce_norm,
                mse_normalizer=mse_norm,
                latent_cache=self.latent_cache,
            )
            loss = cfg.ce_weight * out["ce"] + cfg.mse_weight * out["mse"]
            stats = {"ce": float(out["ce"].detach()), "mse": float(out["mse"].detach())}
            if self.pixel_cfg.enabled:
                pix = pixel_losses(
                    self.model.vae,
                    batch,
                    out,
                    self.pixel_cfg,
                    img_norm,
                    self.model_cfg.latent_patch_size,
                    self.model_cfg.vae.z_channels,
                )
                loss = loss + cfg.pixel_loss_weight * pix["pixel"] + cfg.ssim_loss_weight * pix["ssim"]
                stats.update(
                    pixel=float(pix["pixel"].detach()),
                    ssim=float(pix["ssim"].detach()),
                    pixel_dropped=float(pix["dropped"]),
                )
            dummy = self._dummy_vit(batch)
            if dummy is not None:
                loss = loss + dummy
        if backward:
            loss.backward()
        stats["loss"] = float(loss.detach())
        stats["tokens"] = float(batch.sequence_length)
        return stats

    def _sync_replicated_grads(self) -> None:
        """The VAE decoder (trainable only with pixel losses) is replicated: sum its gradients over ranks."""
        if not (self.train_vae and self.info.distributed):
            return
        for p in self.model.vae.decoder.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)

    def _fill_missing_grads(self) -> None:
        """Zero gradients for parameters this step did not reach (e.g. the ViT on a batch without images).

        Under FSDP every rank's parameters get a (possibly zero) gradient; AdamW then still applies its
        momentum. Doing the same in one process keeps the update independent of the world size.
        """
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)

    def _clip(self) -> float:
        """Clip the global gradient norm; sharded (DTensor) and replicated (plain) gradients are normed apart."""
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        sharded = [p for p in params if hasattr(p.grad, "full_tensor")]
        plain = [p for p in params if not hasattr(p.grad, "full_tensor")]
        squares = torch.zeros((), dtype=torch.float64)
        for group in (sharded, plain):
            if group:
                norm = torch.nn.utils.get_total_norm([p.grad for p in group], foreach=True)
                norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
                squares += float(norm) ** 2
        total = float(squares.sqrt())
        if self.cfg.max_grad_norm > 0 and math.isfinite(total):
            for group in (sharded, plain):
                if group:
                    torch.nn.utils.clip_grads_with_norm_(
                        group, self.cfg.max_grad_norm, torch.tensor(total), foreach=True
                    )
        return total

    def train_step(self) -> dict[str, float]:
        """One optimizer step: fetch the micro-batches, normalise globally, forward/backward, clip, update, EMA."""
        cfg = self.cfg
        start = time.perf_counter()
        batches = [next(self.data_iter) for _ in range(cfg.gradient_accumulation_steps)]
        norms = self._normalizers(batches)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for micro, batch in enumerate(batches):
            for key, value in self.forward_backward_step(batch, micro, norms).items():
                sums[key] = sums.get(key, 0.0) + value
        self._sync_replicated_grads()
        self._fill_missing_grads()
        grad_norm = self._clip()
        lr = lr_at(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.total_steps, cfg.lr_scheduler)
        skipped = not math.isfinite(grad_norm)
        if skipped:
            log.warning("step %d: non-finite gradient norm; update skipped", self.step + 1)
            self.optimizer.zero_grad(set_to_none=True)
        else:
            set_lr(self.optimizer, lr)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update()
        keys = sorted(sums)
        totals = all_reduce_sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64), self.info).cpu()
        metrics = dict(zip(keys, totals.tolist()))
        elapsed = time.perf_counter() - start
        metrics.update(
            lr=lr,
            grad_norm=grad_norm,
            step_time=elapsed,
            skipped=float(skipped),
            ce_tokens=norms[0],
            mse_tokens=norms[1],
            tokens_per_s=metrics.pop("tokens") / elapsed,
        )
        if self.peak:
            flops = float(all_reduce_sum(torch.tensor(step_flops(batches, self.model_cfg)), self.info))
            metrics["mfu"] = flops / elapsed / (self.peak * self.info.world_size)
        metrics["peak_mem_gb"] = peak_memory_gb(self.info.device)
        if self.latent_cache is not None:
            metrics["latent_cache_hit_rate"] = self.latent_cache.hit_rate
        return metrics

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation losses over ``val_batches`` packed batches per rank (same batches at every call)."""
        cfg = self.cfg
        self.val_loader.load_state_dict(self._val_start)  # the same batches at every call
        it = iter(self.val_loader)
        sums = torch.zeros(4, dtype=torch.float64)
        for k in range(cfg.val_batches):
            batch = next(it).to(self.info.device)
            g = torch.Generator().manual_seed(cfg.seed * 7919 + k * self.info.world_size + self.info.rank)
            with autocast(self.info, self.dtype, self.sharded):
                out = self.model(batch, generator=g, latent_cache=self.latent_cache)
                self._dummy_vit(batch)
            sums += torch.tensor(
                [float(out["ce_sum"]), ce_weight_sum(batch), float(out["mse_sum"]), float(out["mse_tokens"])],
                dtype=torch.float64,
            )
        total = all_reduce_sum(sums, self.info).cpu()
        ce = float(total[0] / max(float(total[1]), 1.0))
        mse = float(total[2] / max(float(total[3]), 1.0))
        return {
            "val_ce": ce,
            "val_mse": mse,
            "val_loss": cfg.ce_weight * ce + cfg.mse_weight * mse,
            "val_ce_tokens": float(total[1]),
            "val_mse_tokens": float(total[3]),
        }

    def train(self) -> dict[str, float]:
        """Run until ``total_steps``: log, validate, checkpoint (always at the end). Returns the last metrics."""
        if self.info is None:
            try:
                self.setup()
            except BaseException:
                self._lock.release()
                raise
        cfg = self.cfg
        metrics: dict[str, float] = {}
        stop = StopRequest("training").install()  # SIGTERM: finish the step, save, return (stop_request.py)
        try:
            while self.step < cfg.total_steps:
                metrics = self.train_step()
                self.skips.update(metrics)
                self.step += 1
                log_now = self.step % cfg.log_every == 0 or self.step == cfg.total_steps or self.step == 1
                self.logger.step(self.step, metrics, log_now)
                if cfg.val_dataset_config_file and cfg.val_every and self.step % cfg.val_every == 0:
                    self.logger.validation(self.step, self.validate())
                if self.step % cfg.save_every == 0 or self.step == cfg.total_steps:
                    if cfg.val_dataset_config_file and not cfg.val_every:
                        self.logger.validation(self.step, self.validate())
                    self.save()
                if stop.should_stop(self.info):  # every rank agrees
                    break
            if not (Path(cfg.checkpoint_dir) / ckpt.step_dir_name(self.step)).is_dir():
                self.save()  # resumed at the end with no final checkpoint, or stopped by SIGTERM
            self.skips.log_summary()
            self.stopped = stop.report(self.step, cfg.total_steps, cfg.checkpoint_dir, cfg.auto_resume)
        finally:
            stop.uninstall()
            self.logger.close()
            self._lock.release()
        return metrics

    # -- checkpoints --------------------------------------------------------------------------

    def _gather(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """Full CPU copies of (possibly sharded) tensors on rank 0 ({} elsewhere); all ranks must call it."""
        out = {}
        save_dtype = self.dtype if self.cfg.save_dtype == "auto" else parse_dtype(self.cfg.save_dtype)
        for name, t in tensors.items():
            full = t.full_tensor() if hasattr(t, "full_tensor") else t
            if self.info.is_main:
                full = full.detach().to("cpu")
                out[name] = full.to(save_dtype) if full.is_floating_point() else full
        return out

    def export_weights(self) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
        """Release-layout state dicts (raw, EMA) on rank 0, LoRA merged; ({}, None) on other ranks."""
        model_sd = self.model.state_dict()
        raw = self._gather(model_sd)
        ema = None
        if self.ema is not None:
            ema_part = self._gather(self.ema.state)
            if self.info.is_main:
                ema = {**raw, **ema_part}
        if self.info.is_main:
            scales = lora_scales(self.model)
            if scales:
                raw = merge_lora_state(raw, scales)
                ema = merge_lora_state(ema, scales) if ema is not None else None
        return raw, ema

    def save(self) -> Path:
        """Write ``step_XXXXXXX`` atomically (see checkpointing.py); prune to keep_last.

        A full disk (on any rank) removes the partial ``.tmp-step_*`` folder and ends the run with one
        line naming the step that is intact; any other failure keeps its traceback.
        """
        cfg, info = self.cfg, self.info
        root = Path(cfg.checkpoint_dir)
        final = root / ckpt.step_dir_name(self.step)
        tmp = root / f".tmp-{final.name}"
        try:
            self._write_checkpoint(tmp, final)
        except ckpt.SaveFailed as failed:
            if info.is_main:
                shutil.rmtree(tmp, ignore_errors=True)  # a partial save would fill the disk again at the rerun
            if failed.disk_full:
                raise DiskFullError(ckpt.disk_full_message(root, self.step, cfg.auto_resume)) from None
            if failed.error is not None:
                raise failed.error  # noqa: B904 (the save's own error, re-raised as it was)
            raise CheckpointError(
                f"another process failed while saving step {self.step} in {root}; its log says why"
            ) from None
        return final

    def _write_checkpoint(self, tmp: Path, final: Path) -> None:
        """The save itself, in phases; a phase that fails on any rank fails on all (no rank waits forever)."""
        from unimedvl.models.unified import UnifiedModel

        cfg, info, root = self.cfg, self.info, final.parent

        def prepare() -> None:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()

        def rank_files() -> None:
            ckpt.save_train_state(tmp, self.model, self.optimizer, self.ema.state if self.ema else None)
            ckpt.write_rank_state(tmp, info.rank, self.loader.state_dict())

        ckpt.on_all_ranks(prepare, info, root, main_only=True)
        ckpt.on_all_ranks(rank_files, info, root)
        if self.adapter_base is not None:  # LoRA: the trained tensors only, not the base (checkpoint/adapters.py)
            raw, ema = gather_trainable(self.model, self.ema.state if self.ema else None, info.is_main)

            def release_files() -> None:
                write_adapter(
                    tmp,
                    raw,
                    ema,
                    lora_scales(self.model),
                    self.weights_dir,
                    self.prefer,
                    self.adapter_base,
                    cfg.quantize_base,
                    self.step,
                    (self.model_cfg, self.tokenizer, self.inference_config),
                )
        else:
            raw, ema = self.export_weights()

        def export_release() -> None:
            with torch.device("meta"):
                export = UnifiedModel(self.model_cfg)
            export.load_state_dict(raw, assign=True)
            save_model(
                export,
                tmp,
                self.tokenizer,
                ema_state=ema,
                inference_config=self.inference_config,
                card=self._model_card(),
            )

        def publish() -> None:
            contents = ["model", "optim"] + (["ema"] if self.ema else [])
            ckpt.finalize(
                tmp,
                final,
                {
                    "step": self.step,
                    "world_size": info.world_size,
                    "contents": contents,
                    "scheduler": {"step": self.step},
                    "config": config_dict(cfg),
                },
            )
            for removed in ckpt.prune_checkpoints(root, cfg.keep_last, cfg.keep_every):
                log.info("removed old checkpoint %s", removed)
            log.info("saved %s", final)

        ckpt.on_all_ranks(
            release_files if self.adapter_base is not None else export_release, info, root, main_only=True
        )
        ckpt.on_all_ranks(publish, info, root, main_only=True)

    def _remove_partial_saves(self) -> None:
        """Delete ``.tmp-*`` folders a killed or disk-full save left, before anything is written (TensorBoard
        included): they are never resumed from, and they hold the space the next save needs."""
        for stale in ckpt.remove_partial_saves(self.cfg.checkpoint_dir):
            log.warning("removed %s, a save that did not finish", stale)


def peak_memory_gb(device: torch.device) -> float:
    """The process's peak memory in GiB (CUDA allocations, or the CPU's peak RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**30 if sys.platform == "darwin" else 2**20)
