import pytest
import torch

from unimedvl.config import model_config
from unimedvl.errors import DataError
from unimedvl.models.packed_batch import TextSplit, VaeImageSplit, VitImageSplit, build_packed_batch
from unimedvl.tokenizer import SpecialIds

SPECIAL = SpecialIds(bos=1, eos=2, vision_start=3, vision_end=4, pad=0)
CFG = model_config("debug")


def _img(side, stride):
    return torch.rand(3, side * stride, side * stride) * 2 - 1


def test_layout_rope_ids_and_labels():
    # text(2 ids, loss) -> ViT image 2x2 -> clean VAE 1x1 -> noised VAE 1x2 -> text(1 id, loss)
    sample = [
        TextSplit([10, 11], loss=True),
        VitImageSplit(_img(2, 14)),
        VaeImageSplit(image=_img(1, 16)),
        VaeImageSplit(image=torch.zeros(3, 16, 32), noised=True),
        TextSplit([12], loss=True),
    ]
    b = build_packed_batch([sample], SPECIAL, CFG)
    modes = [(s.length, s.mode) for s in b.layout.samples[0]]
    assert modes == [(3, "causal"), (6, "full"), (3, "full"), (4, "noise"), (2, "causal")]
    # text 0,1,2; ViT split at 3 -> 4; clean VAE at 4 -> 5; noised VAE at 5 (no advance); text 5,6
    expected = [0, 1, 2] + [3] * 6 + [4] * 3 + [5] * 4 + [5, 6]
    assert b.position_ids.tolist() == expected
    assert b.ce_indexes.tolist() == [0, 1, 2, 16, 17]
    assert b.ce_labels.tolist() == [10, 11, 2, 12, 2]
    assert b.vit_indexes.tolist() == [4, 5, 6, 7] and b.vit_token_lens == [4]
    assert b.vae_indexes.tolist() == [10, 13, 14]
    assert b.vae_grids == [(1, 1), (1, 2)]
    assert b.vae_noised.tolist() == [False, True]
    assert b.vae_timesteps[0] == 0 and torch.isnan(b.vae_timesteps[1])
    assert b.text_ids[b.text_indexes.tolist().index(3)] == 3  # vision_start marker
    assert b.sequence_length == 18
    everything = sorted(b.text_indexes.tolist() + b.vit_indexes.tolist() + b.vae_indexes.tolist())
    assert everything == list(range(18))


def test_samples_restart_rope_and_sqrt_weighting():
    b = build_packed_batch(
        [[TextSplit([5, 6, 7], loss=True)], [TextSplit([8], close=True)]], SPECIAL, CFG, ce_weighting="sqrt_split"
    )
    assert b.position_ids.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert b.text_ids.tolist() == [1, 5, 6, 7, 1, 8, 2]
    assert torch.allclose(b.ce_weights, torch.full((4,), 0.5))
    assert b.layout.sample_lens == [4, 3]


def test_latent_token_inputs_for_denoising():
    tokens = torch.randn(6, CFG.patch_latent_dim)
    b = build_packed_batch([[VaeImageSplit(tokens=tokens, grid=(2, 3), noised=True, timestep=0.7)]], SPECIAL, CFG)
    assert b.vae_inputs[0] is tokens and b.vae_grids == [(2, 3)]
    assert b.vae_timesteps.tolist() == pytest.approx([0.7])
    assert b.vae_position_ids.tolist() == [
        0,
        1,
        2,
        CFG.max_latent_size,
        CFG.max_latent_size + 1,
        CFG.max_latent_size + 2,
    ]


def test_too_large_and_misaligned_images_are_rejected_clearly():
    side = CFG.vit_max_num_patch_per_side + 1
    with pytest.raises(DataError, match="resize it to at most"):
        build_packed_batch([[VitImageSplit(torch.zeros(3, 14 * side, 14))]], SPECIAL, CFG)
    with pytest.raises(DataError, match="multiple of 14"):
        build_packed_batch([[VitImageSplit(torch.zeros(3, 20, 28))]], SPECIAL, CFG)
    big = CFG.max_latent_size + 1
    with pytest.raises(DataError, match="max_latent_size"):
        build_packed_batch([[VaeImageSplit(image=torch.zeros(3, 16 * big, 16))]], SPECIAL, CFG)
    with pytest.raises(DataError, match="multiples of 16"):
        build_packed_batch([[VaeImageSplit(image=torch.zeros(3, 24, 16))]], SPECIAL, CFG)
