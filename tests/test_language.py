"""Language model: HF parity, MoT/MoE routing, KV cache equivalence, masks, loading errors."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from unimedvl.config import LLMConfig
from unimedvl.errors import CheckpointError, ConfigError, DataError
from unimedvl.models.attention import PackedLayout
from unimedvl.models.kv_cache import KVCache
from unimedvl.models.language import LanguageModel, Routing

TINY = dict(
    vocab_size=101,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_theta=10000.0,
)


def tiny_model(layer_module="Qwen2MoTDecoderLayer", qk_norm=True, perturb_gen=False, **kw) -> LanguageModel:
    torch.manual_seed(0)
    model = LanguageModel(LLMConfig(**{**TINY, **kw}, qk_norm=qk_norm, layer_module=layer_module)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # larger than init so differences show
            if perturb_gen or "_moe_gen" not in name:
                p.normal_(0.0, 0.3)
    if not perturb_gen:
        model.init_moe()
    return model


def randomize(hf_model):
    with torch.no_grad():
        for p in hf_model.parameters():
            p.normal_(0.0, 0.3)
    return hf_model.eval()


def gen_twin(state, name):
    """The generation-expert tensor standing in for und tensor ``name`` (itself when shared)."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):  # e.g. mlp.up_proj.weight -> mlp_moe_gen.up_proj.weight
        twin = ".".join(parts[:i] + [parts[i] + "_moe_gen"] + parts[i + 1 :])
        if twin in state:
            return state[twin]
    return state[name]


# -- parity with transformers ------------------------------------------------------------------


def test_qwen2_parity_and_greedy_generation(tmp_path):
    hf = randomize(Qwen2ForCausalLM(Qwen2Config(**TINY)))
    hf.save_pretrained(tmp_path)
    ours = LanguageModel.from_hf_pretrained(tmp_path).eval()
    assert not ours.config.qk_norm and ours.config.layer_module == "Qwen2DecoderLayer"
    ids = torch.randint(0, 101, (2, 17))
    with torch.no_grad():
        assert (ours.forward_text(ids) - hf(ids).logits).abs().max() <= 1e-4
        ref = hf.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours.generate_greedy(ids, 8), ref)


def test_qwen3_qk_norm_parity(tmp_path):
    # Explicit head_dim (16) different from hidden / heads (8); q/k/v bias on.
    hf = randomize(Qwen3ForCausalLM(Qwen3Config(**TINY, head_dim=16, attention_bias=True)))
    with torch.no_grad():
        for layer in hf.model.layers:  # our (release) layer has no o_proj bias
            layer.self_attn.o_proj.bias.zero_()
    hf.save_pretrained(tmp_path)
    ours = LanguageModel.from_hf_pretrained(tmp_path, layer_module="Qwen2MoTDecoderLayer").eval()
    assert ours.config.qk_norm and ours.config.head_dim == 16
    ids = torch.randint(0, 101, (2, 13))
    gen = torch.rand(26) < 0.5
    layout = PackedLayout.from_splits([[(13, "causal")]] * 2)
    with torch.no_grad():
        ref = hf(ids).logits
        assert (ours.forward_text(ids) - ref).abs().max() <= 1e-4
        # Gen expert initialised by init_moe: any routing gives the same logits.
        hidden = ours(ours.embed(ids.reshape(-1)), layout, torch.arange(13).repeat(2), gen)
        assert (ours.logits(hidden).view(2, 13, -1) - ref).abs().max() <= 1e-4


def test_sharded_checkpoint_and_release_names(tmp_path):
    hf = randomize(Qwen2ForCausalLM(Qwen2Config(**TINY)))
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = LanguageModel.from_hf_pretrained(tmp_path, layer_module="Qwen2MoTDecoderLayer")
    names = {"language_model." + n for n in ours.state_dict()}
    expected = {"language_model.model.embed_tokens.weight", "language_model.lm_head.weight"}
    for s in ("", "_moe_gen"):
        expected.add(f"language_model.model.norm{s}.weight")
        for i in range(2):
            pre = f"language_model.model.layers.{i}."
            for p in "qkv":
                expected |= {f"{pre}self_attn.{p}_proj{s}.weight", f"{pre}self_attn.{p}_proj{s}.bias"}
            expected |= {
                f"{pre}self_attn.o_proj{s}.weight",
                f"{pre}input_layernorm{s}.weight",
                f"{pre}post_attention_layernorm{s}.weight",
            }
            expected |= {f"{pre}mlp{s}.{m}_proj.weight" for m in ("gate", "up", "down")}
    assert names == expected  # qk_norm is off for a Qwen2 checkpoint
    sd = ours.state_dict()
    assert torch.equal(sd["model.layers.1.mlp_moe_gen.up_proj.weight"], sd["model.layers.1.mlp.up_proj.weight"])


def test_checkpoint_shape_mismatch_names_tensor(tmp_path):
    Qwen2ForCausalLM(Qwen2Config(**TINY)).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(8, 32)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.self_attn\.k_proj\.weight has shape \(8, 32\)"):
        LanguageModel.from_hf_pretrained(tmp_path)
    del state["model.layers.1.self_attn.k_proj.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) model\.layers\.1\.self_attn\.k_proj\.weight"):
        LanguageModel.from_hf_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(CheckpointError, match="model_type 'llama'"):
        LanguageModel.from_hf_pretrained(tmp_path)


def test_nonzero_output_bias_is_rejected(tmp_path):
    randomize(Qwen3ForCausalLM(Qwen3Config(**TINY, attention_bias=True))).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.self_attn\.o_proj\.bias"):
        LanguageModel.from_hf_pretrained(tmp_path)


def test_unknown_layer_module():
    with pytest.raises(ConfigError, match="layer_module='Qwen2FooLayer' is unknown"):
        LLMConfig(**TINY, layer_module="Qwen2FooLayer")


# -- experts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layer_module", ["Qwen2MoTDecoderLayer", "Qwen2MoEDecoderLayer"])
def test_experts_after_init_moe_equal_plain_model(layer_module):
    plain = tiny_model("Qwen2DecoderLayer")
    experts = tiny_model(layer_module)
    experts.load_state_dict(plain.state_dict(), strict=False)
    experts.init_moe()
    layout = PackedLayout.from_splits([[(5, "causal"), (6, "full")], [(9, "causal")]])
    hidden, pos = torch.randn(20, 32), torch.arange(20)
    ref = plain(hidden, layout, pos)
    for gen in (None, torch.rand(20) < 0.5, torch.ones(20, dtype=torch.bool)):
        torch.testing.assert_close(experts(hidden, layout, pos, gen), ref, atol=1e-5, rtol=0)
    idx = torch.arange(20)
    routing = Routing.from_indices(idx[idx % 3 != 0], idx[idx % 3 == 0])
    torch.testing.assert_close(experts(hidden, layout, pos, routing), ref, atol=1e-5, rtol=0)


def test_routing_uses_the_gen_expert_for_routed_tokens():
    model = tiny_model(perturb_gen=True)
    layout = PackedLayout.from_splits([[(12, "full")]])
    hidden, pos = torch.randn(12, 32), torch.arange(12)
    gen = torch.zeros(12, dtype=torch.bool)
    gen[4:8] = True
    base = model(hidden, layout, pos)
    routed = model(hidden, layout, pos, gen)
    assert (routed - base).abs().amax(-1).min() > 1e-4  # joint attention: every token is affected
    # All tokens routed to gen == a plain model holding the gen weights (every gen weight is used).
    plain = tiny_model("Qwen2DecoderLayer")
    plain.load_state_dict({name: gen_twin(model.state_dict(), name) for name in plain.state_dict()})
    all_gen = model(hidden, layout, pos, torch.ones(12, dtype=torch.bool))
    torch.testing.assert_close(all_gen, plain(hidden, layout, pos), atol=1e-5, rtol=0)
    with pytest.raises(DataError, match=r"bool tensor of shape \(12,\)"):
        model(hidden, layout, pos, gen[:5])


def test_gradient_checkpointing_gives_same_output_and_grads():
    from torch.distributed._composable import checkpoint  # what train/parallel.py applies per layer

    base = tiny_model(perturb_gen=True).train()
    layout = PackedLayout.from_splits([[(4, "causal"), (5, "noise"), (3, "full")]])
    hidden, pos, gen = torch.randn(12, 32), torch.arange(12), torch.arange(12) >= 4
    results = []
    for flag in (False, True):
        model = copy.deepcopy(base)
        if flag:
            for layer in model.model.layers:
                checkpoint(layer)
        model.zero_grad()
        out = model(hidden, layout, pos, gen)
        out.square().sum().backward()
        results.append((out.detach(), model.model.layers[0].self_attn.q_proj_moe_gen.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


# -- masks through the model -------------------------------------------------------------------


def _changed(model, layout, pos, perturb, gen=None):
    hidden = torch.randn(layout.total_len, 32)
    base = model(hidden, layout, pos, gen)
    hidden2 = hidden.clone()
    hidden2[perturb] += 1.0
    return (model(hidden2, layout, pos, gen) - base).abs().amax(-1) > 1e-5


def test_noise_split_changes_no_later_split():
    model = tiny_model(perturb_gen=True)
    layout = PackedLayout.from_splits([[(3, "causal"), (4, "noise"), (4, "full"), (3, "causal")]])
    pos = torch.tensor([0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4, 5, 6])
    changed = _changed(model, layout, pos, [5], gen=(torch.arange(14) >= 3) & (torch.arange(14) < 11))
    assert changed[3:7].all() and not changed[:3].any() and not changed[7:].any()


def test_one_sample_changes_no_other_and_full_sees_future():
    model = tiny_model()
    layout = PackedLayout.from_splits([[(4, "causal"), (5, "full")], [(6, "causal")], [(3, "full")]])
    pos = torch.cat([torch.arange(9), torch.arange(6), torch.arange(3)])
    changed = _changed(model, layout, pos, [11])
    assert changed[11:15].all() and not changed[:11].any() and not changed[15:].any()
    changed = _changed(model, layout, pos, [8])  # last token of the full split
    assert changed[4:9].all() and not changed[:4].any()


def test_bad_inputs_raise():
    model = tiny_model()
    layout = PackedLayout.from_splits([[(4, "causal"), (5, "full")]])
    with pytest.raises(DataError, match="split lengths sum to 9"):
        model(torch.randn(10, 32), layout, torch.arange(10))
    with pytest.raises(DataError, match=r"position_ids must have shape \(9,\)"):
        model(torch.randn(9, 32), layout, torch.arange(8))
    with pytest.raises(DataError, match="unknown mode 'noisy'"):
        PackedLayout.from_splits([[(4, "noisy")]])


def test_flex_backend_matches_sdpa_in_the_model():
    model = tiny_model(perturb_gen=True)
    layout = PackedLayout.from_splits([[(4, "causal"), (5, "noise"), (3, "full")], [(5, "causal")]])
    hidden, pos, gen = torch.randn(17, 32), torch.arange(17), torch.arange(17) % 2 == 0
    with torch.no_grad():
        ref = model(hidden, layout, pos, gen)
        model.attn_backend = "flex"
        torch.testing.assert_close(model(hidden, layout, pos, gen), ref, atol=1e-5, rtol=0)


# -- KV cache ----------------------------------------------------------------------------------


@torch.no_grad()
def test_incremental_decoding_equals_full_forward():
    model = tiny_model(perturb_gen=True)
    ids = torch.randint(0, 101, (3, 12))
    full = model.forward_text(ids)
    cache = model.new_cache(rows=3, capacity=4)  # tiny capacity: growth happens on the way
    pos = torch.arange(5).repeat(3)
    hidden = model.forward_cached(model.embed(ids[:, :5].reshape(-1)), pos, cache, query_lens=5)
    steps = [model.logits(hidden).view(3, 5, -1)]
    for t in range(5, 12):
        hidden = model.forward_cached(model.embed(ids[:, t]), torch.full((3,), t), cache)
        steps.append(model.logits(hidden).view(3, 1, -1))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    assert cache.lengths == [12, 12, 12] and cache.capacity >= 12


@torch.no_grad()
def test_contexts_of_different_lengths_in_one_batch():
    model = tiny_model(perturb_gen=True)
    a, b = torch.randint(0, 101, (1, 9)), torch.randint(0, 101, (1, 4))
    ref_a, ref_b = model.forward_text(a)[0], model.forward_text(b)[0]
    cache = model.new_cache(rows=2)
    # Prefill rows with different lengths in one call, then decode one token per row.
    h = model.forward_cached(
        model.embed(torch.cat([a[0, :6], b[0, :2]])),
        torch.cat([torch.arange(6), torch.arange(2)]),
        cache,
        query_lens=[6, 2],
    )
    torch.testing.assert_close(model.logits(h[:6]), ref_a[:6], atol=1e-5, rtol=0)
    torch.testing.assert_close(model.logits(h[6:]), ref_b[:2], atol=1e-5, rtol=0)
    for t in range(2):
        tokens = torch.stack([a[0, 6 + t], b[0, 2 + t]])
        h = model.forward_cached(model.embed(tokens), torch.tensor([6 + t, 2 + t]), cache)
        torch.testing.assert_close(model.logits(h), torch.stack([ref_a[6 + t], ref_b[2 + t]]), atol=1e-5, rtol=0)
    # One row only (the other is untouched).
    h = model.forward_cached(model.embed(a[0, 8:9]), torch.tensor([8]), cache, rows=[0])
    torch.testing.assert_close(model.logits(h), ref_a[8:9], atol=1e-5, rtol=0)
    assert cache.lengths == [9, 4]


@torch.no_grad()
def test_denoising_query_reads_without_writing_and_forks():
    model = tiny_model(perturb_gen=True)
    text = torch.randint(0, 101, (7,))
    latents = torch.randn(5, 32)
    # Reference: the packed training path with a text split then a full (image) split.
    layout = PackedLayout.from_splits([[(7, "causal"), (5, "full")]])
    pos = torch.cat([torch.arange(7), torch.full((5,), 7)])
    gen = torch.arange(12) >= 7
    ref = model(torch.cat([model.embed(text), latents]), layout, pos, gen)[7:]

    cache = model.new_cache(rows=1)
    model.forward_cached(model.embed(text), torch.arange(7), cache)
    uncond = cache.fork(0)  # a guidance branch: copy of the context
    model.forward_cached(model.embed(text[:2]), torch.tensor([7, 8]), cache, rows=[uncond])  # diverges
    assert cache.lengths == [7, 9]
    for _ in range(2):  # repeated denoising steps see the same context
        out = model.forward_cached(
            latents,
            torch.full((5,), 7),
            cache,
            rows=[0],
            mode="full",
            write=False,
            routing=torch.ones(5, dtype=torch.bool),
        )
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert cache.lengths == [7, 9]
    # Both branches in one batched call (different context lengths, same query length).
    both = model.forward_cached(
        torch.cat([latents, latents]),
        torch.tensor([7] * 5 + [9] * 5),
        cache,
        mode="full",
        write=False,
        routing=torch.ones(10, dtype=torch.bool),
    )
    torch.testing.assert_close(both[:5], ref, atol=1e-5, rtol=0)
    assert (both[5:] - ref).abs().max() > 1e-4
    sub = cache.select([1])
    assert sub.lengths == [9] and torch.equal(sub.keys[1][0, :, :9], cache.keys[1][1, :, :9])


def test_cache_growth_is_geometric_and_errors_are_clear():
    cache = KVCache(2, 2, 8, rows=1, capacity=64)
    caps = set()
    for _ in range(1, 300):
        step = cache.plan(query_lens=1)
        for layer in range(2):
            step.attend(layer, torch.randn(1, 4, 8), torch.randn(1, 2, 8), torch.randn(1, 2, 8))
        step.commit()
        caps.add(cache.capacity)
    assert cache.lengths == [299] and caps == {64, 128, 256, 512}
    with pytest.raises(DataError, match="row 3 does not exist"):
        cache.plan(rows=[3])
    with pytest.raises(DataError, match="mode 'noise' is unknown"):
        cache.plan(mode="noise")
    with pytest.raises(DataError, match="query_lens must be >= 1"):
        cache.plan(query_lens=0)
