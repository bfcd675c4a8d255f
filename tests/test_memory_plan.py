"""Memory plans without loading weights: sizes, the planner's choices, device maps, `info --memory`."""

from __future__ import annotations

import pytest
import torch

from unimedvl.checkpoint.inference_config import for_model
from unimedvl.checkpoint.memory_estimate import Workload, choose_plan, estimate_plans, weight_bytes
from unimedvl.checkpoint.memory_plan import (
    LoadPlan,
    candidate_plans,
    is_generation_key,
    parse_memory,
    understanding_config,
)
from unimedvl.checkpoint.placement import parse_device_map, preset_device_map
from unimedvl.cli import main
from unimedvl.config import model_config
from unimedvl.errors import ConfigError
from unimedvl.models.unified import UnifiedModel

RELEASE = model_config("bagel-7b-mot")


def test_memory_sizes_parse_in_decimal_and_binary_units():
    assert parse_memory("24GB") == 24 * 10**9
    assert parse_memory("22 GiB") == 22 * 2**30
    assert parse_memory("800mb") == 800 * 10**6
    assert parse_memory(1234) == 1234
    for bad in ("lots", "24 parsecs", "-3GB", "0"):
        with pytest.raises(ConfigError, match="memory size"):
            parse_memory(bad)


def test_plan_choices_and_combinations_are_checked():
    assert LoadPlan("understanding", "int8").label("bf16") == "understanding-int8"
    assert LoadPlan(offload="cpu").label("bf16") == "all-bf16+offload"
    with pytest.raises(ConfigError, match="choose one of all, understanding"):
        LoadPlan(components="generation")
    with pytest.raises(ConfigError, match="choose one of them"):
        LoadPlan(offload="cpu", device_map="auto")
    with pytest.raises(ConfigError, match="nf4 weights cannot be offloaded"):
        LoadPlan(quantize="nf4", offload="cpu")


def test_plans_are_ordered_exact_first_and_a_cpu_gets_only_what_it_can_run():
    gpu = [p.label() for p in candidate_plans("all", cuda=True)]
    assert gpu == ["all-bf16", "all-int8", "all-nf4", "all-bf16+offload", "all-int8+offload"]
    cpu = candidate_plans(None, cuda=False)
    assert [p.label() for p in cpu] == ["all-bf16", "all-int8", "understanding-bf16", "understanding-int8"]


def test_the_understanding_model_has_exactly_the_checkpoint_keys_that_are_not_generation_only():
    cfg = model_config("debug")
    with torch.device("meta"):
        full = set(UnifiedModel(cfg).state_dict())
        und = set(UnifiedModel(understanding_config(cfg)).state_dict())
    assert und == {k for k in full if not is_generation_key(k)}
    assert any("_moe_gen" in k for k in full) and not any("_moe_gen" in k for k in und)
    assert not any(k.startswith(("vae.", "time_embedder.", "llm2vae.", "vae2llm.")) for k in und)


def test_the_release_understanding_plan_loads_about_8b_of_its_14_7b_parameters():
    full, full_bytes, _ = weight_bytes(RELEASE, LoadPlan(), 2)
    und, und_bytes, _ = weight_bytes(RELEASE, LoadPlan("understanding"), 2)
    assert 14.6e9 < full < 14.7e9 and 7.9e9 < und < 8.1e9
    assert 29e9 < full_bytes < 30e9 and 15.8e9 < und_bytes < 16.4e9
    _, int8, _ = weight_bytes(RELEASE, LoadPlan(quantize="int8"), 2)
    _, offload_gpu, offload_host = weight_bytes(RELEASE, LoadPlan(offload="cpu"), 2)
    assert 0.5 < int8 / full_bytes < 0.55  # everything big is int8, embeddings stay bf16
    assert offload_host > 25e9 and offload_gpu < 6e9


def _release_estimates(**kw):
    return estimate_plans(RELEASE, for_model(RELEASE), Workload(), "bf16", cuda=True, runnable_cuda=True, **kw)


def test_the_planner_picks_the_cheapest_plan_that_fits_and_names_the_smallest_when_none_does():
    assert choose_plan(_release_estimates(), 48 * 10**9).label == "all-bf16"
    assert choose_plan(_release_estimates(components="all"), 24 * 10**9).label == "all-int8"
    assert choose_plan(_release_estimates(components="understanding"), 12 * 10**9).label == "understanding-int8"
    with pytest.raises(ConfigError) as err:
        choose_plan(_release_estimates(components="all"), 2 * 10**9)
    message = str(err.value)
    assert "\n" not in message and "all-int8+offload" in message and "GB" in message


def test_the_runtime_estimate_grows_with_the_image_and_the_answer():
    base = _release_estimates(components="understanding")[0].runtime
    bigger = estimate_plans(
        RELEASE,
        for_model(RELEASE),
        Workload(image_size=1024, answer_tokens=2048),
        "bf16",
        cuda=True,
        components="understanding",
    )[0].runtime
    assert bigger > base > 0


def test_device_maps_from_json_name_layer_ranges_and_every_mistake_in_one_line():
    assert parse_device_map('{"0-2": "cpu", "3": "cpu"}', 4) == [torch.device("cpu")] * 4
    for spec, words in [
        ('{"0-1": "cpu"}', "leaves layer(s) 2-3 without a device"),
        ('{"0-3": "cpu", "2": "cpu"}', "places layer 2 twice"),
        ('{"0-7": "cpu"}', "decoder layers 0 to 3"),
        ('{"0-3": "tpu:0"}', "not a device"),
        ('{"0-3": "cuda:7"}', "cuda:7"),
        ("[1, 2]", "JSON must be an object"),
        ("everywhere", "neither auto, balanced nor JSON"),
    ]:
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
            parse_device_map(spec, 4)
        assert "\n" not in str(err.value)


def test_preset_device_maps_balance_or_fill_the_gpus():
    layers, other = [10] * 8, 20
    balanced = preset_device_map("balanced", layers, other, free=[100, 100])
    assert [d.index for d in balanced] == [0, 0, 0, 1, 1, 1, 1, 1]  # GPU 0: the embeddings etc. + 3 layers = 50
    auto = preset_device_map("auto", layers, other, free=[200, 200])
    assert {d.index for d in auto} == {0}  # everything fits the first GPU
    spread = preset_device_map("auto", layers, other, free=[60, 100])
    assert [d.index for d in spread].count(0) == 3  # 20 + 3 x 10 <= 85% of 60
    with pytest.raises(ConfigError, match="do not fit the free memory of 2 GPU"):
        preset_device_map("auto", layers, other, free=[30, 30])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_preset_device_maps_need_cuda():
    with pytest.raises(ConfigError, match="has none; leave out --device-map"):
        preset_device_map("auto", [1], 1)


def test_info_memory_prints_every_plan_and_what_fits(capsys):
    assert main(["info", "--memory", "--budget", "24GB", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    for plan in _release_estimates():
        assert plan.label in out
    assert "cheapest all plan within 24.0 GB: all-int8" in out
    assert "cheapest understanding plan within 24.0 GB: understanding-bf16" in out
    assert main(["info", "--memory", "--size", "debug", "--device", "cpu", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "host RAM" in out and "all-nf4" not in out


def test_info_memory_refuses_a_bad_budget_in_one_line(capsys):
    assert main(["info", "--memory", "--budget", "a lot"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--budget" in err
