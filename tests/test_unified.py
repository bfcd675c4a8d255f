"""The unified model on PackedBatches: losses, gradient flow, partial models, overfitting."""

import pytest
import torch

from unimedvl.config import model_config
from unimedvl.models.packed_batch import TextSplit, VaeImageSplit, VitImageSplit, build_packed_batch
from unimedvl.models.unified import UnifiedModel
from unimedvl.tokenizer import SpecialIds

SPECIAL = SpecialIds(bos=1, eos=2, vision_start=3, vision_end=4, pad=0)


def _image(side, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, side, side, generator=g) * 2 - 1


def _edit_sample(source, target, instruction=(20, 21, 22), answer=(30, 31)):
    return [
        VaeImageSplit(image=source),
        VitImageSplit(source[:, : source.shape[1] // 14 * 14, : source.shape[2] // 14 * 14]),
        TextSplit(list(instruction)),
        TextSplit(list(answer), loss=True),
        VaeImageSplit(image=target, noised=True),
    ]


def test_losses_finite_and_gradients_flow_where_they_should():
    cfg = model_config("debug")
    model = UnifiedModel(cfg)
    model.vit_model.requires_grad_(False)  # a frozen part must receive nothing
    batch = build_packed_batch([_edit_sample(_image(64, 0), _image(64, 1))], SPECIAL, cfg)
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["ce"]) and torch.isfinite(out["mse"])
    assert out["ce_tokens"] == 3 and out["mse_tokens"] == 16
    (out["ce"] + out["mse"]).backward()
    for name, p in model.named_parameters():
        if name.startswith(("vae.", "vit_model.")):
            assert p.grad is None, name
        elif p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.llm2vae.weight.grad.abs().sum() > 0  # zero-initialised head still learns
    assert model.connector.fc1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("visual_gen, visual_und", [(True, False), (False, True), (False, False)])
def test_partial_models_and_empty_losses(visual_gen, visual_und):
    cfg = model_config("debug")
    cfg.visual_gen, cfg.visual_und = visual_gen, visual_und
    model = UnifiedModel(cfg)
    sample = [TextSplit([5, 6])]
    if visual_und:
        sample.append(VitImageSplit(_image(28, 0)))
    if visual_gen:
        sample.append(VaeImageSplit(image=_image(32, 0)))  # clean image only: no flow loss
    sample.append(TextSplit([7], loss=visual_und))
    out = model(build_packed_batch([sample], SPECIAL, cfg))
    assert out["mse"].item() == 0.0 and out["mse_tokens"] == 0
    assert (out["ce_tokens"] > 0) == visual_und
    (out["ce"] + out["mse"]).backward()  # zero losses still backpropagate without error


def test_generation_only_batch_has_no_ce():
    cfg = model_config("debug")
    model = UnifiedModel(cfg)
    batch = build_packed_batch([[TextSplit([5, 6]), VaeImageSplit(image=_image(32, 0), noised=True)]], SPECIAL, cfg)
    out = model(batch)
    assert out["ce"].item() == 0.0 and out["mse"].item() > 0
    (out["ce"] + out["mse"]).backward()
    assert model.language_model.lm_head.weight.grad is not None  # same graph on every rank


def test_global_normalisers_scale_losses():
    cfg = model_config("debug")
    model = UnifiedModel(cfg)
    batch = build_packed_batch([_edit_sample(_image(32, 0), _image(32, 1))], SPECIAL, cfg)
    local = model(batch, generator=torch.Generator().manual_seed(1))
    scaled = model(batch, generator=torch.Generator().manual_seed(1), ce_normalizer=6.0, mse_normalizer=8.0)
    assert torch.allclose(scaled["ce"] * 6.0, local["ce"] * 3)
    assert torch.allclose(scaled["mse"] * 8.0, local["mse"] * 4)


def test_debug_model_overfits_one_editing_pair():
    torch.manual_seed(0)
    cfg = model_config("debug")
    model = UnifiedModel(cfg)
    source, target = _image(32, 0), _image(32, 1)
    batch = build_packed_batch([_edit_sample(source, target)], SPECIAL, cfg)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=5e-3, betas=(0.9, 0.95), weight_decay=0.0)

    def evaluate():
        with torch.no_grad():
            fixed = build_packed_batch(
                [_edit_sample(source, target)[:-1] + [VaeImageSplit(image=target, noised=True, timestep=0.5)]],
                SPECIAL,
                cfg,
            )
            out = model(fixed, generator=torch.Generator().manual_seed(123))
        return out["ce"].item(), out["mse"].item()

    ce0, mse0 = evaluate()
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        out = model(batch, generator=g)
        opt.zero_grad()
        (out["ce"] + out["mse"]).backward()
        opt.step()
    ce1, mse1 = evaluate()
    assert mse1 < 0.5 * mse0, (mse0, mse1)
    assert ce1 < 0.5 * ce0, (ce0, ce1)
