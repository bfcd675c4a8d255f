"""``unimedvl init-from-components``: a checkpoint assembled from Qwen2 + SigLIP + FLUX VAE
(:func:`unimedvl.checkpoint.create.init_from_components`)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``init-from-components`` subcommand."""
    p = subparsers.add_parser("init-from-components", help="assemble a checkpoint from Qwen2 + SigLIP + FLUX VAE")
    p.add_argument("--llm", required=True, help="Hugging Face Qwen2/2.5 directory (config.json + safetensors)")
    p.add_argument("--vit", help="Hugging Face SigLIP directory (default: none, a generation-only model)")
    p.add_argument(
        "--vae",
        help="ae.safetensors or a diffusers AutoencoderKL directory (default: none, an understanding-only model); "
        "the ae.json that train-autoencoder writes beside its weights supplies their layout, "
        "latent shift/scale and latent_patch_size",
    )
    p.add_argument("--out", required=True, help="output directory (release layout)")
    p.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised parts")
    p.add_argument(
        "--layer-module",
        default="Qwen2MoTDecoderLayer",
        choices=["Qwen2DecoderLayer", "Qwen2MoTDecoderLayer", "Qwen2MoEDecoderLayer"],
        help="decoder layer: MoT (two experts, the release), MoE (two MLPs) or plain Qwen2",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Assemble the checkpoint and say where."""
    from unimedvl.checkpoint.create import init_from_components

    path = init_from_components(args.llm, args.vit, args.vae, args.out, args.seed, args.layer_module)
    print(f"wrote an assembled checkpoint to {path}")
    return 0
