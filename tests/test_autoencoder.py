"""FLUX autoencoder: parity with diffusers AutoencoderKL, loading, scaling, chunking, tiling, errors."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from unimedvl.config import VAEConfig
from unimedvl.errors import CheckpointError, DataError
from unimedvl.models.autoencoder import (
    Autoencoder,
    autoencoder_state_dict_from_diffusers,
    autoencoder_state_dict_to_diffusers,
    tiled_apply,
)

diffusers = pytest.importorskip("diffusers")

CFG = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=16)


def _ours(cfg: VAEConfig = CFG, seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    model = Autoencoder(cfg).eval()
    with torch.no_grad():  # non-trivial norm affines so a mis-mapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _diffusers_twin(model: Autoencoder):
    cfg = model.config
    ref = diffusers.AutoencoderKL(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_ch,
        down_block_types=("DownEncoderBlock2D",) * len(cfg.ch_mult),
        up_block_types=("UpDecoderBlock2D",) * len(cfg.ch_mult),
        block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult),
        layers_per_block=cfg.num_res_blocks,
        latent_channels=cfg.z_channels,
        norm_num_groups=32,
        scaling_factor=cfg.scale_factor,
        shift_factor=cfg.shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()
    ref.load_state_dict(autoencoder_state_dict_to_diffusers(model.state_dict()), strict=True)
    return ref


def test_key_names_follow_the_release_layout():
    keys = set(Autoencoder(VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=2)).state_dict())
    for k in [
        "encoder.conv_in.weight",
        "encoder.down.0.block.1.conv2.weight",
        "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.down.0.downsample.conv.weight",
        "encoder.mid.attn_1.proj_out.weight",
        "encoder.norm_out.weight",
        "decoder.up.0.block.2.norm1.weight",  # num_res_blocks + 1 decoder blocks
        "decoder.up.1.upsample.conv.weight",
        "decoder.mid.block_2.conv1.weight",
    ]:
        assert k in keys, k
    assert "encoder.down.2.downsample.conv.weight" not in keys  # last level does not downsample
    assert "decoder.up.0.upsample.conv.weight" not in keys  # level 0 does not upsample
    assert not any("down.0.block.2" in k for k in keys)


def test_parity_with_diffusers_encode_and_decode():
    ours = _ours()
    ref = _diffusers_twin(ours)
    x = torch.rand(2, 3, 32, 24) * 2 - 1
    with torch.no_grad():
        latent = ours.encode(x)
        mean = ref.encode(x).latent_dist.mean
        torch.testing.assert_close(latent, (mean - CFG.shift_factor) * CFG.scale_factor, atol=1e-4, rtol=0)
        image = ours.decode(latent)
        ref_image = ref.decode(latent / CFG.scale_factor + CFG.shift_factor).sample
    assert latent.shape == (2, 16, 16, 12)
    assert image.shape == x.shape
    assert (image - ref_image).abs().max() <= 1e-4


def test_state_dict_mapping_round_trip():
    state = _ours().state_dict()
    back = autoencoder_state_dict_from_diffusers(autoencoder_state_dict_to_diffusers(state))
    assert set(back) == set(state)
    assert all(torch.equal(back[k], v) for k, v in state.items())


def test_load_ae_safetensors_and_diffusers_directory(tmp_path):
    ours = _ours()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected = ours.encode(x)
    save_file(ours.state_dict(), str(tmp_path / "ae.safetensors"))
    for source in (tmp_path / "ae.safetensors", tmp_path):
        loaded = Autoencoder.from_pretrained(source, CFG).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded.encode(x), expected)

    ddir = tmp_path / "vae"
    _diffusers_twin(ours).save_pretrained(ddir)
    loaded = Autoencoder.from_pretrained(ddir).eval()  # config read from config.json
    assert loaded.config.ch == 32 and loaded.config.ch_mult == (1, 2) and loaded.config.z_channels == 16
    assert loaded.config.scale_factor == pytest.approx(CFG.scale_factor)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), expected)


def test_wrong_config_or_layout_raises_checkpoint_error(tmp_path):
    save_file(_ours().state_dict(), str(tmp_path / "ae.safetensors"))
    with pytest.raises(CheckpointError, match="vae.ch_mult"):
        Autoencoder.from_pretrained(tmp_path / "ae.safetensors", VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1))
    sd_dir = tmp_path / "sd"
    sd_dir.mkdir()
    (sd_dir / "config.json").write_text(json.dumps({"block_out_channels": [32, 64], "use_quant_conv": True}))
    with pytest.raises(CheckpointError, match="quant_conv"):
        Autoencoder.from_pretrained(sd_dir)
    with pytest.raises(CheckpointError, match="not a VAE checkpoint"):
        Autoencoder.from_pretrained(tmp_path / "missing")


def test_sample_option_and_deterministic_default():
    ours = _ours()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        a, b = ours.encode(x), ours.encode(x)
        s1 = ours.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
        s2 = ours.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.equal(s1, s2) and not torch.allclose(s1, a)


def test_batch_chunks_match_whole_batch():
    ours = _ours()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = ours.encode(x)
        torch.testing.assert_close(ours.encode(x, batch_chunk=2), z, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.decode(z, batch_chunk=1), ours.decode(z), atol=1e-5, rtol=0)


def test_tiled_blend_is_exact_for_a_local_function():
    z = torch.randn(1, 2, 13, 10)

    def up(t):
        return F.interpolate(t, scale_factor=4, mode="nearest")

    torch.testing.assert_close(tiled_apply(up, z, tile=5, overlap=2, scale=4), up(z))


def test_tiled_decode_shape_and_whole_tile_identity():
    ours = _ours()
    z = torch.randn(1, 16, 12, 8)
    with torch.no_grad():
        full = ours.decode(z)
        assert torch.equal(ours.decode(z, tile_size=12), full)  # one tile: same as whole
        tiled = ours.decode(z, tile_size=6, tile_overlap=2)
    assert tiled.shape == full.shape and torch.isfinite(tiled).all()


def test_bad_sizes_raise_data_error():
    ours = _ours()
    with pytest.raises(DataError, match="divisible by 2"):
        ours.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(DataError, match=r"\(B, 3, H, W\)"):
        ours.encode(torch.zeros(3, 16, 16))
    with pytest.raises(DataError, match="latents"):
        ours.decode(torch.zeros(1, 4, 8, 8))
