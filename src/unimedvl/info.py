"""`unimedvl info`: what is installed, which device and attention backends are usable, model sizes;
with ``--model DIR``, what a checkpoint is and how it is fed and sampled."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from unimedvl import __version__
from unimedvl.config import MODEL_SIZES, model_config
from unimedvl.errors import UserError
from unimedvl.model_card import human_count


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

    from unimedvl.checkpoint import parameter_counts as count
    from unimedvl.models.unified import UnifiedModel

    with torch.device("meta"):
        model = UnifiedModel(model_config(size))
    return count(model)


def _versions() -> dict[str, str]:
    import torch

    out = {"unimedvl": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "tokenizers", "safetensors", "gradio", "flash_attn"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
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

    from unimedvl.checkpoint import parameter_counts as count
    from unimedvl.checkpoint import read_model_config
    from unimedvl.inference_config import InferenceConfig
    from unimedvl.models.unified import UnifiedModel

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--model {path}: checkpoint directory not found")
    cfg = read_model_config(path)
    with torch.device("meta"):
        counts = count(UnifiedModel(cfg))
    llm = cfg.llm
    lines = [f"checkpoint:   {path.resolve()}",
             f"model:        {llm.num_hidden_layers} layers x hidden {llm.hidden_size}, {llm.layer_module}, "
             f"understanding {'on' if cfg.visual_und else 'off'}, generation {'on' if cfg.visual_gen else 'off'}",
             "parameters:   " + ", ".join(f"{k} {human_count(v)}" for k, v in counts.items())]  # fmt: skip
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
        lines.append(f"  guidance {preset}: cfg_text {g.cfg_text_scale:g}, cfg_img {g.cfg_img_scale:g}, interval "
                     f"{list(g.cfg_interval)}, renorm {g.cfg_renorm_type} (min {g.cfg_renorm_min:g}), shift "
                     f"{g.timestep_shift:g}, {g.num_timesteps} timesteps")  # fmt: skip
    lines.append(f"  think prompts: {'set by the checkpoint' if inference.think_prompts else 'the defaults'}")
    return lines


def run(args: argparse.Namespace) -> int:
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
    parser = subparsers.add_parser("info", help="versions, device, attention backends and named model sizes; "
                                   "--model DIR: a checkpoint's sizes, parameters, step and inference settings")
    parser.add_argument("--model", metavar="DIR", default=None,
                        help="describe this checkpoint directory instead (default: none)")
    parser.set_defaults(func=run)
