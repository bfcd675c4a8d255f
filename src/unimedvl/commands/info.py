"""`unimedvl info`: what is installed, which device and attention backends are usable, model sizes;
with ``--model DIR``, what a checkpoint is and how it is fed and sampled."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from unimedvl import __version__
from unimedvl.checkpoint.model_card import human_count
from unimedvl.config import MODEL_SIZES, model_config
from unimedvl.defaults import MAX_NEW_TOKENS
from unimedvl.errors import UserError


def available_attention_backends() -> list[str]:
    """Packed-attention backends usable in this process (see models/attention.py)."""
    import torch

    backends = ["sdpa"]
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401

        backends.append("flex")
    except ImportError:
        pass
    if torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401

            backends.append("flash")
        except ImportError:
            pass
    return backends


def parameter_counts(size: str) -> dict[str, int]:
    """Parameters per component of a named size, counted on the meta device (no memory used)."""
    import torch

    from unimedvl.checkpoint.release import parameter_counts as count
    from unimedvl.models.unified import UnifiedModel

    with torch.device("meta"):
        model = UnifiedModel(model_config(size))
    return count(model)


def _versions() -> dict[str, str]:
    """Installed versions, read from the package metadata: importing gradio or transformers takes seconds."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    out = {"unimedvl": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "tokenizers", "safetensors", "gradio", "flash_attn"):
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        return f"cuda x{torch.cuda.device_count()} ({', '.join(sorted(names))})"
    return f"cpu ({torch.get_num_threads()} threads)"


def checkpoint_summary(path: str | Path) -> list[str]:
    """Lines describing a checkpoint directory: model, parameters, training step, inference config."""
    import torch

    from unimedvl.checkpoint.inference_config import InferenceConfig
    from unimedvl.checkpoint.release import parameter_counts as count
    from unimedvl.checkpoint.release import read_model_config
    from unimedvl.models.unified import UnifiedModel

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--model {path}: checkpoint directory not found")
    cfg = read_model_config(path)
    with torch.device("meta"):
        counts = count(UnifiedModel(cfg))
    llm = cfg.llm
    lines = [
        f"checkpoint:   {path.resolve()}",
        f"model:        {llm.num_hidden_layers} layers x hidden {llm.hidden_size}, {llm.layer_module}, "
        f"understanding {'on' if cfg.visual_und else 'off'}, generation {'on' if cfg.visual_gen else 'off'}",
        "parameters:   " + ", ".join(f"{k} {human_count(v)}" for k, v in counts.items()),
    ]
    manifest = path / "checkpoint.json"
    step = json.loads(manifest.read_text()).get("step") if manifest.is_file() else None
    lines.append(f"trained:      {f'step {step}' if step is not None else 'no training record (checkpoint.json)'}")
    weights = sorted(p.name for p in path.glob("*.safetensors"))
    lines.append(f"weights:      {', '.join(weights) or 'none'}")
    inference = InferenceConfig.load(path)
    lines.append(f"inference:    {inference.source}")
    for name, t in (("VAE transform", inference.vae_transform), ("ViT transform", inference.vit_transform)):
        cap = f", max_pixels {t.max_pixels}" if t.max_pixels else ""
        lines.append(f"  {name}: stride {t.image_stride}, min {t.min_image_size}, max {t.max_image_size}{cap}")
    for preset, g in inference.guidance.items():
        lines.append(
            f"  guidance {preset}: cfg_text {g.cfg_text_scale:g}, cfg_img {g.cfg_img_scale:g}, interval "
            f"{list(g.cfg_interval)}, renorm {g.cfg_renorm_type} (min {g.cfg_renorm_min:g}), shift "
            f"{g.timestep_shift:g}, {g.num_timesteps} timesteps, strength {g.strength:g}, {g.solver}"
            + (f", {g.cache} cache ({_cache_knobs(g)})" if g.cache != "none" else "")
        )
    lines.append(f"  think prompts: {'set by the checkpoint' if inference.think_prompts else 'the defaults'}")
    return lines


def _cache_knobs(g) -> str:
    if g.cache == "teacache":
        return f"threshold {g.cache_threshold:g}, warmup {g.cache_warmup}"
    return f"interval {g.cache_interval}, order {g.cache_order}, warmup {g.cache_warmup}"


def memory_report(cfg, inference, workload, dtype: str, device: str, budget: int | None, name: str) -> list[str]:
    """The ``info --memory`` table: every plan's weights, runtime estimate and total, and which fit ``budget``."""
    import torch

    from unimedvl.checkpoint.memory_estimate import choose_plan, estimate_plans
    from unimedvl.checkpoint.memory_plan import format_bytes

    cuda_here = torch.cuda.is_available()
    estimates = estimate_plans(cfg, inference, workload, dtype, cuda=device == "cuda", runnable_cuda=cuda_here)
    where = "GPU" if device == "cuda" else "host RAM (CPU)"
    lines = [
        f"memory plans: {name}, weights in {dtype}, on {where}"
        + (f", budget {format_bytes(budget)}" if budget else ""),
        f"request: a {workload.image_size} px image, {workload.prompt_tokens} prompt + {workload.answer_tokens} "
        "answer tokens (activations + KV: the larger of an ask and, with generation, an edit; an estimate)",
    ]
    header = f"{'plan':<26} {'params':>7} {'weights':>9} {'host RAM':>9} {'act+KV':>8} {'overhead':>8} {'total':>9}"
    lines.append(header + ("  fits" if budget else "") + "  here")
    for e in estimates:
        row = (
            f"{e.label:<26} {human_count(e.parameters):>7} {format_bytes(e.device_weights):>9} "
            f"{format_bytes(e.host_weights) if e.host_weights else '-':>9} {format_bytes(e.runtime):>8} "
            f"{format_bytes(e.overhead):>8} {format_bytes(e.device_total):>9}"
        )
        if budget:
            row += f"  {'yes' if e.fits(budget) else 'no ':<4}"
        lines.append(row + f"  {'yes' if e.runnable else 'needs CUDA'}")
    if budget:
        for components in ("all", "understanding"):
            try:
                chosen = choose_plan(
                    [e for e in estimates if e.plan.components == components], budget, runnable_only=False
                )
                lines.append(
                    f"cheapest {components} plan within {format_bytes(budget)}: {chosen.label} "
                    f"({format_bytes(chosen.device_total)})"
                )
            except UserError as err:
                lines.append(f"{components}: {err}")
    lines.append(
        "weights: what the device holds (offload: two decoder layers; the rest in host RAM); "
        "load with --components/--quantize/--offload, or --max-memory SIZE to pick the first that fits"
    )
    return lines


def _memory(args: argparse.Namespace) -> list[str]:
    from unimedvl.checkpoint.inference_config import InferenceConfig, for_model
    from unimedvl.checkpoint.memory_estimate import Workload
    from unimedvl.checkpoint.memory_plan import parse_memory
    from unimedvl.config import load_model_config

    if args.model and args.size:
        raise UserError("info --memory: give --model DIR or --size NAME, not both")
    if args.model:
        from unimedvl.checkpoint.release import read_model_config

        if not Path(args.model).is_dir():
            raise UserError(f"--model {args.model}: checkpoint directory not found")
        cfg, inference, name = read_model_config(args.model), InferenceConfig.load(args.model), args.model
    else:
        size = args.size or "bagel-7b-mot"
        cfg = load_model_config(size)
        cfg_inference = for_model(cfg)
        inference, name = cfg_inference, size
    budget = parse_memory(args.budget, "--budget") if args.budget else None
    if args.train:
        return _train_memory(args, cfg, budget, name)
    device, dtype, image_size = memory_defaults(args, inference.image_size if args.model else 512)
    workload = Workload(image_size=image_size, answer_tokens=args.answer_tokens)
    return memory_report(cfg, inference, workload, dtype, device, budget, name)


def memory_defaults(args: argparse.Namespace, model_image_size: int) -> tuple[str, str, int]:
    """(device, dtype, image size) of ``info --memory``: the flags, else what loading here would use (cuda
    and bf16 with a GPU, cpu and fp32 without) and the checkpoint's own image size (512 for a named size)."""
    import torch

    from unimedvl.checkpoint.memory_plan import default_dtype

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or default_dtype(device)
    return device, dtype, args.image_size or model_image_size


def _train_memory(args: argparse.Namespace, cfg, budget: int | None, name: str) -> list[str]:
    """``info --memory --train``: the training plans (unimedvl.checkpoint.train_memory) of a run's settings."""
    import dataclasses

    from unimedvl.checkpoint.train_memory import TrainSetup, plan_of_config, train_memory_report

    # The planner sizes GPU training: without flags, a CUDA device computing in bf16.
    args.device, args.dtype = args.device or "cuda", args.dtype or "bf16"
    run_plan = None
    if args.train_config:
        from unimedvl.train.config import config_from_args

        run = config_from_args({"config": args.train_config})
        setup = TrainSetup.from_config(run, args.gpus, args.device == "cuda")
        setup, run_plan = dataclasses.replace(setup, tokens=args.tokens or setup.tokens), plan_of_config(run)
    else:
        setup = TrainSetup(tokens=args.tokens or 2048, gpus=args.gpus, dtype=args.dtype, cuda=args.device == "cuda")
    return train_memory_report(cfg, setup, budget, name, run_plan)


def run(args: argparse.Namespace) -> int:
    if args.memory:
        print("\n".join(_memory(args)))
        return 0
    if args.size or args.budget or args.train:
        raise UserError("--size, --budget and --train belong to info --memory; add --memory")
    if args.model:
        print("\n".join(checkpoint_summary(args.model)))
        return 0
    print("versions:")
    for name, version in _versions().items():
        print(f"  {name:<13} {version}")
    print(f"device:       {_device()}")
    print(f"attention:    {', '.join(available_attention_backends())}")
    print("model sizes (parameters):")
    for size in MODEL_SIZES:
        counts = parameter_counts(size)
        parts = ", ".join(f"{k} {human_count(v)}" for k, v in counts.items() if k != "total")
        print(f"  {size:<13} {human_count(counts['total']):>7}  ({parts})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="versions, device, attention backends and named model sizes; "
        "--model DIR: a checkpoint's sizes, parameters, step and inference settings",
    )
    parser.add_argument(
        "--model", metavar="DIR", default=None, help="describe this checkpoint directory instead (default: none)"
    )
    g = parser.add_argument_group("memory plans (--memory)")
    g.add_argument(
        "--memory",
        action="store_true",
        help="print each memory plan (all / understanding x bf16 / int8 / nf4 x offload): weight bytes, "
        "an activation + KV estimate, and which fit --budget; of --model DIR or --size NAME",
    )
    g.add_argument(
        "--size",
        metavar="NAME",
        default=None,
        help="a named model size or model YAML (default: bagel-7b-mot, the release)",
    )
    g.add_argument("--budget", metavar="SIZE", default=None, help="device memory, e.g. 24GB or 16GiB (default: none)")
    g.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PX",
        help="side of the input image assumed (default: the checkpoint's image size; 512 for --size)",
    )
    g.add_argument("--answer-tokens", type=int, default=MAX_NEW_TOKENS, metavar="N", help="answer length assumed")
    g.add_argument(
        "--dtype",
        default=None,
        choices=["bf16", "fp16", "fp32"],
        help="compute dtype of the weights (default: bf16 on cuda, fp32 on cpu, as loading uses)",
    )
    g.add_argument(
        "--device",
        default=None,
        choices=["cuda", "cpu"],
        help="what the budget is: GPU memory (cuda) or host RAM (cpu) (default: cuda when this "
        "machine has a GPU, else cpu)",
    )
    t = parser.add_argument_group("training memory plans (--memory --train)")
    t.add_argument(
        "--train",
        action="store_true",
        help="with --memory: the fine-tuning plans instead (full, LoRA, QLoRA int8/nf4 x activation "
        "checkpointing x EMA): weights, gradients, AdamW, EMA, activations and total per GPU",
    )
    t.add_argument("--gpus", type=int, default=1, metavar="N", help="GPUs sharing the model with FSDP2 (default: 1)")
    t.add_argument(
        "--tokens",
        type=int,
        default=None,
        metavar="N",
        help="packed tokens per micro-batch (default: 2048, or max_num_tokens of --train-config)",
    )
    t.add_argument(
        "--train-config",
        metavar="RUN.yaml",
        default=None,
        help="take LoRA ranks and targets, freezing, paths and pack size from a training run YAML "
        "(default: none: rank 16 on q/k/v/o_proj, 2048-token packs)",
    )
    parser.set_defaults(func=run)
