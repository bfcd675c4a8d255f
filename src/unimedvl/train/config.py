"""TrainConfig: every training flag, typed, with defaults from the spec (unified-model.md section 6).

Flag names and value syntax are the reference training scripts' (``--freeze_llm False``); the
dashed spelling (``--freeze-llm false``) works too. ``--config RUN.yaml`` holds the same keys;
flags given on the command line override the YAML. ``--lr_mult connector=10`` (repeatable, or
``a=1,b=2``) or a YAML mapping ``lr_mult: {connector: 10}`` sets per-component learning-rate
multipliers (component names in ``train/params.py``).
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from unimedvl.config import field_docs, from_dict, load_yaml, to_dict
from unimedvl.data.config import DataConfig
from unimedvl.errors import ConfigError

SHARDING_STRATEGIES = ("FULL_SHARD", "HYBRID_SHARD", "SHARD_GRAD_OP", "NO_SHARD")
LR_SCHEDULERS = ("constant", "cosine")
PIXEL_LOSS_TYPES = ("l1", "l2")
DTYPES = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig(DataConfig):
    """One training run: data, model, optimisation, parallelism, checkpoints, logging.

    The data options (the mix, token budgets, conditional dropout, loader workers, ...) are the
    fields of :class:`~unimedvl.data.config.DataConfig`, inherited so that there is one list.
    """

    # -- data (DataConfig's fields, then these) ------------------------------------------------
    val_dataset_config_file: str | None = None  # data mix for validation losses (none: no validation)
    val_every: int = 0  # validate every N optimizer steps (0: only at checkpoints when a val mix is given)
    val_batches: int = 4  # packed batches per rank in one validation pass
    loader: str = "unimedvl.data.loader:build_loader"  # MODULE:FUNCTION that builds the packed-batch loader

    # -- model --------------------------------------------------------------------------------
    model_path: str = ""  # checkpoint directory in the release layout (unimedvl init-checkpoint makes one)
    visual_gen: bool = True  # train the generation path (VAE latents, flow loss)
    visual_und: bool = True  # train the understanding path (ViT + connector)
    freeze_llm: bool = False  # keep the language model (both experts, embeddings, head) fixed
    freeze_vit: bool = False  # keep the vision encoder fixed (the connector still trains)
    freeze_vae: bool = True  # keep the VAE fixed; False trains its decoder only when pixel/SSIM losses are on
    cache_latents: bool = False  # VAE-encode each distinct image once and reuse its latent (the encoder never trains)
    latent_cache_mb: int = 2048  # memory for cached latents per process, MiB (full: later images are encoded each time)
    timestep_shift: float = 1.0  # flow-matching timestep shift in training
    attn_backend: str = "auto"  # packed attention backend: auto | sdpa | flex | flash
    gradient_checkpointing: bool = True  # recompute each decoder/vision layer in backward (activation memory)
    dtype: str = "auto"  # compute dtype: auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    lora_rank: int = 0  # LoRA rank on lora_target_modules (0: full fine-tuning)
    lora_alpha: float = 16.0  # LoRA scale numerator: delta = alpha / rank * B @ A
    lora_dropout: float = 0.0  # dropout on the LoRA branch input
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )  # Linear names (last component, any expert suffix) that get LoRA in every part (und, gen, ViT)
    # Per part: understanding expert (und), generation expert (gen), vision encoder (vit); None takes
    # lora_rank / lora_alpha / lora_target_modules, rank 0 puts no LoRA there (train/lora.py).
    lora_rank_und: int | None = None  # LoRA rank in the understanding expert (None: lora_rank; 0: none)
    lora_rank_gen: int | None = None  # LoRA rank in the generation expert (None: lora_rank; 0: none)
    lora_rank_vit: int | None = None  # LoRA rank in the vision encoder (None: lora_rank; 0: none)
    lora_alpha_und: float | None = None  # LoRA alpha in the understanding expert (None: lora_alpha)
    lora_alpha_gen: float | None = None  # LoRA alpha in the generation expert (None: lora_alpha)
    lora_alpha_vit: float | None = None  # LoRA alpha in the vision encoder (None: lora_alpha)
    lora_targets_und: list[str] | None = None  # Linear names in the understanding expert (None: lora_target_modules)
    lora_targets_gen: list[str] | None = None  # Linear names in the generation expert (None: lora_target_modules)
    lora_targets_vit: list[str] | None = (
        None  # Linear names in the vision encoder, e.g. q_proj,out_proj,fc1 (None: lora_target_modules)
    )
    quantize_base: str = "none"  # QLoRA: hold the frozen decoder/ViT Linear weights as none | int8 | nf4 (needs LoRA)
    max_memory: str | None = (
        None  # memory per GPU (host RAM on a CPU), e.g. 24GB: pick the first training plan that fits
    )

    # -- losses -------------------------------------------------------------------------------
    ce_weight: float = 1.0  # weight of the text cross-entropy
    mse_weight: float = 1.0  # weight of the flow-matching velocity MSE
    pixel_loss_weight: float = 0.0  # weight of the decoded-image L1/L2 loss (0: off)
    pixel_loss_type: str = "l2"  # l1 | l2
    pixel_loss_max_t: float = 0.3  # images with t >= max_t get no pixel loss (weight clamp((max_t - t)/max_t, 0, 1))
    ssim_loss_weight: float = 0.0  # weight of 1 - SSIM on decoded images (0: off)
    ssim_loss_max_t: float = 0.1  # like pixel_loss_max_t, for SSIM
    ssim_grad_scale: float = 0.1  # scale of the SSIM gradient that flows back through the VAE decoder
    pixel_decode_chunk: int = 4  # images per VAE decode call in the pixel losses (memory bound)

    # -- optimisation -------------------------------------------------------------------------
    total_steps: int = 1000  # optimizer steps of the whole run
    lr: float = 1e-4  # peak learning rate (fine-tuning: 1e-5 .. 2e-5)
    min_lr: float = 1e-7  # final learning rate of the cosine schedule
    warmup_steps: int = 100  # linear warm-up from 0 to lr
    lr_scheduler: str = "constant"  # constant | cosine (after warm-up)
    lr_mult: dict[str, float] = field(default_factory=dict)  # component (or name prefix) -> lr multiplier
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    eps: float = 1e-15  # AdamW epsilon
    weight_decay: float = 0.0  # AdamW weight decay (never on norms and biases)
    max_grad_norm: float = 1.0  # clip the global gradient norm (0: no clipping, norm still logged)
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step and rank
    ema: float = 0.9999  # EMA decay of the trainable weights per optimizer step (0: no EMA)
    seed: int = 0  # seeds the data order, conditional dropout and the flow noise

    # -- parallelism --------------------------------------------------------------------------
    sharding_strategy: str = "HYBRID_SHARD"  # FULL_SHARD | HYBRID_SHARD | SHARD_GRAD_OP | NO_SHARD
    num_replicate: int = 0  # HYBRID_SHARD: replica groups (0: world / num_shard)
    num_shard: int = 0  # HYBRID_SHARD: ranks per shard group (0: processes per node)

    # -- checkpoints --------------------------------------------------------------------------
    checkpoint_dir: str = "results/checkpoints"  # where step_XXXXXXX/, train.log, tensorboard/ go
    save_every: int = 2000  # checkpoint every N optimizer steps (and always at the end)
    keep_last: int = 3  # keep the newest K checkpoints (0: keep all)
    keep_every: int = 0  # also keep every checkpoint whose step is a multiple of N, for curves over training (0: none)
    auto_resume: bool = False  # continue from the newest complete checkpoint in checkpoint_dir
    resume_from: str | None = None  # a checkpoint directory to start from (ours or a release one)
    resume_model_only: bool = False  # from resume_from take only the weights (step 0, fresh optimizer and data)
    resume_model_optimizer: bool = True  # on a full resume, also restore optimizer and scheduler state
    finetune_from_ema: bool = False  # weights-only starts (model_path, resume_model_only) take the EMA weights
    save_dtype: str = "auto"  # dtype of the exported release weights: auto (the compute dtype) | fp32 | bf16

    # -- logging ------------------------------------------------------------------------------
    log_every: int = 10  # log losses, lr, grad norm, tokens/s every N steps
    tensorboard: bool = True  # write TensorBoard scalars to checkpoint_dir/tensorboard
    progress_bar: bool = True  # tqdm bar with ETA on rank 0

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        try:
            self.lr_mult = {str(k): float(v) for k, v in (self.lr_mult or {}).items()}
        except (TypeError, ValueError, AttributeError):
            raise ConfigError(f"lr_mult must map component names to numbers, got {self.lr_mult!r}") from None
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [s.strip() for s in self.lora_target_modules.split(",") if s.strip()]
        for part in ("und", "gen", "vit"):
            targets = getattr(self, f"lora_targets_{part}")
            if isinstance(targets, str):
                setattr(self, f"lora_targets_{part}", [s.strip() for s in targets.split(",") if s.strip()])
        self.sharding_strategy = self.sharding_strategy.upper()
        choices = {
            "sharding_strategy": SHARDING_STRATEGIES,
            "lr_scheduler": LR_SCHEDULERS,
            "pixel_loss_type": PIXEL_LOSS_TYPES,
            "dtype": DTYPES,
            "device": DEVICES,
            "save_dtype": ("auto", "fp32", "bf16"),
            "ce_weighting": ("token", "sqrt_split"),
            "bad_record_policy": ("fail", "skip"),
            "attn_backend": ("auto", "sdpa", "flex", "flash"),
            "quantize_base": ("none", "int8", "nf4"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        positive = (
            "total_steps",
            "gradient_accumulation_steps",
            "log_every",
            "save_every",
            "expected_num_tokens",
            "max_num_tokens",
            "max_num_tokens_per_sample",
            "pixel_decode_chunk",
            "val_batches",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        non_negative = (
            "warmup_steps",
            "num_workers",
            "keep_last",
            "keep_every",
            "val_every",
            "num_replicate",
            "num_shard",
            "lora_rank",
            "max_grad_norm",
            "weight_decay",
            "latent_cache_mb",
            "pixel_loss_weight",
            "ssim_loss_weight",
            "ce_weight",
            "mse_weight",
            "min_lr",
            "ssim_grad_scale",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.min_lr > self.lr:
            raise ConfigError(f"min_lr={self.min_lr} is above lr={self.lr}; lower min_lr")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema={self.ema} must be in [0, 1) (0 disables the EMA; fine-tuning often uses 0.995)")
        for name in ("text_cond_dropout_prob", "vit_cond_dropout_prob", "vae_cond_dropout_prob", "lora_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("pixel_loss_max_t", "ssim_loss_max_t"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.timestep_shift <= 0:
            raise ConfigError(f"timestep_shift must be > 0, got {self.timestep_shift}")
        if self.max_num_tokens < self.expected_num_tokens:
            raise ConfigError(
                f"max_num_tokens={self.max_num_tokens} is below expected_num_tokens={self.expected_num_tokens}"
            )
        for name, value in self.lr_mult.items():
            if value < 0:
                raise ConfigError(f"lr_mult {name}={value} must be >= 0 (0 freezes that component's updates)")
        if (self.pixel_loss_weight > 0 or self.ssim_loss_weight > 0) and not self.visual_gen:
            raise ConfigError("pixel_loss_weight/ssim_loss_weight need visual_gen True (they decode generated latents)")
        if self.lora_rank > 0 and not self.lora_target_modules:
            raise ConfigError("lora_rank > 0 needs lora_target_modules (e.g. q_proj,k_proj,v_proj,o_proj)")
        from unimedvl.train.lora import check_lora_config

        check_lora_config(self)
        if self.max_memory is not None:
            from unimedvl.checkpoint.memory_plan import parse_memory

            parse_memory(self.max_memory, "max_memory")  # one line for "24 GB" typos, before any work
        if self.resume_model_only and not self.resume_from:
            raise ConfigError("resume_model_only needs resume_from (the checkpoint whose weights to take)")
        super().__post_init__()

    def data_config(self, dataset_config_file: str | None = None, conditional_dropout: bool = True) -> DataConfig:
        """The loader's DataConfig: this run's data fields (another mix for validation, dropout off if asked)."""
        values = {f.name: getattr(self, f.name) for f in fields(DataConfig)}
        if dataset_config_file is not None:
            values["dataset_config_file"] = dataset_config_file
        if not conditional_dropout:
            values.update(text_cond_dropout_prob=0.0, vit_cond_dropout_prob=0.0, vae_cond_dropout_prob=0.0)
        return DataConfig(**values)

    @property
    def pixel_losses(self) -> bool:
        """True when a decoded-image loss (pixel or SSIM) is on."""
        return self.pixel_loss_weight > 0 or self.ssim_loss_weight > 0

    def require_inputs(self) -> None:
        """Fail with one message when the run lacks a data mix or a model."""
        if not self.dataset_config_file:
            raise ConfigError("--dataset_config_file is required (a YAML data mix, e.g. from `unimedvl synth`)")
        if not self.model_path:
            raise ConfigError(
                "--model_path is required (a checkpoint directory; `unimedvl init-checkpoint --size debug --out DIR` "
                "writes a random one)"
            )


def _coerce_numbers(cfg: TrainConfig) -> None:
    # YAML 1.1 reads "1e-5" (no dot) as a string; accept it for float fields.
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if hints[f.name] is float and isinstance(value, str):
            try:
                setattr(cfg, f.name, float(value))
            except ValueError:
                raise ConfigError(f"{f.name} must be a number, got {value!r}") from None
        elif hints[f.name] is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(cfg, f.name, float(value))


# ---------------------------------------------------------------------------------------------
# Command line.

_TRUE = ("true", "1", "yes", "y", "on")
_FALSE = ("false", "0", "no", "n", "off")


def parse_bool(text: str) -> bool:
    """Read a boolean flag value: ``--flag True`` as the release's scripts write it, or yes/no, 1/0."""
    low = str(text).strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _parse_none(kind):
    def parse(text: str):
        return None if str(text).strip().lower() in ("none", "null", "") else kind(text)

    return parse


def parse_lr_mult(items: Sequence[str]) -> dict[str, float]:
    """``["connector=10", "vit=0.1,llm_gen=2"]`` -> {"connector": 10.0, "vit": 0.1, "llm_gen": 2.0}."""
    out: dict[str, float] = {}
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            try:
                if not sep:
                    raise ValueError
                out[name.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"--lr_mult {part!r}: write COMPONENT=MULTIPLIER, e.g. connector=10") from None
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every TrainConfig field as ``--name`` and ``--name-with-dashes`` (defaults come from the dataclass)."""
    hints = typing.get_type_hints(TrainConfig)
    docs = field_docs(TrainConfig)
    parser.add_argument(
        "--config", help="run YAML with TrainConfig keys; command-line flags override it (default: none)"
    )
    for f in fields(TrainConfig):
        hint = hints[f.name]
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        if f.name == "model_path":
            flags.append("--model")  # the spelling every other command uses for a checkpoint directory
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        kwargs: dict[str, Any] = dict(
            dest=f.name, default=argparse.SUPPRESS, help=f"{docs.get(f.name, '')} (default: {default})"
        )
        if f.name == "lr_mult":
            kwargs.update(action="append", metavar="NAME=MULT")
        elif f.name == "lora_target_modules" or f.name.startswith("lora_targets_"):
            kwargs.update(metavar="A,B,...", type=lambda s: [p.strip() for p in s.split(",") if p.strip()])
        elif hint == (int | None):
            kwargs.update(type=_parse_none(int))
        elif hint == (float | None):
            kwargs.update(type=_parse_none(float))
        elif hint is bool:
            kwargs.update(type=parse_bool, nargs="?", const=True, metavar="True|False")
        elif hint is int:
            kwargs.update(type=int)
        elif hint is float:
            kwargs.update(type=float)
        elif hint == (str | None):
            kwargs.update(type=_parse_none(str))
        else:
            kwargs.update(type=str)
        parser.add_argument(*flags, **kwargs)


def config_from_args(args: argparse.Namespace | dict) -> TrainConfig:
    """TrainConfig from parsed flags: the YAML of ``--config`` first, then the flags given."""
    given = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    for key in ("func", "command", "threads"):  # threads: the CLI's (unimedvl.threads), not a TrainConfig field
        given.pop(key, None)
    data: dict[str, Any] = {}
    source = "command line"
    config_file = given.pop("config", None)
    if config_file:
        data = load_yaml(config_file)
        source = f"{config_file} + command line"
        if isinstance(data.get("lr_mult"), str):
            data["lr_mult"] = parse_lr_mult([data["lr_mult"]])
    names = {f.name for f in fields(TrainConfig)}
    for key, value in given.items():
        if key not in names:
            continue
        if key == "lr_mult":
            value = {**(data.get("lr_mult") or {}), **parse_lr_mult(value)}
        data[key] = value
    return from_dict(TrainConfig, data, source=source)


def parse_train_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The training configuration from a command line (``python -m unimedvl.train`` flags)."""
    parser = argparse.ArgumentParser(
        prog="python -m unimedvl.train", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The configuration as a plain dict, for train_config.yaml and the checkpoint manifest."""
    return to_dict(cfg)
