"""Sequence plans: split order, losses, dropout, clean copies after noised targets, model paths, token counts."""

import numpy as np
import pytest
from PIL import Image

from unimedvl.config import model_config
from unimedvl.data.plans import (
    COUNTERFACTUAL,
    MEDICAL_EDITING,
    T2I,
    TEXT_ONLY,
    UNIFIED_EDIT,
    VLM_SFT,
    VLM_SFT_RECON,
    Drops,
    ImageItem,
    ModelPaths,
    SampleBuilder,
    TextItem,
)
from unimedvl.data.records import parse_record
from unimedvl.errors import DataError
from unimedvl.imaging.transforms import ImageTransform
from unimedvl.models.packed_batch import TextSplit, VaeImageSplit, VitImageSplit, build_packed_batch
from unimedvl.tokenizer import Tokenizer

CFG = model_config("debug")
BOTH = ModelPaths(und=True, gen=True)
VAE_T = ImageTransform(16, 64, 32)
VIT_T = ImageTransform(14, 70, 28, 4900)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train_bpe(
        ["Assessment: the CT image is noisy. Remove the noise. What is this? A lesion."], vocab_size=300
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (64, 64), "b.png": (48, 64), "c.png": (64, 64)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(root / name)
    return root


def rec(images, human, gpt, inputs=(), outputs=(), extra_turns=()):
    msg = [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}, *extra_turns]
    return parse_record(
        {
            "main_task_type": "x",
            "input_img": [{"path": p} for p in inputs],
            "output_img": [{"path": p} for p in outputs],
            "message": msg,
        },
        images,
    )


def shape(items):
    """Compact description: T/t = text with/without loss, V = ViT, E = clean VAE, N = noised VAE."""
    out = []
    for item in items:
        if isinstance(item, TextItem):
            out.append("T" if item.loss else "t")
        else:
            out.append("V" if item.path == "vit" else ("N" if item.noised else "E"))
    return "".join(out)


def test_vlm_sft_places_images_at_placeholders_and_losses_on_gpt(images):
    r = rec(
        images,
        "Compare <image> with <image> please.",
        "Left is noisier.",
        inputs=["a.png", "b.png"],
        extra_turns=[{"from": "human", "value": "Why?"}, {"from": "gpt", "value": "More noise."}],
    )
    items = VLM_SFT.plan(r, Drops(), BOTH)
    assert shape(items) == "tVtVtTtT"
    assert [i.ref.rel_path for i in items if isinstance(i, ImageItem)] == ["a.png", "b.png"]
    assert items[0].text == "Compare" and items[5].text == "Left is noisier."
    # vlm_sft ignores dropout (understanding data) and never emits VAE splits.
    assert shape(VLM_SFT.plan(r, Drops(True, True, True), BOTH)) == "tVtVtTtT"


def test_medical_editing_assess_then_restore(images):
    r = rec(
        images,
        "<image>\nRemove the noise.",
        "Assessment: CT image with mild noise. <image>",
        inputs=["a.png"],
        outputs=["c.png"],
    )
    items = MEDICAL_EDITING.plan(r, Drops(), BOTH)
    assert shape(items) == "EVtTN"
    assert items[3].text == "Assessment: CT image with mild noise."
    assert items[4].ref.rel_path == "c.png"
    # Text dropout removes every text before the target (instruction and assessment: the text-free
    # guidance context lacks both); image dropout removes the input's paths and the CE loss.
    assert shape(MEDICAL_EDITING.plan(r, Drops(text=True), BOTH)) == "EVN"
    assert shape(MEDICAL_EDITING.plan(r, Drops(vit=True), BOTH)) == "EtTN"
    assert shape(MEDICAL_EDITING.plan(r, Drops(vit=True, vae=True), BOTH)) == "ttN"


def test_counterfactual_noised_target_then_clean_copy_at_same_rope(images, tokenizer):
    r = rec(
        images,
        "<image>\nRemove the lesion, then explain.",
        "<image>\nThe lesion was removed.",
        inputs=["a.png"],
        outputs=["c.png"],
    )
    items = COUNTERFACTUAL.plan(r, Drops(), BOTH)
    assert shape(items) == "EVtNET"
    assert items[3].ref == items[4].ref  # the copy is the counterfactual image itself
    builder = SampleBuilder(tokenizer, CFG, VAE_T, VIT_T)
    splits, n = builder.materialize(builder.measure(items))
    batch = build_packed_batch([splits], tokenizer.special, CFG)
    modes = [s.mode for s in batch.layout.samples[0]]
    assert modes == ["full", "full", "causal", "noise", "full", "causal"]
    lengths = [s.length for s in batch.layout.samples[0]]
    starts = np.cumsum([0] + lengths)
    rope = batch.position_ids.tolist()
    noised, copy, text = rope[starts[3]], rope[starts[4]], rope[starts[5]]
    assert noised == copy and text == copy + 1  # the noised split does not advance; the copy reuses its id
    # Inputs dropped: the explanation stays (it follows the image) but carries no loss.
    assert shape(COUNTERFACTUAL.plan(r, Drops(vit=True, vae=True), BOTH)) == "tNEt"


def test_unified_edit_multi_step_copies_intermediate_targets(images):
    r = rec(
        images,
        "<image>\nDenoise.",
        "<image>",
        inputs=["a.png"],
        outputs=["b.png", "c.png"],
        extra_turns=[{"from": "human", "value": "Now sharpen."}, {"from": "gpt", "value": "<image>"}],
    )
    items = UNIFIED_EDIT.plan(r, Drops(), BOTH)
    assert shape(items) == "EVtNEVtN"
    assert [i.ref.rel_path for i in items if isinstance(i, ImageItem)] == ["a.png"] * 2 + ["b.png"] * 3 + ["c.png"]
    # Dropout of the source's VAE and ViT copies and of the text; intermediate copies stay.
    assert shape(UNIFIED_EDIT.plan(r, Drops(True, True, True), BOTH)) == "NEVN"
    with pytest.raises(DataError, match="needs at least one input image"):
        UNIFIED_EDIT.plan(rec(images, "Draw.", "<image>", outputs=["c.png"]), Drops(), BOTH)


def test_t2i_recon_and_text_only(images):
    t2i = rec(images, "An axial CT image.", "<image>", outputs=["c.png"])
    assert shape(T2I.plan(t2i, Drops(), BOTH)) == "tN"
    assert shape(T2I.plan(t2i, Drops(text=True), BOTH)) == "N"
    vqa = rec(images, "<image> and <image>: same patient?", "Yes.", inputs=["a.png", "b.png"])
    items = VLM_SFT_RECON.plan(vqa, Drops(), BOTH)
    assert shape(items) == "VtVtTNEN"  # reconstructions after the answer; a clean copy between them
    assert [i.ref.rel_path for i in items[5:]] == ["a.png", "a.png", "b.png"]
    text = rec(images, "Hello", "Hi.")
    assert shape(TEXT_ONLY.plan(text, Drops(), BOTH)) == "tT"
    with pytest.raises(DataError, match="takes no input images"):
        TEXT_ONLY.plan(vqa, Drops(), BOTH)
    with pytest.raises(DataError, match="nothing to learn"):
        VLM_SFT.plan(rec(images, "<image> look", "", inputs=["a.png"]), Drops(), BOTH)


def test_models_without_a_path(images):
    edit = rec(images, "<image>\nRemove the noise.", "Assessment: noisy. <image>", inputs=["a.png"], outputs=["c.png"])
    und_only, gen_only = ModelPaths(und=True, gen=False), ModelPaths(und=False, gen=True)
    # Without the generation path medical editing becomes understanding (no VAE split at all, no dropout).
    assert shape(MEDICAL_EDITING.plan(edit, Drops(True, True, True), und_only)) == "VtT"
    assert shape(MEDICAL_EDITING.plan(edit, Drops(), gen_only)) == "EtTN"
    vqa = rec(images, "<image> what?", "CT.", inputs=["a.png"])
    assert shape(VLM_SFT_RECON.plan(vqa, Drops(), und_only)) == "VtT"
    assert VLM_SFT.unsupported(gen_only) and "visual_und" in VLM_SFT.unsupported(gen_only)
    assert T2I.unsupported(und_only) and UNIFIED_EDIT.unsupported(und_only)
    assert MEDICAL_EDITING.unsupported(und_only) is None and MEDICAL_EDITING.unsupported(ModelPaths(False, False))
    assert not T2I.uses_vit(BOTH) and T2I.uses_vae(BOTH) and not VLM_SFT.uses_vae(BOTH)
    assert T2I.generates(BOTH) and not T2I.understands(BOTH) and VLM_SFT_RECON.generates(BOTH)


@pytest.mark.parametrize("plan", [VLM_SFT, VLM_SFT_RECON, MEDICAL_EDITING, COUNTERFACTUAL, UNIFIED_EDIT, T2I])
def test_token_count_before_loading_equals_the_packed_length(plan, images, tokenizer):
    if plan is T2I:
        r = rec(images, "An axial CT image.", "<image>", outputs=["b.png"])
    elif plan in (VLM_SFT, VLM_SFT_RECON):
        r = rec(images, "<image>\nWhat is this?", "A lesion.", inputs=["b.png"])
    else:
        r = rec(
            images, "<image>\nRemove the noise.", "<image>\nAssessment: noisy.", inputs=["b.png"], outputs=["a.png"]
        )
    builder = SampleBuilder(tokenizer, CFG, VAE_T, VIT_T)
    measured = builder.measure(plan.plan(r, Drops(), BOTH))  # sizes from the file header: nothing decoded
    splits, n = builder.materialize(measured)
    assert measured.num_tokens == n == build_packed_batch([splits], tokenizer.special, CFG).sequence_length
    vit = [s.image.shape for s in splits if isinstance(s, VitImageSplit)]
    vae = [s.image.shape for s in splits if isinstance(s, VaeImageSplit)]
    assert all(h % 14 == 0 and w % 14 == 0 for _, h, w in vit) and all(h % 16 == 0 and w % 16 == 0 for _, h, w in vae)
    assert all(isinstance(s, TextSplit) for s in splits if not isinstance(s, (VitImageSplit, VaeImageSplit)))


def test_training_texts_are_closed_as_the_reference_packs_and_inference_reads_them(images, tokenizer):
    """Every text of a training sample is <|im_start|> ids <|im_end|>: the <|im_end|> an input with the
    next RoPE id and no loss (the reference's packer); inference contexts hold the same tokens, so a
    fine-tuned model never meets at inference an input its training lacked."""
    r = rec(images, "<image>\nWhat is this?", "A lesion.", inputs=["b.png"])
    builder = SampleBuilder(tokenizer, CFG, VAE_T, VIT_T)
    splits, _ = builder.materialize(builder.measure(VLM_SFT.plan(r, Drops(), BOTH)))
    batch = build_packed_batch([splits], tokenizer.special, CFG)
    sp = tokenizer.special
    question, answer = (tokenizer.encode(t) for t in ("What is this?", "A lesion."))
    assert batch.text_ids.tolist() == [
        sp.vision_start,
        sp.vision_end,
        sp.bos,
        *question,
        sp.eos,
        sp.bos,
        *answer,
        sp.eos,
    ]
    assert batch.ce_labels.tolist() == [*answer, sp.eos]  # the closing <|im_end|> itself carries no loss
    n_vit = batch.vit_token_lens[0]
    text_start = n_vit + 2  # the image split: markers and patches at RoPE id 0
    assert batch.position_ids[text_start:].tolist() == list(range(1, 1 + len(question) + 2 + len(answer) + 2))
