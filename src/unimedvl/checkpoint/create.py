"""Create trainable checkpoints: random weights of a named size, or public parts assembled.

:func:`init_checkpoint` (``unimedvl init-checkpoint --size debug --out DIR``) writes a randomly
initialised model in exactly the release layout (tokenizer included). :func:`init_from_components`
(``unimedvl init-from-components --llm QWEN_DIR --vit SIGLIP_DIR --vae AE --out DIR``) assembles a
checkpoint from a Hugging Face Qwen2/2.5 directory, a SigLIP directory and a FLUX VAE: the
generation expert is copied from the language model, the patch convolution becomes a linear layer,
the connector and latent linears start fresh. The commands: :mod:`unimedvl.commands.init_checkpoint`,
:mod:`unimedvl.commands.init_from_components`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from unimedvl.config import ModelConfig, load_model_config
from unimedvl.errors import ConfigError

if TYPE_CHECKING:  # the module is imported for --help; torch and the tokenizers load when a command runs
    from unimedvl.tokenizer import Tokenizer

# Text for the small BPE of tiny models when the user gives no tokenizer: common words of
# radiology and pathology reports and of the instructions used by the medical tasks.
BUILTIN_CORPUS = (
    "What imaging modality is this? This is a CT scan. This is an MRI scan. This is a chest X-ray. "
    "This is a histology slide stained with H&E. This is a fundus photograph of the retina. "
    "Is there a lesion? Yes, there is a lesion. No, there is no lesion. How many lesions are there? "
    "There are two lesions in the left lung and one lesion in the right upper lobe. "
    "Where is the lesion located? The lesion is in the lower left quadrant. "
    "Restore this image. Remove the noise from this CT image. Increase the resolution by 4x. "
    "Deblur this MRI slice. Correct the motion artifacts. Translate the H&E stain to IHC. "
    "Generate a chest X-ray without the lesion. Assessment: the image is noisy and blurred. "
    "Findings: no acute cardiopulmonary abnormality. Impression: normal study. "
    "The heart size is normal. The lungs are clear. There is no pleural effusion or pneumothorax. "
    "Synthesize a T2-weighted MRI from the T1-weighted image. Super-resolution of brain MRI. "
    "Low-dose CT denoising. Metal artifact reduction. Bone shadow suppression. "
    "0 1 2 3 4 5 6 7 8 9 10 mm cm left right upper lower middle anterior posterior axial coronal sagittal."
)


def default_tokenizer(cfg: ModelConfig, texts: Iterable[str] | None = None) -> Tokenizer:
    """The real Qwen tokenizer when the vocabulary fits it, else a small BPE trained on ``texts``."""
    from unimedvl.tokenizer import Tokenizer

    qwen = Tokenizer.offline_qwen()
    if len(qwen) <= cfg.llm.vocab_size:
        return qwen
    corpus = list(texts) if texts is not None else [BUILTIN_CORPUS] * 4
    return Tokenizer.train_bpe(corpus, vocab_size=cfg.llm.vocab_size)


def init_checkpoint(
    size: str | Path,
    out: str | Path,
    seed: int = 0,
    tokenizer: Tokenizer | None = None,
    texts: Iterable[str] | None = None,
    dtype: str = "fp32",
) -> Path:
    """Write a randomly initialised model of a named size (or YAML config) in the release layout.

    ``dtype``: of the weights written (and of the model while it is built, so a bf16 checkpoint of
    the release's widths needs half the memory of an fp32 one).
    """
    import torch

    from unimedvl.checkpoint.model_card import ModelCard
    from unimedvl.checkpoint.release import parse_dtype, save_model
    from unimedvl.models.unified import UnifiedModel

    cfg = load_model_config(size)
    tokenizer = tokenizer or default_tokenizer(cfg, texts)
    if len(tokenizer) > cfg.llm.vocab_size:
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens but llm.vocab_size is {cfg.llm.vocab_size}: "
            "raise vocab_size or use a smaller tokenizer"
        )
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(parse_dtype(dtype))
    try:
        model = UnifiedModel(cfg)
    finally:
        torch.set_default_dtype(default)
    card = ModelCard(
        summary=f"A randomly initialised UniMedVL model of the `{size}` size (seed {seed}).",
        notes=[
            "Random weights: its answers and images are meaningless until it is trained. Use it for "
            "tests, benchmarks of speed and memory, or as the start of training from scratch."
        ],
    )
    return save_model(model, out, tokenizer, card=card)


def init_from_components(
    llm: str | Path,
    vit: str | Path | None,
    vae: str | Path | None,
    out: str | Path,
    seed: int = 0,
    layer_module: str = "Qwen2MoTDecoderLayer",
) -> Path:
    """Assemble a trainable checkpoint from public parts (see module docstring)."""
    import torch

    from unimedvl.checkpoint.inference_config import InferenceConfig
    from unimedvl.checkpoint.model_card import ModelCard
    from unimedvl.checkpoint.release import save_model
    from unimedvl.models.autoencoder import Autoencoder
    from unimedvl.models.language import LanguageModel
    from unimedvl.models.unified import UnifiedModel
    from unimedvl.models.vision import VisionEncoder
    from unimedvl.tokenizer import Tokenizer

    torch.manual_seed(seed)
    language = LanguageModel.from_hf_pretrained(llm, layer_module=layer_module)
    tokenizer = Tokenizer.from_dir(llm)
    if len(tokenizer) > language.config.vocab_size:
        _resize_vocab(language, len(tokenizer))
    cfg = ModelConfig(llm=language.config, visual_und=vit is not None, visual_gen=vae is not None)
    parts: dict[str, torch.nn.Module] = {"language_model": language}
    if vit is not None:
        vision = VisionEncoder.from_hf_pretrained(vit)
        cfg.vit = vision.config
        cfg.vit_max_num_patch_per_side = vision.config.num_patches_per_side
        parts["vit_model"] = vision
    if vae is not None:
        vae_cfg, latent_patch_size = _trained_vae_layout(Path(vae))
        autoencoder = Autoencoder.from_pretrained(vae, vae_cfg)
        cfg.vae = autoencoder.config
        if latent_patch_size is not None:
            cfg.latent_patch_size = latent_patch_size
        parts["vae"] = autoencoder
    with torch.device("meta"):
        model = UnifiedModel(cfg)
    for name, module in parts.items():
        setattr(model, name, module)
    for name, child in model.named_children():
        if name in parts:
            continue
        child.to_empty(device="cpu")
        for sub in child.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    model._init_heads()
    inference = InferenceConfig()
    if vae is not None:
        model.vae.requires_grad_(False)
        vae_dir = Path(vae) if Path(vae).is_dir() else Path(vae).parent
        # train-autoencoder records the image size its VAE was trained at: feed the model that.
        inference = replace(inference, vae_transform=InferenceConfig.load(vae_dir).vae_transform)
    parts_text = ", ".join(
        f"{k}: `{v}`"
        for k, v in (("language model", llm), ("vision encoder", vit), ("autoencoder", vae))
        if v is not None
    )
    card = ModelCard(
        summary=f"A UniMedVL model assembled from public parts ({parts_text}); the connector, "
        "time embedder and latent projections are freshly initialised: train it before use."
    )
    return save_model(model, out, tokenizer, inference_config=inference, card=card)


def _trained_vae_layout(vae: Path):
    """(VAEConfig, latent_patch_size) of an ``ae.safetensors`` made by ``unimedvl train-autoencoder``
    (its ``ae.json`` report sits beside it: layout, latent shift / scale, the unified model's patch
    size), or (None, None) for release weights and diffusers folders, which load with their own layout.
    """
    from unimedvl.checkpoint.release import trained_latent_patch_size, trained_vae_config

    weights = vae / "ae.safetensors" if vae.is_dir() else vae
    if not (weights.is_file() and weights.with_suffix(".json").is_file()):
        return None, None
    return trained_vae_config(weights), trained_latent_patch_size(weights)


def _resize_vocab(language, vocab_size: int) -> None:
    """Grow embed_tokens/lm_head to ``vocab_size`` rows; new rows start at the mean embedding."""
    import torch

    with torch.no_grad():
        old = language.model.embed_tokens.weight
        grown = torch.nn.Embedding(vocab_size, old.shape[1], dtype=old.dtype)
        grown.weight[: old.shape[0]] = old
        grown.weight[old.shape[0] :] = old.mean(0)
        language.model.embed_tokens = grown
        head = torch.nn.Linear(old.shape[1], vocab_size, bias=False, dtype=old.dtype)
        head.weight[: old.shape[0]] = language.lm_head.weight
        head.weight[old.shape[0] :] = language.lm_head.weight.mean(0)
        language.lm_head = head
    language.config.vocab_size = vocab_size
