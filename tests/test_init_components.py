"""`init-from-components`: a trainable checkpoint assembled from Hugging Face Qwen2 + SigLIP + diffusers VAE."""

import shutil

import pytest
import torch

from unimedvl.checkpoint.release import load_model
from unimedvl.cli import main as cli_main
from unimedvl.tokenizer import offline_qwen_dir

transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    qwen = transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(
            vocab_size=151700,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=False,
        )
    )
    qwen.save_pretrained(root / "qwen")
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(offline_qwen_dir() / name, root / "qwen" / name)
    siglip = transformers.SiglipVisionModel(
        transformers.SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=3,
            image_size=14 * 8,
            patch_size=14,
            vision_use_head=False,
        )
    )
    siglip.save_pretrained(root / "siglip")
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    vae.save_pretrained(root / "vae")
    return root, qwen, siglip


def test_assembled_checkpoint_matches_its_parts(components, tmp_path):
    root, qwen, siglip = components
    out = tmp_path / "assembled"
    args = [
        "init-from-components",
        "--llm",
        str(root / "qwen"),
        "--vit",
        str(root / "siglip"),
        "--vae",
        str(root / "vae"),
        "--out",
        str(out),
    ]
    assert cli_main(args) == 0
    model = load_model(out)
    cfg = model.config
    assert cfg.llm.layer_module == "Qwen2MoTDecoderLayer" and cfg.vit.num_hidden_layers == 2
    assert cfg.vae.ch_mult == (1, 1, 1, 1) and cfg.vit_max_num_patch_per_side == 8
    state = model.state_dict()
    # The generation expert starts as a copy of the understanding expert.
    q = "language_model.model.layers.1.self_attn.q_proj.weight"
    assert torch.equal(state[q], state[q.replace("q_proj", "q_proj_moe_gen")])
    # Language model logits equal the Qwen2 it came from.
    ids = torch.randint(0, 1000, (1, 9))
    with torch.no_grad():
        ours = model.language_model.forward_text(ids)
        ref = qwen(ids).logits
    assert (ours - ref).abs().max() < 1e-4
    # Patch conv became the linear of the release layout.
    conv = next(v for k, v in siglip.state_dict().items() if k.endswith("embeddings.patch_embedding.weight"))
    linear = state["vit_model.vision_model.embeddings.patch_embedding.weight"]
    assert torch.equal(linear, conv.permute(0, 2, 3, 1).reshape(conv.shape[0], -1))
    assert torch.count_nonzero(state["llm2vae.weight"]) == 0
    assert (out / "tokenizer.json").is_file()


def test_a_trained_autoencoder_brings_its_layout_factors_and_patch_size(components, tmp_path):
    """An ae.safetensors from train-autoencoder (4x, z4, for latent_patch_size 4) with its ae.json beside it."""
    import numpy as np
    from PIL import Image

    from unimedvl.config import VAEConfig
    from unimedvl.train.autoencoder import AutoencoderTrainConfig, train_autoencoder

    root, _, _ = components
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
    layout = VAEConfig(ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, z_channels=4)
    report = train_autoencoder(
        AutoencoderTrainConfig(
            images=(str(images),),
            out=str(tmp_path / "ae" / "ae.safetensors"),
            vae=layout,
            latent_patch_size=4,
            image_size=32,
            steps=1,
            batch_size=2,
            heldout_fraction=0.25,
            stats_images=2,
        ),
        progress=False,
    ).report
    out = tmp_path / "assembled"
    assert (
        cli_main(
            ["init-from-components", "--llm", str(root / "qwen"), "--vae", str(tmp_path / "ae"), "--out", str(out)]
        )
        == 0
    )
    cfg = load_model(out).config
    assert cfg.latent_patch_size == 4 and cfg.vae.downsample == 4 and cfg.vae.z_channels == 4
    assert cfg.vae.shift_factor == pytest.approx(report["shift_factor"])
    assert cfg.vae.scale_factor == pytest.approx(report["scale_factor"])
    # train-autoencoder recorded the size it trained at; the assembled checkpoint is fed at that size.
    from unimedvl.checkpoint.inference_config import InferenceConfig

    assert InferenceConfig.load(tmp_path / "ae").vae_transform.max_image_size == 32
    vae = InferenceConfig.load(out).vae_transform
    assert (vae.min_image_size, vae.max_image_size) == (32, 32)
    assert "Not for clinical use" in (out / "README.md").read_text()
