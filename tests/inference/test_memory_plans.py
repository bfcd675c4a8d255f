"""Memory plans on the debug checkpoint: understanding only (exact, generation never read), int8, streaming in
blocks, device maps and layer streaming (their mechanics on the CPU; CUDA tests are marked gpu)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from inference_support import SMALL, STEPS, random_image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from unimedvl import cli
from unimedvl.checkpoint import weight_stream
from unimedvl.checkpoint.memory_estimate import loaded_weight_bytes, weight_bytes
from unimedvl.checkpoint.memory_plan import LoadPlan, PlanNotice, format_bytes, is_generation_key
from unimedvl.checkpoint.placement import LayerStreamer
from unimedvl.checkpoint.quantization import Int8Linear
from unimedvl.checkpoint.release import load_model, read_model_config
from unimedvl.errors import CheckpointError, ConfigError, DataError
from unimedvl.inference.api import UniMedVL
from unimedvl.inference.inferencer import Request
from unimedvl.models.kv_cache import KVCache

QUESTION = "What imaging modality is this?"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _requests():
    return [
        Request([random_image(40, 48, 1), QUESTION], max_new_tokens=8),
        Request([random_image(32, 32, 2), "Is there a lesion?"], think=True, max_new_tokens=8),
        Request(["Describe a normal chest X-ray."], max_new_tokens=8),
    ]


def _edit(model):
    return model.edit(random_image(32, 32, 3), "Remove the noise.", seed=0, num_timesteps=STEPS)


def _split_checkpoint(src, dst):
    """``src`` as a sharded checkpoint whose generation tensors sit in their own shard (then deleted), no VAE."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    with safe_open(str(src / "ema.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    shards = {
        "und.safetensors": {k: v for k, v in tensors.items() if not is_generation_key(k)},
        "gen.safetensors": {k: v for k, v in tensors.items() if is_generation_key(k)},
    }
    for name, part in shards.items():
        save_file(part, str(dst / name))
    weight_map = {k: name for name, part in shards.items() for k in part}
    (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (dst / "gen.safetensors").unlink()
    return dst


def test_understanding_only_never_reads_the_generation_weights(checkpoint, api, tmp_path):
    split = _split_checkpoint(checkpoint, tmp_path / "split")
    und = UniMedVL.from_pretrained(split, device="cpu", dtype="fp32", components="understanding", **SMALL)
    assert und.ask(random_image(40, 48, 1), QUESTION, max_new_tokens=8) == api.ask(
        random_image(40, 48, 1), QUESTION, max_new_tokens=8
    )
    with pytest.raises(CheckpointError, match="gen.safetensors"):
        UniMedVL.from_pretrained(split, device="cpu", dtype="fp32", **SMALL)


def test_understanding_only_gives_exactly_the_full_models_answers(checkpoint, api):
    und = UniMedVL.from_pretrained(checkpoint, device="cpu", dtype="fp32", components="understanding", **SMALL)
    assert not und.model.config.visual_gen and not hasattr(und.model, "vae")
    full_results, und_results = api.run(_requests()), und.run(_requests())
    assert [r.token_ids for r in und_results] == [r.token_ids for r in full_results]
    ids = torch.tensor([[5, 17, 99, 3, 42, 7]])
    assert torch.equal(und.model.language_model.forward_text(ids), api.model.language_model.forward_text(ids))
    n_full = sum(p.numel() for p in api.model.parameters())
    assert sum(p.numel() for p in und.model.parameters()) < 0.5 * n_full


def test_generation_on_an_understanding_model_fails_in_one_line_saying_how_to_load_it(checkpoint, tmp_path, capsys):
    und = UniMedVL.from_pretrained(checkpoint, device="cpu", dtype="fp32", components="understanding", **SMALL)
    with pytest.raises(ConfigError) as err:
        _edit(und)
    assert 'components="all"' in str(err.value) and "--components all" in str(err.value)
    random_image(32, 32, 0).save(tmp_path / "x.png")
    code = cli.main(
        [
            "edit",
            "--model",
            str(checkpoint),
            "--image",
            str(tmp_path / "x.png"),
            "--instruction",
            "x",
            "--out",
            str(tmp_path / "o.png"),
            "--components",
            "understanding",
            "--no-progress",
        ]
    )
    err_text = capsys.readouterr().err
    assert code == 2 and err_text.strip().count("\n") == 0 and "--components all" in err_text


def test_int8_quantises_the_large_layers_and_keeps_the_rest_in_the_compute_dtype(checkpoint):
    model = load_model(checkpoint, "bf16", plan=LoadPlan(quantize="int8"))
    lm = model.language_model
    assert isinstance(lm.lm_head, Int8Linear)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            big = name.startswith(
                ("language_model.model.layers.", "vit_model.vision_model.encoder.layers.", "language_model.lm_head")
            )
            assert isinstance(module, Int8Linear) == big, name
            if not big:
                assert module.weight.dtype == torch.bfloat16, name
    assert lm.model.embed_tokens.weight.dtype == torch.bfloat16 and lm.model.norm.weight.dtype == torch.bfloat16
    assert lm.model.layers[0].input_layernorm.weight.dtype == torch.bfloat16
    assert next(model.vae.parameters()).dtype == torch.bfloat16
    reference = load_model(checkpoint, "bf16")
    ids = torch.tensor([[5, 17, 99, 3, 42, 7, 250, 11]])
    q, ref = lm.forward_text(ids).float(), reference.language_model.forward_text(ids).float()
    assert (q - ref).norm() / ref.norm() < 0.05 and not torch.equal(q, ref)


@pytest.mark.parametrize(
    "plan",
    [LoadPlan(), LoadPlan("understanding"), LoadPlan(quantize="int8"), LoadPlan("understanding", "int8")],
    ids=lambda p: p.label(),
)
def test_the_planner_counts_exactly_the_bytes_a_plan_loads(checkpoint, plan):
    model = load_model(checkpoint, "bf16", plan=plan)
    assert loaded_weight_bytes(model)[0] == weight_bytes(read_model_config(checkpoint), plan, 2)[1]


def _tensors(model):
    out = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        out[name] = (t.qdata, t.scale) if hasattr(t, "qdata") else (t,)
    return out


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_streaming_in_small_blocks_loads_the_same_weights(checkpoint, monkeypatch, quantize):
    whole = _tensors(load_model(checkpoint, "bf16", plan=LoadPlan(quantize=quantize)))
    monkeypatch.setattr(weight_stream, "CHUNK_BYTES", 1000)  # every tensor in many blocks, a mapping each
    blocks = _tensors(load_model(checkpoint, "bf16", plan=LoadPlan(quantize=quantize)))
    assert whole.keys() == blocks.keys()
    for name in whole:
        assert all(torch.equal(a, b) for a, b in zip(whole[name], blocks[name])), name


def test_a_device_map_routes_activations_and_kv_rows_layer_by_layer(checkpoint, api):
    mapped = UniMedVL.from_pretrained(
        checkpoint, device="cpu", dtype="fp32", device_map='{"0": "cpu", "1": "cpu"}', **SMALL
    )
    lm = mapped.model.language_model
    assert lm.layer_devices == [torch.device("cpu")] * 2 and lm.new_cache().layer_devices == lm.layer_devices
    assert [r.token_ids for r in mapped.run(_requests())] == [r.token_ids for r in api.run(_requests())]
    np.testing.assert_array_equal(np.asarray(_edit(mapped)), np.asarray(_edit(api)))


def test_streamed_layers_give_the_same_results_and_are_put_back_after_each_forward(checkpoint, api):
    model = UniMedVL.from_pretrained(checkpoint, device="cpu", dtype="fp32", **SMALL)
    layers = model.model.language_model.model.layers
    storage = [p for p in layers.parameters()]
    streamer = LayerStreamer(layers, torch.device("cpu"))
    assert [r.token_ids for r in model.run(_requests())] == [r.token_ids for r in api.run(_requests())]
    np.testing.assert_array_equal(np.asarray(_edit(model)), np.asarray(_edit(api)))
    assert streamer.copies > len(layers) and all(a is b for a, b in zip(layers.parameters(), storage))
    streamer.remove()


def test_max_memory_picks_a_plan_and_says_which(checkpoint, capsys, tmp_path):
    with pytest.warns(PlanNotice, match="loading all-fp32"):
        model = UniMedVL.from_pretrained(checkpoint, device="cpu", dtype="fp32", max_memory="8GB", **SMALL)
    assert model.model.load_plan == LoadPlan()
    random_image(32, 32, 0).save(tmp_path / "x.png")
    code = cli.main(
        [
            "ask",
            "--model",
            str(checkpoint),
            "--image",
            str(tmp_path / "x.png"),
            "--question",
            QUESTION,
            "--max-memory",
            "8GB",
            "--components",
            "understanding",
            "--max-new-tokens",
            "2",
        ]
    )
    assert code == 0 and "memory plan: max_memory=8.0 GB: loading understanding-fp32" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--quantize", "nf4"], "needs a CUDA GPU"),
        (["--offload", "cpu"], "leave out --offload"),
        (["--device-map", '{"0-1": "cuda:3"}'], "cuda:3"),
        (["--max-memory", "1MB"], "the smallest, all-int8"),
    ],
)
def test_plans_this_machine_cannot_run_fail_in_one_line(checkpoint, tmp_path, capsys, flags, words):
    if torch.cuda.is_available() and flags[0] in ("--quantize", "--offload"):
        pytest.skip("CUDA is here: these plans run")
    random_image(32, 32, 0).save(tmp_path / "x.png")
    code = cli.main(
        [
            "ask",
            "--model",
            str(checkpoint),
            "--image",
            str(tmp_path / "x.png"),
            "--question",
            QUESTION,
            "--device",
            "cpu",
            *flags,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and words in err


# ---------------------------------------------------------------------------------------------
# CUDA (skipped on a CPU machine).


@pytest.mark.gpu
@cuda
def test_offload_streams_layers_to_the_gpu_with_the_same_results(checkpoint):
    plain = UniMedVL.from_pretrained(checkpoint, device="cuda", dtype="bf16", **SMALL)
    offload = UniMedVL.from_pretrained(checkpoint, device="cuda", dtype="bf16", offload="cpu", **SMALL)
    assert all(p.device.type == "cpu" and p.is_pinned() for p in offload.model.language_model.model.layers.parameters())
    assert [r.token_ids for r in offload.run(_requests())] == [r.token_ids for r in plain.run(_requests())]
    np.testing.assert_array_equal(np.asarray(_edit(offload)), np.asarray(_edit(plain)))
    assert offload.model.layer_streamer.copies > 0
    int8 = UniMedVL.from_pretrained(checkpoint, device="cuda", dtype="bf16", offload="cpu", quantize="int8", **SMALL)
    assert len(int8.run(_requests())) == 3


@pytest.mark.gpu
@cuda
def test_nf4_on_cuda_quantises_while_loading_and_stays_close(checkpoint):
    import bitsandbytes as bnb

    model = load_model(checkpoint, "bf16", "cuda", plan=LoadPlan(quantize="nf4"))
    assert isinstance(model.language_model.lm_head, bnb.nn.Linear4bit)
    assert loaded_weight_bytes(model)[0] == weight_bytes(read_model_config(checkpoint), LoadPlan(quantize="nf4"), 2)[1]
    reference = load_model(checkpoint, "bf16", "cuda")
    ids = torch.tensor([[5, 17, 99, 3, 42, 7, 250, 11]], device="cuda")
    q, ref = model.language_model.forward_text(ids).float(), reference.language_model.forward_text(ids).float()
    assert (q - ref).norm() / ref.norm() < 0.2


@pytest.mark.gpu
@cuda
def test_device_maps_on_cuda_place_layers_and_keep_the_answers(checkpoint):
    plain = UniMedVL.from_pretrained(checkpoint, device="cuda", dtype="fp32", **SMALL)
    expected = [r.token_ids for r in plain.run(_requests())]
    for spec in ("balanced", "auto"):  # every layer on a GPU of this machine: the same kernels, the same answers
        mapped = UniMedVL.from_pretrained(checkpoint, dtype="fp32", device_map=spec, **SMALL)
        assert {d.type for d in mapped.model.language_model.layer_devices} == {"cuda"}
        assert [r.token_ids for r in mapped.run(_requests())] == expected, spec
    # A layer on the CPU: its keys and values live there too (other kernels, so only the shapes are compared).
    mixed = UniMedVL.from_pretrained(checkpoint, dtype="fp32", device_map='{"0": "cuda:0", "1": "cpu"}', **SMALL)
    cache = mixed.model.language_model.new_cache()
    assert [k.device.type for k in cache.keys] == ["cuda", "cpu"]
    assert [len(r.token_ids) > 0 for r in mixed.run(_requests())] == [True] * 3


def test_info_memory_of_a_checkpoint_counts_what_loading_it_places(checkpoint, capsys):
    assert cli.main(["info", "--memory", "--model", str(checkpoint), "--device", "cpu", "--dtype", "fp32"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("understanding-int8 "))
    model = load_model(checkpoint, "fp32", plan=LoadPlan("understanding", "int8"))
    assert format_bytes(loaded_weight_bytes(model)[0]) in row


def test_a_kv_cache_needs_one_device_per_layer():
    with pytest.raises(DataError, match="1 layer devices for 2 layers"):
        KVCache(2, 2, 8, layer_devices=["cpu"])
    cache = KVCache(2, 2, 8, rows=2, layer_devices=["cpu", "cpu"])
    assert cache.select([1]).layer_devices == cache.layer_devices
