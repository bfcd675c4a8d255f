"""SigLIP NaViT encoder: parity with transformers SiglipVisionModel, packing, loading, size errors."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from unimedvl.config import ViTConfig
from unimedvl.errors import CheckpointError, DataError
from unimedvl.models.vision import (
    VisionEncoder,
    pack_images,
    patchify_image,
    vit_position_ids,
    vit_state_dict_from_hf,
)

transformers = pytest.importorskip("transformers")

SIDE = 4  # position table side in patches (56 px)
HF_LAYERS = 3  # the HF reference has one more layer than we keep


def _hf_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_hidden_layers=HF_LAYERS,
        image_size=14 * SIDE,
        patch_size=14,
        vision_use_head=False,
    )
    model = transformers.SiglipVisionModel(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines so a mis-mapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _ours_from_hf(hf) -> VisionEncoder:
    cfg = ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_hidden_layers=HF_LAYERS - 1,
        image_size=14 * SIDE,
    )
    model = VisionEncoder(cfg).eval()
    model.load_state_dict(vit_state_dict_from_hf(hf.state_dict(), cfg.num_hidden_layers), strict=True)
    return model


def _hf_selected_layer(hf, image):
    """The release's feature: the penultimate layer's output, then post_layernorm."""
    out = hf(image[None], output_hidden_states=True)
    # hidden_states[-1] is the raw last layer (post_layernorm is applied to it for last_hidden_state),
    # which pins down the indexing: hidden_states[-2] is the penultimate layer's output.
    torch.testing.assert_close(hf.post_layernorm(out.hidden_states[-1]), out.last_hidden_state)
    return hf.post_layernorm(out.hidden_states[-2])[0]


def test_parity_with_transformers_siglip_penultimate_layer():
    hf = _hf_model()
    ours = _ours_from_hf(hf)
    image = torch.rand(3, 14 * SIDE, 14 * SIDE) * 2 - 1
    with torch.no_grad():
        expected = _hf_selected_layer(hf, image)
        got = ours.encode_images([image])[0]
    assert got.shape == (SIDE * SIDE, 32)
    assert (got - expected).abs().max() <= 1e-4


def test_packed_images_of_different_sizes_match_each_alone():
    ours = _ours_from_hf(_hf_model())
    images = [torch.rand(3, 28, 42) * 2 - 1, torch.rand(3, 56, 14) * 2 - 1, torch.rand(3, 14, 14) * 2 - 1]
    packed = pack_images(images, max_side=SIDE)
    assert packed.token_counts == [6, 4, 1]
    with torch.no_grad():
        together = ours(packed.patches, packed.position_ids, packed.token_counts).split(packed.token_counts)
        for image, feats in zip(images, together):
            alone = ours.encode_images([image])[0]
            torch.testing.assert_close(feats, alone, atol=1e-5, rtol=0)


def test_patchify_order_and_position_ids():
    image = torch.randn(3, 28, 42)
    patches = patchify_image(image)
    assert patches.shape == (2 * 3, 14 * 14 * 3)
    # patch (i, j), element (ph, pw, c) is image[c, 14i+ph, 14j+pw]
    i, j, ph, pw, c = 1, 2, 3, 5, 2
    assert patches[i * 3 + j, (ph * 14 + pw) * 3 + c] == image[c, 14 * i + ph, 14 * j + pw]
    assert vit_position_ids(28, 42, max_side=70).tolist() == [0, 1, 2, 70, 71, 72]
    assert vit_position_ids(28, 28, max_side=4, interpolate=True).tolist() == [0, 2, 8, 10]


def test_from_hf_pretrained_keeps_all_but_the_last_layer(tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path / "vision")
    ours = VisionEncoder.from_hf_pretrained(tmp_path / "vision").eval()
    assert ours.config.num_hidden_layers == HF_LAYERS - 1
    assert len(ours.vision_model.encoder.layers) == HF_LAYERS - 1
    image = torch.rand(3, 14 * SIDE, 14 * SIDE) * 2 - 1
    with torch.no_grad():
        expected = _hf_selected_layer(hf, image)
        torch.testing.assert_close(ours.encode_images([image])[0], expected, atol=1e-4, rtol=0)

    # Older SiglipVisionModel files prefix every key with "vision_model."; the dual-tower
    # SiglipModel does too, beside a text tower that must be ignored.
    state = load_file(str(tmp_path / "vision" / "model.safetensors"))
    (tmp_path / "prefixed").mkdir()
    (tmp_path / "prefixed" / "config.json").write_text((tmp_path / "vision" / "config.json").read_text())
    prefixed = {f"vision_model.{k}": v for k, v in state.items()}
    prefixed["text_model.embeddings.token_embedding.weight"] = torch.zeros(4, 32)
    save_file(prefixed, str(tmp_path / "prefixed" / "model.safetensors"))
    again = VisionEncoder.from_hf_pretrained(tmp_path / "prefixed", num_layers=HF_LAYERS).eval()
    assert len(again.vision_model.encoder.layers) == HF_LAYERS
    with torch.no_grad():
        last = hf(image[None]).last_hidden_state[0]
        torch.testing.assert_close(again.encode_images([image])[0], last, atol=1e-4, rtol=0)


def test_checkpoint_names_under_vit_model():
    keys = set(
        VisionEncoder(
            ViTConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1, image_size=56)
        ).state_dict()
    )
    assert "vision_model.embeddings.patch_embedding.weight" in keys
    assert "vision_model.embeddings.position_embedding.weight" in keys
    assert "vision_model.encoder.layers.0.self_attn.out_proj.bias" in keys
    assert "vision_model.encoder.layers.0.mlp.fc2.weight" in keys
    assert "vision_model.post_layernorm.weight" in keys


def test_bad_checkpoint_directory(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        VisionEncoder.from_hf_pretrained(tmp_path)


def test_image_size_errors_name_the_limit_and_fix():
    with pytest.raises(DataError, match="multiple of the ViT patch size 14"):
        vit_position_ids(30, 28)
    with pytest.raises(DataError, match=r"980 pixels per side.*vit_max_num_patch_per_side"):
        vit_position_ids(994, 28, max_side=70)
    vit_position_ids(994, 28, max_side=70, interpolate=True)  # interpolation maps any size
    ours = VisionEncoder(
        ViTConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1, image_size=56)
    )
    with pytest.raises(DataError, match="56 pixels per side"):
        ours.encode_images([torch.zeros(3, 70, 14)])
    # ids computed for a bigger table fail with a message, not inside the embedding kernel
    with pytest.raises(DataError, match="outside the 4 x 4 position table"):
        ours(torch.zeros(2, 588), torch.tensor([0, 16]), [2])
    with pytest.raises(DataError, match="sum to"):
        ours(torch.zeros(2, 588), torch.tensor([0, 1]), [1])
