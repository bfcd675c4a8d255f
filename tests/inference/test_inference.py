"""Inference on the KV cache: contexts, batched requests, guidance, thinking mode, the API, errors.

One debug checkpoint (random weights, llm2vae perturbed so the velocity is not identically zero)
serves every test; images are 32-64 px and sampling uses 4 timesteps.
"""

import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from inference_support import SMALL, STEPS, random_image
from PIL import Image

from unimedvl.checkpoint.create import init_checkpoint
from unimedvl.errors import CheckpointError, ConfigError, DataError, UserError
from unimedvl.imaging.transforms import ImageTransform
from unimedvl.inference.api import Answer, ImageAnswer, UniMedVL
from unimedvl.inference.inferencer import GuidedVelocity, Inferencer, Request
from unimedvl.models.packed_batch import TextSplit, build_packed_batch
from unimedvl.sampling.flow import GuidanceConfig, combine_guidance


def _fast(task, **kw):
    base = {
        "edit": GuidanceConfig(4.0, 2.0, (0.0, 1.0), "text_channel", 0.0, 3.0, STEPS),
        "generate": GuidanceConfig(4.0, 1.0, (0.4, 1.0), "global", 0.0, 3.0, STEPS),
    }[task]
    return replace(base, **kw)


# -- text ----------------------------------------------------------------------------------


@torch.no_grad()
def test_cached_greedy_decoding_equals_full_forward_decoding(api):
    inf = api.inferencer
    model, tok = inf.model, inf.tokenizer
    image, question = random_image(40, 56, 0), "What imaging modality is this?"
    answer = inf.run([Request([image, question], max_new_tokens=10)])[0].token_ids
    # Reference: recompute all logits from scratch on a PackedBatch after every token.
    vit_splits, _ = inf.image_splits(image, generation=False)
    expected: list[int] = []
    for _ in range(10):
        sample = vit_splits + [TextSplit(tok.encode(question), close=True), TextSplit(expected)]
        batch = build_packed_batch([sample], tok.special, model.config)
        hidden, _ = model.embed(batch)
        out = model.language_model(hidden, batch.layout, batch.position_ids)
        token = int(model.language_model.logits(out[-1]).argmax())
        if token == tok.special.eos:
            break
        expected.append(token)
    assert answer == expected and len(answer) > 0


def test_batch_of_mixed_requests_equals_single_requests(api):
    inf = api.inferencer
    requests = [
        Request([random_image(40, 56, 0), "What imaging modality is this?"], max_new_tokens=6),
        Request([random_image(64, 48, 1), "Remove the noise."], "edit", guidance=_fast("edit"), seed=1),
        Request(["This is a chest X-ray."], max_new_tokens=9),
        Request(["Generate a chest X-ray."], "generate", guidance=_fast("generate"), seed=2, height=32, width=48),
        Request([random_image(32, 32, 2), "Is there a lesion?"], max_new_tokens=7, temperature=0.8, top_p=0.9, seed=5),
        Request([random_image(48, 48, 3), "Deblur this MRI slice."], "edit", guidance=_fast("edit"), seed=3),
        Request(["An axial brain MRI."], "generate", guidance=_fast("generate"), seed=6, height=48, width=48),
    ]
    batched = inf.run(requests)
    for request, got in zip(requests, batched):
        alone = inf.run([request])[0]
        assert got.token_ids == alone.token_ids and got.text == alone.text
        if request.makes_image:
            assert got.image.size == alone.image.size
            # Batched kernels may round differently in the last float bits: at most one grey
            # level on a handful of pixels, where a seed mix-up would change every pixel.
            diff = np.abs(np.asarray(got.image).astype(int) - np.asarray(alone.image))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert batched[1].image.size == (48, 64)  # an edit keeps the input's size (PIL: width, height)
    assert batched[3].image.size == (48, 32)


def test_sampling_is_seeded_per_request(api):
    image, q = random_image(40, 40, 4), "Describe the findings."
    a = api.ask(image, q, temperature=1.0, top_p=0.95, seed=11, max_new_tokens=8)
    b = api.ask(image, q, temperature=1.0, top_p=0.95, seed=11, max_new_tokens=8)
    c = api.ask(image, q, temperature=1.0, top_p=0.95, seed=12, max_new_tokens=8)
    assert a == b and a != c


def test_image_inputs_as_path_array_tensor_and_dicom(api, tmp_path):
    image = random_image(48, 40, 5)
    image.save(tmp_path / "x.png")
    q = "What imaging modality is this?"
    ref = api.ask(image, q, max_new_tokens=5)
    assert api.ask(str(tmp_path / "x.png"), q, max_new_tokens=5) == ref
    assert api.ask(np.asarray(image), q, max_new_tokens=5) == ref
    assert api.ask(np.asarray(image).astype(np.float32) / 255.0, q, max_new_tokens=5) == ref
    pydicom = pytest.importorskip("pydicom")
    from unimedvl.imaging.medical_io import load_image

    dcm = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm")
    assert api.ask(dcm + "#window=lung", q, max_new_tokens=5) == api.ask(
        load_image(dcm, window="lung"), q, max_new_tokens=5
    )


# -- contexts ------------------------------------------------------------------------------


def test_contexts_follow_the_spec(api):
    inf = api.inferencer
    tok = inf.tokenizer
    image, text = random_image(32, 48, 6), "Remove the noise."
    n_text = len(tok.encode(text)) + 2  # <|im_start|> text <|im_end|>
    n_vae = (32 // 16) * (48 // 16) + 2  # latent tokens + markers
    vit = inf.vit_transform(inf.vae_transform.resize(image))
    n_vit = (vit.shape[1] // 14) * (vit.shape[2] // 14) + 2
    plan = inf.prepare([Request([image, text], "edit", guidance=_fast("edit")), Request([image, text])])
    edit, und = plan.jobs
    length = plan.pool.length
    assert (length(edit.full), edit.full.rope) == (n_vae + n_vit + n_text, 2 + n_text)
    assert (length(edit.cfg_text), edit.cfg_text.rope) == (n_vae + n_vit, 2)  # no text
    assert (length(edit.cfg_img), edit.cfg_img.rope) == (n_text, n_text)  # no image
    assert (length(und.full), und.full.rope) == (n_vit + n_text, 1 + n_text)  # ViT only
    assert und.cfg_text is None and und.cfg_img is None


def test_thinking_adds_reasoning_to_the_full_context_only(api):
    inf = api.inferencer
    prompt = "Generate a chest X-ray."
    plain = inf.prepare([Request([prompt], "generate", guidance=_fast("generate"), height=32, width=32)])
    plan = inf.prepare(
        [
            Request(
                [prompt],
                "generate",
                think=True,
                max_new_tokens=6,
                guidance=_fast("generate"),
                height=32,
                width=32,
                seed=0,
            )
        ]
    )
    job, ref = plan.jobs[0], plain.jobs[0]
    length = plan.pool.length
    system = len(inf.tokenizer.encode(inf.think_prompts["generate"])) + 2
    # The system prompt goes to full and cfg_img first; cfg_text is a copy of full before the prompt.
    assert length(job.full) == plain.pool.length(ref.full) + system
    assert length(job.cfg_img) == plain.pool.length(ref.cfg_img) + system
    assert length(job.cfg_text) == system
    before = {name: (length(getattr(job, name)), getattr(job, name).rope) for name in ("full", "cfg_text", "cfg_img")}
    inf.decode_text(plan)
    reasoning = job.result.token_ids
    assert len(reasoning) > 0 and isinstance(job.result.thinking, str)
    assert (length(job.full), job.full.rope) == (
        before["full"][0] + len(reasoning) + 2,
        before["full"][1] + len(reasoning) + 2,
    )
    assert (length(job.cfg_text), job.cfg_text.rope) == before["cfg_text"]
    assert (length(job.cfg_img), job.cfg_img.rope) == before["cfg_img"]
    inf.generate_images(plan)
    assert job.result.image.size == (32, 32)
    out = api.generate(prompt, think=True, max_think_tokens=6, height=32, width=32, seed=0, num_timesteps=STEPS)
    assert isinstance(out, ImageAnswer) and out.thinking == job.result.thinking
    np.testing.assert_array_equal(np.asarray(out.image), np.asarray(job.result.image))


def test_understanding_think_mode_returns_answer_object(api):
    out = api.ask(random_image(32, 32, 7), "Is there a lesion?", think=True, max_new_tokens=5)
    assert isinstance(out, Answer) and isinstance(out.thinking, str) and str(out) == out.text


# -- images --------------------------------------------------------------------------------


@torch.no_grad()
def test_guidance_branches_batched_equal_one_by_one_and_scale_one_is_unguided(api):
    inf = api.inferencer
    plan = inf.prepare(
        [
            Request([random_image(32, 48, 8), "Remove the noise."], "edit", guidance=_fast("edit")),
            Request(["Generate a chest X-ray."], "generate", height=48, width=32),
        ]
    )
    jobs = plan.jobs
    grids = [(2, 3), (3, 2)]
    velocity = GuidedVelocity(plan.pool, [(j.full, j.cfg_text, j.cfg_img) for j in jobs], grids)
    x = torch.randn(12, inf.model.config.patch_latent_dim)
    t = torch.full((12,), 0.7)
    branches = ("cond", "text_uncond", "img_uncond")
    together = velocity(x, t, branches)
    for b in branches:
        torch.testing.assert_close(velocity(x, t, (b,))[b], together[b], atol=1e-5, rtol=0)
    assert (together["text_uncond"] - together["cond"]).abs().max() > 1e-3  # the contexts differ
    assert (together["img_uncond"] - together["cond"]).abs().max() > 1e-3
    seg = torch.tensor([0] * 6 + [1] * 6)
    for renorm in ("global", "channel", "text_channel"):
        unit = GuidanceConfig(1.0, 1.0, (0.0, 1.0), renorm, 0.0)
        torch.testing.assert_close(combine_guidance(together, unit, seg, 2), together["cond"])


def test_scale_one_and_empty_interval_give_the_unguided_image(api):
    image, text = random_image(32, 32, 9), "Remove the noise."

    def run(**guidance):
        return np.asarray(api.edit(image, text, seed=4, num_timesteps=STEPS, **guidance))

    unguided = run(cfg_text_scale=1.0, cfg_img_scale=1.0)
    np.testing.assert_array_equal(run(cfg_interval=(0.5, 0.5)), unguided)  # empty interval
    assert np.abs(run().astype(int) - unguided).max() > 0  # guidance changes the image


def test_seeds_reproduce_images(api):
    def gen(seed):
        return np.asarray(api.generate("A chest X-ray.", height=32, width=32, seed=seed, num_timesteps=STEPS))

    a, b, c = gen(7), gen(7), gen(8)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).max() > 0
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8


def test_strength_starts_from_the_noised_input_and_runs_that_part_of_the_schedule(api):
    inf = api.inferencer
    image, text = random_image(32, 48, 11), "Remove the noise."
    steps: list[int] = []

    def edit(strength, **kw):
        steps.clear()
        out = api.edit(
            image,
            text,
            seed=4,
            num_timesteps=9,
            timestep_shift=1.0,
            strength=strength,
            progress=lambda step, total: steps.append(total),
            **kw,
        )
        return np.asarray(out).astype(int)

    # The input's own round trip through the VAE: where a tiny strength must end up.
    source = inf.image_splits(image, generation=True)[0][0].image
    (tokens,) = inf.model.encode_images([source])
    cfg = inf.model.config
    round_trip = inf.decode_latents(tokens, [(32 // cfg.vae_image_stride, 48 // cfg.vae_image_stride)])[0]
    near, far = edit(0.02), edit(1.0)
    assert steps and set(steps) == {8}  # strength 1: every step of the schedule
    # (the random debug VAE is sensitive: a 2% noise mix moves pixels, pure noise moves them 4x more)
    assert np.abs(near - np.asarray(round_trip)).mean() < np.abs(far - np.asarray(round_trip)).mean() / 3
    edit(0.02)
    assert set(steps) == {1}
    edit(0.5)
    assert set(steps) == {4}  # 0.5, then 0.375 ... 0 of linspace(1, 0, 9)
    with pytest.raises(DataError, match="keeps its size"):
        api.edit(image, text, strength=0.5, height=32, width=32, num_timesteps=STEPS)
    with pytest.raises(ConfigError, match="edit setting"):
        Request(["A chest X-ray."], "generate", strength=0.5)
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        api.edit(image, text, strength=0.0)


def test_a_checkpoint_preset_carries_its_strength_to_edit_the_cli_and_generate(api, checkpoint, tmp_path, capsys):
    """A checkpoint evaluated at strength 0.5 and 5 steps edits that way without flags (issue 29, item 3)."""
    import shutil

    from unimedvl import cli
    from unimedvl.checkpoint.inference_config import InferenceConfig, evaluated_presets

    folder = tmp_path / "evaluated"
    shutil.copytree(checkpoint, folder)
    base = InferenceConfig.load(folder)
    replace(base, guidance=evaluated_presets(0.5, 5)).save(folder)
    model = UniMedVL.from_pretrained(folder, device="cpu", dtype="fp32", **SMALL)
    image, text = random_image(32, 48, 13), "Remove the noise."
    steps: list[int] = []
    plain = np.asarray(model.edit(image, text, seed=2, progress=lambda step, total: steps.append(total)))
    assert set(steps) == {2}  # 0.5, then 0.25, 0 of linspace(1, 0, 5): the preset's strength and steps
    explicit = api.edit(image, text, seed=2, strength=0.5, num_timesteps=5, timestep_shift=1.0)  # release presets
    assert np.array_equal(plain, np.asarray(explicit))
    assert not np.array_equal(plain, np.asarray(model.edit(image, text, seed=2, strength=1.0)))
    png, out = tmp_path / "in.png", tmp_path / "out.png"
    image.save(png)
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    assert (
        cli.main(
            [
                "edit",
                "--model",
                str(folder),
                "--image",
                str(png),
                "--instruction",
                text,
                "--out",
                str(out),
                "--seed",
                "2",
                "--no-progress",
                *sizes,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), plain)
    steps.clear()
    model.generate("A chest X-ray.", height=32, width=32, seed=0, progress=lambda step, total: steps.append(total))
    assert set(steps) == {4}  # text-to-image: the preset's 5 points from pure noise (no input to start from)


def test_strength_one_starts_from_exactly_the_noise(api):
    inf = api.inferencer
    plan = inf.prepare([Request([random_image(32, 32, 12), "Denoise."], "edit", guidance=_fast("edit"), seed=9)])
    job = plan.jobs[0]
    assert torch.equal(inf.initial_latents(job, (2, 2), torch.device("cpu")), inf.initial_noise((2, 2), 9))


# -- chat ----------------------------------------------------------------------------------


def test_chat_session_keeps_turns_and_switches_thinking(api):
    chat = api.chat()
    chat.attach(random_image(40, 40, 10))
    with_image = chat.context_length
    first = chat.ask("What is this?", max_new_tokens=4)
    assert first == api.ask(random_image(40, 40, 10), "What is this?", max_new_tokens=4)  # a first turn is an ask
    after_first = chat.context_length
    chat.ask("Where is the lesion?", max_new_tokens=4)
    assert chat.context_length > after_first > with_image
    length = chat.context_length
    chat.think = True  # the turns are replayed after the thinking prompt
    system = len(api.tokenizer.encode(api.inferencer.think_prompts["understand"])) + 2
    assert chat.context_length == length + system
    answer = chat.ask("Is it normal?", max_new_tokens=3)
    assert isinstance(answer, Answer)
    length = chat.context_length
    chat.think = False
    assert chat.context_length == length - system and len(chat.turns) == 7
    chat.reset()
    assert chat.context_length == 0 and chat.turns == []


# -- errors --------------------------------------------------------------------------------


def test_bad_inputs_raise_one_clear_user_error(api, checkpoint, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    q = "What is this?"
    with pytest.raises(DataError, match="file not found"):
        api.ask(tmp_path / "missing.png", q)
    with pytest.raises(DataError, match="not an image file"):
        api.ask(tmp_path / "broken.png", q)
    with pytest.raises(DataError, match="question is empty"):
        api.ask(random_image(32, 32, 0), "  ")
    with pytest.raises(DataError, match="uint8 or floats in"):
        api.ask(np.full((32, 32), 1000, dtype=np.int32), q)
    with pytest.raises(DataError, match="must be a PIL image"):
        api.ask(object(), q)
    with pytest.raises(DataError, match="exceeds this model's latent position table"):
        api.generate("x-ray", height=1024, width=32, num_timesteps=2)
    with pytest.raises(DataError, match="multiple of 16"):
        api.generate("x-ray", height=40, width=32, num_timesteps=2)
    with pytest.raises(ConfigError, match="num_timesteps"):
        api.generate("x-ray", height=32, width=32, num_timesteps=1)
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        UniMedVL.from_pretrained("someone/no-such-model")
    with pytest.raises(CheckpointError, match="not found"):
        UniMedVL.from_pretrained(tmp_path / "nowhere" / "deeper" / "x")
    # A checkpoint without generation weights answers but refuses to generate.
    (tmp_path / "nogen.yaml").write_text("size: debug\nvisual_gen: false\n")
    nogen_dir = init_checkpoint(tmp_path / "nogen.yaml", tmp_path / "nogen", seed=0, tokenizer=api.tokenizer)
    nogen = UniMedVL.from_pretrained(nogen_dir, **SMALL)
    assert isinstance(nogen.ask(random_image(32, 32, 0), q, max_new_tokens=2), str)
    with pytest.raises(UserError, match="visual_gen=False"):
        nogen.generate("x-ray", height=32, width=32)
    with pytest.raises(UserError, match="visual_gen=False"):
        nogen.edit(random_image(32, 32, 0), "denoise")


def test_large_images_are_resized_to_the_position_tables_with_a_notice(api):
    model, tok = api.model, api.tokenizer
    with pytest.warns(UserWarning, match="position table"):
        inf = Inferencer(model, tok, ImageTransform(16, 4096, 32), ImageTransform(14, 4096, 56))
    limit = model.config.max_latent_size * 16
    assert inf.vae_transform.max_image_size == limit
    splits, (h, w) = inf.image_splits(random_image(1200, 300, 0), generation=True)
    assert max(h, w) <= limit and splits[1].image.shape[1] <= model.config.vit_max_num_patch_per_side * 14
    out = inf.run([Request([random_image(1200, 300, 0), "What is this?"], max_new_tokens=2)])[0]
    assert isinstance(out.text, str)


# -- release-exact details (issue 23) --------------------------------------------------------------


def test_batched_latents_equal_single_latents_to_fp32_round_off(api, monkeypatch):
    inf = api.inferencer
    captured = []
    decode = Inferencer.decode_latents

    def keep(self, latents, grids):
        captured.append(latents.detach().clone())
        return decode(self, latents, grids)

    monkeypatch.setattr(Inferencer, "decode_latents", keep)
    requests = [
        Request([random_image(48, 48, 7), "Remove the noise."], "edit", guidance=_fast("edit"), seed=4),
        Request([random_image(64, 48, 8), "Deblur it."], "edit", guidance=_fast("edit"), seed=5),
    ]
    inf.run(requests)
    batched = captured.pop().split([9, 12])  # 48x48 and 64x48 at a 16 px stride: 3x3 and 4x3 latent tokens
    for request, together in zip(requests, batched):
        inf.run([request])
        alone = captured.pop()
        assert alone.shape == together.shape
        # fp32 round-off, not a seed or layout difference (those change every value by O(1)).
        torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_release_thinking_prompts_are_the_default_and_named_alternatives_remain(checkpoint):
    from unimedvl.checkpoint.inference_config import THINK_PROMPT_SETS, InferenceConfig
    from unimedvl.inference.inferencer import THINK_PROMPTS
    from unimedvl.tokenizer import Tokenizer

    qwen = Tokenizer.offline_qwen()
    # The token ids the released weights see (public BAGEL inferencer's wording, Qwen tokenizer).
    assert qwen.encode(THINK_PROMPTS["understand"]) == [
        2610,
        1265,
        1156,
        1744,
        911,
        279,
        32711,
        1882,
        304,
        279,
        3971,
        323,
        1221,
        3410,
        279,
        1196,
        448,
        279,
        4226,
        13,
        715,
        785,
        32711,
        1882,
        374,
        43810,
        2878,
        220,
        151667,
        220,
        151668,
        9492,
        11,
        600,
        1734,
        13,
        220,
        151667,
        32711,
        1882,
        1588,
        220,
        151668,
        4226,
        1588,
    ]
    assert qwen.encode(THINK_PROMPTS["generate"]) == [
        2610,
        1265,
        1156,
        1744,
        911,
        279,
        9115,
        1882,
        304,
        279,
        3971,
        323,
        1221,
        6923,
        279,
        2168,
        13,
        715,
        785,
        9115,
        1882,
        374,
        43810,
        2878,
        220,
        151667,
        220,
        151668,
        9492,
        11,
        600,
        1734,
        13,
        220,
        151667,
        9115,
        1882,
        1588,
        220,
        151668,
        2168,
        1588,
    ]
    assert set(THINK_PROMPT_SETS) == {"release", "unimedvl", "concise"}
    assert InferenceConfig(think_prompts="concise").think_prompts == THINK_PROMPT_SETS["concise"]
    with pytest.raises(ConfigError, match="unknown prompt set 'verbose'"):
        InferenceConfig(think_prompts="verbose")
    model = UniMedVL.from_pretrained(checkpoint, **SMALL)
    assert model.inferencer.think_prompts == THINK_PROMPTS


def test_a_guidance_scale_at_or_below_one_is_off_as_in_the_release(api):
    import warnings

    inf = api.inferencer
    base = _fast("edit")
    request = Request([random_image(48, 48, 9), "Remove the noise."], "edit", seed=3)

    def run(guidance):
        return np.asarray(inf.run([replace(request, guidance=guidance)])[0].image)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        below = run(replace(base, cfg_text_scale=0.5))
        unguided = run(replace(base, cfg_text_scale=1.0))
        assert np.array_equal(below, unguided)  # 0.5 means "off", exactly like 1.0
        # Image guidance only runs together with text guidance: with text 1.0, image 2.0 changes nothing.
        assert np.array_equal(
            run(replace(base, cfg_text_scale=1.0, cfg_img_scale=2.0)),
            run(replace(base, cfg_text_scale=1.0, cfg_img_scale=1.0)),
        )
        assert np.array_equal(run(replace(base, cfg_img_scale=0.5)), run(replace(base, cfg_img_scale=1.0)))
    assert not np.array_equal(run(base), unguided)  # text 4 / image 2 does guide
    assert GuidanceConfig(cfg_text_scale=0.5).branches_at(0.5) == ("cond",)
    assert GuidanceConfig(cfg_text_scale=4.0, cfg_img_scale=0.9).branches_at(0.5) == ("cond", "text_uncond")
